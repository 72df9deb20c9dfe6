//! The machine a plan is for: its GPUs (in CUDA's order, with their memory and bandwidth) and its
//! host RAM, however they were learned: read through NVML by the CLI, described on the command line
//! (`--gpu 4090,5070ti`, `--free 23557,14477`), or described in the `[hardware]` section of a TOML
//! config.
//!
//! The one number every plan needs per GPU is the free memory llama.cpp reports when it loads a
//! model ([`Hardware::free_at_load`]): llama.cpp sizes the default tensor split by it
//! (llama-model.cpp:1559-1576) and `--fit` measures its margins from it (common/fit.cpp). That number
//! is already net of llama.cpp's own CUDA context, which NVML still counts as free before launch:
//! [`CUDA_CONTEXT_OVERHEAD`] bridges the two.

use serde::{Deserialize, Serialize};

use crate::memory::GpuAtLoad;
use crate::units::Bytes;

/// What llama.cpp's own CUDA context (plus cuBLAS handles) takes before it reports free memory,
/// measured on an H200 with llama.cpp build 11434: NVML reported 24,081 MiB free on CUDA0 (15,001 on
/// CUDA1) just before launch, and llama.cpp logged `using device CUDA0 (NVIDIA H200) … - 23557 MiB
/// free` (14,477 on CUDA1): 524 MiB on both. Source: fixtures/ground-truth/data/2026-11-21-h200x2,
/// logs/*.log (`llama_prepare_model_devices: using device`) against rows/*.json (`nvml_before`).
/// It depends on the GPU and driver; override it with [`Hardware::cuda_context`] (the CLI's
/// `--cuda-context`, the config's `cuda_context`).
pub const CUDA_CONTEXT_OVERHEAD: Bytes = Bytes::from_mib(524);

/// The most GPUs a description may list: llama.cpp handles 16 devices (`llama_max_devices`,
/// src/llama.cpp:86-88).
pub const MAX_GPUS: usize = 16;

/// One GPU, in CUDA's device order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Gpu {
    /// The CUDA device index: llama.cpp names the device `CUDA{index}`.
    pub index: usize,
    /// What the card is: NVML's name (`NVIDIA GeForce RTX 4090`), a known card's (`RTX 4090`), or a
    /// placeholder when only sizes were given.
    pub name: String,
    /// The card's memory as NVML reports it (`memory.total` in `nvidia-smi`). When only the free
    /// memory is known (`--free`), it is that free memory plus the CUDA context.
    pub total: Bytes,
    /// Memory that is not free before llama.cpp starts: other programs, the desktop on a display
    /// GPU, and the driver's own reserve (NVML's total − free).
    pub used_by_others: Bytes,
    /// Memory bandwidth in GB/s (10^9 bytes per second), when known.
    pub bandwidth_gbs: Option<f64>,
    /// NVML's free memory just now, when it was read (or given). It takes precedence over
    /// `total − used_by_others`.
    pub free_now: Option<Bytes>,
    /// The CUDA compute capability as ggml encodes it, major × 100 + minor × 10 (890 for 8.9,
    /// ggml-cuda.cu:344), when known: from the known card or from NVML. The memory model's
    /// flash-attention scratch depends on it ([`crate::memory::GpuAtLoad::compute_capability`]).
    pub compute_capability: Option<u32>,
}

impl Gpu {
    /// llama.cpp's name for the device, `CUDA0`, `CUDA1`, …: also the buffer type `-ot` targets.
    pub fn backend_name(&self) -> String {
        format!("CUDA{}", self.index)
    }
}

/// The machine: GPUs and host.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hardware {
    /// The GPUs, in CUDA order (`gpus[i].index == i`).
    pub gpus: Vec<Gpu>,
    /// System RAM, when known.
    pub host_ram: Option<Bytes>,
    /// System RAM bandwidth in GB/s, when known.
    pub host_bandwidth_gbs: Option<f64>,
    /// What llama.cpp's CUDA context takes on each GPU before it reports free memory
    /// ([`CUDA_CONTEXT_OVERHEAD`] unless overridden).
    pub cuda_context: Bytes,
}

impl Hardware {
    /// A machine with these GPUs, the default CUDA context overhead and nothing known of its host.
    pub fn new(gpus: Vec<Gpu>) -> Hardware {
        Hardware { gpus, host_ram: None, host_bandwidth_gbs: None, cuda_context: CUDA_CONTEXT_OVERHEAD }
    }

    /// The free memory llama.cpp reports for GPU `gpu` (an index into [`Hardware::gpus`]) when it
    /// loads a model (`llama_prepare_model_devices: using device CUDA0 … - N MiB free`,
    /// src/llama.cpp:302-307): NVML's free memory minus the CUDA context when it was read, else
    /// `total − used_by_others − cuda_context`. Zero for an index past the last GPU.
    pub fn free_at_load(&self, gpu: usize) -> Bytes {
        let Some(g) = self.gpus.get(gpu) else { return Bytes::ZERO };
        let free = g.free_now.unwrap_or_else(|| g.total.saturating_sub(g.used_by_others));
        free.saturating_sub(self.cuda_context)
    }

    /// The GPUs as llama.cpp sees them at load, for the memory model: each one's backend name,
    /// [`Hardware::free_at_load`] and, when known, its compute capability.
    pub fn gpus_at_load(&self) -> Vec<GpuAtLoad> {
        self.gpus
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let at_load = GpuAtLoad::new(g.backend_name(), self.free_at_load(i));
                match g.compute_capability {
                    Some(cc) => at_load.with_compute_capability(cc),
                    None => at_load,
                }
            })
            .collect()
    }

    /// Sets each GPU's free memory from what llama.cpp reports at load (`--free`): `free_now`
    /// becomes that plus the CUDA context, so that [`Hardware::free_at_load`] gives back exactly
    /// `free[i]`. `free` must have one entry per GPU.
    pub fn set_free_at_load(&mut self, free: &[Bytes]) -> Result<(), DeviceError> {
        if free.len() != self.gpus.len() {
            return Err(DeviceError::FreeCountMismatch { free: free.len(), gpus: self.gpus.len() });
        }
        for (g, &f) in self.gpus.iter_mut().zip(free) {
            let now = f + self.cuda_context;
            if now > g.total {
                return Err(DeviceError::FreeAboveTotal { gpu: g.index, free: f, total: g.total });
            }
            g.free_now = Some(now);
        }
        Ok(())
    }

    /// A machine known only by the free memory llama.cpp reports on each GPU (`--free`), with
    /// `cuda_context` as the CUDA context overhead: the totals are taken as that free memory plus
    /// the CUDA context.
    pub fn from_free_at_load(free: &[Bytes], cuda_context: Bytes) -> Result<Hardware, DeviceError> {
        check_count(free.len())?;
        let gpus = free
            .iter()
            .enumerate()
            .map(|(index, &f)| Gpu {
                index,
                name: "(free memory given)".to_owned(),
                total: f + cuda_context,
                used_by_others: Bytes::ZERO,
                bandwidth_gbs: None,
                free_now: Some(f + cuda_context),
                compute_capability: None,
            })
            .collect();
        Ok(Hardware::new(gpus).with_cuda_context(cuda_context))
    }

    /// Changes the CUDA context overhead. Give free memory as llama.cpp reports it
    /// ([`Hardware::set_free_at_load`]) after this, not before.
    #[must_use]
    pub fn with_cuda_context(mut self, cuda_context: Bytes) -> Hardware {
        self.cuda_context = cuda_context;
        self
    }

    /// Reads the `[hardware]` section of a splitplan TOML config (see [`HardwareConfig`] for the
    /// format). Other top-level sections belong to other parts of the config and are ignored.
    pub fn from_toml(text: &str) -> Result<Hardware, DeviceError> {
        let file: ConfigFile =
            toml::from_str(text).map_err(|e| DeviceError::Config { message: e.to_string() })?;
        let config = file.hardware.ok_or(DeviceError::NoHardwareSection)?;
        config.into_hardware()
    }
}

/// The `[hardware]` section of a splitplan config, as written in TOML:
///
/// ```toml
/// [hardware]
/// host_ram = "64G"          # sizes: a number is MiB, a string may carry a unit ("24G", "512MiB")
/// host_bandwidth_gbs = 40
/// cuda_context = 524        # optional: llama.cpp's CUDA context per GPU, MiB
///
/// [[hardware.gpu]]          # one table per GPU, in CUDA order
/// name = "4090"             # a known card gives total and bandwidth
///
/// [[hardware.gpu]]
/// name = "5070ti"
/// used_by_others = 2500     # the desktop on the display GPU
///
/// [[hardware.gpu]]
/// name = "lab card"
/// total = 49140
/// bandwidth_gbs = 768
/// ```
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HardwareConfig {
    /// The GPUs in CUDA order.
    #[serde(default)]
    pub gpu: Vec<GpuConfig>,
    /// System RAM.
    pub host_ram: Option<Size>,
    /// System RAM bandwidth, GB/s.
    pub host_bandwidth_gbs: Option<f64>,
    /// Overrides [`CUDA_CONTEXT_OVERHEAD`].
    pub cuda_context: Option<Size>,
}

/// One `[[hardware.gpu]]` table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuConfig {
    /// A name; when it is a known card ([`known_card`]), its total and bandwidth are the defaults.
    pub name: Option<String>,
    /// The card's memory.
    pub total: Option<Size>,
    /// Memory other programs (and the desktop) hold.
    pub used_by_others: Option<Size>,
    /// Memory bandwidth, GB/s.
    pub bandwidth_gbs: Option<f64>,
}

/// A size in a config: a plain number of MiB, or a string with an optional unit.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Size {
    /// MiB.
    Mib(u64),
    /// `"24G"`, `"512MiB"`, `"24564"` (MiB).
    Text(String),
}

impl Size {
    fn bytes(&self, what: &str) -> Result<Bytes, DeviceError> {
        match self {
            Size::Mib(n) => n
                .checked_mul(crate::units::MIB)
                .map(Bytes::new)
                .ok_or_else(|| DeviceError::ConfigValue { what: what.to_owned(), value: n.to_string() }),
            Size::Text(s) => Bytes::parse_mib_default(s)
                .map_err(|_| DeviceError::ConfigValue { what: what.to_owned(), value: s.clone() }),
        }
    }
}

#[derive(Deserialize)]
struct ConfigFile {
    hardware: Option<HardwareConfig>,
}

impl HardwareConfig {
    /// The machine this section describes.
    pub fn into_hardware(self) -> Result<Hardware, DeviceError> {
        check_count(self.gpu.len())?;
        let mut gpus = Vec::with_capacity(self.gpu.len());
        for (index, g) in self.gpu.into_iter().enumerate() {
            let card = g.name.as_deref().and_then(known_card);
            let total = match (&g.total, card) {
                (Some(t), _) => t.bytes(&format!("hardware.gpu[{index}].total"))?,
                (None, Some(c)) => c.total,
                (None, None) => {
                    return Err(DeviceError::ConfigGpuTotal { index, name: g.name.unwrap_or_default() });
                }
            };
            let used_by_others = match &g.used_by_others {
                Some(u) => u.bytes(&format!("hardware.gpu[{index}].used_by_others"))?,
                None => Bytes::ZERO,
            };
            if used_by_others > total {
                return Err(DeviceError::UsedAboveTotal { gpu: index, used: used_by_others, total });
            }
            let name = match (card, g.name) {
                (Some(c), _) => c.name.to_owned(),
                (None, Some(n)) => n,
                (None, None) => format!("GPU {index}"),
            };
            gpus.push(Gpu {
                index,
                name,
                total,
                used_by_others,
                bandwidth_gbs: g.bandwidth_gbs.or(card.map(|c| c.bandwidth_gbs)),
                free_now: None,
                compute_capability: card.map(|c| c.compute_capability),
            });
        }
        let mut hw = Hardware::new(gpus);
        hw.host_ram = self.host_ram.as_ref().map(|s| s.bytes("hardware.host_ram")).transpose()?;
        hw.host_bandwidth_gbs = self.host_bandwidth_gbs;
        if let Some(c) = &self.cuda_context {
            hw.cuda_context = c.bytes("hardware.cuda_context")?;
        }
        Ok(hw)
    }
}

/// A GPU model splitplan knows the memory and bandwidth of.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct KnownCard {
    /// Its name, e.g. `RTX 4090`.
    pub name: &'static str,
    /// Its memory. Measured (as NVML reports it) where [`KnownCard::total_measured`] is true;
    /// otherwise the nominal capacity, which NVML may report a few MiB lower.
    pub total: Bytes,
    /// Whether `total` is a reading of a real card rather than the nominal capacity.
    pub total_measured: bool,
    /// Memory bandwidth, GB/s, from the vendor's specification.
    pub bandwidth_gbs: f64,
    /// The CUDA compute capability as ggml encodes it, major × 100 + minor × 10
    /// (ggml-cuda.cu:344): 890 for the RTX 4090's 8.9.
    pub compute_capability: u32,
}

const fn card(
    name: &'static str,
    total_mib: u64,
    total_measured: bool,
    bandwidth_gbs: f64,
    compute_capability: u32,
) -> KnownCard {
    KnownCard { name, total: Bytes::from_mib(total_mib), total_measured, bandwidth_gbs, compute_capability }
}

/// The cards [`known_card`] recognises, with the spellings that name each (compared after
/// [`normalize_card_name`]). Measured totals: the RTX 4090 and RTX 5070 Ti as the user's
/// `nvidia-smi` reports them (BRIEF.md), the H200 as NVML reported it on the ground-truth machine
/// (fixtures/ground-truth/data/2026-11-21-h200x2/rows/*.json, `total_mib`). Other totals are
/// nominal (GB × 1024 MiB). Bandwidths are the vendors' specifications; compute capabilities are
/// NVIDIA's (CUDA GPUs list): 8.6 Ampere consumer and RTX A6000, 8.0 A100, 8.9 Ada, 9.0 Hopper,
/// 12.0 Blackwell consumer and workstation.
const KNOWN_CARDS: &[(&[&str], KnownCard)] = &[
    (&["5090"], card("RTX 5090", 32_768, false, 1792.0, 1200)),
    (&["5080"], card("RTX 5080", 16_384, false, 960.0, 1200)),
    (&["5070ti"], card("RTX 5070 Ti", 16_303, true, 896.0, 1200)),
    (&["5070"], card("RTX 5070", 12_288, false, 672.0, 1200)),
    (&["5060ti"], card("RTX 5060 Ti 16GB", 16_384, false, 448.0, 1200)),
    (&["4090"], card("RTX 4090", 24_564, true, 1008.0, 890)),
    (&["4080super"], card("RTX 4080 Super", 16_384, false, 736.0, 890)),
    (&["4080"], card("RTX 4080", 16_384, false, 716.8, 890)),
    (&["4070tisuper"], card("RTX 4070 Ti Super", 16_384, false, 672.0, 890)),
    (&["4070ti"], card("RTX 4070 Ti", 12_288, false, 504.0, 890)),
    (&["4060ti"], card("RTX 4060 Ti 16GB", 16_384, false, 288.0, 890)),
    (&["3090ti"], card("RTX 3090 Ti", 24_576, false, 1008.0, 860)),
    (&["3090"], card("RTX 3090", 24_576, false, 936.0, 860)),
    (&["3080ti"], card("RTX 3080 Ti", 12_288, false, 912.0, 860)),
    (&["3060"], card("RTX 3060 12GB", 12_288, false, 360.0, 860)),
    (&["a6000"], card("RTX A6000", 49_152, false, 768.0, 860)),
    (&["6000ada", "a6000ada"], card("RTX 6000 Ada", 49_152, false, 960.0, 890)),
    (&["pro6000", "pro6000blackwell"], card("RTX PRO 6000 Blackwell", 98_304, false, 1792.0, 1200)),
    (&["l40s"], card("L40S", 49_152, false, 864.0, 890)),
    (&["a100", "a10080gb"], card("A100 80GB", 81_920, false, 2039.0, 800)),
    (&["a10040gb"], card("A100 40GB", 40_960, false, 1555.0, 800)),
    (&["h100", "h100sxm", "h10080gb"], card("H100 SXM 80GB", 81_920, false, 3350.0, 900)),
    (&["h100pcie"], card("H100 PCIe 80GB", 81_920, false, 2000.0, 900)),
    (&["h200", "h200sxm", "h200nvl"], card("H200", 143_771, true, 4800.0, 900)),
];

/// Every card [`known_card`] recognises, in table order.
pub fn known_cards() -> impl Iterator<Item = KnownCard> {
    KNOWN_CARDS.iter().map(|(_, c)| *c)
}

/// A card name reduced to what identifies it: lower case, letters and digits only, with the words
/// `nvidia`, `geforce`, `rtx`, `quadro` and `tesla` dropped: `NVIDIA GeForce RTX 4090` → `4090`,
/// `RTX 5070 Ti` → `5070ti`.
pub fn normalize_card_name(name: &str) -> String {
    words(name).concat()
}

fn words(name: &str) -> Vec<String> {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .filter(|w| !matches!(w.as_str(), "nvidia" | "geforce" | "rtx" | "quadro" | "tesla"))
        .collect()
}

/// The card a name means: `4090`, `rtx 4090`, `RTX 5070 Ti`, `5070ti`, `3090`, `a6000`, `h100`,
/// `h200`, or NVML's full names such as `NVIDIA GeForce RTX 4090` and `NVIDIA H100 80GB HBM3` (trailing
/// words are dropped until a card matches).
pub fn known_card(name: &str) -> Option<KnownCard> {
    let words = words(name);
    (1..=words.len()).rev().find_map(|n| {
        let key = words[..n].concat();
        KNOWN_CARDS.iter().find(|(keys, _)| keys.contains(&key.as_str())).map(|(_, c)| *c)
    })
}

/// Parses `--gpu`: a comma-separated list, one entry per GPU in CUDA order, each a total (`24564`
/// MiB, or with a unit: `24G`) or a known card name (`4090`, `5070ti`), optionally followed by
/// `:USED`, the memory other programs hold on it (`5070ti:2500`, MiB unless a unit is given).
pub fn parse_gpu_list(spec: &str) -> Result<Vec<Gpu>, DeviceError> {
    let items: Vec<&str> = spec.split(',').map(str::trim).collect();
    if items.iter().all(|i| i.is_empty()) {
        return Err(DeviceError::EmptyList { flag: "--gpu" });
    }
    check_count(items.len())?;
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let bad = |reason: &'static str| DeviceError::InvalidGpu { item: (*item).to_owned(), reason };
            let (what, used) = match item.split_once(':') {
                Some((w, u)) => (w.trim(), Some(u.trim())),
                None => (*item, None),
            };
            if what.is_empty() {
                return Err(bad("it is empty"));
            }
            let starts_numeric = what.starts_with(|c: char| c.is_ascii_digit());
            let card = known_card(what);
            let (name, total) = match (card, Bytes::parse_mib_default(what)) {
                // A bare number that is also a card name (`4090`, `3090`) means the card: a 4090 MiB
                // GPU is not a thing anyone plans for.
                (Some(c), _) => (c.name.to_owned(), c.total),
                (None, Ok(total)) if total > Bytes::ZERO => (format!("{} GPU", total.mib_floor()), total),
                (None, Ok(_)) => return Err(bad("a GPU of 0 MiB")),
                (None, Err(_)) if starts_numeric => {
                    return Err(bad("it is neither a size nor a known card"));
                }
                (None, Err(_)) => return Err(bad("it is no card splitplan knows")),
            };
            let used_by_others = match used {
                None => Bytes::ZERO,
                Some(u) => {
                    Bytes::parse_mib_default(u).map_err(|_| bad("the memory after ':' is not a size"))?
                }
            };
            if used_by_others > total {
                return Err(DeviceError::UsedAboveTotal { gpu: index, used: used_by_others, total });
            }
            Ok(Gpu {
                index,
                name,
                total,
                used_by_others,
                bandwidth_gbs: card.map(|c| c.bandwidth_gbs),
                free_now: None,
                compute_capability: card.map(|c| c.compute_capability),
            })
        })
        .collect()
}

/// Parses `--free`: comma-separated sizes, MiB unless a unit is given, one per GPU in CUDA order.
pub fn parse_free_list(spec: &str) -> Result<Vec<Bytes>, DeviceError> {
    let items: Vec<&str> = spec.split(',').map(str::trim).collect();
    if items.iter().all(|i| i.is_empty()) {
        return Err(DeviceError::EmptyList { flag: "--free" });
    }
    check_count(items.len())?;
    items
        .iter()
        .map(|item| {
            Bytes::parse_mib_default(item).map_err(|_| DeviceError::InvalidFree { item: (*item).to_owned() })
        })
        .collect()
}

fn check_count(n: usize) -> Result<(), DeviceError> {
    if n > MAX_GPUS { Err(DeviceError::TooManyGpus { count: n }) } else { Ok(()) }
}

/// A GPU as NVML reports it, before it is put in CUDA's order.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectedGpu {
    /// NVML's name, e.g. `NVIDIA GeForce RTX 4090`.
    pub name: String,
    /// `nvmlDeviceGetMemoryInfo` total.
    pub total: Bytes,
    /// `nvmlDeviceGetMemoryInfo` free.
    pub free: Bytes,
    /// The PCI bus id, e.g. `00000000:01:00.0`: llama.cpp prints it in its `using device` line.
    pub pci_bus_id: String,
    /// The GPU's UUID, `GPU-…`, which `CUDA_VISIBLE_DEVICES` may name.
    pub uuid: String,
    /// CUDA cores, when NVML knows them.
    pub cores: Option<u32>,
    /// The highest SM clock in MHz, when NVML knows it.
    pub max_sm_clock_mhz: Option<u32>,
    /// `nvmlDeviceGetCudaComputeCapability` as ggml encodes it, major × 100 + minor × 10
    /// (ggml-cuda.cu:344), when NVML knows it.
    pub compute_capability: Option<u32>,
}

/// How CUDA numbers the GPUs (`CUDA_DEVICE_ORDER`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceOrder {
    /// CUDA's default: the fastest GPU first. CUDA does not document its rule; splitplan ranks by
    /// CUDA cores × highest SM clock, ties (and GPUs NVML cannot rank) in PCI bus order.
    FastestFirst,
    /// `CUDA_DEVICE_ORDER=PCI_BUS_ID`: NVML's own order.
    PciBusId,
}

impl DeviceOrder {
    /// The order a `CUDA_DEVICE_ORDER` value asks for (unset or anything else: fastest first).
    pub fn from_env(value: Option<&str>) -> DeviceOrder {
        match value {
            Some("PCI_BUS_ID") => DeviceOrder::PciBusId,
            _ => DeviceOrder::FastestFirst,
        }
    }
}

/// Puts GPUs read in NVML's order (PCI bus order) into CUDA's order, then keeps those
/// `CUDA_VISIBLE_DEVICES` (`visible`) lets CUDA see, in the order it lists them. As CUDA does, an
/// entry that names no GPU (or one already listed) ends the list; an empty value hides every GPU.
/// Entries are indices in `order` or `GPU-` UUID prefixes; MIG instances are refused.
pub fn cuda_order(
    detected: Vec<DetectedGpu>,
    order: DeviceOrder,
    visible: Option<&str>,
) -> Result<Vec<DetectedGpu>, DeviceError> {
    let mut ordered = detected;
    if order == DeviceOrder::FastestFirst
        && ordered.iter().all(|g| g.cores.is_some() && g.max_sm_clock_mhz.is_some())
    {
        let speed =
            |g: &DetectedGpu| u64::from(g.cores.unwrap_or(0)) * u64::from(g.max_sm_clock_mhz.unwrap_or(0));
        // A stable sort keeps PCI order among equals.
        ordered.sort_by_key(|g| std::cmp::Reverse(speed(g)));
    }
    let Some(visible) = visible else { return Ok(ordered) };
    let mut chosen: Vec<usize> = Vec::new();
    for entry in visible.split(',').map(str::trim) {
        let found = if entry.starts_with("MIG-") {
            return Err(DeviceError::MigDevice { entry: entry.to_owned() });
        } else if let Ok(i) = entry.parse::<usize>() {
            (i < ordered.len()).then_some(i)
        } else if entry.len() > 4 && entry.starts_with("GPU-") {
            let matches: Vec<usize> =
                (0..ordered.len()).filter(|&i| ordered[i].uuid.starts_with(entry)).collect();
            if matches.len() == 1 { Some(matches[0]) } else { None }
        } else {
            None
        };
        match found {
            Some(i) if !chosen.contains(&i) => chosen.push(i),
            _ => break,
        }
    }
    Ok(chosen.into_iter().map(|i| ordered[i].clone()).collect())
}

impl DetectedGpu {
    /// The GPU as CUDA device `index`, its bandwidth from [`known_card`], its compute capability
    /// NVML's (else the known card's).
    pub fn into_gpu(self, index: usize) -> Gpu {
        let card = known_card(&self.name);
        Gpu {
            index,
            bandwidth_gbs: card.map(|c| c.bandwidth_gbs),
            compute_capability: self.compute_capability.or(card.map(|c| c.compute_capability)),
            used_by_others: self.total.saturating_sub(self.free),
            free_now: Some(self.free),
            total: self.total,
            name: self.name,
        }
    }
}

/// Why a description of the machine was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// `--gpu ''` or `--free ''`.
    #[error("{flag} lists no GPU, expected one entry per GPU, separated by commas")]
    EmptyList {
        /// The flag.
        flag: &'static str,
    },
    /// An entry of `--gpu` that is neither a size nor a known card.
    #[error(
        "invalid GPU '{item}' in --gpu: {reason}; expected a total in MiB (24564), a size (24G) or a \
         card name, optionally followed by ':USED' (5070ti:2500)\n\
         hint: the known cards are {}",
        known_card_names()
    )]
    InvalidGpu {
        /// The entry.
        item: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An entry of `--free` that is not a size.
    #[error("invalid free memory '{item}' in --free, expected MiB (23557) or a size with a unit (23G)")]
    InvalidFree {
        /// The entry.
        item: String,
    },
    /// More GPUs than llama.cpp handles.
    #[error("{count} GPUs described, llama.cpp handles at most {MAX_GPUS}")]
    TooManyGpus {
        /// How many were given.
        count: usize,
    },
    /// Memory held by others above the card's total.
    #[error("GPU {gpu}: other programs are said to hold {used:#}, more than its total {total:#}")]
    UsedAboveTotal {
        /// The GPU index.
        gpu: usize,
        /// Memory held by others.
        used: Bytes,
        /// The total.
        total: Bytes,
    },
    /// `--free` with a different number of GPUs than `--gpu`.
    #[error("--free lists {free} GPUs but --gpu describes {gpus}, expected one free value per GPU")]
    FreeCountMismatch {
        /// Entries of `--free`.
        free: usize,
        /// GPUs described.
        gpus: usize,
    },
    /// Free memory above what the card holds.
    #[error("GPU {gpu}: free memory {free:#} plus the CUDA context is more than its total {total:#}")]
    FreeAboveTotal {
        /// The GPU index.
        gpu: usize,
        /// The free memory given.
        free: Bytes,
        /// The total.
        total: Bytes,
    },
    /// The config is not valid TOML, or its `[hardware]` section has a wrong key or value.
    #[error("invalid hardware description: {message}")]
    Config {
        /// The TOML parser's message, with line and column.
        message: String,
    },
    /// A size in the config that is not one.
    #[error("invalid size '{value}' for {what}, expected MiB (24564) or a size with a unit (24G)")]
    ConfigValue {
        /// The key.
        what: String,
        /// The value.
        value: String,
    },
    /// A `[[hardware.gpu]]` with no total and no known card name.
    #[error(
        "hardware.gpu[{index}] has no total and its name '{name}' is no known card\n\
         hint: add total = MiB, or name one of: {}",
        known_card_names()
    )]
    ConfigGpuTotal {
        /// The GPU's position.
        index: usize,
        /// Its name, if any.
        name: String,
    },
    /// The config has no `[hardware]` section.
    #[error("the config has no [hardware] section")]
    NoHardwareSection,
    /// `CUDA_VISIBLE_DEVICES` names a MIG instance.
    #[error(
        "CUDA_VISIBLE_DEVICES names the MIG instance '{entry}', which splitplan cannot read\n\
         hint: describe the GPUs with --free or --gpu"
    )]
    MigDevice {
        /// The entry.
        entry: String,
    },
}

fn known_card_names() -> String {
    KNOWN_CARDS.iter().map(|(keys, _)| keys[0]).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // the bandwidths are table entries, compared exactly
mod tests {
    use super::*;

    fn mib(n: u64) -> Bytes {
        Bytes::from_mib(n)
    }

    #[test]
    fn free_at_load_subtracts_others_and_context() {
        let gpus = parse_gpu_list("4090,5070ti:2500").unwrap();
        let hw = Hardware::new(gpus);
        assert_eq!(hw.free_at_load(0), mib(24_564 - 524));
        assert_eq!(hw.free_at_load(1), mib(16_303 - 2_500 - 524));
        assert_eq!(hw.free_at_load(2), Bytes::ZERO);
        let at_load = hw.gpus_at_load();
        let expected = [
            GpuAtLoad::new("CUDA0", mib(24_564 - 524)).with_compute_capability(890),
            GpuAtLoad::new("CUDA1", mib(16_303 - 2_500 - 524)).with_compute_capability(1200),
        ];
        assert_eq!(at_load, expected);
        let hw = hw.with_cuda_context(mib(600));
        assert_eq!(hw.free_at_load(0), mib(24_564 - 600));
    }

    #[test]
    fn free_now_takes_precedence() {
        // The ground-truth H200s: NVML free 24,081 / 15,001 MiB, llama.cpp reported 23,557 / 14,477.
        let detected = |free, bus: &str| DetectedGpu {
            name: "NVIDIA H200".to_owned(),
            total: mib(143_771),
            free: mib(free),
            pci_bus_id: bus.to_owned(),
            uuid: format!("GPU-{bus}"),
            cores: Some(16_896),
            max_sm_clock_mhz: Some(1_980),
            compute_capability: Some(900),
        };
        let gpus = cuda_order(
            vec![detected(24_081, "00000000:00:06.0"), detected(15_001, "00000000:00:07.0")],
            DeviceOrder::FastestFirst,
            None,
        )
        .unwrap();
        let hw = Hardware::new(gpus.into_iter().enumerate().map(|(i, g)| g.into_gpu(i)).collect());
        assert_eq!(hw.free_at_load(0), mib(23_557));
        assert_eq!(hw.free_at_load(1), mib(14_477));
        assert_eq!(hw.gpus[0].used_by_others, mib(143_771 - 24_081));
        assert_eq!(hw.gpus[0].bandwidth_gbs, Some(4800.0));
        assert_eq!(hw.gpus[0].compute_capability, Some(900));
    }

    #[test]
    fn free_given_as_llama_cpp_reports_it_comes_back_exactly() {
        let hw = Hardware::from_free_at_load(&[mib(23_557), mib(14_477)], CUDA_CONTEXT_OVERHEAD).unwrap();
        assert_eq!(hw.free_at_load(0), mib(23_557));
        assert_eq!(hw.free_at_load(1), mib(14_477));
        let mut hw = Hardware::new(parse_gpu_list("4090,5070ti").unwrap());
        hw.set_free_at_load(&[mib(23_557), mib(12_760)]).unwrap();
        assert_eq!(hw.free_at_load(1), mib(12_760));
        assert_eq!(hw.gpus[1].total, mib(16_303));
        assert_eq!(hw.set_free_at_load(&[mib(1)]), Err(DeviceError::FreeCountMismatch { free: 1, gpus: 2 }));
        assert!(matches!(
            hw.set_free_at_load(&[mib(24_564), mib(1)]),
            Err(DeviceError::FreeAboveTotal { gpu: 0, .. })
        ));
    }

    #[test]
    fn card_names() {
        for (name, expected) in [
            ("4090", "RTX 4090"),
            ("rtx 4090", "RTX 4090"),
            ("RTX-4090", "RTX 4090"),
            ("NVIDIA GeForce RTX 4090", "RTX 4090"),
            ("5070ti", "RTX 5070 Ti"),
            ("RTX 5070 Ti", "RTX 5070 Ti"),
            ("5070", "RTX 5070"),
            ("3090", "RTX 3090"),
            ("3090 Ti", "RTX 3090 Ti"),
            ("a6000", "RTX A6000"),
            ("NVIDIA RTX A6000", "RTX A6000"),
            ("h100", "H100 SXM 80GB"),
            ("NVIDIA H100 80GB HBM3", "H100 SXM 80GB"),
            ("NVIDIA H100 PCIe", "H100 PCIe 80GB"),
            ("h200", "H200"),
            ("NVIDIA H200", "H200"),
        ] {
            assert_eq!(known_card(name).map(|c| c.name), Some(expected), "{name}");
        }
        for unknown in ["", "1080", "rtx", "radeon 7900", "a"] {
            assert_eq!(known_card(unknown), None, "{unknown}");
        }
        assert_eq!(known_card("4090").unwrap().total, mib(24_564));
        assert_eq!(known_card("5070ti").unwrap().bandwidth_gbs, 896.0);
        let cc = |name| known_card(name).map(|c| c.compute_capability);
        assert_eq!(cc("4090"), Some(890));
        assert_eq!(cc("RTX 5070 Ti"), Some(1200));
        assert_eq!(cc("h200"), Some(900));
        assert_eq!(cc("3090"), Some(860));
        assert_eq!(cc("a100"), Some(800));
    }

    #[test]
    fn gpu_lists() {
        let gpus = parse_gpu_list("24564, 16303").unwrap();
        assert_eq!(gpus.len(), 2);
        assert_eq!((gpus[0].index, gpus[0].total, gpus[0].bandwidth_gbs), (0, mib(24_564), None));
        assert_eq!(gpus[1].name, "16303 GPU");
        // A bare size says nothing of the card: the memory model assumes its default.
        assert_eq!(gpus[0].compute_capability, None);
        assert_eq!(Hardware::new(gpus).gpus_at_load()[0].compute_capability, None);
        let mixed = parse_gpu_list("4090,16G:1.5G").unwrap();
        assert_eq!(mixed[0].bandwidth_gbs, Some(1008.0));
        assert_eq!((mixed[1].total, mixed[1].used_by_others), (Bytes::from_gib(16), Bytes(3 << 29)));
    }

    #[test]
    fn gpu_list_rejections() {
        let invalid = |spec: &str| match parse_gpu_list(spec) {
            Err(DeviceError::InvalidGpu { item, reason }) => (item, reason),
            other => panic!("{spec}: {other:?}"),
        };
        assert_eq!(invalid("4090,gtx1080").0, "gtx1080");
        assert_eq!(invalid("4090,gtx1080").1, "it is no card splitplan knows");
        assert_eq!(invalid("12X").1, "it is neither a size nor a known card");
        assert_eq!(invalid("4090,,5070ti").1, "it is empty");
        assert_eq!(invalid("0").1, "a GPU of 0 MiB");
        assert_eq!(invalid("4090:lots").1, "the memory after ':' is not a size");
        assert_eq!(parse_gpu_list(" "), Err(DeviceError::EmptyList { flag: "--gpu" }));
        assert!(matches!(parse_gpu_list("8000:9000"), Err(DeviceError::UsedAboveTotal { gpu: 0, .. })));
        assert_eq!(parse_gpu_list(&vec!["4090"; 17].join(",")), Err(DeviceError::TooManyGpus { count: 17 }));
        let msg = parse_gpu_list("gtx1080").unwrap_err().to_string();
        assert!(msg.starts_with("invalid GPU 'gtx1080' in --gpu: it is no card splitplan knows;"), "{msg}");
        assert!(msg.contains("\nhint: the known cards are 5090, 5080, 5070ti"), "{msg}");
    }

    #[test]
    fn free_lists() {
        assert_eq!(parse_free_list("23557,14477").unwrap(), vec![mib(23_557), mib(14_477)]);
        assert_eq!(parse_free_list("20G").unwrap(), vec![Bytes::from_gib(20)]);
        assert_eq!(parse_free_list("1,x"), Err(DeviceError::InvalidFree { item: "x".to_owned() }));
        assert_eq!(parse_free_list(""), Err(DeviceError::EmptyList { flag: "--free" }));
    }

    #[test]
    fn hardware_from_toml() {
        let hw = Hardware::from_toml(
            r#"
            [other]
            anything = 1

            [hardware]
            host_ram = "64G"
            host_bandwidth_gbs = 40
            cuda_context = 600

            [[hardware.gpu]]
            name = "4090"

            [[hardware.gpu]]
            name = "RTX 5070 Ti"
            used_by_others = 2500

            [[hardware.gpu]]
            name = "lab card"
            total = "48G"
            bandwidth_gbs = 768
            "#,
        )
        .unwrap();
        assert_eq!(hw.host_ram, Some(Bytes::from_gib(64)));
        assert_eq!(hw.host_bandwidth_gbs, Some(40.0));
        assert_eq!(hw.cuda_context, mib(600));
        assert_eq!(hw.gpus.len(), 3);
        assert_eq!((hw.gpus[0].name.as_str(), hw.gpus[0].total), ("RTX 4090", mib(24_564)));
        assert_eq!(hw.free_at_load(1), mib(16_303 - 2_500 - 600));
        assert_eq!((hw.gpus[2].index, hw.gpus[2].total), (2, Bytes::from_gib(48)));
        assert_eq!(hw.gpus[2].bandwidth_gbs, Some(768.0));
        let cc: Vec<_> = hw.gpus.iter().map(|g| g.compute_capability).collect();
        assert_eq!(cc, [Some(890), Some(1200), None]);
    }

    #[test]
    fn hardware_toml_rejections() {
        assert_eq!(Hardware::from_toml("[other]\n"), Err(DeviceError::NoHardwareSection));
        let err = Hardware::from_toml("[hardware]\n[[hardware.gpu]]\nname = \"mystery\"\n").unwrap_err();
        assert!(matches!(err, DeviceError::ConfigGpuTotal { index: 0, .. }), "{err:?}");
        let err = Hardware::from_toml("[hardware]\n[[hardware.gpu]]\ntotl = 5\n").unwrap_err();
        let DeviceError::Config { message } = err else { panic!("{err:?}") };
        assert!(message.contains("totl") && message.contains("line 3"), "{message}");
        let err = Hardware::from_toml("[hardware]\nhost_ram = \"lots\"\n").unwrap_err();
        assert_eq!(
            err,
            DeviceError::ConfigValue { what: "hardware.host_ram".to_owned(), value: "lots".to_owned() }
        );
    }

    fn detected(name: &str, bus: &str, cores: Option<u32>) -> DetectedGpu {
        DetectedGpu {
            name: name.to_owned(),
            total: mib(16_000),
            free: mib(15_000),
            pci_bus_id: bus.to_owned(),
            uuid: format!("GPU-{bus}-0000"),
            cores,
            max_sm_clock_mhz: cores.map(|_| 2_500),
            compute_capability: None,
        }
    }

    #[test]
    fn detected_compute_capability_is_nvmls_else_the_cards() {
        let card_only = detected("NVIDIA GeForce RTX 4090", "01", None);
        assert_eq!(card_only.into_gpu(0).compute_capability, Some(890));
        let read = DetectedGpu { compute_capability: Some(1210), ..detected("NVIDIA GB10", "02", None) };
        assert_eq!(read.into_gpu(1).compute_capability, Some(1210));
        assert_eq!(detected("lab card", "03", None).into_gpu(2).compute_capability, None);
    }

    #[test]
    fn cuda_order_fastest_first_and_visible_devices() {
        // The 5070 Ti on the lower bus: CUDA's default order still puts the 4090 first.
        let pci = vec![detected("5070 Ti", "01", Some(8_960)), detected("4090", "02", Some(16_384))];
        let names = |v: Vec<DetectedGpu>| v.into_iter().map(|g| g.name).collect::<Vec<_>>();
        assert_eq!(
            names(cuda_order(pci.clone(), DeviceOrder::FastestFirst, None).unwrap()),
            ["4090", "5070 Ti"]
        );
        assert_eq!(names(cuda_order(pci.clone(), DeviceOrder::PciBusId, None).unwrap()), ["5070 Ti", "4090"]);
        // Unknown speeds: PCI order.
        let unranked = vec![detected("a", "01", None), detected("b", "02", Some(1))];
        assert_eq!(names(cuda_order(unranked, DeviceOrder::FastestFirst, None).unwrap()), ["a", "b"]);
        // CUDA_VISIBLE_DEVICES indexes the CUDA order; UUID prefixes; an invalid entry ends the list.
        let order = DeviceOrder::FastestFirst;
        assert_eq!(names(cuda_order(pci.clone(), order, Some("1")).unwrap()), ["5070 Ti"]);
        assert_eq!(names(cuda_order(pci.clone(), order, Some("1,0")).unwrap()), ["5070 Ti", "4090"]);
        assert_eq!(names(cuda_order(pci.clone(), order, Some("GPU-02")).unwrap()), ["4090"]);
        assert_eq!(names(cuda_order(pci.clone(), order, Some("0,7,1")).unwrap()), ["4090"]);
        assert_eq!(names(cuda_order(pci.clone(), order, Some("0,0,1")).unwrap()), ["4090"]);
        assert!(cuda_order(pci.clone(), order, Some("")).unwrap().is_empty());
        assert_eq!(names(cuda_order(pci.clone(), order, Some("GPU-0")).unwrap()), Vec::<String>::new());
        assert_eq!(
            cuda_order(pci, order, Some("MIG-abc")),
            Err(DeviceError::MigDevice { entry: "MIG-abc".to_owned() })
        );
        assert_eq!(DeviceOrder::from_env(Some("PCI_BUS_ID")), DeviceOrder::PciBusId);
        assert_eq!(DeviceOrder::from_env(None), DeviceOrder::FastestFirst);
    }
}
