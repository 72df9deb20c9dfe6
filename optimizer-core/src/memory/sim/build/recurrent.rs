//! The recurrent-state side of llama.cpp's graphs, shape only: the `rs_s_copy` input
//! (`build_rs_inp_impl`, src/llama-graph.cpp:3630-3651), the per-layer state tensors of
//! `llama_memory_recurrent` (src/llama-memory-recurrent.cpp:20-122) and `build_rs`
//! (src/llama-graph.cpp:3587-3628, 3661-3675), which gathers the states a micro-batch reads and
//! copies the ones it does not touch. Shared by the architectures with a recurrent memory
//! (qwen3next's Gated DeltaNet layers here).
//!
//! A reservation sees the memory's "full" context (src/llama-memory-recurrent.cpp:1336-1350):
//! `n_rs` is the whole memory, `head` and `rs_z` are 0.

use crate::gguf::GgmlType;
use crate::memory::Location;
use crate::memory::sim::build::LlmGraph;
use crate::memory::sim::ggml::TensorId;

/// `llm_graph_input_rs` (src/llama-graph.h) with the memory context's numbers a graph reads.
#[derive(Clone, Debug)]
pub struct RsInput {
    /// `s_copy`: `[n_rs]` I32, the source cell of every state (`rs_s_copy`).
    pub s_copy: TensorId,
    /// `s_copy_main`: its first `n_seqs` entries.
    pub s_copy_main: TensorId,
    /// `s_copy_tail`: its last `n_rs - 1` entries.
    pub s_copy_tail: TensorId,
    /// `get_n_rs()`: the full memory's `size` in a reservation.
    pub n_rs: u32,
    /// `get_head()`: 0 in a reservation.
    pub head: u32,
    /// `get_rs_z()`: 0 in a reservation.
    pub rs_z: i32,
    /// `get_size()`: the memory's cells, `max(1, n_seq_max)` (src/llama-model.cpp:2783).
    pub size: u32,
    /// `cache_r_l{il}` per layer, created on first use.
    r_l: Vec<Option<TensorId>>,
    /// `cache_s_l{il}` per layer, created on first use.
    s_l: Vec<Option<TensorId>>,
}

/// `build_rs_inp_impl` (src/llama-graph.cpp:3630-3651) for the reservation's full memory context.
pub fn build_rs_inp(g: &mut LlmGraph<'_>) -> RsInput {
    // recurrent_kv_size = max(1, n_seq_max) (src/llama-model.cpp:2783); the full context's n_rs is the
    // whole memory (src/llama-memory-recurrent.cpp:1336-1338)
    let size = g.context.n_seq.max(1);
    let n_rs = size;
    let n_seqs = g.ubatch.n_seqs;

    let s_copy = g.ctx.new_tensor(GgmlType::I32, &[i64::from(n_rs)]);
    g.ctx.set_input(s_copy);
    g.ctx.set_name(s_copy, "rs_s_copy");

    let nb0 = g.ctx.nb(s_copy)[0];
    let s_copy_main = g.ctx.view(s_copy, &[n_seqs], &[], 0);
    let s_copy_tail = g.ctx.view(s_copy, &[i64::from(n_rs) - 1], &[], nb0);

    let n_layer = g.model.layers.len();
    RsInput {
        s_copy,
        s_copy_main,
        s_copy_tail,
        n_rs,
        head: 0,
        rs_z: 0,
        size,
        r_l: vec![None; n_layer],
        s_l: vec![None; n_layer],
    }
}

impl RsInput {
    /// Rows of every state tensor: `mem_size * (1 + n_rs_seq)` (src/llama-memory-recurrent.cpp:101).
    fn n_rows(&self, g: &LlmGraph<'_>) -> i64 {
        i64::from(self.size) * (1 + i64::from(g.context.n_rs_seq))
    }

    /// The backend holding layer `il`'s state: the layer's device when the KV cache is offloaded, else
    /// the CPU (src/llama-memory-recurrent.cpp:77-88).
    fn backend(g: &LlmGraph<'_>, il: usize) -> usize {
        let loc = if g.context.kv_offload {
            g.placement.layers.get(il).copied().unwrap_or(Location::Host)
        } else {
            Location::Host
        };
        g.backend_of(loc)
    }

    /// Records that `t`'s backend is layer `il`'s device, when [`RsInput::backend`] made it so.
    fn record_home(g: &mut LlmGraph<'_>, t: TensorId, il: usize) {
        if g.context.kv_offload {
            g.homes.push((t, super::Home::Layer(il)));
        }
    }

    /// `get_r_l(il)`: `cache_r_l{il}`, F32 `[n_embd_r, n_rows]` (src/llama-memory-recurrent.cpp:102-105,
    /// type F32 from src/llama-model.cpp:2781).
    pub fn r_l(&mut self, g: &mut LlmGraph<'_>, il: usize) -> TensorId {
        if let Some(t) = self.r_l[il] {
            return t;
        }
        let n_embd_r = g.model.layers[il].n_embd_r as i64;
        let (rows, backend) = (self.n_rows(g), RsInput::backend(g, il));
        let t = g.ctx.new_resident(&format!("cache_r_l{il}"), GgmlType::F32, &[n_embd_r, rows], backend);
        RsInput::record_home(g, t, il);
        self.r_l[il] = Some(t);
        t
    }

    /// `get_s_l(il)`: `cache_s_l{il}`, F32 `[n_embd_s, n_rows]` (src/llama-memory-recurrent.cpp:103-106,
    /// type F32 from src/llama-model.cpp:2782).
    pub fn s_l(&mut self, g: &mut LlmGraph<'_>, il: usize) -> TensorId {
        if let Some(t) = self.s_l[il] {
            return t;
        }
        let n_embd_s = g.model.layers[il].n_embd_s as i64;
        let (rows, backend) = (self.n_rows(g), RsInput::backend(g, il));
        let t = g.ctx.new_resident(&format!("cache_s_l{il}"), GgmlType::F32, &[n_embd_s, rows], backend);
        RsInput::record_home(g, t, il);
        self.s_l[il] = Some(t);
        t
    }
}

/// `build_rs(inp, s, state_size, n_seqs)` without a custom row getter (src/llama-graph.cpp:3661-3675):
/// the `n_seqs` states of the micro-batch, gathered from `s`.
pub fn build_rs(g: &mut LlmGraph<'_>, inp: &RsInput, s: TensorId, state_size: i64, n_seqs: i64) -> TensorId {
    build_rs_raw(g, s, inp.s_copy, state_size, n_seqs, inp.n_rs, inp.head, inp.rs_z)
}

/// The inner `build_rs` (src/llama-graph.cpp:3587-3628): clears the zeroed state, gathers every state
/// through `state_copy`, returns the micro-batch's and copies the others back.
#[allow(clippy::too_many_arguments)] // llama.cpp's signature
pub fn build_rs_raw(
    g: &mut LlmGraph<'_>,
    s: TensorId,
    state_copy: TensorId,
    state_size: i64,
    n_seqs: i64,
    n_rs: u32,
    rs_head: u32,
    rs_zero: i32,
) -> TensorId {
    let n_rs = i64::from(n_rs);
    let rows = g.ctx.ne(s)[1];
    let states = g.ctx.reshape(s, &[state_size, rows]);

    // Clear a single state which will then be copied to the other cleared states; a no-op view of
    // zero elements when rs_zero < 0.
    let z = i64::from(rs_zero >= 0);
    let nb1 = g.ctx.nb(states)[1];
    let state_zero = g.ctx.view(states, &[state_size * z], &[], (i64::from(rs_zero) * z) as u64 * nb1);
    let zeroed = g.ctx.scale_inplace(state_zero);
    g.expand(zeroed);

    let i0 = n_rs - g.ctx.ne(state_copy)[0];
    let states_all = g.ctx.get_rows(states, state_copy);
    let nb1_all = g.ctx.nb(states_all)[1];
    let output_states = g.ctx.view(states_all, &[state_size, n_seqs], &[nb1_all], 0);
    g.expand(output_states);

    // copy the extra states, which the micro-batch does not change (between n_seqs and n_rs)
    let states_extra =
        g.ctx.view(states_all, &[state_size, n_rs - n_seqs], &[nb1_all], (n_seqs - i0) as u64 * nb1_all);
    let s_nb1 = g.ctx.nb(s)[1];
    let dst =
        g.ctx.view(s, &[state_size, n_rs - n_seqs], &[s_nb1], (i64::from(rs_head) + n_seqs) as u64 * s_nb1);
    let copied = g.ctx.cpy(states_extra, dst);
    g.expand(copied);

    output_states
}
