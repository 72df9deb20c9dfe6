#![allow(clippy::print_stdout, clippy::print_stderr, missing_docs)]
use optimizer_core::gguf::{ReadOptions, open_model};
use optimizer_core::memory::{GpuAtLoad, Predictor};
use optimizer_core::model::ModelDescription;
use optimizer_core::settings::ServerSettings;
use optimizer_core::units::Bytes;
use std::path::Path;
use std::time::Instant;
fn main() {
    println!("tensor {} bytes", sizes());
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model =
        ModelDescription::from_gguf(&open_model(Path::new(&args[0]), &ReadOptions::default()).unwrap())
            .unwrap();
    let n: usize = args[1].parse().unwrap();
    let profile = "-fa on -ctk q8_0 -ctv q8_0 -np 1 -c 262144 -b 2048 -ub 512 -ngl 99 -ot blk\\.([0-9]|1[0-6])\\.=CUDA0,blk\\.(1[7-9]|2[0-4])\\.=CUDA1,exps=CPU";
    let hand = ServerSettings::from_args(&profile.split(' ').collect::<Vec<_>>()).unwrap();
    let gpus = vec![
        GpuAtLoad::new("CUDA0", Bytes::from_mib(23_000)),
        GpuAtLoad::new("CUDA1", Bytes::from_mib(12_000)),
    ];
    let mut warm = Predictor::new(&model);
    let _ = warm.predict(&hand, &gpus);
    let splits = [
        "blk\\.([0-9]|1[0-6])\\.=CUDA0,blk\\.(1[7-9]|2[0-4])\\.=CUDA1,exps=CPU",
        "blk\\.([0-9]|1[0-5])\\.=CUDA0,blk\\.(1[6-9]|2[0-4])\\.=CUDA1,exps=CPU",
        "blk\\.([0-9]|1[0-7])\\.=CUDA0,blk\\.(1[8-9]|2[0-6])\\.=CUDA1,exps=CPU",
        "blk\\.(2[0-9]|3[0-9])\\.ffn_.*_exps=CPU",
    ];
    let varied: Vec<ServerSettings> = splits
        .iter()
        .map(|ot| {
            let p = format!("-fa on -ctk q8_0 -ctv q8_0 -np 1 -c 262144 -b 2048 -ub 512 -ngl 99 -ot {ot}");
            ServerSettings::from_args(&p.split(' ').collect::<Vec<_>>()).unwrap()
        })
        .collect();
    for v in &varied {
        let _ = warm.predict(v, &gpus).unwrap();
    }
    let mut times = vec![];
    for i in 0..n {
        let t = Instant::now();
        let r = warm.predict(&varied[i % varied.len()], &gpus).unwrap();
        times.push(t.elapsed());
        std::hint::black_box(r);
    }
    times.sort();
    println!("warm, placements varied: min {:?} median {:?}", times[0], times[n / 2]);
    if std::env::var_os("WARM_ONLY").is_some() {
        return;
    }
    let mut times = vec![];
    for _ in 0..n {
        let t = Instant::now();
        let r = Predictor::new(&model).predict(&hand, &gpus).unwrap();
        times.push(t.elapsed());
        std::hint::black_box(r);
    }
    times.sort();
    println!("fresh predictor: min {:?} median {:?}", times[0], times[n / 2]);
    let mut times = vec![];
    for _ in 0..n {
        let t = Instant::now();
        let r = warm.predict(&hand, &gpus).unwrap();
        times.push(t.elapsed());
        std::hint::black_box(r);
    }
    times.sort();
    println!("min {:?} median {:?}", times[0], times[n / 2]);
    if std::env::var_os("STAGES").is_none() {
        return;
    }
    use optimizer_core::memory::{Runner, sim};
    let pred = warm.predict(&hand, &gpus).unwrap();
    let (ctx, pl) = (&pred.context, &pred.placement);
    let cfg = sim::sched_config(&model, &hand, ctx, pl, Runner::LlamaServer);
    let bufs = vec![
        sim::alloc::BufferSpec::cuda(0, 900),
        sim::alloc::BufferSpec::cuda(1, 900),
        sim::alloc::BufferSpec::host("CUDA_Host"),
    ];
    for ub in sim::reservations(ctx, Runner::LlamaServer).into_iter().take(2) {
        let mut tb = vec![];
        let mut ts = vec![];
        let mut ta = vec![];
        let mut nn = 0;
        for _ in 0..n {
            let t = Instant::now();
            let mut g = sim::build_graph(&model, &hand, ctx, pl, ub).unwrap();
            tb.push(t.elapsed());
            let gf = std::mem::take(&mut g.gf);
            let t = Instant::now();
            let s = sim::sched::schedule(&mut g.ctx, &gf, &cfg).unwrap();
            ts.push(t.elapsed());
            let t = Instant::now();
            let r = sim::alloc::reserve(&g.ctx, &s.graph, &s.node_backend, &s.leaf_backend, &bufs).unwrap();
            ta.push(t.elapsed());
            nn = gf.nodes.len();
            std::hint::black_box(r);
        }
        tb.sort();
        ts.sort();
        ta.sort();
        println!("{ub:?} nodes {nn}: build {:?} sched {:?} alloc {:?}", tb[0], ts[0], ta[0]);
    }
}
#[allow(dead_code)]
fn stages() {}
#[allow(dead_code)]
fn sizes() -> usize {
    std::mem::size_of::<optimizer_core::memory::sim::ggml::Tensor>()
}
