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
                    // NVML's v2 `used` leaves out the driver's reserved memory (about 600 MiB on
                    // an H200); what is not free is what llama.cpp and the user can no longer have
                    Bytes::new(m.total.saturating_sub(m.free)),
                ))
            })
            .collect();
        Snapshot { gpus }
    }
}

/// A process other than splitplan's llama-server holding memory on a GPU before the first launch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusyProcess {
    /// NVML index (CUDA order on these machines).
    pub gpu: u32,
    /// The card's name.
    pub gpu_name: String,
    /// Its process id.
    pub pid: u32,
    /// Its name from /proc, when visible.
    pub name: Option<String>,
    /// What it holds, when NVML reports it.
    pub used: Option<Bytes>,
}

impl GpuSampler {
    /// Every compute process on every GPU (a desktop's graphics processes are not listed: they
    /// are what the free memory already accounts for).
    pub fn compute_processes(&self) -> Vec<BusyProcess> {
        use nvml_wrapper::enums::device::UsedGpuMemory;
        (0..self.count)
            .filter_map(|i| Some((i, self.nvml.device_by_index(i).ok()?)))
            .flat_map(|(i, d)| {
                let gpu_name = d.name().unwrap_or_else(|_| format!("GPU {i}"));
                d.running_compute_processes().unwrap_or_default().into_iter().map(move |p| BusyProcess {
                    gpu: i,
                    gpu_name: gpu_name.clone(),
                    pid: p.pid,
                    name: std::fs::read_to_string(format!("/proc/{}/comm", p.pid))
                        .ok()
                        .map(|s| s.trim().to_string()),
                    used: match p.used_gpu_memory {
                        UsedGpuMemory::Used(b) => Some(Bytes::new(b)),
                        UsedGpuMemory::Unavailable => None,
                    },
                })
            })
            .collect()
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
