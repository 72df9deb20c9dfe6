//! Why a plan cannot be made.

use crate::memory::MemoryError;
use crate::settings::SettingsError;
use crate::units::Bytes;

/// Why the planner gave no plan.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The memory model refused the configuration.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The flags the planner rendered did not parse (a bug: the renderers and the parser disagree).
    #[error("the planned flags do not parse: {0}")]
    Settings(#[from] SettingsError),
    /// No compute-buffer size for a GPU that holds layers.
    #[error(
        "the compute buffer of {gpu} is not modelled yet, so no placement can be checked against its memory"
    )]
    ComputeNotModelled {
        /// The GPU, `CUDA0`, …
        gpu: String,
    },
    /// Even with every routed expert and every layer it may move in system RAM, the model does not
    /// fit.
    #[error("{what} needs {needed} but {available} is available: {deficit} short")]
    DoesNotFit {
        /// What does not fit, e.g. "system RAM" or "the pinned layers on CUDA0".
        what: String,
        /// What it needs.
        needed: Bytes,
        /// What there is.
        available: Bytes,
        /// The difference.
        deficit: Bytes,
    },
    /// Two pinned flags contradict each other, or a pin contradicts the machine.
    #[error("conflicting pins: {first} and {second}: {why}")]
    ConflictingPins {
        /// The first flag as given.
        first: String,
        /// The second flag (or the machine).
        second: String,
        /// Why they conflict.
        why: String,
    },
    /// The context asked for is larger than the model's, or zero.
    #[error("context {asked} is not usable: {why}")]
    Context {
        /// The context asked for.
        asked: u32,
        /// Why not.
        why: String,
    },
}
