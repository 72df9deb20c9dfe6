//! Extending the planner's ladder past its last rung, on GLM-4.7-Flash Q8_0 and the emulated pair
//! as a user claimed it: 1,500 MiB more free on each GPU than llama.cpp will find, so that every
//! margin of the ladder gives the same placement and the ladder has one rung (the case seen on
//! the real pair).

use super::extend::{ExtendError, FIRST_EXTENSION_STEP, LadderExtender, MAX_EXTENSIONS};
use super::ladder::{Ladder, planned_ladder};
use crate::bisect::{Outcome, Search, Shortfall, Verdict};
use crate::model::ModelDescription;
use crate::plan::planner_tests::{Q5, fixture, h200_pair};
use crate::plan::{Hardware, PlanOptions};
use crate::settings::ServerSettings;
use crate::units::Bytes;

const GLM_Q8: &str = "GLM-4.7-Flash/GLM-4.7-Flash-Q8_0.gguf";

fn settings(ctx: u32) -> ServerSettings {
    let words = format!("-fa on -ctk q8_0 -ctv q8_0 -np 1 -c {ctx} -b 2048 -ub 512 --fit-target 128,1024");
    ServerSettings::from_args(&words.split(' ').collect::<Vec<_>>()).unwrap()
}

/// The emulated pair as the user claimed it: 1,500 MiB more on each GPU than llama.cpp finds.
fn claimed() -> Hardware {
    let real = h200_pair();
    let free: Vec<Bytes> = (0..2).map(|i| real.free_at_load(i) + Bytes::from_mib(1500)).collect();
    let mut hw = Hardware::from_free_at_load(&free, real.cuda_context).unwrap();
    hw.host_ram = real.host_ram;
    hw
}

fn glm() -> (ModelDescription, ServerSettings, Hardware, Ladder) {
    let model = fixture(GLM_Q8);
    let s = settings(131_072);
    let hw = claimed();
    let ladder = planned_ladder(&model, &s, &hw, &PlanOptions::default()).unwrap();
    (model, s, hw, ladder)
}

fn short(gpu: usize, mib: u64) -> Shortfall {
    Shortfall { gpu, bytes: Some(Bytes::from_mib(mib)) }
}

#[test]
fn the_collapsed_ladder_gets_a_rung_with_more_margin_where_it_ran_out() {
    let (model, s, hw, mut ladder) = glm();
    assert_eq!(ladder.rungs.len(), 1, "{:#?}", ladder.rungs);
    let top = ladder.rungs[0].clone();
    let mut ext = LadderExtender::new(&s, &PlanOptions::default());
    let e = ext.extend(&model, &hw, &mut ladder, short(1, 292)).unwrap();
    ladder.check().unwrap();
    assert!(ladder.has_predictions());
    assert_eq!((e.gpu, e.device.as_str(), e.rung), (1, "CUDA1", 1));
    assert_eq!(e.shortfall, Some(Bytes::from_mib(292)));
    assert!(e.added >= FIRST_EXTENSION_STEP, "{e:?}");
    let new = &ladder.rungs[1];
    assert!(new.label.starts_with("extension 1: "), "{}", new.label);
    assert!(new.label.contains(" margin on CUDA1: "), "{}", new.label);
    assert_ne!(new.placement, top.placement);
    assert!(new.predicted[1] < top.predicted[1], "{:?} → {:?}", top.predicted, new.predicted);
    // only the GPU that ran out gets more margin
    assert_eq!(new.margins, [top.margins[0], top.margins[1] + e.added]);
    assert_eq!(e.margins, new.margins);
    assert_eq!(ext.extensions(), [e]);
}

#[test]
fn the_step_doubles_and_the_extensions_are_bounded() {
    let (model, s, hw, mut ladder) = glm();
    let mut ext = LadderExtender::new(&s, &PlanOptions::default());
    for k in 0..MAX_EXTENSIONS {
        let before = ladder.rungs.last().unwrap().clone();
        let e = ext.extend(&model, &hw, &mut ladder, short(1, 100)).unwrap();
        assert!(e.added >= FIRST_EXTENSION_STEP.saturating_mul(1 << k), "extension {k}: {e:?}");
        let new = ladder.rungs.last().unwrap();
        assert!(new.predicted[1] < before.predicted[1], "extension {k}: {}", new.label);
        assert!(ladder.rungs[..ladder.rungs.len() - 1].iter().all(|r| r.placement != new.placement));
    }
    assert_eq!(ladder.rungs.len(), 1 + MAX_EXTENSIONS);
    let e = ext.extend(&model, &hw, &mut ladder, short(1, 100)).unwrap_err();
    assert!(matches!(e, ExtendError::Limit { max: MAX_EXTENSIONS }), "{e:?}");
    assert_eq!(e.to_string(), "at most 4 extensions are made");
    assert_eq!(ladder.rungs.len(), 1 + MAX_EXTENSIONS);
}

#[test]
fn a_shortfall_larger_than_the_step_is_added_whole() {
    let (model, s, hw, mut ladder) = glm();
    let mut ext = LadderExtender::new(&s, &PlanOptions::default());
    let e = ext.extend(&model, &hw, &mut ladder, short(1, 3000)).unwrap();
    assert!(e.added >= Bytes::from_mib(3000), "{e:?}");
    // a CUDA error at run time says no size: the step alone
    let e = ext.extend(&model, &hw, &mut ladder, Shortfall { gpu: 0, bytes: None }).unwrap();
    assert_eq!((e.device.as_str(), e.shortfall), ("CUDA0", None));
    assert!(e.added >= FIRST_EXTENSION_STEP.saturating_mul(2), "{e:?}");
    // the margins add up per GPU
    let last = ladder.rungs.last().unwrap();
    assert!(last.margins[1] >= ladder.rungs[0].margins[1] + Bytes::from_mib(3000), "{:?}", last.margins);
}

#[test]
fn nothing_fits_when_the_rest_cannot_go_to_system_ram() {
    let (model, s, mut hw, mut ladder) = glm();
    hw.host_ram = Some(Bytes::from_gib(6));
    let mut ext = LadderExtender::new(&s, &PlanOptions::default());
    let e = ext.extend(&model, &hw, &mut ladder, short(1, 20_000)).unwrap_err();
    assert!(matches!(&e, ExtendError::DoesNotFit { device, .. } if device == "CUDA1"), "{e:?}");
    assert!(e.to_string().starts_with("with a "), "{e}");
    assert_eq!(ladder.rungs.len(), 1);
    assert!(ext.extensions().is_empty());
    let e = ext.extend(&model, &hw, &mut ladder, short(2, 100)).unwrap_err();
    assert!(matches!(e, ExtendError::UnknownGpu { gpu: 2, gpus: 2 }), "{e:?}");
}

/// The search over the planned ladder runs out, the extension appends a rung, and the search goes
/// on there: one more launch.
#[test]
fn the_search_goes_on_over_the_extended_ladder() {
    let (model, s, hw, mut ladder) = glm();
    let mut search = Search::new(ladder.predictions(), ladder.aggressive).unwrap();
    assert_eq!(search.next(), Some(0));
    search.record(0, Outcome::Fails { shortfall: Some(short(1, 292)) });
    assert_eq!(search.next(), None);
    let lacked = search.exhausted_by().unwrap();
    assert_eq!(lacked, short(1, 292));
    let mut ext = LadderExtender::new(&s, &PlanOptions::default());
    let e = ext.extend(&model, &hw, &mut ladder, lacked).unwrap();
    search.extend(ladder.predictions()[e.rung..].to_vec()).unwrap();
    assert_eq!(search.next(), Some(e.rung));
    search.record(e.rung, Outcome::Fits { headroom: Some(vec![Bytes::ZERO, Bytes::ZERO]) });
    assert_eq!(search.next(), None);
    assert_eq!(search.verdict(), Verdict::Proven { rung: 1 });
}

/// A ladder that ends in context steps is extended at its planned context: the user steps the
/// context down only once the GPUs hold what fits. The GPU that did not run out keeps the
/// aggressive plan's margin.
#[test]
fn an_extension_plans_at_the_planned_context() {
    let model = fixture(Q5);
    let s = settings(262_144);
    let hw = h200_pair();
    let mut ladder = planned_ladder(&model, &s, &hw, &PlanOptions::default()).unwrap();
    let top = ladder.rungs.last().unwrap().clone();
    assert_eq!(top.ctx_size, Some(131_072));
    let mut ext = LadderExtender::new(&s, &PlanOptions::default());
    let e = ext.extend(&model, &hw, &mut ladder, short(0, 700)).unwrap();
    let new = &ladder.rungs[e.rung];
    assert_eq!(new.ctx_size, None);
    assert!(
        new.predicted[0] < top.predicted[0].saturating_sub(Bytes::from_mib(700)),
        "{:?} → {:?}",
        top.predicted,
        new.predicted
    );
    assert!(new.margins[0] >= top.margins[0] + Bytes::from_mib(700), "{:?}", new.margins);
    assert_eq!(new.margins[1], ladder.rungs[0].margins[1]);
    ladder.check().unwrap();
}
