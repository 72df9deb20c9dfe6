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
