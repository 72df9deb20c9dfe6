//! The fit emulation replayed against llama.cpp's own fit traces: real `llama-server -lv 4` loads
//! with `--fit on` log every measurement fit made (`memory for test allocation by device`). Fed
//! those measurements, the emulation must ask for the same configurations in the same order and
//! settle where llama.cpp settled.

use std::path::PathBuf;

use super::fit::*;
use crate::settings::{OverrideTarget, TensorOverride};
use crate::units::{Bytes, MIB};

/// One parsed fit trace.
pub(crate) struct Trace {
    free: Vec<u64>,
    margins: Vec<u64>,
    initial_used: Vec<u64>,
    surplus_cpu_moe: i64,
    /// Each test allocation: per device (n_layer, n_part, overflow_type, mem MiB).
    tests: Vec<Vec<(u32, u32, u32, u64)>>,
}

fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/ground-truth/data").join(rel)
}

fn num<T: std::str::FromStr>(s: &str) -> T {
    s.trim().parse().unwrap_or_else(|_| panic!("not a number: {s:?}"))
}

/// `key=value` from a trace line, value up to the next comma or space.
fn field(line: &str, key: &str) -> String {
    let start = line.find(&format!("{key}=")).unwrap() + key.len() + 1;
    line[start..].trim_start().split([',', ' ']).next().unwrap().to_owned()
}

fn parse(rel: &str) -> Trace {
    let text = std::fs::read_to_string(data(rel)).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("common_params_fit_impl:")).collect();
    let mut t =
        Trace { free: vec![], margins: vec![], initial_used: vec![], surplus_cpu_moe: 0, tests: vec![] };
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if l.contains(" total, ") && l.contains(" free vs. target of ") {
            // "- CUDA0 (NVIDIA H200): 143155 total,  41111 used, -17608 free vs. target of    128"
            let after = l.split("):").nth(1).unwrap();
            let parts: Vec<&str> = after.split(',').collect();
            let used: u64 = num(parts[1].trim().trim_end_matches(" used"));
            let free_after: i64 = num(parts[2].trim().split(' ').next().unwrap());
            let margin: u64 = num(l.rsplit("target of").next().unwrap());
            t.initial_used.push(used);
            t.free.push(u64::try_from(i64::try_from(used).unwrap() + free_after).unwrap());
            t.margins.push(margin);
        } else if l.contains("there is a total surplus of") || l.contains("there is still a total deficit of")
        {
            let v: i64 = num(l.rsplit("of ").next().unwrap().trim_end_matches(" MiB"));
            t.surplus_cpu_moe = if l.contains("deficit") { -v } else { v };
        } else if l.contains("memory for test allocation by device") {
            let nd = t.free.len();
            let rows = (1..=nd)
                .map(|k| {
                    let r = lines[i + k];
                    (
                        num(&field(r, "n_layer")),
                        num(&field(r, "n_part")),
                        num(&field(r, "overflow_type")),
                        num(&field(r, "mem")),
                    )
                })
                .collect();
            t.tests.push(rows);
            i += nd;
        }
        i += 1;
    }
    t
}

fn fraction(code: u32) -> LayerFraction {
    match code {
        1 => LayerFraction::Attn,
        2 => LayerFraction::Up,
        3 => LayerFraction::Gate,
        _ => LayerFraction::Moe,
    }
}

/// Replays `rel` and returns the outcome; panics where the emulation asks for a configuration the
/// trace did not measure next.
pub(crate) fn replay(rel: &str, hp_ngl: u32, n_ctx: u32) -> (FitOutcome, Trace) {
    let trace = parse(rel);
    let nd = trace.free.len();
    let inputs = FitInputs {
        free: trace.free.iter().map(|&m| Bytes::from_mib(m)).collect(),
        margins: trace.margins.iter().map(|&m| Bytes::from_mib(m)).collect(),
        n_ctx,
        n_ctx_min: 4096,
        n_ctx_train: 262_144,
        n_streams: 1,
        hp_ngl,
        n_expert: 128,
        user_ngl: false,
        user_tensor_split: false,
        user_overrides: false,
        devices: (0..nd).map(|i| format!("CUDA{i}")).collect(),
    };
    let mut step = 0usize;
    let mut tests = trace.tests.iter();
    let outcome = emulate_fit(&inputs, |probe: &Probe| -> Result<Vec<DeviceUse>, String> {
        step += 1;
        let mib = |m: u64| DeviceUse { model: Bytes::ZERO, total: Bytes::new(m * MIB) };
        if step == 1 {
            assert!(probe.params.overrides.is_empty());
            return Ok(trace.initial_used.iter().map(|&m| mib(m)).collect());
        }
        if probe.params.overrides.first().is_some_and(|o| o.pattern == ALL_MOE_PATTERN) {
            // Only the sum is logged: put the whole use on the first device.
            let rest: i64 = (0..nd).map(|i| i64::try_from(trace.free[i] - trace.margins[i]).unwrap()).sum();
            let used = u64::try_from(rest - trace.surplus_cpu_moe).unwrap();
            let mut v = vec![mib(0); nd];
            v[0] = mib(used);
            return Ok(v);
        }
        let expected = tests
            .next()
            .unwrap_or_else(|| panic!("probe {step} not in the trace: {:?}", probe.params.args()));
        let layers: Vec<DeviceLayers> = expected
            .iter()
            .map(|&(n_layer, n_part, ot, _)| DeviceLayers { n_layer, n_part, overflow: fraction(ot) })
            .collect();
        let got_ngl: u32 = probe.params.n_gpu_layers.unwrap();
        assert_eq!(got_ngl, layers.iter().map(|l| l.n_layer).sum::<u32>(), "probe {step}");
        assert_eq!(
            probe.params.tensor_split,
            layers.iter().map(|l| l.n_layer).collect::<Vec<_>>(),
            "probe {step}"
        );
        let n_part: u32 = layers.iter().map(|l| l.n_part).sum();
        assert_eq!(probe.params.overrides.len(), n_part as usize, "probe {step}: {:?}", probe.params.args());
        Ok(expected.iter().map(|&(_, _, _, m)| mib(m)).collect())
    })
    .unwrap();
    assert!(tests.next().is_none(), "the emulation stopped before the trace did");
    (outcome, trace)
}

fn ot(pattern: &str, target: &str) -> TensorOverride {
    TensorOverride { pattern: pattern.to_owned(), target: OverrideTarget::from_name(target) }
}

#[test]
fn qwen3_coder_next_262k_ub2048() {
    // 2026-11-21 session, real load with --fit on --fit-target 128,1024 (-c 262144 -ub 2048).
    let (out, trace) = replay("2026-11-21-h200x2/logs/q5-l03.log", 48, 262_144);
    assert_eq!(out.status, FitStatus::Fitted);
    assert_eq!(out.probes, 2 + trace.tests.len());
    // llama-fit-params printed the same for the same flags in the 2026-11-21b session (q5-f01).
    assert_eq!(out.params.tensor_split, vec![19, 30]);
    assert_eq!(out.params.n_gpu_layers, Some(49));
    assert_eq!(out.params.overrides[0], ot(r"blk\.18\.ffn_down.*", "CUDA1"));
    assert_eq!(out.params.overrides[1], ot(r"blk\.26\.ffn_(gate|up|gate_up|down).*", "CPU"));
    assert_eq!(out.params.overrides[2], ot(r"blk\.27\.ffn_(up|down|gate_up|gate)_(ch|)exps", "CPU"));
    assert_eq!(
        out.params.overrides.last(),
        Some(&ot(r"blk\.48\.ffn_(up|down|gate_up|gate)_(ch|)exps", "CPU"))
    );
    assert_eq!(out.params.overrides.len(), 24);
}

#[test]
fn qwen3_coder_next_10k_ub512() {
    let (out, _) = replay("2026-11-21-h200x2/logs/q5-l04.log", 48, 10_240);
    // The 2026-11-21b session's llama-fit-params printed -ts 21,28, blk.20 down to CUDA1, blk.31 UP
    // to the CPU (q5-f04).
    assert_eq!(out.params.tensor_split, vec![21, 28]);
    assert_eq!(out.params.overrides[0], ot(r"blk\.20\.ffn_down.*", "CUDA1"));
    assert_eq!(out.params.overrides[1], ot(r"blk\.31\.ffn_(gate|gate_up|down).*", "CPU"));
}

#[test]
fn gpt_oss_131k_ub2048() {
    let (out, _) = replay("2026-11-21-h200x2/logs/oss-l03.log", 36, 131_072);
    assert_eq!(out.params.tensor_split, vec![13, 24]);
    assert_eq!(out.params.overrides[0], ot(r"blk\.12\.ffn_down.*", "CUDA1"));
    assert_eq!(out.params.overrides[1], ot(r"blk\.17\.ffn_down.*", "CPU"));
    assert_eq!(out.params.overrides.len(), 21);
}

#[test]
fn the_second_session_replays_too() {
    let (out, _) = replay("2026-11-21b-h200x2/logs/q5-s2a.log", 48, 262_144);
    assert_eq!(out.params.tensor_split, vec![19, 30]);
}

#[test]
fn nothing_to_do_when_everything_fits() {
    let inputs = FitInputs {
        free: vec![Bytes::from_mib(20_000)],
        margins: vec![Bytes::from_mib(1024)],
        n_ctx: 0,
        n_ctx_min: 4096,
        n_ctx_train: 32_768,
        n_streams: 1,
        hp_ngl: 36,
        n_expert: 0,
        user_ngl: true,
        user_tensor_split: false,
        user_overrides: false,
        devices: vec!["CUDA0".into()],
    };
    let out = emulate_fit(&inputs, |_| -> Result<_, ()> {
        Ok(vec![DeviceUse { model: Bytes::from_mib(8000), total: Bytes::from_mib(10_000) }])
    })
    .unwrap();
    assert_eq!(out.status, FitStatus::NoChange);
    assert_eq!(out.probes, 1);
}

#[test]
fn one_gpu_shrinks_the_context_by_interpolation() {
    // 100 MiB per 1024 tokens above a 4 GiB floor; 20 GiB free, 1 GiB margin.
    let inputs = FitInputs {
        free: vec![Bytes::from_mib(20_480)],
        margins: vec![Bytes::from_mib(1024)],
        n_ctx: 0,
        n_ctx_min: 4096,
        n_ctx_train: 262_144,
        n_streams: 1,
        hp_ngl: 36,
        n_expert: 0,
        user_ngl: false,
        user_tensor_split: false,
        user_overrides: false,
        devices: vec!["CUDA0".into()],
    };
    let use_at = |n_ctx: u32| Bytes::from_mib(4096 + u64::from(n_ctx) / 1024 * 100);
    let out = emulate_fit(&inputs, |p: &Probe| -> Result<_, ()> {
        Ok(vec![DeviceUse { model: Bytes::from_mib(4096), total: use_at(p.n_ctx) }])
    })
    .unwrap();
    assert_eq!(out.status, FitStatus::ContextReduced);
    // target 19,456 MiB of use: 4096 + 100 * n/1024 → n ≈ 157,286, rounded down to 256.
    let n = out.params.n_ctx.unwrap();
    assert_eq!(n % 256, 0);
    assert!(use_at(n) <= Bytes::from_mib(19_456) && use_at(n + 1024) > Bytes::from_mib(19_456), "{n}");
    assert_eq!(out.probes, 2);
}

#[test]
fn pinned_layers_make_fit_give_up() {
    let inputs = FitInputs {
        free: vec![Bytes::from_mib(10_000), Bytes::from_mib(10_000)],
        margins: vec![Bytes::from_mib(1024); 2],
        n_ctx: 8192,
        n_ctx_min: 4096,
        n_ctx_train: 262_144,
        n_streams: 1,
        hp_ngl: 48,
        n_expert: 512,
        user_ngl: false,
        user_tensor_split: false,
        user_overrides: true,
        devices: vec!["CUDA0".into(), "CUDA1".into()],
    };
    let out = emulate_fit(&inputs, |_| -> Result<_, ()> {
        Ok(vec![DeviceUse { model: Bytes::ZERO, total: Bytes::from_mib(30_000) }; 2])
    })
    .unwrap();
    assert_eq!(
        out.status,
        FitStatus::Failure("model_params::tensor_buft_overrides already set by user, abort".into())
    );
}
