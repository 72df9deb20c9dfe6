//! The user's `models.conf`: server profiles read without losing a byte, turned into the
//! llama-server command line the user's container builds, and rewritten one profile at a time.
//!
//! The format (BRIEF.md, "models.conf"): one `[section]` per profile, whose id is the name on the
//! launcher's command line; `KEY=VALUE` lines without quotes; `#` comments at the start of a line;
//! whole profiles kept commented out (`# [gpt-oss-120b]` followed by `# KEY=VALUE` lines), which
//! are listed as inactive. A `#` after a value is part of the value.
//!
//! Everything here is pure: text goes in, values or text come out. Reading the file, the models
//! folder on the host and writing back (through a temporary file and a rename) belong to the CLI.

mod command;
mod error;
mod parse;
mod rewrite;
#[cfg(test)]
mod tests;

pub use command::{DEFAULT_CTX_SIZE, DEFAULT_FIT_TARGET, MODELS_MOUNT};
pub use error::ProfileError;
pub use parse::parse;
pub use rewrite::{PLACEMENT_FLAGS, ProfileChanges, rewrite_profile};

use std::ops::RangeInclusive;

/// A parsed `models.conf`: every line as it was, and the profiles found in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelsConf {
    lines: Vec<Line>,
    profiles: Vec<Profile>,
    inactive: Vec<InactiveProfile>,
}

impl ModelsConf {
    /// Every line, in order. Their contents and endings joined give back the file byte for byte.
    pub fn lines(&self) -> &[Line] {
        &self.lines
    }

    /// The profiles, in file order.
    pub fn profiles(&self) -> &[Profile] {
        &self.profiles
    }

    /// The commented-out profiles, in file order: known, not usable.
    pub fn inactive(&self) -> &[InactiveProfile] {
        &self.inactive
    }

    /// The profile with this id.
    pub fn profile(&self, id: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.id == id)
    }

    /// The profile with this id, or an error that says it is commented out or lists the profiles.
    pub fn find(&self, id: &str) -> Result<&Profile, ProfileError> {
        if let Some(p) = self.profile(id) {
            return Ok(p);
        }
        if let Some(p) = self.inactive.iter().find(|p| p.id == id) {
            return Err(ProfileError::InactiveProfile { id: id.to_string(), line: p.line });
        }
        Err(ProfileError::UnknownProfile {
            id: id.to_string(),
            known: self.profiles.iter().map(|p| p.id.clone()).collect(),
        })
    }

    /// The file as it was parsed.
    pub fn text(&self) -> String {
        self.lines.iter().flat_map(|l| [l.content.as_str(), l.ending]).collect()
    }
}

/// One line of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// 1-based line number.
    pub number: usize,
    /// Byte offset of the line's first byte in the file.
    pub start: usize,
    /// The line without its ending.
    pub content: String,
    /// `"\n"`, `"\r\n"`, or `""` for a last line without one.
    pub ending: &'static str,
    /// What the line is.
    pub kind: LineKind,
}

impl Line {
    /// Byte offset just past the line's ending.
    pub fn end(&self) -> usize {
        self.start + self.content.len() + self.ending.len()
    }
}

/// What a line of `models.conf` is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineKind {
    /// Empty or white space.
    Blank,
    /// A `#` comment that is neither of the commented forms below.
    Comment,
    /// `[id]`: a profile starts.
    Section {
        /// The profile id.
        id: String,
    },
    /// `KEY=VALUE`.
    Entry {
        /// The key.
        key: String,
        /// The value, white space around it removed.
        value: String,
    },
    /// `# [id]`: a commented-out profile starts.
    CommentedSection {
        /// The profile id.
        id: String,
    },
    /// `# KEY=VALUE`.
    CommentedEntry {
        /// The key.
        key: String,
        /// The value, white space around it removed.
        value: String,
    },
}

/// One `KEY=VALUE` of a profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The key, e.g. `CTX_SIZE`.
    pub key: String,
    /// The value, white space around it removed.
    pub value: String,
    /// Its line number.
    pub line: usize,
}

/// A `[section]` of `models.conf`: one llama-server configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// The section id, e.g. `qwen3-coder-ud-q5`.
    pub id: String,
    /// The line of `[id]`.
    pub line: usize,
    /// Its keys, in file order.
    pub entries: Vec<Entry>,
    /// The last line that belongs to it: its last key line (or the header when it has none).
    /// Comments and blank lines after it belong to what follows.
    pub last_line: usize,
}

impl Profile {
    /// The entry for a key.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// The value of a key; an empty value counts as absent, as docker-compose's `${KEY:-default}`
    /// treats it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entry(key).map(|e| e.value.as_str()).filter(|v| !v.is_empty())
    }

    /// `MODEL`: the model file relative to the models folder (the first shard of a split model).
    /// Parsing guarantees it is there.
    pub fn model_path(&self) -> &str {
        self.get("MODEL").unwrap_or_default()
    }

    /// `NAME`, for menus.
    pub fn name(&self) -> Option<&str> {
        self.get("NAME")
    }

    /// `DESCRIPTION`, for menus.
    pub fn description(&self) -> Option<&str> {
        self.get("DESCRIPTION")
    }

    /// The profile's lines, header to last key line.
    pub fn lines(&self) -> RangeInclusive<usize> {
        self.line..=self.last_line
    }
}

/// A commented-out profile (`# [id]` and the `# KEY=VALUE` lines right after it): kept by the user
/// for later, listed so that asking for it gets a clear answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InactiveProfile {
    /// The section id.
    pub id: String,
    /// The line of `# [id]`.
    pub line: usize,
    /// Its commented keys, in file order.
    pub entries: Vec<Entry>,
    /// Its last commented key line (or the header).
    pub last_line: usize,
}
