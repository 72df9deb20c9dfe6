//! Extending a planned ladder past its least GPU-resident rung when even that rung ran out of
//! memory on a GPU: the planner's free memory was more than the GPU had (a `--free` that claims
//! too much, a desktop that took more of the display GPU since). Each extension plans again with
//! more margin on the GPU that ran out and appends the placement when it is new, so that
//! `confirm` can go on searching instead of giving up ([`crate::bisect::Search::extend`]).

use serde::Serialize;

use crate::bisect::Shortfall;
use crate::model::ModelDescription;
use crate::plan::{ContextRequest, GpuUse, Hardware, PlanError, PlanOptions, plan};
use crate::settings::{CtxSize, ServerSettings};
use crate::units::{Bytes, group_thousands};

use super::ladder::{Ladder, Rung};

/// How many times one ladder is extended at most: with the step doubling from
/// [`FIRST_EXTENSION_STEP`], four extensions add at least 7.5 GiB to a GPU's margin, more than
/// any desktop or claimed free memory is off by in practice.
pub const MAX_EXTENSIONS: usize = 4;

/// The least margin an extension adds to the GPU that ran out, when it lacked less: the step
/// doubles with every extension, and within one until the placement changes.
pub const FIRST_EXTENSION_STEP: Bytes = Bytes::from_mib(512);

/// How many times one extension doubles its step looking for a placement that differs from every
/// rung: from 512 MiB, 8 doublings reach 128 GiB, beyond any GPU's memory.
const MAX_REPLANS: u32 = 8;

/// One extension of the ladder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Extension {
    /// The GPU that ran out, an index into the ladder's GPUs.
    pub gpu: usize,
    /// Its name (`CUDA1`).
    pub device: String,
    /// What the ladder's least resident rung still lacked there, when known.
    pub shortfall: Option<Bytes>,
    /// The margin added on that GPU.
    pub added: Bytes,
    /// The margins per GPU of the new rung.
    pub margins: Vec<Bytes>,
    /// The rung appended (an index into the ladder's rungs).
    pub rung: usize,
    /// Its placement in words (`experts of 46 layers on the GPUs (28,152 MiB)`).
    pub placement: String,
}

/// Why a ladder is not extended (further).
#[derive(Debug, thiserror::Error)]
pub enum ExtendError {
    /// The extensions are spent.
    #[error("at most {max} extensions are made")]
    Limit {
        /// [`MAX_EXTENSIONS`].
        max: usize,
    },
    /// No rung to extend from.
    #[error("the ladder to extend has no rungs")]
    Empty,
    /// The GPU is not one of the ladder's.
    #[error("GPU {gpu} ran out, but the ladder names {gpus} GPUs")]
    UnknownGpu {
        /// The GPU's index.
        gpu: usize,
        /// How many the ladder names.
        gpus: usize,
    },
    /// With the largest margin tried, nothing fits.
    #[error("with a {margin:#} margin on {device}, no placement fits: {plan}")]
    DoesNotFit {
        /// The GPU.
        device: String,
        /// Its margin.
        margin: Bytes,
        /// What the planner said.
        plan: Box<PlanError>,
    },
    /// More margin moves nothing more off the GPU.
    #[error(
        "up to a {margin:#} margin on {device}, the planner finds no placement that holds less there than the \
         rungs already tried"
    )]
    Unchanged {
        /// The GPU.
        device: String,
        /// The largest margin tried.
        margin: Bytes,
    },
    /// The planner failed otherwise.
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// Extends one planned ladder: the settings and options it was planned with, and the extensions
/// so far. Each extension starts from the margins of the ladder's least resident rung.
#[derive(Clone, Debug)]
pub struct LadderExtender {
    settings: ServerSettings,
    options: PlanOptions,
    step: Bytes,
    /// The margins of the last extension.
    margins: Option<Vec<Bytes>>,
    done: Vec<Extension>,
}

impl LadderExtender {
    /// An extender for the ladder [`super::planned_ladder`] made from these inputs.
    pub fn new(settings: &ServerSettings, options: &PlanOptions) -> LadderExtender {
        LadderExtender {
            settings: settings.clone(),
            options: options.clone(),
            step: FIRST_EXTENSION_STEP,
            margins: None,
            done: Vec::new(),
        }
    }

    /// The extensions so far, in order.
    pub fn extensions(&self) -> &[Extension] {
        &self.done
    }

    /// Appends to `ladder` a rung planned with more margin on the GPU of `shortfall` (what the
    /// least resident rung still lacked there): the least resident rung's margin on that GPU plus
    /// at least that shortfall and at least the current step (512 MiB at first, doubling with
    /// every extension); the other GPUs keep the aggressive plan's margins and what earlier
    /// extensions added to them; at the ladder's planned context and micro-batch. The step
    /// doubles until the plan differs from every rung of the ladder and uses on that GPU no more
    /// than the least resident rung less its shortfall, at most eight times.
    pub fn extend(
        &mut self,
        model: &ModelDescription,
        hardware: &Hardware,
        ladder: &mut Ladder,
        shortfall: Shortfall,
    ) -> Result<Extension, ExtendError> {
        if self.done.len() >= MAX_EXTENSIONS {
            return Err(ExtendError::Limit { max: MAX_EXTENSIONS });
        }
        let n = hardware.gpus.len();
        let gpu = shortfall.gpu;
        if gpu >= n {
            return Err(ExtendError::UnknownGpu { gpu, gpus: n });
        }
        let device = ladder.gpus.get(gpu).cloned().unwrap_or_else(|| hardware.gpus[gpu].backend_name());
        let top = ladder.rungs.last().cloned().ok_or(ExtendError::Empty)?;
        let first = ladder.rungs.get(ladder.aggressive).unwrap_or(&top).clone();
        // The other GPUs keep the margins they had: the aggressive plan's, and what earlier
        // extensions added to them. The one that ran out starts from the least resident rung's.
        let mut base = self.margins.clone().unwrap_or_else(|| self.base_margins(&first, n));
        if let Some(&m) = top.margins.get(gpu) {
            base[gpu] = base[gpu].max(m);
        }
        // At the planned context: the user steps the context down only once the GPUs hold what
        // fits (BRIEF.md), and an extension is the plan with the margin it should have had.
        let mut settings = self.settings.clone();
        if let Some(c) = first.ctx_size {
            settings.ctx_size = CtxSize::Tokens(c);
        }
        if let Some(ub) = first.ubatch_size {
            settings.ubatch_size = ub;
        }
        let mut options = self.options.clone();
        options.emulate_fit = false;
        options.context = ContextRequest::AsGiven;
        let mut step = shortfall.bytes.unwrap_or(Bytes::ZERO).max(self.step);
        // What the least resident rung used there, less what it still lacked: the new rung must
        // use no more.
        let top_use =
            top.predicted.get(gpu).map(|&t| t.saturating_sub(shortfall.bytes.unwrap_or(Bytes::ZERO)));
        let mut tried = base[gpu];
        let mut refused = None;
        for _ in 0..MAX_REPLANS {
            let mut margins = base.clone();
            margins[gpu] += step;
            tried = margins[gpu];
            options.margins = Some(margins.clone());
            // The planner's tightening can miss by a few MiB at one margin and succeed at a larger
            // one (experts then leave the GPUs): only the last refusal counts.
            let p = match plan(model, &settings, hardware, &options) {
                Ok(set) => {
                    refused = None;
                    set.aggressive
                }
                Err(e @ PlanError::DoesNotFit { .. }) => {
                    refused = Some(Box::new(e));
                    step = step.saturating_mul(2);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let predicted: Vec<Bytes> = p.memory.gpus.iter().map(GpuUse::used).collect();
            let new = ladder.rungs.iter().all(|r| {
                r.placement != p.placement_args
                    || r.ctx_size != first.ctx_size
                    || r.ubatch_size != first.ubatch_size
            });
            let relieves = top_use.is_none_or(|t| predicted.get(gpu).is_some_and(|&u| u < t));
            if !(new && relieves) {
                step = step.saturating_mul(2);
                continue;
            }
            let rung = ladder.rungs.len();
            let number = self.done.len() + 1;
            let words = format!(
                "experts of {} layers on the GPUs ({} MiB)",
                p.gpu_expert_layers,
                group_thousands(p.gpu_expert_bytes.mib_floor())
            );
            ladder.rungs.push(Rung {
                label: format!("extension {number}: {:#} margin on {device}: {words}", margins[gpu]),
                placement: p.placement_args.clone(),
                ctx_size: first.ctx_size,
                ubatch_size: first.ubatch_size,
                predicted,
                margins: p.margins.clone(),
            });
            let extension = Extension {
                gpu,
                device,
                shortfall: shortfall.bytes,
                added: step,
                margins: p.margins,
                rung,
                placement: words,
            };
            self.step = self.step.saturating_mul(2);
            self.margins = Some(extension.margins.clone());
            self.done.push(extension.clone());
            return Ok(extension);
        }
        Err(match refused {
            Some(plan) => ExtendError::DoesNotFit { device, margin: tried, plan },
            None => ExtendError::Unchanged { device, margin: tried },
        })
    }

    /// The margins of `rung`: its own, else the options' (or the settings' `--fit-target`), for
    /// every GPU.
    fn base_margins(&self, rung: &Rung, n: usize) -> Vec<Bytes> {
        if rung.margins.len() == n {
            return rung.margins.clone();
        }
        let given = self.options.margins.clone();
        (0..n)
            .map(|i| {
                given
                    .as_ref()
                    .and_then(|m| m.get(i).or(m.last()).copied())
                    .unwrap_or_else(|| self.settings.fit_target.for_device(i))
            })
            .collect()
    }
}
