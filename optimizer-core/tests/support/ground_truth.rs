//! The ground truth of fixtures/ground-truth/data/: one JSON per row (`kind` dry, load or fit; the
//! model key; how many GPUs; llama.cpp's arguments; for a dry run, llama.cpp's own per-device
//! estimate in MiB) and the llama.cpp log of each real load, read with `confirm`'s log parser.

use std::path::{Path, PathBuf};

use optimizer_core::confirm::{self, LaunchLog};
use regex::Regex;
use serde_json::Value;

use super::models::repo_root;

/// The free memory llama.cpp reported at load on the emulated GPU pair, in MiB, when nothing else
/// ran first (`llama_prepare_model_devices: ... - N MiB free`); single-GPU rows ran with
/// `CUDA_VISIBLE_DEVICES=0`. Dry runs do not log it.
pub const DRY_RUN_FREE_MIB: [(&str, u64); 2] = [("CUDA0", 23_557), ("CUDA1", 14_477)];

/// One device of a dry run: `llama-fit-params --fit-print on` output.
#[derive(Clone, Debug)]
#[allow(dead_code)] // each test crate reads its own columns
pub struct DryDevice {
    pub name: String,
    pub model_mib: u64,
    pub context_mib: u64,
    pub compute_mib: u64,
}

/// One row.
#[derive(Clone, Debug)]
#[allow(dead_code)] // each test crate reads its own columns
pub struct Row {
    /// The session folder and the row id, e.g. `2026-11-21-h200x2/q5-d01`.
    pub id: String,
    /// `dry`, `load` or `fit`.
    pub kind: String,
    pub model: String,
    pub gpus: usize,
    pub argv: Vec<String>,
    /// Dry runs: llama.cpp's estimate.
    pub devices: Vec<DryDevice>,
    /// Real loads: the log.
    pub log: Option<PathBuf>,
    /// The exit status.
    pub rc: Option<i64>,
    /// `fit` rows: the `-c -ngl -ts -ot` arguments llama.cpp's fitter printed.
    pub fit_args: Vec<String>,
}

fn str_field(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).map(str::to_owned).unwrap_or_default()
}

fn row_from(v: &Value, id: String, session: &Path) -> Row {
    let argv = v
        .get("argv")
        .and_then(Value::as_array)
        .map_or_else(Vec::new, |a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect());
    let devices = v.get("devices").and_then(Value::as_array).map_or_else(Vec::new, |a| {
        a.iter()
            .map(|d| DryDevice {
                name: str_field(d, "name"),
                model_mib: d.get("model_mib").and_then(Value::as_u64).unwrap_or(u64::MAX),
                context_mib: d.get("context_mib").and_then(Value::as_u64).unwrap_or(u64::MAX),
                compute_mib: d.get("compute_mib").and_then(Value::as_u64).unwrap_or(u64::MAX),
            })
            .collect()
    });
    Row {
        id,
        kind: str_field(v, "kind"),
        model: str_field(v, "model"),
        gpus: v.get("gpus").and_then(Value::as_u64).and_then(|n| usize::try_from(n).ok()).unwrap_or(0),
        argv,
        devices,
        log: v.get("log").and_then(Value::as_str).map(|l| session.join("logs").join(l)),
        rc: v.get("rc").and_then(Value::as_i64),
        fit_args: v
            .get("fit_args")
            .and_then(Value::as_array)
            .map_or_else(Vec::new, |a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect()),
    }
}

/// Every row of every session, in folder then file-name order. A `fit` row's dry run of the
/// arguments `--fit` chose is a row of its own (`<id>-dry`).
pub fn rows() -> Vec<Row> {
    let data = repo_root().join("fixtures/ground-truth/data");
    let mut sessions: Vec<PathBuf> = std::fs::read_dir(&data)
        .unwrap_or_else(|e| panic!("{}: {e}", data.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    sessions.sort();
    let mut rows = Vec::new();
    for session in sessions {
        let name = session.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut files: Vec<PathBuf> = std::fs::read_dir(session.join("rows"))
            .unwrap_or_else(|e| panic!("{}: {e}", session.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let id = format!("{name}/{}", str_field(&v, "id"));
            if let Some(dry) = v.get("dry").filter(|d| d.is_object()) {
                rows.push(row_from(dry, format!("{name}/{}", str_field(dry, "id")), &session));
            }
            rows.push(row_from(&v, id, &session));
        }
    }
    rows
}

/// What a load log says: llama-server's log as `confirm` parses it, and the context lines it does
/// not keep.
#[derive(Clone, Debug, Default)]
pub struct LoadLog {
    pub launch: LaunchLog,
    pub n_ctx: Option<u32>,
    pub n_seq_max: Option<u32>,
    pub n_ubatch: Option<u32>,
    pub kv_unified: Option<bool>,
    /// `creating SWA KV cache, size = N cells`.
    pub swa_cells: Option<u32>,
    /// `offloaded X/Y layers to GPU`.
    pub offloaded: Option<(usize, usize)>,
}

/// Parses a llama-server `-lv 4` log.
pub fn parse_log(path: &Path) -> LoadLog {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let re = |s: &str| Regex::new(s).unwrap();
    let ctx_field = re(r"llama_context: (n_ctx|n_seq_max|n_ubatch|kv_unified)\s+= (\S+)");
    let swa = re(r"creating\s+SWA KV cache, size = (\d+) cells");
    let offloaded = re(r"load_tensors: offloaded (\d+)/(\d+) layers to GPU");

    let mut log = LoadLog { launch: confirm::parse_log(&text), ..LoadLog::default() };
    for line in text.lines() {
        if let Some(c) = ctx_field.captures(line) {
            match &c[1] {
                "n_ctx" => log.n_ctx = c[2].parse().ok(),
                "n_seq_max" => log.n_seq_max = c[2].parse().ok(),
                "n_ubatch" => log.n_ubatch = c[2].parse().ok(),
                _ => log.kv_unified = Some(&c[2] == "true"),
            }
        } else if let Some(c) = swa.captures(line) {
            log.swa_cells = c[1].parse().ok();
        } else if let Some(c) = offloaded.captures(line) {
            log.offloaded = Some((c[1].parse().unwrap(), c[2].parse().unwrap()));
        }
    }
    log
}
