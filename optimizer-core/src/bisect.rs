//! The search for the most GPU-resident placement that really works, as a pure function over launch
//! outcomes: no processes here (the CLI launches llama-server and reports each [`Outcome`]).
//!
//! The knob is how much sits on the GPUs. The planner provides a ladder of candidate placements,
//! from most to least GPU-resident (expert tensors and layers per GPU, then context steps), each
//! with its predicted use per GPU, and says which rung is its aggressive plan. The search starts
//! there and assumes monotonicity: a rung that fits means every less resident rung fits.
//!
//! Each outcome shrinks the range of rungs still in question, by what it proves and by what it
//! says:
//! - a failure proves every more resident rung fails; an out-of-memory failure also says which GPU
//!   lacked how much, so every following rung that does not free that much on that GPU (by the
//!   predictions) is skipped as well;
//! - a success proves every less resident rung fits; its measured headroom says how much more
//!   each GPU could take, so the rungs above it that would exceed it are skipped. The rungs above
//!   the aggressive plan are tried only when a success's headroom says they may fit.
//!
//! The next rung to launch is the most optimistic one the hints point to: the first rung that
//! frees enough, or the most resident rung the headroom allows. Without a hint it is the midpoint
//! of the range (plain bisection). The launch budget for a ladder of n rungs is ⌈log2(n)⌉ + 1, the
//! cost of plain bisection from the aggressive plan: a hinted probe is taken whenever plain
//! bisection of what would be left still fits in it, and once more beyond it (a hint is usually
//! right, and a launch takes minutes), so a search takes at most ⌈log2(n)⌉ + 2 launches when a
//! hint proves wrong, and the usual case (the aggressive plan, or the first rung its OOM points
//! to) one or two. An [`Outcome::Unknown`] (port in use, a crash without an out-of-memory line)
//! is retried once on the same rung, then counted as a failure without a hint; retries are not
//! counted against the budget.
//!
//! When every rung failed and the last failure lacked memory on a GPU ([`Search::exhausted_by`]),
//! the caller may append less resident rungs ([`Search::extend`]; `confirm` plans them with more
//! margin on that GPU, [`crate::confirm::extend`]): the search goes on over them alone, with their
//! own launch budget added.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::units::Bytes;

/// What one launch of a rung showed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// It loaded and survived the worst-case request.
    Fits {
        /// How much more each GPU could have taken, its safety margin already deducted
        /// (measured free memory at the request's peak less the margin; zero when below it).
        /// `None` when it could not be measured: nothing above this rung is then tried unless it
        /// is already known to be worth a try.
        headroom: Option<Vec<Bytes>>,
    },
    /// It ran out of memory, or failed in a way that more room would not fix either.
    Fails {
        /// Which GPU lacked how much, when the log says.
        shortfall: Option<Shortfall>,
    },
    /// Nothing can be concluded (port in use, a crash without an out-of-memory line).
    Unknown,
}

/// What a failed launch lacked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Shortfall {
    /// The GPU, an index into the ladder's per-GPU predictions.
    pub gpu: usize,
    /// How much it lacked; `None` when unknown (a CUDA error at run time): any reduction on that
    /// GPU may do.
    pub bytes: Option<Bytes>,
}

/// Why a ladder cannot be searched.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BisectError {
    /// No rungs.
    #[error("the ladder of candidate placements is empty")]
    Empty,
    /// The start is past the ladder.
    #[error("the aggressive plan is rung {start}, but the ladder has {len} rungs")]
    StartOutOfRange {
        /// The start.
        start: usize,
        /// The ladder's length.
        len: usize,
    },
    /// Rungs disagree on the number of GPUs.
    #[error("rung {rung} predicts {found} GPUs, rung 0 predicts {expected}")]
    GpuCount {
        /// The rung.
        rung: usize,
        /// Its GPU count.
        found: usize,
        /// Rung 0's.
        expected: usize,
    },
    /// Rungs appended while a rung may still fit.
    #[error(
        "the ladder can be extended only once every rung failed, but {open} rung(s) are still open or one fits"
    )]
    NotExhausted {
        /// The rungs still in question.
        open: usize,
    },
}

/// One launch and what it showed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    /// The rung launched.
    pub rung: usize,
    /// What it showed.
    pub outcome: Outcome,
    /// Whether this was the retry of an unknown outcome.
    pub retry: bool,
    /// Rungs skipped because of this outcome's hint (by the predictions, they would fail).
    pub skipped: Vec<usize>,
}

/// How a search ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// This rung was launched and fits; every more resident rung failed or was skipped.
    Proven {
        /// The rung.
        rung: usize,
    },
    /// No rung fits.
    NoneFits,
}

/// The state of a search. Ask [`Search::next`] which rung to launch, launch it, tell
/// [`Search::record`] what happened, until `next` says `None`; then [`Search::verdict`].
#[derive(Clone, Debug)]
pub struct Search {
    predicted: Vec<Vec<Bytes>>,
    start: usize,
    /// Every rung below `lo` fails (proven or skipped); every rung at or above `hi` fits
    /// (`hi == n`: none known to).
    lo: usize,
    hi: usize,
    budget: u32,
    launches: u32,
    retried: BTreeSet<usize>,
    /// The unknown outcome waiting for its retry.
    retry: Option<usize>,
    /// The last outcome pointed somewhere: probe optimistically.
    hinted: bool,
    /// 1 once a hinted probe was taken beyond the budget (allowed once).
    extra: u32,
    /// No rung has been proven to fit yet (the first success may open the rungs above start).
    first_fit: bool,
    history: Vec<Step>,
}

impl Search {
    /// A search over `predicted` (per rung, most to least GPU-resident, the predicted use of each
    /// GPU), starting at rung `start` (the aggressive plan).
    pub fn new(predicted: Vec<Vec<Bytes>>, start: usize) -> Result<Search, BisectError> {
        let n = predicted.len();
        if n == 0 {
            return Err(BisectError::Empty);
        }
        if start >= n {
            return Err(BisectError::StartOutOfRange { start, len: n });
        }
        let expected = predicted[0].len();
        if let Some((rung, p)) = predicted.iter().enumerate().find(|(_, p)| p.len() != expected) {
            return Err(BisectError::GpuCount { rung, found: p.len(), expected });
        }
        Ok(Search {
            predicted,
            start,
            lo: start,
            hi: n,
            budget: launch_budget(n),
            launches: 0,
            retried: BTreeSet::new(),
            retry: None,
            hinted: true,
            extra: 0,
            first_fit: true,
            history: Vec::new(),
        })
    }

    /// The rung to launch next, or `None` when the search is over.
    pub fn next(&self) -> Option<usize> {
        if let Some(r) = self.retry {
            return Some(r);
        }
        if self.launches == 0 {
            return Some(self.start);
        }
        if self.lo >= self.hi {
            return None;
        }
        let mid = self.lo + (self.hi - self.lo - 1) / 2;
        if !self.hinted {
            return Some(mid);
        }
        if self.within_budget(self.lo) || self.extra == 0 {
            return Some(self.lo);
        }
        (self.lo..=mid).find(|&p| self.within_budget(p)).or(Some(mid))
    }

    /// Whether probing `p` keeps the worst case within the budget: after it, plain bisection of
    /// what is left (whichever way it goes) must fit in the launches left.
    fn within_budget(&self, p: usize) -> bool {
        if p < self.lo || p >= self.hi {
            return false;
        }
        let left_if_fails = self.hi - p - 1;
        let left_if_fits = p - self.lo;
        self.launches + 1 + ceil_log2(left_if_fails.max(left_if_fits) + 1) <= self.budget + self.extra
    }

    /// Records what launching `rung` showed. `rung` should be what [`Search::next`] said; a rung
    /// outside the range still in question is recorded in the history and changes nothing else.
    pub fn record(&mut self, rung: usize, outcome: Outcome) {
        let is_retry = self.retry == Some(rung);
        self.retry = None;
        let mut step = Step { rung, outcome: outcome.clone(), retry: is_retry, skipped: Vec::new() };
        if rung >= self.predicted.len() {
            self.history.push(step);
            return;
        }
        if !is_retry && self.launches > 0 && self.hinted && rung == self.lo && !self.within_budget(rung) {
            self.extra = 1;
        }
        match outcome {
            Outcome::Unknown if !self.retried.contains(&rung) => {
                self.retried.insert(rung);
                self.retry = Some(rung);
                if !is_retry {
                    self.launches += 1;
                }
            }
            Outcome::Unknown => {
                if !is_retry {
                    self.launches += 1;
                }
                self.fail(rung, None, &mut step);
            }
            Outcome::Fails { shortfall } => {
                if !is_retry {
                    self.launches += 1;
                }
                self.fail(rung, shortfall, &mut step);
            }
            Outcome::Fits { headroom } => {
                if !is_retry {
                    self.launches += 1;
                }
                self.fit(rung, headroom.as_deref(), &mut step);
            }
        }
        self.history.push(step);
    }

    fn fail(&mut self, rung: usize, shortfall: Option<Shortfall>, step: &mut Step) {
        if rung >= self.hi {
            // contradicts a proven success: keep the proof, ignore the flake
            self.hinted = false;
            return;
        }
        let mut lo = self.lo.max(rung + 1);
        self.hinted = false;
        if let Some(s) = shortfall
            && s.gpu < self.predicted[rung].len()
        {
            let need = s.bytes.unwrap_or(Bytes::new(1)).get();
            let base = self.predicted[rung][s.gpu].get();
            let frees_enough = |j: usize| base.saturating_sub(self.predicted[j][s.gpu].get()) >= need;
            let first = (lo..self.hi).find(|&j| frees_enough(j)).unwrap_or(self.hi);
            step.skipped = (lo..first).collect();
            lo = first;
            self.hinted = true;
        }
        self.lo = lo.min(self.hi);
    }

    fn fit(&mut self, rung: usize, headroom: Option<&[Bytes]>, step: &mut Step) {
        if rung >= self.hi {
            self.hinted = false;
            return;
        }
        let first_fit = std::mem::replace(&mut self.first_fit, false);
        self.hi = rung;
        // The rungs above `rung` the measured headroom allows: scan up while every GPU's
        // predicted increase stays within it.
        let reach = headroom.map(|h| {
            let base = &self.predicted[rung];
            let allowed = |j: usize| {
                self.predicted[j]
                    .iter()
                    .zip(base)
                    .zip(h)
                    .all(|((p, b), room)| p.get() <= b.get() + room.get())
            };
            let mut k = rung;
            while k > 0 && allowed(k - 1) {
                k -= 1;
            }
            k
        });
        // Only a success of the aggressive plan itself, before anything failed, may open the
        // rungs above it, and only with a headroom to go by; afterwards the range only narrows,
        // which keeps the launch budget.
        let opening = first_fit && rung == self.start && self.lo == self.start;
        let lo = match (opening, reach) {
            (true, Some(k)) => k,
            (true, None) => rung,
            (false, Some(k)) => self.lo.max(k),
            (false, None) => self.lo,
        };
        step.skipped = (self.lo..lo).collect();
        self.lo = lo.min(self.hi);
        self.hinted = headroom.is_some();
    }

    /// When every rung failed and the last launch ran out of memory (or below its margin) on a
    /// GPU: that GPU and what the ladder's least resident rung still lacks there, by the
    /// predictions (the shortfall less what that rung frees against the failed one). `None` while
    /// the search goes on, once a rung fits, and when the last failure was not out of memory (a
    /// crash, a GPU the log did not name): more margin would not be known to help.
    pub fn exhausted_by(&self) -> Option<Shortfall> {
        if self.next().is_some() || self.verdict() != Verdict::NoneFits {
            return None;
        }
        let step = self.history.last()?;
        let Outcome::Fails { shortfall: Some(s) } = step.outcome else { return None };
        let top = self.predicted.last()?;
        let failed = self.predicted.get(step.rung)?;
        let freed = failed.get(s.gpu)?.saturating_sub(*top.get(s.gpu)?);
        Some(Shortfall { gpu: s.gpu, bytes: s.bytes.map(|b| b.saturating_sub(freed)) })
    }

    /// Appends rungs past the least resident one, each less resident than every rung before
    /// them, once every rung failed ([`Search::exhausted_by`]): the search goes on over the new
    /// rungs alone, the first of them launched next, with the launch budget of plain bisection
    /// over them added.
    pub fn extend(&mut self, predicted: Vec<Vec<Bytes>>) -> Result<(), BisectError> {
        let n = self.predicted.len();
        let open = self.open_range().len() + usize::from(self.retry.is_some());
        if open > 0 || self.verdict() != Verdict::NoneFits {
            return Err(BisectError::NotExhausted { open });
        }
        let expected = self.predicted[0].len();
        if let Some((i, p)) = predicted.iter().enumerate().find(|(_, p)| p.len() != expected) {
            return Err(BisectError::GpuCount { rung: n + i, found: p.len(), expected });
        }
        if predicted.is_empty() {
            return Ok(());
        }
        self.budget += launch_budget(predicted.len());
        self.predicted.extend(predicted);
        self.lo = n;
        self.hi = self.predicted.len();
        self.hinted = true;
        Ok(())
    }

    /// How the search ended (or stands): the most resident rung proven to fit.
    pub fn verdict(&self) -> Verdict {
        if self.hi < self.predicted.len() { Verdict::Proven { rung: self.hi } } else { Verdict::NoneFits }
    }

    /// The launches so far, retries of unknown outcomes included.
    pub fn launches(&self) -> usize {
        self.history.len()
    }

    /// The budget of launches, retries not counted: ⌈log2(n)⌉ + 1 (one more when a hint proved
    /// wrong).
    pub fn budget(&self) -> u32 {
        self.budget
    }

    /// Every launch and what it showed, in order.
    pub fn history(&self) -> &[Step] {
        &self.history
    }

    /// The rungs still in question: `lo..hi`.
    pub fn open_range(&self) -> std::ops::Range<usize> {
        self.lo..self.hi.max(self.lo)
    }
}

/// What [`bisect`] found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The verdict.
    pub verdict: Verdict,
    /// Every launch.
    pub history: Vec<Step>,
}

/// Runs a whole search with `launch` as the oracle.
pub fn bisect(
    predicted: Vec<Vec<Bytes>>,
    start: usize,
    mut launch: impl FnMut(usize) -> Outcome,
) -> Result<Report, BisectError> {
    let mut search = Search::new(predicted, start)?;
    while let Some(rung) = search.next() {
        let outcome = launch(rung);
        search.record(rung, outcome);
    }
    Ok(Report { verdict: search.verdict(), history: search.history })
}

/// The launches plain bisection of `n` rungs from the aggressive plan takes: ⌈log2(n)⌉ + 1. A
/// search takes at most one more (a hint that proved wrong), retries of unknown outcomes not
/// counted.
pub fn launch_budget(n: usize) -> u32 {
    ceil_log2(n) + 1
}

fn ceil_log2(n: usize) -> u32 {
    if n <= 1 { 0 } else { usize::BITS - (n - 1).leading_zeros() }
}

#[cfg(test)]
mod tests;
