//! Accuracy of the compute-buffer model against llama.cpp build 11434 itself (fixtures/ground-truth).
//!
//! Every dry run (`llama-fit-params --fit-print on`, predicted as [`Runner::FitParamsDryRun`]: a whole
//! micro-batch of logits on the output GPU) and every real llama-server load (its `compute buffer size`
//! lines; loads placed by `--fit` are predicted with the arguments llama.cpp's fitter printed for the
//! same flags, recorded in the `fit` rows) is compared on every GPU and on the host.
//!
//! Compute buffers come from the graph-level simulation (`memory::sim`: llama.cpp's graph, scheduler and
//! allocator ported shape-only), which covers every architecture measured here; each row also shows the
//! phase model's prediction (`Predictor::with_simulation(false)`) for comparison. The simulation has no
//! fitted constant: its parts were checked node for node and byte for byte against allocation traces of
//! sessions 1-6 (fixtures/ground-truth/traces). What the test holds: every row on every device exact
//! (to llama.cpp's whole MiB on a dry run, to 0.01 MiB on a real load's buffer lines), which is more
//! than the bar (p95 within max(32 MiB, 3 %), no under-prediction beyond 64 MiB); and that bar
//! itself on the held-out session ([`HELD_OUT_SESSIONS`]), on its own.
//!
//! The per-row table in docs/accuracy-rows.md is generated from this test; it fails when the committed
//! table differs. Regenerate it with `SPLITPLAN_WRITE_ACCURACY=1 cargo test -p optimizer-core --test
//! accuracy_compute`.

mod support;

use std::fmt::Write as _;

use optimizer_core::confirm::BufferKind as LoggedKind;
use optimizer_core::memory::{GpuAtLoad, MemoryPrediction, Predictor, Runner, uncalibrated};
use optimizer_core::settings::ServerSettings;
use optimizer_core::units::{Bytes, MIB};

use support::ground_truth::{self, DRY_RUN_FREE_MIB, Row};
use support::models;

/// The held-out session: session 9 (2026-11-22h), drawn at random by fixtures/ground-truth/sample_rows.py
/// and committed before it was measured, and not looked at while the simulation was built. The phase
/// model scored it when it was measured: 76.7 % of 73 GPU rows within, 5 under by more than 64 MiB
/// (worst −128). Sessions 4-8 were held out from the phase model in turn (docs/accuracy.md).
const HELD_OUT_SESSIONS: [&str; 1] = ["2026-11-22h-h200x2"];

/// Sessions measured and committed but not scored yet (none).
const NOT_SCORED_YET: [&str; 0] = [];

fn held_out(c: &Compared) -> bool {
    HELD_OUT_SESSIONS.iter().any(|s| c.id.starts_with(s))
}

struct Compared {
    id: String,
    /// A dry run (`llama-fit-params`), not a real load.
    dry: bool,
    device: String,
    predicted: f64,
    measured: f64,
    phase: String,
    /// The largest shortfall `memory::uncalibrated` warns of for this row's configuration.
    warned: Option<Bytes>,
    /// What the phase model (`Predictor::with_simulation(false)`) predicts for the same buffer, MiB.
    phase_model: f64,
}

impl Compared {
    fn err(&self) -> f64 {
        self.predicted - self.measured
    }
    fn within(&self) -> bool {
        self.err().abs() <= 32f64.max(0.03 * self.measured)
    }
    fn phase_model_within(&self) -> bool {
        (self.phase_model - self.measured).abs() <= 32f64.max(0.03 * self.measured)
    }
}

fn gpus(free: &[(&str, u64)]) -> Vec<GpuAtLoad> {
    free.iter().map(|&(name, mib)| GpuAtLoad::new(name, Bytes::from_mib(mib))).collect()
}

/// The prediction of `row` (with the graph-level simulation where it covers the row) and the phase
/// model's alone, for the comparison in docs/accuracy-rows.md.
fn predict(
    row: &Row,
    argv: &[String],
    gpus: &[GpuAtLoad],
    runner: Runner,
) -> (MemoryPrediction, MemoryPrediction) {
    let settings = ServerSettings::from_args(argv).unwrap_or_else(|e| panic!("{}: settings: {e}", row.id));
    let model = models::model(&row.model);
    // One predictor per model for every row, as the planner keeps one: a row whose graphs (context
    // and micro-batch) an earlier row built is scheduled and allocated on a copy of them, so the
    // exact rows hold the graph cache to llama.cpp's bytes too.
    let simulated = PREDICTORS.with(|p| {
        p.borrow_mut()
            .entry(row.model.clone())
            .or_insert_with(|| Predictor::new(model))
            .predict_as(&settings, gpus, runner)
            .unwrap_or_else(|e| panic!("{}: predict: {e}", row.id))
    });
    let phase_model = Predictor::new(model)
        .with_simulation(false)
        .predict_as(&settings, gpus, runner)
        .unwrap_or_else(|e| panic!("{}: predict: {e}", row.id));
    (simulated, phase_model)
}

thread_local! {
    static PREDICTORS: std::cell::RefCell<std::collections::HashMap<String, Predictor<'static>>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

fn phase_model_mib(p: &MemoryPrediction, device: &str, floor: bool) -> f64 {
    let b = compute_of(p, device).map_or(Bytes::ZERO, |(b, _)| b);
    if floor { b.mib_floor() as f64 } else { b.get() as f64 / MIB as f64 }
}

fn warned(row: &Row, argv: &[String], p: &MemoryPrediction) -> Option<Bytes> {
    let settings = ServerSettings::from_args(argv).ok()?;
    uncalibrated(models::model(&row.model), &settings, p).iter().map(|u| u.worst_under).max()
}

fn compute_of(p: &MemoryPrediction, device: &str) -> Option<(Bytes, String)> {
    let d = p.device(device)?;
    let phase = match &d.compute {
        optimizer_core::memory::ComputeEstimate::Estimated { phase, .. } => phase.clone(),
        optimizer_core::memory::ComputeEstimate::NotModelled => "not modelled".to_owned(),
    };
    Some((d.compute.bytes()?, phase))
}

/// `SPLITPLAN_SHOW_ROWS=q5-d01,oss-h03 cargo test … -- --nocapture` prints each named dry row's parts.
fn show_parts(id: &str, p: &MemoryPrediction) {
    for d in &p.devices {
        if let optimizer_core::memory::ComputeEstimate::Estimated { phase, parts } = &d.compute {
            println!("{id} {}: {phase}", d.name);
            for part in parts {
                println!("    {:>9.2} MiB  {}", part.bytes.get() as f64 / MIB as f64, part.what);
            }
        }
    }
}

fn without_fit_flags(argv: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip = false;
    for a in argv {
        if skip {
            skip = false;
            continue;
        }
        if matches!(a.as_str(), "--fit" | "-fit" | "--fit-target" | "-fitt" | "--fit-ctx" | "-fitc") {
            skip = true;
            continue;
        }
        out.push(a.clone());
    }
    out
}

/// A real load that stopped because a compute buffer could not be allocated: llama.cpp's log names the
/// buffer and its exact size (`ggml_gallocr_reserve_n_impl: failed to allocate CUDA0 buffer of size N`),
/// the server's own compute buffer, compared like the buffers of a load that succeeded.
fn failed_compute(row: &Row) -> Option<Compared> {
    let parsed = ground_truth::parse_log(row.log.as_ref()?);
    let launch = &parsed.launch;
    let oom = launch.oom().filter(|o| o.stage == optimizer_core::confirm::OomStage::Compute)?;
    let (device, size) = (oom.device.clone()?, oom.requested?);
    let free: Vec<(&str, u64)> =
        launch.model_devices.iter().map(|d| (d.name.as_str(), d.free.mib_floor())).collect();
    let (p, pm) = predict(row, &row.argv, &gpus(&free), Runner::LlamaServer);
    let (bytes, phase) = compute_of(&p, &device)?;
    Some(Compared {
        id: row.id.clone(),
        dry: false,
        phase_model: phase_model_mib(&pm, &device, false),
        device,
        predicted: bytes.get() as f64 / MIB as f64,
        measured: size.get() as f64 / MIB as f64,
        phase,
        warned: warned(row, &row.argv, &p),
    })
}

fn compare_all() -> Vec<Compared> {
    let rows = ground_truth::rows();
    let mut out = Vec::new();
    for row in rows.iter().filter(|r| !NOT_SCORED_YET.iter().any(|s| r.id.starts_with(s))) {
        if row.rc != Some(0) {
            if row.kind == "load" {
                out.extend(failed_compute(row));
            }
            continue;
        }
        match row.kind.as_str() {
            "dry" => {
                let free: Vec<(&str, u64)> = DRY_RUN_FREE_MIB.iter().copied().take(row.gpus).collect();
                let (p, pm) = predict(row, &row.argv, &gpus(&free), Runner::FitParamsDryRun);
                let warned = warned(row, &row.argv, &p);
                if std::env::var("SPLITPLAN_SHOW_ROWS")
                    .is_ok_and(|v| v.split(',').any(|r| row.id.ends_with(&format!("/{r}"))))
                {
                    show_parts(&row.id, &p);
                }
                for d in &row.devices {
                    let (bytes, phase) = compute_of(&p, &d.name).unwrap_or((Bytes::ZERO, "missing".into()));
                    out.push(Compared {
                        id: row.id.clone(),
                        dry: true,
                        device: d.name.clone(),
                        predicted: bytes.mib_floor() as f64,
                        measured: d.compute_mib as f64,
                        phase,
                        warned,
                        phase_model: phase_model_mib(&pm, &d.name, true),
                    });
                }
            }
            "load" => {
                let Some(log) = &row.log else { continue };
                let parsed = ground_truth::parse_log(log);
                let launch = &parsed.launch;
                if launch.model_devices.is_empty() {
                    continue;
                }
                let mut argv = row.argv.clone();
                let fit_on = argv.windows(2).any(|w| w[0] == "--fit" && w[1] == "on");
                if fit_on {
                    // the same flags given to llama-fit-params: what it chose is what the server loaded
                    let plain = without_fit_flags(&argv);
                    let chosen = rows.iter().find(|r| {
                        r.kind == "fit" && r.model == row.model && without_fit_flags(&r.argv) == plain
                    });
                    let Some(fit) = chosen.filter(|f| !f.fit_args.is_empty()) else { continue };
                    argv = plain;
                    argv.extend(fit.fit_args.iter().cloned());
                }
                let free: Vec<(&str, u64)> =
                    launch.model_devices.iter().map(|d| (d.name.as_str(), d.free.mib_floor())).collect();
                let (p, pm) = predict(row, &argv, &gpus(&free), Runner::LlamaServer);
                let warned = warned(row, &argv, &p);
                for b in launch.buffers.iter().filter(|b| b.kind == LoggedKind::Compute) {
                    let name = if b.buffer == "CUDA_Host" { "Host" } else { b.buffer.as_str() };
                    let (bytes, phase) = compute_of(&p, name).unwrap_or((Bytes::ZERO, "missing".into()));
                    out.push(Compared {
                        id: row.id.clone(),
                        dry: false,
                        device: name.to_owned(),
                        predicted: bytes.get() as f64 / MIB as f64,
                        measured: b.size.get() as f64 / MIB as f64,
                        phase,
                        warned,
                        phase_model: phase_model_mib(&pm, name, false),
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// The `pct`-th percentile (nearest rank) of sorted values.
fn percentile(sorted: &[f64], pct: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) * pct + 50) / 100;
    sorted[i.min(sorted.len() - 1)]
}

fn stats(rows: &[&Compared]) -> (usize, f64, f64, f64, f64, f64) {
    let mut abs: Vec<f64> = rows.iter().map(|c| c.err().abs()).collect();
    abs.sort_by(f64::total_cmp);
    let within = rows.iter().filter(|c| c.within()).count() as f64 / rows.len().max(1) as f64;
    let under = rows.iter().map(|c| c.err()).fold(0.0, f64::min);
    let over = rows.iter().map(|c| c.err()).fold(0.0, f64::max);
    (rows.len(), within * 100.0, percentile(&abs, 50), percentile(&abs, 95), under, over)
}

type Filter = Box<dyn Fn(&Compared) -> bool>;

fn render(all: &[Compared]) -> String {
    let mut md = String::from(
        "# Compute buffers: predicted vs llama.cpp, per row\n\n\
         Generated by `optimizer-core/tests/accuracy_compute.rs` (`SPLITPLAN_WRITE_ACCURACY=1 cargo test -p \
         optimizer-core --test accuracy_compute`); docs/accuracy.md explains it. MiB; dry runs as llama.cpp \
         prints them (whole MiB), real loads to 0.01 MiB. `ok` = within max(32 MiB, 3 %).\n\n",
    );
    let groups: [(&str, Filter); 5] = [
        ("all", Box::new(|_| true)),
        ("GPUs, real llama-server loads", Box::new(|c| !c.dry && c.device != "Host")),
        ("GPUs, dry runs", Box::new(|c| c.dry && c.device != "Host")),
        ("Host", Box::new(|c| c.device == "Host")),
        ("GPUs, held out (session 9)", Box::new(|c| held_out(c) && c.device != "Host")),
    ];
    md.push_str(
        "| rows | n | within | median abs err | p95 abs err | worst under | worst over | phase model alone: within | \
         its worst under |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (name, f) in &groups {
        let sel: Vec<&Compared> = all.iter().filter(|c| f(c)).collect();
        let (n, w, med, p95, under, over) = stats(&sel);
        let pm_within =
            sel.iter().filter(|c| c.phase_model_within()).count() as f64 * 100.0 / n.max(1) as f64;
        let pm_under = sel.iter().map(|c| c.phase_model - c.measured).fold(0.0, f64::min);
        let _ = writeln!(
            md,
            "| {name} | {n} | {w:.1} % | {med:.1} | {p95:.1} | {under:+.1} | {over:+.1} | {pm_within:.1} % | {pm_under:+.1} |"
        );
    }
    md.push_str(
        "\n| row | device | phase | predicted | llama.cpp | error | | phase model alone |\n\
         |---|---|---|---:|---:|---:|---|---:|\n",
    );
    for c in all {
        let flag = if c.within() {
            "ok"
        } else if c.err() < -64.0 {
            "UNDER"
        } else {
            "off"
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.2} | {:.2} | {:+.2} | {} | {:.2} |",
            c.id,
            c.device,
            c.phase,
            c.predicted,
            c.measured,
            c.err(),
            flag,
            c.phase_model
        );
    }
    md
}

#[test]
fn compute_buffers_within_the_bar() {
    let all = compare_all();
    assert!(all.len() >= 300, "only {} device rows compared", all.len());
    // the exact rows below hold as many graphs reused from an earlier row as built for their own
    let reused: usize = PREDICTORS.with(|p| p.borrow().values().map(Predictor::reused_graphs).sum());
    assert!(reused >= 50, "only {reused} graphs reused from the cache");
    let table = render(&all);
    let path = models::repo_root().join("docs/accuracy-rows.md");
    if std::env::var_os("SPLITPLAN_WRITE_ACCURACY").is_some() {
        std::fs::write(&path, &table).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    let gpu_rows: Vec<&Compared> = all.iter().filter(|c| c.device != "Host").collect();
    // the held-out session's share within is reported in docs/accuracy-rows.md; the bar under applies
    // to it as to every row (below)
    let in_sample: Vec<&Compared> = gpu_rows.iter().copied().filter(|c| !held_out(c)).collect();
    let (n, within, _, _, _, _) = stats(&in_sample);
    let mut report = String::new();
    for c in gpu_rows.iter().filter(|c| !c.within()) {
        let _ = writeln!(
            report,
            "{} {} ({}): predicted {:.1}, llama.cpp {:.1}, error {:+.1}",
            c.id,
            c.device,
            c.phase,
            c.predicted,
            c.measured,
            c.err()
        );
    }
    let unexpected: Vec<String> =
        all.iter().filter(|c| c.err() < -64.0).map(|c| format!("{} {}", c.id, c.device)).collect();
    assert!(unexpected.is_empty(), "under-predicted by more than 64 MiB: {unexpected:?}\n{report}");
    assert!(within >= 95.0, "{within:.1} % of {n} in-sample GPU rows within max(32 MiB, 3 %)\n{report}");
    let held: Vec<&Compared> = gpu_rows.iter().copied().filter(|c| held_out(c)).collect();
    let (n_held, held_within, _, held_p95, held_under, _) = stats(&held);
    assert!(n_held >= 60, "only {n_held} held-out GPU rows");
    assert!(
        held_within >= 95.0 && held_under >= -64.0,
        "held out: {held_within:.1} % of {n_held} GPU rows within, p95 {held_p95:.1} MiB, worst under {held_under:.1}\n{report}"
    );
    // the simulation reproduces llama.cpp exactly: a dry run to its printed MiB, a load to its 0.01 MiB
    let inexact: Vec<String> = all
        .iter()
        .filter(|c| c.phase == optimizer_core::memory::SIMULATED_PHASE && c.err().abs() > 0.011)
        .map(|c| format!("{} {} {:+.2}", c.id, c.device, c.err()))
        .collect();
    assert!(inexact.is_empty(), "simulated rows off llama.cpp: {inexact:?}");
    assert!(
        all.iter().filter(|c| c.phase == optimizer_core::memory::SIMULATED_PHASE).count() >= 1000,
        "the simulation predicts fewer rows than it did"
    );

    let host: Vec<&Compared> = all.iter().filter(|c| c.device == "Host").collect();
    let (_, host_within, _, _, _, _) = stats(&host);
    assert!(host_within >= 85.0, "host compute: {host_within:.1} % within");

    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == table,
        "docs/accuracy-rows.md is not what the model predicts now; regenerate it with \
         SPLITPLAN_WRITE_ACCURACY=1 cargo test -p optimizer-core --test accuracy_compute"
    );
}

/// `memory::uncalibrated` warns only of terms borrowed from other architectures: no configuration of the
/// ground truth, every one of which the terms were checked on, is warned of.
#[test]
fn no_measured_configuration_is_warned_of() {
    let all = compare_all();
    for c in &all {
        assert!(c.warned.is_none(), "{} {}: measured, yet warned of", c.id, c.device);
    }
}

/// On an architecture none of whose rows were measured, the borrowed terms are named: GLM's layout
/// relabelled as qwen3moe, with its experts in RAM and no op offload, or with layers on the CPU.
#[test]
fn borrowed_terms_are_warned_of() {
    let mut model = models::model("glm8").clone();
    let free = gpus(&DRY_RUN_FREE_MIB);
    let warn = |model: &optimizer_core::model::ModelDescription, args: &[&str]| {
        let argv: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let settings = ServerSettings::from_args(&argv).unwrap();
        let p = Predictor::new(model).predict_as(&settings, &free, Runner::LlamaServer).unwrap();
        uncalibrated(model, &settings, &p).iter().map(|u| u.worst_under.mib_floor()).collect::<Vec<_>>()
    };
    let no_op = ["-c", "32768", "-ngl", "99", "-ot", "exps=CPU", "--no-op-offload"];
    let cpu_layers = ["-c", "32768", "-ngl", "30"];
    assert_eq!(warn(&model, &no_op), Vec::<u64>::new(), "deepseek2 was measured");
    assert_eq!(warn(&model, &cpu_layers), Vec::<u64>::new());
    model.architecture = optimizer_core::model::Architecture::Qwen3Moe;
    assert_eq!(warn(&model, &no_op), vec![225]);
    assert_eq!(warn(&model, &cpu_layers), vec![170]);
    assert_eq!(warn(&model, &["-c", "32768", "-ngl", "99", "-ot", "exps=CPU"]), Vec::<u64>::new());
}
