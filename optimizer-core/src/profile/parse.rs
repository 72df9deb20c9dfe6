//! Reading `models.conf`: lines with their exact bytes, what each line is, and the profiles.

use super::{Entry, InactiveProfile, Line, LineKind, ModelsConf, Profile, ProfileError};

/// Parses `models.conf`. Every byte is kept ([`ModelsConf::text`] gives the file back), profiles
/// come with their keys in order and their line numbers, commented-out profiles are listed as
/// inactive. Refused, naming the line: a line of no known form, a profile defined twice, a key
/// outside any profile, a key set twice in a profile, a profile without `MODEL`.
pub fn parse(text: &str) -> Result<ModelsConf, ProfileError> {
    let lines = split_lines(text)?;
    let mut profiles: Vec<Profile> = Vec::new();
    let mut inactive: Vec<InactiveProfile> = Vec::new();
    // Whether the lines just read continue a commented-out profile.
    let mut in_inactive = false;
    for line in &lines {
        let n = line.number;
        match &line.kind {
            LineKind::Section { id } => {
                if let Some(first) = profiles.iter().find(|p| p.id == *id) {
                    return Err(ProfileError::DuplicateProfile {
                        id: id.clone(),
                        line: n,
                        first_line: first.line,
                    });
                }
                profiles.push(Profile { id: id.clone(), line: n, entries: Vec::new(), last_line: n });
                in_inactive = false;
            }
            LineKind::Entry { key, value } => {
                let Some(p) = profiles.last_mut() else {
                    return Err(ProfileError::KeyOutsideProfile { line: n, key: key.clone() });
                };
                if let Some(first) = p.entry(key) {
                    return Err(ProfileError::DuplicateKey {
                        profile: p.id.clone(),
                        key: key.clone(),
                        line: n,
                        first_line: first.line,
                    });
                }
                p.entries.push(Entry { key: key.clone(), value: value.clone(), line: n });
                p.last_line = n;
                in_inactive = false;
            }
            LineKind::CommentedSection { id } => {
                inactive.push(InactiveProfile { id: id.clone(), line: n, entries: Vec::new(), last_line: n });
                in_inactive = true;
            }
            LineKind::CommentedEntry { key, value } => {
                if let (true, Some(p)) = (in_inactive, inactive.last_mut()) {
                    p.entries.push(Entry { key: key.clone(), value: value.clone(), line: n });
                    p.last_line = n;
                }
            }
            LineKind::Blank | LineKind::Comment => in_inactive = false,
        }
    }
    if let Some(p) = profiles.iter().find(|p| p.get("MODEL").is_none()) {
        return Err(ProfileError::MissingModel { profile: p.id.clone(), line: p.line });
    }
    Ok(ModelsConf { lines, profiles, inactive })
}

fn split_lines(text: &str) -> Result<Vec<Line>, ProfileError> {
    let mut lines = Vec::new();
    let mut start = 0;
    for (i, piece) in text.split_inclusive('\n').enumerate() {
        let (content, ending) = if let Some(c) = piece.strip_suffix("\r\n") {
            (c, "\r\n")
        } else if let Some(c) = piece.strip_suffix('\n') {
            (c, "\n")
        } else {
            (piece, "")
        };
        let number = i + 1;
        let kind = classify(content)
            .ok_or_else(|| ProfileError::MalformedLine { line: number, text: content.to_string() })?;
        lines.push(Line { number, start, content: content.to_string(), ending, kind });
        start += piece.len();
    }
    Ok(lines)
}

/// What a line is, or `None` for a line of no known form.
fn classify(content: &str) -> Option<LineKind> {
    let t = content.trim();
    if t.is_empty() {
        return Some(LineKind::Blank);
    }
    if let Some(comment) = t.strip_prefix('#') {
        let inner = comment.trim();
        return Some(if let Some(id) = section_id(inner) {
            LineKind::CommentedSection { id: id.to_string() }
        } else if let Some((key, value)) = entry(inner) {
            LineKind::CommentedEntry { key, value }
        } else {
            LineKind::Comment
        });
    }
    if t.starts_with('[') {
        return section_id(t).map(|id| LineKind::Section { id: id.to_string() });
    }
    entry(t).map(|(key, value)| LineKind::Entry { key, value })
}

/// The id of `[id]`: not empty, without white space or brackets.
fn section_id(s: &str) -> Option<&str> {
    let id = s.strip_prefix('[')?.strip_suffix(']')?;
    let valid = !id.is_empty() && !id.contains(|c: char| c.is_whitespace() || c == '[' || c == ']');
    valid.then_some(id)
}

/// `KEY=VALUE` with a shell-variable key (the launcher exports the keys as environment variables).
fn entry(s: &str) -> Option<(String, String)> {
    let (key, value) = s.split_once('=')?;
    is_key(key).then(|| (key.to_string(), value.trim().to_string()))
}

/// Whether `s` can be a key: a shell variable name.
pub(super) fn is_key(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
