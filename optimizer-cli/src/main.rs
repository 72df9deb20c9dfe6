//! `splitplan`: plan where llama.cpp puts every tensor across GPUs and system RAM, then prove it.
//!
//! Exit codes: 0 done; 1 it ran but the answer is no (does not fit, out of memory, a launch failed);
//! 2 bad input or usage.

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::SUCCESS
}
