//! GPU memory through NVML during a launch: free memory before it, and each GPU's used memory
//! sampled during the worst-case request, keeping the peak. NVML is optional: without a driver
//! the launch goes on and the memory at exit comes from llama-server's breakdown.

use anyhow::{Context as _, Result};
use nvml_wrapper::Nvml;
use optimizer_core::confirm::GpuReading;
use optimizer_core::units::Bytes;

/// An open NVML.
pub struct GpuSampler {
    nvml: Nvml,
    count: u32,
}

/// One reading of every GPU, in NVML order.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Name, PCI bus id, total, free, used per GPU.
    pub gpus: Vec<(String, String, Bytes, Bytes, Bytes)>,
}

impl GpuSampler {
    /// Opens NVML.
    pub fn open() -> Result<GpuSampler> {
        let nvml =
            Nvml::init().context("NVML is not available (no NVIDIA driver, or libnvidia-ml.so not found)")?;
        let count = nvml.device_count().context("NVML could not count the GPUs")?;
        Ok(GpuSampler { nvml, count })
    }

    /// Reads every GPU; a GPU that cannot be read is skipped.
    pub fn snapshot(&self) -> Snapshot {
        let gpus = (0..self.count)
            .filter_map(|i| {
                let d = self.nvml.device_by_index(i).ok()?;
                let m = d.memory_info().ok()?;
                Some((
                    d.name().unwrap_or_else(|_| format!("GPU {i}")),
                    d.pci_info().map(|p| p.bus_id).unwrap_or_default(),
                    Bytes::new(m.total),
                    Bytes::new(m.free),
                    Bytes::new(m.used),
                ))
            })
            .collect();
        Snapshot { gpus }
    }
}

/// Peak tracking between a snapshot taken before the launch and samples during the request.
#[derive(Clone, Debug)]
pub struct Peak {
    before: Snapshot,
    peak_used: Vec<Bytes>,
}

impl Peak {
    /// Starts from the snapshot taken before the launch.
    pub fn new(before: Snapshot) -> Peak {
        let peak_used = before.gpus.iter().map(|g| g.4).collect();
        Peak { before, peak_used }
    }

    /// Takes a sample into the peak.
    pub fn sample(&mut self, s: &Snapshot) {
        for (p, g) in self.peak_used.iter_mut().zip(&s.gpus) {
            *p = (*p).max(g.4);
        }
    }

    /// Core's readings.
    pub fn readings(&self) -> Vec<GpuReading> {
        self.before
            .gpus
            .iter()
            .zip(&self.peak_used)
            .map(|((name, pci, total, free, _), peak)| GpuReading {
                name: name.clone(),
                pci_bus_id: (!pci.is_empty()).then(|| pci.clone()),
                total: *total,
                free_before: *free,
                peak_used: *peak,
            })
            .collect()
    }
}
