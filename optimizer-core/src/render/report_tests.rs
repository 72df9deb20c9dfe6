//! Renderers on hand-built inputs, snapshot-tested.

use super::gpus::{DeviceSource, GpusReport};
use super::inspect::{self, InspectReport};
use super::mib2;
use crate::gguf::DataStatus;
use crate::model::ModelDescription;
use crate::model::testing::{glm_4_7_flash, gpt_oss_120b, qwen3_coder_next};
use crate::plan::devices::{Hardware, parse_gpu_list};
use crate::units::{Bytes, MIB};

#[test]
fn mib_with_two_decimals() {
    assert_eq!(mib2(Bytes::ZERO), "0.00");
    assert_eq!(mib2(Bytes::from_mib(1)), "1.00");
    assert_eq!(mib2(Bytes::new(MIB / 2)), "0.50");
    assert_eq!(mib2(Bytes::new(1_119_617_024)), "1,067.75");
    assert_eq!(mib2(Bytes::new(MIB - 1)), "1.00");
}

fn report(gguf: &crate::gguf::GgufModel) -> InspectReport {
    let model = ModelDescription::from_gguf(gguf).unwrap();
    InspectReport::new(gguf, &model)
}

#[test]
fn inspect_hybrid_split_header_only() {
    // Qwen3-Coder-Next with 8 blocks (6 recurrent, 2 full attention) over three files, the last of
    // which ends before its tensor data.
    let mut gguf = qwen3_coder_next(8, false).build_shards(3);
    let last = &mut gguf.shards[2].file;
    last.data = DataStatus::Missing { expected_end: last.file_size, file_size: 4096 };
    last.file_size = 4096;
    let r = report(&gguf);
    assert!(!r.data_complete);
    assert_eq!(r.hparams.layer_kinds.recurrent, 6);
    assert_eq!(r.hparams.layer_kinds.full_attention, 2);
    assert_eq!(r.layers[3].kv_bytes_per_1024_f16, Bytes::from_mib(2));
    assert_eq!(r.layers[0].kv_bytes_per_1024_f16, Bytes::ZERO);
    assert!(r.layers[0].recurrent_bytes_per_seq > Bytes::ZERO);
    assert_eq!(r.types.iter().map(|t| t.count).sum::<usize>(), r.tensor_count);
    assert_eq!(r.types.iter().map(|t| t.bytes).sum::<Bytes>(), r.total_bytes);
    insta::assert_snapshot!("inspect_qwen3_coder_next_text", inspect::text(&r));
    insta::assert_json_snapshot!("inspect_qwen3_coder_next_json", r);
}

#[test]
fn inspect_sliding_window() {
    let r = report(&gpt_oss_120b(4).build());
    assert_eq!(r.hparams.sliding_window.as_ref().map(|w| (w.window, w.layers)), Some((128, 2)));
    assert!(r.data_complete);
    insta::assert_snapshot!("inspect_gpt_oss_text", inspect::text(&r));
}

#[test]
fn inspect_mla_with_nextn() {
    let r = report(&glm_4_7_flash(3, true).build());
    assert_eq!(r.hparams.layer_kinds.nextn, 1);
    assert!(r.hparams.mla.is_some());
    // MLA caches one K row per token and no V.
    let mla = r.layers.iter().find(|l| l.kv_bytes_per_1024_f16 > Bytes::ZERO).unwrap();
    assert_eq!(mla.kv_bytes_per_1024_f16, Bytes::new(576 * 2 * 1024));
    insta::assert_snapshot!("inspect_glm_text", inspect::text(&r));
}

#[test]
fn inspect_json_is_deterministic() {
    let gguf = qwen3_coder_next(4, false).build();
    assert_eq!(inspect::json(&report(&gguf)), inspect::json(&report(&gguf)));
    assert!(inspect::json(&report(&gguf)).starts_with("{\n  \"schema_version\": 1,\n  \"name\""));
}

#[test]
fn gpus_described() {
    let mut hw = Hardware::new(parse_gpu_list("4090,5070ti:2500").unwrap());
    hw.host_ram = Some(Bytes::from_gib(64));
    hw.host_bandwidth_gbs = Some(40.0);
    let r = GpusReport::new(&hw, DeviceSource::GpuFlag, None, &[]);
    assert_eq!(r.gpus[1].free_at_load, Bytes::from_mib(16_303 - 2_500 - 524));
    insta::assert_snapshot!("gpus_text", super::gpus::text(&r));
    insta::assert_json_snapshot!("gpus_json", r);
}

#[test]
fn gpus_with_pci_and_none() {
    let mut hw = Hardware::new(parse_gpu_list("h200").unwrap());
    hw.gpus[0].free_now = Some(Bytes::from_mib(24_081));
    let r = GpusReport::new(&hw, DeviceSource::Nvml, None, &["00000000:00:06.0".to_owned()]);
    assert_eq!(r.gpus[0].free_at_load, Bytes::from_mib(23_557));
    insta::assert_snapshot!("gpus_nvml_text", super::gpus::text(&r));
    let empty = GpusReport::new(&Hardware::new(Vec::new()), DeviceSource::Config, Some("c.toml".into()), &[]);
    insta::assert_snapshot!("gpus_none_text", super::gpus::text(&empty));
}

#[test]
fn memory_breakdown() {
    use crate::memory::predict;
    use crate::render::memory::{self, MemoryReport};
    use crate::settings::ServerSettings;

    let model = ModelDescription::from_gguf(&qwen3_coder_next(8, false).build()).unwrap();
    let settings = ServerSettings::from_args(&[
        "-c",
        "32768",
        "-np",
        "1",
        "-ctk",
        "q8_0",
        "-ctv",
        "q8_0",
        "-fa",
        "on",
        "-ot",
        r"blk\.[0-3]\.=CUDA0,blk\.[4-5]\.=CUDA1,exps=CPU",
    ])
    .unwrap();
    let mut hw = Hardware::new(parse_gpu_list("4090,5070ti").unwrap());
    hw.set_free_at_load(&[Bytes::from_mib(23_557), Bytes::from_mib(200)]).unwrap();
    hw.host_ram = Some(Bytes::from_gib(64));
    let gpus = hw.gpus_at_load();
    let prediction = predict(&model, &settings, &gpus).unwrap();
    let r = MemoryReport::new(&prediction, &settings, &hw, "test.gguf", None);
    // The breakdown's MiB are llama.cpp's: bytes / 2^20, rounded down.
    for d in &r.devices {
        assert_eq!(d.model_mib, d.model_bytes.get() >> 20);
        assert_eq!(d.context_mib, d.context_bytes.get() >> 20);
        assert_eq!(d.compute_mib, d.compute_bytes.map(|b| b.get() >> 20));
    }
    assert_eq!(r.devices.last().unwrap().name, "Host");
    // CUDA1 has 200 MiB free and more to hold: does not fit, whatever the compute buffers.
    assert!(r.gpus[1].left_bytes < 0);
    assert_eq!(r.fits, Some(false));
    insta::assert_snapshot!("memory_text", memory::text(&r));
    let json = memory::json(&r);
    assert!(json.starts_with("{\n  \"llama_cpp\": \"11434\",\n  \"devices\": [\n    {\n      \"name\": \"CUDA0\",\n      \"model_mib\": "), "{json}");
}
