//! What llama.cpp build 11434 allocates on each GPU and in system RAM for a model and a llama-server
//! configuration, predicted without a GPU: where every layer and tensor goes, and the exact size of
//! every weight, KV cache, recurrent-state and output buffer, as llama.cpp itself computes them.
//!
//! The entry point is [`predict`]; a [`Predictor`] predicts many configurations of one model
//! without recompiling tensor-override patterns. The parts, one file each: the context llama.cpp creates from the
//! settings (`context`), the device list and layer → device split (`devices`), tensor overrides and
//! tensor → buffer placement (`overrides`), weight buffer sizes (`weights`), the KV cache (`kv`),
//! recurrent state (`recurrent`), the output buffer (`output`), host RAM (`host`) and compute
//! buffers (`compute`, not modelled yet: reported as such, never as a made-up number).
//!
//! ```
//! # use optimizer_core::memory::{predict, GpuAtLoad};
//! # use optimizer_core::settings::ServerSettings;
//! # use optimizer_core::units::Bytes;
//! # fn show(model: &optimizer_core::model::ModelDescription) -> Result<(), Box<dyn std::error::Error>> {
//! let settings = ServerSettings::from_args(&["-c", "131072", "-ctk", "q8_0", "-ctv", "q8_0"])?;
//! let gpus = [GpuAtLoad::new("CUDA0", Bytes::from_mib(23_557)), GpuAtLoad::new("CUDA1", Bytes::from_mib(14_477))];
//! let prediction = predict(model, &settings, &gpus)?;
//! for row in prediction.mib() {
//!     let _ = (row.name, row.weights, row.context);
//! }
//! # Ok(()) }
//! ```

mod compute;
mod context;
mod devices;
mod error;
mod host;
mod kv;
mod output;
mod overhead;
mod overrides;
mod recurrent;
pub mod sim;
mod uncalibrated;
mod weights;

use serde::Serialize;

pub use compute::{ComputeBasis, ComputeEstimate, ComputePart, SIMULATED_PHASE, compute_buffer};
pub use context::{LLAMA_MAX_SEQ, ResolvedContext};
pub use error::{MemoryError, RegexConstruct};
pub use host::{HostMemory, HostWeightsBuffer, MappedSpan, PromptCacheBudget};
pub use output::OutputBuffer;
pub use overhead::{AFTER_LOAD, Overhead, overhead};
pub use overrides::OverrideMatcher;
pub use uncalibrated::{Uncalibrated, uncalibrated};
pub use weights::{CUDA_ALIGNMENT, HOST_ALIGNMENT, MATRIX_ROW_PADDING, cuda_tensor_size, host_tensor_size};

use crate::model::ModelDescription;
use crate::settings::ServerSettings;
use crate::units::{Bytes, MIB};

/// One GPU as llama.cpp sees it when it loads a model: its backend name and the free memory it
/// reports then (`llama_prepare_model_devices: using device CUDA0 (...) - 23557 MiB free`,
/// src/llama.cpp:302-307), which is already net of llama.cpp's own CUDA context. For a described
/// machine, [`crate::plan::Hardware`] gives both: `gpus[i].backend_name()` and `free_at_load(i)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GpuAtLoad {
    /// The backend device name: `CUDA0`, `CUDA1`, ... It is also the name of the device's buffer
    /// type, which `-ot` targets and the load log print.
    pub name: String,
    /// Free memory at load. The default `--tensor-split` is proportional to it
    /// (llama-model.cpp:1559-1576).
    pub free: Bytes,
    /// The CUDA compute capability (890 for an RTX 4090, 1200 for an RTX 5070 Ti), when known: which
    /// flash-attention kernel llama.cpp picks, and so the scratch its output asks for, depends on it
    /// (fattn.cu:722-756). Unknown, the simulation takes [`DEFAULT_COMPUTE_CAPABILITY`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compute_capability: Option<u32>,
}

/// The compute capability the graph-level simulation assumes for a GPU whose is unknown: the H200's
/// (9.0) of the ground truth.
pub const DEFAULT_COMPUTE_CAPABILITY: u32 = 900;

impl GpuAtLoad {
    /// A GPU named `name` with `free` bytes free.
    pub fn new(name: impl Into<String>, free: Bytes) -> GpuAtLoad {
        GpuAtLoad { name: name.into(), free, compute_capability: None }
    }

    /// This GPU with its CUDA compute capability (major × 100 + minor × 10, e.g. 890).
    #[must_use]
    pub fn with_compute_capability(mut self, cc: u32) -> GpuAtLoad {
        self.compute_capability = Some(cc);
        self
    }
}

/// Where memory lives: one of the GPUs given to [`predict`], or system RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    /// The GPU at this index of the list given to [`predict`].
    Gpu(usize),
    /// System RAM (llama.cpp's CPU device and its buffer types: `CPU`, `CPU_Mapped`, `CUDA_Host`,
    /// `CPU_REPACK`).
    Host,
}

/// Why a tensor has this copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TensorCopy {
    /// The tensor itself.
    Primary,
    /// The second copy of `token_embd` that tied embeddings make for the output layer when it lives
    /// in another buffer than the input copy (llama-model-loader.cpp:1174-1181, 1368-1377).
    TiedOutput,
    /// Another copy of a tensor every layer creates (`rope_freqs`, `rope_factors_*`), one per buffer
    /// type that holds a layer (models/llama.cpp:62-66; llama-model-loader.cpp:1370-1375).
    LayerDuplicate,
}

/// Where one copy of a tensor lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TensorPlacement {
    /// The index of the tensor in [`ModelDescription::tensors`].
    pub tensor: usize,
    /// Where this copy lives.
    pub location: Location,
    /// Which copy this is.
    pub copy: TensorCopy,
    /// The index (in [`ServerSettings::overrides`]) of the tensor override that chose the location,
    /// if one did.
    pub override_index: Option<usize>,
}

/// The resolved placement: which device each layer and each tensor lives on.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ResolvedPlacement {
    /// llama.cpp's model devices, in its order, as indices into the GPU list: the GPUs, narrowed by
    /// `-dev` and by `-sm none` (src/llama.cpp:158-300).
    pub devices: Vec<usize>,
    /// `-ngl` resolved: how many of the `n_layer_all + 1` layer slots (the output layer is the last)
    /// are offloaded (llama-model.cpp:2008-2011).
    pub n_gpu_layers: u32,
    /// The cumulative split points per model device, in float32 as llama.cpp computes them
    /// (llama-model.cpp:1559-1589).
    pub split: Vec<f32>,
    /// `dev_layer(il)` for every block `0..n_layer_all`.
    pub layers: Vec<Location>,
    /// `dev_output`: where the output layer goes. The input layer is always on the host
    /// (llama-model.cpp:1605-1607).
    pub output: Location,
    /// Every allocated tensor copy, in the model's tensor order.
    pub tensors: Vec<TensorPlacement>,
    /// Tensors llama.cpp creates with `TENSOR_SKIP` and never allocates: the NextN/MTP blocks without
    /// MTP (llama-model-loader.cpp:1184-1193). Indices into [`ModelDescription::tensors`].
    pub skipped: Vec<usize>,
}

impl ResolvedPlacement {
    /// How many of the layer slots (blocks and the output layer) are on a GPU.
    pub fn offloaded_layers(&self) -> usize {
        self.layers.iter().chain(std::iter::once(&self.output)).filter(|l| **l != Location::Host).count()
    }
}

/// What a buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BufferKind {
    /// Model weights (`load_tensors: CUDA0 model buffer size`).
    Weights,
    /// The KV cache of full-attention (and MLA) layers (`llama_kv_cache: CUDA0 KV buffer size`).
    KvCache,
    /// The KV cache of sliding-window layers, a separate cache (llama-kv-cache-iswa.cpp:97-101).
    KvCacheSwa,
    /// Recurrent state (`llama_memory_recurrent: CUDA0 RS buffer size`).
    RecurrentState,
    /// The host output buffer (`llama_context: CUDA_Host output buffer size`).
    Output,
}

/// One buffer llama.cpp allocates (or maps) at load, as its log prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Buffer {
    /// What it holds.
    pub kind: BufferKind,
    /// llama.cpp's buffer name: `CUDA0`, `CPU_Mapped`, `CUDA_Host`, `CPU`, ...
    pub buffer_type: String,
    /// Where it lives.
    pub location: Location,
    /// Its size.
    pub size: Bytes,
}

/// Memory on one device, per kind.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeviceMemory {
    /// The device.
    pub location: Location,
    /// `CUDA0`, ..., or `Host`, as llama.cpp's memory breakdown names them.
    pub name: String,
    /// Model weights. On the host, the resident CPU weights (Σ of the padded tensor sizes, what
    /// llama.cpp's dry run reports), not the mmap'd span ([`HostMemory::weights_mapped`]).
    pub weights: Bytes,
    /// KV cache, full and sliding-window.
    pub kv_cache: Bytes,
    /// Recurrent state.
    pub recurrent_state: Bytes,
    /// Compute buffers.
    pub compute: ComputeEstimate,
    /// The output buffer (logits), host only; its peak size ([`OutputBuffer::peak`]).
    pub output_buffer: Bytes,
    /// GPUs only: what llama-server holds beyond its own breakdown (cuBLAS, the CUDA pool), a
    /// calibrated term ([`overhead`]).
    pub beyond_breakdown: Option<Overhead>,
}

impl DeviceMemory {
    /// llama.cpp's "context" column: KV cache plus recurrent state.
    pub fn context(&self) -> Bytes {
        self.kv_cache + self.recurrent_state
    }

    /// Everything known: weights, context, output, and compute when modelled.
    pub fn known_total(&self) -> Bytes {
        self.weights + self.context() + self.output_buffer + self.compute.bytes().unwrap_or(Bytes::ZERO)
    }

    /// The sizes in whole MiB as llama.cpp prints them (`bytes / 1024 / 1024`, common/fit.cpp:1100-1111).
    pub fn mib(&self) -> DeviceMib {
        DeviceMib {
            name: self.name.clone(),
            weights: self.weights.get() / MIB,
            kv_cache: self.kv_cache.get() / MIB,
            recurrent_state: self.recurrent_state.get() / MIB,
            context: self.context().get() / MIB,
            compute: self.compute.bytes().map(|b| b.get() / MIB),
            output_buffer: self.output_buffer.get() / MIB,
        }
    }
}

/// One device's memory in whole MiB (rounded down), the way `llama-fit-params --fit-print` and the
/// memory breakdown table print it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceMib {
    /// `CUDA0`, ..., `Host`.
    pub name: String,
    /// The "model" column.
    pub weights: u64,
    /// KV cache alone.
    pub kv_cache: u64,
    /// Recurrent state alone.
    pub recurrent_state: u64,
    /// The "context" column: KV cache plus recurrent state, summed before rounding.
    pub context: u64,
    /// The "compute" column, when modelled.
    pub compute: Option<u64>,
    /// The output buffer (not in llama.cpp's table).
    pub output_buffer: u64,
}

/// Everything predicted for one model and configuration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemoryPrediction {
    /// The context llama.cpp creates.
    pub context: ResolvedContext,
    /// Where every layer and tensor lives.
    pub placement: ResolvedPlacement,
    /// Memory per device: the model devices in llama.cpp's order, then any other GPU a tensor
    /// override sends tensors to, then `Host`.
    pub devices: Vec<DeviceMemory>,
    /// System RAM in detail.
    pub host: HostMemory,
    /// The output buffer.
    pub output: OutputBuffer,
    /// Every buffer llama.cpp allocates or maps at load (weights, KV, recurrent state, output), as
    /// its log lines print them.
    pub buffers: Vec<Buffer>,
}

impl MemoryPrediction {
    /// The row of the device named `name` (`CUDA0`, `Host`).
    pub fn device(&self, name: &str) -> Option<&DeviceMemory> {
        self.devices.iter().find(|d| d.name == name)
    }

    /// Every row in whole MiB, as llama.cpp prints them.
    pub fn mib(&self) -> Vec<DeviceMib> {
        self.devices.iter().map(DeviceMemory::mib).collect()
    }
}

/// Predicts what llama.cpp allocates for `model` run by llama-server with `settings` on `gpus` (in
/// llama.cpp's device order, with the free memory each reports at load; empty for a machine without
/// GPUs).
///
/// `--fit` is not applied: the prediction is for the settings as given (the planner emulates fit).
/// Compute buffers come from the phase model in `compute` (exact parts plus calibrated activations).
/// To predict many configurations of one model, use a [`Predictor`].
pub fn predict(
    model: &ModelDescription,
    settings: &ServerSettings,
    gpus: &[GpuAtLoad],
) -> Result<MemoryPrediction, MemoryError> {
    Predictor::new(model).predict(settings, gpus)
}

/// Which program's reservation to predict. They differ in one thing: how many outputs the
/// worst-case graph reserves logits for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Runner {
    /// llama-server: `n_outputs = min(n_batch, n_parallel × (1 + n_draft))` (server-context.cpp:42-56).
    #[default]
    LlamaServer,
    /// `llama-fit-params --fit-print on`, llama.cpp's dry run: it leaves `n_outputs_max` at 0, which
    /// llama-context.cpp:252 turns into `n_batch`, so a whole micro-batch of logits is reserved on
    /// the output device (llama-context.cpp:672).
    FitParamsDryRun,
}

/// Predictions for one model, many configurations: it remembers which tensors each tensor-override
/// pattern matches, so a pattern is compiled and run over the tensor names once, and the compute
/// graphs it has simulated, so that another placement of the same context and micro-batch is only
/// scheduled and allocated ([`sim::GraphCache`]).
#[derive(Clone, Debug)]
pub struct Predictor<'m> {
    model: &'m ModelDescription,
    patterns: overrides::PatternMatches,
    simulate: bool,
    graphs: sim::GraphCache,
}

impl<'m> Predictor<'m> {
    /// A predictor for `model`.
    pub fn new(model: &'m ModelDescription) -> Predictor<'m> {
        Predictor {
            model,
            patterns: overrides::PatternMatches::default(),
            simulate: true,
            graphs: sim::GraphCache::default(),
        }
    }

    /// This predictor with the graph-level simulation of compute buffers ([`sim`]) on (the default)
    /// or off. Off, every compute buffer comes from the phase model (`compute`), as for an
    /// architecture the simulation does not cover: for comparisons of the two.
    #[must_use]
    pub fn with_simulation(mut self, on: bool) -> Predictor<'m> {
        self.simulate = on;
        self
    }

    /// How many of the compute graphs this predictor simulated were copies of graphs it had built
    /// for an earlier configuration ([`sim::GraphCache`]).
    pub fn reused_graphs(&self) -> usize {
        self.graphs.reused()
    }

    /// The model.
    pub fn model(&self) -> &'m ModelDescription {
        self.model
    }

    /// [`predict`] for this predictor's model.
    pub fn predict(
        &mut self,
        settings: &ServerSettings,
        gpus: &[GpuAtLoad],
    ) -> Result<MemoryPrediction, MemoryError> {
        self.predict_as(settings, gpus, Runner::LlamaServer)
    }

    /// [`predict`] for this predictor's model, as `runner` reserves it.
    pub fn predict_as(
        &mut self,
        settings: &ServerSettings,
        gpus: &[GpuAtLoad],
        runner: Runner,
    ) -> Result<MemoryPrediction, MemoryError> {
        let model = self.model;
        let resolved = self.patterns.resolve(model, &settings.overrides, gpus)?;
        let mut context = context::resolve(model, settings)?;
        if runner == Runner::FitParamsDryRun {
            context.n_outputs = context.n_ubatch;
        }
        let placement = devices::place_layers(model, settings, gpus)?;
        let placement = overrides::place_tensors(model, placement, &resolved, settings.loads_mtp_layers());

        let weights = weights::weights(model, &placement, settings, gpus);
        let kv = kv::kv_cache(model, &context, &placement, gpus)?;
        let recurrent = recurrent::recurrent_state(model, &context, &placement, gpus);
        let output = output::output_buffer(model, &context, &placement, settings, gpus);

        let mut buffers = weights.buffers.clone();
        buffers.extend(kv.buffers.iter().cloned());
        buffers.extend(recurrent.buffers.iter().cloned());
        buffers.push(output.buffer());

        // Compute buffers: the graph-level simulation where it covers the architecture and the
        // configuration, else the phase model.
        let simulated = if self.simulate {
            let sim_gpus: Vec<sim::SimGpu> = gpus
                .iter()
                .map(|g| sim::SimGpu {
                    compute_capability: g.compute_capability.unwrap_or(DEFAULT_COMPUTE_CAPABILITY),
                })
                .collect();
            sim::simulate_cached(&mut self.graphs, model, settings, &context, &placement, &sim_gpus, runner)
                .ok()
        } else {
            None
        };
        let compute_at = |loc: Location| {
            simulated.as_ref().and_then(|s| s.iter().find(|d| d.location == loc)).map_or_else(
                || compute_buffer(model, settings, &context, &placement, loc),
                |d| ComputeEstimate::simulated(d.bytes),
            )
        };

        // The model devices in llama.cpp's order, then other GPUs an override put weights on.
        let mut order: Vec<Location> = placement.devices.iter().map(|&i| Location::Gpu(i)).collect();
        for (i, _) in gpus.iter().enumerate() {
            let loc = Location::Gpu(i);
            if !order.contains(&loc) && weights.per_location.at(loc) > Bytes::ZERO {
                order.push(loc);
            }
        }
        let mut devices: Vec<DeviceMemory> = order
            .into_iter()
            .map(|loc| DeviceMemory {
                location: loc,
                name: gpu_name(gpus, loc).to_owned(),
                weights: weights.per_location.at(loc),
                kv_cache: kv.per_location.at(loc),
                recurrent_state: recurrent.per_location.at(loc),
                compute: compute_at(loc),
                output_buffer: Bytes::ZERO,
                beyond_breakdown: Some(overhead(&context)),
            })
            .collect();

        let host_compute = compute_at(Location::Host);
        let host = host::host_memory(settings, &weights, &kv, &recurrent, &output, host_compute);
        devices.push(DeviceMemory {
            location: Location::Host,
            name: "Host".to_owned(),
            weights: host.weights_resident,
            kv_cache: host.kv_cache,
            recurrent_state: host.recurrent_state,
            compute: host.compute.clone(),
            output_buffer: host.output_buffer,
            beyond_breakdown: None,
        });

        Ok(MemoryPrediction { context, placement, devices, host, output, buffers })
    }
}

/// The device's default buffer type: the GPU's name, or `CPU` for the host (what KV cache and
/// recurrent state use there, llama-kv-cache.cpp:212-221).
pub(crate) fn device_buffer_type(gpus: &[GpuAtLoad], loc: Location) -> String {
    match loc {
        Location::Gpu(_) => gpu_name(gpus, loc).to_owned(),
        Location::Host => "CPU".to_owned(),
    }
}

/// `CUDA0` for GPU 0, `Host` for the host.
fn gpu_name(gpus: &[GpuAtLoad], loc: Location) -> &str {
    match loc {
        Location::Gpu(i) => gpus.get(i).map_or("?", |g| g.name.as_str()),
        Location::Host => "Host",
    }
}

/// Bytes per location: one slot per GPU and one for the host.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct PerLocation {
    gpus: Vec<Bytes>,
    host: Bytes,
}

impl PerLocation {
    pub(crate) fn new(n_gpus: usize) -> PerLocation {
        PerLocation { gpus: vec![Bytes::ZERO; n_gpus], host: Bytes::ZERO }
    }

    pub(crate) fn add(&mut self, loc: Location, bytes: Bytes) {
        match loc {
            Location::Gpu(i) => {
                if let Some(slot) = self.gpus.get_mut(i) {
                    *slot += bytes;
                }
            }
            Location::Host => self.host += bytes,
        }
    }

    pub(crate) fn at(&self, loc: Location) -> Bytes {
        match loc {
            Location::Gpu(i) => self.gpus.get(i).copied().unwrap_or(Bytes::ZERO),
            Location::Host => self.host,
        }
    }

    /// Non-empty locations, GPUs in index order, then the host.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Location, Bytes)> + '_ {
        let gpus = self.gpus.iter().enumerate().map(|(i, &b)| (Location::Gpu(i), b));
        gpus.chain(std::iter::once((Location::Host, self.host))).filter(|(_, b)| *b > Bytes::ZERO)
    }
}

#[cfg(test)]
mod tests;
