//! The simulation's graph cache (`memory::sim::GraphCache`) against fresh simulations: one predictor
//! that has built a context's graphs schedules and allocates them again, in place, for other placements (the
//! planner's loop). For every ground-truth model, placements that move layers, experts, the KV cache
//! and the split between GPUs give the same compute buffers, to the byte, through a warm predictor
//! as through a fresh one.

#[allow(dead_code)] // the ground-truth readers of support/ serve the accuracy tests
mod support;

use optimizer_core::memory::{GpuAtLoad, Location, Predictor};
use optimizer_core::settings::ServerSettings;
use optimizer_core::units::Bytes;
use support::models;

/// Placements of one context: layers over one or two GPUs, experts and whole layers on the CPU,
/// the KV cache on the host, another split, one GPU only.
const PLACEMENTS: [&str; 8] = [
    "-ngl 99",
    "-ngl 99 -ts 3,1",
    "-ngl 12",
    "-ngl 99 -ot blk\\.(1|2|3)\\.=CUDA1",
    "-ngl 99 --n-cpu-moe 6",
    "-ngl 99 -ot exps=CPU",
    "-ngl 99 -nkvo",
    "-ngl 99 -sm none -mg 1",
];

fn compute(p: &optimizer_core::memory::MemoryPrediction) -> Vec<(Location, Option<Bytes>)> {
    p.devices.iter().map(|d| (d.location, d.compute.bytes())).collect()
}

#[test]
fn reused_graphs_give_the_fresh_simulations_bytes() {
    let gpus =
        [GpuAtLoad::new("CUDA0", Bytes::from_mib(24_080)), GpuAtLoad::new("CUDA1", Bytes::from_mib(15_000))];
    let mut reused = 0;
    for (key, _, _) in models::MODELS {
        let model = models::model(key);
        let mut warm = Predictor::new(model);
        for (ub, base) in [(512, "-c 16384 -fa on -np 1"), (2048, "-c 8192 -fa off -np 2 -ctk q8_0")] {
            for placement in PLACEMENTS {
                let args = format!("{base} -ub {ub} {placement}");
                let words: Vec<&str> = args.split(' ').collect();
                let settings = ServerSettings::from_args(&words).unwrap_or_else(|e| panic!("{args}: {e}"));
                let fresh = Predictor::new(model).predict(&settings, &gpus);
                let cached = warm.predict(&settings, &gpus);
                match (fresh, cached) {
                    (Ok(f), Ok(c)) => {
                        assert_eq!(compute(&f), compute(&c), "{key} {args}");
                        assert!(
                            f.devices.iter().all(|d| d.compute.is_simulated()),
                            "{key} {args}: not simulated"
                        );
                    }
                    (Err(f), Err(c)) => assert_eq!(f.to_string(), c.to_string(), "{key} {args}"),
                    (f, c) => panic!("{key} {args}: fresh {:?}, cached {:?}", f.is_ok(), c.is_ok()),
                }
            }
        }
        reused += warm.reused_graphs();
    }
    // most placements keep the shape of the first one: -nkvo and -sm none change it
    assert!(reused >= 6 * 2 * 5, "only {reused} graphs reused");
}

/// Predictions made at the same time from several threads (the prompt and generation graphs of each
/// share one kept worker thread) give the bytes of the same predictions made one at a time.
#[test]
fn predictions_from_several_threads_at_once_give_the_same_bytes() {
    let gpus =
        [GpuAtLoad::new("CUDA0", Bytes::from_mib(24_080)), GpuAtLoad::new("CUDA1", Bytes::from_mib(15_000))];
    let model = models::model("q5");
    let settings: Vec<ServerSettings> = PLACEMENTS
        .iter()
        .map(|placement| {
            let args = format!("-c 16384 -fa on -np 1 -ub 512 {placement}");
            let words: Vec<&str> = args.split(' ').collect();
            ServerSettings::from_args(&words).unwrap_or_else(|e| panic!("{args}: {e}"))
        })
        .collect();
    let alone: Vec<_> = settings
        .iter()
        .map(|s| Predictor::new(model).predict(s, &gpus).map(|p| compute(&p)).map_err(|e| e.to_string()))
        .collect();
    let together: Vec<Vec<_>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let mut warm = Predictor::new(model);
                    settings
                        .iter()
                        .map(|s| warm.predict(s, &gpus).map(|p| compute(&p)).map_err(|e| e.to_string()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for got in together {
        assert_eq!(got, alone);
    }
}
