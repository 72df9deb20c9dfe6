//! llama.cpp's graph builders, shape only: `llm_graph_context` (src/llama-graph.h:994-1300,
//! src/llama-graph.cpp) as [`LlmGraph`], with the shared pieces (inputs, norms, attention with the KV
//! cache, FFN and MoE FFN) in this module and its siblings and one file per architecture.
//!
//! A builder adds tensors to [`LlmGraph::ctx`] exactly as llama.cpp adds them to `ctx0`, names them through
//! [`LlmGraph::cb`] as llama.cpp's graph callback does (src/llama-context.cpp:2638-2662), and expands
//! [`LlmGraph::gf`] in the same order, so that the scheduler and allocator simulations see llama.cpp's
//! graph node for node.

pub mod deepseek2;
pub mod ffn;
pub mod qwen3next;
pub mod recurrent;

use crate::memory::sim::ggml::{Ctx, Graph, TensorId};
use crate::memory::{Location, ResolvedContext, ResolvedPlacement};
use crate::model::ModelDescription;
use crate::settings::ServerSettings;

/// The micro-batch a graph is built for (`llama_ubatch` as `graph_reserve` makes it,
/// src/llama-context.cpp:2526-2575).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ubatch {
    /// `n_tokens` (a multiple of `n_seqs`).
    pub n_tokens: i64,
    /// `n_seqs` (`n_seqs_unq` equals it in a reservation).
    pub n_seqs: i64,
    /// `n_outputs`: rows of logits the graph produces.
    pub n_outputs: i64,
}

/// One graph being built: `llm_graph_context`, with the simulation's view of llama.cpp's state.
pub struct LlmGraph<'a> {
    /// The model (hparams and tensors).
    pub model: &'a ModelDescription,
    /// The llama-server settings.
    pub settings: &'a ServerSettings,
    /// The context llama.cpp created from them (cparams, KV sizes).
    pub context: &'a ResolvedContext,
    /// Where every layer and tensor lives.
    pub placement: &'a ResolvedPlacement,
    /// The micro-batch.
    pub ubatch: Ubatch,
    /// The scheduler's backends, in llama.cpp's order: the model's GPU devices, then the CPU
    /// (src/llama-context.cpp backend list). Tensor `backend` / `pinned` fields index this.
    pub backends: Vec<Location>,
    /// `ctx0`.
    pub ctx: Ctx,
    /// `gf`.
    pub gf: Graph,
    /// Weight tensors already created, by model tensor index (a weight is one leaf however often it
    /// is used).
    weights: Vec<Option<TensorId>>,
}

impl<'a> LlmGraph<'a> {
    /// A graph for `ubatch` of `model` under `settings`, with llama.cpp's backend list for `placement`.
    pub fn new(
        model: &'a ModelDescription,
        settings: &'a ServerSettings,
        context: &'a ResolvedContext,
        placement: &'a ResolvedPlacement,
        ubatch: Ubatch,
    ) -> LlmGraph<'a> {
        let mut backends: Vec<Location> = placement.devices.iter().map(|&g| Location::Gpu(g)).collect();
        backends.push(Location::Host);
        LlmGraph {
            model,
            settings,
            context,
            placement,
            ubatch,
            backends,
            ctx: Ctx::new(),
            gf: Graph::new(),
            weights: vec![None; model.tensors.len()],
        }
    }

    /// The scheduler backend index of a location (the CPU backend for the host and for a GPU that
    /// is not one of the model's devices).
    pub fn backend_of(&self, loc: Location) -> usize {
        self.backends.iter().position(|b| *b == loc).unwrap_or(self.backends.len() - 1)
    }

    /// The CPU backend's index (always the last).
    pub fn cpu_backend(&self) -> usize {
        self.backends.len() - 1
    }

    /// The weight `name` as a leaf resident where the placement put it (its primary copy), or `None`
    /// if the model has no such tensor (llama.cpp's optional tensors are null pointers).
    pub fn weight(&mut self, name: &str) -> Option<TensorId> {
        let index = self.model.tensors.iter().position(|t| t.name == name)?;
        if let Some(id) = self.weights[index] {
            return Some(id);
        }
        let t = &self.model.tensors[index];
        let loc = self
            .placement
            .tensors
            .iter()
            .find(|p| p.tensor == index && p.copy == crate::memory::TensorCopy::Primary)
            .map_or(Location::Host, |p| p.location);
        let backend = self.backend_of(loc);
        let ne: Vec<i64> = t.dims.iter().map(|&d| d as i64).collect();
        let id = self.ctx.new_weight(&t.name, t.ggml_type, &ne, backend);
        self.weights[index] = Some(id);
        Some(id)
    }

    /// `blk.{il}.{suffix}`, e.g. `self.layer_weight(3, "attn_q.weight")`.
    pub fn layer_weight(&mut self, il: usize, suffix: &str) -> Option<TensorId> {
        self.weight(&format!("blk.{il}.{suffix}"))
    }

    /// Whether all layers and the output are on GPUs (`model.n_gpu_layers() > n_layer_all`).
    pub fn full_offload(&self) -> bool {
        self.placement.n_gpu_layers as usize > self.model.n_layer_all
    }

    /// The graph callback (src/llama-context.cpp:2638-2662): names `cur` `name-il` (or `name` for
    /// `il < 0`) and, for a micro-batch under 32 tokens or a full offload, pins a layer's `norm` and
    /// `l_last` to that layer's device.
    pub fn cb(&mut self, cur: TensorId, name: &str, il: i32) {
        let full = if il >= 0 { format!("{name}-{il}") } else { name.to_owned() };
        self.ctx.set_name(cur, full);
        if (self.ubatch.n_tokens < 32 || self.full_offload())
            && il >= 0
            && (name == "norm" || name == "l_last")
        {
            if let Some(&loc) = self.placement.layers.get(il as usize) {
                // ggml_backend_supports_op holds for norm / add on every backend llama.cpp uses.
                let b = self.backend_of(loc);
                self.ctx.t_mut(cur).pinned = Some(b);
            }
        }
    }

    /// `ggml_build_forward_expand(gf, t)`.
    pub fn expand(&mut self, t: TensorId) {
        self.gf.build_forward_expand(&mut self.ctx, t);
    }
}
