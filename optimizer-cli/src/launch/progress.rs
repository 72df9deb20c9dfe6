//! Progress of the launches on stderr: a spinner with the phase and the elapsed time when stderr
//! is a terminal, plain lines (one per phase change) when it is not, nothing with `--quiet`.

use std::cell::RefCell;
use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Where progress goes.
pub struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
    phase: RefCell<(String, Instant)>,
}

impl Progress {
    /// Progress on this process's stderr.
    pub fn stderr(quiet: bool) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress { bar, quiet, phase: RefCell::new((String::new(), Instant::now())) }
    }

    /// No progress at all (tests).
    #[cfg(test)]
    pub fn silent() -> Progress {
        Progress { bar: None, quiet: true, phase: RefCell::new((String::new(), Instant::now())) }
    }

    /// Enters a phase (`loading`, `verifying`, `stopping`): the spinner's message, or a line when
    /// the phase changed.
    pub fn phase(&self, msg: &str) {
        let mut p = self.phase.borrow_mut();
        if p.0 == msg {
            return;
        }
        *p = (msg.to_string(), Instant::now());
        if let Some(bar) = &self.bar {
            bar.reset_elapsed();
            bar.set_message(msg.to_string());
        } else if !self.quiet {
            let _ = writeln!(std::io::stderr().lock(), "  {msg}");
        }
    }

    /// A line that stays.
    pub fn line(&self, msg: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(bar) => bar.suspend(|| {
                let _ = writeln!(std::io::stderr().lock(), "{msg}");
            }),
            None => {
                let _ = writeln!(std::io::stderr().lock(), "{msg}");
            }
        }
    }

    /// Removes the spinner.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        self.phase.borrow_mut().0.clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
