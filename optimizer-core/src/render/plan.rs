//! The plan command's report: both plans and llama.cpp's `--fit` beside them. [`PlanReport`] is the
//! JSON schema (docs/json.md, "plan"); [`json`] and [`text`] render it.

use std::fmt::Write as _;

use serde::Serialize;

use crate::model::{ExpertPart, ModelDescription};
use crate::plan::{
    ContextStep, Device, Evaluation, FitPlan, FitStatus, Hardware, Pins, Plan, PlanKind, PlanSet, Speed,
    expert_parts,
};
use crate::settings::ServerSettings;
use crate::units::{Bytes, MIB, group_thousands};

use super::bar::{self, BarParts};
use super::command::{fit_target_args, server_command, shell_word};
use super::{indent_table, table};

/// The version of the JSON schema.
pub const SCHEMA_VERSION: u32 = 1;

/// Both plans and what `--fit` would do.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlanReport {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// `general.name`.
    pub model: Option<String>,
    /// The models.conf profile planned, when one was.
    pub profile: Option<String>,
    /// The context the plans are for.
    pub n_ctx: u32,
    /// The GPUs planned for, in CUDA order (empty when not given to [`PlanReport::with_inputs`]).
    pub machine: Vec<DeviceEntry>,
    /// The placement flags the user pinned, which both plans keep.
    pub pinned: Vec<String>,
    /// Aggressive, then moderate.
    pub plans: Vec<PlanEntry>,
    /// llama.cpp's own `--fit` for the same settings, when emulated.
    pub fit: Option<FitEntry>,
    /// The aggressive plan at smaller contexts of the user's ladder (256K → 192K → 128K …): what
    /// each step down buys. Empty when not computed.
    pub context_steps: Vec<ContextStep>,
    /// Things worth telling the user.
    pub notes: Vec<String>,
}

/// One GPU of the machine.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeviceEntry {
    /// `CUDA0`, …
    pub name: String,
    /// What the card is (`RTX 4090`, NVML's name, or a placeholder for a size).
    pub card: String,
    /// Its memory.
    pub total_bytes: Bytes,
    /// The free memory llama.cpp reports at load.
    pub free_at_load_bytes: Bytes,
    /// Memory bandwidth, GB/s, when known.
    pub bandwidth_gbs: Option<f64>,
}

impl DeviceEntry {
    /// Every GPU of `hw`, in CUDA order, as the reports list the machine.
    pub fn machine(hw: &Hardware) -> Vec<DeviceEntry> {
        hw.gpus
            .iter()
            .enumerate()
            .map(|(i, g)| DeviceEntry {
                name: g.backend_name(),
                card: g.name.clone(),
                total_bytes: g.total,
                free_at_load_bytes: hw.free_at_load(i),
                bandwidth_gbs: g.bandwidth_gbs,
            })
            .collect()
    }
}

/// What the report says besides the plans: where they came from.
#[derive(Clone, Copy, Debug)]
pub struct ReportInputs<'a> {
    /// The models.conf profile, when planned from one.
    pub profile: Option<&'a str>,
    /// The machine.
    pub hardware: &'a Hardware,
    /// The settings planned (for the `--fit-target` llama.cpp's fit uses).
    pub settings: &'a ServerSettings,
    /// What the user pinned.
    pub pins: &'a Pins,
}

/// One plan.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlanEntry {
    /// `aggressive` or `moderate`.
    pub kind: PlanKind,
    /// The full `llama-server` command, shell-escaped.
    pub command: String,
    /// The same arguments, one per element.
    pub args: Vec<String>,
    /// Only the placement flags.
    pub placement_args: Vec<String>,
    /// `--fit on --fit-target a,b` when llama.cpp's fitter lands on this plan by itself.
    pub fit_target_args: Option<Vec<String>>,
    /// `-ngl … -ts … --n-cpu-moe N --fit off` when that expresses the plan exactly.
    pub n_cpu_moe_args: Option<Vec<String>>,
    /// For a models.conf profile: the lines of the profile that `splitplan apply --plan KIND`
    /// writes (only those that change), as they will read. Empty for a model file, or when the
    /// profile already holds the plan.
    pub profile_lines: Vec<String>,
    /// Speed and graph splits.
    pub speed: SpeedEntry,
    /// Layers whose routed experts are all on GPUs.
    pub gpu_expert_layers: usize,
    /// Routed-expert bytes on GPUs.
    pub gpu_expert_bytes: Bytes,
    /// Memory per GPU.
    pub gpus: Vec<GpuEntry>,
    /// System RAM.
    pub host: HostEntry,
    /// Where each block goes.
    pub layers: Vec<LayerEntry>,
}

/// Predicted speed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SpeedEntry {
    /// Decode tokens per second.
    pub decode_tps: f64,
    /// Prompt tokens per second (one full micro-batch).
    pub prompt_tps: f64,
    /// Graph splits of the prompt graph.
    pub prompt_splits: u32,
    /// Graph splits of the decode graph.
    pub decode_splits: u32,
    /// GPUs whose memory bandwidth was assumed.
    pub assumed_bandwidth: Vec<String>,
}

/// Memory on one GPU.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GpuEntry {
    /// `CUDA0`, …
    pub name: String,
    /// Model weights.
    pub weights_bytes: Bytes,
    /// KV cache.
    pub kv_cache_bytes: Bytes,
    /// Recurrent state.
    pub recurrent_state_bytes: Bytes,
    /// Compute buffer.
    pub compute_bytes: Bytes,
    /// True when the compute size was given rather than modelled.
    pub compute_given: bool,
    /// llama.cpp's memory beyond its breakdown after the first long request.
    pub runtime_overhead_bytes: Bytes,
    /// The free memory llama.cpp reports at load.
    pub free_at_load_bytes: Bytes,
    /// The margin the plan keeps.
    pub margin_bytes: Bytes,
    /// Free memory left beyond the margin (negative: the margin is not kept).
    pub left_bytes: i64,
}

impl GpuEntry {
    /// The segments of this GPU's bar.
    pub fn bar_parts(&self) -> BarParts {
        BarParts {
            weights: self.weights_bytes,
            context: self.kv_cache_bytes + self.recurrent_state_bytes,
            compute: self.compute_bytes,
            overhead: self.runtime_overhead_bytes,
            margin: self.margin_bytes,
            free_at_load: self.free_at_load_bytes,
        }
    }
}

/// System RAM.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HostEntry {
    /// Resident weights, KV, recurrent state, output buffer and host compute when modelled.
    pub used_bytes: Bytes,
    /// Kept for the system.
    pub reserve_bytes: Bytes,
    /// Installed, when known.
    pub total_bytes: Option<Bytes>,
}

/// One block.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerEntry {
    /// Block index.
    pub index: usize,
    /// Where the dense part and the KV cache or recurrent state go: `CUDA0`, …, `CPU`.
    pub dense: String,
    /// Where each routed-expert projection goes (absent ones omitted); null for a block without
    /// routed experts.
    pub experts: Option<ExpertsEntry>,
}

/// Where a block's routed-expert projections go: `CUDA0`, …, `CPU`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ExpertsEntry {
    /// `ffn_up_exps`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub up: Option<String>,
    /// `ffn_gate_exps`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    /// `ffn_gate_up_exps`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate_up: Option<String>,
    /// `ffn_down_exps`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down: Option<String>,
}

/// llama.cpp's `--fit`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FitEntry {
    /// The `--fit-target` margins it ran with, per GPU (empty when not given to
    /// [`PlanReport::with_inputs`]).
    pub fit_target_bytes: Vec<Bytes>,
    /// `no_change`, `context_reduced`, `fitted` or `failure`.
    pub status: String,
    /// Why fit gave up, on failure.
    pub reason: Option<String>,
    /// What `llama-fit-params` would print.
    pub fit_args: Vec<String>,
    /// Speed and graph splits.
    pub speed: SpeedEntry,
    /// Memory per GPU with no margin: a negative `left_bytes` means the first long request is
    /// predicted to run out of memory.
    pub gpus: Vec<GpuEntry>,
}

impl PlanReport {
    /// The report of `set` for `model`.
    pub fn new(model: &ModelDescription, set: &PlanSet) -> PlanReport {
        PlanReport {
            schema_version: SCHEMA_VERSION,
            model: model.name.clone(),
            profile: None,
            n_ctx: set.n_ctx,
            machine: Vec::new(),
            pinned: Vec::new(),
            plans: [&set.aggressive, &set.moderate].into_iter().map(|p| plan_entry(model, p)).collect(),
            fit: set.fit.as_ref().map(fit_entry),
            context_steps: Vec::new(),
            notes: set.notes.clone(),
        }
    }

    /// The report with what it was planned from: the profile, the machine, the pins, and the
    /// `--fit-target` llama.cpp's fit ran with.
    #[must_use]
    pub fn with_inputs(mut self, inputs: &ReportInputs<'_>) -> PlanReport {
        let hw = inputs.hardware;
        self.profile = inputs.profile.map(str::to_owned);
        self.machine = DeviceEntry::machine(hw);
        self.pinned = pin_args(inputs.pins);
        if let Some(fit) = &mut self.fit {
            fit.fit_target_bytes =
                (0..hw.gpus.len()).map(|i| inputs.settings.fit_target.for_device(i)).collect();
        }
        self
    }
}

/// The pinned placement flags as llama-server arguments.
pub fn pin_args(pins: &Pins) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(ngl) = pins.n_gpu_layers {
        out.extend(["-ngl".to_owned(), ngl.to_string()]);
    }
    if let Some(ts) = &pins.tensor_split {
        out.extend(["-ts".to_owned(), ts.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")]);
    }
    if !pins.overrides.is_empty() {
        out.extend([
            "-ot".to_owned(),
            pins.overrides.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        ]);
    }
    out
}

pub(crate) fn speed_entry(s: &Speed, names: &[String]) -> SpeedEntry {
    SpeedEntry {
        decode_tps: round2(s.decode_tps),
        prompt_tps: round2(s.prompt_tps),
        prompt_splits: s.splits.prompt,
        decode_splits: s.splits.decode,
        assumed_bandwidth: s
            .assumed_bandwidth
            .iter()
            .map(|d| match d {
                Device::Gpu(g) => names.get(*g).cloned().unwrap_or_default(),
                Device::Cpu => "CPU".to_owned(),
            })
            .collect(),
    }
}

pub(crate) fn gpu_entries(e: &Evaluation) -> Vec<GpuEntry> {
    e.gpus
        .iter()
        .map(|g| GpuEntry {
            name: g.name.clone(),
            weights_bytes: g.weights,
            kv_cache_bytes: g.kv_cache,
            recurrent_state_bytes: g.recurrent_state,
            compute_bytes: g.compute,
            compute_given: g.compute_given,
            runtime_overhead_bytes: g.runtime_overhead,
            free_at_load_bytes: g.free_at_load,
            margin_bytes: g.margin,
            left_bytes: g.left(),
        })
        .collect()
}

fn plan_entry(model: &ModelDescription, p: &Plan) -> PlanEntry {
    let names: Vec<String> = p.memory.gpus.iter().map(|g| g.name.clone()).collect();
    let layers = p
        .placement
        .layers
        .iter()
        .enumerate()
        .map(|(il, l)| LayerEntry {
            index: il,
            dense: p.placement.device_name(l.dense),
            experts: {
                let parts = expert_parts(model, il);
                (!parts.is_empty()).then(|| {
                    let mut e = ExpertsEntry::default();
                    for part in parts {
                        let name = Some(p.placement.device_name(l.experts.get(part.part)));
                        match part.part {
                            ExpertPart::Up => e.up = name,
                            ExpertPart::Gate => e.gate = name,
                            ExpertPart::GateUp => e.gate_up = name,
                            ExpertPart::Down => e.down = name,
                        }
                    }
                    e
                })
            },
        })
        .collect();
    PlanEntry {
        kind: p.kind,
        command: server_command(&p.args),
        args: p.args.clone(),
        placement_args: p.placement_args.clone(),
        fit_target_args: p.fit_target_form.as_deref().map(fit_target_args),
        n_cpu_moe_args: p.n_cpu_moe_form.clone(),
        profile_lines: Vec::new(),
        speed: speed_entry(&p.speed, &names),
        gpu_expert_layers: p.gpu_expert_layers,
        gpu_expert_bytes: p.gpu_expert_bytes,
        gpus: gpu_entries(&p.memory),
        host: HostEntry {
            used_bytes: p.memory.host.used,
            reserve_bytes: p.memory.host.reserve,
            total_bytes: p.memory.host.total,
        },
        layers,
    }
}

fn fit_entry(f: &FitPlan) -> FitEntry {
    let names: Vec<String> = f.memory.gpus.iter().map(|g| g.name.clone()).collect();
    let (status, reason) = match &f.outcome.status {
        FitStatus::NoChange => ("no_change", None),
        FitStatus::ContextReduced => ("context_reduced", None),
        FitStatus::Fitted => ("fitted", None),
        FitStatus::Failure(why) => ("failure", Some(why.clone())),
    };
    FitEntry {
        fit_target_bytes: Vec::new(),
        status: status.to_owned(),
        reason,
        fit_args: f.fit_args.clone(),
        speed: speed_entry(&f.speed, &names),
        gpus: gpu_entries(&f.memory),
    }
}

/// Two decimals are all a speed prediction is worth, and they keep the JSON stable.
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The report as pretty JSON with a final newline.
pub fn json(report: &PlanReport) -> String {
    super::json(report)
}

/// How [`text`] renders.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TextStyle {
    /// Paint the bars (a terminal that wants colour; never with `NO_COLOR`).
    pub colour: bool,
}

/// The report as text: per plan a table of memory per GPU with a bar each, the predicted speed,
/// where the layers go, the flags and the command; then llama.cpp's `--fit`; then the context
/// steps and the notes.
pub fn text(report: &PlanReport, style: TextStyle) -> String {
    let mut s = String::new();
    let name = report.model.as_deref().unwrap_or("the model");
    let profile = report.profile.as_ref().map_or_else(String::new, |p| format!(" [{p}]"));
    let _ = writeln!(s, "{name}{profile} at {} tokens of context", group_thousands(u64::from(report.n_ctx)));
    if !report.machine.is_empty() {
        let mut t = table(&["GPU", "card", "free at load", "bandwidth"], &[2, 3]);
        for d in &report.machine {
            t.add_row(vec![
                d.name.clone(),
                d.card.clone(),
                format!("{} MiB", mib(d.free_at_load_bytes)),
                d.bandwidth_gbs.map_or_else(|| "unknown".to_owned(), |b| format!("{} GB/s", super::whole(b))),
            ]);
        }
        s.push_str(&indent_table(&t, "  "));
    }
    for (i, p) in report.plans.iter().enumerate() {
        s.push('\n');
        plan_text(&mut s, p, style, i == 0);
    }
    if let Some(fit) = &report.fit {
        s.push('\n');
        fit_text(&mut s, fit, style);
    }
    let steps: Vec<&ContextStep> = report.context_steps.iter().filter(|c| c.n_ctx != report.n_ctx).collect();
    if !steps.is_empty() {
        s.push('\n');
        s.push_str("What a smaller context buys (the aggressive plan at each step, in your order)\n");
        let base = report.plans.first().map(|p| p.speed.decode_tps);
        let mut t = table(&["context", "decode", "vs now", "expert layers on GPUs"], &[0, 1, 2, 3]);
        for c in steps {
            match (c.fits, c.decode_tps) {
                (true, Some(tps)) => t.add_row(vec![
                    group_thousands(u64::from(c.n_ctx)),
                    format!("{tps:.1} tok/s"),
                    base.map_or_else(String::new, |b| format!("{:+.1}", tps - b)),
                    c.gpu_expert_layers.map_or_else(String::new, |n| n.to_string()),
                ]),
                _ => t.add_row(vec![
                    group_thousands(u64::from(c.n_ctx)),
                    "does not fit".to_owned(),
                    String::new(),
                    String::new(),
                ]),
            };
        }
        s.push_str(&indent_table(&t, "  "));
    }
    let mut notes: Vec<String> = Vec::new();
    if !report.pinned.is_empty() {
        notes.push(format!(
            "pinned, kept in both plans: {}",
            report.pinned.iter().map(|a| shell_word(a)).collect::<Vec<_>>().join(" ")
        ));
    }
    notes.extend(report.notes.iter().cloned());
    if !notes.is_empty() {
        s.push_str("\nNotes\n");
        for n in notes {
            let _ = writeln!(s, "  - {n}");
        }
    }
    s
}

fn plan_text(s: &mut String, p: &PlanEntry, style: TextStyle, legend: bool) {
    let title = match p.kind {
        PlanKind::Aggressive => "Aggressive plan",
        PlanKind::Moderate => "Moderate plan",
    };
    let margins: Vec<String> = p.gpus.iter().map(|g| mib(g.margin_bytes)).collect();
    let _ =
        writeln!(s, "{title}: {} MiB kept free per GPU after the first long request", margins.join(" / "));
    speed_line(s, &p.speed);
    let n_layers = p.layers.iter().filter(|l| l.experts.is_some()).count();
    if n_layers > 0 {
        let _ = writeln!(
            s,
            "  routed experts of {} of {n_layers} layers on the GPUs ({} MiB)",
            p.gpu_expert_layers,
            mib(p.gpu_expert_bytes)
        );
    }
    s.push('\n');
    memory_table(s, &p.gpus, true);
    s.push('\n');
    bars(s, &p.gpus, style, legend);
    s.push('\n');
    for (label, value) in layer_summary(&p.layers) {
        let _ = writeln!(s, "  {label:<13}{value}");
    }
    let _ = writeln!(s, "  {:<13}{}", "flags", join_words(&p.placement_args));
    if let Some(a) = &p.n_cpu_moe_args {
        let _ = writeln!(s, "  {:<13}{} (the same placement)", "or", join_words(a));
    }
    if let Some(a) = &p.fit_target_args {
        let _ = writeln!(s, "  {:<13}{} (llama.cpp's own fitter lands on this plan)", "or", join_words(a));
    }
    for (i, line) in p.profile_lines.iter().enumerate() {
        let _ = writeln!(s, "  {:<13}{line}", if i == 0 { "models.conf" } else { "" });
    }
    let host = &p.host;
    let total = host.total_bytes.map_or_else(|| "unknown".to_owned(), |t| format!("{} MiB", mib(t)));
    let _ = writeln!(
        s,
        "  {:<13}{} MiB used, {} MiB kept for the system, {total} installed",
        "system RAM",
        mib(host.used_bytes),
        mib(host.reserve_bytes)
    );
    let _ = writeln!(s, "  command\n    {}", p.command);
}

fn fit_text(s: &mut String, f: &FitEntry, style: TextStyle) {
    let target = if f.fit_target_bytes.is_empty() {
        String::new()
    } else {
        format!(
            " --fit-target {}",
            f.fit_target_bytes.iter().map(|b| b.mib_floor().to_string()).collect::<Vec<_>>().join(",")
        )
    };
    let status = match (f.status.as_str(), &f.reason) {
        ("no_change", _) => "changes nothing, the settings fit as they are".to_owned(),
        ("context_reduced", _) => "lowers the context".to_owned(),
        ("fitted", _) => "moves layers and experts".to_owned(),
        (_, Some(r)) => format!("gives up: {r}"),
        (other, None) => other.to_owned(),
    };
    let _ = writeln!(s, "llama.cpp --fit on{target}, emulated: {status}");
    let _ = writeln!(s, "  {:<13}{}", "it would run", join_words(&f.fit_args));
    speed_line(s, &f.speed);
    s.push('\n');
    memory_table(s, &f.gpus, false);
    s.push('\n');
    bars(s, &f.gpus, style, false);
    let short: Vec<String> = f
        .gpus
        .iter()
        .filter(|g| g.left_bytes < 0)
        .map(|g| {
            format!("{} {} MiB short", g.name, group_thousands(g.left_bytes.unsigned_abs().div_ceil(MIB)))
        })
        .collect();
    s.push('\n');
    if short.is_empty() {
        let left: Vec<String> =
            f.gpus.iter().map(|g| format!("{} {} MiB", g.name, signed_mib(g.left_bytes))).collect();
        let _ = writeln!(s, "  survives the first long request, with {} left", left.join(", "));
    } else {
        let _ = writeln!(
            s,
            "  predicted to run out of memory at the first long request: {} (its overhead beyond the breakdown is not in fit's estimate)",
            short.join(", ")
        );
    }
}

fn speed_line(s: &mut String, sp: &SpeedEntry) {
    let splits = if sp.prompt_splits == sp.decode_splits {
        format!("{} graph splits", sp.prompt_splits)
    } else {
        format!("{} graph splits (prompt) / {} (decode)", sp.prompt_splits, sp.decode_splits)
    };
    let _ = writeln!(
        s,
        "  predicted {:.1} tok/s decode, {} tok/s prompt, {splits}",
        sp.decode_tps,
        super::whole(sp.prompt_tps)
    );
    if !sp.assumed_bandwidth.is_empty() {
        let _ = writeln!(s, "  (memory bandwidth assumed for {})", sp.assumed_bandwidth.join(", "));
    }
}

fn memory_table(s: &mut String, gpus: &[GpuEntry], with_margin: bool) {
    let mut header = vec!["MiB", "weights", "KV", "recurrent", "compute", "overhead*"];
    if with_margin {
        header.push("margin");
    }
    header.extend(["left", "free at load"]);
    let right: Vec<usize> = (1..header.len()).collect();
    let mut t = table(&header, &right);
    for g in gpus {
        let mut row = vec![
            g.name.clone(),
            mib(g.weights_bytes),
            mib(g.kv_cache_bytes),
            mib(g.recurrent_state_bytes),
            if g.compute_given { format!("{} (given)", mib(g.compute_bytes)) } else { mib(g.compute_bytes) },
            mib(g.runtime_overhead_bytes),
        ];
        if with_margin {
            row.push(mib(g.margin_bytes));
        }
        row.extend([signed_mib(g.left_bytes), mib(g.free_at_load_bytes)]);
        t.add_row(row);
    }
    s.push_str(&indent_table(&t, "  "));
    s.push_str("  * what llama-server holds beyond its own memory breakdown after the first long request\n");
}

fn bars(s: &mut String, gpus: &[GpuEntry], style: TextStyle, legend: bool) {
    for g in gpus {
        let parts = g.bar_parts();
        let used = parts.weights + parts.context + parts.compute + parts.overhead;
        let pct = if g.free_at_load_bytes.get() == 0 {
            0.0
        } else {
            used.get() as f64 * 100.0 / g.free_at_load_bytes.get() as f64
        };
        let _ =
            writeln!(s, "  {:<6} {} {pct:>3.0}% used", g.name, bar::bar(&parts, bar::WIDTH, style.colour));
    }
    if legend {
        let _ = writeln!(s, "  {:<6} {}", "", bar::LEGEND);
    }
}

/// Where the dense parts and the routed experts go, as `(label, value)` lines: layer ranges per
/// device, and the layers whose expert tensors are split, each with where its parts go.
pub fn layer_summary(layers: &[LayerEntry]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    // Dense parts: runs of consecutive layers on one device.
    let mut runs: Vec<(String, usize, usize)> = Vec::new();
    for l in layers {
        match runs.last_mut() {
            Some((d, _, end)) if *d == l.dense && *end + 1 == l.index => *end = l.index,
            _ => runs.push((l.dense.clone(), l.index, l.index)),
        }
    }
    if !runs.is_empty() {
        let v: Vec<String> = runs.iter().map(|(d, a, b)| format!("{d} {}", range(*a, *b))).collect();
        out.push(("layers".to_owned(), v.join(", ")));
    }
    // Experts: whole layers per device, in device order (GPUs, then CPU), then split layers.
    let mut whole: Vec<(String, Vec<usize>)> = Vec::new();
    let mut split: Vec<String> = Vec::new();
    for l in layers {
        let Some(e) = &l.experts else { continue };
        let parts: Vec<(&str, &String)> =
            [("up", &e.up), ("gate", &e.gate), ("gate_up", &e.gate_up), ("down", &e.down)]
                .into_iter()
                .filter_map(|(n, d)| d.as_ref().map(|d| (n, d)))
                .collect();
        let Some((_, first)) = parts.first() else { continue };
        if parts.iter().all(|(_, d)| d == first) {
            match whole.iter_mut().find(|(d, _)| d == *first) {
                Some((_, v)) => v.push(l.index),
                None => whole.push(((*first).clone(), vec![l.index])),
            }
        } else {
            let mut by_dev: Vec<(&String, Vec<&str>)> = Vec::new();
            for (n, d) in &parts {
                match by_dev.iter_mut().find(|(x, _)| x == d) {
                    Some((_, v)) => v.push(n),
                    None => by_dev.push((d, vec![n])),
                }
            }
            let v: Vec<String> = by_dev.iter().map(|(d, n)| format!("{} {d}", n.join("+"))).collect();
            split.push(format!("{} ({})", l.index, v.join(", ")));
        }
    }
    whole.sort_by_key(|(d, _)| (d == "CPU", d.clone()));
    if !whole.is_empty() || !split.is_empty() {
        let mut v: Vec<String> = whole.iter().map(|(d, ls)| format!("{d} {}", ranges(ls))).collect();
        if !split.is_empty() {
            v.push(format!("split: {}", split.join(", ")));
        }
        out.push(("experts".to_owned(), v.join("; ")));
    }
    out
}

fn range(a: usize, b: usize) -> String {
    if a == b { a.to_string() } else { format!("{a}-{b}") }
}

/// `0-17, 19, 21-23`.
fn ranges(list: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < list.len() {
        let mut j = i;
        while j + 1 < list.len() && list[j + 1] == list[j] + 1 {
            j += 1;
        }
        out.push(range(list[i], list[j]));
        i = j + 1;
    }
    out.join(", ")
}

fn join_words(words: &[String]) -> String {
    words.iter().map(|w| shell_word(w)).collect::<Vec<_>>().join(" ")
}

/// Whole MiB, rounded down as llama.cpp prints them, with thousands separators.
fn mib(b: Bytes) -> String {
    group_thousands(b.mib_floor())
}

/// Signed bytes as whole MiB (towards zero), with thousands separators.
fn signed_mib(v: i64) -> String {
    let m = group_thousands(v.unsigned_abs() / MIB);
    if v < 0 { format!("-{m}") } else { m }
}
