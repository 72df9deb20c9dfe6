//! `splitplan`: plan where llama.cpp puts every tensor across GPUs and system RAM, then prove it.
//!
//! Exit codes (also in `--help`): 0 done; 1 it ran but the answer is no (does not fit, out of
//! memory, a launch failed); 2 bad input or usage. A closed stdout (`splitplan … | head`) is not
//! an error.

mod cli;
mod commands;
mod devices;
mod files;
mod launch;
mod printer;
mod settings;

use std::io::{self, Write as _};
use std::process::ExitCode;

use crate::commands::Outcome;
use crate::printer::Printer;

fn main() -> ExitCode {
    let printer = Printer::from_env();
    let cli = match cli::Cli::parse_args() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with 0; usage errors to stderr with 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match commands::run(cli.command, &printer) {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::No) => ExitCode::from(1),
        Ok(Outcome::Interrupted) => ExitCode::from(130),
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(ToString::to_string).collect();
            let _ = io::stderr().lock().write_all(printer.error_chain(&chain).as_bytes());
            ExitCode::from(2)
        }
    }
}

fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe))
}
