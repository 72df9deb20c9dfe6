//! The feed-forward blocks every architecture shares: `build_lora_mm`, `build_lora_mm_id`, `build_ffn`
//! (a dense FFN, gated or not) and `build_moe_ffn` (a router, top-k expert selection, the experts'
//! `mul_mat_id`s and their weighted sum), ported from src/llama-graph.cpp (build 11434) node for node:
//! the same ops, views, names and `ggml_build_forward_expand` calls, so that the graph order the
//! allocator sees is llama.cpp's.
//!
//! No LoRA adapter is ever loaded by the runs the simulator covers, so the adapter loops of
//! `build_lora_mm*` add nothing; precision flags (`ggml_prec_set_acc`) change no shape and are left out.
//! The branches of architectures the simulator does not support (llama4's weights before the FFN,
//! GroveMoE's expert groups, DeepSeek-V4's fused clamp) are not ported.

use crate::memory::sim::build::LlmGraph;
use crate::memory::sim::ggml::{Glu, TensorId, Unary};

/// `llm_ffn_op_type` (src/llama-graph.h:55-66): the FFN's activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfnOp {
    /// `LLM_FFN_SILU` (SwiGLU with a parallel gate).
    Silu,
    /// `LLM_FFN_GELU` (GeGLU with a parallel gate).
    Gelu,
    /// `LLM_FFN_RELU` (ReGLU with a parallel gate).
    Relu,
    /// `LLM_FFN_RELU_SQR`.
    ReluSqr,
    /// `LLM_FFN_SWIGLU`: one fused tensor, halved.
    Swiglu,
    /// `LLM_FFN_GEGLU`.
    Geglu,
    /// `LLM_FFN_REGLU`.
    Reglu,
    /// `LLM_FFN_SWIGLU_OAI_MOE`: gpt-oss's clamped SwiGLU (alpha 1.702, limit 7).
    SwigluOaiMoe,
}

/// `llm_ffn_gate_type` (src/llama-graph.h:68-71).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfnGate {
    /// `LLM_FFN_SEQ`: the gate is applied to the up projection's output.
    Seq,
    /// `LLM_FFN_PAR`: the gate is parallel to the up projection.
    Par,
}

/// `llama_expert_gating_func_type` (src/llama-hparams.h:16-22): how router logits become expert
/// probabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatingFunc {
    /// `LLAMA_EXPERT_GATING_FUNC_TYPE_SOFTMAX` (qwen3next, qwen3moe, llama).
    Softmax,
    /// `LLAMA_EXPERT_GATING_FUNC_TYPE_SIGMOID` (deepseek2 V3-style, GLM-4.7-Flash).
    Sigmoid,
    /// `LLAMA_EXPERT_GATING_FUNC_TYPE_SOFTMAX_WEIGHT`: softmax over the selected experts' logits only
    /// (gpt-oss).
    SoftmaxWeight,
    /// `LLAMA_EXPERT_GATING_FUNC_TYPE_SQRT_SOFTPLUS`.
    SqrtSoftplus,
}

impl GatingFunc {
    /// The gating function of GGUF's `expert_gating_func` value (1-4), `None` for 0 or an unknown one
    /// (src/llama-hparams.h:16-22).
    pub fn from_gguf(value: u32) -> Option<GatingFunc> {
        match value {
            1 => Some(GatingFunc::Softmax),
            2 => Some(GatingFunc::Sigmoid),
            3 => Some(GatingFunc::SoftmaxWeight),
            4 => Some(GatingFunc::SqrtSoftplus),
            _ => None,
        }
    }
}

/// The tensors of a dense FFN, as `build_ffn` takes them (any may be absent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)] // llama.cpp's parameter names
pub struct FfnWeights {
    pub up: Option<TensorId>,
    pub up_b: Option<TensorId>,
    pub up_s: Option<TensorId>,
    pub gate: Option<TensorId>,
    pub gate_b: Option<TensorId>,
    pub gate_s: Option<TensorId>,
    pub down: Option<TensorId>,
    pub down_b: Option<TensorId>,
    pub down_s: Option<TensorId>,
    pub act_scales: Option<TensorId>,
}

/// What `build_moe_ffn` takes (the long overload, src/llama-graph.cpp:2044-2068), with the
/// per-layer hyperparameters it reads from `hparams`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MoeFfn {
    /// The router (`ffn_gate_inp`), `[n_embd, n_expert]`; unused when `probs_in` is given.
    pub gate_inp: Option<TensorId>,
    /// The router's bias (gpt-oss).
    pub gate_inp_b: Option<TensorId>,
    /// `ffn_up_exps`.
    pub up_exps: Option<TensorId>,
    /// `ffn_up_exps` bias, per expert (gpt-oss).
    pub up_exps_b: Option<TensorId>,
    /// `ffn_gate_exps`.
    pub gate_exps: Option<TensorId>,
    /// `ffn_gate_exps` bias (gpt-oss).
    pub gate_exps_b: Option<TensorId>,
    /// `ffn_down_exps`.
    pub down_exps: Option<TensorId>,
    /// `ffn_down_exps` bias (gpt-oss).
    pub down_exps_b: Option<TensorId>,
    /// `exp_probs_b`: the expert selection bias (DeepSeek-V3 style).
    pub exp_probs_b: Option<TensorId>,
    /// `ffn_gate_up_exps`: gate and up merged in one tensor.
    pub gate_up_exps: Option<TensorId>,
    /// Its bias.
    pub gate_up_exps_b: Option<TensorId>,
    /// Per-expert scales of up, gate and down (`*_exps_s`).
    pub up_exps_s: Option<TensorId>,
    /// See `up_exps_s`.
    pub gate_exps_s: Option<TensorId>,
    /// See `up_exps_s`.
    pub down_exps_s: Option<TensorId>,
    /// `probs_in`: router logits computed by the caller.
    pub probs_in: Option<TensorId>,
    /// `selected_experts_in`: expert ids chosen by the caller.
    pub selected_experts_in: Option<TensorId>,
    /// `n_expert`.
    pub n_expert: i64,
    /// `n_expert_used` (the call's; the weighted sum uses the layer's `hparams.n_expert_used(il)`).
    pub n_expert_used: i64,
    /// `type_op`.
    pub type_op: FfnOp,
    /// `norm_w`: normalise the selected experts' weights to sum to one.
    pub norm_w: bool,
    /// `w_scale`: scale the weights unless 0 or 1.
    pub w_scale: f32,
    /// `gating_op`.
    pub gating: GatingFunc,
    /// `hparams.n_expert_groups` (grouped selection when above 1).
    pub n_expert_groups: i64,
    /// `hparams.n_group_used`.
    pub n_group_used: i64,
    /// `hparams.swiglu_clamp_exp[il]` (0: none).
    pub swiglu_clamp_exp: f32,
}

impl MoeFfn {
    /// A MoE FFN with only the three expert tensors and the router, `n_expert_used` of `n_expert`
    /// experts, `type_op` and `gating`; everything else absent or off.
    pub fn new(n_expert: i64, n_expert_used: i64, type_op: FfnOp, gating: GatingFunc) -> MoeFfn {
        MoeFfn {
            gate_inp: None,
            gate_inp_b: None,
            up_exps: None,
            up_exps_b: None,
            gate_exps: None,
            gate_exps_b: None,
            down_exps: None,
            down_exps_b: None,
            exp_probs_b: None,
            gate_up_exps: None,
            gate_up_exps_b: None,
            up_exps_s: None,
            gate_exps_s: None,
            down_exps_s: None,
            probs_in: None,
            selected_experts_in: None,
            n_expert,
            n_expert_used,
            type_op,
            norm_w: false,
            w_scale: 0.0,
            gating,
            n_expert_groups: 0,
            n_group_used: 0,
            swiglu_clamp_exp: 0.0,
        }
    }
}

/// `constexpr float eps = 1e-6f` of the clamped-SwiGLU branches (src/llama-graph.cpp:1883, 2277).
const CLAMP_EPS: f32 = 1e-6;

impl LlmGraph<'_> {
    /// `build_lora_mm` (src/llama-graph.cpp:1549-1586) without adapters: `w × cur`, times `w_s` when
    /// given.
    pub fn build_lora_mm(&mut self, w: TensorId, cur: TensorId, w_s: Option<TensorId>) -> TensorId {
        let res = self.ctx.mul_mat(w, cur);
        match w_s {
            Some(s) => self.ctx.mul(res, s),
            None => res,
        }
    }

    /// `build_lora_mm_id` (src/llama-graph.cpp:1588-1630) without adapters: the experts `ids` of `w`
    /// applied to `cur`, times their per-expert scales `w_s` when given.
    pub fn build_lora_mm_id(
        &mut self,
        w: TensorId,
        cur: TensorId,
        ids: TensorId,
        w_s: Option<TensorId>,
    ) -> TensorId {
        let res = self.ctx.mul_mat_id(w, cur, ids);
        let Some(w_s) = w_s else { return res };
        let n_expert = self.ctx.ne(w_s)[0];
        let n_tokens = self.ctx.ne(cur)[2];
        let s = self.ctx.reshape(w_s, &[1, n_expert, 1]);
        let s = self.ctx.repeat_4d(s, [1, n_expert, n_tokens, 1]);
        let s = self.ctx.get_rows(s, ids);
        self.ctx.mul(res, s)
    }

    fn mm_opt(&mut self, w: Option<TensorId>, cur: TensorId) -> TensorId {
        match w {
            Some(w) => self.build_lora_mm(w, cur, None),
            None => cur,
        }
    }

    /// `build_ffn` (src/llama-graph.cpp:1799-1998): a dense FFN on `cur`. The clamped SwiGLU of
    /// `hparams.swiglu_clamp_shexp[il]` is `swiglu_clamp` (0 for the supported architectures).
    pub fn build_ffn(
        &mut self,
        cur: TensorId,
        w: &FfnWeights,
        type_op: FfnOp,
        type_gate: FfnGate,
        swiglu_clamp: f32,
        il: i32,
    ) -> TensorId {
        let mut cur = cur;
        let mut type_gate = type_gate;
        let mut tmp = self.mm_opt(w.up, cur);
        self.cb(tmp, "ffn_up", il);

        if let Some(b) = w.up_b {
            tmp = self.ctx.add(tmp, b);
            self.cb(tmp, "ffn_up_b", il);
        }
        if let Some(s) = w.up_s {
            tmp = self.ctx.mul(tmp, s);
            self.cb(tmp, "ffn_up_s", il);
        }

        if let Some(gate) = w.gate {
            cur = match type_gate {
                FfnGate::Seq => self.build_lora_mm(gate, tmp, None),
                FfnGate::Par => self.build_lora_mm(gate, cur, None),
            };
            self.cb(cur, "ffn_gate", il);
            if let Some(b) = w.gate_b {
                cur = self.ctx.add(cur, b);
                self.cb(cur, "ffn_gate_b", il);
            }
            if let Some(s) = w.gate_s {
                cur = self.ctx.mul(cur, s);
                self.cb(cur, "ffn_gate_s", il);
            }
        } else {
            cur = tmp;
        }

        let par = w.gate.is_some() && type_gate == FfnGate::Par;
        match type_op {
            FfnOp::Silu => {
                if par {
                    if il >= 0 && swiglu_clamp > CLAMP_EPS {
                        // llama-graph.cpp:1888-1895 (the non-DeepSeek-V4 branch)
                        tmp = self.ctx.clamp(tmp);
                        self.cb(tmp, "ffn_up_clamped", il);
                        let mut gate_act = self.ctx.unary(cur, Unary::Silu);
                        self.cb(gate_act, "ffn_silu", il);
                        gate_act = self.ctx.clamp(gate_act);
                        self.cb(gate_act, "ffn_silu_clamped", il);
                        cur = self.ctx.mul(gate_act, tmp);
                        self.cb(cur, "ffn_swiglu_limited", il);
                    } else {
                        cur = self.ctx.glu(cur, Some(tmp), Glu::Swiglu, false);
                        self.cb(cur, "ffn_swiglu", il);
                    }
                    type_gate = FfnGate::Seq;
                } else {
                    cur = self.ctx.unary(cur, Unary::Silu);
                    self.cb(cur, "ffn_silu", il);
                }
            }
            FfnOp::Gelu => {
                if par {
                    cur = self.ctx.glu(cur, Some(tmp), Glu::Geglu, false);
                    self.cb(cur, "ffn_geglu", il);
                    type_gate = FfnGate::Seq;
                } else {
                    cur = self.ctx.unary(cur, Unary::Gelu);
                    self.cb(cur, "ffn_gelu", il);
                    if let Some(a) = w.act_scales {
                        cur = self.ctx.div(cur, a);
                        self.cb(cur, "ffn_act", il);
                    }
                }
            }
            FfnOp::Relu => {
                if par {
                    cur = self.ctx.glu(cur, Some(tmp), Glu::Reglu, false);
                    self.cb(cur, "ffn_reglu", il);
                    type_gate = FfnGate::Seq;
                } else {
                    cur = self.ctx.unary(cur, Unary::Relu);
                    self.cb(cur, "ffn_relu", il);
                }
            }
            FfnOp::ReluSqr => {
                cur = self.ctx.unary(cur, Unary::Relu);
                self.cb(cur, "ffn_relu", il);
                cur = self.ctx.sqr(cur);
                self.cb(cur, "ffn_sqr(relu)", il);
            }
            FfnOp::Swiglu => {
                cur = self.ctx.glu(cur, None, Glu::Swiglu, false);
                self.cb(cur, "ffn_swiglu", il);
            }
            FfnOp::SwigluOaiMoe => {
                self.ctx.check(par, |_| "LLM_FFN_SWIGLU_OAI_MOE requires a parallel gate".to_owned());
                cur = self.ctx.glu(cur, Some(tmp), Glu::SwigluOai, false);
                self.cb(cur, "ffn_swiglu_oai", il);
                type_gate = FfnGate::Seq;
            }
            FfnOp::Geglu => {
                cur = self.ctx.glu(cur, None, Glu::Geglu, false);
                self.cb(cur, "ffn_geglu", il);
            }
            FfnOp::Reglu => {
                cur = self.ctx.glu(cur, None, Glu::Reglu, false);
                self.cb(cur, "ffn_reglu", il);
            }
        }

        if w.gate.is_some() && type_gate == FfnGate::Par {
            cur = self.ctx.mul(cur, tmp);
            self.cb(cur, "ffn_gate_par", il);
        }

        if let Some(down) = w.down {
            cur = self.build_lora_mm(down, cur, None);
        }
        // llama.cpp names the down projection only when a bias follows it (llama-graph.cpp:1984-1986)
        if let Some(b) = w.down_b {
            self.cb(cur, "ffn_down", il);
            cur = self.ctx.add(cur, b);
        }
        if let Some(s) = w.down_s {
            cur = self.ctx.mul(cur, s);
            self.cb(cur, "ffn_down_s", il);
        }
        cur
    }

    /// `build_moe_ffn` (src/llama-graph.cpp:2044-2410): route each token of `cur` (`[n_embd,
    /// n_tokens]`) to `n_expert_used` experts, run them with `mul_mat_id` and sum their weighted
    /// outputs (one view per expert, then adds), expanding the graph where llama.cpp does.
    pub fn build_moe_ffn(&mut self, cur: TensorId, p: &MoeFfn, il: i32) -> TensorId {
        let ctx_ne = self.ctx.ne(cur);
        let (n_embd, n_tokens) = (ctx_ne[0], ctx_ne[1]);
        let (n_expert, n_expert_used) = (p.n_expert, p.n_expert_used);

        let mut logits = if let Some(probs_in) = p.probs_in {
            probs_in
        } else {
            let Some(gate_inp) = p.gate_inp else {
                self.ctx.check(false, |_| format!("build_moe_ffn: layer {il} has no router"));
                return cur;
            };
            let l = self.build_lora_mm(gate_inp, cur, None);
            self.cb(l, "ffn_moe_logits", il);
            l
        };
        if let Some(b) = p.gate_inp_b {
            logits = self.ctx.add(logits, b);
            self.cb(logits, "ffn_moe_logits_biased", il);
        }

        let mut probs = match p.gating {
            GatingFunc::Softmax => self.ctx.soft_max_ext(logits, None),
            GatingFunc::Sigmoid => self.ctx.unary(logits, Unary::Sigmoid),
            GatingFunc::SoftmaxWeight => logits,
            GatingFunc::SqrtSoftplus => {
                let sp = self.ctx.unary(logits, Unary::Softplus);
                self.ctx.sqrt(sp)
            }
        };
        self.cb(probs, "ffn_moe_probs", il);

        // the selection bias leaves `probs` unbiased for the weights (llama-graph.cpp:2113-2116)
        let mut selection_probs = probs;
        if let Some(b) = p.exp_probs_b {
            selection_probs = self.ctx.add(probs, b);
            self.cb(selection_probs, "ffn_moe_probs_biased", il);
        }

        if p.n_expert_groups > 1 && n_tokens > 0 {
            selection_probs = self.select_expert_groups(selection_probs, p, n_tokens, il);
        }

        let selected_experts = if let Some(s) = p.selected_experts_in {
            s
        } else {
            let s = self.ctx.argsort_top_k(selection_probs, n_expert_used);
            if let Some(argsort) = self.ctx.t(s).src[0] {
                self.cb(argsort, "ffn_moe_argsort", il);
            }
            s
        };
        self.cb(selected_experts, "ffn_moe_topk", il);

        probs = self.ctx.reshape(probs, &[1, n_expert, n_tokens]);
        let mut weights = self.ctx.get_rows(probs, selected_experts);
        self.cb(weights, "ffn_moe_weights", il);

        if p.gating == GatingFunc::SoftmaxWeight {
            weights = self.ctx.reshape(weights, &[n_expert_used, n_tokens]);
            weights = self.ctx.soft_max_ext(weights, None);
            weights = self.ctx.reshape(weights, &[1, n_expert_used, n_tokens]);
            self.cb(weights, "ffn_moe_weights_softmax", il);
        }

        if p.norm_w {
            weights = self.ctx.reshape(weights, &[n_expert_used, n_tokens]);
            let mut weights_sum = self.ctx.sum_rows(weights);
            self.cb(weights_sum, "ffn_moe_weights_sum", il);
            weights_sum = self.ctx.clamp(weights_sum);
            self.cb(weights_sum, "ffn_moe_weights_sum_clamped", il);
            weights = self.ctx.div(weights, weights_sum);
            self.cb(weights, "ffn_moe_weights_norm", il);
            weights = self.ctx.reshape(weights, &[1, n_expert_used, n_tokens]);
        }
        #[allow(clippy::float_cmp)] // llama.cpp's own test, on a value read from the GGUF
        if p.w_scale != 0.0 && p.w_scale != 1.0 {
            weights = self.ctx.scale(weights);
            self.cb(weights, "ffn_moe_weights_scaled", il);
        }

        // "call early so that topk-moe can be used" (llama-graph.cpp:2205)
        self.expand(weights);

        let mut cur = self.ctx.reshape(cur, &[n_embd, 1, n_tokens]);

        let mut up;
        if let Some(gate_up_exps) = p.gate_up_exps {
            let mut gate_up = self.build_lora_mm_id(gate_up_exps, cur, selected_experts, p.up_exps_s);
            self.cb(gate_up, "ffn_moe_gate_up", il);
            if p.up_exps_s.is_some() {
                self.cb(gate_up, "ffn_moe_gate_up_scaled", il);
            }
            if let Some(b) = p.gate_up_exps_b {
                gate_up = self.ctx.add_id(gate_up, b, selected_experts);
                self.cb(gate_up, "ffn_moe_gate_up_biased", il);
            }
            let (ne, nb) = (self.ctx.ne(gate_up), self.ctx.nb(gate_up));
            let n_ff = ne[0] / 2;
            cur = self.ctx.view(gate_up, &[n_ff, ne[1], ne[2]], &[nb[1], nb[2]], 0);
            self.cb(cur, "ffn_moe_gate", il);
            up = self.ctx.view(gate_up, &[n_ff, ne[1], ne[2]], &[nb[1], nb[2]], n_ff as u64 * nb[0]);
            self.cb(up, "ffn_moe_up", il);
        } else {
            let Some(up_exps) = p.up_exps else {
                self.ctx.check(false, |_| format!("build_moe_ffn: layer {il} has no up experts"));
                return cur;
            };
            up = self.build_lora_mm_id(up_exps, cur, selected_experts, p.up_exps_s);
            self.cb(up, "ffn_moe_up", il);
            if p.up_exps_s.is_some() {
                self.cb(up, "ffn_moe_up_scaled", il);
            }
            if let Some(b) = p.up_exps_b {
                up = self.ctx.add_id(up, b, selected_experts);
                self.cb(up, "ffn_moe_up_biased", il);
            }
            if let Some(gate_exps) = p.gate_exps {
                cur = self.build_lora_mm_id(gate_exps, cur, selected_experts, p.gate_exps_s);
                self.cb(cur, "ffn_moe_gate", il);
            } else {
                cur = up;
            }
            if p.gate_exps_s.is_some() {
                self.cb(cur, "ffn_moe_gate_scaled", il);
            }
            if let Some(b) = p.gate_exps_b {
                cur = self.ctx.add_id(cur, b, selected_experts);
                self.cb(cur, "ffn_moe_gate_biased", il);
            }
        }

        let has_gate = p.gate_exps.is_some() || p.gate_up_exps.is_some();
        match p.type_op {
            FfnOp::Silu => {
                if p.gate_exps.is_some() && il >= 0 && p.swiglu_clamp_exp > CLAMP_EPS {
                    // llama-graph.cpp:2282-2289 (the branch of the architectures without the fused clamp)
                    up = self.ctx.clamp(up);
                    self.cb(up, "ffn_moe_up_clamped", il);
                    let mut gate_act = self.ctx.unary(cur, Unary::Silu);
                    self.cb(gate_act, "ffn_moe_silu", il);
                    gate_act = self.ctx.clamp(gate_act);
                    self.cb(gate_act, "ffn_moe_silu_clamped", il);
                    cur = self.ctx.mul(gate_act, up);
                    self.cb(cur, "ffn_moe_swiglu_limited", il);
                } else if has_gate {
                    cur = self.ctx.glu(cur, Some(up), Glu::Swiglu, false);
                    self.cb(cur, "ffn_moe_swiglu", il);
                } else {
                    cur = self.ctx.unary(cur, Unary::Silu);
                    self.cb(cur, "ffn_moe_silu", il);
                }
            }
            FfnOp::Gelu => {
                if has_gate {
                    cur = self.ctx.glu(cur, Some(up), Glu::Geglu, false);
                    self.cb(cur, "ffn_moe_geglu", il);
                } else {
                    cur = self.ctx.unary(cur, Unary::Gelu);
                    self.cb(cur, "ffn_moe_gelu", il);
                }
            }
            FfnOp::SwigluOaiMoe => {
                cur = self.ctx.glu(cur, Some(up), Glu::SwigluOai, false);
                self.cb(cur, "ffn_moe_swiglu_oai", il);
            }
            FfnOp::Relu => {
                if has_gate {
                    cur = self.ctx.glu(cur, Some(up), Glu::Reglu, false);
                    self.cb(cur, "ffn_moe_reglu", il);
                } else {
                    cur = self.ctx.unary(cur, Unary::Relu);
                    self.cb(cur, "ffn_moe_relu", il);
                }
            }
            FfnOp::ReluSqr => {
                self.ctx.check(!has_gate, |_| "gated squared relu not implemented".to_owned());
                cur = self.ctx.unary(cur, Unary::Relu);
                cur = self.ctx.sqr(cur);
                self.cb(cur, "ffn_moe_relu_sqr", il);
            }
            FfnOp::Swiglu | FfnOp::Geglu | FfnOp::Reglu => {
                // llama-graph.cpp:2351: GGML_ABORT
                self.ctx.check(false, |_| format!("build_moe_ffn: {:?} is not a MoE activation", p.type_op));
            }
        }

        let Some(down_exps) = p.down_exps else {
            self.ctx.check(false, |_| format!("build_moe_ffn: layer {il} has no down experts"));
            return cur;
        };
        let mut experts = self.build_lora_mm_id(down_exps, cur, selected_experts, p.down_exps_s);
        self.cb(experts, "ffn_moe_down", il);
        if p.down_exps_s.is_some() {
            self.cb(experts, "ffn_moe_down_scaled", il);
        }
        if let Some(b) = p.down_exps_b {
            experts = self.ctx.add_id(experts, b, selected_experts);
            self.cb(experts, "ffn_moe_down_biased", il);
        }
        experts = self.ctx.mul(experts, weights);
        self.cb(experts, "ffn_moe_weighted", il);

        self.expand(experts);

        // "order the views before the adds", with the layer's own n_expert_used
        // (llama-graph.cpp:2382-2391)
        let n_expert_used_il = usize::try_from(il)
            .ok()
            .and_then(|i| self.model.layers.get(i))
            .map_or(n_expert_used, |l| i64::from(l.n_expert_used));
        let nb = self.ctx.nb(experts);
        let mut cur_experts = Vec::with_capacity(n_expert_used_il.max(0) as usize);
        for i in 0..n_expert_used_il {
            let v = self.ctx.view(experts, &[n_embd, n_tokens], &[nb[2]], i as u64 * nb[1]);
            self.expand(v);
            cur_experts.push(v);
        }
        let Some(&first) = cur_experts.first() else {
            self.ctx.check(false, |_| format!("build_moe_ffn: layer {il} uses no experts"));
            return experts;
        };
        let mut moe_out = first;
        for &e in &cur_experts[1..] {
            moe_out = self.ctx.add(moe_out, e);
            self.expand(moe_out);
        }
        if n_expert_used_il == 1 {
            // "avoid returning a non-contiguous tensor"
            moe_out = self.ctx.cont(moe_out);
        }
        self.cb(moe_out, "ffn_moe_out", il);
        moe_out
    }

    /// The grouped expert selection of `build_moe_ffn` (src/llama-graph.cpp:2132-2156): keep the
    /// `n_group_used` groups with the best top-2 sums, mask the others to -inf.
    fn select_expert_groups(
        &mut self,
        selection_probs: TensorId,
        p: &MoeFfn,
        n_tokens: i64,
        il: i32,
    ) -> TensorId {
        let n_exp_per_group = p.n_expert / p.n_expert_groups;
        let selection_groups =
            self.ctx.reshape(selection_probs, &[n_exp_per_group, p.n_expert_groups, n_tokens]);
        let mut group_scores = self.ctx.argsort_top_k(selection_groups, 2);
        let g = self.ctx.ne(selection_groups);
        let as4 = self.ctx.reshape(selection_groups, &[1, g[0], g[1], g[2]]);
        group_scores = self.ctx.get_rows(as4, group_scores);
        let s = self.ctx.ne(group_scores);
        let r = self.ctx.reshape(group_scores, &[s[1], s[2], s[3]]);
        group_scores = self.ctx.sum_rows(r);
        let s = self.ctx.ne(group_scores);
        group_scores = self.ctx.reshape(group_scores, &[s[1], s[2]]);
        let expert_groups = self.ctx.argsort_top_k(group_scores, p.n_group_used);
        self.cb(expert_groups, "ffn_moe_group_topk", il);
        let kept = self.ctx.get_rows(selection_groups, expert_groups);
        let filled = self.ctx.fill(selection_groups);
        let masked = self.ctx.set_rows(filled, kept, expert_groups);
        let out = self.ctx.reshape(masked, &[p.n_expert, n_tokens]);
        self.cb(out, "ffn_moe_probs_masked", il);
        out
    }
}

#[cfg(test)]
#[path = "ffn_tests.rs"]
mod tests;
