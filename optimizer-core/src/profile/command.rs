//! A profile as the llama-server command line the user's container builds from it (BRIEF.md, the
//! table under "The container turns it into one llama-server command line"), and as
//! [`ServerSettings`] through the one settings parser.

use super::{Profile, ProfileError};
use crate::settings::{self, ServerSettings};

/// Where the container mounts the models folder: `MODEL` is relative to it.
pub const MODELS_MOUNT: &str = "/models";

/// The container's `CTX_SIZE` when the profile has none.
pub const DEFAULT_CTX_SIZE: u32 = 131_072;

/// The `FIT_TARGET` docker-compose passes when the profile has none: almost no margin on the
/// dedicated GPU, 1 GiB on the one that drives the display.
pub const DEFAULT_FIT_TARGET: &str = "128,1024";

impl Profile {
    /// The llama-server arguments (without the program name) the container runs for this
    /// profile, in its order: the keys with their defaults, then `EXTRA_ARGS` split on spaces.
    pub fn server_args(&self) -> Vec<String> {
        self.server_args_with_lines().into_iter().map(|(arg, _)| arg).collect()
    }

    /// The profile's llama-server settings: [`Profile::server_args`] through the settings parser,
    /// so a later flag overrides an earlier one and `-ot` lists add up. The container passes no
    /// `LLAMA_ARG_*` variables.
    pub fn server_settings(&self) -> Result<ServerSettings, ProfileError> {
        let args = self.server_args_with_lines();
        let words: Vec<&str> = args.iter().map(|(a, _)| a.as_str()).collect();
        settings::parse_args(&words).map_err(|error| ProfileError::Settings {
            profile: self.id.clone(),
            line: error.arg_index().and_then(|i| args.get(i)).map_or(self.line, |(_, line)| *line),
            error,
        })
    }

    /// Each argument with the line of the key it comes from (the `[id]` line for fixed ones).
    fn server_args_with_lines(&self) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        let header = self.line;
        let line_of = |key: &str| self.entry(key).map_or(header, |e| e.line);
        let mut push = |flag: &str, value: String, line: usize| {
            out.push((flag.to_string(), line));
            out.push((value, line));
        };
        let value_or = |key: &str, default: &str| self.get(key).unwrap_or(default).to_string();

        push("--model", format!("{MODELS_MOUNT}/{}", self.model_path()), line_of("MODEL"));
        push("--ctx-size", value_or("CTX_SIZE", &DEFAULT_CTX_SIZE.to_string()), line_of("CTX_SIZE"));
        push("--n-gpu-layers", value_or("N_GPU_LAYERS", "auto"), line_of("N_GPU_LAYERS"));
        push("--host", "0.0.0.0".to_string(), header);
        push("--port", "8080".to_string(), header);
        push("--split-mode", value_or("SPLIT_MODE", "layer"), line_of("SPLIT_MODE"));
        if let Some(ts) = self.get("TENSOR_SPLIT") {
            push("--tensor-split", ts.to_string(), line_of("TENSOR_SPLIT"));
        }
        push("--main-gpu", value_or("MAIN_GPU", "0"), line_of("MAIN_GPU"));
        if value_or("FLASH_ATTN", "1") == "1" {
            push("--flash-attn", "on".to_string(), line_of("FLASH_ATTN"));
        }
        push("--cache-type-k", value_or("KV_CACHE_TYPE_K", "q8_0"), line_of("KV_CACHE_TYPE_K"));
        push("--cache-type-v", value_or("KV_CACHE_TYPE_V", "q8_0"), line_of("KV_CACHE_TYPE_V"));
        push("--fit", value_or("FIT", "on"), line_of("FIT"));
        push("--fit-target", value_or("FIT_TARGET", DEFAULT_FIT_TARGET), line_of("FIT_TARGET"));
        if let Some(n) = self.get("FIT_CTX") {
            push("--fit-ctx", n.to_string(), line_of("FIT_CTX"));
        }
        if let Some(extra) = self.get("EXTRA_ARGS") {
            let line = line_of("EXTRA_ARGS");
            out.extend(split_extra_args(extra).map(|w| (w.to_string(), line)));
        }
        out
    }
}

/// `EXTRA_ARGS` as the container's shell splits it: on spaces and tabs, empty words dropped.
pub(super) fn split_extra_args(value: &str) -> impl Iterator<Item = &str> {
    value.split([' ', '\t']).filter(|w| !w.is_empty())
}
