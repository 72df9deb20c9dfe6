//! What can go wrong when a GGUF header is turned into a model description, and what is worth saying
//! without failing.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::gguf::GgmlType;

/// Why a model description could not be built. Every variant names the file whose metadata or tensor
/// table is at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The model has no files at all.
    #[error("the model has no files")]
    NoShards,

    /// `general.architecture` is missing or not a string.
    #[error("{}: key \"general.architecture\" is missing or not a string", path.display())]
    MissingArchitecture {
        /// The first shard.
        path: PathBuf,
    },

    /// A key the architecture needs is absent.
    #[error("{}: required key \"{key}\" is missing (architecture \"{architecture}\")", path.display())]
    MissingKey {
        /// The first shard, which holds the metadata.
        path: PathBuf,
        /// `general.architecture`.
        architecture: String,
        /// The full key, e.g. `qwen3next.ssm.conv_kernel`.
        key: String,
    },

    /// A key holds a value of the wrong type.
    #[error("{}: key \"{key}\" holds {found}, expected {expected}", path.display())]
    WrongType {
        /// The first shard.
        path: PathBuf,
        /// The full key.
        key: String,
        /// What the file holds, e.g. `string` or `array of 12 f32`.
        found: String,
        /// What llama.cpp reads there.
        expected: &'static str,
    },

    /// A per-layer array has the wrong number of entries (llama-model-loader.cpp:477-479).
    #[error("{}: key \"{key}\" has {len} entries, expected {expected} (one per block)", path.display())]
    ArrayLength {
        /// The first shard.
        path: PathBuf,
        /// The full key.
        key: String,
        /// Entries in the file.
        len: u64,
        /// `block_count`.
        expected: u64,
    },

    /// An array value was skipped by the reader, so its entries are unknown.
    #[error("{}: the entries of array key \"{key}\" were not read", path.display())]
    ArrayNotRead {
        /// The first shard.
        path: PathBuf,
        /// The full key.
        key: String,
    },

    /// A value outside what llama.cpp accepts or what makes sense.
    #[error("{}: key \"{key}\" is {value}, expected {expected}", path.display())]
    BadValue {
        /// The first shard.
        path: PathBuf,
        /// The full key.
        key: String,
        /// The value found, as text.
        value: String,
        /// What would have been accepted.
        expected: String,
    },

    /// A tensor the model cannot do without is absent from every shard.
    #[error("{}: tensor \"{tensor}\" is missing (architecture \"{architecture}\")", path.display())]
    MissingTensor {
        /// The first shard.
        path: PathBuf,
        /// `general.architecture`.
        architecture: String,
        /// The tensor's name.
        tensor: String,
    },

    /// Two tensors share a name (within a file or across shards).
    #[error("{}: tensor \"{tensor}\" appears more than once", path.display())]
    DuplicateTensor {
        /// The file holding the second copy.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
    },

    /// A tensor's shape contradicts the metadata or another tensor.
    #[error("{}: tensor \"{tensor}\" has shape {dims:?}, expected {expected}", path.display())]
    Shape {
        /// The file holding the tensor.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// Its shape in ggml order.
        dims: Vec<u64>,
        /// What it should have been, in words.
        expected: String,
    },

    /// A KV cache row width is not a whole number of blocks of the cache type, which ggml rejects.
    #[error(
        "layer {layer}: a {width}-wide {cache} cache row is not a multiple of {ggml_type}'s block size {block}"
    )]
    KvRowSize {
        /// The layer index.
        layer: usize,
        /// `K` or `V`.
        cache: &'static str,
        /// The row width in elements.
        width: u64,
        /// The cache type.
        ggml_type: GgmlType,
        /// The type's block size.
        block: u64,
    },
}

/// Something about the model worth telling the user that does not stop a description from being built.
/// Core never prints: the CLI decides how to show these.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ModelWarning {
    /// The architecture has no rules of its own here: generic rules were used.
    UnknownArchitecture {
        /// `general.architecture`.
        architecture: String,
    },
    /// `<arch>.vocab_size` disagrees with the embedding tensor; the tensor wins because it is what
    /// llama.cpp allocates.
    VocabSizeMismatch {
        /// The key's value.
        key_value: u64,
        /// The vocabulary size the tensors have.
        tensor_value: u64,
    },
    /// Only one of `key_length_mla` / `value_length_mla` is present: llama.cpp then treats the model
    /// as not MLA (llama-hparams.cpp:298-303), and so does this description.
    IncompleteMlaKeys {
        /// The key that is present.
        present: String,
    },
    /// An MLA model whose cached K width (`key_length` × `head_count_kv`) is not
    /// `kv_lora_rank + rope.dimension_count`, as the converter writes it.
    MlaWidthUnexpected {
        /// The cached K width.
        k_width: u64,
        /// `kv_lora_rank + n_rot`.
        expected: u64,
    },
    /// gpt-oss sizes its attention tensors from `n_rot` (openai-moe.cpp:39-40) but its KV cache from
    /// `key_length` (llama-hparams.cpp:140-166); the two differ in this file.
    HeadDimNotRot {
        /// `attention.key_length`.
        key_length: u32,
        /// `rope.dimension_count`.
        n_rot: u32,
    },
    /// Tensors whose names this description does not recognise; they are counted as role `Other`.
    UnrecognisedTensors {
        /// How many.
        count: usize,
        /// The first few names.
        examples: Vec<String>,
    },
}

impl fmt::Display for ModelWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelWarning::UnknownArchitecture { architecture } => write!(
                f,
                "architecture \"{architecture}\" has no rules of its own here: generic rules were used \
                 (standard keys and tensor names, every layer full attention, no sliding window, \
                 no recurrent state)"
            ),
            ModelWarning::VocabSizeMismatch { key_value, tensor_value } => write!(
                f,
                "vocab_size is {key_value} but the embedding tensors have {tensor_value} rows; using {tensor_value}"
            ),
            ModelWarning::IncompleteMlaKeys { present } => write!(
                f,
                "only \"{present}\" of the two MLA head-size keys is present; treating the model as not MLA, \
                 as llama.cpp does"
            ),
            ModelWarning::MlaWidthUnexpected { k_width, expected } => write!(
                f,
                "the MLA K cache row is {k_width} wide, expected kv_lora_rank + rope dimensions = {expected}"
            ),
            ModelWarning::HeadDimNotRot { key_length, n_rot } => write!(
                f,
                "attention.key_length is {key_length} but rope.dimension_count is {n_rot}; \
                 the KV cache is sized from key_length"
            ),
            ModelWarning::UnrecognisedTensors { count, examples } => {
                write!(f, "{count} tensor(s) not recognised, e.g. \"{}\"", examples.join("\", \""))
            }
        }
    }
}
