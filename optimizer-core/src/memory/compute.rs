//! Compute buffers: what llama.cpp's scheduler reserves on each device for the worst-case graph
//! (llama-context.cpp:612-770), predicted from the placement.
//!
//! There is no closed form: the size is the high-water mark of ggml's graph allocator over a graph of
//! thousands of nodes (ggml-alloc.c), after the scheduler has split it across devices and the CUDA
//! backend has added allocation dependencies for its fusions (ggml-cuda.cu:4604-4660). splitplan models
//! it structurally, as the largest of a few *phases* of the graph, each a sum of named parts:
//!
//! - exact parts, computed from llama.cpp's own shapes: the KQ masks (llama-graph.cpp:29-46), the
//!   flash-attention F16 copies of a non-F16 K/V cache (fattn.cu:722-757, fattn-common.cuh:53-85), the
//!   attention scores without flash attention, the op-offload copy of a CPU-resident weight into the
//!   first GPU's buffer (ggml-backend.cpp:1102-1112, 1510-1536), the logits of the outputs reserved,
//!   and the pipeline-parallel copies of every graph input (ggml-backend.cpp:1517-1528, 1554-1575);
//! - calibrated parts: the activations of a phase, in bytes per token of the micro-batch, fitted per
//!   architecture family to llama.cpp's own numbers (fixtures/ground-truth/data/, sessions 1-6), and the
//!   holes earlier phases leave, read off traces of llama.cpp's allocator (fixtures/ground-truth/
//!   alloc_peaks.py); the fit and its error, in-sample and held out, are in docs/accuracy.md.
//!
//! The phases: *attention* (masks + F16 K/V copies or KQ + activations) on a device that holds KV;
//! *offloaded FFN* (masks + the copy of a CPU-resident expert tensor + activations) on the first GPU
//! when routed experts live in system RAM and the micro-batch is at least 32 tokens
//! (`GGML_OP_OFFLOAD_MIN_BATCH`, ggml-cuda.cu:5928); *GPU FFN* (masks + activations) on a device whose
//! layers run their FFN there; *attention of the layers on the CPU* (their K/V copied in from RAM) on the
//! first GPU when op offload brings whole CPU layers' attention there; *output* (logits + activations)
//! on the output device; on the host, the graph inputs or, with `--no-op-offload`, the CPU's expert
//! products. `--no-op-offload` also brings the CPU's expert outputs back to the GPU that holds the
//! layer (attention and output phases). Pipeline
//! parallelism adds three more copies of every input (4 scheduler copies, `GGML_SCHED_MAX_COPIES`),
//! flagged as outputs so that ggml-alloc never frees them: all four copies of the masks are still
//! allocated in the output phase (ggml-backend.cpp:1519-1528).
//!
//! Kernel choice follows an NVIDIA GPU with tensor cores (Turing or newer): the prompt graph's flash
//! attention uses the MMA kernel, which converts a quantized K/V cache to F16 (fattn.cu:623-660).

use serde::Serialize;

use super::context::ResolvedContext;
use super::weights::cuda_tensor_size;
use super::{Location, ResolvedPlacement};
use crate::gguf::GgmlType;
use crate::model::{Architecture, ModelDescription, TensorRole};
use crate::settings::{ServerSettings, SplitMode};
use crate::units::{Bytes, KIB, MIB};

/// How a part of a compute estimate was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComputeBasis {
    /// Computed from llama.cpp's own rules, to the byte.
    Exact,
    /// Fitted to measurements.
    Calibrated,
}

/// One named term of a compute estimate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ComputePart {
    /// What the term is (e.g. "flash-attention F16 K/V copies").
    pub what: String,
    /// Its size.
    pub bytes: Bytes,
    /// How it was obtained.
    pub basis: ComputeBasis,
}

/// A device's compute buffer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum ComputeEstimate {
    /// No model: the size is unknown, not zero.
    NotModelled,
    /// An estimate made of named parts: the parts of the largest phase.
    Estimated {
        /// The phase of the graph that sets the size ("attention", "offloaded FFN", …).
        phase: String,
        /// The parts; their sum is the estimate.
        parts: Vec<ComputePart>,
    },
}

/// The phase of an estimate the graph-level simulation ([`crate::memory::sim`]) made: the whole graph.
pub const SIMULATED_PHASE: &str = "the whole graph, simulated";

impl ComputeEstimate {
    /// A compute buffer of `bytes` from the graph-level simulation: llama.cpp's graph built node for
    /// node, scheduled and allocated as ggml does.
    pub fn simulated(bytes: Bytes) -> ComputeEstimate {
        ComputeEstimate::Estimated {
            phase: SIMULATED_PHASE.to_owned(),
            parts: vec![ComputePart {
                what: "llama.cpp's compute graph, scheduled and allocated as ggml does".to_owned(),
                bytes,
                basis: ComputeBasis::Exact,
            }],
        }
    }

    /// Whether the graph-level simulation made this estimate.
    pub fn is_simulated(&self) -> bool {
        matches!(self, ComputeEstimate::Estimated { phase, .. } if phase == SIMULATED_PHASE)
    }

    /// The estimate, or `None` when not modelled.
    pub fn bytes(&self) -> Option<Bytes> {
        match self {
            ComputeEstimate::NotModelled => None,
            ComputeEstimate::Estimated { parts, .. } => Some(parts.iter().map(|p| p.bytes).sum()),
        }
    }
}

/// Activation sizes of one architecture family, in bytes per token of the micro-batch unless noted.
/// Fitted to the ground truth of sessions 1-6 (2x H200, llama.cpp 11434) and traces of its allocator;
/// docs/accuracy.md lists the rows and the error left.
#[derive(Clone, Copy, Debug)]
struct Activations {
    /// Attention phase on a GPU other than the first.
    attn: u64,
    /// From this many tokens on, `attn_beyond` per further token (gpt-oss grows slower past 512).
    attn_knee: u64,
    attn_beyond: u64,
    /// Attention phase on the first GPU (which also receives the op-offload copies).
    attn_first: u64,
    /// Attention phase without flash attention, besides KQ, first GPU / others.
    attn_no_fa_first: u64,
    attn_no_fa: u64,
    /// How many KQ score matrices are live at once without flash attention on a GPU other than the
    /// first (2 for gpt-oss: its soft_max with attention sinks is not in place).
    kq_copies_other: u64,
    /// Offloaded-FFN phase when no layer of the first GPU has its experts in RAM.
    ffn_offload_remote: u64,
    /// Offloaded-FFN phase when some of its layers do, after layers with GPU experts.
    ffn_offload_local: u64,
    /// Offloaded-FFN phase when a layer of this GPU has some expert tensors here and some in RAM.
    ffn_offload_split: u64,
    /// When the first GPU's first layer has its experts in RAM and the expert tensors differ in
    /// size, two copies stay allocated (the allocator cannot reuse the smaller hole): a constant plus
    /// this per token, and the attention phase keeps one copy.
    ffn_offload_first_const: u64,
    ffn_offload_first: u64,
    attn_with_copy: u64,
    /// FFN phase of layers whose FFN runs on this GPU (routed experts on the GPU, or a dense FFN);
    /// 0 where it never sets the size.
    ffn_gpu: u64,
    /// The FFN phase's activations are `3 × n_ff × 4 + 4 × n_embd × 4` bytes per token (dense models).
    ffn_gpu_from_n_ff: bool,
    /// Output phase on a GPU other than the only one, in multiples of `n_embd × 4` bytes.
    out_embd_rows: u64,
    /// Output phase extra when the output GPU's last layer runs its experts there and other
    /// experts live in RAM (qwen3next).
    out_last_layer: u64,
    /// The masks stay live through the output phase on a single GPU.
    single_gpu_masks_at_output: bool,
    /// Pipeline parallelism: extra `n_embd × 4`-byte rows per token besides the input copies, on the
    /// output GPU and the others.
    pp_rows_output: u64,
    pp_rows: u64,
    /// Pipeline parallelism, output phase: `n_embd × 4`-byte rows per token besides the logits and
    /// the four copies of the masks (they replace `out_embd_rows` and `pp_rows_output` there).
    pp_out_rows: u64,
    /// Attention phase on a GPU other than the first whose attention layers read their K/V cache from
    /// another GPU: halves of one layer's K/V copy live at the peak (0: not modelled for the family),
    /// and the activations per token that go with it (they replace `attn`/`attn_beyond` there).
    remote_kv_halves: u64,
    remote_kv_attn: u64,
    /// Offloaded-FFN phase when whole MoE layers run on the CPU (`-ngl` below every layer): their
    /// dense matmuls are op-offloaded too, and their activations copied in.
    ffn_offload_cpu_layers: u64,
    /// `--no-op-offload` with routed experts in RAM: the CPU's expert outputs `[n_embd, n_expert_used,
    /// n_tokens]` come back to the GPU that holds the layer (the weighted sum runs there, next to the
    /// router), and its weighted copy is allocated beside them. Extra bytes per token in the attention
    /// and the output phases of such a GPU, in hundredths of one expert-output row (`n_embd ×
    /// n_expert_used × 4` bytes).
    no_op_attn: u64,
    no_op_out: u64,
}

const fn k(n: u64) -> u64 {
    n * KIB
}

/// qwen3next / qwen35 / qwen35moe (Gated DeltaNet hybrids): rows q5-* (Qwen3-Coder-Next UD-Q5_K_XL).
const QWEN3NEXT: Activations = Activations {
    attn: k(104),
    attn_knee: 0,
    attn_beyond: k(104),
    attn_first: k(112),
    attn_no_fa_first: k(84),
    attn_no_fa: k(76),
    kq_copies_other: 1,
    ffn_offload_remote: k(132),
    ffn_offload_local: k(200),
    // the planner's plans (q5-p01a/b, real loads): as ffn_offload_local
    ffn_offload_split: k(200),
    ffn_offload_first_const: 68 * MIB,
    ffn_offload_first: k(52),
    attn_with_copy: k(68),
    ffn_gpu: k(268),
    ffn_gpu_from_n_ff: false,
    out_embd_rows: 3,
    out_last_layer: k(226),
    single_gpu_masks_at_output: false,
    pp_rows_output: 17,
    pp_rows: 12,
    remote_kv_halves: 0,
    remote_kv_attn: 0,
    pp_out_rows: 12,
    // the largest per token left besides the masks, the K/V copies and the expert copy in the allocation
    // traces of q5-d27, q5-h05/h06, q5-t01/t03 and q5-v08/v09 (fixtures/ground-truth/alloc_peaks.py)
    ffn_offload_cpu_layers: k(190),
    // q5-d18, q5-h01 (attention), q5-h02 (output)
    no_op_attn: 130,
    no_op_out: 198,
};

/// gpt-oss (sliding window, MXFP4 experts): rows oss-*.
const GPT_OSS: Activations = Activations {
    // the attention phase of a GPU after the first that reads its own K/V: 448 KiB per token up to 512
    // tokens was the K/V copy of the remote-KV rows in disguise (now `remote_kv_*`): oss-f01-dry, oss-h07,
    // oss-x01/x05 and oss-y01/y02 were 100-196 MiB over with it, and 56 KiB is what they show. Beyond 512
    // tokens only real loads show this phase (a dry run's logits are larger): oss-l03 at -ub 2048, 1,035 MiB
    attn: k(56),
    attn_knee: 512,
    attn_beyond: k(154),
    attn_first: k(112),
    attn_no_fa_first: k(84),
    attn_no_fa: k(76),
    kq_copies_other: 2,
    ffn_offload_remote: k(44),
    ffn_offload_local: k(132),
    // oss-w01 (a planner plan at -ub 2048): the gate and up products and the SwiGLU of the layer's GPU
    // experts, three [n_ff_exp, n_expert_used] f32 rows, around the copy of its ffn_down_exps
    ffn_offload_split: k(185),
    ffn_offload_first_const: 68 * MIB,
    ffn_offload_first: k(52),
    attn_with_copy: k(68),
    // four [n_ff_exp, n_expert_used] f32 rows (4 × 2,880 × 4 × 4 bytes = 180 KiB) and a little: the
    // gate/up products, their biases and the SwiGLU, fitted on oss-d11/d26/d27 CUDA0 (experts on the GPU)
    ffn_gpu: k(185),
    ffn_gpu_from_n_ff: false,
    out_embd_rows: 1,
    out_last_layer: 0,
    single_gpu_masks_at_output: false,
    pp_rows_output: 12,
    pp_rows: 12,
    // one and a half copies of a layer's K/V and 43 KiB per token: fitted on oss-d01/d10/d15/d16 and
    // oss-l01/l02 CUDA1 (q8_0 and F16 caches, 65,536 and 131,072 cells, -ub 64 to 2048)
    remote_kv_halves: 3,
    remote_kv_attn: k(43),
    pp_out_rows: 10,
    // the largest per token left besides the masks, the K/V copies and the expert copy on oss-h03, oss-t01,
    // oss-t02 and oss-v04 (the allocation traces, fixtures/ground-truth/alloc_peaks.py)
    ffn_offload_cpu_layers: k(140),
    // oss-h01 (output); attention as qwen3next
    no_op_attn: 130,
    no_op_out: 250,
};

/// deepseek2 (MLA; GLM-4.7-Flash): rows glm-*.
const DEEPSEEK2: Activations = Activations {
    attn: k(176),
    attn_knee: 0,
    attn_beyond: k(176),
    attn_first: k(176),
    attn_no_fa_first: k(136),
    attn_no_fa: k(136),
    kq_copies_other: 1,
    ffn_offload_remote: k(116),
    ffn_offload_local: k(116),
    ffn_offload_split: k(116),
    ffn_offload_first_const: 68 * MIB,
    ffn_offload_first: k(52),
    attn_with_copy: k(68),
    ffn_gpu: 0,
    ffn_gpu_from_n_ff: false,
    out_embd_rows: 2,
    out_last_layer: 0,
    single_gpu_masks_at_output: true,
    // the output GPU's attention phase with pipeline parallelism shows only in real loads (a dry run's
    // output phase is larger): glm-l03, glm-s2a/b and glm8-wl1 all reserved 756.52 MiB on CUDA1
    pp_rows_output: 4,
    pp_rows: 12,
    remote_kv_halves: 0,
    remote_kv_attn: 0,
    pp_out_rows: 9,
    // the qwen3next term, not refitted: glm8-t05 within the bar, glm8-w05 and glm8-x04 over by up to 100 MiB
    ffn_offload_cpu_layers: k(200),
    // --no-op-offload adds nothing here: glm8-t03, glm8-t04 and glm8-v06 were predicted within the bar
    // without it (the expert outputs come back in place of blocks the output phase no longer needs)
    no_op_attn: 0,
    no_op_out: 0,
};

/// Dense transformers (llama, qwen3, and the fallback for architectures not calibrated): rows q8b-*,
/// l8b-*.
const DENSE: Activations = Activations {
    attn: k(104),
    attn_knee: 0,
    attn_beyond: k(104),
    attn_first: k(112),
    attn_no_fa_first: k(88),
    attn_no_fa: k(88),
    kq_copies_other: 1,
    ffn_offload_remote: k(132),
    ffn_offload_local: k(200),
    // no routed experts in a dense model: never used
    ffn_offload_split: k(200),
    ffn_offload_first_const: 68 * MIB,
    ffn_offload_first: k(52),
    attn_with_copy: k(68),
    ffn_gpu: k(208),
    ffn_gpu_from_n_ff: true,
    out_embd_rows: 1,
    out_last_layer: 0,
    single_gpu_masks_at_output: true,
    pp_rows_output: 12,
    pp_rows: 12,
    remote_kv_halves: 0,
    remote_kv_attn: 0,
    pp_out_rows: 9,
    // whole layers on the CPU: the K/V copies, the masks and the weight copy are all (q8b-t02: 200 MiB
    // of which 199 are those)
    ffn_offload_cpu_layers: k(8),
    // no routed experts: never used
    no_op_attn: 130,
    no_op_out: 250,
};

fn activations(arch: &Architecture) -> (&'static Activations, bool) {
    match arch {
        Architecture::Qwen3Next | Architecture::Qwen35 | Architecture::Qwen35Moe => (&QWEN3NEXT, true),
        Architecture::GptOss => (&GPT_OSS, true),
        Architecture::Deepseek2 => (&DEEPSEEK2, true),
        Architecture::Llama | Architecture::Qwen3 => (&DENSE, true),
        // qwen3moe, gemma3 and unknown architectures: the dense constants with the larger of each MoE
        // family's terms would be safer; until measured, use the qwen3next family (the largest
        // per-token terms of the calibrated MoE families) and say the basis is uncalibrated.
        _ => (&QWEN3NEXT, false),
    }
}

/// Whether the compute terms of `arch` were measured (its own family's constants), not borrowed.
pub(crate) fn calibrated(arch: &Architecture) -> bool {
    activations(arch).1
}

/// What the phase model needs to know about the whole graph, worked out once per prediction.
struct Graph {
    /// Tokens in the worst-case micro-batch (`n_ubatch`).
    tokens: u64,
    /// Outputs reserved: llama-server's `n_outputs`, or the micro-batch for llama-fit-params' dry run.
    outputs: u64,
    flash_attn: bool,
    /// Bytes per mask element: F16 with flash attention, F32 without (llama-graph.cpp:36-37).
    mask_elem: u64,
    /// The model devices (backend order: the first is where op offload goes).
    devices: Vec<usize>,
    /// Pipeline parallelism is on (llama-context.cpp:432-462).
    pipeline: bool,
    /// CUDA sizes of the CPU-resident weights matmuls read (op-offload copies), largest first.
    cpu_weights: Vec<Bytes>,
    /// The routed-expert tensors in RAM come in more than one size.
    cpu_expert_sizes_differ: bool,
    /// Per block: the device of its dense part (attention or recurrent block).
    dense: Vec<Location>,
    /// Per block: whether its routed experts are in RAM / on which GPU.
    experts_in_ram: Vec<bool>,
    experts_on: Vec<Option<Location>>,
    /// Bytes per token of one expert-output row, `[n_embd, n_expert_used]` f32.
    expert_row: u64,
}

fn graph(
    model: &ModelDescription,
    settings: &ServerSettings,
    context: &ResolvedContext,
    placement: &ResolvedPlacement,
) -> Graph {
    let n = model.layers.len();
    let mut dense = placement.layers.clone();
    let mut experts_in_ram = vec![false; n];
    let mut experts_on = vec![None; n];
    let mut cpu_weights = Vec::new();
    let mut expert_sizes = Vec::new();
    for p in &placement.tensors {
        let Some(t) = model.tensors.get(p.tensor) else { continue };
        let matmul = t.dims.iter().filter(|&&d| d > 1).count() >= 2;
        if p.location == Location::Host && matmul && t.role != TensorRole::TokenEmbd {
            cpu_weights.push(cuda_tensor_size(t));
        }
        let Some(b) = t.block.filter(|&b| b < n) else { continue };
        match t.role {
            TensorRole::Experts { .. } if t.dims.len() >= 3 => {
                if p.location == Location::Host {
                    experts_in_ram[b] = true;
                    expert_sizes.push(cuda_tensor_size(t));
                } else {
                    experts_on[b] = Some(p.location);
                }
            }
            TensorRole::Attention(_) | TensorRole::Recurrent(_) if matmul => dense[b] = p.location,
            _ => {}
        }
    }
    cpu_weights.sort_unstable_by(|a, b| b.cmp(a));
    expert_sizes.sort_unstable();
    expert_sizes.dedup();
    let tokens = u64::from(context.n_ubatch);
    let all_offloaded =
        placement.layers.iter().all(|l| *l != Location::Host) && placement.output != Location::Host;
    Graph {
        tokens,
        outputs: u64::from(context.n_outputs.min(context.n_ubatch)),
        flash_attn: context.flash_attn,
        mask_elem: if context.flash_attn { 2 } else { 4 },
        devices: placement.devices.clone(),
        // llama-context.cpp:432-462: several devices, everything offloaded, -sm layer, KV offloaded,
        // no tensor override at all.
        pipeline: placement.devices.len() > 1
            && all_offloaded
            && settings.split_mode == SplitMode::Layer
            && context.kv_offload
            && settings.overrides.is_empty(),
        cpu_weights,
        cpu_expert_sizes_differ: expert_sizes.len() > 1,
        dense,
        experts_in_ram,
        experts_on,
        expert_row: u64::from(model.n_embd) * u64::from(model.n_expert_used) * 4,
    }
}

/// Row bytes of `width` elements of `t` (llama.cpp's `ggml_row_size`), saturating.
fn row(t: GgmlType, width: u64) -> u64 {
    t.row_size(width).unwrap_or(u64::MAX / 4)
}

struct DeviceView {
    masks: Bytes,
    /// F16 copies of one layer's K and V (flash attention with a non-F16 cache).
    f16_kv: Bytes,
    /// One layer's KQ scores (no flash attention).
    kq: Bytes,
    /// K and V of one layer copied from system RAM (`--no-kv-offload`).
    kv_from_host: Bytes,
    has_kv: bool,
}

fn device_view(
    model: &ModelDescription,
    context: &ResolvedContext,
    g: &Graph,
    kv_device: Location,
    on_device: &dyn Fn(usize) -> bool,
) -> DeviceView {
    let t = g.tokens;
    let kv = u64::from(context.kv_size);
    let swa = u64::from(context.swa_size.unwrap_or(context.kv_size));
    let streams = u64::from(context.n_stream);
    let (mut full, mut sliding) = (false, false);
    let (mut f16_kv, mut kq, mut kv_from_host) = (0u64, 0u64, 0u64);
    for (il, layer) in model.layers.iter().enumerate() {
        if !layer.has_kv || !on_device(il) {
            continue;
        }
        let cells = if layer.is_swa { swa } else { kv };
        if layer.is_swa {
            sliding = true;
        } else {
            full = true;
        }
        let k_elems = layer.n_embd_k_gqa.saturating_mul(cells).saturating_mul(streams);
        let v_elems = layer.n_embd_v_gqa.saturating_mul(cells).saturating_mul(streams);
        // MLA: V is a view of K's first kv_lora_rank columns. With the cache in system RAM the scheduler
        // copies the K view and the V view in as two split inputs, each laid out with K's row stride, so
        // V is no longer a view of the converted K: flash attention converts it too (allocation traces,
        // glm8-h01: two 38.25 MiB q8_0 copies and a 156 MiB FLASH_ATTN_EXT at 65,536 cells).
        let mla_rank = model.mla.map(|m| u64::from(m.kv_lora_rank)).filter(|_| layer.n_embd_v_gqa == 0);
        let mla_v_copied = kv_device == Location::Host && mla_rank.is_some();
        if g.flash_attn {
            // fattn-common.cuh:68-81: an F16 copy of K, and of V unless V is a view of K (MLA)
            let mut c = 0;
            if context.type_k != GgmlType::F16 {
                c += Bytes(2 * k_elems).align_up(128).get();
            }
            if context.type_v != GgmlType::F16 && layer.n_embd_v_gqa > 0 {
                c += Bytes(2 * v_elems).align_up(128).get();
            }
            if mla_v_copied && context.type_k != GgmlType::F16 {
                let rank = mla_rank.unwrap_or(0);
                c += Bytes(2 * rank.saturating_mul(cells).saturating_mul(streams)).align_up(128).get();
            }
            f16_kv = f16_kv.max(c);
        } else {
            // llama-graph.cpp:2762-2825: kq = [n_kv, n_tokens/n_stream, n_head, n_stream] f32
            kq = kq.max(4 * cells * t * u64::from(layer.n_head));
        }
        if kv_device == Location::Host {
            let kb = row(context.type_k, layer.n_embd_k_gqa).saturating_mul(cells * streams);
            let vb = if mla_v_copied {
                kb
            } else {
                row(context.type_v, layer.n_embd_v_gqa).saturating_mul(cells * streams)
            };
            kv_from_host = kv_from_host.max(kb + vb);
        }
    }
    // llama-graph.cpp:29-46: [n_kv, n_tokens/n_stream, 1, n_stream] per mask kind
    let masks = (u64::from(full) * kv + u64::from(sliding) * swa) * t * g.mask_elem;
    DeviceView {
        masks: Bytes(masks),
        f16_kv: Bytes(f16_kv),
        kq: Bytes(kq),
        kv_from_host: Bytes(kv_from_host),
        has_kv: full || sliding,
    }
}

struct Phase {
    name: &'static str,
    parts: Vec<ComputePart>,
}

impl Phase {
    fn new(name: &'static str) -> Phase {
        Phase { name, parts: Vec::new() }
    }
    fn exact(mut self, what: &str, bytes: Bytes) -> Phase {
        if bytes > Bytes::ZERO {
            self.parts.push(ComputePart { what: what.to_owned(), bytes, basis: ComputeBasis::Exact });
        }
        self
    }
    fn calibrated(mut self, what: &str, bytes: Bytes) -> Phase {
        if bytes > Bytes::ZERO {
            self.parts.push(ComputePart { what: what.to_owned(), bytes, basis: ComputeBasis::Calibrated });
        }
        self
    }
    fn total(&self) -> Bytes {
        self.parts.iter().map(|p| p.bytes).sum()
    }
}

#[allow(clippy::many_single_char_names)] // g(raph), t(okens), v(iew), p(hase): the formulas read like the source
/// The compute buffer llama.cpp reserves on `device` for `model` with `settings`, given the resolved
/// context and placement. `context.n_outputs` says how many outputs the graph reserves logits for:
/// llama-server's (usually 1) or, for llama-fit-params' dry run, the whole micro-batch.
pub fn compute_buffer(
    model: &ModelDescription,
    settings: &ServerSettings,
    context: &ResolvedContext,
    placement: &ResolvedPlacement,
    device: Location,
) -> ComputeEstimate {
    let g = graph(model, settings, context, placement);
    let (act, calibrated) = activations(&model.architecture);
    let label = |s: &str| if calibrated { s.to_owned() } else { format!("{s} (uncalibrated architecture)") };
    let t = g.tokens;
    let per_token = |b: u64| Bytes(b.saturating_mul(t));
    let embd = u64::from(model.n_embd) * 4;
    if device == Location::Host {
        return host_compute(model, settings, context, placement, &g, embd);
    }
    let Location::Gpu(gpu) = device else { return ComputeEstimate::NotModelled };
    let first = g.devices.first() == Some(&gpu);
    let kv_device = if context.kv_offload { device } else { Location::Host };
    let v = device_view(model, context, &g, kv_device, &|il| {
        if context.kv_offload {
            placement.layers.get(il) == Some(&device)
        } else {
            g.dense.get(il) == Some(&device)
        }
    });
    let mine: Vec<usize> = (0..g.dense.len()).filter(|&il| g.dense[il] == device).collect();
    // A layer's KV cache lives on the device -ngl/-ts give the layer (llama-kv-cache.cpp:217), while -ot can
    // move its attention weights to another GPU: the attention then runs there and the scheduler copies
    // that layer's K and V in as split inputs (ggml-backend.cpp:1510-1536).
    let remote_kv = if context.kv_offload {
        mine.iter()
            .filter(|&&il| model.layers[il].has_kv && placement.layers.get(il).is_some_and(|l| *l != device))
            .map(|&il| {
                let layer = &model.layers[il];
                let cells = u64::from(if layer.is_swa {
                    context.swa_size.unwrap_or(context.kv_size)
                } else {
                    context.kv_size
                }) * u64::from(context.n_stream);
                Bytes(row(context.type_k, layer.n_embd_k_gqa).saturating_mul(cells))
                    + Bytes(row(context.type_v, layer.n_embd_v_gqa).saturating_mul(cells))
            })
            .max()
            .unwrap_or(Bytes::ZERO)
    } else {
        Bytes::ZERO
    };
    let offload = first && settings.op_offload && t >= 32 && !g.cpu_weights.is_empty();
    let copy1 = g.cpu_weights.first().copied().unwrap_or(Bytes::ZERO);
    let copy2 = g.cpu_weights.iter().copied().find(|&b| b < copy1).unwrap_or(Bytes::ZERO);
    // where the op-offloaded layers sit relative to this GPU's own layers (see `Activations`)
    let first_layer_in_ram = mine.first().is_some_and(|&il| g.experts_in_ram[il]);
    let any_in_ram = mine.iter().any(|&il| g.experts_in_ram[il]);
    let split_layer = mine.iter().any(|&il| g.experts_in_ram[il] && g.experts_on[il] == Some(device));
    let two_copies = offload && first_layer_in_ram && g.cpu_expert_sizes_differ;
    // whole layers on the CPU (-ngl below every layer)
    let cpu_layers = g.dense.contains(&Location::Host);
    // --no-op-offload: the expert outputs of this GPU's layers come back from the CPU. Not on the first of
    // several GPUs: in every trace its peak came from its own GPU-expert layers before (q5-d18, q5-h01/h02,
    // oss-h01 CUDA0), where this term would over-predict by up to 208 MiB.
    let expert_row = g.expert_row;
    let first_of_several = first && g.devices.len() > 1;
    let no_op_here = !settings.op_offload && !first_of_several && mine.iter().any(|&il| g.experts_in_ram[il]);
    let no_op = |hundredths: u64| {
        if no_op_here { per_token(expert_row.saturating_mul(hundredths) / 100) } else { Bytes::ZERO }
    };
    let no_op_what = label("expert outputs returned from the CPU (--no-op-offload)");

    let mut phases = Vec::new();
    if v.has_kv || (!context.kv_offload && !mine.is_empty()) {
        let mut p = Phase::new("attention")
            .exact("KQ masks", v.masks)
            .exact("K/V read from system RAM", v.kv_from_host);
        if !first && !context.kv_offload && model.mla.is_some() {
            // MLA with its cache in RAM, on a GPU after the first: the previous layer's copy of the K view
            // is still allocated below the next ones (glm8-h01, glm8-v01 CUDA1: 34 and 69 MiB holes)
            p = p.calibrated(
                &label("the previous layer's K copy, partly live"),
                Bytes(v.kv_from_host.get() / 2),
            );
        }
        if g.flash_attn {
            p = p.exact("flash-attention F16 copies of K/V", v.f16_kv);
            if two_copies {
                p = p
                    .exact("op-offload copy of an expert tensor", copy1)
                    .calibrated(&label("activations"), per_token(act.attn_with_copy));
            } else if first {
                p = p.calibrated(&label("activations"), per_token(act.attn_first));
            } else if act.remote_kv_halves > 0 && remote_kv > Bytes::ZERO {
                // --swa-full: the sliding-window layers' copies are full-size too and one more half of a
                // copy stays live (oss-d07: a 68 MiB hole under the flash-attention node)
                let halves = act.remote_kv_halves + u64::from(settings.swa_full);
                let extra = Bytes(remote_kv.get() / 2 * halves.saturating_sub(2));
                p = p
                    .exact("K/V copied from the GPU that holds the layer's cache", remote_kv)
                    .calibrated(&label("a second K/V copy, partly live"), extra)
                    .calibrated(&label("activations"), per_token(act.remote_kv_attn));
            } else {
                let knee = if act.attn_knee > 0 { t.min(act.attn_knee) } else { t };
                let a = act.attn.saturating_mul(knee) + act.attn_beyond.saturating_mul(t - knee);
                p = p.calibrated(&label("activations"), Bytes(a));
            }
        } else {
            let copies = if first { 1 } else { act.kq_copies_other };
            p = p.exact("KQ scores (no flash attention)", Bytes(v.kq.get().saturating_mul(copies)));
            if let Some(m) = model.mla {
                // MLA without flash attention: V is a transposed view of K, made contiguous for the
                // KQV product, [n_kv, kv_lora_rank] f16 (glm8-y06: 64 MiB at 65,536 cells)
                let cells = u64::from(context.kv_size) * u64::from(context.n_stream);
                p = p.calibrated(
                    &label("V made contiguous (MLA)"),
                    Bytes(2 * u64::from(m.kv_lora_rank) * cells),
                );
            }
            p = p.calibrated(
                &label("activations"),
                per_token(if first { act.attn_no_fa_first } else { act.attn_no_fa }),
            );
        }
        phases.push(p.calibrated(&no_op_what, no_op(act.no_op_attn)));
    }
    // Whole layers on the CPU: with op offload their attention runs on the first GPU too, reading the layer's
    // K and V from system RAM: the scheduler copies them in as split inputs (allocation traces q5-t04,
    // q5-v09: both views of layer 3's cache, then the flash-attention node with its F16 conversions).
    let cpu = (offload && cpu_layers).then(|| {
        device_view(model, context, &g, Location::Host, &|il| {
            placement.layers.get(il) == Some(&Location::Host)
        })
    });
    if let Some(c) = cpu.as_ref().filter(|c| c.has_kv && g.flash_attn) {
        phases.push(
            Phase::new("attention of the layers on the CPU")
                .exact("KQ masks", c.masks)
                .exact("K/V of a layer on the CPU, copied in", c.kv_from_host)
                .exact("flash-attention F16 copies of K/V", c.f16_kv)
                .calibrated(
                    &label("the previous layer's V copy, freed but not reused (F16 cache)"),
                    if c.f16_kv == Bytes::ZERO { Bytes(c.kv_from_host.get() / 2) } else { Bytes::ZERO },
                )
                .calibrated(
                    // as with -nkvo on a later GPU (glm8-y05: -80 MiB without it)
                    &label("the previous layer's K copy, partly live (MLA)"),
                    if model.mla.is_some() { Bytes(c.kv_from_host.get() / 2) } else { Bytes::ZERO },
                )
                .calibrated(&label("activations"), per_token(act.attn_first)),
        );
    }
    if offload {
        // With --no-kv-offload the attention of every layer reads its K/V from system RAM: the scheduler
        // copies them in as split inputs, allocated at the start of their split (ggml-backend.cpp:1654-1672).
        // Whether ggml-alloc can reuse that block for the expert copy depends on the order of the splits;
        // q5-d69 (-112 MiB without it, +28 with it) says it cannot always, so it is counted here too: a
        // conservative term, the exact overlap is not modelled.
        // The K/V copies of a layer on the CPU are freed before its experts run, but the expert copy does
        // not fit the hole they leave (the same traces): counted as for --no-kv-offload.
        let (masks, kv_what, kv) = match &cpu {
            Some(c) if c.kv_from_host > v.kv_from_host => {
                (v.masks.max(c.masks), "K/V of a layer on the CPU, copied in", c.kv_from_host)
            }
            _ => (v.masks, "K/V read from system RAM (--no-kv-offload)", v.kv_from_host),
        };
        let mut p = Phase::new("offloaded FFN")
            .exact("KQ masks", masks)
            .exact(kv_what, kv)
            .exact("op-offload copy of a CPU-resident weight", copy1);
        p = if two_copies {
            p.exact("op-offload copy kept by fragmentation", copy2).calibrated(
                &label("activations"),
                Bytes(act.ffn_offload_first_const) + per_token(act.ffn_offload_first),
            )
        } else if cpu_layers {
            p.calibrated(
                &label("activations of the layers on the CPU"),
                per_token(act.ffn_offload_cpu_layers),
            )
        } else if split_layer {
            // a layer whose experts are partly on this GPU (the planner's -ot of one expert tensor): its
            // GPU experts' activations are live around the copy of the one in RAM (oss-w01: the gate and
            // up products freed as holes under the copy of ffn_down_exps)
            p.calibrated(&label("activations"), per_token(act.ffn_offload_split))
        } else if any_in_ram {
            p.calibrated(&label("activations"), per_token(act.ffn_offload_local))
        } else {
            p.calibrated(&label("activations"), per_token(act.ffn_offload_remote))
        };
        phases.push(p);
    }
    let ffn_here = mine.iter().any(|&il| g.experts_on[il] == Some(device) || !model.layers[il].has_experts);
    // dense models: the gate and up products and the SwiGLU, [n_ff] f32 each, and four n_embd rows; the
    // fitted 208 KiB of Qwen3-8B is this formula, and it holds for Llama-3.1-8B's larger n_ff (l8b-w01)
    let ffn_gpu = if act.ffn_gpu_from_n_ff {
        let n_ff = mine.iter().map(|&il| u64::from(model.layers[il].n_ff)).max().unwrap_or(0);
        3 * n_ff * 4 + 4 * embd
    } else {
        act.ffn_gpu
    };
    if act.ffn_gpu > 0 && ffn_here {
        // the masks (copied in at this GPU's first attention layer) are live through this phase only
        // if an FFN of this GPU runs after that layer
        let first_kv =
            (0..model.layers.len()).find(|&il| model.layers[il].has_kv && placement.layers[il] == device);
        let last_ffn = mine
            .iter()
            .copied()
            .rev()
            .find(|&il| g.experts_on[il] == Some(device) || !model.layers[il].has_experts);
        let masks_live = matches!((first_kv, last_ffn), (Some(a), Some(b)) if a <= b);
        phases.push(
            Phase::new("FFN")
                .exact("KQ masks", if masks_live { v.masks } else { Bytes::ZERO })
                .calibrated(&label("activations"), per_token(ffn_gpu)),
        );
    }
    if placement.output == device {
        let logits = Bytes(4 * model.n_vocab * g.outputs);
        let mut p = Phase::new("output").exact("logits", logits);
        if g.pipeline {
            // the pipeline-parallel copies of the graph's inputs are flagged as outputs so that
            // ggml-alloc never frees them, and are allocated first as leafs (ggml-backend.cpp:1519-1528,
            // 1704-1729): all four copies of the masks are still allocated at the output, unlike
            // without pipeline parallelism, where the masks are dead by then
            p = p.exact("KQ masks, 4 pipeline-parallel copies", Bytes(4 * v.masks.get())).calibrated(
                &label("activations and pipeline-parallel input copies"),
                per_token(act.pp_out_rows * embd),
            );
        } else if g.devices.len() == 1 {
            // not when layers run on the CPU (l8b-v03, q8b-d07: the masks are dead by the output)
            if act.single_gpu_masks_at_output && !cpu_layers {
                p = p.exact("KQ masks", v.masks);
            }
            p = p.calibrated(&label("activations"), per_token(4 * embd));
            // the last layer's routed experts run here (on the GPU, or op-offloaded from RAM) and no flash-
            // attention conversion buffer (F16 cache) made room for them below: the logits land above its
            // weighted expert outputs (q5-w04: a 320 MiB hole under them at -ub 4096; with a quantized cache,
            // q5-d40, oss-d13, glm4-d02, the logits fit below)
            let last = g.dense.len().checked_sub(1);
            let no_conversion = context.type_k == GgmlType::F16 && context.type_v == GgmlType::F16;
            let last_experts_here = no_conversion
                && last.is_some_and(|il| {
                    model.layers[il].has_experts
                        && (g.experts_on[il] == Some(device) || (g.experts_in_ram[il] && offload))
                });
            if last_experts_here {
                p = p.calibrated(&label("the last layer's weighted expert outputs"), per_token(expert_row));
            }
        } else {
            p = p.calibrated(&label("activations"), per_token(act.out_embd_rows * embd));
            let last_full =
                mine.last().is_some_and(|&il| il + 1 == g.dense.len() && g.experts_on[il] == Some(device));
            if last_full && g.experts_in_ram.iter().any(|&r| r) {
                p = p.calibrated(&label("last layer's expert activations"), per_token(act.out_last_layer));
            }
        }
        phases.push(p.calibrated(&no_op_what, no_op(act.no_op_out)));
    }
    if g.pipeline {
        // the output phase already holds the four copies of the masks (above)
        let rows = if placement.output == device { act.pp_rows_output } else { act.pp_rows };
        phases = phases
            .into_iter()
            .map(|p| {
                if p.name == "output" {
                    return p;
                }
                p.exact("pipeline-parallel copies of the masks", Bytes(3 * v.masks.get()))
                    .calibrated(&label("pipeline-parallel input copies"), per_token(rows * embd))
            })
            .collect();
    }
    let Some(best) = phases.into_iter().max_by_key(Phase::total) else {
        return ComputeEstimate::Estimated { phase: "none".to_owned(), parts: Vec::new() };
    };
    ComputeEstimate::Estimated { phase: best.name.to_owned(), parts: best.parts }
}

/// The host (`CUDA_Host`) compute buffer: the graph inputs built on the CPU, every mask once and the
/// token embeddings' rows (llama-context.cpp:405-421); four copies of each with pipeline parallelism.
/// Fitted constants: 4 rows of `n_embd` floats per token (16 with pipeline parallelism… see below),
/// exact on every non-pipeline row of the ground truth.
fn host_compute(
    model: &ModelDescription,
    settings: &ServerSettings,
    context: &ResolvedContext,
    placement: &ResolvedPlacement,
    g: &Graph,
    embd: u64,
) -> ComputeEstimate {
    let t = g.tokens;
    let kv = u64::from(context.kv_size);
    let swa = u64::from(context.swa_size.unwrap_or(0));
    let full = model.layers.iter().any(|l| l.has_kv && !l.is_swa);
    let sliding = model.layers.iter().any(|l| l.has_kv && l.is_swa);
    let masks = Bytes((u64::from(full) * kv + u64::from(sliding) * swa) * t * g.mask_elem);
    let (copies, rows) = if g.pipeline { (4, 10) } else { (1, 4) };
    let part =
        |what: &str, bytes: u64, basis| ComputePart { what: what.to_owned(), bytes: Bytes(bytes), basis };
    let inputs = vec![
        part("KQ masks", masks.get() * copies, ComputeBasis::Exact),
        part("token embeddings and other inputs", rows * embd * t, ComputeBasis::Calibrated),
    ];
    // Without op offload the prompt's expert matmuls of RAM-resident experts run on the CPU: their
    // input row, the gate, up and SwiGLU products and the down product are allocated here (allocation
    // traces q5-d18, q5-h01, q5-h02, oss-h01). The host masks are still live then if some GPU has not yet
    // copied them in, i.e. its first attention comes after the first such layer; attention runs where
    // the layer's K/V cache is, or for gpt-oss where its attention weights (the sinks) are.
    let first_cpu_expert = (0..g.dense.len())
        .find(|&il| g.experts_in_ram[il] && g.dense[il] != Location::Host && !settings.op_offload);
    let Some(first_cpu_expert) = first_cpu_expert else {
        return ComputeEstimate::Estimated { phase: "inputs".to_owned(), parts: inputs };
    };
    let attention_on = |il: usize| {
        if model.architecture == Architecture::GptOss { g.dense[il] } else { placement.layers[il] }
    };
    let masks_live = g.devices.iter().any(|&gpu| {
        let d = Location::Gpu(gpu);
        (0..model.layers.len())
            .find(|&il| model.layers[il].has_kv && attention_on(il) == d)
            .is_some_and(|il| il > first_cpu_expert)
    });
    let ff = u64::from(model.n_ff_exp) * u64::from(model.n_expert_used) * 4;
    let expert_row = g.expert_row;
    let experts = vec![
        part("KQ masks", if masks_live { masks.get() } else { 0 }, ComputeBasis::Exact),
        part(
            "expert activations computed on the CPU (--no-op-offload)",
            (expert_row + 3 * ff + 2 * embd) * t,
            ComputeBasis::Calibrated,
        ),
    ];
    let total = |ps: &[ComputePart]| ps.iter().map(|p| p.bytes).sum::<Bytes>();
    if total(&experts) > total(&inputs) {
        ComputeEstimate::Estimated { phase: "CPU experts".to_owned(), parts: experts }
    } else {
        ComputeEstimate::Estimated { phase: "inputs".to_owned(), parts: inputs }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_sums_its_parts_and_unknown_is_not_zero() {
        assert_eq!(ComputeEstimate::NotModelled.bytes(), None);
        let part = |n| ComputePart { what: "x".into(), bytes: Bytes::new(n), basis: ComputeBasis::Exact };
        let e = ComputeEstimate::Estimated { phase: "attention".into(), parts: vec![part(3), part(4)] };
        assert_eq!(e.bytes(), Some(Bytes::new(7)));
    }
}
