//! Why a GGUF file, or a split model, was rejected: one [`GgufErrorKind`] variant per rejection
//! path, each carrying the offset, the key or tensor, the value found and what was expected;
//! [`GgufError`] adds the file it is about.
//!
//! Messages are lowercase with no trailing period, quote the bad value in single quotes and put a fix
//! on its own `hint:` line.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::GgmlType;

/// A GGUF file or split model that could not be read, and which file it was.
#[derive(Debug)]
pub struct GgufError {
    path: Option<PathBuf>,
    kind: GgufErrorKind,
}

impl GgufError {
    /// An error about `path`.
    pub fn new(path: Option<PathBuf>, kind: GgufErrorKind) -> GgufError {
        GgufError { path, kind }
    }

    /// The file the error is about: `None` for [`read_gguf`](super::read_gguf) on a reader that has
    /// no path.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// What was wrong.
    pub fn kind(&self) -> &GgufErrorKind {
        &self.kind
    }

    /// What was wrong, by value.
    pub fn into_kind(self) -> GgufErrorKind {
        self.kind
    }
}

impl From<GgufErrorKind> for GgufError {
    fn from(kind: GgufErrorKind) -> GgufError {
        GgufError { path: None, kind }
    }
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(path) = &self.path {
            write!(f, "{}: ", path.display())?;
        }
        self.kind.fmt(f)
    }
}

impl std::error::Error for GgufError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The kind's own message is part of this error's message; only its cause is a source.
        std::error::Error::source(&self.kind)
    }
}

/// What a count in a GGUF header counts (see [`GgufErrorKind::CountTooLarge`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Count {
    /// The number of tensors in the header.
    Tensors,
    /// The number of metadata key-value pairs in the header.
    MetadataEntries,
    /// The number of elements of the array under `key`.
    ArrayLength {
        /// The metadata key.
        key: String,
    },
    /// The length of a string; `of` says which string.
    StringLength {
        /// Which string, e.g. `the name of tensor 3`.
        of: String,
    },
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Count::Tensors => f.write_str("tensor count"),
            Count::MetadataEntries => f.write_str("metadata entry count"),
            Count::ArrayLength { key } => write!(f, "length of array '{key}'"),
            Count::StringLength { of } => write!(f, "length of {of}"),
        }
    }
}

const PARTIAL_DOWNLOAD_HINT: &str =
    "hint: the file may be a partial download: compare its size with the source and download it again";

/// The longest list of missing shards a message spells out; the error value holds all of them.
const MAX_LISTED_SHARDS: usize = 20;

/// What was wrong with a GGUF file or split model. One variant per rejection path.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum GgufErrorKind {
    /// Reading failed (or the file could not be opened).
    #[error("could not read the file{}", at(*.offset))]
    Io {
        /// Where the read started, if known.
        offset: Option<u64>,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// The file does not start with `GGUF`.
    #[error("not a GGUF file: it starts with '{}', expected 'GGUF'{}", show_bytes(found), magic_hint(*found))]
    BadMagic {
        /// The first four bytes.
        found: [u8; 4],
    },

    /// The version reads as a byte-swapped small number: the file was written big-endian.
    #[error(
        "big-endian GGUF file: its version reads '{raw}' little-endian, which is version {version} \
         big-endian; only little-endian files are supported\n\
         hint: convert it with llama.cpp's gguf-py/gguf/scripts/gguf_convert_endian.py FILE little"
    )]
    BigEndian {
        /// The version as stored (read little-endian).
        raw: u32,
        /// The version byte-swapped.
        version: u32,
    },

    /// A version other than 2 or 3.
    #[error("unsupported GGUF version '{version}', expected 2 or 3")]
    UnsupportedVersion {
        /// The version found.
        version: u32,
    },

    /// The file ends inside the header.
    #[error(
        "truncated header: {what} at offset {offset} needs {needed} bytes, but the file ends at \
         {file_size}\n{PARTIAL_DOWNLOAD_HINT}"
    )]
    Truncated {
        /// What was being read.
        what: String,
        /// Where it starts.
        offset: u64,
        /// How many bytes it needs.
        needed: u64,
        /// The file's length.
        file_size: u64,
    },

    /// A count or length that the bytes left in the file cannot hold (or above llama.cpp's cap).
    #[error(
        "{what} at offset {offset} is '{count}', too large: {remaining} bytes are left in the file, \
         enough for at most {max}"
    )]
    CountTooLarge {
        /// What is counted.
        what: Count,
        /// The count found.
        count: u64,
        /// Where the count is stored.
        offset: u64,
        /// The bytes left after the count.
        remaining: u64,
        /// The largest count those bytes (and llama.cpp's limits) allow.
        max: u64,
    },

    /// A key, name or string value that is not UTF-8.
    #[error("{what} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// Which string.
        what: String,
        /// Where its bytes start.
        offset: u64,
    },

    /// A metadata value type id outside 0..=12.
    #[error("metadata key '{key}' has unknown value type '{type_id}' at offset {offset}, expected 0 to 12")]
    UnknownValueType {
        /// The key (for an array element: the array's key).
        key: String,
        /// The type id found.
        type_id: u32,
        /// Where the type id is stored.
        offset: u64,
    },

    /// A metadata key of length 0 (gguf.cpp:571-574 rejects it).
    #[error("metadata entry {index} at offset {offset} has an empty key")]
    EmptyKey {
        /// The entry's position in the header.
        index: u64,
        /// Where the key is stored.
        offset: u64,
    },

    /// A key that occurs twice (gguf.cpp:575-578 rejects it).
    #[error("duplicate metadata key '{key}' (entry {index}, offset {offset})")]
    DuplicateKey {
        /// The key.
        key: String,
        /// The second entry's position in the header.
        index: u64,
        /// Where the second entry's key is stored.
        offset: u64,
    },

    /// Arrays nested deeper than the reader allows.
    #[error("array '{key}' nests arrays {depth} deep at offset {offset}, at most {max} are supported")]
    NestingTooDeep {
        /// The metadata key.
        key: String,
        /// The depth reached.
        depth: u32,
        /// The limit.
        max: u32,
        /// Where the too-deep array starts.
        offset: u64,
    },

    /// `general.alignment` that is not a non-zero power of two stored as u32 (gguf.cpp:621-636).
    #[error("metadata key 'general.alignment' is '{found}', expected a power of two stored as u32")]
    BadAlignment {
        /// The value found, e.g. `48` or `"32" (string)`.
        found: String,
    },

    /// A tensor name of 64 bytes or more: ggml names hold 63 (`GGML_MAX_NAME`, ggml.h:229;
    /// gguf.cpp:657-661 rejects longer ones).
    #[error("tensor {index} has a name of {len} bytes ('{name}'), llama.cpp allows at most 63")]
    TensorNameTooLong {
        /// The tensor's position in the header.
        index: u64,
        /// The name.
        name: String,
        /// Its length in bytes.
        len: u64,
    },

    /// A tensor name that occurs twice in one file.
    #[error("duplicate tensor '{name}' (tensor {index})")]
    DuplicateTensor {
        /// The name.
        name: String,
        /// The second occurrence's position in the header.
        index: u64,
    },

    /// A tensor with 0 or more than 4 dimensions.
    #[error("tensor '{tensor}' has '{n_dims}' dimensions, expected 1 to 4")]
    InvalidDimCount {
        /// The tensor.
        tensor: String,
        /// The number found.
        n_dims: u32,
    },

    /// A dimension of 0, or one above `i64::MAX` (ggml's `ne` is signed).
    #[error("tensor '{tensor}' has dimension {axis} of '{value}', expected 1 to 2^63-1")]
    InvalidDim {
        /// The tensor.
        tensor: String,
        /// Which dimension (0 is `ne0`).
        axis: usize,
        /// The value found.
        value: u64,
    },

    /// A shape whose element count does not fit in `i64` (gguf.cpp:701-719).
    #[error("tensor '{tensor}' of shape {dims:?} has more than 2^63-1 elements")]
    ElementCountOverflow {
        /// The tensor.
        tensor: String,
        /// The shape, `ne0` first.
        dims: Vec<u64>,
    },

    /// A ggml type id whose support llama.cpp removed.
    #[error(
        "tensor '{tensor}' has ggml type id '{type_id}', whose support llama.cpp removed \
         (removed ids: 4, 5, 31-33, 36-38)\n\
         hint: convert or quantize the model again with a current llama.cpp"
    )]
    RemovedType {
        /// The tensor.
        tensor: String,
        /// The id found.
        type_id: u32,
    },

    /// A ggml type id llama.cpp 11434 does not know.
    #[error(
        "tensor '{tensor}' has unknown ggml type id '{type_id}', expected 0 to 42\n\
         hint: the model may need a newer llama.cpp than build 11434"
    )]
    UnknownType {
        /// The tensor.
        tensor: String,
        /// The id found.
        type_id: u32,
    },

    /// `ne0` that is not a whole number of blocks (gguf.cpp:737-745).
    #[error(
        "tensor '{tensor}' of type {ggml_type} has rows of '{ne0}' elements, expected a multiple of \
         the block size {block_size}"
    )]
    BlockSize {
        /// The tensor.
        tensor: String,
        /// Its type.
        ggml_type: GgmlType,
        /// The row length found.
        ne0: u64,
        /// The type's block size.
        block_size: u64,
    },

    /// A tensor data offset that is not a multiple of the alignment.
    #[error("tensor '{tensor}' has data offset '{offset}', expected a multiple of the alignment {alignment}")]
    MisalignedOffset {
        /// The tensor.
        tensor: String,
        /// Its offset in the data section.
        offset: u64,
        /// The file's alignment.
        alignment: u64,
    },

    /// Two tensors whose data regions overlap.
    #[error(
        "tensors '{first}' (data bytes {first_offset}..{first_end}) and '{second}' (from data offset \
         '{second_offset}') overlap"
    )]
    OverlappingTensors {
        /// The tensor with the lower offset.
        first: String,
        /// Where its data starts in the data section.
        first_offset: u64,
        /// Where its data ends.
        first_end: u64,
        /// The tensor that starts inside it.
        second: String,
        /// Where that one starts.
        second_offset: u64,
    },

    /// A tensor whose size or end cannot be represented: no file could hold its data.
    #[error(
        "tensor '{tensor}' at data offset '{offset}' with {} ends beyond any possible file size \
         (2^63-1 bytes)",
        show_size(*.size)
    )]
    TensorDataOverflow {
        /// The tensor.
        tensor: String,
        /// Its offset in the data section.
        offset: u64,
        /// Its size in bytes, `None` if that alone overflows.
        size: Option<u64>,
    },

    /// A split model whose other parts are not where its name says they are.
    #[error(
        "split model is missing {} of its {split_count} files:{}\n\
         hint: download every part into the same folder, named as llama.cpp expects \
         (NAME-00001-of-{split_count:05}.gguf and so on)",
        missing.len(),
        show_paths(missing)
    )]
    ShardMissing {
        /// Every missing file, in shard order.
        missing: Vec<PathBuf>,
        /// How many files the model has.
        split_count: u64,
    },

    /// A shard whose `split.*` keys disagree with the model (the error's path is the shard).
    #[error("split key '{key}' is '{found}', expected {expected}")]
    ShardMismatch {
        /// The key, e.g. `split.no`.
        key: &'static str,
        /// The value found (`absent` when the key is missing).
        found: String,
        /// What it should be.
        expected: String,
    },

    /// A tensor present in two shards (the error's path is the later shard).
    #[error("tensor '{name}' is also in {}", other.display())]
    DuplicateTensorAcrossShards {
        /// The tensor.
        name: String,
        /// The earlier shard holding it.
        other: PathBuf,
    },

    /// A file whose metadata says it is part of a split model but whose name does not say which
    /// part, so the other parts cannot be found.
    #[error(
        "the metadata says this is part {} of a {split_count}-file split model, but the file name does \
         not end in '{expected_suffix}'\n\
         hint: rename the parts to NAME-00001-of-{split_count:05}.gguf and so on: llama.cpp finds the \
         other parts by name",
        split_no + 1
    )]
    SplitNameNotRecognized {
        /// `split.no` (0-based).
        split_no: u64,
        /// `split.count`.
        split_count: u64,
        /// The suffix the name should have.
        expected_suffix: String,
    },
}

impl GgufErrorKind {
    pub(crate) fn io(offset: Option<u64>, source: io::Error) -> GgufErrorKind {
        GgufErrorKind::Io { offset, source }
    }
}

fn at(offset: Option<u64>) -> String {
    offset.map_or_else(String::new, |o| format!(" at offset {o}"))
}

fn show_size(size: Option<u64>) -> String {
    size.map_or_else(|| "a size above 2^64 bytes".to_owned(), |s| format!("{s} bytes"))
}

/// Printable ASCII as is, anything else as `\xNN`.
fn show_bytes(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' { char::from(b).to_string() } else { format!("\\x{b:02x}") }
        })
        .collect()
}

/// Recognizes the files that a failed download leaves instead of a model.
fn magic_hint(found: [u8; 4]) -> &'static str {
    match &found {
        b"vers" => {
            "\nhint: this looks like a Git LFS pointer file, not the model: fetch it with `git lfs pull`"
        }
        [b'<', ..] => "\nhint: this looks like an HTML page, e.g. an error page saved by a failed download",
        [b'{', ..] => "\nhint: this looks like a JSON document, e.g. an error saved by a failed download",
        _ => "",
    }
}

fn show_paths(paths: &[PathBuf]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    for p in paths.iter().take(MAX_LISTED_SHARDS) {
        let _ = write!(s, "\n  {}", p.display());
    }
    if paths.len() > MAX_LISTED_SHARDS {
        let _ = write!(s, "\n  and {} more", paths.len() - MAX_LISTED_SHARDS);
    }
    s
}

/// Why [`GgufWriter::add_tensor`](super::GgufWriter::add_tensor) refused a tensor: the file it
/// would write could not be read back.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum WriteError {
    /// A tensor of that name was already added.
    #[error("duplicate tensor '{name}'")]
    DuplicateTensor {
        /// The name.
        name: String,
    },

    /// A name of 64 bytes or more (`GGML_MAX_NAME`, ggml.h:229).
    #[error("tensor name '{name}' is {len} bytes long, llama.cpp allows at most 63")]
    NameTooLong {
        /// The name.
        name: String,
        /// Its length in bytes.
        len: usize,
    },

    /// A shape with 0 or more than 4 dimensions, a dimension of 0, or one above `i64::MAX`.
    #[error("tensor '{name}' has shape {dims:?}, expected 1 to 4 dimensions between 1 and 2^63-1")]
    InvalidShape {
        /// The tensor.
        name: String,
        /// The shape given.
        dims: Vec<u64>,
    },

    /// `ne0` that is not a whole number of blocks of the type.
    #[error("tensor '{name}' of type {ggml_type} has rows of '{ne0}' elements, expected a multiple of {}", ggml_type.block_size())]
    BlockSize {
        /// The tensor.
        name: String,
        /// Its type.
        ggml_type: GgmlType,
        /// The row length given.
        ne0: u64,
    },

    /// A tensor (or the data section with it) larger than any file can be.
    #[error("tensor '{name}' of shape {dims:?} would not fit in a file")]
    TooLarge {
        /// The tensor.
        name: String,
        /// The shape given.
        dims: Vec<u64>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_list_of_missing_shards_is_cut_short_in_the_message_only() {
        let missing: Vec<PathBuf> =
            (2..=30).map(|i| PathBuf::from(format!("m-{i:05}-of-00030.gguf"))).collect();
        let err = GgufError::new(
            Some("m-00001-of-00030.gguf".into()),
            GgufErrorKind::ShardMissing { missing, split_count: 30 },
        );
        let message = err.to_string();
        assert!(message.starts_with(
            "m-00001-of-00030.gguf: split model is missing 29 of its 30 files:\n  m-00002-of-00030.gguf\n"
        ));
        assert!(message.contains("\n  m-00021-of-00030.gguf\n  and 9 more\nhint: "), "{message}");
        assert!(!message.contains("m-00022"));
        assert!(
            matches!(err.into_kind(), GgufErrorKind::ShardMissing { missing, .. } if missing.len() == 29)
        );
    }

    #[test]
    fn magic_bytes_are_shown_printable() {
        assert_eq!(show_bytes(b"GG\x00\xff"), "GG\\x00\\xff");
        assert!(magic_hint(*b"<!DO").contains("HTML"));
        assert!(magic_hint(*b"{\"er").contains("JSON"));
        assert_eq!(magic_hint(*b"GGML"), "");
    }

    #[test]
    fn io_errors_keep_their_cause_as_source() {
        let err = GgufError::from(GgufErrorKind::io(Some(8), io::Error::other("disk on fire")));
        assert_eq!(err.to_string(), "could not read the file at offset 8");
        assert_eq!(std::error::Error::source(&err).map(ToString::to_string), Some("disk on fire".into()));
        assert_eq!(err.path(), None);
    }
}
