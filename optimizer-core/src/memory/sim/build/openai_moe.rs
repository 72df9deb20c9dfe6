//! The `gpt-oss` architecture's graph (src/models/openai-moe.cpp:57-176): sliding-window and full
//! attention layers alternating over two KV caches (`build_attn_inp_kv_iswa`), attention sinks, biases
//! on Q, K, V and the output, a post-attention norm, and a MoE FFN with a biased router, softmax over
//! the selected experts' logits, biased experts and the clamped SwiGLU of `LLM_FFN_SWIGLU_OAI_MOE`.
//!
//! Over the builder core's inputs and attention (`build_inp_embd`, `build_attn_inp_kv_iswa`,
//! `build_qkv`, `build_attn` with sinks) and ffn.rs's `build_moe_ffn`: node for node (order, op,
//! type, shape, name, sources) with all 24 traced gpt-oss dry runs from the first node to
//! `result_output` (build/tests.rs; fixtures/ground-truth/traces/nodes/oss-*.full.nodes are the
//! committed subsets, layers 0-1 and 35).

use super::ffn::{FfnOp, GatingFunc, MoeFfn};
use super::{LlmGraph, NormType};

/// Builds the graph of a `gpt-oss` model into `g` (llama_model_openai_moe::graph,
/// src/models/openai-moe.cpp:61-176).
///
/// `cparams.embeddings_nextn_masked` is off (it is for MTP drafts, which gpt-oss has none of), so the
/// outputs are gathered after the last layer; no control vector is loaded, so `build_cvec` adds
/// nothing; `hparams.expert_weights_scale` is unset for gpt-oss (no `SCALE` node).
pub fn build(g: &mut LlmGraph<'_>) {
    let n_layer = g.n_layer();
    let mut inp_l = g.build_inp_embd();
    let inp_pos = g.build_inp_pos();
    let inp_attn = g.build_attn_inp_kv_iswa();
    let inp_out_ids = g.build_inp_out_ids();
    let n_expert = i64::from(g.model.n_expert);
    let n_expert_used = i64::from(g.model.n_expert_used);

    for il in 0..n_layer {
        let ili = il as i32;
        let layer = &g.model.layers[il];
        // gpt-oss: n_rot == n_embd_head (openai-moe.cpp:39-40 creates Q/K/V with n_head * n_rot)
        let (n_rot, n_head, n_head_kv) =
            (i64::from(g.model.n_rot), i64::from(layer.n_head), i64::from(layer.n_head_kv));
        let inp_sa = inp_l;

        let attn_norm = g.layer_weight(il, "attn_norm.weight");
        let mut cur = g.build_norm(inp_l, attn_norm, None, NormType::Rms, ili);
        g.cb(cur, "attn_norm", ili);

        {
            let (q, k, v) = g.build_qkv(il, cur, n_rot, n_head, n_head_kv);
            // ggml_rope_ext with the layer's own frequency (the sliding-window layers may have
            // their own base): the shape is the same
            let q = g.ctx.rope(q, inp_pos, None);
            let k = g.ctx.rope(k, inp_pos, None);
            g.cb(q, "Qcur", ili);
            g.cb(k, "Kcur", ili);
            g.cb(v, "Vcur", ili);
            let wo = g.layer_weight(il, "attn_output.weight");
            let wo_b = g.layer_weight(il, "attn_output.bias");
            let sinks = g.layer_weight(il, "attn_sinks.weight");
            cur = g.build_attn(&inp_attn, wo, wo_b, q, k, v, None, sinks, il);
            g.cb(cur, "attn_out", ili);
        }
        let ffn_inp = g.ctx.add(cur, inp_sa);
        g.cb(ffn_inp, "ffn_inp", ili);

        let post_norm = g.layer_weight(il, "post_attention_norm.weight");
        cur = g.build_norm(ffn_inp, post_norm, None, NormType::Rms, ili);
        g.cb(cur, "attn_post_norm", ili);

        let mut w = |s: &str| g.layer_weight(il, s);
        let moe = MoeFfn {
            gate_inp: w("ffn_gate_inp.weight"),
            gate_inp_b: w("ffn_gate_inp.bias"),
            up_exps: w("ffn_up_exps.weight"),
            up_exps_b: w("ffn_up_exps.bias"),
            gate_exps: w("ffn_gate_exps.weight"),
            gate_exps_b: w("ffn_gate_exps.bias"),
            down_exps: w("ffn_down_exps.weight"),
            down_exps_b: w("ffn_down_exps.bias"),
            ..MoeFfn::new(n_expert, n_expert_used, FfnOp::SwigluOaiMoe, GatingFunc::SoftmaxWeight)
        };
        cur = g.build_moe_ffn(cur, &moe, ili);
        g.cb(cur, "ffn_moe_out", ili);

        cur = g.ctx.add(cur, ffn_inp);
        g.cb(cur, "l_out", ili);
        inp_l = cur;
    }

    // res->t_h_nextn, an output (llm_graph_result::set_outputs, llama-graph.cpp:1406-1408)
    g.ctx.set_output(inp_l);
    let mut cur = g.ctx.get_rows(inp_l, inp_out_ids);
    let output_norm = g.weight("output_norm.weight");
    cur = g.build_norm(cur, output_norm, None, NormType::Rms, -1);
    g.cb(cur, "result_norm", -1);
    let output = g.output_weight();
    g.build_result(cur, output);
}
