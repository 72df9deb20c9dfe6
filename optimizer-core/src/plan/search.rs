//! The placement search: pure functions over byte costs, no I/O and no memory model calls.
//!
//! A placement costs, on each GPU, the dense parts of its layers with their KV cache or recurrent
//! state, the output layer on the last GPU, and the routed-expert tensors placed there: sums of
//! per-item bytes that the planner measures once ([`Costs`]). For one dense split (how many layers
//! each GPU gets, `-ts`), [`fill`] places experts greedily in the order that buys the most decode
//! speed per byte without adding graph splits:
//!
//! 1. whole expert layers on their own GPU (no split at all);
//! 2. the longest prefix `up`, `gate`, `down` of a further layer on its own GPU (llama.cpp runs them
//!    in that order, so a prefix keeps the layer at two splits, like a layer with its experts in
//!    RAM; the rest spills down first, as llama.cpp's fit spills it);
//! 3. the experts still in RAM of any layer onto any GPU with room, a whole suffix at a time
//!    (still two splits), then prefixes (one more split, worth it for the RAM bandwidth saved).
//!
//! [`search`] tries every dense split of two GPUs (a hill climb over the boundaries for more),
//! fills each, and keeps the fastest by the speed model. The planner then checks the winner with the
//! full memory prediction of its flags and tightens it where the two disagree.

use crate::model::{ExpertPart, ModelDescription};

use super::placement::{Device, ExpertPlacement, LayerPlacement, Placement, expert_parts, spill_rank};

/// One routed-expert projection of a layer and its size on a GPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpertCost {
    /// Which projection.
    pub part: ExpertPart,
    /// Bytes on a GPU (weights, biases and scales, padded as a CUDA buffer holds them).
    pub bytes: i64,
}

/// What each placeable item costs on a GPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Costs {
    /// Per block: its dense tensors on a GPU plus its KV cache or recurrent state.
    pub dense: Vec<i64>,
    /// Per block: its routed-expert projections in llama.cpp's graph order (up, gate, down), the
    /// ones a pin fixed left out.
    pub experts: Vec<Vec<ExpertCost>>,
    /// The output layer on a GPU (and a tied embedding's second copy).
    pub output: i64,
    /// Fixed bytes per GPU whatever the split: compute buffer, runtime overhead, pinned tensors.
    pub fixed: Vec<i64>,
}

impl Costs {
    /// Expert projections of `model` in graph order, without sizes: the skeleton [`Costs`] fills.
    pub fn expert_order(model: &ModelDescription, il: usize) -> Vec<ExpertPart> {
        let mut parts: Vec<ExpertPart> = expert_parts(model, il).into_iter().map(|p| p.part).collect();
        parts.sort_by_key(|p| std::cmp::Reverse(spill_rank(*p)));
        parts
    }
}

/// The dense split of a candidate: layer slots per GPU (the output layer counted on the last GPU
/// that has layers), after `cpu_prefix` layers kept on the CPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// Blocks at the start whose dense parts stay on the CPU (`-ngl` below `n_layer_all + 1`).
    pub cpu_prefix: usize,
    /// Layer slots per GPU in device order.
    pub counts: Vec<usize>,
}

impl Split {
    /// The device of every slot (blocks, then the output layer).
    pub fn slots(&self, n_layer_all: usize) -> Vec<Device> {
        let mut out = vec![Device::Cpu; self.cpu_prefix.min(n_layer_all + 1)];
        for (g, &c) in self.counts.iter().enumerate() {
            out.extend(std::iter::repeat_n(Device::Gpu(g), c));
        }
        out.resize(n_layer_all + 1, Device::Cpu);
        out
    }
}

/// The byte budget left on each GPU once the dense parts of `split` are placed; `None` when the
/// dense parts alone do not fit.
pub fn capacities(costs: &Costs, budgets: &[i64], split: &Split) -> Option<Vec<i64>> {
    let n = costs.dense.len();
    let slots = split.slots(n);
    let mut cap: Vec<i64> = budgets.iter().zip(&costs.fixed).map(|(b, f)| b - f).collect();
    for (il, d) in slots.iter().enumerate() {
        if let Device::Gpu(g) = d {
            let cost = if il < n { costs.dense[il] } else { costs.output };
            cap[*g] -= cost;
        }
    }
    cap.iter().all(|&c| c >= 0).then_some(cap)
}

/// Places every expert for one dense split (see the module documentation). `None` when the dense
/// parts do not fit.
// Layers, slots, costs and capacities are parallel arrays indexed by layer and GPU.
#[allow(clippy::needless_range_loop)]
pub fn fill(costs: &Costs, budgets: &[i64], split: &Split, gpus: &[String]) -> Option<Placement> {
    let mut cap = capacities(costs, budgets, split)?;
    let n = costs.dense.len();
    let slots = split.slots(n);
    let mut layers: Vec<LayerPlacement> = (0..n)
        .map(|il| LayerPlacement { dense: slots[il], experts: ExpertPlacement::all(Device::Cpu) })
        .collect();
    let n_gpus = cap.len();
    let full = |il: usize| costs.experts[il].iter().map(|e| e.bytes).sum::<i64>();
    let own = |il: usize| slots[il].gpu();

    // 1. Whole layers on their own GPU, first fit in slice order.
    for il in 0..n {
        let Some(g) = own(il) else { continue };
        if costs.experts[il].is_empty() {
            continue;
        }
        let need = full(il);
        if need <= cap[g] {
            cap[g] -= need;
            for e in &costs.experts[il] {
                layers[il].experts.set(e.part, Device::Gpu(g));
            }
        }
    }
    // 2. Prefixes on their own GPU.
    for il in 0..n {
        let Some(g) = own(il) else { continue };
        for e in &costs.experts[il] {
            if layers[il].experts.get(e.part) != Device::Cpu {
                continue;
            }
            if e.bytes > cap[g] {
                break;
            }
            cap[g] -= e.bytes;
            layers[il].experts.set(e.part, Device::Gpu(g));
        }
    }
    // 3. What is still in RAM: whole suffixes onto any GPU with room (layers nearest each GPU's
    // slice first), then prefixes.
    let order = |g: usize| -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        let centre = slots.iter().position(|d| *d == Device::Gpu(g)).unwrap_or(0);
        v.sort_by_key(|&il| il.abs_diff(centre));
        v
    };
    for g in 0..n_gpus {
        for il in order(g) {
            let cpu: Vec<&ExpertCost> =
                costs.experts[il].iter().filter(|e| layers[il].experts.get(e.part) == Device::Cpu).collect();
            if cpu.is_empty() {
                continue;
            }
            // A suffix: every projection in RAM comes after the ones on GPUs.
            let first_cpu = costs.experts[il]
                .iter()
                .position(|e| layers[il].experts.get(e.part) == Device::Cpu)
                .unwrap_or(0);
            let is_suffix =
                costs.experts[il][first_cpu..].iter().all(|e| layers[il].experts.get(e.part) == Device::Cpu);
            let need: i64 = cpu.iter().map(|e| e.bytes).sum();
            if is_suffix && need <= cap[g] {
                cap[g] -= need;
                for e in cpu {
                    layers[il].experts.set(e.part, Device::Gpu(g));
                }
            }
        }
    }
    for g in 0..n_gpus {
        for il in order(g) {
            for e in &costs.experts[il] {
                if layers[il].experts.get(e.part) != Device::Cpu {
                    continue;
                }
                if e.bytes > cap[g] {
                    break;
                }
                cap[g] -= e.bytes;
                layers[il].experts.set(e.part, Device::Gpu(g));
            }
        }
    }
    Some(Placement { gpus: gpus.to_vec(), layers, output: slots[n] })
}

/// Dense splits to try over the GPUs `use_gpus` (device indices, in order) after `cpu_prefix` CPU
/// layers: every boundary for two GPUs; for more, splits proportional to the budgets and their
/// neighbours one boundary step away.
pub fn candidate_splits(
    n_layer_all: usize,
    n_gpus: usize,
    use_gpus: &[usize],
    cpu_prefix: usize,
    budgets: &[i64],
) -> Vec<Split> {
    let slots = n_layer_all + 1 - cpu_prefix.min(n_layer_all + 1);
    let mk = |on: &[usize]| {
        let mut counts = vec![0; n_gpus];
        for (k, &g) in use_gpus.iter().enumerate() {
            counts[g] = on[k];
        }
        Split { cpu_prefix, counts }
    };
    match use_gpus.len() {
        0 => vec![Split { cpu_prefix: n_layer_all + 1, counts: vec![0; n_gpus] }],
        1 => vec![mk(&[slots])],
        2 => (1..slots).map(|b| mk(&[b, slots - b])).collect(),
        k => {
            // Proportional to the budgets, then each boundary moved by up to three layers.
            let total: i64 = use_gpus.iter().map(|&g| budgets[g].max(1)).sum();
            let mut base: Vec<usize> = use_gpus
                .iter()
                .map(|&g| {
                    usize::try_from(budgets[g].max(1) * i64::try_from(slots).unwrap_or(0) / total)
                        .unwrap_or(0)
                })
                .collect();
            let assigned: usize = base.iter().sum();
            base[k - 1] += slots.saturating_sub(assigned);
            let mut out = vec![mk(&base)];
            for b in 0..k - 1 {
                for delta in [-3i64, -2, -1, 1, 2, 3] {
                    let mut c: Vec<i64> = base.iter().map(|&x| i64::try_from(x).unwrap_or(0)).collect();
                    c[b] += delta;
                    c[b + 1] -= delta;
                    if c.iter().all(|&x| x >= 1) {
                        let on: Vec<usize> = c.iter().map(|&x| usize::try_from(x).unwrap_or(0)).collect();
                        out.push(mk(&on));
                    }
                }
            }
            out
        }
    }
}

/// GPU bytes a placement puts on each GPU under `costs` (dense parts, output layer, experts and the
/// fixed bytes).
pub fn gpu_bytes(costs: &Costs, p: &Placement, n_gpus: usize) -> Vec<i64> {
    let mut used = costs.fixed.clone();
    used.resize(n_gpus, 0);
    for (il, l) in p.layers.iter().enumerate() {
        if let Device::Gpu(g) = l.dense {
            used[g] += costs.dense[il];
        }
        for e in &costs.experts[il] {
            if let Device::Gpu(g) = l.experts.get(e.part) {
                used[g] += e.bytes;
            }
        }
    }
    if let Device::Gpu(g) = p.output {
        used[g] += costs.output;
    }
    used
}
