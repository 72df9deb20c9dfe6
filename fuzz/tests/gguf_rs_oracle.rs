//! Differential test: our reader against gguf-rs 0.1.8 on files from our writer. Where gguf-rs can
//! read a file (the ggml types it knows, no arrays of arrays), both must see the same metadata and
//! the same tensor table. Also pins down, as evidence for docs/architecture.md, what gguf-rs gets
//! wrong.

// Test inputs are small: their lengths fit every integer type.
#![allow(clippy::cast_possible_truncation)]

use std::path::Path;

use optimizer_core::gguf::{
    DataFill, GgmlType, GgufFile, GgufWriter, MetadataArray, MetadataValue, ReadOptions, ValueType,
    read_gguf_file,
};
use proptest::prelude::*;
use serde_json::Value;

/// Types whose size gguf-rs 0.1.8 computes as ggml does.
const SIZED_RIGHT: [GgmlType; 23] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::Q8K,
    GgmlType::Iq2Xxs,
    GgmlType::Iq2Xs,
    GgmlType::Iq3Xxs,
    GgmlType::Iq1S,
    GgmlType::Iq3S,
    GgmlType::Iq2S,
    GgmlType::Iq4Xs,
    GgmlType::Iq1M,
    GgmlType::Tq1_0,
    GgmlType::Tq2_0,
];

/// Types gguf-rs 0.1.8 reads but sizes wrongly (see `gguf_rs_misreads_types_our_models_use`).
const SIZED_WRONG: [GgmlType; 9] = [
    GgmlType::Q8_1,
    GgmlType::Iq4Nl,
    GgmlType::I8,
    GgmlType::I16,
    GgmlType::I32,
    GgmlType::I64,
    GgmlType::F64,
    GgmlType::Bf16,
    GgmlType::Mxfp4,
];

fn gguf_rs(path: &Path) -> Result<gguf_rs::GGUFModel, String> {
    let path = path.to_str().ok_or("non-UTF-8 path")?;
    let mut container = gguf_rs::get_gguf_container_array_size(path, u64::MAX).map_err(|e| e.to_string())?;
    container.decode().map_err(|e| e.to_string())
}

/// Whether gguf-rs's JSON value is our value.
fn same_value(ours: &MetadataValue, theirs: &Value) -> bool {
    match ours {
        MetadataValue::U8(v) => theirs.as_u64() == Some(u64::from(*v)),
        MetadataValue::U16(v) => theirs.as_u64() == Some(u64::from(*v)),
        MetadataValue::U32(v) => theirs.as_u64() == Some(u64::from(*v)),
        MetadataValue::U64(v) => theirs.as_u64() == Some(*v),
        MetadataValue::I8(v) => theirs.as_i64() == Some(i64::from(*v)),
        MetadataValue::I16(v) => theirs.as_i64() == Some(i64::from(*v)),
        MetadataValue::I32(v) => theirs.as_i64() == Some(i64::from(*v)),
        MetadataValue::I64(v) => theirs.as_i64() == Some(*v),
        // JSON has no NaN or infinity: serde_json makes them null.
        MetadataValue::F32(v) if !v.is_finite() => theirs.is_null(),
        MetadataValue::F64(v) if !v.is_finite() => theirs.is_null(),
        MetadataValue::F32(v) => theirs.as_f64().map(|f| f as f32) == Some(*v),
        MetadataValue::F64(v) => theirs.as_f64() == Some(*v),
        MetadataValue::Bool(v) => theirs.as_bool() == Some(*v),
        MetadataValue::String(v) => theirs.as_str() == Some(v.as_str()),
        MetadataValue::Array(a) => match (&a.values, theirs.as_array()) {
            (Some(values), Some(theirs)) => {
                values.len() == theirs.len() && values.iter().zip(theirs).all(|(o, t)| same_value(o, t))
            }
            _ => false,
        },
    }
}

fn assert_agree(ours: &GgufFile, theirs: &gguf_rs::GGUFModel) {
    let mut our_keys: Vec<&str> = ours.metadata.entries().iter().map(|(k, _)| k.as_str()).collect();
    our_keys.sort_unstable();
    let their_keys: Vec<&str> = theirs.metadata().keys().map(String::as_str).collect();
    assert_eq!(our_keys, their_keys);
    for (key, value) in ours.metadata.entries() {
        assert!(same_value(value, &theirs.metadata()[key]), "{key}: {value:?} vs {}", theirs.metadata()[key]);
    }
    assert_eq!(ours.tensors.len(), theirs.tensors().len());
    for (o, t) in ours.tensors.iter().zip(theirs.tensors()) {
        assert_eq!(
            (o.name.as_str(), &o.dims, o.ggml_type.id(), o.offset),
            (t.name.as_str(), &t.shape, t.kind, t.offset)
        );
        if !SIZED_WRONG.contains(&o.ggml_type) {
            assert_eq!(o.size.get(), t.size, "{}", o.name);
        }
    }
    assert_eq!(ours.data_offset, theirs.data_offset());
    assert_eq!(ours.alignment, theirs.alignment());
}

fn write(dir: &Path, w: &GgufWriter) -> std::path::PathBuf {
    let path = dir.join("m.gguf");
    std::fs::write(&path, w.to_bytes(DataFill::HeaderOnly)).unwrap();
    path
}

fn scalar(ty: ValueType) -> BoxedStrategy<MetadataValue> {
    match ty {
        ValueType::U8 => any::<u8>().prop_map(MetadataValue::U8).boxed(),
        ValueType::I8 => any::<i8>().prop_map(MetadataValue::I8).boxed(),
        ValueType::U16 => any::<u16>().prop_map(MetadataValue::U16).boxed(),
        ValueType::I16 => any::<i16>().prop_map(MetadataValue::I16).boxed(),
        ValueType::U32 => any::<u32>().prop_map(MetadataValue::U32).boxed(),
        ValueType::I32 => any::<i32>().prop_map(MetadataValue::I32).boxed(),
        ValueType::U64 => any::<u64>().prop_map(MetadataValue::U64).boxed(),
        ValueType::I64 => any::<i64>().prop_map(MetadataValue::I64).boxed(),
        ValueType::F32 => any::<f32>().prop_map(MetadataValue::F32).boxed(),
        ValueType::F64 => any::<f64>().prop_map(MetadataValue::F64).boxed(),
        ValueType::Bool => any::<bool>().prop_map(MetadataValue::Bool).boxed(),
        ValueType::String | ValueType::Array => ".{0,12}".prop_map(MetadataValue::String).boxed(),
    }
}

const SCALAR_TYPES: [ValueType; 12] = [
    ValueType::U8,
    ValueType::I8,
    ValueType::U16,
    ValueType::I16,
    ValueType::U32,
    ValueType::I32,
    ValueType::U64,
    ValueType::I64,
    ValueType::F32,
    ValueType::F64,
    ValueType::Bool,
    ValueType::String,
];

/// A scalar, or a flat array (gguf-rs reads no arrays of arrays).
fn value() -> impl Strategy<Value = MetadataValue> {
    prop::sample::select(SCALAR_TYPES.to_vec()).prop_flat_map(|ty| {
        prop_oneof![
            scalar(ty),
            prop::collection::vec(scalar(ty), 0..80).prop_map(move |values| MetadataValue::Array(
                MetadataArray { element_type: ty, len: values.len() as u64, values: Some(values) }
            )),
        ]
    })
}

fn tensor() -> impl Strategy<Value = (GgmlType, Vec<u64>)> {
    let types: Vec<GgmlType> = SIZED_RIGHT.iter().chain(&SIZED_WRONG).copied().collect();
    (prop::sample::select(types), prop::collection::vec(1u64..=5, 1..=4)).prop_map(|(t, mut dims)| {
        dims[0] *= t.block_size();
        (t, dims)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn both_readers_agree(
        metadata in prop::collection::btree_map("[a-z_.]{1,20}", value(), 0..16),
        alignment in prop::option::of(prop::sample::select(vec![8u32, 32, 64, 256])),
        tensors in prop::collection::vec(tensor(), 0..16),
    ) {
        let mut w = GgufWriter::new();
        for (k, v) in metadata {
            w.add_metadata(k, v);
        }
        if let Some(a) = alignment {
            w.add_metadata("general.alignment", MetadataValue::U32(a));
        }
        for (i, (t, dims)) in tensors.iter().enumerate() {
            w.add_tensor(format!("blk.{i}.weight"), dims, *t).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), &w);
        let ours = read_gguf_file(&path, &ReadOptions::all_arrays()).unwrap();
        let theirs = gguf_rs(&path).unwrap();
        assert_agree(&ours, &theirs);
    }
}

/// Why gguf-rs is an oracle and not our reader: on the tensor types of the user's models it is
/// wrong or fails, and it cannot read arrays of arrays.
#[test]
fn gguf_rs_misreads_types_our_models_use() {
    let dir = tempfile::tempdir().unwrap();
    let size_by_gguf_rs = |t: GgmlType| {
        let mut w = GgufWriter::new();
        w.add_tensor("t", &[4608, 64], t).unwrap();
        let path = write(dir.path(), &w);
        let ours = read_gguf_file(&path, &ReadOptions::default()).unwrap().tensors[0].size.get();
        let theirs = std::panic::catch_unwind(|| gguf_rs(&path).map(|m| m.tensors()[0].size));
        (ours, theirs)
    };
    // gpt-oss's MXFP4 experts: gguf-rs counts 273 bytes per 256 elements instead of 17 per 32
    let (ours, theirs) = size_by_gguf_rs(GgmlType::Mxfp4);
    assert_eq!(ours, 4608 / 32 * 17 * 64);
    assert_eq!(theirs.unwrap().unwrap(), 4608 * 64 * 273 / 256);
    // BF16 tensors come out 128 times too small (2 bytes per 256 elements)
    assert_eq!(size_by_gguf_rs(GgmlType::Bf16).1.unwrap().unwrap(), 4608 * 64 * 2 / 256);
    // NVFP4 (id 40) hits an unreachable!() and panics; Q1_0 and Q2_0 (41, 42) are rejected
    assert!(size_by_gguf_rs(GgmlType::Nvfp4).1.is_err());
    assert_eq!(size_by_gguf_rs(GgmlType::Q1_0).1.unwrap().unwrap_err(), "invalid GGML type");

    let mut w = GgufWriter::new();
    let inner =
        MetadataValue::Array(MetadataArray { element_type: ValueType::U8, len: 0, values: Some(vec![]) });
    w.add_metadata(
        "nested",
        MetadataValue::Array(MetadataArray {
            element_type: ValueType::Array,
            len: 1,
            values: Some(vec![inner]),
        }),
    );
    let path = write(dir.path(), &w);
    assert!(read_gguf_file(&path, &ReadOptions::default()).is_ok());
    assert!(gguf_rs(&path).is_err());
}
