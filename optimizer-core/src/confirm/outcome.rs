//! What a launch's end means: the facts a launcher observed (how far the server got, how it
//! exited) and its log become one [`Classification`], and that becomes the search's
//! [`Outcome`](crate::bisect::Outcome), or a reason to stop searching altogether.

use serde::Serialize;

use super::log::{Failure, LaunchLog, OutOfMemory};
use crate::bisect::{Outcome, Shortfall};
use crate::units::Bytes;

/// How far a launch got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Started, `/health` never said 200.
    Loading,
    /// Loaded (`/health` 200); the worst-case request did not finish.
    Ready,
    /// The worst-case request finished.
    Verified,
}

/// How the process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum ExitKind {
    /// It was still running when the launcher stopped it.
    Stopped,
    /// It exited on its own with this code.
    Code(i32),
    /// It was killed by this signal, not sent by the launcher (SIGABRT from `GGML_ABORT`).
    Signal(i32),
}

/// What the launcher saw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LaunchFacts {
    /// How far it got.
    pub reached: Phase,
    /// How it ended.
    pub exit: ExitKind,
    /// The launcher gave up waiting (load or request timeout) and stopped it.
    pub timed_out: bool,
    /// The worst-case request failed (HTTP status or connection error), if it did.
    pub request_error: Option<String>,
}

/// What a launch showed, for the report and the search.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Classification {
    /// Loaded and survived the worst-case request.
    Fits,
    /// Ran out of GPU memory.
    OutOfMemory {
        /// What the log said.
        oom: OutOfMemory,
        /// How much more the device needed, when the log allows an estimate.
        shortfall: Option<Bytes>,
    },
    /// Its HTTP port was taken: nothing learned about memory.
    PortInUse,
    /// It died or misbehaved without an out-of-memory line: maybe flaky.
    Crashed {
        /// How it ended.
        exit: ExitKind,
        /// How far it got.
        reached: Phase,
        /// What went wrong, in words.
        detail: String,
    },
    /// It never became ready, or the request never finished, within the timeout.
    Hung {
        /// How far it got.
        reached: Phase,
    },
    /// A failure no placement can fix (the model does not load, an argument this build refuses,
    /// system RAM exhausted): the search stops.
    Fatal {
        /// What went wrong, in words.
        reason: String,
    },
}

/// Buffer types in system RAM: running out there is not fixed by moving weights off the GPUs.
const HOST_BUFFERS: [&str; 4] = ["CPU", "CPU_Mapped", "CUDA_Host", "CPU_REPACK"];

/// Classifies a launch from what the launcher saw and what the server logged.
pub fn classify(facts: &LaunchFacts, log: &LaunchLog) -> Classification {
    if let Some(oom) = log.oom() {
        let on_host = oom.device.as_deref().is_some_and(|d| HOST_BUFFERS.contains(&d));
        if on_host {
            return Classification::Fatal {
                reason: format!(
                    "system RAM ran out allocating {} ({} buffer)",
                    oom.stage.describe(),
                    oom.device.as_deref().unwrap_or("host")
                ),
            };
        }
        return Classification::OutOfMemory { oom: oom.clone(), shortfall: log.shortfall(oom) };
    }
    if log.failures.iter().any(|f| matches!(f, Failure::PortInUse { .. })) {
        return Classification::PortInUse;
    }
    if let Some(Failure::LoadError { message }) =
        log.failures.iter().find(|f| matches!(f, Failure::LoadError { .. }))
    {
        return Classification::Fatal { reason: message.clone() };
    }
    if facts.timed_out {
        return Classification::Hung { reached: facts.reached };
    }
    if facts.reached == Phase::Verified && facts.request_error.is_none() {
        return match facts.exit {
            ExitKind::Stopped => Classification::Fits,
            exit => Classification::Crashed {
                exit,
                reached: facts.reached,
                detail: "it exited on its own after the request".to_string(),
            },
        };
    }
    let detail = match (&facts.request_error, log.failures.first()) {
        (_, Some(Failure::CudaError { message, device })) => {
            format!("CUDA error on {}: {message}", device.as_deref().unwrap_or("an unknown device"))
        }
        (Some(e), _) => format!("the worst-case request failed: {e}"),
        (None, _) => match facts.exit {
            ExitKind::Stopped => "it stopped answering".to_string(),
            ExitKind::Code(c) => format!("it exited with code {c} and logged no out-of-memory line"),
            ExitKind::Signal(s) => format!("it was killed by signal {s} and logged no out-of-memory line"),
        },
    };
    Classification::Crashed { exit: facts.exit, reached: facts.reached, detail }
}

impl Classification {
    /// The search's outcome: `gpus` are the ladder's GPU names (`CUDA0`, `CUDA1`) in its order,
    /// `headroom` what each could still take after the request (margin deducted), when measured.
    /// `None` for [`Classification::Fatal`] and [`Classification::Hung`]: the search stops,
    /// because no placement fixes them and a hang costs a whole timeout per try.
    pub fn to_outcome(&self, gpus: &[String], headroom: Option<Vec<Bytes>>) -> Option<Outcome> {
        match self {
            Classification::Fits => Some(Outcome::Fits { headroom }),
            Classification::OutOfMemory { oom, shortfall } => {
                let gpu = oom.device.as_deref().and_then(|d| gpus.iter().position(|g| g == d));
                Some(Outcome::Fails { shortfall: gpu.map(|gpu| Shortfall { gpu, bytes: *shortfall }) })
            }
            Classification::PortInUse | Classification::Crashed { .. } => Some(Outcome::Unknown),
            Classification::Hung { .. } | Classification::Fatal { .. } => None,
        }
    }

    /// A short description for progress lines and tables.
    pub fn summary(&self) -> String {
        match self {
            Classification::Fits => "fits".to_string(),
            Classification::OutOfMemory { oom, shortfall } => {
                let device = oom.device.as_deref().unwrap_or("an unknown device");
                let asked = oom.requested.map_or(String::new(), |r| format!(", asked for {r:#}"));
                let short = shortfall.map_or(String::new(), |s| format!(", about {s:#} short"));
                format!("out of memory on {device} ({}{asked}{short})", oom.stage.describe())
            }
            Classification::PortInUse => "its port was taken".to_string(),
            Classification::Crashed { detail, .. } => format!("crashed: {detail}"),
            Classification::Hung { reached: Phase::Loading } => "never finished loading".to_string(),
            Classification::Hung { .. } => "the worst-case request never finished".to_string(),
            Classification::Fatal { reason } => reason.clone(),
        }
    }
}
