//! `splitplan confirm PROFILE|MODEL`: launch llama-server with the plan, read what happened, step
//! along the ladder of candidate placements by what was missing, and report the most GPU-resident
//! placement that loaded and survived a worst-case request, with what it measured.
//!
//! The search is core's ([`optimizer_core::bisect`]), the meaning of each launch too
//! ([`optimizer_core::confirm::classify`]); this module resolves the inputs, runs the launches
//! through a [`Launcher`], prints, writes the calibration cache and, with `--apply`, the profile.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow, bail};
use optimizer_core::LLAMA_CPP_BUILD;
use optimizer_core::bisect::{Search, Verdict};
use optimizer_core::confirm::{
    BuildInfo, CalibrationCache, CalibrationKey, CalibrationRecord, Classification, Extension, FitComparison,
    Ladder, LadderExtender, MAX_EXTENSIONS, MeasuredDevice, Measurement, ModelIdentity, Rung, TestResult,
    calibration, classify, compare, measure, parse_version_output, planned_ladder, render_fit_comparison,
    render_results_table,
};
use optimizer_core::model::ModelDescription;
use optimizer_core::plan::{Hardware, PlanOptions};
use optimizer_core::profile::{self, ProfileChanges};
use optimizer_core::render::advice_fill::{ResultsSlot, fill_results};
use optimizer_core::settings::{CtxSize, ServerSettings};
use optimizer_core::units::Bytes;
use serde::Serialize;

use super::Outcome;
use crate::cli::ConfirmArgs;
use crate::launch::nvml::{BusyProcess, GpuSampler};
use crate::launch::process::RealLauncher;
use crate::launch::progress::Progress;
use crate::launch::{
    Interrupted, LaunchReport, LaunchSpec, Launcher, Program, RequestPlan, load_timeout_for,
};
use crate::printer::{Level, Printer};
use crate::settings;

/// The margins when neither `--margin` nor the profile's `--fit-target` gives one: the user's
/// docker-compose default (BRIEF.md): 128 MiB on the dedicated GPU, 1 GiB on the display GPU.
const DEFAULT_MARGINS_MIB: [u64; 2] = [128, 1024];

/// The most devices llama.cpp's CUDA backend handles (ggml/include/ggml-cuda.h:20, GGML_CUDA_MAX_DEVICES).
const MAX_DEVICES: usize = 16;

/// The context steps of the ladder without a planner: the planner's, in the user's order
/// (BRIEF.md: 256K → 192K → 128K).
const CONTEXT_STEPS: [u32; 2] = optimizer_core::confirm::LADDER_CONTEXTS;

pub fn run(args: &ConfirmArgs, printer: &Printer) -> Result<Outcome> {
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&interrupted))
            .context("could not install the Ctrl-C handler that stops llama-server")?;
    }
    let mut inputs = Inputs::resolve(args)?;
    for note in &inputs.notes {
        printer.message(Level::Note, note);
    }
    let sampler = match GpuSampler::open() {
        Ok(s) => Some(s),
        Err(e) => {
            printer.message(
                Level::Note,
                &format!(
                    "{e:#}: the VRAM at the peak is read from the memory breakdown llama-server prints at exit instead"
                ),
            );
            None
        }
    };
    if let Some(s) = &sampler {
        busy_check(&s.compute_processes(), args.allow_busy, printer)?;
    }
    let mut launcher = RealLauncher::new(sampler, interrupted);
    let progress = Progress::stderr(args.quiet || args.json);
    let run = search(&mut inputs, &mut launcher, &progress, printer);
    progress.finish();
    let interrupted = |e: &anyhow::Error| {
        e.is::<Interrupted>().then(|| {
            printer.message(Level::Error, "interrupted: llama-server was stopped, nothing was changed");
            Outcome::Interrupted
        })
    };
    let run = match run {
        Err(e) => return interrupted(&e).ok_or(e),
        Ok(r) => r,
    };
    let comparison = match (args.compare_fit, run.verdict) {
        (true, Verdict::Proven { rung }) => {
            let c = compare_fit(&inputs, &run, rung, &mut launcher, &progress);
            progress.finish();
            match c {
                Err(e) => return interrupted(&e).ok_or(e),
                Ok(c) => Some(c),
            }
        }
        _ => None,
    };
    report(&inputs, &run, comparison.as_ref(), args, printer)
}

/// One launch of `--compare-fit`, its log named `name`.
fn spec<'a>(inputs: &'a Inputs, rung: &'a Rung, index: Option<usize>, name: &str) -> LaunchSpec<'a> {
    LaunchSpec {
        program: &inputs.program,
        base_args: &inputs.base_args,
        rung,
        rung_index: index,
        model: inputs.launch_model.clone(),
        host: inputs.host.clone(),
        log_path: inputs.log_dir.join(format!("{}-{name}.log", inputs.log_stem)),
        load_timeout: inputs.load_timeout,
        request: inputs.request,
        grace: inputs.grace,
    }
}

/// `--compare-fit`: llama.cpp's `--fit` on the same command (the placement flags replaced by
/// `--fit on --fit-target <margins>`, at the proven rung's context and micro-batch), then the
/// proven placement again, so that the speed runs alternate: placement, `--fit`, placement.
fn compare_fit(
    inputs: &Inputs,
    run: &SearchRun,
    proven: usize,
    launcher: &mut dyn Launcher,
    progress: &Progress,
) -> Result<FitComparison> {
    let rung = &inputs.ladder.rungs[proven];
    let first = run
        .launches
        .iter()
        .rev()
        .find(|l| l.rung == proven && l.result == Classification::Fits && l.below_margin.is_none())
        .ok_or_else(|| anyhow!("the proven launch is missing"))?;
    let n_gpus = inputs.ladder.gpus.len().max(first.report.log.model_devices.len()).max(1);
    let target = (0..n_gpus).map(|i| inputs.margin(i).mib_floor().to_string()).collect::<Vec<_>>().join(",");
    let fit_rung = Rung {
        label: format!("llama.cpp --fit on --fit-target {target}"),
        placement: vec!["--fit".into(), "on".into(), "--fit-target".into(), target],
        ctx_size: rung.ctx_size,
        ubatch_size: rung.ubatch_size,
        predicted: Vec::new(),
        margins: Vec::new(),
    };
    let fit_spec = spec(inputs, &fit_rung, None, "fit");
    progress.line(&format!("compare: {}; log: {}", fit_rung.label, fit_spec.log_path.display()));
    let fit = launcher.launch(&fit_spec, progress)?;
    let fit_class = classify(&fit.facts, &fit.log);
    progress.finish();
    progress.line(&format!("  {} ({:.0} s)", fit_class.summary(), fit.elapsed.as_secs_f64()));
    let again_spec = spec(inputs, rung, Some(proven), "again");
    progress.line(&format!(
        "compare: {} again, for the speed runs; log: {}",
        rung.label,
        again_spec.log_path.display()
    ));
    let again = launcher.launch(&again_spec, progress)?;
    let again_class = classify(&again.facts, &again.log);
    progress.finish();
    progress.line(&format!("  {} ({:.0} s)", again_class.summary(), again.elapsed.as_secs_f64()));
    let mut plan_speed = first.report.speed.clone();
    plan_speed.extend(again.speed.iter().copied());
    let plan = first.measured.clone().with_speed(&plan_speed);
    let fit_measured = (fit_class == Classification::Fits)
        .then(|| measure(&fit.log, &fit.nvml, fit.prompt, fit.decode).with_speed(&fit.speed));
    Ok(FitComparison {
        placement: rung.label.clone(),
        plan,
        fit_choice: fit.log.fit_layers.clone(),
        fit: fit_measured,
        fit_result: fit_class.summary(),
    })
}

/// A GPU already busy: another compute process would make every measurement wrong, so confirm
/// stops before launching anything, unless `--allow-busy` (then it is a note).
fn busy_check(busy: &[BusyProcess], allow: bool, printer: &Printer) -> Result<()> {
    if busy.is_empty() {
        return Ok(());
    }
    let list = busy
        .iter()
        .map(|b| {
            format!(
                "CUDA{} ({}): pid {}{}{}",
                b.gpu,
                b.gpu_name,
                b.pid,
                b.name.as_ref().map_or_else(String::new, |n| format!(" ({n})")),
                b.used.map_or_else(String::new, |u| format!(", {u:#}"))
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    if allow {
        printer.message(
            Level::Note,
            &format!(
                "--allow-busy: other programs compute on the GPUs ({list}); their memory is taken as not free"
            ),
        );
        return Ok(());
    }
    bail!(
        "a GPU is already in use by another program: {list}\nhint: stop it (a llama-server still running?), \
         or pass --allow-busy to confirm with the memory it leaves free"
    )
}

/// Everything a confirm run needs, resolved from the arguments.
struct Inputs {
    program: Program,
    base_args: Vec<String>,
    settings: ServerSettings,
    /// `-m` for launches (a template keeps the base's container path).
    launch_model: Option<String>,
    model_path: PathBuf,
    profile: Option<ProfileFile>,
    ladder: Ladder,
    /// What the planner's ladder was planned from, to extend it when every rung ran out of
    /// memory; `None` for a ladder given with `--ladder` or made without the planner.
    replanner: Option<Replanner>,
    margins: Vec<Bytes>,
    host: String,
    request: RequestPlan,
    load_timeout: Duration,
    grace: Duration,
    log_dir: PathBuf,
    log_stem: String,
    cache: Option<CalibrationCache>,
    build: Option<BuildInfo>,
    notes: Vec<String>,
}

/// The planner's inputs, kept to extend its ladder.
struct Replanner {
    model: ModelDescription,
    hardware: Hardware,
    extender: LadderExtender,
}

/// The profile being confirmed, for `--apply`.
struct ProfileFile {
    path: PathBuf,
    text: String,
    id: String,
}

impl Inputs {
    fn resolve(args: &ConfirmArgs) -> Result<Inputs> {
        if !(args.fill > 0.0 && args.fill <= 1.0) {
            bail!(
                "invalid value '{}' for --fill: expected a share of the context above 0 and at most 1",
                args.fill
            );
        }
        let mut notes = Vec::new();
        let cwd = std::env::current_dir().context("could not read the current folder")?;
        let looks_like_model = Path::new(&args.target).extension().is_some_and(|e| e == "gguf");
        let (mut base_args, model_path, profile) = if looks_like_model {
            if args.apply {
                bail!("--apply needs a profile of models.conf, not a model file");
            }
            let path = cwd.join(&args.target);
            (vec!["-m".to_string(), path.display().to_string()], path, None)
        } else {
            let conf = args.models_conf.clone().unwrap_or_else(|| cwd.join("models.conf"));
            let text = std::fs::read_to_string(&conf).with_context(|| {
                format!(
                    "could not read models.conf at '{}'\nhint: name it with --models-conf or SPLITPLAN_MODELS_CONF, \
                     or give a model file (.gguf)",
                    conf.display()
                )
            })?;
            let parsed =
                profile::parse(&text).with_context(|| format!("invalid models.conf '{}'", conf.display()))?;
            let p = parsed.find(&args.target)?;
            let dir = args
                .models_dir
                .clone()
                .unwrap_or_else(|| conf.parent().unwrap_or(Path::new(".")).join("models"));
            let model_path = dir.join(p.model_path());
            let file = ProfileFile { path: conf.clone(), text: text.clone(), id: p.id.clone() };
            (p.server_args(), model_path, Some(file))
        };
        base_args.extend(args.server_flags.iter().cloned());
        let settings = ServerSettings::from_args(&base_args).context("invalid llama-server flags")?;
        if !model_path.is_file() {
            bail!(
                "model file not found: '{}'\nhint: the profile's MODEL is read under the models folder; name it \
                 with --models-dir or MODELS_DIR",
                model_path.display()
            );
        }
        let model_size =
            model_files(&model_path).iter().filter_map(|p| p.metadata().ok()).map(|m| m.len()).sum();
        let model_size = Bytes::new(model_size);

        let template = args.launch_template.clone().or_else(config_launch_template);
        let (program, launch_model, host) = if let Some(t) = template {
            (Program::Template(t), None, "0.0.0.0".to_string())
        } else {
            // a direct launch reads the model where it is on this machine
            let bin = find_llama_server(args.llama_server.as_deref())?;
            (Program::Binary(bin), Some(model_path.display().to_string()), "127.0.0.1".to_string())
        };
        let build = match &program {
            Program::Binary(bin) => server_build(bin),
            Program::Template(_) => None,
        };
        match &build {
            Some(b) if b.number != LLAMA_CPP_BUILD => notes.push(format!(
                "llama-server is build {} ({}), splitplan models build {LLAMA_CPP_BUILD}: buffer sizes and \
                 out-of-memory behaviour may differ",
                b.number, b.commit
            )),
            None if matches!(program, Program::Binary(_)) => notes.push(format!(
                "could not read llama-server's build from --version; splitplan models build {LLAMA_CPP_BUILD}"
            )),
            _ => {}
        }

        let margins = match &args.margin {
            Some(m) => m
                .split(',')
                .map(|v| Bytes::parse_mib_default(v.trim()))
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| {
                    format!("invalid value '{m}' for --margin: expected MiB per GPU, e.g. 128,1024")
                })?,
            // One margin per device llama.cpp may have: `--fit-target 128,1024` is stored as 128
            // for CUDA0 and 1024 for every device after it.
            None if !settings.fit_target.per_device.is_empty() => {
                (0..MAX_DEVICES).map(|i| settings.fit_target.for_device(i)).collect()
            }
            None => DEFAULT_MARGINS_MIB.iter().map(|&m| Bytes::from_mib(m)).collect(),
        };
        let mut replanner = None;
        let ladder = match &args.ladder {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("could not read the ladder '{}'", path.display()))?;
                let ladder: Ladder = serde_json::from_str(&text)
                    .with_context(|| format!("invalid ladder '{}'", path.display()))?;
                ladder.check().with_context(|| format!("invalid ladder '{}'", path.display()))?;
                ladder
            }
            None => match planner_ladder(args, &margins) {
                Ok((l, r)) => {
                    replanner = Some(r);
                    notes.push(format!(
                        "the planner's ladder: {} rungs, from the aggressive plan ({}) to {}",
                        l.rungs.len(),
                        l.rungs[0].label,
                        l.rungs.last().map_or("", |r| r.label.as_str())
                    ));
                    l
                }
                Err(e) => {
                    notes.push(format!(
                        "no planned ladder ({e:#}): trying the profile's own placement, then smaller contexts"
                    ));
                    default_ladder(&settings)
                }
            },
        };
        let cache_dir = CalibrationCache::default_dir(|k| std::env::var_os(k));
        let cache = if args.no_cache { None } else { cache_dir.clone().map(CalibrationCache::new) };
        let log_dir = match (&args.log_dir, &cache_dir) {
            (Some(d), _) => d.clone(),
            (None, Some(c)) => c.join("logs"),
            (None, None) => std::env::temp_dir().join("splitplan-logs"),
        };
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("could not create the log folder '{}'", log_dir.display()))?;
        let name = profile.as_ref().map_or_else(
            || {
                model_path
                    .file_stem()
                    .map_or_else(|| "model".to_string(), |s| s.to_string_lossy().into_owned())
            },
            |p| p.id.clone(),
        );
        let stamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Ok(Inputs {
            program,
            base_args,
            settings,
            launch_model,
            model_path,
            profile,
            ladder,
            replanner,
            margins,
            host,
            request: RequestPlan {
                fill: args.fill,
                n_predict: args.n_predict,
                timeout: args.request_timeout.map(Duration::from_secs),
                speed_runs: args.speed_runs,
            },
            load_timeout: args.load_timeout.map_or_else(|| load_timeout_for(model_size), Duration::from_secs),
            grace: Duration::from_secs(args.grace),
            log_dir,
            log_stem: format!("{name}-{stamp}"),
            cache,
            build,
            notes,
        })
    }

    /// The extensions of the planner's ladder so far.
    fn extensions(&self) -> Vec<Extension> {
        self.replanner.as_ref().map_or_else(Vec::new, |r| r.extender.extensions().to_vec())
    }

    fn margin(&self, gpu: usize) -> Bytes {
        self.margins.get(gpu).or(self.margins.last()).copied().unwrap_or(Bytes::ZERO)
    }
}

/// The planner's ladder for the target: the same inputs as the plan command, the margins of this
/// run; and those inputs, to extend it.
fn planner_ladder(args: &ConfirmArgs, margins: &[Bytes]) -> Result<(Ladder, Replanner)> {
    let target = settings::target(
        &args.target,
        None,
        args.models_conf.as_deref(),
        args.models_dir.as_deref(),
        &args.server_flags,
    )?;
    let machine = settings::machine(&args.devices)?;
    let model = super::plan::read_model(&target)?;
    let n = machine.hardware.gpus.len();
    let margins = (0..n).map(|i| margins.get(i).or(margins.last()).copied().unwrap_or(Bytes::ZERO)).collect();
    let options = PlanOptions { margins: Some(margins), pins: target.pins.clone(), ..PlanOptions::default() };
    let settings = target.plan_settings();
    let ladder = planned_ladder(&model, &settings, &machine.hardware, &options)?;
    let extender = LadderExtender::new(&settings, &options);
    Ok((ladder, Replanner { model, hardware: machine.hardware, extender }))
}

/// The ladder without a planner (no GPU found or described, a model that cannot be read): the
/// profile's own placement, then its context stepped down in the user's order while it is above
/// each step.
fn default_ladder(settings: &ServerSettings) -> Ladder {
    let mut ladder = Ladder::single(Vec::new(), "the profile's placement");
    if let CtxSize::Tokens(ctx) = settings.effective_ctx_size() {
        for step in CONTEXT_STEPS.into_iter().filter(|&s| s < ctx) {
            ladder.rungs.push(Rung {
                label: format!("context {}", optimizer_core::units::group_thousands(u64::from(step))),
                placement: Vec::new(),
                ctx_size: Some(step),
                ubatch_size: None,
                predicted: Vec::new(),
                margins: Vec::new(),
            });
        }
    }
    ladder
}

/// A split model's shards (`NAME-00001-of-00003.gguf`), or the one file.
fn model_files(first: &Path) -> Vec<PathBuf> {
    let name = first.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let Some(stem) = name.strip_suffix(".gguf") else { return vec![first.to_path_buf()] };
    let parts: Vec<&str> = stem.rsplitn(4, '-').collect();
    if let [total, "of", _, prefix] = parts.as_slice()
        && let Ok(n) = total.parse::<u32>()
        && total.len() == 5
    {
        return (1..=n).map(|i| first.with_file_name(format!("{prefix}-{i:05}-of-{total}.gguf"))).collect();
    }
    vec![first.to_path_buf()]
}

/// `--llama-server`/`LLAMA_SERVER` (clap reads both), else `llama-server` on PATH.
fn find_llama_server(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = given {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        bail!(
            "llama-server not found at '{}'\nhint: give the llama-server binary with --llama-server or LLAMA_SERVER",
            p.display()
        );
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join("llama-server")).find(|p| p.is_file()).ok_or_else(|| {
        anyhow!(
            "llama-server not found on PATH\nhint: give the llama-server binary with --llama-server or LLAMA_SERVER, \
             or a launch template with --launch-template for a container"
        )
    })
}

/// The build `llama-server --version` reports, within 10 seconds.
fn server_build(bin: &Path) -> Option<BuildInfo> {
    let mut child = std::process::Command::new(bin)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while child.try_wait().ok()?.is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().ok()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    parse_version_output(&text)
}

/// `[confirm] launch_template` of the config file, when there is one.
fn config_launch_template() -> Option<String> {
    let path =
        std::env::var_os("SPLITPLAN_CONFIG").map(PathBuf::from).or_else(crate::settings::default_config)?;
    let text = std::fs::read_to_string(path).ok()?;
    let value: toml::Value = toml::from_str(&text).ok()?;
    value.get("confirm")?.get("launch_template")?.as_str().map(str::to_string)
}

/// One launch as the report shows it.
#[derive(Debug, Serialize)]
struct LaunchRecord {
    attempt: usize,
    rung: usize,
    label: String,
    command: Vec<String>,
    log: PathBuf,
    status: String,
    result: Classification,
    /// Survived, but kept less than the margin free on a GPU: not proven.
    below_margin: Option<String>,
    elapsed_s: f64,
    request_tokens: u64,
    #[serde(skip)]
    report: LaunchReport,
    /// What the launch measured (its speed runs included), read once from `report`.
    #[serde(skip)]
    measured: Measurement,
}

/// What the search did.
struct SearchRun {
    verdict: Verdict,
    launches: Vec<LaunchRecord>,
    /// Why the search stopped early, when a launch showed something no placement fixes.
    stopped: Option<String>,
    /// The ladder's extensions past its last rung, in order.
    extensions: Vec<Extension>,
    /// Why the ladder was not extended (further) after every rung failed out of memory.
    extension_end: Option<String>,
}

/// Runs the search: asks core which rung to launch, launches it, classifies, records; when every
/// rung ran out of memory, extends the planner's ladder and goes on.
fn search(
    inputs: &mut Inputs,
    launcher: &mut dyn Launcher,
    progress: &Progress,
    printer: &Printer,
) -> Result<SearchRun> {
    let mut search = Search::new(inputs.ladder.predictions(), inputs.ladder.aggressive)?;
    let hints = inputs.ladder.has_predictions();
    let mut launches: Vec<LaunchRecord> = Vec::new();
    let extension_end = loop {
        let Some(rung_index) = search.next() else {
            match extend(inputs, &mut search, printer)? {
                Extend::Continue => continue,
                Extend::Stop(why) => break why,
            }
        };
        let inputs = &*inputs;
        let n = inputs.ladder.rungs.len();
        let rung = &inputs.ladder.rungs[rung_index];
        let attempt = launches.len() + 1;
        let spec = spec(inputs, rung, Some(rung_index), &format!("launch{attempt}"));
        progress.line(&format!(
            "launch {attempt} (at most {}): rung {}/{n}, {}; log: {}",
            search.budget() + 1,
            rung_index + 1,
            rung.label,
            spec.log_path.display()
        ));
        let report = launcher.launch(&spec, progress)?;
        let class = classify(&report.facts, &report.log);
        if let Some(b) = &report.log.build
            && b.number != LLAMA_CPP_BUILD
            && inputs.build.as_ref().is_none_or(|ib| ib.number != b.number)
            && attempt == 1
        {
            printer.message(
                Level::Warning,
                &format!(
                    "llama-server logged build {} ({}); splitplan models build {LLAMA_CPP_BUILD}",
                    b.number, b.commit
                ),
            );
        }
        let gpus = gpu_names(inputs, &report);
        let measured =
            measure(&report.log, &report.nvml, report.prompt, report.decode).with_speed(&report.speed);
        let headroom = if hints { headroom(inputs, &gpus, &measured) } else { None };
        let outcome = class.to_outcome(&gpus, headroom);
        let outcome = if hints {
            outcome.map(|o| with_predicted_deficit(o, &rung.predicted, &gpus, &report))
        } else {
            // without predictions, a size or a headroom means nothing to the ladder
            outcome.map(|o| match o {
                optimizer_core::bisect::Outcome::Fails { .. } => {
                    optimizer_core::bisect::Outcome::Fails { shortfall: None }
                }
                optimizer_core::bisect::Outcome::Fits { .. } => {
                    optimizer_core::bisect::Outcome::Fits { headroom: None }
                }
                u @ optimizer_core::bisect::Outcome::Unknown => u,
            })
        };
        // a launch that survived but kept less than the margin free is not proven
        let below = (class == Classification::Fits).then(|| below_margin(inputs, &gpus, &measured)).flatten();
        let outcome = match &below {
            Some(b) => Some(optimizer_core::bisect::Outcome::Fails {
                shortfall: Some(optimizer_core::bisect::Shortfall {
                    gpu: b.gpu,
                    bytes: Some(b.margin.saturating_sub(b.left)),
                }),
            }),
            None => outcome,
        };
        let summary = below.as_ref().map_or_else(|| class.summary(), BelowMargin::summary);
        progress.finish();
        progress.line(&format!("  {summary} ({:.0} s)", report.elapsed.as_secs_f64()));
        if class != Classification::Fits {
            printer.message(Level::Warning, &failure_report(&report, attempt, rung_index, rung, &class));
        } else if below.is_some() {
            printer.message(
                Level::Warning,
                &format!("launch {attempt} (rung {}, {}): {summary}", rung_index + 1, rung.label),
            );
        }
        let record = LaunchRecord {
            attempt,
            rung: rung_index,
            label: rung.label.clone(),
            command: report.command.clone(),
            log: report.log_path.clone(),
            status: report.status.clone(),
            result: class.clone(),
            below_margin: below.as_ref().map(BelowMargin::summary),
            elapsed_s: (report.elapsed.as_secs_f64() * 10.0).round() / 10.0,
            request_tokens: report.request_tokens,
            report,
            measured,
        };
        launches.push(record);
        match outcome {
            Some(o) => search.record(rung_index, o),
            None => {
                return Ok(SearchRun {
                    verdict: search.verdict(),
                    launches,
                    stopped: Some(class.summary()),
                    extensions: inputs.extensions(),
                    extension_end: None,
                });
            }
        }
    };
    Ok(SearchRun {
        verdict: search.verdict(),
        launches,
        stopped: None,
        extensions: inputs.extensions(),
        extension_end,
    })
}

/// What [`extend`] decided.
enum Extend {
    /// A rung was appended: the search goes on.
    Continue,
    /// The search is over; why the ladder was not extended, when it was tried.
    Stop(Option<String>),
}

/// When every rung failed and the last failure lacked memory on a GPU (out of memory, or below
/// its margin at the peak): plans a rung with more margin there and appends it to the ladder and
/// the search, with a note. Not for a ladder given with `--ladder` or made without the planner,
/// nor after a failure more memory would not be known to fix (a crash, a hang).
fn extend(inputs: &mut Inputs, search: &mut Search, printer: &Printer) -> Result<Extend> {
    let (Some(lacked), Some(r)) = (search.exhausted_by(), inputs.replanner.as_mut()) else {
        return Ok(Extend::Stop(None));
    };
    let from = inputs.ladder.rungs.len();
    let e = match r.extender.extend(&r.model, &r.hardware, &mut inputs.ladder, lacked) {
        Ok(e) => e,
        Err(e) => return Ok(Extend::Stop(Some(e.to_string()))),
    };
    search.extend(inputs.ladder.predictions()[from..].to_vec())?;
    let short = e.shortfall.map_or_else(
        || format!("short of memory on {} (by how much is unknown)", e.device),
        |b| format!("{b:#} short on {}", e.device),
    );
    printer.message(
        Level::Note,
        &format!(
            "every rung failed, the last {short}: extension {} of {MAX_EXTENSIONS} adds {:#} to the margin there \
             ({:#}), rung {}: {}",
            r.extender.extensions().len(),
            e.added,
            e.margins.get(e.gpu).copied().unwrap_or(Bytes::ZERO),
            e.rung + 1,
            e.placement,
        ),
    );
    Ok(Extend::Continue)
}

/// An out-of-memory failure measures only what the failing allocation lacked; the buffers llama.cpp
/// allocates after it (KV cache and compute after the weights, the pool at the first request) are
/// missing too. With predictions, the rung's whole predicted deficit on that GPU (its predicted use
/// less the free memory llama.cpp logged at load) is taken when it is larger.
fn with_predicted_deficit(
    outcome: optimizer_core::bisect::Outcome,
    predicted: &[Bytes],
    gpus: &[String],
    report: &LaunchReport,
) -> optimizer_core::bisect::Outcome {
    use optimizer_core::bisect::{Outcome as O, Shortfall};
    match outcome {
        O::Fails { shortfall: Some(Shortfall { gpu, bytes }) } => {
            let deficit = gpus
                .get(gpu)
                .and_then(|name| report.log.free_at_load(name))
                .zip(predicted.get(gpu))
                .map(|(free, p)| p.saturating_sub(free))
                .filter(|d| *d > Bytes::ZERO);
            let bytes = match (bytes, deficit) {
                (Some(b), Some(d)) => Some(b.max(d)),
                (b, d) => b.or(d),
            };
            O::Fails { shortfall: Some(Shortfall { gpu, bytes }) }
        }
        o => o,
    }
}

/// The ladder's GPU names, or the devices the log named.
fn gpu_names(inputs: &Inputs, report: &LaunchReport) -> Vec<String> {
    if inputs.ladder.gpus.is_empty() {
        report.log.model_devices.iter().map(|d| d.name.clone()).collect()
    } else {
        inputs.ladder.gpus.clone()
    }
}

/// A GPU that kept less than its margin free at the peak of a launch that survived.
struct BelowMargin {
    gpu: usize,
    name: String,
    left: Bytes,
    margin: Bytes,
}

impl BelowMargin {
    fn summary(&self) -> String {
        format!(
            "survived, but {} kept only {:#} free at the peak, below its {:#} margin",
            self.name, self.left, self.margin
        )
    }
}

/// The first GPU that kept less than its margin free at the peak (NVML or the breakdown at exit).
fn below_margin(inputs: &Inputs, gpus: &[String], m: &Measurement) -> Option<BelowMargin> {
    gpus.iter().enumerate().find_map(|(i, name)| {
        let left = m.devices.iter().find(|d| &d.device == name)?.left?;
        let margin = inputs.margin(i);
        (left < margin).then(|| BelowMargin { gpu: i, name: name.clone(), left, margin })
    })
}

/// What each GPU could still take after the worst-case request, its margin deducted.
fn headroom(inputs: &Inputs, gpus: &[String], m: &Measurement) -> Option<Vec<Bytes>> {
    gpus.iter()
        .enumerate()
        .map(|(i, name)| {
            let d = m.devices.iter().find(|d| &d.device == name)?;
            Some(d.left?.saturating_sub(inputs.margin(i)))
        })
        .collect()
}

/// A failed launch in full, like cargo's process errors: what, the command, how it ended, the
/// log's last lines.
fn failure_report(
    report: &LaunchReport,
    attempt: usize,
    rung_index: usize,
    rung: &Rung,
    class: &Classification,
) -> String {
    let mut s = format!("launch {attempt} (rung {}, {}): {}\n", rung_index + 1, rung.label, class.summary());
    let command = shlex::try_join(report.command.iter().map(String::as_str))
        .unwrap_or_else(|_| report.command.join(" "));
    let _ = writeln!(s, "command: {command}");
    let _ = writeln!(s, "status: {}", report.status);
    let _ = writeln!(s, "log: {}", report.log_path.display());
    if !report.log_tail.is_empty() {
        s.push_str("last lines of the log:\n");
        for line in &report.log_tail {
            let _ = writeln!(s, "  {line}");
        }
    }
    s.trim_end().to_string()
}

/// The JSON report (docs/json.md, "confirm").
#[derive(Serialize)]
struct ConfirmJson<'a> {
    schema_version: u32,
    target: String,
    llama_server: Option<String>,
    build: Option<&'a BuildInfo>,
    modelled_build: u32,
    ladder: &'a Ladder,
    verdict: Verdict,
    stopped: Option<&'a str>,
    /// The ladder's extensions past its planned rungs.
    extensions: &'a [Extension],
    /// Why the ladder was not extended (further) after every rung failed out of memory.
    extension_end: Option<&'a str>,
    launches: &'a [LaunchRecord],
    proven: Option<Proven<'a>>,
    /// `--compare-fit`: llama.cpp's `--fit` beside the proven placement.
    fit_comparison: Option<&'a FitComparison>,
    /// The same as a Markdown table.
    fit_comparison_table: Option<String>,
    applied: bool,
}

#[derive(Serialize)]
struct Proven<'a> {
    rung: usize,
    label: &'a str,
    command: &'a [String],
    measurement: &'a Measurement,
    discrepancies: Vec<optimizer_core::confirm::Discrepancy>,
    results_table: String,
    calibration_file: Option<PathBuf>,
}

fn report(
    inputs: &Inputs,
    run: &SearchRun,
    comparison: Option<&FitComparison>,
    args: &ConfirmArgs,
    printer: &Printer,
) -> Result<Outcome> {
    let proven = match run.verdict {
        Verdict::Proven { rung } => run
            .launches
            .iter()
            .rev()
            .find(|l| l.rung == rung && l.result == Classification::Fits && l.below_margin.is_none()),
        Verdict::NoneFits => None,
    };
    let mut applied = false;
    let mut proven_json = None;
    if let Some(p) = proven {
        let rung = &inputs.ladder.rungs[p.rung];
        let r = &p.report;
        let m = p.measured.clone();
        let discrepancies = if rung.predicted.is_empty() {
            Vec::new()
        } else {
            compare(&rung.predicted, &m, &inputs.margins)
        };
        for d in &discrepancies {
            printer.message(
                Level::Warning,
                &format!(
                    "{}: predicted {:#}, measured {:#} ({:+} MiB), more than its {:#} margin",
                    d.device,
                    d.predicted,
                    d.measured,
                    d.error() / (1 << 20),
                    d.margin
                ),
            );
        }
        let ooms: Vec<String> = run
            .launches
            .iter()
            .filter_map(|l| match (&l.result, &l.below_margin) {
                (Classification::OutOfMemory { .. }, _) => {
                    Some(format!("launch {}: {}", l.attempt, l.result.summary()))
                }
                (_, Some(b)) => Some(format!("launch {}: {b}", l.attempt)),
                _ => None,
            })
            .collect();
        let title = match (inputs.ladder.aggressive, inputs.ladder.moderate) {
            (a, _) if a == p.rung => format!("Suggestion A (aggressive): {}", rung.label),
            (_, Some(m)) if m == p.rung => format!("Suggestion B (moderate): {}", rung.label),
            _ => format!("Proven placement: {}", rung.label),
        };
        let ctx = r.log.n_ctx_seq.unwrap_or(0);
        let mut notes = Vec::new();
        if r.nvml.is_empty() {
            notes.push("no NVML: VRAM from the memory breakdown at exit".to_string());
        }
        let result = TestResult {
            title,
            launches: run.launches.len(),
            ooms,
            measurement: m.clone(),
            request_tokens: r.request_tokens,
            ctx_size: ctx,
            notes,
        };
        let table = render_results_table(&result);
        let slot = match (inputs.ladder.aggressive, inputs.ladder.moderate) {
            (a, _) if a == p.rung => ResultsSlot::Aggressive,
            (_, Some(b)) if b == p.rung => ResultsSlot::Moderate,
            _ => ResultsSlot::Other(rung.label.clone()),
        };
        fill_advice(inputs, args, &slot, &result, comparison, printer);
        let calibration_file = store_calibration(inputs, r, &m, printer);
        if args.apply {
            applied = apply(inputs, rung, printer)?;
        }
        proven_json = Some((p, m, discrepancies, table, calibration_file));
    }

    if args.json {
        let proven = proven_json.as_ref().map(|(p, m, d, t, c)| Proven {
            rung: p.rung,
            label: &inputs.ladder.rungs[p.rung].label,
            command: &p.command,
            measurement: m,
            discrepancies: d.clone(),
            results_table: t.clone(),
            calibration_file: c.clone(),
        });
        let json = ConfirmJson {
            schema_version: 1,
            target: args.target.clone(),
            llama_server: match &inputs.program {
                Program::Binary(b) => Some(b.display().to_string()),
                Program::Template(t) => Some(t.clone()),
            },
            build: inputs.build.as_ref(),
            modelled_build: LLAMA_CPP_BUILD,
            ladder: &inputs.ladder,
            verdict: run.verdict,
            stopped: run.stopped.as_deref(),
            extensions: &run.extensions,
            extension_end: run.extension_end.as_deref(),
            launches: &run.launches,
            proven,
            fit_comparison: comparison,
            fit_comparison_table: comparison.map(render_fit_comparison),
            applied,
        };
        printer.data(&(serde_json::to_string_pretty(&json)? + "\n"))?;
    } else if let Some((p, _, _, table, _)) = &proven_json {
        let command =
            shlex::try_join(p.command.iter().map(String::as_str)).unwrap_or_else(|_| p.command.join(" "));
        printer.data(&format!("{table}\nProven with: {command}\n"))?;
        if let Some(c) = comparison {
            printer.data(&format!(
                "\nBeside llama.cpp --fit (launched in turn: the placement, --fit, the placement again):\n\n{}",
                render_fit_comparison(c)
            ))?;
        }
    }

    match (&proven_json, &run.stopped) {
        (Some(_), _) => Ok(Outcome::Done),
        (None, Some(why)) => {
            printer.message(Level::Error, &format!("stopped after {} launch(es): {why}", run.launches.len()));
            Ok(Outcome::No)
        }
        (None, None) => {
            printer.message(
                Level::Error,
                &format!(
                    "no placement of the ladder fits: {} launch(es), every one failed{}{}",
                    run.launches.len(),
                    extensions_tried(&run.extensions, run.extension_end.as_deref()),
                    if inputs.ladder.rungs.len() == 1 {
                        " (the ladder has one rung: give more with --ladder)"
                    } else {
                        ""
                    }
                ),
            );
            Ok(Outcome::No)
        }
    }
}

/// What the extensions of the ladder tried, for the final error: each GPU's margin in turn, and
/// why there was no further one.
fn extensions_tried(extensions: &[Extension], end: Option<&str>) -> String {
    let Some(end) = end else { return String::new() };
    if extensions.is_empty() {
        return format!("; the ladder could not be extended: {end}");
    }
    let steps = extensions
        .iter()
        .map(|e| format!("{} {:#}", e.device, e.margins.get(e.gpu).copied().unwrap_or(Bytes::ZERO)))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "; the ladder was extended {} time(s) past its planned rungs (margins: {steps}) and no further: {end}",
        extensions.len()
    )
}

/// Fills in the proven suggestion's results table of advice_test_plan.md (`--advice`, else the one
/// beside models.conf when it exists), atomically with a backup. The measurement is already printed,
/// so a problem here is a warning.
fn fill_advice(
    inputs: &Inputs,
    args: &ConfirmArgs,
    slot: &ResultsSlot,
    result: &TestResult,
    comparison: Option<&FitComparison>,
    printer: &Printer,
) {
    let Some(profile) = &inputs.profile else { return };
    let path = if let Some(p) = &args.advice {
        p.clone()
    } else {
        let p = profile.path.parent().unwrap_or(Path::new("")).join("advice_test_plan.md");
        if !p.is_file() {
            return;
        }
        p
    };
    let doc = match std::fs::read_to_string(&path) {
        Ok(d) => d,
        Err(e) => {
            printer.message(
                Level::Warning,
                &format!("could not read '{}': {e}; results not filled in", path.display()),
            );
            return;
        }
    };
    let extra = comparison.map(|c| {
        format!(
            "Beside llama.cpp `--fit` (confirm --compare-fit: the placement, `--fit`, the placement again):\n\n{}",
            render_fit_comparison(c)
        )
    });
    match fill_results(&doc, &profile.id, slot, result, extra.as_deref()) {
        Ok(filled) => match crate::files::write_with_backup(&path, &filled) {
            Ok(bak) => printer.message(
                Level::Note,
                &format!(
                    "filled in the test results of [{}] in {}{}",
                    profile.id,
                    path.display(),
                    bak.map_or_else(String::new, |b| format!(" (the previous version is {})", b.display()))
                ),
            ),
            Err(e) => printer.message(Level::Warning, &format!("{e:#}; results not filled in")),
        },
        Err(e) => printer.message(Level::Warning, &format!("{}: {e}; results not filled in", path.display())),
    }
}

/// Writes the launch's measurements to the calibration cache; a problem is a warning.
fn store_calibration(
    inputs: &Inputs,
    r: &LaunchReport,
    m: &Measurement,
    printer: &Printer,
) -> Option<PathBuf> {
    let cache = inputs.cache.as_ref()?;
    let build = r.log.build.as_ref().map_or(LLAMA_CPP_BUILD, |b| b.number);
    let model = match ModelIdentity::of_file(&inputs.model_path) {
        Ok(m) => m,
        Err(e) => {
            printer.message(
                Level::Warning,
                &format!("calibration not stored: could not read the model file: {e}"),
            );
            return None;
        }
    };
    let settings = match optimizer_core::settings::parse_args(&r.command_args()) {
        Ok(s) => CalibrationKey::settings_args(&s),
        Err(_) => CalibrationKey::settings_args(&inputs.settings),
    };
    let key = CalibrationKey {
        llama_build: build,
        gpus: m.devices.iter().map(|d| d.gpu_name.clone()).collect(),
        model,
        settings,
    };
    match cache.lookup(&key) {
        Ok(Some(old)) => printer.message(
            Level::Note,
            &format!(
                "replacing the calibration measured at {} (Unix time) for these settings",
                old.measured_at
            ),
        ),
        Ok(None) => {}
        Err(e) => printer.message(Level::Warning, &e.to_string()),
    }
    let record = CalibrationRecord {
        version: calibration::CACHE_VERSION,
        key,
        devices: m
            .devices
            .iter()
            .map(|d| MeasuredDevice {
                device: d.device.clone(),
                model: d.model,
                kv: d.kv,
                rs: d.rs,
                compute: d.compute,
                output: d.output,
                overhead: d.overhead,
            })
            .collect(),
        measured_at: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        log: Some(r.log_path.clone()),
    };
    match cache.store(&record) {
        Ok(path) => {
            printer.message(
                Level::Note,
                &format!("measurements stored for later predictions: {}", path.display()),
            );
            Some(path)
        }
        Err(e) => {
            printer.message(Level::Warning, &format!("{e:#}"));
            None
        }
    }
}

impl LaunchReport {
    /// The llama-server arguments of the command (without the program, and without a template's
    /// own words when the arguments cannot be told apart: then empty).
    fn command_args(&self) -> Vec<String> {
        self.command.iter().skip(1).cloned().collect()
    }
}

/// Writes the proven rung's placement into the profile, atomically, with a `.bak` beside it.
fn apply(inputs: &Inputs, rung: &Rung, printer: &Printer) -> Result<bool> {
    let Some(p) = &inputs.profile else { return Ok(false) };
    let changes = ProfileChanges {
        ctx_size: rung.ctx_size,
        ubatch_size: rung.ubatch_size,
        placement: (!rung.placement.is_empty()).then(|| rung.placement.clone()),
        ..ProfileChanges::default()
    };
    let new = profile::rewrite_profile(&p.text, &p.id, &changes)?;
    if new == p.text {
        printer.message(
            Level::Note,
            &format!("profile [{}] already holds the proven placement: unchanged", p.id),
        );
        return Ok(false);
    }
    let current =
        std::fs::read_to_string(&p.path).with_context(|| format!("could not read '{}'", p.path.display()))?;
    if current != p.text {
        bail!("'{}' changed while confirm ran; not applying\nhint: run confirm again", p.path.display());
    }
    crate::files::write_with_backup(&p.path, &new)?;
    printer.message(
        Level::Note,
        &format!(
            "profile [{}] of {} updated (the previous file is {}.bak)",
            p.id,
            p.path.display(),
            p.path.display()
        ),
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    use optimizer_core::confirm::{ExitKind, LaunchFacts, LaunchLog, Phase, Rate, SpeedRun, parse_log};

    use super::*;

    /// A launcher that answers from a script: per launch, a log text and how far it got.
    struct Scripted {
        script: Vec<(&'static str, Phase, ExitKind)>,
        launched: Vec<usize>,
        /// Every launch's rung label and placement flags, in order.
        seen: Vec<(String, Vec<String>)>,
        /// The decode rate of each launch's speed runs.
        decode: Vec<f64>,
    }

    impl Launcher for Scripted {
        fn launch(&mut self, spec: &LaunchSpec<'_>, _progress: &Progress) -> Result<LaunchReport> {
            let (log, reached, exit) = self.script[self.launched.len().min(self.script.len() - 1)];
            let n = self.seen.len();
            self.launched.extend(spec.rung_index);
            self.seen.push((spec.rung.label.clone(), spec.rung.placement.clone()));
            let rate = |per_second| Rate { ms: 1000.0, tokens: 256, per_second };
            let speed = self.decode.get(n).map_or_else(Vec::new, |&d| {
                (0..spec.request.speed_runs)
                    .map(|i| SpeedRun { prompt: Some(rate(500.0)), decode: Some(rate(d + f64::from(i))) })
                    .collect()
            });
            Ok(LaunchReport {
                command: vec!["llama-server".into()],
                log_path: spec.log_path.clone(),
                facts: LaunchFacts { reached, exit, timed_out: false, request_error: None },
                log: parse_log(log),
                nvml: Vec::new(),
                prompt: None,
                decode: None,
                request_tokens: 0,
                speed,
                status: "test".into(),
                log_tail: Vec::new(),
                elapsed: Duration::ZERO,
            })
        }
    }

    fn inputs(ctx: u32) -> Inputs {
        let base: Vec<String> =
            ["-m", "m.gguf", "-c", &ctx.to_string()].iter().map(ToString::to_string).collect();
        let settings = ServerSettings::from_args(&base).unwrap();
        Inputs {
            program: Program::Binary("llama-server".into()),
            ladder: default_ladder(&settings),
            replanner: None,
            base_args: base,
            settings,
            launch_model: None,
            model_path: "m.gguf".into(),
            profile: None,
            margins: vec![Bytes::from_mib(128)],
            host: "127.0.0.1".into(),
            request: RequestPlan { fill: 0.25, n_predict: 8, timeout: None, speed_runs: 3 },
            load_timeout: Duration::from_secs(1),
            grace: Duration::from_secs(1),
            log_dir: std::env::temp_dir(),
            log_stem: "t".into(),
            cache: None,
            build: None,
            notes: Vec::new(),
        }
    }

    const OOM: &str = "E llama_model_load: error loading model: unable to allocate CUDA1 buffer\n";

    #[test]
    fn default_ladder_steps_the_context_in_the_users_order() {
        let l = inputs(262_144).ladder;
        let ctx: Vec<_> = l.rungs.iter().map(|r| r.ctx_size).collect();
        assert_eq!(ctx, [None, Some(196_608), Some(131_072)]);
        assert_eq!(inputs(131_072).ladder.rungs.len(), 1);
    }

    #[test]
    fn oom_then_fit_walks_down_the_context() {
        let mut l = Scripted {
            script: vec![(OOM, Phase::Loading, ExitKind::Code(1)), ("", Phase::Verified, ExitKind::Stopped)],
            launched: Vec::new(),
            seen: Vec::new(),
            decode: Vec::new(),
        };
        let printer = Printer::from_env();
        let run = search(&mut inputs(262_144), &mut l, &Progress::silent(), &printer).unwrap();
        // plain bisection (no predictions): 0 fails, then the midpoint of the rest
        assert_eq!(l.launched, [0, 1]);
        assert_eq!(run.verdict, Verdict::Proven { rung: 1 });
        assert!(run.stopped.is_none());
    }

    #[test]
    fn a_fatal_failure_stops_the_search() {
        let mut l = Scripted {
            script: vec![("error: invalid argument: --bogus\n", Phase::Loading, ExitKind::Code(1))],
            launched: Vec::new(),
            seen: Vec::new(),
            decode: Vec::new(),
        };
        let run = search(&mut inputs(262_144), &mut l, &Progress::silent(), &Printer::from_env()).unwrap();
        assert_eq!(l.launched, [0]);
        assert_eq!(run.verdict, Verdict::NoneFits);
        assert!(run.stopped.unwrap().contains("--bogus"));
    }

    #[test]
    fn a_crash_is_retried_once_on_the_same_rung() {
        let mut l = Scripted {
            script: vec![("", Phase::Loading, ExitKind::Signal(6)), ("", Phase::Verified, ExitKind::Stopped)],
            launched: Vec::new(),
            seen: Vec::new(),
            decode: Vec::new(),
        };
        let run = search(&mut inputs(131_072), &mut l, &Progress::silent(), &Printer::from_env()).unwrap();
        assert_eq!(l.launched, [0, 0]);
        assert_eq!(run.verdict, Verdict::Proven { rung: 0 });
        let _ = LaunchLog::default();
    }

    const FIT_LOG: &str = "I common_params_fit_impl:   - CUDA0 (NVIDIA H200): 19 layers ( 1 overflowing),  23264 MiB used,    238 MiB free\n\
I common_params_fit_impl:   - CUDA1 (NVIDIA H200): 30 layers (23 overflowing),  13247 MiB used,   1202 MiB free\n";

    #[test]
    fn compare_fit_launches_fit_then_the_proven_rung_again() {
        let mut l = Scripted {
            script: vec![
                ("", Phase::Verified, ExitKind::Stopped),
                (FIT_LOG, Phase::Verified, ExitKind::Stopped),
                ("", Phase::Verified, ExitKind::Stopped),
            ],
            launched: Vec::new(),
            seen: Vec::new(),
            decode: vec![80.0, 70.0, 90.0],
        };
        let mut inputs = inputs(131_072);
        inputs.margins = vec![Bytes::from_mib(128), Bytes::from_mib(1024)];
        inputs.ladder.gpus = vec!["CUDA0".into(), "CUDA1".into()];
        let progress = Progress::silent();
        let run = search(&mut inputs, &mut l, &progress, &Printer::from_env()).unwrap();
        assert_eq!(run.verdict, Verdict::Proven { rung: 0 });
        let c = compare_fit(&inputs, &run, 0, &mut l, &progress).unwrap();
        // the proven rung, --fit, the proven rung again
        assert_eq!(l.launched, [0, 0]);
        assert_eq!(l.seen[1].1, ["--fit", "on", "--fit-target", "128,1024"]);
        assert_eq!(l.seen[2].0, l.seen[0].0);
        // the placement's speed runs are both of its launches: 80, 81, 82, 90, 91, 92
        assert_eq!(c.plan.speed.len(), 6);
        assert_eq!(c.plan.decode_median(), Some(86.0));
        assert_eq!(c.fit.as_ref().and_then(Measurement::decode_median), Some(71.0));
        assert_eq!(c.fit_result, "fits");
        let table = render_fit_comparison(&c);
        assert!(
            table.contains("| Placement | ")
                && table.contains("CUDA0 19 layers (1 overflowing), CUDA1 30 layers (23 overflowing)"),
            "{table}"
        );
        assert!(table.contains("| Decode (t/s) | 86.0 (median of 6) | 71.0 (median of 3) |"), "{table}");
    }

    #[test]
    fn a_busy_gpu_stops_confirm_unless_allowed() {
        let busy = [BusyProcess {
            gpu: 1,
            gpu_name: "NVIDIA GeForce RTX 5070 Ti".into(),
            pid: 4242,
            name: Some("llama-server".into()),
            used: Some(Bytes::from_mib(9000)),
        }];
        let printer = Printer::from_env();
        assert!(busy_check(&[], false, &printer).is_ok());
        let e = busy_check(&busy, false, &printer).unwrap_err().to_string();
        assert!(e.contains("CUDA1 (NVIDIA GeForce RTX 5070 Ti): pid 4242 (llama-server), 9,000 MiB"), "{e}");
        assert!(e.contains("--allow-busy"), "{e}");
        assert!(busy_check(&busy, true, &printer).is_ok());
    }

    #[test]
    fn split_model_files() {
        let files = model_files(Path::new("/m/Q-UD-Q5_K_XL-00001-of-00003.gguf"));
        assert_eq!(files.len(), 3);
        assert_eq!(files[2], Path::new("/m/Q-UD-Q5_K_XL-00003-of-00003.gguf"));
        assert_eq!(model_files(Path::new("/m/one.gguf")), [Path::new("/m/one.gguf")]);
    }
}
