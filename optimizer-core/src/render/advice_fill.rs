//! Filling in advice_test_plan.md with what `splitplan confirm` measured: the results table of the
//! proven suggestion, in the profile's own section, replacing the empty (or earlier) table and
//! nothing else. Every other byte of the document stays as it was.

use crate::confirm::{TestResult, render_results_section};

/// Which results table of a profile's section gets filled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResultsSlot {
    /// `##### Suggestion A (aggressive)`.
    Aggressive,
    /// `##### Suggestion B (moderate)`.
    Moderate,
    /// Another rung of confirm's ladder: a table of its own, `##### Proven by confirm: …`, after
    /// the suggestions' tables.
    Other(String),
}

impl ResultsSlot {
    fn title(&self) -> String {
        match self {
            ResultsSlot::Aggressive => "Suggestion A (aggressive)".to_string(),
            ResultsSlot::Moderate => "Suggestion B (moderate)".to_string(),
            ResultsSlot::Other(label) => format!("{PROVEN_PREFIX}{label}"),
        }
    }
}

/// The heading of a table for a rung that is neither suggestion.
const PROVEN_PREFIX: &str = "Proven by confirm: ";

/// Why the document could not be filled in.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FillError {
    /// No `### … `[id]`` section.
    #[error("no section for profile [{0}]: run `splitplan advise` to write one")]
    NoSection(String),
    /// The section has no `#### Test results`.
    #[error("the section of profile [{0}] has no '#### Test results' heading")]
    NoResults(String),
}

/// `doc` with the results table of `slot` in profile `id`'s section replaced by `result` (and,
/// when given, `extra` Markdown after it, such as the comparison with `--fit`). A table for a
/// rung that is neither suggestion is added after the last table of the section, or replaces an
/// earlier one of confirm's.
pub fn fill_results(
    doc: &str,
    id: &str,
    slot: &ResultsSlot,
    result: &TestResult,
    extra: Option<&str>,
) -> Result<String, FillError> {
    let lines: Vec<&str> = doc.split_inclusive('\n').collect();
    let tag = format!("`[{id}]`");
    let start = lines
        .iter()
        .position(|l| l.starts_with("### ") && l.contains(&tag))
        .ok_or_else(|| FillError::NoSection(id.to_string()))?;
    let end = (start + 1..lines.len()).find(|&i| is_heading_at_most(lines[i], 3)).unwrap_or(lines.len());
    let results = (start..end)
        .find(|&i| lines[i].trim_end() == "#### Test results")
        .ok_or_else(|| FillError::NoResults(id.to_string()))?;
    let results_end = (results + 1..end).find(|&i| is_heading_at_most(lines[i], 4)).unwrap_or(end);

    let title = slot.title();
    let heading = |i: usize| lines[i].strip_prefix("##### ").map(str::trim_end);
    let found = (results + 1..results_end).find(|&i| match (slot, heading(i)) {
        (ResultsSlot::Other(_), Some(h)) => h.starts_with(PROVEN_PREFIX),
        (_, Some(h)) => h == title,
        _ => false,
    });
    // the block of a table: its heading up to the next heading of any level
    let (from, to) = match found {
        Some(i) => (i, (i + 1..results_end).find(|&j| lines[j].starts_with('#')).unwrap_or(results_end)),
        None => (results_end, results_end),
    };
    let mut block = render_results_section(5, &title, result);
    if let Some(extra) = extra {
        block.push('\n');
        block.push_str(extra.trim_end());
        block.push('\n');
    }
    block.push('\n');
    let mut out: String = lines[..from].concat();
    if found.is_none() && !out.ends_with("\n\n") {
        out.push('\n');
    }
    out.push_str(&block);
    out.push_str(&lines[to..].concat());
    Ok(out)
}

/// A Markdown heading of level 1 to `level`.
fn is_heading_at_most(line: &str, level: usize) -> bool {
    let hashes = line.bytes().take_while(|&b| b == b'#').count();
    (1..=level).contains(&hashes) && line.as_bytes().get(hashes) == Some(&b' ')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::confirm::{DeviceMeasurement, Measurement, PeakSource};
    use crate::units::Bytes;

    const DOC: &str = "# Advice\n\n### 1.1 `[q5]` Qwen3\n\n#### Suggestion A (aggressive)\n```\nFIT=off\n```\n\n\
#### Test results\n\n##### Suggestion A (aggressive)\n| Metric | Value |\n|--------|-------|\n| Launches used | |\n\n\
##### Suggestion B (moderate)\n| Metric | Value |\n|--------|-------|\n| Launches used | |\n\n#### Choice\n(which)\n\n\
### 1.2 `[other]` Other\n\n#### Test results\n\n##### Suggestion A (aggressive)\n| Metric | Value |\n|--------|-------|\n";

    fn result() -> TestResult {
        let mib = Bytes::from_mib;
        TestResult {
            title: "ignored".into(),
            launches: 1,
            ooms: Vec::new(),
            measurement: Measurement {
                devices: vec![DeviceMeasurement {
                    device: "CUDA0".into(),
                    gpu_name: "RTX 4090".into(),
                    total: Some(mib(24_564)),
                    free_at_load: Some(mib(23_557)),
                    model: mib(19_000),
                    kv: mib(1_000),
                    rs: Bytes::ZERO,
                    compute: mib(1_800),
                    output: Bytes::ZERO,
                    peak_used: Some(mib(24_100)),
                    left: Some(mib(464)),
                    overhead: None,
                    source: PeakSource::Nvml,
                }],
                graph: None,
                prompt: None,
                decode: None,
                speed: Vec::new(),
            },
            request_tokens: 65_536,
            ctx_size: 262_144,
            notes: Vec::new(),
        }
    }

    #[test]
    fn fills_the_aggressive_table_of_the_right_profile_only() {
        let out = fill_results(DOC, "q5", &ResultsSlot::Aggressive, &result(), Some("| a | b |")).unwrap();
        let q5 = &out[..out.find("[other]").unwrap()];
        assert!(q5.contains("##### Suggestion A (aggressive)\n| Metric | Value |\n|--------|-------|\n| Launches used | 1 |"), "{out}");
        assert!(q5.contains("24,100 MiB / 98.1%, 464 MiB left"), "{out}");
        assert!(q5.contains("| a | b |\n\n##### Suggestion B (moderate)\n"), "{out}");
        // B, the choice and the other profile untouched
        assert!(out.contains("##### Suggestion B (moderate)\n| Metric | Value |\n|--------|-------|\n| Launches used | |\n\n#### Choice"));
        assert!(out.ends_with(&DOC[DOC.find("### 1.2").unwrap()..]));
        // filling again replaces, it does not add
        let again = fill_results(&out, "q5", &ResultsSlot::Aggressive, &result(), Some("| a | b |")).unwrap();
        assert_eq!(again, out);
    }

    #[test]
    fn another_rung_gets_its_own_table_after_the_suggestions() {
        let slot = ResultsSlot::Other("256 MiB more margin".into());
        let out = fill_results(DOC, "q5", &slot, &result(), None).unwrap();
        assert!(
            out.contains("| Launches used | |\n\n##### Proven by confirm: 256 MiB more margin\n| Metric"),
            "{out}"
        );
        assert!(out.contains("\n\n#### Choice"), "{out}");
        let again = fill_results(&out, "q5", &slot, &result(), None).unwrap();
        assert_eq!(again, out);
    }

    #[test]
    fn missing_section_or_results_is_an_error() {
        assert_eq!(
            fill_results(DOC, "nope", &ResultsSlot::Aggressive, &result(), None),
            Err(FillError::NoSection("nope".into()))
        );
        let no_results = "### 1.1 `[q5]` Q\n\n#### Choice\n";
        assert_eq!(
            fill_results(no_results, "q5", &ResultsSlot::Moderate, &result(), None),
            Err(FillError::NoResults("q5".into()))
        );
    }
}
