//! A placement: where each layer's dense part (with its KV cache or recurrent state) and each of
//! its routed-expert tensors go, in the terms llama.cpp can be told.
//!
//! llama.cpp places a layer's dense part, and the layer's KV cache, on `dev_layer(il)`, which only
//! `-ngl` and `-ts` decide (llama-model.cpp:1502-1617; llama-kv-cache.cpp:212-221); tensor overrides
//! can move weights but never the cache. So a placement keeps the dense parts in the shape `-ngl`
//! and `-ts` can express (a CPU prefix, then contiguous slices per GPU in device order, the output
//! layer last), and places every routed-expert tensor freely: on the layer's GPU, another GPU, or
//! the CPU. The renderers (crate::render) turn it into flags; [`Placement::tensor_device`] says what
//! the flags are meant to do to each tensor, which the renderer's property test checks against
//! llama.cpp's override semantics.

use std::fmt;

use serde::Serialize;

use crate::model::{ExpertPart, LayerClass, LayerSlot, ModelDescription, ModelTensor, TensorRole};

/// Where something is placed: a GPU (an index into [`Placement::gpus`]) or the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Device {
    /// The GPU at this index of the placement's GPU list (llama.cpp's device order).
    Gpu(usize),
    /// System RAM: llama.cpp's `CPU` buffer type (mapped, pinned or repacked as the CPU list
    /// decides, llama-model.cpp:1079-1139).
    Cpu,
}

impl Device {
    /// The GPU index, if this is a GPU.
    pub fn gpu(self) -> Option<usize> {
        match self {
            Device::Gpu(i) => Some(i),
            Device::Cpu => None,
        }
    }
}

/// The routed-expert tensors of a layer, by projection: where each goes. A model has either
/// `gate` and `up` or the merged `gate_up`; the field of a projection the model lacks is ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ExpertPlacement {
    /// `ffn_gate_exps`.
    pub gate: Device,
    /// `ffn_up_exps`.
    pub up: Device,
    /// `ffn_down_exps`.
    pub down: Device,
    /// `ffn_gate_up_exps`.
    pub gate_up: Device,
}

impl ExpertPlacement {
    /// Every projection on `device`.
    pub fn all(device: Device) -> ExpertPlacement {
        ExpertPlacement { gate: device, up: device, down: device, gate_up: device }
    }

    /// Where projection `part` goes.
    pub fn get(&self, part: ExpertPart) -> Device {
        match part {
            ExpertPart::Gate => self.gate,
            ExpertPart::Up => self.up,
            ExpertPart::Down => self.down,
            ExpertPart::GateUp => self.gate_up,
        }
    }

    /// Sends projection `part` to `device`.
    pub fn set(&mut self, part: ExpertPart, device: Device) {
        match part {
            ExpertPart::Gate => self.gate = device,
            ExpertPart::Up => self.up = device,
            ExpertPart::Down => self.down = device,
            ExpertPart::GateUp => self.gate_up = device,
        }
    }
}

/// One block of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct LayerPlacement {
    /// `dev_layer(il)`: the dense part (attention or recurrent block, norms, router, shared experts,
    /// dense FFN) and the layer's KV cache or recurrent state.
    pub dense: Device,
    /// The routed-expert tensors.
    pub experts: ExpertPlacement,
}

/// Where every block, the output layer and every routed-expert tensor of a model go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Placement {
    /// The model devices in llama.cpp's order, by their buffer-type names (`CUDA0`, `CUDA1`): what
    /// `-ts` counts refer to and `-ot` targets name.
    pub gpus: Vec<String>,
    /// One entry per block, `0..n_layer_all` (NextN blocks included: they take a layer slot).
    pub layers: Vec<LayerPlacement>,
    /// The output layer (`output`, `output_norm`): the last layer slot (llama-model.cpp:1593-1604).
    pub output: Device,
}

/// Why a placement cannot be expressed with `-ngl` and `-ts`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// The dense parts must be a CPU prefix followed by GPUs in device order.
    #[error(
        "layer {layer}'s dense part is on {found} after a layer on {before}: -ngl/-ts place the CPU layers first, \
         then each GPU's layers in device order"
    )]
    NotContiguous {
        /// The block (`n_layer_all` for the output layer).
        layer: usize,
        /// Where it is.
        found: String,
        /// Where an earlier layer is.
        before: String,
    },
    /// A device index past the GPU list.
    #[error("layer {layer} names GPU {gpu}, but the placement has {n_gpus} GPUs")]
    UnknownGpu {
        /// The block (`n_layer_all` for the output layer).
        layer: usize,
        /// The index.
        gpu: usize,
        /// How many GPUs there are.
        n_gpus: usize,
    },
    /// The layer list does not match the model.
    #[error("the placement has {found} layers, the model {expected}")]
    LayerCount {
        /// Layers in the placement.
        found: usize,
        /// `n_layer_all`.
        expected: usize,
    },
}

impl Placement {
    /// Everything on GPU `gpu` of `gpus`: every dense part, every expert, the output layer.
    pub fn all_on(gpus: Vec<String>, n_layer_all: usize, gpu: usize) -> Placement {
        let d = Device::Gpu(gpu);
        let layer = LayerPlacement { dense: d, experts: ExpertPlacement::all(d) };
        Placement { gpus, layers: vec![layer; n_layer_all], output: d }
    }

    /// The buffer-type name of a device: `CUDA0`, …, `CPU`.
    pub fn device_name(&self, device: Device) -> String {
        match device {
            Device::Gpu(i) => self.gpus.get(i).cloned().unwrap_or_else(|| format!("GPU{i}")),
            Device::Cpu => "CPU".to_owned(),
        }
    }

    /// The layer slots in order: every block, then the output layer.
    fn slots(&self) -> impl Iterator<Item = Device> + '_ {
        self.layers.iter().map(|l| l.dense).chain(std::iter::once(self.output))
    }

    /// Checks that `-ngl` and `-ts` can express the dense parts, and that the placement fits
    /// `model`'s layer count.
    pub fn check(&self, model: &ModelDescription) -> Result<(), PlacementError> {
        if self.layers.len() != model.n_layer_all {
            return Err(PlacementError::LayerCount { found: self.layers.len(), expected: model.n_layer_all });
        }
        let n_gpus = self.gpus.len();
        let mut last = Device::Cpu;
        for (layer, slot) in self.slots().enumerate() {
            let experts = self.layers.get(layer).map(|l| l.experts);
            let named = experts
                .iter()
                .flat_map(|e| [e.gate, e.up, e.down, e.gate_up])
                .chain(std::iter::once(slot))
                .filter_map(Device::gpu)
                .find(|&g| g >= n_gpus);
            if let Some(gpu) = named {
                return Err(PlacementError::UnknownGpu { layer, gpu, n_gpus });
            }
            // Device::Cpu sorts after every GPU, so compare by slot order instead.
            let order = |d: Device| match d {
                Device::Cpu => 0,
                Device::Gpu(i) => i + 1,
            };
            if order(slot) < order(last) {
                return Err(PlacementError::NotContiguous {
                    layer,
                    found: self.device_name(slot),
                    before: self.device_name(last),
                });
            }
            last = slot;
        }
        Ok(())
    }

    /// `-ngl`: the layer slots (blocks and the output layer) on a GPU.
    pub fn n_gpu_layers(&self) -> usize {
        self.slots().filter(|d| *d != Device::Cpu).count()
    }

    /// `-ts` as integer layer counts per GPU (the output layer counted with its GPU): llama.cpp
    /// reproduces integer counts exactly (llama-model.cpp:1581-1604).
    pub fn tensor_split(&self) -> Vec<usize> {
        let mut counts = vec![0; self.gpus.len()];
        for d in self.slots() {
            if let Some(c) = d.gpu().and_then(|i| counts.get_mut(i)) {
                *c += 1;
            }
        }
        counts
    }

    /// The GPUs that hold anything (dense parts, experts or the output layer).
    pub fn used_gpus(&self) -> Vec<usize> {
        let mut used = vec![false; self.gpus.len()];
        for l in &self.layers {
            for d in [l.dense, l.experts.gate, l.experts.up, l.experts.down, l.experts.gate_up] {
                if let Some(u) = d.gpu().and_then(|i| used.get_mut(i)) {
                    *u = true;
                }
            }
        }
        if let Some(u) = self.output.gpu().and_then(|i| used.get_mut(i)) {
            *u = true;
        }
        used.iter().enumerate().filter(|(_, u)| **u).map(|(i, _)| i).collect()
    }

    /// Where the placement means tensor `t` of the model to go. Input tensors stay on the CPU
    /// (llama-model.cpp:1605-1607); output tensors go with the output layer; a block's routed
    /// experts go where [`ExpertPlacement`] says, the rest of the block with its dense part. Per-layer
    /// duplicated tensors (`rope_freqs`) are reported with layer 0.
    pub fn tensor_device(&self, t: &ModelTensor) -> Device {
        let layer = |il: usize| self.layers.get(il);
        match (t.class, t.slot) {
            (LayerClass::Input, _) | (_, LayerSlot::Input) => Device::Cpu,
            (_, LayerSlot::Output) => self.output,
            (_, LayerSlot::EveryLayer) => layer(0).map_or(self.output, |l| l.dense),
            (_, LayerSlot::Layer(il)) => match (layer(il), t.role) {
                (None, _) => self.output,
                (Some(l), TensorRole::Experts { part, .. }) => l.experts.get(part),
                (Some(l), _) => l.dense,
            },
        }
    }

    /// True when every routed expert of `model` sits with its layer's dense part.
    pub fn experts_with_layers(&self, model: &ModelDescription) -> bool {
        self.layers
            .iter()
            .enumerate()
            .all(|(il, l)| expert_parts(model, il).iter().all(|p| l.experts.get(p.part) == l.dense))
    }
}

/// One routed-expert projection of a block as the model names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpertTensorName {
    /// Which projection.
    pub part: ExpertPart,
    /// The base name without block and suffix: `ffn_down_exps`, `ffn_gate_up_chexps`.
    pub base: String,
}

/// The routed-expert projections block `il` of `model` has, in llama.cpp's spill order (down,
/// gate, gate_up, up: common/fit.cpp moves `ffn_down` first, then gate, then up), each once even
/// when it has a weight, a bias and a scale.
pub fn expert_parts(model: &ModelDescription, il: usize) -> Vec<ExpertTensorName> {
    let mut out: Vec<ExpertTensorName> = Vec::new();
    let prefix = format!("blk.{il}.");
    for t in model.layer_tensors(il) {
        let TensorRole::Experts { part, .. } = t.role else { continue };
        let Some(rest) = t.name.strip_prefix(&prefix) else { continue };
        let base = rest.split('.').next().unwrap_or(rest).to_owned();
        if !out.iter().any(|p| p.base == base) {
            out.push(ExpertTensorName { part, base });
        }
    }
    out.sort_by_key(|p| spill_rank(p.part));
    out
}

/// The order in which llama.cpp's fit spills a layer's experts off a GPU: `ffn_down` first
/// (LAYER_FRACTION_GATE keeps up and gate), then gate (+gate_up), then up (LAYER_FRACTION_UP keeps
/// only up) (common/fit.cpp:829-858).
pub fn spill_rank(part: ExpertPart) -> u8 {
    match part {
        ExpertPart::Down => 0,
        ExpertPart::Gate => 1,
        ExpertPart::GateUp => 2,
        ExpertPart::Up => 3,
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Gpu(i) => write!(f, "GPU {i}"),
            Device::Cpu => f.write_str("CPU"),
        }
    }
}
