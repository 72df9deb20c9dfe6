//! What a launch measured, per GPU: the buffers llama.cpp logged, the memory in use at the peak of
//! the worst-case request (NVML, or the breakdown printed at exit when NVML is not there), what
//! was left, and the overhead beyond the breakdown; compared with what was predicted; and the
//! results table of advice_test_plan.md filled in.

use std::fmt::Write as _;

use serde::Serialize;

use super::log::{BufferKind, FitLayers, GraphSplits, LaunchLog, Rate};
use crate::units::{Bytes, group_thousands};

/// One GPU as NVML saw it during a launch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GpuReading {
    /// NVML's name (`NVIDIA GeForce RTX 4090`).
    pub name: String,
    /// PCI bus id as NVML prints it (`00000000:01:00.0`).
    pub pci_bus_id: Option<String>,
    /// Total memory.
    pub total: Bytes,
    /// Free memory just before the launch.
    pub free_before: Bytes,
    /// The highest memory in use (all processes) sampled during the worst-case request.
    pub peak_used: Bytes,
}

/// Where the peak numbers come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeakSource {
    /// NVML, sampled during the worst-case request.
    Nvml,
    /// The memory breakdown llama-server printed at exit (after the request).
    Breakdown,
    /// Neither was available.
    None,
}

/// What one GPU held and had left.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceMeasurement {
    /// llama.cpp's name (`CUDA0`).
    pub device: String,
    /// The card (`NVIDIA GeForce RTX 4090`).
    pub gpu_name: String,
    /// Total memory, when known.
    pub total: Option<Bytes>,
    /// Free memory llama.cpp logged when loading started (after its own CUDA context).
    pub free_at_load: Option<Bytes>,
    /// Weights.
    pub model: Bytes,
    /// KV cache.
    pub kv: Bytes,
    /// Recurrent state.
    pub rs: Bytes,
    /// Compute buffers.
    pub compute: Bytes,
    /// Output buffer.
    pub output: Bytes,
    /// Memory in use on the whole GPU at the peak.
    pub peak_used: Option<Bytes>,
    /// Free memory at the peak: what was left.
    pub left: Option<Bytes>,
    /// Memory this server used beyond its logged buffers at the peak: `free_at_load - left -
    /// buffers` (pool growth, cuBLAS workspace), when known.
    pub overhead: Option<Bytes>,
    /// Where `peak_used` and `left` come from.
    pub source: PeakSource,
}

impl DeviceMeasurement {
    /// Every buffer llama.cpp logged on this device.
    pub fn buffers(&self) -> Bytes {
        self.model + self.kv + self.rs + self.compute + self.output
    }

    /// What this server used at the peak: its buffers plus the overhead (or the buffers alone).
    pub fn used_by_server(&self) -> Bytes {
        self.buffers() + self.overhead.unwrap_or(Bytes::ZERO)
    }
}

/// Everything one launch measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Measurement {
    /// Per GPU, in llama.cpp's order.
    pub devices: Vec<DeviceMeasurement>,
    /// The graph splits line.
    pub graph: Option<GraphSplits>,
    /// Prompt processing of the worst-case request.
    pub prompt: Option<Rate>,
    /// Generation after it.
    pub decode: Option<Rate>,
    /// The speed runs after the worst-case request ([`SPEED_PROMPT_TOKENS`],
    /// [`SPEED_PREDICT_TOKENS`]), in order; empty when none were made.
    pub speed: Vec<SpeedRun>,
}

/// The prompt of each speed run, in tokens: llama-bench's `pp512`.
pub const SPEED_PROMPT_TOKENS: u64 = 512;

/// The tokens each speed run generates: enough for a stable decode rate (issue 5 asks for
/// requests of at least 256 tokens).
pub const SPEED_PREDICT_TOKENS: u64 = 256;

/// One speed run: a short prompt, then [`SPEED_PREDICT_TOKENS`] generated tokens.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SpeedRun {
    /// Prompt processing.
    pub prompt: Option<Rate>,
    /// Generation.
    pub decode: Option<Rate>,
}

/// The median of the values (the mean of the middle two for an even count); `None` when empty.
pub fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { f64::midpoint(v[n / 2 - 1], v[n / 2]) })
}

impl Measurement {
    /// This measurement with the speed runs made after its worst-case request.
    #[must_use]
    pub fn with_speed(mut self, runs: &[SpeedRun]) -> Measurement {
        self.speed = runs.to_vec();
        self
    }

    /// The median decode rate of the speed runs, tokens per second.
    pub fn decode_median(&self) -> Option<f64> {
        median(self.speed.iter().filter_map(|r| r.decode.map(|d| d.per_second)))
    }

    /// The median prompt rate of the speed runs, tokens per second.
    pub fn prompt_median(&self) -> Option<f64> {
        median(self.speed.iter().filter_map(|r| r.prompt.map(|p| p.per_second)))
    }
}

/// Builds the measurement of a launch from its log, the NVML readings (in NVML order, matched to
/// llama.cpp's devices by PCI bus id, else by position) and the request's timings.
pub fn measure(
    log: &LaunchLog,
    nvml: &[GpuReading],
    prompt: Option<Rate>,
    decode: Option<Rate>,
) -> Measurement {
    let exit = log.exit_breakdown();
    let devices = log
        .model_devices
        .iter()
        .enumerate()
        .map(|(i, dev)| {
            let reading = dev
                .pci_bus_id
                .as_deref()
                .and_then(|id| nvml.iter().find(|r| r.pci_bus_id.as_deref().is_some_and(|n| same_pci(n, id))))
                .or_else(|| nvml.get(i));
            let row = exit.and_then(|b| b.row(&dev.name));
            let buffers = |kind| log.buffer_total(&dev.name, kind);
            let (total, peak_used, left, source) = match (reading, row) {
                (Some(r), _) => (
                    Some(r.total),
                    Some(r.peak_used),
                    Some(r.total.saturating_sub(r.peak_used)),
                    PeakSource::Nvml,
                ),
                (None, Some(row)) => (
                    row.total,
                    row.total.zip(row.free).map(|(t, f)| t.saturating_sub(f)),
                    row.free,
                    PeakSource::Breakdown,
                ),
                (None, None) => (None, None, None, PeakSource::None),
            };
            let mut m = DeviceMeasurement {
                device: dev.name.clone(),
                gpu_name: reading.map_or_else(|| dev.description.clone(), |r| r.name.clone()),
                total,
                free_at_load: Some(dev.free),
                model: buffers(BufferKind::Model),
                kv: buffers(BufferKind::Kv),
                rs: buffers(BufferKind::Rs),
                compute: buffers(BufferKind::Compute),
                output: buffers(BufferKind::Output),
                peak_used,
                left,
                overhead: None,
                source,
            };
            m.overhead = left.map(|l| dev.free.saturating_sub(l).saturating_sub(m.buffers()));
            m
        })
        .collect();
    Measurement { devices, graph: log.graph, prompt, decode, speed: Vec::new() }
}

/// NVML prints `00000000:01:00.0`, llama.cpp `0000:01:00.0`: compare without the domain.
fn same_pci(a: &str, b: &str) -> bool {
    let strip = |s: &str| s.split_once(':').map_or(s, |(_, rest)| rest).to_ascii_lowercase();
    strip(a) == strip(b)
}

/// A prediction that missed by more than the margin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Discrepancy {
    /// The GPU.
    pub device: String,
    /// Predicted use.
    pub predicted: Bytes,
    /// Measured use by the server at the peak (buffers plus overhead).
    pub measured: Bytes,
    /// The margin it was held to.
    pub margin: Bytes,
}

impl Discrepancy {
    /// Measured minus predicted, in bytes.
    pub fn error(&self) -> i64 {
        self.measured.signed_sub(self.predicted)
    }
}

/// Compares the predicted use per GPU (the ladder's order) with what was measured; returns the
/// GPUs where they differ by more than that GPU's margin.
pub fn compare(predicted: &[Bytes], measured: &Measurement, margins: &[Bytes]) -> Vec<Discrepancy> {
    predicted
        .iter()
        .zip(&measured.devices)
        .enumerate()
        .filter(|(_, (_, d))| d.overhead.is_some())
        .filter_map(|(i, (&p, d))| {
            let margin = margins.get(i).or(margins.last()).copied().unwrap_or(Bytes::ZERO);
            let m = d.used_by_server();
            let off = m.signed_sub(p).unsigned_abs();
            (off > margin.get()).then(|| Discrepancy {
                device: d.device.clone(),
                predicted: p,
                measured: m,
                margin,
            })
        })
        .collect()
}

/// The facts of a confirmed placement for the results table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TestResult {
    /// Which suggestion or rung this is (`Suggestion A (aggressive)`).
    pub title: String,
    /// Launches used by the search.
    pub launches: usize,
    /// The out-of-memory failures seen on the way, in words.
    pub ooms: Vec<String>,
    /// What the proven launch measured.
    pub measurement: Measurement,
    /// How much of the context the worst-case request filled, in tokens.
    pub request_tokens: u64,
    /// The configured context.
    pub ctx_size: u32,
    /// Anything else worth writing down.
    pub notes: Vec<String>,
}

/// The results table of advice_test_plan.md (BRIEF.md; examples/advice_test_plan.md), filled in,
/// under a level-4 heading.
pub fn render_results_table(result: &TestResult) -> String {
    results_table(4, &result.title, &results_rows(result))
}

/// The results table of a confirmed placement under a heading of `level` with `title` (the
/// title inside `result` is not used): the form advice_test_plan.md takes.
pub fn render_results_section(level: usize, title: &str, result: &TestResult) -> String {
    results_table(level, title, &results_rows(result))
}

/// The results table with nothing measured yet, for the user (or `confirm`) to fill in: the same
/// heading and rows as [`render_results_table`], the values empty. `level` is the heading's level
/// (4: `####`).
pub fn render_empty_results_table(level: usize, title: &str, devices: &[String]) -> String {
    let mut rows: Vec<(String, String)> = vec![("Launches used".to_string(), String::new())];
    rows.extend(devices.iter().map(|d| (format!("{d} VRAM (MiB / %)"), String::new())));
    for label in ["Graph splits", "Speed (t/s)", "OOM?", "Notes"] {
        rows.push((label.to_string(), String::new()));
    }
    results_table(level, title, &rows)
}

fn results_table(level: usize, title: &str, rows: &[(String, String)]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{} {title}", "#".repeat(level.clamp(1, 6)));
    s.push_str("| Metric | Value |\n|--------|-------|\n");
    for (label, value) in rows {
        if value.is_empty() {
            let _ = writeln!(s, "| {label} | |");
        } else {
            let _ = writeln!(s, "| {label} | {value} |");
        }
    }
    s
}

/// The rows of a filled-in results table, label and value.
fn results_rows(result: &TestResult) -> Vec<(String, String)> {
    let mut rows = vec![("Launches used".to_string(), result.launches.to_string())];
    for d in &result.measurement.devices {
        let value = match (d.peak_used, d.total) {
            (Some(used), Some(total)) if total.get() > 0 => {
                let pct = used.get() as f64 * 100.0 / total.get() as f64;
                let left = d
                    .left
                    .map_or(String::new(), |l| format!(", {} MiB left", group_thousands(l.mib_floor())));
                format!("{} MiB / {pct:.1}%{left}", group_thousands(used.mib_floor()))
            }
            _ => "not measured".to_string(),
        };
        let how = match d.source {
            PeakSource::Nvml => " (peak, NVML)",
            PeakSource::Breakdown => " (at exit)",
            PeakSource::None => "",
        };
        rows.push((format!("{} VRAM (MiB / %){how}", d.device), value));
    }
    let splits = result.measurement.graph.map_or_else(
        || "not logged".to_string(),
        |g| {
            if g.pp_splits == g.tg_splits {
                g.pp_splits.to_string()
            } else {
                format!("{} (prompt) / {} (decode)", g.pp_splits, g.tg_splits)
            }
        },
    );
    rows.push(("Graph splits".to_string(), splits));
    let speed = speed_cell(&result.measurement);
    rows.push(("Speed (t/s)".to_string(), speed));
    let oom = if result.ooms.is_empty() { "no".to_string() } else { result.ooms.join("; ") };
    rows.push(("OOM?".to_string(), oom));
    let mut notes = vec![format!(
        "worst-case request: {} of {} context tokens",
        group_thousands(result.request_tokens),
        group_thousands(u64::from(result.ctx_size))
    )];
    notes.extend(result.notes.iter().cloned());
    rows.push(("Notes".to_string(), notes.join("; ").replace('|', "\\|")));
    rows
}

/// The speed cell of a results table: the medians of the speed runs when there were any (with the
/// worst-case prompt's rate beside them), else the worst-case request's own rates.
fn speed_cell(m: &Measurement) -> String {
    let worst_prompt = m.prompt.map(|p| {
        format!("worst-case prompt {:.0} t/s over {} tokens", p.per_second, group_thousands(p.tokens))
    });
    match (m.decode_median(), m.prompt_median()) {
        (Some(d), Some(p)) => {
            let mut s = format!(
                "{d:.1} decode, {p:.0} prompt (medians of {} runs: {SPEED_PROMPT_TOKENS}-token prompt, \
                 {SPEED_PREDICT_TOKENS} generated)",
                m.speed.len()
            );
            if let Some(w) = worst_prompt {
                s.push_str("; ");
                s.push_str(&w);
            }
            s
        }
        _ => match (m.decode, m.prompt) {
            (Some(d), Some(p)) => format!("{:.1} decode, {:.1} prompt", d.per_second, p.per_second),
            (Some(d), None) => format!("{:.1} decode", d.per_second),
            _ => "not measured".to_string(),
        },
    }
}

/// llama.cpp's `--fit` measured beside a proven placement on the same machine (`confirm
/// --compare-fit`): the proven launch, then `--fit`, then the proven placement again, so that the
/// speed runs alternate.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FitComparison {
    /// The proven placement, in words.
    pub placement: String,
    /// The proven launch's measurement, with the speed runs of both of its launches.
    pub plan: Measurement,
    /// What `--fit` chose per device, from its log; empty when it logged nothing.
    pub fit_choice: Vec<FitLayers>,
    /// The `--fit` launch's measurement, when it loaded and survived the worst-case request.
    pub fit: Option<Measurement>,
    /// How the `--fit` launch ended, in words (`fits`, or the failure).
    pub fit_result: String,
}

/// `--fit`'s choice in words: `CUDA0 19 layers (1 overflowing), CUDA1 30 layers (23 overflowing)`;
/// the last line per device wins (earlier ones are its probes).
pub fn describe_fit_choice(choice: &[FitLayers]) -> String {
    let mut last: Vec<&FitLayers> = Vec::new();
    for f in choice {
        match last.iter_mut().find(|l| l.device == f.device) {
            Some(l) => *l = f,
            None => last.push(f),
        }
    }
    if last.is_empty() {
        return "not logged".to_string();
    }
    last.sort_by(|a, b| a.device.cmp(&b.device));
    last.iter()
        .map(|f| {
            let over =
                if f.overflowing > 0 { format!(" ({} overflowing)", f.overflowing) } else { String::new() };
            format!("{} {} layers{over}", f.device, f.layers)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `--fit` placed: its layer counts, or, when it loaded without logging any (its targets were
/// met by llama.cpp's default placement: common/fit.cpp "no changes needed"), that.
fn fit_placement(c: &FitComparison) -> String {
    if c.fit_choice.is_empty() && c.fit.is_some() {
        return "llama.cpp's default placement (--fit changed nothing)".to_string();
    }
    describe_fit_choice(&c.fit_choice)
}

/// The comparison as a Markdown table: one row per fact, the proven placement beside `--fit`.
pub fn render_fit_comparison(c: &FitComparison) -> String {
    let mut rows: Vec<(String, String, String)> = vec![
        ("Placement".to_string(), c.placement.clone(), fit_placement(c)),
        ("Result".to_string(), "fits".to_string(), c.fit_result.clone()),
    ];
    let left = |m: Option<&Measurement>, device: &str| {
        m.and_then(|m| m.devices.iter().find(|d| d.device == device))
            .and_then(|d| d.left)
            .map_or_else(|| "not measured".to_string(), |l| format!("{} MiB", group_thousands(l.mib_floor())))
    };
    for d in &c.plan.devices {
        rows.push((
            format!("{} left at the peak", d.device),
            left(Some(&c.plan), &d.device),
            left(c.fit.as_ref(), &d.device),
        ));
    }
    let rate = |v: Option<f64>, digits: usize, n: usize| {
        v.map_or_else(|| "not measured".to_string(), |v| format!("{v:.digits$} (median of {n})"))
    };
    let runs = |m: Option<&Measurement>| m.map_or(0, |m| m.speed.len());
    rows.push((
        "Decode (t/s)".to_string(),
        rate(c.plan.decode_median(), 1, runs(Some(&c.plan))),
        rate(c.fit.as_ref().and_then(Measurement::decode_median), 1, runs(c.fit.as_ref())),
    ));
    rows.push((
        "Prompt (t/s)".to_string(),
        rate(c.plan.prompt_median(), 0, runs(Some(&c.plan))),
        rate(c.fit.as_ref().and_then(Measurement::prompt_median), 0, runs(c.fit.as_ref())),
    ));
    let worst = |m: Option<&Measurement>| {
        m.and_then(|m| m.prompt).map_or_else(
            || "not measured".to_string(),
            |p| format!("{:.0} over {} tokens", p.per_second, group_thousands(p.tokens)),
        )
    };
    rows.push(("Worst-case prompt (t/s)".to_string(), worst(Some(&c.plan)), worst(c.fit.as_ref())));
    let splits = |m: Option<&Measurement>| {
        m.and_then(|m| m.graph).map_or_else(|| "not logged".to_string(), |g| g.pp_splits.to_string())
    };
    rows.push(("Graph splits".to_string(), splits(Some(&c.plan)), splits(c.fit.as_ref())));
    let mut s = String::from("| | splitplan | llama.cpp --fit |\n|---|---|---|\n");
    for (label, a, b) in rows {
        let _ = writeln!(s, "| {label} | {} | {} |", a.replace('|', "\\|"), b.replace('|', "\\|"));
    }
    s
}
