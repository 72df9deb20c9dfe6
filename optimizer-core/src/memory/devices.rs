//! llama.cpp's model devices and its layer → device split: which GPUs the model uses
//! (src/llama.cpp:158-312), how many layer slots are offloaded, and which device each block and the
//! output layer go to (llama-model.cpp:1502-1617).

use super::error::MemoryError;
use super::{GpuAtLoad, Location, ResolvedPlacement};
use crate::model::ModelDescription;
use crate::settings::{DeviceSelection, GpuLayers, ServerSettings, SplitMode};

/// The model devices: every GPU, or the `-dev` list, narrowed to `devices[main_gpu]` by `-sm none`.
/// Indices into `gpus`.
pub(crate) fn model_devices(
    settings: &ServerSettings,
    gpus: &[GpuAtLoad],
) -> Result<Vec<usize>, MemoryError> {
    match settings.split_mode {
        SplitMode::Layer | SplitMode::None => {}
        // Refused by ServerSettings::check; a hand-built ServerSettings may still carry them.
        SplitMode::Row | SplitMode::Tensor => {
            return Err(MemoryError::UnsupportedSplitMode { mode: settings.split_mode.name() });
        }
    }
    let mut devices: Vec<usize> = match &settings.devices {
        DeviceSelection::Default => (0..gpus.len()).collect(),
        DeviceSelection::None => Vec::new(),
        // common/arg.cpp:1122-1142: names as given, in the given order.
        DeviceSelection::List(names) => names
            .iter()
            .map(|name| {
                gpus.iter().position(|g| g.name == *name).ok_or_else(|| MemoryError::UnknownDevice {
                    name: name.clone(),
                    available: gpus.iter().map(|g| g.name.clone()).collect(),
                })
            })
            .collect::<Result<_, _>>()?,
    };
    // src/llama.cpp:288-300
    if settings.split_mode == SplitMode::None && !devices.is_empty() {
        if settings.main_gpu < 0 {
            devices.clear();
        } else {
            let main = usize::try_from(settings.main_gpu).unwrap_or(usize::MAX);
            let Some(&dev) = devices.get(main) else {
                return Err(MemoryError::MainGpuOutOfRange {
                    main_gpu: settings.main_gpu,
                    count: devices.len(),
                });
            };
            devices = vec![dev];
        }
    }
    Ok(devices)
}

/// `n_gpu_layers()`: `-ngl auto` and `-ngl all` offload all `n_layer_all + 1` slots
/// (llama-model.cpp:2008-2011; common/arg.cpp: auto = -1, all = -2).
pub(crate) fn n_gpu_layers(settings: &ServerSettings, n_layer_all: usize) -> u32 {
    let all = u32::try_from(n_layer_all + 1).unwrap_or(u32::MAX);
    match settings.n_gpu_layers {
        GpuLayers::Auto | GpuLayers::All => all,
        GpuLayers::Count(n) => n,
    }
}

/// The cumulative split points, in float32 like llama.cpp: `-ts` as given, or each device's free
/// memory when `-ts` is unset or all zero (llama-model.cpp:1559-1589).
pub(crate) fn split_points(
    settings: &ServerSettings,
    gpus: &[GpuAtLoad],
    devices: &[usize],
) -> Result<Vec<f32>, MemoryError> {
    let given: Vec<f32> =
        (0..devices.len()).map(|i| settings.tensor_split.get(i).copied().unwrap_or(0.0)).collect();
    #[allow(clippy::cast_precision_loss, clippy::float_cmp)]
    // float32 on purpose: llama.cpp's `float splits[i] = free`
    let mut splits: Vec<f32> = if given.iter().all(|&x| x == 0.0) {
        devices.iter().map(|&d| gpus.get(d).map_or(0.0, |g| g.free.get() as f32)).collect()
    } else {
        given
    };
    let mut sum = 0.0_f32;
    for s in &mut splits {
        sum += *s;
        *s = sum;
    }
    if !devices.is_empty() && sum <= 0.0 {
        return Err(MemoryError::NoFreeMemory);
    }
    for s in &mut splits {
        *s /= sum;
    }
    Ok(splits)
}

/// The placement of every block and of the output layer; tensors come later.
pub(crate) fn place_layers(
    model: &ModelDescription,
    settings: &ServerSettings,
    gpus: &[GpuAtLoad],
) -> Result<ResolvedPlacement, MemoryError> {
    let devices = model_devices(settings, gpus)?;
    let split = split_points(settings, gpus, &devices)?;
    let n_layer_all = model.n_layer_all;
    let ngl = n_gpu_layers(settings, n_layer_all);
    let slots = n_layer_all + 1;
    let ngl_slots = usize::try_from(ngl).unwrap_or(usize::MAX);
    // llama-model.cpp:1591-1592
    let i_gpu_start = slots.saturating_sub(ngl_slots);
    let act_gpu_layers = if devices.is_empty() { 0 } else { ngl_slots.min(slots) };
    // llama-model.cpp:1593-1604
    let layer = |il: usize| -> Location {
        if il < i_gpu_start || il - i_gpu_start >= act_gpu_layers {
            return Location::Host;
        }
        #[allow(clippy::cast_precision_loss)] // layer counts are far below 2^24
        let x = (il - i_gpu_start) as f32 / act_gpu_layers as f32;
        // std::upper_bound: the first split point greater than x.
        let d = split.partition_point(|&s| s <= x).min(devices.len() - 1);
        Location::Gpu(devices[d])
    };
    let layers = (0..n_layer_all).map(layer).collect();
    let output = layer(n_layer_all);
    Ok(ResolvedPlacement {
        devices,
        n_gpu_layers: ngl,
        split,
        layers,
        output,
        tensors: Vec::new(),
        skipped: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing;
    use crate::units::Bytes;

    fn gpus() -> Vec<GpuAtLoad> {
        vec![
            GpuAtLoad::new("CUDA0", Bytes::from_mib(23_557)),
            GpuAtLoad::new("CUDA1", Bytes::from_mib(14_477)),
        ]
    }

    fn place(layers: u32, args: &[&str], gpus: &[GpuAtLoad]) -> ResolvedPlacement {
        let m = ModelDescription::from_gguf(&testing::qwen3_8b(layers).build()).unwrap();
        place_layers(&m, &ServerSettings::from_args(args).unwrap(), gpus).unwrap()
    }

    fn count(p: &ResolvedPlacement, loc: Location) -> usize {
        p.layers.iter().filter(|&&l| l == loc).count()
    }

    #[test]
    fn default_split_is_by_free_memory_with_the_output_layer_counted() {
        // 37 slots; CUDA0 holds x = il/37 < 23557/38034: il 0..=22.
        let p = place(36, &[], &gpus());
        assert_eq!(count(&p, Location::Gpu(0)), 23);
        assert_eq!(count(&p, Location::Gpu(1)), 13);
        assert_eq!(p.output, Location::Gpu(1));
        assert_eq!(p.offloaded_layers(), 37);
    }

    #[test]
    fn ngl_offloads_the_last_layers() {
        let p = place(36, &["-ngl", "20"], &gpus()[..1]);
        assert_eq!(count(&p, Location::Host), 17);
        assert!(p.layers[..17].iter().all(|&l| l == Location::Host));
        assert_eq!(p.output, Location::Gpu(0));
        // -ngl 1 offloads only the output layer.
        let p = place(36, &["-ngl", "1"], &gpus());
        assert_eq!(count(&p, Location::Host), 36);
        assert_eq!(p.output, Location::Gpu(0));
        let p = place(36, &["-ngl", "0"], &gpus());
        assert_eq!((count(&p, Location::Host), p.output), (36, Location::Host));
    }

    #[test]
    fn tensor_split_counts_are_reproduced() {
        // -ts 20,29 over 49 slots: exactly 20 on CUDA0, 29 on CUDA1 (the output layer among them).
        let p = place(48, &["-ts", "20,29"], &gpus());
        assert_eq!((count(&p, Location::Gpu(0)), count(&p, Location::Gpu(1))), (20, 28));
        assert_eq!(p.output, Location::Gpu(1));
        // An exact integer split point sends that index to the next device.
        let p = place(3, &["-ts", "1,1"], &gpus());
        assert_eq!(p.layers, [Location::Gpu(0), Location::Gpu(0), Location::Gpu(1)]);
    }

    #[test]
    fn split_mode_none_keeps_the_main_gpu() {
        let p = place(4, &["-sm", "none", "-mg", "1"], &gpus());
        assert_eq!(p.devices, [1]);
        assert!(p.layers.iter().all(|&l| l == Location::Gpu(1)));
        let p = place(4, &["-sm", "none", "-mg", "-1"], &gpus());
        assert!(p.devices.is_empty());
        assert_eq!(p.offloaded_layers(), 0);
    }

    #[test]
    fn device_list_is_taken_in_the_given_order() {
        let p = place(4, &["-dev", "CUDA1,CUDA0", "-ts", "1,4"], &gpus());
        assert_eq!(p.devices, [1, 0]);
        assert_eq!(p.layers[0], Location::Gpu(1));
        assert_eq!(p.output, Location::Gpu(0));
        let p = place(4, &["-dev", "none"], &gpus());
        assert_eq!(p.offloaded_layers(), 0);
        // No GPUs at all: everything on the host.
        let p = place(4, &[], &[]);
        assert_eq!(p.offloaded_layers(), 0);
    }

    #[test]
    fn bad_device_settings_are_errors() {
        let m = ModelDescription::from_gguf(&testing::qwen3_8b(2).build()).unwrap();
        let s = ServerSettings::from_args(&["-dev", "CUDA7"]).unwrap();
        let e = place_layers(&m, &s, &gpus()).unwrap_err();
        assert_eq!(e.to_string(), "invalid device 'CUDA7' in --device, expected one of CUDA0, CUDA1");
        let s = ServerSettings::from_args(&["-sm", "none", "-mg", "2"]).unwrap();
        let e = place_layers(&m, &s, &gpus()).unwrap_err();
        assert_eq!(e.to_string(), "invalid --main-gpu 2, expected 0 to 1 with --split-mode none");
        let full = [GpuAtLoad::new("CUDA0", Bytes::ZERO)];
        let e = place_layers(&m, &ServerSettings::default(), &full).unwrap_err();
        assert!(matches!(e, MemoryError::NoFreeMemory));
        let s = ServerSettings { split_mode: SplitMode::Row, ..ServerSettings::default() };
        let e = place_layers(&m, &s, &gpus()).unwrap_err();
        assert_eq!(e.to_string(), "--split-mode row is not modelled, expected layer or none");
    }
}
