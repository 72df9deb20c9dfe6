//! Times the planner for docs/benchmarks.md, for the committed Qwen3-Coder-Next UD-Q5_K_XL header
//! fixture on the user's two GPUs: one memory prediction of the user's profile flags (a warm
//! `memory::Predictor`, and a fresh one), both plans with the `--fit` emulation (and its two
//! `--fit-target` form checks), the same with `--ctx max` (the context search), and what the plan
//! command computes (both plans, the fit emulation and the aggressive plan at the two smaller
//! contexts of the user's ladder).
//!
//! ```console
//! $ cargo run --release -p optimizer-core --example plan_bench -- fixtures/models/Qwen3-Coder-Next/UD-Q5_K_XL/Qwen3-Coder-Next-UD-Q5_K_XL-00001-of-00003.gguf 20
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use optimizer_core::gguf::{ReadOptions, open_model};
use optimizer_core::memory::Predictor;
use optimizer_core::model::ModelDescription;
use optimizer_core::plan::{
    CUDA_CONTEXT_OVERHEAD, ContextRequest, Hardware, PlanOptions, context_steps_below, plan,
};
use optimizer_core::settings::ServerSettings;
use optimizer_core::units::Bytes;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(path), Some(runs)) = (args.first(), args.get(1).and_then(|r| r.parse::<usize>().ok())) else {
        eprintln!("usage: plan_bench MODEL.gguf RUNS");
        return ExitCode::from(2);
    };
    let model = match open_model(Path::new(path), &ReadOptions::default()) {
        Ok(gguf) => match ModelDescription::from_gguf(&gguf) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The user's pair as llama.cpp sees it: RTX 4090 (23,670 MiB free at load) and RTX 5070 Ti with
    // the desktop on it (12,760 MiB), DDR4 at 40 GB/s (BRIEF.md).
    let Ok(mut hw) = Hardware::from_free_at_load(
        &[Bytes::from_mib(23_670), Bytes::from_mib(12_760)],
        CUDA_CONTEXT_OVERHEAD,
    ) else {
        return ExitCode::FAILURE;
    };
    hw.gpus[0].bandwidth_gbs = Some(1008.0);
    hw.gpus[1].bandwidth_gbs = Some(896.0);
    hw.host_bandwidth_gbs = Some(40.0);
    hw.host_ram = Some(Bytes::from_gib(64));
    let words = "-fa on -ctk q8_0 -ctv q8_0 -np 1 -c 262144 -b 2048 -ub 512 --fit-target 128,1024";
    let Ok(settings) = ServerSettings::from_args(&words.split(' ').collect::<Vec<_>>()) else {
        return ExitCode::FAILURE;
    };
    // One configuration: the user's hand split of the profile.
    let profile =
        format!("{words} -ngl 99 -ot blk\\.([0-9]|1[0-6])\\.=CUDA0,blk\\.(1[7-9]|2[0-4])\\.=CUDA1,exps=CPU");
    let Ok(hand) = ServerSettings::from_args(&profile.split(' ').collect::<Vec<_>>()) else {
        return ExitCode::FAILURE;
    };
    let gpus = hw.gpus_at_load();
    let mut warm = Predictor::new(&model);
    let _ = warm.predict(&hand, &gpus);
    // The planner's loop: the same context, the layers and experts moved (four hand splits in turn,
    // each predicted once before timing, so the predictor has built the context's graphs).
    let mut moved = Vec::new();
    for ot in [
        "blk\\.([0-9]|1[0-5])\\.=CUDA0,blk\\.(1[6-9]|2[0-4])\\.=CUDA1,exps=CPU",
        "blk\\.([0-9]|1[0-7])\\.=CUDA0,blk\\.(1[8-9]|2[0-6])\\.=CUDA1,exps=CPU",
        "blk\\.(2[0-9]|3[0-9])\\.ffn_.*_exps=CPU",
        "blk\\.([0-9]|1[0-6])\\.=CUDA0,blk\\.(1[7-9]|2[0-4])\\.=CUDA1,exps=CPU",
    ] {
        let words = format!("{words} -ngl 99 -ot {ot}");
        let Ok(s) = ServerSettings::from_args(&words.split(' ').collect::<Vec<_>>()) else {
            return ExitCode::FAILURE;
        };
        let _ = warm.predict(&s, &gpus);
        moved.push(s);
    }
    for (label, how) in [
        ("predict (warm Predictor, the same configuration)", 0),
        ("predict (warm Predictor, another placement each run)", 1),
        ("predict (fresh Predictor)", 2),
    ] {
        let mut times = Vec::with_capacity(runs);
        for run in 0..runs.max(1) {
            let t = Instant::now();
            let r = match how {
                0 => warm.predict(&hand, &gpus),
                1 => warm.predict(&moved[run % moved.len()], &gpus),
                _ => Predictor::new(&model).predict(&hand, &gpus),
            };
            times.push(t.elapsed());
            if let Err(e) = r {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
        times.sort();
        println!(
            "{label}: min {:.3} ms, median {:.3} ms ({} runs)",
            ms(times[0]),
            ms(times[times.len() / 2]),
            times.len()
        );
    }
    // What the plan command computes: both plans and fit, then the smaller contexts.
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let opts = PlanOptions::default();
        let r = plan(&model, &settings, &hw, &opts)
            .and_then(|set| context_steps_below(&model, &settings, &hw, &opts, set.n_ctx, 2).map(|_| set));
        times.push(t.elapsed());
        if let Err(e) = r {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    times.sort();
    println!(
        "plan command (plans, fit, context steps): min {:.1} ms, median {:.1} ms ({} runs)",
        ms(times[0]),
        ms(times[times.len() / 2]),
        times.len()
    );
    for context in [ContextRequest::AsGiven, ContextRequest::Max] {
        let opts = PlanOptions { context, ..PlanOptions::default() };
        let mut times: Vec<Duration> = Vec::with_capacity(runs);
        let mut last = None;
        for _ in 0..runs.max(1) {
            let t = Instant::now();
            let set = plan(&model, &settings, &hw, &opts);
            times.push(t.elapsed());
            last = Some(set);
        }
        times.sort();
        match last {
            Some(Ok(set)) => println!(
                "{context:?}: min {:.1} ms, median {:.1} ms ({} runs); n_ctx {}, aggressive {:.1} tok/s: {}",
                ms(times[0]),
                ms(times[times.len() / 2]),
                times.len(),
                set.n_ctx,
                set.aggressive.speed.decode_tps,
                set.aggressive.placement_args.join(" ")
            ),
            Some(Err(e)) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
            None => return ExitCode::FAILURE,
        }
    }
    ExitCode::SUCCESS
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
