//! `xtask plan-rows`: the planner's plans for the ground-truth configurations, as capture.py matrix rows
//! (fixtures/ground-truth/matrix.toml), so real llama.cpp can measure placements that no calibrated
//! constant has seen: the held-out test of the compute model and the planner's speed claims.
//!
//! The GPUs are the emulated pair of the ground truth: 23,557 and 14,477 MiB free at load as llama.cpp
//! reports them on the held-back H200s, H200 memory bandwidth, the host bandwidth of the speed model's
//! calibration.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use optimizer_core::gguf::ReadOptions;
use optimizer_core::layout::{BuildOptions, LayoutSpec};
use optimizer_core::model::ModelDescription;
use optimizer_core::plan::{CUDA_CONTEXT_OVERHEAD, Hardware, PlanOptions, plan};
use optimizer_core::settings::ServerSettings;
use optimizer_core::units::Bytes;

/// What `plan-rows` takes.
#[derive(clap::Args)]
pub struct Args {
    /// Prefix of the row ids, e.g. `p` gives q5-p01a, q5-p01m.
    #[arg(long, default_value = "p")]
    prefix: String,
}

/// (row model key, layout file, quant, llama-server flags, requests)
const CONFIGS: &[(&str, &str, &str, &str)] = &[
    (
        "q5",
        "qwen3-coder-next.toml",
        "UD-Q5_K_XL",
        "-fa on -ctk q8_0 -ctv q8_0 -np 1 -c 262144 -b 2048 -ub 2048 --fit-target 128,1024",
    ),
    (
        "q5",
        "qwen3-coder-next.toml",
        "UD-Q5_K_XL",
        "-fa on -ctk q8_0 -ctv q8_0 -np 1 -c 262144 -b 2048 -ub 512 --fit-target 128,1024",
    ),
    (
        "glm8",
        "glm-4.7-flash.toml",
        "Q8_0",
        "-fa on -ctk q8_0 -ctv q8_0 -np 1 -c 131072 -b 2048 -ub 512 --fit-target 128,1024",
    ),
    (
        "oss",
        "gpt-oss-120b.toml",
        "F16",
        "-fa on -ctk q8_0 -ctv q8_0 -np 1 -c 131072 -b 2048 -ub 512 --fit-target 128,1024",
    ),
    (
        "q5",
        "qwen3-coder-next.toml",
        "UD-Q5_K_XL",
        "-fa on -ctk q8_0 -ctv q8_0 -np 1 -c 10240 -b 512 -ub 512 --fit-target 128,1024",
    ),
];

fn model(root: &Path, file: &str, quant: &str) -> Result<ModelDescription> {
    let path = root.join("fixtures/layouts").join(file);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let spec = LayoutSpec::parse(&text).with_context(|| format!("parsing {}", path.display()))?;
    let layout = spec.build(quant, &BuildOptions::default())?;
    let gguf = layout.to_model(&ReadOptions::default())?;
    Ok(ModelDescription::from_gguf(&gguf)?)
}

/// Prints the rows.
pub fn run(root: &Path, args: &Args) -> Result<ExitCode> {
    let mut hw = Hardware::from_free_at_load(
        &[Bytes::from_mib(23_557), Bytes::from_mib(14_477)],
        CUDA_CONTEXT_OVERHEAD,
    )?;
    for g in &mut hw.gpus {
        g.bandwidth_gbs = Some(4_800.0);
    }
    hw.host_bandwidth_gbs = Some(67.0);
    hw.host_ram = Some(Bytes::from_gib(256));
    let mut out = String::new();
    for (i, (key, file, quant, flags)) in CONFIGS.iter().enumerate() {
        let m = model(root, file, quant)?;
        let words: Vec<&str> = flags.split(' ').collect();
        let settings = ServerSettings::from_args(&words)?;
        let set = plan(&m, &settings, &hw, &PlanOptions::default())?;
        for (tag, p) in [("a", &set.aggressive), ("m", &set.moderate)] {
            let id = format!("{key}-{}{:02}{tag}", args.prefix, i + 1);
            let argv: Vec<String> = p.args.iter().filter(|a| !a.contains(' ')).cloned().collect();
            if argv.len() != p.args.len() {
                bail!("{id}: an argument holds a space, which capture.py cannot split");
            }
            let _ = writeln!(
                out,
                "# {id}: predicted {:.1} tok/s decode, {} graph splits",
                p.speed.decode_tps, p.speed.splits.prompt
            );
            let _ = writeln!(out, "[[rows]]\nid = \"{id}\"\nkind = \"load\"\nmodel = \"{key}\"");
            let joined = argv.join(" ");
            if joined.contains('\\') {
                let _ = writeln!(out, "args = '{joined}'");
            } else {
                let _ = writeln!(out, "args = \"{joined}\"");
            }
            let _ = writeln!(
                out,
                "requests = [{{ words = 3000, n_predict = 32 }}, {{ words = 220, n_predict = 256 }}, {{ words = 220, n_predict = 256 }}, {{ words = 220, n_predict = 256 }}]"
            );
        }
        if let Some(fit) = &set.fit {
            let _ = writeln!(
                out,
                "# {key}-{}{:02}: llama.cpp --fit (emulated) would choose {}; predicted {:.1} tok/s",
                args.prefix,
                i + 1,
                fit.fit_args.join(" "),
                fit.speed.decode_tps
            );
        }
    }
    #[allow(clippy::print_stdout)] // the rows are this task's output
    {
        print!("{out}");
    }
    Ok(ExitCode::SUCCESS)
}
