//! Weight buffer sizes: what each GPU's model buffer, the host's resident CPU weights and the
//! mmap'd `CPU_Mapped` spans come to, tensor by tensor as ggml allocates them.
//!
//! A buffer holds `Σ PAD(alloc_size(t), alignment)` over its tensors (ggml-backend.cpp:57-89). On a
//! CUDA device the alignment is 128 and a quantized tensor whose rows are not a multiple of 512
//! columns gets one padding row's worth of bytes, once per tensor (ggml-cuda.cu:897-919); on the
//! host (`CPU`, `CUDA_Host`, `CPU_REPACK`) the alignment is 32 and nothing is added
//! (ggml-backend.cpp:2597-2638; ggml-cuda.cu:1306-1316). A memory-mapped CPU buffer is instead the
//! span of the file from its first to the end of its last CPU tensor, per file
//! (llama-model-loader.cpp:1449-1464; llama-model.cpp:1851-1878), GPU tensors in between included.

use super::host::{HostWeightsBuffer, MappedSpan, host_weights_buffer};
use super::{Buffer, BufferKind, GpuAtLoad, Location, PerLocation, ResolvedPlacement, device_buffer_type};
use crate::gguf::GgmlType;
use crate::model::{ModelDescription, ModelTensor};
use crate::settings::ServerSettings;
use crate::units::Bytes;

/// The alignment of CUDA buffers (ggml-cuda.cu:897-901).
pub const CUDA_ALIGNMENT: u64 = 128;

/// The alignment of host buffers (`TENSOR_ALIGNMENT`, ggml-impl.h:44).
pub const HOST_ALIGNMENT: u64 = 32;

/// CUDA pads the last row of quantized matrices to a multiple of this many columns
/// (`MATRIX_ROW_PADDING`, ggml-cuda/common.cuh:186).
pub const MATRIX_ROW_PADDING: u64 = 512;

/// Bytes a CUDA buffer reserves for a tensor of `ggml_type` with rows of `ne0` elements and
/// `nbytes` bytes: `PAD128(nbytes + row padding)` (ggml-cuda.cu:904-919).
pub(crate) fn cuda_alloc(ggml_type: GgmlType, ne0: u64, nbytes: Bytes) -> Bytes {
    let mut size = nbytes;
    let rem = ne0 % MATRIX_ROW_PADDING;
    if ggml_type.is_quantized() && rem != 0 {
        // ggml_row_size(type, MATRIX_ROW_PADDING - ne0 % MATRIX_ROW_PADDING)
        let cols = MATRIX_ROW_PADDING - rem;
        size += Bytes::new(ggml_type.type_size() * cols / ggml_type.block_size().max(1));
    }
    size.align_up(CUDA_ALIGNMENT)
}

/// Bytes a host buffer reserves for a tensor of `nbytes`: `PAD32(nbytes)`.
pub(crate) fn host_alloc(nbytes: Bytes) -> Bytes {
    nbytes.align_up(HOST_ALIGNMENT)
}

/// Bytes a CUDA model buffer reserves for `t`.
pub fn cuda_tensor_size(t: &ModelTensor) -> Bytes {
    cuda_alloc(t.ggml_type, t.dims.first().copied().unwrap_or(0), t.size)
}

/// Bytes a host model buffer reserves for `t` (not mmap'd).
pub fn host_tensor_size(t: &ModelTensor) -> Bytes {
    host_alloc(t.size)
}

/// The weights of a placement.
#[derive(Clone, Debug)]
pub(crate) struct Weights {
    /// Per GPU, and on the host the resident CPU weights (Σ PAD32).
    pub(crate) per_location: PerLocation,
    /// Which buffer type the CPU weights are in.
    pub(crate) host_buffer: HostWeightsBuffer,
    /// llama.cpp's name for it.
    pub(crate) host_buffer_name: String,
    /// The mmap'd spans, per file, when the weights are mapped.
    pub(crate) mapped: Vec<MappedSpan>,
    /// The model buffers as the load log prints them.
    pub(crate) buffers: Vec<Buffer>,
}

/// Sizes the weights of `placement`.
pub(crate) fn weights(
    model: &ModelDescription,
    placement: &ResolvedPlacement,
    settings: &ServerSettings,
    gpus: &[GpuAtLoad],
) -> Weights {
    let mut per_location = PerLocation::new(gpus.len());
    let n_shards = model.tensors.iter().map(|t| t.shard + 1).max().unwrap_or(0);
    // (first offset, last end) of the host tensors of each file.
    let mut spans: Vec<Option<(u64, u64)>> = vec![None; n_shards];
    for p in &placement.tensors {
        let Some(t) = model.tensors.get(p.tensor) else { continue };
        match p.location {
            Location::Gpu(_) => per_location.add(p.location, cuda_tensor_size(t)),
            Location::Host => {
                per_location.add(Location::Host, host_tensor_size(t));
                if let Some(span) = spans.get_mut(t.shard) {
                    let end = t.offset.saturating_add(t.size.get());
                    *span = Some(
                        span.map_or((t.offset, end), |(first, last)| (first.min(t.offset), last.max(end))),
                    );
                }
            }
        }
    }

    let (host_buffer, host_buffer_name) = host_weights_buffer(settings, placement, gpus);
    let mapped: Vec<MappedSpan> = if host_buffer.is_mapped() {
        spans
            .iter()
            .enumerate()
            .filter_map(|(shard, span)| {
                span.map(|(first, last)| MappedSpan { shard, size: Bytes::new(last - first) })
            })
            .collect()
    } else {
        Vec::new()
    };

    let mut buffers: Vec<Buffer> = per_location
        .iter()
        .filter_map(|(loc, size)| match loc {
            Location::Gpu(_) => Some(Buffer {
                kind: BufferKind::Weights,
                buffer_type: device_buffer_type(gpus, loc),
                location: loc,
                size,
            }),
            Location::Host => None,
        })
        .collect();
    if host_buffer.is_mapped() {
        buffers.extend(mapped.iter().map(|m| Buffer {
            kind: BufferKind::Weights,
            buffer_type: host_buffer_name.clone(),
            location: Location::Host,
            size: m.size,
        }));
    } else if per_location.at(Location::Host) > Bytes::ZERO {
        buffers.push(Buffer {
            kind: BufferKind::Weights,
            buffer_type: host_buffer_name.clone(),
            location: Location::Host,
            size: per_location.at(Location::Host),
        });
    }

    Weights { per_location, host_buffer, host_buffer_name, mapped, buffers }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_pads_quantized_rows_once_per_tensor() {
        // gpt-oss: ne0 = 2880 MXFP4 gets 192 more columns (6 blocks of 17 bytes).
        let nbytes = Bytes::new(GgmlType::Mxfp4.tensor_bytes(&[2880, 2880, 128]).unwrap());
        assert_eq!(cuda_alloc(GgmlType::Mxfp4, 2880, nbytes), (nbytes + Bytes::new(6 * 17)).align_up(128));
        // A 576-wide Q8_0 row gets 448 columns: 14 blocks of 34 bytes = 476 bytes.
        let nbytes = Bytes::new(GgmlType::Q8_0.tensor_bytes(&[576, 1000]).unwrap());
        assert_eq!(cuda_alloc(GgmlType::Q8_0, 576, nbytes), (nbytes + Bytes::new(476)).align_up(128));
        // Multiples of 512 and unquantized types get nothing but the alignment.
        assert_eq!(cuda_alloc(GgmlType::Q4K, 2048, Bytes::new(1152)), Bytes::new(1152));
        assert_eq!(cuda_alloc(GgmlType::F32, 100, Bytes::new(400)), Bytes::new(512));
        assert_eq!(cuda_alloc(GgmlType::Bf16, 2880, Bytes::new(5760)), Bytes::new(5760));
        assert_eq!(host_alloc(Bytes::new(400)), Bytes::new(416));
    }
}
