//! End-to-end: the plan command, `advise` and `apply`, the real binary on the committed
//! header-only fixtures, the user's pair described by card names (no NVML, no GPU).

mod common;

use std::path::PathBuf;

use common::{Run, root, splitplan_in};

const CONF: &str = "fixtures/models.conf";
const GPUS: [&str; 4] = ["--gpu", "4090,5070ti:2500", "--ram", "64G"];

/// `splitplan PROFILE --models-conf fixtures/models.conf --gpu … --ram 64G ARGS` from the root.
fn plan(profile: &str, args: &[&str]) -> Run {
    let mut all = vec![profile, "--models-conf", CONF];
    all.extend(GPUS);
    all.extend(args);
    splitplan_in(&root(), &all, &[])
}

/// A temporary folder with a copy of the fixtures' models.conf (its models under `--models-dir`).
struct ConfCopy {
    dir: tempfile::TempDir,
}

impl ConfCopy {
    fn new() -> ConfCopy {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(root().join(CONF), dir.path().join("models.conf")).unwrap();
        ConfCopy { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, args: &[&str]) -> Run {
        let models = root().join("fixtures/models").display().to_string();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--models-dir", &models]);
        all.extend(GPUS);
        splitplan_in(self.dir.path(), &all, &[])
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap()
    }
}

#[test]
fn plan_text() {
    let run = plan("qwen3-coder-ud-q5", &[]);
    assert_eq!((run.code, run.stderr.as_str()), (0, ""));
    assert!(!run.stdout.contains('\x1b'), "no colour when stdout is no terminal");
    insta::assert_snapshot!("plan_qwen3_coder_text", run.stdout);
}

#[test]
fn plan_json() {
    let run = plan("qwen3-coder-ud-q5", &["--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["profile"], "qwen3-coder-ud-q5");
    assert_eq!(v["n_ctx"], 262_144);
    assert_eq!(v["machine"][1]["card"], "RTX 5070 Ti");
    let plans = v["plans"].as_array().unwrap();
    assert_eq!(plans.len(), 2);
    assert_eq!(plans[0]["kind"], "aggressive");
    assert_eq!(plans[1]["kind"], "moderate");
    for p in plans {
        assert!(p["command"].as_str().unwrap().starts_with("llama-server "));
        assert_eq!(p["layers"].as_array().unwrap().len(), 48);
        for g in p["gpus"].as_array().unwrap() {
            assert!(g["left_bytes"].as_i64().unwrap() >= 0, "{g}");
        }
    }
    assert!(plans[0]["gpu_expert_bytes"].as_u64() >= plans[1]["gpu_expert_bytes"].as_u64());
    let lines: Vec<&str> =
        plans[1]["profile_lines"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert_eq!(lines[0], "N_GPU_LAYERS=49");
    assert!(lines[1].starts_with("EXTRA_ARGS=--jinja -np 1 -b 2048 -ub 512 "), "{lines:?}");
    assert_eq!(v["fit"]["fit_target_bytes"][1], 1024 << 20);
    let steps: Vec<u64> =
        v["context_steps"].as_array().unwrap().iter().map(|c| c["n_ctx"].as_u64().unwrap()).collect();
    assert_eq!(steps, [196_608, 131_072]);
}

#[test]
fn plan_ctx_max() {
    let run = plan("qwen3-coder-ud-q5", &["--ctx", "max", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    // The dense parts and KV of Qwen3-Coder-Next fit the pair at its whole trained context.
    assert_eq!(v["n_ctx"], 262_144);
    assert!(v["context_steps"].as_array().unwrap().is_empty());
    // On one small GPU the context must shrink, and both plans still keep their margins.
    let small = splitplan_in(
        &root(),
        &[
            "qwen3-coder-ud-q5",
            "--models-conf",
            CONF,
            "--gpu",
            "8G",
            "--ram",
            "64G",
            "--ctx",
            "max",
            "--json",
        ],
        &[],
    );
    assert_eq!(small.code, 0, "{}", small.stderr);
    let v: serde_json::Value = serde_json::from_str(&small.stdout).unwrap();
    let n = v["n_ctx"].as_u64().unwrap();
    assert!(n > 0 && n < 262_144 && n % 256 == 0, "{n}");
    assert!(v["plans"][1]["gpus"][0]["left_bytes"].as_i64().unwrap() >= 0);
}

#[test]
fn a_model_that_cannot_fit_exits_1_and_says_by_how_much() {
    let args = ["gpt-oss-120b", "--models-conf", CONF, "--gpu", "2G,2G", "--ram", "64G"];
    let run = splitplan_in(&root(), &args, &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.stdout, "");
    assert!(run.stderr.starts_with("error: does not fit: "), "{}", run.stderr);
    assert!(run.stderr.contains(" short"), "{}", run.stderr);
    // System RAM: the same model on this pair with 16 GiB of RAM.
    let args = ["gpt-oss-120b", "--models-conf", CONF, "--gpu", "4090,5070ti:2500", "--ram", "16G"];
    let ram = splitplan_in(&root(), &args, &[]);
    assert_eq!(ram.code, 1, "{}", ram.stderr);
    assert!(ram.stderr.contains("system RAM"), "{}", ram.stderr);
    assert!(ram.stderr.contains("hint: --ram"), "{}", ram.stderr);
}

/// Every margin from 1,024 to 6,144 MiB on the second GPU plans for GLM-4.7-Flash: the check of the
/// flags against the full prediction tightens until the plan keeps its margins. It once gave up at
/// 5,120 MiB ("CUDA0 with its margin … 15.15 MiB short"): the search's costs leave out pipeline
/// parallelism's compute buffers, and shrinking the budget by the overage alone refilled the same
/// placement every round.
#[test]
fn every_margin_tightens_to_a_plan_that_keeps_it() {
    for (margin, printed) in
        [("1024", "1,024"), ("3072", "3,072"), ("4096", "4,096"), ("5120", "5,120"), ("6144", "6,144")]
    {
        let target = format!("128,{margin}");
        let args = ["glm-flash-q8", "--models-conf", CONF, "--gpu", "25580,16500", "--ram", "64G", "--"];
        let mut args = args.to_vec();
        args.extend(["--fit-target", &target]);
        let run = splitplan_in(&root(), &args, &[]);
        assert_eq!(run.code, 0, "margin {margin}: {}", run.stderr);
        assert!(
            run.stdout.contains(&format!("128 / {printed} MiB kept free")),
            "margin {margin}: {}",
            run.stdout
        );
    }
}

#[test]
fn unknown_profile_lists_the_known_ones() {
    let run = plan("qwen3-coder", &[]);
    assert_eq!(run.code, 2);
    assert_eq!(
        run.stderr,
        "error: fixtures/models.conf: no profile [qwen3-coder] in models.conf; the profiles are: glm-flash-q4, \
         glm-flash-q8, gpt-oss-120b, qwen3-coder-ud-q5, bench-glm-flash-q8, bench-qwen3-coder-ud-q5\n"
    );
    let commented = plan("qwen3-coder-ud-q6", &[]);
    assert_eq!(commented.code, 2);
    assert!(commented.stderr.contains("commented out"), "{}", commented.stderr);
    // A misspelt subcommand gets a hint.
    let typo = plan("advice", &[]);
    assert!(typo.stderr.contains("hint: the subcommand is `splitplan advise`"), "{}", typo.stderr);
}

#[test]
fn a_missing_model_says_where_it_looked() {
    let c = ConfCopy::new();
    let run = splitplan_in(c.dir.path(), &["glm-flash-q8", "--gpu", "4090"], &[]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.starts_with("error: model file not found: 'models/GLM-4.7-Flash/GLM-4.7-Flash-Q8_0.gguf'"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "MODEL=GLM-4.7-Flash/GLM-4.7-Flash-Q8_0.gguf, looked for under the models folder 'models'"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("hint: name the models folder with --models-dir or MODELS_DIR"),
        "{}",
        run.stderr
    );
}

#[test]
fn conflicting_pins_say_which() {
    let run = plan("glm-flash-q8", &["--", "-ngl", "0", "-ts", "1,1"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("conflicting pins: -ngl 0 and -ts 1,1"), "{}", run.stderr);
    let no_gpu = plan("glm-flash-q8", &["--", "-ot", "exps=CUDA2"]);
    assert_eq!(no_gpu.code, 2, "{}", no_gpu.stderr);
    assert!(no_gpu.stderr.contains("there is no CUDA2"), "{}", no_gpu.stderr);
}

#[test]
fn pins_are_kept_and_said() {
    let run = plan("glm-flash-q8", &["--", "-ot", r"blk\.1\.ffn_down_exps=CPU"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains(r"pinned, kept in both plans: -ot 'blk\.1\.ffn_down_exps=CPU'"),
        "{}",
        run.stdout
    );
    let flags: Vec<&str> = run.stdout.lines().filter(|l| l.trim_start().starts_with("flags ")).collect();
    assert_eq!(flags.len(), 2);
    for f in flags {
        assert!(f.contains(r"-ot 'blk\.1\.ffn_down_exps=CPU,"), "{f}");
    }
}

#[test]
fn bars_are_painted_only_when_colour_is_wanted() {
    let args = ["glm-flash-q8", "--models-conf", CONF, "--gpu", "4090,5070ti:2500", "--ram", "64G"];
    let forced = splitplan_in(&root(), &args, &[("CLICOLOR_FORCE", "1")]);
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    assert!(forced.stdout.contains("\x1b[34m#"), "painted bars");
    let no_color = splitplan_in(&root(), &args, &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]);
    assert!(!no_color.stdout.contains('\x1b'));
    assert_eq!(no_color.stdout, plan("glm-flash-q8", &[]).stdout);
}

#[test]
fn advise_writes_beside_models_conf_with_a_backup() {
    let c = ConfCopy::new();
    let run = c.run(&["advise"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "");
    assert!(run.stderr.contains("wrote advice_test_plan.md: 6 profile(s) of 4 model(s)"), "{}", run.stderr);
    let doc = c.read("advice_test_plan.md");
    assert!(
        doc.starts_with("# Production profile optimization: advice and test plan\n\n**Created:** 2026-11-22")
    );
    for id in [
        "glm-flash-q4",
        "glm-flash-q8",
        "gpt-oss-120b",
        "qwen3-coder-ud-q5",
        "bench-glm-flash-q8",
        "bench-qwen3-coder-ud-q5",
    ] {
        assert!(doc.contains(&format!("`[{id}]`")), "{id}");
    }
    // Grouped by model: both GLM Q8 profiles under one model heading, in file order.
    let q8 = doc.find("## 2. GLM-4.7-Flash-Q8_0").unwrap();
    assert!(q8 < doc.find("### 2.1 `[glm-flash-q8]`").unwrap());
    assert!(
        doc.find("### 2.1 `[glm-flash-q8]`").unwrap() < doc.find("### 2.2 `[bench-glm-flash-q8]`").unwrap()
    );
    assert!(!doc.contains("qwen3-coder-ud-q6"), "commented-out profiles are left out");
    assert_eq!(doc.matches("##### Suggestion A (aggressive)\n| Metric | Value |").count(), 6);
    assert!(!c.path("advice_test_plan.md.bak").exists());
    // Again: the first document is kept as .bak.
    std::fs::write(c.path("advice_test_plan.md"), "my notes\n").unwrap();
    let again = c.run(&["advise"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(c.read("advice_test_plan.md.bak"), "my notes\n");
    assert_eq!(c.read("advice_test_plan.md"), doc);
    // models.conf is only read.
    assert_eq!(c.read("models.conf"), std::fs::read_to_string(root().join(CONF)).unwrap());
}

#[test]
fn advise_one_profile_to_out() {
    let c = ConfCopy::new();
    let run = c.run(&["advise", "glm-flash-q8", "--out", "review.md"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!c.path("advice_test_plan.md").exists());
    insta::assert_snapshot!("advise_glm_flash_q8", c.read("review.md"));
    let stdout = c.run(&["advise", "glm-flash-q8", "--out", "-"]);
    assert_eq!(stdout.stdout, c.read("review.md"));
    let unknown = c.run(&["advise", "nope"]);
    assert_eq!(unknown.code, 2);
    assert!(unknown.stderr.contains("no profile [nope] in models.conf"), "{}", unknown.stderr);
}

/// The bytes of `text` split into lines with their endings.
fn lines(text: &str) -> Vec<&str> {
    text.split_inclusive('\n').collect()
}

#[test]
fn apply_changes_only_that_profile() {
    let c = ConfCopy::new();
    // CRLF endings and a missing final newline must survive too.
    let original = c.read("models.conf").replace('\n', "\r\n") + "# the end";
    std::fs::write(c.path("models.conf"), &original).unwrap();
    let run = c.run(&["apply", "qwen3-coder-ud-q5", "--plan", "moderate"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .starts_with("--- models.conf\n+++ models.conf ([qwen3-coder-ud-q5], moderate plan)\n@@ line ")
    );
    assert!(
        run.stdout.contains("\n-N_GPU_LAYERS=99\n+N_GPU_LAYERS=49\n FIT=off\n-EXTRA_ARGS="),
        "{}",
        run.stdout
    );
    let after = c.read("models.conf");
    assert_eq!(c.read("models.conf.bak"), original);
    let (a, b) = (lines(&original), lines(&after));
    assert_eq!(a.len(), b.len());
    let changed: Vec<&str> =
        (0..a.len()).filter(|&i| a[i] != b[i]).map(|i| b[i].split('=').next().unwrap()).collect();
    assert_eq!(changed, ["N_GPU_LAYERS", "EXTRA_ARGS"]);
    let extra = b
        .iter()
        .find(|l| l.starts_with("EXTRA_ARGS=--jinja -np 1 -b 2048 -ub 512 --no-context-shift"))
        .unwrap();
    assert!(extra.ends_with(",exps=CPU\r\n"), "{extra:?}");
    // The diff's + lines are what the file now holds.
    for plus in run.stdout.lines().filter(|l| l.starts_with('+') && !l.starts_with("+++")) {
        assert!(after.contains(&format!("{}\r\n", &plus[1..])), "{plus}");
    }
    // Applying the same plan again changes nothing.
    let again = c.run(&["apply", "qwen3-coder-ud-q5", "--plan", "moderate"]);
    assert_eq!(again.code, 0);
    assert!(again.stderr.contains("already holds the moderate plan"), "{}", again.stderr);
    assert_eq!(c.read("models.conf"), after);
}

#[test]
fn apply_with_a_context_and_a_dry_run() {
    let c = ConfCopy::new();
    let original = c.read("models.conf");
    let run =
        c.run(&["apply", "bench-qwen3-coder-ud-q5", "--plan", "aggressive", "--ctx", "32768", "--dry-run"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("-CTX_SIZE=10240\n+CTX_SIZE=32768\n"), "{}", run.stdout);
    assert!(run.stdout.contains("+N_GPU_LAYERS=49\n+FIT=off\n"), "missing keys are added: {}", run.stdout);
    assert_eq!(c.read("models.conf"), original);
    assert!(!c.path("models.conf.bak").exists());
}

#[test]
fn a_failed_apply_leaves_models_conf_untouched() {
    let c = ConfCopy::new();
    let original = c.read("models.conf");
    // The temporary file cannot be created: its name is taken by a folder.
    std::fs::create_dir(c.path(".models.conf.splitplan.tmp")).unwrap();
    let run = c.run(&["apply", "glm-flash-q8", "--plan", "aggressive"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("could not write 'models.conf' (it was left as it was)"), "{}", run.stderr);
    assert_eq!(c.read("models.conf"), original);
    assert!(!c.path("models.conf.bak").exists());
    // Nor does a profile it cannot plan, or a model file.
    let inactive = c.run(&["apply", "qwen3-coder-ud-q6", "--plan", "moderate"]);
    assert_eq!(inactive.code, 2);
    let file = c.run(&["apply", "x.gguf", "--plan", "moderate"]);
    assert_eq!(file.code, 2);
    assert!(file.stderr.contains("apply writes a profile of models.conf"), "{}", file.stderr);
    assert_eq!(c.read("models.conf"), original);
}
