//! ggml's backend scheduler (ggml/src/ggml-backend.cpp:904-2260 of llama.cpp 11434), shape only: which
//! backend runs each node of a graph, where the graph splits, which tensors each split copies in from
//! another backend, and the graph copy (`sched->graph`) with its node and leaf buffer ids that
//! `ggml_backend_sched_reserve` hands to the graph allocator. The compute buffer of a backend is
//! what the allocator makes of that graph copy, so the copies (`CUDA0#inp_pos#0`), the dependency
//! nodes (`inp_pos (view)`) and their order must be llama.cpp's exactly.
//!
//! The backends are llama.cpp's (src/llama-context.cpp:405-425): the model's GPU devices in order,
//! then the CPU, whose buffer type is the first GPU's pinned host buffer (`CUDA_Host`) when there
//! are GPUs. A tensor already in memory (a weight, the KV cache, recurrent state) carries the index
//! of the backend whose buffer holds it ([`Tensor::backend`]); [`Tensor::weight`] says whether that
//! buffer is a weights buffer (`GGML_BACKEND_BUFFER_USAGE_WEIGHTS`, which the scheduler treats
//! specially).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::gguf::GgmlType;
use crate::memory::sim::ggml::{
    Ctx, FLAG_INPUT, FLAG_OUTPUT, Glu, Graph, MAX_SRC, Op, Tensor, TensorId, Unary,
};
use crate::memory::sim::{alloc, cuda_opt};

/// `GGML_SCHED_MAX_BACKENDS` (ggml-backend.cpp:904).
pub const MAX_BACKENDS: usize = 16;
/// `GGML_SCHED_MAX_SPLIT_INPUTS` (ggml-backend.cpp:908): in this build only the initial capacity of
/// a split's input list, which grows as needed; it no longer forces a new split.
pub const MAX_SPLIT_INPUTS: usize = 30;
/// `GGML_SCHED_MAX_COPIES` (ggml-backend.cpp:912): the copies of every input a pipeline-parallel
/// scheduler keeps.
pub const MAX_COPIES: usize = 4;
/// The CUDA device's default `op_offload_min_batch_size` (ggml-cuda.cu:5928, `GGML_OP_OFFLOAD_MIN_BATCH`).
pub const OP_OFFLOAD_MIN_BATCH: i64 = 32;

/// One backend of the scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// CUDA device `i` (`ggml_backend_name`: `CUDA{i}`).
    Cuda(usize),
    /// The CPU backend (always the last, ggml-backend.cpp:2013).
    Cpu,
}

impl BackendKind {
    /// `ggml_backend_name`.
    pub fn name(self) -> String {
        match self {
            BackendKind::Cuda(i) => format!("CUDA{i}"),
            BackendKind::Cpu => "CPU".to_owned(),
        }
    }
}

/// A buffer type (`ggml_backend_buffer_type_t`) as far as the scheduler tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Buft {
    /// `CUDA{i}`: device memory of CUDA device `i`.
    Cuda(usize),
    /// `CUDA_Host`: pinned host memory (a host buffer type).
    CudaHost,
    /// `CPU`: plain host memory.
    Cpu,
}

impl Buft {
    /// `ggml_backend_buft_is_host`.
    pub fn is_host(self) -> bool {
        !matches!(self, Buft::Cuda(_))
    }
}

/// How llama.cpp set up its scheduler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedConfig {
    /// The backends in priority order; the last is the CPU.
    pub backends: Vec<BackendKind>,
    /// `op_offload` (`--no-op-offload` clears it, src/llama-context.cpp:275).
    pub op_offload: bool,
    /// `n_copies`: [`MAX_COPIES`] with pipeline parallelism, else 1 (ggml-backend.cpp:2022).
    pub n_copies: usize,
    /// The CUDA devices' `op_offload_min_batch_size`.
    pub op_offload_min_batch: i64,
    /// Whether the CUDA backend's `graph_optimize` adds its fusion allocation dependencies
    /// (ggml-cuda.cu:4604-4700; `GGML_CUDA_DISABLE_FUSION` turns them off).
    pub cuda_fusion: bool,
    /// Whether the graph callback's `ggml_backend_sched_set_tensor_backend` pins ([`Tensor::pinned`])
    /// hold: `ggml_backend_sched_reserve` (llama-server) keeps them, `ggml_backend_sched_reserve_size`
    /// (llama-fit-params' dry run, src/llama-context.cpp:2569-2571) resets the scheduler first and
    /// drops them (ggml-backend.cpp:2122).
    pub keep_pins: bool,
}

impl SchedConfig {
    /// llama.cpp's scheduler for `n_gpus` model devices (src/llama-context.cpp:405-461, 643): the
    /// GPUs in order, then the CPU.
    pub fn llama(n_gpus: usize, op_offload: bool, pipeline_parallel: bool) -> SchedConfig {
        let mut backends: Vec<BackendKind> = (0..n_gpus).map(BackendKind::Cuda).collect();
        backends.push(BackendKind::Cpu);
        SchedConfig {
            backends,
            op_offload,
            n_copies: if pipeline_parallel { MAX_COPIES } else { 1 },
            op_offload_min_batch: OP_OFFLOAD_MIN_BATCH,
            cuda_fusion: true,
            keep_pins: true,
        }
    }

    /// The buffer type of backend `b` (`sched->bufts[b]`): a GPU's own, and for the CPU the first
    /// GPU's host buffer type when there is a GPU (src/llama-context.cpp:410-418).
    pub fn buft(&self, b: usize) -> Buft {
        match self.backends[b] {
            BackendKind::Cuda(i) => Buft::Cuda(i),
            BackendKind::Cpu if self.backends.len() > 1 => Buft::CudaHost,
            BackendKind::Cpu => Buft::Cpu,
        }
    }

    /// The buffer type of the buffer a resident tensor on backend `b` lives in. Weights on the
    /// CPU are in `CUDA_Host` with GPUs, a KV cache in `CPU` (-nkvo); both are host buffer types,
    /// which is all the scheduler asks of them.
    fn resident_buft(&self, b: usize) -> Buft {
        self.buft(b)
    }

    /// `ggml_backend_supports_buft(backends[b], buft)`: a CUDA device its own memory only
    /// (ggml-cuda.cu:5733, not integrated), the CPU any host buffer (ggml-cpu.cpp:489).
    fn supports_buft(&self, b: usize, buft: Buft) -> bool {
        match self.backends[b] {
            BackendKind::Cuda(i) => buft == Buft::Cuda(i),
            BackendKind::Cpu => buft.is_host(),
        }
    }
}

/// Whether llama.cpp enables pipeline parallelism (src/llama-context.cpp:432-437): more than one
/// device, every layer and the output offloaded, layer split, the KV cache offloaded, no tensor
/// overrides (CUDA devices support async compute and events).
pub fn pipeline_parallel(
    n_devices: usize,
    n_gpu_layers: u32,
    n_layer_all: usize,
    split_mode_layer: bool,
    offload_kqv: bool,
    has_tensor_overrides: bool,
) -> bool {
    n_devices > 1
        && n_gpu_layers as usize > n_layer_all
        && split_mode_layer
        && offload_kqv
        && !has_tensor_overrides
}

/// One split: consecutive nodes of the graph on one backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// The backend that runs it.
    pub backend: usize,
    /// Its first node in the scheduled graph's source (the graph given to [`schedule`]).
    pub i_start: usize,
    /// One past its last node.
    pub i_end: usize,
    /// The tensors copied in from other backends, in order.
    pub inputs: Vec<TensorId>,
}

/// The scheduled graph: `sched->graph` with `node_backend_ids` and `leaf_backend_ids`, and the
/// splits.
#[derive(Clone, Debug)]
pub struct Scheduled {
    /// The graph copy the allocator reserves (nodes with the input copies and dependency nodes,
    /// leafs with the input copies first under pipeline parallelism).
    pub graph: Graph,
    /// The backend (= allocator buffer) of each node of `graph`.
    pub node_backend: Vec<usize>,
    /// The backend of each leaf of `graph`.
    pub leaf_backend: Vec<usize>,
    /// [`alloc::known`] of every tensor of the context after scheduling (the graph's own from the
    /// [`Prepared`] facts, the scheduler's copies and dependencies after them).
    pub known: Vec<u8>,
    /// The splits.
    pub splits: Vec<Split>,
}

impl Scheduled {
    /// `ggml_backend_sched_get_n_splits`.
    pub fn n_splits(&self) -> usize {
        self.splits.len()
    }
}

/// A graph the scheduler cannot place, as ggml would abort on it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SchedError {
    /// `GGML_ASSERT(n_backends <= GGML_SCHED_MAX_BACKENDS)` or an empty backend list or one that
    /// does not end with the CPU.
    #[error("the scheduler takes 1 to {MAX_BACKENDS} backends ending with the CPU, got {0}")]
    Backends(usize),
    /// A pre-allocated tensor whose buffer's backends cannot run its op
    /// (ggml-backend.cpp:1076-1080).
    #[error("pre-allocated tensor {tensor:?} is in a buffer that cannot run its op {op}")]
    Preallocated {
        /// The tensor's name.
        tensor: String,
        /// Its op.
        op: &'static str,
    },
    /// A node no backend supports (ggml-backend.cpp:1436).
    #[error("no backend supports node {node:?} ({op})")]
    Unassigned {
        /// The node's name.
        node: String,
        /// Its op.
        op: &'static str,
    },
}

/// The scheduler's state for one `ggml_backend_sched_split_graph` (`struct ggml_backend_sched`).
/// It reads the graph through its [`Prepared`] facts (a few bytes per tensor, side by side) rather
/// than the tensors themselves, which the passes below would otherwise walk a dozen times.
struct Sched<'c> {
    cfg: &'c SchedConfig,
    prepared: &'c Prepared,
    /// `hv_tensor_backend_ids`, by arena index (`-1`: unassigned), for the tensors the graph had when
    /// scheduling started (the hash tables cover those).
    backend_ids: Vec<i8>,
    /// The backend whose buffer holds each tensor or the tensor it views ([`NOWHERE`]: none): the
    /// placement's part of `tensor->buffer` (or `view_src->buffer`).
    home: Vec<u8>,
    /// `hv_tensor_copies[id][backend][copy]`, flattened.
    copies: Vec<Option<TensorId>>,
    /// Bit `b` of `takes[x]`: backend `b` supports the buffer type of backend `x`'s buffers
    /// (`ggml_backend_supports_buft`).
    takes: [u16; MAX_BACKENDS],
}

/// [`Sched::home`] of a tensor in no buffer.
const NOWHERE: u8 = u8::MAX;

impl Sched<'_> {
    /// `ggml_backend_supports_op(backends[b], op)`, with the placement-independent part of the
    /// answer remembered per graph ([`cuda_supports_op_kind`]; [`cpu_supports_op`] in the facts).
    fn supports_op(&self, ctx: &Ctx, b: usize, op: TensorId) -> bool {
        match self.cfg.backends[b] {
            BackendKind::Cuda(dev) => {
                self.sources_on(dev, op)
                    && self.prepared.op_support.get(op, || cuda_supports_op_kind(ctx, ctx.t(op)))
            }
            BackendKind::Cpu => self.prepared.facts[op.index()] & FACT_CPU_REJECTS == 0,
        }
    }

    /// The start of `ggml_backend_cuda_device_supports_op`: no source is already in another CUDA
    /// device's memory (the only part that depends on where the tensors are).
    fn sources_on(&self, dev: usize, op: TensorId) -> bool {
        self.prepared.srcs(op).iter().all(|&src| match self.own(src) {
            Some(b) => !matches!(self.cfg.resident_buft(b), Buft::Cuda(d) if d != dev),
            None => true,
        })
    }

    /// The backend of `t`: `-1` when it has none, or is a tensor made after scheduling started
    /// (`backend_ids` covers only the tensors before it).
    fn id(&self, t: Option<TensorId>) -> i32 {
        t.and_then(|t| self.backend_ids.get(t.index()).copied()).map_or(-1, i32::from)
    }

    fn set(&mut self, t: TensorId, b: i32) {
        // at most MAX_BACKENDS
        self.backend_ids[t.index()] = b as i8;
    }

    fn copy_slot(&self, t: TensorId, backend: usize, copy: usize) -> usize {
        (t.index() * self.cfg.backends.len() + backend) * self.cfg.n_copies + copy
    }

    /// The backend whose buffer `t` (or its view source) is in, if it is pre-allocated.
    fn home(&self, t: TensorId) -> Option<usize> {
        let h = self.home[t.index()];
        (h != NOWHERE).then_some(usize::from(h))
    }

    /// The backend whose buffer holds `t` itself (`tensor->buffer` of a tensor in memory; a view's
    /// is its base's, not its own).
    fn own(&self, t: TensorId) -> Option<usize> {
        if self.prepared.facts[t.index()] & FACT_RESIDENT != 0 { self.home(t) } else { None }
    }

    fn view_src(&self, t: TensorId) -> Option<TensorId> {
        self.prepared.view_src[t.index()]
    }

    /// Whether `t` is a weight in memory (a weights buffer's tensor).
    fn is_weight(&self, t: TensorId) -> bool {
        self.prepared.facts[t.index()] & (FACT_RESIDENT | FACT_WEIGHT) == FACT_RESIDENT | FACT_WEIGHT
    }

    /// Whether backend `b` supports the buffer type of backend `x`'s buffers.
    fn takes(&self, b: usize, x: usize) -> bool {
        self.takes[x] & (1 << b) != 0
    }

    /// `ggml_backend_sched_backend_from_buffer` (ggml-backend.cpp:1028-1049).
    fn backend_from_buffer(&self, ctx: &Ctx, tensor: TensorId, op: TensorId) -> i32 {
        let Some(x) = self.home(tensor) else { return -1 };
        // find highest prio backend that supports the buffer type and the op
        for b in 0..self.cfg.backends.len() {
            if self.takes(b, x) && self.supports_op(ctx, b, op) {
                return b as i32;
            }
        }
        -1
    }

    /// `ggml_backend_sched_backend_id_from_cur` (ggml-backend.cpp:1061-1125).
    fn backend_id_from_cur(&self, ctx: &Ctx, tensor: TensorId) -> Result<i32, SchedError> {
        let facts = self.prepared.facts[tensor.index()];
        // assign pre-allocated nodes to their backend
        if facts & FACT_RESIDENT != 0 {
            let b = self.backend_from_buffer(ctx, tensor, tensor);
            if b != -1 {
                return Ok(b);
            }
        }
        // view_src
        if let Some(v) = self.view_src(tensor) {
            let b = self.backend_from_buffer(ctx, v, tensor);
            if b != -1 {
                return Ok(b);
            }
        }
        if self.home(tensor).is_some() {
            // since the tensor is pre-allocated, it cannot be moved to another backend
            let op = ctx.t(tensor).op.desc();
            return Err(SchedError::Preallocated { tensor: ctx.name(tensor).to_owned(), op });
        }
        // graph input
        if facts & FACT_INPUT != 0 {
            return Ok(self.cfg.backends.len() as i32 - 1);
        }
        // operations with weights are preferably run on the same backend as the weights; ROPE and
        // FLASH_ATTN_EXT are skipped (their small rope-freqs / sinks tensors should not choose)
        if facts & FACT_ROPE_OR_FA != 0 {
            return Ok(-1);
        }
        let n = self.cfg.backends.len();
        for &src in self.prepared.srcs(tensor) {
            if self.is_weight(src) {
                let src_backend = self.backend_from_buffer(ctx, src, tensor);
                // check if a backend with higher prio wants to offload the op
                let host = self.own(src).is_some_and(|b| self.cfg.resident_buft(b).is_host());
                if self.cfg.op_offload && src_backend == n as i32 - 1 && host {
                    for b in 0..n - 1 {
                        if self.supports_op(ctx, b, tensor) && offload_op(self.cfg, b, ctx.t(tensor)) {
                            return Ok(b as i32);
                        }
                    }
                }
                return Ok(src_backend);
            }
        }
        Ok(-1)
    }

    /// `ggml_backend_sched_buffer_supported` (ggml-backend.cpp:1177-1196).
    fn buffer_supported(&self, t: TensorId, b: usize) -> bool {
        let x = if let Some(x) = self.home(t) {
            Some(x)
        } else {
            // see if the tensor already has a backend assigned, and use the buffer type of that backend
            let mut id = self.id(Some(t));
            if id == -1 {
                id = self.id(self.view_src(t));
            }
            (id != -1).then_some(id as usize)
        };
        x.is_some_and(|x| self.takes(b, x))
    }

    /// `ggml_backend_sched_set_if_supported` (ggml-backend.cpp:1198-1203).
    fn set_if_supported(&mut self, ctx: &Ctx, node: TensorId, b: usize) {
        if self.supports_op(ctx, b, node) {
            self.set(node, b as i32);
        }
    }
}

/// `ggml_backend_sched_split_graph` (ggml-backend.cpp:1206-1745) on a freshly reset scheduler, as
/// `ggml_backend_sched_reserve` calls it (ggml-backend.cpp:2131-2146): assigns every node and leaf
/// a backend, splits the graph and builds the graph copy with the split inputs' copies. Node
/// sources that read another backend's tensor are redirected to the copy in `ctx`, as ggml does, so
/// `graph` must not be scheduled twice.
pub fn schedule(ctx: &mut Ctx, graph: &Graph, cfg: &SchedConfig) -> Result<Scheduled, SchedError> {
    let prepared = Prepared::new(ctx, graph);
    schedule_prepared(ctx, graph, cfg, &prepared)
}

/// What the scheduler needs to know of a graph that does not depend on where its tensors are, so
/// that a graph scheduled for many placements works it out once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// [`cuda_opt::use_counts`]: from before the sources are redirected to the split inputs' copies.
    pub use_counts: Vec<u32>,
    /// The nodes whose backend the first pass can find (`ggml_backend_sched_backend_id_from_cur`):
    /// those in a buffer or viewing one, the graph inputs, and those with a weight among their
    /// sources. For every other node it finds none, wherever the tensors are.
    pub placed_nodes: Vec<TensorId>,
    /// What the backends answer of each tensor's op, its types and shapes, as far as asked.
    op_support: OpSupport,
    /// The tensors the graph callback pins to a backend ([`crate::memory::sim::ggml::Tensor::pinned`]:
    /// which ones does not depend on the placement, only the backend).
    pinned: Vec<TensorId>,
    /// The graph's nodes that are not views (the passes that skip views walk these), and their
    /// positions among the nodes.
    op_nodes: Vec<TensorId>,
    op_positions: Vec<u32>,
    /// `FACT_*` of each tensor, by arena index.
    facts: Vec<u8>,
    /// `view_src` of each tensor, by arena index.
    view_src: Vec<Option<TensorId>>,
    /// Each tensor's sources that are set, in order (`srcs[src_start[i]..src_start[i + 1]]`), and
    /// the slot of `src` each came from.
    src_start: Vec<u32>,
    srcs: Vec<TensorId>,
    src_slot: Vec<u8>,
    /// The tensors in memory or viewing one, each with the tensor in memory.
    buffered: Vec<(TensorId, TensorId)>,
    /// CUDA's `graph_optimize` of the splits seen so far.
    optimized: OptMemo,
}

/// [`Prepared::facts`]: the allocator's [`alloc::known`] (the tensor is in memory, a view, a graph
/// input, a graph output) in the low bits, ...
const FACT_KNOWN: u8 = alloc::KNOWN_RESIDENT | alloc::KNOWN_VIEW | alloc::KNOWN_INPUT | alloc::KNOWN_OUTPUT;
const FACT_RESIDENT: u8 = alloc::KNOWN_RESIDENT;
const FACT_INPUT: u8 = alloc::KNOWN_INPUT;
/// ... its buffer is a weights buffer (`weight`), ...
const FACT_WEIGHT: u8 = 16;
/// ... its op is ROPE or FLASH_ATTN_EXT (which do not follow their weights), ...
const FACT_ROPE_OR_FA: u8 = 32;
/// ... the CPU backend does not support its op.
const FACT_CPU_REJECTS: u8 = 64;

/// Whether the CUDA backend supports each tensor's op, its types and shapes (the part of
/// `supports_op` that does not depend on the placement), by arena index, worked out when first
/// asked: [`OP_KNOWN_CUDA`], then [`OP_CUDA`] if so. Relaxed atomics, so that a graph's facts
/// stay shareable: each answer is a pure function of the tensor.
#[derive(Debug, Default)]
struct OpSupport(Vec<AtomicU8>);

const OP_KNOWN_CUDA: u8 = 1;
const OP_CUDA: u8 = 2;

impl OpSupport {
    fn new(n: usize) -> OpSupport {
        OpSupport((0..n).map(|_| AtomicU8::new(0)).collect())
    }

    /// `answer()` for `t`, remembered (tensors made after the graph, the scheduler's copies, are
    /// asked every time).
    fn get(&self, t: TensorId, answer: impl FnOnce() -> bool) -> bool {
        let Some(cell) = self.0.get(t.index()) else { return answer() };
        let bits = cell.load(Ordering::Relaxed);
        if bits & OP_KNOWN_CUDA != 0 {
            return bits & OP_CUDA != 0;
        }
        let ok = answer();
        cell.store(OP_KNOWN_CUDA | if ok { OP_CUDA } else { 0 }, Ordering::Relaxed);
        ok
    }
}

impl Clone for OpSupport {
    fn clone(&self) -> OpSupport {
        OpSupport(self.0.iter().map(|c| AtomicU8::new(c.load(Ordering::Relaxed))).collect())
    }
}

/// The answers are a cache: two graphs' facts are equal whatever has been asked of them.
impl PartialEq for OpSupport {
    fn eq(&self, other: &OpSupport) -> bool {
        self.0.len() == other.0.len()
    }
}

impl Eq for OpSupport {}

/// CUDA's `graph_optimize` ([`cuda_opt::graph_optimize`]) of each split seen, by where it starts.
/// What it makes of a split depends only on the split's nodes (where it starts and ends), on which
/// of their sources the scheduler redirected to its copies and on whether the copies are pinned
/// (`n_copies`): everything else it reads (ops, shapes, flags, views, the use counts, which
/// tensors are in memory) is the graph's. Placements that differ elsewhere share the answer (most
/// of a graph's splits stay where they are when a few layers move). A debug build checks every
/// answer it gives against the real thing.
#[derive(Default)]
struct OptMemo(Mutex<OptTable>);

#[derive(Default)]
struct OptTable {
    /// The entries by the split's first node.
    by_start: Vec<Vec<OptEntry>>,
    len: usize,
}

/// One split's `graph_optimize`.
struct OptEntry {
    end: u32,
    n_copies: usize,
    /// The redirected sources: (node position, source slot).
    redirected: Vec<(u32, u8)>,
    /// The split's nodes in CUDA's order.
    nodes: Vec<TensorId>,
    /// The allocation dependencies.
    deps: Vec<(Kept, TensorId)>,
}

/// A tensor an allocation dependency keeps: one of the graph's, or the scheduler's copy of one on
/// the split's backend (its ids differ from one placement to the next).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kept {
    Tensor(TensorId),
    Copy { of: TensorId, copy: usize },
}

/// At most this many splits remembered per graph (then it starts over): some two megabytes, twenty
/// placements with nothing in common of a model whose experts are on the CPU (170 splits each).
const OPT_MEMO_CAPACITY: usize = 1 << 12;

/// The memo is a cache: a clone starts empty.
impl Clone for OptMemo {
    fn clone(&self) -> OptMemo {
        OptMemo::default()
    }
}

impl std::fmt::Debug for OptMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let len = self.0.lock().map_or(0, |t| t.len);
        write!(f, "OptMemo({len} splits)")
    }
}

/// The answers are a cache: two graphs' facts are equal whatever has been remembered.
impl PartialEq for OptMemo {
    fn eq(&self, _: &OptMemo) -> bool {
        true
    }
}

impl Eq for OptMemo {}

impl Prepared {
    /// The facts of `graph`.
    pub fn new(ctx: &Ctx, graph: &Graph) -> Prepared {
        // (a view finds a backend only through a tensor in memory: weights, caches; whether a
        // tensor is in memory does not depend on the placement, only where)
        let resident = |id: TensorId| {
            let t = ctx.t(id);
            t.backend.is_some() || t.view_src.is_some_and(|v| ctx.t(v).backend.is_some())
        };
        let placed = |&id: &TensorId| {
            let t = ctx.t(id);
            t.backend.is_some()
                || t.view_src.is_some_and(resident)
                || t.flags & FLAG_INPUT != 0
                || t.src.iter().flatten().any(|s| ctx.t(*s).backend.is_some() && ctx.t(*s).weight)
        };
        let n = ctx.tensors.len();
        let mut facts = Vec::with_capacity(n);
        let mut src_start = Vec::with_capacity(n + 1);
        let mut srcs = Vec::with_capacity(n * 2);
        let mut src_slot = Vec::with_capacity(n * 2);
        let mut buffered = Vec::new();
        let mut view_src = Vec::with_capacity(n);
        src_start.push(0);
        for (i, t) in ctx.tensors.iter().enumerate() {
            // (a view is in its base's memory, never in memory of its own: `own` relies on it)
            debug_assert!(t.backend.is_none() || t.view_src.is_none(), "a view with a backend of its own");
            let fact = |yes: bool, bit: u8| if yes { bit } else { 0 };
            facts.push(
                alloc::known(t)
                    | fact(t.weight, FACT_WEIGHT)
                    | fact(matches!(t.op, Op::Rope | Op::FlashAttnExt), FACT_ROPE_OR_FA)
                    | fact(!cpu_supports_op(t), FACT_CPU_REJECTS),
            );
            for (slot, src) in t.src.iter().enumerate() {
                if let Some(src) = *src {
                    srcs.push(src);
                    src_slot.push(slot as u8);
                }
            }
            src_start.push(srcs.len() as u32);
            view_src.push(t.view_src);
            let base = t.view_src.unwrap_or(TensorId::new(i));
            if ctx.t(base).backend.is_some() {
                buffered.push((TensorId::new(i), base));
            }
        }
        let (op_positions, op_nodes) = graph
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| !ctx.t(**n).op.is_view())
            .map(|(i, &n)| (i as u32, n))
            .unzip();
        Prepared {
            use_counts: cuda_opt::use_counts(ctx, graph),
            placed_nodes: graph.nodes.iter().copied().filter(placed).collect(),
            op_support: OpSupport::new(n),
            pinned: (0..n).map(TensorId::new).filter(|&id| ctx.t(id).pinned.is_some()).collect(),
            op_nodes,
            op_positions,
            facts,
            view_src,
            src_start,
            srcs,
            src_slot,
            buffered,
            optimized: OptMemo::default(),
        }
    }

    /// How many splits' `graph_optimize` the facts remember.
    pub fn remembered_splits(&self) -> usize {
        self.optimized.0.lock().map_or(0, |t| t.len)
    }

    /// The sources of `t` that are set, in order.
    fn srcs(&self, t: TensorId) -> &[TensorId] {
        let i = t.index();
        &self.srcs[self.src_start[i] as usize..self.src_start[i + 1] as usize]
    }

    /// [`Prepared::srcs`] with the slot of `src` each is in.
    fn srcs_with_slots(&self, t: TensorId) -> impl Iterator<Item = (usize, TensorId)> + '_ {
        let i = t.index();
        let range = self.src_start[i] as usize..self.src_start[i + 1] as usize;
        self.src_slot[range.clone()].iter().map(|&s| usize::from(s)).zip(self.srcs[range].iter().copied())
    }
}

/// [`schedule`] with the graph's [`Prepared`] facts worked out already.
pub fn schedule_prepared(
    ctx: &mut Ctx,
    graph: &Graph,
    cfg: &SchedConfig,
    prepared: &Prepared,
) -> Result<Scheduled, SchedError> {
    if prepared.facts.len() != ctx.tensors.len() {
        // facts of another graph, or of this one before it grew: work them out again
        return schedule_prepared(ctx, graph, cfg, &Prepared::new(ctx, graph));
    }
    let n_backends = cfg.backends.len();
    if n_backends == 0 || n_backends > MAX_BACKENDS || cfg.backends[n_backends - 1] != BackendKind::Cpu {
        return Err(SchedError::Backends(n_backends));
    }
    let n_copies = cfg.n_copies.max(1);
    let n_tensors = ctx.tensors.len();
    let mut takes = [0u16; MAX_BACKENDS];
    for (x, takes) in takes.iter_mut().enumerate().take(n_backends) {
        for b in 0..n_backends {
            if cfg.supports_buft(b, cfg.resident_buft(x)) {
                *takes |= 1 << b;
            }
        }
    }
    let mut home = vec![NOWHERE; n_tensors];
    for &(t, base) in &prepared.buffered {
        if let Some(b) = ctx.t(base).backend {
            home[t.index()] = b;
        }
    }
    let mut s = Sched {
        cfg,
        prepared,
        // ggml_backend_sched_set_tensor_backend's user assignments survive the reset llama.cpp does
        // before building the graph
        backend_ids: vec![-1; n_tensors],
        home,
        copies: vec![None; n_tensors * n_backends * n_copies],
        takes,
    };
    if cfg.keep_pins {
        for &id in &prepared.pinned {
            if let Some(b) = ctx.t(id).pinned {
                s.set(id, i32::from(b));
            }
        }
    }
    let cur_copy = 0usize;
    let cpu = n_backends as i32 - 1;
    let mut nodes: Vec<TensorId> = graph.nodes.clone();

    // pass 1: assign backends to ops with pre-allocated inputs
    for &leaf in &graph.leafs {
        if s.id(Some(leaf)) == -1 {
            let b = s.backend_id_from_cur(ctx, leaf)?;
            s.set(leaf, b);
        }
    }
    for &node in &prepared.placed_nodes {
        if s.id(Some(node)) == -1 {
            let b = s.backend_id_from_cur(ctx, node)?;
            s.set(node, b);
        }
    }

    // pass 2: expand current backend assignments: gpu down, gpu up (the CPU, the lowest priority
    // backend, is not expanded), then the rest down and up (the four sweeps skip views)
    let ops = &prepared.op_nodes;
    for (down, skip_cpu) in [(true, true), (false, true), (true, false), (false, false)] {
        let mut cur = -1i32;
        let mut sweep = |node: TensorId| {
            let id = s.id(Some(node));
            if id != -1 {
                cur = if skip_cpu && id == cpu { -1 } else { id };
            } else if cur != -1 {
                s.set_if_supported(ctx, node, cur as usize);
            }
        };
        if down {
            ops.iter().copied().for_each(&mut sweep);
        } else {
            ops.iter().rev().copied().for_each(&mut sweep);
        }
    }

    // pass 3: upgrade nodes to higher prio backends with compatible buffer types, and give the
    // remaining unassigned nodes the backend with the most supported inputs (views skipped)
    for &node in ops {
        let id = s.id(Some(node));
        if id == -1 {
            let mut n_supported_best = -1i32;
            for b in 0..n_backends {
                if s.supports_op(ctx, b, node) {
                    let mut n_supported = 0;
                    for &src in prepared.srcs(node) {
                        if (s.id(Some(src)) != -1 || s.id(s.view_src(src)) != -1)
                            && s.buffer_supported(src, b)
                        {
                            n_supported += 1;
                        }
                    }
                    if n_supported > n_supported_best {
                        n_supported_best = n_supported;
                        s.set(node, b as i32);
                    }
                }
            }
        } else {
            let id = id as usize;
            for b in 0..id {
                if cfg.buft(b) == cfg.buft(id) && s.supports_op(ctx, b, node) {
                    let supported = prepared.srcs(node).iter().all(|&src| s.buffer_supported(src, b));
                    if supported {
                        s.set(node, b as i32);
                        break;
                    }
                }
            }
        }
    }

    // pass 4: assign backends to remaining src from dst and view_src
    for &node in &nodes {
        if let Some(v) = s.view_src(node) {
            if s.id(Some(node)) == -1 {
                let b = s.id(Some(v));
                s.set(node, b);
            }
        }
        let cur = s.id(Some(node));
        for &src in prepared.srcs(node) {
            if s.id(Some(src)) == -1 {
                // views are always on the same backend as the source
                let b = if let Some(v) = s.view_src(src) { s.id(Some(v)) } else { cur };
                s.set(src, b);
            }
        }
        // if the node is still unassigned, assign it to the first backend that supports it
        for b in 0..n_backends {
            if s.id(Some(node)) != -1 {
                break;
            }
            s.set_if_supported(ctx, node, b);
        }
        if s.id(Some(node)) == -1 {
            return Err(SchedError::Unassigned {
                node: ctx.name(node).to_owned(),
                op: ctx.t(node).op.desc(),
            });
        }
    }

    // pass 5: split graph, find tensors that need to be copied
    let mut splits: Vec<Split> = Vec::new();
    // the sources redirected to copies, (node position, slot), and where each split's start; and
    // what each tensor made from here on copies: (tensor, backend, copy), by id from `n_tensors`
    let mut redirected: Vec<(u32, u8)> = Vec::new();
    let mut redirected_from: Vec<usize> = vec![0];
    let mut origin: Vec<(TensorId, usize, usize)> = Vec::new();
    {
        let first = prepared.op_positions.first().map(|&i| i as usize);
        let backend = first.map_or(0, |i| s.id(Some(nodes[i])).max(0) as usize);
        splits.push(Split { backend, i_start: 0, i_end: 0, inputs: Vec::new() });
        let mut cur_backend = backend as i32;
        for (&i, &node) in prepared.op_positions.iter().zip(ops) {
            let i = i as usize;
            let node_backend = s.id(Some(node));
            if node_backend == -1 {
                return Err(SchedError::Unassigned {
                    node: ctx.name(node).to_owned(),
                    op: ctx.t(node).op.desc(),
                });
            }
            // check if we should start a new split based on the sources of the current node: a
            // weight on a different and incompatible backend (so that the memory of the
            // previously offloaded weights can be reused)
            let mut need_new_split = false;
            let n_inputs = splits.last().map_or(0, |sp| sp.inputs.len());
            if node_backend == cur_backend && n_inputs > 0 {
                for &src in prepared.srcs(node) {
                    if s.is_weight(src)
                        && s.id(Some(src)) != cur_backend
                        && !s.buffer_supported(src, cur_backend as usize)
                    {
                        need_new_split = true;
                        break;
                    }
                }
            }
            if node_backend != cur_backend || need_new_split {
                if let Some(last) = splits.last_mut() {
                    last.i_end = i;
                }
                splits.push(Split {
                    backend: node_backend as usize,
                    i_start: i,
                    i_end: 0,
                    inputs: Vec::new(),
                });
                redirected_from.push(redirected.len());
                cur_backend = node_backend;
            }
            // find inputs that are not on the same backend
            for (j, src) in prepared.srcs_with_slots(node) {
                let src_backend = s.id(Some(src));
                if src_backend == -1 {
                    let op = ctx.t(src).op.desc();
                    return Err(SchedError::Unassigned { node: ctx.name(src).to_owned(), op });
                }
                if src_backend != cur_backend && !s.buffer_supported(src, cur_backend as usize) {
                    // create a copy of the input in the split's backend
                    let cb = cur_backend as usize;
                    if s.copies[s.copy_slot(src, cb, 0)].is_none() {
                        for c in 0..n_copies {
                            let copy = dup_tensor_layout(ctx, src);
                            origin.push((src, cb, c));
                            if ctx.names {
                                let name = format!("{}#{}#{c}", cfg.backends[cb].name(), ctx.name(src));
                                ctx.set_name(copy, name);
                            }
                            let t = ctx.t_mut(copy);
                            if n_copies > 1 {
                                // prevent ggml-alloc from overwriting the tensor
                                t.flags |= FLAG_INPUT | FLAG_OUTPUT;
                            }
                            let slot = s.copy_slot(src, cb, c);
                            s.copies[slot] = Some(copy);
                        }
                        if let Some(last) = splits.last_mut() {
                            last.inputs.push(src);
                        }
                    }
                    ctx.t_mut(node).src[j] = s.copies[s.copy_slot(src, cb, cur_copy)];
                    redirected.push((i as u32, j as u8));
                }
            }
        }
        let n = nodes.len();
        if let Some(last) = splits.last_mut() {
            last.i_end = n;
        }
    }

    // pass 6: collect all input tensors into graph_inputs (pipeline parallelism only)
    let mut graph_inputs: Vec<TensorId> = Vec::new();
    if n_copies > 1 {
        for &leaf in &graph.leafs {
            if ctx.t(leaf).flags & FLAG_INPUT == 0 {
                continue;
            }
            let b = s.id(Some(leaf));
            if b == -1 {
                let t = ctx.t(leaf);
                return Err(SchedError::Unassigned { node: ctx.name(leaf).to_owned(), op: t.op.desc() });
            }
            let b = b as usize;
            if s.copies[s.copy_slot(leaf, b, 0)].is_none() {
                for c in 0..n_copies {
                    let copy = if c == cur_copy {
                        // use the original tensor as the current copy
                        leaf
                    } else {
                        let copy = dup_tensor_layout(ctx, leaf);
                        origin.push((leaf, b, c));
                        if ctx.names {
                            let name = format!("{}#{}#{c}", cfg.backends[b].name(), ctx.name(leaf));
                            ctx.set_name(copy, name);
                        }
                        copy
                    };
                    // prevent ggml-alloc from overwriting the tensor
                    ctx.t_mut(copy).flags |= FLAG_INPUT | FLAG_OUTPUT;
                    let slot = s.copy_slot(leaf, b, c);
                    s.copies[slot] = Some(copy);
                }
            }
            graph_inputs.push(leaf);
        }
    }

    // the backends' graph_optimize on each split (ggml-backend.cpp:1614-1620): CUDA may reorder a
    // split's nodes and asks to keep some tensors alive until a later node
    // (the kept tensors by the node they wait for: `deps_of[until]` indexes `alloc_deps`)
    let mut alloc_deps: Vec<Vec<TensorId>> = Vec::new();
    let mut deps_of: Vec<u32> = Vec::new();
    let mut memo = prepared.optimized.0.lock().unwrap_or_else(PoisonError::into_inner);
    for (k, sp) in splits.iter().enumerate() {
        if cfg.cuda_fusion && matches!(cfg.backends[sp.backend], BackendKind::Cuda(_)) {
            let end = redirected_from.get(k + 1).copied().unwrap_or(redirected.len());
            let split = Optimized {
                start: sp.i_start,
                end: sp.i_end,
                backend: sp.backend,
                n_copies,
                redirected: &redirected[redirected_from[k]..end],
            };
            // a copy of `of` on this split's backend
            let copy_of = |of: TensorId, copy: usize| s.copies[s.copy_slot(of, sp.backend, copy)];
            let deps = split.optimize(ctx, prepared, &mut memo, &mut nodes, &origin, n_tensors, copy_of);
            for (tensor, until) in deps {
                if deps_of.len() <= until.index() {
                    deps_of.resize(ctx.tensors.len().max(until.index() + 1), u32::MAX);
                }
                match deps_of[until.index()] {
                    u32::MAX => {
                        deps_of[until.index()] = alloc_deps.len() as u32;
                        alloc_deps.push(vec![tensor]);
                    }
                    k => {
                        let keep = &mut alloc_deps[k as usize];
                        if !keep.contains(&tensor) {
                            keep.push(tensor);
                        }
                    }
                }
            }
        }
    }
    drop(memo);

    // the graph copy (ggml-backend.cpp:1640-1740)
    let mut copy = Graph::new();
    // the inputs' copies and the dependency nodes are few beside the nodes
    let n_nodes = nodes.len() + nodes.len() / 8 + 64;
    let n_leafs = graph.leafs.len() * n_copies + 64;
    copy.nodes.reserve(n_nodes);
    copy.leafs.reserve(n_leafs);
    let mut node_backend: Vec<usize> = Vec::with_capacity(n_nodes);
    let mut leaf_backend: Vec<usize> = Vec::with_capacity(n_leafs);
    for sp in &splits {
        // add inputs to the graph copy so that they are allocated by ggml-alloc at the start of the split
        for &input in &sp.inputs {
            let Some(input_cpy) = s.copies[s.copy_slot(input, sp.backend, cur_copy)] else { continue };
            // add a dependency to the input source so that it is not freed before the copy is done
            let dep = ctx.view_tensor(input);
            ctx.t_mut(dep).src[0] = Some(input);
            copy.nodes.push(dep);
            node_backend.push(s.id(Some(input)) as usize);
            // add a dependency to the input copy so that it is allocated at the start of the split
            copy.nodes.push(input_cpy);
            node_backend.push(sp.backend);
        }
        for &node in &nodes[sp.i_start..sp.i_end] {
            copy.nodes.push(node);
            node_backend.push(s.id(Some(node)) as usize);
            // add a dependency node so that the kept tensors are not freed before this node is computed
            let k = deps_of.get(node.index()).copied().unwrap_or(u32::MAX);
            if let Some(keep) = alloc_deps.get(k as usize) {
                for chunk in keep.chunks(MAX_SRC) {
                    let dep = ctx.view_tensor(chunk[0]);
                    for (k, &t) in chunk.iter().enumerate() {
                        ctx.t_mut(dep).src[k] = Some(t);
                    }
                    copy.nodes.push(dep);
                    node_backend.push(sp.backend);
                }
            }
        }
    }
    if n_copies > 1 {
        // add input copies as leafs so that they are allocated first
        for &input in &graph_inputs {
            let b = s.id(Some(input)) as usize;
            for c in 0..n_copies {
                if let Some(t) = s.copies[s.copy_slot(input, b, c)] {
                    copy.leafs.push(t);
                    leaf_backend.push(b);
                }
            }
        }
        for sp in &splits {
            for &input in &sp.inputs {
                for c in 0..n_copies {
                    if let Some(t) = s.copies[s.copy_slot(input, sp.backend, c)] {
                        copy.leafs.push(t);
                        leaf_backend.push(sp.backend);
                    }
                }
            }
        }
    }
    // add leafs from the original graph
    for &leaf in &graph.leafs {
        copy.leafs.push(leaf);
        leaf_backend.push(s.id(Some(leaf)).max(0) as usize);
    }

    // the graph's facts, the inputs pipeline parallelism pins (pass 6), and the tensors made here
    let mut known = Vec::with_capacity(ctx.tensors.len());
    known.extend(prepared.facts.iter().map(|f| f & FACT_KNOWN));
    for &input in &graph_inputs {
        known[input.index()] = alloc::known(ctx.t(input));
    }
    known.extend(ctx.tensors[n_tensors..].iter().map(alloc::known));
    Ok(Scheduled { graph: copy, node_backend, leaf_backend, splits, known })
}

/// A split for CUDA's `graph_optimize`, with what its answer depends on besides the graph.
struct Optimized<'r> {
    start: usize,
    end: usize,
    backend: usize,
    n_copies: usize,
    redirected: &'r [(u32, u8)],
}

impl Optimized<'_> {
    /// [`cuda_opt::graph_optimize`] of the split's nodes (reordered in `nodes`), remembered in
    /// `memo`. `origin` says what each tensor from `n_tensors` on copies, and on which backend;
    /// `copy_of` finds this placement's copy on the split's backend.
    #[allow(clippy::too_many_arguments)]
    fn optimize(
        &self,
        ctx: &Ctx,
        prepared: &Prepared,
        memo: &mut OptTable,
        nodes: &mut [TensorId],
        origin: &[(TensorId, usize, usize)],
        n_tensors: usize,
        copy_of: impl Fn(TensorId, usize) -> Option<TensorId>,
    ) -> Vec<(TensorId, TensorId)> {
        let use_counts: &[u32] = &prepared.use_counts;
        let range = self.start..self.end;
        let found = memo.by_start.get(self.start).and_then(|entries| {
            entries.iter().find(|e| {
                e.end as usize == self.end && e.n_copies == self.n_copies && e.redirected == self.redirected
            })
        });
        let resolved = found.and_then(|e| {
            let deps = e
                .deps
                .iter()
                .map(|&(kept, until)| match kept {
                    Kept::Tensor(t) => Some((t, until)),
                    Kept::Copy { of, copy } => copy_of(of, copy).map(|t| (t, until)),
                })
                .collect::<Option<Vec<_>>>()?;
            Some((e.nodes.as_slice(), deps))
        });
        if let Some((order, deps)) = resolved {
            if cfg!(debug_assertions) {
                let mut fresh = nodes[range.clone()].to_vec();
                let fresh_deps = cuda_opt::graph_optimize(ctx, use_counts, &mut fresh);
                assert_eq!(
                    (order, &deps),
                    (fresh.as_slice(), &fresh_deps),
                    "remembered graph_optimize of {range:?}"
                );
            }
            nodes[range].copy_from_slice(order);
            return deps;
        }
        let deps = cuda_opt::graph_optimize(ctx, use_counts, &mut nodes[range.clone()]);
        // remember it, unless a dependency names a tensor made here that is not a copy on the split's
        // backend (the sources only ever read those)
        let kept = deps
            .iter()
            .map(|&(t, until)| {
                let kept = match t.index().checked_sub(n_tensors) {
                    None => Kept::Tensor(t),
                    Some(i) => {
                        let &(of, backend, copy) = origin.get(i)?;
                        if backend != self.backend {
                            return None;
                        }
                        Kept::Copy { of, copy }
                    }
                };
                (until.index() < n_tensors).then_some((kept, until))
            })
            .collect::<Option<Vec<_>>>();
        if let Some(kept) = kept {
            if memo.len >= OPT_MEMO_CAPACITY {
                *memo = OptTable::default();
            }
            if memo.by_start.len() <= self.start {
                memo.by_start.resize_with(self.start + 1, Vec::new);
            }
            memo.by_start[self.start].push(OptEntry {
                end: self.end as u32,
                n_copies: self.n_copies,
                redirected: self.redirected.to_vec(),
                nodes: nodes[range].to_vec(),
                deps: kept,
            });
            memo.len += 1;
        }
        deps
    }
}

/// `ggml_dup_tensor_layout` (ggml-backend.cpp:889-895): a new tensor of `t`'s type and shape with
/// its strides.
fn dup_tensor_layout(ctx: &mut Ctx, t: TensorId) -> TensorId {
    let nb = ctx.t(t).nb;
    let dup = ctx.dup_tensor(t);
    ctx.t_mut(dup).nb = nb;
    dup
}

/// `ggml_backend_cpu_device_supports_op` (ggml-cpu.cpp:424-487) for the ops and buffer types
/// llama.cpp's graphs use here (no extra buffer types: with GPUs, CPU weights are in `CUDA_Host`).
fn cpu_supports_op(t: &Tensor) -> bool {
    match t.op {
        Op::Cpy | Op::SetRows => !matches!(
            t.ty,
            GgmlType::Iq3Xxs
                | GgmlType::Iq3S
                | GgmlType::Iq2Xxs
                | GgmlType::Iq2Xs
                | GgmlType::Iq2S
                | GgmlType::Iq1S
                | GgmlType::Iq1M
        ),
        _ => true,
    }
}

/// `ggml_is_contiguous_1`.
fn contiguous_1(t: &Tensor) -> bool {
    t.is_contiguous_m_n(1, 4)
}

/// `ggml_backend_cuda_device_supports_op` (ggml-cuda.cu:5252-5731) for the ops of [`Op`], built
/// with CUB (common.cuh:114) and a non-integrated device, less its start ([`Sched::sources_on`]):
/// the op, its types and shapes, the same on every CUDA device and for every placement.
fn cuda_supports_op_kind(ctx: &Ctx, t: &Tensor) -> bool {
    use GgmlType as T;
    let src = |i: usize| t.src[i].map(|s| ctx.t(s));
    let ty0 = src(0).map(|s| s.ty);
    let ty1 = src(1).map(|s| s.ty);
    match t.op {
        Op::Unary(u) => {
            let ok = matches!(
                u,
                Unary::Neg
                    | Unary::Gelu
                    | Unary::Silu
                    | Unary::Relu
                    | Unary::Sigmoid
                    | Unary::Tanh
                    | Unary::Exp
                    | Unary::Softplus
            );
            ok && src(0).is_some_and(|s| s.is_contiguous_m_n(0, 4))
        }
        Op::Glu(g) => {
            if ty0 == Some(T::Bf16) && g == Glu::SwigluOai {
                return false;
            }
            src(0).is_some_and(contiguous_1)
        }
        Op::MulMat | Op::MulMatId => {
            let (Some(a), Some(b)) = (src(0), src(1)) else { return false };
            if a.nb[0] != a.ty.type_size() || b.nb[0] != b.ty.type_size() {
                return false;
            }
            if b.ty == T::F16 && a.ty != T::F16 {
                return false;
            }
            matches!(
                a.ty,
                T::F32
                    | T::F16
                    | T::Q1_0
                    | T::Q2_0
                    | T::Q4_0
                    | T::Q4_1
                    | T::Q5_0
                    | T::Q5_1
                    | T::Q8_0
                    | T::Mxfp4
                    | T::Nvfp4
                    | T::Q2K
                    | T::Q3K
                    | T::Q4K
                    | T::Q5K
                    | T::Q6K
                    | T::Q8K
                    | T::Iq1M
                    | T::Iq1S
                    | T::Iq2S
                    | T::Iq2Xs
                    | T::Iq2Xxs
                    | T::Iq3S
                    | T::Iq3Xxs
                    | T::Iq4Nl
                    | T::Iq4Xs
                    | T::Bf16
            )
        }
        Op::GetRows => match ty0 {
            Some(
                T::F16
                | T::F32
                | T::Bf16
                | T::I32
                | T::Q1_0
                | T::Q2_0
                | T::Q4_0
                | T::Q4_1
                | T::Q5_0
                | T::Q5_1
                | T::Q8_0
                | T::Q2K
                | T::Q3K
                | T::Q4K
                | T::Q5K
                | T::Q6K
                | T::Iq2Xxs
                | T::Iq2Xs
                | T::Iq2S
                | T::Iq3Xxs
                | T::Iq3S
                | T::Iq1S
                | T::Iq1M
                | T::Iq4Xs,
            ) => true,
            // 32-value sub-blocks: the get_rows kernel iterates on QK_K super-blocks
            Some(T::Iq4Nl | T::Mxfp4) => src(0).is_some_and(|s| s.ne[0] % 256 == 0),
            _ => false,
        },
        Op::SetRows => {
            let dst_ok = matches!(
                t.ty,
                T::F32 | T::F16 | T::Bf16 | T::Q4_0 | T::Q4_1 | T::Q5_0 | T::Q5_1 | T::Q8_0 | T::Iq4Nl
            ) && ty0 == Some(T::F32)
                || t.ty == T::F16 && ty0 == Some(T::F16);
            dst_ok && matches!(ty1, Some(T::I64 | T::I32))
        }
        Op::Cpy => {
            let (Some(a), Some(b)) = (src(0), src(1)) else { return false };
            let float = |ty: T| matches!(ty, T::F32 | T::Bf16 | T::F16);
            let pair = |x: T, y: T| a.ty == x && b.ty == y;
            (float(a.ty) && float(b.ty))
                || [T::Q8_0, T::Q4_0, T::Q4_1, T::Q5_0, T::Q5_1]
                    .iter()
                    .any(|&q| pair(T::F32, q) || pair(q, T::F32))
                || pair(T::F32, T::Iq4Nl)
                || pair(T::F32, T::I32)
                || pair(T::I32, T::F32)
                || pair(T::I32, T::I32)
                || (a.ty == b.ty && a.is_contiguous_m_n(0, 4) && b.is_contiguous_m_n(0, 4))
        }
        Op::Repeat => matches!(ty0, Some(T::F32 | T::F16)),
        Op::Concat | Op::Concat2 => {
            let (Some(a), Some(b)) = (src(0), src(1)) else { return false };
            let dim = t.op_params[0];
            if a.ty != b.ty || a.ty != t.ty {
                return false;
            }
            if a.ty.is_quantized() {
                let layout = if dim == 3 {
                    a.is_contiguous_m_n(0, 4) && b.is_contiguous_m_n(0, 4)
                } else {
                    contiguous_to_3(a) && contiguous_to_3(b)
                };
                let blck = a.ty.block_size() as i64;
                layout && a.ne[0] % blck == 0 && b.ne[0] % blck == 0
            } else {
                a.ty.block_size() == 1 && matches!(a.ty.type_size(), 1 | 2 | 4 | 8)
            }
        }
        Op::Norm | Op::RmsNorm | Op::L2Norm => src(0).is_some_and(Tensor::is_contiguous_rows),
        Op::None
        | Op::Reshape
        | Op::View
        | Op::Permute
        | Op::Transpose
        | Op::AddId
        | Op::Sqr
        | Op::Sqrt
        | Op::Clamp
        | Op::Log
        | Op::Dup
        | Op::Cont
        | Op::SoftMax
        | Op::GatedDeltaNet
        | Op::Fill
        // with CUB (common.cuh:114) argsort and top-k take any row
        | Op::ArgSort
        | Op::TopK
        // ggml_cuda_flash_attn_ext_supported: every head size and cache type llama.cpp's auto
        // flash attention leaves on here has a kernel on the GPUs measured
        | Op::FlashAttnExt => true,
        Op::Scale => matches!(ty0, Some(T::F32 | T::Bf16)) && ty0 == Some(t.ty),
        Op::Add | Op::Sub | Op::Mul | Op::Div => {
            let (Some(a), Some(b)) = (ty0, ty1) else { return false };
            if a == T::Bf16 || b == T::Bf16 || t.ty == T::Bf16 {
                return a == T::Bf16 && t.ty == T::Bf16 && matches!(b, T::Bf16 | T::F32);
            }
            matches!(a, T::F32 | T::F16) && matches!(b, T::F32 | T::F16) && matches!(t.ty, T::F32 | T::F16)
        }
        Op::SsmConv => src(0).is_some_and(|s| s.ne[1] % 128 == 0),
        Op::SsmScan => {
            // Mamba2 when src[3] (A) has one element per head
            match (src(0), src(3)) {
                (Some(s0), Some(a)) if a.ne[0] == 1 => {
                    matches!(s0.ne[0], 96 | 128 | 256) && s0.ne[1] % 16 == 0
                }
                (Some(s0), Some(_)) => {
                    t.op_params[0] <= 1
                        && s0.ne[0] == 16
                        && s0.ne[1] == 1
                        && s0.ne[2] % 128 == 0
                        && src(4).is_some_and(|s| s.ne[1] == 1)
                }
                _ => false,
            }
        }
        Op::Rope => src(0).is_some_and(|s| s.nb[0] == s.ty.type_size() && s.is_contiguous_m_n(2, 4)),
        Op::SumRows | Op::Mean => {
            ty0 == Some(T::F32) && t.ty == T::F32 && src(0).is_some_and(Tensor::is_contiguous_rows)
        }
    }
}

/// `ggml_is_contiguous_to_3`.
fn contiguous_to_3(t: &Tensor) -> bool {
    t.is_contiguous_m_n(0, 3)
}

/// `ggml_nrows`.
fn nrows(t: &Tensor) -> i64 {
    t.ne[1] * t.ne[2] * t.ne[3]
}

/// `ggml_backend_offload_op` of a CUDA device (ggml-cuda.cu:5739-5758): the op's batch is at least
/// the minimum batch size. The CPU never offloads.
fn offload_op(cfg: &SchedConfig, b: usize, t: &Tensor) -> bool {
    if cfg.backends[b] == BackendKind::Cpu {
        return false;
    }
    let batch = match t.op {
        Op::GetRows => 0,
        Op::MulMat => t.ne[1],
        Op::MulMatId | Op::Rope => t.ne[2],
        _ => nrows(t),
    };
    batch >= cfg.op_offload_min_batch
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layer of two matmuls: the first weight on CUDA0, the second on the CPU; `n_tokens` rows.
    fn two_matmuls(n_tokens: i64) -> (Ctx, Graph) {
        let mut ctx = Ctx::new();
        let inp = ctx.new_tensor(GgmlType::F32, &[64, n_tokens]);
        ctx.set_name(inp, "inp_embd");
        ctx.set_input(inp);
        let w0 = ctx.new_weight("blk.0.w", GgmlType::Q8_0, &[64, 64], 0);
        let w1 = ctx.new_weight("blk.1.w", GgmlType::Q8_0, &[64, 64], 1);
        let a = ctx.mul_mat(w0, inp);
        ctx.set_name(a, "a");
        let b = ctx.mul_mat(w1, a);
        ctx.set_name(b, "b");
        let mut g = Graph::new();
        g.build_forward_expand(&mut ctx, b);
        (ctx, g)
    }

    fn names(ctx: &Ctx, s: &Scheduled) -> Vec<(String, usize)> {
        s.graph.nodes.iter().zip(&s.node_backend).map(|(&n, &b)| (ctx.name(n).to_owned(), b)).collect()
    }

    #[test]
    fn a_large_batch_offloads_the_cpu_weight_and_copies_the_input() {
        let (mut ctx, g) = two_matmuls(512);
        let s = schedule(&mut ctx, &g, &SchedConfig::llama(1, true, false)).unwrap();
        let want = [
            ("inp_embd (view)", 1),
            ("CUDA0#inp_embd#0", 0),
            ("a", 0),
            ("blk.1.w (view)", 1),
            ("CUDA0#blk.1.w#0", 0),
            ("b", 0),
        ];
        let want: Vec<(String, usize)> = want.iter().map(|&(n, b)| (n.to_owned(), b)).collect();
        assert_eq!(names(&ctx, &s), want);
        // the weight's copy starts a split of its own (the first split's inputs are the graph input)
        assert_eq!(s.n_splits(), 2);
    }

    #[test]
    fn a_small_batch_or_no_op_offload_runs_next_to_the_cpu_weight() {
        for (n_tokens, op_offload) in [(16, true), (512, false)] {
            let (mut ctx, g) = two_matmuls(n_tokens);
            let s = schedule(&mut ctx, &g, &SchedConfig::llama(1, op_offload, false)).unwrap();
            let want: Vec<(String, usize)> = [
                ("inp_embd (view)", 1),
                ("CUDA0#inp_embd#0", 0),
                ("a", 0),
                ("a (view)", 0),
                ("CPU#a#0", 1),
                ("b", 1),
            ]
            .iter()
            .map(|&(n, b)| (n.to_owned(), b))
            .collect();
            assert_eq!(names(&ctx, &s), want, "{n_tokens} tokens, op offload {op_offload}");
        }
    }

    #[test]
    fn pipeline_parallelism_keeps_four_copies_of_every_input_as_leafs() {
        let (mut ctx, g) = two_matmuls(512);
        let s = schedule(&mut ctx, &g, &SchedConfig::llama(1, true, true)).unwrap();
        let leafs: Vec<String> = s.graph.leafs.iter().map(|&l| ctx.name(l).to_owned()).collect();
        assert_eq!(
            leafs,
            [
                "inp_embd",
                "CPU#inp_embd#1",
                "CPU#inp_embd#2",
                "CPU#inp_embd#3",
                "CUDA0#inp_embd#0",
                "CUDA0#inp_embd#1",
                "CUDA0#inp_embd#2",
                "CUDA0#inp_embd#3",
                "CUDA0#blk.1.w#0",
                "CUDA0#blk.1.w#1",
                "CUDA0#blk.1.w#2",
                "CUDA0#blk.1.w#3",
                // ggml's depth-first leaf order
                "blk.1.w",
                "blk.0.w",
                "inp_embd",
            ]
        );
        assert!(s.graph.leafs.iter().take(12).all(|&l| ctx.t(l).flags & FLAG_OUTPUT != 0));
    }
}
