//! The calibration cache: what real launches measured (compute buffers above all, and the
//! overhead beyond llama.cpp's breakdown), kept so that a later prediction for the same llama.cpp
//! build, GPUs, model file and settings uses the measured numbers instead of the model's, and says
//! so.
//!
//! One JSON file per key under `<cache dir>/calibration/`, named by a stable hash of the key
//! (FNV-1a, so the name does not change with the Rust version), written to a temporary file and
//! renamed into place. A file that does not parse is reported to the caller and ignored: the cache
//! is never a reason to fail.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::settings::ServerSettings;
use crate::units::Bytes;

/// The format of the files; a file of another version is ignored.
pub const CACHE_VERSION: u32 = 1;

/// How many bytes of the model file's start go into its fingerprint: the GGUF header's start
/// (magic, version, counts, the first metadata), enough to tell two files of the same name and
/// size apart without reading gigabytes.
pub const FINGERPRINT_BYTES: usize = 1 << 20;

/// Which model file: its name, size and a fingerprint of its first bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelIdentity {
    /// The file name (the first shard of a split model), without its folder: the same file
    /// mounted elsewhere is the same model.
    pub file_name: String,
    /// Its size.
    pub size: Bytes,
    /// FNV-1a 64 of its first [`FINGERPRINT_BYTES`] bytes, in hex.
    pub fingerprint: String,
}

impl ModelIdentity {
    /// Reads the identity of the model file at `path`.
    pub fn of_file(path: &Path) -> io::Result<ModelIdentity> {
        let mut file = fs::File::open(path)?;
        let size = file.metadata()?.len();
        let mut head = Vec::with_capacity(FINGERPRINT_BYTES.min(usize::try_from(size).unwrap_or(usize::MAX)));
        Read::by_ref(&mut file).take(FINGERPRINT_BYTES as u64).read_to_end(&mut head)?;
        let file_name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        Ok(ModelIdentity { file_name, size: Bytes::new(size), fingerprint: format!("{:016x}", fnv1a(&head)) })
    }
}

/// What a measurement is valid for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalibrationKey {
    /// The llama.cpp build that was measured.
    pub llama_build: u32,
    /// The GPUs' names, in llama.cpp's device order.
    pub gpus: Vec<String>,
    /// The model file.
    pub model: ModelIdentity,
    /// The settings that change memory, as canonical llama-server flags
    /// ([`CalibrationKey::settings_args`]): context, batches, cache types, flash attention,
    /// slots, placement.
    pub settings: Vec<String>,
}

impl CalibrationKey {
    /// The canonical flags of `settings` for a key: [`ServerSettings::to_args`] without the model
    /// path (the [`ModelIdentity`] names the model).
    pub fn settings_args(settings: &ServerSettings) -> Vec<String> {
        let mut s = settings.clone();
        s.model = None;
        s.to_args()
    }

    /// The key's file name in the cache.
    pub fn file_name(&self) -> String {
        let text = serde_json::to_string(self).unwrap_or_default();
        format!("{:016x}.json", fnv1a(text.as_bytes()))
    }
}

/// What one GPU measured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeasuredDevice {
    /// llama.cpp's name (`CUDA0`).
    pub device: String,
    /// Weights.
    pub model: Bytes,
    /// KV cache.
    pub kv: Bytes,
    /// Recurrent state.
    pub rs: Bytes,
    /// Compute buffers.
    pub compute: Bytes,
    /// Output buffer.
    pub output: Bytes,
    /// Used beyond the logged buffers at the worst-case peak, after llama.cpp's own CUDA context
    /// (free at load − left at the peak − buffers), when measured.
    pub overhead: Option<Bytes>,
}

/// One measurement in the cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalibrationRecord {
    /// [`CACHE_VERSION`].
    pub version: u32,
    /// What it is valid for.
    pub key: CalibrationKey,
    /// Per GPU, in llama.cpp's order.
    pub devices: Vec<MeasuredDevice>,
    /// When it was measured (seconds since the Unix epoch).
    pub measured_at: u64,
    /// The llama-server log it was read from.
    pub log: Option<PathBuf>,
}

/// The measured compute buffers and overhead of one GPU, for a prediction to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MeasuredCompute {
    /// Compute buffers as llama.cpp logged them.
    pub compute: Bytes,
    /// The overhead beyond the breakdown at the worst-case peak, when measured.
    pub overhead: Option<Bytes>,
}

impl CalibrationRecord {
    /// The measured compute of GPU `device` (`CUDA0`).
    pub fn compute(&self, device: &str) -> Option<MeasuredCompute> {
        self.devices
            .iter()
            .find(|d| d.device == device)
            .map(|d| MeasuredCompute { compute: d.compute, overhead: d.overhead })
    }
}

/// Why the cache could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    /// A cache file that is not a record.
    #[error("ignoring the corrupt calibration file '{}': {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing failed.
    #[error("could not {action} the calibration file '{}'", path.display())]
    Io {
        /// `read` or `write`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// The cache folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CalibrationCache {
    dir: PathBuf,
}

impl CalibrationCache {
    /// The cache under `dir` (splitplan's cache folder; records go in its `calibration/`).
    pub fn new(dir: impl Into<PathBuf>) -> CalibrationCache {
        CalibrationCache { dir: dir.into() }
    }

    /// splitplan's cache folder from the environment: `SPLITPLAN_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/splitplan`, else `$HOME/.cache/splitplan`.
    pub fn default_dir(env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
        let set = |k: &str| env(k).filter(|v| !v.is_empty());
        if let Some(d) = set("SPLITPLAN_CACHE_DIR") {
            return Some(PathBuf::from(d));
        }
        if let Some(d) = set("XDG_CACHE_HOME") {
            return Some(PathBuf::from(d).join("splitplan"));
        }
        set("HOME").map(|h| PathBuf::from(h).join(".cache").join("splitplan"))
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the record of `key` lives.
    pub fn path_for(&self, key: &CalibrationKey) -> PathBuf {
        self.dir.join("calibration").join(key.file_name())
    }

    /// The record for `key`, if one was stored. A missing file is `Ok(None)`; a corrupt one is an
    /// error for the caller to report before going on without it.
    pub fn lookup(&self, key: &CalibrationKey) -> Result<Option<CalibrationRecord>, CalibrationError> {
        let path = self.path_for(key);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CalibrationError::Io { action: "read", path, source }),
        };
        let record: CalibrationRecord = serde_json::from_str(&text)
            .map_err(|e| CalibrationError::Corrupt { path: path.clone(), reason: e.to_string() })?;
        if record.version != CACHE_VERSION {
            return Ok(None);
        }
        // a hash collision or a hand-edited file: not this key's record
        Ok((record.key == *key).then_some(record))
    }

    /// Stores `record` (replacing the one for the same key), atomically: written beside its
    /// final name, then renamed.
    pub fn store(&self, record: &CalibrationRecord) -> Result<PathBuf, CalibrationError> {
        let path = self.path_for(&record.key);
        let io_err = |source| CalibrationError::Io { action: "write", path: path.clone(), source };
        let folder = path.parent().unwrap_or(&self.dir);
        fs::create_dir_all(folder).map_err(io_err)?;
        let text = serde_json::to_string_pretty(record).map_err(|e| io_err(io::Error::other(e)))?;
        let tmp = folder.join(format!(".{}.{}.tmp", key_stem(&path), std::process::id()));
        let written = fs::File::create(&tmp).and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()
        });
        if let Err(e) = written.and_then(|()| fs::rename(&tmp, &path)) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(e));
        }
        Ok(path)
    }
}

fn key_stem(path: &Path) -> String {
    path.file_stem().map_or_else(String::new, |s| s.to_string_lossy().into_owned())
}

/// FNV-1a, 64 bits: small, stable across Rust versions and platforms.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
