//! A reader of llama.cpp's graph-allocator traces (`GGML_ALLOC_TRACE=1`, the `@@` lines of
//! fixtures/ground-truth/alloc-trace.patch), for the tests that hold the simulator against llama.cpp:
//! the scheduled graph's nodes with their sources and buffers, every allocation, reuse and free in
//! order, and each buffer's final size.
//!
//! [`Trace::scheduled_graph`] rebuilds the scheduled graph as a [`Ctx`] and a [`Graph`] that the
//! graph allocator can run on; [`Trace::unscheduled_nodes`] strips the scheduler's copies so that a
//! builder's graph can be compared node for node.
//!
//! Line formats (the patch's `fprintf`s):
//! - `@@R n_nodes n_leafs n_buffers`, then `@@B i name` per buffer;
//! - `@@A buffer chunk offset size op type ne0 ne1 ne2 ne3 flags|name` an allocation (the size
//!   already aligned); `@@F` the same for a free;
//! - `@@U buffer parent|node` the node took its parent's memory; `@@X buffer chunk offset size node`
//!   the parent's extra bytes freed;
//! - `@@N i buffer op type ne0 ne1 ne2 ne3|name|src;src;…` node `i` of the scheduled graph, after
//!   its allocation;
//! - `@@M buffer bytes` each buffer's size at the end.

use std::collections::HashMap;

use crate::gguf::GgmlType;

use super::alloc::BufferSpec;
use super::ggml::{Ctx, FLAG_COMPUTE, FLAG_INPUT, FLAG_OUTPUT, Glu, Graph, MAX_SRC, Op, TensorId, Unary};

/// What went wrong reading a trace.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TraceError {
    /// A line that does not have the patch's format.
    #[error("trace line {line}: cannot read {text:?}: {what}")]
    BadLine {
        /// 1-based line number in the text.
        line: usize,
        /// The line.
        text: String,
        /// What was expected.
        what: &'static str,
    },
    /// No `@@R` line: not a trace.
    #[error("no @@R line: not a GGML_ALLOC_TRACE log")]
    NoReservation,
}

/// One `@@A` or `@@F` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alloc {
    /// The graph allocator's buffer id.
    pub buffer: usize,
    /// The chunk of that buffer.
    pub chunk: usize,
    /// Byte offset in the chunk.
    pub offset: u64,
    /// Bytes, aligned to the buffer's alignment.
    pub size: u64,
    /// `ggml_op_desc` of the tensor.
    pub op: String,
    /// `ggml_type_name` of the tensor.
    pub ty: String,
    /// Its shape.
    pub ne: [i64; 4],
    /// Its `flags`.
    pub flags: u8,
    /// Its name.
    pub name: String,
}

/// One allocator event, in trace order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `@@A`: a tensor got memory.
    Alloc(Alloc),
    /// `@@F`: a tensor's memory was freed.
    Free(Alloc),
    /// `@@U`: `node` reused `parent`'s memory in place, in `buffer`.
    Reuse {
        /// The buffer.
        buffer: usize,
        /// The parent whose memory is taken.
        parent: String,
        /// The node.
        node: String,
    },
    /// `@@X`: the end of a reused parent, freed.
    FreeExtra {
        /// The buffer.
        buffer: usize,
        /// The chunk.
        chunk: usize,
        /// Byte offset in the chunk.
        offset: u64,
        /// Bytes freed.
        size: u64,
        /// The node that reused the parent.
        node: String,
    },
    /// `@@N`: node `index` of [`Trace::nodes`] was allocated (or found its memory).
    Node(usize),
}

/// How a node of the trace got its memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeMemory {
    /// Allocated from the buffer (the `@@A` line).
    Allocated(Alloc),
    /// Took the memory of its source named here (`@@U`).
    InPlace(String),
    /// Neither: a view, or a tensor allocated before the graph's first node (a graph input).
    Elsewhere,
}

/// One `@@N` line: a node of the scheduled graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceNode {
    /// Its index in the scheduled graph.
    pub index: usize,
    /// The graph allocator's buffer id for it (the scheduler's backend of the node).
    pub buffer: usize,
    /// `ggml_op_desc`: the op, or the unary / glu op for those.
    pub op: String,
    /// `ggml_type_name`.
    pub ty: String,
    /// Shape.
    pub ne: [i64; 4],
    /// Name.
    pub name: String,
    /// Names of its sources, in `src` order (unset sources are not printed).
    pub srcs: Vec<String>,
    /// How it got its memory.
    pub memory: NodeMemory,
}

/// One reservation of a trace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    /// `n_nodes` of the `@@R` line.
    pub n_nodes: usize,
    /// `n_leafs` of the `@@R` line.
    pub n_leafs: usize,
    /// Buffer names by id (`@@B`): `CUDA0`, `CUDA1`, `CUDA_Host`, …
    pub buffers: Vec<String>,
    /// The scheduled graph's nodes.
    pub nodes: Vec<TraceNode>,
    /// Tensors allocated before the first node: the graph's input leafs (and, with pipeline
    /// parallelism, the scheduler's input copies), in allocation order.
    pub inputs: Vec<Alloc>,
    /// Every event in order.
    pub events: Vec<Event>,
    /// Each buffer's final size in bytes (`@@M`), by buffer id.
    pub sizes: Vec<u64>,
}

/// The scheduled graph of a trace, ready for the graph allocator.
#[derive(Clone, Debug)]
pub struct TraceGraph {
    /// The tensors.
    pub ctx: Ctx,
    /// Nodes and leafs (the leafs: the graph inputs, allocated first).
    pub graph: Graph,
    /// The buffer of each node.
    pub node_buffer: Vec<usize>,
    /// The buffer of each leaf.
    pub leaf_buffer: Vec<usize>,
}

fn bad(line: usize, text: &str, what: &'static str) -> TraceError {
    TraceError::BadLine { line, text: text.to_owned(), what }
}

fn parse_alloc(line: usize, text: &str, rest: &str) -> Result<Alloc, TraceError> {
    let (head, name) = rest.split_once('|').ok_or_else(|| bad(line, text, "a '|' before the name"))?;
    let f: Vec<&str> = head.split_whitespace().collect();
    if f.len() != 11 {
        return Err(bad(line, text, "11 fields before the name"));
    }
    let num = |s: &str| s.parse::<u64>().map_err(|_| bad(line, text, "a number"));
    let ine = |s: &str| s.parse::<i64>().map_err(|_| bad(line, text, "a number"));
    Ok(Alloc {
        buffer: num(f[0])? as usize,
        chunk: num(f[1])? as usize,
        offset: num(f[2])?,
        size: num(f[3])?,
        op: f[4].to_owned(),
        ty: f[5].to_owned(),
        ne: [ine(f[6])?, ine(f[7])?, ine(f[8])?, ine(f[9])?],
        flags: f[10].parse::<u8>().map_err(|_| bad(line, text, "flags"))?,
        name: name.to_owned(),
    })
}

fn parse_node(line: usize, text: &str, rest: &str) -> Result<TraceNode, TraceError> {
    let mut parts = rest.splitn(3, '|');
    let head = parts.next().unwrap_or_default();
    let name = parts.next().ok_or_else(|| bad(line, text, "'|name|'"))?;
    let srcs = parts.next().ok_or_else(|| bad(line, text, "'|sources'"))?;
    let f: Vec<&str> = head.split_whitespace().collect();
    if f.len() != 8 {
        return Err(bad(line, text, "8 fields before the name"));
    }
    let num = |s: &str| s.parse::<i64>().map_err(|_| bad(line, text, "a number"));
    Ok(TraceNode {
        index: num(f[0])? as usize,
        buffer: num(f[1])? as usize,
        op: f[2].to_owned(),
        ty: f[3].to_owned(),
        ne: [num(f[4])?, num(f[5])?, num(f[6])?, num(f[7])?],
        name: name.to_owned(),
        srcs: if srcs.is_empty() { Vec::new() } else { srcs.split(';').map(str::to_owned).collect() },
        memory: NodeMemory::Elsewhere,
    })
}

impl Trace {
    /// Reads the first reservation of a log (any other lines are skipped).
    pub fn parse(text: &str) -> Result<Trace, TraceError> {
        let mut t = Trace::default();
        let mut seen_r = false;
        // Allocations since the last `@@N`: the node's own, or (before the first node) the inputs.
        let mut pending: Vec<Alloc> = Vec::new();
        let mut pending_reuse: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let Some(body) = raw.strip_prefix("@@") else { continue };
            let (tag, rest) = body.split_once(' ').unwrap_or((body, ""));
            match tag {
                "R" => {
                    if seen_r {
                        break;
                    }
                    seen_r = true;
                    let f: Vec<usize> = rest.split_whitespace().filter_map(|s| s.parse().ok()).collect();
                    if f.len() != 3 {
                        return Err(bad(line, raw, "@@R n_nodes n_leafs n_buffers"));
                    }
                    (t.n_nodes, t.n_leafs) = (f[0], f[1]);
                    t.sizes = vec![0; f[2]];
                }
                _ if !seen_r => {}
                "B" => {
                    let (_, name) = rest.split_once(' ').ok_or_else(|| bad(line, raw, "@@B i name"))?;
                    t.buffers.push(name.to_owned());
                }
                "A" => {
                    let a = parse_alloc(line, raw, rest)?;
                    t.events.push(Event::Alloc(a.clone()));
                    pending.push(a);
                }
                "F" => t.events.push(Event::Free(parse_alloc(line, raw, rest)?)),
                "U" => {
                    let (head, node) =
                        rest.split_once('|').ok_or_else(|| bad(line, raw, "@@U buffer parent|node"))?;
                    let (buffer, parent) =
                        head.split_once(' ').ok_or_else(|| bad(line, raw, "@@U buffer parent"))?;
                    let buffer = buffer.parse().map_err(|_| bad(line, raw, "a buffer id"))?;
                    t.events.push(Event::Reuse { buffer, parent: parent.to_owned(), node: node.to_owned() });
                    pending_reuse = Some(parent.to_owned());
                }
                "X" => {
                    let f: Vec<&str> = rest.splitn(5, ' ').collect();
                    if f.len() != 5 {
                        return Err(bad(line, raw, "@@X buffer chunk offset size node"));
                    }
                    let num = |s: &str| s.parse::<u64>().map_err(|_| bad(line, raw, "a number"));
                    t.events.push(Event::FreeExtra {
                        buffer: num(f[0])? as usize,
                        chunk: num(f[1])? as usize,
                        offset: num(f[2])?,
                        size: num(f[3])?,
                        node: f[4].to_owned(),
                    });
                }
                "N" => {
                    let mut n = parse_node(line, raw, rest)?;
                    // The node's own allocation is the last one before its line, with its name and
                    // op; anything else since the previous node is a graph input (only before the
                    // first node: later, every source is allocated already).
                    let own = match pending.last() {
                        Some(a) if a.name == n.name && a.op == n.op && a.flags & FLAG_INPUT == 0 => {
                            pending.pop()
                        }
                        _ => None,
                    };
                    if t.nodes.is_empty() {
                        t.inputs.append(&mut pending);
                    } else if !pending.is_empty() {
                        return Err(bad(line, raw, "no allocation but the node's own before a node"));
                    }
                    n.memory = match (own, pending_reuse.take()) {
                        (Some(a), _) => NodeMemory::Allocated(a),
                        (None, Some(p)) => NodeMemory::InPlace(p),
                        (None, None) => NodeMemory::Elsewhere,
                    };
                    t.events.push(Event::Node(t.nodes.len()));
                    t.nodes.push(n);
                }
                "M" => {
                    let f: Vec<u64> = rest.split_whitespace().filter_map(|s| s.parse().ok()).collect();
                    match f.as_slice() {
                        [b, bytes] if (*b as usize) < t.sizes.len() => t.sizes[*b as usize] = *bytes,
                        _ => return Err(bad(line, raw, "@@M buffer bytes")),
                    }
                }
                _ => {}
            }
        }
        if !seen_r {
            return Err(TraceError::NoReservation);
        }
        Ok(t)
    }

    /// Reads every reservation of a log: a dry run reserves once, llama-server up to three
    /// times per context (prompt, token generation, prompt again: llama-context.cpp:640-740).
    pub fn parse_all(text: &str) -> Result<Vec<Trace>, TraceError> {
        let starts: Vec<usize> = text
            .match_indices("@@R ")
            .map(|(i, _)| i)
            .filter(|&i| i == 0 || text.as_bytes()[i - 1] == b'\n')
            .collect();
        if starts.is_empty() {
            return Err(TraceError::NoReservation);
        }
        starts.iter().map(|&i| Trace::parse(&text[i..])).collect()
    }

    /// The nodes of the graph llama.cpp built, before the scheduler: the scheduler's nodes (all of
    /// op `NONE`: the input copies `BACKEND#name#k` and the `name (view)` dependencies feeding
    /// them) removed, and sources renamed back from their copies (`CUDA0#inp_pos#0` → `inp_pos`).
    pub fn unscheduled_nodes(&self) -> Vec<TraceNode> {
        self.nodes
            .iter()
            .filter(|n| n.op != "NONE")
            .map(|n| {
                let mut n = n.clone();
                for s in &mut n.srcs {
                    *s = copy_source(s).to_owned();
                }
                n
            })
            .collect()
    }

    /// For each tensor of `graph` (built from this trace in `ctx`), the node after which llama.cpp
    /// freed it, from the addresses of the `@@A`, `@@U` and `@@F` lines.
    /// Also whether each tensor's memory went on to a node that reused it in place.
    fn freed_after(&self, ctx: &Ctx, graph: &Graph) -> (Vec<Option<usize>>, Vec<bool>) {
        let mut out = vec![None; ctx.tensors.len()];
        let mut passed_on = vec![false; ctx.tensors.len()];
        let mut live: HashMap<(usize, usize, u64), TensorId> = HashMap::new();
        let mut inputs = graph.leafs.iter();
        let mut pending: Option<(usize, usize, u64)> = None;
        let mut pending_reuse: Option<(usize, &str)> = None;
        let mut last_node = 0;
        for e in &self.events {
            match e {
                Event::Alloc(a) => {
                    let key = (a.buffer, a.chunk, a.offset);
                    // the inputs come first, in order; any other allocation is the next node's
                    match inputs.next() {
                        Some(&id) => _ = live.insert(key, id),
                        None => pending = Some(key),
                    }
                }
                Event::Reuse { buffer, parent, .. } => pending_reuse = Some((*buffer, parent)),
                Event::Node(k) => {
                    last_node = *k;
                    if let Some(key) = pending.take() {
                        live.insert(key, graph.nodes[*k]);
                    }
                    if let Some((buffer, parent)) = pending_reuse.take() {
                        let key = live.iter().find(|(key, id)| key.0 == buffer && ctx.name(**id) == parent);
                        if let Some((&key, &parent)) = key {
                            passed_on[parent.index()] = true;
                            live.insert(key, graph.nodes[*k]);
                        }
                    }
                }
                Event::Free(a) => {
                    if let Some(id) = live.remove(&(a.buffer, a.chunk, a.offset)) {
                        out[id.index()] = Some(last_node);
                    }
                }
                Event::FreeExtra { .. } => {}
            }
        }
        (out, passed_on)
    }

    /// The nodes that read node `i` through views: its first reader, and if that is a view
    /// (neither allocated nor reused), that view's first reader, and so on.
    fn later_readers(&self, i: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut cur = i;
        while out.len() < 8 {
            let name = &self.nodes[cur].name;
            let Some(j) = (cur + 1..self.nodes.len()).find(|&j| self.nodes[j].srcs.iter().any(|s| s == name))
            else {
                break;
            };
            out.push(j);
            if self.nodes[j].memory != NodeMemory::Elsewhere {
                break;
            }
            cur = j;
        }
        out
    }

    /// The buffer types of the `@@B` lines: `CUDAn` a CUDA device of compute capability `cc`
    /// (llama.cpp's ground truth ran on H200s: 900), anything else a host buffer.
    pub fn buffer_specs(&self, cc: u32) -> Vec<BufferSpec> {
        self.buffers
            .iter()
            .map(|name| match name.strip_prefix("CUDA").and_then(|d| d.parse::<usize>().ok()) {
                Some(d) => BufferSpec::cuda(d, cc),
                None => BufferSpec::host(name),
            })
            .collect()
    }

    /// The scheduled graph as tensors the graph allocator can run on, with each node's and
    /// input's buffer; `buffers` size the tensors (see [`Trace::buffer_specs`]).
    ///
    /// What a trace does not say is rebuilt from ggml's rules. Sources are found by name: llama.cpp
    /// reuses names (per layer, and for every slice of a tensor), so a source is the latest
    /// tensor of that name defined before the node that no node has read yet, else the latest
    /// defined before it, else the first defined after it (the scheduler puts a split's input
    /// copies before the view nodes they copy), else a tensor with memory already (a weight, the
    /// KV cache) given the node's buffer. Views follow ggml.c: `VIEW`, `RESHAPE`, `PERMUTE`,
    /// `TRANSPOSE` view `src[0]`; `CPY` views `src[1]` unless it was allocated (then it is
    /// `ggml_cast`, whose `src[1]` is itself); `SET_ROWS` views its destination `src[2]`
    /// (ggml.c:4027-4032); any other node neither allocated nor reused in place is an in-place op
    /// (`ggml_*_inplace`: `ggml_view_tensor` of `src[0]`; the scheduler's `name (view)`
    /// dependencies are such `NONE` views). Strides are contiguous (the trace has none), except
    /// for the scheduler's copies of views (`ggml_dup_tensor_layout` keeps the view's strides):
    /// their strides are set to give the traced size (a copy of one row shows no stride, so there
    /// they stay contiguous). Flags come from the `@@A` lines; a node
    /// reused in place has none printed: it gets `FLAG_COMPUTE`, and `FLAG_OUTPUT` when the trace
    /// shows it is an output (read, yet its memory never freed nor passed on).
    pub fn scheduled_graph(&self, buffers: &[BufferSpec]) -> Result<TraceGraph, String> {
        let mut ctx = Ctx::new();
        let mut graph = Graph::new();
        // every tensor of each name, in creation order
        let mut by_name: HashMap<&str, Vec<TensorId>> = HashMap::new();
        let mut leaf_buffer = Vec::new();
        let mut node_buffer = Vec::new();
        let ty_of = |s: &str| GgmlType::from_name(s).ok_or_else(|| format!("unknown type {s:?}"));
        let op_of = |s: &str| op_from_desc(s).ok_or_else(|| format!("unknown op {s:?}"));
        for a in &self.inputs {
            let id = ctx.new_tensor_impl(ty_of(&a.ty)?, a.ne, None, 0);
            ctx.set_name(id, a.name.as_str());
            let t = ctx.t_mut(id);
            t.flags = a.flags;
            t.op = op_of(&a.op)?;
            by_name.entry(&a.name).or_default().push(id);
            graph.leafs.push(id);
            leaf_buffer.push(a.buffer);
        }
        // first every node's tensor, so that sources may refer forward
        for n in &self.nodes {
            let op = op_of(&n.op)?;
            // with pipeline parallelism the scheduler's input copies are leafs and nodes at once
            if op == Op::None && n.srcs.is_empty() && n.memory == NodeMemory::Elsewhere {
                let same = |id: &&TensorId| {
                    let t = ctx.t(**id);
                    t.ne == n.ne && t.ty.name().eq_ignore_ascii_case(&n.ty) && !graph.nodes.contains(id)
                };
                if let Some(&id) = by_name.get(n.name.as_str()).and_then(|ids| ids.iter().find(same)) {
                    graph.nodes.push(id);
                    node_buffer.push(n.buffer);
                    continue;
                }
            }
            let id = ctx.new_tensor_impl(ty_of(&n.ty)?, n.ne, None, 0);
            ctx.set_name(id, n.name.as_str());
            let t = ctx.t_mut(id);
            t.op = op;
            t.flags = match &n.memory {
                NodeMemory::Allocated(a) => a.flags,
                _ => FLAG_COMPUTE,
            };
            by_name.entry(&n.name).or_default().push(id);
            graph.nodes.push(id);
            node_buffer.push(n.buffer);
        }
        // then the sources, in graph order
        let (freed_after, passed_on) = self.freed_after(&ctx, &graph);
        // a node reused in place has no flags printed: it is an output (never freed, llama.cpp's
        // `ggml_set_output` in `llm_graph_result::set_outputs`, llama-graph.cpp:1396-1435) when
        // it has readers and its memory was neither freed nor passed on
        for (i, (n, &id)) in self.nodes.iter().zip(&graph.nodes).enumerate() {
            let read = self.nodes[i + 1..].iter().any(|m| m.srcs.contains(&n.name));
            if matches!(n.memory, NodeMemory::InPlace(_))
                && read
                && freed_after[id.index()].is_none()
                && !passed_on[id.index()]
            {
                ctx.t_mut(id).flags |= FLAG_OUTPUT;
            }
        }
        let first_node = TensorId::new(self.inputs.len());
        let mut consumed = vec![false; ctx.tensors.len()];
        let mut view_of: Vec<Option<TensorId>> = vec![None; ctx.tensors.len()];
        for (i, (n, &id)) in self.nodes.iter().zip(&graph.nodes).enumerate() {
            if ctx.t(id).flags & FLAG_INPUT != 0 && n.srcs.is_empty() {
                continue;
            }
            let mut src = [None; MAX_SRC];
            for (j, s) in n.srcs.iter().enumerate().take(MAX_SRC) {
                let ids = by_name.entry(s).or_default();
                // a tensor's memory is its base's; the node after which the base was freed
                let freed = |c: TensorId| {
                    let mut base = c;
                    while let Some(v) = view_of.get(base.index()).copied().flatten() {
                        base = v;
                    }
                    freed_after.get(base.index()).copied().flatten()
                };
                let before: Vec<TensorId> =
                    ids.iter().copied().filter(|&c| c < id && freed(c).is_none_or(|k| k >= i)).collect();
                let unread = |c: &&TensorId| !consumed[c.index()];
                // a tensor whose memory was freed right after this node: this node read it last
                let mut last_read: Vec<TensorId> = Vec::new();
                if before.len() > 1 {
                    for k in std::iter::once(i).chain(self.later_readers(i)) {
                        last_read = before.iter().copied().filter(|&c| freed(c) == Some(k)).collect();
                        if !last_read.is_empty() {
                            break;
                        }
                    }
                }
                let pick = if last_read.is_empty() {
                    // graph inputs are read in the order llama.cpp made them; nodes latest first
                    if before.iter().all(|&c| c < first_node) {
                        before.iter().find(unread)
                    } else {
                        before.iter().rev().find(unread)
                    }
                } else {
                    last_read.iter().rev().find(unread).or(last_read.last())
                };
                let pick = pick.or(before.last()).or(ids.iter().find(|&&c| c > id)).copied();
                let pick = pick.unwrap_or_else(|| {
                    let r = ctx.new_resident(s, GgmlType::F32, &[1], n.buffer);
                    ids.push(r);
                    consumed.push(false);
                    view_of.push(None);
                    r
                });
                consumed[pick.index()] = true;
                src[j] = Some(pick);
            }
            let op = ctx.t(id).op;
            view_of[id.index()] = match n.memory {
                NodeMemory::Allocated(_) | NodeMemory::InPlace(_) => None,
                // the view ops and the in-place ops view `src[0]`
                NodeMemory::Elsewhere => match op {
                    Op::Cpy => src[1],
                    Op::SetRows => src[2],
                    _ => src[0],
                },
            };
            if view_of[id.index()].is_none() && n.memory == NodeMemory::Elsewhere {
                return Err(format!("node {} {:?} has no memory and no source to view", n.index, n.name));
            }
            if op == Op::Cpy && matches!(n.memory, NodeMemory::Allocated(_)) {
                src[1] = Some(id);
            }
            ctx.t_mut(id).src = src;
        }
        // a view's `view_src` is its source's base
        for i in 0..ctx.tensors.len() {
            let mut base = view_of[i];
            let mut hops = 0;
            while let Some(b) = base {
                match view_of[b.index()] {
                    Some(next) if hops < ctx.tensors.len() => (base, hops) = (Some(next), hops + 1),
                    _ => break,
                }
            }
            ctx.tensors[i].view_src = base;
        }
        // the scheduler's copies of views keep the views' strides
        for (n, &id) in self.nodes.iter().zip(&graph.nodes) {
            if let NodeMemory::Allocated(a) = &n.memory {
                if copy_source(&n.name) != n.name {
                    fit_strides(&mut ctx, id, &buffers[a.buffer], a.size);
                }
            }
        }
        Ok(TraceGraph { ctx, graph, node_buffer, leaf_buffer })
    }
}

/// Sets the strides of `id`, a copy of a view, so that `buffer` asks `size` bytes for it
/// (aligned): the view is taken to be a slice of a wider tensor along one dimension, with the
/// strides above it following from that one.
fn fit_strides(ctx: &mut Ctx, id: TensorId, buffer: &BufferSpec, size: u64) {
    let aligned = |x: u64| x.div_ceil(buffer.alignment) * buffer.alignment;
    if aligned(buffer.alloc_size(ctx, id)) == size {
        return;
    }
    let t = *ctx.t(id);
    let pad = buffer.alloc_size(ctx, id) - t.nbytes();
    let ne: Vec<u64> = t.ne.iter().map(|&n| n.max(1) as u64).collect();
    let row = t.nb[1];
    for d0 in 1..4 {
        if ne[d0] <= 1 {
            continue;
        }
        // nbytes = row + Σ_{1≤d<d0} (ne[d]-1)·nb[d] + m·Σ_{d≥d0} (ne[d]-1)·Π_{d0≤e<d} ne[e]
        let fixed: u64 = (1..d0).map(|d| (ne[d] - 1) * t.nb[d]).sum::<u64>() + row.min(t.nbytes());
        let (mut per_m, mut span) = (0u64, 1u64);
        for &n in &ne[d0..4] {
            per_m += (n - 1) * span;
            span *= n;
        }
        let Some(room) = size.checked_sub(pad + fixed) else { continue };
        let m = room / per_m;
        let mut nb = t.nb;
        nb[d0] = m;
        for d in d0 + 1..4 {
            nb[d] = nb[d - 1] * ne[d - 1];
        }
        ctx.t_mut(id).nb = nb;
        if aligned(buffer.alloc_size(ctx, id)) == size {
            return;
        }
        ctx.t_mut(id).nb = t.nb;
    }
}

/// The tensor a scheduler copy `BACKEND#name#k` copies (`name`), or `s` itself.
pub fn copy_source(s: &str) -> &str {
    match (s.find('#'), s.rfind('#')) {
        (Some(a), Some(b)) if a < b && s[b + 1..].bytes().all(|c| c.is_ascii_digit()) => &s[a + 1..b],
        _ => s,
    }
}

/// The [`Op`] whose `ggml_op_desc` is `desc`.
pub fn op_from_desc(desc: &str) -> Option<Op> {
    let unary = [
        Unary::Neg,
        Unary::Relu,
        Unary::Gelu,
        Unary::Silu,
        Unary::Sigmoid,
        Unary::Softplus,
        Unary::Exp,
        Unary::Tanh,
    ];
    let glu = [Glu::Reglu, Glu::Geglu, Glu::Swiglu, Glu::SwigluOai, Glu::GegluErf, Glu::GegluQuick];
    let plain = [
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
    plain
        .into_iter()
        .chain(unary.into_iter().map(Op::Unary))
        .chain(glu.into_iter().map(Op::Glu))
        .find(|op| op.desc() == desc)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const SAMPLE: &str = "\
noise
@@R 4 2 2
@@B 0 CUDA0
@@B 1 CUDA_Host
@@A 1 0 0 2048 NONE i32 512 1 1 1 1|inp_tokens
@@A 0 0 0 4194304 GET_ROWS f32 2048 512 1 1 16|embd
@@N 0 0 GET_ROWS f32 2048 512 1 1|embd|token_embd.weight;inp_tokens
@@F 1 0 0 2048 NONE i32 512 1 1 1 1|inp_tokens
@@U 0 embd|norm
@@N 1 0 RMS_NORM f32 2048 512 1 1|norm|embd
@@N 2 0 RESHAPE f32 2048 1 512 1|norm (reshaped)|norm
@@N 3 0 NONE f32 2048 1 512 1|CUDA0#norm#0|CUDA1#x#0
@@M 0 4194304
@@M 1 2048
";

    #[test]
    fn reads_nodes_inputs_and_sizes() {
        let t = Trace::parse(SAMPLE).unwrap();
        assert_eq!((t.n_nodes, t.n_leafs), (4, 2));
        assert_eq!(t.buffers, ["CUDA0", "CUDA_Host"]);
        assert_eq!(t.inputs.len(), 1);
        assert_eq!(t.inputs[0].name, "inp_tokens");
        assert!(matches!(&t.nodes[0].memory, NodeMemory::Allocated(a) if a.size == 4_194_304));
        assert_eq!(t.nodes[1].memory, NodeMemory::InPlace("embd".into()));
        assert_eq!(t.nodes[2].memory, NodeMemory::Elsewhere);
        assert_eq!(t.nodes[0].srcs, ["token_embd.weight", "inp_tokens"]);
        assert_eq!(t.sizes, [4_194_304, 2048]);
        assert_eq!(t.events.len(), 8);
    }

    #[test]
    fn strips_scheduler_nodes_and_copies() {
        let t = Trace::parse(SAMPLE).unwrap();
        let n = t.unscheduled_nodes();
        assert_eq!(n.len(), 3);
        assert_eq!(copy_source("CUDA0#inp_pos#0"), "inp_pos");
        assert_eq!(copy_source("norm-0"), "norm-0");
    }

    #[test]
    fn rebuilds_views_and_residents() {
        let t = Trace::parse(SAMPLE).unwrap();
        let g = t.scheduled_graph(&t.buffer_specs(900)).unwrap();
        assert_eq!(g.graph.nodes.len(), 4);
        assert_eq!(g.leaf_buffer, [1]);
        let reshaped = g.ctx.t(g.graph.nodes[2]);
        assert_eq!(reshaped.view_src, Some(g.graph.nodes[1]));
        let weight = g.ctx.t(g.ctx.t(g.graph.nodes[0]).src[0].unwrap());
        assert_eq!(weight.backend, Some(0));
    }

    #[test]
    fn reads_every_reservation() {
        let two = format!("{SAMPLE}{SAMPLE}");
        let all = Trace::parse_all(&two).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1], Trace::parse(SAMPLE).unwrap());
    }

    #[test]
    fn rejects_a_bad_line() {
        assert_eq!(Trace::parse("x"), Err(TraceError::NoReservation));
        assert!(matches!(Trace::parse("@@R 1 1 1\n@@A 0 0|x"), Err(TraceError::BadLine { line: 2, .. })));
    }

    #[test]
    fn every_desc_reads_back() {
        for d in ["ADD", "SWIGLU_OAI", "SILU", "CONCAT", "FLASH_ATTN_EXT", "GATED_DELTA_NET", "NONE"] {
            assert_eq!(op_from_desc(d).map(Op::desc), Some(d));
        }
        assert_eq!(op_from_desc("NOPE"), None);
    }

    /// Every traced row of /tmp/tr/state/logs (fixtures/ground-truth/traces/*.tar.xz unpacked).
    pub(crate) fn traced_logs() -> Vec<(String, String)> {
        let dir = std::env::var("SPLITPLAN_TRACE_LOGS").unwrap_or_else(|_| "/tmp/tr/state/logs".to_owned());
        let dir = std::path::Path::new(&dir);
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).expect("unpack fixtures/ground-truth/traces/*.tar.xz into /tmp/tr") {
            let p = e.unwrap().path();
            let row = p.file_stem().unwrap().to_string_lossy().into_owned();
            out.push((row, std::fs::read_to_string(&p).unwrap()));
        }
        out.sort();
        out
    }

    #[test]
    #[ignore = "reads the unpacked traces in /tmp/tr"]
    fn reads_every_traced_row() {
        for (row, text) in traced_logs() {
            let t = Trace::parse(&text).unwrap_or_else(|e| panic!("{row}: {e}"));
            assert_eq!(t.nodes.len(), t.n_nodes, "{row}");
            t.scheduled_graph(&t.buffer_specs(900)).unwrap_or_else(|e| panic!("{row}: {e}"));
        }
    }
}
