//! `splitplan apply PROFILE --plan moderate|aggressive`: plans the profile and writes the chosen
//! plan into it. Only that profile's placement flags and keys change (core's `rewrite_profile`);
//! the file is replaced atomically with a `.bak` beside it; the changed lines go to stdout.

use anyhow::{Result, anyhow, bail};
use optimizer_core::plan::{PlanError, plan};
use optimizer_core::profile;
use optimizer_core::render::{ProfileForm, line_diff, profile_changes};

use super::Outcome;
use crate::cli::{ApplyArgs, PlanChoice};
use crate::printer::{Level, Printer};
use crate::settings;

pub fn run(args: &ApplyArgs, printer: &Printer) -> Result<Outcome> {
    let t = &args.target;
    let target = settings::target(
        &t.target,
        t.ctx.as_deref(),
        t.models_conf.as_deref(),
        t.models_dir.as_deref(),
        &[],
    )?;
    let Some(source) = &target.profile else {
        bail!(
            "'{}' is a model file: apply writes a profile of models.conf\nhint: name a profile, e.g. `splitplan apply qwen3-coder-ud-q5 --plan moderate`",
            t.target
        );
    };
    let machine = settings::machine(&args.devices)?;
    for note in &machine.notes {
        printer.message(Level::Note, note);
    }
    let model = super::plan::read_model(&target)?;
    let mut options =
        settings::plan_options(&target, args.margin.as_deref(), &args.moderate_extra, &machine.hardware)?;
    options.emulate_fit = false;
    let set = match plan(&model, &target.plan_settings(), &machine.hardware, &options) {
        Ok(set) => set,
        Err(e @ (PlanError::DoesNotFit { .. } | PlanError::Context { .. })) => {
            printer.message(
                Level::Error,
                &format!("does not fit: {e}\nnothing was written to {}", source.conf_path.display()),
            );
            return Ok(Outcome::No);
        }
        Err(e) => return Err(anyhow!(e).context(format!("could not plan profile [{}]", source.id))),
    };
    let (chosen, name) = match args.plan {
        PlanChoice::Aggressive => (&set.aggressive, "aggressive"),
        PlanChoice::Moderate => (&set.moderate, "moderate"),
    };
    // CTX_SIZE changes only when the context was asked for.
    let ctx = target.ctx_to_write(set.n_ctx);
    let changes = profile_changes(chosen, ProfileForm::Flags, ctx)
        .ok_or_else(|| anyhow!("the {name} plan has no models.conf form"))?;
    let new = profile::rewrite_profile(&source.conf_text, &source.id, &changes)
        .map_err(|e| anyhow!("{}: {e}", source.conf_path.display()))?;
    let path = source.conf_path.display().to_string();
    if new == source.conf_text {
        printer.message(
            Level::Note,
            &format!("profile [{}] already holds the {name} plan: {path} unchanged", source.id),
        );
        return Ok(Outcome::Done);
    }
    let diff = line_diff(&source.conf_text, &new, &path, &format!("{path} ([{}], {name} plan)", source.id));
    if args.dry_run {
        printer.data(&diff)?;
        printer.message(Level::Note, "--dry-run: nothing written");
        return Ok(Outcome::Done);
    }
    let current =
        std::fs::read_to_string(&source.conf_path).map_err(|e| anyhow!("could not read '{path}': {e}"))?;
    if current != source.conf_text {
        bail!("'{path}' changed while it was planned; nothing written\nhint: run apply again");
    }
    let bak = crate::files::write_with_backup(&source.conf_path, &new)?;
    printer.data(&diff)?;
    let bak = bak.map_or_else(String::new, |b| format!(" (the previous file is {})", b.display()));
    printer.message(
        Level::Note,
        &format!(
            "profile [{}] of {path} now holds the {name} plan: {:.1} tok/s predicted{bak}",
            source.id, chosen.speed.decode_tps
        ),
    );
    Ok(Outcome::Done)
}
