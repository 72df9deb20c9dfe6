//! `splitplan memory`: the predicted memory per device in the shape of llama.cpp's memory breakdown
//! (model, context, compute per GPU and Host), the output buffer, host RAM, and what is left of each
//! GPU's free memory. [`MemoryReport`] is the JSON schema (docs/json.md, "memory"); [`text`] and
//! [`json`] render it.
//!
//! Compute buffers are reported as not modelled until core models them: `null` in JSON,
//! "not modelled" in text, and every sum and margin that would need them says so.

use std::fmt::Write as _;

use serde::Serialize;

use super::{indent_table, table};
use crate::memory::{DeviceMemory, Location, MemoryPrediction};
use crate::plan::devices::Hardware;
use crate::settings::{ServerSettings, kv_type_name};
use crate::units::{Bytes, MIB, group_thousands};

/// The version of the JSON schema.
pub const SCHEMA_VERSION: u32 = 1;

/// The prediction for one model and configuration on one machine.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemoryReport {
    /// The llama.cpp build whose allocations are predicted.
    pub llama_cpp: String,
    /// One row per device as llama.cpp's memory breakdown lists them: the GPUs that hold something,
    /// then `Host`.
    pub devices: Vec<DeviceRow>,
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The model file (the first shard of a split model).
    pub model: String,
    /// The models.conf profile, when the model came from one.
    pub profile: Option<String>,
    /// The context llama.cpp creates.
    pub context: ContextRow,
    /// The output buffer (logits), in host memory.
    pub output_buffer: OutputRow,
    /// System RAM.
    pub host_ram: HostRow,
    /// What is left of every GPU's free memory, in CUDA order.
    pub gpus: Vec<GpuLeft>,
    /// `true` when every GPU holds what it is given with the compute buffers counted, `false` when
    /// some GPU is over even without them, `null` when only the compute buffers decide.
    pub fits: Option<bool>,
    /// Configurations the compute model is known to under-predict that this one falls in
    /// (`memory::uncalibrated`); empty for every configuration the planner emits.
    pub uncalibrated: Vec<crate::memory::Uncalibrated>,
}

/// One row of the breakdown. MiB are rounded down, as llama.cpp prints them (`bytes / 2^20`,
/// common/fit.cpp:1100-1111).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeviceRow {
    /// `CUDA0`, …, `Host`.
    pub name: String,
    /// Weights, MiB.
    pub model_mib: u64,
    /// KV cache plus recurrent state, MiB.
    pub context_mib: u64,
    /// Compute buffers, MiB; `null` while not modelled.
    pub compute_mib: Option<u64>,
    /// Weights.
    pub model_bytes: Bytes,
    /// KV cache plus recurrent state.
    pub context_bytes: Bytes,
    /// Compute buffers; `null` while not modelled.
    pub compute_bytes: Option<Bytes>,
    /// KV cache alone.
    pub kv_cache_bytes: Bytes,
    /// Recurrent state alone.
    pub recurrent_state_bytes: Bytes,
}

/// The context llama.cpp creates from the settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ContextRow {
    /// `n_ctx` after llama.cpp's padding.
    pub n_ctx: u32,
    /// Sequences (`n_seq_max`).
    pub n_seq: u32,
    /// Logical batch.
    pub n_batch: u32,
    /// Micro-batch.
    pub n_ubatch: u32,
    /// Flash attention as the caches are sized.
    pub flash_attn: bool,
    /// K cache type.
    pub cache_type_k: String,
    /// V cache type.
    pub cache_type_v: String,
    /// Sliding-window cache cells, for models with sliding-window layers.
    pub swa_size: Option<u32>,
}

/// The output buffer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutputRow {
    /// `CUDA_Host` or `CPU`.
    pub buffer_type: String,
    /// Its size at load.
    pub at_load_bytes: Bytes,
    /// Its size once a batch with the most outputs has run.
    pub peak_bytes: Bytes,
}

/// System RAM.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HostRow {
    /// llama.cpp's name for the host weights buffer: `CPU_Mapped`, `CUDA_Host`, `CPU`, `CPU_REPACK`.
    pub weights_buffer: String,
    /// Host weights resident once read.
    pub weights_bytes: Bytes,
    /// The memory-mapped span of the model files (virtual; 0 without mmap).
    pub mapped_bytes: Bytes,
    /// KV cache in host memory.
    pub kv_cache_bytes: Bytes,
    /// Recurrent state in host memory.
    pub recurrent_state_bytes: Bytes,
    /// The output buffer at its peak.
    pub output_bytes: Bytes,
    /// The host compute buffer; `null` while not modelled.
    pub compute_bytes: Option<Bytes>,
    /// Everything above that is known (compute only when modelled).
    pub known_total_bytes: Bytes,
    /// The machine's RAM, when known.
    pub ram_bytes: Option<Bytes>,
}

/// What is left of one GPU.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GpuLeft {
    /// `CUDA0`, ….
    pub name: String,
    /// Free memory at load, as llama.cpp reports it.
    pub free_at_load_bytes: Bytes,
    /// Weights, context and (when modelled) compute on it.
    pub used_bytes: Bytes,
    /// Whether `used_bytes` includes the compute buffers.
    pub compute_included: bool,
    /// `free_at_load − used`, negative when over; without compute, an upper bound.
    pub left_bytes: i64,
    /// The same in MiB, rounded toward minus infinity.
    pub left_mib: i64,
    /// What llama-server holds on this GPU outside its breakdown after its first long request
    /// (cuBLAS, the CUDA pool; calibrated: `memory::overhead`); 0 for a GPU the model does not use.
    pub beyond_breakdown_bytes: Bytes,
    /// `left_bytes − beyond_breakdown_bytes`: what survives the first long request.
    pub left_after_request_bytes: i64,
    /// The same in MiB, rounded toward minus infinity.
    pub left_after_request_mib: i64,
}

impl MemoryReport {
    /// The report for `prediction` of `model` (a path as the user gave it) with `settings` on
    /// `hardware`.
    pub fn new(
        prediction: &MemoryPrediction,
        settings: &ServerSettings,
        hardware: &Hardware,
        model: &str,
        profile: Option<&str>,
    ) -> MemoryReport {
        let devices: Vec<DeviceRow> = prediction.devices.iter().map(device_row).collect();
        let gpus: Vec<GpuLeft> = hardware
            .gpus
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let d = prediction.devices.iter().find(|d| d.location == Location::Gpu(i));
                let compute = d.map(|d| d.compute.bytes());
                let compute_included = !matches!(compute, Some(None));
                let used = d.map_or(Bytes::ZERO, DeviceMemory::known_total);
                let free = hardware.free_at_load(i);
                let left = free.signed_sub(used);
                let beyond = d
                    .filter(|d| d.known_total() > Bytes::ZERO)
                    .and_then(|d| d.beyond_breakdown)
                    .map_or(Bytes::ZERO, |o| o.after_request);
                let after = left.saturating_sub(i64::try_from(beyond.get()).unwrap_or(i64::MAX));
                let per_mib = i64::try_from(MIB).unwrap_or(i64::MAX);
                GpuLeft {
                    name: g.backend_name(),
                    free_at_load_bytes: free,
                    used_bytes: used,
                    compute_included,
                    left_bytes: left,
                    left_mib: left.div_euclid(per_mib),
                    beyond_breakdown_bytes: beyond,
                    left_after_request_bytes: after,
                    left_after_request_mib: after.div_euclid(per_mib),
                }
            })
            .collect();
        let fits = if gpus.iter().any(|g| g.left_after_request_bytes < 0) {
            Some(false)
        } else if gpus.iter().all(|g| g.compute_included) {
            Some(true)
        } else {
            None
        };
        let c = &prediction.context;
        let h = &prediction.host;
        MemoryReport {
            llama_cpp: crate::LLAMA_CPP_BUILD.to_string(),
            devices,
            schema_version: SCHEMA_VERSION,
            model: model.to_owned(),
            profile: profile.map(str::to_owned),
            context: ContextRow {
                n_ctx: c.n_ctx,
                n_seq: c.n_seq,
                n_batch: c.n_batch,
                n_ubatch: c.n_ubatch,
                flash_attn: c.flash_attn,
                cache_type_k: kv_type_name(settings.cache_type_k),
                cache_type_v: kv_type_name(settings.cache_type_v),
                swa_size: c.swa_size,
            },
            output_buffer: OutputRow {
                buffer_type: prediction.output.buffer_type.clone(),
                at_load_bytes: prediction.output.at_load,
                peak_bytes: prediction.output.peak,
            },
            host_ram: HostRow {
                weights_buffer: h.weights_buffer_name.clone(),
                weights_bytes: h.weights_resident,
                mapped_bytes: h.weights_mapped_total(),
                kv_cache_bytes: h.kv_cache,
                recurrent_state_bytes: h.recurrent_state,
                output_bytes: h.output_buffer,
                compute_bytes: h.compute.bytes(),
                known_total_bytes: h.known_total(),
                ram_bytes: hardware.host_ram,
            },
            gpus,
            fits,
            uncalibrated: Vec::new(),
        }
    }
}

fn device_row(d: &DeviceMemory) -> DeviceRow {
    let mib = d.mib();
    DeviceRow {
        name: d.name.clone(),
        model_mib: mib.weights,
        context_mib: mib.context,
        compute_mib: mib.compute,
        model_bytes: d.weights,
        context_bytes: d.context(),
        compute_bytes: d.compute.bytes(),
        kv_cache_bytes: d.kv_cache,
        recurrent_state_bytes: d.recurrent_state,
    }
}

/// The report as JSON (docs/json.md, "memory").
pub fn json(report: &MemoryReport) -> String {
    super::json(report)
}

fn mib(b: Bytes) -> String {
    group_thousands(b.mib_floor())
}

fn signed_mib(m: i64) -> String {
    let s = group_thousands(m.unsigned_abs());
    if m < 0 { format!("-{s}") } else { s }
}

/// The report as text: the breakdown table (MiB, rounded down as llama.cpp rounds them), then what
/// is left per GPU, the output buffer, host RAM and the context.
#[allow(clippy::many_single_char_names)] // short names keep the table-building lines readable
pub fn text(r: &MemoryReport) -> String {
    let mut out = String::new();
    let compute_missing = r.devices.iter().any(|d| d.compute_bytes.is_none());
    let _ = writeln!(
        out,
        "memory breakdown (MiB, as llama.cpp {} prints it){}",
        r.llama_cpp,
        if compute_missing { "; compute buffers are not modelled yet, so sums leave them out" } else { "" }
    );
    let mut t = table(&["device", "model", "context", "compute", "sum"], &[1, 2, 3, 4]);
    for d in &r.devices {
        let sum = d.model_bytes + d.context_bytes + d.compute_bytes.unwrap_or(Bytes::ZERO);
        t.add_row(vec![
            d.name.clone(),
            group_thousands(d.model_mib),
            group_thousands(d.context_mib),
            d.compute_mib.map_or_else(|| "not modelled".to_owned(), group_thousands),
            if d.compute_bytes.is_some() { mib(sum) } else { format!("{} + compute", mib(sum)) },
        ]);
    }
    out.push_str(&indent_table(&t, "  "));

    if !r.gpus.is_empty() {
        out.push_str("\nfree memory left per GPU (MiB)\n");
        let mut t = table(
            &["device", "free at load", "used", "left", "beyond breakdown*", "left after a long request"],
            &[1, 2, 3, 4, 5],
        );
        for g in &r.gpus {
            let (used, left, after) = if g.compute_included {
                (mib(g.used_bytes), signed_mib(g.left_mib), signed_mib(g.left_after_request_mib))
            } else {
                (
                    format!("{} + compute", mib(g.used_bytes)),
                    format!("{} - compute", signed_mib(g.left_mib)),
                    format!("{} - compute", signed_mib(g.left_after_request_mib)),
                )
            };
            t.add_row(vec![
                g.name.clone(),
                mib(g.free_at_load_bytes),
                used,
                left,
                mib(g.beyond_breakdown_bytes),
                after,
            ]);
        }
        out.push_str(&indent_table(&t, "  "));
        out.push_str(
            "  * what llama-server holds outside its own breakdown after its first long request (cuBLAS, the\n    \
             CUDA pool); calibrated on llama.cpp 11434 (docs/accuracy.md)\n",
        );
    }

    let o = &r.output_buffer;
    let _ = writeln!(
        out,
        "\noutput buffer  {} (host): {} at load, {} at its peak",
        o.buffer_type, o.at_load_bytes, o.peak_bytes
    );
    let h = &r.host_ram;
    let mut host = format!("weights {} MiB ({})", mib(h.weights_bytes), h.weights_buffer);
    if h.mapped_bytes > Bytes::ZERO {
        let _ = write!(host, ", {} MiB of the files mapped", mib(h.mapped_bytes));
    }
    let _ = write!(
        host,
        ", KV {} MiB, recurrent {} MiB, output {} MiB, compute {}; known total {} MiB",
        mib(h.kv_cache_bytes),
        mib(h.recurrent_state_bytes),
        mib(h.output_bytes),
        h.compute_bytes.map_or_else(|| "not modelled".to_owned(), |b| format!("{} MiB", mib(b))),
        mib(h.known_total_bytes),
    );
    if let Some(ram) = h.ram_bytes {
        let _ = write!(host, " of {} MiB", mib(ram));
    }
    let _ = writeln!(out, "host RAM       {host}");
    let c = &r.context;
    let mut ctx = format!(
        "{} tokens, {} sequence(s), batch {}, micro-batch {}, flash attention {}, KV cache {}/{}",
        group_thousands(u64::from(c.n_ctx)),
        c.n_seq,
        c.n_batch,
        c.n_ubatch,
        if c.flash_attn { "on" } else { "off" },
        c.cache_type_k,
        c.cache_type_v
    );
    if let Some(swa) = c.swa_size {
        let _ = write!(ctx, ", sliding-window cache {} cells", group_thousands(u64::from(swa)));
    }
    let _ = writeln!(out, "context        {ctx}");
    out
}
