//! Where command-line arguments become core types, and nowhere else: device descriptions become a
//! [`Hardware`], llama-server flags go through core's one settings parser. Commands receive what
//! this module returns, never clap's structs' raw strings.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow};
use optimizer_core::plan::devices::{self, DeviceOrder, Hardware};
use optimizer_core::render::gpus::DeviceSource;
use optimizer_core::units::Bytes;

use crate::cli::DeviceArgs;
use crate::devices as machine;

/// The machine a command works for, and where its description came from.
#[derive(Debug)]
pub struct Machine {
    /// GPUs and host.
    pub hardware: Hardware,
    /// Where the GPUs came from.
    pub source: DeviceSource,
    /// The config file read, if one was.
    pub config: Option<PathBuf>,
    /// PCI bus ids, one per GPU, when read through NVML.
    pub pci_bus_ids: Vec<String>,
    /// What is worth telling on stderr (why NVML was not used, ...).
    pub notes: Vec<String>,
}

/// The machine, as the arguments describe it or as NVML finds it; see `splitplan gpus --help` for
/// the order in which the sources are tried.
pub fn machine(args: &DeviceArgs) -> Result<Machine> {
    let cuda_context = args
        .cuda_context
        .as_deref()
        .map(|s| Bytes::parse_mib_default(s).with_context(|| "invalid value for --cuda-context".to_owned()))
        .transpose()?;
    let mut m = described(args, cuda_context)?;
    if m.hardware.host_ram.is_none() {
        m.hardware.host_ram = machine::host_ram();
    }
    Ok(m)
}

fn described(args: &DeviceArgs, cuda_context: Option<Bytes>) -> Result<Machine> {
    let ctx = cuda_context.unwrap_or(devices::CUDA_CONTEXT_OVERHEAD);
    let plain = |hardware, source| Machine {
        hardware,
        source,
        config: None,
        pci_bus_ids: Vec::new(),
        notes: Vec::new(),
    };
    let free = args.free.as_deref().map(devices::parse_free_list).transpose()?;
    if let Some(spec) = &args.gpu {
        let mut hw = Hardware::new(devices::parse_gpu_list(spec)?).with_cuda_context(ctx);
        if let Some(free) = &free {
            hw.set_free_at_load(free)?;
        }
        return Ok(plain(hw, DeviceSource::GpuFlag));
    }
    if let Some(free) = &free {
        return Ok(plain(Hardware::from_free_at_load(free, ctx)?, DeviceSource::FreeFlag));
    }
    if let Some(path) = &args.config {
        return from_config(path, cuda_context);
    }
    let mut notes = Vec::new();
    let nvml_problem = if args.no_nvml {
        "NVML not tried (--no-nvml)".to_owned()
    } else {
        match machine::read_nvml() {
            Ok(found) => {
                let env = |name: &str| std::env::var(name).ok();
                let order = DeviceOrder::from_env(env("CUDA_DEVICE_ORDER").as_deref());
                let visible = env("CUDA_VISIBLE_DEVICES");
                let ordered = devices::cuda_order(found, order, visible.as_deref())?;
                if ordered.is_empty() {
                    if visible.is_some() {
                        "NVML found no GPU that CUDA_VISIBLE_DEVICES shows"
                    } else {
                        "NVML found no GPU"
                    }
                    .to_owned()
                } else {
                    let pci_bus_ids = ordered.iter().map(|g| g.pci_bus_id.clone()).collect();
                    let gpus = ordered.into_iter().enumerate().map(|(i, g)| g.into_gpu(i)).collect();
                    let hardware = Hardware::new(gpus).with_cuda_context(ctx);
                    return Ok(Machine {
                        hardware,
                        source: DeviceSource::Nvml,
                        config: None,
                        pci_bus_ids,
                        notes,
                    });
                }
            }
            Err(e) => format!("{e:#}"),
        }
    };
    if let Some(path) = default_config().filter(|p| p.is_file()) {
        notes.push(format!("{nvml_problem}; using the [hardware] section of {}", path.display()));
        let mut m = from_config(&path, cuda_context)?;
        m.notes = notes;
        return Ok(m);
    }
    Err(anyhow!(
        "no GPU found and none described: {nvml_problem}\n\
         hint: give the free memory llama.cpp reports at load with --free (e.g. --free 23557,14477), \
         or the cards with --gpu (e.g. --gpu 4090,5070ti:2500)"
    ))
}

fn from_config(path: &Path, cuda_context: Option<Bytes>) -> Result<Machine> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read the config {}", path.display()))?;
    let mut hardware =
        Hardware::from_toml(&text).with_context(|| format!("invalid config {}", path.display()))?;
    if let Some(c) = cuda_context {
        hardware.cuda_context = c;
    }
    Ok(Machine {
        hardware,
        source: DeviceSource::Config,
        config: Some(path.to_owned()),
        pci_bus_ids: Vec::new(),
        notes: Vec::new(),
    })
}

/// `$XDG_CONFIG_HOME/splitplan/config.toml`, else `~/.config/splitplan/config.toml`.
fn default_config() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = var("XDG_CONFIG_HOME").or_else(|| var("HOME").map(|h| h.join(".config")))?;
    Some(base.join("splitplan").join("config.toml"))
}
