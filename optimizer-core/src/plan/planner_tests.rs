//! The planner on the user's models and machines.

use std::path::{Path, PathBuf};

use super::*;
use crate::gguf::{ReadOptions, open_model};
use crate::model::ModelDescription;
use crate::settings::ServerSettings;
use crate::units::Bytes;

pub(crate) fn fixture(rel: &str) -> ModelDescription {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/models").join(rel);
    let gguf = open_model(Path::new(&path), &ReadOptions::default()).expect("the fixture reads");
    ModelDescription::from_gguf(&gguf).expect("the fixture describes")
}

pub(crate) const Q5: &str = "Qwen3-Coder-Next/UD-Q5_K_XL/Qwen3-Coder-Next-UD-Q5_K_XL-00001-of-00003.gguf";

/// The emulated user pair on 2× H200 as llama.cpp saw it: 23,557 / 14,477 MiB free at load.
pub(crate) fn h200_pair() -> Hardware {
    let mut hw = Hardware::from_free_at_load(
        &[Bytes::from_mib(23_557), Bytes::from_mib(14_477)],
        CUDA_CONTEXT_OVERHEAD,
    )
    .unwrap();
    for g in &mut hw.gpus {
        g.bandwidth_gbs = Some(4800.0);
    }
    hw.host_bandwidth_gbs = Some(67.0);
    hw.host_ram = Some(Bytes::from_gib(1500));
    hw
}

/// Compute buffers measured by real loads (not modelled yet): Qwen3-Coder-Next at 262,144 tokens,
/// `-ub 2048`: 1,760 / 1,728 MiB (fixtures/ground-truth/data/2026-11-21b-h200x2/logs/q5-s2a.log,
/// memory breakdown). Test input only.
pub(crate) fn measured_compute_q5_262k_ub2048() -> ComputeReserve {
    ComputeReserve::Given(vec![Bytes::from_mib(1760), Bytes::from_mib(1728)])
}

fn args(s: &str) -> Vec<String> {
    s.split(' ').map(str::to_owned).collect()
}

fn row(id: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/ground-truth/data/2026-11-21b-h200x2/rows")
        .join(format!("{id}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect()
}

/// The dry run of fit's own choice gives the compute buffers llama.cpp measured for it: the
/// emulation's measurements use them (test input; the memory model has no compute yet).
fn dry_compute(r: &serde_json::Value) -> ComputeReserve {
    let devices = r["dry"]["devices"].as_array().unwrap();
    ComputeReserve::Given(
        devices
            .iter()
            .filter(|d| d["name"].as_str().unwrap().starts_with("CUDA"))
            .map(|d| Bytes::from_mib(d["compute_mib"].as_u64().unwrap()))
            .collect(),
    )
}

/// llama.cpp's `--fit` on the emulated pair (2026-11-21b session, `llama-fit-params` with the
/// rows' flags on GPUs showing 23,557 / 14,477 MiB free), against the emulation over the memory
/// model: the same `-c -ngl -ts -ot`, character for character, for all eight rows.
#[test]
fn fit_emulation_reproduces_llama_cpp() {
    let q5 = fixture(Q5);
    let oss = fixture("GPT-OSS-120b/gpt-oss-120b-F16.gguf");
    let glm = fixture("GLM-4.7-Flash/GLM-4.7-Flash-Q8_0.gguf");
    for (id, model) in [
        ("q5-f01", &q5),
        ("q5-f02", &q5),
        ("q5-f03", &q5),
        ("q5-f04", &q5),
        ("q5-f05", &q5),
        ("oss-f01", &oss),
        ("oss-f02", &oss),
        ("glm-f01", &glm),
    ] {
        let r = row(id);
        let settings = ServerSettings::from_args(&strings(&r["argv"])).unwrap();
        let expected = strings(&r["fit_args"]);
        let opts = PlanOptions { compute: dry_compute(&r), ..PlanOptions::default() };
        let mut planner = planner::Planner::new(model, &settings, &h200_pair(), &opts).unwrap();
        let fit = planner.emulate_fit().unwrap();
        assert_eq!(fit.fit_args, expected, "{id}");
    }
}

fn q5_settings() -> ServerSettings {
    ServerSettings::from_args(&args(
        "-fa on -ctk q8_0 -ctv q8_0 -np 1 -c 262144 -b 2048 -ub 2048 --fit-target 128,1024",
    ))
    .unwrap()
}

/// Qwen3-Coder-Next UD-Q5_K_XL at 262,144 tokens on the emulated user pair: both plans keep their
/// margins under the memory prediction of their own flags, the aggressive plan holds at least as
/// much as the moderate one and is at least as fast, and both use integer `-ts` and `--fit off`.
#[test]
fn qwen3_coder_next_on_the_emulated_pair() {
    let model = fixture(Q5);
    let opts = PlanOptions { compute: measured_compute_q5_262k_ub2048(), ..PlanOptions::default() };
    let set = plan(&model, &q5_settings(), &h200_pair(), &opts).unwrap();
    assert_eq!(set.n_ctx, 262_144);
    for p in [&set.aggressive, &set.moderate] {
        assert!(p.memory.fits_gpus(), "{:?}: {:?}", p.kind, p.memory.gpus);
        assert!(p.placement_args.windows(2).any(|w| w[0] == "--fit" && w[1] == "off"));
        assert!(p.placement_args.iter().any(|a| a == "-ts"));
        // What was checked is what is emitted: the flags parse back to the evaluated settings.
        let reparsed = ServerSettings::from_args(&p.args).unwrap();
        assert_eq!(reparsed.to_args(), p.args);
    }
    let bytes = |p: &Plan| p.memory.gpus.iter().map(|g| g.weights).sum::<Bytes>();
    assert!(bytes(&set.aggressive) >= bytes(&set.moderate));
    assert!(set.aggressive.speed.decode_tps >= set.moderate.speed.decode_tps);
    // The moderate plan keeps 1 GiB more free on every GPU.
    for (a, m) in set.aggressive.memory.gpus.iter().zip(&set.moderate.memory.gpus) {
        assert_eq!(m.margin, a.margin + DEFAULT_MODERATE_EXTRA);
    }
    insta::assert_snapshot!(set.aggressive.placement_args.join(" "), @r"-ngl 49 -ts 23,26 -ot blk\.30\.ffn_down_exps=CPU,blk\.([0-9]|1[0-7])\.=CUDA0,blk\.(2[3-9]|30)\.=CUDA1,exps=CPU --fit off");
    insta::assert_snapshot!(set.moderate.placement_args.join(" "), @r"-ngl 49 -ts 26,23 -ot blk\.16\.ffn_down_exps=CPU,blk\.([0-9]|1[0-6])\.=CUDA0,blk\.(2[6-9]|3[0-2])\.=CUDA1,exps=CPU --fit off");
    // llama.cpp's fit at the same margins: what it really chose (q5-f01), and by the prediction it
    // leaves CUDA0 less than the pool's growth at the first long request plus 128 MiB.
    let fit = set.fit.unwrap();
    assert_eq!(&fit.fit_args[..6], &args("-c 262144 -ngl 49 -ts 19,30")[..]);
    assert!(fit.memory.gpus[0].left() < 128 * 1024 * 1024);
}

/// GLM-4.7-Flash Q4_K_M (18 GB) at a bench context fits on the 24 GB GPU alone: one GPU, every
/// tensor on it, `-sm none`.
#[test]
fn one_gpu_when_the_model_fits_on_one() {
    let model = fixture("GLM-4.7-Flash/GLM-4.7-Flash-Q4_K_M.gguf");
    let s =
        ServerSettings::from_args(&args("-fa on -ctk q8_0 -ctv q8_0 -np 1 -c 10240 -b 512 -ub 512")).unwrap();
    let opts = PlanOptions {
        compute: ComputeReserve::Given(vec![Bytes::from_mib(400), Bytes::from_mib(400)]),
        ..PlanOptions::default()
    };
    let set = plan(&model, &s, &h200_pair(), &opts).unwrap();
    assert_eq!(set.aggressive.placement.used_gpus(), vec![0]);
    assert!(set.aggressive.placement_args.join(" ").contains("-sm none -mg 0"));
    assert_eq!(set.aggressive.memory.gpus[1].weights, Bytes::ZERO);
}

/// A model larger than GPUs and RAM together says by how much.
#[test]
fn too_big_for_ram_says_by_how_much() {
    let model = fixture(Q5);
    let mut hw = h200_pair();
    hw.host_ram = Some(Bytes::from_gib(16));
    let opts = PlanOptions { compute: measured_compute_q5_262k_ub2048(), ..PlanOptions::default() };
    let e = plan(&model, &q5_settings(), &hw, &opts).unwrap_err();
    let PlanError::DoesNotFit { what, deficit, .. } = &e else { panic!("{e}") };
    assert!(what.contains("system RAM"), "{e}");
    assert!(*deficit > Bytes::from_gib(10), "{e}");
}

/// Without a compute model or given sizes, planning refuses rather than guessing.
#[test]
fn unknown_compute_is_an_error() {
    let model = fixture(Q5);
    let e = plan(&model, &q5_settings(), &h200_pair(), &PlanOptions::default()).unwrap_err();
    assert!(matches!(e, PlanError::ComputeNotModelled { ref gpu } if gpu == "CUDA0"), "{e}");
}

#[test]
fn conflicting_pins_say_which() {
    let model = fixture(Q5);
    let pins = Pins {
        overrides: vec![crate::settings::TensorOverride {
            pattern: r"blk\.3\.".into(),
            target: crate::settings::OverrideTarget::Device("CUDA2".into()),
        }],
        ..Pins::default()
    };
    let opts = PlanOptions { compute: measured_compute_q5_262k_ub2048(), pins, ..PlanOptions::default() };
    let e = plan(&model, &q5_settings(), &h200_pair(), &opts).unwrap_err();
    assert_eq!(e.to_string(), r"conflicting pins: -ot blk\.3\.=CUDA2 and 2 GPU(s): there is no CUDA2");
    let pins = Pins { tensor_split: Some(vec![1.0, 1.0, 1.0]), ..Pins::default() };
    let opts = PlanOptions { compute: measured_compute_q5_262k_ub2048(), pins, ..PlanOptions::default() };
    let e = plan(&model, &q5_settings(), &h200_pair(), &opts).unwrap_err();
    assert_eq!(e.to_string(), "conflicting pins: -ts 1,1,1 and 2 GPU(s): more split values than GPUs");
}

mod properties {
    use std::sync::LazyLock;

    use proptest::prelude::*;

    use super::*;
    use crate::memory::Location;
    use crate::model::testing;
    use crate::settings::{OverrideTarget, TensorOverride};

    static MODELS: LazyLock<Vec<ModelDescription>> = LazyLock::new(|| {
        let describe = |b: testing::Builder| ModelDescription::from_gguf(&b.build()).unwrap();
        vec![
            describe(testing::qwen3_coder_next(12, false)),
            describe(testing::gpt_oss_120b(8)),
            describe(testing::glm_4_7_flash(9, true)),
        ]
    });

    fn hardware(free_mib: &[u64]) -> Hardware {
        let free: Vec<Bytes> = free_mib.iter().map(|&m| Bytes::from_mib(m)).collect();
        let mut hw = Hardware::from_free_at_load(&free, CUDA_CONTEXT_OVERHEAD).unwrap();
        for (i, g) in hw.gpus.iter_mut().enumerate() {
            g.bandwidth_gbs = Some(if i == 0 { 1008.0 } else { 896.0 });
        }
        hw.host_bandwidth_gbs = Some(40.0);
        hw
    }

    fn settings(ctx: u32, ub: u32) -> ServerSettings {
        ServerSettings::from_args(&args(&format!("-fa on -ctk q8_0 -ctv q8_0 -np 1 -c {ctx} -ub {ub}")))
            .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Every plan keeps every GPU's margin under the memory prediction of its own flags, and
        /// the aggressive plan puts at least as many bytes on the GPUs as the moderate one.
        #[test]
        fn plans_keep_their_margins(
            which in 0usize..3,
            free in prop::collection::vec(3_000u64..20_000, 1..=3),
            margin in prop::sample::select(vec![0u64, 128, 512, 1024]),
            compute in 100u64..1200,
            ctx in prop::sample::select(vec![4096u32, 16_384, 65_536]),
            ub in prop::sample::select(vec![512u32, 2048]),
        ) {
            let model = &MODELS[which];
            let hw = hardware(&free);
            let opts = PlanOptions {
                margins: Some(vec![Bytes::from_mib(margin); free.len()]),
                compute: ComputeReserve::Given(vec![Bytes::from_mib(compute); free.len()]),
                emulate_fit: false,
                ..PlanOptions::default()
            };
            let set = match plan(model, &settings(ctx, ub), &hw, &opts) {
                Ok(set) => set,
                Err(PlanError::DoesNotFit { .. }) => return Err(TestCaseError::reject("does not fit")),
                Err(e) => return Err(TestCaseError::fail(e.to_string())),
            };
            let mut eval = Evaluator::new(model, &hw, opts.compute.clone(), opts.pool_growth, opts.host_reserve);
            for p in [&set.aggressive, &set.moderate] {
                let s = ServerSettings::from_args(&p.args).unwrap();
                let e = eval.evaluate(&s, &p.margins).unwrap();
                prop_assert!(e.fits_gpus(), "{:?} {:?}: {:?}", p.kind, p.args, e.gpus);
                prop_assert_eq!(p.placement.check(model), Ok(()));
            }
            let bytes = |p: &Plan| p.memory.gpus.iter().map(|g| g.weights).sum::<Bytes>();
            prop_assert!(bytes(&set.aggressive) >= bytes(&set.moderate));
        }

        /// A pinned `-ts` keeps every layer where it says, a pinned `-ot` keeps its tensors where it
        /// sends them, and the pins come first in the flags.
        #[test]
        fn plans_respect_pins(
            boundary in 2usize..11,
            pinned_layer in 0usize..12,
        ) {
            let model = &MODELS[0];
            let hw = hardware(&[9_000, 6_000]);
            let slots = model.n_layer_all + 1;
            let ts = vec![boundary as f32, (slots - boundary) as f32];
            let pin = TensorOverride {
                pattern: format!(r"blk\.{pinned_layer}\.ffn_up_exps"),
                target: OverrideTarget::Cpu,
            };
            let pins = Pins { n_gpu_layers: None, tensor_split: Some(ts), overrides: vec![pin.clone()] };
            let opts = PlanOptions {
                compute: ComputeReserve::Given(vec![Bytes::from_mib(300); 2]),
                pins,
                emulate_fit: false,
                ..PlanOptions::default()
            };
            let set = match plan(model, &settings(16_384, 512), &hw, &opts) {
                Ok(set) => set,
                Err(PlanError::DoesNotFit { .. }) => return Err(TestCaseError::reject("does not fit")),
                Err(e) => return Err(TestCaseError::fail(e.to_string())),
            };
            for p in [&set.aggressive, &set.moderate] {
                let layers = &p.memory.prediction.placement.layers;
                for (il, loc) in layers.iter().enumerate() {
                    let expected = if il < boundary { Location::Gpu(0) } else { Location::Gpu(1) };
                    prop_assert_eq!(*loc, expected, "layer {}", il);
                }
                let name = format!("blk.{pinned_layer}.ffn_up_exps.weight");
                let ti = model.tensors.iter().position(|t| t.name == name).unwrap();
                let tp = p.memory.prediction.placement.tensors.iter().find(|t| t.tensor == ti).unwrap();
                prop_assert_eq!(tp.location, Location::Host);
                prop_assert_eq!(tp.override_index, Some(0));
                let ot = p.placement_args.iter().position(|a| a == "-ot").unwrap();
                prop_assert!(p.placement_args[ot + 1].starts_with(&pin.to_string()));
            }
        }
    }
}

/// The `--n-cpu-moe` form, when a plan has one, places every tensor as the plan's own flags do.
#[test]
fn the_n_cpu_moe_form_places_as_the_plan() {
    let model =
        ModelDescription::from_gguf(&crate::model::testing::qwen3_coder_next(12, false).build()).unwrap();
    let gpus = vec!["CUDA0".to_owned(), "CUDA1".to_owned()];
    let layers = (0..12)
        .map(|il| {
            let dense = Device::Gpu(usize::from(il >= 7));
            let experts = ExpertPlacement::all(if il < 3 { Device::Cpu } else { dense });
            LayerPlacement { dense, experts }
        })
        .collect();
    let p = Placement { gpus, layers, output: Device::Gpu(1) };
    let form = planner::n_cpu_moe_form(&model, &p, &Pins::default()).unwrap();
    assert_eq!(form.join(" "), "-ngl 13 -ts 7,6 --n-cpu-moe 3 --fit off");
    let s = ServerSettings::from_args(&form).unwrap();
    let r = super::testing::resolve(&model, &s, &[1.0, 1.0]);
    for (t, d) in model.tensors.iter().zip(&r.tensors) {
        if let Some(d) = d {
            assert_eq!(*d, p.tensor_device(t), "{}", t.name);
        }
    }
    // A CPU layer after a GPU one has no such form.
    let mut q = p.clone();
    q.layers[9].experts = ExpertPlacement::all(Device::Cpu);
    assert_eq!(planner::n_cpu_moe_form(&model, &q, &Pins::default()), None);
}
