//! `splitplan memory TARGET -- FLAGS`: the predicted memory per device for a model and
//! llama-server flags, on the GPUs found or described.

use anyhow::{Result, bail};
use optimizer_core::gguf::{self, ReadOptions};
use optimizer_core::memory;
use optimizer_core::model::ModelDescription;
use optimizer_core::plan::ContextRequest;
use optimizer_core::render::memory::{self as render, MemoryReport};
use optimizer_core::units::group_thousands;

use super::Outcome;
use crate::cli::MemoryArgs;
use crate::printer::{Level, Printer};
use crate::settings;

pub fn run(args: &MemoryArgs, printer: &Printer) -> Result<Outcome> {
    let target = settings::target(
        &args.target,
        args.ctx.as_deref(),
        args.models_conf.as_deref(),
        args.models_dir.as_deref(),
        &args.server_args,
    )?;
    if target.context == ContextRequest::Max {
        bail!(
            "--ctx max is the plan command's: memory predicts one configuration\nhint: `splitplan {} --ctx max` finds the largest context that fits",
            args.target
        );
    }
    let machine = settings::machine(&args.devices)?;
    let gguf = gguf::open_model(&target.model, &ReadOptions::default())?;
    let model = ModelDescription::from_gguf(&gguf)?;
    for note in &machine.notes {
        printer.message(Level::Note, note);
    }
    for note in &target.notes {
        printer.message(Level::Note, &note.to_string());
    }
    for w in &model.warnings {
        printer.message(Level::Warning, &w.to_string());
    }
    let prediction = memory::predict(&model, &target.settings, &machine.hardware.gpus_at_load())?;
    let path = target.model.display().to_string();
    let mut report = MemoryReport::new(
        &prediction,
        &target.settings,
        &machine.hardware,
        &path,
        target.profile.as_ref().map(|p| p.id.as_str()),
    );
    report.uncalibrated = memory::uncalibrated(&model, &target.settings, &prediction);
    for u in &report.uncalibrated {
        printer.message(Level::Warning, &u.message());
    }
    printer.data(&if args.json { render::json(&report) } else { render::text(&report) })?;
    if report.fits == Some(false) {
        let over: Vec<String> = report
            .gpus
            .iter()
            .filter(|g| g.left_after_request_bytes < 0)
            .map(|g| {
                let compute = if g.compute_included { "" } else { " before its compute buffers" };
                let when = if g.left_bytes < 0 { "at load" } else { "after the first long request" };
                let by = group_thousands(g.left_after_request_mib.unsigned_abs());
                format!("{} by {by} MiB {when}{compute}", g.name)
            })
            .collect();
        printer.message(Level::Error, &format!("does not fit: over on {}", over.join(", ")));
        return Ok(Outcome::No);
    }
    Ok(Outcome::Done)
}
