//! Proving a plan with real llama-server launches, the pure part: reading what llama-server logged
//! ([`log`]), deciding what a launch's end means for the search ([`outcome`]), the ladder of
//! candidate placements and the command line of each launch ([`ladder`]), what a launch measured
//! and how it compares with the prediction ([`measure`]), extending a planned ladder when even its
//! last rung ran out of memory ([`extend`]), and remembering measurements for later predictions
//! ([`calibration`]).
//!
//! Launching processes, HTTP and NVML live in the CLI (`optimizer-cli/src/launch/`); the search over
//! placements is [`crate::bisect`].

pub mod calibration;
pub mod extend;
pub mod ladder;
pub mod log;
pub mod measure;
pub mod outcome;

#[cfg(test)]
mod extend_tests;
#[cfg(test)]
mod ladder_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_more;

pub use calibration::{
    CalibrationCache, CalibrationError, CalibrationKey, CalibrationRecord, MeasuredCompute, MeasuredDevice,
    ModelIdentity,
};
pub use extend::{ExtendError, Extension, FIRST_EXTENSION_STEP, LadderExtender, MAX_EXTENSIONS};
pub use ladder::{LADDER_CONTEXTS, Ladder, LadderError, LaunchArgs, Rung, launch_args, planned_ladder};
pub use log::{
    BreakdownRow, BufferKind, BufferLine, BuildInfo, DeviceInfo, Failure, FitLayers, GraphSplits, LaunchLog,
    LogParser, MemoryBreakdown, ModelDevice, OomStage, OutOfMemory, Rate, SlotTiming, parse_log,
    parse_version_output,
};
pub use measure::{
    DeviceMeasurement, Discrepancy, FitComparison, GpuReading, Measurement, PeakSource, SPEED_PREDICT_TOKENS,
    SPEED_PROMPT_TOKENS, SpeedRun, TestResult, compare, describe_fit_choice, measure, median,
    render_empty_results_table, render_fit_comparison, render_results_section, render_results_table,
};
pub use outcome::{Classification, ExitKind, LaunchFacts, Phase, classify};
