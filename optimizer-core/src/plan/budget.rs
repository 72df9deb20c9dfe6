//! What a configuration uses on each GPU and whether it keeps the margins: the memory prediction
//! of llama-server's flags, plus what llama.cpp holds beyond its own breakdown once a long request
//! has run, against the free memory llama.cpp reports at load.
//!
//! Every plan the planner returns went through [`Evaluator::evaluate`] as flags parsed by the one
//! settings parser, so what it checked is exactly what it emits.

use serde::Serialize;

use crate::memory::{self, ComputeEstimate, Location, MemoryPrediction, Predictor};
use crate::model::ModelDescription;
use crate::settings::ServerSettings;
use crate::units::Bytes;

use super::Hardware;
use super::error::PlanError;

/// Where compute-buffer sizes come from.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum ComputeReserve {
    /// The memory model's estimate; planning fails on a GPU where it has none.
    #[default]
    Modelled,
    /// These sizes per GPU in CUDA order instead of the model's (e.g. the `CUDA0 compute buffer
    /// size` lines of a `llama-server -lv 4` log with the same context and micro-batch).
    Given(Vec<Bytes>),
}

/// Memory on one GPU for one configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GpuUse {
    /// `CUDA0`, …
    pub name: String,
    /// Model weights.
    pub weights: Bytes,
    /// KV cache.
    pub kv_cache: Bytes,
    /// Recurrent state.
    pub recurrent_state: Bytes,
    /// Compute buffer.
    pub compute: Bytes,
    /// Whether the compute size came from [`ComputeReserve::Given`] rather than the memory model.
    pub compute_given: bool,
    /// What llama-server holds beyond its breakdown after the first long request (the memory
    /// model's [`memory::overhead`], or the configured override) when the GPU holds anything.
    pub runtime_overhead: Bytes,
    /// The free memory llama.cpp reports at load.
    pub free_at_load: Bytes,
    /// The margin kept free after all of the above.
    pub margin: Bytes,
}

impl GpuUse {
    /// Weights, KV, recurrent state, compute and runtime overhead.
    pub fn used(&self) -> Bytes {
        self.weights + self.kv_cache + self.recurrent_state + self.compute + self.runtime_overhead
    }

    /// Free memory left after use and margin; negative when the margin is not kept.
    pub fn left(&self) -> i64 {
        self.free_at_load.signed_sub(self.used()) - i64::try_from(self.margin.get()).unwrap_or(i64::MAX)
    }

    /// Whether the margin is kept; a GPU that holds nothing always fits.
    pub fn fits(&self) -> bool {
        self.used() == Bytes::ZERO || self.left() >= 0
    }
}

/// System RAM for one configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostUse {
    /// Resident weights, KV, recurrent state, output buffer and host compute when modelled.
    pub used: Bytes,
    /// RAM kept for the system and other programs.
    pub reserve: Bytes,
    /// Installed RAM, when known.
    pub total: Option<Bytes>,
}

impl HostUse {
    /// Whether it fits, or `None` when the RAM size is not known.
    pub fn fits(&self) -> Option<bool> {
        self.total.map(|t| self.used + self.reserve <= t)
    }
}

/// A configuration evaluated.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evaluation {
    /// Per GPU of the machine, in CUDA order.
    pub gpus: Vec<GpuUse>,
    /// System RAM.
    pub host: HostUse,
    /// The full memory prediction.
    #[serde(skip)]
    pub prediction: MemoryPrediction,
}

impl Evaluation {
    /// Whether every GPU keeps its margin.
    pub fn fits_gpus(&self) -> bool {
        self.gpus.iter().all(GpuUse::fits)
    }
}

/// Evaluates configurations of one model on one machine.
#[derive(Clone, Debug)]
pub struct Evaluator<'m> {
    /// The phase model's compute buffers: the search's thousands of estimates.
    predictor: Predictor<'m>,
    /// The graph-level simulation's: what a configuration is checked against.
    checker: Predictor<'m>,
    gpus: Vec<memory::GpuAtLoad>,
    free: Vec<Bytes>,
    compute: ComputeReserve,
    overhead: Option<Bytes>,
    host_total: Option<Bytes>,
    host_reserve: Bytes,
}

impl<'m> Evaluator<'m> {
    /// An evaluator for `model` on `hardware`; `overhead` replaces the memory model's runtime
    /// overhead per GPU when given.
    pub fn new(
        model: &'m ModelDescription,
        hardware: &Hardware,
        compute: ComputeReserve,
        overhead: Option<Bytes>,
        host_reserve: Bytes,
    ) -> Evaluator<'m> {
        let free: Vec<Bytes> = (0..hardware.gpus.len()).map(|i| hardware.free_at_load(i)).collect();
        let gpus = hardware.gpus_at_load();
        Evaluator {
            // The search weighs hundreds of placements per plan with the phase model's compute
            // buffers (tens of microseconds each); every placement it settles on is checked, and
            // tightened, against the graph-level simulation (1-2 ms once the
            // context's graphs are built), whose sizes are llama.cpp's.
            predictor: Predictor::new(model).with_simulation(false),
            checker: Predictor::new(model),
            gpus,
            free,
            compute,
            overhead,
            host_total: hardware.host_ram,
            host_reserve,
        }
    }

    /// This evaluator with its checks simulated (the default) or estimated by the phase model.
    #[must_use]
    pub fn with_simulated_checks(mut self, on: bool) -> Evaluator<'m> {
        self.checker = self.checker.with_simulation(on);
        self
    }

    /// The model.
    pub fn model(&self) -> &'m ModelDescription {
        self.predictor.model()
    }

    /// The GPUs as the memory model sees them.
    pub fn gpus(&self) -> &[memory::GpuAtLoad] {
        &self.gpus
    }

    /// Free memory at load per GPU.
    pub fn free(&self) -> &[Bytes] {
        &self.free
    }

    /// Where compute sizes come from.
    pub fn compute_reserve(&self) -> &ComputeReserve {
        &self.compute
    }

    /// The memory prediction of `settings` with the phase model's compute buffers: the search's
    /// estimate.
    pub fn predict(&mut self, settings: &ServerSettings) -> Result<MemoryPrediction, PlanError> {
        Ok(self.predictor.predict(settings, &self.gpus)?)
    }

    /// The memory prediction of `settings` with simulated compute buffers where the simulation
    /// covers the model (else the phase model's): what a configuration is checked against.
    pub fn predict_checked(&mut self, settings: &ServerSettings) -> Result<MemoryPrediction, PlanError> {
        Ok(self.checker.predict(settings, &self.gpus)?)
    }

    /// The compute buffer of GPU `i` in `prediction`, and whether it was given rather than
    /// modelled: the given size when there is one, else the memory model's.
    pub fn compute_of(&self, prediction: &MemoryPrediction, i: usize) -> Result<(Bytes, bool), PlanError> {
        let row = prediction.devices.iter().find(|d| d.location == Location::Gpu(i));
        let modelled = row.and_then(|d| match &d.compute {
            ComputeEstimate::NotModelled => None,
            e @ ComputeEstimate::Estimated { .. } => e.bytes(),
        });
        let holds = row.is_some_and(|d| d.weights + d.context() > Bytes::ZERO);
        match (&self.compute, modelled) {
            _ if !holds => Ok((Bytes::ZERO, false)),
            (ComputeReserve::Given(sizes), _) => Ok((sizes.get(i).copied().unwrap_or(Bytes::ZERO), true)),
            (ComputeReserve::Modelled, Some(b)) => Ok((b, false)),
            (ComputeReserve::Modelled, None) => Err(PlanError::ComputeNotModelled {
                gpu: self.gpus.get(i).map(|g| g.name.clone()).unwrap_or_default(),
            }),
        }
    }

    /// What GPU `i` holds beyond the breakdown after the first long request: the override, or the
    /// memory model's ([`memory::overhead`]); zero when the GPU holds nothing.
    pub fn overhead_of(&self, prediction: &MemoryPrediction, i: usize) -> Bytes {
        let row = prediction.devices.iter().find(|d| d.location == Location::Gpu(i));
        if row.is_none_or(|d| d.weights + d.context() == Bytes::ZERO) {
            return Bytes::ZERO;
        }
        self.overhead
            .or_else(|| row.and_then(|d| d.beyond_breakdown).map(|o| o.after_request))
            .unwrap_or(Bytes::ZERO)
    }

    /// Evaluates `settings` against per-GPU `margins`, with simulated compute buffers
    /// ([`Evaluator::predict_checked`]).
    pub fn evaluate(
        &mut self,
        settings: &ServerSettings,
        margins: &[Bytes],
    ) -> Result<Evaluation, PlanError> {
        let prediction = self.predict_checked(settings)?;
        self.evaluation(prediction, margins)
    }

    /// [`Evaluator::evaluate`] with the phase model's compute buffers ([`Evaluator::predict`]): for
    /// searches that weigh many contexts.
    pub fn estimate(
        &mut self,
        settings: &ServerSettings,
        margins: &[Bytes],
    ) -> Result<Evaluation, PlanError> {
        let prediction = self.predict(settings)?;
        self.evaluation(prediction, margins)
    }

    fn evaluation(&self, prediction: MemoryPrediction, margins: &[Bytes]) -> Result<Evaluation, PlanError> {
        let mut gpus = Vec::with_capacity(self.gpus.len());
        for (i, g) in self.gpus.iter().enumerate() {
            let row = prediction.devices.iter().find(|d| d.location == Location::Gpu(i));
            let (weights, kv_cache, recurrent_state) = row
                .map_or((Bytes::ZERO, Bytes::ZERO, Bytes::ZERO), |d| {
                    (d.weights, d.kv_cache, d.recurrent_state)
                });
            let (compute, compute_given) = self.compute_of(&prediction, i)?;
            let runtime_overhead = self.overhead_of(&prediction, i);
            gpus.push(GpuUse {
                name: g.name.clone(),
                weights,
                kv_cache,
                recurrent_state,
                compute,
                compute_given,
                runtime_overhead,
                free_at_load: self.free[i],
                margin: margins.get(i).copied().unwrap_or(Bytes::ZERO),
            });
        }
        let host = HostUse {
            used: prediction.host.known_total(),
            reserve: self.host_reserve,
            total: self.host_total,
        };
        Ok(Evaluation { gpus, host, prediction })
    }
}
