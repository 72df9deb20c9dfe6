//! `build_moe_ffn` node for node against llama.cpp's own graphs: the MoE blocks of traced dry runs
//! (fixtures/ground-truth/traces/moe-blocks.txt: the `@@N` lines of one layer's block, the
//! scheduler's copies and the CUDA backend's dependency nodes removed, the shared expert's nodes
//! the CUDA backend moves into the block left out), built here from the block's input alone.

use std::path::PathBuf;

use crate::gguf::GgmlType;
use crate::memory::sim::build::ffn::{FfnGate, FfnOp, FfnWeights, GatingFunc, MoeFfn};
use crate::memory::sim::build::{LlmGraph, Ubatch};
use crate::memory::{GpuAtLoad, Predictor, Runner};
use crate::model::{ModelDescription, testing};
use crate::settings::ServerSettings;
use crate::units::Bytes;

/// One node as the trace prints it: `op type ne0 ne1 ne2 ne3|name|src;src`.
fn line(g: &LlmGraph<'_>, id: crate::memory::sim::ggml::TensorId) -> String {
    let t = g.ctx.t(id);
    let srcs: Vec<&str> = t.src.iter().flatten().map(|&s| g.ctx.name(s)).collect();
    format!(
        "{} {} {} {} {} {}|{}|{}",
        t.op.desc(),
        t.ty.name().to_lowercase(),
        t.ne[0],
        t.ne[1],
        t.ne[2],
        t.ne[3],
        g.ctx.name(id),
        srcs.join(";")
    )
}

/// `node_N` names depend on the whole graph's node count: compared as a wildcard here.
fn unnumbered(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(p) = rest.find("node_") {
        out.push_str(&rest[..p + 5]);
        rest = rest[p + 5..].trim_start_matches(|c: char| c.is_ascii_digit());
        out.push('N');
    }
    out.push_str(rest);
    out
}

struct Block {
    row: String,
    il: usize,
    lines: Vec<String>,
}

fn blocks() -> Vec<Block> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/ground-truth/traces/moe-blocks.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out: Vec<Block> = Vec::new();
    for l in text.lines() {
        if let Some(h) = l.strip_prefix("# ") {
            let (row, il) = h.split_once(' ').expect("header");
            out.push(Block { row: row.to_owned(), il: il.parse().expect("layer"), lines: Vec::new() });
        } else {
            out.last_mut().expect("a header first").lines.push(l.to_owned());
        }
    }
    out
}

fn build_block(b: &Block) -> Vec<String> {
    let il = b.il;
    let layers = il as u32 + 1;
    let family = b.row.split('-').next().expect("row id");
    let gguf = match family {
        "oss" => testing::gpt_oss_120b(layers).build(),
        "q5" => testing::qwen3_coder_next(layers, false).build(),
        _ => testing::glm_4_7_flash(layers, false).build(),
    };
    let model = ModelDescription::from_gguf(&gguf).expect("model");
    // the block's first node is the router: `MUL_MAT f32 n_expert n_tokens 1 1|ffn_moe_logits-il|w;input`
    let first: Vec<&str> = b.lines[0].split('|').collect();
    let n_tokens: i64 = first[0].split(' ').nth(3).expect("ne1").parse().expect("n_tokens");
    let input_name = first[2].split(';').nth(1).expect("input");
    let ub = n_tokens.to_string();
    let settings = ServerSettings::from_args(&["-ngl", "99", "-b", &ub, "-ub", &ub]).expect("settings");
    let gpus = [GpuAtLoad::new("CUDA0", Bytes::from_mib(1 << 20))];
    let p = Predictor::new(&model).predict_as(&settings, &gpus, Runner::FitParamsDryRun).expect("predict");
    let ubatch = Ubatch { n_tokens, n_seqs: 1, n_outputs: n_tokens };
    let mut g = LlmGraph::new(&model, &settings, &p.context, &p.placement, ubatch);
    let n_embd = i64::from(model.n_embd);
    let input = g.ctx.new_tensor(GgmlType::F32, &[n_embd, n_tokens]);
    g.ctx.set_name(input, input_name);

    let mut w = |s: &str| g.layer_weight(il, s);
    let moe = match family {
        "oss" => MoeFfn {
            gate_inp: w("ffn_gate_inp.weight"),
            gate_inp_b: w("ffn_gate_inp.bias"),
            up_exps: w("ffn_up_exps.weight"),
            up_exps_b: w("ffn_up_exps.bias"),
            gate_exps: w("ffn_gate_exps.weight"),
            gate_exps_b: w("ffn_gate_exps.bias"),
            down_exps: w("ffn_down_exps.weight"),
            down_exps_b: w("ffn_down_exps.bias"),
            ..MoeFfn::new(128, 4, FfnOp::SwigluOaiMoe, GatingFunc::SoftmaxWeight)
        },
        "q5" => MoeFfn {
            gate_inp: w("ffn_gate_inp.weight"),
            up_exps: w("ffn_up_exps.weight"),
            gate_exps: w("ffn_gate_exps.weight"),
            down_exps: w("ffn_down_exps.weight"),
            norm_w: true,
            ..MoeFfn::new(512, 10, FfnOp::Silu, GatingFunc::Softmax)
        },
        _ => MoeFfn {
            gate_inp: w("ffn_gate_inp.weight"),
            up_exps: w("ffn_up_exps.weight"),
            gate_exps: w("ffn_gate_exps.weight"),
            down_exps: w("ffn_down_exps.weight"),
            exp_probs_b: w("exp_probs_b.bias"),
            norm_w: true,
            w_scale: 1.8,
            ..MoeFfn::new(64, 4, FfnOp::Silu, GatingFunc::Sigmoid)
        },
    };
    let out = g.build_moe_ffn(input, &moe, il as i32);
    g.expand(out);
    assert_eq!(g.ctx.error, None, "{} layer {il}", b.row);
    g.gf.nodes.clone().into_iter().map(|id| line(&g, id)).collect()
}

#[test]
fn moe_blocks_match_llama_cpp_node_for_node() {
    let blocks = blocks();
    assert!(blocks.len() >= 7, "{} blocks", blocks.len());
    for b in &blocks {
        let ours: Vec<String> = build_block(b).iter().map(|l| unnumbered(l)).collect();
        let theirs: Vec<String> = b.lines.iter().map(|l| unnumbered(l)).collect();
        for (i, (o, t)) in ours.iter().zip(&theirs).enumerate() {
            assert_eq!(o, t, "{} layer {}: node {i}", b.row, b.il);
        }
        assert_eq!(ours.len(), theirs.len(), "{} layer {}: node count", b.row, b.il);
    }
}

#[test]
fn dense_swiglu_ffn_is_gate_up_swiglu_down() {
    // llama / qwen3 dense FFN: ffn_gate, ffn_up, ffn_swiglu (one GLU op), down left unnamed
    // (llama-graph.cpp:1984-1986: named only with a bias); as the l8b and q8b traces show it.
    let gguf = testing::llama_3_1_8b(1).build();
    let model = ModelDescription::from_gguf(&gguf).expect("model");
    let settings = ServerSettings::from_args(&["-ngl", "99", "-ub", "512"]).expect("settings");
    let gpus = [GpuAtLoad::new("CUDA0", Bytes::from_mib(1 << 20))];
    let p = Predictor::new(&model).predict_as(&settings, &gpus, Runner::FitParamsDryRun).expect("predict");
    let ubatch = Ubatch { n_tokens: 512, n_seqs: 1, n_outputs: 512 };
    let mut g = LlmGraph::new(&model, &settings, &p.context, &p.placement, ubatch);
    let input = g.ctx.new_tensor(GgmlType::F32, &[4096, 512]);
    g.ctx.set_name(input, "ffn_norm-0");
    let w = FfnWeights {
        up: g.layer_weight(0, "ffn_up.weight"),
        gate: g.layer_weight(0, "ffn_gate.weight"),
        down: g.layer_weight(0, "ffn_down.weight"),
        ..FfnWeights::default()
    };
    let out = g.build_ffn(input, &w, FfnOp::Silu, FfnGate::Par, 0.0, 0);
    g.expand(out);
    let lines: Vec<String> = g.gf.nodes.clone().into_iter().map(|id| line(&g, id)).collect();
    assert_eq!(
        lines,
        [
            "MUL_MAT f32 14336 512 1 1|ffn_gate-0|blk.0.ffn_gate.weight;ffn_norm-0",
            "MUL_MAT f32 14336 512 1 1|ffn_up-0|blk.0.ffn_up.weight;ffn_norm-0",
            "SWIGLU f32 14336 512 1 1|ffn_swiglu-0|ffn_gate-0;ffn_up-0",
            "MUL_MAT f32 4096 512 1 1|node_3|blk.0.ffn_down.weight;ffn_swiglu-0",
        ]
    );
}
