//! The builders' graphs scheduled (`memory::sim::sched`, with the CUDA backend's `graph_optimize`
//! of `memory::sim::cuda_opt`) against llama.cpp's own scheduled graphs: every `@@N` line of the
//! allocation traces, the scheduler's split-input copies and the CUDA fusion dependency nodes
//! included, in order, on the same buffers. The graph is the builder's (not one rebuilt from the trace), so
//! the fusion matchers see ggml's real strides, view offsets and use counts.

#[allow(dead_code)] // this test reads the models only
mod support;

use std::path::PathBuf;

use optimizer_core::memory::sim::alloc::{self, BufferSpec};
use optimizer_core::memory::sim::build::Ubatch;
use optimizer_core::memory::sim::sched::{self, SchedConfig};
use optimizer_core::memory::{GpuAtLoad, Predictor, Runner};
use optimizer_core::settings::ServerSettings;
use optimizer_core::units::Bytes;
use serde_json::Value;
use support::ground_truth::DRY_RUN_FREE_MIB;
use support::models;

/// One `@@N` line: buffer, op, type, shape, name, sources.
type Line = (usize, String, String, [i64; 4], String, Vec<String>);

fn trace_lines(text: &str) -> Vec<Line> {
    let mut out = Vec::new();
    let mut reservations = 0;
    for line in text.lines() {
        if line.starts_with("@@R ") {
            reservations += 1;
            if reservations > 1 {
                break;
            }
        }
        let Some(rest) = line.strip_prefix("@@N ") else { continue };
        let mut parts = rest.splitn(3, '|');
        let h: Vec<&str> = parts.next().unwrap().split(' ').collect();
        let name = parts.next().unwrap().to_owned();
        let src = parts.next().unwrap_or_default();
        let src = if src.is_empty() { Vec::new() } else { src.split(';').map(str::to_owned).collect() };
        let ne = [h[4].parse().unwrap(), h[5].parse().unwrap(), h[6].parse().unwrap(), h[7].parse().unwrap()];
        out.push((h[1].parse().unwrap(), h[2].to_owned(), h[3].to_lowercase(), ne, name, src));
    }
    out
}

/// The `NONE` nodes that are not the scheduler's split-input copies (`B#x#k`) or their
/// dependencies (`x (view)` right before the copy), each named after itself and the computed node
/// before it.
fn fusion_deps(lines: &[Line]) -> Vec<Line> {
    let is_copy = |n: &Line| n.1 == "NONE" && n.5.is_empty() && n.4.contains('#');
    let mut out = Vec::new();
    let mut last = String::new();
    for (i, n) in lines.iter().enumerate() {
        if n.1 != "NONE" {
            last.clone_from(&n.4);
            continue;
        }
        if is_copy(n) || (n.5.len() == 1 && lines.get(i + 1).is_some_and(is_copy)) {
            continue;
        }
        let mut n = n.clone();
        n.4 = format!("{} after {last}", n.4);
        out.push(n);
    }
    out
}

/// The first difference between the scheduled builder graph of row `id` and its trace.
fn compare(dir: &std::path::Path, id: &str) -> Result<usize, String> {
    let row: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("rows/{id}.json"))).unwrap()).unwrap();
    let argv: Vec<String> =
        row["argv"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect();
    let n_gpus = usize::try_from(row["gpus"].as_u64().unwrap()).unwrap();
    let trace = trace_lines(&std::fs::read_to_string(dir.join(format!("logs/{id}.log"))).unwrap());
    let text = std::fs::read_to_string(dir.join(format!("logs/{id}.log"))).unwrap();
    let (ours, sizes) = scheduled(row["model"].as_str().unwrap(), &argv, n_gpus)?;
    let n = first_difference(ours, trace)?;
    // `@@M` of the first reservation: each buffer's size to the byte
    {
        let want: Vec<u64> = text
            .lines()
            .skip_while(|l| !l.starts_with("@@R "))
            .skip(1)
            .take_while(|l| !l.starts_with("@@R "))
            .filter_map(|l| l.strip_prefix("@@M "))
            .map(|l| l.split_once(' ').unwrap().1.parse().unwrap())
            .collect();
        if want != sizes {
            return Err(format!("@@M: ours {sizes:?}, llama.cpp {want:?}"));
        }
    }
    Ok(n)
}

/// The scheduled graph of the builder's dry-run graph of model `key` under `argv` on `n_gpus`.
/// With each buffer's size as the graph allocator reserves it (CUDA devices of compute capability
/// 9.0, the H200s of the traces).
fn scheduled(key: &str, argv: &[String], n_gpus: usize) -> Result<(Vec<Line>, Vec<u64>), String> {
    let model = models::model(key);
    let settings = ServerSettings::from_args(argv).unwrap();
    let gpus: Vec<GpuAtLoad> = DRY_RUN_FREE_MIB
        .iter()
        .take(n_gpus)
        .map(|&(n, mib)| GpuAtLoad::new(n, Bytes::from_mib(mib)))
        .collect();
    let p = Predictor::new(model).predict_as(&settings, &gpus, Runner::FitParamsDryRun).unwrap();
    let ub: Ubatch = optimizer_core::memory::sim::reservations(&p.context, Runner::FitParamsDryRun)[0];
    let mut g = optimizer_core::memory::sim::build_graph(model, &settings, &p.context, &p.placement, ub)
        .map_err(|e| e.to_string())?;
    let placement = &p.placement;
    let pipeline = sched::pipeline_parallel(
        placement.devices.len(),
        placement.n_gpu_layers,
        model.n_layer_all,
        settings.split_mode == optimizer_core::settings::SplitMode::Layer,
        settings.kv_offload,
        !settings.overrides.is_empty(),
    );
    let mut cfg = SchedConfig::llama(placement.devices.len(), settings.op_offload, pipeline);
    cfg.keep_pins = false;
    let gf = g.gf.clone();
    let s = sched::schedule(&mut g.ctx, &gf, &cfg).map_err(|e| e.to_string())?;
    let ctx = &g.ctx;
    let ours: Vec<Line> = s
        .graph
        .nodes
        .iter()
        .zip(&s.node_backend)
        .map(|(&n, &b)| {
            let t = ctx.t(n);
            (
                b,
                t.op.desc().to_owned(),
                t.ty.name().to_lowercase(),
                t.ne,
                ctx.name(n).to_owned(),
                t.src.iter().flatten().map(|s| ctx.name(*s).to_owned()).collect(),
            )
        })
        .collect();
    let mut buffers: Vec<BufferSpec> = (0..n_gpus.min(p.placement.devices.len()))
        .map(|i| BufferSpec::cuda(p.placement.devices[i], 900))
        .collect();
    buffers.push(BufferSpec::host(if buffers.is_empty() { "CPU" } else { "CUDA_Host" }));
    let sizes = alloc::reserve(ctx, &s.graph, &s.node_backend, &s.leaf_backend, &buffers)
        .map_err(|e| e.to_string())?
        .iter()
        .map(|b| b.0)
        .collect();
    Ok((ours, sizes))
}

/// Compares `ours` with `trace` (as the environment asks, see below); the node count or the first
/// difference.
fn first_difference(ours: Vec<Line>, trace: Vec<Line>) -> Result<usize, String> {
    // `SPLITPLAN_FROM=name`: compare from the first node of that name on (past inputs a builder
    // does not model yet)
    let (ours, trace) = match std::env::var("SPLITPLAN_FROM") {
        Ok(from) => {
            // and `node_N` names, numbered from the graph's start, compared as one name
            let unnumbered = |name: &str| match name.strip_prefix("node_") {
                Some(n) if n.chars().all(|c| c.is_ascii_digit()) => "node_N".to_owned(),
                _ => name.to_owned(),
            };
            let from_at = |v: &[Line]| -> Vec<Line> {
                let at = v.iter().position(|n| n.4 == from).unwrap_or(v.len());
                v[at..]
                    .iter()
                    .map(|n| {
                        let mut n = n.clone();
                        n.4 = unnumbered(&n.4);
                        n.5 = n.5.iter().map(|s| unnumbered(s)).collect();
                        n
                    })
                    .collect()
            };
            (from_at(&ours), from_at(&trace))
        }
        Err(_) => (ours, trace),
    };
    // `SPLITPLAN_DEPS=1`: compare only the fusion dependency nodes, each with the node it follows
    let (ours, trace) = if std::env::var("SPLITPLAN_DEPS").is_ok() {
        (fusion_deps(&ours), fusion_deps(&trace))
    } else {
        (ours, trace)
    };
    for (i, (a, b)) in ours.iter().zip(&trace).enumerate() {
        if a != b {
            let around = |v: &[Line]| {
                v.iter()
                    .skip(i.saturating_sub(3))
                    .take(8)
                    .map(|n| format!("{}:{}", n.0, n.4))
                    .collect::<Vec<_>>()
            };
            return Err(format!(
                "node {i}: ours {a:?}\n   llama.cpp {b:?}\n   ours {:?}\n   llama.cpp {:?}",
                around(&ours),
                around(&trace)
            ));
        }
    }
    if ours.len() != trace.len() {
        return Err(format!("{} nodes, llama.cpp {}", ours.len(), trace.len()));
    }
    Ok(ours.len())
}

/// Every traced dry run of /tmp/tr (`SPLITPLAN_TRACES`; `SPLITPLAN_ROWS` picks some) built,
/// scheduled and allocated: node for node and `@@M` to the byte (96 of 96 rows when written).
#[test]
#[ignore = "reads the unpacked traces under /tmp/tr"]
fn traced_rows_schedule_and_allocate_like_llama_cpp() {
    let dir = PathBuf::from(std::env::var("SPLITPLAN_TRACES").unwrap_or_else(|_| "/tmp/tr/state".to_owned()));
    let mut ids: Vec<String> = std::fs::read_dir(dir.join("logs"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".log").map(str::to_owned))
        .collect();
    ids.sort();
    if let Ok(only) = std::env::var("SPLITPLAN_ROWS") {
        ids.retain(|id| only.split(',').any(|o| o == id));
    }
    let mut failed = Vec::new();
    for id in &ids {
        if let Err(e) = compare(&dir, id) {
            failed.push(format!("{id}: {e}"));
        }
    }
    let report =
        format!("{} of {} rows node for node\n{}", ids.len() - failed.len(), ids.len(), failed.join("\n"));
    std::fs::write(std::env::temp_dir().join("sim_fusion_report.txt"), &report).unwrap();
    assert!(failed.is_empty(), "{report}");
}

/// A committed row: id, GPUs, model, argv, its dependency nodes as [`fusion_deps`] names them, and
/// its compute buffers' sizes (`@@M`).
type CommittedRow = (String, usize, String, Vec<String>, Vec<Line>, Vec<u64>);

/// The fusion dependency nodes of six traced dry runs (two each of Qwen3-Coder-Next, GLM-4.7-Flash
/// and gpt-oss-120b; fixtures/ground-truth/traces/fusion-deps.txt.gz), each after the same node,
/// from the builders' graphs: the shared expert moved next to the routed experts, the top-k gating
/// and the weighted sum of the experts kept alive until their last node; and each compute buffer
/// to the byte.
#[test]
fn fusion_dependencies_of_committed_moe_rows() {
    use std::io::Read;
    let path = support::models::repo_root().join("fixtures/ground-truth/traces/fusion-deps.txt.gz");
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap()).read_to_string(&mut text).unwrap();
    let mut rows: Vec<CommittedRow> = Vec::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("# row ") {
            let mut f = h.splitn(4, ' ');
            let (id, gpus, model, argv) =
                (f.next().unwrap(), f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
            let argv: Vec<String> = serde_json::from_str(argv).unwrap();
            rows.push((id.to_owned(), gpus.parse().unwrap(), model.to_owned(), argv, Vec::new(), Vec::new()));
        } else if let Some(b) = line.strip_prefix("# bytes ") {
            rows.last_mut().unwrap().5 = b.split(' ').map(|n| n.parse().unwrap()).collect();
        } else if !line.starts_with('#') {
            let (after, node) = line.split_once('\t').unwrap();
            let mut n = trace_lines(node).remove(0);
            n.4 = format!("{} after {after}", n.4);
            rows.last_mut().unwrap().4.push(n);
        }
    }
    assert_eq!(rows.len(), 6);
    for (id, gpus, model, argv, deps, bytes) in rows {
        assert!(deps.len() >= 36, "{id}: {} dependency nodes", deps.len());
        let (lines, sizes) = scheduled(&model, &argv, gpus).unwrap();
        assert_eq!(sizes, bytes, "{id}: compute buffers");
        let ours = fusion_deps(&lines);
        assert_eq!(ours.len(), deps.len(), "{id}");
        for (a, b) in ours.iter().zip(&deps) {
            assert_eq!(a, b, "{id}");
        }
    }
}
