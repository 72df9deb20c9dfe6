//! Launching llama-server for `confirm`: one launch is start, wait for `/health`, run the
//! worst-case request while sampling GPU memory, stop, and report everything (the command, the
//! exit, the log read into core's [`LaunchLog`], NVML readings, timings).
//!
//! Launching sits behind the [`Launcher`] trait: [`process::RealLauncher`] runs processes (a
//! llama-server binary, or the user's launch template for Docker setups); the command's own tests
//! use a scripted launcher without processes. What a launch means is decided in core
//! (`optimizer_core::confirm::classify`), not here.
//!
//! The rules every launch follows: its own process group; `-lv 4`, `--host`, a free port (a
//! port-in-use failure is retried on another port, twice); a log file kept for the user; stopped
//! with SIGINT to the whole group, then SIGKILL after a grace period, always: on success, on
//! failure, on a timeout, on Ctrl-C or SIGTERM to splitplan, and when splitplan unwinds from an
//! error (the running server's guard stops it on drop).

pub mod http;
pub mod nvml;
pub mod process;
pub mod progress;
pub mod template;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use optimizer_core::confirm::{GpuReading, LaunchFacts, LaunchLog, Rate, Rung, SpeedRun};
use optimizer_core::units::Bytes;

use self::progress::Progress;

/// What runs llama-server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Program {
    /// A llama-server binary, given the arguments directly.
    Binary(PathBuf),
    /// The user's command line with the arguments spliced in ([`template`]).
    Template(String),
}

/// The worst-case request made after the server loaded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RequestPlan {
    /// The share of one sequence's context the prompt fills (0 < fill ≤ 1).
    pub fill: f64,
    /// Tokens generated after the prompt.
    pub n_predict: u32,
    /// How long the request may take; `None`: [`RequestPlan::timeout_for`].
    pub timeout: Option<Duration>,
    /// Speed runs after the worst-case request (core's `SPEED_PROMPT_TOKENS` prompt,
    /// `SPEED_PREDICT_TOKENS` generated), their medians reported.
    pub speed_runs: u32,
}

impl RequestPlan {
    /// The request's timeout for a prompt of `tokens`: two minutes, plus the prompt at 50 tokens
    /// a second (slow prompt processing with experts in system RAM on a desktop CPU), unless set.
    pub fn timeout_for(&self, tokens: u64) -> Duration {
        self.timeout.unwrap_or(Duration::from_secs(120 + tokens / 50))
    }
}

/// The load timeout for a model of `size` bytes: a minute, plus reading the files at 250 MiB/s
/// (a slow SSD or a cold page cache; a hang is caught by this, a slow disk should not be).
pub fn load_timeout_for(size: Bytes) -> Duration {
    Duration::from_secs(60 + size.get() / (250 << 20))
}

/// One launch to make.
#[derive(Clone, Debug)]
pub struct LaunchSpec<'a> {
    /// What runs llama-server.
    pub program: &'a Program,
    /// The base arguments (a profile's command line and the user's flags).
    pub base_args: &'a [String],
    /// The rung of the ladder.
    pub rung: &'a Rung,
    /// Its index on the ladder; `None` for a launch off the ladder (`--compare-fit`'s `--fit`).
    pub rung_index: Option<usize>,
    /// `-m`: the model on this machine (`None` keeps the base's, for a template).
    pub model: Option<String>,
    /// `--host`.
    pub host: String,
    /// Where the log goes.
    pub log_path: PathBuf,
    /// How long loading may take.
    pub load_timeout: Duration,
    /// The worst-case request.
    pub request: RequestPlan,
    /// How long to wait after SIGINT before SIGKILL.
    pub grace: Duration,
}

/// Everything one launch showed.
#[derive(Clone, Debug)]
pub struct LaunchReport {
    /// The command that ran (the last try, when the port was taken).
    pub command: Vec<String>,
    /// Its log.
    pub log_path: PathBuf,
    /// What the launcher saw.
    pub facts: LaunchFacts,
    /// What the log said.
    pub log: LaunchLog,
    /// NVML readings per GPU (NVML order); empty without NVML.
    pub nvml: Vec<GpuReading>,
    /// Prompt processing of the worst-case request.
    pub prompt: Option<Rate>,
    /// Generation.
    pub decode: Option<Rate>,
    /// Tokens in the worst-case prompt (0 when it was not sent).
    pub request_tokens: u64,
    /// The speed runs made after the worst-case request, in order.
    pub speed: Vec<SpeedRun>,
    /// How it ended, in words: `exit status 1`, `signal 6 (SIGABRT)`, `stopped with SIGINT`.
    pub status: String,
    /// The last lines of its log.
    pub log_tail: Vec<String>,
    /// How long the launch took.
    pub elapsed: Duration,
}

/// Ctrl-C or SIGTERM reached splitplan during a launch; the server was stopped.
#[derive(Debug)]
pub struct Interrupted;

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("interrupted: llama-server was stopped")
    }
}

impl std::error::Error for Interrupted {}

/// Makes launches.
pub trait Launcher {
    /// Makes one launch and reports it. An error means no report could be made (the program
    /// could not be started, splitplan was interrupted: [`Interrupted`]); every failure of the
    /// server itself is in the report.
    fn launch(&mut self, spec: &LaunchSpec<'_>, progress: &Progress) -> anyhow::Result<LaunchReport>;
}
