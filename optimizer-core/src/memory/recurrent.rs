//! Recurrent state (Gated DeltaNet / SSM layers): per recurrent layer an F32 conv state
//! `r [n_embd_r, rows]` and an F32 state `s [n_embd_s, rows]`, with
//! `rows = max(1, n_seq_max) × (1 + n_rs_seq)`, independent of the context length; on the layer's
//! device, or on the host with `--no-kv-offload` (llama-memory-recurrent.cpp:20-150;
//! llama-model.cpp:2705-2790).

use super::context::ResolvedContext;
use super::weights::{cuda_alloc, host_alloc};
use super::{Buffer, BufferKind, GpuAtLoad, Location, PerLocation, ResolvedPlacement, device_buffer_type};
use crate::gguf::GgmlType;
use crate::model::ModelDescription;
use crate::units::Bytes;

/// Bytes of one F32 value.
const F32_BYTES: u64 = 4;

/// The recurrent state of a configuration.
#[derive(Clone, Debug)]
pub(crate) struct RecurrentState {
    /// Bytes per device.
    pub(crate) per_location: PerLocation,
    /// One buffer per device, as the load log prints them.
    pub(crate) buffers: Vec<Buffer>,
}

/// The rows of every recurrent tensor: `mem_size × (1 + n_rs_seq)` with `mem_size = max(1, n_seq_max)`
/// (llama-model.cpp:2746; llama-memory-recurrent.cpp:101).
pub(crate) fn rows(context: &ResolvedContext) -> u64 {
    u64::from(context.n_seq.max(1)) * (1 + u64::from(context.n_rs_seq))
}

/// Sizes the recurrent state of `model` in `context` with `placement`.
pub(crate) fn recurrent_state(
    model: &ModelDescription,
    context: &ResolvedContext,
    placement: &ResolvedPlacement,
    gpus: &[GpuAtLoad],
) -> RecurrentState {
    let rows = rows(context);
    let mut per_location = PerLocation::new(gpus.len());
    for layer in model.recurrent_layers() {
        let loc = if context.kv_offload {
            placement.layers.get(layer.index).copied().unwrap_or(Location::Host)
        } else {
            Location::Host
        };
        for width in [layer.n_embd_r, layer.n_embd_s] {
            let nbytes = Bytes::new(width.saturating_mul(F32_BYTES).saturating_mul(rows));
            let size = match loc {
                Location::Gpu(_) => cuda_alloc(GgmlType::F32, width, nbytes),
                Location::Host => host_alloc(nbytes),
            };
            per_location.add(loc, size);
        }
    }
    let buffers = per_location
        .iter()
        .map(|(loc, size)| Buffer {
            kind: BufferKind::RecurrentState,
            buffer_type: device_buffer_type(gpus, loc),
            location: loc,
            size,
        })
        .collect();
    RecurrentState { per_location, buffers }
}
