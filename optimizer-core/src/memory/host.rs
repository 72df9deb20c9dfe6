//! System RAM: which buffer type the CPU weights end up in (mmap'd, pinned or plain), the mapped
//! file spans and the resident weights, the KV cache and recurrent state kept on the host, host
//! compute, the output buffer, and the server's prompt cache budget.

use serde::Serialize;

use super::kv::KvCache;
use super::output::OutputBuffer;
use super::recurrent::RecurrentState;
use super::weights::Weights;
use super::{ComputeEstimate, GpuAtLoad, Location, ResolvedPlacement};
use crate::settings::{LoadMode, PromptCache, ServerSettings};
use crate::units::Bytes;

/// The buffer type of the weights that stay on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostWeightsBuffer {
    /// Memory-mapped from the file (`CPU_Mapped`): the default load mode maps the file, and the host
    /// buffer type chosen first (`CUDA_Host`) is replaced by the plain CPU one, whose buffers are
    /// created from the mapping (llama-model-loader.cpp:559, 1268-1277; llama-model.cpp:1851-1878).
    /// What is resident depends on which pages are touched; the mapped span is virtual.
    Mapped,
    /// Pinned host memory (`CUDA_Host`): without mmap, the first model GPU's host buffer type leads
    /// the CPU list (llama-model.cpp:1079-1139).
    Pinned,
    /// Plain allocated RAM (`CPU`): without mmap and without a GPU host buffer type (`--no-host`, or no
    /// model GPU), with `--no-repack`.
    Cpu,
    /// `CPU_REPACK` for the tensors the CPU backend can repack, plain `CPU` for the rest: `--no-host`
    /// with repacking on. Which types repack depends on the CPU, so no mapped span is predicted
    /// here even with mmap; the resident sizes are the same either way (repack.cpp:5183-5187).
    CpuRepack,
}

impl HostWeightsBuffer {
    /// True if the CPU weights are mapped from the file.
    pub fn is_mapped(self) -> bool {
        self == HostWeightsBuffer::Mapped
    }
}

/// The span of one model file that llama.cpp maps for the CPU weights (one `CPU_Mapped` model
/// buffer per file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MappedSpan {
    /// The file: the index of the shard in the model.
    pub shard: usize,
    /// From the first CPU tensor's start to the last one's end (llama-model-loader.cpp:1449-1464).
    pub size: Bytes,
}

/// The server's prompt cache in host memory (`--cache-ram`, server-context.cpp:1484-1492): a limit
/// it grows to, not an allocation at load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptCacheBudget {
    /// `--cache-ram 0`.
    Disabled,
    /// A negative `--cache-ram`.
    Unlimited,
    /// Up to this much (default 8192 MiB, common/common.h:638).
    Limit(Bytes),
}

/// System RAM, in detail.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HostMemory {
    /// Where the CPU weights are.
    pub weights_buffer: HostWeightsBuffer,
    /// llama.cpp's name for that buffer type: `CPU_Mapped`, `CUDA_Host`, `CPU`, `CPU_REPACK`.
    pub weights_buffer_name: String,
    /// Host weights resident: `Σ PAD32(nbytes)` of the tensors on the host (tied and per-layer
    /// copies included). What `llama-fit-params` reports (it loads without mmap); with mmap, the
    /// page cache these tensors occupy once read.
    pub weights_resident: Bytes,
    /// Host mapped span: the `CPU_Mapped` model buffers llama-server logs, per file; empty without
    /// mmap. Virtual: GPU tensors between CPU ones are in it, and are unmapped after upload.
    pub weights_mapped: Vec<MappedSpan>,
    /// KV cache on the host (CPU layers, or every layer with `--no-kv-offload`).
    pub kv_cache: Bytes,
    /// Recurrent state on the host.
    pub recurrent_state: Bytes,
    /// Host compute buffer (`CUDA_Host compute buffer`).
    pub compute: ComputeEstimate,
    /// The output buffer at its peak ([`OutputBuffer::peak`]).
    pub output_buffer: Bytes,
    /// The prompt cache budget.
    pub prompt_cache: PromptCacheBudget,
}

impl HostMemory {
    /// The mapped spans together.
    pub fn weights_mapped_total(&self) -> Bytes {
        self.weights_mapped.iter().map(|m| m.size).sum()
    }

    /// RAM that is known to be used once the model is loaded: resident weights, KV cache,
    /// recurrent state, output buffer, and host compute when modelled. The prompt cache comes on
    /// top as it fills.
    pub fn known_total(&self) -> Bytes {
        self.weights_resident
            + self.kv_cache
            + self.recurrent_state
            + self.output_buffer
            + self.compute.bytes().unwrap_or(Bytes::ZERO)
    }
}

/// Whether the model file is mapped: `-lm auto` (mmap on a discrete CUDA GPU), `mmap` or
/// `mmap+mlock` (llama-model-loader.cpp:559; llama-model.cpp:1514-1523).
pub(crate) fn uses_mmap(settings: &ServerSettings) -> bool {
    matches!(settings.load_mode, LoadMode::Auto | LoadMode::Mmap | LoadMode::MmapMlock)
}

/// `CUDA0` → `CUDA_Host`: a GPU backend's host buffer type (ggml-cuda.cu:1306-1318 names it
/// `GGML_CUDA_NAME "_Host"`).
pub(crate) fn host_buffer_name(gpu: &str) -> String {
    format!("{}_Host", gpu.trim_end_matches(|c: char| c.is_ascii_digit()))
}

/// Where the host weights go, and llama.cpp's name for it.
pub(crate) fn host_weights_buffer(
    settings: &ServerSettings,
    placement: &ResolvedPlacement,
    gpus: &[GpuAtLoad],
) -> (HostWeightsBuffer, String) {
    let mmap = uses_mmap(settings);
    // make_cpu_buft_list: the host buffer type of the first model device that has one.
    let pinned = (!settings.no_host).then(|| placement.devices.first().and_then(|&d| gpus.get(d))).flatten();
    if settings.no_host && settings.repack {
        (HostWeightsBuffer::CpuRepack, "CPU_REPACK".to_owned())
    } else if mmap {
        (HostWeightsBuffer::Mapped, "CPU_Mapped".to_owned())
    } else if let Some(gpu) = pinned {
        (HostWeightsBuffer::Pinned, host_buffer_name(&gpu.name))
    } else {
        (HostWeightsBuffer::Cpu, "CPU".to_owned())
    }
}

/// Assembles host memory from the parts.
pub(crate) fn host_memory(
    settings: &ServerSettings,
    weights: &Weights,
    kv: &KvCache,
    recurrent: &RecurrentState,
    output: &OutputBuffer,
    compute: ComputeEstimate,
) -> HostMemory {
    HostMemory {
        weights_buffer: weights.host_buffer,
        weights_buffer_name: weights.host_buffer_name.clone(),
        weights_resident: weights.per_location.at(Location::Host),
        weights_mapped: weights.mapped.clone(),
        kv_cache: kv.per_location.at(Location::Host),
        recurrent_state: recurrent.per_location.at(Location::Host),
        compute,
        output_buffer: output.peak,
        prompt_cache: match settings.prompt_cache {
            PromptCache::Disabled => PromptCacheBudget::Disabled,
            PromptCache::Unlimited => PromptCacheBudget::Unlimited,
            PromptCache::Limit(b) => PromptCacheBudget::Limit(b),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer(args: &[&str], devices: Vec<usize>) -> (HostWeightsBuffer, String) {
        let gpus = [GpuAtLoad::new("CUDA0", Bytes::from_mib(1)), GpuAtLoad::new("CUDA1", Bytes::from_mib(1))];
        let placement = ResolvedPlacement {
            devices,
            n_gpu_layers: 0,
            split: Vec::new(),
            layers: Vec::new(),
            output: Location::Host,
            tensors: Vec::new(),
            skipped: Vec::new(),
        };
        host_weights_buffer(&ServerSettings::from_args(args).unwrap(), &placement, &gpus)
    }

    #[test]
    fn host_weights_buffer_follows_load_mode_and_host_flags() {
        assert_eq!(buffer(&[], vec![0, 1]), (HostWeightsBuffer::Mapped, "CPU_Mapped".into()));
        assert_eq!(buffer(&["-lm", "mmap+mlock"], vec![0]).0, HostWeightsBuffer::Mapped);
        assert_eq!(buffer(&["-lm", "none"], vec![1]), (HostWeightsBuffer::Pinned, "CUDA_Host".into()));
        assert_eq!(buffer(&["-lm", "mlock"], vec![0]).0, HostWeightsBuffer::Pinned);
        assert_eq!(buffer(&["-lm", "none"], vec![]), (HostWeightsBuffer::Cpu, "CPU".into()));
        assert_eq!(buffer(&["-lm", "none", "--no-host", "-nr"], vec![0]).0, HostWeightsBuffer::Cpu);
        assert_eq!(buffer(&["--no-host"], vec![0]).0, HostWeightsBuffer::CpuRepack);
        assert_eq!(host_buffer_name("CUDA12"), "CUDA_Host");
    }
}
