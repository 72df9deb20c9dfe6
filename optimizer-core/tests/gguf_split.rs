//! Split models written to a temporary folder the way gguf-split writes them: all metadata in the

// Test inputs are small: their counts fit every integer type.
#![allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
//! first file, `split.*` keys in every file.

use std::path::{Path, PathBuf};

use optimizer_core::gguf::{
    DataFill, GgmlType, GgufErrorKind, GgufModel, GgufWriter, MetadataValue, ReadOptions, SPLIT_COUNT,
    SPLIT_NO, SPLIT_TENSORS_COUNT, open_model,
};

/// Tensors per shard of the test model: the first shard holds none, like `--no-tensor-first-split`
/// when `first_empty`.
fn layout(n_shards: usize, first_empty: bool) -> Vec<Vec<String>> {
    (0..n_shards)
        .map(|s| {
            if first_empty && s == 0 {
                return Vec::new();
            }
            (0..3).map(|i| format!("blk.{}.ffn_up_exps.weight", s * 3 + i)).collect()
        })
        .collect()
}

/// Writers for every shard, as gguf-split fills them (gguf-split.cpp:229-246, 275-278).
fn shard_writers(tensors: &[Vec<String>]) -> Vec<GgufWriter> {
    let n = tensors.len();
    let total: usize = tensors.iter().map(Vec::len).sum();
    tensors
        .iter()
        .enumerate()
        .map(|(i, names)| {
            let mut w = GgufWriter::new();
            if i == 0 {
                w.add_metadata("general.architecture", MetadataValue::String("qwen3next".into()));
                w.add_metadata("qwen3next.block_count", MetadataValue::U32(48));
            }
            w.add_metadata(SPLIT_NO, MetadataValue::U16(i as u16));
            w.add_metadata(SPLIT_COUNT, MetadataValue::U16(n as u16));
            w.add_metadata(SPLIT_TENSORS_COUNT, MetadataValue::I32(total as i32));
            for name in names {
                w.add_tensor(name.as_str(), &[2048, 512, 64], GgmlType::Q4K).unwrap();
            }
            w
        })
        .collect()
}

fn shard_path(dir: &Path, i: usize, n: usize) -> PathBuf {
    dir.join(format!("Qwen3-Coder-Next-UD-Q5_K_XL-{:05}-of-{n:05}.gguf", i + 1))
}

fn write_shards(dir: &Path, writers: &[GgufWriter]) -> Vec<PathBuf> {
    let n = writers.len();
    writers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let path = shard_path(dir, i, n);
            std::fs::write(&path, w.to_bytes(DataFill::HeaderOnly)).unwrap();
            path
        })
        .collect()
}

fn open(path: &Path) -> Result<GgufModel, optimizer_core::gguf::GgufError> {
    open_model(path, &ReadOptions::default())
}

#[test]
fn split_model_is_found_from_any_shard() {
    for first_empty in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let tensors = layout(3, first_empty);
        let paths = write_shards(dir.path(), &shard_writers(&tensors));
        for given in &paths {
            let model = open(given).unwrap();
            let shard_paths: Vec<_> = model.shards.iter().map(|s| s.path.clone()).collect();
            assert_eq!(shard_paths, paths);
            assert_eq!(model.metadata().unwrap().architecture(), Some("qwen3next"));
            let found: Vec<(String, usize)> = model.tensors().map(|t| (t.name.clone(), t.shard)).collect();
            let expected: Vec<(String, usize)> = tensors
                .iter()
                .enumerate()
                .flat_map(|(s, names)| names.iter().map(move |n| (n.clone(), s)))
                .collect();
            assert_eq!(found, expected);
            assert!(model.is_header_only());
            assert_eq!(model.tensor_bytes().get(), 2048 / 256 * 144 * 512 * 64 * expected.len() as u64);
        }
    }
}

#[test]
fn unsplit_file_is_one_shard() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    let mut w = GgufWriter::new();
    w.add_tensor("a", &[32], GgmlType::F32).unwrap();
    std::fs::write(&path, w.to_bytes(DataFill::Zeros)).unwrap();
    let model = open(&path).unwrap();
    assert_eq!(model.shards.len(), 1);
    assert_eq!(model.shards[0].path, path);
    assert!(!model.is_header_only());
}

#[test]
fn single_file_split_model_is_one_shard() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_shards(dir.path(), &shard_writers(&layout(1, false)));
    assert_eq!(open(&paths[0]).unwrap().shards.len(), 1);
}

#[test]
fn missing_shards_are_all_listed() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_shards(dir.path(), &shard_writers(&layout(4, false)));
    std::fs::remove_file(&paths[1]).unwrap();
    std::fs::remove_file(&paths[3]).unwrap();
    let err = open(&paths[2]).unwrap_err();
    assert_eq!(err.path(), Some(paths[2].as_path()));
    match err.kind() {
        GgufErrorKind::ShardMissing { missing, split_count: 4 } => {
            assert_eq!(missing, &[paths[1].clone(), paths[3].clone()]);
        }
        other => panic!("{other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("split model is missing 2 of its 4 files:"), "{message}");
    assert!(
        message.contains(&format!("\n  {}\n  {}\nhint: ", paths[1].display(), paths[3].display())),
        "{message}"
    );
}

#[test]
fn shard_with_wrong_split_no_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut writers = shard_writers(&layout(3, false));
    writers[2].add_metadata(SPLIT_NO, MetadataValue::U16(1));
    let paths = write_shards(dir.path(), &writers);
    let err = open(&paths[0]).unwrap_err();
    assert_eq!(err.path(), Some(paths[2].as_path()));
    assert!(matches!(err.kind(), GgufErrorKind::ShardMismatch { key: "split.no", .. }));
    assert!(
        err.to_string().ends_with("split key 'split.no' is '1', expected 2, as the file name says"),
        "{err}"
    );
}

#[test]
fn shard_with_wrong_split_count_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut writers = shard_writers(&layout(3, false));
    writers[1].add_metadata(SPLIT_COUNT, MetadataValue::U16(2));
    let paths = write_shards(dir.path(), &writers);
    let err = open(&paths[2]).unwrap_err();
    assert_eq!(err.path(), Some(paths[1].as_path()));
    assert!(err.to_string().contains("split key 'split.count' is '2', expected 3"), "{err}");
}

#[test]
fn wrong_tensor_count_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut writers = shard_writers(&layout(3, false));
    writers[0].add_metadata(SPLIT_TENSORS_COUNT, MetadataValue::I32(10));
    let paths = write_shards(dir.path(), &writers);
    let err = open(&paths[1]).unwrap_err();
    assert_eq!(err.path(), Some(paths[0].as_path()));
    assert!(
        err.to_string().contains(
            "split key 'split.tensors.count' is '10', expected 9, the number of tensors in all 3 files"
        ),
        "{err}"
    );
}

#[test]
fn tensor_count_disagreeing_in_a_later_shard_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut writers = shard_writers(&layout(3, false));
    writers[2].add_metadata(SPLIT_TENSORS_COUNT, MetadataValue::I32(-1));
    let paths = write_shards(dir.path(), &writers);
    let err = open(&paths[0]).unwrap_err();
    assert_eq!(err.path(), Some(paths[2].as_path()));
    assert!(
        err.to_string()
            .contains("'split.tensors.count' is '-1 (i32)', expected a tensor count, not negative"),
        "{err}"
    );
}

#[test]
fn missing_split_no_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = shard_path(dir.path(), 0, 2);
    let mut w = GgufWriter::new();
    w.add_metadata(SPLIT_COUNT, MetadataValue::U16(2));
    std::fs::write(&path, w.to_bytes(DataFill::HeaderOnly)).unwrap();
    let err = open(&path).unwrap_err();
    assert!(err.to_string().contains("split key 'split.no' is 'absent', expected a number below 2"), "{err}");
}

#[test]
fn split_count_of_the_wrong_type_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let mut w = GgufWriter::new();
    w.add_metadata(SPLIT_COUNT, MetadataValue::String("3".into()));
    std::fs::write(&path, w.to_bytes(DataFill::HeaderOnly)).unwrap();
    let err = open(&path).unwrap_err();
    assert!(
        err.to_string()
            .contains("'split.count' is '\"3\" (string)', expected a number of files stored as an integer"),
        "{err}"
    );
}

#[test]
fn duplicate_tensor_across_shards_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = layout(3, false);
    tensors[2][1] = tensors[0][0].clone();
    let paths = write_shards(dir.path(), &shard_writers(&tensors));
    let err = open(&paths[0]).unwrap_err();
    assert_eq!(err.path(), Some(paths[2].as_path()));
    match err.kind() {
        GgufErrorKind::DuplicateTensorAcrossShards { name, other } => {
            assert_eq!(name, "blk.0.ffn_up_exps.weight");
            assert_eq!(other, &paths[0]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn split_file_with_an_unrecognized_name_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let writers = shard_writers(&layout(3, false));
    for name in ["model.gguf", "model-00002-of-00003.gguf", "-00001-of-00003.gguf"] {
        let path = dir.path().join(name);
        std::fs::write(&path, writers[0].to_bytes(DataFill::HeaderOnly)).unwrap();
        let err = open(&path).unwrap_err();
        assert!(matches!(
            err.kind(),
            GgufErrorKind::SplitNameNotRecognized { split_no: 0, split_count: 3, .. }
        ));
        let message = err.to_string();
        assert!(
            message.contains("the metadata says this is part 1 of a 3-file split model, but the file name does not end in '-00001-of-00003.gguf'\nhint: "),
            "{message}"
        );
    }
}

#[test]
fn a_shard_that_fails_to_parse_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_shards(dir.path(), &shard_writers(&layout(3, false)));
    std::fs::write(&paths[1], b"GGUF").unwrap();
    let err = open(&paths[0]).unwrap_err();
    assert_eq!(err.path(), Some(paths[1].as_path()));
    assert!(matches!(err.kind(), GgufErrorKind::Truncated { .. }));
}
