//! A layout as GGUF: the writer of each file, and the whole model read back in memory exactly as the
//! reader presents the header-only files that `xtask fixtures` writes (so tests need no files).

use std::io::Cursor;
use std::path::PathBuf;

use super::{Layout, LayoutError, ShardLayout};
use crate::gguf::{DataFill, GgufModel, GgufWriter, ReadOptions, Shard, read_gguf};

impl ShardLayout {
    /// A GGUF writer holding this file's metadata and tensors (tensors in layout order).
    pub fn writer(&self, layout: &Layout) -> Result<GgufWriter, LayoutError> {
        let mut w = GgufWriter::new();
        for (key, value) in self.metadata.entries() {
            w.add_metadata(key.clone(), value.clone());
        }
        let tensors = layout.tensors.get(self.tensors.clone()).unwrap_or_default();
        for t in tensors {
            w.add_tensor(t.name.clone(), &t.dims, t.ggml_type)
                .map_err(|e| LayoutError::Write { file: self.file.clone(), message: e.to_string() })?;
        }
        Ok(w)
    }
}

impl Layout {
    /// The model as [`open_model`](crate::gguf::open_model) would return it for the header-only
    /// files of this layout: every file written in memory and read back with `options`. Each shard's
    /// `path` is its relative file name.
    pub fn to_model(&self, options: &ReadOptions) -> Result<GgufModel, LayoutError> {
        let mut shards = Vec::new();
        for (index, shard) in self.shards()?.into_iter().enumerate() {
            let bytes = shard.writer(self)?.to_bytes(DataFill::HeaderOnly);
            let mut file = read_gguf(Cursor::new(bytes), options)
                .map_err(|e| LayoutError::Write { file: shard.file.clone(), message: e.to_string() })?;
            for t in &mut file.tensors {
                t.shard = index;
            }
            shards.push(Shard { path: PathBuf::from(shard.file), file });
        }
        Ok(GgufModel { shards })
    }
}
