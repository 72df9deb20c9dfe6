//! One module per subcommand. Each takes its arguments and the printer, writes its data to stdout
//! and says whether the answer was yes or no; errors go back to `main`.

mod advise;
mod apply;
mod confirm;
mod gpus;
mod inspect;
mod memory;
mod plan;

use anyhow::Result;

use crate::cli::Command;
use crate::printer::Printer;

/// How a command that ran ended: `main` turns it into the exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done (exit 0).
    Done,
    /// It ran, but the answer is no: does not fit, out of memory, a launch failed (exit 1).
    No,
    /// Stopped by Ctrl-C or SIGTERM after cleaning up (exit 130).
    Interrupted,
}

/// Runs a command.
pub fn run(command: Command, printer: &Printer) -> Result<Outcome> {
    match command {
        Command::Plan(args) => plan::run(&args, printer),
        // `Cli::parse_args` turns these words into `Plan`.
        Command::External(words) => anyhow::bail!("unexpected command '{}'", words.join(" ")),
        Command::Advise(args) => advise::run(&args, printer),
        Command::Apply(args) => apply::run(&args, printer),
        Command::Inspect(args) => inspect::run(&args, printer),
        Command::Gpus(args) => gpus::run(&args, printer),
        Command::Memory(args) => memory::run(&args, printer),
        Command::Confirm(args) => confirm::run(&args, printer),
    }
}
