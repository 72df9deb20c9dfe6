//! The search, tested without processes: hand-made cases for the usual paths, and properties
//! (after cargo-bisect-rustc's `least_satisfying` tests) over random ladders and oracles.

// Oracles compute with signed byte counts and compare launch counts with the u32 budget.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)]

use proptest::prelude::*;

use super::*;

const MIB: u64 = 1 << 20;

fn mib(n: u64) -> Bytes {
    Bytes::from_mib(n)
}

/// A ladder of `n` rungs over two GPUs where each rung frees `step` MiB on GPU `gpu` only.
fn ladder(n: usize, gpu: usize, step: u64) -> Vec<Vec<Bytes>> {
    (0..n as u64)
        .map(|i| {
            let mut p = vec![mib(20_000), mib(12_000)];
            p[gpu] = mib(20_000 - i * step);
            p
        })
        .collect()
}

#[test]
fn aggressive_plan_fits_in_one_launch() {
    let r = bisect(ladder(10, 1, 300), 3, |_| Outcome::Fits { headroom: None }).unwrap();
    assert_eq!(r.verdict, Verdict::Proven { rung: 3 });
    assert_eq!(r.history.len(), 1);
}

#[test]
fn oom_points_at_the_first_rung_that_frees_enough() {
    // rung 3 lacks 700 MiB on GPU 1; each rung frees 300 MiB there: rungs 4 and 5 are skipped
    let mut launched = Vec::new();
    let r = bisect(ladder(20, 1, 300), 3, |i| {
        launched.push(i);
        if i < 6 {
            Outcome::Fails { shortfall: Some(Shortfall { gpu: 1, bytes: Some(mib(700)) }) }
        } else {
            Outcome::Fits { headroom: Some(vec![mib(5000), mib(200)]) }
        }
    })
    .unwrap();
    assert_eq!(launched, vec![3, 6]);
    assert_eq!(r.verdict, Verdict::Proven { rung: 6 });
    assert_eq!(r.history[0].skipped, vec![4, 5]);
}

#[test]
fn oom_on_a_gpu_no_rung_relieves_ends_without_more_launches() {
    // the ladder only moves GPU 0; GPU 1 is short
    let r = bisect(ladder(8, 0, 300), 0, |_| Outcome::Fails {
        shortfall: Some(Shortfall { gpu: 1, bytes: Some(mib(10)) }),
    })
    .unwrap();
    assert_eq!(r.verdict, Verdict::NoneFits);
    assert_eq!(r.history.len(), 1);
}

#[test]
fn success_with_headroom_tries_further_up() {
    // start at rung 5; each rung up costs 300 MiB on GPU 0; 700 MiB of headroom: rung 3 may fit
    let mut launched = Vec::new();
    let r = bisect(ladder(10, 0, 300), 5, |i| {
        launched.push(i);
        if i == 5 {
            Outcome::Fits { headroom: Some(vec![mib(700), mib(700)]) }
        } else {
            Outcome::Fits { headroom: Some(vec![mib(100), mib(700)]) }
        }
    })
    .unwrap();
    assert_eq!(launched, vec![5, 3]);
    assert_eq!(r.verdict, Verdict::Proven { rung: 3 });
}

#[test]
fn success_without_headroom_goes_no_further() {
    let r = bisect(ladder(10, 0, 300), 5, |_| Outcome::Fits { headroom: None }).unwrap();
    assert_eq!(r.history.len(), 1);
    assert_eq!(r.verdict, Verdict::Proven { rung: 5 });
}

#[test]
fn headroom_too_small_for_the_next_rung_stops() {
    let r = bisect(ladder(10, 0, 300), 5, |_| Outcome::Fits { headroom: Some(vec![mib(299), mib(9000)]) })
        .unwrap();
    assert_eq!(r.history.len(), 1);
}

#[test]
fn unknown_is_retried_once_then_counts_as_failure() {
    let mut launched = Vec::new();
    let r = bisect(ladder(4, 0, 300), 0, |i| {
        launched.push(i);
        if i == 0 { Outcome::Unknown } else { Outcome::Fits { headroom: None } }
    })
    .unwrap();
    assert_eq!(&launched[..2], &[0, 0]);
    assert!(r.history[1].retry);
    assert_eq!(r.verdict, Verdict::Proven { rung: 1 });

    // an unknown then a fit on the retry: the rung is proven
    let mut first = true;
    let r = bisect(ladder(4, 0, 300), 2, |_| {
        if std::mem::take(&mut first) { Outcome::Unknown } else { Outcome::Fits { headroom: None } }
    })
    .unwrap();
    assert_eq!(r.verdict, Verdict::Proven { rung: 2 });
    assert_eq!(r.history.len(), 2);
}

#[test]
fn runtime_oom_without_size_steps_to_any_relief_on_that_gpu() {
    // rungs 0-2 move GPU 0 only, rung 3 is the first to free anything on GPU 1
    let mut p = ladder(6, 0, 100);
    for (i, rung) in p.iter_mut().enumerate() {
        if i >= 3 {
            rung[1] = mib(11_000);
        }
    }
    let mut launched = Vec::new();
    let r = bisect(p, 0, |i| {
        launched.push(i);
        if i < 3 {
            Outcome::Fails { shortfall: Some(Shortfall { gpu: 1, bytes: None }) }
        } else {
            Outcome::Fits { headroom: None }
        }
    })
    .unwrap();
    assert_eq!(launched, vec![0, 3]);
    assert_eq!(r.verdict, Verdict::Proven { rung: 3 });
}

#[test]
fn bad_ladders() {
    assert_eq!(Search::new(vec![], 0).unwrap_err(), BisectError::Empty);
    assert_eq!(
        Search::new(ladder(3, 0, 1), 3).unwrap_err(),
        BisectError::StartOutOfRange { start: 3, len: 3 }
    );
    let mut p = ladder(3, 0, 1);
    p[2].pop();
    assert_eq!(Search::new(p, 0).unwrap_err(), BisectError::GpuCount { rung: 2, found: 1, expected: 2 });
}

#[test]
fn budget() {
    assert_eq!(launch_budget(1), 1);
    assert_eq!(launch_budget(2), 2);
    assert_eq!(launch_budget(3), 3);
    assert_eq!(launch_budget(4), 3);
    assert_eq!(launch_budget(5), 4);
    assert_eq!(launch_budget(256), 9);
}

/// A ladder whose per-GPU predictions never increase from rung to rung, so that an oracle built
/// from a per-GPU budget is monotone.
fn monotone_ladder() -> impl Strategy<Value = Vec<Vec<Bytes>>> {
    (1usize..3, 1usize..48).prop_flat_map(|(gpus, n)| {
        prop::collection::vec(prop::collection::vec(0u64..800, gpus), n).prop_map(move |steps| {
            let mut cur = vec![30_000u64; gpus];
            steps
                .into_iter()
                .map(|s| {
                    let rung: Vec<Bytes> = cur.iter().map(|&c| mib(c)).collect();
                    for (c, d) in cur.iter_mut().zip(s) {
                        *c = c.saturating_sub(d);
                    }
                    rung
                })
                .collect()
        })
    })
}

proptest! {
    /// A monotone oracle that gives no hints: the search finds the most resident fitting rung at or
    /// below the start (nothing above the start is tried without headroom), within the budget.
    #[test]
    fn finds_the_threshold_without_hints(n in 1usize..200, start in 0usize..1000, t in 0usize..220) {
        let start = start % n;
        let p = vec![vec![Bytes::ZERO]; n];
        let r = bisect(p, start, |i| {
            if i >= t { Outcome::Fits { headroom: None } } else { Outcome::Fails { shortfall: None } }
        }).unwrap();
        let expected = if t >= n { Verdict::NoneFits } else { Verdict::Proven { rung: t.max(start) } };
        prop_assert_eq!(r.verdict, expected);
        prop_assert!(r.history.len() as u32 <= launch_budget(n), "{} launches > {}", r.history.len(), launch_budget(n));
    }

    /// A truthful oracle: real use is the prediction plus a fixed error per GPU; a failure names
    /// the GPU most over its budget and by how much, a success the room left on each. The search
    /// finds the most resident fitting rung of the whole ladder (above the start too), within the
    /// budget and one more (with two GPUs, a hint about one may land on a rung the other cannot
    /// take).
    #[test]
    fn finds_the_best_rung_with_truthful_hints(
        ladder in monotone_ladder(),
        start in 0usize..1000,
        error in prop::collection::vec(-600i64..600, 2),
        budget in prop::collection::vec(20_000u64..31_000, 2),
    ) {
        let n = ladder.len();
        let gpus = ladder[0].len();
        let start = start % n;
        let real = |i: usize, d: usize| ladder[i][d].get() as i64 + error[d] * MIB as i64;
        let over = |i: usize| -> Vec<i64> { (0..gpus).map(|d| real(i, d) - (budget[d] * MIB) as i64).collect() };
        let fits = |i: usize| over(i).iter().all(|&o| o <= 0);
        let r = bisect(ladder.clone(), start, |i| {
            let o = over(i);
            if o.iter().all(|&x| x <= 0) {
                Outcome::Fits { headroom: Some(o.iter().map(|&x| Bytes::new((-x) as u64)).collect()) }
            } else {
                let (gpu, &x) = o.iter().enumerate().max_by_key(|(_, x)| **x).unwrap();
                Outcome::Fails { shortfall: Some(Shortfall { gpu, bytes: Some(Bytes::new(x as u64)) }) }
            }
        }).unwrap();
        let best = (0..n).find(|&i| fits(i));
        match best {
            None => prop_assert_eq!(r.verdict, Verdict::NoneFits),
            Some(b) => {
                // from a failing start the rungs above it are out of reach; from a fitting start
                // the headroom leads to the best
                let expected = if fits(start) { b } else { b.max(start) };
                prop_assert_eq!(r.verdict, Verdict::Proven { rung: expected });
            }
        }
        prop_assert!(r.history.len() as u32 <= launch_budget(n) + 1);
        // the usual case: one GPU short at the start, the hint lands on a fitting rung
        if !fits(start) && gpus == 1 && best.is_some() {
            prop_assert!(r.history.len() <= 2, "{:?}", r.history);
        }
    }

    /// Any oracle at all (not monotone, random hints, unknowns): the search ends, never returns a
    /// rung that did not fit when launched, and stays within the budget, one wrong hint and one
    /// retry per unknown.
    #[test]
    fn never_returns_a_failed_rung(
        ladder in monotone_ladder(),
        start in 0usize..1000,
        answers in prop::collection::vec((0u8..4, 0usize..3, 0u64..3000, prop::collection::vec(0u64..3000, 2)), 1..64),
    ) {
        let n = ladder.len();
        let start = start % n;
        let mut k = 0;
        let r = bisect(ladder, start, |_| {
            let (kind, gpu, short, room) = &answers[k % answers.len()];
            k += 1;
            match kind {
                0 => Outcome::Fits { headroom: Some(room.iter().map(|&m| mib(m)).collect()) },
                1 => Outcome::Fits { headroom: None },
                2 => Outcome::Fails { shortfall: Some(Shortfall { gpu: *gpu, bytes: Some(mib(*short)) }) },
                _ => Outcome::Unknown,
            }
        }).unwrap();
        if let Verdict::Proven { rung } = r.verdict {
            let fitted = r.history.iter().any(|s| s.rung == rung && matches!(s.outcome, Outcome::Fits { .. }));
            prop_assert!(fitted, "rung {} never fitted: {:?}", rung, r.history);
        }
        let retries = r.history.iter().filter(|s| s.retry).count() as u32;
        prop_assert!(r.history.len() as u32 <= launch_budget(n) + 1 + retries, "{:?}", r.history);
        prop_assert!(retries <= launch_budget(n) + 1);
    }
}

#[test]
fn a_ladder_is_extended_only_once_every_rung_failed() {
    let mut s = Search::new(ladder(3, 1, 300), 0).unwrap();
    assert_eq!(s.exhausted_by(), None);
    assert_eq!(s.extend(ladder(1, 1, 0)), Err(BisectError::NotExhausted { open: 3 }));
    s.record(0, Outcome::Fits { headroom: None });
    assert_eq!(s.next(), None);
    assert_eq!(s.exhausted_by(), None, "a rung fits");
    assert_eq!(s.extend(ladder(1, 1, 0)), Err(BisectError::NotExhausted { open: 0 }));
}

#[test]
fn the_search_goes_on_over_appended_rungs() {
    // rung 0 lacks 2,000 MiB on GPU 1; rungs 1 and 2 free 300 and 600: skipped, nothing left
    let mut s = Search::new(ladder(3, 1, 300), 0).unwrap();
    s.record(0, Outcome::Fails { shortfall: Some(Shortfall { gpu: 1, bytes: Some(mib(2000)) }) });
    assert_eq!(s.next(), None);
    assert_eq!(s.verdict(), Verdict::NoneFits);
    // the last rung still lacks 2,000 − 600 MiB
    assert_eq!(s.exhausted_by(), Some(Shortfall { gpu: 1, bytes: Some(mib(1400)) }));
    let budget = s.budget();
    let more = vec![vec![mib(20_000), mib(18_000)], vec![mib(20_000), mib(17_000)]];
    assert_eq!(s.extend(vec![vec![mib(1)]]), Err(BisectError::GpuCount { rung: 3, found: 1, expected: 2 }));
    s.extend(more).unwrap();
    assert_eq!(s.budget(), budget + launch_budget(2));
    assert_eq!(s.open_range(), 3..5);
    assert_eq!(s.next(), Some(3));
    s.record(3, Outcome::Fails { shortfall: Some(Shortfall { gpu: 1, bytes: Some(mib(500)) }) });
    assert_eq!(s.next(), Some(4));
    s.record(4, Outcome::Fits { headroom: Some(vec![mib(5000), mib(5000)]) });
    // the headroom never sends the search back to the rungs that failed
    assert_eq!(s.next(), None);
    assert_eq!(s.verdict(), Verdict::Proven { rung: 4 });
}

#[test]
fn no_extension_after_a_failure_that_was_not_out_of_memory() {
    // a crash, retried, crashes again
    let mut s = Search::new(ladder(1, 1, 300), 0).unwrap();
    s.record(0, Outcome::Unknown);
    s.record(0, Outcome::Unknown);
    assert_eq!((s.next(), s.verdict()), (None, Verdict::NoneFits));
    assert_eq!(s.exhausted_by(), None);
    // out of memory on a GPU the log did not name
    let mut s = Search::new(ladder(1, 1, 300), 0).unwrap();
    s.record(0, Outcome::Fails { shortfall: None });
    assert_eq!(s.exhausted_by(), None);
    // a size unknown (CUDA at run time): the GPU alone
    let mut s = Search::new(ladder(1, 1, 300), 0).unwrap();
    s.record(0, Outcome::Fails { shortfall: Some(Shortfall { gpu: 0, bytes: None }) });
    assert_eq!(s.exhausted_by(), Some(Shortfall { gpu: 0, bytes: None }));
}
