//! Context sizes: the largest context that fits (`--ctx max`), and what to give up when the asked
//! context does not fit, in the user's order: routed-expert layers on the GPUs first (the planner
//! does that by itself), then context, 256K → 192K → 128K, each step with its predicted speed.
//!
//! Memory grows with the context, so every search here is a bisection over multiples of 256 (the
//! padding llama.cpp applies to `n_ctx`, llama-context.cpp:292).

use serde::Serialize;

use crate::model::ModelDescription;
use crate::settings::{CtxSize, ServerSettings};
use crate::units::Bytes;

use super::Hardware;
use super::error::PlanError;
use super::planner::{PlanOptions, Planner, plan};

/// llama.cpp pads the context to a multiple of this (llama-context.cpp:292).
pub const CTX_STEP: u32 = 256;

/// The contexts the user steps down through when a context does not fit (BRIEF.md).
pub const CONTEXT_LADDER: [u32; 5] = [262_144, 196_608, 131_072, 65_536, 32_768];

/// One step down the context ladder.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ContextStep {
    /// The context.
    pub n_ctx: u32,
    /// Whether a plan exists at this context.
    pub fits: bool,
    /// The aggressive plan's predicted decode speed there.
    pub decode_tps: Option<f64>,
    /// Layers whose experts are all on the GPUs there.
    pub gpu_expert_layers: Option<usize>,
}

/// The largest multiple of [`CTX_STEP`] in `lo..=hi` for which `ok` holds, when `ok(lo)` holds and
/// `ok` is monotone (true up to some value, false after). `lo` and `hi` are multiples of the step.
pub fn bisect_largest(
    lo: u32,
    hi: u32,
    mut ok: impl FnMut(u32) -> Result<bool, PlanError>,
) -> Result<u32, PlanError> {
    if ok(hi)? {
        return Ok(hi);
    }
    let (mut good, mut bad) = (lo / CTX_STEP, hi / CTX_STEP);
    while bad - good > 1 {
        let mid = good + (bad - good) / 2;
        if ok(mid * CTX_STEP)? {
            good = mid;
        } else {
            bad = mid;
        }
    }
    Ok(good * CTX_STEP)
}

/// The largest context at which the dense parts and KV cache of every layer fit on the GPUs with
/// every routed expert in RAM: what `--ctx max` plans for.
pub(crate) fn max_dense_context(planner: &mut Planner<'_>) -> Result<u32, PlanError> {
    let train = planner.model.n_ctx_train.max(CTX_STEP);
    let budgets = planner.budgets(planner.options.moderate_extra);
    let fits = |planner: &mut Planner<'_>, n_ctx: u32| -> Result<bool, PlanError> {
        planner.base.ctx_size = CtxSize::Tokens(n_ctx);
        planner.dense_fits(&budgets)
    };
    if !fits(planner, CTX_STEP)? {
        return Err(PlanError::Context {
            asked: CTX_STEP,
            why: "the dense parts do not fit on the GPUs even at the smallest context".into(),
        });
    }
    bisect_largest(CTX_STEP, train - train % CTX_STEP, |c| fits(planner, c))
}

/// The largest context at which the llama-server arguments `args` (a plan's, with its placement
/// flags) still keep every margin on `hardware`, up to the model's training context.
pub fn max_context(
    model: &ModelDescription,
    args: &[String],
    hardware: &Hardware,
    options: &PlanOptions,
    margins: &[Bytes],
) -> Result<u32, PlanError> {
    let settings = ServerSettings::from_args(args)?;
    let mut planner = Planner::new(model, &settings, hardware, options)?;
    let train = model.n_ctx_train.max(CTX_STEP);
    // the bisection weighs each context with the phase model's compute buffers (a simulation builds
    // the graphs of every new context); its answer is checked with the simulation, and bisected
    // again with it below when the check fails
    let fits = |planner: &mut Planner<'_>, n_ctx: u32, checked: bool| -> Result<bool, PlanError> {
        let mut s = settings.clone();
        s.ctx_size = CtxSize::Tokens(n_ctx);
        let eval =
            if checked { planner.eval.evaluate(&s, margins)? } else { planner.eval.estimate(&s, margins)? };
        Ok(eval.fits_gpus())
    };
    if !fits(&mut planner, CTX_STEP, true)? {
        return Ok(0);
    }
    let estimated = bisect_largest(CTX_STEP, train - train % CTX_STEP, |c| fits(&mut planner, c, false))?;
    if fits(&mut planner, estimated, true)? {
        return Ok(estimated);
    }
    bisect_largest(CTX_STEP, estimated, |c| fits(&mut planner, c, true))
}

/// The aggressive plan at each context of [`CONTEXT_LADDER`] below `from` (and at `from`): what each
/// step down buys in speed.
pub fn context_ladder(
    model: &ModelDescription,
    settings: &ServerSettings,
    hardware: &Hardware,
    options: &PlanOptions,
    from: u32,
) -> Result<Vec<ContextStep>, PlanError> {
    let contexts = std::iter::once(from).chain(CONTEXT_LADDER.into_iter().filter(|&c| c < from));
    steps_at(model, settings, hardware, options, contexts)
}

/// The aggressive plan at the first `count` contexts of [`CONTEXT_LADDER`] below `from` (not at
/// `from` itself): what the next steps down buy, for a plan already made at `from`.
pub fn context_steps_below(
    model: &ModelDescription,
    settings: &ServerSettings,
    hardware: &Hardware,
    options: &PlanOptions,
    from: u32,
    count: usize,
) -> Result<Vec<ContextStep>, PlanError> {
    let contexts = CONTEXT_LADDER.into_iter().filter(|&c| c < from).take(count);
    steps_at(model, settings, hardware, options, contexts)
}

fn steps_at(
    model: &ModelDescription,
    settings: &ServerSettings,
    hardware: &Hardware,
    options: &PlanOptions,
    contexts: impl Iterator<Item = u32>,
) -> Result<Vec<ContextStep>, PlanError> {
    let mut steps = Vec::new();
    let mut opts = options.clone();
    opts.emulate_fit = false;
    // a rung is an estimate of what stepping down buys; the context the user then picks is
    // planned with the simulated checks
    opts.simulate_checks = false;
    for n_ctx in contexts {
        let mut s = settings.clone();
        s.ctx_size = CtxSize::Tokens(n_ctx);
        match plan(model, &s, hardware, &opts) {
            Ok(set) => steps.push(ContextStep {
                n_ctx,
                fits: true,
                decode_tps: Some(set.aggressive.speed.decode_tps),
                gpu_expert_layers: Some(set.aggressive.gpu_expert_layers),
            }),
            Err(PlanError::DoesNotFit { .. }) => {
                steps.push(ContextStep { n_ctx, fits: false, decode_tps: None, gpu_expert_layers: None });
            }
            Err(e) => return Err(e),
        }
    }
    Ok(steps)
}
