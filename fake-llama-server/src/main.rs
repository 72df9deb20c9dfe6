//! A stand-in for llama-server (build 11434) in splitplan's end-to-end tests: it takes
//! llama-server's flags (through splitplan's own settings parser), "allocates" its buffers against a
//! hidden per-GPU budget with a deliberately rough memory model, prints llama.cpp's log lines in
//! their exact formats (including each out-of-memory signature), serves `/health` (503 while
//! loading, then 200) and `/completion` with `timings`, and prints the memory breakdown when
//! stopped with SIGINT. Dev-only: never shipped.
//!
//! Knobs (environment):
//! - `FAKE_LLAMA_FREE_MIB` (`24080,15000`): free memory per GPU at load, the hidden budget.
//! - `FAKE_LLAMA_LAYERS` (48), `FAKE_LLAMA_DENSE_MIB` (60 per layer), `FAKE_LLAMA_EXPERT_MIB`
//!   (1000 per layer, in three tensors: up, gate, down), `FAKE_LLAMA_KV_MIB_PER_1K` (12 per 1,024
//!   context tokens, all layers), `FAKE_LLAMA_COMPUTE_MIB` (800 per GPU at `-ub 512`),
//!   `FAKE_LLAMA_POOL_MIB` (200: what the CUDA pool grows by at the first request).
//! - `FAKE_LLAMA_FACTOR` (1.0) and `FAKE_LLAMA_NOISE_MIB` (0): the model's error, a factor on every
//!   buffer and a deterministic ± noise per GPU.
//! - `FAKE_LLAMA_MODE` (`normal`): `crash` (aborts while loading, no OOM line), `hang` (never
//!   ready, ignores SIGINT), `port-taken` (cannot bind its port), `oom-at-request` (CUDA out of
//!   memory at the first request), `bad-arg` (refuses its arguments); `MODE@1,3` applies it to
//!   those launches only (counted in `FAKE_LLAMA_COUNTER`, a file).
//! - `FAKE_LLAMA_PIDFILE`: a file each launch appends its pid to.
//! - `FAKE_LLAMA_CONTEXT_MIB` (500): what each card holds beyond the budget (its total in the
//!   breakdown is the budget plus this).
//! - `FAKE_LLAMA_BUILD` (11434), `FAKE_LLAMA_LOAD_MS` (200), `FAKE_LLAMA_PP_TPS` (50000),
//!   `FAKE_LLAMA_TG_TPS` (100): the build it claims, how long loading takes, its speeds.

// A rough memory model in floating-point MiB: the casts to whole numbers for printing are intended.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use optimizer_core::settings::{CtxSize, GpuLayers, OverrideTarget, ServerSettings};
use regex::Regex;

const MIB: f64 = 1024.0 * 1024.0;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// llama.cpp's line prefix (common/log.cpp:124-142): `M.SS.mmm.uuu L `.
struct Log {
    start: Instant,
}

impl Log {
    fn line(&self, level: char, text: &str) {
        let us = self.start.elapsed().as_micros();
        let (m, s, ms, u) = (us / 60_000_000, us / 1_000_000 % 60, us / 1000 % 1000, us % 1000);
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{m}.{s:02}.{ms:03}.{u:03} {level} {text}");
    }
}

/// Where each tensor kind of a layer went: `None` is the CPU.
struct Layout {
    gpus: usize,
    model: Vec<f64>,
    host_model: f64,
    kv: Vec<f64>,
    compute: Vec<f64>,
    layers_on: Vec<usize>,
    experts_on_cpu: bool,
}

fn layout(s: &ServerSettings, free: &[f64]) -> Layout {
    let gpus = free.len();
    let n_layer: usize = env_or("FAKE_LLAMA_LAYERS", 48);
    let dense = env_or("FAKE_LLAMA_DENSE_MIB", 60.0) * MIB;
    let experts = env_or("FAKE_LLAMA_EXPERT_MIB", 1000.0) * MIB;
    let slots = n_layer + 1;
    let ngl = match s.n_gpu_layers {
        GpuLayers::Auto | GpuLayers::All => slots,
        GpuLayers::Count(n) => (n as usize).min(slots),
    };
    // the GPU layers are the last `ngl` slots, split by -ts (or by free memory, llama-model.cpp)
    let weights: Vec<f64> = if s.tensor_split.iter().any(|&x| x > 0.0) {
        (0..gpus).map(|i| f64::from(s.tensor_split.get(i).copied().unwrap_or(0.0))).collect()
    } else {
        free.to_vec()
    };
    let total: f64 = weights.iter().sum::<f64>().max(1e-9);
    let mut cum = Vec::new();
    let mut acc = 0.0;
    for w in &weights {
        acc += w / total;
        cum.push(acc);
    }
    let device_of = |slot: usize| -> Option<usize> {
        let first_gpu = slots - ngl;
        if slot < first_gpu {
            return None;
        }
        let frac = (slot - first_gpu) as f64 / ngl.max(1) as f64;
        Some(cum.iter().position(|&c| frac < c - 1e-9).unwrap_or(gpus - 1))
    };
    let overrides: Vec<(Regex, Option<usize>)> = s
        .overrides
        .iter()
        .filter_map(|o| {
            let target = match &o.target {
                OverrideTarget::Cpu => None,
                OverrideTarget::Device(d) => d.strip_prefix("CUDA").and_then(|n| n.parse().ok()),
            };
            Regex::new(&o.pattern).ok().map(|r| (r, target))
        })
        .collect();
    let place = |name: &str, default: Option<usize>| {
        overrides.iter().find(|(r, _)| r.is_match(name)).map_or(default, |(_, t)| *t)
    };
    let mut l = Layout {
        gpus,
        model: vec![0.0; gpus],
        host_model: 0.0,
        kv: vec![0.0; gpus],
        compute: vec![0.0; gpus],
        layers_on: vec![0; gpus],
        experts_on_cpu: false,
    };
    let add = |dev: Option<usize>, bytes: f64, l: &mut Layout| match dev {
        Some(d) if d < gpus => l.model[d] += bytes,
        _ => l.host_model += bytes,
    };
    for i in 0..n_layer {
        let dev = device_of(i);
        add(place(&format!("blk.{i}.attn_q.weight"), dev), dense, &mut l);
        if let Some(d) = dev {
            l.layers_on[d] += 1;
        }
        for part in ["up", "gate", "down"] {
            let d = place(&format!("blk.{i}.ffn_{part}_exps.weight"), dev);
            if d.is_none() {
                l.experts_on_cpu = true;
            }
            add(d, experts / 3.0, &mut l);
        }
    }
    add(device_of(n_layer), 300.0 * MIB, &mut l);
    let ctx = match s.ctx_size {
        CtxSize::Tokens(n) if n > 0 => f64::from(n),
        _ => 262_144.0,
    };
    let kv_total = env_or("FAKE_LLAMA_KV_MIB_PER_1K", 12.0) * MIB * ctx / 1024.0;
    let compute = env_or("FAKE_LLAMA_COMPUTE_MIB", 800.0) * MIB * f64::from(s.ubatch_size) / 512.0;
    for d in 0..gpus {
        l.kv[d] = kv_total * l.layers_on[d] as f64 / n_layer as f64;
        l.compute[d] = if l.layers_on[d] > 0 || l.model[d] > 0.0 { compute } else { 0.0 };
    }
    // the deliberate error: a factor on everything and a fixed noise per GPU
    let factor = env_or("FAKE_LLAMA_FACTOR", 1.0);
    let noise = env_or("FAKE_LLAMA_NOISE_MIB", 0.0) * MIB;
    for d in 0..gpus {
        let sign = if d % 2 == 0 { 1.0 } else { -1.0 };
        l.model[d] *= factor;
        l.kv[d] *= factor;
        l.compute[d] = (l.compute[d] * factor + sign * noise).max(0.0);
    }
    l
}

/// The mode for this launch: `MODE` or `MODE@1,3` (only those launch numbers).
fn mode(launch: u64) -> String {
    let raw = std::env::var("FAKE_LLAMA_MODE").unwrap_or_else(|_| "normal".into());
    match raw.split_once('@') {
        Some((m, which)) if which.split(',').any(|n| n.trim().parse() == Ok(launch)) => m.to_string(),
        Some(_) => "normal".to_string(),
        None => raw,
    }
}

fn launch_number() -> u64 {
    let Ok(path) = std::env::var("FAKE_LLAMA_COUNTER") else { return 1 };
    let n = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(0) + 1;
    let _ = std::fs::write(&path, n.to_string());
    n
}

struct State {
    ready: bool,
    used: Vec<f64>,
    budget: Vec<f64>,
    pool_grown: bool,
    oom_at_request: bool,
    n_ctx: u64,
    tasks: u64,
}

fn main() {
    let log = Arc::new(Log { start: Instant::now() });
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--version") {
        let build: u32 = env_or("FAKE_LLAMA_BUILD", 11434);
        eprintln!(
            "version: 0.6.0-dev (build {build}, commit fake-{build})\nbuilt with rustc for Linux x86_64"
        );
        return;
    }
    if let Ok(path) = std::env::var("FAKE_LLAMA_PIDFILE")
        && let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path)
    {
        let _ = writeln!(f, "{}", std::process::id());
    }
    let launch = launch_number();
    let mode = mode(launch);
    let stop = Arc::new(AtomicBool::new(false));
    if mode == "hang" {
        // a hung server ignores SIGINT: only SIGKILL ends it
        let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::new(AtomicBool::new(false)));
    } else {
        let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop));
        let _ = signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop));
    }

    log.line('I', "srv  llama_server: initializing ...");
    let build: u32 = env_or("FAKE_LLAMA_BUILD", 11434);
    log.line('I', &format!(
        "cmn  common_param: common_params_print_info: build {build} (fake-{build}) with rustc for Linux x86_64"
    ));
    if mode == "bad-arg" {
        eprintln!("error: invalid argument: --fake-refused");
        std::process::exit(1);
    }
    let settings = match ServerSettings::from_args(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let port = arg_value(&args, "--port").and_then(|p| p.parse::<u16>().ok()).unwrap_or(8080);
    let host = arg_value(&args, "--host").unwrap_or_else(|| "127.0.0.1".into());
    let listener = if mode == "port-taken" { None } else { TcpListener::bind((host.as_str(), port)).ok() };
    let Some(listener) = listener else {
        log.line(
            'E',
            &format!("srv    start: couldn't bind HTTP server socket, hostname: {host}, port: {port}"),
        );
        log.line('E', "srv  llama_server: exiting due to HTTP server error");
        std::process::exit(1);
    };

    let budget: Vec<f64> = std::env::var("FAKE_LLAMA_FREE_MIB")
        .unwrap_or_else(|_| "24080,15000".into())
        .split(',')
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .map(|m| m * MIB)
        .collect();
    let ctx = match settings.ctx_size {
        CtxSize::Tokens(n) if n > 0 => u64::from(n),
        _ => 262_144,
    };
    let state = Arc::new(Mutex::new(State {
        ready: false,
        used: vec![0.0; budget.len()],
        budget: budget.clone(),
        pool_grown: false,
        oom_at_request: mode == "oom-at-request",
        // a unified KV cache lets one sequence use the whole context (llama-context.cpp)
        n_ctx: if settings.effective_kv_unified() {
            ctx
        } else {
            ctx / u64::from(settings.effective_parallel().max(1))
        },
        tasks: 0,
    }));
    {
        let state = Arc::clone(&state);
        let log = Arc::clone(&log);
        std::thread::spawn(move || serve(&listener, &state, &log));
    }

    let model = arg_value(&args, "-m").or_else(|| arg_value(&args, "--model")).unwrap_or_default();
    log.line('I', &format!("srv    load_model: loading model '{model}'"));
    for (i, b) in budget.iter().enumerate() {
        log.line('I', &format!(
            "llama_prepare_model_devices: using device CUDA{i} (Fake GPU {i}) (0000:0{}:00.0) - {} MiB free",
            i + 1,
            (b / MIB) as u64
        ));
    }
    std::thread::sleep(Duration::from_millis(env_or("FAKE_LLAMA_LOAD_MS", 200)));
    if mode == "crash" {
        log.line('I', "load_tensors: loading model tensors, this can take a while... (load_mode = mmap)");
        std::process::abort();
    }
    if mode == "hang" {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }

    let l = layout(&settings, &budget);
    let fail_alloc = |d: usize, bytes: f64, log: &Log| {
        log.line('E', &format!(
            "ggml_backend_cuda_buffer_type_alloc_buffer: allocating {:.2} MiB on device {d}: cudaMalloc failed: out of memory",
            bytes / MIB
        ));
        log.line(
            'E',
            &format!(
                "ggml_backend_buft_alloc_buffer_n_default: failed to allocate CUDA{d} buffer of size {}",
                bytes as u64
            ),
        );
    };
    let mut used = vec![0.0; l.gpus];
    for d in 0..l.gpus {
        if used[d] + l.model[d] > budget[d] {
            fail_alloc(d, l.model[d], &log);
            log.line(
                'E',
                &format!("llama_model_load: error loading model: unable to allocate CUDA{d} buffer"),
            );
            log.line('E', "llama_model_load_from_file_impl: failed to load model");
            log.line('E', &format!("srv    load_model: failed to load model, '{model}'"));
            log.line('I', "srv    operator(): operator(): cleaning up before exit...");
            log.line('E', "srv  llama_server: exiting due to model loading error");
            std::process::exit(1);
        }
        used[d] += l.model[d];
    }
    log.line(
        'I',
        &format!("load_tensors: {:>12} model buffer size = {:8.2} MiB", "CPU_Mapped", l.host_model / MIB),
    );
    for d in 0..l.gpus {
        if l.model[d] > 0.0 {
            log.line(
                'I',
                &format!(
                    "load_tensors: {:>12} model buffer size = {:8.2} MiB",
                    format!("CUDA{d}"),
                    l.model[d] / MIB
                ),
            );
        }
    }
    log.line(
        'I',
        &format!("llama_context: n_ctx_seq             = {}", state.lock().map_or(ctx, |s| s.n_ctx)),
    );
    log.line('I', &format!("llama_context: {:>10}  output buffer size = {:8.2} MiB", "CUDA_Host", 0.58));
    for d in 0..l.gpus {
        if l.kv[d] <= 0.0 {
            continue;
        }
        if used[d] + l.kv[d] > budget[d] {
            fail_alloc(d, l.kv[d], &log);
            log.line('E', "llama_init_from_model: failed to initialize the context: failed to allocate buffer for kv cache");
            log.line('E', &format!("cmn  common_init_: failed to create context with model '{model}'"));
            log.line('E', &format!("srv    load_model: failed to create_context with model '{model}'"));
            log.line('E', "srv  llama_server: exiting due to model loading error");
            std::process::exit(1);
        }
        used[d] += l.kv[d];
        log.line(
            'I',
            &format!("llama_kv_cache: {:>10} KV buffer size = {:8.2} MiB", format!("CUDA{d}"), l.kv[d] / MIB),
        );
    }
    for d in 0..l.gpus {
        if l.compute[d] > 0.0 && used[d] + l.compute[d] > budget[d] {
            fail_alloc(d, l.compute[d], &log);
            log.line(
                'E',
                &format!(
                    "ggml_gallocr_reserve_n_impl: failed to allocate CUDA{d} buffer of size {}",
                    l.compute[d] as u64
                ),
            );
            log.line('E', "graph_reserve: failed to allocate compute buffers");
            log.line('E', "llama_init_from_model: failed to initialize the context: failed to allocate compute pp buffers");
            log.line('E', "srv  llama_server: exiting due to model loading error");
            std::process::exit(1);
        }
        used[d] += l.compute[d];
    }
    for d in 0..l.gpus {
        if l.compute[d] > 0.0 {
            log.line(
                'I',
                &format!(
                    "sched_reserve: {:>10} compute buffer size = {:8.2} MiB",
                    format!("CUDA{d}"),
                    l.compute[d] / MIB
                ),
            );
        }
    }
    let splits = 1 + 2 * l.gpus as u32 + if l.experts_on_cpu { 60 } else { 0 };
    log.line('I', &format!(
        "sched_reserve: graph (pp bs={}, tg bs=1): nodes = 5288 / 5288, splits = {} / {}, input objects = 4 / 4, input tensors = 12 / 12",
        settings.ubatch_size,
        splits + 40,
        splits
    ));
    log.line('I', "sched_reserve: reserve took 12.30 ms, sched copies = 1");
    if let Ok(mut s) = state.lock() {
        s.used = used;
        s.ready = true;
    }
    log.line('I', "srv  llama_server: model loaded");
    log.line('I', &format!("srv  llama_server: listening on http://{host}:{port}"));

    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
    }
    log.line('I', "srv    operator(): operator(): cleaning up before exit...");
    let s = state.lock().map(|s| (s.used.clone(), s.budget.clone())).unwrap_or_default();
    log.line('I', "common_memory_breakdown_print: | memory breakdown [MiB] |  total   free     self   model   context   compute    unaccounted |");
    for d in 0..l.gpus {
        let (used, budget) = (s.0[d] / MIB, s.1[d] / MIB);
        // the card: the budget plus what llama.cpp's own CUDA context took before it logged it
        let total = budget + env_or("FAKE_LLAMA_CONTEXT_MIB", 500.0);
        let free = (budget - used).max(0.0) as i64;
        let selfm = ((l.model[d] + l.kv[d] + l.compute[d]) / MIB) as i64;
        let unacc = total as i64 - free - selfm;
        log.line('I', &format!(
            "common_memory_breakdown_print: |   - CUDA{d} (Fake)       | {} = {free} + ({selfm} = {} + {} + {}) + {unacc} |",
            total as i64,
            (l.model[d] / MIB) as i64,
            (l.kv[d] / MIB) as i64,
            (l.compute[d] / MIB) as i64
        ));
    }
    log.line(
        'I',
        &format!(
            "common_memory_breakdown_print: |   - Host               |  {} = {} + 0 + 272 |",
            (l.host_model / MIB) as i64 + 272,
            (l.host_model / MIB) as i64
        ),
    );
}

fn arg_value(args: &[String], flag: &str) -> Option<String> {
    args.iter().rposition(|a| a == flag).and_then(|i| args.get(i + 1)).cloned()
}

fn serve(listener: &TcpListener, state: &Arc<Mutex<State>>, log: &Arc<Log>) {
    for stream in listener.incoming().flatten() {
        let state = Arc::clone(state);
        let log = Arc::clone(log);
        std::thread::spawn(move || {
            let _ = handle(stream, &state, &log);
        });
    }
}

fn handle(mut stream: TcpStream, state: &Mutex<State>, log: &Log) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let ready = state.lock().is_ok_and(|s| s.ready);
    let (status, json) = if !ready {
        (503, r#"{"error":{"message":"Loading model","type":"unavailable_error","code":503}}"#.to_string())
    } else if path == "/health" {
        (200, r#"{"status":"ok"}"#.to_string())
    } else if path == "/completion" {
        completion(&body, state, log)
    } else {
        (404, r#"{"error":{"message":"File Not Found","type":"not_found_error","code":404}}"#.to_string())
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        503 => "Service Unavailable",
        _ => "Not Found",
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    )?;
    stream.flush()
}

fn completion(body: &[u8], state: &Mutex<State>, log: &Log) -> (u16, String) {
    let req: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let n_prompt = match &req["prompt"] {
        serde_json::Value::Array(a) => a.len() as u64,
        serde_json::Value::String(s) => s.split_whitespace().count() as u64,
        _ => 0,
    };
    let n_predict = req["n_predict"].as_u64().unwrap_or(16);
    let (task, n_ctx, runtime_oom) = {
        let Ok(mut s) = state.lock() else { return (500, "{}".into()) };
        let task = s.tasks;
        s.tasks += 1;
        let mut oom = None;
        if !s.pool_grown {
            s.pool_grown = true;
            let pool = env_or("FAKE_LLAMA_POOL_MIB", 200.0) * MIB;
            for d in 0..s.used.len() {
                s.used[d] += pool;
                if s.used[d] > s.budget[d] || (s.oom_at_request && d == s.used.len() - 1) {
                    oom = Some(d);
                }
            }
        }
        (task, s.n_ctx, oom)
    };
    if n_prompt + n_predict > n_ctx {
        return (
            400,
            format!(
                r#"{{"error":{{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error","n_prompt_tokens":{n_prompt},"n_ctx":{n_ctx}}}}}"#
            ),
        );
    }
    if let Some(d) = runtime_oom {
        log.line('E', "CUDA error: out of memory");
        log.line('E', &format!(
            "  current device: {d}, in function ggml_cuda_pool_vmm::alloc at /src/ggml/src/ggml-cuda/ggml-cuda.cu:583"
        ));
        log.line('E', "  cuMemCreate(&handle, reserve_size, &prop, 0)");
        eprintln!("/src/ggml/src/ggml-cuda/ggml-cuda.cu:109: CUDA error");
        std::process::abort();
    }
    let pp_tps = env_or("FAKE_LLAMA_PP_TPS", 50_000.0);
    let tg_tps = env_or("FAKE_LLAMA_TG_TPS", 100.0);
    let prompt_ms = n_prompt as f64 * 1000.0 / pp_tps;
    let predicted_ms = n_predict as f64 * 1000.0 / tg_tps;
    std::thread::sleep(Duration::from_millis(((prompt_ms + predicted_ms) as u64).min(1500)));
    log.line('I', &format!(
        "slot print_timing: id  0 | task {task} | prompt eval time = {prompt_ms:10.2} ms / {n_prompt:5} tokens ({:8.2} ms per token, {pp_tps:8.2} tokens per second)",
        prompt_ms / n_prompt.max(1) as f64
    ));
    log.line('I', &format!(
        "slot print_timing: id  0 | task {task} |        eval time = {predicted_ms:10.2} ms / {n_predict:5} tokens ({:8.2} ms per token, {tg_tps:8.2} tokens per second)",
        predicted_ms / n_predict.max(1) as f64
    ));
    let timings = serde_json::json!({
        "cache_n": 0,
        "prompt_n": n_prompt,
        "prompt_ms": prompt_ms,
        "prompt_per_token_ms": prompt_ms / n_prompt.max(1) as f64,
        "prompt_per_second": pp_tps,
        "predicted_n": n_predict,
        "predicted_ms": predicted_ms,
        "predicted_per_token_ms": predicted_ms / n_predict.max(1) as f64,
        "predicted_per_second": tg_tps,
    });
    let out = serde_json::json!({
        "content": " word".repeat(n_predict as usize),
        "tokens_evaluated": n_prompt,
        "tokens_predicted": n_predict,
        "timings": timings,
    });
    (200, out.to_string())
}
