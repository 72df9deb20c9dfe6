//! The KV cache: per layer, a K tensor `[n_embd_k_gqa, kv_size, n_stream]` and (except under MLA) a
//! V tensor of the same shape, on the layer's device, or on the host with `--no-kv-offload`
//! (llama-kv-cache.cpp:163-305). Sliding-window layers have their own, smaller cache
//! (llama-kv-cache-iswa.cpp:52-104). Each cache allocates one buffer per device.

use super::context::ResolvedContext;
use super::error::MemoryError;
use super::weights::{cuda_alloc, host_alloc};
use super::{Buffer, BufferKind, GpuAtLoad, Location, PerLocation, ResolvedPlacement, device_buffer_type};
use crate::gguf::GgmlType;
use crate::model::ModelDescription;
use crate::units::Bytes;

/// The KV cache of a configuration.
#[derive(Clone, Debug)]
pub(crate) struct KvCache {
    /// Bytes per device, both caches together.
    pub(crate) per_location: PerLocation,
    /// One buffer per cache and device, as the load log prints them.
    pub(crate) buffers: Vec<Buffer>,
}

/// Bytes a buffer on `loc` reserves for a cache tensor of `cells` rows of `width` elements.
fn tensor_alloc(loc: Location, ggml_type: GgmlType, width: u64, row: Bytes, cells: u64) -> Bytes {
    let nbytes = row.saturating_mul(cells);
    match loc {
        Location::Gpu(_) => cuda_alloc(ggml_type, width, nbytes),
        Location::Host => host_alloc(nbytes),
    }
}

/// Sizes the KV cache of `model` in `context` with `placement`.
pub(crate) fn kv_cache(
    model: &ModelDescription,
    context: &ResolvedContext,
    placement: &ResolvedPlacement,
    gpus: &[GpuAtLoad],
) -> Result<KvCache, MemoryError> {
    let mut base = PerLocation::new(gpus.len());
    let mut swa = PerLocation::new(gpus.len());
    let n_stream = u64::from(context.n_stream);
    for layer in model.kv_layers() {
        let il = layer.index;
        let row = model.kv_bytes_per_token(il, context.type_k, context.type_v, context.v_trans)?;
        let (k_width, v_width) = model.kv_widths(il, context.v_trans);
        // llama-kv-cache.cpp:212-221: the layer's device when offloading, else the CPU.
        let loc = if context.kv_offload {
            placement.layers.get(il).copied().unwrap_or(Location::Host)
        } else {
            Location::Host
        };
        let (cache, size) = match (layer.is_swa, context.swa_size) {
            (true, Some(swa_size)) => (&mut swa, swa_size),
            _ => (&mut base, context.kv_size),
        };
        let cells = u64::from(size) * n_stream;
        // llama-kv-cache.cpp:231-234: K always, V unless MLA.
        cache.add(loc, tensor_alloc(loc, context.type_k, k_width, row.k, cells));
        if v_width > 0 {
            cache.add(loc, tensor_alloc(loc, context.type_v, v_width, row.v, cells));
        }
    }

    let mut per_location = PerLocation::new(gpus.len());
    let mut buffers = Vec::new();
    for (kind, cache) in [(BufferKind::KvCache, &base), (BufferKind::KvCacheSwa, &swa)] {
        for (loc, size) in cache.iter() {
            per_location.add(loc, size);
            buffers.push(Buffer { kind, buffer_type: device_buffer_type(gpus, loc), location: loc, size });
        }
    }
    Ok(KvCache { per_location, buffers })
}
