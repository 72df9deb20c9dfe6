//! Times reading a model's GGUF headers, for docs/benchmarks.md.
//!
//! ```console
//! $ cargo run --release -p optimizer-core --example gguf_header_bench -- split MODEL.gguf OUTDIR 3
//! $ cargo run --release -p optimizer-core --example gguf_header_bench -- read OUTDIR/MODEL-00001-of-00003.gguf 20
//! ```
//!
//! `split` cuts a header-only GGUF into header-only shards the way gguf-split does (all metadata in
//! the first, `split.*` keys in every one, tensors in order); `read` opens the model from the given
//! file, builds its model description, and prints the time of each step (minimum and median of
//! the runs) and the process's peak RSS.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use optimizer_core::gguf::{
    DataFill, GgufWriter, MetadataValue, ReadOptions, SPLIT_COUNT, SPLIT_NO, SPLIT_TENSORS_COUNT, open_model,
    read_gguf_file,
};
use optimizer_core::model::ModelDescription;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["split", input, out, n] => n
            .parse()
            .map_err(|e| format!("bad count: {e}"))
            .and_then(|n| split(Path::new(input), Path::new(out), n)),
        ["read", path, runs] => {
            runs.parse().map_err(|e| format!("bad run count: {e}")).and_then(|r| read(Path::new(path), r))
        }
        _ => Err("usage: gguf_header_bench split IN.gguf OUTDIR N | read SHARD.gguf RUNS".to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn split(input: &Path, out: &Path, n: usize) -> Result<(), String> {
    let file = read_gguf_file(input, &ReadOptions::all_arrays()).map_err(|e| e.to_string())?;
    let stem = input.file_stem().and_then(|s| s.to_str()).ok_or("bad input name")?;
    let per_shard = file.tensors.len().div_ceil(n);
    let n_u16 = u16::try_from(n).map_err(|_| "too many shards")?;
    let total = i32::try_from(file.tensors.len()).map_err(|_| "too many tensors")?;
    for (i, chunk) in (0..n_u16).zip(file.tensors.chunks(per_shard.max(1)).chain(std::iter::repeat(&[][..])))
    {
        let mut w = GgufWriter::new();
        if i == 0 {
            for (k, v) in file.metadata.entries() {
                w.add_metadata(k.as_str(), v.clone());
            }
        }
        w.add_metadata(SPLIT_NO, MetadataValue::U16(i));
        w.add_metadata(SPLIT_COUNT, MetadataValue::U16(n_u16));
        w.add_metadata(SPLIT_TENSORS_COUNT, MetadataValue::I32(total));
        for t in chunk {
            w.add_tensor(t.name.as_str(), &t.dims, t.ggml_type).map_err(|e| e.to_string())?;
        }
        let path = out.join(format!("{stem}-{:05}-of-{n:05}.gguf", i + 1));
        std::fs::write(&path, w.to_bytes(DataFill::HeaderOnly))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("{}: {} tensors, {} bytes", path.display(), chunk.len(), w.data_offset());
    }
    Ok(())
}

fn read(path: &Path, runs: usize) -> Result<(), String> {
    let mut open_times = Vec::new();
    let mut model_times = Vec::new();
    let mut shards: Vec<PathBuf> = Vec::new();
    let mut summary = String::new();
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let model = open_model(path, &ReadOptions::default()).map_err(|e| e.to_string())?;
        let opened = Instant::now();
        let description = ModelDescription::from_gguf(&model).map_err(|e| e.to_string())?;
        let built = Instant::now();
        open_times.push(opened - start);
        model_times.push(built - opened);
        std::hint::black_box(description);
        shards = model.shards.iter().map(|s| s.path.clone()).collect();
        let first = &model.shards[0].file;
        summary = format!(
            "{} tensors, {} tensor bytes, first data offset {}, header-only {}",
            model.tensors().count(),
            model.tensor_bytes().get(),
            first.data_offset,
            model.is_header_only()
        );
    }
    let header_bytes: u64 = shards.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
    println!("shards: {} ({header_bytes} header bytes): {summary}", shards.len());
    println!("open_model: {}", stats(&mut open_times));
    println!("ModelDescription::from_gguf: {}", stats(&mut model_times));
    let totals: Vec<Duration> = open_times.iter().zip(&model_times).map(|(a, b)| *a + *b).collect();
    println!("total: {}", stats(&mut totals.clone()));
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        for line in status.lines().filter(|l| l.starts_with("VmHWM") || l.starts_with("VmRSS")) {
            println!("{line}");
        }
    }
    Ok(())
}

fn stats(times: &mut [Duration]) -> String {
    times.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "min {:.2} ms, median {:.2} ms over {} runs",
        ms(times[0]),
        ms(times[times.len() / 2]),
        times.len()
    )
}
