//! The one way `splitplan` writes: data to stdout, everything else (notes, warnings, errors, their
//! hints) to stderr. Colour marks the `error:`, `warning:`, `note:` and `hint:` prefixes on stderr,
//! and only on a terminal that is not `TERM=dumb`, never with `NO_COLOR` set (no-color.org);
//! `CLICOLOR_FORCE` asks for it when stderr is not a terminal. Data is plain, except the plan's bars,
//! which are painted by the same rules applied to stdout.

use std::io::{self, IsTerminal, Write};

/// Writes data and messages.
#[derive(Debug)]
pub struct Printer {
    colour: bool,
    stdout_colour: bool,
}

/// A kind of message on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// `error:` (red).
    Error,
    /// `warning:` (yellow).
    Warning,
    /// `note:` (cyan).
    Note,
}

impl Printer {
    /// A printer for this process: colour decided from stderr and the environment.
    pub fn from_env() -> Printer {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let wants = |terminal: bool| {
            if var("NO_COLOR").is_some() {
                false
            } else if var("CLICOLOR_FORCE").is_some_and(|v| v != "0") {
                true
            } else {
                terminal && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
            }
        };
        Printer {
            colour: wants(io::stderr().is_terminal()),
            stdout_colour: wants(io::stdout().is_terminal()),
        }
    }

    /// Whether data may be painted: stdout is a terminal that wants colour (the same rules as for
    /// stderr). Renderers that can paint (the plan's bars) are asked to; their plain characters
    /// read the same without.
    pub fn stdout_colour(&self) -> bool {
        self.stdout_colour
    }

    /// Writes data to stdout as it is.
    #[allow(clippy::unused_self)] // the method keeps all output on the printer
    pub fn data(&self, text: &str) -> io::Result<()> {
        let mut out = io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()
    }

    /// Writes a message to stderr: `level: ` before the first line, later lines indented, and
    /// lines that start with `hint: ` kept as hints. Failures to write stderr are ignored: there
    /// is nowhere left to report them.
    pub fn message(&self, level: Level, text: &str) {
        let mut s = String::new();
        let mut hints = Vec::new();
        self.format_message(&mut s, level, text, &mut hints);
        for h in hints {
            s.push_str(&self.paint("hint:", "36"));
            s.push(' ');
            s.push_str(&h);
            s.push('\n');
        }
        let _ = io::stderr().lock().write_all(s.as_bytes());
    }

    /// Formats an error with its causes, the way `main` reports a failure: `error: ` and the
    /// message, `  caused by: ` and each cause, then every `hint:` line met on the way, once.
    pub fn error_chain(&self, messages: &[String]) -> String {
        let mut s = String::new();
        let mut hints = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            if i == 0 {
                self.format_message(&mut s, Level::Error, m, &mut hints);
            } else {
                let (body, mut h) = split_hints(m);
                hints.append(&mut h);
                for (j, line) in body.lines().enumerate() {
                    let lead = if j == 0 { "  caused by: " } else { "    " };
                    s.push_str(lead);
                    s.push_str(line);
                    s.push('\n');
                }
            }
        }
        hints.dedup();
        for h in hints {
            s.push_str(&self.paint("hint:", "36"));
            s.push(' ');
            s.push_str(&h);
            s.push('\n');
        }
        s
    }

    fn format_message(&self, s: &mut String, level: Level, text: &str, hints: &mut Vec<String>) {
        let (body, mut h) = split_hints(text);
        let (label, colour) = match level {
            Level::Error => ("error:", "1;31"),
            Level::Warning => ("warning:", "1;33"),
            Level::Note => ("note:", "36"),
        };
        for (i, line) in body.lines().enumerate() {
            if i == 0 {
                s.push_str(&self.paint(label, colour));
                s.push(' ');
            } else {
                s.push_str("  ");
            }
            s.push_str(line);
            s.push('\n');
        }
        if level == Level::Error {
            hints.append(&mut h);
        } else {
            for hint in h {
                s.push_str(&self.paint("hint:", "36"));
                s.push(' ');
                s.push_str(&hint);
                s.push('\n');
            }
        }
    }

    fn paint(&self, text: &str, sgr: &str) -> String {
        if self.colour { format!("\x1b[{sgr}m{text}\x1b[0m") } else { text.to_owned() }
    }
}

/// A message without its `hint: ` lines, and those hints.
fn split_hints(text: &str) -> (String, Vec<String>) {
    let mut body = Vec::new();
    let mut hints = Vec::new();
    for line in text.lines() {
        match line.strip_prefix("hint: ") {
            Some(h) => hints.push(h.to_owned()),
            None => body.push(line),
        }
    }
    (body.join("\n"), hints)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_collects_hints_at_the_end() {
        let p = Printer { colour: false, stdout_colour: false };
        let s = p.error_chain(&[
            "could not read models.conf 'x'\nhint: give --models-conf".to_owned(),
            "no such file\nsecond line".to_owned(),
        ]);
        assert_eq!(
            s,
            "error: could not read models.conf 'x'\n  caused by: no such file\n    second line\nhint: give --models-conf\n"
        );
        let c = Printer { colour: true, stdout_colour: false }.error_chain(&["bad\nhint: fix".to_owned()]);
        assert_eq!(c, "\x1b[1;31merror:\x1b[0m bad\n\x1b[36mhint:\x1b[0m fix\n");
    }

    #[test]
    fn multi_line_messages_indent() {
        let p = Printer { colour: false, stdout_colour: false };
        let mut s = String::new();
        p.format_message(&mut s, Level::Warning, "one\ntwo\nhint: three", &mut Vec::new());
        assert_eq!(s, "warning: one\n  two\nhint: three\n");
    }
}
