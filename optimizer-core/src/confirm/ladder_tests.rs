//! The planner's ladder for `confirm`, on the user's model and the emulated pair.

use super::ladder::{LADDER_CONTEXTS, planned_ladder};
use crate::bisect::{Outcome, Search, Shortfall};
use crate::plan::planner_tests::{Q5, fixture, h200_pair};
use crate::plan::{PlanOptions, plan};
use crate::settings::ServerSettings;
use crate::units::Bytes;

fn settings(ctx: u32) -> ServerSettings {
    let words = format!("-fa on -ctk q8_0 -ctv q8_0 -np 1 -c {ctx} -b 2048 -ub 512 --fit-target 128,1024");
    ServerSettings::from_args(&words.split(' ').collect::<Vec<_>>()).unwrap()
}

#[test]
fn aggressive_first_then_fewer_experts_then_context() {
    let model = fixture(Q5);
    let hw = h200_pair();
    let opts = PlanOptions::default();
    let ladder = planned_ladder(&model, &settings(262_144), &hw, &opts).unwrap();
    ladder.check().unwrap();
    assert!(ladder.has_predictions());
    let set = plan(&model, &settings(262_144), &hw, &PlanOptions { emulate_fit: false, ..opts }).unwrap();
    assert_eq!(ladder.aggressive, 0);
    assert_eq!(ladder.rungs[0].placement, set.aggressive.placement_args);
    let m = ladder.moderate.expect("the moderate plan is on the ladder");
    assert_eq!(ladder.rungs[m].placement, set.moderate.placement_args);
    assert!(m > 0, "{:#?}", ladder.rungs.iter().map(|r| &r.label).collect::<Vec<_>>());
    // Placements step back on every GPU; then the context steps, in the user's order.
    let placements: Vec<_> = ladder.rungs.iter().filter(|r| r.ctx_size.is_none()).collect();
    for w in placements.windows(2) {
        assert!(
            w[1].predicted.iter().zip(&w[0].predicted).all(|(a, b)| a <= b),
            "{} → {}",
            w[0].label,
            w[1].label
        );
        assert_ne!(w[0].placement, w[1].placement);
    }
    let contexts: Vec<u32> = ladder.rungs.iter().filter_map(|r| r.ctx_size).collect();
    assert_eq!(contexts, LADDER_CONTEXTS);
    let last = placements.last().unwrap();
    for r in ladder.rungs.iter().filter(|r| r.ctx_size.is_some()) {
        assert_eq!(r.placement, last.placement);
        assert!(r.predicted.iter().zip(&last.predicted).all(|(a, b)| a < b), "{}", r.label);
    }
}

#[test]
fn no_context_steps_at_a_short_context() {
    let ladder =
        planned_ladder(&fixture(Q5), &settings(10_240), &h200_pair(), &PlanOptions::default()).unwrap();
    assert!(ladder.rungs.iter().all(|r| r.ctx_size.is_none()));
}

/// An out-of-memory on the aggressive rung that lacked 700 MiB on CUDA1 skips the rungs that do
/// not free that much there: the search's hints work on the planner's predictions.
#[test]
fn an_oom_hint_skips_rungs_that_free_too_little() {
    let ladder =
        planned_ladder(&fixture(Q5), &settings(262_144), &h200_pair(), &PlanOptions::default()).unwrap();
    let mut search = Search::new(ladder.predictions(), ladder.aggressive).unwrap();
    assert_eq!(search.next(), Some(0));
    let lacked = Bytes::from_mib(700);
    search.record(0, Outcome::Fails { shortfall: Some(Shortfall { gpu: 1, bytes: Some(lacked) }) });
    let next = search.next().unwrap();
    let freed = ladder.rungs[0].predicted[1].saturating_sub(ladder.rungs[next].predicted[1]);
    assert!(freed >= lacked, "rung {next} frees {freed} on CUDA1");
}
