//! `cargo run -p xtask -- <task>`: splitplan's developer tasks, kept out of the shipped crates.
//!
//! Tasks: `fixtures` regenerates the GGUF fixtures under fixtures/models/ from the layout specs in
//! fixtures/layouts/ (or writes full-size sparse files for real llama.cpp runs); `layout` prints one
//! layout the way make_fixture.py `--report` does, for a differential check by hand.
//!
//! Exit codes: 0 done; 1 a check found a difference (`fixtures --check`); 2 bad input or usage.

mod fixtures;
mod layout;
mod plan_rows;
mod sparse;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "xtask",
    about = "splitplan's developer tasks",
    after_help = "Exit codes: 0 done; 1 a check found a difference; 2 bad input or usage."
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Regenerate fixtures/models/ (header-only GGUFs) from fixtures/layouts/*.toml.
    Fixtures(fixtures::Args),
    /// Print one layout like `make_fixture.py MODEL QUANT --report [--tensors]`.
    Layout(layout::Args),
    /// Print the planner's plans for the ground-truth configurations as capture.py matrix rows.
    PlanRows(plan_rows::Args),
}

/// The repository root: xtask lives one folder below it.
fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Fixtures(args) => fixtures::run(&repo_root(), &args),
        Task::Layout(args) => layout::run(&repo_root(), &args),
        Task::PlanRows(args) => plan_rows::run(&repo_root(), &args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            #[allow(clippy::print_stderr)] // main owns the error report
            {
                eprintln!("error: {e:#}");
            }
            ExitCode::from(2)
        }
    }
}
