//! The committed layout specs against reference/layouts.md, and every rejection path of the format.

use std::collections::BTreeMap;

use super::*;
use crate::gguf::{GgmlType, MetadataValue, ReadOptions};

use GgmlType::{Bf16, F16, F32, Mxfp4, Q4K, Q5K, Q6K, Q8_0};

const QWEN3_CODER_NEXT: &str = include_str!("../../../fixtures/layouts/qwen3-coder-next.toml");
const QWEN3_NEXT: &str = include_str!("../../../fixtures/layouts/qwen3-next-80b-a3b.toml");
const GPT_OSS: &str = include_str!("../../../fixtures/layouts/gpt-oss-120b.toml");
const GLM: &str = include_str!("../../../fixtures/layouts/glm-4.7-flash.toml");
const QWEN3_8B: &str = include_str!("../../../fixtures/layouts/qwen3-8b.toml");
const LLAMA: &str = include_str!("../../../fixtures/layouts/llama-3.1-8b.toml");

fn build(spec: &str, quant: &str) -> Layout {
    LayoutSpec::parse(spec).unwrap().build(quant, &BuildOptions::default()).unwrap()
}

fn counts(pairs: &[(GgmlType, usize)]) -> BTreeMap<GgmlType, usize> {
    pairs.iter().copied().collect()
}

/// (spec, quant, tensors, tensor bytes): layouts.md §0, the table "Sizes (tensor data)", column
/// "bytes from layout"; every row there gives exact bytes.
const TOTALS: [(&str, &str, usize, u64); 11] = [
    (QWEN3_CODER_NEXT, "UD-Q5_K_XL", 843, 56_922_670_080), // row "Qwen3-Coder-Next | UD-Q5_K_XL"
    (QWEN3_CODER_NEXT, "UD-Q6_K_XL", 843, 68_585_843_712), // row "Qwen3-Coder-Next | UD-Q6_K_XL"
    (QWEN3_CODER_NEXT, "Q6_K", 843, 65_534_864_384),       // row "Qwen3-Coder-Next | Q6_K"
    (QWEN3_NEXT, "Q4_K_M", 807, 48_405_005_312),           // row "Qwen3-Next-80B-A3B | Q4_K_M (lmstudio)"
    (QWEN3_NEXT, "UD-Q5_K_XL", 807, 57_035_719_680),       // row "Qwen3-Next-80B-A3B | UD-Q5_K_XL"
    (GPT_OSS, "F16", 687, 65_355_994_368),                 // row "gpt-oss-120b | F16 (Unsloth)"
    (GPT_OSS, "MXFP4_MOE", 687, 63_374_323_968),           // row "gpt-oss-120b | MXFP4_MOE (ggml-org)"
    (GLM, "Q4_K_M", 844, 18_302_863_872),                  // row "GLM-4.7-Flash | Q4_K_M (Unsloth)"
    (GLM, "Q8_0", 844, 31_833_324_032),                    // row "GLM-4.7-Flash | Q8_0"
    (QWEN3_8B, "Q4_K_M", 399, 5_021_827_072),              // row "Qwen3-8B | Q4_K_M"
    (LLAMA, "Q4_K_M", 292, 4_912_898_304),                 // row "Llama-3.1-8B-Instruct | Q4_K_M"
];

#[test]
fn totals_match_the_layouts_summary_table() {
    for (spec, quant, n, bytes) in TOTALS {
        let l = build(spec, quant);
        assert_eq!((l.tensors.len(), l.tensor_bytes().get()), (n, bytes), "{} {quant}", l.model);
    }
}

#[test]
fn every_spec_quant_is_covered_by_the_totals() {
    for spec in [QWEN3_CODER_NEXT, QWEN3_NEXT, GPT_OSS, GLM, QWEN3_8B, LLAMA] {
        let s = LayoutSpec::parse(spec).unwrap();
        for q in s.quants() {
            let listed = TOTALS.iter().any(|(t, tq, ..)| *t == spec && *tq == q);
            assert!(listed, "{} {q} has no reference total in TOTALS", s.key());
        }
    }
}

#[test]
fn type_counts_match_layouts_md() {
    // §3: "f32 433 / bf16 146 / mxfp4 108" and "f32 433 / q8_0 146 / mxfp4 108"
    assert_eq!(build(GPT_OSS, "F16").type_counts(), counts(&[(F32, 433), (Bf16, 146), (Mxfp4, 108)]));
    assert_eq!(build(GPT_OSS, "MXFP4_MOE").type_counts(), counts(&[(F32, 433), (Q8_0, 146), (Mxfp4, 108)]));
    // §5: "f32 66 / q4_K 193 / q6_K 33" and "f32 145 / q4_K 217 / q6_K 37"
    assert_eq!(build(LLAMA, "Q4_K_M").type_counts(), counts(&[(F32, 66), (Q4K, 193), (Q6K, 33)]));
    assert_eq!(build(QWEN3_8B, "Q4_K_M").type_counts(), counts(&[(F32, 145), (Q4K, 217), (Q6K, 37)]));
    // §2: "807 tensors, f32 313, f16 48, q4_K 391, q6_K 55"
    assert_eq!(
        build(QWEN3_NEXT, "Q4_K_M").type_counts(),
        counts(&[(F32, 313), (F16, 48), (Q4K, 391), (Q6K, 55)])
    );
    // §4: "f32 281, q4_K 260, q5_K 92, q6_K 70, q8_0 141"; Q8_0: everything but the 281 F32
    assert_eq!(
        build(GLM, "Q4_K_M").type_counts(),
        counts(&[(F32, 281), (Q4K, 260), (Q5K, 92), (Q6K, 70), (Q8_0, 141)])
    );
    assert_eq!(build(GLM, "Q8_0").type_counts(), counts(&[(F32, 281), (Q8_0, 563)]));
    // §1.2: "843 tensors, of which 361 F32"
    for q in ["UD-Q5_K_XL", "UD-Q6_K_XL", "Q6_K"] {
        assert_eq!(build(QWEN3_CODER_NEXT, q).type_counts()[&F32], 361, "{q}");
    }
}

#[test]
fn per_layer_types_follow_the_tables() {
    let l = build(QWEN3_CODER_NEXT, "UD-Q5_K_XL");
    let ty = |name: &str| l.tensor(name).map(|t| t.ggml_type);
    assert_eq!(ty("blk.14.ffn_gate_exps.weight"), Some(Q4K));
    assert_eq!(ty("blk.20.ffn_gate_exps.weight"), Some(Q5K));
    assert_eq!(ty("blk.33.ffn_down_exps.weight"), Some(Q5K));
    assert_eq!(ty("blk.34.ffn_down_exps.weight"), Some(Q6K));
    assert_eq!(ty("blk.3.attn_v.weight"), Some(Q8_0));
    assert_eq!(ty("blk.2.attn_v.weight"), None, "layer 2 is a DeltaNet layer");
    assert_eq!(ty("blk.2.ssm_conv1d.weight"), Some(F32));
    let conv = l.tensor("blk.0.ssm_conv1d.weight").unwrap();
    assert_eq!(conv.dims, [4, 8192]);
    let down = l.tensor("blk.0.ffn_down_exps.weight").unwrap();
    assert_eq!(down.dims, [512, 2048, 512]);
    let glm = build(GLM, "Q4_K_M");
    assert_eq!(glm.tensor("blk.0.attn_k_b.weight").unwrap().dims, [192, 512, 20]);
    assert!(
        glm.tensor("blk.0.ffn_gate_exps.weight").is_none() && glm.tensor("blk.1.ffn_gate.weight").is_none()
    );
}

#[test]
fn tensors_are_in_llama_quantize_order() {
    let l = build(LLAMA, "Q4_K_M");
    let first: Vec<_> = l.tensors.iter().take(6).map(|t| t.name.as_str()).collect();
    assert_eq!(
        first,
        [
            "output.weight",
            "output_norm.weight",
            "rope_freqs.weight",
            "token_embd.weight",
            "blk.0.attn_k.weight",
            "blk.0.attn_norm.weight"
        ]
    );
    // layer 10 comes after layer 9, not after layer 1
    let pos = |n: &str| l.tensors.iter().position(|t| t.name == n).unwrap();
    assert!(pos("blk.9.ffn_up.weight") < pos("blk.10.attn_k.weight"));
}

#[test]
fn metadata_is_what_make_fixture_writes() {
    let l = build(GLM, "Q4_K_M");
    let m = &l.metadata;
    let keys: Vec<_> = m.entries().iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(&keys[..3], ["general.architecture", "general.type", "general.name"]);
    assert_eq!(keys.last(), Some(&"tokenizer.chat_template"));
    assert_eq!(m.get("deepseek2.attention.key_length"), Some(&MetadataValue::U32(576)));
    assert_eq!(m.get("deepseek2.expert_weights_scale"), Some(&MetadataValue::F32(1.8)));
    assert_eq!(m.get("deepseek2.expert_weights_norm"), Some(&MetadataValue::Bool(true)));
    assert_eq!(m.get("general.file_type"), Some(&MetadataValue::U32(15)));
    assert_eq!(m.get_str("general.name"), Some("GLM-4.7-Flash"));
    assert_eq!(
        m.get_str("general.fixture.layout"),
        Some(
            "glm-4.7-flash Q4_K_M n_layer=47 (splitplan xtask fixtures; tokenizer shortened to 537 of 154880 tokens; data absent)"
        )
    );
    let tokens = m.get_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len, (256 + SHORT_EXTRA_TOKENS + 25) as u64);
    assert!(m.get_str("tokenizer.chat_template").unwrap().contains("'\n'"));
    let q = build(QWEN3_CODER_NEXT, "Q6_K");
    assert_eq!(q.metadata.get("qwen3next.rope.freq_base"), Some(&MetadataValue::F32(5e6)));
    assert_eq!(q.metadata.get_u64("qwen3next.full_attention_interval"), Some(4));
}

#[test]
fn full_tokenizer_has_the_real_counts() {
    let spec = LayoutSpec::parse(GPT_OSS).unwrap();
    let opts = BuildOptions { tokenizer: TokenizerMode::Full, sparse: true, ..BuildOptions::default() };
    let l = spec.build("MXFP4_MOE", &opts).unwrap();
    let arr = |k: &str| l.metadata.get_array(k).unwrap().len;
    assert_eq!((arr("tokenizer.ggml.tokens"), arr("tokenizer.ggml.token_type")), (201_088, 201_088));
    assert_eq!(arr("tokenizer.ggml.merges"), 280_147);
    let Some(MetadataValue::Array(tokens)) = l.metadata.get("tokenizer.ggml.tokens") else { panic!() };
    assert_eq!(tokens.values.as_ref().unwrap()[200_002], MetadataValue::String("<|return|>".into()));
    assert!(
        l.metadata
            .get_str("general.fixture.layout")
            .unwrap()
            .ends_with("(splitplan xtask fixtures; full-length tokenizer; data sparse-zero)")
    );
}

#[test]
fn fewer_layers_keep_the_first_layers_of_the_real_file() {
    let spec = LayoutSpec::parse(QWEN3_CODER_NEXT).unwrap();
    let l = spec.build("UD-Q5_K_XL", &BuildOptions { n_layer: Some(4), ..BuildOptions::default() }).unwrap();
    // 3 global + 3 DeltaNet layers × 18 + 1 full-attention layer × 16
    assert_eq!(l.tensors.len(), 3 + 3 * 18 + 16);
    assert_eq!(l.metadata.get_u64("qwen3next.block_count"), Some(4));
    assert_eq!(l.metadata.get_str("general.name"), Some("Qwen3-Coder-Next (4-layer fixture)"));
    assert_eq!(l.tensor("blk.3.ffn_down_exps.weight").unwrap().ggml_type, Q6K);
    let err = spec.build("Q6_K", &BuildOptions { n_layer: Some(49), ..BuildOptions::default() }).unwrap_err();
    assert_eq!(err, LayoutError::TooManyLayers { model: "qwen3-coder-next".into(), requested: 49, max: 48 });
}

#[test]
fn coder_next_is_split_like_the_published_files() {
    let l = build(QWEN3_CODER_NEXT, "UD-Q5_K_XL");
    let shards = l.shards().unwrap();
    let files: Vec<_> = shards.iter().map(|s| s.file.rsplit('/').next().unwrap()).collect();
    assert_eq!(
        files,
        [
            "Qwen3-Coder-Next-UD-Q5_K_XL-00001-of-00003.gguf",
            "Qwen3-Coder-Next-UD-Q5_K_XL-00002-of-00003.gguf",
            "Qwen3-Coder-Next-UD-Q5_K_XL-00003-of-00003.gguf"
        ]
    );
    assert!(shards[0].tensors.is_empty(), "the first file holds only metadata");
    assert_eq!(shards[1].metadata.len(), 3);
    let bytes = |s: &ShardLayout| l.tensors[s.tensors.clone()].iter().map(|t| t.size.get()).sum::<u64>();
    // layouts.md §1.4: "5.7 MiB + 47 G + 6.7 G" as ls -h shows them
    assert!((49_000_000_000..=50_000_000_000).contains(&bytes(&shards[1])), "{}", bytes(&shards[1]));
    assert!((6.4..=6.8).contains(&(bytes(&shards[2]) as f64 / f64::from(1u32 << 30))));
    for q in ["UD-Q6_K_XL", "Q6_K"] {
        assert_eq!(build(QWEN3_CODER_NEXT, q).shards().unwrap().len(), 3, "{q}");
    }
    assert_eq!(build(GPT_OSS, "F16").shards().unwrap().len(), 1);
}

#[test]
fn a_layout_reads_back_as_the_model_it_describes() {
    let l = build(QWEN3_CODER_NEXT, "Q6_K");
    let model = l.to_model(&ReadOptions::default()).unwrap();
    assert_eq!(model.shards.len(), 3);
    assert!(model.is_header_only());
    assert_eq!(model.tensor_bytes(), l.tensor_bytes());
    let read: Vec<_> = model.tensors().map(|t| (&t.name, &t.dims, t.ggml_type, t.size)).collect();
    let built: Vec<_> = l.tensors.iter().map(|t| (&t.name, &t.dims, t.ggml_type, t.size)).collect();
    assert_eq!(read, built);
    assert_eq!(model.metadata().unwrap().get_u64("split.count"), Some(3));
    assert_eq!(model.tensors().last().unwrap().shard, 2);
}

// ---------------------------------------------------------------------------------------------
// rejection paths, each on a small spec

const TINY: &str = r#"
[model]
key = "tiny"
arch = "llama"
[hparams]
n_layer = 2
n_embd = 256
n_vocab = 1000
[derived]
n_ff = "n_embd * 2"
[metadata]
keys = [
  { key = "general.architecture", string = "llama" },
  { key = "llama.block_count", u32 = "n_layer" },
  { key = "general.name", template = "tiny{name_suffix}" },
  { key = "tokenizer.ggml.tokens", generate = "tokens" },
]
[tokenizer]
tokens = "n_vocab"
merges = 10
special = { 999 = "<|end|>" }
[tensors]
global = [{ name = "token_embd.weight", shape = ["n_embd", "n_vocab"], type = "BF16" }]
[[tensors.layer]]
kind = "all"
tensors = [
  { name = "attn_norm.weight", shape = ["n_embd"], type = "F32" },
  { name = "ffn_up.weight", shape = ["n_embd", "n_ff"], type = "BF16" },
]
[quants.Q8_0]
file = "tiny-Q8_0.gguf"
file_type = 7
types = [
  { tensor = "token_embd.weight", type = "Q8_0" },
  { tensor = "ffn_up.weight", type = "Q8_0", layers = "0-1" },
]
"#;

fn tiny_with(from: &str, to: &str) -> Result<Layout, LayoutError> {
    assert!(TINY.contains(from), "{from}");
    LayoutSpec::parse(&TINY.replacen(from, to, 1))?.build("Q8_0", &BuildOptions::default())
}

#[test]
fn the_tiny_spec_builds() {
    let l = tiny_with("", "").unwrap();
    assert_eq!(l.tensors.len(), 5);
    assert_eq!(l.tensor("blk.1.ffn_up.weight").unwrap().dims, [256, 512]);
    assert_eq!(
        l.metadata.get_array("tokenizer.ggml.tokens").unwrap().len,
        256 + SHORT_EXTRA_TOKENS as u64 + 1
    );
}

#[test]
fn unknown_fields_and_bad_toml_are_rejected() {
    assert!(matches!(
        tiny_with("file_type = 7", "file_type = 7\nfiletype = 7"),
        Err(LayoutError::Toml { .. })
    ));
    assert!(matches!(tiny_with("[model]", "[model"), Err(LayoutError::Toml { .. })));
    assert!(matches!(tiny_with("n_layer = 2", "n_layer = -2"), Err(LayoutError::BadHparam { .. })));
    assert!(matches!(tiny_with("n_layer = 2", "n_layers = 2"), Err(LayoutError::BadHparam { .. })));
    assert!(matches!(tiny_with("n_ff = ", "n_embd = "), Err(LayoutError::BadHparam { .. })));
}

#[test]
fn unknown_quant_lists_the_available_ones() {
    let err = LayoutSpec::parse(TINY).unwrap().build("Q4_K_M", &BuildOptions::default()).unwrap_err();
    assert_eq!(err.to_string(), "model \"tiny\" has no quant \"Q4_K_M\"; expected one of Q8_0");
}

#[test]
fn expressions_are_checked() {
    assert!(matches!(
        tiny_with("\"n_embd * 2\"", "\"n_embd *\""),
        Err(LayoutError::Expr(ExprError::Syntax { .. }))
    ));
    assert!(matches!(
        tiny_with("\"n_embd * 2\"", "\"n_emb * 2\""),
        Err(LayoutError::Expr(ExprError::UnknownName { name, .. })) if name == "n_emb"
    ));
    assert!(matches!(
        tiny_with("n_ff = \"n_embd * 2\"", "n_ff = \"n_ff + 1\""),
        Err(LayoutError::BadHparam { .. })
    ));
    assert!(tiny_with("n_vocab = 1000", "n_vocab = 1000\nx = 1.5\ny = 2").is_ok());
    let float = tiny_with("n_vocab = 1000", "n_vocab = 1000.0");
    assert!(matches!(float, Err(LayoutError::BadHparam { name, .. }) if name == "n_vocab"));
}

#[test]
fn shapes_are_checked() {
    let zero = tiny_with("[\"n_embd\", \"n_ff\"]", "[\"n_embd\", \"n_ff - 512\"]");
    assert!(matches!(zero, Err(LayoutError::BadShape { tensor, .. }) if tensor == "blk.0.ffn_up.weight"));
    let block = tiny_with("[\"n_embd\", \"n_ff\"]", "[\"n_embd + 1\", \"n_ff\"]");
    assert!(matches!(block, Err(LayoutError::BadShape { message, .. }) if message.contains("block size 32")));
    let dims = tiny_with("shape = [\"n_embd\"]", "shape = []");
    assert!(matches!(dims, Err(LayoutError::BadShape { .. })));
    let blk = tiny_with("name = \"token_embd.weight\", shape", "name = \"blk.0.x\", shape");
    assert!(matches!(blk, Err(LayoutError::BadShape { .. })));
    let dup = tiny_with("name = \"attn_norm.weight\"", "name = \"ffn_up.weight\"");
    assert!(matches!(dup, Err(LayoutError::DuplicateTensor { tensor }) if tensor == "blk.0.ffn_up.weight"));
}

#[test]
fn type_rules_are_checked() {
    let unknown = tiny_with("type = \"Q8_0\", layers", "type = \"Q9_0\", layers");
    assert!(matches!(unknown, Err(LayoutError::UnknownType { name, .. }) if name == "Q9_0"));
    let layers = tiny_with("layers = \"0-1\"", "layers = \"L0-1\"");
    assert!(matches!(layers, Err(LayoutError::BadLayerList { .. })));
    let unassigned = tiny_with("layers = \"0-1\"", "layers = \"0\"");
    assert_eq!(
        unassigned.unwrap_err(),
        LayoutError::UnassignedTensor {
            quant: "Q8_0".into(),
            tensor: "blk.1.ffn_up.weight".into(),
            source_type: Bf16
        }
    );
    let overlap = tiny_with(
        "layers = \"0-1\" },",
        "layers = \"0-1\" },\n  { tensor = \"ffn_up.weight\", type = \"Q4_K\", layers = \"1\" },",
    );
    assert!(
        matches!(overlap, Err(LayoutError::OverlappingRules { tensor, .. }) if tensor == "blk.1.ffn_up.weight")
    );
    let unused = tiny_with(
        "layers = \"0-1\" },",
        "layers = \"0-1\" },\n  { tensor = \"ffn_upp.weight\", type = \"Q4_K\" },",
    );
    assert_eq!(
        unused.unwrap_err().to_string(),
        "quant Q8_0: type rule ffn_upp.weight = Q4_K covers no tensor"
    );
    // a rule with layers never covers a global tensor
    let global = tiny_with(
        "{ tensor = \"token_embd.weight\", type = \"Q8_0\" }",
        "{ tensor = \"token_embd.weight\", type = \"Q8_0\", layers = \"0\" }",
    );
    assert!(matches!(global, Err(LayoutError::UnassignedTensor { .. })));
}

#[test]
fn metadata_entries_are_checked() {
    let two = tiny_with("string = \"llama\" }", "string = \"llama\", u32 = 1 }");
    assert!(matches!(two, Err(LayoutError::BadMetadata { key, .. }) if key == "general.architecture"));
    let none = tiny_with(", string = \"llama\" }", " }");
    assert!(matches!(none, Err(LayoutError::BadMetadata { .. })));
    let generate = tiny_with("generate = \"tokens\"", "generate = \"scores\"");
    assert!(
        matches!(generate, Err(LayoutError::BadMetadata { message, .. }) if message.contains("\"scores\""))
    );
    let no_tokenizer =
        tiny_with("[tokenizer]\ntokens = \"n_vocab\"\nmerges = 10\nspecial = { 999 = \"<|end|>\" }", "");
    assert!(matches!(no_tokenizer, Err(LayoutError::BadMetadata { .. })));
    let twice = tiny_with("{ key = \"llama.block_count\"", "{ key = \"general.architecture\"");
    assert!(matches!(twice, Err(LayoutError::BadMetadata { message, .. }) if message.contains("twice")));
    let placeholder = tiny_with("tiny{name_suffix}", "tiny{suffix}");
    assert!(
        matches!(placeholder, Err(LayoutError::BadMetadata { message, .. }) if message.contains("{suffix}"))
    );
    let range = tiny_with("u32 = \"n_layer\"", "u32 = \"n_layer - 3\"");
    assert!(
        matches!(range, Err(LayoutError::BadMetadata { message, .. }) if message.contains("-1 does not fit in u32"))
    );
    let special = tiny_with("999 = ", "x = ");
    assert!(matches!(special, Err(LayoutError::BadMetadata { .. })));
    // in full length, a special token must lie inside the vocabulary
    let spec = LayoutSpec::parse(&TINY.replace("999 = ", "1000 = ")).unwrap();
    let full = BuildOptions { tokenizer: TokenizerMode::Full, ..BuildOptions::default() };
    assert!(
        matches!(spec.build("Q8_0", &full), Err(LayoutError::BadMetadata { message, .. }) if message.contains("1000"))
    );
}
