//! Every tensor of a model with what llama.cpp does with it: its layer class (which device list its
//! buffer type comes from), its block, and its role in the block (attention, recurrent state, router,
//! experts, ...).
//!
//! Names follow `LLM_TENSOR_NAMES` (llama-arch.cpp:444-737) and classes `LLM_TENSOR_INFOS`
//! (llama-arch.cpp:749-1047).

use serde::Serialize;

use crate::gguf::{GgmlType, TensorInfo};
use crate::units::Bytes;

/// The layer class of `LLM_TENSOR_INFOS`: which of llama.cpp's buffer-type lists a tensor is
/// allocated from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerClass {
    /// Input tensors (`token_embd`, ...): always the CPU list (llama-model.cpp:1605-1607).
    Input,
    /// Output tensors (`output`, `output_norm`, ...): the device of layer index `n_layer_all`.
    Output,
    /// Per-block tensors: the device of their block.
    Repeating,
}

/// Whose device list a tensor's buffer type is chosen from, once its class and block are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case", tag = "slot", content = "layer")]
pub enum LayerSlot {
    /// The input layer (always the CPU).
    Input,
    /// The output layer. Also blocks with an index at or past `n_layer_all` ("the blocks of a head",
    /// llama-model.cpp:1964-1970).
    Output,
    /// Layer `il`'s device.
    Layer(usize),
    /// Created for every layer with `TENSOR_DUPLICATED` (`rope_freqs`, `rope_factors_*`; e.g.
    /// models/llama.cpp:66): the first copy goes with layer 0, and each other buffer type that holds a
    /// layer gets its own copy (llama-model-loader.cpp:1367-1377).
    EveryLayer,
}

/// What follows the base name: `.weight`, `.bias`, `.scale` or nothing (`blk.N.ssm_a`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TensorSuffix {
    /// `.weight`
    Weight,
    /// `.bias`
    Bias,
    /// `.scale` (per-tensor or per-expert scales, e.g. NVFP4; llama-model.cpp:1636-1776).
    Scale,
    /// No suffix.
    None,
}

/// A part of an attention block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionPart {
    /// `attn_q`
    Q,
    /// `attn_k`
    K,
    /// `attn_v`
    V,
    /// `attn_qkv` in an attention layer (fused Q, K and V).
    Qkv,
    /// `attn_output`
    Output,
    /// `attn_gate` in an attention layer (output gate).
    Gate,
    /// `attn_sinks` (gpt-oss).
    Sinks,
    /// MLA `attn_q_a` (query down-projection).
    QA,
    /// MLA `attn_q_b` (query up-projection).
    QB,
    /// MLA `attn_kv_a_mqa` (the compressed KV and the rope part).
    KvAMqa,
    /// Legacy MLA `attn_kv_b` (unsplit K/V up-projection).
    KvB,
    /// MLA `attn_k_b`.
    KB,
    /// MLA `attn_v_b`.
    VB,
    /// Another `attn_*` tensor.
    Other,
}

/// A part of a recurrent (SSM / Gated DeltaNet / RWKV) block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecurrentPart {
    /// `ssm_in` (legacy fused Qwen3-Next in-projection, Mamba in-projection).
    In,
    /// `attn_qkv` in a recurrent layer: the DeltaNet Q/K/V in-projection (qwen3next.cpp:87).
    Qkv,
    /// `attn_gate` in a recurrent layer: the DeltaNet z in-projection (qwen3next.cpp:88).
    Gate,
    /// `ssm_conv1d`
    Conv1d,
    /// `ssm_dt`
    Dt,
    /// `ssm_a`
    A,
    /// `ssm_ba` (fused beta/alpha, qwen3next).
    BetaAlpha,
    /// `ssm_beta`
    Beta,
    /// `ssm_alpha`
    Alpha,
    /// `ssm_norm` and the other `ssm_*_norm`.
    Norm,
    /// `ssm_out`
    Out,
    /// Another `ssm_*`, `time_mix_*` or `channel_mix_*` tensor.
    Other,
}

/// A part of the MoE router.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouterPart {
    /// `ffn_gate_inp` (weight or bias): the expert scores.
    GateInp,
    /// `exp_probs_b`: the expert selection bias (DeepSeek-V3, GLM).
    ExpProbsB,
}

/// A part of a dense or shared-expert feed-forward block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FfnPart {
    /// `ffn_gate`
    Gate,
    /// `ffn_up`
    Up,
    /// `ffn_down`
    Down,
    /// `ffn_gate_inp_shexp`: the shared expert's gate (shared experts only).
    GateInp,
}

/// A part of the routed experts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpertPart {
    /// `ffn_gate_exps`
    Gate,
    /// `ffn_up_exps`
    Up,
    /// `ffn_down_exps`
    Down,
    /// `ffn_gate_up_exps` (gate and up merged).
    GateUp,
}

/// A part of a NextN/MTP block's own head (`blk.N.nextn.*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NextnPart {
    /// `nextn.eh_proj`
    EhProj,
    /// `nextn.enorm`
    Enorm,
    /// `nextn.hnorm`
    Hnorm,
    /// `nextn.embed_tokens`
    EmbedTokens,
    /// `nextn.shared_head_head`
    SharedHeadHead,
    /// `nextn.shared_head_norm`
    SharedHeadNorm,
    /// Another `nextn.*` tensor.
    Other,
}

/// What a tensor is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case", tag = "role", content = "part")]
pub enum TensorRole {
    /// `token_embd`: the input embedding; also the output projection when the embeddings are tied.
    TokenEmbd,
    /// `output`: the output projection (logits).
    Output,
    /// `output_norm`.
    OutputNorm,
    /// `rope_freqs`, `rope_factors_long`, `rope_factors_short` (duplicated per layer).
    RopeFreqs,
    /// A normalisation weight in a block (`attn_norm`, `ffn_norm`, `post_attention_norm`,
    /// `attn_q_norm`, `attn_kv_a_norm`, ...), or `token_embd_norm`.
    Norm,
    /// Attention.
    Attention(AttentionPart),
    /// Recurrent state update (SSM, Gated DeltaNet, RWKV).
    Recurrent(RecurrentPart),
    /// The MoE router.
    Router(RouterPart),
    /// The shared expert(s) (`*_shexp`).
    SharedExpert(FfnPart),
    /// Routed experts (`*_exps`); `chunked` for the `*_chexps` variant.
    Experts {
        /// Which projection.
        part: ExpertPart,
        /// `ffn_*_chexps` (chunked experts).
        chunked: bool,
    },
    /// A dense feed-forward block (`ffn_gate`, `ffn_up`, `ffn_down`).
    DenseFfn(FfnPart),
    /// The head of a NextN/MTP block.
    Nextn(NextnPart),
    /// Anything else.
    Other,
}

impl TensorRole {
    /// True for routed-expert tensors (weights, biases and scales): what `-ot exps=CPU` moves.
    pub fn is_routed_expert(self) -> bool {
        matches!(self, TensorRole::Experts { .. })
    }
}

/// One tensor of the model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelTensor {
    /// The GGUF name, e.g. `blk.3.attn_k.weight`.
    pub name: String,
    /// The shape in ggml order (`ne0` first).
    pub dims: Vec<u64>,
    /// The ggml type.
    pub ggml_type: GgmlType,
    /// `ggml_nbytes` of the tensor.
    pub size: Bytes,
    /// Which shard holds it.
    pub shard: usize,
    /// Its offset in that shard's data section.
    pub offset: u64,
    /// `N` of a `blk.N.` name.
    pub block: Option<usize>,
    /// Its `LLM_TENSOR_INFOS` layer class.
    pub class: LayerClass,
    /// Whose device list it is placed from.
    pub slot: LayerSlot,
    /// What it is for.
    pub role: TensorRole,
    /// `.weight`, `.bias`, `.scale` or none.
    pub suffix: TensorSuffix,
    /// True for every tensor of a NextN/MTP block (`n_layer() <= N < n_layer_all`). Without MTP
    /// llama.cpp creates them with `TENSOR_SKIP`: they take no memory, but the block still occupies a
    /// layer index (llama-model-loader.cpp:1184-1193; qwen3next.cpp:40, qwen35.cpp:38,
    /// deepseek2.cpp:65-67).
    pub nextn: bool,
}

impl ModelTensor {
    /// True if llama.cpp allocates the tensor: everything except NextN-block tensors when MTP is off.
    pub fn is_loaded(&self, mtp: bool) -> bool {
        mtp || !self.nextn
    }
}

/// A tensor name split into its block, base and suffix.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ParsedName<'a> {
    pub(crate) block: Option<usize>,
    pub(crate) base: &'a str,
    pub(crate) suffix: TensorSuffix,
}

/// Splits `blk.12.attn_q.weight` into block 12, base `attn_q`, suffix `.weight`.
pub(crate) fn parse_name(name: &str) -> ParsedName<'_> {
    let (base, suffix) = match name.rsplit_once('.') {
        Some((b, "weight")) => (b, TensorSuffix::Weight),
        Some((b, "bias")) => (b, TensorSuffix::Bias),
        Some((b, "scale")) => (b, TensorSuffix::Scale),
        _ => (name, TensorSuffix::None),
    };
    let block = base.strip_prefix("blk.").and_then(|rest| {
        let (num, stem) = rest.split_once('.')?;
        let il = if num.bytes().all(|b| b.is_ascii_digit()) { num.parse().ok() } else { None }?;
        Some((il, stem))
    });
    match block {
        Some((il, stem)) => ParsedName { block: Some(il), base: stem, suffix },
        None => ParsedName { block: None, base, suffix },
    }
}

/// The role of a per-block tensor `base` (the part after `blk.N.`). `recurrent` says whether the
/// block is a recurrent layer, which decides what `attn_qkv` and `attn_gate` are.
pub(crate) fn block_role(base: &str, recurrent: bool) -> TensorRole {
    use AttentionPart as A;
    use RecurrentPart as R;
    match base {
        "attn_norm"
        | "attn_norm_2"
        | "ffn_norm"
        | "post_attention_norm"
        | "post_ffw_norm"
        | "post_ffw_norm_1"
        | "post_ffw_norm_2"
        | "pre_ffw_norm_2"
        | "attn_q_norm"
        | "attn_k_norm"
        | "attn_q_a_norm"
        | "attn_kv_a_norm"
        | "attn_output_norm"
        | "layer_output_norm"
        | "attn_sub_norm"
        | "ffn_sub_norm"
        | "ffn_norm_exps"
        | "post_norm" => TensorRole::Norm,

        "attn_qkv" if recurrent => TensorRole::Recurrent(R::Qkv),
        "attn_gate" if recurrent => TensorRole::Recurrent(R::Gate),
        "attn_q" => TensorRole::Attention(A::Q),
        "attn_k" => TensorRole::Attention(A::K),
        "attn_v" => TensorRole::Attention(A::V),
        "attn_qkv" => TensorRole::Attention(A::Qkv),
        "attn_output" => TensorRole::Attention(A::Output),
        "attn_gate" => TensorRole::Attention(A::Gate),
        "attn_sinks" => TensorRole::Attention(A::Sinks),
        "attn_q_a" => TensorRole::Attention(A::QA),
        "attn_q_b" => TensorRole::Attention(A::QB),
        "attn_kv_a_mqa" => TensorRole::Attention(A::KvAMqa),
        "attn_kv_b" => TensorRole::Attention(A::KvB),
        "attn_k_b" => TensorRole::Attention(A::KB),
        "attn_v_b" => TensorRole::Attention(A::VB),
        b if b.starts_with("attn_") => TensorRole::Attention(A::Other),

        "ssm_in" => TensorRole::Recurrent(R::In),
        "ssm_conv1d" => TensorRole::Recurrent(R::Conv1d),
        "ssm_dt" => TensorRole::Recurrent(R::Dt),
        "ssm_a" => TensorRole::Recurrent(R::A),
        "ssm_ba" => TensorRole::Recurrent(R::BetaAlpha),
        "ssm_beta" => TensorRole::Recurrent(R::Beta),
        "ssm_alpha" => TensorRole::Recurrent(R::Alpha),
        "ssm_norm" | "ssm_dt_norm" | "ssm_b_norm" | "ssm_c_norm" => TensorRole::Recurrent(R::Norm),
        "ssm_out" => TensorRole::Recurrent(R::Out),
        b if b.starts_with("ssm_") || b.starts_with("time_mix_") || b.starts_with("channel_mix_") => {
            TensorRole::Recurrent(R::Other)
        }

        "ffn_gate_inp" => TensorRole::Router(RouterPart::GateInp),
        "exp_probs_b" => TensorRole::Router(RouterPart::ExpProbsB),

        "ffn_gate_inp_shexp" => TensorRole::SharedExpert(FfnPart::GateInp),
        "ffn_gate_shexp" => TensorRole::SharedExpert(FfnPart::Gate),
        "ffn_up_shexp" => TensorRole::SharedExpert(FfnPart::Up),
        "ffn_down_shexp" => TensorRole::SharedExpert(FfnPart::Down),

        "ffn_gate_exps" => TensorRole::Experts { part: ExpertPart::Gate, chunked: false },
        "ffn_up_exps" => TensorRole::Experts { part: ExpertPart::Up, chunked: false },
        "ffn_down_exps" => TensorRole::Experts { part: ExpertPart::Down, chunked: false },
        "ffn_gate_up_exps" => TensorRole::Experts { part: ExpertPart::GateUp, chunked: false },
        "ffn_gate_chexps" => TensorRole::Experts { part: ExpertPart::Gate, chunked: true },
        "ffn_up_chexps" => TensorRole::Experts { part: ExpertPart::Up, chunked: true },
        "ffn_down_chexps" => TensorRole::Experts { part: ExpertPart::Down, chunked: true },

        "ffn_gate" => TensorRole::DenseFfn(FfnPart::Gate),
        "ffn_up" => TensorRole::DenseFfn(FfnPart::Up),
        "ffn_down" => TensorRole::DenseFfn(FfnPart::Down),

        "nextn.eh_proj" => TensorRole::Nextn(NextnPart::EhProj),
        "nextn.enorm" => TensorRole::Nextn(NextnPart::Enorm),
        "nextn.hnorm" => TensorRole::Nextn(NextnPart::Hnorm),
        "nextn.embed_tokens" => TensorRole::Nextn(NextnPart::EmbedTokens),
        "nextn.shared_head_head" => TensorRole::Nextn(NextnPart::SharedHeadHead),
        "nextn.shared_head_norm" => TensorRole::Nextn(NextnPart::SharedHeadNorm),
        b if b.starts_with("nextn.") => TensorRole::Nextn(NextnPart::Other),

        // Old per-expert tensors, `blk.N.ffn_gate.E` (LLM_TENSOR_FFN_GATE_EXP, llama-arch.cpp:462-464).
        b => match b.split_once('.') {
            Some((stem, e)) if !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit()) => {
                let part = match stem {
                    "ffn_gate" => ExpertPart::Gate,
                    "ffn_up" => ExpertPart::Up,
                    "ffn_down" => ExpertPart::Down,
                    _ => return TensorRole::Other,
                };
                TensorRole::Experts { part, chunked: false }
            }
            _ => TensorRole::Other,
        },
    }
}

/// The role and class of a tensor outside any block, or `None` for a name this description does not
/// know (llama-arch.cpp:749-777, 957-961, 1031-1046).
pub(crate) fn global_role(base: &str) -> Option<(TensorRole, LayerClass, LayerSlot)> {
    let input = (LayerClass::Input, LayerSlot::Input);
    let output = (LayerClass::Output, LayerSlot::Output);
    let ((class, slot), role) = match base {
        "token_embd" => (input, TensorRole::TokenEmbd),
        "position_embd" | "token_types" | "per_layer_token_embd" => (input, TensorRole::Other),
        "output" => (output, TensorRole::Output),
        "output_norm" | "enc.output_norm" | "dec.output_norm" => (output, TensorRole::OutputNorm),
        "cls"
        | "cls.output"
        | "cls.norm"
        | "dense_2"
        | "dense_3"
        | "altup_proj"
        | "altup_unembd_proj"
        | "nextn.post_projection"
        | "fc"
        | "d2t"
        | "output_res_score" => (output, TensorRole::Other),
        b if b.starts_with("output_hc_") || b.starts_with("decision.") => (output, TensorRole::Other),
        "rope_freqs" | "rope_factors_long" | "rope_factors_short" => {
            ((LayerClass::Repeating, LayerSlot::EveryLayer), TensorRole::RopeFreqs)
        }
        // Created with block 0: "do the norms on the first layer" (llama-arch.cpp:754; models/bert.cpp:40).
        "token_embd_norm" => ((LayerClass::Repeating, LayerSlot::Layer(0)), TensorRole::Norm),
        _ => return None,
    };
    Some((role, class, slot))
}

/// Describes one tensor. `n_layer` and `n_layer_all` decide NextN membership and head blocks;
/// `is_recurrent(il)` says whether block `il` is a recurrent layer. Returns `None` in the role when the
/// name was not recognised (the tensor is still described, with role `Other`).
pub(crate) fn describe(
    info: &TensorInfo,
    n_layer: usize,
    n_layer_all: usize,
    is_recurrent: impl Fn(usize) -> bool,
) -> (ModelTensor, bool) {
    let parsed = parse_name(&info.name);
    let (role, class, slot, recognised) = match parsed.block {
        Some(il) => {
            let role = block_role(parsed.base, il < n_layer_all && is_recurrent(il));
            let slot = if il < n_layer_all { LayerSlot::Layer(il) } else { LayerSlot::Output };
            (role, LayerClass::Repeating, slot, role != TensorRole::Other)
        }
        None => match global_role(parsed.base) {
            Some((role, class, slot)) => (role, class, slot, true),
            // An unknown tensor outside any block: placing it with the output is the guess that
            // keeps it off the CPU-only input list.
            None => (TensorRole::Other, LayerClass::Output, LayerSlot::Output, false),
        },
    };
    let nextn = parsed.block.is_some_and(|il| il >= n_layer && il < n_layer_all);
    let tensor = ModelTensor {
        name: info.name.clone(),
        dims: info.dims.clone(),
        ggml_type: info.ggml_type,
        size: info.size,
        shard: info.shard,
        offset: info.offset,
        block: parsed.block,
        class,
        slot,
        role,
        suffix: parsed.suffix,
        nextn,
    };
    (tensor, recognised)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_into_block_base_and_suffix() {
        let p = parse_name("blk.12.attn_q.weight");
        assert_eq!(p, ParsedName { block: Some(12), base: "attn_q", suffix: TensorSuffix::Weight });
        let p = parse_name("blk.3.ssm_a");
        assert_eq!(p, ParsedName { block: Some(3), base: "ssm_a", suffix: TensorSuffix::None });
        let p = parse_name("blk.47.nextn.eh_proj.weight");
        assert_eq!(p.base, "nextn.eh_proj");
        assert_eq!(parse_name("blk.1.exp_probs_b.bias").suffix, TensorSuffix::Bias);
        assert_eq!(parse_name("blk.1.ffn_up_exps.scale").suffix, TensorSuffix::Scale);
        let p = parse_name("output.weight");
        assert_eq!(p, ParsedName { block: None, base: "output", suffix: TensorSuffix::Weight });
        // Not a block: the number is not a number.
        assert_eq!(parse_name("blk.x.attn_q.weight").block, None);
        assert_eq!(parse_name("blk.-1.attn_q.weight").block, None);
        assert_eq!(parse_name("blk.99999999999999999999999.attn_q.weight").block, None);
    }

    #[test]
    fn deltanet_in_projections_belong_to_the_recurrent_block() {
        assert_eq!(block_role("attn_qkv", true), TensorRole::Recurrent(RecurrentPart::Qkv));
        assert_eq!(block_role("attn_gate", true), TensorRole::Recurrent(RecurrentPart::Gate));
        assert_eq!(block_role("attn_qkv", false), TensorRole::Attention(AttentionPart::Qkv));
        assert_eq!(block_role("attn_gate", false), TensorRole::Attention(AttentionPart::Gate));
        // Attention projections stay attention whatever the layer.
        assert_eq!(block_role("attn_q", true), TensorRole::Attention(AttentionPart::Q));
    }

    #[test]
    fn expert_variants() {
        let exps = |part| TensorRole::Experts { part, chunked: false };
        assert_eq!(block_role("ffn_gate_up_exps", false), exps(ExpertPart::GateUp));
        assert_eq!(
            block_role("ffn_down_chexps", false),
            TensorRole::Experts { part: ExpertPart::Down, chunked: true }
        );
        assert_eq!(block_role("ffn_up.7", false), exps(ExpertPart::Up));
        assert_eq!(block_role("ffn_norm.7", false), TensorRole::Other);
        assert_eq!(block_role("ffn_gate_inp_shexp", false), TensorRole::SharedExpert(FfnPart::GateInp));
        assert_eq!(block_role("exp_probs_b", false), TensorRole::Router(RouterPart::ExpProbsB));
        assert!(block_role("ffn_gate_exps", false).is_routed_expert());
        assert!(!block_role("ffn_gate_shexp", false).is_routed_expert());
    }

    #[test]
    fn globals_have_their_classes() {
        assert_eq!(global_role("token_embd").map(|g| g.1), Some(LayerClass::Input));
        assert_eq!(global_role("output").map(|g| g.1), Some(LayerClass::Output));
        assert_eq!(global_role("output_norm").map(|g| g.2), Some(LayerSlot::Output));
        assert_eq!(
            global_role("rope_freqs"),
            Some((TensorRole::RopeFreqs, LayerClass::Repeating, LayerSlot::EveryLayer))
        );
        assert_eq!(global_role("mystery"), None);
    }
}
