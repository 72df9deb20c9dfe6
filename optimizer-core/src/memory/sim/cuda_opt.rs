//! The CUDA backend's `graph_optimize` (ggml/src/ggml-cuda/ggml-cuda.cu:4604-4720 of llama.cpp
//! 11434) as far as it changes what the graph allocator sees: the scheduler runs it on each CUDA
//! split before the graph copy (ggml-backend.cpp:1598-1620). It looks for the fusions the CUDA
//! backend will run at compute time and, so that a fused kernel never reads memory the allocator
//! has already handed to one of the nodes it elides, asks the scheduler to keep their inputs alive
//! until the fusion's last node (`add_alloc_dep`); the scheduler adds one `GGML_OP_NONE` node per
//! ten kept tensors after that node. One fusion also reorders the split: a MoE's shared expert's
//! gate, up and GLU move next to the routed experts' (`std::rotate`).
//!
//! Which of it runs is decided by environment variables llama.cpp reads once: fusion unless
//! `GGML_CUDA_DISABLE_FUSION` is a non-zero number (`SchedConfig::cuda_fusion`); the concurrent
//! streams' reordering after it (ggml-cuda.cu:4722-4733) only when `GGML_CUDA_GRAPH_OPT=1`, unset by
//! default, so it is not ported. Nothing here depends on the device's compute capability: the
//! batch-size and architecture checks of these fusions (`ggml_cuda_should_fuse_mul_mat_vec_q`, …)
//! run at compute time, never in `graph_optimize` (ggml-cuda.cu:1846-1849).

use crate::gguf::GgmlType;
use crate::memory::sim::ggml::{
    Ctx, FLAG_COMPUTE, FLAG_OUTPUT, FLAG_PARAM, Glu, Graph, Op, Tensor, TensorId, Unary,
};

/// `ggml_cgraph::use_counts` (ggml.c:7270-7286): how many sources of the graph's nodes name each
/// tensor, counted when the graph is built, before the scheduler redirects sources to its copies.
/// Indexed by [`TensorId::index`]; a tensor made later (a scheduler copy) has none.
pub fn use_counts(ctx: &Ctx, graph: &Graph) -> Vec<u32> {
    let mut counts = vec![0u32; ctx.tensors.len()];
    for &n in &graph.nodes {
        for s in ctx.t(n).src.iter().flatten() {
            counts[s.index()] += 1;
        }
    }
    counts
}

/// `ggml_backend_cuda_graph_optimize` (ggml-cuda.cu:4604-4720) on one split's nodes: reorders them
/// in place and returns the allocation dependencies `(tensor, until)` in the order CUDA adds them
/// (`params->add_alloc_dep`). `use_counts` is [`use_counts`] of the whole graph (a split is a
/// `ggml_graph_view`, which shares the graph's counts, ggml.c:7535-7551).
pub fn graph_optimize(ctx: &Ctx, use_counts: &[u32], nodes: &mut [TensorId]) -> Vec<(TensorId, TensorId)> {
    let mut deps: Vec<(TensorId, TensorId)> = Vec::new();
    let n = nodes.len();

    // the shared expert next to the routed experts (ggml-cuda.cu:4627-4645)
    let mut i = 0;
    while i + 5 < n {
        if ctx.t(nodes[i]).op == Op::MulMatId {
            let mut j = i + 3;
            while j + 2 < n {
                if ctx.t(nodes[j]).op == Op::MulMatId && ctx.t(nodes[j + 1]).op == Op::MulMatId {
                    break;
                }
                if ctx.t(nodes[j]).op != Op::MulMat || !match_shared_expert(ctx, use_counts, nodes, i, j) {
                    j += 1;
                    continue;
                }
                // group both outputs before allocation so the shared result cannot alias
                // intervening nodes
                nodes[i + 3..j + 3].rotate_left(j - (i + 3));
                if let Some(up) = ctx.t(nodes[i + 2]).src[1] {
                    let until = nodes[i + 5];
                    for s in [ctx.t(up).src[1], ctx.t(up).src[2]].into_iter().flatten() {
                        deps.push((s, until));
                    }
                }
                i += 5;
                break;
            }
        }
        i += 1;
    }

    // the MoE's weighted sum and its top-k gating (ggml-cuda.cu:4646-4716)
    let mut i = 0;
    while i < n {
        if let Some(m) = match_moe_weighted_reduction(ctx, use_counts, nodes, i) {
            deps.push((m.experts, m.dst));
            deps.push((m.weights, m.dst));
            if let Some(scale) = m.expert_scale {
                deps.push((scale, m.dst));
            }
            i += m.node_count - 1;
        }
        let op = ctx.t(nodes[i]).op;
        if matches!(op, Op::Unary(_) | Op::SoftMax | Op::ArgSort) {
            if let Some(args) = topk_moe_fusion(ctx, nodes, i) {
                if let Some(count) = topk_moe_ops(ctx, use_counts, nodes, i, args) {
                    add_alloc_deps(ctx, nodes, i, i + count, &mut deps);
                    i += count - 1;
                }
            }
        }
        i += 1;
    }
    deps
}

/// The `add_alloc_deps` lambda (ggml-cuda.cu:4609-4620): every node of `start..last_node` and its
/// sources live until `nodes[last_node]`, the node after the fusion. A fusion that ends its split
/// would name the next split's first node, outside the view; it keeps nothing here.
fn add_alloc_deps(
    ctx: &Ctx,
    nodes: &[TensorId],
    start: usize,
    last_node: usize,
    deps: &mut Vec<(TensorId, TensorId)>,
) {
    let Some(&until) = nodes.get(last_node) else { return };
    for &node in &nodes[start..last_node] {
        deps.push((node, until));
        for s in ctx.t(node).src.iter().flatten() {
            deps.push((*s, until));
        }
    }
}

/// Whether two ops are the same `ggml_op` (a unary or GLU op's variant is an op parameter in ggml).
fn same_op(a: Op, b: Op) -> bool {
    match (a, b) {
        (Op::Unary(_), Op::Unary(_)) | (Op::Glu(_), Op::Glu(_)) => true,
        _ => a == b,
    }
}

/// `ggml_node_get_use_count` (ggml-impl.h:641-649).
fn use_count(use_counts: &[u32], t: TensorId) -> u32 {
    use_counts.get(t.index()).copied().unwrap_or(0)
}

/// `ggml_is_constant` (ggml.c:7765-7767): in a weights buffer and not a parameter.
fn is_constant(t: &Tensor) -> bool {
    t.weight && t.flags & FLAG_PARAM == 0
}

/// Whether `t` has a buffer (`tensor->buffer != NULL`) while the scheduler reserves: the tensors
/// already in memory and their views; compute tensors and the scheduler's copies get theirs from
/// the allocator afterwards.
fn has_buffer(ctx: &Ctx, t: &Tensor) -> bool {
    t.backend.is_some() || t.view_src.is_some_and(|v| ctx.t(v).backend.is_some())
}

/// `ggml_can_fuse_subgraph_ext` (ggml.c:7769-7819): the nodes `idxs` have the ops `ops` and are
/// computed, and every one that is not in `outputs` is used only inside the subgraph, is not a
/// graph output, and views only the subgraph's nodes or weights.
fn can_fuse_subgraph_ext(
    ctx: &Ctx,
    use_counts: &[u32],
    nodes: &[TensorId],
    idxs: &[usize],
    ops: &[Op],
    outputs: &[usize],
) -> bool {
    // the ops and the compute flags first, where most candidates fail (the answer is the same in
    // any order of the checks)
    for (i, &idx) in idxs.iter().enumerate() {
        let Some(&id) = nodes.get(idx) else { return false };
        let node = ctx.t(id);
        if !same_op(node.op, ops[i]) || node.flags & FLAG_COMPUTE == 0 {
            return false;
        }
    }
    // how often each node is a source of a later node of the subgraph: every source looked up
    // once among the subgraph's nodes (ggml reads all later nodes' sources for each node)
    let n = idxs.len();
    let mut small_uses = [0u32; 32];
    let mut big_uses = Vec::new();
    let uses: &mut [u32] = if n <= 32 {
        &mut small_uses[..n]
    } else {
        big_uses.resize(n, 0);
        &mut big_uses
    };
    let positions = Positions::new(nodes, idxs);
    for (j, &idx) in idxs.iter().enumerate() {
        for s in ctx.t(nodes[idx]).src.iter().flatten() {
            positions.each(*s, |p| {
                if p < j {
                    uses[p] += 1;
                }
            });
        }
    }
    for (i, &idx) in idxs.iter().enumerate() {
        let id = nodes[idx];
        let node = ctx.t(id);
        if outputs.iter().any(|&o| nodes.get(o) == Some(&id)) {
            continue;
        }
        if node.flags & FLAG_OUTPUT != 0 {
            return false;
        }
        if uses[i] != use_count(use_counts, id) {
            return false;
        }
        // a view's sources, and theirs, are in the subgraph or are weights
        let mut view_src = node.view_src;
        while let Some(v) = view_src {
            let inside = idxs.iter().any(|&j| nodes[j] == v);
            if !inside && !is_constant(ctx.t(v)) {
                return false;
            }
            view_src = ctx.t(v).view_src;
        }
    }
    true
}

/// Where each tensor is among a subgraph's nodes. The nodes of a fusion were made one after
/// another, so their ids usually lie within a short range: a table indexed by id then; else the
/// ids sorted, searched.
#[allow(clippy::large_enum_variant)] // the table is on the stack by design: no allocation per call
enum Positions {
    Table { lo: usize, pos: [u8; Positions::SPAN] },
    Sorted(Vec<(usize, usize)>),
}

impl Positions {
    const SPAN: usize = 256;
    const NONE: u8 = u8::MAX;

    fn new(nodes: &[TensorId], idxs: &[usize]) -> Positions {
        let ids = || idxs.iter().map(|&i| nodes[i].index());
        let (lo, hi) = (ids().min().unwrap_or(0), ids().max().unwrap_or(0));
        if hi - lo < Positions::SPAN && idxs.len() < usize::from(Positions::NONE) {
            let mut pos = [Positions::NONE; Positions::SPAN];
            let mut unique = true;
            for (k, id) in ids().enumerate() {
                unique &= pos[id - lo] == Positions::NONE;
                pos[id - lo] = k as u8;
            }
            if unique {
                return Positions::Table { lo, pos };
            }
        }
        let mut sorted: Vec<(usize, usize)> = ids().enumerate().map(|(k, id)| (id, k)).collect();
        sorted.sort_unstable();
        Positions::Sorted(sorted)
    }

    /// Calls `f` with each position of `t` among the nodes.
    fn each(&self, t: TensorId, mut f: impl FnMut(usize)) {
        let id = t.index();
        match self {
            Positions::Table { lo, pos } => {
                if let Some(&p) = id.checked_sub(*lo).and_then(|o| pos.get(o)) {
                    if p != Positions::NONE {
                        f(usize::from(p));
                    }
                }
            }
            Positions::Sorted(sorted) => {
                let first = sorted.partition_point(|&(i, _)| i < id);
                for &(_, p) in sorted[first..].iter().take_while(|&&(i, _)| i == id) {
                    f(p);
                }
            }
        }
    }
}

/// `ggml_can_fuse_subgraph` (ggml-impl.h:736-754): [`can_fuse_subgraph_ext`] over the `ops.len()`
/// nodes from `start`.
fn can_fuse_subgraph(
    ctx: &Ctx,
    use_counts: &[u32],
    nodes: &[TensorId],
    start: usize,
    ops: &[Op],
    outputs: &[usize],
) -> bool {
    if start + ops.len() > nodes.len() {
        return false;
    }
    // the patterns are short: their indices fit on the stack
    let mut idxs = [0usize; 32];
    let Some(idxs) = idxs.get_mut(..ops.len()) else {
        let idxs: Vec<usize> = (start..start + ops.len()).collect();
        return can_fuse_subgraph_ext(ctx, use_counts, nodes, &idxs, ops, outputs);
    };
    for (k, idx) in idxs.iter_mut().enumerate() {
        *idx = start + k;
    }
    can_fuse_subgraph_ext(ctx, use_counts, nodes, idxs, ops, outputs)
}

/// `ggml_are_same_shape`.
fn same_shape(a: &Tensor, b: &Tensor) -> bool {
    a.ne == b.ne
}

/// `ggml_is_matrix`.
fn is_matrix(t: &Tensor) -> bool {
    t.ne[2] == 1 && t.ne[3] == 1
}

/// `ggml_cuda_should_fuse_mul_mat` (ggml-cuda.cu:1676-1770) without biases or scales, as the shared
/// expert matcher calls it: `ffn_up` and `ffn_gate` are both MUL_MAT or both MUL_MAT_ID of the same
/// input (and ids), with weights of one type, shape and strides, feeding `glu` (gate first), an
/// unswapped SWIGLU, GEGLU or SWIGLU_OAI.
fn should_fuse_mul_mat(ctx: &Ctx, ffn_up: TensorId, ffn_gate: TensorId, glu: TensorId) -> bool {
    let (up, gate, g) = (ctx.t(ffn_up), ctx.t(ffn_gate), ctx.t(glu));
    let Op::Glu(glu_op) = g.op else { return false };
    let is_mul_mat = up.op == Op::MulMat && gate.op == Op::MulMat;
    let is_mul_mat_id = up.op == Op::MulMatId && gate.op == Op::MulMatId;
    if !is_mul_mat && !is_mul_mat_id {
        return false;
    }
    if g.src[0] != Some(ffn_gate) || g.src[1] != Some(ffn_up) {
        return false;
    }
    let (Some(uw), Some(gw)) = (up.src[0], gate.src[0]) else { return false };
    let (uw, gw) = (ctx.t(uw), ctx.t(gw));
    if uw.ty != gw.ty || !same_shape(uw, gw) || uw.nb != gw.nb {
        return false;
    }
    if up.src[1] != gate.src[1] {
        return false;
    }
    if is_mul_mat_id && up.src[2] != gate.src[2] {
        return false;
    }
    // SWIGLU_CLAMP, the fourth valid op, is not among the ops the builders use
    if !matches!(glu_op, Glu::Swiglu | Glu::Geglu | Glu::SwigluOai) {
        return false;
    }
    // op_params[1]: swapped
    g.op_params[1] == 0
}

/// `ggml_cuda_match_shared_expert` (ggml-cuda.cu:1827-1874): the routed experts' gate, up and GLU
/// at `routed_idx` and a shared expert's at `shared_idx` read the same (reshaped) input with
/// quantized weights of one layout, so that one kernel can compute both.
fn match_shared_expert(
    ctx: &Ctx,
    use_counts: &[u32],
    nodes: &[TensorId],
    routed_idx: usize,
    shared_idx: usize,
) -> bool {
    let n = nodes.len();
    if routed_idx + 2 >= n || shared_idx + 2 >= n || shared_idx < routed_idx + 3 {
        return false;
    }
    let idxs = [routed_idx, routed_idx + 1, routed_idx + 2, shared_idx, shared_idx + 1, shared_idx + 2];
    let ops =
        [Op::MulMatId, Op::MulMatId, Op::Glu(Glu::Swiglu), Op::MulMat, Op::MulMat, Op::Glu(Glu::Swiglu)];
    let outputs = [routed_idx + 2, shared_idx + 2];
    if !can_fuse_subgraph_ext(ctx, use_counts, nodes, &idxs, &ops, &outputs) {
        return false;
    }
    let (routed_id, shared_id) = (nodes[routed_idx + 2], nodes[shared_idx + 2]);
    let (routed, shared) = (ctx.t(routed_id), ctx.t(shared_id));
    let (Some(gate), Some(up), Some(shared_gate), Some(shared_up)) =
        (routed.src[0], routed.src[1], shared.src[0], shared.src[1])
    else {
        return false;
    };
    let is_pair = |a: TensorId, b: TensorId, idx: usize| {
        (a == nodes[idx] && b == nodes[idx + 1]) || (b == nodes[idx] && a == nodes[idx + 1])
    };
    // only batch-size independent checks here (ggml-cuda.cu:1849-1851)
    if !is_pair(gate, up, routed_idx)
        || !is_pair(shared_gate, shared_up, shared_idx)
        || !should_fuse_mul_mat(ctx, up, gate, routed_id)
        || !should_fuse_mul_mat(ctx, shared_up, shared_gate, shared_id)
    {
        return false;
    }
    let (Some(weight), Some(input), Some(shared_weight), Some(shared_input), Some(shared_gate_weight)) = (
        ctx.t(up).src[0],
        ctx.t(up).src[1],
        ctx.t(shared_up).src[0],
        ctx.t(shared_up).src[1],
        ctx.t(shared_gate).src[0],
    ) else {
        return false;
    };
    let (w, x, sw, sx, sgw) =
        (ctx.t(weight), ctx.t(input), ctx.t(shared_weight), ctx.t(shared_input), ctx.t(shared_gate_weight));
    if !has_buffer(ctx, w) || !w.ty.is_quantized() {
        return false;
    }
    if x.op != Op::Reshape
        || x.src[0] != Some(shared_input)
        || x.ne[1] != 1
        || x.ne[3] != 1
        || !x.is_contiguous()
        || !sx.is_contiguous()
        || !is_matrix(sx)
        || w.ty != sw.ty
        || w.ne[0] != sw.ne[0]
        || w.ne[1] != sw.ne[1]
        || w.nb[1] != sw.nb[1]
        || w.ne[3] != 1
        || !is_matrix(sw)
        || !sw.is_contiguous()
        || !sgw.is_contiguous()
        || !routed.is_contiguous()
        || !shared.is_contiguous()
    {
        return false;
    }
    // the GLU variants and their f32 parameter 3 (SWIGLU_OAI's limit) agree
    sw.op == Op::None
        && sgw.op == Op::None
        && routed.op == shared.op
        && routed.op_params[3] == shared.op_params[3]
}

/// `ggml_cuda_moe_weighted_reduction_match` (ggml-cuda.cu:3098-3104).
struct WeightedReduction {
    experts: TensorId,
    expert_scale: Option<TensorId>,
    weights: TensorId,
    dst: TensorId,
    node_count: usize,
}

/// `MOE_WEIGHTED_REDUCTION_MAX_EXPERTS` (ggml-cuda.cu:3096).
const MOE_WEIGHTED_REDUCTION_MAX_EXPERTS: i64 = 15;

/// `ggml_cuda_match_moe_weighted_reduction` (ggml-cuda.cu:3106-3235): the experts' outputs times
/// the router weights (optionally times a per-expert scale first), then summed over the experts
/// through one view per expert and a chain of adds (llama-graph.cpp's build_moe_ffn).
fn match_moe_weighted_reduction(
    ctx: &Ctx,
    use_counts: &[u32],
    nodes: &[TensorId],
    node_idx: usize,
) -> Option<WeightedReduction> {
    let first_id = nodes[node_idx];
    let first = ctx.t(first_id);
    if first.op != Op::Mul || first.ty != GgmlType::F32 || !first.is_contiguous() {
        return None;
    }
    // (full, broadcast) when `mul` is experts times per-row weights, either way round
    let split_mul = |mul: &Tensor| -> Option<(TensorId, TensorId)> {
        let is_weights = |t: Option<TensorId>| {
            t.is_some_and(|t| {
                let t = ctx.t(t);
                t.ty == GgmlType::F32
                    && t.is_contiguous()
                    && t.ne[0] == 1
                    && t.ne[1] == mul.ne[1]
                    && t.ne[2] == mul.ne[2]
                    && t.ne[3] == mul.ne[3]
            })
        };
        let is_experts = |t: Option<TensorId>| {
            t.is_some_and(|t| {
                let t = ctx.t(t);
                t.ty == GgmlType::F32 && t.is_contiguous() && same_shape(t, mul)
            })
        };
        if is_experts(mul.src[0]) && is_weights(mul.src[1]) {
            return Some((mul.src[0]?, mul.src[1]?));
        }
        if is_experts(mul.src[1]) && is_weights(mul.src[0]) {
            return Some((mul.src[1]?, mul.src[0]?));
        }
        None
    };

    let mut weighted = first_id;
    let mut found: Option<(TensorId, Option<TensorId>, TensorId)> = None;
    let mut mul_count = 1usize;
    // (experts * expert_scale) * router_weight, or experts * router_weight
    if node_idx + 1 < nodes.len() {
        let second_id = nodes[node_idx + 1];
        let second = ctx.t(second_id);
        if second.op == Op::Mul && second.ty == GgmlType::F32 && second.is_contiguous() {
            if let (Some((scaled, route)), Some((raw, scale))) = (split_mul(second), split_mul(first)) {
                if scaled == first_id {
                    weighted = second_id;
                    found = Some((raw, Some(scale), route));
                    mul_count = 2;
                }
            }
        }
    }
    let (experts, expert_scale, weights) = if let Some(f) = found {
        f
    } else {
        let (experts, weights) = split_mul(first)?;
        (experts, None, weights)
    };

    let w = ctx.t(weighted);
    let n_expert_used = w.ne[1];
    let n_tokens = w.ne[2] * w.ne[3];
    if !(2..=MOE_WEIGHTED_REDUCTION_MAX_EXPERTS).contains(&n_expert_used) {
        return None;
    }
    let n_used = n_expert_used as usize;
    let node_count = 2 * n_used + mul_count - 1;
    if node_idx + node_count > nodes.len() {
        return None;
    }
    let mut ops = vec![Op::View; node_count];
    ops[0] = Op::Mul;
    if mul_count == 2 {
        ops[1] = Op::Mul;
    }
    let mut views: Vec<TensorId> = Vec::with_capacity(n_used);
    let mut previous: Option<TensorId> = None;
    let mut n_adds = 0usize;
    for (offset, op) in ops.iter_mut().enumerate().skip(mul_count) {
        let cand_id = nodes[node_idx + offset];
        let cand = ctx.t(cand_id);
        *op = cand.op;
        if cand.op == Op::View {
            let expert = views.len() as u64;
            if views.len() >= n_used
                || cand.src[0] != Some(weighted)
                || cand.view_src != Some(weighted)
                || cand.ty != GgmlType::F32
                || cand.ne[0] != w.ne[0]
                || cand.ne[1] != n_tokens
                || cand.ne[2] != 1
                || cand.ne[3] != 1
                || cand.nb[0] != w.nb[0]
                || cand.nb[1] != w.nb[2]
                || cand.view_offs != expert * w.nb[1]
            {
                return None;
            }
            views.push(cand_id);
            continue;
        }
        if cand.op != Op::Add || views.len() < 2 || n_adds + 1 >= views.len() {
            return None;
        }
        let lhs = if n_adds == 0 { Some(views[0]) } else { previous };
        let rhs = views[n_adds + 1];
        if cand.src[0] != lhs || cand.src[1] != Some(rhs) || cand.ty != GgmlType::F32 {
            return None;
        }
        previous = Some(cand_id);
        n_adds += 1;
    }
    let previous = previous?;
    if views.len() != n_used || n_adds != n_used - 1 {
        return None;
    }
    let p = ctx.t(previous);
    if !p.is_contiguous() || p.ne[0] != w.ne[0] || p.ne[1] != n_tokens || p.ne[2] != 1 || p.ne[3] != 1 {
        return None;
    }
    let output_idx = node_idx + node_count - 1;
    if !can_fuse_subgraph(ctx, use_counts, nodes, node_idx, &ops, &[output_idx]) {
        return None;
    }
    Some(WeightedReduction { experts, expert_scale, weights, dst: nodes[output_idx], node_count })
}

/// `ggml_cuda_topk_moe_args` (topk-moe.cuh:9-17).
#[allow(clippy::struct_excessive_bools)] // ggml's own flags, kept one for one
#[derive(Clone, Copy, Debug, Default)]
struct TopkMoeArgs {
    sigmoid: bool,
    sqrt_softplus: bool,
    softmax: bool,
    delayed_softmax: bool,
    prob_bias: bool,
    norm: bool,
    scale: bool,
}

/// `ggml_cuda_topk_moe_fusion` (ggml-cuda.cu:2875-3042): whether the nodes from `node_idx` are
/// build_moe_ffn's expert selection (gating activation, optional bias, argsort, top-k view,
/// get_rows of the weights, optional normalization and scale), and which variant.
fn topk_moe_fusion(ctx: &Ctx, nodes: &[TensorId], node_idx: usize) -> Option<TopkMoeArgs> {
    let mut args = TopkMoeArgs::default();
    let n = nodes.len();
    let t = |i: usize| ctx.t(nodes[i]);
    let mut i = node_idx;
    match t(i).op {
        Op::SoftMax => args.softmax = true,
        Op::Unary(Unary::Sigmoid) => args.sigmoid = true,
        Op::Unary(Unary::Softplus)
            if i + 1 < n && t(i + 1).op == Op::Sqrt && t(i + 1).src[0] == Some(nodes[i]) =>
        {
            // sqrt(softplus(x)) scoring (DeepSeek-V4)
            args.sqrt_softplus = true;
            i += 1;
        }
        Op::Unary(_) => return None,
        _ => {}
    }
    if t(i).op == Op::ArgSort {
        args.delayed_softmax = true;
    }
    i += 1;

    if args.sigmoid || args.sqrt_softplus || args.softmax {
        // SOFTMAX -> RESHAPE
        if i >= n || t(i).op != Op::Reshape || t(i).src[0] != Some(nodes[i - 1]) {
            return None;
        }
        let probs_reshaped = nodes[i];
        i += 1;
        if i >= n {
            return None;
        }
        // the bias add reads the probabilities before the reshape
        if t(i).op == Op::Add && t(i).src[0] == Some(nodes[i - 2]) {
            args.prob_bias = true;
            i += 1;
        }
        // RESHAPE/ADD -> ARGSORT
        if i >= n || t(i).op != Op::ArgSort {
            return None;
        }
        let sorted = if args.prob_bias { nodes[i - 1] } else { nodes[i - 2] };
        if t(i).src[0] != Some(sorted) {
            return None;
        }
        i += 1;
        // ARGSORT -> VIEW
        if i >= n || t(i).op != Op::View || t(i).src[0] != Some(nodes[i - 1]) {
            return None;
        }
        i += 1;
        // GET_ROWS
        if i >= n || t(i).op != Op::GetRows {
            return None;
        }
        if t(i).src[0] != Some(probs_reshaped) || t(i).src[1] != Some(nodes[i - 1]) {
            return None;
        }
        i += 1;
    } else if args.delayed_softmax {
        if i < 2 {
            return None;
        }
        let probs_reshaped = nodes[i - 2];
        // VIEW -> ARGSORT
        if i >= n || t(i).op != Op::View || t(i).src[0] != Some(nodes[i - 1]) {
            return None;
        }
        i += 1;
        // GET_ROWS
        if i >= n || t(i).src[1] != Some(nodes[i - 1]) || t(i).src[0] != Some(probs_reshaped) {
            return None;
        }
        i += 1;
        for op in [Op::Reshape, Op::SoftMax, Op::Reshape] {
            if i >= n || t(i).op != op || t(i).src[0] != Some(nodes[i - 1]) {
                return None;
            }
            i += 1;
        }
    }

    // the normalization and the scale, which the fusion takes when it finds them
    if i >= n {
        return Some(args);
    }
    if t(i).op == Op::Reshape {
        // RESHAPE -> SUM_ROWS -> CLAMP -> DIV -> RESHAPE
        args.norm = true;
        for op in [Op::Reshape, Op::SumRows, Op::Clamp] {
            if i < n && t(i).op == op && t(i).src[0] == Some(nodes[i - 1]) {
                i += 1;
            } else {
                args.norm = false;
                return Some(args);
            }
        }
        // DIV <- CLAMP, RESHAPE
        if i >= n
            || t(i).op != Op::Div
            || t(i).src[1] != Some(nodes[i - 1])
            || t(i).src[0] != Some(nodes[i - 3])
        {
            args.norm = false;
            return Some(args);
        }
        i += 1;
        if i >= n || t(i).op != Op::Reshape || t(i).src[0] != Some(nodes[i - 1]) {
            args.norm = false;
            return Some(args);
        }
        i += 1;
    }
    // the C++ reads the node after the split's end here; no node there is a scale of this one
    if i < n && t(i).op == Op::Scale && t(i).src[0] == Some(nodes[i - 1]) {
        args.scale = true;
    }
    Some(args)
}

/// The fused top-k MoE ops of `graph_optimize` (ggml-cuda.cu:4667-4713) for a match of
/// [`topk_moe_fusion`] at `i`: their count when the nodes can be fused and the CUDA kernel takes
/// them (`ggml_cuda_should_use_topk_moe`). A delayed softmax (gpt-oss) adds no dependencies.
fn topk_moe_ops(
    ctx: &Ctx,
    use_counts: &[u32],
    nodes: &[TensorId],
    i: usize,
    args: TopkMoeArgs,
) -> Option<usize> {
    if args.delayed_softmax {
        return None;
    }
    let mut ops: Vec<Op> = Vec::with_capacity(13);
    if args.sigmoid {
        ops.push(Op::Unary(Unary::Sigmoid));
    } else if args.sqrt_softplus {
        ops.extend([Op::Unary(Unary::Softplus), Op::Sqrt]);
    } else {
        ops.push(Op::SoftMax);
    }
    let i_probs = i + ops.len() - 1;
    let ids_idx = if args.prob_bias {
        ops.extend([Op::Reshape, Op::Add, Op::ArgSort, Op::View, Op::GetRows]);
        i_probs + 4
    } else {
        ops.extend([Op::Reshape, Op::ArgSort, Op::View, Op::GetRows]);
        i_probs + 3
    };
    if args.norm {
        ops.extend([Op::Reshape, Op::SumRows, Op::Clamp, Op::Div, Op::Reshape]);
    }
    if args.scale {
        ops.push(Op::Scale);
    }
    let weights_idx = i + ops.len() - 1;
    let (&ids, &weights) = (nodes.get(ids_idx)?, nodes.get(weights_idx)?);
    let node = nodes[i];
    let logits = ctx.t(node).src[0]?;
    if can_fuse_subgraph(ctx, use_counts, nodes, i, &ops, &[ids_idx, weights_idx])
        && should_use_topk_moe(ctx, node, logits, weights, ids)
    {
        Some(ops.len())
    } else {
        None
    }
}

/// `ggml_cuda_should_use_topk_moe` (topk-moe.cu:403-447), called as graph_optimize calls it (its
/// `weights` and `logits` arguments swapped, which the symmetric contiguity test does not see):
/// an expert count the kernel is instantiated for, contiguous logits and weights, and a plain
/// softmax (no scale, bias, mask or sinks) or a sigmoid/softplus gate.
fn should_use_topk_moe(
    ctx: &Ctx,
    gating: TensorId,
    logits: TensorId,
    weights: TensorId,
    ids: TensorId,
) -> bool {
    let ids = ctx.t(ids);
    let n_expert = ids.nb[1] / ids.nb[0].max(1);
    if (!n_expert.is_power_of_two() || n_expert > 512) && n_expert != 288 && n_expert != 576 {
        return false;
    }
    if !ctx.t(weights).is_contiguous() || !ctx.t(logits).is_contiguous() {
        return false;
    }
    let g = ctx.t(gating);
    match g.op {
        // build_moe_ffn's ggml_soft_max has scale 1 and max_bias 0 (op_params 0 and 1), which this
        // model of ggml does not record: a softmax without mask or sinks is that one
        Op::SoftMax => {
            g.src[0].is_some_and(|s| ctx.t(s).is_contiguous()) && g.src[1].is_none() && g.src[2].is_none()
        }
        Op::Unary(u) => matches!(u, Unary::Sigmoid | Unary::Softplus),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(p: &Positions, id: usize) -> Vec<usize> {
        let mut v = Vec::new();
        p.each(TensorId::new(id), |k| v.push(k));
        v
    }

    /// The table (ids within a short range) and the sorted search (ids far apart, or repeated)
    /// find the same positions, and nothing for a tensor outside the subgraph.
    #[test]
    fn positions_by_table_and_by_search_agree() {
        let near: Vec<TensorId> = [700, 702, 701, 750].into_iter().map(TensorId::new).collect();
        let far: Vec<TensorId> = [3, 702, 701, 5000].into_iter().map(TensorId::new).collect();
        let twice: Vec<TensorId> = [700, 702, 700].into_iter().map(TensorId::new).collect();
        let (near_p, far_p, twice_p) = (
            Positions::new(&near, &[0, 1, 2, 3]),
            Positions::new(&far, &[0, 1, 2, 3]),
            Positions::new(&twice, &[0, 1, 2]),
        );
        assert!(matches!(near_p, Positions::Table { .. }));
        assert!(matches!(far_p, Positions::Sorted(_)));
        assert!(matches!(twice_p, Positions::Sorted(_)));
        assert_eq!(found(&near_p, 702), vec![1]);
        assert_eq!(found(&far_p, 702), vec![1]);
        assert_eq!(found(&near_p, 750), vec![3]);
        assert_eq!(found(&far_p, 5000), vec![3]);
        assert_eq!(found(&twice_p, 700), vec![0, 2]);
        for id in [0, 699, 703, 749, 751, 4999, 100_000] {
            assert!(found(&near_p, id).is_empty(), "{id}");
            assert!(found(&far_p, id).is_empty(), "{id}");
        }
    }
}
