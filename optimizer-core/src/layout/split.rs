//! Splitting a layout into files the way `gguf-split --split` does (tools/gguf-split/gguf-split.cpp),
//! so that split fixtures have the shard boundaries, keys and names of the published files.

use std::ops::Range;

use super::{Layout, LayoutError};
use crate::gguf::{DEFAULT_ALIGNMENT, Metadata, MetadataValue};

/// One file of a (possibly split) layout.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardLayout {
    /// Where the file goes, relative to a models folder, e.g.
    /// `Qwen3-Coder-Next/Q6_K/Qwen3-Coder-Next-Q6_K-00002-of-00003.gguf`.
    pub file: String,
    /// The file's metadata: all keys plus the `split.*` keys in the first file, only the `split.*`
    /// keys in the others (gguf-split.cpp:238-245).
    pub metadata: Metadata,
    /// The file's tensors: a range of [`Layout::tensors`].
    pub tensors: Range<usize>,
}

/// `llama_split_path`'s name pattern (llama.cpp:549-556): `PREFIX-00001-of-00003.gguf`.
fn split_path(file: &str, i: usize, n: usize) -> String {
    let prefix = file.strip_suffix(".gguf").unwrap_or(file);
    format!("{prefix}-{:05}-of-{n:05}.gguf", i + 1)
}

impl Layout {
    /// The files this layout is written as: one for an unsplit model, else what
    /// `gguf-split --split --split-max-size N [--no-tensor-first-split]` writes.
    pub fn shards(&self) -> Result<Vec<ShardLayout>, LayoutError> {
        let Some(split) = self.split else {
            return Ok(vec![ShardLayout {
                file: self.file.clone(),
                metadata: self.metadata.clone(),
                tensors: 0..self.tensors.len(),
            }]);
        };
        // gguf-split.cpp:256-268: a new file starts when the current one's tensor bytes (each padded
        // to the default alignment) would pass the limit; the first file may be kept tensor-free.
        // one empty range per file started so far: the first file, always
        let mut ranges: Vec<Range<usize>> = Vec::new();
        ranges.push(0..0);
        if split.metadata_only_first {
            ranges.push(0..0);
        }
        let mut current: u64 = 0;
        for (i, t) in self.tensors.iter().enumerate() {
            let n_bytes = t.size.align_up(DEFAULT_ALIGNMENT).get();
            let next = current.saturating_add(n_bytes);
            if next > split.max_bytes {
                // gguf-split.cpp:233-236: a file without tensors is an error there
                if ranges.last().is_some_and(Range::is_empty) {
                    return Err(LayoutError::SplitTooSmall {
                        file: self.file.clone(),
                        tensor: t.name.clone(),
                        max_bytes: split.max_bytes,
                    });
                }
                ranges.push(i..i);
                current = n_bytes;
            } else {
                current = next;
            }
            if let Some(r) = ranges.last_mut() {
                r.end = i + 1;
            }
        }
        let n = ranges.len();
        let n_tensors = i32::try_from(self.tensors.len()).unwrap_or(i32::MAX);
        let n_split = u16::try_from(n).unwrap_or(u16::MAX);
        Ok(ranges
            .into_iter()
            .enumerate()
            .map(|(i, tensors)| {
                let mut metadata = if i == 0 { self.metadata.clone() } else { Metadata::default() };
                // gguf_set_val_* removes a key and appends it again (gguf.cpp:1262-1266), so setting
                // split.count last (gguf-split.cpp:276-278) moves it after split.tensors.count.
                metadata.insert("split.no", MetadataValue::U16(u16::try_from(i).unwrap_or(u16::MAX)));
                metadata.insert("split.tensors.count", MetadataValue::I32(n_tensors));
                metadata.insert("split.count", MetadataValue::U16(n_split));
                ShardLayout { file: split_path(&self.file, i, n), metadata, tensors }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgmlType;
    use crate::layout::{LayoutTensor, SplitSpec};
    use crate::units::Bytes;

    fn layout(sizes: &[u64], split: Option<SplitSpec>) -> Layout {
        let tensors = sizes
            .iter()
            .enumerate()
            .map(|(i, &s)| LayoutTensor {
                name: format!("t{i}"),
                dims: vec![s],
                ggml_type: GgmlType::I8,
                layer: None,
                size: Bytes::new(s),
            })
            .collect();
        let mut metadata = Metadata::default();
        metadata.insert("general.architecture", MetadataValue::String("llama".into()));
        Layout {
            model: "m".into(),
            quant: "q".into(),
            n_layer: 0,
            metadata,
            tensors,
            file: "d/m-Q.gguf".into(),
            split,
        }
    }

    #[test]
    fn unsplit_layout_is_one_file() {
        let s = layout(&[10, 20], None).shards().unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].file.as_str(), s[0].tensors.clone()), ("d/m-Q.gguf", 0..2));
    }

    #[test]
    fn split_follows_gguf_split() {
        // sizes pad to 32: 32, 64, 32, 96 → with 100 bytes per file: [32+64], [32], [96]
        let split = SplitSpec { max_bytes: 100, metadata_only_first: true };
        let s = layout(&[30, 50, 32, 90], Some(split)).shards().unwrap();
        let files: Vec<_> = s.iter().map(|s| (s.file.as_str(), s.tensors.clone())).collect();
        assert_eq!(
            files,
            [
                ("d/m-Q-00001-of-00004.gguf", 0..0),
                ("d/m-Q-00002-of-00004.gguf", 0..2),
                ("d/m-Q-00003-of-00004.gguf", 2..3),
                ("d/m-Q-00004-of-00004.gguf", 3..4),
            ]
        );
        let keys: Vec<_> = s[0].metadata.entries().iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["general.architecture", "split.no", "split.tensors.count", "split.count"]);
        assert_eq!(s[2].metadata.get("split.no"), Some(&MetadataValue::U16(2)));
        assert_eq!(s[2].metadata.get("split.count"), Some(&MetadataValue::U16(4)));
        assert_eq!(s[2].metadata.get("split.tensors.count"), Some(&MetadataValue::I32(4)));
        assert_eq!(s[3].metadata.len(), 3);

        let with_first = SplitSpec { max_bytes: 100, metadata_only_first: false };
        let s = layout(&[30, 50, 32], Some(with_first)).shards().unwrap();
        assert_eq!(s.iter().map(|s| s.tensors.clone()).collect::<Vec<_>>(), [0..2, 2..3]);
    }

    #[test]
    fn a_tensor_larger_than_the_limit_cannot_be_split() {
        let split = SplitSpec { max_bytes: 40, metadata_only_first: true };
        let err = layout(&[50, 30], Some(split)).shards().unwrap_err();
        assert_eq!(
            err,
            LayoutError::SplitTooSmall { file: "d/m-Q.gguf".into(), tensor: "t0".into(), max_bytes: 40 }
        );
        // a big tensor after others gets a file of its own, as in gguf-split
        let s = layout(&[30, 50, 30], Some(split)).shards().unwrap();
        assert_eq!(s.iter().map(|s| s.tensors.clone()).collect::<Vec<_>>(), [0..0, 0..1, 1..2, 2..3]);
    }
}
