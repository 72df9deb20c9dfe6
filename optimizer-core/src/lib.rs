//! splitplan's library: where llama.cpp should put every tensor of a model across GPUs and system
//! RAM, decided before anything is loaded.
//!
//! The data flows one way: a GGUF header ([`gguf`]) becomes a model description, which together with
//! llama-server settings and the devices gives a per-device memory prediction, which the planner
//! turns into placements, which the renderers turn into flags, commands and documents.
//! docs/architecture.md in the repository draws the whole flow.
//!
//! This crate never prints and never parses command lines; `optimizer-cli` (the `splitplan` binary)
//! does that.
//!
//! ```
//! use optimizer_core::units::Bytes;
//! let free: Bytes = "24G".parse().unwrap();
//! assert_eq!(free.mib_floor(), 24 * 1024);
//! ```

#![warn(missing_docs)]
#![deny(clippy::print_stdout, clippy::print_stderr)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod bisect;
pub mod confirm;
pub mod gguf;
pub mod layout;
pub mod memory;
pub mod model;
pub mod plan;
pub mod profile;
pub mod render;
pub mod settings;
pub mod units;

/// The llama.cpp build whose behaviour this crate models.
pub const LLAMA_CPP_BUILD: u32 = 11434;
