//! `xtask fixtures`: layout specs (fixtures/layouts/*.toml) → GGUF files.
//!
//! The committed fixtures (fixtures/models/) are header-only files with shortened tokenizer arrays:
//! every spec, every quant, split as the published files are. `--check` compares them with what
//! would be written now; a test does the same, so they cannot drift from the specs.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use optimizer_core::gguf::{DataFill, GgufWriter};
use optimizer_core::layout::{BuildOptions, Layout, LayoutSpec, TokenizerMode};

use crate::sparse;

/// Where the specs and the committed fixtures live, relative to the repository root.
pub(crate) const LAYOUTS_DIR: &str = "fixtures/layouts";
pub(crate) const MODELS_DIR: &str = "fixtures/models";

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Write full-length tokenizer arrays (the real token and merge counts) instead of shortened
    /// ones; needs --out.
    #[arg(long)]
    full_tokenizer: bool,
    /// Write full-size files into DIR that real llama.cpp can load: the data region is a hole except
    /// random token_embd and router rows and norms set to 1. Implies --full-tokenizer.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["out", "check"])]
    sparse: Option<PathBuf>,
    /// Write into DIR instead of fixtures/models/.
    #[arg(long, value_name = "DIR", conflicts_with = "check")]
    out: Option<PathBuf>,
    /// Only this model (a spec key, e.g. gpt-oss-120b) or MODEL:QUANT; repeatable.
    #[arg(long, value_name = "MODEL[:QUANT]")]
    only: Vec<String>,
    /// Build this many layers instead of the real count (the first N layers of the real file);
    /// needs --out or --sparse.
    #[arg(long, value_name = "N")]
    layers: Option<u64>,
    /// Seed for the random rows of --sparse.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Compare fixtures/models/ with what would be written, write nothing; exit 1 on a difference.
    #[arg(long)]
    check: bool,
}

/// One file to write: its path under the models folder and its header.
pub(crate) struct Rendered {
    pub path: String,
    pub writer: GgufWriter,
}

/// Every spec in fixtures/layouts/, in file-name order.
pub(crate) fn load_specs(root: &Path) -> Result<Vec<LayoutSpec>> {
    let dir = root.join(LAYOUTS_DIR);
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let text = fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
            LayoutSpec::parse(&text).with_context(|| format!("in {}", p.display()))
        })
        .collect()
}

/// The writers of a layout's files (one per shard), tensors in layout order.
pub(crate) fn render(layout: &Layout) -> Result<Vec<Rendered>> {
    let mut out = Vec::new();
    for shard in layout.shards()? {
        let writer = shard.writer(layout)?;
        out.push(Rendered { path: shard.file, writer });
    }
    Ok(out)
}

/// The committed fixtures as they should be: every spec and quant, shortened tokenizer, header only.
pub(crate) fn committed(root: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    for spec in load_specs(root)? {
        for quant in spec.quants() {
            let layout = spec.build(quant, &BuildOptions::default())?;
            for r in render(&layout)? {
                files.push((r.path, r.writer.to_bytes(DataFill::HeaderOnly)));
            }
        }
    }
    Ok(files)
}

/// Every `.gguf` file under `dir`, as paths relative to it.
pub(crate) fn gguf_files(dir: &Path) -> Result<BTreeSet<String>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) -> Result<()> {
        for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                walk(base, &path, out)?;
            } else if path.extension().is_some_and(|e| e == "gguf") {
                let rel = path.strip_prefix(base).unwrap_or(&path);
                out.insert(rel.to_string_lossy().replace('\\', "/"));
            }
        }
        Ok(())
    }
    let mut out = BTreeSet::new();
    if dir.exists() {
        walk(dir, dir, &mut out)?;
    }
    Ok(out)
}

fn selected(only: &[String], model: &str, quant: &str) -> bool {
    only.is_empty()
        || only.iter().any(|o| match o.split_once(':') {
            Some((m, q)) => m == model && q == quant,
            None => o == model,
        })
}

pub(crate) fn run(root: &Path, args: &Args) -> Result<ExitCode> {
    let custom = args.full_tokenizer || args.layers.is_some();
    if custom && args.out.is_none() && args.sparse.is_none() {
        bail!(
            "--full-tokenizer and --layers write files that are not the committed fixtures\nhint: add --out DIR"
        );
    }
    if !args.only.is_empty() && args.out.is_none() && args.sparse.is_none() && !args.check {
        bail!("--only writes part of the committed fixtures\nhint: add --out DIR, or regenerate them all");
    }
    let models_dir = root.join(MODELS_DIR);
    if args.check {
        return check(root, &models_dir);
    }
    let options = BuildOptions {
        n_layer: args.layers,
        tokenizer: if args.full_tokenizer || args.sparse.is_some() {
            TokenizerMode::Full
        } else {
            TokenizerMode::Short
        },
        sparse: args.sparse.is_some(),
    };
    let out_dir = args.sparse.clone().or_else(|| args.out.clone()).unwrap_or_else(|| models_dir.clone());
    let mut written = BTreeSet::new();
    let mut matched = false;
    for spec in load_specs(root)? {
        for quant in spec.quants() {
            if !selected(&args.only, spec.key(), quant) {
                continue;
            }
            matched = true;
            let layout = spec.build(quant, &options)?;
            for r in render(&layout)? {
                let path = out_dir.join(&r.path);
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent)
                        .with_context(|| format!("cannot create {}", parent.display()))?;
                }
                if args.sparse.is_some() {
                    sparse::write(&path, &layout, &r.writer, args.seed)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                } else {
                    let bytes = r.writer.to_bytes(DataFill::HeaderOnly);
                    if fs::read(&path).ok().as_ref() != Some(&bytes) {
                        fs::write(&path, &bytes)
                            .with_context(|| format!("cannot write {}", path.display()))?;
                    }
                }
                let size = fs::metadata(&path).map_or(0, |m| m.len());
                println!("{:>14} bytes  {}", group(size), path.display());
                written.insert(r.path);
            }
        }
    }
    if !matched {
        bail!("--only {:?} matches no spec and quant in {LAYOUTS_DIR}", args.only);
    }
    if out_dir == models_dir {
        for stale in gguf_files(&models_dir)?.difference(&written) {
            eprintln!("warning: {MODELS_DIR}/{stale} is not generated by any spec; delete it");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn check(root: &Path, models_dir: &Path) -> Result<ExitCode> {
    let expected = committed(root)?;
    let mut problems = Vec::new();
    for (path, bytes) in &expected {
        match fs::read(models_dir.join(path)) {
            Ok(found) if &found == bytes => {}
            Ok(_) => problems.push(format!("{MODELS_DIR}/{path} differs from what its spec gives")),
            Err(_) => problems.push(format!("{MODELS_DIR}/{path} is missing")),
        }
    }
    let names: BTreeSet<String> = expected.into_iter().map(|(p, _)| p).collect();
    for stale in gguf_files(models_dir)?.difference(&names) {
        problems.push(format!("{MODELS_DIR}/{stale} is not generated by any spec"));
    }
    if problems.is_empty() {
        println!("{} fixtures match their specs", names.len());
        return Ok(ExitCode::SUCCESS);
    }
    for p in &problems {
        eprintln!("{p}");
    }
    eprintln!("hint: cargo run -p xtask -- fixtures");
    Ok(ExitCode::from(1))
}

fn group(n: u64) -> String {
    optimizer_core::units::group_thousands(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_fixtures_are_what_the_specs_give() {
        let root = crate::repo_root();
        let models_dir = root.join(MODELS_DIR);
        let expected = committed(&root).unwrap();
        assert!(!expected.is_empty());
        for (path, bytes) in &expected {
            let found = fs::read(models_dir.join(path))
                .unwrap_or_else(|e| panic!("{MODELS_DIR}/{path}: {e}; run cargo run -p xtask -- fixtures"));
            assert!(
                found == *bytes,
                "{MODELS_DIR}/{path} differs from its spec; run cargo run -p xtask -- fixtures"
            );
        }
        let names: BTreeSet<String> = expected.into_iter().map(|(p, _)| p).collect();
        let stale: Vec<_> = gguf_files(&models_dir).unwrap().difference(&names).cloned().collect();
        assert!(stale.is_empty(), "files no spec generates: {stale:?}");
    }

    #[test]
    fn committed_fixtures_read_back_as_their_layouts() {
        use optimizer_core::gguf::{ReadOptions, open_model};
        let root = crate::repo_root();
        let mut models = 0;
        for spec in load_specs(&root).unwrap() {
            for quant in spec.quants() {
                let layout = spec.build(quant, &BuildOptions::default()).unwrap();
                let first = &layout.shards().unwrap()[0].file;
                let model = open_model(&root.join(MODELS_DIR).join(first), &ReadOptions::default()).unwrap();
                let read: Vec<_> = model.tensors().map(|t| (&t.name, &t.dims, t.ggml_type, t.size)).collect();
                let built: Vec<_> =
                    layout.tensors.iter().map(|t| (&t.name, &t.dims, t.ggml_type, t.size)).collect();
                assert_eq!(read, built, "{first}");
                assert!(model.is_header_only(), "{first}");
                assert_eq!(model.metadata().unwrap().architecture(), Some(spec.arch()), "{first}");
                models += 1;
            }
        }
        assert_eq!(models, 11);
    }

    #[test]
    fn committed_fixtures_stay_small() {
        let total: usize = committed(&crate::repo_root()).unwrap().iter().map(|(_, b)| b.len()).sum();
        assert!(total < 3 << 20, "fixtures/models/ would be {total} bytes");
    }

    #[test]
    fn only_filters_by_model_and_quant() {
        let only = ["gpt-oss-120b".to_owned(), "glm-4.7-flash:Q8_0".to_owned()];
        assert!(selected(&only, "gpt-oss-120b", "F16"));
        assert!(selected(&only, "glm-4.7-flash", "Q8_0"));
        assert!(!selected(&only, "glm-4.7-flash", "Q4_K_M"));
        assert!(selected(&[], "anything", "Q4_K_M"));
    }
}
