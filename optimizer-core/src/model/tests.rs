//! Model descriptions of the user's models (real layouts, built in memory) and of every rejection.

use super::testing::{self, Builder};
use super::*;
use crate::gguf::{GgmlType, MetadataArray, MetadataValue, ValueType};
use crate::units::MIB;

fn describe(b: Builder) -> ModelDescription {
    ModelDescription::from_gguf(&b.build()).expect("the layout describes")
}

fn error(b: Builder) -> ModelError {
    ModelDescription::from_gguf(&b.build()).expect_err("the layout is rejected")
}

fn role(m: &ModelDescription, name: &str) -> TensorRole {
    m.tensor(name).unwrap_or_else(|| panic!("no tensor {name}")).role
}

fn indices(m: &ModelDescription, kind: LayerKind) -> Vec<usize> {
    m.layers.iter().filter(|l| l.kind == kind).map(|l| l.index).collect()
}

#[test]
fn qwen3_coder_next_full_size() {
    let m = describe(testing::qwen3_coder_next(48, false));
    assert_eq!(m.architecture, Architecture::Qwen3Next);
    assert_eq!(m.name.as_deref(), Some("test"));
    assert_eq!(m.tensors.len(), 843);
    assert_eq!((m.n_layer_all, m.n_nextn, m.n_layer()), (48, 0, 48));
    assert_eq!((m.n_embd, m.n_ctx_train), (2048, 262_144));
    // From the embedding shape: the tokenizer list in the fixture has 7 entries.
    assert_eq!(m.n_vocab, 151_936);
    assert_eq!((m.n_expert, m.n_expert_used, m.n_ff_exp, m.n_ff_shexp), (512, 10, 512, 512));
    assert!(!m.tied_embeddings);
    assert_eq!(m.n_swa, 0);
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);

    // Every 4th layer is full attention (qwen3next.cpp:21): 3, 7, ..., 47.
    let attention: Vec<usize> = (0..12).map(|k| 4 * k + 3).collect();
    assert_eq!(indices(&m, LayerKind::FullAttention), attention);
    assert_eq!(indices(&m, LayerKind::Recurrent).len(), 36);
    assert_eq!(m.kv_layers().map(|l| l.index).collect::<Vec<_>>(), attention);
    assert_eq!(m.recurrent_layers().count(), 36);

    let full = &m.layers[3];
    assert_eq!((full.n_head, full.n_head_kv, full.head_dim_k, full.head_dim_v), (16, 2, 256, 256));
    assert_eq!((full.n_embd_k_gqa, full.n_embd_v_gqa), (512, 512));
    assert_eq!((full.n_embd_r, full.n_embd_s), (0, 0));
    let recurrent = &m.layers[0];
    assert!(!recurrent.has_kv);
    assert_eq!((recurrent.n_embd_r, recurrent.n_embd_s), (24_576, 524_288));
    // 96 KiB of conv state + 2 MiB of DeltaNet state per sequence (llama-cpp-memory.md §4.5).
    assert_eq!(m.recurrent_bytes_per_seq(0), Bytes::new(96 * 1024 + 2 * MIB));
    assert_eq!(m.recurrent_bytes_per_seq(3), Bytes::ZERO);
    assert_eq!(
        m.ssm.map(|s| (s.d_conv, s.d_inner, s.d_state, s.n_group, s.dt_rank)),
        Some((4, 4096, 128, 16, 32))
    );

    // KV per token: 512 elements of K and of V on an attention layer, nothing on a DeltaNet layer.
    let f16 = m.kv_bytes_per_token(3, GgmlType::F16, GgmlType::F16, false).unwrap();
    assert_eq!((f16.k, f16.v), (Bytes::new(1024), Bytes::new(1024)));
    let q8 = m.kv_bytes_per_token(3, GgmlType::Q8_0, GgmlType::Q8_0, false).unwrap();
    assert_eq!(q8.total(), Bytes::new(2 * 16 * 34));
    assert_eq!(m.kv_bytes_per_token(0, GgmlType::F16, GgmlType::F16, false).unwrap(), KvBytes::default());

    // Roles: the DeltaNet in-projections belong to the recurrent block.
    assert_eq!(role(&m, "blk.0.attn_qkv.weight"), TensorRole::Recurrent(RecurrentPart::Qkv));
    assert_eq!(role(&m, "blk.0.attn_gate.weight"), TensorRole::Recurrent(RecurrentPart::Gate));
    assert_eq!(role(&m, "blk.0.ssm_a"), TensorRole::Recurrent(RecurrentPart::A));
    assert_eq!(role(&m, "blk.0.ssm_ba.weight"), TensorRole::Recurrent(RecurrentPart::BetaAlpha));
    assert_eq!(role(&m, "blk.0.ssm_dt.bias"), TensorRole::Recurrent(RecurrentPart::Dt));
    assert_eq!(role(&m, "blk.3.attn_q.weight"), TensorRole::Attention(AttentionPart::Q));
    assert_eq!(role(&m, "blk.3.attn_q_norm.weight"), TensorRole::Norm);
    assert_eq!(role(&m, "blk.5.ffn_gate_inp.weight"), TensorRole::Router(RouterPart::GateInp));
    assert_eq!(role(&m, "blk.5.ffn_gate_inp_shexp.weight"), TensorRole::SharedExpert(FfnPart::GateInp));
    assert_eq!(role(&m, "blk.5.ffn_down_shexp.weight"), TensorRole::SharedExpert(FfnPart::Down));
    assert_eq!(
        role(&m, "blk.5.ffn_down_exps.weight"),
        TensorRole::Experts { part: ExpertPart::Down, chunked: false }
    );

    let embd = m.tensor("token_embd.weight").unwrap();
    assert_eq!(
        (embd.role, embd.class, embd.slot, embd.block),
        (TensorRole::TokenEmbd, LayerClass::Input, LayerSlot::Input, None)
    );
    let out = m.tensor("output.weight").unwrap();
    assert_eq!((out.class, out.slot), (LayerClass::Output, LayerSlot::Output));
    assert_eq!(m.output_projection().map(|t| t.name.as_str()), Some("output.weight"));
    let q = m.tensor("blk.47.attn_q.weight").unwrap();
    assert_eq!(
        (q.class, q.slot, q.block, q.nextn),
        (LayerClass::Repeating, LayerSlot::Layer(47), Some(47), false)
    );

    // Per-layer byte split: the three expert tensors vs everything else.
    let exps: Bytes = ["gate", "up", "down"]
        .iter()
        .map(|p| m.tensor(&format!("blk.5.ffn_{p}_exps.weight")).unwrap().size)
        .sum();
    assert_eq!(m.expert_bytes(5), exps);
    assert_eq!(m.expert_bytes(5) + m.non_expert_bytes(5), m.layer_bytes(5));
    assert!(m.layers.iter().all(|l| l.has_experts));
    assert_eq!(m.layer_tensors(0).count(), 18);
    assert_eq!(m.layer_tensors(3).count(), 16);
    assert_eq!(m.global_tensors().count(), 3);
    assert_eq!(m.total_bytes(), m.loaded_bytes(false));
}

#[test]
fn split_files_keep_shard_and_offset() {
    let one = describe(testing::qwen3_coder_next(8, false));
    let three = ModelDescription::from_gguf(&testing::qwen3_coder_next(8, false).build_shards(3)).unwrap();
    assert_eq!(one.layers, three.layers);
    assert_eq!(one.total_bytes(), three.total_bytes());
    let shards: Vec<usize> = three.tensors.iter().map(|t| t.shard).collect();
    assert_eq!((shards[0], *shards.last().unwrap()), (0, 2));
    let last = three.tensors.last().unwrap();
    assert!(last.offset > 0);
    let first_of_last_shard = three.tensors.iter().find(|t| t.shard == 2).unwrap();
    assert_eq!(first_of_last_shard.offset, 0);
}

#[test]
fn qwen3_next_legacy_fused_in_projection() {
    let m = describe(testing::qwen3_coder_next(48, true));
    assert_eq!(m.tensors.len(), 807);
    assert_eq!(role(&m, "blk.0.ssm_in.weight"), TensorRole::Recurrent(RecurrentPart::In));
    assert_eq!(m.recurrent_layers().count(), 36);
}

#[test]
fn recurrent_layers_key_overrides_the_interval() {
    let flags = [true, false, false, true];
    let m = describe(testing::qwen3_coder_next(4, false).bools("attention.recurrent_layers", &flags));
    assert_eq!(indices(&m, LayerKind::Recurrent), vec![0, 3]);
    assert_eq!(indices(&m, LayerKind::FullAttention), vec![1, 2]);
    // The DeltaNet tensors in layer 1 (a recurrent layer by the interval rule, not by the key) are
    // now an attention layer's: attn_qkv is a fused attention QKV there.
    assert_eq!(role(&m, "blk.1.attn_qkv.weight"), TensorRole::Attention(AttentionPart::Qkv));

    let m = describe(testing::qwen3_coder_next(4, false).u32("full_attention_interval", 2));
    assert_eq!(indices(&m, LayerKind::FullAttention), vec![1, 3]);
}

#[test]
fn gpt_oss_120b_full_size() {
    let m = describe(testing::gpt_oss_120b(36));
    assert_eq!(m.architecture, Architecture::GptOss);
    assert_eq!(m.tensors.len(), 687);
    // The exact size of Unsloth's gpt-oss-120b-F16.gguf tensor data (layouts.md §3).
    assert_eq!(m.total_bytes(), Bytes::new(65_355_994_368));
    assert_eq!(m.n_vocab, 201_088);
    assert_eq!((m.n_swa, m.n_expert, m.n_expert_used, m.n_ff_exp), (128, 128, 4, 2880));
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);

    // Pattern 2, dense_first false: even layers SWA, odd layers full (openai-moe.cpp:9).
    let even: Vec<usize> = (0..36).step_by(2).collect();
    let odd: Vec<usize> = (1..36).step_by(2).collect();
    assert_eq!(indices(&m, LayerKind::SlidingWindow), even);
    assert_eq!(indices(&m, LayerKind::FullAttention), odd);
    assert!(m.is_swa_any());
    assert_eq!(m.kv_layers().count(), 36);
    for l in &m.layers {
        assert_eq!((l.n_embd_k_gqa, l.n_embd_v_gqa), (512, 512), "layer {}", l.index);
        assert_eq!(l.is_swa, l.index % 2 == 0);
    }

    assert_eq!(role(&m, "blk.0.attn_sinks.weight"), TensorRole::Attention(AttentionPart::Sinks));
    let bias = m.tensor("blk.0.ffn_gate_exps.bias").unwrap();
    assert_eq!(
        (bias.role, bias.suffix),
        (TensorRole::Experts { part: ExpertPart::Gate, chunked: false }, TensorSuffix::Bias)
    );
    let router_bias = m.tensor("blk.0.ffn_gate_inp.bias").unwrap();
    assert_eq!(
        (router_bias.role, router_bias.suffix),
        (TensorRole::Router(RouterPart::GateInp), TensorSuffix::Bias)
    );
    // What stays on the GPU when the experts go to the CPU: 52.1 MiB per layer (layouts.md §7).
    let resident = m.non_expert_bytes(0).mib();
    assert!((52.0..52.2).contains(&resident), "{resident}");
}

#[test]
fn glm_4_7_flash_published_layout() {
    let m = describe(testing::glm_4_7_flash(47, false));
    assert_eq!(m.architecture, Architecture::Deepseek2);
    assert_eq!(m.tensors.len(), 844);
    // The exact size of the Q8_0 file's tensor data (layouts.md §4).
    assert_eq!(m.total_bytes(), Bytes::new(31_833_324_032));
    assert_eq!((m.n_layer_all, m.n_nextn, m.n_vocab), (47, 0, 154_880));
    assert_eq!((m.n_expert, m.n_expert_used, m.n_expert_shared, m.n_layer_dense_lead), (64, 4, 1, 1));
    assert_eq!((m.n_ff_exp, m.n_ff_shexp, m.layers[0].n_ff), (1536, 1536, 10_240));
    assert_eq!(
        m.mla,
        Some(MlaParams { kv_lora_rank: 512, q_lora_rank: 768, key_length_mla: 256, value_length_mla: 256 })
    );
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);

    assert_eq!(indices(&m, LayerKind::Mla).len(), 47);
    assert_eq!(m.kv_layers().count(), 47);
    let l = &m.layers[10];
    assert_eq!((l.n_head_kv, l.n_embd_k_gqa, l.n_embd_v_gqa), (1, 576, 0));
    // One 576-wide K row per token and no V: 612 B in q8_0, 1152 B in f16 (llama-cpp-memory.md §4.4).
    let q8 = m.kv_bytes_per_token(10, GgmlType::Q8_0, GgmlType::Q8_0, false).unwrap();
    assert_eq!((q8.k, q8.v), (Bytes::new(612), Bytes::ZERO));
    let f16 = m.kv_bytes_per_token(10, GgmlType::F16, GgmlType::F16, true).unwrap();
    assert_eq!(f16.total(), Bytes::new(1152));

    assert!(!m.layers[0].has_experts);
    assert!(m.layers[1..].iter().all(|l| l.has_experts));
    assert_eq!(m.expert_bytes(0), Bytes::ZERO);
    assert_eq!(role(&m, "blk.0.ffn_up.weight"), TensorRole::DenseFfn(FfnPart::Up));
    assert_eq!(role(&m, "blk.1.exp_probs_b.bias"), TensorRole::Router(RouterPart::ExpProbsB));
    assert_eq!(role(&m, "blk.1.ffn_up_shexp.weight"), TensorRole::SharedExpert(FfnPart::Up));
    assert_eq!(role(&m, "blk.1.attn_kv_a_mqa.weight"), TensorRole::Attention(AttentionPart::KvAMqa));
    assert_eq!(role(&m, "blk.1.attn_k_b.weight"), TensorRole::Attention(AttentionPart::KB));
    assert_eq!(role(&m, "blk.1.attn_v_b.weight"), TensorRole::Attention(AttentionPart::VB));
    assert_eq!(role(&m, "blk.1.attn_q_a.weight"), TensorRole::Attention(AttentionPart::QA));
    assert_eq!(role(&m, "blk.1.attn_kv_a_norm.weight"), TensorRole::Norm);
}

#[test]
fn glm_4_7_flash_with_a_nextn_block() {
    let m = describe(testing::glm_4_7_flash(47, true));
    assert_eq!((m.n_layer_all, m.n_nextn, m.n_layer()), (48, 1, 47));
    assert_eq!(indices(&m, LayerKind::Nextn), vec![47]);
    assert_eq!(indices(&m, LayerKind::Mla).len(), 47);
    // The NextN block is filtered out of the KV cache (llama-model.cpp:2814-2820) and never SWA.
    assert_eq!(m.kv_layers().count(), 47);
    assert!(!m.layers[47].has_kv && !m.layers[47].is_swa);
    assert_eq!(m.kv_bytes_per_token(47, GgmlType::Q8_0, GgmlType::Q8_0, false).unwrap(), KvBytes::default());

    // Every tensor of block 47 is skipped without MTP, yet placed with layer 47, not the output.
    let block: Vec<&ModelTensor> = m.layer_tensors(47).collect();
    assert_eq!(block.len(), 22);
    assert!(block.iter().all(|t| t.nextn && !t.is_loaded(false) && t.is_loaded(true)));
    assert!(block.iter().all(|t| t.slot == LayerSlot::Layer(47)));
    assert!(m.layer_tensors(46).all(|t| !t.nextn));
    assert_eq!(role(&m, "blk.47.nextn.eh_proj.weight"), TensorRole::Nextn(NextnPart::EhProj));
    assert_eq!(
        role(&m, "blk.47.nextn.shared_head_norm.weight"),
        TensorRole::Nextn(NextnPart::SharedHeadNorm)
    );
    assert_eq!(role(&m, "blk.47.attn_q_b.weight"), TensorRole::Attention(AttentionPart::QB));
    assert_eq!(Some(m.loaded_bytes(false)), m.total_bytes().checked_sub(m.layer_bytes(47)));
    assert_eq!(m.loaded_bytes(true), m.total_bytes());
}

#[test]
fn expert_sizes_fall_back_as_the_tensors_are_shaped() {
    let b = testing::qwen3_coder_next(4, false)
        .without_arch("expert_feed_forward_length")
        .without_arch("expert_shared_feed_forward_length");
    let m = describe(b);
    // feed_forward_length 5120 over 10 experts used; the shared expert takes feed_forward_length.
    assert_eq!((m.n_ff_exp, m.layers[2].n_ff_exp, m.n_ff_shexp), (512, 512, 5120));
    // DeepSeek2's shared experts are expert_feed_forward_length wide, times their count.
    let m = describe(testing::glm_4_7_flash(2, false).u32("expert_shared_count", 2));
    assert_eq!((m.n_ff_exp, m.n_ff_shexp), (1536, 3072));
}

#[test]
fn legacy_deepseek2_without_mla_keys_is_full_mha() {
    let b = testing::glm_4_7_flash(3, false)
        .without_arch("attention.key_length_mla")
        .without_arch("attention.value_length_mla")
        .u32("attention.head_count_kv", 20)
        .u32("attention.key_length", 192)
        .u32("attention.value_length", 256);
    let m = describe(b);
    assert_eq!(m.mla, None);
    assert_eq!(indices(&m, LayerKind::FullAttention), vec![0, 1, 2]);
    assert_eq!((m.layers[0].n_embd_k_gqa, m.layers[0].n_embd_v_gqa), (20 * 192, 20 * 256));
}

#[test]
fn one_mla_key_alone_is_not_mla() {
    let m = describe(testing::glm_4_7_flash(3, false).without_arch("attention.value_length_mla"));
    assert_eq!(m.mla, None);
    assert_eq!(
        m.warnings,
        vec![ModelWarning::IncompleteMlaKeys { present: "deepseek2.attention.key_length_mla".into() }]
    );
}

#[test]
fn unexpected_mla_width_is_a_warning() {
    let m = describe(testing::glm_4_7_flash(3, false).u32("attention.key_length", 600));
    assert_eq!(m.warnings, vec![ModelWarning::MlaWidthUnexpected { k_width: 600, expected: 576 }]);
}

#[test]
fn qwen3_8b_dense() {
    let m = describe(testing::qwen3_8b(36));
    assert_eq!(m.tensors.len(), 399);
    assert_eq!(indices(&m, LayerKind::FullAttention).len(), 36);
    assert_eq!((m.layers[0].n_embd_k_gqa, m.layers[0].n_embd_v_gqa), (1024, 1024));
    assert_eq!((m.n_expert, m.n_expert_used), (0, 0));
    assert!(m.layers.iter().all(|l| !l.has_experts && l.n_ff == 12_288));
    assert_eq!(m.expert_bytes(0), Bytes::ZERO);
    assert_eq!(m.non_expert_bytes(0), m.layer_bytes(0));
    assert_eq!(role(&m, "blk.0.ffn_down.weight"), TensorRole::DenseFfn(FfnPart::Down));
}

#[test]
fn llama_rope_freqs_are_duplicated_per_layer() {
    let m = describe(testing::llama_3_1_8b(32));
    assert_eq!(m.tensors.len(), 292);
    // No key_length: the head size is n_embd / n_head = 128.
    assert_eq!((m.layers[0].head_dim_k, m.layers[0].n_embd_k_gqa), (128, 1024));
    let rope = m.tensor("rope_freqs.weight").unwrap();
    assert_eq!(
        (rope.role, rope.class, rope.slot, rope.block),
        (TensorRole::RopeFreqs, LayerClass::Repeating, LayerSlot::EveryLayer, None)
    );
}

#[test]
fn llama_rejects_rope_dimensions_other_than_the_head_size() {
    let e = error(testing::llama_3_1_8b(2).u32("rope.dimension_count", 64));
    assert!(matches!(&e, ModelError::BadValue { key, .. } if key == "llama.rope.dimension_count"), "{e}");
}

#[test]
fn gemma3_five_sliding_layers_then_one_full() {
    let b = testing::toy("gemma3", 12).u32("attention.sliding_window", 512);
    let m = describe(b);
    assert_eq!(m.n_swa, 512);
    assert_eq!(indices(&m, LayerKind::FullAttention), vec![5, 11]);
    assert_eq!(indices(&m, LayerKind::SlidingWindow), vec![0, 1, 2, 3, 4, 6, 7, 8, 9, 10]);
    // Tied embeddings: no output.weight, token_embd serves as the output projection.
    assert!(m.tied_embeddings);
    assert_eq!(m.output_projection().map(|t| t.name.as_str()), Some("token_embd.weight"));

    // Without a window there is no SWA at all (gemma3.cpp:4-12).
    let m = describe(testing::toy("gemma3", 12));
    assert_eq!((m.n_swa, m.is_swa_any()), (0, false));
}

#[test]
fn swa_head_sizes_and_transposed_v_padding() {
    let b = testing::toy("gemma3", 6)
        .u32("attention.sliding_window", 512)
        .u32("attention.key_length_swa", 8)
        .u32("attention.value_length_swa", 8);
    let m = describe(b);
    // SWA layers 0-4 use the SWA head sizes (2 KV heads × 8), layer 5 the full ones (2 × 16).
    assert_eq!((m.layers[0].n_embd_k_gqa, m.layers[0].n_embd_v_gqa), (16, 16));
    assert_eq!((m.layers[5].n_embd_k_gqa, m.layers[5].n_embd_v_gqa), (32, 32));
    assert_eq!(m.n_embd_v_gqa_max(), 32);
    // With flash attention V rows are as wide as the layer's; without, padded to the widest.
    let fa = m.kv_bytes_per_token(0, GgmlType::F16, GgmlType::F16, false).unwrap();
    let no_fa = m.kv_bytes_per_token(0, GgmlType::F16, GgmlType::F16, true).unwrap();
    assert_eq!((fa.k, fa.v, no_fa.v), (Bytes::new(32), Bytes::new(32), Bytes::new(64)));
}

#[test]
fn swa_pattern_key_overrides_the_default() {
    let scalar = testing::toy("gemma3", 6)
        .u32("attention.sliding_window", 512)
        .u32("attention.sliding_window_pattern", 3);
    assert_eq!(indices(&describe(scalar), LayerKind::FullAttention), vec![2, 5]);
    let flags = [false, true, true, false];
    let array = testing::toy("gemma3", 6)
        .u32("attention.sliding_window", 512)
        .bools("attention.sliding_window_pattern", &flags);
    assert_eq!(indices(&describe(array), LayerKind::SlidingWindow), vec![1, 2]);
    // Pattern 0 makes every layer SWA (llama-hparams.cpp:15).
    let zero = testing::toy("gpt-oss", 4)
        .u32("attention.sliding_window", 128)
        .u32("expert_feed_forward_length", 128)
        .u32("attention.sliding_window_pattern", 0);
    assert_eq!(indices(&describe(zero), LayerKind::SlidingWindow), vec![0, 1, 2, 3]);
}

#[test]
fn qwen35_with_an_mtp_block() {
    let b = testing::toy("qwen35", 9)
        .u32("nextn_predict_layers", 1)
        .u32("ssm.conv_kernel", 4)
        .u32("ssm.state_size", 128)
        .u32("ssm.group_count", 16)
        .u32("ssm.time_step_rank", 32)
        .u32("ssm.inner_size", 4096)
        .with_tensor("blk.8.nextn.eh_proj.weight", &[128, 64], GgmlType::F32);
    let m = describe(b);
    assert!(m.architecture.supports_rs_rollback());
    assert_eq!(indices(&m, LayerKind::FullAttention), vec![3, 7]);
    assert_eq!(indices(&m, LayerKind::Recurrent), vec![0, 1, 2, 4, 5, 6]);
    // The MTP block is attention-only and never recurrent (qwen35.cpp:15-22), but it holds no cache.
    assert_eq!(indices(&m, LayerKind::Nextn), vec![8]);
    assert!(!m.layers[8].is_recurrent && !m.layers[8].has_kv);
    assert_eq!(m.kv_layers().map(|l| l.index).collect::<Vec<_>>(), vec![3, 7]);
    assert_eq!(m.recurrent_bytes_per_seq(8), Bytes::ZERO);
    assert_eq!(role(&m, "blk.8.nextn.eh_proj.weight"), TensorRole::Nextn(NextnPart::EhProj));
    assert!(m.layer_tensors(8).all(|t| t.nextn));
}

#[test]
fn per_layer_kv_head_counts() {
    let m = describe(testing::toy("qwen3", 4).u32s("attention.head_count_kv", &[2, 0, 1, 2]));
    let widths: Vec<u64> = m.layers.iter().map(|l| l.n_embd_k_gqa).collect();
    assert_eq!(widths, vec![32, 0, 16, 32]);
    assert_eq!(m.n_embd_v_gqa_max(), 32);
    assert_eq!(m.kv_bytes_per_token(1, GgmlType::F16, GgmlType::F16, false).unwrap(), KvBytes::default());
}

#[test]
fn qwen3moe_experts_and_arrays() {
    let mut b = testing::toy("qwen3moe", 2)
        .u32("expert_count", 8)
        .u32s("expert_used_count", &[2, 4])
        .u32("expert_feed_forward_length", 32);
    for i in 0..2 {
        b.tensor(&format!("blk.{i}.ffn_gate_up_exps.weight"), &[64, 64, 8], GgmlType::F32);
        b.tensor(&format!("blk.{i}.ffn_down_exps.weight"), &[32, 64, 8], GgmlType::F32);
    }
    let m = describe(b);
    assert_eq!((m.n_expert, m.n_expert_used, m.n_ff_exp), (8, 4, 32));
    assert_eq!((m.layers[0].n_expert_used, m.layers[1].n_expert_used), (2, 4));
    assert_eq!(m.expert_bytes(1), Bytes::new((64 * 64 * 8 + 32 * 64 * 8) * 4));
    assert_eq!(
        role(&m, "blk.0.ffn_gate_up_exps.weight"),
        TensorRole::Experts { part: ExpertPart::GateUp, chunked: false }
    );
}

#[test]
fn unknown_architecture_uses_generic_rules() {
    let m = describe(testing::toy("mamba-like", 3).u32("attention.sliding_window", 64));
    assert_eq!(m.architecture, Architecture::Other("mamba-like".into()));
    assert_eq!(m.warnings, vec![ModelWarning::UnknownArchitecture { architecture: "mamba-like".into() }]);
    assert!(m.warnings[0].to_string().contains("\"mamba-like\" has no rules of its own"));
    assert_eq!(indices(&m, LayerKind::FullAttention), vec![0, 1, 2]);
    assert_eq!((m.n_swa, m.layers[0].n_embd_k_gqa), (0, 32));
    assert_eq!(m.n_vocab, 1000);
    // Unknown architectures may lack attention heads altogether.
    let m = describe(
        testing::toy("rwkv-like", 1)
            .without_arch("attention.head_count")
            .without_arch("attention.head_count_kv"),
    );
    assert_eq!((m.layers[0].n_head, m.layers[0].n_embd_k_gqa), (0, 0));
}

#[test]
fn unrecognised_tensors_are_counted_and_placed() {
    let b = testing::toy("qwen3", 2)
        .with_tensor("blk.1.mystery.weight", &[4], GgmlType::F32)
        .with_tensor("something_global.weight", &[4], GgmlType::F32)
        .with_tensor("blk.9.attn_q.weight", &[4], GgmlType::F32);
    let m = describe(b);
    assert_eq!(
        m.warnings,
        vec![ModelWarning::UnrecognisedTensors {
            count: 2,
            examples: vec!["blk.1.mystery.weight".into(), "something_global.weight".into()]
        }]
    );
    assert_eq!(m.tensor("something_global.weight").unwrap().slot, LayerSlot::Output);
    // A block past n_layer_all belongs to a head: it goes with the output (llama-model.cpp:1967-1969).
    let head = m.tensor("blk.9.attn_q.weight").unwrap();
    assert_eq!((head.slot, head.class, head.nextn), (LayerSlot::Output, LayerClass::Repeating, false));
}

#[test]
fn vocab_size_key_disagreeing_with_the_tensors_is_a_warning() {
    let m = describe(testing::toy("qwen3", 1).u32("vocab_size", 999));
    assert_eq!(m.n_vocab, 1000);
    assert_eq!(m.warnings, vec![ModelWarning::VocabSizeMismatch { key_value: 999, tensor_value: 1000 }]);
}

#[test]
fn vocab_from_the_key_when_no_embedding_tensor() {
    let m = describe(testing::toy("qwen3", 1).drop_tensor("token_embd.weight").u32("vocab_size", 1000));
    assert_eq!(m.n_vocab, 1000);
    let e = error(testing::toy("qwen3", 1).drop_tensor("token_embd.weight"));
    assert!(matches!(&e, ModelError::MissingTensor { tensor, .. } if tensor == "token_embd.weight"), "{e}");
}

#[test]
fn kv_row_not_a_whole_number_of_blocks() {
    // 2 KV heads × 16 = 32: fine for Q8_0 (block 32), not for Q4_K (block 256).
    let m = describe(testing::toy("qwen3", 1));
    assert!(m.kv_bytes_per_token(0, GgmlType::Q8_0, GgmlType::Q8_0, false).is_ok());
    let e = m.kv_bytes_per_token(0, GgmlType::Q4K, GgmlType::F16, false).unwrap_err();
    assert_eq!(e.to_string(), "layer 0: a 32-wide K cache row is not a multiple of Q4_K's block size 256");
}

// --- rejections, one per path ---

#[test]
fn missing_required_key_names_key_file_and_architecture() {
    let e = error(testing::qwen3_coder_next(4, false).without_arch("ssm.conv_kernel"));
    assert_eq!(
        e.to_string(),
        "test.gguf: required key \"qwen3next.ssm.conv_kernel\" is missing (architecture \"qwen3next\")"
    );
    for key in ["context_length", "embedding_length", "block_count", "attention.head_count"] {
        let e = error(testing::toy("qwen3", 1).without_arch(key));
        assert!(matches!(&e, ModelError::MissingKey { key: k, .. } if *k == format!("qwen3.{key}")), "{e}");
    }
    let e = error(testing::gpt_oss_120b(2).without_arch("attention.sliding_window"));
    assert!(matches!(&e, ModelError::MissingKey { key, .. } if key == "gpt-oss.attention.sliding_window"));
    for key in [
        "attention.kv_lora_rank",
        "attention.q_lora_rank",
        "expert_shared_count",
        "expert_feed_forward_length",
    ] {
        let e = error(testing::glm_4_7_flash(2, false).without_arch(key));
        assert!(
            matches!(&e, ModelError::MissingKey { key: k, .. } if *k == format!("deepseek2.{key}")),
            "{e}"
        );
    }
}

#[test]
fn missing_or_bad_architecture() {
    let e = error(testing::toy("qwen3", 1).without("general.architecture"));
    assert_eq!(e.to_string(), "test.gguf: key \"general.architecture\" is missing or not a string");
    let e = error(testing::toy("qwen3", 1).set("general.architecture", MetadataValue::U32(3)));
    assert!(matches!(e, ModelError::MissingArchitecture { .. }));
    let e = ModelDescription::from_gguf(&crate::gguf::GgufModel { shards: vec![] }).unwrap_err();
    assert!(matches!(e, ModelError::NoShards));
}

#[test]
fn absurd_layer_counts() {
    for n in [0, 513] {
        let e = error(testing::toy("qwen3", 1).u32("block_count", n));
        assert!(matches!(&e, ModelError::BadValue { key, .. } if key == "qwen3.block_count"), "{e}");
    }
    let e = error(testing::toy("qwen3", 2).u32("nextn_predict_layers", 3));
    assert_eq!(
        e.to_string(),
        "test.gguf: key \"qwen3.nextn_predict_layers\" is 3, expected at most block_count (2)"
    );
    let e = error(testing::toy("qwen3", 1).u32("embedding_length", 0));
    assert!(matches!(e, ModelError::BadValue { .. }));
    let e = error(testing::toy("qwen3", 1).u32("context_length", 0));
    assert!(matches!(e, ModelError::BadValue { .. }));
    let e = error(testing::toy("qwen3", 1).u32("attention.head_count_kv", 5));
    assert!(matches!(&e, ModelError::BadValue { key, .. } if key == "qwen3.attention.head_count_kv"), "{e}");
}

#[test]
fn absurd_expert_counts() {
    let e = error(testing::toy("qwen3moe", 1).u32("expert_count", 4).u32("expert_used_count", 8));
    assert!(matches!(&e, ModelError::BadValue { key, .. } if key == "qwen3moe.expert_used_count"), "{e}");
    let e = error(testing::toy("qwen3moe", 1).u32("expert_count", 4));
    assert!(matches!(&e, ModelError::BadValue { value, .. } if value == "0"), "{e}");
    let e = error(testing::toy("qwen3moe", 1).u32("expert_count", 2000).u32("expert_used_count", 8));
    assert!(matches!(&e, ModelError::BadValue { key, .. } if key == "qwen3moe.expert_count"), "{e}");
}

#[test]
fn zero_full_attention_interval() {
    let e = error(testing::qwen3_coder_next(4, false).u32("full_attention_interval", 0));
    assert!(
        matches!(&e, ModelError::BadValue { key, .. } if key == "qwen3next.full_attention_interval"),
        "{e}"
    );
}

#[test]
fn per_layer_array_of_the_wrong_length() {
    let e = error(testing::toy("qwen3", 3).u32s("attention.head_count_kv", &[2, 2]));
    assert_eq!(
        e.to_string(),
        "test.gguf: key \"qwen3.attention.head_count_kv\" has 2 entries, expected 3 (one per block)"
    );
}

#[test]
fn array_entries_not_read() {
    let skipped = MetadataArray { element_type: ValueType::U32, len: 2, values: None };
    let e =
        error(testing::toy("qwen3", 2).set("qwen3.attention.head_count_kv", MetadataValue::Array(skipped)));
    assert!(matches!(e, ModelError::ArrayNotRead { .. }));
}

#[test]
fn wrong_value_types() {
    let e = error(testing::toy("qwen3", 1).set("qwen3.block_count", MetadataValue::String("2".into())));
    assert_eq!(
        e.to_string(),
        "test.gguf: key \"qwen3.block_count\" holds the string \"2\", expected an unsigned integer"
    );
    let e = error(testing::toy("qwen3", 1).set("qwen3.embedding_length", MetadataValue::F32(64.0)));
    assert!(matches!(e, ModelError::WrongType { .. }));
    let e = error(testing::toy("qwen3", 1).set("qwen3.context_length", MetadataValue::I32(-1)));
    assert_eq!(
        e.to_string(),
        "test.gguf: key \"qwen3.context_length\" is -1, expected a non-negative integer"
    );
    let e = error(testing::toy("qwen3", 1).set("qwen3.context_length", MetadataValue::U64(1 << 40)));
    assert!(matches!(e, ModelError::BadValue { .. }));
    // Any integer width is accepted.
    let m = describe(testing::toy("qwen3", 1).set("qwen3.context_length", MetadataValue::U64(8192)));
    assert_eq!(m.n_ctx_train, 8192);
}

#[test]
fn inconsistent_vocabulary() {
    let b = testing::toy("qwen3", 1).with_tensor("output.weight", &[64, 999], GgmlType::F32);
    let e = error(b);
    assert_eq!(
        e.to_string(),
        "test.gguf: tensor \"output.weight\" has shape [64, 999], expected [64, 1000] (the vocabulary of token_embd.weight)"
    );
    let b = testing::toy("qwen3", 1).drop_tensor("token_embd.weight").with_tensor(
        "token_embd.weight",
        &[32, 1000],
        GgmlType::F32,
    );
    assert!(matches!(error(b), ModelError::Shape { .. }));
}

#[test]
fn duplicate_tensor_names() {
    let b = testing::toy("qwen3", 2);
    let m = b.with_tensor("blk.0.attn_q.weight", &[64, 64], GgmlType::F32).build_shards(2);
    let e = ModelDescription::from_gguf(&m).unwrap_err();
    assert_eq!(e.to_string(), "test-1.gguf: tensor \"blk.0.attn_q.weight\" appears more than once");
}

#[test]
fn written_and_read_back_through_the_reader() {
    use crate::gguf::{DataFill, GgufFile, GgufModel, GgufWriter, ReadOptions, Shard, read_gguf};

    let round_trip = |model: &GgufModel| {
        let shard = &model.shards[0];
        let mut w = GgufWriter::new();
        for (k, v) in shard.file.metadata.entries() {
            w.add_metadata(k.clone(), v.clone());
        }
        for t in &shard.file.tensors {
            w.add_tensor(t.name.clone(), &t.dims, t.ggml_type).unwrap();
        }
        let bytes = w.to_bytes(DataFill::HeaderOnly);
        let file: GgufFile = read_gguf(std::io::Cursor::new(bytes), &ReadOptions::default()).unwrap();
        let read = GgufModel { shards: vec![Shard { path: shard.path.clone(), file }] };
        ModelDescription::from_gguf(&read).unwrap()
    };

    let glm = testing::glm_4_7_flash(47, true).build();
    let direct = ModelDescription::from_gguf(&glm).unwrap();
    let read = round_trip(&glm);
    assert_eq!(read.layers, direct.layers);
    assert_eq!(read.total_bytes(), direct.total_bytes());
    assert_eq!(read.tensors.len(), 866);
    assert_eq!(read.n_vocab, 154_880);

    // A per-layer array as long as the longest allowed is loaded by default.
    let kv: Vec<u32> = (0..512).map(|i| i % 3).collect();
    let deep = testing::toy("qwen3", 512).u32s("attention.head_count_kv", &kv).build();
    let m = round_trip(&deep);
    assert_eq!((m.layers[510].n_embd_k_gqa, m.layers[511].n_embd_k_gqa), (0, 16));
}
