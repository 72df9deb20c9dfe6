//! advice_test_plan.md, the user's review document (BRIEF.md; examples/advice_test_plan.md): per
//! model its architecture, per profile its current lines, what its current placement uses on each
//! GPU (with a bar per GPU), Suggestion A (aggressive) and B (moderate) as exact models.conf lines
//! with what each is expected to use and how fast it is expected to run, what llama.cpp's `--fit`
//! would do, and empty test-result tables in the shape `confirm` fills.
//!
//! [`AdviceDoc`] holds everything the document says; [`markdown`] renders it. Building it (reading
//! models.conf and the models, planning) is the caller's.

use std::fmt::Write as _;

use crate::confirm::render_empty_results_table;
use crate::model::{ModelDescription, TensorRole};
use crate::plan::{Assessment, ContextStep, Device, Resolved};
use crate::units::{Bytes, GIB, group_thousands};

use super::bar;
use super::inspect::InspectReport;
use super::plan::{
    DeviceEntry, ExpertsEntry, FitEntry, GpuEntry, LayerEntry, PlanEntry, PlanReport, SpeedEntry,
    layer_summary,
};

/// The whole document.
#[derive(Clone, Debug, PartialEq)]
pub struct AdviceDoc {
    /// The day it was written, `2026-11-22`.
    pub date: String,
    /// The llama.cpp build whose memory is modelled.
    pub llama_build: u32,
    /// The GPUs, in CUDA order.
    pub machine: Vec<DeviceEntry>,
    /// System RAM, when known.
    pub host_ram: Option<Bytes>,
    /// System RAM bandwidth, GB/s, when known.
    pub host_bandwidth_gbs: Option<f64>,
    /// One section per model file, in the order of their first profile in models.conf.
    pub models: Vec<ModelAdvice>,
}

/// The profiles of one model file.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelAdvice {
    /// The section title (the model file's name without `.gguf` and shard suffix).
    pub title: String,
    /// The profiles' `MODEL` value.
    pub model_path: String,
    /// Architecture facts ([`model_facts`]); empty when the model could not be read.
    pub facts: Vec<String>,
    /// Why the model could not be read, when it could not.
    pub error: Option<String>,
    /// Its profiles, in file order.
    pub profiles: Vec<ProfileAdvice>,
}

/// One profile.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileAdvice {
    /// The section id.
    pub id: String,
    /// `NAME`.
    pub name: Option<String>,
    /// The profile's placement lines now (`CTX_SIZE`, `N_GPU_LAYERS`, `FIT`, `FIT_TARGET`,
    /// `EXTRA_ARGS`, as present).
    pub current_lines: Vec<String>,
    /// The context and micro-batch, in words (`262,144 tokens, -ub 512, KV q8_0/q8_0`).
    pub settings: String,
    /// What the current placement uses.
    pub current: Current,
    /// Both plans and the fit emulation, or why there is none.
    pub plans: Result<PlanReport, String>,
    /// The profile's placement lines after `apply --plan aggressive` and `--plan moderate`.
    pub suggestions: [Vec<String>; 2],
    /// When no plan fits: the aggressive plan at smaller contexts.
    pub give_up: Vec<ContextStep>,
}

/// The current placement of a profile.
#[derive(Clone, Debug, PartialEq)]
pub enum Current {
    /// Its flags place the tensors: predicted as they are.
    Flags {
        /// Memory per GPU with the aggressive margins.
        gpus: Vec<GpuEntry>,
        /// Where each block goes.
        layers: Vec<LayerEntry>,
        /// Predicted speed.
        speed: SpeedEntry,
    },
    /// `FIT=on` and no placement flags: llama.cpp's `--fit` decides at load.
    Fit,
    /// It could not be predicted.
    Unknown(String),
}

/// The architecture facts that matter for placement, as bullet lines.
pub fn model_facts(inspect: &InspectReport) -> Vec<String> {
    let h = &inspect.hparams;
    let k = &h.layer_kinds;
    let mut kinds = Vec::new();
    if k.recurrent > 0 {
        kinds.push(format!("{} recurrent (a fixed state per sequence, no KV cache)", k.recurrent));
    }
    if k.full_attention > 0 {
        kinds.push(format!("{} full attention (KV cache grows with the context)", k.full_attention));
    }
    if k.sliding_window > 0 {
        let w = h.sliding_window.as_ref().map_or(0, |w| w.window);
        kinds.push(format!("{} sliding-window attention (a window of {w} tokens)", k.sliding_window));
    }
    if k.mla > 0 {
        kinds.push(format!("{} MLA attention (one compressed KV row per token)", k.mla));
    }
    if k.nextn > 0 {
        kinds.push(format!("{} NextN/MTP (not loaded unless speculative decoding uses it)", k.nextn));
    }
    let mut facts = vec![format!("`{}`, {} layers: {}", inspect.architecture, h.n_layer, kinds.join(", "))];
    if let Some(e) = &h.experts {
        let expert_bytes: Bytes = inspect.layers.iter().map(|l| l.expert_bytes).sum();
        let moe_layers = inspect.layers.iter().filter(|l| l.expert_bytes > Bytes::ZERO).count().max(1);
        let shared = if e.shared > 0 { format!(" + {} shared", e.shared) } else { String::new() };
        let dense = if e.leading_dense_layers > 0 {
            format!(", the first {} layer(s) dense", e.leading_dense_layers)
        } else {
            String::new()
        };
        facts.push(format!(
            "MoE: {} experts, {} active{shared}{dense}; routed experts {} in all, ~{} per layer",
            e.count,
            e.used,
            gib(expert_bytes),
            gib(Bytes::new(expert_bytes.get() / moe_layers as u64)),
        ));
    }
    let files = inspect.shards.len();
    facts.push(format!(
        "{} in {files} file{}; trained context {} tokens",
        gib(inspect.total_bytes),
        if files == 1 { "" } else { "s" },
        group_thousands(u64::from(h.n_ctx_train))
    ));
    facts
}

/// Where each block of `model` goes when placed as `resolved`: its dense part and each routed
/// expert projection.
pub fn layers_of(model: &ModelDescription, resolved: &Resolved, gpus: &[String]) -> Vec<LayerEntry> {
    let name = |d: Device| match d {
        Device::Gpu(g) => gpus.get(g).cloned().unwrap_or_else(|| format!("CUDA{g}")),
        Device::Cpu => "CPU".to_owned(),
    };
    let mut layers: Vec<LayerEntry> = resolved
        .layers
        .iter()
        .enumerate()
        .map(|(index, &d)| LayerEntry { index, dense: name(d), experts: None })
        .collect();
    for (ti, t) in model.tensors.iter().enumerate() {
        let (crate::model::LayerSlot::Layer(il), TensorRole::Experts { part, .. }) = (t.slot, t.role) else {
            continue;
        };
        if !t.role.is_routed_expert() {
            continue;
        }
        let (Some(l), Some(Some(d))) = (layers.get_mut(il), resolved.tensors.get(ti)) else { continue };
        let e = l.experts.get_or_insert_with(ExpertsEntry::default);
        let slot = match part {
            crate::model::ExpertPart::Up => &mut e.up,
            crate::model::ExpertPart::Gate => &mut e.gate,
            crate::model::ExpertPart::GateUp => &mut e.gate_up,
            crate::model::ExpertPart::Down => &mut e.down,
        };
        *slot = Some(name(*d));
    }
    layers
}

impl Current {
    /// The current placement from its assessment.
    pub fn from_assessment(model: &ModelDescription, a: &Assessment) -> Current {
        let gpus = super::plan::gpu_entries(&a.memory);
        let names: Vec<String> = gpus.iter().map(|g| g.name.clone()).collect();
        Current::Flags {
            layers: layers_of(model, &a.resolved, &names),
            speed: super::plan::speed_entry(&a.speed, &names),
            gpus,
        }
    }
}

/// The document as markdown.
pub fn markdown(doc: &AdviceDoc) -> String {
    let mut s = String::new();
    s.push_str("# Production profile optimization: advice and test plan\n\n");
    let hw: Vec<String> = doc
        .machine
        .iter()
        .map(|d| format!("{} ({} MiB)", device_label(d), group_thousands(d.total_bytes.mib_floor())))
        .collect();
    let ram = doc.host_ram.map_or_else(String::new, |r| format!(", {} RAM", gib(r)));
    let _ = writeln!(
        s,
        "**Created:** {} by splitplan · **Status:** ready for testing · **Hardware:** {}{ram} · \
         **llama.cpp:** build {} (modelled)\n",
        doc.date,
        hw.join(", "),
        doc.llama_build
    );
    s.push_str("| Device | Total | Free at load | Bandwidth |\n|---|---|---|---|\n");
    for d in &doc.machine {
        let _ = writeln!(
            s,
            "| {} | {} MiB | {} MiB | {} |",
            device_label(d),
            group_thousands(d.total_bytes.mib_floor()),
            group_thousands(d.free_at_load_bytes.mib_floor()),
            d.bandwidth_gbs.map_or_else(|| "unknown".to_owned(), |b| format!("{} GB/s", super::whole(b)))
        );
    }
    let _ = writeln!(
        s,
        "| CPU | {} | | {} |",
        doc.host_ram.map_or_else(|| "unknown".to_owned(), |r| format!("{} RAM", gib(r))),
        doc.host_bandwidth_gbs.map_or_else(String::new, |b| format!("{b:.0} GB/s"))
    );
    s.push_str(
        "\nFree at load is what llama.cpp reports when it loads a model (after its CUDA context). \
         Expected VRAM is what llama-server will hold after its first long request: weights, KV \
         cache, recurrent state, compute buffers and its overhead beyond its own memory breakdown, \
         as a share of the free memory at load. `splitplan apply PROFILE --plan aggressive|moderate` \
         writes a suggestion into models.conf; `splitplan confirm PROFILE` proves it with real \
         launches and fills in the test results.\n",
    );
    for (mi, m) in doc.models.iter().enumerate() {
        s.push_str("\n---\n\n");
        model_section(&mut s, mi + 1, m, &doc.machine);
    }
    s
}

fn model_section(s: &mut String, n: usize, m: &ModelAdvice, machine: &[DeviceEntry]) {
    let _ = writeln!(s, "## {n}. {}\n", m.title);
    let _ = writeln!(s, "Model file: `{}`\n", m.model_path);
    s.push_str("### Architecture\n");
    if let Some(e) = &m.error {
        let _ = writeln!(s, "The model could not be read: {e}");
    }
    for f in &m.facts {
        let _ = writeln!(s, "- {f}");
    }
    for (pi, p) in m.profiles.iter().enumerate() {
        s.push('\n');
        profile_section(s, &format!("{n}.{}", pi + 1), p, machine);
    }
}

fn profile_section(s: &mut String, n: &str, p: &ProfileAdvice, machine: &[DeviceEntry]) {
    let name = p.name.as_ref().map_or_else(String::new, |x| format!(" {x}"));
    let _ = writeln!(s, "### {n} `[{}]`{name}\n", p.id);
    s.push_str("#### Current profile\n");
    code_block(s, &p.current_lines);
    s.push_str("\n#### Analysis\n");
    let _ = writeln!(s, "At {}.\n", p.settings);

    match &p.current {
        Current::Flags { gpus, layers, speed } => {
            s.push_str("The current placement:\n\n");
            memory_table(s, gpus);
            bars(s, gpus);
            for (label, value) in layer_summary(layers) {
                let _ = writeln!(s, "- {label}: {value}");
            }
            let _ = writeln!(s, "- predicted: {}", speed_words(speed));
            verdict(s, gpus);
        }
        Current::Fit => {
            s.push_str("`FIT=on` without placement flags: llama.cpp's `--fit` places the tensors at load");
            match p.plans.as_ref().ok().and_then(|r| r.fit.as_ref()) {
                Some(fit) => {
                    s.push_str(", emulated below (no margin beyond its own `FIT_TARGET`):\n\n");
                    memory_table(s, &fit.gpus);
                    bars(s, &fit.gpus);
                    let _ = writeln!(s, "- predicted: {}", speed_words(&fit.speed));
                    verdict(s, &fit.gpus);
                }
                None => s.push_str(".\n"),
            }
        }
        Current::Unknown(why) => {
            let _ = writeln!(s, "The current placement could not be predicted: {why}");
        }
    }
    match &p.plans {
        Ok(report) => {
            for (i, (plan, title)) in
                report.plans.iter().zip(["Suggestion A (aggressive)", "Suggestion B (moderate)"]).enumerate()
            {
                let _ = writeln!(s, "\n#### {title}");
                code_block(s, p.suggestions.get(i).map_or(&[][..], Vec::as_slice));
                suggestion_text(s, plan);
            }
            if let Some(fit) = &report.fit {
                s.push_str("\n#### What --fit would do\n");
                fit_text(s, fit);
            }
        }
        Err(why) => {
            let _ = writeln!(s, "\n#### Suggestions\nNo placement fits: {why}.");
            let fits: Vec<String> = p
                .give_up
                .iter()
                .filter(|c| c.fits)
                .map(|c| {
                    format!(
                        "{} tokens (~{:.1} t/s)",
                        group_thousands(u64::from(c.n_ctx)),
                        c.decode_tps.unwrap_or(0.0)
                    )
                })
                .collect();
            if fits.is_empty() {
                s.push_str("No smaller context of the ladder fits either.\n");
            } else {
                let _ = writeln!(
                    s,
                    "With every routed expert it can move in system RAM, these smaller contexts fit: {}. Plan one \
                     with `splitplan {} --ctx N`.",
                    fits.join(", "),
                    p.id
                );
            }
        }
    }
    s.push_str("\n#### Test results\n\n");
    let devices: Vec<String> = machine.iter().map(|d| d.name.clone()).collect();
    s.push_str(&render_empty_results_table(5, "Suggestion A (aggressive)", &devices));
    s.push('\n');
    s.push_str(&render_empty_results_table(5, "Suggestion B (moderate)", &devices));
    s.push_str("\n#### Choice\n(which suggestion goes into models.conf, and why)\n");
}

/// Whether every GPU keeps its margin after the first long request, and by how much.
fn verdict(s: &mut String, gpus: &[GpuEntry]) {
    let short: Vec<String> = gpus
        .iter()
        .filter(|g| g.left_bytes < 0)
        .map(|g| {
            format!(
                "{} is {} MiB short of its {} MiB margin",
                g.name,
                mib_up(g.left_bytes),
                mib(g.margin_bytes)
            )
        })
        .collect();
    if short.is_empty() {
        let left: Vec<String> =
            gpus.iter().map(|g| format!("{} {} MiB", g.name, signed_mib(g.left_bytes))).collect();
        let _ = writeln!(
            s,
            "- keeps its margins after the first long request, with {} more to spare",
            left.join(", ")
        );
    } else {
        let _ = writeln!(
            s,
            "- **does not keep its margins** after the first long request (out of memory is likely): {}",
            short.join("; ")
        );
    }
}

fn suggestion_text(s: &mut String, p: &PlanEntry) {
    let vram: Vec<String> = p
        .gpus
        .iter()
        .filter(|g| g.weights_bytes > Bytes::ZERO)
        .map(|g| {
            let used = g.weights_bytes
                + g.kv_cache_bytes
                + g.recurrent_state_bytes
                + g.compute_bytes
                + g.runtime_overhead_bytes;
            format!("{} ~{} MiB ({})", g.name, mib(used), pct(used, g.free_at_load_bytes))
        })
        .collect();
    let margins: Vec<String> =
        p.gpus.iter().filter(|g| g.weights_bytes > Bytes::ZERO).map(|g| mib(g.margin_bytes)).collect();
    let _ = writeln!(
        s,
        "**Expected:** {}, {}. Keeps {} MiB free after the first long request.",
        vram.join(", "),
        speed_words(&p.speed),
        margins.join(" / ")
    );
    for (label, value) in layer_summary(&p.layers) {
        let _ = writeln!(s, "- {label}: {value}");
    }
    let n_layers = p.layers.iter().filter(|l| l.experts.is_some()).count();
    if n_layers > 0 {
        let _ = writeln!(s, "- routed experts of {} of {n_layers} layers on the GPUs", p.gpu_expert_layers);
    }
    if let Some(a) = &p.fit_target_args {
        let _ = writeln!(s, "- the same placement with llama.cpp's fitter: `{}`", a.join(" "));
    }
}

fn fit_text(s: &mut String, f: &FitEntry) {
    let target: Vec<String> = f.fit_target_bytes.iter().map(|b| b.mib_floor().to_string()).collect();
    let what = match (f.status.as_str(), &f.reason) {
        ("no_change", _) => "changes nothing".to_owned(),
        ("context_reduced", _) => "lowers the context".to_owned(),
        ("fitted", _) => "moves layers and experts".to_owned(),
        (_, Some(r)) => format!("gives up ({r})"),
        (other, None) => other.to_owned(),
    };
    let _ = writeln!(
        s,
        "With `FIT=on` and `FIT_TARGET={}` (no -ngl, -ts or -ot) llama.cpp's fitter {what}; emulated, it would run \
         `{}`.\n",
        target.join(","),
        f.fit_args.join(" ")
    );
    let vram: Vec<String> = f
        .gpus
        .iter()
        .filter(|g| g.weights_bytes > Bytes::ZERO)
        .map(|g| {
            let used = g.weights_bytes
                + g.kv_cache_bytes
                + g.recurrent_state_bytes
                + g.compute_bytes
                + g.runtime_overhead_bytes;
            format!("{} ~{} MiB ({})", g.name, mib(used), pct(used, g.free_at_load_bytes))
        })
        .collect();
    let _ = writeln!(s, "**Expected:** {}, {}.", vram.join(", "), speed_words(&f.speed));
    let short: Vec<String> = f
        .gpus
        .iter()
        .filter(|g| g.left_bytes < 0)
        .map(|g| format!("{} {} MiB short", g.name, mib_up(g.left_bytes)))
        .collect();
    if short.is_empty() {
        s.push_str("- survives the first long request by the prediction\n");
    } else {
        let _ = writeln!(
            s,
            "- **predicted to run out of memory at the first long request**: {} (fit does not count llama-server's \
             overhead beyond its breakdown)",
            short.join(", ")
        );
    }
}

fn speed_words(sp: &SpeedEntry) -> String {
    let splits = if sp.prompt_splits == sp.decode_splits {
        format!("{} graph splits", sp.prompt_splits)
    } else {
        format!("{} / {} graph splits (prompt / decode)", sp.prompt_splits, sp.decode_splits)
    };
    format!("{splits}, ~{:.1} t/s decode, ~{} t/s prompt", sp.decode_tps, super::whole(sp.prompt_tps))
}

fn memory_table(s: &mut String, gpus: &[GpuEntry]) {
    s.push_str("| MiB | weights | KV | recurrent | compute | overhead | margin | left | free at load |\n");
    s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for g in gpus {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            g.name,
            mib(g.weights_bytes),
            mib(g.kv_cache_bytes),
            mib(g.recurrent_state_bytes),
            mib(g.compute_bytes),
            mib(g.runtime_overhead_bytes),
            mib(g.margin_bytes),
            signed_mib(g.left_bytes),
            mib(g.free_at_load_bytes)
        );
    }
}

fn bars(s: &mut String, gpus: &[GpuEntry]) {
    s.push_str("\n```\n");
    for g in gpus {
        let parts = g.bar_parts();
        let _ = writeln!(s, "{:<6} {}", g.name, bar::bar(&parts, bar::WIDTH, false));
    }
    let _ = writeln!(s, "{:<6} {}\n```\n", "", bar::LEGEND);
}

/// `CUDA0 RTX 4090`, or `CUDA0` when only sizes were given.
fn device_label(d: &DeviceEntry) -> String {
    if d.card.is_empty() || d.card.starts_with('(') {
        d.name.clone()
    } else {
        format!("{} {}", d.name, d.card)
    }
}

fn code_block(s: &mut String, lines: &[String]) {
    s.push_str("```\n");
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    s.push_str("```\n");
}

fn mib(b: Bytes) -> String {
    group_thousands(b.mib_floor())
}

fn mib_up(v: i64) -> String {
    group_thousands(v.unsigned_abs().div_ceil(1 << 20))
}

fn signed_mib(v: i64) -> String {
    let m = group_thousands(v.unsigned_abs() >> 20);
    if v < 0 { format!("-{m}") } else { m }
}

fn pct(used: Bytes, of: Bytes) -> String {
    if of.get() == 0 {
        return "n/a".to_owned();
    }
    format!("{:.0}%", used.get() as f64 * 100.0 / of.get() as f64)
}

fn gib(b: Bytes) -> String {
    format!("{:.1} GiB", b.get() as f64 / GIB as f64)
}
