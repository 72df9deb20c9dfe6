//! Model layouts as data: a layout spec (TOML, one per model family, in fixtures/layouts/) becomes
//! the GGUF metadata and the ordered tensor table (name, shape, ggml type) of a real model file.
//!
//! This is how the repository holds the user's models without holding them: the spec states the
//! hyperparameters, the metadata keys the converter writes, which tensors every layer kind has, and
//! per quant which ggml type each tensor gets (with layer ranges where the quantizer varies it).
//! reference/layouts.md is where those tables come from; the `xtask fixtures` generator writes the
//! result as header-only (or sparse full-size) GGUF files, and tests build layouts in memory.
//!
//! ```
//! use optimizer_core::layout::{BuildOptions, LayoutSpec};
//! let spec = LayoutSpec::parse(r#"
//!     [model]
//!     key = "tiny"
//!     arch = "llama"
//!     [hparams]
//!     n_layer = 2
//!     n_embd = 256
//!     [metadata]
//!     keys = [{ key = "llama.block_count", u32 = "n_layer" }]
//!     [tensors]
//!     global = [{ name = "token_embd.weight", shape = ["n_embd", 1000], type = "BF16" }]
//!     layer = [{ kind = "all", tensors = [{ name = "attn_norm.weight", shape = ["n_embd"], type = "F32" }] }]
//!     [quants.Q8_0]
//!     file = "tiny-Q8_0.gguf"
//!     file_type = 7
//!     types = [{ tensor = "token_embd.weight", type = "Q8_0" }]
//! "#).unwrap();
//! let layout = spec.build("Q8_0", &BuildOptions::default()).unwrap();
//! let names: Vec<_> = layout.tensors.iter().map(|t| t.name.as_str()).collect();
//! assert_eq!(names, ["token_embd.weight", "blk.0.attn_norm.weight", "blk.1.attn_norm.weight"]);
//! assert_eq!(layout.tensor_bytes().get(), 1000 * 256 / 32 * 34 + 2 * 256 * 4);
//! ```

mod build;
mod expr;
mod model;
mod spec;
mod split;
#[cfg(test)]
mod tests;
mod tokenizer;

use std::collections::BTreeMap;

pub use build::BuildOptions;
pub use expr::{Expr, ExprError};
pub use spec::{LayoutSpec, SplitSpec};
pub use split::ShardLayout;
pub use tokenizer::{SHORT_EXTRA_TOKENS, SHORT_MERGES, TokenizerMode};

use crate::gguf::{GgmlType, Metadata};
use crate::units::Bytes;

/// One model file's (or split model's) metadata and tensor table, in file order.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    /// The spec's model key, e.g. `qwen3-coder-next`.
    pub model: String,
    /// The quant, e.g. `UD-Q5_K_XL`.
    pub quant: String,
    /// The layer count the layout was built with.
    pub n_layer: u64,
    /// The metadata, in file order (of the unsplit file; see [`Layout::shards`]).
    pub metadata: Metadata,
    /// The tensors in file order: llama-quantize's order (quantize walks `weights_map`, sorted by
    /// `weight_name_comparer`: layer number, then name, non-`blk` tensors first; llama-quant.cpp,
    /// llama-model-loader.h). llama.cpp's `CPU_Mapped` buffer spans file ranges, so the order matters.
    pub tensors: Vec<LayoutTensor>,
    /// Where the file goes, relative to a models folder (before split naming), e.g.
    /// `Qwen3-Coder-Next/UD-Q5_K_XL/Qwen3-Coder-Next-UD-Q5_K_XL.gguf`.
    pub file: String,
    /// How the published file is split, if it is.
    pub split: Option<SplitSpec>,
}

/// One tensor of a layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutTensor {
    /// The full name, e.g. `blk.3.attn_q.weight`.
    pub name: String,
    /// The shape in ggml order (`ne0` first).
    pub dims: Vec<u64>,
    /// The ggml type after quantization.
    pub ggml_type: GgmlType,
    /// The layer (`blk.N`), `None` for global tensors.
    pub layer: Option<u64>,
    /// `ggml_nbytes`.
    pub size: Bytes,
}

impl Layout {
    /// The sum of all tensor sizes: what llama.cpp's `print_info: file size` reports.
    pub fn tensor_bytes(&self) -> Bytes {
        self.tensors.iter().map(|t| t.size).sum()
    }

    /// How many tensors of each type.
    pub fn type_counts(&self) -> BTreeMap<GgmlType, usize> {
        let mut counts = BTreeMap::new();
        for t in &self.tensors {
            *counts.entry(t.ggml_type).or_insert(0) += 1;
        }
        counts
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&LayoutTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// What is wrong with a layout spec, or with building one of its quants.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum LayoutError {
    /// The file is not valid TOML or does not have the spec's shape.
    #[error("invalid layout spec: {message}")]
    Toml {
        /// The TOML parser's message (it names the line).
        message: String,
    },
    /// An expression in the spec.
    #[error(transparent)]
    Expr(#[from] ExprError),
    /// A hyperparameter or derived value.
    #[error("hyperparameter {name:?}: {message}")]
    BadHparam {
        /// Its name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A ggml type name that ggml does not have.
    #[error("unknown ggml type {name:?} in {context}; expected a name such as \"Q4_K\", \"Q8_0\", \"BF16\"")]
    UnknownType {
        /// The name as written.
        name: String,
        /// Where it was written.
        context: String,
    },
    /// A layer list such as `0-5,8`.
    #[error("bad layer list {list:?}: {message}")]
    BadLayerList {
        /// The list as written.
        list: String,
        /// What is wrong.
        message: String,
    },
    /// A metadata entry.
    #[error("metadata key {key:?}: {message}")]
    BadMetadata {
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A tensor's shape.
    #[error("tensor {tensor:?}: {message}")]
    BadShape {
        /// The tensor.
        tensor: String,
        /// What is wrong.
        message: String,
    },
    /// Two tensors with one name.
    #[error("tensor {tensor:?} is defined twice")]
    DuplicateTensor {
        /// The name.
        tensor: String,
    },
    /// A quant the spec does not have.
    #[error("model {model:?} has no quant {quant:?}; expected one of {available}")]
    UnknownQuant {
        /// The spec's model key.
        model: String,
        /// The quant asked for.
        quant: String,
        /// The quants it has, comma-separated.
        available: String,
    },
    /// A quantized tensor that no type rule of the quant covers.
    #[error("quant {quant}: no type rule covers tensor {tensor:?} (converter type {source_type})")]
    UnassignedTensor {
        /// The quant.
        quant: String,
        /// The tensor.
        tensor: String,
        /// Its type before quantization.
        source_type: GgmlType,
    },
    /// A tensor that two type rules cover.
    #[error("quant {quant}: tensor {tensor:?} is covered by two type rules ({first} and {second})")]
    OverlappingRules {
        /// The quant.
        quant: String,
        /// The tensor.
        tensor: String,
        /// The first rule, as `tensor[layers] = type`.
        first: String,
        /// The second rule.
        second: String,
    },
    /// A type rule that covers no tensor (a misspelt name or layer list).
    #[error("quant {quant}: type rule {rule} covers no tensor")]
    UnusedRule {
        /// The quant.
        quant: String,
        /// The rule, as `tensor[layers] = type`.
        rule: String,
    },
    /// More layers than the spec's type tables describe.
    #[error("{model} has {max} layers; cannot build {requested}")]
    TooManyLayers {
        /// The spec's model key.
        model: String,
        /// The layer count asked for.
        requested: u64,
        /// The spec's layer count.
        max: u64,
    },
    /// A layout that the GGUF writer refuses, or whose bytes do not read back.
    #[error("cannot write {file:?}: {message}")]
    Write {
        /// The file.
        file: String,
        /// The writer's or reader's message.
        message: String,
    },
    /// A split that `gguf-split` would refuse.
    #[error("cannot split {file:?}: tensor {tensor:?} alone is larger than the {max_bytes}-byte limit")]
    SplitTooSmall {
        /// The file.
        file: String,
        /// The tensor that does not fit.
        tensor: String,
        /// The limit.
        max_bytes: u64,
    },
}
