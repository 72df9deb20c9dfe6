//! Why `models.conf`, a profile in it, or a change to a profile was refused. Every error about the
//! file names its line; the CLI adds the file's path.

use crate::settings::SettingsError;

/// A problem with `models.conf` or with a profile's llama-server settings.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// A line that is no section, key, comment or blank.
    #[error("line {line}: expected [profile], KEY=VALUE, a # comment or a blank line, found \"{text}\"")]
    MalformedLine {
        /// The line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// A second `[id]` with the same id.
    #[error("line {line}: profile [{id}] is defined twice, first at line {first_line}")]
    DuplicateProfile {
        /// The profile id.
        id: String,
        /// The second definition's line.
        line: usize,
        /// The first definition's line.
        first_line: usize,
    },
    /// A `KEY=VALUE` before the first `[id]`.
    #[error("line {line}: {key} is outside any [profile]\nhint: put a [profile] line above it")]
    KeyOutsideProfile {
        /// The line number.
        line: usize,
        /// The key.
        key: String,
    },
    /// A key set twice in one profile.
    #[error("line {line}: {key} is set twice in [{profile}], first at line {first_line}")]
    DuplicateKey {
        /// The profile id.
        profile: String,
        /// The key.
        key: String,
        /// The second setting's line.
        line: usize,
        /// The first setting's line.
        first_line: usize,
    },
    /// A profile without `MODEL`.
    #[error(
        "line {line}: profile [{profile}] has no MODEL\nhint: add MODEL=path/to/model.gguf, relative to the models folder"
    )]
    MissingModel {
        /// The profile id.
        profile: String,
        /// The line of its `[id]`.
        line: usize,
    },
    /// No profile has this id.
    #[error("no profile [{id}] in models.conf; the profiles are: {}", known.join(", "))]
    UnknownProfile {
        /// The id asked for.
        id: String,
        /// The profiles there are.
        known: Vec<String>,
    },
    /// The profile is commented out.
    #[error(
        "line {line}: profile [{id}] is commented out\nhint: remove the # in front of its lines to use it"
    )]
    InactiveProfile {
        /// The id.
        id: String,
        /// The line of `# [id]`.
        line: usize,
    },
    /// The command line the profile makes is one llama-server would refuse, or one llama.cpp
    /// cannot run.
    #[error("line {line}: profile [{profile}]: {error}")]
    Settings {
        /// The profile id.
        profile: String,
        /// The line of the key that gave the offending flag (the `[id]` line when no one key did).
        line: usize,
        /// What the settings parser said.
        error: SettingsError,
    },
    /// A change that cannot be written into a profile.
    #[error("cannot write {what} into [{profile}]: \"{value}\" {problem}")]
    InvalidChange {
        /// The profile id.
        profile: String,
        /// The key or flag.
        what: String,
        /// The value.
        value: String,
        /// Why not.
        problem: &'static str,
    },
}
