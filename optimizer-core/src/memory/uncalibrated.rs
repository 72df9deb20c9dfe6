//! Configurations the compute model is known to under-predict: the families of
//! `optimizer-core/tests/accuracy_compute.rs` `KNOWN_UNDER`, where real llama.cpp allocated more
//! than 64 MiB beyond the prediction on some GPU (docs/accuracy.md). A prediction for one of them
//! says so, with the largest shortfall measured, so that nobody plans to the MiB on it. The planner
//! never emits these configurations; they come from flags a user gives `memory` or `confirm`.

use serde::Serialize;

use super::{Location, MemoryPrediction};
use crate::model::{Architecture, ModelDescription, TensorRole};
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

/// The known under-predicted families `prediction` falls in. The figures are the session 1-4
/// ground truth's (fixtures/ground-truth/data/, docs/accuracy-rows.md).
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
    if on_gpus && !settings.op_offload && experts_in_ram {
        out.push(Uncalibrated {
            what: "--no-op-offload with routed experts in system RAM",
            worst_under: Bytes::from_mib(225),
            rows: "q5-d18, q5-h01, q5-h02, oss-h01",
        });
    }
    if on_gpus && model.n_expert > 0 && placement.layers.contains(&Location::Host) {
        out.push(Uncalibrated {
            what: "whole layers of an MoE model on the CPU (-ngl below every layer)",
            worst_under: Bytes::from_mib(170),
            rows: "q5-d27, q5-h05, q5-h06, oss-h03",
        });
    }
    if on_gpus && !settings.kv_offload && model.mla.is_some() {
        out.push(Uncalibrated {
            what: "--no-kv-offload on an MLA model",
            worst_under: Bytes::from_mib(103),
            rows: "glm8-h01",
        });
    }
    if on_gpus && settings.swa_full && model.architecture == Architecture::GptOss {
        out.push(Uncalibrated {
            what: "gpt-oss with --swa-full",
            worst_under: Bytes::from_mib(69),
            rows: "oss-d07",
        });
    }
    out
}
