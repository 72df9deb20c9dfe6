//! Configurations whose compute terms are borrowed, not measured: the `--no-op-offload` round trip of
//! the expert outputs and the activations of whole MoE layers on the CPU were fitted on allocation
//! traces of qwen3next, gpt-oss and deepseek2 rows only (docs/accuracy.md). On another MoE architecture
//! the prediction uses qwen3next's terms and says so, with the largest shortfall llama.cpp showed on
//! those families before the terms existed, so that nobody plans to the MiB on it. The planner never
//! emits these configurations; they come from flags a user gives `memory` or `confirm`.

use serde::Serialize;

use super::{Location, MemoryPrediction};
use crate::model::{ModelDescription, TensorRole};
use crate::settings::ServerSettings;
use crate::units::Bytes;

/// A family of configurations the compute buffers are under-predicted for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Uncalibrated {
    /// What the configuration is, in words.
    pub what: &'static str,
    /// The largest under-prediction measured in it, on any GPU.
    #[serde(rename = "worst_under_bytes")]
    pub worst_under: Bytes,
    /// The ground-truth rows that show it.
    pub rows: &'static str,
}

impl Uncalibrated {
    /// The notice, in one line.
    pub fn message(&self) -> String {
        format!(
            "{}: llama.cpp allocated up to {:#} more compute buffer on a GPU than predicted in such runs ({}); \
             keep at least that much spare",
            self.what, self.worst_under, self.rows
        )
    }
}

/// The families with borrowed terms `prediction` falls in. The figures are the shortfalls of the
/// session 1-4 ground truth before the terms were fitted (fixtures/ground-truth/data/, docs/accuracy.md).
pub fn uncalibrated(
    model: &ModelDescription,
    settings: &ServerSettings,
    prediction: &MemoryPrediction,
) -> Vec<Uncalibrated> {
    let placement = &prediction.placement;
    let on_gpus = placement.layers.iter().any(|l| *l != Location::Host);
    let experts_in_ram = placement.tensors.iter().any(|p| {
        p.location == Location::Host
            && model
                .tensors
                .get(p.tensor)
                .is_some_and(|t| matches!(t.role, TensorRole::Experts { .. }) && t.dims.len() >= 3)
    });
    let mut out = Vec::new();
    // the graph-level simulation borrows nothing
    if prediction.devices.iter().all(|d| d.compute.is_simulated()) {
        return out;
    }
    // the families compute.rs has its own constants for (dense ones have no routed experts)
    if super::compute::calibrated(&model.architecture) {
        return out;
    }
    if on_gpus && !settings.op_offload && experts_in_ram {
        out.push(Uncalibrated {
            what: "--no-op-offload with routed experts in system RAM, terms borrowed from qwen3next",
            worst_under: Bytes::from_mib(225),
            rows: "q5-d18, q5-h01, q5-h02, oss-h01, before the term existed",
        });
    }
    if on_gpus && model.n_expert > 0 && placement.layers.contains(&Location::Host) {
        out.push(Uncalibrated {
            what: "whole layers of an MoE model on the CPU (-ngl below every layer), terms borrowed from qwen3next",
            worst_under: Bytes::from_mib(170),
            rows: "q5-d27, q5-h05, q5-h06, oss-h03, before the term existed",
        });
    }
    out
}
