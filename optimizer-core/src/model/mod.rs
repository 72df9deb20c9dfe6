//! A typed description of a model, built from its GGUF header: the hyperparameters llama.cpp 11434
//! reads, what each layer is (full attention, sliding window, MLA, recurrent, NextN) with the widths
//! of its KV cache and recurrent state, and every tensor with its layer class and role.
//!
//! This is everything the memory model and the planner need to know about a model, and nothing about
//! devices or settings. The rules are llama.cpp's, cited per rule; architectures without rules of
//! their own get generic ones and a [`ModelWarning`].
//!
//! ```
//! # use optimizer_core::model::ModelDescription;
//! # fn show(gguf: &optimizer_core::gguf::GgufModel) -> Result<(), optimizer_core::model::ModelError> {
//! let model = ModelDescription::from_gguf(gguf)?;
//! for layer in model.layers.iter().filter(|l| l.has_kv) {
//!     let _ = (layer.index, layer.n_embd_k_gqa, layer.n_embd_v_gqa);
//! }
//! # Ok(()) }
//! ```

mod arch;
mod error;
mod hparams;
mod tensors;

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::Serialize;

pub use arch::Architecture;
pub use error::{ModelError, ModelWarning};
pub use hparams::{MAX_EXPERTS, MAX_LAYERS, MlaParams, SsmParams};
pub use tensors::{
    AttentionPart, ExpertPart, FfnPart, LayerClass, LayerSlot, ModelTensor, NextnPart, RecurrentPart,
    RouterPart, TensorRole, TensorSuffix,
};

use crate::gguf::{GgmlType, GgufModel};
use crate::units::Bytes;

/// How many unrecognised tensor names a warning quotes.
const WARN_EXAMPLES: usize = 5;

/// Bytes of one F32 value: recurrent state is always F32 (llama-model.cpp:2741-2742).
const F32_BYTES: u64 = 4;

/// What a layer does for attention, which decides its cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerKind {
    /// Full attention: K and V for every cell of the context.
    FullAttention,
    /// Sliding-window attention: K and V in the smaller SWA cache (llama-kv-cache-iswa.cpp:52-104).
    SlidingWindow,
    /// Multi-head latent attention: one compressed K row per cell, no V (llama-kv-cache.cpp:231-234).
    Mla,
    /// A recurrent (Gated DeltaNet / SSM) layer: a fixed-size state per sequence, no KV cache.
    Recurrent,
    /// A NextN/MTP block: skipped without MTP, never in the main context's caches
    /// (llama-model.cpp:2814-2820, 2707-2710), but it occupies a layer index.
    Nextn,
}

/// One layer (block) of the model: hyperparameters and ready-to-use cache widths.
// The flags mirror llama.cpp's own per-layer predicates (is_swa, is_recr, has_kv).
#[allow(clippy::struct_excessive_bools)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LayerInfo {
    /// The block index, `0..n_layer_all`.
    pub index: usize,
    /// What the layer is.
    pub kind: LayerKind,
    /// `n_head(il)`.
    pub n_head: u32,
    /// `n_head_kv(il)`.
    pub n_head_kv: u32,
    /// `n_embd_head_k(il)`: `key_length`, or `key_length_swa` on an SWA layer (llama-hparams.cpp:140-146).
    /// For MLA this is the cached width per KV head (`kv_lora_rank + n_rot`), not the decompressed
    /// head size (see [`MlaParams`]).
    pub head_dim_k: u32,
    /// `n_embd_head_v(il)`: `value_length`, or `value_length_swa` on an SWA layer.
    pub head_dim_v: u32,
    /// K cache elements per token: `head_dim_k * n_head_kv` (llama-hparams.cpp:156-160). Given for
    /// every layer, as llama.cpp computes it; only layers with `has_kv` are cached.
    pub n_embd_k_gqa: u64,
    /// V cache elements per token: `head_dim_v * n_head_kv` (llama-hparams.cpp:162-166), and 0 under
    /// MLA, where V is a view of K (llama-kv-cache.cpp:231-234).
    pub n_embd_v_gqa: u64,
    /// Floats of convolution state per sequence (`n_embd_r`, llama-hparams.cpp:208-234); 0 unless
    /// recurrent.
    pub n_embd_r: u64,
    /// Floats of recurrent state per sequence (`n_embd_s`, llama-hparams.cpp:236-258); 0 unless
    /// recurrent.
    pub n_embd_s: u64,
    /// `is_swa(il)`.
    pub is_swa: bool,
    /// `is_recr(il)`.
    pub is_recurrent: bool,
    /// Whether the main context's KV cache holds this layer: not recurrent, not a NextN block
    /// (llama-model.cpp:2707, 2814-2820; llama-kv-cache.cpp:166-174).
    pub has_kv: bool,
    /// `n_ff(il)`: the dense FFN size (`feed_forward_length`).
    pub n_ff: u32,
    /// `n_ff_exp(il)`: one routed expert's FFN size (`expert_feed_forward_length`).
    pub n_ff_exp: u32,
    /// `n_expert_used(il)`.
    pub n_expert_used: u32,
    /// Whether the block has routed-expert tensors.
    pub has_experts: bool,
}

/// Bytes one token takes in a layer's KV cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KvBytes {
    /// K row bytes.
    pub k: Bytes,
    /// V row bytes (0 under MLA).
    pub v: Bytes,
}

impl KvBytes {
    /// K and V together.
    pub fn total(self) -> Bytes {
        self.k + self.v
    }
}

/// A model, as llama.cpp 11434 would see it at load time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelDescription {
    /// `general.architecture`.
    pub architecture: Architecture,
    /// `general.name`.
    pub name: Option<String>,
    /// `block_count`: every block, NextN/MTP blocks included (`n_layer_all`).
    pub n_layer_all: usize,
    /// `nextn_predict_layers`: the NextN/MTP blocks at the end.
    pub n_nextn: usize,
    /// `embedding_length`.
    pub n_embd: u32,
    /// The vocabulary size, from the shape of `token_embd` (or `output`), else `<arch>.vocab_size`;
    /// never from the tokenizer list.
    pub n_vocab: u64,
    /// `context_length`.
    pub n_ctx_train: u32,
    /// `expert_count` (0 for a dense model).
    pub n_expert: u32,
    /// The most experts any layer routes to (`n_expert_used_max`, llama-hparams.cpp:90-97).
    pub n_expert_used: u32,
    /// `expert_feed_forward_length` of layer 0 (per layer in [`LayerInfo::n_ff_exp`]); for the Qwen MoE
    /// models without the key, `n_ff / n_expert_used`, as their tensors are shaped.
    pub n_ff_exp: u32,
    /// The shared expert block's FFN width as the architecture shapes its tensors:
    /// `expert_shared_feed_forward_length`, or `feed_forward_length` when that is absent (Qwen3-Next,
    /// Qwen3.5 MoE); `expert_feed_forward_length × expert_shared_count` for DeepSeek2; 0 if none.
    pub n_ff_shexp: u32,
    /// `expert_shared_count` (0 if absent).
    pub n_expert_shared: u32,
    /// `leading_dense_block_count`: dense blocks before the MoE ones (0 if absent).
    pub n_layer_dense_lead: u32,
    /// `rope.dimension_count` (`n_rot`).
    pub n_rot: u32,
    /// No `output.weight`: `token_embd` also serves as the output projection, and llama.cpp gives the
    /// output device its own copy when that device is not the CPU (llama-model-loader.cpp:1162-1168,
    /// 1369-1377).
    pub tied_embeddings: bool,
    /// `attention.sliding_window` where the architecture uses it; 0 without SWA.
    pub n_swa: u32,
    /// The state-space sizes of a recurrent model.
    pub ssm: Option<SsmParams>,
    /// The MLA sizes, when MLA is active.
    pub mla: Option<MlaParams>,
    /// `expert_gating_func` as stored (0 when absent: deepseek2.cpp:23-31 then picks one).
    pub expert_gating_func: u32,
    /// `expert_weights_norm` (false when absent).
    pub expert_weights_norm: bool,
    /// `expert_weights_scale` (0 when absent).
    pub expert_weights_scale: f32,
    /// Every block, `0..n_layer_all`.
    pub layers: Vec<LayerInfo>,
    /// Every tensor, in shard order then file order.
    pub tensors: Vec<ModelTensor>,
    /// What is worth telling the user.
    pub warnings: Vec<ModelWarning>,
}

impl ModelDescription {
    /// Describes `gguf`: shard 0's metadata and every shard's tensors.
    pub fn from_gguf(gguf: &GgufModel) -> Result<ModelDescription, ModelError> {
        let first = gguf.shards.first().ok_or(ModelError::NoShards)?;
        let path = first.path.as_path();
        let meta = &first.file.metadata;
        let arch_name =
            meta.architecture().ok_or_else(|| ModelError::MissingArchitecture { path: path.to_owned() })?;
        let architecture = Architecture::from_name(arch_name);
        let keys = hparams::Keys::new(meta, arch_name, path);
        let mut warnings = Vec::new();

        // Tensor names must be unique across shards; keep an index for lookups.
        let mut by_name: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, t) in gguf.tensors().enumerate() {
            if by_name.insert(&t.name, i).is_some() {
                let path = gguf.shards.get(t.shard).map_or(path, |s| s.path.as_path()).to_owned();
                return Err(ModelError::DuplicateTensor { path, tensor: t.name.clone() });
            }
        }
        let find = |name: &str| by_name.get(name).and_then(|&i| gguf.tensors().nth(i));
        let token_embd = find("token_embd.weight");
        let output = find("output.weight");

        let tensor_vocab = token_embd.or(output).and_then(|t| t.dims.get(1).copied());
        let hp = hparams::read(&architecture, &keys, tensor_vocab, &mut warnings)?;

        // Shapes of the embeddings: [n_embd, n_vocab], the same vocabulary on both sides.
        for t in [token_embd, output].into_iter().flatten() {
            let shard_path = gguf.shards.get(t.shard).map_or(path, |s| s.path.as_path());
            if t.dims.len() != 2 || t.dims[0] != u64::from(hp.n_embd) || t.dims[1] == 0 {
                return Err(ModelError::Shape {
                    path: shard_path.to_owned(),
                    tensor: t.name.clone(),
                    dims: t.dims.clone(),
                    expected: format!("[{}, n_vocab] (embedding_length, vocabulary)", hp.n_embd),
                });
            }
        }
        if let (Some(e), Some(o)) = (token_embd, output) {
            if e.dims[1] != o.dims[1] {
                let shard_path = gguf.shards.get(o.shard).map_or(path, |s| s.path.as_path());
                return Err(ModelError::Shape {
                    path: shard_path.to_owned(),
                    tensor: o.name.clone(),
                    dims: o.dims.clone(),
                    expected: format!("[{}, {}] (the vocabulary of token_embd.weight)", hp.n_embd, e.dims[1]),
                });
            }
        }
        let n_vocab = match (tensor_vocab, hp.vocab_size_key) {
            (Some(t), Some(k)) => {
                if t != k {
                    warnings.push(ModelWarning::VocabSizeMismatch { key_value: k, tensor_value: t });
                }
                t
            }
            (Some(n), None) | (None, Some(n)) => n,
            (None, None) => {
                return Err(ModelError::MissingTensor {
                    path: path.to_owned(),
                    architecture: arch_name.to_owned(),
                    tensor: "token_embd.weight".to_owned(),
                });
            }
        };

        let n_layer = hp.n_layer();
        let mut unrecognised = Vec::new();
        let tensors: Vec<ModelTensor> = gguf
            .tensors()
            .map(|info| {
                let (t, recognised) =
                    tensors::describe(info, n_layer, hp.n_layer_all, |il| hp.is_recurrent[il]);
                if !recognised {
                    unrecognised.push(t.name.clone());
                }
                t
            })
            .collect();
        if !unrecognised.is_empty() {
            warnings.push(ModelWarning::UnrecognisedTensors {
                count: unrecognised.len(),
                examples: unrecognised.into_iter().take(WARN_EXAMPLES).collect(),
            });
        }

        let layers = build_layers(&architecture, &hp, &tensors, &mut warnings);

        Ok(ModelDescription {
            architecture,
            name: meta.get_str("general.name").map(str::to_owned),
            n_layer_all: hp.n_layer_all,
            n_nextn: hp.n_nextn,
            n_embd: hp.n_embd,
            n_vocab,
            n_ctx_train: hp.n_ctx_train,
            n_expert: hp.n_expert,
            n_expert_used: hp.n_expert_used.iter().copied().max().unwrap_or(0),
            n_ff_exp: hp.n_ff_exp[0],
            n_ff_shexp: hp.n_ff_shexp,
            n_expert_shared: hp.n_expert_shared,
            n_layer_dense_lead: hp.n_layer_dense_lead,
            n_rot: hp.n_rot,
            tied_embeddings: output.is_none(),
            n_swa: hp.n_swa,
            ssm: hp.ssm,
            mla: hp.mla,
            expert_gating_func: hp.expert_gating_func,
            expert_weights_norm: hp.expert_weights_norm,
            expert_weights_scale: hp.expert_weights_scale,
            layers,
            tensors,
            warnings,
        })
    }

    /// `n_layer()`: the blocks that are not NextN/MTP (llama-hparams.cpp:348-350).
    pub fn n_layer(&self) -> usize {
        self.n_layer_all - self.n_nextn
    }

    /// Layer `il`, if there is one.
    pub fn layer(&self, il: usize) -> Option<&LayerInfo> {
        self.layers.get(il)
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&ModelTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The tensors of block `il` (`blk.{il}.*`).
    pub fn layer_tensors(&self, il: usize) -> impl Iterator<Item = &ModelTensor> {
        self.tensors.iter().filter(move |t| t.block == Some(il))
    }

    /// The tensors outside every block (`token_embd`, `output`, `output_norm`, `rope_freqs`, ...).
    pub fn global_tensors(&self) -> impl Iterator<Item = &ModelTensor> {
        self.tensors.iter().filter(|t| t.block.is_none())
    }

    /// The tensor llama.cpp uses as the output projection: `output.weight`, or `token_embd.weight`
    /// when the embeddings are tied.
    pub fn output_projection(&self) -> Option<&ModelTensor> {
        self.tensor("output.weight").or_else(|| self.tensor("token_embd.weight"))
    }

    /// Whether any layer uses a sliding window (`is_swa_any`, llama-hparams.cpp:40-48).
    pub fn is_swa_any(&self) -> bool {
        self.layers.iter().any(|l| l.is_swa)
    }

    /// The layers the main context's KV cache holds.
    pub fn kv_layers(&self) -> impl Iterator<Item = &LayerInfo> {
        self.layers.iter().filter(|l| l.has_kv)
    }

    /// The recurrent layers, which hold a recurrent state instead.
    pub fn recurrent_layers(&self) -> impl Iterator<Item = &LayerInfo> {
        self.layers.iter().filter(|l| l.is_recurrent)
    }

    /// The widest V row of any layer (`n_embd_v_gqa_max`, llama-hparams.cpp:199-206): without flash
    /// attention the V cache is transposed and every layer's V row is padded to this width
    /// (llama-kv-cache.cpp:209-210).
    pub fn n_embd_v_gqa_max(&self) -> u64 {
        self.layers.iter().map(|l| l.n_embd_v_gqa).max().unwrap_or(0)
    }

    /// Bytes per token of layer `il`'s KV cache with K cache type `type_k` and V type `type_v`;
    /// `v_trans` is true without flash attention (`!cparams.flash_attn`, e.g. llama-model.cpp:2485;
    /// llama-kv-cache.cpp:209-234).
    /// Zero for a layer without KV cache (and for an index past the last layer). An error if a row is
    /// not a whole number of the type's blocks, which ggml refuses.
    pub fn kv_bytes_per_token(
        &self,
        il: usize,
        type_k: GgmlType,
        type_v: GgmlType,
        v_trans: bool,
    ) -> Result<KvBytes, ModelError> {
        let (k_width, v_width) = self.kv_widths(il, v_trans);
        let row = |cache: &'static str, ggml_type: GgmlType, width: u64| {
            if width == 0 {
                return Ok(Bytes::ZERO);
            }
            ggml_type.row_size(width).map(Bytes::new).ok_or(ModelError::KvRowSize {
                layer: il,
                cache,
                width,
                ggml_type,
                block: ggml_type.block_size(),
            })
        };
        Ok(KvBytes { k: row("K", type_k, k_width)?, v: row("V", type_v, v_width)? })
    }

    /// Elements per token of layer `il`'s K and V cache rows: `n_embd_k_gqa(il)`, and for V
    /// `n_embd_v_gqa(il)`, or `n_embd_v_gqa_max()` for every layer when `v_trans` (no flash attention,
    /// llama-kv-cache.cpp:209-210); V is 0 under MLA, where there is no V tensor
    /// (llama-kv-cache.cpp:231-234). `(0, 0)` for a layer without KV cache.
    pub fn kv_widths(&self, il: usize, v_trans: bool) -> (u64, u64) {
        let Some(layer) = self.layer(il).filter(|l| l.has_kv) else { return (0, 0) };
        let v_width = match layer.n_embd_v_gqa {
            0 => 0,
            _ if v_trans => self.n_embd_v_gqa_max(),
            w => w,
        };
        (layer.n_embd_k_gqa, v_width)
    }

    /// Bytes of recurrent state (conv + SSM, both F32) per sequence for layer `il`: one row of the RS
    /// buffer, which has `n_seq_max * (1 + n_rs_seq)` rows (llama-memory-recurrent.cpp:101-103).
    /// Zero for a layer that is not recurrent.
    pub fn recurrent_bytes_per_seq(&self, il: usize) -> Bytes {
        self.layer(il).map_or(Bytes::ZERO, |l| Bytes::new((l.n_embd_r + l.n_embd_s) * F32_BYTES))
    }

    /// Bytes of block `il`'s routed-expert tensors (weights, biases and scales of `*_exps` /
    /// `*_chexps`): what `-ot exps=CPU` moves off the GPU.
    pub fn expert_bytes(&self, il: usize) -> Bytes {
        self.layer_tensors(il).filter(|t| t.role.is_routed_expert()).map(|t| t.size).sum()
    }

    /// Bytes of block `il`'s other tensors: attention, norms, router, shared experts, dense FFN, ...
    pub fn non_expert_bytes(&self, il: usize) -> Bytes {
        self.layer_tensors(il).filter(|t| !t.role.is_routed_expert()).map(|t| t.size).sum()
    }

    /// Bytes of all of block `il`'s tensors.
    pub fn layer_bytes(&self, il: usize) -> Bytes {
        self.layer_tensors(il).map(|t| t.size).sum()
    }

    /// Bytes of every tensor in the files (llama.cpp's `print_info: file size` counts the same).
    pub fn total_bytes(&self) -> Bytes {
        self.tensors.iter().map(|t| t.size).sum()
    }

    /// Bytes of the tensors llama.cpp allocates: all but the NextN blocks' unless `mtp` is on. Tied
    /// embeddings' second copy is not counted here: it depends on where the output layer goes.
    pub fn loaded_bytes(&self, mtp: bool) -> Bytes {
        self.tensors.iter().filter(|t| t.is_loaded(mtp)).map(|t| t.size).sum()
    }
}

/// Per-layer kinds and widths from the hyperparameters; `has_experts` from the tensors.
fn build_layers(
    arch: &Architecture,
    hp: &hparams::Hparams,
    tensors: &[ModelTensor],
    warnings: &mut Vec<ModelWarning>,
) -> Vec<LayerInfo> {
    let n_layer = hp.n_layer();
    let hybrid = arch.is_hybrid_recurrent();
    let mut has_experts = vec![false; hp.n_layer_all];
    for t in tensors {
        if let (Some(il), true) = (t.block, t.role.is_routed_expert()) {
            if let Some(flag) = has_experts.get_mut(il) {
                *flag = true;
            }
        }
    }
    let layers: Vec<LayerInfo> = (0..hp.n_layer_all)
        .map(|il| {
            let is_swa = hp.is_swa[il];
            let is_recurrent = hp.is_recurrent[il];
            let nextn = il >= n_layer;
            let kind = if nextn {
                LayerKind::Nextn
            } else if is_recurrent {
                LayerKind::Recurrent
            } else if hp.mla.is_some() {
                LayerKind::Mla
            } else if is_swa {
                LayerKind::SlidingWindow
            } else {
                LayerKind::FullAttention
            };
            // llama-hparams.cpp:140-166
            let (head_dim_k, head_dim_v) =
                if is_swa { (hp.head_k_swa, hp.head_v_swa) } else { (hp.head_k_full, hp.head_v_full) };
            let n_head_kv = hp.n_head_kv[il];
            let n_embd_k_gqa = u64::from(head_dim_k) * u64::from(n_head_kv);
            let n_embd_v_gqa =
                if hp.mla.is_some() { 0 } else { u64::from(head_dim_v) * u64::from(n_head_kv) };
            // Hybrids cache only their attention layers below n_layer() (llama-model.cpp:2705-2711);
            // other models drop the NextN blocks when there are some and a trunk
            // (llama-model.cpp:2814-2820).
            let has_kv = if hybrid {
                !nextn && !is_recurrent
            } else {
                !is_recurrent && (hp.n_nextn == 0 || n_layer == 0 || !nextn)
            };
            let (n_embd_r, n_embd_s) = match (is_recurrent, hp.ssm) {
                (true, Some(ssm)) => (ssm.n_embd_r(), ssm.n_embd_s()),
                _ => (0, 0),
            };
            LayerInfo {
                index: il,
                kind,
                n_head: hp.n_head[il],
                n_head_kv,
                head_dim_k,
                head_dim_v,
                n_embd_k_gqa,
                n_embd_v_gqa,
                n_embd_r,
                n_embd_s,
                is_swa,
                is_recurrent,
                has_kv,
                n_ff: hp.n_ff[il],
                n_ff_exp: hp.n_ff_exp[il],
                n_expert_used: hp.n_expert_used[il],
                has_experts: has_experts[il],
            }
        })
        .collect();

    // The converter writes key_length = kv_lora_rank + qk_rope_head_dim (conversion/deepseek.py:318-352).
    if let (Some(mla), Some(first)) = (hp.mla, layers.first()) {
        let expected = u64::from(mla.kv_lora_rank) + u64::from(hp.n_rot);
        if first.n_embd_k_gqa != expected {
            warnings.push(ModelWarning::MlaWidthUnexpected { k_width: first.n_embd_k_gqa, expected });
        }
    }
    layers
}
