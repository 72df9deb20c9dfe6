//! Renderers: a plan or a report goes in, text comes out; pure functions, no I/O, nothing printed.
//!
//! - `ranges`: layer sets as compact regex alternations (`[0-9]|1[0-4]`).
//! - `ot`: a placement as `-ngl`, integer `-ts`, an ordered `-ot` list and `--fit off`.
//! - `command`: shell-escaped `llama-server` commands and the `--fit on --fit-target` form.
//! - `profile`: a plan as models.conf lines.
//! - `bar`: a GPU's memory as a stacked bar of plain characters.
//! - `plan`: the plan command's report, as text and JSON.
//! - `advice`: advice_test_plan.md, the user's review document, as markdown; `advice_fill`: its results tables
//!   filled in with what `confirm` measured.
//! - `inspect`, `gpus`, `memory`: one file per command's report, each with a text and a JSON renderer; the JSON
//!   comes from the report's serde structs, whose fields are the documented schema (docs/json.md), in a
//!   fixed order.

pub mod advice;
pub mod advice_fill;
pub mod bar;
mod command;
pub mod gpus;
pub mod inspect;
pub mod memory;
mod ot;
pub mod plan;
mod profile;
mod ranges;
#[cfg(test)]
mod report_tests;
#[cfg(test)]
mod tests;

pub use command::{fit_target_args, server_command, shell_command, shell_word};
pub use ot::{EXPS_TO_CPU, PlacementFlags, overrides, placement_flags};
pub use profile::{ProfileForm, changed_lines, line_diff, profile_changes, profile_lines};
pub use ranges::{alternation, block_prefix};

use comfy_table::{CellAlignment, Table};

use crate::units::{Bytes, MIB, group_thousands};

/// A table as `kubectl` and `docker` print theirs: a header row, columns two spaces apart, no
/// lines. It reads the same with or without colour and survives copy and paste.
fn table(header: &[&str], right_aligned: &[usize]) -> Table {
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    // A space set directly is drawn (a space in a preset string means "draw nothing").
    t.set_style(comfy_table::TableComponent::VerticalLines, ' ');
    t.set_header(header.to_vec());
    for (i, column) in t.column_iter_mut().enumerate() {
        column.set_padding((0, 1));
        if right_aligned.contains(&i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

/// A table's lines, trailing blanks removed, each indented by `indent`.
fn indent_table(t: &Table, indent: &str) -> String {
    let mut out = String::new();
    for line in t.lines() {
        out.push_str(indent);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Bytes as MiB with two decimals and thousands separators: `1,067.75`.
fn mib2(b: Bytes) -> String {
    let hundredths = (u128::from(b.get()) * 100 + u128::from(MIB) / 2) / u128::from(MIB);
    let whole = u64::try_from(hundredths / 100).unwrap_or(u64::MAX);
    format!("{}.{:02}", group_thousands(whole), hundredths % 100)
}

/// Serializes a report as pretty JSON with a final newline. The reports hold only strings, numbers,
/// booleans, lists and structs, which serde_json always serializes.
fn json<T: serde::Serialize>(report: &T) -> String {
    let mut s = serde_json::to_string_pretty(report).unwrap_or_default();
    s.push('\n');
    s
}

/// A rate or bandwidth rounded to a whole number with thousands separators: `9,507`. Negative or
/// not-a-number values print as 0.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // clamped to 0..=u32::MAX first
fn whole(x: f64) -> String {
    let v = if x.is_finite() { x.round().clamp(0.0, f64::from(u32::MAX)) } else { 0.0 };
    group_thousands(v as u64)
}
