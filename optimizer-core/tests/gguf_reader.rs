//! The GGUF reader on files built in memory: what it accepts, and one test per rejection path.

// Test inputs are small: their lengths fit every integer type.
#![allow(clippy::cast_possible_truncation)]

use std::io::{self, Cursor, Read, Seek, SeekFrom};

use optimizer_core::gguf::{
    Count, DataFill, DataStatus, GgmlType, GgufError, GgufErrorKind, GgufFile, GgufWriter, MetadataArray,
    MetadataValue, ReadOptions, ValueType, read_gguf, read_gguf_file,
};

// ---------------------------------------------------------------------------------------------
// helpers: raw GGUF bytes, for files the writer refuses to produce

/// GGUF bytes written field by field.
#[derive(Default)]
struct Raw(Vec<u8>);

impl Raw {
    /// Magic, version, tensor count, metadata entry count.
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        Raw::default().bytes(b"GGUF").u32(version).u64(n_tensors).u64(n_kv)
    }

    fn bytes(mut self, b: &[u8]) -> Raw {
        self.0.extend_from_slice(b);
        self
    }

    fn u32(self, v: u32) -> Raw {
        self.bytes(&v.to_le_bytes())
    }

    fn u64(self, v: u64) -> Raw {
        self.bytes(&v.to_le_bytes())
    }

    /// A length-prefixed string.
    fn str(self, s: &str) -> Raw {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }

    fn kv_u32(self, key: &str, v: u32) -> Raw {
        self.str(key).u32(ValueType::U32.id()).u32(v)
    }

    fn kv_str(self, key: &str, v: &str) -> Raw {
        self.str(key).u32(ValueType::String.id()).str(v)
    }

    fn tensor(self, name: &str, dims: &[u64], type_id: u32, offset: u64) -> Raw {
        let mut r = self.str(name).u32(dims.len() as u32);
        for &d in dims {
            r = r.u64(d);
        }
        r.u32(type_id).u64(offset)
    }

    fn pad(mut self, align: usize) -> Raw {
        while self.0.len() % align != 0 {
            self.0.push(0);
        }
        self
    }

    fn read(self) -> Result<GgufFile, GgufError> {
        read(self.0)
    }
}

fn read(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
    read_gguf(Cursor::new(bytes), &ReadOptions::default())
}

/// The error of reading `raw`, checked to mention `needle`.
#[track_caller]
fn rejected(raw: Raw, needle: &str) -> GgufErrorKind {
    let err = raw.read().expect_err("the file must be rejected");
    let message = err.to_string();
    assert!(message.contains(needle), "message {message:?} lacks {needle:?}");
    assert!(!message.ends_with('.'), "message {message:?} ends with a period");
    assert!(message.starts_with(|c: char| c.is_lowercase()), "message {message:?} is not lowercase");
    err.into_kind()
}

fn one_tensor(name: &str, dims: &[u64], type_id: u32, offset: u64) -> Raw {
    Raw::header(3, 1, 0).tensor(name, dims, type_id, offset).pad(32)
}

fn string_array(values: &[&str]) -> MetadataValue {
    MetadataValue::Array(MetadataArray {
        element_type: ValueType::String,
        len: values.len() as u64,
        values: Some(values.iter().map(|s| MetadataValue::String((*s).to_owned())).collect()),
    })
}

// ---------------------------------------------------------------------------------------------
// accepted files

fn sample_writer(version: u32) -> GgufWriter {
    let mut w = GgufWriter::with_version(version);
    w.add_metadata("general.architecture", MetadataValue::String("qwen3next".into()));
    w.add_metadata("qwen3next.block_count", MetadataValue::U32(48));
    w.add_metadata("qwen3next.rope.freq_base", MetadataValue::F32(5_000_000.0));
    w.add_metadata("tokenizer.ggml.tokens", string_array(&["a", "bc", "def"]));
    w.add_tensor("token_embd.weight", &[2048, 151_936], GgmlType::Q6K).unwrap();
    w.add_tensor("blk.0.ffn_up_exps.weight", &[2048, 512, 512], GgmlType::Q4K).unwrap();
    w.add_tensor("output_norm.weight", &[2048], GgmlType::F32).unwrap();
    w
}

#[test]
fn reads_v3_and_v2_headers() {
    for version in [2, 3] {
        let w = sample_writer(version);
        let file = read(w.to_bytes(DataFill::HeaderOnly)).unwrap();
        assert_eq!(file.version, version);
        assert_eq!(file.metadata, *w.metadata());
        assert_eq!(file.tensors, w.tensor_infos());
        assert_eq!(file.alignment, 32);
        assert_eq!(file.data_offset, w.data_offset());
        assert_eq!(file.data_offset % 32, 0);
        assert_eq!(file.tensors[1].size.get(), 2048 / 256 * 144 * 512 * 512);
        assert!(file.tensors.iter().all(|t| t.shard == 0));
    }
}

#[test]
fn header_only_file_reads_with_data_missing() {
    let w = sample_writer(3);
    let file = read(w.to_bytes(DataFill::HeaderOnly)).unwrap();
    let last = file.tensors.last().unwrap();
    let expected_end = file.data_offset + last.offset + last.size.get();
    assert_eq!(file.data, DataStatus::Missing { expected_end, file_size: w.data_offset() });
}

#[test]
fn complete_file_reads_with_data_complete() {
    let mut w = GgufWriter::new();
    w.add_tensor("a", &[64, 3], GgmlType::Q8_0).unwrap();
    w.add_tensor("b", &[5], GgmlType::F16).unwrap();
    let bytes = w.to_bytes(DataFill::Zeros);
    assert_eq!(bytes.len() as u64, w.data_offset() + w.data_size());
    let file = read(bytes).unwrap();
    assert_eq!(file.data, DataStatus::Complete);
    // 3 rows of 2 blocks of 34 bytes padded to 224, then 10 bytes padded to 32
    assert_eq!(file.tensors[1].offset, 224);
    assert_eq!(w.data_size(), 256);
}

#[test]
fn file_cut_inside_the_data_is_missing_not_an_error() {
    let mut w = GgufWriter::new();
    w.add_tensor("a", &[1024], GgmlType::F32).unwrap();
    let mut bytes = w.to_bytes(DataFill::Zeros);
    bytes.truncate(bytes.len() - 100);
    let file = read(bytes).unwrap();
    assert!(
        matches!(file.data, DataStatus::Missing { expected_end, .. } if expected_end == w.data_offset() + 4096)
    );
}

#[test]
fn file_without_tensors_is_complete() {
    let mut w = GgufWriter::new();
    w.add_metadata("general.name", MetadataValue::String("empty".into()));
    let file = read(w.to_bytes(DataFill::HeaderOnly)).unwrap();
    assert!(file.tensors.is_empty());
    assert_eq!(file.data, DataStatus::Complete);
}

#[test]
fn alignment_from_metadata_is_honoured() {
    let mut w = GgufWriter::new();
    w.add_metadata("general.alignment", MetadataValue::U32(256));
    w.add_tensor("a", &[3], GgmlType::F32).unwrap();
    w.add_tensor("b", &[3], GgmlType::F32).unwrap();
    let file = read(w.to_bytes(DataFill::Zeros)).unwrap();
    assert_eq!(file.alignment, 256);
    assert_eq!(file.data_offset % 256, 0);
    assert_eq!(file.tensors[1].offset, 256);
    assert_eq!(file.data, DataStatus::Complete);
}

#[test]
fn tensors_need_not_be_in_offset_order_or_packed() {
    let file =
        Raw::header(3, 2, 0).tensor("late", &[8], 0, 256).tensor("early", &[8], 0, 0).pad(32).read().unwrap();
    assert_eq!(file.tensors[0].name, "late");
    assert_eq!(file.tensors[1].offset, 0);
    assert!(
        matches!(file.data, DataStatus::Missing { expected_end, .. } if expected_end == file.data_offset + 256 + 32)
    );
}

#[test]
fn every_value_type_is_read() {
    let values = [
        MetadataValue::U8(200),
        MetadataValue::I8(-3),
        MetadataValue::U16(60_000),
        MetadataValue::I16(-30_000),
        MetadataValue::U32(4_000_000_000),
        MetadataValue::I32(-2_000_000_000),
        MetadataValue::U64(u64::MAX),
        MetadataValue::I64(i64::MIN),
        MetadataValue::F32(1.5),
        MetadataValue::F64(-2.25),
        MetadataValue::Bool(true),
        MetadataValue::String("héllo".into()),
    ];
    let mut w = GgufWriter::new();
    for (i, v) in values.iter().enumerate() {
        w.add_metadata(format!("k{i}"), v.clone());
    }
    let file = read(w.to_bytes(DataFill::HeaderOnly)).unwrap();
    let read_values: Vec<_> = file.metadata.entries().iter().map(|(_, v)| v.clone()).collect();
    assert_eq!(read_values, values);
}

#[test]
fn any_nonzero_bool_is_true() {
    let file = Raw::header(3, 0, 1).str("b").u32(ValueType::Bool.id()).bytes(&[7]).read().unwrap();
    assert_eq!(file.metadata.get_bool("b"), Some(true));
}

fn nested() -> MetadataValue {
    let inner = |xs: &[i32]| {
        MetadataValue::Array(MetadataArray {
            element_type: ValueType::I32,
            len: xs.len() as u64,
            values: Some(xs.iter().map(|&x| MetadataValue::I32(x)).collect()),
        })
    };
    MetadataValue::Array(MetadataArray {
        element_type: ValueType::Array,
        len: 3,
        values: Some(vec![inner(&[1, 2]), inner(&[]), string_array(&["x", "yz"])]),
    })
}

#[test]
fn arrays_of_arrays_are_read() {
    let mut w = GgufWriter::new();
    w.add_metadata("nested", nested());
    w.add_metadata("after", MetadataValue::U8(1));
    let file = read(w.to_bytes(DataFill::HeaderOnly)).unwrap();
    assert_eq!(file.metadata.get("nested"), Some(&nested()));
    assert_eq!(file.metadata.get_u64("after"), Some(1));
}

#[test]
fn skipped_array_of_arrays_keeps_type_and_length() {
    let mut w = GgufWriter::new();
    w.add_metadata("nested", nested());
    w.add_metadata("after", MetadataValue::U8(1));
    let bytes = w.to_bytes(DataFill::HeaderOnly);
    let file = read_gguf(Cursor::new(bytes), &ReadOptions::default().with_eager_array_len(2)).unwrap();
    let a = file.metadata.get_array("nested").unwrap();
    assert_eq!((a.element_type, a.len, &a.values), (ValueType::Array, 3, &None));
    assert_eq!(file.metadata.get_u64("after"), Some(1));
}

/// A tokenizer-like header: a long string array, a long f32 array and a key after them.
fn tokenizer_bytes(n: usize) -> Vec<u8> {
    let tokens: Vec<String> = (0..n).map(|i| format!("tok{i}")).collect();
    let mut w = GgufWriter::new();
    w.add_metadata(
        "tokenizer.ggml.tokens",
        MetadataValue::Array(MetadataArray {
            element_type: ValueType::String,
            len: n as u64,
            values: Some(tokens.into_iter().map(MetadataValue::String).collect()),
        }),
    );
    w.add_metadata(
        "tokenizer.ggml.scores",
        MetadataValue::Array(MetadataArray {
            element_type: ValueType::F32,
            len: n as u64,
            values: Some((0..n).map(|i| MetadataValue::F32(i as f32)).collect()),
        }),
    );
    w.add_metadata("tokenizer.ggml.eos_token_id", MetadataValue::U32(7));
    w.add_tensor("a", &[32], GgmlType::F32).unwrap();
    w.to_bytes(DataFill::HeaderOnly)
}

#[test]
fn large_arrays_are_skipped_by_default() {
    let file = read(tokenizer_bytes(1000)).unwrap();
    for key in ["tokenizer.ggml.tokens", "tokenizer.ggml.scores"] {
        let a = file.metadata.get_array(key).unwrap();
        assert_eq!((a.len, &a.values), (1000, &None), "{key}");
    }
    assert_eq!(file.metadata.get_u64("tokenizer.ggml.eos_token_id"), Some(7));
    assert_eq!(file.tensors.len(), 1);
}

#[test]
fn large_arrays_are_loaded_on_request() {
    let bytes = tokenizer_bytes(1000);
    let file =
        read_gguf(Cursor::new(&bytes), &ReadOptions::default().with_array("tokenizer.ggml.tokens")).unwrap();
    let tokens = file.metadata.get_array("tokenizer.ggml.tokens").unwrap().values.as_ref().unwrap();
    assert_eq!(tokens[999], MetadataValue::String("tok999".into()));
    assert_eq!(file.metadata.get_array("tokenizer.ggml.scores").unwrap().values, None);

    let all = read_gguf(Cursor::new(&bytes), &ReadOptions::all_arrays()).unwrap();
    let scores = all.metadata.get_array("tokenizer.ggml.scores").unwrap().values.as_ref().unwrap();
    assert_eq!(scores.len(), 1000);

    let small = read_gguf(Cursor::new(&bytes), &ReadOptions::default().with_eager_array_len(1000)).unwrap();
    assert_eq!(small, all);
}

#[test]
fn small_arrays_are_loaded_by_default() {
    let mut w = GgufWriter::new();
    w.add_metadata("tokenizer.ggml.tokens", string_array(&["a", "b"]));
    let file = read(w.to_bytes(DataFill::HeaderOnly)).unwrap();
    assert_eq!(file.metadata.get("tokenizer.ggml.tokens"), Some(&string_array(&["a", "b"])));
}

#[test]
fn read_gguf_file_reads_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    std::fs::write(&path, sample_writer(3).to_bytes(DataFill::HeaderOnly)).unwrap();
    let file = read_gguf_file(&path, &ReadOptions::default()).unwrap();
    assert_eq!(file.metadata.architecture(), Some("qwen3next"));
}

// ---------------------------------------------------------------------------------------------
// rejection paths, one test each

#[test]
fn rejects_missing_file_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.gguf");
    let err = read_gguf_file(&path, &ReadOptions::default()).unwrap_err();
    assert!(matches!(err.kind(), GgufErrorKind::Io { offset: None, .. }));
    assert_eq!(err.path(), Some(path.as_path()));
    assert!(err.to_string().starts_with(&format!("{}: could not read the file", path.display())));
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn errors_of_a_file_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gguf");
    std::fs::write(&path, b"GGML\x03\0\0\0").unwrap();
    let err = read_gguf_file(&path, &ReadOptions::default()).unwrap_err();
    assert!(matches!(err.kind(), GgufErrorKind::BadMagic { .. }));
    assert!(err.to_string().starts_with(&format!("{}: not a GGUF file", path.display())));
}

/// A reader whose reads fail after `ok` bytes.
struct Failing {
    inner: Cursor<Vec<u8>>,
    ok: u64,
}

impl Read for Failing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.inner.position() >= self.ok {
            return Err(io::Error::other("disk on fire"));
        }
        let n = buf.len().min((self.ok - self.inner.position()) as usize);
        self.inner.read(&mut buf[..n])
    }
}

impl Seek for Failing {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

#[test]
fn rejects_read_failure_with_io_error() {
    let bytes = sample_writer(3).to_bytes(DataFill::HeaderOnly);
    let err = read_gguf(Failing { inner: Cursor::new(bytes), ok: 10 }, &ReadOptions::default()).unwrap_err();
    assert!(matches!(err.kind(), GgufErrorKind::Io { offset: Some(8), .. }), "{err:?}");
    assert_eq!(err.to_string(), "could not read the file at offset 8");
}

#[test]
fn rejects_bad_magic() {
    let kind = rejected(
        Raw::default().bytes(b"GGML").u32(3).u64(0).u64(0),
        "not a GGUF file: it starts with 'GGML', expected 'GGUF'",
    );
    assert!(matches!(kind, GgufErrorKind::BadMagic { found } if &found == b"GGML"));
}

#[test]
fn bad_magic_of_a_git_lfs_pointer_says_so() {
    let raw = Raw::default().bytes(b"version https://git-lfs.github.com/spec/v1\n");
    rejected(raw, "hint: this looks like a Git LFS pointer file");
    rejected(Raw::default().bytes(b"\x00\x01\xffG"), "'\\x00\\x01\\xffG'");
}

#[test]
fn rejects_big_endian_file() {
    let raw = Raw::default().bytes(b"GGUF").bytes(&3u32.to_be_bytes()).bytes(&2u64.to_be_bytes());
    let kind = rejected(raw, "big-endian GGUF file");
    assert!(matches!(kind, GgufErrorKind::BigEndian { version: 3, raw: 0x0300_0000 }));
}

#[test]
fn rejects_unsupported_version() {
    for v in [0, 1, 4, 0x1234_5678] {
        let kind =
            rejected(Raw::header(v, 0, 0), &format!("unsupported GGUF version '{v}', expected 2 or 3"));
        assert!(matches!(kind, GgufErrorKind::UnsupportedVersion { version } if version == v));
    }
}

#[test]
fn rejects_truncated_header() {
    let kind = rejected(
        Raw::default().bytes(b"GGUF").u32(3).u32(0),
        "truncated header: the tensor count at offset 8 needs 8 bytes, but the file ends at 12\nhint: ",
    );
    assert!(matches!(kind, GgufErrorKind::Truncated { offset: 8, needed: 8, file_size: 12, .. }));
    rejected(Raw::default().bytes(b"GG"), "the magic at offset 0 needs 4 bytes");
    // inside a value
    rejected(
        Raw::header(3, 0, 1).str("k").u32(ValueType::U64.id()).u32(0),
        "the value of 'k' at offset 37 needs 8 bytes",
    );
}

#[test]
fn rejects_tensor_count_too_large() {
    let kind = rejected(
        Raw::header(3, u64::MAX, 0),
        "tensor count at offset 8 is '18446744073709551615', too large: 0 bytes are left in the file, enough for at most 0",
    );
    assert!(matches!(kind, GgufErrorKind::CountTooLarge { what: Count::Tensors, remaining: 0, max: 0, .. }));
    // 48 bytes left hold at most 2 tensors of 24 bytes
    let raw = Raw::header(3, 3, 0).bytes(&[0; 48]);
    assert!(matches!(rejected(raw, "48 bytes are left"), GgufErrorKind::CountTooLarge { max: 2, .. }));
}

#[test]
fn rejects_metadata_entry_count_too_large() {
    let kind = rejected(
        Raw::header(3, 0, 1 << 40).bytes(&[0; 20]),
        "metadata entry count at offset 16 is '1099511627776'",
    );
    assert!(matches!(kind, GgufErrorKind::CountTooLarge { what: Count::MetadataEntries, max: 1, .. }));
}

#[test]
fn rejects_array_length_too_large() {
    let raw =
        Raw::header(3, 0, 1).str("arr").u32(ValueType::Array.id()).u32(ValueType::U32.id()).u64(10).u32(1);
    let kind = rejected(raw, "length of array 'arr' at offset 43 is '10', too large: 4 bytes are left");
    assert!(
        matches!(kind, GgufErrorKind::CountTooLarge { what: Count::ArrayLength { ref key }, max: 1, .. } if key == "arr")
    );
}

#[test]
fn rejects_array_length_of_strings_too_large_even_when_skipped() {
    // each string needs at least its 8-byte length
    let raw = Raw::header(3, 0, 1)
        .str("arr")
        .u32(ValueType::Array.id())
        .u32(ValueType::String.id())
        .u64(1_000_000)
        .str("x");
    rejected(raw, "length of array 'arr' at offset 43 is '1000000'");
}

#[test]
fn rejects_string_length_too_large() {
    let raw = Raw::header(3, 0, 1).u64(1 << 62).bytes(b"key").bytes(&[0; 16]);
    let kind = rejected(
        raw,
        "length of the key of metadata entry 0 at offset 24 is '4611686018427387904', too large",
    );
    assert!(matches!(
        kind,
        GgufErrorKind::CountTooLarge { what: Count::StringLength { .. }, remaining: 19, .. }
    ));
    // a string inside a skipped string array (longer than DEFAULT_EAGER_ARRAY_LEN, so skipped)
    let raw = Raw::header(3, 0, 1)
        .str("arr")
        .u32(9)
        .u32(ValueType::String.id())
        .u64(600)
        .u64(10_000)
        .bytes(&[0; 4800]);
    rejected(raw, "length of an element of 'arr' at offset 51 is '10000', too large: 4800 bytes are left");
}

#[test]
fn rejects_invalid_utf8() {
    let raw = Raw::header(3, 0, 1).u64(2).bytes(&[0xff, 0xfe]).u32(0).bytes(&[0]);
    let kind = rejected(raw, "the key of metadata entry 0 at offset 32 is not valid UTF-8");
    assert!(matches!(kind, GgufErrorKind::InvalidUtf8 { offset: 32, .. }));
}

#[test]
fn rejects_unknown_value_type() {
    let kind = rejected(
        Raw::header(3, 0, 1).str("k").u32(13).u32(0),
        "metadata key 'k' has unknown value type '13' at offset 33",
    );
    assert!(matches!(kind, GgufErrorKind::UnknownValueType { type_id: 13, offset: 33, .. }));
    // as an array's element type
    rejected(Raw::header(3, 0, 1).str("k").u32(9).u32(99).u64(0), "unknown value type '99'");
}

#[test]
fn rejects_empty_key() {
    let kind = rejected(
        Raw::header(3, 0, 1).str("").u32(0).bytes(&[1]),
        "metadata entry 0 at offset 24 has an empty key",
    );
    assert!(matches!(kind, GgufErrorKind::EmptyKey { index: 0, offset: 24 }));
}

#[test]
fn rejects_duplicate_key() {
    let raw = Raw::header(3, 0, 2).kv_u32("a.b", 1).kv_u32("a.b", 2);
    let kind = rejected(raw, "duplicate metadata key 'a.b' (entry 1, offset 43)");
    assert!(matches!(kind, GgufErrorKind::DuplicateKey { index: 1, .. }));
}

#[test]
fn rejects_nesting_too_deep() {
    let mut raw = Raw::header(3, 0, 1).str("deep").u32(ValueType::Array.id());
    for _ in 0..9 {
        raw = raw.u32(ValueType::Array.id()).u64(1);
    }
    let raw = raw.u32(ValueType::U8.id()).u64(0);
    let kind = rejected(raw, "array 'deep' nests arrays 9 deep");
    assert!(matches!(kind, GgufErrorKind::NestingTooDeep { depth: 9, max: 8, .. }));
}

#[test]
fn accepts_nesting_at_the_limit() {
    let mut raw = Raw::header(3, 0, 1).str("deep").u32(ValueType::Array.id());
    for _ in 0..7 {
        raw = raw.u32(ValueType::Array.id()).u64(1);
    }
    let file = raw.u32(ValueType::U8.id()).u64(0).read().unwrap();
    assert_eq!(file.metadata.get_array("deep").unwrap().len, 1);
}

#[test]
fn rejects_bad_alignment() {
    for (a, shown) in [(0, "'0'"), (48, "'48'")] {
        let raw = Raw::header(3, 0, 1).kv_u32("general.alignment", a);
        assert!(matches!(
            rejected(raw, &format!("metadata key 'general.alignment' is {shown}")),
            GgufErrorKind::BadAlignment { .. }
        ));
    }
    let raw = Raw::header(3, 0, 1).kv_str("general.alignment", "32");
    rejected(
        raw,
        "metadata key 'general.alignment' is '\"32\" (string)', expected a power of two stored as u32",
    );
    let raw = Raw::header(3, 0, 1).str("general.alignment").u32(ValueType::U64.id()).u64(32);
    rejected(raw, "is '32 (u64)'");
}

#[test]
fn rejects_tensor_name_too_long() {
    let name = "x".repeat(64);
    let kind = rejected(one_tensor(&name, &[32], 0, 0), "tensor 0 has a name of 64 bytes");
    assert!(matches!(kind, GgufErrorKind::TensorNameTooLong { len: 64, .. }));
    assert!(one_tensor(&"x".repeat(63), &[32], 0, 0).read().is_ok());
}

#[test]
fn rejects_duplicate_tensor() {
    let raw = Raw::header(3, 2, 0).tensor("a", &[8], 0, 0).tensor("a", &[8], 0, 32);
    let kind = rejected(raw, "duplicate tensor 'a' (tensor 1)");
    assert!(matches!(kind, GgufErrorKind::DuplicateTensor { index: 1, .. }));
}

#[test]
fn rejects_too_many_dims() {
    let kind =
        rejected(one_tensor("t", &[1, 1, 1, 1, 1], 0, 0), "tensor 't' has '5' dimensions, expected 1 to 4");
    assert!(matches!(kind, GgufErrorKind::InvalidDimCount { n_dims: 5, .. }));
    rejected(one_tensor("t", &[], 0, 0), "tensor 't' has '0' dimensions");
}

#[test]
fn rejects_zero_or_absurd_dimension() {
    let kind =
        rejected(one_tensor("t", &[32, 0], 0, 0), "tensor 't' has dimension 1 of '0', expected 1 to 2^63-1");
    assert!(matches!(kind, GgufErrorKind::InvalidDim { axis: 1, value: 0, .. }));
    let kind = rejected(one_tensor("t", &[1 << 63], 0, 0), "dimension 0 of '9223372036854775808'");
    assert!(matches!(kind, GgufErrorKind::InvalidDim { axis: 0, .. }));
}

#[test]
fn rejects_element_count_overflow() {
    let kind = rejected(
        one_tensor("t", &[1 << 32, 1 << 31], 0, 0),
        "tensor 't' of shape [4294967296, 2147483648] has more than 2^63-1 elements",
    );
    assert!(matches!(kind, GgufErrorKind::ElementCountOverflow { .. }));
}

#[test]
fn rejects_removed_type() {
    for id in [4, 5, 31, 32, 33, 36, 37, 38] {
        let kind = rejected(
            one_tensor("t", &[32], id, 0),
            &format!("tensor 't' has ggml type id '{id}', whose support llama.cpp removed"),
        );
        assert!(matches!(kind, GgufErrorKind::RemovedType { type_id, .. } if type_id == id));
    }
}

#[test]
fn rejects_unknown_type() {
    for id in [43, 1000, u32::MAX] {
        let kind = rejected(
            one_tensor("blk.0.x", &[32], id, 0),
            &format!("tensor 'blk.0.x' has unknown ggml type id '{id}'"),
        );
        assert!(matches!(kind, GgufErrorKind::UnknownType { type_id, .. } if type_id == id));
    }
    // 40-42 are known to build 11434
    assert!(one_tensor("t", &[128], 41, 0).read().is_ok());
}

#[test]
fn rejects_row_not_a_multiple_of_the_block_size() {
    let kind = rejected(
        one_tensor("t", &[100, 2], GgmlType::Q4K.id(), 0),
        "tensor 't' of type Q4_K has rows of '100' elements, expected a multiple of the block size 256",
    );
    assert!(matches!(kind, GgufErrorKind::BlockSize { ne0: 100, block_size: 256, .. }));
}

#[test]
fn rejects_misaligned_offset() {
    let kind = rejected(
        one_tensor("t", &[8], 0, 16),
        "tensor 't' has data offset '16', expected a multiple of the alignment 32",
    );
    assert!(matches!(kind, GgufErrorKind::MisalignedOffset { offset: 16, alignment: 32, .. }));
}

#[test]
fn rejects_overlapping_tensors() {
    // a is 16 f32 = 64 bytes at 0; b starts at 32
    let raw = Raw::header(3, 3, 0)
        .tensor("c", &[8], 0, 256)
        .tensor("b", &[8], 0, 32)
        .tensor("a", &[16], 0, 0)
        .pad(32);
    let kind = rejected(raw, "tensors 'a' (data bytes 0..64) and 'b' (from data offset '32') overlap");
    assert!(matches!(kind, GgufErrorKind::OverlappingTensors { first_end: 64, second_offset: 32, .. }));
    // same offset
    rejected(Raw::header(3, 2, 0).tensor("a", &[8], 0, 0).tensor("b", &[8], 0, 0), "overlap");
}

#[test]
fn rejects_tensor_data_overflow() {
    let raw = one_tensor("t", &[64], 0, (1 << 63) - 64);
    let kind = rejected(
        raw,
        "tensor 't' at data offset '9223372036854775744' with 256 bytes ends beyond any possible file size",
    );
    assert!(matches!(kind, GgufErrorKind::TensorDataOverflow { size: Some(256), .. }));
    // 2^62 f64 elements: 2^65 bytes
    let kind =
        rejected(one_tensor("t", &[1 << 61, 2], GgmlType::F64.id(), 0), "with a size above 2^64 bytes");
    assert!(matches!(kind, GgufErrorKind::TensorDataOverflow { size: None, .. }));
}

#[test]
fn errors_are_send_sync_and_static() {
    fn check<E: std::error::Error + Send + Sync + 'static>() {}
    check::<GgufError>();
}
