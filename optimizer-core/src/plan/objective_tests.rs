//! The speed model and graph splits against what llama.cpp did on 2× H200 (the ground-truth
//! sessions of 2026-11-21): measured decode speeds of the user's hand splits and of `--fit`, and
//! the `graph … splits = A / B` lines of the same loads.

use std::path::{Path, PathBuf};

use super::fit_tests::replay;
use super::objective::*;
use super::testing::resolve;
use super::{Gpu, Hardware};
use crate::gguf::{ReadOptions, open_model};
use crate::model::ModelDescription;
use crate::settings::ServerSettings;
use crate::units::Bytes;

fn fixture(rel: &str) -> ModelDescription {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/models").join(rel);
    let gguf = open_model(Path::new(&path), &ReadOptions::default()).expect("the fixture reads");
    ModelDescription::from_gguf(&gguf).expect("the fixture describes")
}

/// The emulated user pair on 2× H200: 4.8 TB/s each (NVIDIA's data sheet).
fn h200_pair() -> Hardware {
    let gpu = |index| Gpu {
        index,
        name: "NVIDIA H200".into(),
        total: Bytes::from_mib(143_771),
        used_by_others: Bytes::ZERO,
        bandwidth_gbs: Some(4800.0),
        free_now: None,
        compute_capability: Some(900),
    };
    let mut hw = Hardware::new(vec![gpu(0), gpu(1)]);
    hw.host_bandwidth_gbs = Some(H200_HOST_GBS);
    hw
}

/// The GPU machine's host RAM as the decode speeds of Qwen3-Coder-Next's CPU experts show it.
const H200_HOST_GBS: f64 = 67.0;

fn words(s: &str) -> Vec<String> {
    s.split(' ').map(str::to_owned).collect()
}

fn predict(m: &ModelDescription, args: &[String]) -> Speed {
    let s = ServerSettings::from_args(args).unwrap();
    let r = resolve(m, &s, &[23_557.0, 14_477.0]);
    let hw = h200_pair();
    let inputs = SpeedInputs {
        hardware: &hw,
        kv_types: (s.cache_type_k, s.cache_type_v),
        flash_attn: true,
        ubatch: s.ubatch_size,
        op_offload: s.op_offload,
        mtp: false,
    };
    predict_speed(m, &r, &inputs, &SpeedModel::CALIBRATED)
}

/// Decode speed within 8% of the measured median, graph splits within 10% (at least 4 in decode, 8
/// in prompt) of the logged ones, for every load with speeds: the constants of [`SpeedModel::CALIBRATED`] were
/// fitted to these rows, so this holds the fit in place.
#[test]
fn speeds_and_splits_of_the_measured_loads() {
    let q5 = fixture("Qwen3-Coder-Next/UD-Q5_K_XL/Qwen3-Coder-Next-UD-Q5_K_XL-00001-of-00003.gguf");
    let glm = fixture("GLM-4.7-Flash/GLM-4.7-Flash-Q8_0.gguf");
    let oss = fixture("GPT-OSS-120b/gpt-oss-120b-F16.gguf");
    let common = "-fa on -ctk q8_0 -ctv q8_0 -np 1";
    let fit = |log: &str, hp: u32, c: u32| replay(log, hp, c).0.params.args();
    let hand15 = r"-ngl 99 -ot blk\.([0-9]|1[0-4])\.=CUDA0,blk\.(1[5-9]|2[0-1])\.=CUDA1,exps=CPU";
    let hand17 = r"-ngl 99 -ot blk\.([0-9]|1[0-6])\.=CUDA0,blk\.(1[7-9]|2[0-4])\.=CUDA1,exps=CPU";
    let ghand = r"-ngl 99 -ot blk\.([0-9]|[12][0-9]|3[0-2])\.=CUDA0,blk\.(3[3-9]|4[0-6])\.=CUDA1";
    let ohand = r"-ngl 99 -ot blk\.([0-9]|10)\.=CUDA0,blk\.(1[1-4])\.=CUDA1,exps=CPU";
    let with = |place: Vec<String>, rest: &str| {
        let mut a = place;
        a.extend(words(&format!("{common} {rest}")));
        a
    };
    let rows = vec![
        ("q5-s1 hand", &q5, with(words(hand15), "-c 262144 -ub 2048"), 59.5, Some((168, 125))),
        (
            "q5-s2 fit",
            &q5,
            with(fit("2026-11-21b-h200x2/logs/q5-s2a.log", 48, 262_144), "-ub 2048"),
            80.0,
            Some((100, 51)),
        ),
        ("q5-l01 hand17", &q5, with(words(hand17), "-c 262144 -ub 512"), 60.3, Some((169, 129))),
        ("q5-l05 hand17", &q5, with(words(hand17), "-c 262144 -ub 1024"), 63.8, Some((169, 129))),
        (
            "q5-l04 fit",
            &q5,
            with(fit("2026-11-21-h200x2/logs/q5-l04.log", 48, 10_240), "-ub 512"),
            96.4,
            Some((80, 45)),
        ),
        ("glm-s1 hand", &glm, with(words(ghand), "-c 131072 -ub 512"), 137.5, Some((33, 33))),
        ("glm-s2 fit", &glm, words(&format!("{common} -c 131072 -ub 512")), 155.3, Some((3, 3))),
        ("oss-l01 hand", &oss, with(words(ohand), "-c 131072 -ub 512"), 10.3, Some((174, 76))),
        (
            "oss-l03 fit",
            &oss,
            with(fit("2026-11-21-h200x2/logs/oss-l03.log", 36, 131_072), "-ub 2048"),
            11.6,
            Some((132, 41)),
        ),
    ];
    for (id, m, args, tps, splits) in rows {
        let s = predict(m, &args);
        let err = (s.decode_tps - tps) / tps;
        assert!(err.abs() < 0.08, "{id}: predicted {:.1} tok/s, measured {tps}", s.decode_tps);
        if let Some((pp, tg)) = splits {
            assert!(
                s.splits.decode.abs_diff(tg) <= 4.max(tg / 10),
                "{id}: decode splits {} vs {tg}",
                s.splits.decode
            );
            assert!(
                s.splits.prompt.abs_diff(pp) <= 8.max(pp / 10),
                "{id}: prompt splits {} vs {pp}",
                s.splits.prompt
            );
        }
    }
}

/// Where a pair was measured alternately, the model ranks the two placements the same way:
/// llama.cpp's `--fit` beat the user's hand split on both models.
#[test]
fn paired_measurements_rank_the_same() {
    let q5 = fixture("Qwen3-Coder-Next/UD-Q5_K_XL/Qwen3-Coder-Next-UD-Q5_K_XL-00001-of-00003.gguf");
    let common = "-fa on -ctk q8_0 -ctv q8_0 -np 1 -c 262144 -ub 2048";
    let mut hand = words(r"-ngl 99 -ot blk\.([0-9]|1[0-4])\.=CUDA0,blk\.(1[5-9]|2[0-1])\.=CUDA1,exps=CPU");
    hand.extend(words(common));
    let mut fit = replay("2026-11-21b-h200x2/logs/q5-s2a.log", 48, 262_144).0.params.args();
    fit.extend(words(common));
    assert!(predict(&q5, &fit).decode_tps > predict(&q5, &hand).decode_tps * 1.2);
}
