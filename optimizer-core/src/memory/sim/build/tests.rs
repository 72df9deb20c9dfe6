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

/// `ggml_type_name`: `q4_K`, `q8_0`, `f16`.
fn ggml_type_name(ty: crate::gguf::GgmlType) -> String {
    let lower = ty.name().to_ascii_lowercase();
    match lower.strip_suffix("_k") {
        Some(stem) => format!("{stem}_K"),
        None => lower,
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn model(key: &str) -> ModelDescription {
    let (spec_key, quant) = match key {
        "l8b" => ("llama-3.1-8b", "Q4_K_M"),
        "q8b" => ("qwen3-8b", "Q4_K_M"),
        "q5" => ("qwen3-coder-next", "UD-Q5_K_XL"),
        "oss" => ("gpt-oss-120b", "F16"),
        "glm" | "glm8" => ("glm-4.7-flash", "Q8_0"),
        "glm4" => ("glm-4.7-flash", "Q4_K_M"),
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
                ty: ggml_type_name(t.ty),
                ne: t.ne,
                name: g.ctx.name(id).to_owned(),
                src: t.src.iter().flatten().map(|&s| g.ctx.name(s).to_owned()).collect(),
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

/// A committed subset (fixtures/ground-truth/traces/nodes/*.full.nodes, written by subset_full.py):
/// the first part of the graph, then its end from `resume` on, of `count` nodes in all.
struct Subset {
    count: usize,
    resume: usize,
    nodes: Vec<Node>,
}

fn subset(id: &str) -> (Subset, Vec<String>, usize) {
    let dir = repo_root().join("fixtures/ground-truth/traces/nodes");
    let text = std::fs::read_to_string(dir.join(format!("{id}.full.nodes"))).unwrap();
    let header = |key: &str| -> usize {
        let line = text.lines().find_map(|l| l.strip_prefix(key)).unwrap();
        line.trim().parse().unwrap()
    };
    let (count, resume) = (header("@@count"), header("@@resume"));
    let row: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{id}.json"))).unwrap()).unwrap();
    let argv: Vec<String> =
        row["argv"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    let gpus = row["gpus"].as_u64().unwrap() as usize;
    (Subset { count, resume, nodes: trace_nodes(&text) }, argv, gpus)
}

/// llama and qwen3 graphs against llama.cpp's: flash attention off (F16 cache, transposed V) and on
/// (F16 and Q8_0 caches with their Hadamard rotations), one GPU and two, layers on the CPU, and four
/// streams (`-np 4`); every node's op, type, shape, name and sources, inputs included.
#[test]
fn committed_traces_match_node_for_node() {
    let mut failures = Vec::new();
    for id in ["l8b-v01", "l8b-v03", "l8b-t01", "q8b-v01", "q8b-t02"] {
        let (sub, argv, gpus) = subset(id);
        let sim = sim_nodes(&argv, &id[..3], gpus);
        assert_eq!(sim.len(), sub.count, "{id}: nodes");
        let first = sub.nodes.len() - (sub.count - sub.resume);
        let mut expected: Vec<Node> = sub.nodes[..first].to_vec();
        let mut got: Vec<Node> = sim[..first].to_vec();
        expected.extend_from_slice(&sub.nodes[first..]);
        got.extend_from_slice(&sim[sub.resume..]);
        if let Some(d) = first_difference(&got, &expected) {
            failures.push(format!("{id}: {d}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
#[ignore = "reads the unpacked traces under /tmp/tr"]
fn local_traces_match() {
    let mut failures = Vec::new();
    let rows = local_rows(&["l8b-", "q8b-"]);
    for (id, argv, gpus, text) in rows {
        let id = &id;
        let trace = trace_nodes(&text);
        let sim = sim_nodes(&argv, &id[..3], gpus);
        assert!(trace.len() > 500, "{id}: only {} nodes traced", trace.len());
        if let Some(d) = first_difference(&sim, &trace) {
            failures.push(format!("{id}: {d}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every `@@N` line of a trace's first reservation as `buffer op type ne…|name|src;…`.
fn trace_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen_r = 0;
    for line in text.lines() {
        if line.starts_with("@@R") {
            seen_r += 1;
            if seen_r > 1 {
                break;
            }
        }
        if let Some(rest) = line.strip_prefix("@@N ") {
            out.push(rest.split_once(' ').unwrap().1.to_owned());
        }
    }
    out
}

fn scheduled_lines(row_argv: &[String], key: &str, gpus: usize) -> Vec<String> {
    let m = model(key);
    let settings = ServerSettings::from_args(row_argv).unwrap();
    let free = [("CUDA0", 23_557u64), ("CUDA1", 14_477)];
    let gpus: Vec<GpuAtLoad> =
        free.iter().take(gpus).map(|&(n, mib)| GpuAtLoad::new(n, Bytes::from_mib(mib))).collect();
    let p = Predictor::new(&m).predict_as(&settings, &gpus, Runner::FitParamsDryRun).unwrap();
    let runner = Runner::FitParamsDryRun;
    let ub = crate::memory::sim::reservations(&p.context, runner)[0];
    let cfg = crate::memory::sim::sched_config(&m, &settings, &p.context, &p.placement, runner);
    let sg = crate::memory::sim::schedule_graph(&m, &settings, &p.context, &p.placement, ub, &cfg).unwrap();
    let (ctx, s) = (&sg.graph.ctx, &sg.scheduled);
    s.graph
        .nodes
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            let t = ctx.t(id);
            let src: Vec<&str> = t.src.iter().flatten().map(|&x| ctx.name(x)).collect();
            format!(
                "{} {} {} {} {} {} {}|{}|{}",
                s.node_backend[i],
                t.op.desc(),
                ggml_type_name(t.ty),
                t.ne[0],
                t.ne[1],
                t.ne[2],
                t.ne[3],
                ctx.name(id),
                src.join(";")
            )
        })
        .collect()
}

#[test]
#[ignore = "reads the unpacked traces under /tmp/tr"]
fn local_traces_schedule() {
    let mut failures = Vec::new();
    let rows = local_rows(&["l8b-", "q8b-"]);
    for (id, argv, gpus, text) in rows {
        let id = &id;
        let trace = trace_lines(&text);
        let sim = scheduled_lines(&argv, &id[..3], gpus);
        let first = sim.iter().zip(&trace).position(|(a, b)| a != b);
        match first {
            Some(i) => failures.push(format!("{id}: line {i}\n  sim:   {}\n  trace: {}", sim[i], trace[i])),
            None if sim.len() != trace.len() => {
                failures.push(format!("{id}: {} vs {} lines", sim.len(), trace.len()));
            }
            None => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The RTX 4090 and RTX 5070 Ti of the ground truth (compute capabilities 8.9 and 12.0).
const GT_GPUS: [crate::memory::sim::SimGpu; 2] = [
    crate::memory::sim::SimGpu { compute_capability: 890 },
    crate::memory::sim::SimGpu { compute_capability: 1200 },
];

/// The dry run's compute buffers, by buffer index (GPUs, then the host).
fn simulated_sizes(row_argv: &[String], key: &str, gpus: usize) -> Vec<u64> {
    let m = model(key);
    let settings = ServerSettings::from_args(row_argv).unwrap();
    let free = [("CUDA0", 23_557u64), ("CUDA1", 14_477)];
    let free: Vec<GpuAtLoad> =
        free.iter().take(gpus).map(|&(n, mib)| GpuAtLoad::new(n, Bytes::from_mib(mib))).collect();
    let p = Predictor::new(&m).predict_as(&settings, &free, Runner::FitParamsDryRun).unwrap();
    let sizes = crate::memory::sim::simulate(
        &m,
        &settings,
        &p.context,
        &p.placement,
        &GT_GPUS,
        Runner::FitParamsDryRun,
    )
    .unwrap();
    sizes.iter().map(|d| d.bytes.get()).collect()
}

/// The trace's `@@M buffer bytes` lines of its first reservation (buffers without a line are 0).
fn traced_sizes(text: &str, n: usize) -> Vec<u64> {
    let mut out = vec![0; n];
    for line in text.lines().skip_while(|l| !l.starts_with("@@M")).take_while(|l| l.starts_with("@@M")) {
        let mut it = line.split(' ').skip(1);
        let (b, bytes): (usize, u64) =
            (it.next().unwrap().parse().unwrap(), it.next().unwrap().parse().unwrap());
        out[b] = bytes;
    }
    out
}

/// llama-fit-params' compute buffers to the byte, on the committed rows.
#[test]
fn committed_dry_runs_are_byte_exact() {
    let dir = repo_root().join("fixtures/ground-truth/traces/nodes");
    for id in ["l8b-v01", "l8b-v03", "l8b-t01", "q8b-v01", "q8b-t02"] {
        let (_, argv, gpus) = subset(id);
        let text = std::fs::read_to_string(dir.join(format!("{id}.full.nodes"))).unwrap();
        let sim = simulated_sizes(&argv, &id[..3], gpus);
        assert_eq!(sim, traced_sizes(&text, sim.len()), "{id}");
    }
}

#[test]
#[ignore = "reads the unpacked traces under /tmp/tr"]
fn local_traces_byte_exact() {
    let mut failures = Vec::new();
    let rows = local_rows(&["l8b-", "q8b-"]);
    let n_rows = rows.len();
    for (id, argv, gpus, text) in rows {
        let id = &id;
        let sim = simulated_sizes(&argv, &id[..3], gpus);
        let traced = traced_sizes(&text, sim.len());
        if sim != traced {
            failures.push(format!("{id}: simulated {sim:?}, traced {traced:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {}:\n{}", failures.len(), n_rows, failures.join("\n"));
}

/// Undoes the CUDA backend's `graph_optimize` rotation of a shared expert's gate, up and GLU next
/// to the routed experts' (ggml-cuda.cu:4626-4645): the three nodes go back before `ffn_shexp-il`.
fn unrotate_shexp(mut out: Vec<Node>) -> Vec<Node> {
    let mut i = 0;
    while i + 2 < out.len() {
        let n = &out[i].name;
        if out[i].op == "MUL_MAT" && n.starts_with("ffn_gate-") {
            let down = format!("ffn_shexp-{}", &n["ffn_gate-".len()..]);
            if let Some(j) = out.iter().position(|x| x.name == down) {
                if j > i + 3 {
                    let moved: Vec<Node> = out.drain(i..i + 3).collect();
                    let j = j - 3;
                    out.splice(j..j, moved);
                    continue;
                }
            }
        }
        i += 1;
    }
    out
}

/// The traced rows of the committed MoE subsets: gpt-oss with flash attention and a q8_0 cache on
/// two GPUs (oss-d01), without flash attention with an F16 cache (oss-v05), four streams (oss-v06);
/// GLM-4.7-Flash (deepseek2, MLA) the same three ways (glm-d01, glm8-v05, glm8-v04).
const MOE_SUBSETS: [&str; 6] = ["oss-d01", "oss-v05", "oss-v06", "glm-d01", "glm8-v05", "glm8-v04"];

/// The row's model key (`oss`, `glm`, `glm8`, …) from its id.
fn model_key(id: &str) -> &str {
    id.split_once('-').map_or(id, |(k, _)| k)
}

/// gpt-oss and deepseek2 graphs against llama.cpp's, every node from the first (inputs included):
/// op, type, shape, name and sources.
#[test]
fn moe_graphs_match_committed_traces() {
    let mut failures = Vec::new();
    for id in MOE_SUBSETS {
        let (sub, argv, gpus) = subset(id);
        let sim = sim_nodes(&argv, model_key(id), gpus);
        assert_eq!(sim.len(), sub.count, "{id}: nodes");
        let traced = unrotate_shexp(sub.nodes);
        let first = traced.len() - (sub.count - sub.resume);
        let mut got: Vec<Node> = sim[..first].to_vec();
        got.extend_from_slice(&sim[sub.resume..]);
        assert!(got.len() > 150, "{id}: only {} nodes compared", got.len());
        if let Some(d) = first_difference(&got, &traced) {
            failures.push(format!("{id}: {d}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every traced gpt-oss and GLM row under /tmp/tr, node for node from the first node.
#[test]
#[ignore = "reads the unpacked traces under /tmp/tr"]
fn local_moe_traces_match() {
    let mut failures = Vec::new();
    let rows = local_rows(&["oss-", "glm"]);
    let n_rows = rows.len();
    for (id, argv, gpus, text) in rows {
        let id = &id;
        let trace = unrotate_shexp(trace_nodes(&text));
        let sim = sim_nodes(&argv, model_key(id), gpus);
        assert!(trace.len() > 500, "{id}: only {} nodes traced", trace.len());
        if let Some(d) = first_difference(&sim, &trace) {
            failures.push(format!("{id}: {d}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} rows differ:\n{}", failures.len(), n_rows, failures.join("\n\n"));
}

/// The experts on the CPU, with and without `--no-op-offload`, on one GPU and on two, through
/// `simulate`: the graph's outputs (`set_outputs`: the MTP hidden state `h_nextn` outlives
/// `result_norm`, gpt-oss's last `l_out` its `get_rows`) and the clamped weight sum's own bytes
/// decide where the logits land, hence the GPU buffer's size (these rows were 84 to 696 MiB under
/// without them). llama-fit-params' `@@M` of the traced rows q5-v07, q5-w04, q5-h02 and oss-v01.
#[test]
fn cpu_experts_dry_runs_are_byte_exact() {
    let rows: [(&str, &str, usize, &str, &[u64]); 4] = [
        (
            "q5-v07",
            "q5",
            1,
            "-ngl 99 -ot exps=CPU -fa on -ctk q8_0 -ctv q8_0 -np 1 -c 65536 -b 2048 -ub 512 --no-op-offload",
            &[416_026_752, 150_243_424],
        ),
        (
            "q5-w04",
            "q5",
            1,
            "-ngl 99 --cpu-moe -fa on -ctk f16 -ctv f16 -np 1 -c 49152 -b 4096 -ub 4096",
            &[2_992_668_800, 537_034_784],
        ),
        (
            "q5-h02",
            "q5",
            2,
            "-ngl 99 -ot blk\\.([0-9]|1[0-6])\\.=CUDA0,blk\\.(1[7-9]|2[0-4])\\.=CUDA1,exps=CPU -fa on \
             -ctk q8_0 -ctv q8_0 -np 1 -c 131072 -b 2048 -ub 1024 --no-op-offload",
            &[654_618_752, 813_260_800, 434_428_000],
        ),
        (
            "oss-v01",
            "oss",
            2,
            "-ngl 99 -ot blk\\.([0-9]|10)\\.=CUDA0,blk\\.(1[1-4])\\.=CUDA1,exps=CPU -fa on \
             -ctk q8_0 -ctv q8_0 -np 1 -c 65536 -b 2048 -ub 1024 --no-op-offload",
            &[351_907_840, 953_434_112, 207_740_928],
        ),
    ];
    for (id, key, gpus, argv, want) in rows {
        let argv: Vec<String> = argv.split_whitespace().map(str::to_owned).collect();
        assert_eq!(simulated_sizes(&argv, key, gpus), want, "{id}");
    }
}

/// The rows under /tmp/tr/state whose ids start with one of `prefixes`, in id order: id, argv, GPU count and
/// the trace log.
fn local_rows(prefixes: &[&str]) -> Vec<(String, Vec<String>, usize, String)> {
    let dir = std::path::Path::new("/tmp/tr/state");
    let mut ids: Vec<String> = std::fs::read_dir(dir.join("logs"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| prefixes.iter().any(|p| n.starts_with(p)))
        .map(|n| n.trim_end_matches(".log").to_owned())
        .collect();
    ids.sort();
    ids.into_iter()
        .map(|id| {
            let row: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join(format!("rows/{id}.json"))).unwrap())
                    .unwrap();
            let argv: Vec<String> =
                row["argv"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
            let gpus = row["gpus"].as_u64().unwrap() as usize;
            let text = std::fs::read_to_string(dir.join(format!("logs/{id}.log"))).unwrap();
            (id, argv, gpus, text)
        })
        .collect()
}

/// A graph scheduled again and again with the facts it was first scheduled with (CUDA's
/// `graph_optimize` remembered per split, `sched::Prepared`) is scheduled exactly as with fresh
/// facts: the same graph copy, backends and splits, for placements that move the weights between
/// both GPUs and the CPU in runs (as layers and experts move), each several times and in between
/// others. The MoE models, whose splits CUDA reorders and keeps tensors alive in (the
/// dependency nodes' sources, copies among them, are compared too).
#[test]
fn kept_facts_schedule_every_placement_as_fresh_ones_do() {
    use crate::memory::sim::ggml::TensorId;
    use crate::memory::sim::{reservations, sched, sched_config};
    let gpus =
        [GpuAtLoad::new("CUDA0", Bytes::from_mib(23_557)), GpuAtLoad::new("CUDA1", Bytes::from_mib(14_477))];
    let mut remembered = 0;
    for key in ["q5", "oss", "glm"] {
        let m = model(key);
        let argv: Vec<String> =
            "-c 4096 -ub 512 -fa on -ngl 99 -ot exps=CPU".split(' ').map(str::to_owned).collect();
        let settings = ServerSettings::from_args(&argv).unwrap();
        let p = Predictor::new(&m).predict_as(&settings, &gpus, Runner::LlamaServer).unwrap();
        let cfg = sched_config(&m, &settings, &p.context, &p.placement, Runner::LlamaServer);
        for ub in reservations(&p.context, Runner::LlamaServer).into_iter().take(2) {
            let mut g = build_graph(&m, &settings, &p.context, &p.placement, ub).unwrap();
            let gf = std::mem::take(&mut g.gf);
            let ctx = &mut g.ctx;
            let resident: Vec<TensorId> =
                (0..ctx.tensors.len()).map(TensorId::new).filter(|&t| ctx.t(t).backend.is_some()).collect();
            // placements: runs of weights on one backend, the next run elsewhere; every tensor
            // anywhere; and each of those with a few tensors moved (a small LCG)
            let mut seed = 0x2545_f491_u64;
            let mut next = move |n: u64| {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                (seed >> 33) % n
            };
            let mut placements: Vec<Vec<u8>> = (0..4)
                .map(|p| {
                    let mut b = next(3) as u8;
                    let run = if p == 3 { 1 } else { 40 };
                    resident
                        .iter()
                        .map(|_| {
                            if next(run) == 0 {
                                b = next(3) as u8;
                            }
                            b
                        })
                        .collect()
                })
                .collect();
            for base in [0, 3] {
                let mut moved = placements[base].clone();
                for _ in 0..5 {
                    let i = next(resident.len() as u64) as usize;
                    moved[i] = (moved[i] + 1 + next(2) as u8) % 3;
                }
                placements.push(moved);
            }
            let kept = sched::Prepared::new(ctx, &gf);
            for &k in &[0usize, 1, 0, 2, 3, 4, 5, 3, 4, 0, 5, 2, 1] {
                for (&t, &b) in resident.iter().zip(&placements[k]) {
                    ctx.t_mut(t).backend = Some(b);
                }
                let run = |ctx: &mut crate::memory::sim::ggml::Ctx, prepared: &sched::Prepared| {
                    ctx.begin_journal();
                    // the graph copy with each node's sources (the copies' and dependencies' too)
                    let s = sched::schedule_prepared(ctx, &gf, &cfg, prepared).map(|s| {
                        let srcs: Vec<_> = s.graph.nodes.iter().map(|&n| ctx.t(n).src).collect();
                        (s.graph.nodes, srcs, s.graph.leafs, s.node_backend, s.leaf_backend, s.splits)
                    });
                    ctx.rollback();
                    s
                };
                let with_kept = run(ctx, &kept);
                let fresh = sched::Prepared::new(ctx, &gf);
                assert_eq!(with_kept, run(ctx, &fresh), "{key} {ub:?} placement {k}");
            }
            remembered += kept.remembered_splits();
        }
    }
    assert!(remembered > 100, "only {remembered} splits remembered");
}
