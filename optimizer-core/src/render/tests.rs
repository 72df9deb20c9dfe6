//! Renderer tests: the `-ot` list under llama.cpp's semantics sends every tensor of real layouts
//! where the placement says (property test), and snapshots of hand-built plans.

use std::sync::LazyLock;

use proptest::prelude::*;

use super::*;
use crate::model::{ModelDescription, testing};
use crate::plan::testing::resolve;
use crate::plan::{Device, ExpertPlacement, LayerPlacement, Placement, expert_parts};
use crate::settings::ServerSettings;

fn describe(b: testing::Builder) -> ModelDescription {
    ModelDescription::from_gguf(&b.build()).expect("the layout describes")
}

/// Real layouts with fewer blocks: Qwen3-Coder-Next (gate/up/down, every 4th layer attention),
/// gpt-oss (expert biases), GLM-4.7-Flash with a dense first layer and a NextN block.
static MODELS: LazyLock<Vec<ModelDescription>> = LazyLock::new(|| {
    vec![
        describe(testing::qwen3_coder_next(24, false)),
        describe(testing::gpt_oss_120b(13)),
        describe(testing::glm_4_7_flash(12, true)),
    ]
});

fn cuda(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("CUDA{i}")).collect()
}

/// A placement drawn from proptest's numbers: a CPU prefix, contiguous GPU slices, and each expert
/// projection on its layer's device, the CPU or some GPU.
fn placement(
    model: &ModelDescription,
    n_gpus: usize,
    cpu_prefix: usize,
    cuts: &[usize],
    picks: &[u8],
) -> Placement {
    let l = model.n_layer_all;
    let prefix = cpu_prefix.min(l + 1);
    let mut cuts: Vec<usize> = cuts.iter().map(|c| prefix + c % (l + 2 - prefix)).take(n_gpus - 1).collect();
    cuts.sort_unstable();
    let slot_dev = |slot: usize| -> Device {
        if slot < prefix {
            return Device::Cpu;
        }
        Device::Gpu(cuts.iter().filter(|&&c| c <= slot).count())
    };
    let mut pick = picks.iter().cycle();
    let layers = (0..l)
        .map(|il| {
            let dense = slot_dev(il);
            let mut experts = ExpertPlacement::all(dense);
            for part in expert_parts(model, il) {
                let d = match pick.next().copied().unwrap_or(0) % 4 {
                    0 => dense,
                    1 | 2 => Device::Cpu,
                    _ => Device::Gpu(usize::from(*pick.next().unwrap_or(&0)) % n_gpus),
                };
                experts.set(part.part, d);
            }
            LayerPlacement { dense, experts }
        })
        .collect();
    Placement { gpus: cuda(n_gpus), layers, output: slot_dev(l) }
}

/// The flags of a placement, through the one settings parser.
fn parsed(flags: &PlacementFlags) -> ServerSettings {
    ServerSettings::from_args(&flags.args()).expect("the rendered flags parse")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The rendered `-ngl`/`-ts`/`-ot` send every tensor where the placement means it to go.
    #[test]
    fn flags_send_every_tensor_where_intended(
        which in 0usize..3,
        n_gpus in 1usize..=3,
        cpu_prefix in prop_oneof![3 => Just(0usize), 1 => 0usize..6],
        cuts in prop::collection::vec(any::<usize>(), 2),
        picks in prop::collection::vec(any::<u8>(), 1..64),
    ) {
        let model = &MODELS[which];
        let p = placement(model, n_gpus, cpu_prefix, &cuts, &picks);
        prop_assert_eq!(p.check(model), Ok(()));
        let flags = placement_flags(model, &p);
        let settings = parsed(&flags);
        prop_assert_eq!(&settings.overrides, &flags.overrides);
        prop_assert!(!settings.fit);
        let resolved = resolve(model, &settings, &vec![1.0; n_gpus]).tensors;
        for (t, got) in model.tensors.iter().zip(resolved) {
            let Some(got) = got else { continue };
            // A GPU that holds nothing is not among the model devices under -sm none; its
            // layers are empty, so there is nothing to compare.
            prop_assert_eq!(got, p.tensor_device(t), "{} with {:?}", t.name, flags.args());
        }
    }
}

/// Qwen3-Coder-Next, 48 layers, as the user split it by hand: layers 0-14 on CUDA0, 15-21 on
/// CUDA1, the other experts in RAM, the dense parts of 22-47 on CUDA1.
fn users_hand_split(model: &ModelDescription) -> Placement {
    let layers = (0..48)
        .map(|il| {
            let dense = if il < 15 { Device::Gpu(0) } else { Device::Gpu(1) };
            let experts =
                if il < 22 { ExpertPlacement::all(dense) } else { ExpertPlacement::all(Device::Cpu) };
            LayerPlacement { dense, experts }
        })
        .collect();
    let p = Placement { gpus: cuda(2), layers, output: Device::Gpu(1) };
    p.check(model).unwrap();
    p
}

#[test]
fn the_users_hand_split() {
    let model = describe(testing::qwen3_coder_next(48, false));
    let flags = placement_flags(&model, &users_hand_split(&model));
    insta::assert_snapshot!(flags.args().join(" "), @r"-ngl 49 -ts 15,34 -ot blk\.([0-9]|1[0-4])\.=CUDA0,blk\.(1[5-9]|2[0-1])\.=CUDA1,exps=CPU --fit off");
}

#[test]
fn partial_layers_and_a_straddle() {
    let model = describe(testing::qwen3_coder_next(48, false));
    let mut p = users_hand_split(&model);
    // Layers 25-29 keep gate and up on CUDA1 and send down to RAM; layer 14's down goes to CUDA1.
    for il in 25..30 {
        p.layers[il].experts = ExpertPlacement::all(Device::Gpu(1));
        p.layers[il].experts.down = Device::Cpu;
    }
    p.layers[14].experts.down = Device::Gpu(1);
    let flags = placement_flags(&model, &p);
    insta::assert_snapshot!(flags.args().join(" "), @r"-ngl 49 -ts 15,34 -ot blk\.(2[5-9])\.ffn_down_exps=CPU,blk\.14\.ffn_down_exps=CUDA1,blk\.([0-9]|1[0-4])\.=CUDA0,blk\.(1[5-9]|2[0-1]|2[5-9])\.=CUDA1,exps=CPU --fit off");
}

#[test]
fn everything_on_the_gpus_needs_no_overrides() {
    let model = describe(testing::glm_4_7_flash(47, false));
    let layers = (0..47)
        .map(|il| {
            let d = Device::Gpu(usize::from(il >= 30));
            LayerPlacement { dense: d, experts: ExpertPlacement::all(d) }
        })
        .collect();
    let p = Placement { gpus: cuda(2), layers, output: Device::Gpu(1) };
    let flags = placement_flags(&model, &p);
    insta::assert_snapshot!(flags.args().join(" "), @"-ngl 48 -ts 30,18 --fit off");
}

#[test]
fn one_gpu_of_two() {
    let model = describe(testing::glm_4_7_flash(47, false));
    let p = Placement::all_on(cuda(2), 47, 1);
    let flags = placement_flags(&model, &p);
    insta::assert_snapshot!(flags.args().join(" "), @"-ngl 48 -sm none -mg 1 --fit off");
}

mod plan_outputs {
    use crate::model::{ModelDescription, testing};
    use crate::plan::devices::parse_gpu_list;
    use crate::plan::planner_tests::{Q5, fixture, h200_pair};
    use crate::plan::{
        CUDA_CONTEXT_OVERHEAD, ComputeReserve, ContextStep, Hardware, Pins, PlanOptions, PlanSet, plan,
    };
    use crate::render::plan::{PlanReport, ReportInputs, TextStyle, json};
    use crate::render::{ProfileForm, profile_changes, profile_lines, server_command};
    use crate::settings::ServerSettings;
    use crate::settings::{OverrideTarget, TensorOverride};
    use crate::units::Bytes;

    const MODELS_CONF: &str = include_str!("../../../fixtures/models.conf");

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    fn q5_plan() -> PlanSet {
        let s = ServerSettings::from_args(&args(
            "-fa on -ctk q8_0 -ctv q8_0 -np 1 -c 262144 -b 2048 -ub 2048 --fit-target 128,1024",
        ))
        .unwrap();
        plan(&fixture(Q5), &s, &h200_pair(), &PlanOptions::default()).unwrap()
    }

    /// The user's profile (`-ub 512`, 262,144 tokens) planned on the emulated pair and written
    /// back: N_GPU_LAYERS and EXTRA_ARGS change, nothing else in the file.
    #[test]
    fn the_profile_lines_of_a_plan() {
        let conf = crate::profile::parse(MODELS_CONF).unwrap();
        let settings = conf.find("qwen3-coder-ud-q5").unwrap().server_settings().unwrap();
        let set = plan(&fixture(Q5), &settings, &h200_pair(), &PlanOptions::default()).unwrap();
        let changes = profile_changes(&set.aggressive, ProfileForm::Flags, None).unwrap();
        insta::assert_snapshot!(profile_lines(MODELS_CONF, "qwen3-coder-ud-q5", &changes).unwrap(), @r"
        [qwen3-coder-ud-q5]
        NAME=Qwen3-Coder-Next UD-Q5_K_XL
        DESCRIPTION=Coding agents, agentic tasks
        SPEED=~26 t/s
        MODEL=Qwen3-Coder-Next/UD-Q5_K_XL/Qwen3-Coder-Next-UD-Q5_K_XL-00001-of-00003.gguf
        CTX_SIZE=262144
        N_GPU_LAYERS=49
        FIT=off
        EXTRA_ARGS=--jinja -np 1 -b 2048 -ub 512 --no-context-shift --temp 1.0 --top-p 0.95 --top-k 40 --min-p 0.01 -ts 19,30 -ot blk\.([0-9]|1[0-8])\.=CUDA0,blk\.(19|2[0-6])\.=CUDA1,exps=CPU
        ");
        let text = crate::profile::rewrite_profile(MODELS_CONF, "qwen3-coder-ud-q5", &changes).unwrap();
        let before: Vec<&str> = MODELS_CONF.lines().collect();
        let after: Vec<&str> = text.lines().collect();
        assert_eq!(before.len(), after.len());
        let changed: Vec<&str> = (0..before.len())
            .filter(|&i| before[i] != after[i])
            .map(|i| before[i].split('=').next().unwrap())
            .collect();
        assert_eq!(changed, ["N_GPU_LAYERS", "EXTRA_ARGS"]);
    }

    #[test]
    fn the_command_of_a_plan() {
        let set = q5_plan();
        insta::assert_snapshot!(server_command(&set.aggressive.args), @r"llama-server -c 262144 -ub 2048 -np 1 -fa on -ctk q8_0 -ctv q8_0 -ngl 49 -ts 26,23 -ot 'blk\.17\.ffn_(down|gate)_exps=CPU,blk\.([0-9]|1[0-7])\.=CUDA0,blk\.(2[6-9]|3[0-3])\.=CUDA1,exps=CPU' --fit off --fit-target 128,1024");
    }

    /// A small model on two small GPUs: the whole report.
    #[test]
    fn the_json_report() {
        let model = ModelDescription::from_gguf(&testing::qwen3_coder_next(4, false).build()).unwrap();
        let mut hw = Hardware::from_free_at_load(
            &[Bytes::from_mib(3000), Bytes::from_mib(2000)],
            CUDA_CONTEXT_OVERHEAD,
        )
        .unwrap();
        hw.gpus[0].bandwidth_gbs = Some(1008.0);
        hw.gpus[1].bandwidth_gbs = Some(896.0);
        hw.host_bandwidth_gbs = Some(40.0);
        hw.host_ram = Some(Bytes::from_gib(64));
        let s = ServerSettings::from_args(&args(
            "-fa on -ctk q8_0 -ctv q8_0 -np 1 -c 32768 -ub 512 --fit-target 128,1024",
        ))
        .unwrap();
        let opts = PlanOptions {
            compute: ComputeReserve::Given(vec![Bytes::from_mib(300), Bytes::from_mib(250)]),
            ..PlanOptions::default()
        };
        let set = plan(&model, &s, &hw, &opts).unwrap();
        insta::assert_snapshot!(json(&PlanReport::new(&model, &set)));
    }

    /// The small model on two small GPUs, the report as text and JSON with its inputs, a pin and
    /// context steps; a third GPU that holds nothing.
    fn small_report() -> (ModelDescription, Hardware, PlanSet, PlanReport) {
        let model = ModelDescription::from_gguf(&testing::qwen3_coder_next(4, false).build()).unwrap();
        let mut hw =
            Hardware::new(parse_gpu_list("4000,3000").unwrap()).with_cuda_context(CUDA_CONTEXT_OVERHEAD);
        hw.gpus[0].bandwidth_gbs = Some(1008.0);
        hw.host_bandwidth_gbs = Some(40.0);
        hw.host_ram = Some(Bytes::from_gib(64));
        let s = ServerSettings::from_args(&args(
            "-fa on -ctk q8_0 -ctv q8_0 -np 1 -c 32768 -ub 512 --fit-target 128,1024",
        ))
        .unwrap();
        let pins = Pins {
            overrides: vec![TensorOverride {
                pattern: r"blk\.0\.ffn_down_exps".into(),
                target: OverrideTarget::Cpu,
            }],
            ..Pins::default()
        };
        let opts = PlanOptions {
            compute: ComputeReserve::Given(vec![Bytes::from_mib(300), Bytes::from_mib(250)]),
            pins: pins.clone(),
            ..PlanOptions::default()
        };
        let mut settings = s.clone();
        settings.overrides.clone_from(&pins.overrides);
        let set = plan(&model, &settings, &hw, &opts).unwrap();
        let mut report = PlanReport::new(&model, &set).with_inputs(&ReportInputs {
            profile: Some("small"),
            hardware: &hw,
            settings: &settings,
            pins: &pins,
        });
        report.context_steps = vec![
            ContextStep {
                n_ctx: 16_384,
                fits: true,
                decode_tps: Some(report.plans[0].speed.decode_tps + 1.5),
                gpu_expert_layers: Some(4),
            },
            ContextStep { n_ctx: 8_192, fits: false, decode_tps: None, gpu_expert_layers: None },
        ];
        (model, hw, set, report)
    }

    #[test]
    fn the_text_report() {
        let (_, _, _, report) = small_report();
        let text = crate::render::plan::text(&report, TextStyle::default());
        assert!(!text.contains('\x1b'));
        insta::assert_snapshot!(text);
        let painted = crate::render::plan::text(&report, TextStyle { colour: true });
        assert!(painted.contains("\x1b[34m"));
        assert_eq!(strip_ansi(&painted), text);
    }

    fn strip_ansi(s: &str) -> String {
        regex::Regex::new("\x1b\\[[0-9;]*m").unwrap().replace_all(s, "").into_owned()
    }

    #[test]
    fn the_json_report_with_its_inputs() {
        let (_, _, _, report) = small_report();
        let v: serde_json::Value = serde_json::from_str(&json(&report)).unwrap();
        assert_eq!(v["profile"], "small");
        assert_eq!(v["machine"][0]["card"], "4000 GPU");
        assert_eq!(v["pinned"], serde_json::json!(["-ot", r"blk\.0\.ffn_down_exps=CPU"]));
        assert_eq!(v["fit"]["fit_target_bytes"], serde_json::json!([128 << 20, 1024 << 20]));
        assert_eq!(v["context_steps"][1]["fits"], false);
    }

    #[test]
    fn the_advice_document() {
        use crate::render::advice::{AdviceDoc, Current, ModelAdvice, ProfileAdvice, markdown};
        let (model, hw, set, report) = small_report();
        let s = ServerSettings::from_args(&args("-fa on -c 32768 -ot exps=CPU")).unwrap();
        let assessed = crate::plan::assess(
            &model,
            &s,
            &hw,
            &PlanOptions {
                compute: ComputeReserve::Given(vec![Bytes::from_mib(300), Bytes::from_mib(250)]),
                ..PlanOptions::default()
            },
        )
        .unwrap();
        let lines = |p: &crate::plan::Plan| vec![format!("EXTRA_ARGS=-fa on {}", p.placement_args.join(" "))];
        let doc = AdviceDoc {
            date: "2026-11-22".into(),
            llama_build: 11434,
            machine: report.machine.clone(),
            host_ram: hw.host_ram,
            host_bandwidth_gbs: hw.host_bandwidth_gbs,
            models: vec![ModelAdvice {
                title: "Small".into(),
                model_path: "small.gguf".into(),
                facts: vec!["`qwen3next`, 4 layers".into()],
                error: None,
                profiles: vec![
                    ProfileAdvice {
                        id: "small".into(),
                        name: Some("Small model".into()),
                        current_lines: vec!["EXTRA_ARGS=-fa on -ot exps=CPU".into()],
                        settings: "32,768 tokens".into(),
                        current: Current::from_assessment(&model, &assessed),
                        plans: Ok(report.clone()),
                        suggestions: [lines(&set.aggressive), lines(&set.moderate)],
                        give_up: Vec::new(),
                    },
                    ProfileAdvice {
                        id: "huge".into(),
                        name: None,
                        current_lines: vec!["CTX_SIZE=262144".into()],
                        settings: "262,144 tokens".into(),
                        current: Current::Unknown("no GPU holds its dense parts".into()),
                        plans: Err(
                            "CUDA0 with its margin needs 9 GiB but 3 GiB is available: 6 GiB short".into()
                        ),
                        suggestions: [Vec::new(), Vec::new()],
                        give_up: vec![ContextStep {
                            n_ctx: 131_072,
                            fits: true,
                            decode_tps: Some(12.25),
                            gpu_expert_layers: Some(0),
                        }],
                    },
                ],
            }],
        };
        let md = markdown(&doc);
        assert_eq!(md.matches("| Metric | Value |").count(), 4);
        insta::assert_snapshot!(md);
    }
}
