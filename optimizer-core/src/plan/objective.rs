//! How fast a placement runs: a decode-speed model (first) and a prompt-speed model (second), with
//! the graph splits llama.cpp's scheduler will make.
//!
//! **Decode.** Generating one token reads, on every device, the weights resident there: all of every
//! dense tensor, one row of the input embedding, and of each routed-expert tensor the share of the
//! experts a token uses (`n_expert_used / n_expert`). It also reads the KV cache of the layers there
//! (at a given context depth) and reads and writes the recurrent state. Decode is memory-bound, so
//! the time per token is
//!
//! ```text
//! t = Σ_devices bytes_read / bandwidth  +  splits × t_split  +  layers × t_layer
//! ```
//!
//! where `t_split` is what one graph split costs (a synchronisation and a copy between backends) and
//! `t_layer` the fixed kernel-launch cost of a layer, both fitted to measured speeds
//! ([`SpeedModel::CALIBRATED`] says which).
//!
//! **Prompt.** With a micro-batch of `ub ≥ 32` tokens, llama.cpp runs the matrix products of weights
//! in system RAM on the first GPU and copies those weights over PCIe for every micro-batch
//! (op offload, llama-cpp-memory.md §2.4; ggml-cuda.cu:5928). So a micro-batch costs the host's
//! expert bytes over the PCIe bandwidth plus a per-token compute cost.
//!
//! **Graph splits.** The scheduler cuts the graph where consecutive operations run on different
//! backends (ggml-backend.cpp:1263-1330). Per layer the operations run in this order: attention (or
//! the recurrent block) on the layer's device, the router, the routed experts `up`, `gate`, `down`,
//! the shared expert (`up`, `gate`, `down`, its gate), each on the device of its weight; in decode
//! weights in RAM run on the CPU, in prompt processing they are offloaded to the first GPU and each
//! such operation is a split of its own (ggml-backend.cpp:1300-1312). A layer whose weights sit on
//! another GPU than its KV cache or recurrent state ping-pongs between the two.

use serde::Serialize;

use crate::gguf::GgmlType;
use crate::model::{LayerKind, ModelDescription, RouterPart, TensorRole};
use crate::units::Bytes;

use super::Hardware;
use super::placement::{Device, Placement};

/// Where each tensor and each layer of a model is, however it was decided (a [`Placement`], or the
/// memory model's resolution of arbitrary flags).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Resolved {
    /// Per tensor of [`ModelDescription::tensors`]: where its (first) copy lives; `None` when
    /// llama.cpp does not allocate it (NextN blocks without MTP).
    pub tensors: Vec<Option<Device>>,
    /// `dev_layer(il)` per block: where the KV cache or recurrent state lives.
    pub layers: Vec<Device>,
    /// The output layer's device.
    pub output: Device,
    /// The first model device: where llama.cpp offloads operations on weights in RAM.
    pub first_gpu: Option<usize>,
}

impl Resolved {
    /// What `p` means for every tensor of `model` ([`Placement::tensor_device`]).
    pub fn from_placement(model: &ModelDescription, p: &Placement, mtp: bool) -> Resolved {
        let tensors = model.tensors.iter().map(|t| t.is_loaded(mtp).then(|| p.tensor_device(t))).collect();
        let first_gpu = p.used_gpus().first().copied();
        Resolved { tensors, layers: p.layers.iter().map(|l| l.dense).collect(), output: p.output, first_gpu }
    }
}

/// The constants of the speed model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SpeedModel {
    /// Bandwidth of a GPU whose bandwidth is not known, GB/s.
    pub default_gpu_bandwidth_gbs: f64,
    /// Bandwidth of system RAM when the hardware does not say, GB/s.
    pub default_host_bandwidth_gbs: f64,
    /// The share of a GPU's nominal bandwidth that decode's small matrix products reach.
    pub gpu_efficiency: f64,
    /// The share of the host's bandwidth the CPU's expert products reach.
    pub host_efficiency: f64,
    /// Seconds per graph split in decode.
    pub split_seconds: f64,
    /// Seconds per layer per token that do not depend on where the layer is (kernel launches).
    pub layer_seconds: f64,
    /// Further seconds per MLA layer per token (GLM-4.7-Flash's absorbed attention is slower than
    /// its bytes say).
    pub mla_layer_seconds: f64,
    /// Weight types the CPU multiplies slower than the host's bandwidth allows, with the bytes per
    /// second it reaches on them, GB/s.
    pub cpu_type_gbs: &'static [(GgmlType, f64)],
    /// Host → first GPU copy bandwidth for offloaded prompt operations, GB/s.
    pub pcie_gbs: f64,
    /// Seconds of GPU compute per prompt token.
    pub prompt_token_seconds: f64,
    /// Tokens already in the context when decode speed is predicted: the KV cache read per token.
    pub decode_depth: u32,
}

impl SpeedModel {
    /// Fitted to speeds measured on 2× H200 (4.8 TB/s each, NVIDIA's data sheet) with llama.cpp
    /// 11434, fixtures/ground-truth/data/2026-11-21*-h200x2: a least-squares fit of host bandwidth
    /// (67 GB/s on that machine), `split_seconds` and `layer_seconds` to the five Qwen3-Coder-Next
    /// loads (q5-s1a/b hand split and q5-s2a/b `--fit`, alternated, 3 requests × 256 tokens each;
    /// q5-l01, l04, l05), residuals within 3%; `mla_layer_seconds` from glm-s2a/b, MXFP4's CPU rate
    /// from oss-l01 and oss-l03 (12.3 and 11.9 GB/s), the prompt terms from the 13,890-token
    /// requests of q5-l01…l03 (docs/speed-model.md).
    pub const CALIBRATED: SpeedModel = SpeedModel {
        // Unknown cards: a mid-range figure, and the plan says the bandwidth was assumed.
        default_gpu_bandwidth_gbs: 900.0,
        // Dual-channel DDR4-3200 as the user measured it (BRIEF.md: ~40 GB/s).
        default_host_bandwidth_gbs: 40.0,
        // Not fitted: decode's batch-1 products reach about this share of the data-sheet figure.
        gpu_efficiency: 0.6,
        host_efficiency: 1.0,
        split_seconds: 47.6e-6,
        layer_seconds: 28.3e-6,
        mla_layer_seconds: 77e-6,
        cpu_type_gbs: &[(GgmlType::Mxfp4, 12.0)],
        pcie_gbs: 34.0,
        prompt_token_seconds: 105e-6,
        decode_depth: 4096,
    };
}

impl Default for SpeedModel {
    fn default() -> Self {
        SpeedModel::CALIBRATED
    }
}

/// Graph splits of the prompt (`pp`) and decode (`tg`) graphs, as llama-server logs them
/// (`graph (pp bs=…, tg bs=1): nodes = …, splits = A / B`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct GraphSplits {
    /// Splits of the prompt graph.
    pub prompt: u32,
    /// Splits of the decode graph.
    pub decode: u32,
}

/// Bytes one decode token reads on one device.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeviceReads {
    /// The device.
    pub device: Device,
    /// Weights read per token.
    pub weights: Bytes,
    /// KV cache and recurrent state read per token.
    pub state: Bytes,
    /// The bandwidth used, GB/s.
    pub bandwidth_gbs: f64,
    /// Seconds per token on this device.
    pub seconds: f64,
}

/// The predicted speed of a placement.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Speed {
    /// Predicted decode tokens per second.
    pub decode_tps: f64,
    /// Predicted prompt tokens per second.
    pub prompt_tps: f64,
    /// Predicted graph splits.
    pub splits: GraphSplits,
    /// Per device, what a decode token reads.
    pub reads: Vec<DeviceReads>,
    /// Expert bytes in system RAM that prompt processing copies to the first GPU per micro-batch.
    pub offloaded_per_ubatch: Bytes,
    /// Devices whose bandwidth was assumed ([`SpeedModel::default_gpu_bandwidth_gbs`]).
    pub assumed_bandwidth: Vec<Device>,
}

/// What the speed prediction needs besides the placement.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SpeedInputs<'a> {
    /// The machine (bandwidths).
    pub hardware: &'a Hardware,
    /// The KV cache types' bytes per token per layer come from here: K and V types.
    pub kv_types: (GgmlType, GgmlType),
    /// Flash attention (V not transposed).
    pub flash_attn: bool,
    /// `-ub`.
    pub ubatch: u32,
    /// `--op-offload` (default on).
    pub op_offload: bool,
    /// Whether MTP layers are loaded.
    pub mtp: bool,
}

/// Splits added when a layer's weights and its KV cache or recurrent state are on different GPUs:
/// fitted to the user's hand splits (fixtures/ground-truth/data/2026-11-21-h200x2/logs/q5-l02.log:
/// 125 decode splits, 7 such layers; oss-l01: 76, 4 such layers).
const MISMATCH_SPLITS: u32 = 9;

/// Splits outside the layers that the sequence model does not see, for models with recurrent
/// layers: fitted to the `--fit` loads of Qwen3-Coder-Next (q5-l03: 100 / 51, q5-l04: 80 / 45).
const BASE_SPLITS_RECURRENT: u32 = 3;

/// The same for models without recurrent layers: GLM-4.7-Flash all on the GPUs logs 2 splits on
/// one GPU and 3 on two (glm4-l01, glm-s2a).
const BASE_SPLITS: u32 = 1;

/// Predicts the speed of `r` for `model`.
pub fn predict_speed(
    model: &ModelDescription,
    r: &Resolved,
    inputs: &SpeedInputs<'_>,
    m: &SpeedModel,
) -> Speed {
    let n_gpus = inputs.hardware.gpus.len();
    let mut weights = vec![Bytes::ZERO; n_gpus + 1];
    let mut state = vec![Bytes::ZERO; n_gpus + 1];
    let slot = |d: Device| match d {
        Device::Gpu(i) if i < n_gpus => i,
        _ => n_gpus,
    };
    let mut offloaded = Bytes::ZERO;
    // CPU reads of the types the CPU is slow on, in seconds.
    let mut cpu_slow_seconds = 0.0;
    let mut cpu_slow_bytes = Bytes::ZERO;
    for (t, d) in model.tensors.iter().zip(&r.tensors) {
        let Some(d) = *d else { continue };
        let read = match t.role {
            TensorRole::TokenEmbd if t.block.is_none() => Bytes::new(t.size.get() / model.n_vocab.max(1)),
            TensorRole::Experts { .. } => {
                let used =
                    t.block.and_then(|il| model.layer(il)).map_or(model.n_expert_used, |l| l.n_expert_used);
                let n = u128::from(model.n_expert.max(1));
                let share = u128::from(t.size.get()) * u128::from(used).min(n) / n;
                Bytes::new(u64::try_from(share).unwrap_or(u64::MAX))
            }
            _ => t.size,
        };
        weights[slot(d)] += read;
        if d == Device::Cpu && t.block.is_some() {
            offloaded += t.size;
            if let Some((_, gbs)) = m.cpu_type_gbs.iter().find(|(ty, _)| *ty == t.ggml_type) {
                cpu_slow_seconds += read.get() as f64 / (gbs * 1e9);
                cpu_slow_bytes += read;
            }
        }
    }
    let depth = u64::from(m.decode_depth);
    for (il, &dev) in r.layers.iter().enumerate() {
        let kv = model
            .kv_bytes_per_token(il, inputs.kv_types.0, inputs.kv_types.1, !inputs.flash_attn)
            .map(crate::model::KvBytes::total)
            .unwrap_or_default();
        // The recurrent state is read and written once per token.
        let rs = model.recurrent_bytes_per_seq(il).saturating_mul(2);
        state[slot(dev)] += kv.saturating_mul(depth) + rs;
    }

    let mut reads = Vec::new();
    let mut assumed = Vec::new();
    let mut seconds = 0.0;
    for i in 0..=n_gpus {
        let (device, bw) = if i < n_gpus {
            let known = inputs.hardware.gpus[i].bandwidth_gbs;
            if known.is_none() && weights[i] + state[i] > Bytes::ZERO {
                assumed.push(Device::Gpu(i));
            }
            (Device::Gpu(i), known.unwrap_or(m.default_gpu_bandwidth_gbs) * m.gpu_efficiency)
        } else {
            (
                Device::Cpu,
                inputs.hardware.host_bandwidth_gbs.unwrap_or(m.default_host_bandwidth_gbs)
                    * m.host_efficiency,
            )
        };
        let bytes = weights[i] + state[i];
        if bytes == Bytes::ZERO {
            continue;
        }
        let s = if device == Device::Cpu {
            // The slow types at their own rate, the rest at the host's bandwidth.
            bytes.saturating_sub(cpu_slow_bytes).get() as f64 / (bw * 1e9) + cpu_slow_seconds
        } else {
            bytes.get() as f64 / (bw * 1e9)
        };
        seconds += s;
        reads.push(DeviceReads {
            device,
            weights: weights[i],
            state: state[i],
            bandwidth_gbs: bw,
            seconds: s,
        });
    }
    let splits = graph_splits(model, r, inputs);
    let n_layer = model.n_layer() as f64;
    let n_mla = model.layers.iter().filter(|l| l.kind == LayerKind::Mla).count() as f64;
    seconds +=
        f64::from(splits.decode) * m.split_seconds + n_layer * m.layer_seconds + n_mla * m.mla_layer_seconds;
    let decode_tps = if seconds > 0.0 { 1.0 / seconds } else { 0.0 };

    let ub = f64::from(inputs.ubatch.max(1));
    let offload = inputs.op_offload && inputs.ubatch >= OFFLOAD_MIN_BATCH && r.first_gpu.is_some();
    let copy = if offload { offloaded.get() as f64 / (m.pcie_gbs * 1e9) } else { 0.0 };
    let cpu_prompt = if offload {
        0.0
    } else {
        // Without offload the CPU multiplies every token by its weights: one pass per token.
        let bw = inputs.hardware.host_bandwidth_gbs.unwrap_or(m.default_host_bandwidth_gbs) * 1e9;
        weights[n_gpus].get() as f64 / bw * ub
    };
    let ubatch_seconds =
        copy + cpu_prompt + ub * m.prompt_token_seconds + f64::from(splits.prompt) * m.split_seconds;
    let prompt_tps = ub / ubatch_seconds;

    Speed {
        decode_tps,
        prompt_tps,
        splits,
        reads,
        offloaded_per_ubatch: if offload { offloaded } else { Bytes::ZERO },
        assumed_bandwidth: assumed,
    }
}

/// The batch from which CUDA takes operations on host weights (`GGML_OP_OFFLOAD_MIN_BATCH`,
/// ggml-cuda.cu:5928).
const OFFLOAD_MIN_BATCH: u32 = 32;

/// The ops of one layer in graph order, each with the device of its weights; `tensors` are the
/// indices of the layer's tensors.
fn layer_ops(
    model: &ModelDescription,
    resolved: &Resolved,
    tensors: &[usize],
) -> (Option<Device>, Vec<Device>) {
    use crate::model::{ExpertPart, FfnPart};
    let mut attn: Option<Device> = None;
    let mut router = None;
    // Per projection, the weight and its bias or scale are separate operations (MUL_MAT_ID, then
    // ADD_ID or MUL), each on the device of its tensor.
    let mut experts: [[Option<Device>; 2]; 3] = [[None; 2]; 3];
    let mut shared: [Option<Device>; 4] = [None; 4];
    let mut dense: [Option<Device>; 3] = [None; 3];
    for &ti in tensors {
        let (Some(t), Some(Some(d))) = (model.tensors.get(ti), resolved.tensors.get(ti).copied()) else {
            continue;
        };
        match t.role {
            TensorRole::Attention(_) | TensorRole::Recurrent(_) => {
                attn.get_or_insert(d);
            }
            TensorRole::Router(RouterPart::GateInp) => router = Some(d),
            TensorRole::Experts { part, .. } => {
                let k = match part {
                    ExpertPart::Up => 0,
                    ExpertPart::Gate | ExpertPart::GateUp => 1,
                    ExpertPart::Down => 2,
                };
                let j = usize::from(t.suffix != crate::model::TensorSuffix::Weight);
                experts[k][j].get_or_insert(d);
            }
            TensorRole::SharedExpert(p) => {
                let k = match p {
                    FfnPart::Up => 0,
                    FfnPart::Gate => 1,
                    FfnPart::Down => 2,
                    FfnPart::GateInp => 3,
                };
                shared[k].get_or_insert(d);
            }
            TensorRole::DenseFfn(p) => {
                let k = match p {
                    FfnPart::Up => 0,
                    FfnPart::Gate | FfnPart::GateInp => 1,
                    FfnPart::Down => 2,
                };
                dense[k].get_or_insert(d);
            }
            _ => {}
        }
    }
    let ops = std::iter::once(attn)
        .chain(std::iter::once(router))
        .chain(experts.into_iter().flatten())
        .chain(shared)
        .chain(dense)
        .flatten()
        .collect();
    (attn, ops)
}

/// Predicted graph splits of `r` (see the module documentation).
pub fn graph_splits(model: &ModelDescription, r: &Resolved, inputs: &SpeedInputs<'_>) -> GraphSplits {
    let prompt_offload = inputs.op_offload && inputs.ubatch >= OFFLOAD_MIN_BATCH;
    let base = if model.recurrent_layers().next().is_some() { BASE_SPLITS_RECURRENT } else { BASE_SPLITS };
    let mut decode = base;
    let mut prompt = base;
    // The input embedding is looked up on the CPU.
    let mut last_tg = Device::Cpu;
    let mut last_pp = Device::Cpu;
    let graph_layers = if inputs.mtp { model.n_layer_all } else { model.n_layer() };
    let mut by_block: Vec<Vec<usize>> = vec![Vec::new(); graph_layers];
    for (ti, t) in model.tensors.iter().enumerate() {
        if let Some(list) = t.block.and_then(|il| by_block.get_mut(il)) {
            list.push(ti);
        }
    }
    for (il, (block, &layer_dev)) in by_block.iter().zip(&r.layers).enumerate() {
        let (attn, ops) = layer_ops(model, r, block);
        if let (Some(a), true) = (attn, model.layer(il).is_some_and(|l| l.has_kv || l.is_recurrent)) {
            if a != layer_dev && a != Device::Cpu && layer_dev != Device::Cpu {
                decode += MISMATCH_SPLITS;
                prompt += MISMATCH_SPLITS;
            }
        }
        for d in ops {
            if d != last_tg {
                decode += 1;
                last_tg = d;
            }
            match (d, prompt_offload, r.first_gpu) {
                (Device::Cpu, true, Some(g)) => {
                    prompt += 1;
                    last_pp = Device::Gpu(g);
                }
                _ => {
                    if d != last_pp {
                        prompt += 1;
                        last_pp = d;
                    }
                }
            }
        }
    }
    if r.output != last_tg {
        decode += 1;
    }
    if r.output != last_pp {
        prompt += 1;
    }
    GraphSplits { prompt, decode }
}
