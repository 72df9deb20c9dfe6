//! Property: whatever metadata and tensor table the writer is given, the reader gives them back.

// Test inputs are small: their lengths fit every integer type.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

use std::io::Cursor;

use optimizer_core::gguf::{
    DataFill, DataStatus, GgmlType, GgufWriter, MetadataArray, MetadataValue, ReadOptions, ValueType,
    read_gguf,
};
use proptest::prelude::*;

fn not_nan_f32() -> impl Strategy<Value = f32> {
    any::<f32>().prop_filter("NaN is not equal to itself", |f| !f.is_nan())
}

fn not_nan_f64() -> impl Strategy<Value = f64> {
    any::<f64>().prop_filter("NaN is not equal to itself", |f| !f.is_nan())
}

/// A value of any type but `Array`.
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
        ValueType::F32 => not_nan_f32().prop_map(MetadataValue::F32).boxed(),
        ValueType::F64 => not_nan_f64().prop_map(MetadataValue::F64).boxed(),
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

fn array(len: usize, values: Vec<MetadataValue>, element_type: ValueType) -> MetadataArray {
    MetadataArray { element_type, len: len as u64, values: Some(values) }
}

/// An array of one element type, nested up to `depth` levels.
fn array_strategy(depth: u32) -> BoxedStrategy<MetadataArray> {
    let flat = prop::sample::select(SCALAR_TYPES.to_vec())
        .prop_flat_map(|ty| {
            prop::collection::vec(scalar(ty), 0..6).prop_map(move |values| array(values.len(), values, ty))
        })
        .boxed();
    if depth == 0 {
        return flat;
    }
    let nested = prop::collection::vec(array_strategy(depth - 1), 0..4)
        .prop_map(|arrays| {
            let values: Vec<_> = arrays.into_iter().map(MetadataValue::Array).collect();
            array(values.len(), values, ValueType::Array)
        })
        .boxed();
    prop_oneof![3 => flat, 1 => nested].boxed()
}

fn value_strategy() -> BoxedStrategy<MetadataValue> {
    prop_oneof![
        4 => prop::sample::select(SCALAR_TYPES.to_vec()).prop_flat_map(scalar),
        1 => array_strategy(3).prop_map(MetadataValue::Array),
    ]
    .boxed()
}

#[derive(Debug, Clone)]
struct Tensor {
    dims: Vec<u64>,
    ggml_type: GgmlType,
}

fn tensor_strategy() -> impl Strategy<Value = Tensor> {
    (prop::sample::select(GgmlType::all().collect::<Vec<_>>()), prop::collection::vec(1u64..=9, 1..=4))
        .prop_map(|(ggml_type, mut dims)| {
            dims[0] *= ggml_type.block_size();
            Tensor { dims, ggml_type }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn writer_then_reader_gives_back_the_same_file(
        version in 2u32..=3,
        alignment in prop::option::of(prop::sample::select(vec![1u32, 8, 32, 64, 4096])),
        metadata in prop::collection::btree_map("[a-z_.]{1,16}", value_strategy(), 0..12),
        tensors in prop::collection::vec(tensor_strategy(), 0..12),
        zeros in any::<bool>(),
    ) {
        let mut w = GgufWriter::with_version(version);
        for (key, value) in &metadata {
            w.add_metadata(key.as_str(), value.clone());
        }
        if let Some(a) = alignment {
            w.add_metadata("general.alignment", MetadataValue::U32(a));
        }
        for (i, t) in tensors.iter().enumerate() {
            w.add_tensor(format!("blk.{i}.weight"), &t.dims, t.ggml_type).unwrap();
        }
        let fill = if zeros { DataFill::Zeros } else { DataFill::HeaderOnly };
        let bytes = w.to_bytes(fill);

        let file = read_gguf(Cursor::new(&bytes), &ReadOptions::all_arrays()).unwrap();
        prop_assert_eq!(file.version, version);
        prop_assert_eq!(&file.metadata, w.metadata());
        prop_assert_eq!(&file.tensors, &w.tensor_infos());
        prop_assert_eq!(file.alignment, u64::from(alignment.unwrap_or(32)));
        prop_assert_eq!(file.data_offset, w.data_offset());
        prop_assert_eq!(file.file_size, bytes.len() as u64);
        prop_assert!(file.data == DataStatus::Complete || (!zeros && !tensors.is_empty()));

        // Read loading only arrays of at most 2 elements, longer arrays come back without values
        // but with their type and length, and everything else is the same.
        let lazy = read_gguf(Cursor::new(&bytes), &ReadOptions::default().with_eager_array_len(2)).unwrap();
        prop_assert_eq!(&lazy.tensors, &file.tensors);
        for ((k1, v1), (k2, v2)) in lazy.metadata.entries().iter().zip(file.metadata.entries()) {
            prop_assert_eq!(k1, k2);
            match (v1, v2) {
                (MetadataValue::Array(a), MetadataValue::Array(b)) if a.len > 2 => {
                    prop_assert_eq!((a.element_type, a.len, &a.values), (b.element_type, b.len, &None));
                }
                (MetadataValue::Array(a), MetadataValue::Array(b)) => {
                    prop_assert_eq!((a.element_type, a.len), (b.element_type, b.len));
                }
                _ => prop_assert_eq!(v1, v2),
            }
        }
    }

    #[test]
    fn every_prefix_of_a_file_is_rejected_or_read_without_panic(
        metadata in prop::collection::btree_map("[a-z]{1,4}", value_strategy(), 0..4),
        tensors in prop::collection::vec(tensor_strategy(), 0..4),
        cut in 0.0f64..1.0,
    ) {
        let mut w = GgufWriter::new();
        for (key, value) in &metadata {
            w.add_metadata(key.as_str(), value.clone());
        }
        for (i, t) in tensors.iter().enumerate() {
            w.add_tensor(format!("t{i}"), &t.dims, t.ggml_type).unwrap();
        }
        let bytes = w.to_bytes(DataFill::HeaderOnly);
        let len = (bytes.len() as f64 * cut) as usize;
        // A cut inside the header is an error; a cut only inside the trailing padding is not.
        let result = read_gguf(Cursor::new(&bytes[..len]), &ReadOptions::all_arrays());
        if let Ok(file) = result {
            prop_assert_eq!(&file.tensors, &w.tensor_infos());
        }
    }
}
