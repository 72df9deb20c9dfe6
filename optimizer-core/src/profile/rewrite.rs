//! Rewriting one profile of `models.conf`: its keys and the placement flags inside its
//! `EXTRA_ARGS`, every other byte of the file left as it was.

use std::collections::BTreeSet;

use super::command::split_extra_args;
use super::parse::{is_key, parse};
use super::{Line, ProfileError};
use crate::settings::GpuLayers;
use crate::settings::flags;
use crate::units::Bytes;

/// The llama-server options that place tensors, by their first spelling (every spelling counts):
/// `-ot/--override-tensor`, `-ts/--tensor-split`, `-ngl/--n-gpu-layers`, `--n-cpu-moe`,
/// `--cpu-moe`, `--n-cpu-ffn`, `--fit`, `--fit-target`, `--fit-ctx`, and `-sm/--split-mode` with
/// `-mg/--main-gpu` (a one-GPU plan is `-sm none -mg N`, a split plan must not keep them). A new
/// placement replaces all of them in `EXTRA_ARGS`.
pub const PLACEMENT_FLAGS: [&str; 11] =
    ["-ot", "-ts", "-ngl", "-ncmoe", "-cmoe", "-ncffn", "-fit", "-fitt", "-fitc", "-sm", "-mg"];

/// What to change in one profile. Fields left `None` (and an empty `keys`) change nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProfileChanges {
    /// `CTX_SIZE` (0: the model's training context). A `-c` in `EXTRA_ARGS`, which would
    /// override the key, is removed.
    pub ctx_size: Option<u32>,
    /// `N_GPU_LAYERS`. A `-ngl` in `EXTRA_ARGS` is removed.
    pub n_gpu_layers: Option<GpuLayers>,
    /// `FIT` (`on`/`off`). A `--fit` in `EXTRA_ARGS` is removed.
    pub fit: Option<bool>,
    /// `FIT_TARGET`: margins of devices 0, 1, … in whole MiB (one value applies to every device).
    /// A `--fit-target` in `EXTRA_ARGS` is removed.
    pub fit_target: Option<Vec<Bytes>>,
    /// `-ub` in `EXTRA_ARGS`: its value replaced where it stands, or `-ub N` added at the end.
    pub ubatch_size: Option<u32>,
    /// New placement flags for `EXTRA_ARGS`, e.g. `["-ot", "blk\.(…)\.=CUDA0,exps=CPU"]`: every
    /// flag of [`PLACEMENT_FLAGS`] is removed from `EXTRA_ARGS` and these take the place of the
    /// first one removed (or go at the end). Every other flag keeps its place.
    pub placement: Option<Vec<String>>,
    /// Any other keys, set verbatim, in this order, after the fields above.
    pub keys: Vec<(String, String)>,
}

/// Rewrites profile `profile_id` of `models.conf` with `changes`. Only that profile's lines
/// change: a key that exists is replaced on its line (keeping the line's indentation and ending),
/// a missing key goes after the profile's last key line; comments, blank lines, other profiles and
/// line endings stay byte for byte. A change that sets what is already there leaves the text
/// identical. The result is parsed again before it is returned.
pub fn rewrite_profile(
    text: &str,
    profile_id: &str,
    changes: &ProfileChanges,
) -> Result<String, ProfileError> {
    let conf = parse(text)?;
    let profile = conf.find(profile_id)?;
    let invalid = |what: &str, value: &str, problem| ProfileError::InvalidChange {
        profile: profile.id.clone(),
        what: what.to_string(),
        value: value.to_string(),
        problem,
    };

    // The new value of each key to set, in order; a later one for the same key wins.
    let mut updates: Vec<(String, String)> = Vec::new();
    if let Some(n) = changes.ctx_size {
        set(&mut updates, "CTX_SIZE", n.to_string());
    }
    if let Some(ngl) = changes.n_gpu_layers {
        set(&mut updates, "N_GPU_LAYERS", ngl.to_string());
    }
    if let Some(fit) = changes.fit {
        set(&mut updates, "FIT", if fit { "on" } else { "off" }.to_string());
    }
    if let Some(margins) = &changes.fit_target {
        if margins.is_empty() {
            return Err(invalid("FIT_TARGET", "", "is empty: give one margin or one per device"));
        }
        let mib: Vec<String> = margins.iter().map(|b| b.mib_floor().to_string()).collect();
        set(&mut updates, "FIT_TARGET", mib.join(","));
    }
    for (key, value) in &changes.keys {
        if !is_key(key) {
            return Err(invalid(key, value, "is not a key: expected letters, digits and _"));
        }
        if value.contains(['\n', '\r']) {
            return Err(invalid(key, value, "spans lines"));
        }
        set(&mut updates, key, value.clone());
    }
    let extra_now = updates
        .iter()
        .find(|(k, _)| k == "EXTRA_ARGS")
        .map(|(_, v)| v.as_str())
        .or_else(|| profile.get("EXTRA_ARGS"))
        .unwrap_or_default();
    let words: Vec<&str> = split_extra_args(extra_now).collect();
    if let Some(placement) = &changes.placement {
        if let Some(bad) = placement.iter().find(|w| w.is_empty() || w.contains(char::is_whitespace)) {
            return Err(invalid(
                "EXTRA_ARGS",
                bad,
                "cannot be one word of EXTRA_ARGS, which is split on spaces",
            ));
        }
    }
    let new_words = edit_extra_args(&words, changes);
    if new_words != words {
        set(&mut updates, "EXTRA_ARGS", new_words.join(" "));
    }

    // Lines to replace, and lines to add after the profile's last line.
    let mut replace: Vec<(usize, String)> = Vec::new();
    let mut add: Vec<String> = Vec::new();
    for (key, value) in updates {
        match profile.entry(&key) {
            Some(e) if e.value == value => {}
            Some(e) => replace.push((e.line, format!("{key}={value}"))),
            None if key == "EXTRA_ARGS" && value.is_empty() => {}
            None => add.push(format!("{key}={value}")),
        }
    }
    if replace.is_empty() && add.is_empty() {
        return Ok(text.to_string());
    }

    let eol = conf.lines().iter().map(|l| l.ending).find(|e| !e.is_empty()).unwrap_or("\n");
    let mut out = String::with_capacity(text.len() + 256);
    for line in conf.lines() {
        match replace.iter().find(|(n, _)| *n == line.number) {
            Some((_, new)) => {
                out.push_str(indent(line));
                out.push_str(new);
            }
            None => out.push_str(&line.content),
        }
        if line.number != profile.last_line || add.is_empty() {
            out.push_str(line.ending);
            continue;
        }
        // The added lines take the profile's line ending; a file that ended without one still does.
        let (ending, last_ending) =
            if line.ending.is_empty() { (eol, "") } else { (line.ending, line.ending) };
        out.push_str(ending);
        for (i, new) in add.iter().enumerate() {
            out.push_str(new);
            out.push_str(if i + 1 == add.len() { last_ending } else { ending });
        }
    }
    parse(&out)?;
    Ok(out)
}

/// `EXTRA_ARGS` words after the changes: placement flags (and `-c`, `-ngl`, `--fit`,
/// `--fit-target` when those keys change) removed with their values, `-ub` replaced, the new
/// placement put where the first placement flag was. Each flag is taken with as many values as
/// llama-server reads for it; a word llama-server does not know is kept as it is.
fn edit_extra_args(words: &[&str], changes: &ProfileChanges) -> Vec<String> {
    let mut remove: BTreeSet<&str> = BTreeSet::new();
    if changes.placement.is_some() {
        remove.extend(PLACEMENT_FLAGS);
    }
    for (given, id) in [
        (changes.ctx_size.is_some(), "-c"),
        (changes.n_gpu_layers.is_some(), "-ngl"),
        (changes.fit.is_some(), "-fit"),
        (changes.fit_target.is_some(), "-fitt"),
    ] {
        if given {
            remove.insert(id);
        }
    }
    let mut out: Vec<String> = Vec::new();
    let mut placement_at = None;
    let mut ubatch_written = false;
    let mut i = 0;
    while i < words.len() {
        let (id, arity) =
            flags::lookup(&flags::normalize(words[i])).map_or(("", 0), |(d, _)| (d.id(), d.arity()));
        let end = (i + 1 + arity).min(words.len());
        if remove.contains(id) {
            if changes.placement.is_some() && PLACEMENT_FLAGS.contains(&id) && placement_at.is_none() {
                placement_at = Some(out.len());
            }
        } else if let (Some(ub), "-ub") = (changes.ubatch_size, id) {
            if !ubatch_written {
                out.push(words[i].to_string());
                out.push(ub.to_string());
                ubatch_written = true;
            }
        } else {
            out.extend(words[i..end].iter().map(|w| (*w).to_string()));
        }
        i = end;
    }
    if let Some(placement) = &changes.placement {
        let at = placement_at.unwrap_or(out.len());
        out.splice(at..at, placement.iter().cloned());
    }
    if let (Some(ub), false) = (changes.ubatch_size, ubatch_written) {
        out.extend(["-ub".to_string(), ub.to_string()]);
    }
    out
}

/// Sets `key` in the ordered list of updates; a later value for the same key wins.
fn set(updates: &mut Vec<(String, String)>, key: &str, value: String) {
    match updates.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => updates.push((key.to_string(), value)),
    }
}

/// The white space a line starts with.
fn indent(line: &Line) -> &str {
    let content = line.content.as_str();
    &content[..content.len() - content.trim_start().len()]
}
