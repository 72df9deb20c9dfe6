//! `xtask layout MODEL QUANT [--tensors]`: one layout printed exactly as make_fixture.py's `--report`
//! prints it, so the two can be compared with `diff` (fixtures/README.md has the command).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Result, bail};
use optimizer_core::layout::{BuildOptions, Layout};

use crate::fixtures::load_specs;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The spec's model key, e.g. qwen3-coder-next.
    model: String,
    /// The quant, e.g. UD-Q5_K_XL.
    quant: String,
    /// Also list every tensor with its shape, type and bytes.
    #[arg(long)]
    tensors: bool,
    /// Build this many layers.
    #[arg(long, value_name = "N")]
    layers: Option<u64>,
}

pub(crate) fn run(root: &Path, args: &Args) -> Result<ExitCode> {
    let specs = load_specs(root)?;
    let Some(spec) = specs.iter().find(|s| s.key() == args.model) else {
        let keys: Vec<_> = specs.iter().map(optimizer_core::layout::LayoutSpec::key).collect();
        bail!("no layout spec {:?}; expected one of {}", args.model, keys.join(", "));
    };
    let layout =
        spec.build(&args.quant, &BuildOptions { n_layer: args.layers, ..BuildOptions::default() })?;
    print!("{}", report(&layout, args.tensors));
    Ok(ExitCode::SUCCESS)
}

/// make_fixture.py `report()`, byte for byte.
pub(crate) fn report(layout: &Layout, tensors: bool) -> String {
    let mut out = String::new();
    let data: u64 = layout.tensors.iter().map(|t| t.size.align_up(32).get()).sum();
    let total = layout.tensor_bytes().get() as f64;
    let elements: u64 = layout.tensors.iter().map(|t| t.dims.iter().product::<u64>()).sum();
    let n_el = elements as f64;
    let _ = writeln!(
        out,
        "{} {}: {} tensors, data {} bytes = {:.3} GB = {:.3} GiB, params {:.3} B, {:.3} BPW",
        layout.model,
        layout.quant,
        layout.tensors.len(),
        data,
        data as f64 / 1e9,
        data as f64 / f64::from(1u32 << 30),
        n_el / 1e9,
        8.0 * total / n_el
    );
    // python sorts the type names as strings
    let mut by_type: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for t in &layout.tensors {
        let e = by_type.entry(t.ggml_type.name()).or_default();
        e.0 += 1;
        e.1 += t.size.get();
    }
    for (name, (count, bytes)) in by_type {
        let _ = writeln!(
            out,
            "   type {name:<6}: {count:>4} tensors {:>12.2} MiB",
            bytes as f64 / f64::from(1u32 << 20)
        );
    }
    if tensors {
        for t in &layout.tensors {
            let shape = format!("[{}]", t.dims.iter().map(u64::to_string).collect::<Vec<_>>().join(", "));
            let _ = writeln!(
                out,
                "   {:<40} {:<24} {:<6} {:>12}",
                t.name,
                shape,
                t.ggml_type.name(),
                t.size.get()
            );
        }
    }
    out
}
