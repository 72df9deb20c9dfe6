//! The scheduler simulation (`memory::sim::sched`) against llama.cpp's own scheduled graphs: the
//! allocation traces of fixtures/ground-truth/traces (`@@N` lines: every node of the graph copy
//! with its buffer). Each traced graph is taken back to the graph llama.cpp built (the scheduler's
//! copies, their dependency nodes and the CUDA fusion dependencies dropped, sources renamed back),
//! its weights and caches placed where the row's placement puts them, scheduled again, and compared
//! node for node: the same nodes in the same order on the same buffers, with the same copies.

#[allow(dead_code)] // this test reads the models only
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use optimizer_core::gguf::GgmlType;
use optimizer_core::memory::sim::ggml::{Ctx, FLAG_INPUT, Glu, Graph, Op, TensorId, Unary};
use optimizer_core::memory::sim::sched::{self, SchedConfig};
use optimizer_core::memory::{Location, Predictor, Runner, TensorCopy};
use optimizer_core::settings::ServerSettings;
use optimizer_core::units::Bytes;
use serde_json::Value;
use support::ground_truth::DRY_RUN_FREE_MIB;
use support::models;

/// One `@@N` line.
#[derive(Clone, Debug, PartialEq, Eq)]
struct TraceNode {
    buffer: usize,
    op: String,
    ty: String,
    ne: [i64; 4],
    name: String,
    src: Vec<String>,
}

/// What a test needs of one trace: the nodes of the (first) reservation, the first allocation of
/// every named tensor (type and shape), and `@@M`.
#[derive(Clone, Debug, Default)]
struct Trace {
    nodes: Vec<TraceNode>,
    allocated: BTreeMap<String, (String, [i64; 4], u8)>,
    sizes: Vec<u64>,
}

fn parse_trace(text: &str) -> Trace {
    let mut t = Trace::default();
    let mut reservations = 0;
    for line in text.lines() {
        if line.starts_with("@@R ") {
            reservations += 1;
            if reservations > 1 {
                break;
            }
        } else if let Some(rest) = line.strip_prefix("@@N ") {
            let mut parts = rest.splitn(3, '|');
            let head: Vec<&str> = parts.next().unwrap_or_default().split(' ').collect();
            let name = parts.next().unwrap_or_default().to_owned();
            let src = parts.next().unwrap_or_default();
            let src = if src.is_empty() { Vec::new() } else { src.split(';').map(str::to_owned).collect() };
            t.nodes.push(TraceNode {
                buffer: head[1].parse().unwrap(),
                op: head[2].to_owned(),
                ty: head[3].to_lowercase(),
                ne: [
                    head[4].parse().unwrap(),
                    head[5].parse().unwrap(),
                    head[6].parse().unwrap(),
                    head[7].parse().unwrap(),
                ],
                name,
                src,
            });
        } else if let Some(rest) = line.strip_prefix("@@A ") {
            let (head, name) = rest.split_once('|').unwrap();
            let h: Vec<&str> = head.split(' ').collect();
            // buffer chunk offset size op type ne0..ne3 flags
            let ne =
                [h[6].parse().unwrap(), h[7].parse().unwrap(), h[8].parse().unwrap(), h[9].parse().unwrap()];
            t.allocated.entry(name.to_owned()).or_insert((h[5].to_owned(), ne, h[10].parse().unwrap()));
        } else if let Some(rest) = line.strip_prefix("@@M ") {
            let (_, bytes) = rest.split_once(' ').unwrap();
            t.sizes.push(bytes.parse().unwrap());
        }
    }
    t
}

/// `CUDA0#inp_pos#0` → `inp_pos`.
fn original_name(name: &str) -> &str {
    let Some((backend, rest)) = name.split_once('#') else { return name };
    if !(backend == "CPU" || backend.starts_with("CUDA")) {
        return name;
    }
    rest.rsplit_once('#').map_or(name, |(orig, _)| orig)
}

fn all_ops() -> Vec<Op> {
    let mut ops = vec![
        Op::None,
        Op::Dup,
        Op::Add,
        Op::AddId,
        Op::Sub,
        Op::Mul,
        Op::Div,
        Op::Sqr,
        Op::Sqrt,
        Op::Log,
        Op::SumRows,
        Op::Mean,
        Op::Repeat,
        Op::Concat,
        Op::Norm,
        Op::RmsNorm,
        Op::L2Norm,
        Op::MulMat,
        Op::MulMatId,
        Op::Scale,
        Op::Cpy,
        Op::Cont,
        Op::Reshape,
        Op::View,
        Op::Permute,
        Op::Transpose,
        Op::GetRows,
        Op::SetRows,
        Op::SoftMax,
        Op::Rope,
        Op::Clamp,
        Op::ArgSort,
        Op::TopK,
        Op::FlashAttnExt,
        Op::SsmConv,
        Op::SsmScan,
        Op::GatedDeltaNet,
        Op::Fill,
    ];
    for u in [
        Unary::Neg,
        Unary::Relu,
        Unary::Gelu,
        Unary::Silu,
        Unary::Sigmoid,
        Unary::Softplus,
        Unary::Exp,
        Unary::Tanh,
    ] {
        ops.push(Op::Unary(u));
    }
    for g in [Glu::Reglu, Glu::Geglu, Glu::Swiglu, Glu::SwigluOai, Glu::GegluErf, Glu::GegluQuick] {
        ops.push(Op::Glu(g));
    }
    ops
}

/// A split input of the trace: its source's name, the copy's buffer, the source's type and shape,
/// and the source once resolved.
type PendingCopy = (String, usize, (String, [i64; 4]), Option<TensorId>);

/// A traced row: its argv and model, and the trace.
struct TracedRow {
    #[allow(dead_code)] // for debugging
    id: String,
    model: String,
    gpus: usize,
    argv: Vec<String>,
    trace: Trace,
}

fn traced_row(rows: &Path, logs: &Path, id: &str) -> TracedRow {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(rows.join(format!("{id}.json"))).unwrap()).unwrap();
    let argv = v["argv"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect();
    let text = std::fs::read_to_string(logs.join(format!("{id}.log"))).unwrap();
    TracedRow {
        id: id.to_owned(),
        model: v["model"].as_str().unwrap().to_owned(),
        gpus: usize::try_from(v["gpus"].as_u64().unwrap()).unwrap(),
        argv,
        trace: parse_trace(&text),
    }
}

/// The graph llama.cpp built, rebuilt from the trace with the row's placement; and the scheduler
/// configuration llama.cpp used.
fn rebuild(row: &TracedRow) -> (Ctx, Graph, SchedConfig) {
    let settings = ServerSettings::from_args(&row.argv).unwrap();
    let model = models::model(&row.model);
    let gpus: Vec<_> = DRY_RUN_FREE_MIB
        .iter()
        .take(row.gpus)
        .map(|&(n, mib)| optimizer_core::memory::GpuAtLoad::new(n, Bytes::from_mib(mib)))
        .collect();
    let p = Predictor::new(model).predict_as(&settings, &gpus, Runner::FitParamsDryRun).unwrap();
    let placement = &p.placement;
    let mut backends: Vec<Location> = placement.devices.iter().map(|&g| Location::Gpu(g)).collect();
    backends.push(Location::Host);
    let backend_of = |loc: Location| backends.iter().position(|b| *b == loc).unwrap_or(backends.len() - 1);
    let cpu = backends.len() - 1;
    let full_offload = placement.n_gpu_layers as usize > model.n_layer_all;
    let pipeline = sched::pipeline_parallel(
        placement.devices.len(),
        placement.n_gpu_layers,
        model.n_layer_all,
        settings.split_mode == optimizer_core::settings::SplitMode::Layer,
        settings.kv_offload,
        !settings.overrides.is_empty(),
    );
    let mut cfg = SchedConfig::llama(placement.devices.len(), settings.op_offload, pipeline);
    // the dry run reserves with ggml_backend_sched_reserve_size, which drops the pins
    cfg.keep_pins = false;

    let ops = all_ops();
    let op_of = |desc: &str| *ops.iter().find(|o| o.desc() == desc).unwrap_or_else(|| panic!("op {desc}"));
    let ty_of = |name: &str| GgmlType::from_name(name).unwrap_or_else(|| panic!("type {name}"));

    // the type and shape of every tensor the trace shows: allocations, and the dependency nodes
    // (`x (view)`) of copies, which have their source's
    let mut shapes: BTreeMap<String, (String, [i64; 4])> = BTreeMap::new();
    for (name, (ty, ne, _)) in &row.trace.allocated {
        shapes.insert(original_name(name).to_owned(), (ty.clone(), *ne));
    }
    for n in &row.trace.nodes {
        if n.op == "NONE" && n.src.len() == 1 && n.name == format!("{} (view)", n.src[0]) {
            shapes.entry(n.src[0].clone()).or_insert((n.ty.clone(), n.ne));
        }
    }

    let mut ctx = Ctx::new();
    // the most recent node of each name
    let mut by_name: BTreeMap<String, TensorId> = BTreeMap::new();
    // every leaf of each name (two graph inputs may share one, e.g. the masks of both caches of a
    // sliding-window model), with the backends each has been copied to
    let mut leaf_instances: BTreeMap<String, Vec<(TensorId, Vec<usize>)>> = BTreeMap::new();
    // each copy's source name, backend and shape, by the copy's name (two inputs may share a name),
    // resolved when a node first reads it: a copied view may come after its copy in the graph copy
    let mut copies: BTreeMap<String, Vec<PendingCopy>> = BTreeMap::new();
    // the caches' sizes in layer order: a layer's kind (sliding window or not) picks which of two
    // same-named inputs it reads
    let mut kinds: Vec<i64> = Vec::new();
    let mut layer_kind: BTreeMap<usize, usize> = BTreeMap::new();
    for n in &row.trace.nodes {
        if n.op == "SET_ROWS" {
            if let Some(il) =
                n.src.get(2).and_then(|c| c.strip_prefix("cache_k_l")).and_then(|il| il.parse().ok())
            {
                let k = kinds.iter().position(|&w| w == n.ne[1]).unwrap_or_else(|| {
                    kinds.push(n.ne[1]);
                    kinds.len() - 1
                });
                layer_kind.entry(il).or_insert(k);
            }
        }
    }
    let mut cur_layer = 0usize;
    let mut graph = Graph::new();
    let mut leafs: Vec<TensorId> = Vec::new();
    // where the copy of weight `s` that layer `il` reads lives: its own duplicate (rope_freqs)
    // or the primary
    let weight_location = |s: &str, il: usize| -> Option<Location> {
        let index = model.tensors.iter().position(|t| t.name == s)?;
        let copies: Vec<_> = placement.tensors.iter().filter(|p| p.tensor == index).collect();
        let own =
            copies.iter().find(|p| p.copy == TensorCopy::LayerDuplicate || p.copy == TensorCopy::Primary);
        let layer = placement.layers.get(il).copied();
        let dup = copies.iter().any(|p| p.copy == TensorCopy::LayerDuplicate);
        Some(
            copies
                .iter()
                .find(|p| dup && Some(p.location) == layer)
                .or_else(|| copies.iter().find(|p| p.copy == TensorCopy::Primary))
                .or(own)
                .map_or(Location::Host, |p| p.location),
        )
    };
    let leaf_key = |s: &str, il: usize| match weight_location(s, il) {
        Some(loc) => format!("{s}@{loc:?}"),
        None => s.to_owned(),
    };
    let new_leaf = |ctx: &mut Ctx, s: &str, il: usize, shape: Option<(String, [i64; 4])>| -> TensorId {
        if let Some(index) = model.tensors.iter().position(|t| t.name == s) {
            let t = &model.tensors[index];
            let loc = weight_location(s, il).unwrap_or(Location::Host);
            let ne: Vec<i64> = t.dims.iter().map(|&d| i64::try_from(d).unwrap()).collect();
            ctx.new_weight(s, t.ggml_type, &ne, backend_of(loc))
        } else if let Some(il) = s.strip_prefix("cache_").and_then(|r| r.rsplit_once("_l")).map(|(_, il)| il)
        {
            let il: usize = il.parse().unwrap();
            let b = if settings.kv_offload { backend_of(placement.layers[il]) } else { cpu };
            // the cache's type is its views' (the first node that views it)
            let ty = row
                .trace
                .nodes
                .iter()
                .find(|m| m.src.first().is_some_and(|f| f == s) && (m.op == "VIEW" || m.op == "RESHAPE"))
                .map_or(GgmlType::F32, |m| ty_of(&m.ty));
            ctx.new_resident(s, ty, &[1], b)
        } else {
            let (ty, ne) =
                shape.or_else(|| shapes.get(s).cloned()).unwrap_or_else(|| ("f32".to_owned(), [1, 1, 1, 1]));
            let id = ctx.new_tensor(ty_of(&ty), &ne);
            ctx.set_name(id, s);
            ctx.set_input(id);
            id
        }
    };
    let nodes = &row.trace.nodes;
    for (i, n) in nodes.iter().enumerate() {
        if n.op == "NONE" {
            // a split input: `x (view)` on the source's backend, then the copy `B#x#k`
            let next = nodes.get(i + 1);
            let is_input = n.src.len() == 1
                && n.name == format!("{} (view)", n.src[0])
                && next.is_some_and(|c| {
                    c.op == "NONE" && c.src.is_empty() && original_name(&c.name) == n.src[0]
                });
            if let (true, Some(c)) = (is_input, next) {
                copies.entry(c.name.clone()).or_default().push((
                    n.src[0].clone(),
                    c.buffer,
                    (n.ty.clone(), n.ne),
                    None,
                ));
            }
            continue;
        }
        if let Some(il) = n.name.rsplit_once('-').and_then(|(_, il)| il.parse::<usize>().ok()) {
            cur_layer = il;
        }
        let mut src = Vec::new();
        for s in &n.src {
            let id = if let Some(list) = copies.get_mut(s.as_str()) {
                // a graph input of each cache (sliding window or not): the one of this layer's
                // kind; else the first one no node has read yet (inputs are copied in the order
                // nodes first read them)
                let leaf = !by_name.contains_key(list[0].0.as_str());
                let k = if leaf && list.len() == kinds.len() {
                    layer_kind.get(&cur_layer).copied().unwrap_or(0)
                } else {
                    list.iter().position(|c| c.3.is_none()).unwrap_or(list.len() - 1)
                };
                let (x, buffer, shape, resolved) = &mut list[k];
                if let Some(id) = *resolved {
                    id
                } else {
                    let id = if let Some(&id) = by_name.get(x.as_str()) {
                        id
                    } else {
                        let key = leaf_key(x, cur_layer);
                        let instances = leaf_instances.entry(key.clone()).or_default();
                        if let Some((id, to)) = instances.iter_mut().find(|(_, to)| !to.contains(buffer)) {
                            to.push(*buffer);
                            *id
                        } else {
                            let id = new_leaf(&mut ctx, x, cur_layer, Some(shape.clone()));
                            leafs.push(id);
                            leaf_instances.entry(key).or_default().push((id, vec![*buffer]));
                            id
                        }
                    };
                    *resolved = Some(id);
                    id
                }
            } else if let Some(&id) = by_name.get(s.as_str()) {
                id
            } else if let Some(&(id, _)) = leaf_instances.get(&leaf_key(s, cur_layer)).and_then(|l| l.first())
            {
                id
            } else {
                let id = new_leaf(&mut ctx, s, cur_layer, None);
                leafs.push(id);
                leaf_instances.entry(leaf_key(s, cur_layer)).or_default().push((id, Vec::new()));
                id
            };
            src.push(Some(id));
        }
        let op = op_of(&n.op);
        let id = ctx.op(op, ty_of(&n.ty), n.ne, &src);
        ctx.set_name(id, n.name.clone());
        let base = |ctx: &Ctx, s: Option<TensorId>| s.map(|s| ctx.t(s).view_src.unwrap_or(s));
        let view_of = match op {
            _ if op.is_view() => base(&ctx, src[0]),
            Op::SetRows => base(&ctx, src.get(2).copied().flatten()),
            Op::Cpy => base(&ctx, src.get(1).copied().flatten()),
            Op::Clamp => base(&ctx, src[0]),
            _ if n.name.ends_with(" (view)") => base(&ctx, src[0]),
            _ => None,
        };
        ctx.t_mut(id).view_src = view_of;
        // the graph callback's pins (src/llama-context.cpp:2646-2661)
        if let Some((stem, il)) = n.name.rsplit_once('-') {
            let ubatch = p.context.n_ubatch.min(p.context.n_ctx);
            if (stem == "norm" || stem == "l_last") && (ubatch < 32 || full_offload) {
                if let Ok(il) = il.parse::<usize>() {
                    let b = backend_of(placement.layers[il]);
                    if sched::supports_op(&cfg, b, &ctx, id) {
                        ctx.t_mut(id).pinned = Some(b);
                    }
                }
            }
        }
        by_name.insert(n.name.clone(), id);
        graph.nodes.push(id);
    }
    // ggml's leaf order is the depth-first order; the scheduler only needs the set
    for l in leafs {
        if ctx.t(l).flags & FLAG_INPUT != 0 || ctx.t(l).backend.is_some() {
            graph.leafs.push(l);
        }
    }
    (ctx, graph, cfg)
}

/// The first difference between the scheduled graph and the trace, if any.
fn compare(row: &TracedRow) -> Result<usize, String> {
    let (mut ctx, graph, cfg) = rebuild(row);
    let s = sched::schedule(&mut ctx, &graph, &cfg).map_err(|e| e.to_string())?;
    let ours: Vec<TraceNode> = s
        .graph
        .nodes
        .iter()
        .zip(&s.node_backend)
        .map(|(&id, &b)| {
            let t = ctx.t(id);
            TraceNode {
                buffer: b,
                op: t.op.desc().to_owned(),
                ty: t.ty.name().to_lowercase(),
                ne: t.ne,
                name: t.name.clone(),
                src: t.src.iter().flatten().map(|s| ctx.t(*s).name.clone()).collect(),
            }
        })
        .collect();
    for (i, (a, b)) in ours.iter().zip(&row.trace.nodes).enumerate() {
        if a != b {
            let around = |v: &[TraceNode]| {
                v.iter()
                    .skip(i.saturating_sub(2))
                    .take(12)
                    .map(|n| format!("{}:{}", n.buffer, n.name))
                    .collect::<Vec<_>>()
            };
            return Err(format!(
                "node {i}: ours {a:?}\n   llama.cpp {b:?}\n   ours {:?}\n   llama.cpp {:?}",
                around(&ours),
                around(&row.trace.nodes)
            ));
        }
    }
    if ours.len() != row.trace.nodes.len() {
        let i = ours.len().min(row.trace.nodes.len());
        return Err(format!(
            "{} nodes, llama.cpp {}; first extra: ours {:?} llama.cpp {:?}",
            ours.len(),
            row.trace.nodes.len(),
            ours.get(i),
            row.trace.nodes.get(i)
        ));
    }
    Ok(ours.len())
}

fn trace_dir() -> PathBuf {
    PathBuf::from(std::env::var("SPLITPLAN_TRACES").unwrap_or_else(|_| "/tmp/tr/state".to_owned()))
}

/// Every traced row of /tmp/tr (`SPLITPLAN_TRACES`), node for node. Ignored: the traces are not in
/// the repository unpacked (fixtures/ground-truth/traces/*.tar.xz).
#[test]
#[ignore = "reads the unpacked traces under /tmp/tr"]
fn every_traced_row_schedules_like_llama_cpp() {
    let dir = trace_dir();
    let mut ids: Vec<String> = std::fs::read_dir(dir.join("logs"))
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".log")).map(str::to_owned))
        .collect();
    ids.sort();
    if let Ok(only) = std::env::var("SPLITPLAN_ROWS") {
        ids.retain(|id| only.split(',').any(|o| o == id));
    }
    let mut failed = Vec::new();
    for id in &ids {
        let row = traced_row(&dir.join("rows"), &dir.join("logs"), id);
        match compare(&row) {
            Ok(_) => {}
            Err(e) => failed.push(format!("{id}: {e}")),
        }
    }
    let report =
        format!("{} of {} rows node for node\n{}", ids.len() - failed.len(), ids.len(), failed.join("\n"));
    std::fs::write(std::env::temp_dir().join("sim_sched_report.txt"), &report).unwrap();
    assert!(failed.is_empty(), "{report}");
}
