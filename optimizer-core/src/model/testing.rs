//! In-memory GGUF models for tests: a small builder, and the real layouts of the user's models
//! (reference/layouts.md §1-5) with a chosen number of blocks.

use std::path::PathBuf;

use crate::gguf::{
    DEFAULT_ALIGNMENT, DataStatus, GgmlType, GgufFile, GgufModel, Metadata, MetadataArray, MetadataValue,
    Shard, TensorInfo, ValueType,
};
use crate::units::Bytes;

use GgmlType::{Bf16, F32, Mxfp4, Q5K, Q6K, Q8_0};

/// Builds one GGUF model in memory: metadata keys (arch-prefixed or full) and tensors whose sizes
/// come from their shapes.
pub(crate) struct Builder {
    arch: String,
    meta: Metadata,
    tensors: Vec<TensorInfo>,
}

impl Builder {
    /// A model of architecture `arch` named "test".
    pub(crate) fn new(arch: &str) -> Builder {
        let mut meta = Metadata::default();
        meta.insert("general.architecture", MetadataValue::String(arch.to_owned()));
        meta.insert("general.name", MetadataValue::String("test".to_owned()));
        Builder { arch: arch.to_owned(), meta, tensors: Vec::new() }
    }

    /// Sets the full key `key`.
    pub(crate) fn set(mut self, key: &str, value: MetadataValue) -> Builder {
        self.meta.insert(key, value);
        self
    }

    /// Sets `<arch>.<suffix>` to a `u32`.
    pub(crate) fn u32(self, suffix: &str, value: u32) -> Builder {
        let key = format!("{}.{suffix}", self.arch);
        self.set(&key, MetadataValue::U32(value))
    }

    /// Sets `<arch>.<suffix>` to an array of `u32`.
    pub(crate) fn u32s(self, suffix: &str, values: &[u32]) -> Builder {
        let key = format!("{}.{suffix}", self.arch);
        let values = values.iter().map(|&v| MetadataValue::U32(v)).collect();
        self.set(&key, array(ValueType::U32, values))
    }

    /// Sets `<arch>.<suffix>` to an array of bools.
    pub(crate) fn bools(self, suffix: &str, values: &[bool]) -> Builder {
        let key = format!("{}.{suffix}", self.arch);
        let values = values.iter().map(|&v| MetadataValue::Bool(v)).collect();
        self.set(&key, array(ValueType::Bool, values))
    }

    /// Removes the full key `key`.
    pub(crate) fn without(mut self, key: &str) -> Builder {
        let entries = self.meta.entries().iter().filter(|(k, _)| k != key).cloned().collect();
        self.meta = Metadata::new(entries);
        self
    }

    /// Removes `<arch>.<suffix>`.
    pub(crate) fn without_arch(self, suffix: &str) -> Builder {
        let key = format!("{}.{suffix}", self.arch);
        self.without(&key)
    }

    /// Adds a tensor; its size is `ggml_nbytes` of the shape.
    pub(crate) fn tensor(&mut self, name: &str, dims: &[u64], ggml_type: GgmlType) {
        let size = ggml_type.tensor_bytes(dims).expect("a valid test shape");
        self.tensors.push(TensorInfo {
            name: name.to_owned(),
            dims: dims.to_vec(),
            ggml_type,
            offset: 0,
            size: Bytes::new(size),
            shard: 0,
        });
    }

    /// Removes the tensor `name`.
    pub(crate) fn drop_tensor(mut self, name: &str) -> Builder {
        self.tensors.retain(|t| t.name != name);
        self
    }

    /// Adds a tensor, builder style.
    pub(crate) fn with_tensor(mut self, name: &str, dims: &[u64], ggml_type: GgmlType) -> Builder {
        self.tensor(name, dims, ggml_type);
        self
    }

    /// One file holding everything.
    pub(crate) fn build(self) -> GgufModel {
        self.build_shards(1)
    }

    /// `n` files: the metadata in the first, the tensors spread in order over all of them (as
    /// gguf-split writes them), each file's offsets starting at 0.
    pub(crate) fn build_shards(self, n: usize) -> GgufModel {
        let per = self.tensors.len().div_ceil(n).max(1);
        let mut shards: Vec<Shard> = (0..n)
            .map(|i| Shard {
                path: PathBuf::from(if n == 1 { "test.gguf".to_owned() } else { format!("test-{i}.gguf") }),
                file: GgufFile {
                    version: 3,
                    metadata: if i == 0 { self.meta.clone() } else { Metadata::default() },
                    tensors: Vec::new(),
                    alignment: DEFAULT_ALIGNMENT,
                    data_offset: 0,
                    file_size: 0,
                    data: DataStatus::Complete,
                },
            })
            .collect();
        for (i, mut t) in self.tensors.into_iter().enumerate() {
            let shard = (i / per).min(n - 1);
            let file = &mut shards[shard].file;
            t.shard = shard;
            t.offset = file.file_size;
            file.file_size = Bytes::new(t.offset + t.size.get()).align_up(DEFAULT_ALIGNMENT).get();
            file.tensors.push(t);
        }
        GgufModel { shards }
    }
}

fn array(element_type: ValueType, values: Vec<MetadataValue>) -> MetadataValue {
    MetadataValue::Array(MetadataArray { element_type, len: values.len() as u64, values: Some(values) })
}

/// A tokenizer list far shorter than the vocabulary, and skipped by the reader: the description must
/// not take the vocabulary size from it.
fn short_tokenizer(b: Builder) -> Builder {
    let tokens = MetadataArray { element_type: ValueType::String, len: 7, values: None };
    b.set("tokenizer.ggml.tokens", MetadataValue::Array(tokens))
}

fn f32_key(b: Builder, suffix: &str, v: f32) -> Builder {
    let key = format!("{}.{suffix}", b.arch);
    b.set(&key, MetadataValue::F32(v))
}

/// Qwen3-Coder-Next (layouts.md §1) with `layers` blocks, quantized like Q5_K_M with uniform types;
/// with `legacy_ssm_in`, the 2025 layout of Qwen3-Next-80B (§2): a fused `ssm_in` instead of
/// `attn_qkv` + `attn_gate`.
pub(crate) fn qwen3_coder_next(layers: u32, legacy_ssm_in: bool) -> Builder {
    let mut b = Builder::new("qwen3next")
        .u32("context_length", 262_144)
        .u32("embedding_length", 2048)
        .u32("block_count", layers)
        .u32("feed_forward_length", 5120)
        .u32("attention.head_count", 16)
        .u32("attention.head_count_kv", 2)
        .u32("attention.key_length", 256)
        .u32("attention.value_length", 256)
        .u32("rope.dimension_count", 64)
        .u32("expert_count", 512)
        .u32("expert_used_count", 10)
        .u32("expert_feed_forward_length", 512)
        .u32("expert_shared_feed_forward_length", 512)
        .u32("ssm.conv_kernel", 4)
        .u32("ssm.state_size", 128)
        .u32("ssm.group_count", 16)
        .u32("ssm.time_step_rank", 32)
        .u32("ssm.inner_size", 4096)
        .u32("full_attention_interval", 4);
    b = f32_key(b, "attention.layer_norm_rms_epsilon", 1e-6);
    b = short_tokenizer(b);
    b.tensor("token_embd.weight", &[2048, 151_936], Q5K);
    b.tensor("output_norm.weight", &[2048], F32);
    b.tensor("output.weight", &[2048, 151_936], Q6K);
    for i in 0..layers {
        let t = |s: &str| format!("blk.{i}.{s}");
        b.tensor(&t("attn_norm.weight"), &[2048], F32);
        b.tensor(&t("post_attention_norm.weight"), &[2048], F32);
        if i % 4 == 3 {
            b.tensor(&t("attn_q.weight"), &[2048, 8192], Q5K);
            b.tensor(&t("attn_k.weight"), &[2048, 512], Q5K);
            b.tensor(&t("attn_v.weight"), &[2048, 512], Q6K);
            b.tensor(&t("attn_output.weight"), &[4096, 2048], Q5K);
            b.tensor(&t("attn_q_norm.weight"), &[256], F32);
            b.tensor(&t("attn_k_norm.weight"), &[256], F32);
        } else {
            if legacy_ssm_in {
                b.tensor(&t("ssm_in.weight"), &[2048, 12_288], Q5K);
            } else {
                b.tensor(&t("attn_qkv.weight"), &[2048, 8192], Q5K);
                b.tensor(&t("attn_gate.weight"), &[2048, 4096], Q5K);
            }
            b.tensor(&t("ssm_conv1d.weight"), &[4, 8192], F32);
            b.tensor(&t("ssm_dt.bias"), &[32], F32);
            b.tensor(&t("ssm_a"), &[32], F32);
            b.tensor(&t("ssm_ba.weight"), &[2048, 64], Q5K);
            b.tensor(&t("ssm_norm.weight"), &[128], F32);
            b.tensor(&t("ssm_out.weight"), &[4096, 2048], Q5K);
        }
        b.tensor(&t("ffn_gate_inp.weight"), &[2048, 512], F32);
        b.tensor(&t("ffn_gate_exps.weight"), &[2048, 512, 512], Q5K);
        b.tensor(&t("ffn_up_exps.weight"), &[2048, 512, 512], Q5K);
        b.tensor(&t("ffn_down_exps.weight"), &[512, 2048, 512], Q6K);
        b.tensor(&t("ffn_gate_inp_shexp.weight"), &[2048, 1], F32);
        b.tensor(&t("ffn_gate_shexp.weight"), &[2048, 512], Q5K);
        b.tensor(&t("ffn_up_shexp.weight"), &[2048, 512], Q5K);
        b.tensor(&t("ffn_down_shexp.weight"), &[512, 2048], Q6K);
    }
    b
}

/// gpt-oss-120b as Unsloth's "F16" file (layouts.md §3): BF16 weights, MXFP4 experts, F32 rest.
pub(crate) fn gpt_oss_120b(layers: u32) -> Builder {
    let mut b = Builder::new("gpt-oss")
        .u32("context_length", 131_072)
        .u32("embedding_length", 2880)
        .u32("block_count", layers)
        .u32("feed_forward_length", 2880)
        .u32("attention.head_count", 64)
        .u32("attention.head_count_kv", 8)
        .u32("attention.key_length", 64)
        .u32("attention.value_length", 64)
        .u32("rope.dimension_count", 64)
        .u32("expert_count", 128)
        .u32("expert_used_count", 4)
        .u32("expert_feed_forward_length", 2880)
        .u32("attention.sliding_window", 128);
    b = f32_key(b, "attention.layer_norm_rms_epsilon", 1e-5);
    b = short_tokenizer(b);
    b.tensor("token_embd.weight", &[2880, 201_088], Bf16);
    b.tensor("output_norm.weight", &[2880], F32);
    b.tensor("output.weight", &[2880, 201_088], Bf16);
    for i in 0..layers {
        let t = |s: &str| format!("blk.{i}.{s}");
        b.tensor(&t("attn_norm.weight"), &[2880], F32);
        b.tensor(&t("post_attention_norm.weight"), &[2880], F32);
        b.tensor(&t("attn_q.weight"), &[2880, 4096], Bf16);
        b.tensor(&t("attn_q.bias"), &[4096], F32);
        b.tensor(&t("attn_k.weight"), &[2880, 512], Bf16);
        b.tensor(&t("attn_k.bias"), &[512], F32);
        b.tensor(&t("attn_v.weight"), &[2880, 512], Bf16);
        b.tensor(&t("attn_v.bias"), &[512], F32);
        b.tensor(&t("attn_output.weight"), &[4096, 2880], Bf16);
        b.tensor(&t("attn_output.bias"), &[2880], F32);
        b.tensor(&t("attn_sinks.weight"), &[64], F32);
        b.tensor(&t("ffn_gate_inp.weight"), &[2880, 128], F32);
        b.tensor(&t("ffn_gate_inp.bias"), &[128], F32);
        b.tensor(&t("ffn_gate_exps.weight"), &[2880, 2880, 128], Mxfp4);
        b.tensor(&t("ffn_up_exps.weight"), &[2880, 2880, 128], Mxfp4);
        b.tensor(&t("ffn_down_exps.weight"), &[2880, 2880, 128], Mxfp4);
        b.tensor(&t("ffn_gate_exps.bias"), &[2880, 128], F32);
        b.tensor(&t("ffn_up_exps.bias"), &[2880, 128], F32);
        b.tensor(&t("ffn_down_exps.bias"), &[2880, 128], F32);
    }
    b
}

/// GLM-4.7-Flash Q8_0 (layouts.md §4): `deepseek2` with MLA, one dense block then MoE blocks. With
/// `nextn`, one NextN block is appended (`block_count` = `layers` + 1, `nextn_predict_layers` 1), as
/// the current converter writes it.
pub(crate) fn glm_4_7_flash(layers: u32, nextn: bool) -> Builder {
    let blocks = layers + u32::from(nextn);
    let mut b = Builder::new("deepseek2")
        .u32("context_length", 202_752)
        .u32("embedding_length", 2048)
        .u32("block_count", blocks)
        .u32("feed_forward_length", 10_240)
        .u32("leading_dense_block_count", 1)
        .u32("attention.head_count", 20)
        .u32("attention.head_count_kv", 1)
        .u32("attention.q_lora_rank", 768)
        .u32("attention.kv_lora_rank", 512)
        .u32("attention.key_length", 576)
        .u32("attention.value_length", 512)
        .u32("attention.key_length_mla", 256)
        .u32("attention.value_length_mla", 256)
        .u32("rope.dimension_count", 64)
        .u32("expert_count", 64)
        .u32("expert_used_count", 4)
        .u32("expert_shared_count", 1)
        .u32("expert_feed_forward_length", 1536)
        .u32("expert_gating_func", 2)
        .u32("vocab_size", 154_880);
    if nextn {
        b = b.u32("nextn_predict_layers", 1);
    }
    b = f32_key(b, "attention.layer_norm_rms_epsilon", 1e-5);
    b = short_tokenizer(b);
    b.tensor("token_embd.weight", &[2048, 154_880], Q8_0);
    b.tensor("output_norm.weight", &[2048], F32);
    b.tensor("output.weight", &[2048, 154_880], Q8_0);
    for i in 0..blocks {
        let t = |s: &str| format!("blk.{i}.{s}");
        b.tensor(&t("attn_norm.weight"), &[2048], F32);
        b.tensor(&t("ffn_norm.weight"), &[2048], F32);
        b.tensor(&t("attn_q_a_norm.weight"), &[768], F32);
        b.tensor(&t("attn_kv_a_norm.weight"), &[512], F32);
        b.tensor(&t("attn_q_a.weight"), &[2048, 768], Q8_0);
        b.tensor(&t("attn_q_b.weight"), &[768, 5120], Q8_0);
        b.tensor(&t("attn_kv_a_mqa.weight"), &[2048, 576], Q8_0);
        b.tensor(&t("attn_k_b.weight"), &[192, 512, 20], Q8_0);
        b.tensor(&t("attn_v_b.weight"), &[512, 256, 20], Q8_0);
        b.tensor(&t("attn_output.weight"), &[5120, 2048], Q8_0);
        if i == 0 {
            b.tensor(&t("ffn_gate.weight"), &[2048, 10_240], Q8_0);
            b.tensor(&t("ffn_up.weight"), &[2048, 10_240], Q8_0);
            b.tensor(&t("ffn_down.weight"), &[10_240, 2048], Q8_0);
        } else {
            b.tensor(&t("ffn_gate_inp.weight"), &[2048, 64], F32);
            b.tensor(&t("exp_probs_b.bias"), &[64], F32);
            b.tensor(&t("ffn_gate_exps.weight"), &[2048, 1536, 64], Q8_0);
            b.tensor(&t("ffn_up_exps.weight"), &[2048, 1536, 64], Q8_0);
            b.tensor(&t("ffn_down_exps.weight"), &[1536, 2048, 64], Q8_0);
            b.tensor(&t("ffn_gate_shexp.weight"), &[2048, 1536], Q8_0);
            b.tensor(&t("ffn_up_shexp.weight"), &[2048, 1536], Q8_0);
            b.tensor(&t("ffn_down_shexp.weight"), &[1536, 2048], Q8_0);
        }
        if i >= layers {
            // deepseek2.cpp:152-158
            b.tensor(&t("nextn.eh_proj.weight"), &[4096, 2048], Q8_0);
            b.tensor(&t("nextn.enorm.weight"), &[2048], F32);
            b.tensor(&t("nextn.hnorm.weight"), &[2048], F32);
            b.tensor(&t("nextn.shared_head_norm.weight"), &[2048], F32);
        }
    }
    b
}

/// Qwen3-8B Q8_0 (layouts.md §5): dense, GQA 32/8, head size 128, untied.
pub(crate) fn qwen3_8b(layers: u32) -> Builder {
    let mut b = Builder::new("qwen3")
        .u32("context_length", 40_960)
        .u32("embedding_length", 4096)
        .u32("block_count", layers)
        .u32("feed_forward_length", 12_288)
        .u32("attention.head_count", 32)
        .u32("attention.head_count_kv", 8)
        .u32("attention.key_length", 128)
        .u32("attention.value_length", 128);
    b = f32_key(b, "attention.layer_norm_rms_epsilon", 1e-6);
    b.tensor("token_embd.weight", &[4096, 151_936], Q8_0);
    b.tensor("output_norm.weight", &[4096], F32);
    b.tensor("output.weight", &[4096, 151_936], Q8_0);
    for i in 0..layers {
        let t = |s: &str| format!("blk.{i}.{s}");
        b.tensor(&t("attn_norm.weight"), &[4096], F32);
        b.tensor(&t("attn_q.weight"), &[4096, 4096], Q8_0);
        b.tensor(&t("attn_k.weight"), &[4096, 1024], Q8_0);
        b.tensor(&t("attn_v.weight"), &[4096, 1024], Q8_0);
        b.tensor(&t("attn_output.weight"), &[4096, 4096], Q8_0);
        b.tensor(&t("attn_q_norm.weight"), &[128], F32);
        b.tensor(&t("attn_k_norm.weight"), &[128], F32);
        b.tensor(&t("ffn_norm.weight"), &[4096], F32);
        b.tensor(&t("ffn_gate.weight"), &[4096, 12_288], Q8_0);
        b.tensor(&t("ffn_up.weight"), &[4096, 12_288], Q8_0);
        b.tensor(&t("ffn_down.weight"), &[12_288, 4096], Q8_0);
    }
    b
}

/// Llama-3.1-8B-Instruct Q8_0 (layouts.md §5), with its `rope_freqs.weight`.
pub(crate) fn llama_3_1_8b(layers: u32) -> Builder {
    let mut b = Builder::new("llama")
        .u32("context_length", 131_072)
        .u32("embedding_length", 4096)
        .u32("block_count", layers)
        .u32("feed_forward_length", 14_336)
        .u32("attention.head_count", 32)
        .u32("attention.head_count_kv", 8)
        .u32("rope.dimension_count", 128)
        .u32("vocab_size", 128_256);
    b = f32_key(b, "attention.layer_norm_rms_epsilon", 1e-5);
    b.tensor("token_embd.weight", &[4096, 128_256], Q8_0);
    b.tensor("rope_freqs.weight", &[64], F32);
    b.tensor("output_norm.weight", &[4096], F32);
    b.tensor("output.weight", &[4096, 128_256], Q8_0);
    for i in 0..layers {
        let t = |s: &str| format!("blk.{i}.{s}");
        b.tensor(&t("attn_norm.weight"), &[4096], F32);
        b.tensor(&t("attn_q.weight"), &[4096, 4096], Q8_0);
        b.tensor(&t("attn_k.weight"), &[4096, 1024], Q8_0);
        b.tensor(&t("attn_v.weight"), &[4096, 1024], Q8_0);
        b.tensor(&t("attn_output.weight"), &[4096, 4096], Q8_0);
        b.tensor(&t("ffn_norm.weight"), &[4096], F32);
        b.tensor(&t("ffn_gate.weight"), &[4096, 14_336], Q8_0);
        b.tensor(&t("ffn_up.weight"), &[4096, 14_336], Q8_0);
        b.tensor(&t("ffn_down.weight"), &[14_336, 4096], Q8_0);
    }
    b
}

/// A small model of any architecture with llama-style blocks (F32, `n_embd` 64, 4 heads of 16, 2 KV
/// heads, vocabulary 1000, tied embeddings): for rules that depend on the metadata only.
pub(crate) fn toy(arch: &str, layers: u32) -> Builder {
    let mut b = Builder::new(arch)
        .u32("context_length", 4096)
        .u32("embedding_length", 64)
        .u32("block_count", layers)
        .u32("feed_forward_length", 128)
        .u32("attention.head_count", 4)
        .u32("attention.head_count_kv", 2);
    b.tensor("token_embd.weight", &[64, 1000], F32);
    b.tensor("output_norm.weight", &[64], F32);
    for i in 0..layers {
        let t = |s: &str| format!("blk.{i}.{s}");
        b.tensor(&t("attn_norm.weight"), &[64], F32);
        b.tensor(&t("attn_q.weight"), &[64, 64], F32);
        b.tensor(&t("attn_k.weight"), &[64, 32], F32);
        b.tensor(&t("attn_v.weight"), &[64, 32], F32);
        b.tensor(&t("attn_output.weight"), &[64, 64], F32);
        b.tensor(&t("ffn_norm.weight"), &[64], F32);
        b.tensor(&t("ffn_gate.weight"), &[64, 128], F32);
        b.tensor(&t("ffn_up.weight"), &[64, 128], F32);
        b.tensor(&t("ffn_down.weight"), &[128, 64], F32);
    }
    b
}
