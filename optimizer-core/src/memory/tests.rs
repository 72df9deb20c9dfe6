//! End-to-end tests of [`predict`] on the model layouts of `model::testing` (the exact per-device
//! numbers against llama.cpp are in optimizer-core/tests/accuracy_weights_kv.rs).

use super::*;
use crate::gguf::{GgmlType, GgufModel};
use crate::model::testing;

fn two_gpus() -> Vec<GpuAtLoad> {
    vec![GpuAtLoad::new("CUDA0", Bytes::from_mib(23_557)), GpuAtLoad::new("CUDA1", Bytes::from_mib(14_477))]
}

fn describe(gguf: &GgufModel) -> ModelDescription {
    ModelDescription::from_gguf(gguf).unwrap()
}

fn run(model: &ModelDescription, args: &[&str], gpus: &[GpuAtLoad]) -> MemoryPrediction {
    predict(model, &ServerSettings::from_args(args).unwrap(), gpus).unwrap()
}

fn copies<'a>(p: &'a MemoryPrediction, m: &ModelDescription, name: &str) -> Vec<&'a TensorPlacement> {
    p.placement.tensors.iter().filter(|t| m.tensors[t.tensor].name == name).collect()
}

fn index(m: &ModelDescription, name: &str) -> usize {
    m.tensors.iter().position(|t| t.name == name).unwrap()
}

#[test]
fn tied_embeddings_get_a_second_copy_on_the_output_gpu() {
    let m = describe(&testing::toy("llama", 4).build());
    assert!(m.tied_embeddings);
    let embd = &m.tensors[index(&m, "token_embd.weight")];

    let p = run(&m, &["-np", "1"], &two_gpus()[..1]);
    let c = copies(&p, &m, "token_embd.weight");
    assert_eq!(c.len(), 2);
    assert_eq!((c[0].location, c[0].copy), (Location::Host, TensorCopy::Primary));
    assert_eq!((c[1].location, c[1].copy), (Location::Gpu(0), TensorCopy::TiedOutput));
    let on_gpu: Bytes = p
        .placement
        .tensors
        .iter()
        .filter(|t| t.location == Location::Gpu(0))
        .map(|t| cuda_tensor_size(&m.tensors[t.tensor]))
        .sum();
    assert_eq!(p.devices[0].weights, on_gpu);
    assert_eq!(p.host.weights_resident, host_tensor_size(embd));

    // The output layer on the CPU shares the input copy.
    let p = run(&m, &["-ngl", "0"], &two_gpus()[..1]);
    assert_eq!(copies(&p, &m, "token_embd.weight").len(), 1);

    // An override matches both creations: one copy, on the GPU, none on the host.
    let p = run(&m, &["-ot", "token_embd=CUDA0"], &two_gpus()[..1]);
    let c = copies(&p, &m, "token_embd.weight");
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].location, c[0].override_index), (Location::Gpu(0), Some(0)));
    assert_eq!(p.host.weights_resident, Bytes::ZERO);
}

#[test]
fn per_layer_tensors_have_one_copy_per_buffer() {
    let m = describe(&testing::llama_3_1_8b(4).build());
    // 5 slots, -ngl 4: layer 0 on the host, 1-2 on CUDA0, 3 and the output on CUDA1.
    let p = run(&m, &["-ngl", "4", "-ts", "1,1"], &two_gpus());
    let c = copies(&p, &m, "rope_freqs.weight");
    let locations: Vec<(Location, TensorCopy)> = c.iter().map(|t| (t.location, t.copy)).collect();
    assert_eq!(
        locations,
        [
            (Location::Host, TensorCopy::Primary),
            (Location::Gpu(0), TensorCopy::LayerDuplicate),
            (Location::Gpu(1), TensorCopy::LayerDuplicate)
        ]
    );
    let p = run(&m, &["-ot", "rope_freqs=CPU"], &two_gpus());
    assert_eq!(copies(&p, &m, "rope_freqs.weight").len(), 1);
}

#[test]
fn nextn_blocks_are_skipped_but_take_a_layer_slot() {
    let m = describe(&testing::glm_4_7_flash(4, true).build());
    assert_eq!((m.n_layer_all, m.n_layer()), (5, 4));
    let p = run(&m, &["-np", "1", "-c", "4096"], &two_gpus()[..1]);
    let nextn: Vec<usize> =
        m.tensors.iter().enumerate().filter(|(_, t)| t.block == Some(4)).map(|(i, _)| i).collect();
    assert_eq!(p.placement.skipped, nextn);
    assert!(p.placement.tensors.iter().all(|t| m.tensors[t.tensor].block != Some(4)));
    assert_eq!(p.placement.offloaded_layers(), 6);
    // MLA: one 576-wide K row per token and layer, no V, for the 4 trunk layers only; q8_0 rows of
    // 576 get 448 columns of CUDA padding (476 bytes) before the 128-byte alignment.
    let row = GgmlType::Q8_0.row_size(576).unwrap();
    let k = Bytes::new(row * 4096 + 476).align_up(CUDA_ALIGNMENT);
    let p = run(&m, &["-np", "1", "-c", "4096", "-ctk", "q8_0", "-ctv", "q8_0"], &two_gpus()[..1]);
    assert_eq!(p.devices[0].kv_cache, k.saturating_mul(4));
}

#[test]
fn overrides_may_send_tensors_to_a_gpu_the_model_does_not_use() {
    let m = describe(&testing::qwen3_8b(4).build());
    let p = run(
        &m,
        &["-sm", "none", "-mg", "0", "-ot", r"blk\.1\.=CUDA1", "-np", "1", "-c", "4096"],
        &two_gpus(),
    );
    let names: Vec<&str> = p.devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["CUDA0", "CUDA1", "Host"]);
    let layer1: Bytes = m.layer_tensors(1).map(cuda_tensor_size).sum();
    assert_eq!(p.devices[1].weights, layer1);
    // The KV cache follows the layer's device, not its weights.
    assert_eq!(p.devices[1].kv_cache, Bytes::ZERO);
    let per_layer = Bytes::new(2 * 1024 * 2 * 4096);
    assert_eq!(p.devices[0].kv_cache, per_layer.saturating_mul(4));
}

#[test]
fn no_kv_offload_keeps_kv_and_recurrent_state_on_the_host() {
    let m = describe(&testing::qwen3_coder_next(8, false).build());
    let on = run(&m, &["-np", "1", "-c", "8192"], &two_gpus());
    let off = run(&m, &["-np", "1", "-c", "8192", "-nkvo"], &two_gpus());
    let gpu_total = |p: &MemoryPrediction, f: fn(&DeviceMemory) -> Bytes| -> Bytes {
        p.devices.iter().filter(|d| d.location != Location::Host).map(f).sum()
    };
    assert_eq!(gpu_total(&off, DeviceMemory::context), Bytes::ZERO);
    // Host buffers are 32-byte aligned, the same tensors on a GPU 128: F32 and f16 rows here are
    // already multiples of both.
    assert_eq!(off.host.kv_cache, gpu_total(&on, |d| d.kv_cache));
    assert_eq!(off.host.recurrent_state, gpu_total(&on, |d| d.recurrent_state));
    // 6 DeltaNet layers: (3 × 8192 + 128 × 4096) floats of state each, one sequence.
    assert_eq!(off.host.recurrent_state, Bytes::new(6 * 4 * (3 * 8192 + 128 * 4096)));
    assert!(
        off.buffers.iter().filter(|b| b.kind == BufferKind::RecurrentState).all(|b| b.buffer_type == "CPU")
    );
}

#[test]
fn sliding_window_layers_have_their_own_cache() {
    let m = describe(&testing::gpt_oss_120b(4).build());
    let p = run(&m, &["-np", "1", "-c", "131072", "-ctk", "q8_0", "-ctv", "q8_0"], &two_gpus()[..1]);
    assert_eq!(p.context.swa_size, Some(768));
    let size = |kind| p.buffers.iter().find(|b| b.kind == kind).map(|b| b.size);
    let row = GgmlType::Q8_0.row_size(512).unwrap();
    // Layers 1 and 3 are full attention, 0 and 2 sliding; K and V each.
    assert_eq!(size(BufferKind::KvCache), Some(Bytes::new(row * 131_072 * 4)));
    assert_eq!(size(BufferKind::KvCacheSwa), Some(Bytes::new(row * 768 * 4)));
}

#[test]
fn mapped_span_is_per_file_and_covers_gpu_tensors_between() {
    let m = describe(&testing::qwen3_8b(4).build_shards(2));
    let t = |name: &str| &m.tensors[index(&m, name)];
    // token_embd, output_norm, output lead the first file; only token_embd stays on the host.
    let p = run(&m, &[], &two_gpus());
    assert_eq!(p.host.weights_buffer, HostWeightsBuffer::Mapped);
    assert_eq!(p.host.weights_mapped, [MappedSpan { shard: 0, size: t("token_embd.weight").size }]);
    // With output on the CPU too, the span runs over output_norm, which stays on a GPU.
    let p = run(&m, &["-ot", r"^output\.=CPU,blk\.3\.ffn_(up|down)=CPU"], &two_gpus());
    let out = t("output.weight");
    let (up, down) = (t("blk.3.ffn_up.weight"), t("blk.3.ffn_down.weight"));
    assert_eq!(up.shard, 1);
    let second = (up.offset + up.size.get()).max(down.offset + down.size.get()) - up.offset.min(down.offset);
    assert_eq!(
        p.host.weights_mapped,
        [
            MappedSpan { shard: 0, size: Bytes::new(out.offset + out.size.get()) },
            MappedSpan { shard: 1, size: Bytes::new(second) }
        ]
    );
    let mapped: Vec<Bytes> =
        p.buffers.iter().filter(|b| b.buffer_type == "CPU_Mapped").map(|b| b.size).collect();
    assert_eq!(mapped.len(), 2);
    // Resident is the tensors themselves.
    let resident: Bytes = [t("token_embd.weight"), out, up, down].iter().map(|t| host_tensor_size(t)).sum();
    assert_eq!(p.host.weights_resident, resident);
    assert_eq!(p.device("Host").unwrap().weights, resident);

    // Without mmap (what llama-fit-params does) the same weights are pinned and nothing is mapped.
    let p = run(&m, &["-lm", "none"], &two_gpus());
    assert_eq!(
        (p.host.weights_buffer, p.host.weights_buffer_name.as_str()),
        (HostWeightsBuffer::Pinned, "CUDA_Host")
    );
    assert!(p.host.weights_mapped.is_empty());
    assert_eq!(p.host.weights_resident, host_tensor_size(t("token_embd.weight")));
}

#[test]
fn output_buffer_is_pinned_when_the_output_layer_is_on_a_gpu() {
    let m = describe(&testing::qwen3_8b(4).build());
    let p = run(&m, &[], &two_gpus());
    // llama-server defaults: 4 slots, so 4 outputs of 151,936 logits.
    assert_eq!(p.output.buffer_type, "CUDA_Host");
    assert_eq!(p.output.at_load, Bytes::new(151_936 * 4 * 4));
    assert_eq!(p.host.output_buffer, p.output.peak);
    let p = run(&m, &["-ngl", "0", "-np", "1", "--spec-type", "ngram-cache"], &two_gpus());
    assert_eq!(p.output.buffer_type, "CPU");
    assert_eq!((p.output.n_outputs_at_load, p.output.n_outputs_peak), (1, 9));
    assert_eq!(p.output.peak, Bytes::new(151_936 * 4 * 9));
}

#[test]
fn compute_is_estimated_on_every_device_and_counted_in_the_total() {
    let m = describe(&testing::qwen3_8b(2).build());
    let p = run(&m, &[], &two_gpus());
    assert!(p.devices.iter().all(|d| d.compute.bytes().is_some_and(|b| b > Bytes::ZERO)));
    assert!(p.mib().iter().all(|d| d.compute.is_some()));
    let host = p.device("Host").unwrap();
    let compute = host.compute.bytes().unwrap();
    assert_eq!(host.known_total(), host.weights + host.context() + host.output_buffer + compute);
}

#[test]
fn mib_view_rounds_down_like_llama_cpp() {
    let d = DeviceMemory {
        location: Location::Gpu(0),
        name: "CUDA0".into(),
        weights: Bytes::new(2 * MIB - 1),
        kv_cache: Bytes::new(MIB / 2),
        recurrent_state: Bytes::new(MIB / 2),
        compute: ComputeEstimate::NotModelled,
        output_buffer: Bytes::ZERO,
        beyond_breakdown: None,
    };
    let mib = d.mib();
    // Context is summed before rounding: 0 + 0 would be wrong.
    assert_eq!((mib.weights, mib.kv_cache, mib.recurrent_state, mib.context), (1, 0, 0, 1));
}

#[test]
fn prediction_serializes_for_json_output() {
    let m = describe(&testing::qwen3_coder_next(4, false).build());
    let p = run(&m, &["-ot", "exps=CPU"], &two_gpus());
    let v = serde_json::to_value(&p).unwrap();
    assert_eq!(v["devices"][0]["name"], "CUDA0");
    assert_eq!(v["devices"][0]["compute"]["status"], "estimated");
    assert!(v["devices"][0]["compute"]["parts"].as_array().is_some_and(|p| !p.is_empty()));
    assert_eq!(v["placement"]["layers"][0], serde_json::json!({ "gpu": 0 }));
    assert_eq!(v["host"]["weights_buffer"], "mapped");
    assert_eq!(v["context"]["type_k"], "F16");
    assert!(v["placement"]["tensors"].as_array().unwrap().iter().any(|t| t["override_index"] == 0));
}

#[test]
fn unknown_override_target_is_an_error_before_anything_else() {
    let m = describe(&testing::qwen3_8b(2).build());
    let s = ServerSettings::from_args(&["-ot", "exps=CUDA1"]).unwrap();
    let e = predict(&m, &s, &two_gpus()[..1]).unwrap_err();
    assert!(matches!(e, MemoryError::UnknownBufferType { .. }), "{e}");
}

#[test]
fn recurrent_rows_count_rollback_snapshots() {
    let m = describe(&testing::qwen3_8b(2).build());
    let mut c = context::resolve(&m, &ServerSettings::from_args(&["-np", "2"]).unwrap()).unwrap();
    assert_eq!(recurrent::rows(&c), 2);
    c.n_rs_seq = 3;
    assert_eq!(recurrent::rows(&c), 8);
}

#[test]
fn mla_models_refuse_different_k_and_v_cache_types() {
    // Session 9's glm4-z04 (`-ctk q8_0 -ctv f16` on GLM-4.7-Flash): llama.cpp stops at context creation.
    let m = describe(&testing::glm_4_7_flash(4, false).build());
    let mixed = ServerSettings::from_args(&["-fa", "on", "-ctk", "q8_0", "-ctv", "f16"]).unwrap();
    let e = predict(&m, &mixed, &two_gpus()).unwrap_err();
    assert!(matches!(e, MemoryError::MlaMixedKvTypes { .. }), "{e}");
    assert!(e.to_string().contains("different K (q8_0) and V (f16) cache types"), "{e}");
    let same = ServerSettings::from_args(&["-fa", "on", "-ctk", "q8_0", "-ctv", "q8_0"]).unwrap();
    assert!(predict(&m, &same, &two_gpus()).is_ok());
    // a model without MLA may mix them
    let q = describe(&testing::qwen3_coder_next(4, false).build());
    assert!(predict(&q, &mixed, &two_gpus()).is_ok());
}
