//! The GGUF header reader: metadata and the tensor table of one file, never its tensor data.
//!
//! The file is untrusted. Its length is learnt first; every count and length is checked against the
//! bytes left before anything is allocated for it, and no up-front allocation is larger than those
//! bytes; sizes use checked arithmetic; every rejection is a [`GgufErrorKind`], never a panic. The
//! checks are gguf.cpp's (`gguf_init_from_reader`, gguf.cpp:460-932) plus some of our own: a
//! dimension of 0 and misaligned or overlapping tensors are rejected, while tensors need not be
//! packed back to back. Large arrays (a tokenizer's 150,000 tokens) are walked, not loaded, unless
//! [`ReadOptions`] asks for them.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::error::{Count, GgufError, GgufErrorKind};
use super::writer::{GGML_MAX_NAME, GGUF_MAGIC};
use super::{
    DEFAULT_ALIGNMENT, DataStatus, GgmlType, GgufFile, MAX_DIMS, Metadata, MetadataArray, MetadataValue,
    TensorInfo, TypeId, ValueType,
};
use crate::units::Bytes;

/// How deep arrays may nest in arrays. gguf.cpp rejects arrays of arrays outright (gguf.cpp:606);
/// the format allows them, so we read a few levels and refuse deeper files.
pub const MAX_ARRAY_NESTING: u32 = 8;

/// Arrays of at most this many elements are loaded unless [`ReadOptions`] says otherwise. As many as
/// a model may have blocks (`LLAMA_MAX_LAYERS`, llama-hparams.h:11), so that per-layer arrays
/// (`head_count_kv`, `recurrent_layers`, `sliding_window_pattern`, ...) are always there for the
/// model description; tokenizer arrays are far longer and stay skipped.
pub const DEFAULT_EAGER_ARRAY_LEN: u64 = 512;

/// The longest string gguf.cpp reads (`GGUF_MAX_STRING_LENGTH`, gguf.cpp:20).
const MAX_STRING_LENGTH: u64 = 1024 * 1024 * 1024;

/// The longest array gguf.cpp reads (`GGUF_MAX_ARRAY_ELEMENTS`, gguf.cpp:21).
const MAX_ARRAY_ELEMENTS: u64 = 1024 * 1024 * 1024;

/// The smallest encoding of one metadata entry: an empty key's length (8), the type (4), a u8.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;

/// The smallest encoding of one tensor info: an empty name's length (8), `n_dims` (4), no dims,
/// the type (4), the offset (8).
const MIN_TENSOR_BYTES: u64 = 8 + 4 + 4 + 8;

/// Large enough that walking a string array's lengths rarely reaches the operating system.
const BUFFER_BYTES: usize = 64 * 1024;

/// Which metadata arrays to load; the others are walked and kept as element type and length
/// ([`MetadataArray::values`] is `None`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadOptions {
    /// Arrays of at most this many elements are loaded (default [`DEFAULT_EAGER_ARRAY_LEN`]).
    /// Inside an array that is loaded for this reason, the same limit applies to each nested array.
    pub eager_array_len: u64,
    /// Arrays loaded whatever their length, nested arrays included.
    pub arrays: ArraySelection,
}

/// Arrays to load whatever their length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArraySelection {
    /// The arrays under these keys (none by default).
    Keys(Vec<String>),
    /// Every array. Each loaded element takes about 40 bytes of memory whatever its size in the file.
    All,
}

impl Default for ArraySelection {
    fn default() -> ArraySelection {
        ArraySelection::Keys(Vec::new())
    }
}

impl Default for ReadOptions {
    fn default() -> ReadOptions {
        ReadOptions { eager_array_len: DEFAULT_EAGER_ARRAY_LEN, arrays: ArraySelection::default() }
    }
}

impl ReadOptions {
    /// Options that load every array. Each loaded element takes about 40 bytes of memory.
    pub fn all_arrays() -> ReadOptions {
        ReadOptions { arrays: ArraySelection::All, ..ReadOptions::default() }
    }

    /// Also loads the array under `key`, whatever its length.
    #[must_use]
    pub fn with_array(mut self, key: impl Into<String>) -> ReadOptions {
        match &mut self.arrays {
            ArraySelection::Keys(keys) => keys.push(key.into()),
            ArraySelection::All => {}
        }
        self
    }

    /// Loads arrays of at most `len` elements.
    #[must_use]
    pub fn with_eager_array_len(mut self, len: u64) -> ReadOptions {
        self.eager_array_len = len;
        self
    }

    fn forces(&self, key: &str) -> bool {
        match &self.arrays {
            ArraySelection::Keys(keys) => keys.iter().any(|k| k == key),
            ArraySelection::All => true,
        }
    }
}

/// Reads a GGUF header from the start of `reader`.
///
/// Errors name no file; [`read_gguf_file`] names it.
pub fn read_gguf<R: Read + Seek>(reader: R, options: &ReadOptions) -> Result<GgufFile, GgufError> {
    parse(reader, options).map_err(GgufError::from)
}

/// Reads the GGUF header of the file at `path`; errors name the file.
pub fn read_gguf_file(path: &Path, options: &ReadOptions) -> Result<GgufFile, GgufError> {
    File::open(path)
        .map_err(|e| GgufErrorKind::io(None, e))
        .and_then(|file| parse(file, options))
        .map_err(|kind| GgufError::new(Some(path.to_path_buf()), kind))
}

type Result<T, E = GgufErrorKind> = std::result::Result<T, E>;

/// A buffered reader that knows where it is and how long the file is.
struct Source<R> {
    inner: BufReader<R>,
    pos: u64,
    len: u64,
}

impl<R: Read + Seek> Source<R> {
    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn need(&self, n: u64, what: impl FnOnce() -> String) -> Result<()> {
        if n > self.remaining() {
            return Err(GgufErrorKind::Truncated {
                what: what(),
                offset: self.pos,
                needed: n,
                file_size: self.len,
            });
        }
        Ok(())
    }

    fn fixed<const N: usize>(&mut self, what: impl FnOnce() -> String) -> Result<[u8; N]> {
        self.need(N as u64, what)?;
        let mut buf = [0u8; N];
        self.inner.read_exact(&mut buf).map_err(|e| GgufErrorKind::io(Some(self.pos), e))?;
        self.pos += N as u64;
        Ok(buf)
    }

    fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32> {
        self.fixed(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: impl FnOnce() -> String) -> Result<u64> {
        self.fixed(what).map(u64::from_le_bytes)
    }

    /// `n` bytes, which the caller has checked against the bytes left.
    fn bytes(&mut self, n: u64) -> Result<Vec<u8>> {
        self.need(n, String::new)?;
        let len = usize::try_from(n)
            .map_err(|_| GgufErrorKind::io(Some(self.pos), std::io::ErrorKind::OutOfMemory.into()))?;
        let mut buf = vec![0u8; len];
        self.inner.read_exact(&mut buf).map_err(|e| GgufErrorKind::io(Some(self.pos), e))?;
        self.pos += n;
        Ok(buf)
    }

    fn skip(&mut self, n: u64, what: impl FnOnce() -> String) -> Result<()> {
        self.need(n, what)?;
        let delta = i64::try_from(n)
            .map_err(|_| GgufErrorKind::io(Some(self.pos), std::io::ErrorKind::InvalidInput.into()))?;
        self.inner.seek_relative(delta).map_err(|e| GgufErrorKind::io(Some(self.pos), e))?;
        self.pos += n;
        Ok(())
    }

    /// A string's length, checked against the bytes left and gguf.cpp's cap.
    fn string_len(&mut self, of: &dyn Fn() -> String) -> Result<u64> {
        let at = self.pos;
        let n = self.u64(|| format!("the length of {}", of()))?;
        let remaining = self.remaining();
        let max = remaining.min(MAX_STRING_LENGTH);
        if n > max {
            return Err(GgufErrorKind::CountTooLarge {
                what: Count::StringLength { of: of() },
                count: n,
                offset: at,
                remaining,
                max,
            });
        }
        Ok(n)
    }

    fn string(&mut self, of: &dyn Fn() -> String) -> Result<String> {
        let n = self.string_len(of)?;
        let at = self.pos;
        let bytes = self.bytes(n)?;
        String::from_utf8(bytes).map_err(|_| GgufErrorKind::InvalidUtf8 { what: of(), offset: at })
    }

    fn skip_string(&mut self, of: &dyn Fn() -> String) -> Result<()> {
        let n = self.string_len(of)?;
        self.skip(n, String::new)
    }
}

/// `n` elements of `T`, but never more memory up front than the bytes left in the file.
fn capacity<T>(n: u64, remaining: u64) -> usize {
    let fit = remaining / (std::mem::size_of::<T>().max(1) as u64);
    usize::try_from(n.min(fit)).unwrap_or(0)
}

fn parse<R: Read + Seek>(mut reader: R, options: &ReadOptions) -> Result<GgufFile> {
    let len = reader.seek(SeekFrom::End(0)).map_err(|e| GgufErrorKind::io(None, e))?;
    reader.seek(SeekFrom::Start(0)).map_err(|e| GgufErrorKind::io(Some(0), e))?;
    let mut src = Source { inner: BufReader::with_capacity(BUFFER_BYTES, reader), pos: 0, len };

    let magic: [u8; 4] = src.fixed(|| "the magic".to_owned())?;
    if magic != GGUF_MAGIC {
        return Err(GgufErrorKind::BadMagic { found: magic });
    }

    let version = src.u32(|| "the version".to_owned())?;
    match version {
        2 | 3 => {}
        // A big-endian file's small version number reads as a huge one (gguf.cpp:499-509).
        v if (1..=3).contains(&v.swap_bytes()) => {
            return Err(GgufErrorKind::BigEndian { raw: v, version: v.swap_bytes() });
        }
        v => return Err(GgufErrorKind::UnsupportedVersion { version: v }),
    }

    let n_tensors_at = src.pos;
    let n_tensors = src.u64(|| "the tensor count".to_owned())?;
    let n_kv_at = src.pos;
    let n_kv = src.u64(|| "the metadata entry count".to_owned())?;
    check_count(Count::MetadataEntries, n_kv, n_kv_at, src.remaining(), MIN_KV_BYTES, u64::MAX)?;
    check_count(Count::Tensors, n_tensors, n_tensors_at, src.remaining(), MIN_TENSOR_BYTES, u64::MAX)?;

    let metadata = read_metadata(&mut src, n_kv, options)?;
    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(MetadataValue::U32(a)) if a.is_power_of_two() => u64::from(*a),
        Some(MetadataValue::U32(a)) => return Err(GgufErrorKind::BadAlignment { found: a.to_string() }),
        Some(other) => return Err(GgufErrorKind::BadAlignment { found: describe(other) }),
    };

    let tensors = read_tensor_infos(&mut src, n_tensors)?;
    let data_offset = Bytes(src.pos).align_up(alignment).get();
    let expected_end = check_layout(&tensors, alignment, data_offset)?;
    let data = match expected_end {
        Some(end) if end > len => DataStatus::Missing { expected_end: end, file_size: len },
        _ => DataStatus::Complete,
    };
    Ok(GgufFile { version, metadata, tensors, alignment, data_offset, file_size: len, data })
}

/// Rejects a count whose smallest encoding needs more than the `remaining` bytes, or above `cap`.
fn check_count(what: Count, count: u64, offset: u64, remaining: u64, min_bytes: u64, cap: u64) -> Result<()> {
    let max = (remaining / min_bytes).min(cap);
    if count > max {
        return Err(GgufErrorKind::CountTooLarge { what, count, offset, remaining, max });
    }
    Ok(())
}

fn read_metadata<R: Read + Seek>(src: &mut Source<R>, n_kv: u64, options: &ReadOptions) -> Result<Metadata> {
    let mut entries = Vec::with_capacity(capacity::<(String, MetadataValue)>(n_kv, src.remaining()));
    let mut seen: HashSet<String> = HashSet::with_capacity(entries.capacity());
    for index in 0..n_kv {
        let key_at = src.pos;
        let key = src.string(&|| format!("the key of metadata entry {index}"))?;
        if key.is_empty() {
            return Err(GgufErrorKind::EmptyKey { index, offset: key_at });
        }
        if !seen.insert(key.clone()) {
            return Err(GgufErrorKind::DuplicateKey { key, index, offset: key_at });
        }
        let ty = read_type(src, &key)?;
        let value = if ty == ValueType::Array {
            let force = options.forces(&key);
            MetadataValue::Array(read_array(src, &key, 1, Load::from(force, options.eager_array_len))?)
        } else {
            read_scalar(src, ty, &key)?
        };
        entries.push((key, value));
    }
    Ok(Metadata::new(entries))
}

fn read_type<R: Read + Seek>(src: &mut Source<R>, key: &str) -> Result<ValueType> {
    let at = src.pos;
    let id = src.u32(|| format!("the value type of '{key}'"))?;
    ValueType::from_id(id).ok_or_else(|| GgufErrorKind::UnknownValueType {
        key: key.to_owned(),
        type_id: id,
        offset: at,
    })
}

/// Whether an array's elements are loaded.
#[derive(Clone, Copy)]
enum Load {
    /// Everything, nested arrays included: the caller asked for this key.
    All,
    /// Arrays of at most this many elements.
    UpTo(u64),
    /// Nothing: an enclosing array is being skipped.
    Skip,
}

impl Load {
    fn from(force: bool, eager: u64) -> Load {
        if force { Load::All } else { Load::UpTo(eager) }
    }
}

/// One array (its element type, length and elements), `depth` levels deep.
fn read_array<R: Read + Seek>(
    src: &mut Source<R>,
    key: &str,
    depth: u32,
    load: Load,
) -> Result<MetadataArray> {
    if depth > MAX_ARRAY_NESTING {
        return Err(GgufErrorKind::NestingTooDeep {
            key: key.to_owned(),
            depth,
            max: MAX_ARRAY_NESTING,
            offset: src.pos,
        });
    }
    let element_type = read_type(src, key)?;
    let len_at = src.pos;
    let len = src.u64(|| format!("the length of array '{key}'"))?;
    // A string is at least its length, an array at least its type and length.
    let min_bytes =
        element_type.fixed_size().unwrap_or(if element_type == ValueType::String { 8 } else { 12 });
    check_count(
        Count::ArrayLength { key: key.to_owned() },
        len,
        len_at,
        src.remaining(),
        min_bytes,
        MAX_ARRAY_ELEMENTS,
    )?;

    let loaded = match load {
        Load::All => true,
        Load::UpTo(limit) => len <= limit,
        Load::Skip => false,
    };
    if !loaded {
        match element_type {
            ValueType::String => {
                for _ in 0..len {
                    src.skip_string(&|| format!("an element of '{key}'"))?;
                }
            }
            ValueType::Array => {
                for _ in 0..len {
                    read_array(src, key, depth + 1, Load::Skip)?;
                }
            }
            // check_count has made sure the product fits in the bytes left.
            _ => src.skip(len * min_bytes, || format!("the elements of '{key}'"))?,
        }
        return Ok(MetadataArray { element_type, len, values: None });
    }

    let mut values = Vec::with_capacity(capacity::<MetadataValue>(len, src.remaining()));
    for _ in 0..len {
        values.push(if element_type == ValueType::Array {
            MetadataValue::Array(read_array(src, key, depth + 1, load)?)
        } else {
            read_scalar(src, element_type, key)?
        });
    }
    Ok(MetadataArray { element_type, len, values: Some(values) })
}

/// One value of a type other than `Array`.
fn read_scalar<R: Read + Seek>(src: &mut Source<R>, ty: ValueType, key: &str) -> Result<MetadataValue> {
    let what = || format!("the value of '{key}'");
    Ok(match ty {
        ValueType::U8 => MetadataValue::U8(u8::from_le_bytes(src.fixed(what)?)),
        ValueType::I8 => MetadataValue::I8(i8::from_le_bytes(src.fixed(what)?)),
        ValueType::U16 => MetadataValue::U16(u16::from_le_bytes(src.fixed(what)?)),
        ValueType::I16 => MetadataValue::I16(i16::from_le_bytes(src.fixed(what)?)),
        ValueType::U32 => MetadataValue::U32(u32::from_le_bytes(src.fixed(what)?)),
        ValueType::I32 => MetadataValue::I32(i32::from_le_bytes(src.fixed(what)?)),
        ValueType::U64 => MetadataValue::U64(u64::from_le_bytes(src.fixed(what)?)),
        ValueType::I64 => MetadataValue::I64(i64::from_le_bytes(src.fixed(what)?)),
        ValueType::F32 => MetadataValue::F32(f32::from_le_bytes(src.fixed(what)?)),
        ValueType::F64 => MetadataValue::F64(f64::from_le_bytes(src.fixed(what)?)),
        // gguf.cpp reads a bool as an int8 and takes any non-zero value as true (gguf.cpp:316-322).
        ValueType::Bool => MetadataValue::Bool(src.fixed::<1>(what)?[0] != 0),
        ValueType::String => MetadataValue::String(src.string(&|| format!("the value of '{key}'"))?),
        // read_metadata and read_array handle arrays themselves.
        ValueType::Array => MetadataValue::Array(read_array(src, key, 1, Load::Skip)?),
    })
}

fn read_tensor_infos<R: Read + Seek>(src: &mut Source<R>, n_tensors: u64) -> Result<Vec<TensorInfo>> {
    let mut tensors = Vec::with_capacity(capacity::<TensorInfo>(n_tensors, src.remaining()));
    let mut seen: HashSet<String> = HashSet::with_capacity(tensors.capacity());
    for index in 0..n_tensors {
        let name = src.string(&|| format!("the name of tensor {index}"))?;
        if name.len() >= GGML_MAX_NAME {
            return Err(GgufErrorKind::TensorNameTooLong { index, len: name.len() as u64, name });
        }
        if !seen.insert(name.clone()) {
            return Err(GgufErrorKind::DuplicateTensor { name, index });
        }

        let n_dims = src.u32(|| format!("the dimension count of tensor '{name}'"))?;
        if n_dims == 0 || n_dims as usize > MAX_DIMS {
            return Err(GgufErrorKind::InvalidDimCount { tensor: name, n_dims });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for axis in 0..n_dims as usize {
            let d = src.u64(|| format!("dimension {axis} of tensor '{name}'"))?;
            // ggml's ne is int64_t and gguf.cpp rejects negative values (gguf.cpp:691-697); a 0
            // would make an empty tensor, which no model has.
            if d == 0 || d > i64::MAX.unsigned_abs() {
                return Err(GgufErrorKind::InvalidDim { tensor: name, axis, value: d });
            }
            dims.push(d);
        }
        let elements = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
        if elements.is_none_or(|n| n > i64::MAX.unsigned_abs()) {
            return Err(GgufErrorKind::ElementCountOverflow { tensor: name, dims });
        }

        let type_id = src.u32(|| format!("the type of tensor '{name}'"))?;
        let ggml_type = match GgmlType::from_id(type_id) {
            TypeId::Known(t) => t,
            TypeId::Removed(id) => return Err(GgufErrorKind::RemovedType { tensor: name, type_id: id }),
            TypeId::Unknown(id) => return Err(GgufErrorKind::UnknownType { tensor: name, type_id: id }),
        };
        if dims[0] % ggml_type.block_size() != 0 {
            return Err(GgufErrorKind::BlockSize {
                tensor: name,
                ggml_type,
                ne0: dims[0],
                block_size: ggml_type.block_size(),
            });
        }
        let offset = src.u64(|| format!("the data offset of tensor '{name}'"))?;
        let Some(size) = ggml_type.tensor_bytes(&dims) else {
            return Err(GgufErrorKind::TensorDataOverflow { tensor: name, offset, size: None });
        };
        tensors.push(TensorInfo { name, dims, ggml_type, offset, size: Bytes(size), shard: 0 });
    }
    Ok(tensors)
}

/// Checks that every tensor is aligned, ends inside a possible file and overlaps no other; returns
/// where the last tensor's data ends, from the start of the file (`None` without tensors).
fn check_layout(tensors: &[TensorInfo], alignment: u64, data_offset: u64) -> Result<Option<u64>> {
    let max_file = i64::MAX.unsigned_abs();
    for t in tensors {
        if t.offset % alignment != 0 {
            return Err(GgufErrorKind::MisalignedOffset {
                tensor: t.name.clone(),
                offset: t.offset,
                alignment,
            });
        }
        let end = data_offset.checked_add(t.offset).and_then(|o| o.checked_add(t.size.get()));
        if end.is_none_or(|e| e > max_file) {
            return Err(GgufErrorKind::TensorDataOverflow {
                tensor: t.name.clone(),
                offset: t.offset,
                size: Some(t.size.get()),
            });
        }
    }

    // Sorted by offset, each tensor must start at or after the furthest end so far; the table itself
    // keeps file order.
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| (tensors[i].offset, i));
    let mut furthest: Option<(usize, u64)> = None;
    for &i in &order {
        let t = &tensors[i];
        // Cannot overflow: checked above against max_file.
        let end = t.offset + t.size.get();
        if let Some((f, f_end)) = furthest {
            if t.offset < f_end {
                return Err(GgufErrorKind::OverlappingTensors {
                    first: tensors[f].name.clone(),
                    first_offset: tensors[f].offset,
                    first_end: f_end,
                    second: t.name.clone(),
                    second_offset: t.offset,
                });
            }
        }
        if furthest.is_none_or(|(_, f_end)| end > f_end) {
            furthest = Some((i, end));
        }
    }
    Ok(furthest.map(|(_, end)| data_offset + end))
}

/// A value as an error message shows it: the value and its type.
pub(crate) fn describe(value: &MetadataValue) -> String {
    match value {
        MetadataValue::String(s) => format!("{s:?} (string)"),
        MetadataValue::Array(a) => format!("an array of {} {}", a.len, a.element_type),
        other => {
            let shown = format!("{other:?}");
            // `U16(48)` → `48 (u16)`
            let inner = shown.split_once('(').map_or(shown.as_str(), |(_, rest)| rest.trim_end_matches(')'));
            format!("{inner} ({})", other.value_type())
        }
    }
}
