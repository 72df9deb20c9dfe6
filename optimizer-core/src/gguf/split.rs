//! Split models: the `NAME-00001-of-00003.gguf` files that gguf-split writes, found from any one of
//! them and presented as one [`GgufModel`].
//!
//! gguf-split puts all metadata in the first file and `split.no`, `split.count` and
//! `split.tensors.count` in every file (tools/gguf-split/gguf-split.cpp:229-246). llama.cpp finds
//! the other files by name (`llama_split_prefix`/`llama_split_path`, src/llama.cpp:545-597) and
//! checks each file's `split.no` and the total tensor count (src/llama-model-loader.cpp:594-671).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::error::{GgufError, GgufErrorKind};
use super::reader::{ReadOptions, describe, read_gguf_file};
use super::{GgufFile, GgufModel, Metadata, MetadataValue, Shard};

/// This file's index in the split model, from 0 (`LLM_KV_SPLIT_NO`, src/llama-arch.cpp:344).
pub const SPLIT_NO: &str = "split.no";
/// How many files the model has (`LLM_KV_SPLIT_COUNT`, src/llama-arch.cpp:345).
pub const SPLIT_COUNT: &str = "split.count";
/// How many tensors all files hold together (`LLM_KV_SPLIT_TENSORS_COUNT`, src/llama-arch.cpp:346).
pub const SPLIT_TENSORS_COUNT: &str = "split.tensors.count";

/// Opens a model from an unsplit GGUF file or from any file of a split model (all its files must
/// lie beside it, named as llama.cpp names them). Shards come out in order, and each tensor's
/// [`shard`](super::TensorInfo::shard) is the index of the file that holds it.
pub fn open_model(path: &Path, options: &ReadOptions) -> Result<GgufModel, GgufError> {
    let given = read_gguf_file(path, options)?;
    let in_given = |kind| GgufError::new(Some(path.to_path_buf()), kind);

    // llama.cpp reads split.count into a uint16_t, and treats 0 (absent) and 1 as unsplit
    // (src/llama-model-loader.cpp:595-599).
    let count = match integer_key(&given.metadata, SPLIT_COUNT, "a number of files").map_err(in_given)? {
        None | Some(0 | 1) => {
            return Ok(GgufModel { shards: vec![Shard { path: path.to_path_buf(), file: given }] });
        }
        Some(n) if n > u64::from(u16::MAX) => {
            return Err(in_given(mismatch(SPLIT_COUNT, n.to_string(), "at most 65535".to_owned())));
        }
        Some(n) => n,
    };
    let expected_no = || format!("a number below {count}");
    let no = match integer_key(&given.metadata, SPLIT_NO, "a file index").map_err(in_given)? {
        None => return Err(in_given(mismatch(SPLIT_NO, "absent".to_owned(), expected_no()))),
        Some(no) if no >= count => return Err(in_given(mismatch(SPLIT_NO, no.to_string(), expected_no()))),
        Some(no) => no,
    };

    let Some(paths) = shard_paths(path, no, count) else {
        return Err(in_given(GgufErrorKind::SplitNameNotRecognized {
            split_no: no,
            split_count: count,
            expected_suffix: suffix(no, count),
        }));
    };
    let missing: Vec<PathBuf> = paths
        .iter()
        .enumerate()
        .filter(|&(i, p)| i as u64 != no && !p.is_file())
        .map(|(_, p)| p.clone())
        .collect();
    if !missing.is_empty() {
        return Err(in_given(GgufErrorKind::ShardMissing { missing, split_count: count }));
    }

    let mut given = Some(given);
    let mut shards = Vec::with_capacity(paths.len());
    for (index, shard_path) in paths.into_iter().enumerate() {
        let (shard_path, file) = if let Some(file) = given.take_if(|_| index as u64 == no) {
            (path.to_path_buf(), file)
        } else {
            let file = read_gguf_file(&shard_path, options)?;
            (shard_path, file)
        };
        check_split_keys(&file, index as u64, count)
            .map_err(|kind| GgufError::new(Some(shard_path.clone()), kind))?;
        shards.push(Shard { path: shard_path, file });
    }

    check_tensors(&mut shards)?;
    Ok(GgufModel { shards })
}

/// The file name's ending for file `no` of `count` (`llama_split_path`'s `%05d`, src/llama.cpp:552).
fn suffix(no: u64, count: u64) -> String {
    format!("-{:05}-of-{count:05}.gguf", no + 1)
}

/// Every file of the model whose file `no` is at `path`, or `None` if the name does not end as it
/// should (`llama_split_prefix`, src/llama.cpp:570-597).
fn shard_paths(path: &Path, no: u64, count: u64) -> Option<Vec<PathBuf>> {
    let name = path.file_name()?.to_str()?;
    let prefix = name.strip_suffix(&suffix(no, count)).filter(|p| !p.is_empty())?;
    Some((0..count).map(|i| path.with_file_name(format!("{prefix}{}", suffix(i, count)))).collect())
}

fn mismatch(key: &'static str, found: String, expected: String) -> GgufErrorKind {
    GgufErrorKind::ShardMismatch { key, found, expected }
}

/// An integer key's value; an error if the key holds something else.
fn integer_key(metadata: &Metadata, key: &'static str, expected: &str) -> Result<Option<u64>, GgufErrorKind> {
    match metadata.get(key) {
        None => Ok(None),
        Some(v @ (MetadataValue::Bool(_) | MetadataValue::String(_) | MetadataValue::Array(_))) => {
            Err(mismatch(key, describe(v), format!("{expected} stored as an integer")))
        }
        Some(v) => match v.as_u64() {
            Some(n) => Ok(Some(n)),
            None => Err(mismatch(key, describe(v), format!("{expected}, not negative"))),
        },
    }
}

fn check_split_keys(file: &GgufFile, index: u64, count: u64) -> Result<(), GgufErrorKind> {
    let found = |n: Option<u64>| n.map_or_else(|| "absent".to_owned(), |n| n.to_string());
    let no = integer_key(&file.metadata, SPLIT_NO, "a file index")?;
    if no != Some(index) {
        return Err(mismatch(SPLIT_NO, found(no), format!("{index}, as the file name says")));
    }
    let n = integer_key(&file.metadata, SPLIT_COUNT, "a number of files")?;
    if n != Some(count) {
        return Err(mismatch(SPLIT_COUNT, found(n), format!("{count}, as the file name says")));
    }
    Ok(())
}

/// Numbers every tensor with its shard, and checks that no tensor is in two shards and that the
/// shards hold as many tensors as `split.tensors.count` says (required in the first shard, checked
/// in every shard that has it).
fn check_tensors(shards: &mut [Shard]) -> Result<(), GgufError> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut total = 0u64;
    for (index, shard) in shards.iter_mut().enumerate() {
        for t in &mut shard.file.tensors {
            t.shard = index;
        }
    }
    for (index, shard) in shards.iter().enumerate() {
        for t in &shard.file.tensors {
            if let Some(&other) = seen.get(&t.name) {
                return Err(GgufError::new(
                    Some(shard.path.clone()),
                    GgufErrorKind::DuplicateTensorAcrossShards {
                        name: t.name.clone(),
                        other: shards[other].path.clone(),
                    },
                ));
            }
            seen.insert(t.name.clone(), index);
        }
        total += shard.file.tensors.len() as u64;
    }
    for (index, shard) in shards.iter().enumerate() {
        let in_shard = |kind| GgufError::new(Some(shard.path.clone()), kind);
        let expected = || format!("{total}, the number of tensors in all {} files", shards.len());
        match integer_key(&shard.file.metadata, SPLIT_TENSORS_COUNT, "a tensor count").map_err(in_shard)? {
            Some(n) if n == total => {}
            Some(n) => return Err(in_shard(mismatch(SPLIT_TENSORS_COUNT, n.to_string(), expected()))),
            None if index == 0 => {
                return Err(in_shard(mismatch(SPLIT_TENSORS_COUNT, "absent".to_owned(), expected())));
            }
            None => {}
        }
    }
    Ok(())
}
