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

/// The lines that differ between two versions of models.conf, as a unified-diff-like view: a
/// `--- old` / `+++ new` header, then for each changed stretch a `@@ line N @@` header, the old
/// lines with `-`, the new lines with `+`, and unchanged lines between changes with a space.
/// `rewrite_profile` only replaces lines in place and adds lines after a profile's last one, so
/// the two versions are compared by the lines they share at both ends. Empty when equal.
pub fn line_diff(before: &str, after: &str, old_label: &str, new_label: &str) -> String {
    if before == after {
        return String::new();
    }
    let a: Vec<&str> = before.lines().collect();
    let b: Vec<&str> = after.lines().collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let max_suffix = a.len().min(b.len()) - prefix;
    let suffix = a.iter().rev().zip(b.iter().rev()).take(max_suffix).take_while(|(x, y)| x == y).count();
    let (a_mid, b_mid) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    let mut out = format!("--- {old_label}\n+++ {new_label}\n@@ line {} @@\n", prefix + 1);
    let paired = a_mid.len().min(b_mid.len());
    let mut pending_same: Vec<&str> = Vec::new();
    for i in 0..paired {
        if a_mid[i] == b_mid[i] {
            pending_same.push(a_mid[i]);
            continue;
        }
        for s in pending_same.drain(..) {
            out.push(' ');
            out.push_str(s);
            out.push('\n');
        }
        out.push('-');
        out.push_str(a_mid[i]);
        out.push('\n');
        out.push('+');
        out.push_str(b_mid[i]);
        out.push('\n');
    }
    let (rest_a, rest_b) = (&a_mid[paired..], &b_mid[paired..]);
    if !rest_a.is_empty() || !rest_b.is_empty() {
        for s in pending_same.drain(..) {
            out.push(' ');
            out.push_str(s);
            out.push('\n');
        }
    }
    for l in rest_a {
        out.push('-');
        out.push_str(l);
        out.push('\n');
    }
    for l in rest_b {
        out.push('+');
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// The lines of `after` that are new or changed against `before` (the `+` lines of
/// [`line_diff`]): what a plan writes into a profile.
pub fn changed_lines(before: &str, after: &str) -> Vec<String> {
    line_diff(before, after, "", "")
        .lines()
        .skip(3)
        .filter_map(|l| l.strip_prefix('+'))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_of_replaced_and_added_lines() {
        let before = "[a]\nX=1\nY=2\nZ=3\n\n[b]\nX=1\n";
        let after = "[a]\nX=9\nY=2\nZ=4\nW=5\n\n[b]\nX=1\n";
        insta::assert_snapshot!(line_diff(before, after, "models.conf", "models.conf (new)"), @r"
        --- models.conf
        +++ models.conf (new)
        @@ line 2 @@
        -X=1
        +X=9
         Y=2
        -Z=3
        +Z=4
        +W=5
        ");
        assert_eq!(changed_lines(before, after), ["X=9", "Z=4", "W=5"]);
        assert_eq!(line_diff(before, before, "a", "b"), "");
    }

    #[test]
    fn only_an_added_line() {
        let d = line_diff("[a]\nX=1\n\n[b]\n", "[a]\nX=1\nY=2\n\n[b]\n", "o", "n");
        assert_eq!(d, "--- o\n+++ n\n@@ line 3 @@\n+Y=2\n");
    }
}
