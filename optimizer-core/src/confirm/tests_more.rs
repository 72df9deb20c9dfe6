//! Classification, launch command lines, measurement, the results table and the calibration
//! cache.

use std::path::PathBuf;

use super::*;
use crate::bisect::{Outcome, Shortfall};
use crate::units::Bytes;

fn real_log(id: &str) -> LaunchLog {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/ground-truth/data/2026-11-21-h200x2/logs")
        .join(format!("{id}.log"));
    parse_log(&std::fs::read_to_string(path).unwrap())
}

fn gpus() -> Vec<String> {
    vec!["CUDA0".into(), "CUDA1".into()]
}

const STOPPED_AFTER_REQUEST: LaunchFacts =
    LaunchFacts { reached: Phase::Verified, exit: ExitKind::Stopped, timed_out: false, request_error: None };

#[test]
fn a_verified_launch_that_we_stopped_fits() {
    let c = classify(&STOPPED_AFTER_REQUEST, &real_log("q5-l01"));
    assert_eq!(c, Classification::Fits);
    let room = vec![Bytes::from_mib(1000), Bytes::from_mib(500)];
    assert_eq!(c.to_outcome(&gpus(), Some(room.clone())), Some(Outcome::Fits { headroom: Some(room) }));
}

#[test]
fn weights_oom_becomes_a_failure_with_its_shortfall() {
    let facts = LaunchFacts {
        reached: Phase::Loading,
        exit: ExitKind::Code(1),
        timed_out: false,
        request_error: None,
    };
    let c = classify(&facts, &real_log("q5-l06"));
    let Classification::OutOfMemory { oom, shortfall } = &c else { panic!("{c:?}") };
    assert_eq!(oom.device.as_deref(), Some("CUDA1"));
    assert_eq!(shortfall.map(Bytes::mib_floor), Some(5433));
    assert_eq!(
        c.to_outcome(&gpus(), None),
        Some(Outcome::Fails { shortfall: Some(Shortfall { gpu: 1, bytes: *shortfall }) })
    );
    assert!(
        c.summary().starts_with("out of memory on CUDA1 (the weights, asked for 19,910 MiB"),
        "{}",
        c.summary()
    );
}

#[test]
fn crashes_hangs_ports_and_fatal_errors() {
    let empty = LaunchLog::default();
    let died = LaunchFacts {
        reached: Phase::Ready,
        exit: ExitKind::Signal(6),
        timed_out: false,
        request_error: None,
    };
    let c = classify(&died, &empty);
    assert!(matches!(c, Classification::Crashed { exit: ExitKind::Signal(6), .. }));
    assert_eq!(c.to_outcome(&gpus(), None), Some(Outcome::Unknown));

    let hung = LaunchFacts {
        reached: Phase::Loading,
        exit: ExitKind::Stopped,
        timed_out: true,
        request_error: None,
    };
    let c = classify(&hung, &empty);
    assert_eq!(c, Classification::Hung { reached: Phase::Loading });
    assert_eq!(c.to_outcome(&gpus(), None), None);

    let port = parse_log("E srv    start: couldn't bind HTTP server socket, hostname: 127.0.0.1, port: 9\n");
    let exited = LaunchFacts {
        reached: Phase::Loading,
        exit: ExitKind::Code(1),
        timed_out: false,
        request_error: None,
    };
    assert_eq!(classify(&exited, &port), Classification::PortInUse);

    let bad = parse_log("error: invalid argument: --bogus\n");
    assert!(
        matches!(classify(&exited, &bad), Classification::Fatal { reason } if reason.contains("--bogus"))
    );

    let host = parse_log("E llama_model_load: error loading model: unable to allocate CPU_Mapped buffer\n");
    assert!(
        matches!(classify(&exited, &host), Classification::Fatal { reason } if reason.contains("system RAM"))
    );

    // the request failed although the process lives on
    let failed = LaunchFacts {
        reached: Phase::Ready,
        exit: ExitKind::Stopped,
        timed_out: false,
        request_error: Some("HTTP 500".into()),
    };
    assert!(
        matches!(classify(&failed, &empty), Classification::Crashed { detail, .. } if detail.contains("HTTP 500"))
    );
}

#[test]
fn an_oom_beats_a_timeout_or_a_crash() {
    let log = parse_log(concat!(
        "I srv  llama_server: model loaded\n",
        "E CUDA error: out of memory\n",
        "E   current device: 0, in function alloc at ggml-cuda.cu:583\n"
    ));
    let facts = LaunchFacts {
        reached: Phase::Ready,
        exit: ExitKind::Signal(6),
        timed_out: false,
        request_error: None,
    };
    let c = classify(&facts, &log);
    assert!(
        matches!(&c, Classification::OutOfMemory { oom, shortfall: None } if oom.stage == OomStage::Runtime)
    );
    assert_eq!(
        c.to_outcome(&gpus(), None),
        Some(Outcome::Fails { shortfall: Some(Shortfall { gpu: 0, bytes: None }) })
    );
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

#[test]
fn launch_args_replace_placement_model_host_and_port() {
    let base = words(
        "--model /models/q.gguf --ctx-size 262144 --n-gpu-layers 99 --host 0.0.0.0 --port 8080 --split-mode layer \
         --flash-attn on --fit off --jinja -np 1 -b 2048 -ub 512 -ot blk\\.1\\.=CUDA0,exps=CPU --temp 1.0",
    );
    let rung = Rung {
        label: "r".into(),
        placement: words("-ngl 99 -ts 20,28 -ot blk\\.(1|2)\\.=CUDA0,exps=CPU --fit off"),
        ctx_size: Some(196_608),
        ubatch_size: None,
        predicted: vec![],
        margins: vec![],
    };
    let launch = LaunchArgs {
        model: Some("/data/q.gguf".into()),
        host: "127.0.0.1".into(),
        port: 40001,
        verbosity: 4,
    };
    let args = launch_args(&base, &rung, &launch);
    assert_eq!(
        args.join(" "),
        "-m /data/q.gguf --flash-attn on --jinja -np 1 -b 2048 -ub 512 --temp 1.0 -c 196608 \
         -ngl 99 -ts 20,28 -ot blk\\.(1|2)\\.=CUDA0,exps=CPU --fit off --host 127.0.0.1 --port 40001 -lv 4"
    );
    // the result parses as llama-server would, with the rung's placement
    let s = crate::settings::parse_args(&args).unwrap();
    assert_eq!(s.overrides.len(), 2);
    assert!(!s.fit);

    // a rung without placement keeps the base's
    let keep = Rung {
        label: "own".into(),
        placement: vec![],
        ctx_size: None,
        ubatch_size: None,
        predicted: vec![],
        margins: vec![],
    };
    let args = launch_args(&base, &keep, &launch);
    assert!(args.join(" ").contains("-ot blk\\.1\\.=CUDA0,exps=CPU"));
    assert!(args.join(" ").contains("--ctx-size 262144"));
}

#[test]
fn ladder_checks() {
    let mut l = Ladder::single(gpus(), "profile");
    assert!(l.check().is_ok());
    assert!(!l.has_predictions());
    assert_eq!(l.predictions(), vec![vec![Bytes::ZERO, Bytes::ZERO]]);
    l.aggressive = 3;
    assert_eq!(l.check(), Err(LadderError::PlanOutOfRange { which: "aggressive", index: 3, len: 1 }));
    l.aggressive = 0;
    l.rungs[0].placement = words("-ot x=CUDA0 --temp 1");
    assert!(matches!(l.check(), Err(LadderError::NotPlacement { flag, .. }) if flag == "--temp"));
    l.rungs[0].placement = words("-ot x=CUDA0");
    l.rungs[0].predicted = vec![Bytes::from_mib(1)];
    assert!(matches!(l.check(), Err(LadderError::GpuCount { found: 1, expected: 2, .. })));
    let json = r#"{"gpus":["CUDA0"],"rungs":[{"label":"a","placement":["-ngl","99"],"predicted":[1048576]}],"aggressive":0}"#;
    let l: Ladder = serde_json::from_str(json).unwrap();
    assert!(l.check().is_ok() && l.has_predictions());
}

/// NVML readings of the q5-l01 load (fixtures/ground-truth/.../rows/q5-l01.json): free before,
/// total and the peak during the 13,890-token request.
fn q5_l01_nvml() -> Vec<GpuReading> {
    vec![
        GpuReading {
            name: "NVIDIA H200".into(),
            pci_bus_id: Some("00000000:00:06.0".into()),
            total: Bytes::from_mib(143_771),
            free_before: Bytes::from_mib(24_081),
            peak_used: Bytes::from_mib(142_151),
        },
        GpuReading {
            name: "NVIDIA H200".into(),
            pci_bus_id: Some("00000000:00:07.0".into()),
            total: Bytes::from_mib(143_771),
            free_before: Bytes::from_mib(15_001),
            peak_used: Bytes::from_mib(141_339),
        },
    ]
}

#[test]
fn measurement_of_a_real_load() {
    let log = real_log("q5-l01");
    let t = log.last_timing().copied().unwrap();
    let m = measure(&log, &q5_l01_nvml(), t.prompt, t.eval);
    let d1 = &m.devices[1];
    assert_eq!(d1.device, "CUDA1");
    assert_eq!(d1.source, PeakSource::Nvml);
    assert_eq!(d1.left, Some(Bytes::from_mib(2432)));
    // 14,477 free at load, 2,432 left, 11,842.4 MiB of buffers: ~202 MiB beyond the breakdown
    assert_eq!(d1.overhead.map(Bytes::mib_floor), Some(202));

    // without NVML the exit breakdown stands in
    let m2 = measure(&log, &[], None, None);
    assert_eq!(m2.devices[0].source, PeakSource::Breakdown);
    assert_eq!(m2.devices[0].left, Some(Bytes::from_mib(1619)));

    // predicted 11,500 MiB for CUDA1 with a 128 MiB margin: reported; 11,950 is within it
    let off = compare(&[Bytes::from_mib(22_000), Bytes::from_mib(11_500)], &m, &[Bytes::from_mib(128)]);
    assert_eq!(off.len(), 1);
    assert_eq!(off[0].device, "CUDA1");
    assert!(off[0].error() > 0);
    assert!(compare(&[d0_used(&m), Bytes::from_mib(11_990)], &m, &[Bytes::from_mib(128)]).is_empty());

    let table = render_results_table(&TestResult {
        title: "Suggestion A (aggressive)".into(),
        launches: 2,
        ooms: vec!["out of memory on CUDA1 (the weights)".into()],
        measurement: m,
        request_tokens: 13_890,
        ctx_size: 262_144,
        notes: vec![],
    });
    insta::assert_snapshot!(table, @r"
    #### Suggestion A (aggressive)
    | Metric | Value |
    |--------|-------|
    | Launches used | 2 |
    | CUDA0 VRAM (MiB / %) (peak, NVML) | 142,151 MiB / 98.9%, 1,620 MiB left |
    | CUDA1 VRAM (MiB / %) (peak, NVML) | 141,339 MiB / 98.3%, 2,432 MiB left |
    | Graph splits | 169 (prompt) / 129 (decode) |
    | Speed (t/s) | 59.6 decode, 639.0 prompt |
    | OOM? | out of memory on CUDA1 (the weights) |
    | Notes | worst-case request: 13,890 of 262,144 context tokens |
    ");
}

fn d0_used(m: &Measurement) -> Bytes {
    m.devices[0].used_by_server()
}

fn key() -> CalibrationKey {
    CalibrationKey {
        llama_build: 11434,
        gpus: vec!["NVIDIA GeForce RTX 4090".into(), "NVIDIA GeForce RTX 5070 Ti".into()],
        model: ModelIdentity {
            file_name: "q.gguf".into(),
            size: Bytes::new(123),
            fingerprint: "00ff".into(),
        },
        settings: vec!["-c".into(), "262144".into()],
    }
}

fn record() -> CalibrationRecord {
    CalibrationRecord {
        version: calibration::CACHE_VERSION,
        key: key(),
        devices: vec![MeasuredDevice {
            device: "CUDA0".into(),
            model: Bytes::from_mib(18_961),
            kv: Bytes::from_mib(1904),
            rs: Bytes::from_mib(50),
            compute: Bytes::from_mib(824),
            output: Bytes::ZERO,
            overhead: Some(Bytes::from_mib(160)),
        }],
        measured_at: 1_795_300_752,
        log: None,
    }
}

#[test]
fn calibration_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CalibrationCache::new(dir.path());
    assert!(cache.lookup(&key()).unwrap().is_none());
    let path = cache.store(&record()).unwrap();
    assert!(path.starts_with(dir.path().join("calibration")));
    let back = cache.lookup(&key()).unwrap().unwrap();
    assert_eq!(back, record());
    assert_eq!(
        back.compute("CUDA0"),
        Some(MeasuredCompute { compute: Bytes::from_mib(824), overhead: Some(Bytes::from_mib(160)) })
    );
    // no temporary file left beside it
    let names: Vec<_> =
        std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "{names:?}");
    // another key misses
    let mut other = key();
    other.settings.push("-ub".into());
    assert!(cache.lookup(&other).unwrap().is_none());
}

#[test]
fn corrupt_calibration_file_is_an_error_to_report_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CalibrationCache::new(dir.path());
    let path = cache.path_for(&key());
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "{ not json").unwrap();
    let err = cache.lookup(&key()).unwrap_err();
    assert!(matches!(err, CalibrationError::Corrupt { .. }));
    assert!(err.to_string().starts_with("ignoring the corrupt calibration file"), "{err}");
    // storing replaces it
    cache.store(&record()).unwrap();
    assert!(cache.lookup(&key()).unwrap().is_some());
}

#[test]
fn cache_dir_from_the_environment() {
    use std::ffi::OsString;
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| OsString::from(v))
    };
    assert_eq!(
        CalibrationCache::default_dir(env(&[("SPLITPLAN_CACHE_DIR", "/c"), ("XDG_CACHE_HOME", "/x")])),
        Some(PathBuf::from("/c"))
    );
    assert_eq!(
        CalibrationCache::default_dir(env(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")])),
        Some(PathBuf::from("/x/splitplan"))
    );
    assert_eq!(
        CalibrationCache::default_dir(env(&[("HOME", "/h")])),
        Some(PathBuf::from("/h/.cache/splitplan"))
    );
    assert_eq!(CalibrationCache::default_dir(env(&[])), None);
}

#[test]
fn model_identity_reads_name_size_and_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("m.gguf");
    std::fs::write(&a, b"GGUF\x03\x00\x00\x00rest").unwrap();
    let id = ModelIdentity::of_file(&a).unwrap();
    assert_eq!((id.file_name.as_str(), id.size), ("m.gguf", Bytes::new(12)));
    std::fs::write(&a, b"GGUF\x03\x00\x00\x00resT").unwrap();
    assert_ne!(ModelIdentity::of_file(&a).unwrap().fingerprint, id.fingerprint);
}
