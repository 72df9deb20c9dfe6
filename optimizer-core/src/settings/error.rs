//! Why llama-server flags were refused, and the remarks worth passing on about flags that were
//! accepted.

use std::fmt;

use crate::gguf::GgmlType;

/// Where a value came from: a command-line argument or an environment variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A command-line argument: its spelling (after llama.cpp's `_` → `-` in long names) and its
    /// index in the argument list.
    Arg {
        /// The flag as looked up, e.g. `-ngl`.
        flag: String,
        /// Its index in the arguments given to the parser.
        index: usize,
    },
    /// A `LLAMA_ARG_*` environment variable.
    Env {
        /// The variable llama.cpp names in its message (the positive one for `LLAMA_ARG_NO_*`).
        var: String,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Arg { flag, .. } => write!(f, "argument \"{flag}\""),
            Origin::Env { var } => write!(f, "environment variable \"{var}\""),
        }
    }
}

/// llama-server flags that llama-server would refuse, or that ask for something llama.cpp
/// build 11434 cannot run or splitplan does not plan.
///
/// The first four say what llama-server's argument parser says (common/arg.cpp:768-880); the
/// unknown-flag message is llama-server's own, so that `error: ` in front of it gives llama-server's
/// line.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// A word that is no llama-server flag (arg.cpp:829-831). llama-server takes no positional
    /// arguments, so a stray value lands here too.
    #[error("invalid argument: {arg}")]
    UnknownArgument {
        /// The word, after `_` → `-` in long names.
        arg: String,
        /// Its index in the arguments.
        index: usize,
    },
    /// A flag that takes a value came last (arg.cpp:816-820).
    #[error("expected value for argument \"{flag}\"")]
    MissingValue {
        /// The flag.
        flag: String,
        /// Its index in the arguments.
        index: usize,
    },
    /// A value the flag does not accept.
    #[error("invalid value \"{value}\" for {origin}: expected {expected}")]
    InvalidValue {
        /// The flag or environment variable.
        origin: Origin,
        /// The value as given.
        value: String,
        /// What the flag accepts.
        expected: String,
    },
    /// A flag that llama.cpp removed and now only refuses (`arg_removed`, arg.cpp:343-345).
    #[error("{origin} has been removed from llama.cpp: {hint}")]
    Removed {
        /// The flag or environment variable.
        origin: Origin,
        /// llama.cpp's hint.
        hint: &'static str,
    },
    /// A flag that makes llama-server print something and exit before loading a model.
    #[error(
        "{flag} makes llama-server exit without loading a model\nhint: leave it out of the settings to plan"
    )]
    ExitsWithoutLoading {
        /// The flag.
        flag: String,
        /// Its index in the arguments.
        index: usize,
    },
    /// A built-in preset (`--gpt-oss-120b-default`, …) that downloads a model and sets its own
    /// context, batch and slots.
    #[error(
        "{flag} is not supported: it downloads a model from Hugging Face and sets its own context, batch and slots\nhint: give the model file with -m and the settings as flags"
    )]
    Preset {
        /// The flag.
        flag: String,
        /// Its index in the arguments.
        index: usize,
    },
    /// `-sm row`.
    #[error(
        "llama.cpp cannot run this: -sm row is broken on CUDA in build 11434: CUDA no longer provides a split buffer type, so loading fails with \"device CUDA0 does not support split buffers\" (llama-model.cpp:1146-1166; llama-cpp-memory.md §0.6)\nhint: use -sm layer"
    )]
    SplitModeRow,
    /// `-sm tensor`.
    #[error(
        "-sm tensor is not planned: it is experimental in llama.cpp build 11434 (src/llama.cpp:161-214) and --fit refuses it (common/fit.cpp:183-185)\nhint: use -sm layer"
    )]
    SplitModeTensor,
    /// A quantized V cache with `-fa off`.
    #[error(
        "llama.cpp cannot run this: a quantized V cache (-ctv {}) requires flash attention, and -fa is off (llama-context.cpp:3843-3851, 466-470)\nhint: use -fa on (or auto), or -ctv f16",
        crate::settings::kv_type_name(*cache_type_v)
    )]
    QuantizedVWithoutFlashAttention {
        /// The V cache type.
        cache_type_v: GgmlType,
    },
}

impl SettingsError {
    /// The index of the argument at fault, when one is.
    pub fn arg_index(&self) -> Option<usize> {
        match self {
            SettingsError::UnknownArgument { index, .. }
            | SettingsError::MissingValue { index, .. }
            | SettingsError::ExitsWithoutLoading { index, .. }
            | SettingsError::Preset { index, .. }
            | SettingsError::InvalidValue { origin: Origin::Arg { index, .. }, .. }
            | SettingsError::Removed { origin: Origin::Arg { index, .. }, .. } => Some(*index),
            _ => None,
        }
    }
}

/// A remark about accepted flags: what llama-server would warn about, and what splitplan reads but
/// does not model.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Note {
    /// A flag given on the command line overrides its environment variable (arg.cpp:845-847).
    EnvOverridden {
        /// The variable.
        var: String,
        /// The flag.
        flag: String,
    },
    /// A flag given more than once: llama-server warns that this is deprecated (arg.cpp:833-840).
    /// The last value counts, except for the flags that add up (`-ot`, `--n-cpu-moe`, `--lora`, …).
    Repeated {
        /// The flag.
        flag: String,
    },
    /// A flag whose memory splitplan does not model yet (multimodal projector, LoRA, draft
    /// model, RPC devices, downloads).
    NotModelled {
        /// The flag.
        flag: String,
    },
    /// A deprecated flag that llama.cpp accepts and ignores.
    Deprecated {
        /// The flag.
        flag: String,
    },
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::EnvOverridden { var, flag } => {
                write!(f, "{var} is set, but the command-line argument {flag} overrides it")
            }
            Note::Repeated { flag } => write!(f, "argument {flag} is given more than once"),
            Note::NotModelled { flag } => write!(f, "the memory that {flag} uses is not modelled"),
            Note::Deprecated { flag } => write!(f, "{flag} is deprecated and has no effect"),
        }
    }
}
