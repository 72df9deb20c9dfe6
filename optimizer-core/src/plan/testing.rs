//! Test helpers: an independent reading of llama.cpp's placement rules, to check what the
//! renderers emit and to resolve measured configurations (hand splits, `--fit` choices) for the
//! speed model.

use regex::Regex;

use super::objective::Resolved;
use super::placement::Device;
use crate::model::{LayerClass, LayerSlot, ModelDescription};
use crate::settings::{GpuLayers, OverrideTarget, ServerSettings, SplitMode};

/// Where llama.cpp puts each tensor given these settings on GPUs with `free` MiB (the default
/// `-ts` weights): `dev_layer` from `-ngl`/`-ts` in float32 (llama-model.cpp:1559-1604), then the
/// first `-ot` pattern found in the name (llama-model-loader.cpp:1233-1260), else the tensor's
/// layer class. Per-layer duplicated tensors (one copy per buffer) come out as `None`, as do the
/// NextN tensors llama.cpp skips.
pub(crate) fn resolve(model: &ModelDescription, s: &ServerSettings, free: &[f32]) -> Resolved {
    let n_gpus = free.len();
    let l = model.n_layer_all;
    let devices: Vec<usize> = if s.split_mode == SplitMode::None {
        vec![usize::try_from(s.main_gpu).unwrap()]
    } else {
        (0..n_gpus).collect()
    };
    let ngl = match s.n_gpu_layers {
        GpuLayers::Count(n) => n as usize,
        _ => l + 1,
    };
    let weights: Vec<f32> = if devices.len() == 1 {
        vec![1.0]
    } else if s.tensor_split.is_empty() {
        free.to_vec()
    } else {
        (0..devices.len()).map(|d| s.tensor_split.get(d).copied().unwrap_or(0.0)).collect()
    };
    let sum: f32 = weights.iter().sum();
    let mut cum = Vec::new();
    let mut acc = 0.0f32;
    for w in &weights {
        acc += w;
        cum.push(acc / sum);
    }
    let start = (l + 1).saturating_sub(ngl);
    let act = ngl.min(l + 1);
    let dev = |il: usize| -> Device {
        if il < start || il - start >= act {
            return Device::Cpu;
        }
        let x = (il - start) as f32 / act as f32;
        let d = cum.iter().position(|&c| c > x).unwrap_or(cum.len() - 1);
        Device::Gpu(devices[d])
    };
    let patterns: Vec<(Regex, Device)> = s
        .overrides
        .iter()
        .map(|o| {
            let target = match &o.target {
                OverrideTarget::Cpu => Device::Cpu,
                OverrideTarget::Device(name) => Device::Gpu(name.trim_start_matches("CUDA").parse().unwrap()),
            };
            (Regex::new(&o.pattern).unwrap(), target)
        })
        .collect();
    let mtp = s.loads_mtp_layers();
    let tensors = model
        .tensors
        .iter()
        .map(|t| {
            if !t.is_loaded(mtp) {
                return None;
            }
            if let Some((_, d)) = patterns.iter().find(|(re, _)| re.is_match(&t.name)) {
                return Some(*d);
            }
            match (t.class, t.slot) {
                (_, LayerSlot::EveryLayer) => None,
                (LayerClass::Input, _) | (_, LayerSlot::Input) => Some(Device::Cpu),
                (_, LayerSlot::Output) => Some(dev(l)),
                (_, LayerSlot::Layer(il)) => Some(dev(il)),
            }
        })
        .collect();
    Resolved {
        tensors,
        layers: (0..l).map(dev).collect(),
        output: dev(l),
        first_gpu: (0..=l).map(dev).find_map(Device::gpu).or(devices.first().copied()),
    }
}
