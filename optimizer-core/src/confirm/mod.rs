//! Proving a plan with real llama-server launches, the pure part: reading what llama-server logged
//! ([`log`]), deciding what a launch's end means for the search ([`outcome`]), comparing what was
//! measured with what was predicted ([`compare`]), and remembering measurements for later
//! predictions ([`calibration`]).
//!
//! Launching processes, HTTP and NVML live in the CLI (`optimizer-cli/src/launch/`); the search over
//! placements is [`crate::bisect`].

pub mod log;

#[cfg(test)]
mod tests;

pub use log::{
    BreakdownRow, BufferKind, BufferLine, BuildInfo, DeviceInfo, Failure, FitLayers, GraphSplits, LaunchLog,
    LogParser, MemoryBreakdown, ModelDevice, OomStage, OutOfMemory, Rate, SlotTiming, parse_log,
    parse_version_output,
};
