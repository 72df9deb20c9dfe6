//! GGUF files as llama.cpp 11434 reads them: metadata, the tensor table, and split models.
//!
//! Only the header is read, never the weights. A GGUF file is untrusted input: the reader caps every
//! count and length against the bytes left in the file before allocating, uses checked arithmetic for
//! every size, and returns a typed error instead of panicking.
//!
//! The format: ggml/include/gguf.h and ggml/src/gguf.cpp in the reference tree; split files as
//! tools/gguf-split/gguf-split.cpp writes them.

mod error;
mod ggml_type;
mod metadata;
mod reader;
mod split;
mod writer;

pub use error::{Count, GgufError, GgufErrorKind, WriteError};
pub use ggml_type::{GgmlType, TypeId};
pub use metadata::{Metadata, MetadataArray, MetadataValue, ValueType};
pub use reader::{
    ArraySelection, DEFAULT_EAGER_ARRAY_LEN, MAX_ARRAY_NESTING, ReadOptions, read_gguf, read_gguf_file,
};
pub use split::{SPLIT_COUNT, SPLIT_NO, SPLIT_TENSORS_COUNT, open_model};
pub use writer::{DataFill, GgufWriter};

use crate::units::Bytes;

/// GGUF's default data alignment when `general.alignment` is absent (gguf.h:46).
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// The most dimensions a ggml tensor has (`GGML_MAX_DIMS`, ggml.h).
pub const MAX_DIMS: usize = 4;

/// One entry of a GGUF tensor table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name, e.g. `blk.12.ffn_up_exps.weight`.
    pub name: String,
    /// The shape in ggml order (`ne0` first, the row length), 1 to 4 entries.
    pub dims: Vec<u64>,
    /// The ggml type.
    pub ggml_type: GgmlType,
    /// Offset of the tensor's data from the start of its file's data section.
    pub offset: u64,
    /// `ggml_nbytes`: the tensor's data size in bytes.
    pub size: Bytes,
    /// Which file of a split model holds the tensor: the index into [`GgufModel::shards`]
    /// (0 for an unsplit file).
    pub shard: usize,
}

impl TensorInfo {
    /// The number of elements.
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// `ne0`, the row length.
    pub fn ne0(&self) -> u64 {
        self.dims.first().copied().unwrap_or(0)
    }
}

/// Whether a file's tensor data region is all there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataStatus {
    /// The file is at least as long as its last tensor's end.
    Complete,
    /// The header is whole but the file ends before the tensor data does: a header-only fixture or a
    /// partial download. The model can still be planned, not loaded.
    Missing {
        /// Where the last tensor's data ends, from the start of the file.
        expected_end: u64,
        /// The file's actual length.
        file_size: u64,
    },
}

/// One parsed GGUF file: its header, never its tensor data.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufFile {
    /// GGUF version, 2 or 3.
    pub version: u32,
    /// Key-value metadata, in file order.
    pub metadata: Metadata,
    /// The tensor table, in file order.
    pub tensors: Vec<TensorInfo>,
    /// `general.alignment`, or 32.
    pub alignment: u64,
    /// Where the data section starts, from the start of the file.
    pub data_offset: u64,
    /// The file's length in bytes.
    pub file_size: u64,
    /// Whether the tensor data is all there.
    pub data: DataStatus,
}

/// A model: one GGUF file, or all shards of a split model presented as one.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufModel {
    /// The files, in shard order (`split.no` 0 first). One entry for an unsplit model.
    pub shards: Vec<Shard>,
}

/// One file of a model.
#[derive(Clone, Debug, PartialEq)]
pub struct Shard {
    /// Where the file was read from.
    pub path: std::path::PathBuf,
    /// Its header.
    pub file: GgufFile,
}

impl GgufModel {
    /// The model's metadata: the first shard's (gguf-split copies all keys into shard 0; later shards
    /// carry only the `split.*` keys).
    pub fn metadata(&self) -> Option<&Metadata> {
        self.shards.first().map(|s| &s.file.metadata)
    }

    /// Every tensor of every shard, in shard order then file order.
    pub fn tensors(&self) -> impl Iterator<Item = &TensorInfo> {
        self.shards.iter().flat_map(|s| s.file.tensors.iter())
    }

    /// The sum of all tensor data sizes (what llama.cpp's `print_info: file size` reports).
    pub fn tensor_bytes(&self) -> Bytes {
        self.tensors().map(|t| t.size).sum()
    }

    /// True if any shard's data region is missing or short.
    pub fn is_header_only(&self) -> bool {
        self.shards.iter().any(|s| s.file.data != DataStatus::Complete)
    }
}
