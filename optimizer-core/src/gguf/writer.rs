//! A GGUF writer, for tests and fixtures: it builds header-only files (or files with zeroed tensor
//! data) in memory or on disk, laid out as ggml's own writer lays them out.
//!
//! The layout follows `gguf_write_out` (gguf.cpp:1647-1683): magic, version, tensor count, key-value
//! pairs, tensor infos, zero padding up to the alignment, then each tensor's data padded to the
//! alignment. Tensor offsets are assigned in the order tensors are added (gguf.cpp:1409-1422).

use std::collections::HashSet;
use std::io::{self, Write};

use super::error::WriteError;
use super::{
    DEFAULT_ALIGNMENT, GgmlType, MAX_DIMS, Metadata, MetadataArray, MetadataValue, TensorInfo, ValueType,
};
use crate::units::Bytes;

/// The GGUF magic, the first four bytes of every file (gguf.h:41).
pub(crate) const GGUF_MAGIC: [u8; 4] = *b"GGUF";

/// The longest tensor name ggml stores, plus its terminating zero (`GGML_MAX_NAME`, ggml.h:229).
pub(crate) const GGML_MAX_NAME: usize = 64;

/// What [`GgufWriter::to_bytes`] puts after the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataFill {
    /// Nothing: the file ends at [`GgufWriter::data_offset`], as header-only fixtures do.
    HeaderOnly,
    /// The whole data section, [`GgufWriter::data_size`] zero bytes.
    Zeros,
}

#[derive(Clone, Debug)]
struct PlannedTensor {
    name: String,
    dims: Vec<u64>,
    ggml_type: GgmlType,
    size: u64,
}

/// Builds a GGUF file: metadata in insertion order, then tensors in insertion order.
///
/// ```
/// use optimizer_core::gguf::{DataFill, GgmlType, GgufWriter, MetadataValue, ReadOptions, read_gguf};
///
/// let mut w = GgufWriter::new();
/// w.add_metadata("general.architecture", MetadataValue::String("llama".into()));
/// w.add_tensor("token_embd.weight", &[4096, 32000], GgmlType::Q4K).unwrap();
/// let bytes = w.to_bytes(DataFill::HeaderOnly);
/// assert_eq!(bytes.len() as u64, w.data_offset());
///
/// let file = read_gguf(std::io::Cursor::new(bytes), &ReadOptions::default()).unwrap();
/// assert_eq!(file.tensors[0].size.get(), 4096 / 256 * 144 * 32000);
/// ```
#[derive(Clone, Debug)]
pub struct GgufWriter {
    version: u32,
    metadata: Metadata,
    tensors: Vec<PlannedTensor>,
    names: HashSet<String>,
}

impl Default for GgufWriter {
    fn default() -> GgufWriter {
        GgufWriter::new()
    }
}

impl GgufWriter {
    /// A writer of GGUF version 3 files with alignment 32.
    pub fn new() -> GgufWriter {
        GgufWriter::with_version(3)
    }

    /// A writer that stores `version` in the header. Versions 2 and 3 share one layout; any other
    /// number is written as is (to test readers), with the same layout.
    pub fn with_version(version: u32) -> GgufWriter {
        GgufWriter { version, metadata: Metadata::default(), tensors: Vec::new(), names: HashSet::new() }
    }

    /// Adds a metadata entry; a key added again keeps its first position and takes the new value.
    ///
    /// `general.alignment` set to a power of two stored as [`MetadataValue::U32`] changes the
    /// alignment of the data section and of every tensor; any other value is written as given but
    /// the layout keeps the default alignment of 32 (so that readers' rejection of it can be tested).
    ///
    /// An array whose `values` is `None` is written as `len` default elements (zeros, empty strings,
    /// empty `u8` arrays); an element whose type differs from the array's element type is written as
    /// that type's default, so the file stays well-formed.
    pub fn add_metadata(&mut self, key: impl Into<String>, value: MetadataValue) {
        self.metadata.insert(key, value);
    }

    /// Adds a tensor of shape `dims` (ggml order, `ne0` first, written with exactly `dims.len()`
    /// dimensions). Its data offset is the previous tensor's end padded to the alignment.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ggml_type: GgmlType,
    ) -> Result<(), WriteError> {
        let name = name.into();
        if name.len() >= GGML_MAX_NAME {
            return Err(WriteError::NameTooLong { len: name.len(), name });
        }
        if self.names.contains(&name) {
            return Err(WriteError::DuplicateTensor { name });
        }
        let max_dim = i64::MAX.unsigned_abs();
        if dims.is_empty() || dims.len() > MAX_DIMS || dims.iter().any(|&d| d == 0 || d > max_dim) {
            return Err(WriteError::InvalidShape { name, dims: dims.to_vec() });
        }
        if dims[0] % ggml_type.block_size() != 0 {
            return Err(WriteError::BlockSize { name, ggml_type, ne0: dims[0] });
        }
        let elements_fit =
            dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).is_some_and(|n| n <= max_dim);
        let size = ggml_type.tensor_bytes(dims).filter(|_| elements_fit);
        // The data section, with this tensor and the largest padding any alignment can add, must
        // still fit in a file.
        let fits = size
            .and_then(|s| self.data_size().checked_add(s))
            .and_then(|end| end.checked_add(u64::from(u32::MAX)))
            .is_some_and(|end| end <= max_dim);
        let Some(size) = size.filter(|_| fits) else {
            return Err(WriteError::TooLarge { name, dims: dims.to_vec() });
        };
        self.names.insert(name.clone());
        self.tensors.push(PlannedTensor { name, dims: dims.to_vec(), ggml_type, size });
        Ok(())
    }

    /// The alignment of the data section and of every tensor: `general.alignment` when it is a
    /// power of two stored as u32, else 32.
    pub fn alignment(&self) -> u64 {
        match self.metadata.get("general.alignment") {
            Some(MetadataValue::U32(a)) if a.is_power_of_two() => u64::from(*a),
            _ => DEFAULT_ALIGNMENT,
        }
    }

    /// Where tensor data starts in the written file: the header's length padded to the alignment.
    pub fn data_offset(&self) -> u64 {
        let mut counter = Counter { inner: io::sink(), written: 0 };
        // Writing to a sink cannot fail.
        let _ = self.write_unpadded_header(&mut counter);
        Bytes(counter.written).align_up(self.alignment()).get()
    }

    /// The size of the data section: every tensor's size padded to the alignment.
    pub fn data_size(&self) -> u64 {
        let align = self.alignment();
        self.tensors.iter().fold(0u64, |acc, t| Bytes(acc.saturating_add(t.size)).align_up(align).get())
    }

    /// The tensor table as a reader returns it (shard 0).
    pub fn tensor_infos(&self) -> Vec<TensorInfo> {
        let align = self.alignment();
        let mut offset = 0u64;
        self.tensors
            .iter()
            .map(|t| {
                let info = TensorInfo {
                    name: t.name.clone(),
                    dims: t.dims.clone(),
                    ggml_type: t.ggml_type,
                    offset,
                    size: Bytes(t.size),
                    shard: 0,
                };
                offset = Bytes(offset.saturating_add(t.size)).align_up(align).get();
                info
            })
            .collect()
    }

    /// The metadata added so far, in insertion order.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Writes the header, padded with zeros up to [`data_offset`](Self::data_offset); returns the
    /// number of bytes written (equal to `data_offset`).
    pub fn write_header<W: Write>(&self, out: W) -> io::Result<u64> {
        let mut out = Counter { inner: out, written: 0 };
        self.write_unpadded_header(&mut out)?;
        let end = Bytes(out.written).align_up(self.alignment()).get();
        let padding = end - out.written;
        write_zeros(&mut out, padding)?;
        out.inner.flush()?;
        Ok(out.written)
    }

    /// The whole file in memory: the header, then nothing or the zeroed data section.
    pub fn to_bytes(&self, data: DataFill) -> Vec<u8> {
        let mut buf = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = self.write_header(&mut buf);
        if data == DataFill::Zeros {
            let size = usize::try_from(self.data_size()).unwrap_or(usize::MAX);
            buf.resize(buf.len().saturating_add(size), 0);
        }
        buf
    }

    fn write_unpadded_header<W: Write>(&self, out: &mut Counter<W>) -> io::Result<()> {
        out.write_all(&GGUF_MAGIC)?;
        out.write_all(&self.version.to_le_bytes())?;
        out.write_all(&(self.tensors.len() as u64).to_le_bytes())?;
        out.write_all(&(self.metadata.len() as u64).to_le_bytes())?;
        for (key, value) in self.metadata.entries() {
            write_string(out, key)?;
            out.write_all(&value.value_type().id().to_le_bytes())?;
            write_value(out, value)?;
        }
        for (tensor, info) in self.tensors.iter().zip(self.tensor_infos()) {
            write_string(out, &tensor.name)?;
            // add_tensor allows at most 4 dimensions.
            let n_dims = u32::try_from(tensor.dims.len()).unwrap_or(u32::MAX);
            out.write_all(&n_dims.to_le_bytes())?;
            for d in &tensor.dims {
                out.write_all(&d.to_le_bytes())?;
            }
            out.write_all(&tensor.ggml_type.id().to_le_bytes())?;
            out.write_all(&info.offset.to_le_bytes())?;
        }
        Ok(())
    }
}

/// Counts what passes through, for the header's length.
struct Counter<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn write_zeros(out: &mut impl Write, mut n: u64) -> io::Result<()> {
    const ZEROS: [u8; 4096] = [0; 4096];
    while n > 0 {
        let chunk = usize::try_from(n).map_or(ZEROS.len(), |n| n.min(ZEROS.len()));
        out.write_all(&ZEROS[..chunk])?;
        n -= chunk as u64;
    }
    Ok(())
}

fn write_string(out: &mut impl Write, s: &str) -> io::Result<()> {
    out.write_all(&(s.len() as u64).to_le_bytes())?;
    out.write_all(s.as_bytes())
}

/// A value without its type id (the caller writes that, or the array header implies it).
fn write_value(out: &mut impl Write, value: &MetadataValue) -> io::Result<()> {
    match value {
        MetadataValue::U8(v) => out.write_all(&v.to_le_bytes()),
        MetadataValue::I8(v) => out.write_all(&v.to_le_bytes()),
        MetadataValue::U16(v) => out.write_all(&v.to_le_bytes()),
        MetadataValue::I16(v) => out.write_all(&v.to_le_bytes()),
        MetadataValue::U32(v) => out.write_all(&v.to_le_bytes()),
        MetadataValue::I32(v) => out.write_all(&v.to_le_bytes()),
        MetadataValue::U64(v) => out.write_all(&v.to_le_bytes()),
        MetadataValue::I64(v) => out.write_all(&v.to_le_bytes()),
        MetadataValue::F32(v) => out.write_all(&v.to_le_bytes()),
        MetadataValue::F64(v) => out.write_all(&v.to_le_bytes()),
        MetadataValue::Bool(v) => out.write_all(&[u8::from(*v)]),
        MetadataValue::String(s) => write_string(out, s),
        MetadataValue::Array(a) => write_array(out, a),
    }
}

fn write_array(out: &mut impl Write, array: &MetadataArray) -> io::Result<()> {
    out.write_all(&array.element_type.id().to_le_bytes())?;
    if let Some(values) = &array.values {
        out.write_all(&(values.len() as u64).to_le_bytes())?;
        for v in values {
            if v.value_type() == array.element_type {
                write_value(out, v)?;
            } else {
                write_default(out, array.element_type)?;
            }
        }
    } else {
        out.write_all(&array.len.to_le_bytes())?;
        for _ in 0..array.len {
            write_default(out, array.element_type)?;
        }
    }
    Ok(())
}

fn write_default(out: &mut impl Write, ty: ValueType) -> io::Result<()> {
    match ty.fixed_size() {
        Some(n) => write_zeros(out, n),
        None if ty == ValueType::String => write_string(out, ""),
        // An empty array of u8: type id 0, length 0.
        None => write_zeros(out, 4 + 8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_gguf_write_out_byte_for_byte() {
        let mut w = GgufWriter::new();
        w.add_metadata("a", MetadataValue::U8(7));
        w.add_tensor("t", &[2], GgmlType::F32).unwrap();
        let mut expected = Vec::new();
        expected.extend(b"GGUF");
        expected.extend(3u32.to_le_bytes());
        expected.extend(1u64.to_le_bytes()); // tensors
        expected.extend(1u64.to_le_bytes()); // key-value pairs
        expected.extend(1u64.to_le_bytes());
        expected.extend(b"a");
        expected.extend(0u32.to_le_bytes()); // GGUF_TYPE_UINT8
        expected.push(7);
        expected.extend(1u64.to_le_bytes());
        expected.extend(b"t");
        expected.extend(1u32.to_le_bytes()); // n_dims
        expected.extend(2u64.to_le_bytes());
        expected.extend(0u32.to_le_bytes()); // GGML_TYPE_F32
        expected.extend(0u64.to_le_bytes()); // offset
        assert_eq!(expected.len(), 71);
        expected.resize(96, 0);
        assert_eq!(w.to_bytes(DataFill::HeaderOnly), expected);
        assert_eq!((w.data_offset(), w.data_size()), (96, 32));
        let mut full = expected;
        full.resize(128, 0);
        assert_eq!(w.to_bytes(DataFill::Zeros), full);
        let mut sink = Vec::new();
        assert_eq!(w.write_header(&mut sink).unwrap(), 96);
    }

    #[test]
    fn add_tensor_refuses_what_a_reader_would_reject() {
        let mut w = GgufWriter::new();
        w.add_tensor("a", &[32], GgmlType::Q8_0).unwrap();
        assert_eq!(
            w.add_tensor("a", &[32], GgmlType::F32),
            Err(WriteError::DuplicateTensor { name: "a".into() })
        );
        let long = "x".repeat(64);
        assert!(matches!(
            w.add_tensor(long, &[1], GgmlType::F32),
            Err(WriteError::NameTooLong { len: 64, .. })
        ));
        for dims in [&[][..], &[1, 1, 1, 1, 1], &[4, 0], &[1 << 63]] {
            assert!(
                matches!(w.add_tensor("b", dims, GgmlType::F32), Err(WriteError::InvalidShape { .. })),
                "{dims:?}"
            );
        }
        assert_eq!(
            w.add_tensor("b", &[100], GgmlType::Q4K),
            Err(WriteError::BlockSize { name: "b".into(), ggml_type: GgmlType::Q4K, ne0: 100 })
        );
        let err = w.add_tensor("b", &[1 << 40, 1 << 22], GgmlType::F32).unwrap_err();
        assert!(matches!(err, WriteError::TooLarge { .. }));
        assert_eq!(err.to_string(), "tensor 'b' of shape [1099511627776, 4194304] would not fit in a file");
        assert_eq!(w.tensor_infos().len(), 1);
    }

    #[test]
    fn alignment_set_after_the_tensors_still_applies() {
        let mut w = GgufWriter::new();
        w.add_tensor("a", &[1], GgmlType::F32).unwrap();
        w.add_tensor("b", &[1], GgmlType::F32).unwrap();
        assert_eq!(w.tensor_infos()[1].offset, 32);
        w.add_metadata("general.alignment", MetadataValue::U32(128));
        assert_eq!((w.alignment(), w.tensor_infos()[1].offset, w.data_size()), (128, 128, 256));
        assert_eq!(w.data_offset() % 128, 0);
        // not a power of two: written as given, laid out with 32
        w.add_metadata("general.alignment", MetadataValue::U32(48));
        assert_eq!(w.alignment(), 32);
    }

    #[test]
    fn arrays_without_values_are_written_as_defaults() {
        let mut w = GgufWriter::new();
        for ty in [ValueType::U8, ValueType::F64, ValueType::String, ValueType::Array] {
            w.add_metadata(
                format!("{ty}"),
                MetadataValue::Array(MetadataArray { element_type: ty, len: 3, values: None }),
            );
        }
        // an element of the wrong type is written as the element type's default
        w.add_metadata(
            "mixed",
            MetadataValue::Array(MetadataArray {
                element_type: ValueType::U16,
                len: 2,
                values: Some(vec![MetadataValue::U16(5), MetadataValue::String("x".into())]),
            }),
        );
        let bytes = w.to_bytes(DataFill::HeaderOnly);
        let file =
            crate::gguf::read_gguf(std::io::Cursor::new(bytes), &crate::gguf::ReadOptions::all_arrays())
                .unwrap();
        let values = |key: &str| file.metadata.get_array(key).unwrap().values.clone().unwrap();
        assert_eq!(values("u8"), vec![MetadataValue::U8(0); 3]);
        assert_eq!(values("f64"), vec![MetadataValue::F64(0.0); 3]);
        assert_eq!(values("string"), vec![MetadataValue::String(String::new()); 3]);
        let empty =
            MetadataValue::Array(MetadataArray { element_type: ValueType::U8, len: 0, values: Some(vec![]) });
        assert_eq!(values("array"), vec![empty; 3]);
        assert_eq!(values("mixed"), vec![MetadataValue::U16(5), MetadataValue::U16(0)]);
    }
}
