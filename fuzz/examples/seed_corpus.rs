//! Writes the seed corpora of the fuzz targets: small valid GGUF files from the writer, into
//! fuzz/corpus/read_gguf and fuzz/corpus/open_model (both ignored by git; run this again to
//! recreate them).

use std::path::Path;

use optimizer_core::gguf::{
    DataFill, GgmlType, GgufWriter, MetadataArray, MetadataValue, SPLIT_COUNT, SPLIT_NO, SPLIT_TENSORS_COUNT,
    ValueType,
};

fn strings(values: &[&str]) -> MetadataValue {
    MetadataValue::Array(MetadataArray {
        element_type: ValueType::String,
        len: values.len() as u64,
        values: Some(values.iter().map(|s| MetadataValue::String((*s).to_owned())).collect()),
    })
}

fn array(element_type: ValueType, values: Vec<MetadataValue>) -> MetadataValue {
    MetadataValue::Array(MetadataArray { element_type, len: values.len() as u64, values: Some(values) })
}

/// One writer per interesting shape of file.
fn seeds() -> Vec<(String, GgufWriter)> {
    let mut out = Vec::new();

    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", MetadataValue::String("llama".into()));
    w.add_metadata("llama.block_count", MetadataValue::U32(2));
    w.add_tensor("token_embd.weight", &[256, 8], GgmlType::Q4K).unwrap();
    w.add_tensor("blk.0.attn_q.weight", &[32, 32], GgmlType::Q8_0).unwrap();
    w.add_tensor("output_norm.weight", &[32], GgmlType::F32).unwrap();
    out.push(("llama".to_owned(), w));

    let mut w = GgufWriter::with_version(2);
    let scalars = [
        MetadataValue::U8(1),
        MetadataValue::I8(-1),
        MetadataValue::U16(2),
        MetadataValue::I16(-2),
        MetadataValue::U32(3),
        MetadataValue::I32(-3),
        MetadataValue::U64(4),
        MetadataValue::I64(-4),
        MetadataValue::F32(0.5),
        MetadataValue::F64(-0.25),
        MetadataValue::Bool(true),
        MetadataValue::String("s".into()),
    ];
    for (i, v) in scalars.iter().enumerate() {
        w.add_metadata(format!("k{i}"), v.clone());
        w.add_metadata(format!("a{i}"), array(v.value_type(), vec![v.clone(), v.clone()]));
    }
    out.push(("all_types_v2".to_owned(), w));

    let mut w = GgufWriter::new();
    let inner = array(ValueType::U16, vec![MetadataValue::U16(7)]);
    let nested = array(ValueType::Array, vec![inner.clone(), array(ValueType::Array, vec![inner])]);
    w.add_metadata("nested", nested);
    w.add_metadata("tokenizer.ggml.tokens", strings(&(0..100).map(|_| "tok").collect::<Vec<_>>()));
    w.add_metadata(
        "tokenizer.ggml.scores",
        array(ValueType::F32, (0..100).map(|i| MetadataValue::F32(i as f32)).collect()),
    );
    w.add_tensor("t", &[64], GgmlType::Mxfp4).unwrap();
    out.push(("arrays".to_owned(), w));

    let mut w = GgufWriter::new();
    w.add_metadata("general.alignment", MetadataValue::U32(64));
    for (i, t) in [GgmlType::Iq4Xs, GgmlType::Nvfp4, GgmlType::Q1_0, GgmlType::Q2_0, GgmlType::Bf16]
        .into_iter()
        .enumerate()
    {
        w.add_tensor(format!("blk.{i}.ffn_down_exps.weight"), &[256, 2, 3], t).unwrap();
    }
    out.push(("aligned64".to_owned(), w));

    for (i, n_tensors) in [(0u16, 0), (1, 2), (2, 1)] {
        let mut w = GgufWriter::new();
        if i == 0 {
            w.add_metadata("general.architecture", MetadataValue::String("qwen3next".into()));
        }
        w.add_metadata(SPLIT_NO, MetadataValue::U16(i));
        w.add_metadata(SPLIT_COUNT, MetadataValue::U16(3));
        w.add_metadata(SPLIT_TENSORS_COUNT, MetadataValue::I32(3));
        for j in 0..n_tensors {
            w.add_tensor(format!("blk.{i}.{j}.weight"), &[32], GgmlType::F16).unwrap();
        }
        out.push((format!("shard{i}"), w));
    }
    out
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let read_dir = root.join("read_gguf");
    let open_dir = root.join("open_model");
    std::fs::create_dir_all(&read_dir).unwrap();
    std::fs::create_dir_all(&open_dir).unwrap();
    let seeds = seeds();
    for (name, w) in &seeds {
        std::fs::write(read_dir.join(format!("{name}_header")), w.to_bytes(DataFill::HeaderOnly)).unwrap();
        std::fs::write(read_dir.join(format!("{name}_full")), w.to_bytes(DataFill::Zeros)).unwrap();
        // open_model input: control byte 0 (one file)
        let mut one = vec![0u8];
        one.extend(w.to_bytes(DataFill::Zeros));
        std::fs::write(open_dir.join(name), one).unwrap();
    }
    // The three shards as one open_model input: control 2 + 3 * k (three files, open file k).
    let shards: Vec<Vec<u8>> = seeds
        .iter()
        .filter(|(n, _)| n.starts_with("shard"))
        .map(|(_, w)| w.to_bytes(DataFill::Zeros))
        .collect();
    for k in 0..3u8 {
        let mut input = vec![2 + 3 * k];
        for s in &shards[..2] {
            input.extend((s.len() as u16).to_le_bytes());
            input.extend(s);
        }
        input.extend(&shards[2]);
        std::fs::write(open_dir.join(format!("split_from_{k}")), input).unwrap();
    }
    eprintln!("wrote seeds to {}", root.display());
}
