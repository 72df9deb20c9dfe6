//! The planner: where every tensor of a model should go across the GPUs and system RAM.
//!
//! - `devices`: the machine a plan is for ([`Hardware`]).
//! - `placement`: the [`Placement`] type (dense parts per layer, routed experts per tensor).
//! - `objective`: the decode- and prompt-speed model and graph splits.
//! - `budget`: what a configuration uses per GPU against its margins (the memory prediction plus
//!   llama.cpp's runtime overhead).
//! - `search`: the greedy placement search over byte costs; `planner`: the two plans, checked.
//! - `context`: `--ctx max` and the context ladder.
//! - `fit`: llama.cpp's `--fit` (common/fit.cpp), emulated over a measurement function.

mod budget;
mod context;
pub mod devices;
mod error;
mod fit;
#[cfg(test)]
mod fit_tests;
mod objective;
#[cfg(test)]
mod objective_tests;
mod placement;
mod planner;
#[cfg(test)]
pub(crate) mod planner_tests;
mod search;
#[cfg(test)]
pub(crate) mod testing;

pub use budget::{ComputeReserve, Evaluation, Evaluator, GpuUse, HostUse};
pub use context::{
    CONTEXT_LADDER, CTX_STEP, ContextStep, bisect_largest, context_ladder, context_steps_below, max_context,
};
pub use devices::{
    CUDA_CONTEXT_OVERHEAD, DetectedGpu, DeviceError, DeviceOrder, Gpu, Hardware, KnownCard, known_card,
    parse_free_list, parse_gpu_list,
};
pub use error::PlanError;
pub use fit::{
    ALL_MOE_PATTERN, DeviceLayers, DeviceUse, FitInputs, FitOutcome, FitParams, FitStatus, LayerFraction,
    Probe, emulate_fit,
};
pub use objective::{
    DeviceReads, GraphSplits, Resolved, Speed, SpeedInputs, SpeedModel, graph_splits, predict_speed,
};
pub use placement::{
    Device, ExpertPlacement, ExpertTensorName, LayerPlacement, Placement, PlacementError, expert_parts,
    spill_rank,
};
pub use planner::{
    Assessment, ContextRequest, DEFAULT_HOST_RESERVE, DEFAULT_MODERATE_EXTRA, FitPlan, Pins, Plan, PlanKind,
    PlanOptions, PlanSet, assess, plan,
};
pub use search::{Costs, ExpertCost, Split, candidate_splits, capacities, fill, gpu_bytes};

/// Tensor overrides as their `-ot` items (`pattern=TARGET`), for JSON.
pub(crate) fn serialize_overrides<S: serde::Serializer>(
    list: &[crate::settings::TensorOverride],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(list.iter().map(ToString::to_string))
}
