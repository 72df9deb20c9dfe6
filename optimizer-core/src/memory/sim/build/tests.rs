//! The builders against llama.cpp's own graphs: the `@@N` lines of allocation traces
//! (fixtures/ground-truth/alloc-trace.patch), with the scheduler's copies taken out.

use std::path::PathBuf;

use crate::gguf::ReadOptions;
use crate::layout::{BuildOptions, LayoutSpec};
use crate::memory::sim::build::Ubatch;
use crate::memory::sim::build_graph;
use crate::memory::sim::ggml::Op;
use crate::memory::{GpuAtLoad, Predictor, Runner};
use crate::model::ModelDescription;
use crate::settings::ServerSettings;
use crate::units::Bytes;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn model(key: &str) -> ModelDescription {
    let (spec_key, quant) = match key {
        "l8b" => ("llama-3.1-8b", "Q4_K_M"),
        "q8b" => ("qwen3-8b", "Q4_K_M"),
        other => panic!("no layout for {other}"),
    };
    let path = repo_root().join("fixtures/layouts").join(format!("{spec_key}.toml"));
    let text = std::fs::read_to_string(&path).unwrap();
    let spec = LayoutSpec::parse(&text).unwrap();
    let mut layout = spec.build(quant, &BuildOptions::default()).unwrap();
    layout.split = None;
    let gguf = layout.to_model(&ReadOptions::default()).unwrap();
    ModelDescription::from_gguf(&gguf).unwrap()
}

/// One node as a trace line shows it: `op type ne0 ne1 ne2 ne3|name|src;src`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Node {
    op: String,
    ty: String,
    ne: [i64; 4],
    name: String,
    src: Vec<String>,
}

/// `CUDA0#inp_pos#0` → `inp_pos`: a scheduler copy's name back to its source's.
fn uncopied(name: &str) -> &str {
    let Some((backend, rest)) = name.split_once('#') else { return name };
    if backend.is_empty() || !backend.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return name;
    }
    match rest.rsplit_once('#') {
        Some((inner, n)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => inner,
        _ => name,
    }
}

/// The graph's nodes in a trace's first reservation, without the scheduler's copies (every `NONE`
/// node is one: a graph node always has an op).
fn trace_nodes(text: &str) -> Vec<Node> {
    let mut out = Vec::new();
    let mut seen_r = 0;
    for line in text.lines() {
        if line.starts_with("@@R") {
            seen_r += 1;
            if seen_r > 1 {
                break;
            }
        }
        let Some(rest) = line.strip_prefix("@@N ") else { continue };
        let mut parts = rest.splitn(3, '|');
        let head: Vec<&str> = parts.next().unwrap().split(' ').collect();
        let name = parts.next().unwrap().to_owned();
        let src = parts.next().unwrap_or("");
        let (op, ty) = (head[2].to_owned(), head[3].to_owned());
        if op == "NONE" {
            continue;
        }
        let ne = [
            head[4].parse().unwrap(),
            head[5].parse().unwrap(),
            head[6].parse().unwrap(),
            head[7].parse().unwrap(),
        ];
        let src =
            if src.is_empty() { vec![] } else { src.split(';').map(|s| uncopied(s).to_owned()).collect() };
        out.push(Node { op, ty, ne, name, src });
    }
    out
}

fn sim_nodes(row_argv: &[String], key: &str, gpus: usize) -> Vec<Node> {
    let m = model(key);
    let settings = ServerSettings::from_args(row_argv).unwrap();
    let free = [("CUDA0", 23_557u64), ("CUDA1", 14_477)];
    let gpus: Vec<GpuAtLoad> =
        free.iter().take(gpus).map(|&(n, mib)| GpuAtLoad::new(n, Bytes::from_mib(mib))).collect();
    let p = Predictor::new(&m).predict_as(&settings, &gpus, Runner::FitParamsDryRun).unwrap();
    let ub: Ubatch = crate::memory::sim::reservations(&p.context, Runner::FitParamsDryRun)[0];
    let g = build_graph(&m, &settings, &p.context, &p.placement, ub).unwrap();
    g.gf.nodes
        .iter()
        .map(|&id| {
            let t = g.ctx.t(id);
            Node {
                op: t.op.desc().to_owned(),
                ty: t.ty.name().to_ascii_lowercase(),
                ne: t.ne,
                name: t.name.clone(),
                src: t.src.iter().flatten().map(|&s| g.ctx.t(s).name.clone()).collect(),
            }
        })
        .filter(|n| n.op != Op::None.desc())
        .collect()
}

/// Compares node for node; the first difference, with context.
fn first_difference(sim: &[Node], trace: &[Node]) -> Option<String> {
    for (i, (a, b)) in sim.iter().zip(trace).enumerate() {
        if a != b {
            let from = i.saturating_sub(3);
            let ctx: Vec<String> = (from..i).map(|j| format!("  {j}: {:?}", trace[j])).collect();
            return Some(format!("node {i}:\n{}\n  sim:   {a:?}\n  trace: {b:?}", ctx.join("\n")));
        }
    }
    (sim.len() != trace.len()).then(|| format!("{} nodes simulated, {} traced", sim.len(), trace.len()))
}

#[test]
#[ignore = "reads the unpacked traces under /tmp/tr"]
fn local_traces_match() {
    let mut failures = Vec::new();
    let dir = std::path::Path::new("/tmp/tr/state");
    let mut ids: Vec<String> = std::fs::read_dir(dir.join("logs"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("l8b-") || n.starts_with("q8b-"))
        .map(|n| n.trim_end_matches(".log").to_owned())
        .collect();
    ids.sort();
    for id in &ids {
        let row: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(format!("rows/{id}.json"))).unwrap())
                .unwrap();
        let argv: Vec<String> =
            row["argv"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
        let gpus = row["gpus"].as_u64().unwrap() as usize;
        let text = std::fs::read_to_string(dir.join(format!("logs/{id}.log"))).unwrap();
        let trace = trace_nodes(&text);
        let sim = sim_nodes(&argv, &id[..3], gpus);
        assert!(trace.len() > 500, "{id}: only {} nodes traced", trace.len());
        if let Some(d) = first_difference(&sim, &trace) {
            failures.push(format!("{id}: {d}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
