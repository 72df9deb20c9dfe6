//! `splitplan advise [PROFILE…]`: advice_test_plan.md for the profiles of models.conf, grouped by
//! model: both plans of each, beside its current placement and what llama.cpp's `--fit` would do,
//! with empty test-result tables. Building the document is here (reading, planning); rendering it
//! is core's (`render::advice`).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Result, anyhow};
use optimizer_core::LLAMA_CPP_BUILD;
use optimizer_core::gguf::{self, ReadOptions};
use optimizer_core::model::ModelDescription;
use optimizer_core::plan::{ContextStep, PlanError, assess, context_ladder};
use optimizer_core::profile::{self, ModelsConf, rewrite_profile};
use optimizer_core::render::advice::{self, AdviceDoc, Current, ModelAdvice, ProfileAdvice};
use optimizer_core::render::inspect::InspectReport;
use optimizer_core::render::plan::DeviceEntry;
use optimizer_core::render::{ProfileForm, profile_changes};
use optimizer_core::settings::{CtxSize, GpuLayers, kv_type_name};
use optimizer_core::units::group_thousands;

use super::Outcome;
use crate::cli::AdviseArgs;
use crate::printer::{Level, Printer};
use crate::settings::{self, Machine, Target};

/// The keys that place tensors or size the context: the lines a suggestion changes.
const PLACEMENT_KEYS: [&str; 5] = ["CTX_SIZE", "N_GPU_LAYERS", "FIT", "FIT_TARGET", "EXTRA_ARGS"];

pub fn run(args: &AdviseArgs, printer: &Printer) -> Result<Outcome> {
    let conf_path = settings::models_conf_path(args.models_conf.as_deref());
    let (text, conf) = settings::read_models_conf(&conf_path)?;
    let ids: Vec<String> = if args.profiles.is_empty() {
        conf.profiles().iter().map(|p| p.id.clone()).collect()
    } else {
        for id in &args.profiles {
            conf.find(id).map_err(|e| anyhow!("{}: {e}", conf_path.display()))?;
        }
        args.profiles.clone()
    };
    if ids.is_empty() {
        return Err(anyhow!("{} has no active profile to advise on", conf_path.display()));
    }
    let machine = settings::machine(&args.devices)?;
    for note in &machine.notes {
        printer.message(Level::Note, note);
    }
    let models_dir = settings::models_dir(&conf_path, args.models_dir.as_deref());
    let doc = build(args, &conf_path, &text, &conf, &ids, &machine, &models_dir, printer)?;
    let md = advice::markdown(&doc);
    if args.out.as_deref() == Some(Path::new("-")) {
        printer.data(&md)?;
        return Ok(Outcome::Done);
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| conf_path.parent().unwrap_or(Path::new("")).join("advice_test_plan.md"));
    let bak = crate::files::write_with_backup(&out, &md)?;
    let n_models = doc.models.len();
    let bak = bak.map_or_else(String::new, |b| format!("; the previous one is {}", b.display()));
    printer.message(
        Level::Note,
        &format!("wrote {}: {} profile(s) of {n_models} model(s){bak}", out.display(), ids.len()),
    );
    Ok(Outcome::Done)
}

/// The document: one section per model file, in the order of its first profile.
#[allow(clippy::too_many_arguments)] // one call site; the parts are resolved once by `run`
fn build(
    args: &AdviseArgs,
    conf_path: &Path,
    text: &str,
    conf: &ModelsConf,
    ids: &[String],
    machine: &Machine,
    models_dir: &Path,
    printer: &Printer,
) -> Result<AdviceDoc> {
    let hw = &machine.hardware;
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for id in ids {
        let p = conf.find(id).map_err(|e| anyhow!("{}: {e}", conf_path.display()))?;
        let model = p.model_path().to_owned();
        match groups.iter_mut().find(|(m, _)| *m == model) {
            Some((_, v)) => v.push(id.clone()),
            None => groups.push((model, vec![id.clone()])),
        }
    }
    let mut models = Vec::new();
    for (model_path, profile_ids) in groups {
        let file = models_dir.join(&model_path);
        let read = gguf::open_model(&file, &ReadOptions::default())
            .map_err(|e| anyhow!("{}: {e}", file.display()))
            .and_then(|g| {
                ModelDescription::from_gguf(&g)
                    .map(|m| (g, m))
                    .map_err(|e| anyhow!("{}: {e}", file.display()))
            });
        let (facts, error, model) = match read {
            Ok((g, m)) => (advice::model_facts(&InspectReport::new(&g, &m)), None, Some(m)),
            Err(e) => {
                printer.message(Level::Warning, &format!("{e:#}"));
                (Vec::new(), Some(format!("{e:#}")), None)
            }
        };
        let mut profiles = Vec::new();
        for id in &profile_ids {
            profiles.push(profile_advice(args, conf_path, text, conf, id, model.as_ref(), machine, printer)?);
        }
        models.push(ModelAdvice { title: title_of(&model_path), model_path, facts, error, profiles });
    }
    Ok(AdviceDoc {
        date: today(),
        llama_build: LLAMA_CPP_BUILD,
        machine: DeviceEntry::machine(hw),
        host_ram: hw.host_ram,
        host_bandwidth_gbs: hw.host_bandwidth_gbs,
        models,
    })
}

#[allow(clippy::too_many_arguments)] // see `build`
fn profile_advice(
    args: &AdviseArgs,
    conf_path: &Path,
    text: &str,
    conf: &ModelsConf,
    id: &str,
    model: Option<&ModelDescription>,
    machine: &Machine,
    printer: &Printer,
) -> Result<ProfileAdvice> {
    let p = conf.find(id).map_err(|e| anyhow!("{}: {e}", conf_path.display()))?;
    let current_lines = placement_lines(conf, id);
    let mut advice = ProfileAdvice {
        id: id.to_owned(),
        name: p.name().map(str::to_owned),
        current_lines: current_lines.clone(),
        settings: String::new(),
        current: Current::Unknown(String::new()),
        plans: Err(String::new()),
        suggestions: [current_lines.clone(), current_lines],
        give_up: Vec::new(),
    };
    let target = match settings::target(id, None, Some(conf_path), args.models_dir.as_deref(), &[]) {
        Ok(t) => t,
        Err(e) => {
            let why = format!("{e:#}");
            printer.message(Level::Warning, &format!("[{id}]: {why}"));
            advice.current = Current::Unknown(why.clone());
            advice.plans = Err(why);
            "the profile's settings".clone_into(&mut advice.settings);
            return Ok(advice);
        }
    };
    advice.settings = settings_words(&target);
    let Some(model) = model else {
        advice.current = Current::Unknown("the model could not be read".to_owned());
        advice.plans = Err("the model could not be read".to_owned());
        return Ok(advice);
    };
    let hw = &machine.hardware;
    let options = settings::plan_options(&target, args.margin.as_deref(), &args.moderate_extra, hw)?;
    let s = &target.settings;
    let placed = s.n_gpu_layers != GpuLayers::Auto || !s.tensor_split.is_empty() || !s.overrides.is_empty();
    advice.current = if s.fit && !placed {
        Current::Fit
    } else {
        match assess(model, s, hw, &options) {
            Ok(a) => Current::from_assessment(model, &a),
            Err(e) => Current::Unknown(e.to_string()),
        }
    };
    match super::plan::plan_target(model, &target, hw, &options) {
        Ok((set, mut report)) => {
            report.context_steps.clear();
            for (i, plan) in [&set.aggressive, &set.moderate].into_iter().enumerate() {
                if let Some(changes) = profile_changes(plan, ProfileForm::Flags, None) {
                    match rewrite_profile(text, id, &changes) {
                        Ok(new) => {
                            let new_conf = profile::parse(&new).map_err(|e| anyhow!("{e}"))?;
                            advice.suggestions[i] = placement_lines(&new_conf, id);
                        }
                        Err(e) => printer.message(Level::Warning, &format!("[{id}]: {e}")),
                    }
                }
            }
            advice.plans = Ok(report);
        }
        Err(e @ (PlanError::DoesNotFit { .. } | PlanError::Context { .. })) => {
            advice.give_up = smaller_contexts(model, &target, machine, &options);
            advice.plans = Err(e.to_string());
        }
        Err(e) => {
            printer.message(Level::Warning, &format!("[{id}]: {e}"));
            advice.plans = Err(e.to_string());
        }
    }
    Ok(advice)
}

/// The aggressive plan at the smaller contexts of the user's ladder, when the profile's own does
/// not fit.
fn smaller_contexts(
    model: &ModelDescription,
    target: &Target,
    machine: &Machine,
    options: &optimizer_core::plan::PlanOptions,
) -> Vec<ContextStep> {
    let settings = target.plan_settings();
    let CtxSize::Tokens(n) = settings.effective_ctx_size() else { return Vec::new() };
    context_ladder(model, &settings, &machine.hardware, options, n)
        .map(|steps| steps.into_iter().filter(|c| c.n_ctx < n).collect())
        .unwrap_or_default()
}

/// The profile's lines with the keys a suggestion changes, as they are in the file.
fn placement_lines(conf: &ModelsConf, id: &str) -> Vec<String> {
    let Some(p) = conf.profile(id) else { return Vec::new() };
    p.entries
        .iter()
        .filter(|e| PLACEMENT_KEYS.contains(&e.key.as_str()))
        .filter_map(|e| conf.lines().get(e.line - 1).map(|l| l.content.trim().to_owned()))
        .collect()
}

/// `262,144 tokens, -b 2048 -ub 512, KV q8_0/q8_0, flash attention on`.
fn settings_words(t: &Target) -> String {
    let s = &t.settings;
    let ctx = match s.effective_ctx_size() {
        CtxSize::Tokens(n) => format!("{} tokens", group_thousands(u64::from(n))),
        _ => "the model's trained context".to_owned(),
    };
    format!(
        "{ctx}, -b {} -ub {}, KV {}/{}, flash attention {}",
        s.batch_size,
        s.ubatch_size,
        kv_type_name(s.cache_type_k),
        kv_type_name(s.cache_type_v),
        s.effective_flash_attn().name()
    )
}

/// The model file's name without `.gguf` and without the shard suffix of a split model.
fn title_of(model_path: &str) -> String {
    let name = Path::new(model_path)
        .file_name()
        .map_or_else(|| model_path.to_owned(), |n| n.to_string_lossy().into_owned());
    let stem = name.strip_suffix(".gguf").unwrap_or(&name);
    let parts: Vec<&str> = stem.rsplitn(4, '-').collect();
    match parts.as_slice() {
        [total, "of", no, prefix] if total.len() == 5 && no.len() == 5 => (*prefix).to_owned(),
        _ => stem.to_owned(),
    }
}

/// Today as `YYYY-MM-DD` (UTC), or the day of `SOURCE_DATE_EPOCH` when it is set (reproducible
/// documents and tests).
fn today() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
    let (y, m, d) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or(0));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 to a (year, month, day) of the proleptic Gregorian calendar (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_414), (2025, 11, 22));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn titles() {
        assert_eq!(
            title_of("Q/UD/Qwen3-Coder-Next-UD-Q5_K_XL-00001-of-00003.gguf"),
            "Qwen3-Coder-Next-UD-Q5_K_XL"
        );
        assert_eq!(title_of("GLM-4.7-Flash/GLM-4.7-Flash-Q8_0.gguf"), "GLM-4.7-Flash-Q8_0");
    }
}
