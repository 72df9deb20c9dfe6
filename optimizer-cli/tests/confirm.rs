//! End-to-end tests of `splitplan confirm`: the real binary against the fake llama-server of the
//! workspace (`fake-llama-server/`), one test per path. Each checks the message, the exit code, that
//! no server process is left, and that models.conf is untouched unless `--apply`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The fake server, built once per test run (cargo builds only this package's binaries for its
/// tests).
fn fake_server() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = Path::new(env!("CARGO_BIN_EXE_splitplan")).parent().unwrap().to_path_buf();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "--quiet", "-p", "fake-llama-server"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("cargo build -p fake-llama-server");
            assert!(status.success());
            let bin = dir.join("fake-llama-server");
            assert!(bin.is_file(), "{} not built", bin.display());
            bin
        })
        .clone()
}

const CONF: &str = "\
# the user's profiles
[big]
NAME=Big model
MODEL=big/Big-00001-of-00002.gguf
CTX_SIZE=262144
N_GPU_LAYERS=99
FIT=off
EXTRA_ARGS=--jinja -np 1 -b 2048 -ub 512 -ts 40,9 -ot exps=CPU

[other]
MODEL=big/Big-00001-of-00002.gguf
CTX_SIZE=8192
FIT=off
EXTRA_ARGS=-ot exps=CPU
";

struct Env {
    dir: tempfile::TempDir,
    envs: Vec<(String, String)>,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("models/big")).unwrap();
        for i in 1..=2 {
            std::fs::write(dir.path().join(format!("models/big/Big-0000{i}-of-00002.gguf")), b"GGUF fake")
                .unwrap();
        }
        std::fs::write(dir.path().join("models.conf"), CONF).unwrap();
        let p = |name: &str| dir.path().join(name).display().to_string();
        let envs = vec![
            ("SPLITPLAN_MODELS_CONF".into(), p("models.conf")),
            ("SPLITPLAN_CACHE_DIR".into(), p("cache")),
            ("LLAMA_SERVER".into(), fake_server().display().to_string()),
            ("FAKE_LLAMA_PIDFILE".into(), p("pids")),
            ("FAKE_LLAMA_COUNTER".into(), p("counter")),
            ("FAKE_LLAMA_LOAD_MS".into(), "100".into()),
            ("NO_COLOR".into(), "1".into()),
        ];
        Env { dir, envs }
    }

    fn set(mut self, k: &str, v: &str) -> Env {
        self.envs.push((k.into(), v.into()));
        self
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_splitplan"));
        c.arg("confirm").args(args).current_dir(self.dir.path()).env_remove("SPLITPLAN_LAUNCH_TEMPLATE");
        for (k, v) in &self.envs {
            c.env(k, v);
        }
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().unwrap();
        self.assert_no_server_left();
        out
    }

    fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.dir.path().join("pids"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    fn assert_no_server_left(&self) {
        for pid in self.pids() {
            assert!(!Path::new(&format!("/proc/{pid}")).exists(), "llama-server {pid} is still running");
        }
    }

    fn conf(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("models.conf")).unwrap()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn the_advice_documents_results_table_is_filled_in_with_a_backup() {
    let env = Env::new();
    let table = "| Metric | Value |\n|--------|-------|\n| Launches used | |\n";
    let doc = format!(
        "# Advice\n\n### 1.1 `[big]` Big model\n\n#### Test results\n\n##### Suggestion A (aggressive)\n{table}\n\
         ##### Suggestion B (moderate)\n{table}\n#### Choice\n\n### 1.2 `[other]`\n\n#### Test results\n\n\
         ##### Suggestion A (aggressive)\n{table}"
    );
    let path = env.dir.path().join("advice_test_plan.md");
    std::fs::write(&path, &doc).unwrap();
    let out = env.run(&["big", "--speed-runs", "1"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("filled in the test results of [big]"), "{stderr}");
    let filled = std::fs::read_to_string(&path).unwrap();
    let big = &filled[..filled.find("### 1.2").unwrap()];
    assert!(
        big.contains(
            "##### Suggestion A (aggressive)\n| Metric | Value |\n|--------|-------|\n| Launches used | 1 |"
        ),
        "{filled}"
    );
    assert!(big.contains(&format!("##### Suggestion B (moderate)\n{table}")), "{filled}");
    assert!(filled.ends_with(&doc[doc.find("### 1.2").unwrap()..]), "the other profile changed:\n{filled}");
    assert_eq!(std::fs::read_to_string(env.dir.path().join("advice_test_plan.md.bak")).unwrap(), doc);
    assert_eq!(env.conf(), CONF);
}

#[test]
fn compare_fit_launches_llama_cpp_fit_between_two_launches_of_the_placement() {
    let env = Env::new();
    let out = env.run(&["big", "--compare-fit", "--speed-runs", "2"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("Beside llama.cpp --fit"), "{stdout}\n{stderr}");
    // the fake server has no --fit: with the placement flags gone it puts every layer on the GPUs
    assert!(stdout.contains("| Result | fits | out of memory on CUDA0 (the weights"), "{stdout}");
    assert!(stdout.contains("| Decode (t/s) | 100.0 (median of 4) | not measured |"), "{stdout}");
    assert!(stderr.contains("compare: llama.cpp --fit on --fit-target 128,1024"), "{stderr}");
    // the placement, --fit, the placement again; none left running (Env::run checks)
    assert_eq!(env.pids().len(), 3);
    assert_eq!(env.conf(), CONF);
}

#[test]
fn a_placement_that_fits_is_proven_in_one_launch() {
    let env = Env::new();
    let out = env.run(&["big"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("| Launches used | 1 |"), "{stdout}");
    assert!(stdout.contains("| CUDA1 VRAM (MiB / %) (at exit) |"), "{stdout}");
    assert!(
        stdout.contains(
            "| Speed (t/s) | 100.0 decode, 50000 prompt (medians of 3 runs: 512-token prompt, 256 generated); \
             worst-case prompt 50000 t/s over 65,536 tokens |"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("| OOM? | no |"), "{stdout}");
    assert!(stdout.contains("worst-case request: 65,536 of 262,144 context tokens"), "{stdout}");
    assert!(stdout.contains("Proven with: "), "{stdout}");
    assert!(stderr.contains("measurements stored for later predictions"), "{stderr}");
    assert_eq!(env.pids().len(), 1);
    assert_eq!(env.conf(), CONF);
    // the log is kept and named
    assert!(stderr.contains("log: "), "{stderr}");
    let logs: Vec<_> = std::fs::read_dir(env.dir.path().join("cache/logs")).unwrap().collect();
    assert_eq!(logs.len(), 1);
    let cal: Vec<_> = std::fs::read_dir(env.dir.path().join("cache/calibration")).unwrap().collect();
    assert_eq!(cal.len(), 1);
}

/// CUDA1 holds 8 layers and the output layer (780 MiB): 262,144 tokens of KV (2,560 MiB) do not
/// fit its 3,200 MiB, 196,608 (1,920 MiB, with 100 MiB of compute and the 200 MiB pool) do, with
/// 200 MiB left: the tests that use it keep 128 MiB free on each GPU (`--margin 128`), not the
/// profile's 1,024 on CUDA1.
fn tight(env: Env) -> Env {
    env.set("FAKE_LLAMA_FREE_MIB", "24080,3200")
        .set("FAKE_LLAMA_KV_MIB_PER_1K", "60")
        .set("FAKE_LLAMA_COMPUTE_MIB", "100")
}

#[test]
fn out_of_memory_steps_the_context_down_and_leaves_models_conf_alone() {
    let env = tight(Env::new());
    let out = env.run(&["big", "--margin", "128"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("out of memory on CUDA1 (the KV cache, asked for"), "{stderr}");
    // the failed launch is reported in full
    assert!(stderr.contains("command: ") && stderr.contains("status: exit status 1"), "{stderr}");
    assert!(stderr.contains("last lines of the log:"), "{stderr}");
    assert!(stdout.contains("| Launches used | 2 |"), "{stdout}");
    assert!(stdout.contains("Proven placement: context 196,608"), "{stdout}");
    assert!(stdout.contains("launch 1: out of memory on CUDA1"), "{stdout}");
    assert_eq!(env.conf(), CONF);
    assert!(!env.dir.path().join("models.conf.bak").exists());
}

#[test]
fn a_margin_missed_at_the_peak_is_not_proven() {
    // the profile's --fit-target 128,1024: 196,608 keeps 200 MiB on CUDA1, 131,072 keeps 840 MiB
    let env = tight(Env::new());
    let out = env.run(&["big"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("survived, but CUDA1 kept only 200 MiB free at the peak, below its 1,024 MiB margin"),
        "{stderr}"
    );
    assert!(stderr.contains("no placement of the ladder fits: 3 launch(es), every one failed"), "{stderr}");
    assert_eq!(env.conf(), CONF);
}

#[test]
fn apply_writes_the_proven_placement_to_that_profile_only() {
    let env = tight(Env::new());
    let out = env.run(&["big", "--apply", "--margin", "128"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let conf = env.conf();
    assert_eq!(conf, CONF.replacen("CTX_SIZE=262144", "CTX_SIZE=196608", 1));
    assert_eq!(std::fs::read_to_string(env.dir.path().join("models.conf.bak")).unwrap(), CONF);
}

#[test]
fn nothing_fits() {
    let env = Env::new().set("FAKE_LLAMA_FREE_MIB", "1000,1000");
    let out = env.run(&["big"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no placement of the ladder fits: 3 launch(es)"), "{stderr}");
    assert!(stderr.contains("out of memory on CUDA0 (the weights"), "{stderr}");
    assert!(text(&out.stdout).is_empty());
    assert_eq!(env.conf(), CONF);
}

#[test]
fn a_flaky_crash_is_retried_once() {
    let env = Env::new().set("FAKE_LLAMA_MODE", "crash@1");
    let out = env.run(&["big"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("crashed: it was killed by signal 6"), "{stderr}");
    assert!(stderr.contains("status: signal 6 (SIGABRT)"), "{stderr}");
    assert_eq!(env.pids().len(), 2);
}

#[test]
fn a_hang_is_killed_and_reported() {
    let env = Env::new().set("FAKE_LLAMA_MODE", "hang");
    let started = Instant::now();
    let out = env.run(&["big", "--load-timeout", "1", "--grace", "1"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("never finished loading"), "{stderr}");
    assert!(stderr.contains("killed with SIGKILL after 1 s of ignoring SIGINT"), "{stderr}");
    assert!(stderr.contains("stopped after 1 launch(es)"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_taken_port_is_retried_on_another() {
    let env = Env::new().set("FAKE_LLAMA_MODE", "port-taken@1");
    let out = env.run(&["big"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("its port was taken; trying another"), "{stderr}");
    assert!(text(&out.stdout).contains("| Launches used | 1 |"));
}

#[test]
fn out_of_memory_at_the_first_request() {
    let env = Env::new().set("FAKE_LLAMA_MODE", "oom-at-request@1");
    let out = env.run(&["big"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("out of memory on CUDA1 (CUDA at run time)"), "{stderr}");
    assert!(stdout.contains("| Launches used | 2 |"), "{stdout}");
}

#[test]
fn a_missing_binary_is_bad_input() {
    let env = Env::new().set("LLAMA_SERVER", "/nonexistent/llama-server");
    let out = env.run(&["big"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("llama-server not found at '/nonexistent/llama-server'"), "{stderr}");
    assert!(stderr.contains("hint: give the llama-server binary"), "{stderr}");
    assert!(env.pids().is_empty());
}

#[test]
fn bad_input() {
    let env = Env::new();
    let out = env.run(&["nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("nope"), "{}", text(&out.stderr));
    let out = env.run(&["big", "--fill", "1.5"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("invalid value '1.5' for --fill"));
    let out = env.run(&["big", "--", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(env.pids().is_empty());
}

#[test]
fn an_argument_llama_server_refuses_stops_the_search() {
    let env = Env::new().set("FAKE_LLAMA_MODE", "bad-arg");
    let out = env.run(&["big"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("stopped after 1 launch(es): invalid argument: --fake-refused"), "{stderr}");
}

#[test]
fn another_build_is_named() {
    let env = Env::new().set("FAKE_LLAMA_BUILD", "9999");
    let out = env.run(&["other"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("llama-server is build 9999 (fake-9999), splitplan models build 11434"),
        "{stderr}"
    );
}

#[test]
fn a_launch_template_runs_the_server() {
    let env = Env::new().set("LLAMA_SERVER", "/nonexistent");
    let template = format!("sh -c 'exec {} {{args}}'", fake_server().display());
    let out = env.run(&["big", "--launch-template", &template]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("Proven with: sh -c"), "{stdout}");
    // a template keeps the container's model path and listens on every address
    assert!(stdout.contains("--model /models/big/Big-00001-of-00002.gguf"), "{stdout}");
    assert!(stdout.contains("--host 0.0.0.0"), "{stdout}");
}

#[test]
fn json_output() {
    let env = tight(Env::new());
    let out = env.run(&["big", "--json", "--no-cache", "--margin", "128"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"]["verdict"], "proven");
    assert_eq!(v["verdict"]["rung"], 1);
    assert_eq!(v["launches"].as_array().unwrap().len(), 2);
    assert_eq!(v["launches"][0]["result"]["result"], "out_of_memory");
    assert_eq!(v["launches"][0]["result"]["oom"]["device"], "CUDA1");
    assert_eq!(v["proven"]["measurement"]["devices"][1]["device"], "CUDA1");
    assert!(v["proven"]["calibration_file"].is_null());
    assert!(!env.dir.path().join("cache/calibration").exists());
}

#[test]
fn a_ladder_with_predictions_skips_what_the_oom_says_cannot_fit() {
    // one GPU of 6,000 MiB; 10 layers of 1,000 MiB experts; each rung moves one more layer's
    // experts to the CPU. Rung 0's weights lack 4,900 MiB, its whole prediction 6,188 MiB: the
    // search goes straight to rung 7 (7,000 MiB less). Rung 6 would leave 4 MiB, less than the
    // 100 MiB margin, so the headroom does not send it back up.
    let env = Env::new().set("FAKE_LLAMA_FREE_MIB", "6000").set("FAKE_LLAMA_LAYERS", "10");
    let mut rungs = Vec::new();
    for cpu_layers in 0..=10u32 {
        let pattern = if cpu_layers == 0 {
            "nothing\\.=CPU".to_string()
        } else {
            format!("blk\\.{}\\.ffn_.*_exps=CPU", range(cpu_layers))
        };
        let gpu_mib = 10 * 60 + 300 + 1000 * (10 - u64::from(cpu_layers)) + 24 * 12 + 800 + 200;
        rungs.push(serde_json::json!({
            "label": format!("{cpu_layers} expert layers on the CPU"),
            "placement": ["-ngl", "99", "-ot", pattern],
            "predicted": [gpu_mib << 20],
        }));
    }
    let ladder = serde_json::json!({ "gpus": ["CUDA0"], "rungs": rungs, "aggressive": 0 });
    let path = env.dir.path().join("ladder.json");
    std::fs::write(&path, ladder.to_string()).unwrap();
    let out = env.run(&["other", "--ladder", path.to_str().unwrap(), "--margin", "100"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("| Launches used | 2 |"), "{stdout}\n{stderr}");
    assert!(stdout.contains("Proven placement: 7 expert layers on the CPU"), "{stdout}\n{stderr}");
    assert!(stderr.contains("out of memory on CUDA0 (the weights"), "{stderr}");
}

/// `-ot` alternatives for layers 0..n.
fn range(n: u32) -> String {
    let v: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    format!("({})", v.join("|"))
}

#[test]
fn ctrl_c_stops_the_server_and_exits_130() {
    let env = Env::new().set("FAKE_LLAMA_MODE", "hang");
    let child = env
        .command(&["big", "--load-timeout", "60", "--grace", "1"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.pids().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert!(text(&out.stderr).contains("interrupted: llama-server was stopped"), "{}", text(&out.stderr));
    env.assert_no_server_left();
    assert_eq!(env.conf(), CONF);
}

/// A profile of a real (header-only) model on described GPUs: the planner's ladder, the aggressive
/// plan launched first; when the fake server's hidden model is 10% heavier than splitplan's, the
/// aggressive plan runs out of memory, and what it lacked points the search to the rung that frees
/// enough (here the moderate plan): two launches.
#[test]
fn the_ladder_comes_from_the_planner() {
    let env = Env::new();
    let owned = planned(&env, "24080,15000");
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    let fits = env.run(&args);
    let stderr = text(&fits.stderr);
    assert_eq!(fits.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("note: the planner's ladder: "), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&fits.stdout).unwrap();
    let rungs = v["ladder"]["rungs"].as_array().unwrap();
    assert!(rungs.len() >= 4, "{rungs:?}");
    assert!(rungs[0]["label"].as_str().unwrap().starts_with("aggressive: "));
    assert!(v["ladder"]["moderate"].as_u64().is_some());
    let contexts: Vec<u64> = rungs.iter().filter_map(|r| r["ctx_size"].as_u64()).collect();
    assert_eq!(contexts, [196_608, 131_072]);
    // The first launch is the aggressive plan's placement.
    let launches = v["launches"].as_array().unwrap();
    let command: Vec<&str> =
        launches[0]["command"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
    let placement: Vec<&str> =
        rungs[0]["placement"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
    assert!(command.windows(placement.len()).any(|w| w == placement), "{command:?}");
    assert_eq!(v["verdict"]["rung"], 0);
    // The same aggressive plan as the plan command's for these GPUs and margins.
    let planned = Command::new(env!("CARGO_BIN_EXE_splitplan"))
        .args(&args)
        .current_dir(env.dir.path())
        .env_clear()
        .env("HOME", env.dir.path())
        .output()
        .unwrap();
    assert_eq!(planned.status.code(), Some(0), "{}", text(&planned.stderr));
    let p: serde_json::Value = serde_json::from_slice(&planned.stdout).unwrap();
    assert_eq!(p["plans"][0]["placement_args"], rungs[0]["placement"]);

    let heavier = env.set("FAKE_LLAMA_FACTOR", "1.1");
    let stepped = heavier.run(&args);
    let stderr = text(&stepped.stderr);
    assert_eq!(stepped.status.code(), Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&stepped.stdout).unwrap();
    assert_eq!(v["launches"][0]["rung"], 0);
    assert_eq!(v["launches"][0]["result"]["result"], "out_of_memory");
    assert_eq!(v["launches"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["verdict"]["rung"], v["ladder"]["moderate"], "{v}");
}

/// The profile of a real (header-only) model for the planner's ladder, and the arguments that
/// confirm it with `--free` claiming `free` MiB per GPU (the fake server has 24,080 and 15,000).
fn planned(env: &Env, free: &str) -> Vec<String> {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/models").display().to_string();
    std::fs::write(
        env.dir.path().join("planned.conf"),
        "[q5]\nMODEL=Qwen3-Coder-Next/UD-Q5_K_XL/Qwen3-Coder-Next-UD-Q5_K_XL-00001-of-00003.gguf\n\
         CTX_SIZE=262144\nEXTRA_ARGS=-np 1 -b 2048 -ub 512\n",
    )
    .unwrap();
    ["q5", "--models-conf", "planned.conf", "--models-dir", &models, "--free", free, "--ram", "64G", "--json"]
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// `--free` claims 6,000 MiB more on CUDA1 than the fake server has: every rung of the planner's
/// ladder (up to 3,072 MiB more margin, then context 131,072) would run out of memory there, so
/// confirm plans more margin on CUDA1 at the planned context, appends the rung and goes on, until
/// one fits.
#[test]
fn the_ladder_is_extended_when_every_rung_runs_out_of_memory() {
    let env = Env::new();
    let args = planned(&env, "24080,21000");
    let out = env.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let extension_rungs = v["ladder"]["rungs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["label"].as_str().unwrap().starts_with("extension"))
        .count();
    let extensions = v["extensions"].as_array().unwrap();
    assert!(!extensions.is_empty() && extensions.len() == extension_rungs, "{v}");
    assert!(v["extension_end"].is_null());
    let first = &extensions[0];
    assert_eq!(first["device"], "CUDA1");
    assert!(first["added"].as_u64().unwrap() >= 512 << 20, "{first}");
    let rungs = v["ladder"]["rungs"].as_array().unwrap();
    let ext = &rungs[usize::try_from(first["rung"].as_u64().unwrap()).unwrap()];
    // at the planned context, CUDA0 with the aggressive plan's margin, CUDA1 with more
    assert!(ext["ctx_size"].is_null(), "{ext}");
    assert_eq!(ext["margins"][0], rungs[0]["margins"][0]);
    assert!(ext["margins"][1].as_u64() > rungs[0]["margins"][1].as_u64(), "{ext}");
    // the planned ladder fails at its first launch (the out-of-memory size skips the rest)
    assert_eq!(v["launches"][0]["result"]["result"], "out_of_memory");
    assert_eq!(v["launches"][0]["result"]["oom"]["device"], "CUDA1");
    assert_eq!(v["verdict"]["verdict"], "proven");
    let proven = v["verdict"]["rung"].as_u64().unwrap();
    assert_eq!(proven, extensions.last().unwrap()["rung"].as_u64().unwrap(), "{v}");
    assert!(
        rungs[usize::try_from(proven).unwrap()]["label"].as_str().unwrap().starts_with("extension "),
        "{v}"
    );
    assert!(
        stderr.contains("note: every rung failed, the last ")
            && stderr.contains(" short on CUDA1: extension 1 of 4 adds "),
        "{stderr}"
    );
    assert_eq!(v["launches"].as_array().unwrap().len(), 1 + extensions.len(), "{v}");
}

/// Every launch runs out of memory at its first request (no size logged): the ladder is extended
/// four times, then confirm fails and says what it tried.
#[test]
fn extensions_that_all_run_out_of_memory_end_with_what_was_tried() {
    let env = Env::new().set("FAKE_LLAMA_MODE", "oom-at-request");
    let mut args = planned(&env, "24080,21000");
    args.retain(|a| a != "--json");
    let out = env.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(text(&out.stdout).is_empty());
    for k in 1..=4 {
        assert!(stderr.contains(&format!("extension {k} of 4 adds ")), "{stderr}");
    }
    assert!(stderr.contains("out of memory on CUDA1 (CUDA at run time)"), "{stderr}");
    let error = stderr.lines().find(|l| l.starts_with("error: no placement of the ladder fits")).unwrap();
    assert!(
        error.contains(
            "every one failed; the ladder was extended 4 time(s) past its planned rungs (margins: CUDA1 "
        ),
        "{error}"
    );
    assert!(error.ends_with("and no further: at most 4 extensions are made"), "{error}");
}
