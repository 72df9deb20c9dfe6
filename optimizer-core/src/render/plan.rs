//! The plan command's report: both plans and llama.cpp's `--fit` beside them. [`PlanReport`] is the
//! JSON schema (docs/json.md, "plan"); [`json`] renders it.

use serde::Serialize;

use crate::model::{ExpertPart, ModelDescription};
use crate::plan::{Device, Evaluation, FitPlan, FitStatus, Plan, PlanKind, PlanSet, Speed, expert_parts};
use crate::units::Bytes;

use super::command::{fit_target_args, server_command};

/// The version of the JSON schema.
pub const SCHEMA_VERSION: u32 = 1;

/// Both plans and what `--fit` would do.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlanReport {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// `general.name`.
    pub model: Option<String>,
    /// The context the plans are for.
    pub n_ctx: u32,
    /// Aggressive, then moderate.
    pub plans: Vec<PlanEntry>,
    /// llama.cpp's own `--fit` for the same settings, when emulated.
    pub fit: Option<FitEntry>,
    /// Things worth telling the user.
    pub notes: Vec<String>,
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
            n_ctx: set.n_ctx,
            plans: [&set.aggressive, &set.moderate].into_iter().map(|p| plan_entry(model, p)).collect(),
            fit: set.fit.as_ref().map(fit_entry),
            notes: set.notes.clone(),
        }
    }
}

fn speed_entry(s: &Speed, names: &[String]) -> SpeedEntry {
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

fn gpu_entries(e: &Evaluation) -> Vec<GpuEntry> {
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
