//! What the end-to-end tests share: the workspace root and running the real `splitplan` binary in a
//! clean environment.

#![allow(dead_code)] // each test crate uses its own subset

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root, where the fixtures' relative paths start.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// What a run printed and how it ended.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `splitplan` in `dir` with an environment holding only `env`, a HOME with no config, and a
/// fixed `SOURCE_DATE_EPOCH` (documents carry a date).
pub fn splitplan_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_splitplan"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("HOME", home.path())
        .env("SOURCE_DATE_EPOCH", "1795305600")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}
