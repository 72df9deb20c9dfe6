//! The host output buffer: logits (and embeddings in embedding mode) for the outputs of one batch,
//! in the host buffer type of the output layer's device, `CUDA_Host` when that is a GPU
//! (llama-context.cpp:2118-2250).
//!
//! It is reserved for `n_seq_max` outputs when the context is created (llama-context.cpp:379) and
//! grows when a batch has more outputs, up to what llama-server allows (`n_outputs`).

use serde::Serialize;

use super::context::ResolvedContext;
use super::host::host_buffer_name;
use super::{Buffer, BufferKind, GpuAtLoad, Location, ResolvedPlacement};
use crate::model::ModelDescription;
use crate::settings::ServerSettings;
use crate::units::Bytes;

/// Bytes of one logit (`float`).
const F32_BYTES: u64 = 4;

/// The output buffer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OutputBuffer {
    /// llama.cpp's name for its buffer type: `CUDA_Host` or `CPU`.
    pub buffer_type: String,
    /// Outputs reserved at load: `n_seq_max`.
    pub n_outputs_at_load: u32,
    /// Its size at load (`llama_context: CUDA_Host output buffer size`).
    pub at_load: Bytes,
    /// Outputs at most: `max(n_outputs, n_seq_max)` (llama-context.cpp:2122).
    pub n_outputs_peak: u32,
    /// Its size once a batch with the most outputs has run.
    pub peak: Bytes,
}

impl OutputBuffer {
    /// The buffer as the load log prints it (at load).
    pub(crate) fn buffer(&self) -> Buffer {
        Buffer {
            kind: BufferKind::Output,
            buffer_type: self.buffer_type.clone(),
            location: Location::Host,
            size: self.at_load,
        }
    }
}

/// Bytes for `n_outputs` outputs: `4 × n_vocab` of logits each, plus `4 × n_embd` of embeddings in
/// embedding mode (llama-context.cpp:2143-2180). The vocabulary is the model's (from the
/// embedding tensor); llama.cpp counts the tokenizer's list, which the published files make equal.
fn output_bytes(model: &ModelDescription, embeddings: bool, n_outputs: u32) -> Bytes {
    let per_output = model.n_vocab + if embeddings { u64::from(model.n_embd) } else { 0 };
    Bytes::new(per_output.saturating_mul(u64::from(n_outputs)).saturating_mul(F32_BYTES))
}

/// Sizes the output buffer.
pub(crate) fn output_buffer(
    model: &ModelDescription,
    context: &ResolvedContext,
    placement: &ResolvedPlacement,
    settings: &ServerSettings,
    gpus: &[GpuAtLoad],
) -> OutputBuffer {
    // llama-context.cpp:2196-2202: the output device's host buffer type, else CPU.
    let buffer_type = match placement.output {
        Location::Gpu(i) => gpus.get(i).map_or_else(|| "CPU".to_owned(), |g| host_buffer_name(&g.name)),
        Location::Host => "CPU".to_owned(),
    };
    let n_outputs_at_load = context.n_seq;
    let n_outputs_peak = context.n_outputs.max(context.n_seq);
    OutputBuffer {
        buffer_type,
        n_outputs_at_load,
        at_load: output_bytes(model, settings.embedding, n_outputs_at_load),
        n_outputs_peak,
        peak: output_bytes(model, settings.embedding, n_outputs_peak),
    }
}
