//! Reading this machine: its GPUs through NVML (`libnvidia-ml.so`, loaded at run time, so a
//! machine without NVIDIA's driver just has no NVML) and its RAM from `/proc/meminfo`. What is read
//! becomes core types here; putting the GPUs in CUDA's order is core's pure `cuda_order`.

use anyhow::{Context as _, Result};
use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::Clock;
use optimizer_core::plan::DetectedGpu;
use optimizer_core::units::Bytes;

/// Every GPU NVML sees, in its order (PCI bus order).
pub fn read_nvml() -> Result<Vec<DetectedGpu>> {
    let nvml =
        Nvml::init().context("NVML is not available (no NVIDIA driver, or libnvidia-ml.so not found)")?;
    let count = nvml.device_count().context("NVML could not count the GPUs")?;
    (0..count)
        .map(|i| {
            let d = nvml.device_by_index(i).with_context(|| format!("NVML could not open GPU {i}"))?;
            let memory = d.memory_info().with_context(|| format!("NVML could not read GPU {i}'s memory"))?;
            Ok(DetectedGpu {
                name: d.name().unwrap_or_else(|_| format!("GPU {i}")),
                total: Bytes::new(memory.total),
                free: Bytes::new(memory.free),
                pci_bus_id: d.pci_info().map(|p| p.bus_id).unwrap_or_default(),
                uuid: d.uuid().unwrap_or_default(),
                cores: d.num_cores().ok(),
                max_sm_clock_mhz: d.max_clock_info(Clock::SM).ok(),
                compute_capability: d.cuda_compute_capability().ok().and_then(|cc| {
                    // ggml's encoding (ggml-cuda.cu:344).
                    u32::try_from(100 * cc.major + 10 * cc.minor).ok().filter(|&cc| cc > 0)
                }),
            })
        })
        .collect()
}

/// This machine's RAM (`MemTotal` of `/proc/meminfo`), where there is one.
pub fn host_ram() -> Option<Bytes> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo_total(&text)
}

fn parse_meminfo_total(text: &str) -> Option<Bytes> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.trim_start_matches("MemTotal:").trim().trim_end_matches("kB").trim().parse().ok()?;
    kib.checked_mul(1024).map(Bytes::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo() {
        let text = "MemTotal:       65774604 kB\nMemFree:        1 kB\n";
        assert_eq!(parse_meminfo_total(text), Some(Bytes::new(65_774_604 * 1024)));
        assert_eq!(parse_meminfo_total("MemFree: 1 kB\n"), None);
    }
}
