//! The real launcher: llama-server (or the user's template) as a child process in its own
//! process group, its output in a log file read as it grows, `/health` polled until it says 200,
//! the worst-case request sent from a worker thread while the GPUs are sampled, and the whole group
//! stopped with SIGINT, then SIGKILL after the grace period, whatever happened.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use optimizer_core::confirm::{
    ExitKind, LaunchArgs, LaunchFacts, LogParser, Phase, Rate, SPEED_PREDICT_TOKENS, SPEED_PROMPT_TOKENS,
    SpeedRun, launch_args,
};

use super::http;
use super::nvml::{GpuSampler, Peak};
use super::progress::Progress;
use super::template;
use super::{Interrupted, LaunchReport, LaunchSpec, Launcher, Program};

/// How often the launcher looks at the process, the log, `/health` and the GPUs.
const POLL: Duration = Duration::from_millis(100);

/// How many ports are tried when llama-server finds its port taken.
const PORT_TRIES: usize = 3;

/// The token the worst-case prompt repeats: an ordinary id inside every vocabulary splitplan
/// plans for (their vocabularies have 150,000 or more entries). A prompt of token ids has an
/// exact length, which text would not.
const FILL_TOKEN: u32 = 1000;

/// How many log lines a failure report shows.
const TAIL_LINES: usize = 20;

/// Launches real processes.
pub struct RealLauncher {
    sampler: Option<GpuSampler>,
    interrupted: Arc<AtomicBool>,
}

impl RealLauncher {
    /// A launcher sampling GPUs through `sampler` (when there is NVML) and watching `interrupted`
    /// (set by SIGINT/SIGTERM handlers).
    pub fn new(sampler: Option<GpuSampler>, interrupted: Arc<AtomicBool>) -> RealLauncher {
        RealLauncher { sampler, interrupted }
    }
}

/// A running server: stopped when dropped, so that no llama-server outlives splitplan's error
/// paths.
struct Running {
    child: Child,
    pgid: Pid,
    grace: Duration,
    status: Option<ExitStatus>,
    stopped_by_us: Option<&'static str>,
}

impl Running {
    fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// SIGINT to the group (llama-server prints its memory breakdown and exits), SIGKILL after
    /// the grace period; then reaps the child.
    fn stop(&mut self) {
        if self.try_wait().is_some() {
            // the leader is gone; anything else left in its group goes too
            let _ = killpg(self.pgid, Signal::SIGKILL);
            return;
        }
        let _ = killpg(self.pgid, Signal::SIGINT);
        self.stopped_by_us = Some("SIGINT");
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if self.try_wait().is_some() {
                let _ = killpg(self.pgid, Signal::SIGKILL);
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = killpg(self.pgid, Signal::SIGKILL);
        self.stopped_by_us = Some("SIGKILL");
        self.status = self.child.wait().ok();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.stop();
        }
    }
}

/// Reads a log file as it grows, line by line, into the parser.
struct LogTail {
    file: Option<File>,
    pos: u64,
    partial: String,
    lines: Vec<String>,
}

impl LogTail {
    fn new(path: &Path) -> LogTail {
        LogTail { file: File::open(path).ok(), pos: 0, partial: String::new(), lines: Vec::new() }
    }

    fn poll(&mut self, parser: &mut LogParser) {
        let Some(file) = self.file.as_mut() else { return };
        if file.seek(SeekFrom::Start(self.pos)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        if let Ok(n) = file.read_to_end(&mut buf) {
            self.pos += n as u64;
        }
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            let line = line.trim_end_matches(['\n', '\r']).to_string();
            parser.feed_line(&line);
            self.lines.push(line);
            if self.lines.len() > 4 * TAIL_LINES {
                self.lines.drain(..2 * TAIL_LINES);
            }
        }
    }

    fn finish(&mut self, parser: &mut LogParser) {
        self.poll(parser);
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            parser.feed_line(&line);
            self.lines.push(line);
        }
    }

    fn tail(&self) -> Vec<String> {
        self.lines[self.lines.len().saturating_sub(TAIL_LINES)..].to_vec()
    }
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("could not find a free port on 127.0.0.1")?;
    Ok(l.local_addr()?.port())
}

fn describe_status(status: Option<ExitStatus>, stopped_by_us: Option<&str>, grace: Duration) -> String {
    match (stopped_by_us, status) {
        (Some("SIGKILL"), _) => format!("killed with SIGKILL after {} s of ignoring SIGINT", grace.as_secs()),
        (Some(sig), _) => format!("stopped with {sig}"),
        (None, Some(s)) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(sig)) => {
                let name = Signal::try_from(sig).map_or("unknown signal", Signal::as_str);
                format!("signal {sig} ({name})")
            }
            _ => "ended".to_string(),
        },
        (None, None) => "still running".to_string(),
    }
}

fn exit_kind(status: Option<ExitStatus>, stopped_by_us: Option<&str>) -> ExitKind {
    if stopped_by_us.is_some() {
        return ExitKind::Stopped;
    }
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => ExitKind::Code(c),
            (None, Some(sig)) => ExitKind::Signal(sig),
            _ => ExitKind::Code(-1),
        },
        None => ExitKind::Stopped,
    }
}

/// The log of the `n`-th try at a port: `x.log`, `x.port2.log`, …
fn try_log_path(base: &Path, n: usize) -> PathBuf {
    if n == 0 {
        return base.to_path_buf();
    }
    let stem = base.file_stem().map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    base.with_file_name(format!("{stem}.port{}.log", n + 1))
}

impl Launcher for RealLauncher {
    fn launch(&mut self, spec: &LaunchSpec<'_>, progress: &Progress) -> Result<LaunchReport> {
        let started = Instant::now();
        let mut last = None;
        for port_try in 0..PORT_TRIES {
            let report = self.launch_once(spec, progress, try_log_path(&spec.log_path, port_try), started)?;
            let port_taken = report
                .log
                .failures
                .iter()
                .any(|f| matches!(f, optimizer_core::confirm::Failure::PortInUse { .. }));
            if !port_taken || port_try + 1 == PORT_TRIES {
                return Ok(report);
            }
            progress.line("  its port was taken; trying another");
            last = Some(report);
        }
        last.ok_or_else(|| anyhow!("no launch was made"))
    }
}

impl RealLauncher {
    fn check_interrupt(&self, server: &mut Running) -> Result<()> {
        if self.interrupted.load(Ordering::Relaxed) {
            server.stop();
            return Err(Interrupted.into());
        }
        Ok(())
    }

    fn launch_once(
        &mut self,
        spec: &LaunchSpec<'_>,
        progress: &Progress,
        log_path: PathBuf,
        started: Instant,
    ) -> Result<LaunchReport> {
        let port = free_port()?;
        let launch = LaunchArgs { model: spec.model.clone(), host: spec.host.clone(), port, verbosity: 4 };
        let args = launch_args(spec.base_args, spec.rung, &launch);
        let argv = match spec.program {
            Program::Binary(path) => std::iter::once(path.display().to_string()).chain(args).collect(),
            Program::Template(t) => template::splice(t, &args, port)?,
        };
        let (program, rest) = argv.split_first().ok_or_else(|| anyhow!("empty command"))?;
        let log = File::create(&log_path)
            .with_context(|| format!("could not create the log file {}", log_path.display()))?;
        let before = self.sampler.as_ref().map(GpuSampler::snapshot);
        progress.phase(&match spec.rung_index {
            Some(i) => format!("starting llama-server (rung {}: {})", i + 1, spec.rung.label),
            None => format!("starting llama-server ({})", spec.rung.label),
        });
        let child = Command::new(program)
            .args(rest)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("could not start {program}"))?;
        let pid = i32::try_from(child.id()).map_err(|_| anyhow!("pid out of range"))?;
        let mut server =
            Running { child, pgid: Pid::from_raw(pid), grace: spec.grace, status: None, stopped_by_us: None };
        let mut parser = LogParser::new();
        let mut tail = LogTail::new(&log_path);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));

        // Loading: until /health says 200, the process ends, or the load timeout.
        let load_started = Instant::now();
        let mut reached = Phase::Loading;
        let mut timed_out = false;
        progress.phase("loading");
        loop {
            self.check_interrupt(&mut server)?;
            tail.poll(&mut parser);
            if server.try_wait().is_some() {
                break;
            }
            if let Ok(r) = http::request(addr, "GET", "/health", None, Duration::from_secs(2))
                && r.status == 200
            {
                reached = Phase::Ready;
                break;
            }
            if load_started.elapsed() > spec.load_timeout {
                timed_out = true;
                break;
            }
            thread::sleep(POLL);
        }

        // Verifying: the worst-case request, then the speed runs, while sampling the GPUs.
        let mut peak = before.clone().map(Peak::new);
        let mut request_tokens = 0;
        let mut request_error = None;
        let mut timings = (None, None);
        let mut speed = Vec::new();
        if reached == Phase::Ready {
            tail.poll(&mut parser);
            let n_ctx = u64::from(parser.log().n_ctx_seq.unwrap_or(4096));
            let n_predict = u64::from(spec.request.n_predict).min(n_ctx / 4);
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // a share of a u32 context
            let share = ((n_ctx as f64) * spec.request.fill.clamp(0.0, 1.0)) as u64;
            request_tokens = share.min(n_ctx.saturating_sub(n_predict + 8)).max(1);
            progress.phase(&format!(
                "verifying: a {request_tokens}-token prompt and {n_predict} generated tokens"
            ));
            let mut watch =
                Watch { server: &mut server, parser: &mut parser, tail: &mut tail, peak: &mut peak };
            match self.request(
                &mut watch,
                addr,
                completion_body(request_tokens, n_predict),
                spec.request.timeout_for(request_tokens),
            )? {
                RequestEnd::Answered(t) => {
                    timings = t;
                    reached = Phase::Verified;
                }
                RequestEnd::Failed(e) => request_error = Some(e),
                RequestEnd::TimedOut => timed_out = true,
            }
            let speed_tokens = SPEED_PROMPT_TOKENS.min(n_ctx.saturating_sub(SPEED_PREDICT_TOKENS + 8)).max(1);
            for run in 0..spec.request.speed_runs {
                if reached != Phase::Verified {
                    break;
                }
                progress.phase(&format!(
                    "measuring speed: run {} of {}, a {speed_tokens}-token prompt and {SPEED_PREDICT_TOKENS} generated tokens",
                    run + 1,
                    spec.request.speed_runs
                ));
                let body = completion_body(speed_tokens, SPEED_PREDICT_TOKENS);
                match self.request(
                    &mut watch,
                    addr,
                    body,
                    spec.request.timeout_for(speed_tokens + SPEED_PREDICT_TOKENS * 10),
                )? {
                    RequestEnd::Answered((prompt, decode)) => speed.push(SpeedRun { prompt, decode }),
                    // a server that fails after the worst-case request did not survive it
                    RequestEnd::Failed(e) => {
                        request_error = Some(format!("speed run {}: {e}", run + 1));
                        reached = Phase::Ready;
                    }
                    RequestEnd::TimedOut => {
                        timed_out = true;
                        reached = Phase::Ready;
                    }
                }
            }
        }

        progress.phase("stopping");
        server.stop();
        tail.finish(&mut parser);
        let log = parser.finish();
        let status = describe_status(server.status, server.stopped_by_us, spec.grace);
        let exit = exit_kind(server.status, server.stopped_by_us);
        let (prompt, decode) = match timings {
            (None, None) => log.last_timing().map_or((None, None), |t| (t.prompt, t.eval)),
            t => t,
        };
        Ok(LaunchReport {
            command: argv,
            log_path,
            facts: LaunchFacts { reached, exit, timed_out, request_error },
            log,
            nvml: peak.map(|p| p.readings()).unwrap_or_default(),
            prompt,
            decode,
            request_tokens,
            speed,
            status,
            log_tail: tail.tail(),
            elapsed: started.elapsed(),
        })
    }
}

/// What one request came to.
enum RequestEnd {
    /// HTTP 200, with the prompt and decode rates of its `timings`.
    Answered((Option<Rate>, Option<Rate>)),
    /// Any other answer, a broken connection, or the server ending during it.
    Failed(String),
    /// No answer within the timeout.
    TimedOut,
}

/// What is watched while a request runs.
struct Watch<'a> {
    server: &'a mut Running,
    parser: &'a mut LogParser,
    tail: &'a mut LogTail,
    peak: &'a mut Option<Peak>,
}

impl RealLauncher {
    /// Sends one `/completion` request from a worker thread and, until it is answered, follows
    /// the log, samples the GPUs and watches the process; Ctrl-C stops the server.
    fn request(
        &self,
        w: &mut Watch<'_>,
        addr: SocketAddr,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<RequestEnd> {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(http::request(addr, "POST", "/completion", Some(&body), timeout));
        });
        let started = Instant::now();
        let end = loop {
            self.check_interrupt(w.server)?;
            w.tail.poll(w.parser);
            if let (Some(s), Some(p)) = (self.sampler.as_ref(), w.peak.as_mut()) {
                p.sample(&s.snapshot());
            }
            match rx.try_recv() {
                Ok(Ok(r)) if r.status == 200 => break RequestEnd::Answered(parse_timings(&r.body)),
                Ok(Ok(r)) => {
                    let text = String::from_utf8_lossy(&r.body);
                    break RequestEnd::Failed(format!(
                        "HTTP {}: {}",
                        r.status,
                        text.chars().take(300).collect::<String>()
                    ));
                }
                Ok(Err(e)) => break RequestEnd::Failed(e.to_string()),
                Err(mpsc::TryRecvError::Disconnected) => {
                    break RequestEnd::Failed("the request thread ended without an answer".to_string());
                }
                Err(mpsc::TryRecvError::Empty) => {}
            }
            if w.server.try_wait().is_some() {
                // give the request a moment to report the reset, then stop waiting
                thread::sleep(POLL);
                break match rx.try_recv() {
                    Ok(Err(e)) => RequestEnd::Failed(e.to_string()),
                    _ => RequestEnd::Failed("llama-server ended during the request".to_string()),
                };
            }
            if started.elapsed() > timeout {
                break RequestEnd::TimedOut;
            }
            thread::sleep(POLL);
        };
        if let (Some(s), Some(p)) = (self.sampler.as_ref(), w.peak.as_mut()) {
            p.sample(&s.snapshot());
        }
        Ok(end)
    }
}

/// The `/completion` request: `tokens` token ids, then `n_predict` generated tokens, nothing
/// cached, EOS ignored so that generation runs its length.
fn completion_body(tokens: u64, n_predict: u64) -> Vec<u8> {
    let prompt = vec![FILL_TOKEN; usize::try_from(tokens).unwrap_or(0)];
    serde_json::json!({
        "prompt": prompt,
        "n_predict": n_predict,
        "cache_prompt": false,
        "ignore_eos": true,
        "temperature": 0,
    })
    .to_string()
    .into_bytes()
}

/// `timings` of a `/completion` answer (server-common.cpp:84-105).
fn parse_timings(body: &[u8]) -> (Option<Rate>, Option<Rate>) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else { return (None, None) };
    let t = &v["timings"];
    let rate = |n: &str, ms: &str, ps: &str| {
        Some(Rate { ms: t[ms].as_f64()?, tokens: t[n].as_u64()?, per_second: t[ps].as_f64()? })
    };
    (
        rate("prompt_n", "prompt_ms", "prompt_per_second"),
        rate("predicted_n", "predicted_ms", "predicted_per_second"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_from_a_completion_answer() {
        let body =
            br#"{"content":"x","timings":{"prompt_n":770,"prompt_ms":1940.63,"prompt_per_second":396.78,
            "predicted_n":128,"predicted_ms":2078.83,"predicted_per_second":61.09}}"#;
        let (p, d) = parse_timings(body);
        assert_eq!(p, Some(Rate { ms: 1940.63, tokens: 770, per_second: 396.78 }));
        assert_eq!(d.map(|d| d.tokens), Some(128));
        assert_eq!(parse_timings(b"not json"), (None, None));
    }

    #[test]
    fn retry_logs_get_their_own_names() {
        let base = Path::new("/tmp/x/q5-launch1.log");
        assert_eq!(try_log_path(base, 0), base);
        assert_eq!(try_log_path(base, 1), Path::new("/tmp/x/q5-launch1.port2.log"));
    }

    #[test]
    fn completion_body_has_exact_tokens() {
        let v: serde_json::Value = serde_json::from_slice(&completion_body(5, 3)).unwrap();
        assert_eq!(v["prompt"].as_array().map(Vec::len), Some(5));
        assert_eq!(v["n_predict"], 3);
    }
}
