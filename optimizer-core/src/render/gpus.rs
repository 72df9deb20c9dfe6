//! `splitplan gpus`: the GPUs and host a plan would be for. [`GpusReport`] is the JSON schema
//! (docs/json.md, "gpus"); [`text`] and [`json`] render it.

use std::fmt::Write as _;

use serde::Serialize;

use super::{indent_table, table};
use crate::plan::devices::Hardware;
use crate::units::{Bytes, group_thousands};

/// The version of the JSON schema.
pub const SCHEMA_VERSION: u32 = 1;

/// Where the description of the machine came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceSource {
    /// Read through NVML just now.
    Nvml,
    /// `--gpu` (and possibly `--free`).
    GpuFlag,
    /// `--free` alone.
    FreeFlag,
    /// The `[hardware]` section of a config file.
    Config,
}

impl DeviceSource {
    fn describe(self) -> &'static str {
        match self {
            DeviceSource::Nvml => "read through NVML",
            DeviceSource::GpuFlag => "described by --gpu",
            DeviceSource::FreeFlag => "described by --free (free memory as llama.cpp reports it)",
            DeviceSource::Config => "described in the config's [hardware] section",
        }
    }
}

/// The machine, with what llama.cpp would see free on each GPU.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GpusReport {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Where the description came from.
    pub source: DeviceSource,
    /// The config file, when one was read.
    pub config: Option<String>,
    /// The GPUs in CUDA order.
    pub gpus: Vec<GpuRow>,
    /// System RAM, when known.
    pub host_ram: Option<Bytes>,
    /// System RAM bandwidth, GB/s, when known.
    pub host_bandwidth_gbs: Option<f64>,
    /// The CUDA context overhead subtracted from every GPU's free memory.
    pub cuda_context: Bytes,
}

/// One GPU.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GpuRow {
    /// The CUDA index.
    pub index: usize,
    /// llama.cpp's device name, `CUDA0`, ….
    pub device: String,
    /// The card.
    pub name: String,
    /// The PCI bus id, when read through NVML (llama.cpp prints it in its `using device` line).
    pub pci_bus_id: Option<String>,
    /// The card's memory.
    pub total: Bytes,
    /// Memory not free before llama.cpp starts.
    pub used_by_others: Bytes,
    /// NVML's free memory, when read or given.
    pub free_now: Option<Bytes>,
    /// What llama.cpp would report free at load ([`Hardware::free_at_load`]).
    pub free_at_load: Bytes,
    /// Memory bandwidth, GB/s, when known.
    pub bandwidth_gbs: Option<f64>,
    /// The CUDA compute capability as ggml encodes it (890 for 8.9), when known.
    pub compute_capability: Option<u32>,
}

impl GpusReport {
    /// The report for `hardware`; `pci_bus_ids` lines up with `hardware.gpus` (empty when unknown).
    pub fn new(
        hardware: &Hardware,
        source: DeviceSource,
        config: Option<String>,
        pci_bus_ids: &[String],
    ) -> GpusReport {
        let gpus = hardware
            .gpus
            .iter()
            .enumerate()
            .map(|(i, g)| GpuRow {
                index: g.index,
                device: g.backend_name(),
                name: g.name.clone(),
                pci_bus_id: pci_bus_ids.get(i).cloned(),
                total: g.total,
                used_by_others: g.used_by_others,
                free_now: g.free_now,
                free_at_load: hardware.free_at_load(i),
                bandwidth_gbs: g.bandwidth_gbs,
                compute_capability: g.compute_capability,
            })
            .collect();
        GpusReport {
            schema_version: SCHEMA_VERSION,
            source,
            config,
            gpus,
            host_ram: hardware.host_ram,
            host_bandwidth_gbs: hardware.host_bandwidth_gbs,
            cuda_context: hardware.cuda_context,
        }
    }
}

/// The report as JSON (docs/json.md, "gpus").
pub fn json(report: &GpusReport) -> String {
    super::json(report)
}

fn mib(b: Bytes) -> String {
    group_thousands(b.mib_floor())
}

fn gbs(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"))
}

/// The report as text: one line per GPU (MiB as `nvidia-smi` and llama.cpp print them), then the host.
pub fn text(r: &GpusReport) -> String {
    let mut out = format!("GPUs {}", r.source.describe());
    if let Some(c) = &r.config {
        let _ = write!(out, " ({c})");
    }
    out.push('\n');
    if r.gpus.is_empty() {
        out.push_str("  no GPU\n");
    } else {
        let pci = r.gpus.iter().any(|g| g.pci_bus_id.is_some());
        let mut header = vec!["device", "name"];
        if pci {
            header.push("PCI bus");
        }
        header.extend(["total MiB", "others MiB", "free now MiB", "free at load MiB", "GB/s"]);
        let first_number = if pci { 3 } else { 2 };
        let right: Vec<usize> = (first_number..header.len()).collect();
        let mut t = table(&header, &right);
        for g in &r.gpus {
            let mut row = vec![g.device.clone(), g.name.clone()];
            if pci {
                row.push(g.pci_bus_id.clone().unwrap_or_else(|| "-".to_owned()));
            }
            row.extend([
                mib(g.total),
                mib(g.used_by_others),
                g.free_now.map_or_else(|| "-".to_owned(), mib),
                mib(g.free_at_load),
                gbs(g.bandwidth_gbs),
            ]);
            t.add_row(row);
        }
        out.push_str(&indent_table(&t, "  "));
        let _ = writeln!(
            out,
            "  free at load: what llama.cpp reports free when it loads a model, after its CUDA context ({} MiB)",
            mib(r.cuda_context)
        );
    }
    let ram = r.host_ram.map_or_else(|| "unknown".to_owned(), |b| format!("{} MiB", mib(b)));
    let _ = write!(out, "host RAM {ram}");
    if let Some(b) = r.host_bandwidth_gbs {
        let _ = write!(out, ", {b:.0} GB/s");
    }
    out.push('\n');
    out
}
