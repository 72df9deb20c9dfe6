//! Why a memory prediction could not be made: settings llama.cpp would refuse, or a tensor override
//! pattern splitplan's regex engine cannot run the way llama.cpp's does.

use std::fmt;

use serde::Serialize;

use crate::gguf::GgmlType;
use crate::model::ModelError;

/// A regex construct that llama.cpp's ECMAScript `std::regex` and Rust's `regex` crate treat
/// differently, so that an override using it cannot be matched the way llama.cpp matches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RegexConstruct {
    /// `(?=...)` or `(?!...)`: ECMAScript has it, Rust's regex does not.
    Lookahead,
    /// `(?<=...)` or `(?<!...)`: neither has it; llama.cpp fails on it.
    Lookbehind,
    /// `\1` ... `\9` or `\k<name>`: ECMAScript has it, Rust's regex does not.
    Backreference,
    /// Another `(?...)` group (inline flags such as `(?i)`, named groups): not ECMAScript, so
    /// llama.cpp fails on it.
    NonEcmaScriptGroup,
}

impl fmt::Display for RegexConstruct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RegexConstruct::Lookahead => "a lookahead (?=...) or (?!...)",
            RegexConstruct::Lookbehind => "a lookbehind (?<=...) or (?<!...)",
            RegexConstruct::Backreference => "a backreference (\\1 or \\k<name>)",
            RegexConstruct::NonEcmaScriptGroup => {
                "a (?...) group that is not ECMAScript (inline flags, named groups)"
            }
        })
    }
}

/// A prediction that cannot be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemoryError {
    /// An `-ot` target that is no device's buffer type (common/arg.cpp:271-277).
    #[error(
        "unknown buffer type '{target}' in tensor override '{pattern}={target}', expected one of {}",
        available.join(", ")
    )]
    UnknownBufferType {
        /// The override's pattern.
        pattern: String,
        /// The target as written.
        target: String,
        /// The buffer types that exist: `CPU` and every GPU's name.
        available: Vec<String>,
    },
    /// An override pattern using a construct llama.cpp's regex engine and splitplan's disagree on.
    #[error(
        "tensor override pattern '{pattern}' uses {construct}, which splitplan cannot match as llama.cpp does\nhint: write the pattern without it, e.g. as an alternation of the names it should match"
    )]
    UnsupportedRegex {
        /// The pattern.
        pattern: String,
        /// What it uses.
        construct: RegexConstruct,
    },
    /// An override pattern that is no valid regex.
    #[error("invalid tensor override pattern '{pattern}': {message}")]
    InvalidRegex {
        /// The pattern.
        pattern: String,
        /// What the regex parser said.
        message: String,
    },
    /// A `-dev` name that is no GPU (common/arg.cpp:1132-1136).
    #[error("invalid device '{name}' in --device, expected one of {}", available.join(", "))]
    UnknownDevice {
        /// The name given.
        name: String,
        /// The GPUs.
        available: Vec<String>,
    },
    /// `-sm none` with a `-mg` past the last device (src/llama.cpp:292-295).
    #[error("invalid --main-gpu {main_gpu}, expected 0 to {} with --split-mode none", count.saturating_sub(1))]
    MainGpuOutOfRange {
        /// The `-mg` value.
        main_gpu: i32,
        /// How many devices there are.
        count: usize,
    },
    /// `-sm row` or `-sm tensor`, which this model does not predict.
    #[error("--split-mode {mode} is not modelled, expected layer or none")]
    UnsupportedSplitMode {
        /// The mode.
        mode: &'static str,
    },
    /// More sequences than llama.cpp allows (llama-context.cpp:102-105).
    #[error("--parallel {n_seq} is more than llama.cpp's limit of {max} sequences")]
    TooManySequences {
        /// The sequences asked for.
        n_seq: u32,
        /// `LLAMA_MAX_SEQ`.
        max: u32,
    },
    /// A context that does not fit llama.cpp's 32-bit cell counts once padded.
    #[error("a context of {n_ctx} tokens is more than llama.cpp's 32-bit limit")]
    ContextTooLarge {
        /// The padded context.
        n_ctx: u64,
    },
    /// The default layer split is by free memory, and no device has any.
    #[error(
        "every device reports 0 MiB free, so the layers cannot be split by free memory\nhint: give --tensor-split"
    )]
    NoFreeMemory,
    /// Different K and V cache types on a model with multi-head latent attention, whose V is a view of
    /// its K cache (llama-context.cpp:3838-3841).
    #[error(
        "llama.cpp cannot run this: the model uses multi-head latent attention, which does not support different K ({}) and V ({}) cache types\nhint: give -ctk and -ctv the same type",
        type_k.name().to_lowercase(),
        type_v.name().to_lowercase()
    )]
    MlaMixedKvTypes {
        /// `-ctk`.
        type_k: GgmlType,
        /// `-ctv`.
        type_v: GgmlType,
    },
    /// A KV cache row that is not a whole number of its type's blocks.
    #[error(transparent)]
    Model(#[from] ModelError),
}
