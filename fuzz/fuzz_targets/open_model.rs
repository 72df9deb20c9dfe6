//! `open_model` on arbitrary bytes cut into up to three shards of a split model, written to a
//! temporary folder (the loader finds shards by name, so they must be files).

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use optimizer_core::gguf::{ReadOptions, open_model};

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("splitplan-fuzz-open-model-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    // First byte: how many files (1-3) and which one to open; then 2-byte lengths of the first
    // parts, the rest is the last part.
    let Some((&control, mut rest)) = data.split_first() else { return };
    let count = usize::from(control % 3) + 1;
    let given = usize::from(control / 3) % count;
    let mut parts = Vec::new();
    for _ in 1..count {
        let Some((len, tail)) = rest.split_first_chunk::<2>() else { return };
        let len = usize::from(u16::from_le_bytes(*len)).min(tail.len());
        parts.push(&tail[..len]);
        rest = &tail[len..];
    }
    parts.push(rest);
    let dir = dir();
    let paths: Vec<PathBuf> =
        (0..count).map(|i| dir.join(format!("m-{:05}-of-{count:05}.gguf", i + 1))).collect();
    for (path, part) in paths.iter().zip(&parts) {
        std::fs::write(path, part).unwrap();
    }
    if let Ok(model) = open_model(&paths[given], &ReadOptions::default()) {
        assert!(!model.shards.is_empty() && model.shards.len() <= count);
        for t in model.tensors() {
            assert!(t.shard < model.shards.len());
        }
    }
    for path in &paths {
        let _ = std::fs::remove_file(path);
    }
});
