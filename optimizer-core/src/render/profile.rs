//! A plan as models.conf lines: the [`ProfileChanges`] that `profile::rewrite_profile` applies to
//! one profile, and the profile's lines after the change.
//!
//! The flags form sets `FIT=off` and `N_GPU_LAYERS`, and puts `-ts`/`-ot` (or `-sm none -mg N`)
//! into `EXTRA_ARGS` in place of the profile's old placement flags; the fit form sets `FIT=on`,
//! `FIT_TARGET` and `N_GPU_LAYERS=auto` and drops every placement flag, so that llama.cpp's fitter
//! chooses the placement itself (it refuses to when `-ngl`, `-ts` or `-ot` is set, common/fit.cpp:458-486).

use crate::plan::Plan;
use crate::profile::{ProfileChanges, ProfileError, parse, rewrite_profile};
use crate::settings::GpuLayers;

/// How a plan goes into a profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileForm {
    /// `-ngl`, `-ts`, `-ot`, `--fit off`: the plan exactly, whatever the display takes at load.
    Flags,
    /// `--fit on --fit-target a,b`: only when the plan has such a form
    /// ([`Plan::fit_target_form`]).
    FitTarget,
}

/// The changes that write `plan` into a profile in `form`; `n_ctx` sets `CTX_SIZE` when the plan
/// was made for another context than the profile's. `None` for [`ProfileForm::FitTarget`] when the
/// plan has no such form.
pub fn profile_changes(plan: &Plan, form: ProfileForm, n_ctx: Option<u32>) -> Option<ProfileChanges> {
    let mut changes = ProfileChanges { ctx_size: n_ctx, ..ProfileChanges::default() };
    match form {
        ProfileForm::Flags => {
            let mut placement = Vec::new();
            let mut words = plan.placement_args.iter();
            while let Some(w) = words.next() {
                match w.as_str() {
                    "-ngl" => {
                        let n = words.next().and_then(|v| v.parse().ok())?;
                        changes.n_gpu_layers = Some(GpuLayers::Count(n));
                    }
                    "--fit" => {
                        changes.fit = Some(words.next().is_some_and(|v| v == "on"));
                    }
                    _ => placement.push(w.clone()),
                }
            }
            changes.placement = Some(placement);
        }
        ProfileForm::FitTarget => {
            let margins = plan.fit_target_form.clone()?;
            changes.fit = Some(true);
            changes.fit_target = Some(margins);
            changes.n_gpu_layers = Some(GpuLayers::Auto);
            changes.placement = Some(Vec::new());
        }
    }
    Some(changes)
}

/// Profile `profile_id` of `conf_text` after `changes`: its lines from `[id]` to its last key, as
/// they would be written.
pub fn profile_lines(
    conf_text: &str,
    profile_id: &str,
    changes: &ProfileChanges,
) -> Result<String, ProfileError> {
    let text = rewrite_profile(conf_text, profile_id, changes)?;
    let conf = parse(&text)?;
    let profile = conf.find(profile_id)?;
    let range = profile.lines();
    let lines: Vec<&str> =
        conf.lines().iter().filter(|l| range.contains(&l.number)).map(|l| l.content.as_str()).collect();
    Ok(lines.join("\n"))
}
