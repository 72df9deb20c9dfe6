//! Renderers: a plan goes in, text comes out, one file per format. Pure functions, no I/O.
//!
//! - `ranges`: layer sets as compact regex alternations (`[0-9]|1[0-4]`).
//! - `ot`: a placement as `-ngl`, integer `-ts`, an ordered `-ot` list and `--fit off`.

mod ot;
mod ranges;
#[cfg(test)]
mod tests;

pub use ot::{EXPS_TO_CPU, PlacementFlags, overrides, placement_flags};
pub use ranges::{alternation, block_prefix};
