//! A placement as llama-server placement flags: `-ngl`, integer `-ts` layer counts, an ordered
//! `-ot` list in the user's compact style, and `--fit off`.
//!
//! `-ngl` and `-ts` put each layer's dense part and KV cache (llama-model.cpp:1502-1617). The `-ot`
//! list only moves routed-expert tensors, and llama.cpp applies the first pattern found in a
//! tensor's name (`std::regex_search`, llama-model-loader.cpp:1233-1260), so the order matters:
//!
//! 1. experts that go to the CPU from a layer whose other experts stay on its GPU
//!    (`blk\.(2[5-9])\.ffn_down_exps=CPU`);
//! 2. experts that go to another GPU than their layer's (`blk\.18\.ffn_down_exps=CUDA1`);
//! 3. the layers whose experts stay (at least partly) on their own GPU, one entry per GPU
//!    (`blk\.([0-9]|1[0-4])\.=CUDA0`): this repeats what `-ts` says for their dense parts and
//!    shields their experts from the last entry;
//! 4. `exps=CPU`: every other routed expert to system RAM.
//!
//! Entries 1, 3 and 4 appear only when some expert goes to the CPU; without that, entry 2 alone
//! describes the experts that leave their layer's GPU.

use crate::model::ModelDescription;
use crate::plan::{Device, Placement, expert_parts};
use crate::settings::{OverrideTarget, TensorOverride};

use super::ranges::block_prefix;

/// The `-ot` catch-all for routed experts: `exps` is found in `ffn_{gate,up,down,gate_up}_exps`
/// and `_chexps`, and in no other tensor name of llama.cpp's (llama-arch.cpp:444-737).
pub const EXPS_TO_CPU: &str = "exps";

/// The flags of a placement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacementFlags {
    /// `-ngl`: layer slots on GPUs (blocks and the output layer).
    pub n_gpu_layers: usize,
    /// `-ts` as integer layer counts, one per GPU; empty with one GPU.
    pub tensor_split: Vec<usize>,
    /// `-ot` entries, in order.
    pub overrides: Vec<TensorOverride>,
    /// With one GPU among several: `-sm none -mg N` keeps the others out of the model's devices.
    pub main_gpu: Option<usize>,
}

impl PlacementFlags {
    /// The llama-server arguments: `-ngl N [-ts a,b,…] [-sm none -mg N] [-ot …] --fit off`.
    pub fn args(&self) -> Vec<String> {
        let mut a = vec!["-ngl".to_owned(), self.n_gpu_layers.to_string()];
        if !self.tensor_split.is_empty() {
            let ts: Vec<String> = self.tensor_split.iter().map(usize::to_string).collect();
            a.extend(["-ts".to_owned(), ts.join(",")]);
        }
        if let Some(mg) = self.main_gpu {
            a.extend(["-sm".to_owned(), "none".to_owned(), "-mg".to_owned(), mg.to_string()]);
        }
        if !self.overrides.is_empty() {
            a.extend(["-ot".to_owned(), self.ot_value()]);
        }
        a.extend(["--fit".to_owned(), "off".to_owned()]);
        a
    }

    /// The `-ot` value: the entries joined by commas (llama.cpp splits on `,`, common/arg.cpp:252-287).
    pub fn ot_value(&self) -> String {
        self.overrides.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
    }
}

/// The placement flags of `p` for `model`. `p` should pass [`Placement::check`].
pub fn placement_flags(model: &ModelDescription, p: &Placement) -> PlacementFlags {
    let used = p.used_gpus();
    // One GPU of several: `-sm none -mg` makes it the only model device (src/llama.cpp:288-300),
    // so -ts is moot and the other GPUs get no compute buffers.
    let single = if p.gpus.len() > 1 && used.len() == 1 { used.first().copied() } else { None };
    let tensor_split = if p.gpus.len() > 1 && single.is_none() { p.tensor_split() } else { Vec::new() };
    PlacementFlags {
        n_gpu_layers: p.n_gpu_layers(),
        tensor_split,
        overrides: overrides(model, p),
        main_gpu: single,
    }
}

/// The `-ot` entries of `p`, in the order the module documentation gives.
pub fn overrides(model: &ModelDescription, p: &Placement) -> Vec<TensorOverride> {
    // Per block: (expert bases on the CPU, (GPU, bases) elsewhere, anchored on its own GPU).
    struct Block {
        cpu: Vec<String>,
        foreign: Vec<(usize, Vec<String>)>,
        own: bool,
    }
    let mut blocks: Vec<(u32, Block)> = Vec::new();
    let mut any_cpu = false;
    for (il, layer) in p.layers.iter().enumerate() {
        let Ok(il32) = u32::try_from(il) else { continue };
        let parts = expert_parts(model, il);
        if parts.is_empty() {
            continue;
        }
        let mut b = Block { cpu: Vec::new(), foreign: Vec::new(), own: false };
        for part in &parts {
            let d = layer.experts.get(part.part);
            match d {
                Device::Cpu => b.cpu.push(part.base.clone()),
                _ if d == layer.dense => b.own = true,
                Device::Gpu(g) => match b.foreign.iter_mut().find(|(h, _)| *h == g) {
                    Some((_, bases)) => bases.push(part.base.clone()),
                    None => b.foreign.push((g, vec![part.base.clone()])),
                },
            }
        }
        if layer.dense == Device::Cpu {
            // A CPU layer's experts default to the CPU; only GPU experts need entries.
            b.cpu.clear();
            b.own = false;
        }
        any_cpu |= !b.cpu.is_empty();
        blocks.push((il32, b));
    }

    let mut out: Vec<TensorOverride> = Vec::new();
    let mut push = |layers: Vec<u32>, tail: String, target: OverrideTarget| {
        out.push(TensorOverride { pattern: format!("{}{tail}", block_prefix(&layers)), target });
    };

    if any_cpu {
        // 1. CPU exceptions in layers anchored on their own GPU, grouped by the same set of bases.
        for (bases, layers) in group(
            blocks.iter().filter(|(_, b)| b.own && !b.cpu.is_empty()).map(|(il, b)| (b.cpu.clone(), *il)),
        ) {
            push(layers, bases_pattern(&bases), OverrideTarget::Cpu);
        }
    }
    // 2. Experts on another GPU than their layer's.
    let foreign =
        blocks.iter().flat_map(|(il, b)| b.foreign.iter().map(move |(g, bases)| ((*g, bases.clone()), *il)));
    for ((g, bases), layers) in group(foreign) {
        push(layers, bases_pattern(&bases), OverrideTarget::Device(p.device_name(Device::Gpu(g))));
    }
    if any_cpu {
        // 3. Anchored layers, per GPU in device order.
        for g in 0..p.gpus.len() {
            let layers: Vec<u32> = blocks
                .iter()
                .filter(|(il, b)| {
                    b.own && p.layers.get(*il as usize).is_some_and(|l| l.dense == Device::Gpu(g))
                })
                .map(|(il, _)| *il)
                .collect();
            if !layers.is_empty() {
                push(layers, String::new(), OverrideTarget::Device(p.device_name(Device::Gpu(g))));
            }
        }
        // 4. Everything else.
        out.push(TensorOverride { pattern: EXPS_TO_CPU.to_owned(), target: OverrideTarget::Cpu });
    }
    out
}

/// Groups `(key, layer)` pairs by key, keys in order of first appearance, layers in order.
fn group<K: PartialEq>(items: impl Iterator<Item = (K, u32)>) -> Vec<(K, Vec<u32>)> {
    let mut groups: Vec<(K, Vec<u32>)> = Vec::new();
    for (key, il) in items {
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, layers)) => layers.push(il),
            None => groups.push((key, vec![il])),
        }
    }
    groups
}

/// `ffn_down_exps`, or `ffn_(down|gate)_exps` for several bases sharing `ffn_` and `_exps`, or
/// `(ffn_down_exps|ffn_gate_chexps)` when they share less.
fn bases_pattern(bases: &[String]) -> String {
    match bases {
        [] => String::new(),
        [one] => one.clone(),
        _ => {
            let mids: Option<Vec<&str>> =
                bases.iter().map(|b| b.strip_prefix("ffn_").and_then(|m| m.strip_suffix("_exps"))).collect();
            match mids {
                Some(m) => format!("ffn_({})_exps", m.join("|")),
                None => format!("({})", bases.join("|")),
            }
        }
    }
}
