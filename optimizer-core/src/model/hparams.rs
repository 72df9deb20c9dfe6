//! llama.cpp's hyperparameters, read from GGUF metadata the way `llama_model_base::load_hparams`
//! (llama-model.cpp:1300-1491) and the per-architecture `load_arch_hparams` (src/models/*.cpp) read
//! them, and the per-layer rules that follow from them: which layers are recurrent, which use a
//! sliding window, and the head sizes of each.
//!
//! Integer keys are accepted at any integer width (llama.cpp insists on the exact GGUF type; a file it
//! rejects for that reason is still described here).

use std::path::Path;

use serde::Serialize;

use super::arch::Architecture;
use super::error::{ModelError, ModelWarning};
use crate::gguf::{Metadata, MetadataValue};

/// The most blocks a model may have (`LLAMA_MAX_LAYERS`, llama-hparams.h:11).
pub const MAX_LAYERS: usize = 512;

/// The most experts a model may have (`LLAMA_MAX_EXPERTS`, llama-hparams.h:12).
pub const MAX_EXPERTS: u32 = 1024;

/// The default `full_attention_interval` of the Gated DeltaNet hybrids (models/qwen3next.cpp:18).
const DEFAULT_FULL_ATTENTION_INTERVAL: u32 = 4;

/// The state-space (Mamba-style / Gated DeltaNet) sizes of a recurrent model, from `<arch>.ssm.*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SsmParams {
    /// `ssm.conv_kernel`.
    pub d_conv: u32,
    /// `ssm.inner_size`.
    pub d_inner: u32,
    /// `ssm.state_size`.
    pub d_state: u32,
    /// `ssm.group_count`.
    pub n_group: u32,
    /// `ssm.time_step_rank`.
    pub dt_rank: u32,
}

impl SsmParams {
    /// Floats of convolution state per sequence and layer:
    /// `(d_conv - 1) * (d_inner + 2 * n_group * d_state)` (llama-hparams.cpp:226-233).
    pub fn n_embd_r(&self) -> u64 {
        let conv = u64::from(self.d_conv.saturating_sub(1));
        conv * (u64::from(self.d_inner) + 2 * u64::from(self.n_group) * u64::from(self.d_state))
    }

    /// Floats of recurrent (SSM / DeltaNet) state per sequence and layer: `d_state * d_inner`
    /// (llama-hparams.cpp:256-257).
    pub fn n_embd_s(&self) -> u64 {
        u64::from(self.d_state) * u64::from(self.d_inner)
    }
}

/// Multi-head latent attention sizes (DeepSeek-V2/V3, GLM-4.7-Flash).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MlaParams {
    /// `attention.kv_lora_rank`: the compressed KV width; V is a view of these first columns of K.
    pub kv_lora_rank: u32,
    /// `attention.q_lora_rank` (0 for the "lite" models without a query LoRA).
    pub q_lora_rank: u32,
    /// `attention.key_length_mla`: the decompressed K head size (`qk_nope + qk_rope`).
    pub key_length_mla: u32,
    /// `attention.value_length_mla`: the decompressed V head size.
    pub value_length_mla: u32,
}

/// Everything read from the metadata, before the tensors are looked at.
#[derive(Clone, Debug)]
pub(crate) struct Hparams {
    pub(crate) n_ctx_train: u32,
    pub(crate) n_embd: u32,
    pub(crate) n_layer_all: usize,
    pub(crate) n_nextn: usize,
    pub(crate) n_expert: u32,
    pub(crate) n_expert_used: Vec<u32>,
    pub(crate) n_ff: Vec<u32>,
    pub(crate) n_ff_exp: Vec<u32>,
    pub(crate) n_ff_shexp: u32,
    pub(crate) n_expert_shared: u32,
    pub(crate) n_layer_dense_lead: u32,
    pub(crate) n_head: Vec<u32>,
    pub(crate) n_head_kv: Vec<u32>,
    pub(crate) head_k_full: u32,
    pub(crate) head_v_full: u32,
    pub(crate) head_k_swa: u32,
    pub(crate) head_v_swa: u32,
    pub(crate) n_rot: u32,
    pub(crate) n_swa: u32,
    pub(crate) is_swa: Vec<bool>,
    pub(crate) is_recurrent: Vec<bool>,
    pub(crate) ssm: Option<SsmParams>,
    pub(crate) mla: Option<MlaParams>,
    pub(crate) expert_gating_func: u32,
    pub(crate) expert_weights_norm: bool,
    pub(crate) expert_weights_scale: f32,
    /// `<arch>.vocab_size`, if present.
    pub(crate) vocab_size_key: Option<u64>,
}

impl Hparams {
    /// `n_layer()`: the blocks that are not NextN/MTP (llama-hparams.cpp:348-350).
    pub(crate) fn n_layer(&self) -> usize {
        self.n_layer_all - self.n_nextn
    }
}

/// Typed access to one file's metadata, with errors that name the file and the architecture.
pub(crate) struct Keys<'a> {
    meta: &'a Metadata,
    arch: &'a str,
    path: &'a Path,
}

fn describe_value(v: &MetadataValue) -> String {
    match v {
        MetadataValue::Array(a) => format!("an array of {} {}", a.len, a.element_type),
        MetadataValue::String(s) => format!("the string {s:?}"),
        other => format!("{} {}", other.value_type(), scalar_text(other)),
    }
}

fn scalar_text(v: &MetadataValue) -> String {
    match *v {
        MetadataValue::F32(x) => x.to_string(),
        MetadataValue::F64(x) => x.to_string(),
        MetadataValue::I8(x) => x.to_string(),
        MetadataValue::I16(x) => x.to_string(),
        MetadataValue::I32(x) => x.to_string(),
        MetadataValue::I64(x) => x.to_string(),
        _ => v.as_u64().map_or_else(String::new, |x| x.to_string()),
    }
}

impl<'a> Keys<'a> {
    pub(crate) fn new(meta: &'a Metadata, arch: &'a str, path: &'a Path) -> Keys<'a> {
        Keys { meta, arch, path }
    }

    /// `<arch>.<suffix>`.
    pub(crate) fn key(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.arch)
    }

    fn missing(&self, key: String) -> ModelError {
        ModelError::MissingKey { path: self.path.to_owned(), architecture: self.arch.to_owned(), key }
    }

    fn bad_value(&self, key: &str, value: &dyn std::fmt::Display, expected: impl Into<String>) -> ModelError {
        ModelError::BadValue {
            path: self.path.to_owned(),
            key: key.to_owned(),
            value: value.to_string(),
            expected: expected.into(),
        }
    }

    fn wrong_type(&self, key: &str, v: &MetadataValue, expected: &'static str) -> ModelError {
        ModelError::WrongType {
            path: self.path.to_owned(),
            key: key.to_owned(),
            found: describe_value(v),
            expected,
        }
    }

    /// An integer scalar that must fit in `u32` (llama.cpp keeps these as `uint32_t`).
    fn scalar_u32(&self, key: &str, v: &MetadataValue) -> Result<u32, ModelError> {
        match v {
            MetadataValue::Array(_)
            | MetadataValue::String(_)
            | MetadataValue::F32(_)
            | MetadataValue::F64(_) => Err(self.wrong_type(key, v, "an unsigned integer")),
            _ => {
                let n = v
                    .as_u64()
                    .ok_or_else(|| self.bad_value(key, &scalar_text(v), "a non-negative integer"))?;
                u32::try_from(n).map_err(|_| self.bad_value(key, &n, "at most 4294967295"))
            }
        }
    }

    /// `<arch>.<suffix>` as a `u32`, if present.
    pub(crate) fn opt_u32(&self, suffix: &str) -> Result<Option<u32>, ModelError> {
        let key = self.key(suffix);
        self.meta.get(&key).map(|v| self.scalar_u32(&key, v)).transpose()
    }

    /// `<arch>.<suffix>` as a `u32`; an error naming the key if absent.
    pub(crate) fn req_u32(&self, suffix: &str) -> Result<u32, ModelError> {
        self.opt_u32(suffix)?.ok_or_else(|| self.missing(self.key(suffix)))
    }

    /// `<arch>.<suffix>` as a `u64`, if present (for sizes that may exceed `u32`).
    fn opt_u64(&self, suffix: &str) -> Result<Option<u64>, ModelError> {
        let key = self.key(suffix);
        match self.meta.get(&key) {
            None => Ok(None),
            Some(v @ (MetadataValue::Array(_) | MetadataValue::String(_))) => {
                Err(self.wrong_type(&key, v, "an unsigned integer"))
            }
            Some(v) => v.as_u64().map(Some).ok_or_else(|| self.wrong_type(&key, v, "an unsigned integer")),
        }
    }

    /// The entries of an array key, checked to be integers or bools.
    fn array_u32(&self, key: &str, v: &MetadataValue) -> Result<Vec<u32>, ModelError> {
        let Some(arr) = v.as_array() else { return Err(self.wrong_type(key, v, "an array")) };
        let values = arr
            .values
            .as_ref()
            .ok_or_else(|| ModelError::ArrayNotRead { path: self.path.to_owned(), key: key.to_owned() })?;
        values.iter().map(|e| self.scalar_u32(key, e)).collect()
    }

    /// A key that is either one value for every block or an array of exactly `n` values, as
    /// `get_key_or_arr` reads it (llama-model-loader.cpp:459-496).
    pub(crate) fn per_layer(&self, suffix: &str, n: usize) -> Result<Option<Vec<u32>>, ModelError> {
        let key = self.key(suffix);
        let Some(v) = self.meta.get(&key) else { return Ok(None) };
        if let MetadataValue::Array(arr) = v {
            if usize::try_from(arr.len).ok() != Some(n) {
                return Err(ModelError::ArrayLength {
                    path: self.path.to_owned(),
                    key,
                    len: arr.len,
                    expected: n as u64,
                });
            }
            return self.array_u32(&key, v).map(Some);
        }
        Ok(Some(vec![self.scalar_u32(&key, v)?; n]))
    }

    /// An array of at most `MAX_LAYERS` flags, as `get_arr` reads `sliding_window_pattern`
    /// (llama-model-loader.cpp:350-403); `None` if the key is absent or not an array.
    fn flag_array(&self, suffix: &str) -> Result<Option<Vec<bool>>, ModelError> {
        let key = self.key(suffix);
        let Some(v @ MetadataValue::Array(arr)) = self.meta.get(&key) else { return Ok(None) };
        if arr.len > MAX_LAYERS as u64 {
            return Err(self.bad_value(&key, &format!("an array of {}", arr.len), "at most 512 entries"));
        }
        Ok(Some(self.array_u32(&key, v)?.into_iter().map(|x| x != 0).collect()))
    }
}

fn check_max(keys: &Keys<'_>, suffix: &str, value: u64, max: u64) -> Result<(), ModelError> {
    if value > max {
        return Err(keys.bad_value(&keys.key(suffix), &value, format!("at most {max}")));
    }
    Ok(())
}

/// Reads the hyperparameters of `arch` from `keys`. `n_vocab` (from the tensors) only feeds
/// DeepSeek2's "lite" test.
pub(crate) fn read(
    arch: &Architecture,
    keys: &Keys<'_>,
    n_vocab: Option<u64>,
    warnings: &mut Vec<ModelWarning>,
) -> Result<Hparams, ModelError> {
    // llama-model.cpp:1323-1332
    let n_ctx_train = keys.req_u32("context_length")?;
    let n_embd = keys.req_u32("embedding_length")?;
    let block_count = keys.req_u32("block_count")?;
    if block_count == 0 || block_count as usize > MAX_LAYERS {
        return Err(keys.bad_value(&keys.key("block_count"), &block_count, "between 1 and 512"));
    }
    let n_layer_all = block_count as usize;
    let n_nextn = keys.opt_u32("nextn_predict_layers")?.unwrap_or(0);
    if n_nextn > block_count {
        let expected = format!("at most block_count ({block_count})");
        return Err(keys.bad_value(&keys.key("nextn_predict_layers"), &n_nextn, expected));
    }
    let n_nextn = n_nextn as usize;
    if n_embd == 0 {
        return Err(keys.bad_value(&keys.key("embedding_length"), &0, "at least 1"));
    }
    if n_ctx_train == 0 {
        return Err(keys.bad_value(&keys.key("context_length"), &0, "at least 1"));
    }

    // Experts: llama-model.cpp:1333-1335, checks 1363-1375.
    let n_expert = keys.opt_u32("expert_count")?.unwrap_or(0);
    check_max(keys, "expert_count", u64::from(n_expert), u64::from(MAX_EXPERTS))?;
    let n_expert_used = keys.per_layer("expert_used_count", n_layer_all)?.unwrap_or(vec![0; n_layer_all]);
    let used_max = n_expert_used.iter().copied().max().unwrap_or(0);
    if used_max > n_expert {
        let expected = format!("at most expert_count ({n_expert})");
        return Err(keys.bad_value(&keys.key("expert_used_count"), &used_max, expected));
    }
    if n_expert > 0 && used_max == 0 {
        return Err(keys.bad_value(&keys.key("expert_used_count"), &0, "at least 1 when experts exist"));
    }

    // llama-model.cpp:1397-1406: head counts per layer, n_head_kv defaulting to n_head.
    let n_ff = keys.per_layer("feed_forward_length", n_layer_all)?.unwrap_or(vec![0; n_layer_all]);
    let n_head = match keys.per_layer("attention.head_count", n_layer_all)? {
        Some(v) => v,
        // Every architecture with rules here has attention heads; only an unknown one may lack them.
        None if arch.is_known() => return Err(keys.missing(keys.key("attention.head_count"))),
        None => vec![0; n_layer_all],
    };
    let n_head_kv = keys.per_layer("attention.head_count_kv", n_layer_all)?.unwrap_or_else(|| n_head.clone());
    if let Some((il, (&kv, &h))) = n_head_kv.iter().zip(&n_head).enumerate().find(|(_, (kv, h))| kv > h) {
        let expected = format!("at most head_count ({h}) in layer {il}");
        return Err(keys.bad_value(&keys.key("attention.head_count_kv"), &kv, expected));
    }

    // Head sizes, llama-model.cpp:1437-1472: default n_embd / n_head(0); SWA sizes default to full.
    let (head_k_full, head_v_full, n_rot) = if let Some(per_head) = n_embd.checked_div(n_head[0]) {
        let k = keys.opt_u32("attention.key_length")?.unwrap_or(per_head);
        let v = keys.opt_u32("attention.value_length")?.unwrap_or(per_head);
        let rot = keys.opt_u32("rope.dimension_count")?.unwrap_or(k);
        // llama-model.cpp:1452-1456
        if *arch == Architecture::Llama && rot != k {
            return Err(keys.bad_value(
                &keys.key("rope.dimension_count"),
                &rot,
                format!("{k} (the head size)"),
            ));
        }
        (k, v, rot)
    } else {
        (0, 0, 0)
    };
    let head_k_swa = keys.opt_u32("attention.key_length_swa")?.unwrap_or(head_k_full);
    let head_v_swa = keys.opt_u32("attention.value_length_swa")?.unwrap_or(head_v_full);

    // Read for every architecture: absent keys mean "none", and they only describe.
    let n_ff_exp_req = matches!(arch, Architecture::GptOss | Architecture::Deepseek2);
    let n_ff_exp = match keys.per_layer("expert_feed_forward_length", n_layer_all)? {
        Some(v) => v,
        // openai-moe.cpp:5, deepseek2.cpp:18
        None if n_ff_exp_req => return Err(keys.missing(keys.key("expert_feed_forward_length"))),
        None => vec![0; n_layer_all],
    };
    let n_ff_shexp = keys.opt_u32("expert_shared_feed_forward_length")?.unwrap_or(0);
    let n_expert_shared = match keys.opt_u32("expert_shared_count")? {
        Some(n) => n,
        // deepseek2.cpp:19
        None if *arch == Architecture::Deepseek2 => return Err(keys.missing(keys.key("expert_shared_count"))),
        None => 0,
    };
    let n_layer_dense_lead = keys.opt_u32("leading_dense_block_count")?.unwrap_or(0);

    let mut hp = Hparams {
        n_ctx_train,
        n_embd,
        n_layer_all,
        n_nextn,
        n_expert,
        n_expert_used,
        n_ff,
        n_ff_exp,
        n_ff_shexp,
        n_expert_shared,
        n_layer_dense_lead,
        n_head,
        n_head_kv,
        head_k_full,
        head_v_full,
        head_k_swa,
        head_v_swa,
        n_rot,
        n_swa: 0,
        is_swa: vec![false; n_layer_all],
        is_recurrent: vec![false; n_layer_all],
        ssm: None,
        mla: None,
        // deepseek2.cpp:20-22: read when present, else 0 / false / 0.0 (llama-hparams.h defaults)
        expert_gating_func: keys.opt_u32("expert_gating_func")?.unwrap_or(0),
        expert_weights_norm: keys
            .meta
            .get(&keys.key("expert_weights_norm"))
            .and_then(MetadataValue::as_bool)
            .unwrap_or(false),
        expert_weights_scale: keys
            .meta
            .get(&keys.key("expert_weights_scale"))
            .and_then(|v| if let MetadataValue::F32(x) = v { Some(*x) } else { None })
            .unwrap_or(0.0),
        vocab_size_key: keys.opt_u64("vocab_size")?,
    };

    match arch {
        Architecture::Qwen3Next | Architecture::Qwen35 | Architecture::Qwen35Moe => {
            // qwen3next.cpp:10-14, qwen35.cpp:9-13, qwen35moe.cpp:12-16
            hp.ssm = Some(SsmParams {
                d_conv: keys.req_u32("ssm.conv_kernel")?,
                d_inner: keys.req_u32("ssm.inner_size")?,
                d_state: keys.req_u32("ssm.state_size")?,
                dt_rank: keys.req_u32("ssm.time_step_rank")?,
                n_group: keys.req_u32("ssm.group_count")?,
            });
            hp.is_recurrent = recurrent_layers(keys, &hp)?;
        }
        Architecture::GptOss => {
            // openai-moe.cpp:6-9: the window is required, the pattern defaults to 2.
            hp.n_swa = keys.req_u32("attention.sliding_window")?;
            hp.is_swa = swa_pattern(keys, &hp, 2)?;
            if hp.head_k_full != hp.n_rot {
                warnings.push(ModelWarning::HeadDimNotRot { key_length: hp.head_k_full, n_rot: hp.n_rot });
            }
        }
        Architecture::Gemma3 => {
            // gemma3.cpp:4-12: a window only if the key is present and non-zero, then pattern 6.
            let n_swa = keys.opt_u32("attention.sliding_window")?.unwrap_or(0);
            if n_swa > 0 {
                hp.n_swa = n_swa;
                hp.is_swa = swa_pattern(keys, &hp, 6)?;
            }
        }
        Architecture::Deepseek2 => {
            // deepseek2.cpp:8-17. The "lite" test uses the vocabulary size; it is taken from the
            // tensors here, never from the tokenizer list (fixtures shorten that list).
            let n_layer = hp.n_layer();
            let lite = n_layer == 27 || n_layer == 26 || (n_layer == 48 && n_vocab == Some(128_256));
            let q_lora_rank = if lite {
                keys.opt_u32("attention.q_lora_rank")?.unwrap_or(0)
            } else {
                keys.req_u32("attention.q_lora_rank")?
            };
            let kv_lora_rank = keys.req_u32("attention.kv_lora_rank")?;
            hp.mla = mla_params(keys, kv_lora_rank, q_lora_rank, warnings)?;
        }
        Architecture::Llama | Architecture::Qwen3 | Architecture::Qwen3Moe => {}
        Architecture::Other(name) => {
            warnings.push(ModelWarning::UnknownArchitecture { architecture: name.clone() });
            // The MLA keys exist only in MLA models, and the KV cache rule that follows from them is
            // the same for every architecture (llama-kv-cache.cpp:163, 231-234).
            let kv_lora_rank = keys.opt_u32("attention.kv_lora_rank")?.unwrap_or(0);
            let q_lora_rank = keys.opt_u32("attention.q_lora_rank")?.unwrap_or(0);
            hp.mla = mla_params(keys, kv_lora_rank, q_lora_rank, warnings)?;
        }
    }
    expert_sizes_as_tensors_use_them(arch, &mut hp);
    Ok(hp)
}

/// The expert FFN sizes the tensors are shaped with when the keys are absent or not used:
/// `n_ff / n_expert_used` for the routed experts and `n_ff` for the shared one in the Qwen MoE
/// models (qwen3next.cpp:53, 70; qwen35moe.cpp:57-58; qwen3moe.cpp:50), and `n_ff_exp *
/// n_expert_shared` for DeepSeek2's shared experts (deepseek2.cpp:146-148). These use layer 0's
/// values, as llama.cpp does.
fn expert_sizes_as_tensors_use_them(arch: &Architecture, hp: &mut Hparams) {
    match arch {
        Architecture::Qwen3Next | Architecture::Qwen35Moe | Architecture::Qwen3Moe => {
            if hp.n_ff_exp[0] == 0 {
                let fallback = hp.n_ff[0].checked_div(hp.n_expert_used[0]).unwrap_or(0);
                hp.n_ff_exp.fill(fallback);
            }
            if hp.n_ff_shexp == 0 && *arch != Architecture::Qwen3Moe {
                hp.n_ff_shexp = hp.n_ff[0];
            }
        }
        Architecture::Deepseek2 => hp.n_ff_shexp = hp.n_ff_exp[0].saturating_mul(hp.n_expert_shared),
        _ => {}
    }
}

/// MLA is on iff both `key_length_mla` and `value_length_mla` are non-zero (llama-hparams.cpp:298-303,
/// deepseek2.cpp:16-17).
fn mla_params(
    keys: &Keys<'_>,
    kv_lora_rank: u32,
    q_lora_rank: u32,
    warnings: &mut Vec<ModelWarning>,
) -> Result<Option<MlaParams>, ModelError> {
    let k = keys.opt_u32("attention.key_length_mla")?.unwrap_or(0);
    let v = keys.opt_u32("attention.value_length_mla")?.unwrap_or(0);
    match (k, v) {
        (0, 0) => Ok(None),
        (0, _) | (_, 0) => {
            let present = if k == 0 { "attention.value_length_mla" } else { "attention.key_length_mla" };
            warnings.push(ModelWarning::IncompleteMlaKeys { present: keys.key(present) });
            Ok(None)
        }
        (k, v) => Ok(Some(MlaParams { kv_lora_rank, q_lora_rank, key_length_mla: k, value_length_mla: v })),
    }
}

/// Which layers are Gated DeltaNet layers (models/qwen3next.cpp:16-23, qwen35.cpp:15-23,
/// qwen35moe.cpp:18-26): `attention.recurrent_layers` if present, else every layer but each
/// `full_attention_interval`-th; NextN blocks are never recurrent.
fn recurrent_layers(keys: &Keys<'_>, hp: &Hparams) -> Result<Vec<bool>, ModelError> {
    if let Some(flags) = keys.per_layer("attention.recurrent_layers", hp.n_layer_all)? {
        return Ok(flags.into_iter().map(|x| x != 0).collect());
    }
    let interval = keys.opt_u32("full_attention_interval")?.unwrap_or(DEFAULT_FULL_ATTENTION_INTERVAL);
    if interval == 0 {
        return Err(keys.bad_value(&keys.key("full_attention_interval"), &0, "at least 1"));
    }
    let interval = interval as usize;
    Ok((0..hp.n_layer_all).map(|i| i < hp.n_layer() && (i + 1) % interval != 0).collect())
}

/// `load_swa_pattern(ml, n_pattern, dense_first = false)` (llama-model.cpp:3451-3457): a per-layer
/// `sliding_window_pattern` array is taken as is; otherwise an integer pattern `n` (the key's value or
/// the architecture's default) makes layer `il < n_layer()` SWA iff `n == 0 || il % n < n - 1`, and
/// NextN blocks never SWA (llama-hparams.cpp:8-22).
fn swa_pattern(keys: &Keys<'_>, hp: &Hparams, default: u32) -> Result<Vec<bool>, ModelError> {
    if let Some(flags) = keys.flag_array("attention.sliding_window_pattern")? {
        let mut is_swa = vec![false; hp.n_layer_all];
        for (slot, flag) in is_swa.iter_mut().zip(flags) {
            *slot = flag;
        }
        return Ok(is_swa);
    }
    let n = keys.opt_u32("attention.sliding_window_pattern")?.unwrap_or(default);
    Ok((0..hp.n_layer_all)
        .map(|il| {
            let il = il as u64;
            let n = u64::from(n);
            il < hp.n_layer() as u64 && (n == 0 || il % n < n - 1)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qwen3_next_state_sizes() {
        let ssm = SsmParams { d_conv: 4, d_inner: 4096, d_state: 128, n_group: 16, dt_rank: 32 };
        assert_eq!(ssm.n_embd_r(), 3 * 8192);
        assert_eq!(ssm.n_embd_s(), 128 * 4096);
        let no_conv = SsmParams { d_conv: 0, ..ssm };
        assert_eq!(no_conv.n_embd_r(), 0);
    }
}
