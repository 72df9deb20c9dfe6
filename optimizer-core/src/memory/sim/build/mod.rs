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
pub mod llama;
pub mod openai_moe;
pub mod qwen3;
pub mod qwen3next;
pub mod recurrent;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use crate::gguf::GgmlType;
use crate::memory::sim::ggml::{Ctx, Graph, TensorId};
use crate::memory::{Location, ResolvedContext, ResolvedPlacement, TensorCopy};
use crate::model::{Architecture, ModelDescription};
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

/// `llm_norm_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormType {
    /// `LLM_NORM`: `ggml_norm`.
    Norm,
    /// `LLM_NORM_RMS`: `ggml_rms_norm`.
    Rms,
}

/// The graph inputs of one KV cache (`llama_kv_cache_context` built by `init_full`, as a reservation
/// sees it): what `build_attn_inp_kv_impl` (src/llama-graph.cpp:2908-2933) and its iSWA sibling
/// (src/llama-graph.cpp:3500-3530) create for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvInputs {
    /// `attn_inp_k_idxs`.
    pub k_idxs: TensorId,
    /// `attn_inp_v_idxs` (none for a K-only, MLA cache).
    pub v_idxs: Option<TensorId>,
    /// `attn_inp_kq_mask`.
    pub kq_mask: TensorId,
    /// `attn_inp_k_rot`: the Hadamard rotation of a quantized K cache.
    pub k_rot: Option<TensorId>,
    /// `attn_inp_v_rot`: the Hadamard rotation of a quantized V cache.
    pub v_rot: Option<TensorId>,
    /// `get_n_kv()`: the whole cache in a reservation (`init_full`, src/llama-kv-cache.cpp:2811-2826).
    pub n_kv: i64,
    /// Whether this is the sliding-window cache.
    pub swa: bool,
}

/// The attention input of a graph: `llm_graph_input_attn_kv` (one cache), `llm_graph_input_attn_k`
/// (one K-only cache, MLA) or `llm_graph_input_attn_kv_iswa` (a base and a sliding-window cache).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnInput {
    /// The cache of the full-attention layers.
    pub base: KvInputs,
    /// The cache of the sliding-window layers, for an iSWA input.
    pub swa: Option<KvInputs>,
}

impl AttnInput {
    /// The inputs of the cache that holds layer `il`.
    pub fn for_layer(&self, is_swa: bool) -> KvInputs {
        match (is_swa, self.swa) {
            (true, Some(swa)) => swa,
            _ => self.base,
        }
    }
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
    /// Other copies of weights already created (per-layer duplicates, the tied output), by model
    /// tensor index and location.
    copies: Vec<(usize, Location, TensorId)>,
    /// Tensor indices by name and where each tensor lives.
    lookup: Arc<Lookup<'a>>,
    /// A reused buffer for `blk.{il}.{suffix}` names.
    key: String,
    /// The tensors whose backend depends on where the placement puts a tensor or a layer (resident
    /// weights, the KV cache, recurrent state), for moving the graph to another placement of the
    /// same shape ([`crate::memory::sim::GraphCache`]).
    pub homes: Vec<(TensorId, Home)>,
    /// The graph callback's pins to a layer's device, by layer.
    pub pins: Vec<(TensorId, usize)>,
    /// The KV cache tensors already created, by layer: (K, V).
    cache: Vec<Option<(TensorId, Option<TensorId>)>>,
}

/// What decides a placement-dependent backend of a graph's tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Home {
    /// The primary copy of model tensor `i`: where the placement puts that tensor.
    Weight(usize),
    /// Layer `il`'s device (its KV cache and recurrent state, with the KV cache offloaded).
    Layer(usize),
}

/// FNV-1a: the tensor-name lookups hash short strings thousands of times per graph, where the
/// standard library's DoS-resistant SipHash costs more than the lookup (the names are the model's
/// own, not an attacker's input to a long-lived table).
#[derive(Clone, Copy, Debug, Default)]
pub struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// What every graph of one model and placement looks up: the model's tensor indices by name and
/// where each tensor's primary copy lives. Built once and shared by a prediction's reservations.
#[derive(Clone, Debug)]
pub struct Lookup<'a> {
    model: &'a ModelDescription,
    /// Made when a graph is built (a cached graph moved to another placement needs only
    /// [`Lookup::primary`]).
    by_name: std::sync::OnceLock<HashMap<&'a str, usize, std::hash::BuildHasherDefault<Fnv>>>,
    /// By model tensor index; the host for tensors the placement does not allocate.
    primary: Vec<Location>,
}

impl<'a> Lookup<'a> {
    /// Where the placement put model tensor `index`'s primary copy.
    pub fn primary(&self, index: usize) -> Location {
        self.primary.get(index).copied().unwrap_or(Location::Host)
    }

    /// The lookup of `model`'s tensors under `placement`.
    pub fn new(model: &'a ModelDescription, placement: &ResolvedPlacement) -> Lookup<'a> {
        let mut primary = vec![Location::Host; model.tensors.len()];
        for p in &placement.tensors {
            if p.copy == TensorCopy::Primary {
                if let Some(slot) = primary.get_mut(p.tensor) {
                    *slot = p.location;
                }
            }
        }
        Lookup { model, by_name: std::sync::OnceLock::new(), primary }
    }

    /// The index of the model tensor named `name`.
    fn index(&self, name: &str) -> Option<usize> {
        let by_name = self.by_name.get_or_init(|| {
            self.model.tensors.iter().enumerate().map(|(i, t)| (t.name.as_str(), i)).collect()
        });
        by_name.get(name).copied()
    }
}

impl<'a> LlmGraph<'a> {
    /// A graph for `ubatch` of `model` under `settings`, with llama.cpp's backend list for `placement`
    /// and ggml's tensor names.
    pub fn new(
        model: &'a ModelDescription,
        settings: &'a ServerSettings,
        context: &'a ResolvedContext,
        placement: &'a ResolvedPlacement,
        ubatch: Ubatch,
    ) -> LlmGraph<'a> {
        let lookup = Arc::new(Lookup::new(model, placement));
        LlmGraph::with_lookup(model, settings, context, placement, ubatch, lookup, Ctx::new())
    }

    /// [`LlmGraph::new`] with a shared [`Lookup`] (of `model` and `placement`) and an empty `ctx`
    /// (named or not, [`Ctx::names`]).
    pub fn with_lookup(
        model: &'a ModelDescription,
        settings: &'a ServerSettings,
        context: &'a ResolvedContext,
        placement: &'a ResolvedPlacement,
        ubatch: Ubatch,
        lookup: Arc<Lookup<'a>>,
        ctx: Ctx,
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
            ctx,
            gf: Graph::new(),
            weights: vec![None; model.tensors.len()],
            copies: Vec::new(),
            lookup,
            key: String::new(),
            homes: Vec::new(),
            pins: Vec::new(),
            cache: vec![None; model.n_layer_all],
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

    /// `n_tokens` of the micro-batch.
    pub fn n_tokens(&self) -> i64 {
        self.ubatch.n_tokens
    }

    /// `hparams.n_layer()`: the blocks the graph runs (NextN/MTP blocks excluded).
    pub fn n_layer(&self) -> usize {
        self.model.n_layer()
    }

    /// `cparams.flash_attn`.
    pub fn flash_attn(&self) -> bool {
        self.context.flash_attn
    }

    fn resident(&mut self, index: usize, loc: Location) -> TensorId {
        let t = &self.model.tensors[index];
        let backend = self.backend_of(loc);
        let mut ne = [1i64; crate::memory::sim::ggml::MAX_DIMS];
        for (n, &d) in ne.iter_mut().zip(&t.dims) {
            *n = d as i64;
        }
        self.ctx.new_weight(&t.name, t.ggml_type, &ne[..t.dims.len().clamp(1, ne.len())], backend)
    }

    /// The weight `name` as a leaf resident where the placement put it (its primary copy), or `None`
    /// if the model has no such tensor (llama.cpp's optional tensors are null pointers).
    pub fn weight(&mut self, name: &str) -> Option<TensorId> {
        let index = self.lookup.index(name)?;
        if let Some(id) = self.weights[index] {
            return Some(id);
        }
        let loc = self.lookup.primary[index];
        let id = self.resident(index, loc);
        self.homes.push((id, Home::Weight(index)));
        self.weights[index] = Some(id);
        Some(id)
    }

    /// The copy of weight `name` at `loc` that llama.cpp made for a layer there (`TENSOR_DUPLICATED`:
    /// `rope_freqs`, the rope factors, models/llama.cpp:62-66), else its primary copy.
    fn weight_copy_at(&mut self, name: &str, loc: Location, kind: TensorCopy) -> Option<TensorId> {
        let index = self.lookup.index(name)?;
        let has_copy =
            self.placement.tensors.iter().any(|p| p.tensor == index && p.copy == kind && p.location == loc);
        if !has_copy {
            return self.weight(name);
        }
        if let Some(&(_, _, id)) = self.copies.iter().find(|(i, l, _)| *i == index && *l == loc) {
            return Some(id);
        }
        let id = self.resident(index, loc);
        self.copies.push((index, loc, id));
        Some(id)
    }

    /// `blk.{il}.{suffix}`, e.g. `self.layer_weight(3, "attn_q.weight")`.
    pub fn layer_weight(&mut self, il: usize, suffix: &str) -> Option<TensorId> {
        let mut key = std::mem::take(&mut self.key);
        key.clear();
        let _ = write!(key, "blk.{il}.{suffix}");
        let id = self.weight(&key);
        self.key = key;
        id
    }

    /// A global tensor every layer shares through its own duplicate (`rope_freqs.weight`), as layer
    /// `il` sees it: the copy in that layer's buffer (llama-model-loader.cpp:1370-1375).
    pub fn layer_shared_weight(&mut self, il: usize, name: &str) -> Option<TensorId> {
        let loc = self.placement.layers.get(il).copied().unwrap_or(Location::Host);
        self.weight_copy_at(name, loc, TensorCopy::LayerDuplicate)
    }

    /// `model.output`: `output.weight`, or with tied embeddings `token_embd.weight`, in its own copy
    /// on the output device when llama.cpp made one (llama-model-loader.cpp:1174-1181).
    pub fn output_weight(&mut self) -> Option<TensorId> {
        if self.lookup.index("output.weight").is_some() {
            return self.weight("output.weight");
        }
        let loc = self.placement.output;
        self.weight_copy_at("token_embd.weight", loc, TensorCopy::TiedOutput)
    }

    /// Whether all layers and the output are on GPUs (`model.n_gpu_layers() > n_layer_all`).
    pub fn full_offload(&self) -> bool {
        self.placement.n_gpu_layers as usize > self.model.n_layer_all
    }

    /// The graph callback (src/llama-context.cpp:2638-2662): names `cur` `name-il` (or `name` for
    /// `il < 0`) and, for a micro-batch under 32 tokens or a full offload, pins a layer's `norm` and
    /// `l_last` to that layer's device.
    pub fn cb(&mut self, cur: TensorId, name: &str, il: i32) {
        if self.ctx.names {
            let full = if il >= 0 { format!("{name}-{il}") } else { name.to_owned() };
            self.ctx.set_name(cur, full);
        }
        if (self.ubatch.n_tokens < 32 || self.full_offload())
            && il >= 0
            && (name == "norm" || name == "l_last")
        {
            if let Some(&loc) = self.placement.layers.get(il as usize) {
                // ggml_backend_supports_op holds for norm / add on every backend llama.cpp uses.
                let b = self.backend_of(loc);
                self.ctx.t_mut(cur).pinned = Some(b as u8);
                self.pins.push((cur, il as usize));
            }
        }
    }

    /// The graph's end (`llm_graph_result::set_outputs`, src/llama-graph.cpp:1396-1402): `norm`, named
    /// `result_norm` by the builder, is `res->t_embd`; projected by the LM head `output` it is
    /// `result_output`, `res->t_logits`. Both are outputs; the graph is expanded from the logits.
    pub fn build_result(&mut self, norm: TensorId, output: Option<TensorId>) -> TensorId {
        self.ctx.set_output(norm);
        let mut cur = norm;
        if let Some(output) = output {
            cur = self.build_lora_mm(output, cur, None);
        }
        self.cb(cur, "result_output", -1);
        self.ctx.set_output(cur);
        self.expand(cur);
        cur
    }

    /// `ggml_build_forward_expand(gf, t)`.
    pub fn expand(&mut self, t: TensorId) {
        self.gf.build_forward_expand(&mut self.ctx, t);
    }

    // ---- inputs -------------------------------------------------------------------------------

    /// `build_inp_embd` (src/llama-graph.cpp:2413-2538) for token input, `tok_scale` 1 and no
    /// embedding scale: `inp_tokens`, `inp_embd`, the mixed-batch inputs `inp_mixed_tokens`,
    /// `inp_mixed_slots`, `inp_mixed_embd` and their `set_rows` branch, all in the graph through
    /// `ggml_build_forward_select` with the token branch computed; the result is named `embd` and
    /// expanded.
    pub fn build_inp_embd(&mut self) -> TensorId {
        let n_tokens = self.n_tokens();
        // hparams.n_embd_inp() is n_embd for the architectures simulated (no deepstack, no padding).
        let n_embd_inp = i64::from(self.model.n_embd);
        let tok_embd = self.weight("token_embd.weight");

        let tokens = self.ctx.new_tensor(GgmlType::I32, &[n_tokens]);
        self.cb(tokens, "inp_tokens", -1);
        self.ctx.set_input(tokens);

        let embd = self.ctx.new_tensor(GgmlType::F32, &[n_embd_inp, n_tokens]);
        self.cb(embd, "inp_embd", -1);
        self.ctx.set_input(embd);

        let build_tok = |g: &mut LlmGraph<'_>, ids: TensorId| {
            if let Some(w) = tok_embd {
                g.ctx.get_rows(w, ids)
            } else {
                g.ctx.check(false, |_| "the model has no token_embd.weight".to_owned());
                ids
            }
        };
        let mut inps = vec![build_tok(self, tokens), embd];

        // llama-arch.cpp:1182-1195: every architecture simulated supports mixed batches, and a
        // llama-server context is LLAMA_CONTEXT_TYPE_DEFAULT.
        let has_mixed = supports_mixed_batch(&self.model.architecture);
        if has_mixed {
            // llm_graph_n_tok_rows: a reservation's ubatch is not mixed (src/llama-graph.cpp:116-125)
            let n_tok_rows = n_tokens;
            let mixed_tokens = self.ctx.new_tensor(GgmlType::I32, &[n_tok_rows]);
            self.cb(mixed_tokens, "inp_mixed_tokens", -1);
            self.ctx.set_input(mixed_tokens);
            let mixed_slots = self.ctx.new_tensor(GgmlType::I64, &[n_tok_rows]);
            self.cb(mixed_slots, "inp_mixed_slots", -1);
            self.ctx.set_input(mixed_slots);
            let mixed_embd = self.ctx.new_tensor(GgmlType::F32, &[n_embd_inp, n_tokens]);
            self.cb(mixed_embd, "inp_mixed_embd", -1);
            self.ctx.set_input(mixed_embd);
            let dup = self.ctx.dup(mixed_embd);
            let rows = build_tok(self, mixed_tokens);
            inps.push(self.ctx.set_rows(dup, rows, mixed_slots));
        }

        // a reservation's ubatch has tokens (ubatch_reserve), so the token branch is selected
        let cur = self.gf.build_forward_select(&mut self.ctx, &inps, 0);
        self.cb(cur, "embd", -1);
        self.expand(cur);
        cur
    }

    /// `build_inp_pos` (src/llama-graph.cpp:2540-2552) with one position per token.
    pub fn build_inp_pos(&mut self) -> TensorId {
        let n_tokens = self.n_tokens();
        let cur = self.ctx.new_tensor(GgmlType::I32, &[n_tokens]);
        self.ctx.set_input(cur);
        self.cb(cur, "inp_pos", -1);
        cur
    }

    /// `build_inp_out_ids` (src/llama-graph.cpp:2569-2589): always built, `n_outputs` rows.
    pub fn build_inp_out_ids(&mut self) -> TensorId {
        let cur = self.ctx.new_tensor(GgmlType::I32, &[self.ubatch.n_outputs]);
        self.ctx.set_input(cur);
        self.ctx.set_name(cur, "out_ids");
        cur
    }

    /// The streams of the KV cache (`n_stream`, src/llama-kv-cache.cpp:84).
    fn kv_streams(&self) -> i64 {
        i64::from(self.context.n_stream.max(1))
    }

    /// Cells per stream of the cache holding sliding-window (`swa`) or other layers.
    fn kv_cells(&self, swa: bool) -> i64 {
        match (swa, self.context.swa_size) {
            (true, Some(n)) => i64::from(n),
            _ => i64::from(self.context.kv_size),
        }
    }

    /// Whether the model's caches hold no V (MLA, src/llama-kv-cache.cpp:231).
    fn is_mla(&self) -> bool {
        self.model.mla.is_some()
    }

    /// `hparams.n_embd_v_gqa_max()`.
    fn n_embd_v_gqa_max(&self) -> i64 {
        self.model.layers.iter().map(|l| l.n_embd_v_gqa as i64).max().unwrap_or(0)
    }

    /// `n_rot_k` and `n_rot_v` of the cache of sliding-window (`swa`) or other layers: Hadamard
    /// rotations for quantized caches (src/llama-kv-cache.cpp:194-206, 315-357).
    fn kv_rotations(&self, swa: bool) -> (i64, i64) {
        let has_swa_cache = self.context.swa_size.is_some();
        let mut k_all: i64 = 0;
        let mut v_all: i64 = 0;
        for l in self.model.kv_layers().filter(|l| !has_swa_cache || l.is_swa == swa) {
            let (hk, hv) = (i64::from(l.head_dim_k), i64::from(l.head_dim_v));
            if k_all == 0 {
                k_all = hk;
            } else if k_all > 0 && k_all != hk {
                k_all = -1;
            }
            if !self.is_mla() {
                if v_all == 0 {
                    v_all = hv;
                } else if v_all > 0 && v_all != hv {
                    v_all = -1;
                }
            }
        }
        let head_k = self.model.layers.first().map_or(0, |l| i64::from(l.head_dim_k));
        let head_v = self.model.layers.first().map_or(0, |l| i64::from(l.head_dim_v));
        let mut n_rot_k = 0;
        if k_all > 0 && self.context.type_k.is_quantized() && head_k % 64 == 0 {
            n_rot_k = 64;
            while k_all % (2 * n_rot_k) == 0 {
                n_rot_k *= 2;
            }
        }
        let n_rot_v =
            if v_all > 0 && self.context.type_v.is_quantized() && head_v % 64 == 0 { 64 } else { 0 };
        (n_rot_k, n_rot_v)
    }

    /// The inputs of one cache: `build_input_k_idxs`, `build_input_v_idxs`
    /// (src/llama-kv-cache.cpp:1439-1465), `build_attn_inp_kq_mask` (src/llama-graph.cpp:29-46);
    /// the rotations come after, see [`LlmGraph::kv_rot_inputs`].
    fn kv_inputs(&mut self, swa: bool, with_v: bool) -> KvInputs {
        let n_tokens = self.n_tokens();
        let k_idxs = self.ctx.new_tensor(GgmlType::I64, &[n_tokens]);
        self.ctx.set_input(k_idxs);
        self.ctx.set_name(k_idxs, "attn_inp_k_idxs");
        let v_idxs = with_v.then(|| {
            let n = if self.context.v_trans { n_tokens * self.n_embd_v_gqa_max() } else { n_tokens };
            let v = self.ctx.new_tensor(GgmlType::I64, &[n]);
            self.ctx.set_input(v);
            self.ctx.set_name(v, "attn_inp_v_idxs");
            v
        });
        let n_kv = self.kv_cells(swa);
        let n_stream = if self.context.kv_unified { 1 } else { self.ubatch.n_seqs };
        let ty = if self.flash_attn() { GgmlType::F16 } else { GgmlType::F32 };
        let kq_mask = self.ctx.new_tensor(ty, &[n_kv, n_tokens / n_stream, 1, n_stream]);
        self.ctx.set_input(kq_mask);
        self.ctx.set_name(kq_mask, "attn_inp_kq_mask");
        KvInputs { k_idxs, v_idxs, kq_mask, k_rot: None, v_rot: None, n_kv, swa }
    }

    /// `build_input_k_rot` and `build_input_v_rot` (src/llama-kv-cache.cpp:1467-1489).
    fn kv_rot_inputs(&mut self, inp: &mut KvInputs, with_v: bool) {
        let (n_rot_k, n_rot_v) = self.kv_rotations(inp.swa);
        if n_rot_k > 0 {
            let r = self.ctx.new_tensor(GgmlType::F32, &[n_rot_k, n_rot_k]);
            self.ctx.set_input(r);
            self.ctx.set_name(r, "attn_inp_k_rot");
            inp.k_rot = Some(r);
        }
        if with_v && n_rot_v > 0 {
            let r = self.ctx.new_tensor(GgmlType::F32, &[n_rot_v, n_rot_v]);
            self.ctx.set_input(r);
            self.ctx.set_name(r, "attn_inp_v_rot");
            inp.v_rot = Some(r);
        }
    }

    /// `build_attn_inp_kv` (src/llama-graph.cpp:2908-2941): one cache for every layer.
    pub fn build_attn_inp_kv(&mut self) -> AttnInput {
        let mut base = self.kv_inputs(false, true);
        self.kv_rot_inputs(&mut base, true);
        AttnInput { base, swa: None }
    }

    /// `build_attn_inp_k` (src/llama-graph.cpp:3027-3054): a K-only cache (MLA).
    pub fn build_attn_inp_k(&mut self) -> AttnInput {
        let base = self.kv_inputs(false, false);
        AttnInput { base, swa: None }
    }

    /// `build_attn_inp_kv_iswa` (src/llama-graph.cpp:3500-3530): a base cache and a sliding-window
    /// cache, each with its own indices and mask, then the rotations of both.
    pub fn build_attn_inp_kv_iswa(&mut self) -> AttnInput {
        let mut base = self.kv_inputs(false, true);
        let mut swa = self.kv_inputs(true, true);
        self.kv_rot_inputs(&mut base, true);
        self.kv_rot_inputs(&mut swa, true);
        AttnInput { base, swa: Some(swa) }
    }

    // ---- the KV cache -------------------------------------------------------------------------

    /// Layer `il`'s cache tensors `cache_k_l{il}` and `cache_v_l{il}` (src/llama-kv-cache.cpp:
    /// 209-237): `[n_embd_k_gqa, kv_size, n_stream]` on the layer's device, or the host without KV
    /// offload (src/llama-kv-cache.cpp:212-221).
    pub fn kv_tensors(&mut self, il: usize) -> (TensorId, Option<TensorId>) {
        if let Some(Some(kv)) = self.cache.get(il) {
            return *kv;
        }
        let layer = &self.model.layers[il];
        let loc = if self.context.kv_offload {
            self.placement.layers.get(il).copied().unwrap_or(Location::Host)
        } else {
            Location::Host
        };
        let backend = self.backend_of(loc);
        let cells = self.kv_cells(layer.is_swa);
        let n_stream = self.kv_streams();
        let n_embd_k = layer.n_embd_k_gqa as i64;
        // [TAG_V_CACHE_VARIABLE]: a transposed V cache is as wide as the widest layer
        let n_embd_v = if self.context.v_trans { self.n_embd_v_gqa_max() } else { layer.n_embd_v_gqa as i64 };
        let (tk, tv) = (self.context.type_k, self.context.type_v);
        let k = self.ctx.new_resident(&format!("cache_k_l{il}"), tk, &[n_embd_k, cells, n_stream], backend);
        let v = (!self.is_mla()).then(|| {
            self.ctx.new_resident(&format!("cache_v_l{il}"), tv, &[n_embd_v, cells, n_stream], backend)
        });
        if self.context.kv_offload {
            self.homes.push((k, Home::Layer(il)));
            if let Some(v) = v {
                self.homes.push((v, Home::Layer(il)));
            }
        }
        if let Some(slot) = self.cache.get_mut(il) {
            *slot = Some((k, v));
        }
        (k, v)
    }

    /// `llama_kv_cache::cpy_k` (src/llama-kv-cache.cpp:1348-1381): `k_cur` written into the cache.
    pub fn cpy_k(&mut self, k_cur: TensorId, k_idxs: TensorId, il: usize) -> TensorId {
        let (mut k, _) = self.kv_tensors(il);
        let [n_embd_head, n_head, n_tokens, _] = self.ctx.ne(k_cur);
        let n_embd_gqa = n_embd_head * n_head;
        let nb2 = self.ctx.nb(k_cur)[2];
        let k_cur = self.ctx.view(k_cur, &[n_embd_gqa, n_tokens], &[nb2], 0);
        let [_, kv_size, n_stream, _] = self.ctx.ne(k);
        if n_stream > 1 {
            k = self.ctx.reshape(k, &[n_embd_gqa, kv_size * n_stream]);
        }
        self.ctx.set_rows(k, k_cur, k_idxs)
    }

    /// `llama_kv_cache::cpy_v` (src/llama-kv-cache.cpp:1383-1437): `v_cur` written into the cache, one
    /// element per row when the cache is transposed.
    pub fn cpy_v(&mut self, v_cur: TensorId, v_idxs: TensorId, il: usize) -> TensorId {
        let (_, v) = self.kv_tensors(il);
        let Some(mut v) = v else {
            self.ctx.check(false, |_| format!("cpy_v: layer {il} has no V cache"));
            return v_cur;
        };
        let [n_embd_head, n_head, n_tokens, _] = self.ctx.ne(v_cur);
        let n_embd_gqa = n_embd_head * n_head;
        let [v_ne0, kv_size, n_stream, _] = self.ctx.ne(v);
        if !self.context.v_trans {
            let nb2 = self.ctx.nb(v_cur)[2];
            let v_cur = self.ctx.view(v_cur, &[n_embd_gqa, n_tokens], &[nb2], 0);
            if n_stream > 1 {
                v = self.ctx.reshape(v, &[n_embd_gqa, kv_size * n_stream]);
            }
            return self.ctx.set_rows(v, v_cur, v_idxs);
        }
        let ty = self.ctx.t(v_cur).ty;
        let mut v_cur = if row_size(ty, n_embd_gqa) == self.ctx.nb(v_cur)[2] {
            self.ctx.reshape(v_cur, &[n_embd_gqa, n_tokens])
        } else {
            self.ctx.cont_4d(v_cur, [n_embd_gqa, n_tokens, 1, 1])
        };
        // [TAG_V_CACHE_VARIABLE] would pad v_cur here (ggml_pad): no simulated model has it
        self.ctx.check(n_embd_gqa >= v_ne0, |_| {
            format!("cpy_v: layer {il} needs a padded V ({n_embd_gqa} < {v_ne0})")
        });
        let n_v = self.ctx.t(v).nelements();
        let v_view = self.ctx.reshape(v, &[1, n_v]);
        let n_cur = self.ctx.t(v_cur).nelements();
        v_cur = self.ctx.reshape(v_cur, &[1, n_cur]);
        self.ctx.set_rows(v_view, v_cur, v_idxs)
    }

    /// `llama_kv_cache::get_k` (src/llama-kv-cache.cpp:1296-1314): the first `n_kv` cells of every
    /// stream as `[n_embd_head_k, n_head_kv, n_kv, n_stream]`.
    pub fn get_k(&mut self, il: usize, n_kv: i64) -> TensorId {
        let (k, _) = self.kv_tensors(il);
        let layer = &self.model.layers[il];
        let (head, n_head_kv) = (i64::from(layer.head_dim_k), i64::from(layer.n_head_kv));
        let t = self.ctx.t(k);
        let (ty, [n_embd_k_gqa, kv_size, ns, _]) = (t.ty, t.ne);
        let nb1 = row_size(ty, head);
        let nb2 = row_size(ty, n_embd_k_gqa);
        let nb3 = row_size(ty, n_embd_k_gqa * kv_size);
        self.ctx.view(k, &[head, n_head_kv, n_kv, ns], &[nb1, nb2, nb3], 0)
    }

    /// `llama_kv_cache::get_v` (src/llama-kv-cache.cpp:1316-1346): like [`LlmGraph::get_k`], or
    /// `[n_kv, n_head_kv, n_embd_head_v, n_stream]` over a transposed cache.
    pub fn get_v(&mut self, il: usize, n_kv: i64) -> TensorId {
        let (_, v) = self.kv_tensors(il);
        let Some(v) = v else {
            self.ctx.check(false, |_| format!("get_v: layer {il} has no V cache"));
            return self.get_k(il, n_kv);
        };
        let layer = &self.model.layers[il];
        let (head, n_head_kv) = (i64::from(layer.head_dim_v), i64::from(layer.n_head_kv));
        let t = self.ctx.t(v);
        let (ty, [n_embd_v_gqa, kv_size, ns, _]) = (t.ty, t.ne);
        if !self.context.v_trans {
            let nb1 = row_size(ty, head);
            let nb2 = row_size(ty, n_embd_v_gqa);
            let nb3 = row_size(ty, n_embd_v_gqa * kv_size);
            return self.ctx.view(v, &[head, n_head_kv, n_kv, ns], &[nb1, nb2, nb3], 0);
        }
        let nb1 = row_size(ty, kv_size * head);
        let nb2 = row_size(ty, kv_size);
        let nb3 = row_size(ty, kv_size * n_embd_v_gqa);
        self.ctx.view(v, &[n_kv, n_head_kv, head, ns], &[nb1, nb2, nb3], 0)
    }

    // ---- layers -------------------------------------------------------------------------------

    /// `build_norm` (src/llama-graph.cpp:1634-1668) for `LLM_NORM` and `LLM_NORM_RMS`.
    pub fn build_norm(
        &mut self,
        cur: TensorId,
        mw: Option<TensorId>,
        mb: Option<TensorId>,
        ty: NormType,
        il: i32,
    ) -> TensorId {
        let mut cur = match ty {
            NormType::Norm => self.ctx.norm(cur),
            NormType::Rms => self.ctx.rms_norm(cur),
        };
        if mw.is_some() || mb.is_some() {
            self.cb(cur, "norm", il);
        }
        if let Some(w) = mw {
            cur = self.ctx.mul(cur, w);
            if mb.is_some() {
                self.cb(cur, "norm_w", il);
            }
        }
        if let Some(b) = mb {
            cur = self.ctx.add(cur, b);
        }
        cur
    }

    /// `build_qkv` (src/llama-graph.cpp:1670-1796) with `reshape` and no clamp: Q, K and V of layer
    /// `il` from `attn_qkv` (fused) or `attn_q`/`attn_k`/`attn_v` and their optional biases, as
    /// `[n_embd_head, n_head, n_tokens]`.
    pub fn build_qkv(
        &mut self,
        il: usize,
        cur: TensorId,
        n_embd_head: i64,
        n_head: i64,
        n_head_kv: i64,
    ) -> (TensorId, TensorId, TensorId) {
        let n_tokens = self.n_tokens();
        let ili = il as i32;
        let (q, k, v);
        if let Some(wqkv) = self.layer_weight(il, "attn_qkv.weight") {
            let mut qkv = self.build_lora_mm(wqkv, cur, None);
            self.cb(qkv, "wqkv", ili);
            if let Some(b) = self.layer_weight(il, "attn_qkv.bias") {
                qkv = self.ctx.add(qkv, b);
                self.cb(qkv, "wqkv_b", ili);
            }
            let ty = self.ctx.t(qkv).ty;
            let nb1 = self.ctx.nb(qkv)[1];
            let (n_embd_q, n_embd_k) = (n_embd_head * n_head, n_embd_head * n_head_kv);
            let rs = row_size(ty, n_embd_head);
            q = self.ctx.view(qkv, &[n_embd_head, n_head, n_tokens], &[rs, nb1], 0);
            k = self.ctx.view(qkv, &[n_embd_head, n_head_kv, n_tokens], &[rs, nb1], row_size(ty, n_embd_q));
            v = self.ctx.view(
                qkv,
                &[n_embd_head, n_head_kv, n_tokens],
                &[rs, nb1],
                row_size(ty, n_embd_q + n_embd_k),
            );
        } else {
            let mut parts = [None; 3];
            for (i, (w, name)) in
                [("attn_q", "Qcur"), ("attn_k", "Kcur"), ("attn_v", "Vcur")].into_iter().enumerate()
            {
                let Some(wt) = self.layer_weight(il, &format!("{w}.weight")) else {
                    self.ctx.check(false, |_| format!("blk.{il}.{w}.weight is missing"));
                    return (cur, cur, cur);
                };
                let mut t = self.build_lora_mm(wt, cur, None);
                self.cb(t, name, ili);
                if let Some(b) = self.layer_weight(il, &format!("{w}.bias")) {
                    t = self.ctx.add(t, b);
                    self.cb(t, name, ili);
                }
                parts[i] = Some(t);
            }
            let [Some(q0), Some(k0), Some(v0)] = parts else { return (cur, cur, cur) };
            q = self.ctx.reshape(q0, &[n_embd_head, n_head, n_tokens]);
            k = self.ctx.reshape(k0, &[n_embd_head, n_head_kv, n_tokens]);
            v = self.ctx.reshape(v0, &[n_embd_head, n_head_kv, n_tokens]);
        }
        self.cb(q, "Qcur", ili);
        self.cb(k, "Kcur", ili);
        self.cb(v, "Vcur", ili);
        (q, k, v)
    }

    /// `llama_mul_mat_hadamard` (src/llama-impl.h:57-75): `cur` rotated by `rot` block-wise.
    pub fn mul_mat_hadamard(&mut self, cur: TensorId, rot: TensorId) -> TensorId {
        let n = self.ctx.ne(rot)[0];
        let ne = self.ctx.ne(cur);
        let total = self.ctx.t(cur).nelements();
        let res = if self.ctx.t(cur).is_contiguous() {
            self.ctx.reshape(cur, &[n, total / n])
        } else {
            self.ctx.cont_4d(cur, [n, total / n, 1, 1])
        };
        let res = self.ctx.mul_mat(rot, res);
        self.ctx.reshape(res, &ne)
    }

    /// `build_attn` with a KV cache: `llm_graph_input_attn_kv` (src/llama-graph.cpp:2943-3025) or,
    /// with a sliding-window cache, `llm_graph_input_attn_kv_iswa` (src/llama-graph.cpp:3190-3283),
    /// for layer `il` without training or shared-cache layers: rotations, the cache writes, the
    /// cache views, [`LlmGraph::build_attn_mha`], `kqv_out`, the output projection.
    #[allow(clippy::too_many_arguments)] // llama.cpp's signature
    pub fn build_attn(
        &mut self,
        inp: &AttnInput,
        wo: Option<TensorId>,
        wo_b: Option<TensorId>,
        q_cur: TensorId,
        k_cur: TensorId,
        v_cur: TensorId,
        kq_b: Option<TensorId>,
        sinks: Option<TensorId>,
        il: usize,
    ) -> TensorId {
        let is_swa = self.model.layers.get(il).is_some_and(|l| l.is_swa);
        let kv = inp.for_layer(is_swa);
        let (mut q_cur, mut k_cur, mut v_cur) = (q_cur, k_cur, v_cur);
        if let Some(r) = kv.k_rot {
            q_cur = self.mul_mat_hadamard(q_cur, r);
            k_cur = self.mul_mat_hadamard(k_cur, r);
        }
        if let Some(r) = kv.v_rot {
            v_cur = self.mul_mat_hadamard(v_cur, r);
        }
        // the plain input expands k last "to enable rope fusion"; the iSWA input expands q, k, v
        self.expand(q_cur);
        if inp.swa.is_some() {
            self.expand(k_cur);
            self.expand(v_cur);
        } else {
            self.expand(v_cur);
            self.expand(k_cur);
        }
        let Some(v_idxs) = kv.v_idxs else {
            self.ctx.check(false, |_| "build_attn: a K-only cache needs build_attn_k".to_owned());
            return q_cur;
        };
        let ck = self.cpy_k(k_cur, kv.k_idxs, il);
        self.expand(ck);
        let cv = self.cpy_v(v_cur, v_idxs, il);
        self.expand(cv);
        let k = self.get_k(il, kv.n_kv);
        let v = self.get_v(il, kv.n_kv);

        let mut cur = self.build_attn_mha(q_cur, k, v, kq_b, kv.kq_mask, sinks, None, il);
        self.cb(cur, "kqv_out", il as i32);
        if let Some(r) = kv.v_rot {
            cur = self.mul_mat_hadamard(cur, r);
        }
        self.attn_output(cur, wo, wo_b)
    }

    /// The attention's output projection `wo` and bias `wo_b`, where the layer has them (the end of
    /// every `build_attn`, src/llama-graph.cpp).
    fn attn_output(&mut self, mut cur: TensorId, wo: Option<TensorId>, wo_b: Option<TensorId>) -> TensorId {
        if let Some(w) = wo {
            cur = self.build_lora_mm(w, cur, None);
        }
        if let Some(b) = wo_b {
            cur = self.ctx.add(cur, b);
        }
        cur
    }

    /// `build_attn` with a K-only cache (`llm_graph_input_attn_k`, src/llama-graph.cpp:3056-3112,
    /// MLA): K written, V a view of the first `v_cur->ne[0]` columns of the cached K, `v_mla` the
    /// decompression after attention.
    #[allow(clippy::too_many_arguments)] // llama.cpp's signature
    pub fn build_attn_k(
        &mut self,
        inp: &AttnInput,
        wo: Option<TensorId>,
        wo_b: Option<TensorId>,
        q_cur: TensorId,
        k_cur: TensorId,
        v_cur: TensorId,
        kq_b: Option<TensorId>,
        sinks: Option<TensorId>,
        v_mla: Option<TensorId>,
        il: usize,
    ) -> TensorId {
        let kv = inp.base;
        self.expand(q_cur);
        self.expand(v_cur);
        self.expand(k_cur);
        let ck = self.cpy_k(k_cur, kv.k_idxs, il);
        self.expand(ck);
        let k = self.get_k(il, kv.n_kv);
        let (ne, nb) = (self.ctx.ne(k), self.ctx.nb(k));
        let v_ne0 = self.ctx.ne(v_cur)[0];
        let v = self.ctx.view(k, &[v_ne0, ne[1], ne[2], ne[3]], &[nb[1], nb[2], nb[3]], 0);
        let cur = self.build_attn_mha(q_cur, k, v, kq_b, kv.kq_mask, sinks, v_mla, il);
        self.cb(cur, "kqv_out", il as i32);
        self.attn_output(cur, wo, wo_b)
    }

    /// `build_attn_mha` (src/llama-graph.cpp:2691-2830): attention over `[n_embd_head, n_head,
    /// n_tokens]` queries and the cache views, by stream; flash attention (K and V cast to F16 when
    /// F32) or `kq`, `kq_soft_max`, `kqv`; `v_mla` decompresses MLA's output. Without KQV offload the
    /// result is pinned to the CPU.
    #[allow(clippy::too_many_arguments)] // llama.cpp's signature
    pub fn build_attn_mha(
        &mut self,
        q: TensorId,
        k: TensorId,
        v: TensorId,
        kq_b: Option<TensorId>,
        kq_mask: TensorId,
        sinks: Option<TensorId>,
        v_mla: Option<TensorId>,
        il: usize,
    ) -> TensorId {
        let ili = il as i32;
        let v_trans = self.ctx.nb(v)[1] > self.ctx.nb(v)[2];
        let n_stream = self.ctx.ne(k)[3];
        let (qne, qnb) = (self.ctx.ne(q), self.ctx.nb(q));
        let per = qne[2] / n_stream;
        let q = self.ctx.view(q, &[qne[0], qne[1], per, n_stream], &[qnb[1], qnb[2], qnb[2] * per as u64], 0);
        let q = self.ctx.permute(q, [0, 2, 1, 3]);
        let k = self.ctx.permute(k, [0, 2, 1, 3]);
        let mut v = self.ctx.permute(v, [0, 2, 1, 3]);

        let cur = if self.flash_attn() && kq_b.is_none() {
            if v_trans {
                v = self.ctx.transpose(v);
            }
            // this can happen when KV cache is not used (src/llama-graph.cpp:2726-2733)
            let k = if self.ctx.t(k).ty == GgmlType::F32 { self.ctx.cast(k, GgmlType::F16) } else { k };
            if self.ctx.t(v).ty == GgmlType::F32 {
                v = self.ctx.cast(v, GgmlType::F16);
            }
            let mut cur = self.ctx.flash_attn_ext(q, k, v, Some(kq_mask), sinks);
            if let Some(w) = v_mla {
                cur = self.ctx.permute(cur, [0, 2, 1, 3]);
                cur = self.ctx.mul_mat(w, cur);
                self.cb(cur, "fattn_mla", ili);
                cur = self.ctx.permute(cur, [0, 2, 1, 3]);
                cur = self.ctx.cont(cur);
            }
            let ne = self.ctx.ne(cur);
            self.ctx.reshape(cur, &[ne[0] * ne[1], ne[2] * ne[3]])
        } else {
            let mut kq = self.ctx.mul_mat(k, q);
            self.cb(kq, "kq", ili);
            if let Some(b) = kq_b {
                kq = self.ctx.add(kq, b);
                self.cb(kq, "kq_plus_kq_b", ili);
            }
            kq = self.ctx.soft_max_ext(kq, Some(kq_mask));
            self.ctx.soft_max_add_sinks(kq, sinks);
            self.cb(kq, "kq_soft_max", ili);
            if !v_trans {
                let t = self.ctx.transpose(v);
                v = self.ctx.cont(t);
                self.cb(v, "v_cont", ili);
            }
            let mut kqv = self.ctx.mul_mat(v, kq);
            self.cb(kqv, "kqv", ili);
            if let Some(w) = v_mla {
                kqv = self.ctx.mul_mat(w, kqv);
                self.cb(kqv, "kqv_mla", ili);
            }
            let cur = self.ctx.permute(kqv, [0, 2, 1, 3]);
            let ne = self.ctx.ne(cur);
            let cur = self.ctx.cont_4d(cur, [ne[0] * ne[1], ne[2] * ne[3], 1, 1]);
            if !self.context.kv_offload {
                // all nodes between the KV store and the attention output run on the CPU
                let cpu = self.cpu_backend();
                self.ctx.t_mut(cur).pinned = Some(cpu as u8);
            }
            cur
        };
        self.expand(cur);
        cur
    }
}

/// `ggml_row_size`: bytes of `n` elements of `ty`.
pub fn row_size(ty: GgmlType, n: i64) -> u64 {
    ty.type_size() * (n.max(0) as u64) / ty.block_size()
}

/// `llm_arch_supports_mixed_batch` (src/llama-arch.cpp:1182-1195): false only for architectures
/// splitplan does not simulate.
fn supports_mixed_batch(_arch: &Architecture) -> bool {
    true
}

#[cfg(test)]
mod tests;
