//! The ladder `confirm` climbs: candidate placements from most to least GPU-resident, each as the
//! llama-server flags that place tensors (plus a context or micro-batch step) and its predicted use
//! per GPU; and the one function that turns a profile's command line and a rung into the command
//! line of a launch.
//!
//! The planner builds ladders ([`planned_ladder`]: the aggressive plan, plans with fewer expert
//! tensors on the GPUs down to the moderate plan and beyond, then context steps); a user may also
//! give one by hand as JSON (`splitplan confirm --ladder FILE`), in the schema of [`Ladder`].

use serde::{Deserialize, Serialize};

use crate::model::ModelDescription;
use crate::plan::{Evaluator, GpuUse, Hardware, Plan, PlanError, PlanOptions, plan};
use crate::profile::PLACEMENT_FLAGS;
use crate::settings::{ServerSettings, flags};
use crate::units::{Bytes, group_thousands};

/// The contexts the planned ladder steps down to after its placements, in the user's order
/// (BRIEF.md: 256K → 192K → 128K); only those below the planned context are used.
pub const LADDER_CONTEXTS: [u32; 2] = [196_608, 131_072];

/// The extra margins (as multiples of the moderate plan's extra margin, in quarters) of the rungs
/// between the aggressive and the moderate plan and beyond it: each takes expert tensors off the
/// GPUs. A rung that does not take any off is left out.
const EXTRA_QUARTERS: [u64; 7] = [1, 2, 3, 4, 6, 8, 12];

/// One candidate placement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rung {
    /// What it is, in words (`aggressive`, `CUDA1: one expert layer less`, `context 196,608`).
    pub label: String,
    /// The placement flags (`-ngl`, `-ts`, `-ot`, `--fit`, …): they replace every placement flag of
    /// the base command ([`PLACEMENT_FLAGS`]).
    pub placement: Vec<String>,
    /// `-c` for this rung, when it steps the context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctx_size: Option<u32>,
    /// `-ub` for this rung, when it steps the micro-batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ubatch_size: Option<u32>,
    /// Predicted use of each GPU (bytes, in the ladder's GPU order) with the overhead beyond
    /// llama.cpp's breakdown; empty when unknown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub predicted: Vec<Bytes>,
    /// The margin the planner kept free on each GPU for this rung (bytes, in the ladder's GPU
    /// order); empty when unknown. An extension of the ladder adds to them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub margins: Vec<Bytes>,
}

/// Candidate placements, most GPU-resident first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ladder {
    /// The GPUs by llama.cpp's buffer names (`CUDA0`, `CUDA1`), in its device order.
    pub gpus: Vec<String>,
    /// The rungs, most GPU-resident first.
    pub rungs: Vec<Rung>,
    /// The rung of the aggressive plan, where the search starts.
    pub aggressive: usize,
    /// The rung of the moderate plan, when it is on the ladder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moderate: Option<usize>,
}

/// Why a ladder cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LadderError {
    /// No rungs.
    #[error("the ladder has no rungs")]
    Empty,
    /// A plan index past the rungs.
    #[error("the {which} plan is rung {index}, but the ladder has {len} rungs")]
    PlanOutOfRange {
        /// `aggressive` or `moderate`.
        which: &'static str,
        /// The index.
        index: usize,
        /// How many rungs.
        len: usize,
    },
    /// Predictions for a different number of GPUs.
    #[error("rung {rung} ('{label}') predicts {found} GPUs, the ladder names {expected}")]
    GpuCount {
        /// The rung.
        rung: usize,
        /// Its label.
        label: String,
        /// How many it predicts.
        found: usize,
        /// How many the ladder names.
        expected: usize,
    },
    /// Margins for a different number of GPUs.
    #[error("rung {rung} ('{label}') has margins for {found} GPUs, the ladder names {expected}")]
    MarginCount {
        /// The rung.
        rung: usize,
        /// Its label.
        label: String,
        /// How many margins it has.
        found: usize,
        /// How many GPUs the ladder names.
        expected: usize,
    },
    /// A placement flag that is not one.
    #[error("rung {rung} ('{label}') has '{flag}' among its placement flags, expected only {expected}")]
    NotPlacement {
        /// The rung.
        rung: usize,
        /// Its label.
        label: String,
        /// The flag.
        flag: String,
        /// The placement flags.
        expected: String,
    },
}

impl Ladder {
    /// A one-rung ladder: the base command's own placement.
    pub fn single(gpus: Vec<String>, label: &str) -> Ladder {
        Ladder {
            gpus,
            rungs: vec![Rung {
                label: label.to_string(),
                placement: Vec::new(),
                ctx_size: None,
                ubatch_size: None,
                predicted: Vec::new(),
                margins: Vec::new(),
            }],
            aggressive: 0,
            moderate: None,
        }
    }

    /// Checks the indices, the prediction widths, and that placement flags are placement flags.
    pub fn check(&self) -> Result<(), LadderError> {
        let len = self.rungs.len();
        if len == 0 {
            return Err(LadderError::Empty);
        }
        for (which, index) in [("aggressive", Some(self.aggressive)), ("moderate", self.moderate)] {
            if let Some(index) = index
                && index >= len
            {
                return Err(LadderError::PlanOutOfRange { which, index, len });
            }
        }
        for (i, rung) in self.rungs.iter().enumerate() {
            if !rung.predicted.is_empty() && rung.predicted.len() != self.gpus.len() {
                return Err(LadderError::GpuCount {
                    rung: i,
                    label: rung.label.clone(),
                    found: rung.predicted.len(),
                    expected: self.gpus.len(),
                });
            }
            if !rung.margins.is_empty() && rung.margins.len() != self.gpus.len() {
                return Err(LadderError::MarginCount {
                    rung: i,
                    label: rung.label.clone(),
                    found: rung.margins.len(),
                    expected: self.gpus.len(),
                });
            }
            let mut words = rung.placement.iter();
            while let Some(word) = words.next() {
                let def = flags::lookup(&flags::normalize(word)).map(|(d, _)| d);
                match def {
                    Some(d) if PLACEMENT_FLAGS.contains(&d.id()) => {
                        for _ in 0..d.arity() {
                            words.next();
                        }
                    }
                    _ => {
                        return Err(LadderError::NotPlacement {
                            rung: i,
                            label: rung.label.clone(),
                            flag: word.clone(),
                            expected: PLACEMENT_FLAGS.join(", "),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether every rung carries predictions, so that out-of-memory sizes and headroom can
    /// guide the search.
    pub fn has_predictions(&self) -> bool {
        self.rungs.iter().all(|r| r.predicted.len() == self.gpus.len() && !self.gpus.is_empty())
    }

    /// The per-rung predictions for [`crate::bisect::Search`]: zeros when unknown (the search is
    /// then told no hints).
    pub fn predictions(&self) -> Vec<Vec<Bytes>> {
        self.rungs
            .iter()
            .map(|r| {
                if r.predicted.is_empty() { vec![Bytes::ZERO; self.gpus.len()] } else { r.predicted.clone() }
            })
            .collect()
    }
}

/// The ladder the planner proposes for `model` with `settings` on `hardware`: the aggressive plan
/// first; then plans with more margin on every GPU (a quarter of the moderate plan's extra margin
/// at a time, up to three times it), each kept only when it holds fewer routed-expert bytes on the
/// GPUs than the rung before and no more on any GPU, so that the ladder only ever steps back; the
/// moderate plan among them. Then the last placement at each context of [`LADDER_CONTEXTS`] below
/// the planned one. Every rung carries its predicted use per GPU (with the overhead beyond
/// llama.cpp's breakdown), so out-of-memory sizes and headroom guide the search.
pub fn planned_ladder(
    model: &ModelDescription,
    settings: &ServerSettings,
    hardware: &Hardware,
    options: &PlanOptions,
) -> Result<Ladder, PlanError> {
    let mut opts = options.clone();
    opts.emulate_fit = false;
    let set = plan(model, settings, hardware, &opts)?;
    let planned_ctx = (opts.context == crate::plan::ContextRequest::Max).then_some(set.n_ctx);
    let rung_of = |p: &Plan, label: String| Rung {
        label,
        placement: p.placement_args.clone(),
        ctx_size: planned_ctx,
        ubatch_size: None,
        predicted: p.memory.gpus.iter().map(GpuUse::used).collect(),
        margins: p.margins.clone(),
    };
    let experts = |p: &Plan| {
        format!(
            "experts of {} layers on the GPUs ({} MiB)",
            p.gpu_expert_layers,
            group_thousands(p.gpu_expert_bytes.mib_floor())
        )
    };
    let mut rungs = vec![rung_of(&set.aggressive, format!("aggressive: {}", experts(&set.aggressive)))];
    let mut last = (set.aggressive.gpu_expert_bytes, rungs[0].predicted.clone());
    let mut moderate = None;
    let mut last_plan = set.aggressive.clone();
    let quarter = Bytes::new(options.moderate_extra.get() / 4);
    for q in EXTRA_QUARTERS {
        let (p, label) = if q == 4 {
            (set.moderate.clone(), format!("moderate: {}", experts(&set.moderate)))
        } else {
            let mut o = opts.clone();
            o.moderate_extra = Bytes::new(quarter.get() * q);
            match plan(model, settings, hardware, &o) {
                Ok(s) => {
                    let label = format!(
                        "{} MiB more margin: {}",
                        group_thousands(o.moderate_extra.mib_floor()),
                        experts(&s.moderate)
                    );
                    (s.moderate, label)
                }
                Err(PlanError::DoesNotFit { .. }) => break,
                Err(e) => return Err(e),
            }
        };
        let predicted: Vec<Bytes> = p.memory.gpus.iter().map(GpuUse::used).collect();
        let steps_back = p.gpu_expert_bytes < last.0 && predicted.iter().zip(&last.1).all(|(a, b)| a <= b);
        if !steps_back {
            if q == 4 && rungs.last().is_some_and(|r| r.placement == p.placement_args) {
                moderate = Some(rungs.len() - 1);
            }
            continue;
        }
        if q == 4 {
            moderate = Some(rungs.len());
        }
        last = (p.gpu_expert_bytes, predicted);
        rungs.push(rung_of(&p, label));
        last_plan = p;
    }
    let mut eval =
        Evaluator::new(model, hardware, options.compute.clone(), options.overhead, options.host_reserve);
    let from = rungs.len() - 1;
    for ctx in LADDER_CONTEXTS.into_iter().filter(|&c| c < set.n_ctx) {
        let mut args = last_plan.args.clone();
        args.extend(["-c".to_owned(), ctx.to_string()]);
        let s = ServerSettings::from_args(&args)?;
        let e = eval.evaluate(&s, &last_plan.margins)?;
        rungs.push(Rung {
            label: format!(
                "context {} (the placement of rung {})",
                group_thousands(u64::from(ctx)),
                from + 1
            ),
            placement: last_plan.placement_args.clone(),
            ctx_size: Some(ctx),
            ubatch_size: None,
            predicted: e.gpus.iter().map(GpuUse::used).collect(),
            margins: last_plan.margins.clone(),
        });
    }
    Ok(Ladder {
        gpus: hardware.gpus.iter().map(crate::plan::Gpu::backend_name).collect(),
        rungs,
        aggressive: 0,
        moderate,
    })
}

/// What a launch adds to every command: where the model is on this machine, where to listen,
/// and `-lv 4` so that every buffer and the memory breakdown are logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchArgs {
    /// `-m`: the model's path on this machine (a profile's `/models/…` is the container's).
    pub model: Option<String>,
    /// `--host`.
    pub host: String,
    /// `--port`.
    pub port: u16,
    /// `-lv`: 4 shows every buffer line and the breakdown (reference §0.1).
    pub verbosity: u32,
}

/// The llama-server arguments of one launch: `base` (a profile's command or the user's flags)
/// with its placement flags replaced by the rung's, `-c`/`-ub` replaced when the rung steps them,
/// and the model, host, port and verbosity replaced by `launch`'s. Every other flag keeps its
/// place and spelling.
pub fn launch_args(base: &[String], rung: &Rung, launch: &LaunchArgs) -> Vec<String> {
    let mut drop: Vec<&str> = vec!["--host", "--port", "-lv", "-v", "--log-disable", "--log-file"];
    if launch.model.is_some() {
        drop.push("-m");
    }
    if !rung.placement.is_empty() {
        drop.extend(PLACEMENT_FLAGS);
    }
    if rung.ctx_size.is_some() {
        drop.push("-c");
    }
    if rung.ubatch_size.is_some() {
        drop.push("-ub");
    }
    let mut out = remove_options(base, &drop);
    if let Some(model) = &launch.model {
        out.splice(0..0, ["-m".to_string(), model.clone()]);
    }
    if let Some(c) = rung.ctx_size {
        out.extend(["-c".to_string(), c.to_string()]);
    }
    if let Some(ub) = rung.ubatch_size {
        out.extend(["-ub".to_string(), ub.to_string()]);
    }
    out.extend(rung.placement.iter().cloned());
    out.extend([
        "--host".to_string(),
        launch.host.clone(),
        "--port".to_string(),
        launch.port.to_string(),
        "-lv".to_string(),
        launch.verbosity.to_string(),
    ]);
    out
}

/// `args` without the options whose first spelling is in `ids`, and without their values.
fn remove_options(args: &[String], ids: &[&str]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut i = 0;
    while i < args.len() {
        let word = &args[i];
        match flags::lookup(&flags::normalize(word)) {
            Some((def, _)) if ids.contains(&def.id()) => i += 1 + def.arity(),
            Some((def, _)) => {
                let end = (i + 1 + def.arity()).min(args.len());
                out.extend(args[i..end].iter().cloned());
                i = end;
            }
            None => {
                out.push(word.clone());
                i += 1;
            }
        }
    }
    out
}
