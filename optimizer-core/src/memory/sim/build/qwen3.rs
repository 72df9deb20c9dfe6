//! The `qwen3` architecture's graph (src/models/qwen3.cpp:52-159): llama's layout with RMS norms of
//! Q and K before RoPE and no rope factors.

use super::ffn::{FfnGate, FfnOp, FfnWeights};
use super::{LlmGraph, NormType};

/// Builds the graph of a `qwen3` model into `g`.
pub fn build(g: &mut LlmGraph<'_>) {
    let n_layer = g.n_layer();
    let mut inp_l = g.build_inp_embd();
    let inp_pos = g.build_inp_pos();
    let inp_attn = g.build_attn_inp_kv();
    let inp_out_ids = g.build_inp_out_ids();

    for il in 0..n_layer {
        let ili = il as i32;
        let layer = &g.model.layers[il];
        let (n_embd_head, n_head, n_head_kv) =
            (i64::from(layer.head_dim_v), i64::from(layer.n_head), i64::from(layer.n_head_kv));
        let mut inp_sa = inp_l;

        let attn_norm = g.layer_weight(il, "attn_norm.weight");
        let mut cur = g.build_norm(inp_l, attn_norm, None, NormType::Rms, ili);
        g.cb(cur, "attn_norm", ili);

        {
            let (q, k, v) = g.build_qkv(il, cur, n_embd_head, n_head, n_head_kv);
            let q_norm = g.layer_weight(il, "attn_q_norm.weight");
            let q = g.build_norm(q, q_norm, None, NormType::Rms, ili);
            g.cb(q, "Qcur_normed", ili);
            let q = g.ctx.rope(q, inp_pos, None);
            let k_norm = g.layer_weight(il, "attn_k_norm.weight");
            let k = g.build_norm(k, k_norm, None, NormType::Rms, ili);
            g.cb(k, "Kcur_normed", ili);
            let k = g.ctx.rope(k, inp_pos, None);
            g.cb(q, "Qcur", ili);
            g.cb(k, "Kcur", ili);
            g.cb(v, "Vcur", ili);
            let wo = g.layer_weight(il, "attn_output.weight");
            let wo_b = g.layer_weight(il, "attn_output.bias");
            cur = g.build_attn(&inp_attn, wo, wo_b, q, k, v, None, None, il);
        }
        if il == n_layer - 1 {
            cur = g.ctx.get_rows(cur, inp_out_ids);
            inp_sa = g.ctx.get_rows(inp_sa, inp_out_ids);
        }
        let ffn_inp = g.ctx.add(cur, inp_sa);
        g.cb(ffn_inp, "ffn_inp", ili);

        let ffn_norm = g.layer_weight(il, "ffn_norm.weight");
        cur = g.build_norm(ffn_inp, ffn_norm, None, NormType::Rms, ili);
        g.cb(cur, "ffn_norm", ili);
        let w = FfnWeights {
            up: g.layer_weight(il, "ffn_up.weight"),
            gate: g.layer_weight(il, "ffn_gate.weight"),
            down: g.layer_weight(il, "ffn_down.weight"),
            ..FfnWeights::default()
        };
        cur = g.build_ffn(cur, &w, FfnOp::Silu, FfnGate::Par, 0.0, ili);
        g.cb(cur, "ffn_out", ili);

        cur = g.ctx.add(cur, ffn_inp);
        g.cb(cur, "l_out", ili);
        inp_l = cur;
    }

    let output_norm = g.weight("output_norm.weight");
    let cur = g.build_norm(inp_l, output_norm, None, NormType::Rms, -1);
    g.cb(cur, "result_norm", -1);
    let output = g.output_weight();
    g.build_result(cur, output);
}
