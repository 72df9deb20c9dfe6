//! The qwen3next graph (Qwen3-Next, Qwen3-Coder-Next), shape only: `llama_model_qwen3next::graph`
//! (src/models/qwen3next.cpp:151-245) with its gated DeltaNet layers (`build_layer_attn_linear`,
//! 388-550, over `llm_build_delta_net_base`, src/models/delta-net-base.cpp), its gated full-attention
//! layers (`build_layer_attn`, 258-342) and its MoE with a gated shared expert (`build_layer_ffn`,
//! 552-610), node for node as llama.cpp builds it.
//!
//! The DeltaNet layers use the fused `GATED_DELTA_NET` op: llama.cpp turns both fused paths on and
//! never probes them (`auto_fgdn = false`, src/llama-context.cpp:235-237); rollback snapshots
//! (`n_rs_seq > 0`) take the snapshot path of `build_recurrent_attn`. The MTP head
//! (`graph_mtp`) is a separate graph a reservation of the main context never builds.

use crate::memory::sim::build::LlmGraph;
use crate::memory::sim::build::ffn::{FfnGate, FfnOp, FfnWeights, GatingFunc, MoeFfn};
use crate::memory::sim::build::recurrent::{RsInput, build_rs, build_rs_inp};
use crate::memory::sim::build::{AttnInput, NormType};
use crate::memory::sim::ggml::{TensorId, Unary};
use crate::model::SsmParams;

/// The DeltaNet sizes `build_layer_attn_linear` derives from the hyperparameters
/// (src/models/qwen3next.cpp:392-399).
#[derive(Clone, Copy, Debug)]
struct Dn {
    /// `head_k_dim = ssm_d_state`.
    head_k_dim: i64,
    /// `num_k_heads = ssm_n_group`.
    num_k_heads: i64,
    /// `num_v_heads = ssm_dt_rank`.
    num_v_heads: i64,
    /// `head_v_dim = d_inner / num_v_heads`.
    head_v_dim: i64,
    /// `ssm_d_inner`.
    d_inner: i64,
}

impl Dn {
    fn new(ssm: &SsmParams) -> Dn {
        let num_v_heads = i64::from(ssm.dt_rank);
        Dn {
            head_k_dim: i64::from(ssm.d_state),
            num_k_heads: i64::from(ssm.n_group),
            num_v_heads,
            head_v_dim: i64::from(ssm.d_inner) / num_v_heads.max(1),
            d_inner: i64::from(ssm.d_inner),
        }
    }
}

/// `llama_model_qwen3next::graph::graph` (src/models/qwen3next.cpp:151-245): the main graph of a
/// qwen3next model into `g`, ending with the logits `result_output`. A model without the SSM
/// sizes records an error in `g.ctx`.
pub fn build(g: &mut LlmGraph<'_>) {
    let Some(ssm) = g.model.ssm else {
        g.ctx.check(false, |_| "qwen3next: the model has no ssm hyperparameters".to_owned());
        return;
    };
    let dn = Dn::new(&ssm);
    let n_layer = g.model.n_layer_all - g.model.n_nextn;

    let mut inp_l = g.build_inp_embd();
    g.cb(inp_l, "model.embed_tokens", -1);

    // build_inp_mem_hybrid (src/llama-graph.cpp:3719-3728): the recurrent input, then the attention one
    let mut inp_rs = build_rs_inp(g);
    let inp_attn = g.build_attn_inp_kv();

    let inp_pos = g.build_inp_pos();
    let inp_out_ids = g.build_inp_out_ids();

    for il in 0..n_layer {
        let ili = il as i32;
        let inp_sa = inp_l;

        let attn_norm = g.layer_weight(il, "attn_norm.weight");
        let mut cur = g.build_norm(inp_l, attn_norm, None, NormType::Rms, ili);
        g.cb(cur, "attn_norm", ili);
        g.expand(cur);

        cur = if g.model.layers[il].is_recurrent {
            build_layer_attn_linear(g, &mut inp_rs, &dn, cur, il)
        } else {
            build_layer_attn(g, &inp_attn, cur, inp_pos, il)
        };

        // embeddings_nextn_masked is false outside MTP drafting (src/llama-context.cpp:122)
        cur = g.ctx.add(cur, inp_sa);
        g.cb(cur, "attn_residual", ili);

        let ffn_residual = cur;
        let post_norm = g.layer_weight(il, "post_attention_norm.weight");
        let attn_post_norm = g.build_norm(cur, post_norm, None, NormType::Rms, ili);
        g.cb(attn_post_norm, "attn_post_norm", ili);

        cur = build_layer_ffn(g, attn_post_norm, il);
        g.cb(cur, "ffn_out", ili);

        cur = g.ctx.add(cur, ffn_residual);
        g.cb(cur, "post_moe", ili);

        // build_cvec: no control vector
        g.cb(cur, "l_out", ili);
        inp_l = cur;
    }

    let output_norm = g.weight("output_norm.weight");
    let mut cur = g.build_norm(inp_l, output_norm, None, NormType::Rms, -1);
    g.cb(cur, "h_nextn", -1);
    // res->t_h_nextn, an output (llm_graph_result::set_outputs, llama-graph.cpp:1406-1408)
    g.ctx.set_output(cur);

    cur = g.ctx.get_rows(cur, inp_out_ids);
    g.cb(cur, "result_norm", -1);
    let output = g.weight("output.weight").or_else(|| g.weight("token_embd.weight"));
    g.build_result(cur, output);
}

/// `build_layer_attn` (src/models/qwen3next.cpp:258-342): gated full attention with a joint
/// query-and-gate projection, Q/K norms and RoPE.
fn build_layer_attn(
    g: &mut LlmGraph<'_>,
    inp: &AttnInput,
    cur: TensorId,
    inp_pos: TensorId,
    il: usize,
) -> TensorId {
    let ili = il as i32;
    let layer = &g.model.layers[il];
    let (n_embd_head, n_head, n_head_kv) =
        (i64::from(layer.head_dim_v), i64::from(layer.n_head), i64::from(layer.n_head_kv));
    let n_tokens = g.ubatch.n_tokens;

    // build_qkv(..., reshape = false) with separate Q/K/V (src/llama-graph.cpp:1684-1796)
    let (wq, wk, wv) = (
        g.layer_weight(il, "attn_q.weight"),
        g.layer_weight(il, "attn_k.weight"),
        g.layer_weight(il, "attn_v.weight"),
    );
    let (Some(wq), Some(wk), Some(wv)) = (wq, wk, wv) else {
        g.ctx.check(false, |_| format!("qwen3next: layer {il} has no attn_q/k/v"));
        return cur;
    };
    let q_full = g.build_lora_mm(wq, cur, None);
    let k_cur = g.build_lora_mm(wk, cur, None);
    let v_cur = g.build_lora_mm(wv, cur, None);
    g.cb(q_full, "Qcur_full", ili);
    g.cb(k_cur, "Kcur", ili);
    g.cb(v_cur, "Vcur", ili);

    let q_full = g.ctx.reshape(q_full, &[n_embd_head * 2, n_head, n_tokens, 1]);
    let nb = g.ctx.nb(q_full);
    let q_cur = g.ctx.view(q_full, &[n_embd_head, n_head, n_tokens, 1], &nb[1..], 0);
    g.cb(q_cur, "Qcur_view", ili);

    let esize = g.ctx.t(q_full).ty.type_size();
    let gate = g.ctx.view(q_full, &[n_embd_head, n_head, n_tokens, 1], &nb[1..], n_embd_head as u64 * esize);
    g.cb(gate, "gate", ili);

    let k_cur = g.ctx.reshape(k_cur, &[n_embd_head, n_head_kv, n_tokens]);
    let v_cur = g.ctx.reshape(v_cur, &[n_embd_head, n_head_kv, n_tokens]);

    let q_norm = g.layer_weight(il, "attn_q_norm.weight");
    let q_cur = g.build_norm(q_cur, q_norm, None, NormType::Rms, ili);
    g.cb(q_cur, "Qcur_normed", ili);

    let k_norm = g.layer_weight(il, "attn_k_norm.weight");
    let k_cur = g.build_norm(k_cur, k_norm, None, NormType::Rms, ili);
    g.cb(k_cur, "Kcur_normed", ili);

    let q_cur = g.ctx.rope(q_cur, inp_pos, None);
    let k_cur = g.ctx.rope(k_cur, inp_pos, None);
    g.cb(q_cur, "Qcur", ili);
    g.cb(k_cur, "Kcur", ili);
    g.cb(v_cur, "Vcur", ili);

    let mut cur = g.build_attn(inp, None, None, q_cur, k_cur, v_cur, None, None, il);
    g.cb(cur, "attn_pregate", ili);

    // TODO upstream: CUDA lacks non-contiguous unary ops, hence the cont
    let gate = g.ctx.cont_4d(gate, [n_embd_head * n_head, n_tokens, 1, 1]);
    let gate = g.ctx.unary(gate, Unary::Sigmoid);
    g.cb(gate, "gate_sigmoid", ili);

    cur = g.ctx.mul(cur, gate);
    g.cb(cur, "attn_gated", ili);

    if let Some(wo) = g.layer_weight(il, "attn_output.weight") {
        cur = g.build_lora_mm(wo, cur, None);
    }
    g.cb(cur, "attn_output", ili);
    cur
}

/// `build_qkvz` (src/models/qwen3next.cpp:344-386): the mixed QKV projection and the gate `z`, from
/// the fused `attn_qkv` / `attn_gate` weights or, in legacy GGUFs, from `ssm_in` split and
/// concatenated.
fn build_qkvz(g: &mut LlmGraph<'_>, dn: &Dn, input: TensorId, il: usize) -> (TensorId, TensorId) {
    let ili = il as i32;
    let n_seqs = g.ubatch.n_seqs;
    let n_seq_tokens = g.ubatch.n_tokens / n_seqs;

    if let Some(wqkv) = g.layer_weight(il, "attn_qkv.weight") {
        let qkv_mixed = g.build_lora_mm(wqkv, input, None);
        let ne0 = g.ctx.ne(qkv_mixed)[0];
        let qkv_mixed = g.ctx.reshape(qkv_mixed, &[ne0, n_seq_tokens, n_seqs]);
        g.cb(qkv_mixed, "linear_attn_qkv_mixed", ili);

        let z = if let Some(w) = g.layer_weight(il, "attn_gate.weight") {
            g.build_lora_mm(w, input, None)
        } else {
            g.ctx.check(false, |_| format!("qwen3next: layer {il} has attn_qkv but no attn_gate"));
            input
        };
        g.cb(z, "z", ili);
        return (qkv_mixed, z);
    }

    // legacy (slower) path
    let Some(ssm_in) = g.layer_weight(il, "ssm_in.weight") else {
        g.ctx.check(false, |_| format!("qwen3next: layer {il} has neither attn_qkv nor ssm_in"));
        return (input, input);
    };
    let (hk, nk, hv, nv) = (dn.head_k_dim, dn.num_k_heads, dn.head_v_dim, dn.num_v_heads);
    let mixed_qkvz = g.build_lora_mm(ssm_in, input, None);
    g.cb(mixed_qkvz, "linear_attn_mixed_qkvz", ili);

    let qkvz_new_dim = 2 * hk + 2 * hv * (nv / nk);
    let r = g.ctx.reshape(mixed_qkvz, &[qkvz_new_dim, nk, n_seq_tokens, n_seqs]);
    let split = [hk, hk, hv * nv / nk, hv * nv / nk];
    let nb = g.ctx.nb(r);
    let es = g.ctx.t(r).ty.type_size();

    let query = g.ctx.view(r, &[split[0], nk, n_seq_tokens, n_seqs], &nb[1..], 0);
    g.cb(query, "q", ili);
    let key = g.ctx.view(r, &[split[1], nk, n_seq_tokens, n_seqs], &nb[1..], split[0] as u64 * es);
    g.cb(key, "k", ili);
    let value =
        g.ctx.view(r, &[split[2], nk, n_seq_tokens, n_seqs], &nb[1..], (split[0] + split[1]) as u64 * es);
    g.cb(value, "v", ili);
    let z = g.ctx.view(
        r,
        &[split[3], nk, n_seq_tokens, n_seqs],
        &nb[1..],
        (split[0] + split[1] + split[2]) as u64 * es,
    );
    let z = g.ctx.cont(z);
    g.cb(z, "z", ili);

    let query_flat = g.ctx.cont_4d(query, [hk * nk, n_seq_tokens, n_seqs, 1]);
    g.cb(query_flat, "query_flat", ili);
    let key_flat = g.ctx.cont_4d(key, [hk * nk, n_seq_tokens, n_seqs, 1]);
    g.cb(key_flat, "key_flat", ili);
    let value_flat = g.ctx.cont_4d(value, [hv * nv, n_seq_tokens, n_seqs, 1]);
    g.cb(value_flat, "value_flat", ili);

    let qkv_mixed = g.ctx.concat(query_flat, key_flat, 0);
    let qkv_mixed = g.ctx.concat(qkv_mixed, value_flat, 0);
    g.cb(qkv_mixed, "qkv_mixed", ili);
    (qkv_mixed, z)
}

/// `ggml_row_size`.
fn row_size(g: &LlmGraph<'_>, t: TensorId, n: i64) -> u64 {
    let ty = g.ctx.t(t).ty;
    ty.type_size() * n as u64 / ty.block_size()
}

/// `build_gdn_l2_norm` (src/models/models.h:14-18): an RMS norm scaled to an L2 norm.
fn build_gdn_l2_norm(g: &mut LlmGraph<'_>, x: TensorId) -> TensorId {
    let n = g.ctx.rms_norm(x);
    g.ctx.scale(n)
}

/// `build_layer_attn_linear` (src/models/qwen3next.cpp:388-550): a gated DeltaNet layer, with its
/// convolution and recurrent states read from and written back to the recurrent memory.
fn build_layer_attn_linear(
    g: &mut LlmGraph<'_>,
    inp: &mut RsInput,
    dn: &Dn,
    cur: TensorId,
    il: usize,
) -> TensorId {
    let ili = il as i32;
    let n_seqs = g.ubatch.n_seqs;
    let n_seq_tokens = g.ubatch.n_tokens / n_seqs;
    let (hk, nk, hv, nv) = (dn.head_k_dim, dn.num_k_heads, dn.head_v_dim, dn.num_v_heads);
    let n_embd = i64::from(g.model.n_embd);

    let (qkv_mixed, z) = build_qkvz(g, dn, cur, il);

    let Some(w_ba) = g.layer_weight(il, "ssm_ba.weight") else {
        g.ctx.check(false, |_| format!("qwen3next: layer {il} has no ssm_ba"));
        return cur;
    };
    let mixed_ba = g.build_lora_mm(w_ba, cur, None);
    g.cb(mixed_ba, "linear_attn_mixed_ba", ili);

    let ba_new_dim = 2 * nv / nk;
    let mixed_ba_r = g.ctx.reshape(mixed_ba, &[ba_new_dim, nk, n_seq_tokens, n_seqs]);
    let split_ba = [nv / nk, nv / nk];
    let nb = g.ctx.nb(mixed_ba_r);
    let es = g.ctx.t(mixed_ba_r).ty.type_size();

    let b = g.ctx.view(mixed_ba_r, &[split_ba[0], nk, n_seq_tokens, n_seqs], &nb[1..], 0);
    g.cb(b, "b", ili);
    let a =
        g.ctx.view(mixed_ba_r, &[split_ba[1], nk, n_seq_tokens, n_seqs], &nb[1..], split_ba[0] as u64 * es);
    g.cb(a, "a", ili);

    // TODO upstream: CUDA lacks non-contiguous unary ops, hence the cont
    let b = g.ctx.cont(b);
    let beta = g.ctx.unary(b, Unary::Sigmoid);

    let alpha = g.ctx.cont_4d(a, [nv, n_seq_tokens, n_seqs, 1]);
    let ssm_dt = g.layer_weight(il, "ssm_dt.bias");
    let ssm_a = g.layer_weight(il, "ssm_a");
    let (Some(ssm_dt), Some(ssm_a)) = (ssm_dt, ssm_a) else {
        g.ctx.check(false, |_| format!("qwen3next: layer {il} has no ssm_dt / ssm_a"));
        return cur;
    };
    let alpha_biased = g.ctx.add(alpha, ssm_dt);
    let alpha_softplus = g.ctx.unary(alpha_biased, Unary::Softplus);
    g.cb(alpha_softplus, "a_softplus", ili);
    let gate = g.ctx.mul(alpha_softplus, ssm_a);
    g.cb(gate, "gate", ili);

    let beta = g.ctx.reshape(beta, &[1, nv, n_seq_tokens, n_seqs]);
    let gate = g.ctx.reshape(gate, &[1, nv, n_seq_tokens, n_seqs]);

    let conv_states_all = inp.r_l(g, il);
    let ssm_states_all = inp.s_l(g, il);

    let Some(conv_kernel) = g.layer_weight(il, "ssm_conv1d.weight") else {
        g.ctx.check(false, |_| format!("qwen3next: layer {il} has no ssm_conv1d"));
        return cur;
    };
    let conv_kernel_size = g.ctx.ne(conv_kernel)[0];
    let conv_channels = dn.d_inner + 2 * nk * hk;

    let conv_input =
        build_conv_state(g, inp, conv_states_all, qkv_mixed, conv_kernel_size, conv_channels, il);

    let n_embd_s = g.model.layers[il].n_embd_s as i64;
    let state = build_rs(g, inp, ssm_states_all, n_embd_s, n_seqs);
    let state = g.ctx.reshape(state, &[hv, hv, nv, n_seqs]);
    g.cb(state, "state_predelta", ili);

    let conv_output = g.ctx.ssm_conv(conv_input, conv_kernel);
    g.cb(conv_output, "conv_output_raw", ili);
    let conv_silu = g.ctx.unary(conv_output, Unary::Silu);
    g.cb(conv_silu, "conv_output_silu", ili);

    let qkv_dim = hk * nk * 2 + hv * nv;
    let nb1_qkv = row_size(g, conv_silu, qkv_dim);
    let es = g.ctx.t(conv_silu).ty.type_size();

    let strides = |head: u64| [head, nb1_qkv, nb1_qkv * n_seq_tokens as u64];
    let q_conv =
        g.ctx.view(conv_silu, &[hk, nk, n_seq_tokens, n_seqs], &strides(row_size(g, conv_silu, hk)), 0);
    let k_conv = g.ctx.view(
        conv_silu,
        &[hk, nk, n_seq_tokens, n_seqs],
        &strides(row_size(g, conv_silu, hk)),
        (hk * nk) as u64 * es,
    );
    let v_conv = g.ctx.view(
        conv_silu,
        &[hv, nv, n_seq_tokens, n_seqs],
        &strides(row_size(g, conv_silu, hv)),
        row_size(g, conv_silu, 2 * hk * nk),
    );
    g.cb(q_conv, "q_conv", ili);
    g.cb(k_conv, "k_conv", ili);
    g.cb(v_conv, "v_conv", ili);

    let mut q_conv = build_gdn_l2_norm(g, q_conv);
    let mut k_conv = build_gdn_l2_norm(g, k_conv);

    // repeat the key heads to the value heads (src/models/qwen3next.cpp:498-520)
    if nk != nv {
        let repeat_factor = nv / nk;
        let q_r = g.ctx.reshape(q_conv, &[hk, 1, nk, n_seq_tokens * n_seqs]);
        let k_r = g.ctx.reshape(k_conv, &[hk, 1, nk, n_seq_tokens * n_seqs]);
        let q_rep = g.ctx.repeat_4d(q_r, [hk, repeat_factor, nk, n_seq_tokens * n_seqs]);
        let k_rep = g.ctx.repeat_4d(k_r, [hk, repeat_factor, nk, n_seq_tokens * n_seqs]);
        q_conv = g.ctx.reshape(q_rep, &[hk, nk * repeat_factor, n_seq_tokens, n_seqs]);
        k_conv = g.ctx.reshape(k_rep, &[hk, nk * repeat_factor, n_seq_tokens, n_seqs]);
    }

    g.cb(q_conv, "q_conv_predelta", ili);
    g.cb(k_conv, "k_conv_predelta", ili);
    g.cb(v_conv, "v_conv_predelta", ili);

    let output =
        build_recurrent_attn(g, inp, ssm_states_all, [q_conv, k_conv, v_conv, gate, beta, state], il);

    let z_2d = g.ctx.reshape(z, &[hv, nv, n_seq_tokens, n_seqs]);

    // build_norm_gated (src/models/qwen3next.cpp:247-256)
    let ssm_norm = g.layer_weight(il, "ssm_norm.weight");
    let normalized = g.build_norm(output, ssm_norm, None, NormType::Rms, ili);
    let gated_silu = g.ctx.unary(z_2d, Unary::Silu);
    let attn_out_norm = g.ctx.mul(normalized, gated_silu);

    let final_output = g.ctx.reshape(attn_out_norm, &[hv * nv, n_seq_tokens, n_seqs]);
    g.cb(final_output, "final_output", ili);

    let mut cur = final_output;
    if let Some(w) = g.layer_weight(il, "ssm_out.weight") {
        cur = g.build_lora_mm(w, final_output, None);
    }
    g.cb(cur, "linear_attn_out", ili);

    g.ctx.reshape(cur, &[n_embd, n_seq_tokens * n_seqs])
}

/// `build_conv_state` (src/models/delta-net-base.cpp:448-530): the convolution input (the layer's
/// previous convolution state, then the new tokens) and the write-back of its last columns into the
/// memory, one copy per rollback slot.
fn build_conv_state(
    g: &mut LlmGraph<'_>,
    inp: &RsInput,
    conv_states_all: TensorId,
    qkv_mixed: TensorId,
    conv_kernel_size: i64,
    conv_channels: i64,
    il: usize,
) -> TensorId {
    let ili = il as i32;
    let (kv_head, mem_size) = (u64::from(inp.head), u64::from(inp.size));
    let n_seqs = g.ubatch.n_seqs;

    let n_embd_r = g.model.layers[il].n_embd_r as i64;
    let conv_states = build_rs(g, inp, conv_states_all, n_embd_r, n_seqs);
    g.cb(conv_states, "conv_states", ili);

    let conv_states = g.ctx.reshape(conv_states, &[conv_kernel_size - 1, conv_channels, n_seqs]);
    g.cb(conv_states, "conv_states_reshaped", ili);

    let qkv_t = g.ctx.transpose(qkv_mixed);
    g.cb(qkv_t, "qkv_mixed_transposed", ili);

    let conv_input = g.ctx.concat(conv_states, qkv_t, 0);
    g.cb(conv_input, "conv_input", ili);

    let row_count = (conv_kernel_size - 1) * conv_channels;
    let row = row_size(g, conv_states_all, row_count);
    let in_nb = g.ctx.nb(conv_input);
    let all_nb1 = g.ctx.nb(conv_states_all)[1];
    let (in_ne0, st_ne0) = (g.ctx.ne(conv_input)[0], g.ctx.ne(conv_states)[0]);

    if g.context.n_rs_seq == 0 {
        let s_idx = in_ne0 - st_ne0;
        let s_slot = 0u64;
        let last = g.ctx.view(
            conv_input,
            &[conv_kernel_size - 1, conv_channels, n_seqs],
            &[in_nb[1], in_nb[2]],
            row_size(g, conv_input, s_idx),
        );
        g.cb(last, "conv_state_last", ili);
        let update = g.ctx.view(
            conv_states_all,
            &[row_count, n_seqs],
            &[all_nb1],
            (s_slot * mem_size + kv_head) * row,
        );
        g.cb(update, "conv_state_update", ili);
        let c = g.ctx.cpy(last, update);
        g.expand(c);
    } else {
        // [TAG_RECURRENT_ROLLBACK_SPLITS]: one copy per snapshot slot
        let k = i64::from(g.context.n_rs_seq) + 1;
        for t in 1..=k {
            let s_idx = (in_ne0 - st_ne0 - k + t).max(0);
            let s_slot = (k - t) as u64;
            let last = g.ctx.view(
                conv_input,
                &[conv_kernel_size - 1, conv_channels, n_seqs],
                &[in_nb[1], in_nb[2]],
                row_size(g, conv_input, s_idx),
            );
            let update = g.ctx.view(
                conv_states_all,
                &[row_count, n_seqs],
                &[all_nb1],
                (s_slot * mem_size + kv_head) * row,
            );
            let c = g.ctx.cpy(last, update);
            g.expand(c);
        }
    }
    conv_input
}

/// `build_recurrent_attn` (src/models/delta-net-base.cpp:532-606) with the fused delta net
/// (`build_delta_net_fused`, 358-407): the attention output, with the new state (or the rollback
/// snapshots) copied into the recurrent memory. `qkvgbs` is `q, k, v, g, b, s`.
#[allow(clippy::many_single_char_names)] // llama.cpp's names
fn build_recurrent_attn(
    g: &mut LlmGraph<'_>,
    inp: &RsInput,
    ssm_states_all: TensorId,
    qkvgbs: [TensorId; 6],
    il: usize,
) -> TensorId {
    let ili = il as i32;
    let [q, k, v, gate, b, s] = qkvgbs;
    let (kv_head, mem_size) = (u64::from(inp.head), u64::from(inp.size));
    let s_ne = g.ctx.ne(s);
    let (s_v, h_v, n_seqs) = (s_ne[0], s_ne[2], s_ne[3]);
    let n_seq_tokens = g.ctx.ne(q)[2];
    let n_embd_s = g.model.layers[il].n_embd_s as i64;
    let es = g.ctx.t(ssm_states_all).ty.type_size();
    let states_nb1 = g.ctx.nb(ssm_states_all)[1];

    if g.context.n_rs_seq == 0 {
        // build_delta_net_fused: K = 1, the output carries the final state only
        let result = g.ctx.gated_delta_net(q, k, v, gate, b, s, 1);
        let ty = g.ctx.t(result).ty;
        let rs = |n: i64| ty.type_size() * n as u64 / ty.block_size();
        let (r1, r2, r3) = (rs(s_v), rs(s_v * h_v), rs(s_v * h_v * n_seq_tokens));
        let output = g.ctx.view(result, &[s_v, h_v, n_seq_tokens, n_seqs], &[r1, r2, r3], 0);
        let (n1, n2, n3, off) =
            (rs(s_v), rs(s_v * s_v), rs(s_v * s_v * h_v), rs(s_v * h_v * n_seq_tokens * n_seqs));
        let new_state = g.ctx.view(result, &[s_v, s_v, h_v, n_seqs], &[n1, n2, n3], off);
        g.cb(output, "attn_output", ili);
        g.cb(new_state, "new_state", ili);

        let dst =
            g.ctx.view(ssm_states_all, &[n_embd_s, n_seqs], &[states_nb1], kv_head * n_embd_s as u64 * es);
        let c = g.ctx.cpy(new_state, dst);
        g.expand(c);
        return output;
    }

    let d = s_v * s_v * h_v;
    let kk = i64::from(g.context.n_rs_seq) + 1;
    let gdn_out = g.ctx.gated_delta_net(q, k, v, gate, b, s, kk);
    let ty = g.ctx.t(gdn_out).ty;
    let rs = |n: i64| ty.type_size() * n as u64 / ty.block_size();

    let attn_score_elems = s_v * h_v * n_seq_tokens * n_seqs;
    let state_size_per_snap = s_v * s_v * h_v * n_seqs;
    let (r1, r2, r3) = (rs(s_v), rs(s_v * h_v), rs(s_v * h_v * n_seq_tokens));
    let output = g.ctx.view(gdn_out, &[s_v, h_v, n_seq_tokens, n_seqs], &[r1, r2, r3], 0);
    g.cb(output, "attn_output", ili);

    let row = n_embd_s as u64 * es;
    let n_written = n_seq_tokens.min(kk);
    let (d1, d2, doff) = (rs(d), rs(state_size_per_snap), rs(attn_score_elems));
    let src = g.ctx.view(gdn_out, &[d, n_seqs, n_written], &[d1, d2], doff);
    let dst =
        g.ctx.view(ssm_states_all, &[d, n_seqs, n_written], &[states_nb1, mem_size * row], kv_head * row);
    let c = g.ctx.cpy(src, dst);
    g.expand(c);
    output
}

/// `build_layer_ffn` (src/models/qwen3next.cpp:552-610): the routed experts and, when present, the
/// shared expert scaled by its sigmoid gate; a dense FFN for a layer without a router.
fn build_layer_ffn(g: &mut LlmGraph<'_>, cur: TensorId, il: usize) -> TensorId {
    let ili = il as i32;
    let Some(gate_inp) = g.layer_weight(il, "ffn_gate_inp.weight") else {
        let w = FfnWeights {
            up: g.layer_weight(il, "ffn_up.weight"),
            gate: g.layer_weight(il, "ffn_gate.weight"),
            down: g.layer_weight(il, "ffn_down.weight"),
            ..FfnWeights::default()
        };
        let out = g.build_ffn(cur, &w, FfnOp::Silu, FfnGate::Par, 0.0, ili);
        g.cb(out, "ffn_out", ili);
        return out;
    };

    let layer = &g.model.layers[il];
    let mut p = MoeFfn::new(
        i64::from(g.model.n_expert),
        i64::from(layer.n_expert_used),
        FfnOp::Silu,
        GatingFunc::Softmax,
    );
    p.gate_inp = Some(gate_inp);
    p.up_exps = g.layer_weight(il, "ffn_up_exps.weight");
    p.gate_exps = g.layer_weight(il, "ffn_gate_exps.weight");
    p.down_exps = g.layer_weight(il, "ffn_down_exps.weight");
    p.gate_up_exps = g.layer_weight(il, "ffn_gate_up_exps.weight");
    p.norm_w = true;
    p.w_scale = g.model.expert_weights_scale;
    let moe_out = g.build_moe_ffn(cur, &p, ili);
    g.cb(moe_out, "ffn_moe_out", ili);

    let Some(up_shexp) = g.layer_weight(il, "ffn_up_shexp.weight") else {
        return moe_out;
    };
    let w = FfnWeights {
        up: Some(up_shexp),
        gate: g.layer_weight(il, "ffn_gate_shexp.weight"),
        down: g.layer_weight(il, "ffn_down_shexp.weight"),
        ..FfnWeights::default()
    };
    let mut shexp = g.build_ffn(cur, &w, FfnOp::Silu, FfnGate::Par, 0.0, ili);
    g.cb(shexp, "ffn_shexp", ili);

    if let Some(gate_shexp) = g.layer_weight(il, "ffn_gate_inp_shexp.weight") {
        let shared_gate = g.build_lora_mm(gate_shexp, cur, None);
        g.cb(shared_gate, "shared_expert_gate", ili);
        let shared_gate = g.ctx.unary(shared_gate, Unary::Sigmoid);
        g.cb(shared_gate, "shared_expert_gate_sigmoid", ili);
        shexp = g.ctx.mul(shexp, shared_gate);
        g.cb(shexp, "ffn_shexp_gated", ili);
    }

    let out = g.ctx.add(moe_out, shexp);
    g.cb(out, "ffn_out", ili);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::ReadOptions;
    use crate::layout::{BuildOptions, LayoutSpec};
    use crate::memory::sim::build::Ubatch;
    use crate::memory::{GpuAtLoad, ResolvedContext, ResolvedPlacement, context, devices, overrides};
    use crate::model::ModelDescription;
    use crate::settings::ServerSettings;
    use crate::units::Bytes;

    /// The free memory llama-fit-params saw on the ground-truth machine (tests/support/ground_truth.rs).
    const DRY_RUN_FREE_MIB: [(&str, u64); 2] = [("CUDA0", 23_557), ("CUDA1", 14_477)];

    fn q5() -> ModelDescription {
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let text = std::fs::read_to_string(root.join("fixtures/layouts/qwen3-coder-next.toml")).unwrap();
        let spec = LayoutSpec::parse(&text).unwrap();
        let mut layout = spec.build("UD-Q5_K_XL", &BuildOptions::default()).unwrap();
        layout.split = None;
        let gguf = layout.to_model(&ReadOptions::default()).unwrap();
        ModelDescription::from_gguf(&gguf).unwrap()
    }

    fn setup(
        model: &ModelDescription,
        argv: &[String],
        n_gpus: usize,
    ) -> (ServerSettings, ResolvedContext, ResolvedPlacement) {
        let settings = ServerSettings::from_args(argv).unwrap();
        let gpus: Vec<GpuAtLoad> =
            DRY_RUN_FREE_MIB[..n_gpus].iter().map(|&(n, m)| GpuAtLoad::new(n, Bytes::from_mib(m))).collect();
        let mut patterns = overrides::PatternMatches::default();
        let resolved = patterns.resolve(model, &settings.overrides, &gpus).unwrap();
        let mut ctx = context::resolve(model, &settings).unwrap();
        ctx.n_outputs = ctx.n_ubatch;
        let placement = devices::place_layers(model, &settings, &gpus).unwrap();
        let placement = overrides::place_tensors(model, placement, &resolved, settings.loads_mtp_layers());
        (settings, ctx, placement)
    }

    /// One node: op, type, shape, name.
    type Sig = (String, String, [i64; 4], String);

    /// The `@@N` nodes of a trace without the scheduler's copies.
    fn trace_nodes(text: &str) -> Vec<Sig> {
        let mut out = Vec::new();
        for line in text.lines().filter(|l| l.starts_with("@@N ")) {
            let mut parts = line.splitn(3, '|');
            let head: Vec<&str> = parts.next().unwrap().split_whitespace().collect();
            let name = parts.next().unwrap().to_owned();
            if head[3] == "NONE" {
                continue;
            }
            let ne = [0, 1, 2, 3].map(|i| head[5 + i].parse::<i64>().unwrap());
            out.push((head[3].to_owned(), head[4].to_ascii_lowercase(), ne, name));
        }
        out
    }

    fn sim_nodes(g: &LlmGraph<'_>) -> Vec<Sig> {
        g.gf.nodes
            .iter()
            .map(|&id| {
                let t = g.ctx.t(id);
                (t.op.desc().to_owned(), t.ty.name().to_ascii_lowercase(), t.ne, g.ctx.name(id).to_owned())
            })
            .collect()
    }

    /// A committed trace subset (fixtures/ground-truth/traces/q5/): its header (`## {json}`: row,
    /// gpus, argv, measured MiB) and its `@@R`/`@@B`/`@@N`/`@@M` lines.
    struct TraceFile {
        row: String,
        argv: Vec<String>,
        gpus: usize,
        /// `n_tokens, n_seqs, n_outputs` of the reservation traced, when not the dry run's.
        ubatch: Option<Ubatch>,
        text: String,
    }

    /// Dry runs: one or two GPUs, experts on the CPU, layers on the CPU, 4 sequences, flash attention
    /// off with an F16 cache, the KV cache on the host, micro-batches of 512 to 4096; and the
    /// token-generation reservation of a real load (`q5-l05-tg`, the fused autoregressive path).
    const COMMITTED: [&str; 8] =
        ["q5-t01", "q5-d01", "q5-v04", "q5-v05", "q5-d29", "q5-w01", "q5-v10", "q5-l05-tg"];

    fn read_committed(row: &str) -> TraceFile {
        use std::io::Read as _;
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let path = root.join(format!("fixtures/ground-truth/traces/q5/{row}.trace.gz"));
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut text = String::new();
        flate2::read::GzDecoder::new(file).read_to_string(&mut text).unwrap();
        let header = text.lines().next().and_then(|l| l.strip_prefix("## ")).unwrap();
        let v: serde_json::Value = serde_json::from_str(header).unwrap();
        let argv = v["argv"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect();
        let ubatch = v["ubatch"].as_array().map(|u| {
            let n = |i: usize| u[i].as_i64().unwrap();
            Ubatch { n_tokens: n(0), n_seqs: n(1), n_outputs: n(2) }
        });
        TraceFile { row: row.to_owned(), argv, gpus: v["gpus"].as_u64().unwrap() as usize, ubatch, text }
    }

    /// A full trace of /tmp/tr (the unpacked fixtures/ground-truth/traces/*.tar.xz).
    fn read_unpacked(row: &str) -> TraceFile {
        let text = std::fs::read_to_string(format!("/tmp/tr/state/rows/{row}.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let argv = v["argv"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect();
        let text = std::fs::read_to_string(format!("/tmp/tr/state/logs/{row}.log")).unwrap();
        TraceFile {
            row: row.to_owned(),
            argv,
            gpus: v["gpus"].as_u64().unwrap() as usize,
            ubatch: None,
            text,
        }
    }

    /// The dry run's graph of `tf`'s configuration (one reservation: n_ubatch tokens, all outputs).
    fn with_graph<R>(model: &ModelDescription, tf: &TraceFile, f: impl FnOnce(&LlmGraph<'_>) -> R) -> R {
        let (settings, ctx, placement) = setup(model, &tf.argv, tf.gpus);
        let n_seqs = if ctx.kv_unified { 1 } else { i64::from(ctx.n_seq) };
        let ubatch = tf.ubatch.unwrap_or(Ubatch {
            n_tokens: i64::from(ctx.n_ubatch),
            n_seqs,
            n_outputs: i64::from(ctx.n_outputs),
        });
        let mut g = LlmGraph::new(model, &settings, &ctx, &placement, ubatch);
        build(&mut g);
        f(&g)
    }

    fn compare_row(model: &ModelDescription, tf: &TraceFile) -> Result<usize, String> {
        let row = &tf.row;
        let got = with_graph(model, tf, |g| g.ctx.error.clone().map_or_else(|| Ok(sim_nodes(g)), Err));
        let got = got.map_err(|e| format!("{row}: {e}"))?;
        let want = unrotate_shexp(trace_nodes(&tf.text));
        for (i, (w, s)) in want.iter().zip(&got).enumerate() {
            if w != s {
                let lo = i.saturating_sub(3);
                let ctx_w: Vec<_> = want[lo..(i + 4).min(want.len())].iter().collect();
                let ctx_s: Vec<_> = got[lo..(i + 4).min(got.len())].iter().collect();
                return Err(format!("{row}: node {i} differs\n trace {ctx_w:?}\n sim   {ctx_s:?}"));
            }
        }
        if want.len() != got.len() {
            return Err(format!("{row}: {} nodes traced, {} simulated", want.len(), got.len()));
        }
        Ok(got.len())
    }

    /// The graph of every committed q5 dry run, node for node as llama.cpp built it.
    #[test]
    fn nodes_match_committed_traces() {
        let model = q5();
        let failures: Vec<String> =
            COMMITTED.iter().filter_map(|row| compare_row(&model, &read_committed(row)).err()).collect();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// Undoes the CUDA backend's `graph_optimize` rotation of a shared expert's gate, up and GLU next
    /// to the routed experts' (ggml-cuda.cu:4626-4645): the three nodes go back before `ffn_shexp-il`.
    fn unrotate_shexp(mut nodes: Vec<Sig>) -> Vec<Sig> {
        let mut i = 0;
        while i + 6 <= nodes.len() {
            let rotated = nodes[i].0 == "MUL_MAT_ID"
                && nodes[i + 1].0 == "MUL_MAT_ID"
                && nodes[i + 3].0 == "MUL_MAT"
                && nodes[i + 3].3.starts_with("ffn_gate-");
            if rotated {
                let il = nodes[i + 3].3["ffn_gate-".len()..].to_owned();
                let block: Vec<Sig> = nodes.drain(i + 3..i + 6).collect();
                let target = format!("ffn_shexp-{il}");
                if let Some(at) = nodes.iter().skip(i).position(|n| n.3 == target) {
                    let at = i + at;
                    nodes.splice(at..at, block);
                }
            }
            i += 1;
        }
        nodes
    }

    /// Every q5 dry run of the unpacked traces (/tmp/tr, from fixtures/ground-truth/traces/*.tar.xz),
    /// or the rows named in `Q3N_ROWS`.
    #[test]
    #[ignore = "reads the unpacked traces in /tmp/tr"]
    fn nodes_match_unpacked_traces() {
        let model = q5();
        let rows: Vec<String> = if let Ok(v) = std::env::var("Q3N_ROWS") {
            v.split(',').map(str::to_owned).collect()
        } else {
            let mut r: Vec<String> = std::fs::read_dir("/tmp/tr/state/logs")
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".log").map(str::to_owned))
                .filter(|n| n.starts_with("q5-"))
                .collect();
            r.sort();
            r
        };
        let failures: Vec<String> =
            rows.iter().filter_map(|row| compare_row(&model, &read_unpacked(row)).err()).collect();
        assert!(
            failures.is_empty(),
            "{} of {} rows differ:\n{}",
            failures.len(),
            rows.len(),
            failures.join("\n")
        );
    }
}
