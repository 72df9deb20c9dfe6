//! `splitplan PROFILE|MODEL`: the aggressive and the moderate placement for a model on the GPUs
//! found or described, beside what llama.cpp's own `--fit` would do.

use std::fmt::Write as _;

use anyhow::{Context as _, Result, anyhow};
use optimizer_core::gguf::{self, ReadOptions};
use optimizer_core::model::ModelDescription;
use optimizer_core::plan::{
    ContextRequest, ContextStep, Hardware, Plan, PlanError, PlanOptions, PlanSet, context_ladder,
    context_steps_below, plan,
};
use optimizer_core::profile::rewrite_profile;
use optimizer_core::render::plan::{self as render, PlanReport, ReportInputs, TextStyle};
use optimizer_core::render::{ProfileForm, changed_lines, profile_changes};
use optimizer_core::settings::{CtxSize, ServerSettings};
use optimizer_core::units::group_thousands;

use super::Outcome;
use crate::cli::PlanArgs;
use crate::printer::{Level, Printer};
use crate::settings::{self, ProfileSource, Target};

pub fn run(args: &PlanArgs, printer: &Printer) -> Result<Outcome> {
    let t = &args.target;
    let target = settings::target(
        &t.target,
        t.ctx.as_deref(),
        t.models_conf.as_deref(),
        t.models_dir.as_deref(),
        &args.server_args,
    )?;
    let machine = settings::machine(&args.devices)?;
    let model = read_model(&target)?;
    for note in &machine.notes {
        printer.message(Level::Note, note);
    }
    for note in &target.notes {
        printer.message(Level::Note, &note.to_string());
    }
    for w in &model.warnings {
        printer.message(Level::Warning, &w.to_string());
    }
    let options =
        settings::plan_options(&target, args.margin.as_deref(), &args.moderate_extra, &machine.hardware)?;
    let planned = plan_target(&model, &target, &machine.hardware, &options);
    let report = match planned {
        Ok((_, report)) => report,
        Err(e) => return does_not_fit(e, &model, &target, &machine.hardware, &options, printer),
    };
    let out = if args.json {
        render::json(&report)
    } else {
        render::text(&report, TextStyle { colour: printer.stdout_colour() })
    };
    printer.data(&out)?;
    Ok(Outcome::Done)
}

/// Reads the model's header.
pub fn read_model(target: &Target) -> Result<ModelDescription> {
    let gguf = gguf::open_model(&target.model, &ReadOptions::default())?;
    Ok(ModelDescription::from_gguf(&gguf)?)
}

/// Plans `target` and builds its report with the context steps below its context.
pub fn plan_target(
    model: &ModelDescription,
    target: &Target,
    hardware: &Hardware,
    options: &PlanOptions,
) -> Result<(PlanSet, PlanReport), PlanError> {
    let settings = target.plan_settings();
    let set = plan(model, &settings, hardware, options)?;
    let steps = if options.context == ContextRequest::AsGiven {
        smaller_contexts(model, &settings, hardware, options, set.n_ctx)?
    } else {
        Vec::new()
    };
    let mut report = PlanReport::new(model, &set).with_inputs(&ReportInputs {
        profile: target.profile.as_ref().map(|p| p.id.as_str()),
        hardware,
        settings: &settings,
        pins: &target.pins,
    });
    report.context_steps = steps;
    if let Some(source) = &target.profile {
        for (entry, plan) in report.plans.iter_mut().zip([&set.aggressive, &set.moderate]) {
            entry.profile_lines = profile_lines(source, plan, target.ctx_to_write(set.n_ctx));
        }
    }
    Ok((set, report))
}

/// The lines of the profile that `apply` writes for `plan`, changed ones only (empty when the
/// rewrite is refused: apply says why).
fn profile_lines(source: &ProfileSource, plan: &Plan, ctx: Option<u32>) -> Vec<String> {
    profile_changes(plan, ProfileForm::Flags, ctx)
        .and_then(|c| rewrite_profile(&source.conf_text, &source.id, &c).ok())
        .map(|new| changed_lines(&source.conf_text, &new))
        .unwrap_or_default()
}

/// The aggressive plan at the next two contexts of the user's ladder below `n_ctx`.
fn smaller_contexts(
    model: &ModelDescription,
    settings: &ServerSettings,
    hardware: &Hardware,
    options: &PlanOptions,
    n_ctx: u32,
) -> Result<Vec<ContextStep>, PlanError> {
    context_steps_below(model, settings, hardware, options, n_ctx, 2)
}

/// Nothing fits (exit 1, with what to give up), or the input was wrong (exit 2).
fn does_not_fit(
    e: PlanError,
    model: &ModelDescription,
    target: &Target,
    hardware: &Hardware,
    options: &PlanOptions,
    printer: &Printer,
) -> Result<Outcome> {
    match e {
        PlanError::DoesNotFit { .. } | PlanError::Context { .. } => {
            let mut msg = format!("does not fit: {e}");
            let settings = target.plan_settings();
            let ram = matches!(&e, PlanError::DoesNotFit { what, .. } if what.contains("system RAM"));
            if ram {
                msg.push_str("\nhint: --ram gives the RAM of the machine planned for (e.g. --ram 64G)");
            } else if let (PlanError::DoesNotFit { .. }, CtxSize::Tokens(n)) =
                (&e, settings.effective_ctx_size())
            {
                // What to give up next, in the user's order: the planner already moved every
                // expert it could to system RAM; then the context, 256K → 192K → 128K.
                if let Ok(steps) = context_ladder(model, &settings, hardware, options, n) {
                    let fits: Vec<String> = steps
                        .iter()
                        .filter(|c| c.fits && c.n_ctx < n)
                        .map(|c| {
                            format!(
                                "{} tokens ({:.1} tok/s)",
                                group_thousands(u64::from(c.n_ctx)),
                                c.decode_tps.unwrap_or(0.0)
                            )
                        })
                        .collect();
                    if let Some(first) = fits.first() {
                        let _ = write!(
                            msg,
                            "\nwith every routed expert it can move in system RAM, the next smaller context that fits is {first}\nhint: --ctx max finds the largest context that fits"
                        );
                    } else {
                        msg.push_str(
                            "\nno smaller context of the ladder (down to 32,768 tokens) fits either",
                        );
                    }
                }
            }
            printer.message(Level::Error, &msg);
            Ok(Outcome::No)
        }
        e => Err(anyhow!(e)).context(format!("could not plan '{}'", target.model.display())),
    }
}
