//! A graph-level simulation of llama.cpp's compute buffers: llama.cpp's graph builders ported to a
//! shape-only model of ggml (`ggml`), ggml's backend scheduler (`sched`: which backend runs each
//! node, the splits and their input copies) and ggml's graph allocator (`alloc`: the best-fit free
//! list that decides each compute buffer's high-water mark). Where it covers an architecture and a
//! configuration, its sizes are llama.cpp's own, to the byte; `compute` falls back to the phase model
//! elsewhere.

// ggml and llama.cpp mix `int64_t` shapes, `size_t` strides and `int32_t` layer indices and op
// parameters; the values here are positive and far below 2^62, as ggml asserts, so the casts between
// them are llama.cpp's own.
#![allow(clippy::cast_sign_loss, clippy::cast_possible_wrap, clippy::cast_possible_truncation)]

pub mod alloc;
pub mod build;
pub mod cuda_opt;
pub mod ggml;
pub mod sched;
#[cfg(test)]
pub mod trace;

use crate::memory::sim::build::{LlmGraph, Ubatch};
use crate::memory::sim::ggml::Ctx;
use crate::memory::{Location, ResolvedContext, ResolvedPlacement, Runner};
use crate::model::{Architecture, ModelDescription};
use crate::settings::{ServerSettings, SplitMode};
use crate::units::Bytes;

/// Why the simulator gives no size for a configuration (the caller falls back to the phase model).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotCovered {
    /// No graph builder has been ported for the architecture.
    #[error("no graph builder for architecture {0:?}")]
    Architecture(String),
    /// A part of the simulation is not ported yet.
    #[error("the simulator has no {0} yet")]
    Missing(&'static str),
    /// The architecture's builder does not cover this variant of the model.
    #[error("{0}")]
    Variant(String),
    /// The architecture's graph is built, but its buffer sizes have not been checked against
    /// llama.cpp's to the byte yet.
    #[error("the simulation of architecture {0:?} is not validated to the byte yet")]
    Unvalidated(String),
    /// The builder made a shape ggml would reject: a bug or an unsupported variant of the model.
    #[error("ggml would reject the graph: {0}")]
    Rejected(String),
}

/// One device's compute buffer as the simulation sizes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceCompute {
    /// The device: the model's GPUs in llama.cpp's order, then the host (the CPU backend's buffer).
    pub location: Location,
    /// `ggml_backend_sched_get_buffer_size`: the buffer's size before llama.cpp's MiB rounding.
    pub bytes: Bytes,
}

/// The micro-batches llama.cpp reserves compute buffers for (src/llama-context.cpp:630-740,
/// `graph_reserve` at 2526-2575), in order: for llama-server the prompt graph, the generation graph
/// (`n_seqs` tokens) and the prompt graph again; for the dry run only the prompt graph, with a whole
/// micro-batch of outputs (`n_outputs_max` 0 becomes `n_batch`, src/llama-context.cpp:252).
pub fn reservations(context: &ResolvedContext, runner: Runner) -> Vec<Ubatch> {
    let n_seqs = i64::from(context.n_seq.max(1));
    let n_tokens = i64::from(context.n_ctx.min(context.n_ubatch));
    // graph_reserve rounds n_tokens up to a multiple of n_seqs (src/llama-context.cpp:2531-2534)
    let round = |n: i64| (n + n_seqs - 1) / n_seqs * n_seqs;
    match runner {
        Runner::FitParamsDryRun => {
            let n = round(n_tokens);
            vec![Ubatch { n_tokens: n, n_seqs, n_outputs: n_tokens }]
        }
        Runner::LlamaServer => {
            let n_outputs_pp = n_tokens.min(i64::from(context.n_outputs)).max(1);
            let pp = Ubatch { n_tokens: round(n_tokens), n_seqs, n_outputs: n_outputs_pp };
            let tg = Ubatch { n_tokens: n_seqs, n_seqs, n_outputs: n_seqs };
            vec![pp, tg, pp]
        }
    }
}

/// Builds llama.cpp's graph for `ubatch` (`llama_model::build_graph`), or says why it cannot.
pub fn build_graph<'a>(
    model: &'a ModelDescription,
    settings: &'a ServerSettings,
    context: &'a ResolvedContext,
    placement: &'a ResolvedPlacement,
    ubatch: Ubatch,
) -> Result<LlmGraph<'a>, NotCovered> {
    build(LlmGraph::new(model, settings, context, placement, ubatch))
}

/// Runs the builder of `g`'s architecture on `g`.
fn build(mut g: LlmGraph<'_>) -> Result<LlmGraph<'_>, NotCovered> {
    let model = g.model;
    match &model.architecture {
        Architecture::Llama if model.n_expert == 0 => build::llama::build(&mut g),
        Architecture::Qwen3 => build::qwen3::build(&mut g),
        Architecture::GptOss => build::openai_moe::build(&mut g),
        Architecture::Qwen3Next => build::qwen3next::build(&mut g),
        Architecture::Deepseek2 => {
            g.build_deepseek2().map_err(|e| NotCovered::Variant(e.to_string()))?;
        }
        other => return Err(NotCovered::Architecture(other.name().to_owned())),
    }
    if let Some(e) = g.ctx.error.take() {
        return Err(NotCovered::Rejected(e));
    }
    Ok(g)
}

/// A GPU as the simulation needs it: what its CUDA buffer type asks of a tensor depends on the
/// device's compute capability (flash attention's F16 scratch, ggml-cuda.cu:903-919).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimGpu {
    /// `ggml_cuda_info().devices[i].cc`, e.g. 890 for an RTX 4090, 1200 for an RTX 5070 Ti.
    pub compute_capability: u32,
}

/// llama.cpp's scheduler for `placement` (src/llama-context.cpp:405-461, 643): the model's GPUs,
/// then the CPU; pipeline parallelism as llama.cpp decides it; the graph callback's pins kept by
/// llama-server's `ggml_backend_sched_reserve`, dropped by the dry run's `reserve_size`.
pub fn sched_config(
    model: &ModelDescription,
    settings: &ServerSettings,
    context: &ResolvedContext,
    placement: &ResolvedPlacement,
    runner: Runner,
) -> sched::SchedConfig {
    let n_gpus = placement.devices.len();
    let pipeline = sched::pipeline_parallel(
        n_gpus,
        placement.n_gpu_layers,
        model.n_layer_all,
        settings.split_mode == SplitMode::Layer,
        context.kv_offload,
        !settings.overrides.is_empty(),
    );
    let mut cfg = sched::SchedConfig::llama(n_gpus, settings.op_offload, pipeline);
    for (b, &gpu) in placement.devices.iter().enumerate() {
        cfg.backends[b] = sched::BackendKind::Cuda(gpu);
    }
    cfg.keep_pins = runner == Runner::LlamaServer;
    cfg
}

/// One reservation's graph built and scheduled: what the graph allocator is given.
pub struct ScheduledGraph<'a> {
    /// The graph as built (its arena holds the scheduler's copies too).
    pub graph: LlmGraph<'a>,
    /// The scheduler's graph copy, with each node's and leaf's backend.
    pub scheduled: sched::Scheduled,
}

/// Builds and schedules the graph of `ubatch` (`graph_reserve` up to the allocator,
/// src/llama-context.cpp:2526-2575).
pub fn schedule_graph<'a>(
    model: &'a ModelDescription,
    settings: &'a ServerSettings,
    context: &'a ResolvedContext,
    placement: &'a ResolvedPlacement,
    ubatch: Ubatch,
    cfg: &sched::SchedConfig,
) -> Result<ScheduledGraph<'a>, NotCovered> {
    let graph = build_graph(model, settings, context, placement, ubatch)?;
    schedule_built(graph, cfg)
}

/// Schedules a built graph.
fn schedule_built<'a>(
    mut graph: LlmGraph<'a>,
    cfg: &sched::SchedConfig,
) -> Result<ScheduledGraph<'a>, NotCovered> {
    let gf = std::mem::take(&mut graph.gf);
    let scheduled =
        sched::schedule(&mut graph.ctx, &gf, cfg).map_err(|e| NotCovered::Rejected(e.to_string()))?;
    graph.gf = gf;
    Ok(ScheduledGraph { graph, scheduled })
}

/// What a built graph depends on besides where the placement puts each weight and each layer: two
/// placements with the same key have the same graph, tensor for tensor, and differ only in the
/// backends of the tensors [`LlmGraph::homes`] and [`LlmGraph::pins`] list.
#[derive(Clone, Debug, PartialEq)]
struct ShapeKey {
    context: ResolvedContext,
    ubatch: Ubatch,
    /// The scheduler's backends.
    devices: Vec<usize>,
    /// Whether the graph callback pins every layer's norm (src/llama-context.cpp:2652-2660).
    full_offload: bool,
    output: Location,
    /// Every copy other than the primary ones (layer duplicates, the tied output): leaves of their own.
    copies: Vec<(usize, Location, crate::memory::TensorCopy)>,
    /// The layers' devices, when layers read duplicates: which copy a layer reads is where it is.
    layers: Option<Vec<Location>>,
}

impl ShapeKey {
    fn new(
        model: &ModelDescription,
        context: &ResolvedContext,
        placement: &ResolvedPlacement,
        ubatch: Ubatch,
    ) -> Self {
        use crate::memory::TensorCopy;
        let copies: Vec<_> = placement
            .tensors
            .iter()
            .filter(|p| p.copy != TensorCopy::Primary)
            .map(|p| (p.tensor, p.location, p.copy))
            .collect();
        let duplicates = copies.iter().any(|c| c.2 == TensorCopy::LayerDuplicate);
        ShapeKey {
            context: context.clone(),
            ubatch,
            devices: placement.devices.clone(),
            full_offload: placement.n_gpu_layers as usize > model.n_layer_all,
            output: placement.output,
            copies,
            layers: duplicates.then(|| placement.layers.clone()),
        }
    }
}

/// A graph as its builder left it, before scheduling, with what moves it to another placement.
#[derive(Debug)]
struct BuiltGraph {
    key: ShapeKey,
    /// The graph's tensors. Each simulation moves them to its placement and schedules them in
    /// place, and gives them back as they were ([`Ctx::rollback`]): a copy per prediction costs
    /// more than the changes do. The lock is never contended (each job has its own shape).
    ctx: std::sync::Mutex<Ctx>,
    gf: ggml::Graph,
    homes: Vec<(ggml::TensorId, build::Home)>,
    pins: Vec<(ggml::TensorId, usize)>,
    /// What the scheduler works out of the graph once.
    prepared: sched::Prepared,
}

impl Clone for BuiltGraph {
    fn clone(&self) -> BuiltGraph {
        BuiltGraph {
            key: self.key.clone(),
            ctx: std::sync::Mutex::new(self.tensors().clone()),
            gf: self.gf.clone(),
            homes: self.homes.clone(),
            pins: self.pins.clone(),
            prepared: self.prepared.clone(),
        }
    }
}

/// A context lent to one simulation: its changes are undone when it goes, even on a panic.
struct Lent<'a>(std::sync::MutexGuard<'a, Ctx>);

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        self.0.rollback();
    }
}

impl BuiltGraph {
    /// Runs the builder of `g`'s architecture on it and keeps the result for `key`.
    fn build(key: &ShapeKey, g: LlmGraph<'_>) -> Result<BuiltGraph, NotCovered> {
        let g = build(g)?;
        Ok(BuiltGraph {
            key: key.clone(),
            prepared: sched::Prepared::new(&g.ctx, &g.gf),
            ctx: std::sync::Mutex::new(g.ctx),
            gf: g.gf,
            homes: g.homes,
            pins: g.pins,
        })
    }

    /// The tensors, as the last simulation gave them back (a panic in one is rolled back before
    /// its lock is released, so a poisoned lock still holds the graph).
    fn tensors(&self) -> std::sync::MutexGuard<'_, Ctx> {
        self.ctx.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` on the graph's tensors with the backends of `placement` (of the same
    /// [`ShapeKey`]), and undoes whatever `f` changed.
    fn simulate_on<R>(
        &self,
        placement: &ResolvedPlacement,
        lookup: &build::Lookup<'_>,
        f: impl FnOnce(&mut Ctx) -> R,
    ) -> R {
        let backend_of = |loc: Location| match loc {
            Location::Gpu(g) => {
                placement.devices.iter().position(|&d| d == g).unwrap_or(placement.devices.len())
            }
            Location::Host => placement.devices.len(),
        };
        let layer = |il: usize| placement.layers.get(il).copied().unwrap_or(Location::Host);
        let mut ctx = self.tensors();
        // every tensor whose backend depends on the placement is set here, so none is left from
        // the last placement
        for &(id, home) in &self.homes {
            let loc = match home {
                build::Home::Weight(i) => lookup.primary(i),
                build::Home::Layer(il) => layer(il),
            };
            ctx.t_mut(id).backend = Some(backend_of(loc) as u8);
        }
        for &(id, il) in &self.pins {
            ctx.t_mut(id).pinned = Some(backend_of(layer(il)) as u8);
        }
        ctx.begin_journal();
        let mut lent = Lent(ctx);
        f(&mut lent.0)
    }
}

/// One reservation simulated: each buffer's size, and the graph when it was built for it.
type Reserved = Result<(Vec<Bytes>, Option<BuiltGraph>), NotCovered>;

/// The graphs a [`crate::memory::Predictor`] has built for one model, by shape: a prediction for
/// another placement of a shape already built (the planner's loop: the same context and
/// micro-batch, weights and layers moved) schedules and allocates the built graph in place (and
/// gives it back as it was) instead of building it again. Keep one cache per model.
#[derive(Clone, Debug, Default)]
pub struct GraphCache {
    graphs: Vec<BuiltGraph>,
    reused: usize,
}

impl GraphCache {
    /// How many graphs a cache keeps (llama-server reserves two shapes per configuration: the
    /// prompt and the generation graph); the oldest goes first.
    pub const CAPACITY: usize = 8;

    /// How many reservations were simulated on a graph from the cache.
    pub fn reused(&self) -> usize {
        self.reused
    }

    fn get(&self, key: &ShapeKey) -> Option<&BuiltGraph> {
        self.graphs.iter().find(|g| g.key == *key)
    }

    fn insert(&mut self, graph: BuiltGraph) {
        if self.graphs.len() >= GraphCache::CAPACITY {
            self.graphs.remove(0);
        }
        self.graphs.push(graph);
    }
}

/// The worker that simulates llama-server's second graph beside the first: one thread, started on
/// first use and kept; `None` when the system will not start it (each graph then runs on the
/// calling thread, one after the other).
fn worker() -> Option<&'static rayon::ThreadPool> {
    static WORKER: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    WORKER
        .get_or_init(|| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .thread_name(|_| "splitplan-sim".to_owned())
                .build()
                .ok()
        })
        .as_ref()
}

/// llama.cpp's compute buffer per device for `model` under `settings`, as `runner` reserves them:
/// every reservation's graph built, scheduled and allocated, each buffer's size the largest
/// reservation's (`ggml_gallocr` only grows a buffer). Devices in placement order, then the host.
/// `gpus` is indexed like [`Location::Gpu`].
pub fn simulate(
    model: &ModelDescription,
    settings: &ServerSettings,
    context: &ResolvedContext,
    placement: &ResolvedPlacement,
    gpus: &[SimGpu],
    runner: Runner,
) -> Result<Vec<DeviceCompute>, NotCovered> {
    simulate_cached(&mut GraphCache::default(), model, settings, context, placement, gpus, runner)
}

/// [`simulate`], reusing the graphs `cache` holds for `model` and keeping the ones it builds.
pub fn simulate_cached(
    cache: &mut GraphCache,
    model: &ModelDescription,
    settings: &ServerSettings,
    context: &ResolvedContext,
    placement: &ResolvedPlacement,
    gpus: &[SimGpu],
    runner: Runner,
) -> Result<Vec<DeviceCompute>, NotCovered> {
    // the architectures whose graphs match llama.cpp's traces node for node and byte for byte (every
    // traced dry run of llama, qwen3, qwen3next, gpt-oss and deepseek2) and whose measured rows it
    // predicts (docs/accuracy.md)
    if !matches!(
        model.architecture,
        Architecture::Llama
            | Architecture::Qwen3
            | Architecture::Qwen3Next
            | Architecture::GptOss
            | Architecture::Deepseek2
    ) {
        return Err(NotCovered::Unvalidated(model.architecture.name().to_owned()));
    }
    let cfg = sched_config(model, settings, context, placement, runner);
    let mut buffers = Vec::with_capacity(placement.devices.len() + 1);
    for &gpu in &placement.devices {
        let cc = gpus.get(gpu).ok_or(NotCovered::Missing("a compute capability for every model GPU"))?;
        buffers.push(alloc::BufferSpec::cuda(gpu, cc.compute_capability));
    }
    // the CPU backend's buffer type: CUDA's pinned host memory when there are GPUs
    // (src/llama-context.cpp:410-418)
    buffers.push(alloc::BufferSpec::host(if placement.devices.is_empty() { "CPU" } else { "CUDA_Host" }));
    // llama-server's third reservation is its first again: the same graph, so the same sizes, and
    // buffers only grow; simulating it once is enough
    let mut distinct: Vec<Ubatch> = Vec::new();
    for ubatch in reservations(context, runner) {
        if !distinct.contains(&ubatch) {
            distinct.push(ubatch);
        }
    }
    let lookup = std::sync::Arc::new(build::Lookup::new(model, placement));
    let keys: Vec<ShapeKey> = distinct.iter().map(|&u| ShapeKey::new(model, context, placement, u)).collect();
    let reserve = |ubatch: Ubatch, key: &ShapeKey| -> Reserved {
        let built = if cache.get(key).is_some() {
            None
        } else {
            // unnamed: names decide nothing the scheduler or the allocator does
            let g = LlmGraph::with_lookup(
                model,
                settings,
                context,
                placement,
                ubatch,
                lookup.clone(),
                Ctx::unnamed(),
            );
            Some(BuiltGraph::build(key, g)?)
        };
        let b = built.as_ref().or_else(|| cache.get(key)).ok_or(NotCovered::Missing("a built graph"))?;
        let sizes = b.simulate_on(placement, &lookup, |ctx| {
            let s = sched::schedule_prepared(ctx, &b.gf, &cfg, &b.prepared)
                .map_err(|e| NotCovered::Rejected(e.to_string()))?;
            alloc::reserve_scheduled(ctx, &s, &buffers).map_err(|e| NotCovered::Rejected(e.to_string()))
        })?;
        Ok((sizes, built))
    };
    // each reservation starts from an empty allocator (ggml_gallocr_reserve_n resets it), so the
    // graphs are independent: the prompt graph and the generation graph are simulated side by side,
    // the second on a worker that stays up between predictions (starting a thread per prediction
    // cost a few percent of one)
    let jobs: Vec<(Ubatch, &ShapeKey)> = distinct.iter().copied().zip(&keys).collect();
    let results: Vec<Reserved> = match (jobs.as_slice(), worker()) {
        ([(u, k), (u2, k2)], Some(pool)) => {
            let mut second = None;
            let first = pool.in_place_scope(|scope| {
                scope.spawn(|_| second = Some(reserve(*u2, k2)));
                reserve(*u, k)
            });
            vec![first, second.unwrap_or(Err(NotCovered::Missing("a reservation that finished")))]
        }
        _ => jobs.iter().map(|&(u, k)| reserve(u, k)).collect(),
    };
    let mut sizes = vec![Bytes::ZERO; buffers.len()];
    for got in results {
        let (got, built) = got?;
        match built {
            Some(b) => cache.insert(b),
            None => cache.reused += 1,
        }
        // ggml_gallocr_reserve_n_impl grows a buffer, never shrinks it (ggml-alloc.c:903-925)
        for (size, new) in sizes.iter_mut().zip(got) {
            *size = (*size).max(new);
        }
    }
    let mut out: Vec<DeviceCompute> = placement
        .devices
        .iter()
        .zip(&sizes)
        .map(|(&gpu, &bytes)| DeviceCompute { location: Location::Gpu(gpu), bytes })
        .collect();
    out.push(DeviceCompute { location: Location::Host, bytes: sizes.last().copied().unwrap_or(Bytes::ZERO) });
    Ok(out)
}
