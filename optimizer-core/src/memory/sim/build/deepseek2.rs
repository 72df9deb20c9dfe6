//! The `deepseek2` graph (src/models/deepseek2.cpp:418-715, `llama_model_deepseek2::graph::graph`)
//! as llama.cpp builds it for GLM-4.7-Flash and DeepSeek-V2/V3 with MLA: the query LoRA (or the
//! "lite" single projection), the compressed KV projection and its norm, RoPE on the trailing
//! dimensions, the absorbed K (`wk_b`) on the query side, attention over the K-only MLA cache with V
//! a view of K (the builder core's `build_attn_inp_k` and `build_attn_k`), the absorbed V (`wv_b`,
//! `v_mla`) after it, the leading dense layer(s) and the MoE layers with their shared expert
//! (`build_ffn` and `build_moe_ffn` of ffn.rs).

use crate::memory::sim::build::ffn::{FfnGate, FfnOp, FfnWeights, GatingFunc, MoeFfn};
use crate::memory::sim::build::{LlmGraph, NormType, row_size};
use crate::memory::sim::ggml::TensorId;
use crate::model::ModelDescription;

/// What the deepseek2 builder does not cover (yet): the configuration is reported, never guessed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Deepseek2Gap {
    /// The model has no MLA sizes (`key_length_mla` / `value_length_mla`): the legacy `wkv_b` path
    /// (deepseek2.cpp:594-634) is not ported.
    #[error("deepseek2 without MLA (legacy attn_kv_b) is not simulated")]
    NotMla,
    /// A tensor the graph needs is missing from the model.
    #[error("deepseek2 tensor {0:?} is missing")]
    MissingTensor(String),
    /// `output.weight` is absent: the output reuses `token_embd`, whose duplicated copy on the output
    /// device is not modelled as a graph leaf yet.
    #[error("deepseek2 with tied embeddings (no output.weight) is not simulated")]
    TiedEmbeddings,
}

/// The expert gating function deepseek2 runs: the model's `expert_gating_func`, or when the GGUF
/// has none (0), sigmoid for GLM-4.7 Lite (47 or 48 layers and a 154,880-token vocabulary) and
/// softmax for the DeepSeek V2 / V2.5 files written before the key existed (deepseek2.cpp:23-31).
pub fn gating_func(model: &ModelDescription) -> GatingFunc {
    GatingFunc::from_gguf(model.expert_gating_func).unwrap_or_else(|| {
        let n_layer = model.n_layer_all - model.n_nextn;
        if (n_layer == 47 || n_layer == 48) && model.n_vocab == 154_880 {
            GatingFunc::Sigmoid
        } else {
            GatingFunc::Softmax
        }
    })
}

impl LlmGraph<'_> {
    /// Block `il`'s weight `suffix`, required.
    fn required(&mut self, il: usize, suffix: &str) -> Result<TensorId, Deepseek2Gap> {
        self.layer_weight(il, suffix).ok_or_else(|| Deepseek2Gap::MissingTensor(format!("blk.{il}.{suffix}")))
    }

    /// `llama_model_deepseek2::graph::graph` (src/models/deepseek2.cpp:418-715) with MLA: the logits
    /// tensor, the graph expanded in [`LlmGraph::gf`].
    pub fn build_deepseek2(&mut self) -> Result<TensorId, Deepseek2Gap> {
        let model = self.model;
        let mla = model.mla.ok_or(Deepseek2Gap::NotMla)?;
        let n_layer = model.n_layer_all - model.n_nextn;
        let n_tokens = self.ubatch.n_tokens;

        // deepseek2.cpp:426-432
        let n_embd_head_k = i64::from(mla.key_length_mla);
        let n_embd_head_qk_rope = i64::from(model.n_rot);
        let n_embd_head_qk_nope = n_embd_head_k - n_embd_head_qk_rope;
        let kv_lora_rank = i64::from(mla.kv_lora_rank);
        let gating = gating_func(model);

        let output = self.weight("output.weight").ok_or(Deepseek2Gap::TiedEmbeddings)?;
        let output_norm = self
            .weight("output_norm.weight")
            .ok_or(Deepseek2Gap::MissingTensor("output_norm.weight".into()))?;

        // deepseek2.cpp:450-464 (no temperature tuning: f_attn_temp_scale is mistral-large's)
        let mut inp_l = self.build_inp_embd();
        let inp_pos = self.build_inp_pos();
        let inp_attn_k = self.build_attn_inp_k();
        let inp_out_ids = self.build_inp_out_ids();

        for il in 0..n_layer {
            let ili = il as i32;
            let n_head = i64::from(model.layers[il].n_head);
            let mut inp_sa = inp_l;

            let w = self.layer_weight(il, "attn_norm.weight");
            let mut cur = self.build_norm(inp_l, w, None, NormType::Rms, ili);
            self.cb(cur, "attn_norm", ili);

            // deepseek2.cpp:499-516: the query LoRA, or one projection for the lite models
            let mut q = if let Some(wq) = self.layer_weight(il, "attn_q.weight") {
                let q = self.ctx.mul_mat(wq, cur);
                self.cb(q, "q", ili);
                q
            } else {
                let wq_a = self.required(il, "attn_q_a.weight")?;
                let q = self.ctx.mul_mat(wq_a, cur);
                self.cb(q, "q", ili);
                let w = self.layer_weight(il, "attn_q_a_norm.weight");
                let q = self.build_norm(q, w, None, NormType::Rms, ili);
                self.cb(q, "q", ili);
                let wq_b = self.required(il, "attn_q_b.weight")?;
                let q = self.ctx.mul_mat(wq_b, q);
                self.cb(q, "q", ili);
                q
            };
            q = self.ctx.reshape(q, &[n_embd_head_k, n_head, n_tokens]);
            self.cb(q, "q", ili);

            let wkv_a = self.required(il, "attn_kv_a_mqa.weight")?;
            let kv_cmpr_pe = self.ctx.mul_mat(wkv_a, cur);
            self.cb(kv_cmpr_pe, "kv_cmpr_pe", ili);

            let ty = self.ctx.t(kv_cmpr_pe).ty;
            let row = row_size(ty, kv_lora_rank + n_embd_head_qk_rope);
            let mut kv_cmpr = self.ctx.view(kv_cmpr_pe, &[kv_lora_rank, n_tokens], &[row], 0);
            self.cb(kv_cmpr, "kv_cmpr", ili);

            let mut k_pe = self.ctx.view(
                kv_cmpr_pe,
                &[n_embd_head_qk_rope, 1, n_tokens],
                &[row, row],
                row_size(ty, kv_lora_rank),
            );
            self.cb(k_pe, "k_pe", ili);
            k_pe = self.ctx.rope(k_pe, inp_pos, None);
            self.cb(k_pe, "k_pe", ili);

            let w = self.layer_weight(il, "attn_kv_a_norm.weight");
            kv_cmpr = self.build_norm(kv_cmpr, w, None, NormType::Rms, ili);
            self.cb(kv_cmpr, "kv_cmpr", ili);

            // deepseek2.cpp:541-589: the absorbed MLA
            let (qnb, qty) = (self.ctx.nb(q), self.ctx.t(q).ty);
            let q_nope = self.ctx.view(q, &[n_embd_head_qk_nope, n_head, n_tokens], &[qnb[1], qnb[2]], 0);
            self.cb(q_nope, "q_nope", ili);
            let q_pe = self.ctx.view(
                q,
                &[n_embd_head_qk_rope, n_head, n_tokens],
                &[qnb[1], qnb[2]],
                row_size(qty, n_embd_head_qk_nope),
            );
            self.cb(q_pe, "q_pe", ili);
            let q_pe = self.ctx.rope(q_pe, inp_pos, None);
            self.cb(q_pe, "q_pe", ili);

            let q_nope = self.ctx.permute(q_nope, [0, 2, 1, 3]);
            self.cb(q_nope, "q_nope_perm", ili);
            let wk_b = self.required(il, "attn_k_b.weight")?;
            let q_nope_absorbed = self.ctx.mul_mat(wk_b, q_nope);
            self.cb(q_nope_absorbed, "q_nope_absorbed", ili);
            let q_nope_absorbed = self.ctx.permute(q_nope_absorbed, [0, 2, 1, 3]);
            self.cb(q_nope_absorbed, "q_nope_absorbed_perm", ili);

            let q_cur = self.ctx.concat(q_nope_absorbed, q_pe, 0);
            self.cb(q_cur, "Qcur", ili);

            let kv_cmpr = self.ctx.reshape(kv_cmpr, &[kv_lora_rank, 1, n_tokens]);
            self.cb(kv_cmpr, "kv_cmpr_reshape", ili);
            let k_cur = self.ctx.concat(kv_cmpr, k_pe, 0);
            self.cb(k_cur, "Kcur", ili);
            let v_cur = kv_cmpr;
            self.cb(v_cur, "Vcur", ili);

            // MLA with the absorption optimization is MQA over the K-only cache (deepseek2.cpp:590-593)
            let wo = self.required(il, "attn_output.weight")?;
            let wv_b = self.required(il, "attn_v_b.weight")?;
            cur = self.build_attn_k(
                &inp_attn_k,
                Some(wo),
                None,
                q_cur,
                k_cur,
                v_cur,
                None,
                None,
                Some(wv_b),
                il,
            );

            // deepseek2.cpp:637-640 (embeddings_nextn is off in llama-server)
            if il == n_layer - 1 {
                cur = self.ctx.get_rows(cur, inp_out_ids);
                inp_sa = self.ctx.get_rows(inp_sa, inp_out_ids);
            }
            let ffn_inp = self.ctx.add(cur, inp_sa);
            self.cb(ffn_inp, "ffn_inp", ili);

            let w = self.layer_weight(il, "ffn_norm.weight");
            cur = self.build_norm(ffn_inp, w, None, NormType::Rms, ili);
            self.cb(cur, "ffn_norm", ili);

            if (il as u32) < model.n_layer_dense_lead {
                // deepseek2.cpp:647-653
                let w = FfnWeights {
                    up: self.layer_weight(il, "ffn_up.weight"),
                    gate: self.layer_weight(il, "ffn_gate.weight"),
                    down: self.layer_weight(il, "ffn_down.weight"),
                    ..FfnWeights::default()
                };
                cur = self.build_ffn(cur, &w, FfnOp::Silu, FfnGate::Par, 0.0, ili);
                self.cb(cur, "ffn_out", ili);
            } else {
                // deepseek2.cpp:654-669
                let mut lw = |s: &str| self.layer_weight(il, s);
                let moe = MoeFfn {
                    gate_inp: lw("ffn_gate_inp.weight"),
                    up_exps: lw("ffn_up_exps.weight"),
                    gate_exps: lw("ffn_gate_exps.weight"),
                    down_exps: lw("ffn_down_exps.weight"),
                    exp_probs_b: lw("exp_probs_b.bias"),
                    gate_up_exps: lw("ffn_gate_up_exps.weight"),
                    norm_w: model.expert_weights_norm,
                    w_scale: model.expert_weights_scale,
                    ..MoeFfn::new(
                        i64::from(model.n_expert),
                        i64::from(model.n_expert_used),
                        FfnOp::Silu,
                        gating,
                    )
                };
                let moe_out = self.build_moe_ffn(cur, &moe, ili);
                self.cb(moe_out, "ffn_moe_out", ili);

                // deepseek2.cpp:671-681: the shared expert
                let w = FfnWeights {
                    up: self.layer_weight(il, "ffn_up_shexp.weight"),
                    gate: self.layer_weight(il, "ffn_gate_shexp.weight"),
                    down: self.layer_weight(il, "ffn_down_shexp.weight"),
                    ..FfnWeights::default()
                };
                let shexp = self.build_ffn(cur, &w, FfnOp::Silu, FfnGate::Par, 0.0, ili);
                self.cb(shexp, "ffn_shexp", ili);
                cur = self.ctx.add(moe_out, shexp);
                self.cb(cur, "ffn_out", ili);
            }
            cur = self.ctx.add(cur, ffn_inp);
            // build_cvec: no control vector
            self.cb(cur, "l_out", ili);
            inp_l = cur;
        }

        // deepseek2.cpp:692-714
        let cur = self.build_norm(inp_l, Some(output_norm), None, NormType::Rms, -1);
        self.cb(cur, "h_nextn", -1);
        self.cb(cur, "result_norm", -1);
        // res->t_h_nextn is the same tensor as res->t_embd (llama-graph.cpp:1406-1408)
        Ok(self.build_result(cur, Some(output)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::ReadOptions;
    use crate::layout::{BuildOptions, LayoutSpec};

    fn glm(quant: &str) -> ModelDescription {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/layouts/glm-4.7-flash.toml");
        let spec = LayoutSpec::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut layout = spec.build(quant, &BuildOptions::default()).unwrap();
        layout.split = None;
        ModelDescription::from_gguf(&layout.to_model(&ReadOptions::default()).unwrap()).unwrap()
    }

    #[test]
    fn glm_routing_hparams_are_read() {
        let m = glm("Q4_K_M");
        assert_eq!((m.expert_gating_func, m.expert_weights_norm), (2, true));
        assert!((m.expert_weights_scale - 1.8).abs() < 1e-6);
        assert_eq!(gating_func(&m), GatingFunc::Sigmoid);
    }

    /// Without `expert_gating_func` in the GGUF: sigmoid for GLM-4.7 Lite's 47 layers and vocabulary,
    /// softmax for anything else (deepseek2.cpp:23-31).
    #[test]
    fn missing_gating_func_falls_back_as_llama_cpp_does() {
        let mut m = glm("Q4_K_M");
        m.expert_gating_func = 0;
        assert_eq!(gating_func(&m), GatingFunc::Sigmoid);
        m.n_vocab = 102_400;
        assert_eq!(gating_func(&m), GatingFunc::Softmax);
        m.expert_gating_func = 1;
        assert_eq!(gating_func(&m), GatingFunc::Softmax);
    }
}
