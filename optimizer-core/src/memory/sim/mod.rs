//! A graph-level simulation of llama.cpp's compute buffers: llama.cpp's graph builders ported to a
//! shape-only model of ggml (`ggml`), ggml's backend scheduler (`sched`: which backend runs each
//! node, the splits and their input copies) and ggml's graph allocator (`alloc`: the best-fit free
//! list that decides each compute buffer's high-water mark). Where it covers an architecture and a
//! configuration, its sizes are llama.cpp's own, to the byte; `compute` falls back to the phase model
//! elsewhere.

// ggml and llama.cpp mix `int64_t` shapes, `size_t` strides and `int32_t` layer indices and op
// parameters; the values here are positive and far below 2^62, as ggml asserts, so the casts between
// them are llama.cpp's own.
#![allow(clippy::cast_sign_loss, clippy::cast_possible_wrap, clippy::cast_possible_truncation)]

pub mod alloc;
pub mod build;
pub mod ggml;
pub mod sched;
#[cfg(test)]
pub mod trace;

use crate::memory::sim::build::{LlmGraph, Ubatch};
use crate::memory::{Location, ResolvedContext, ResolvedPlacement, Runner};
use crate::model::{Architecture, ModelDescription};
use crate::settings::ServerSettings;
use crate::units::Bytes;

/// Why the simulator gives no size for a configuration (the caller falls back to the phase model).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotCovered {
    /// No graph builder has been ported for the architecture.
    #[error("no graph builder for architecture {0:?}")]
    Architecture(String),
    /// A part of the simulation is not ported yet.
    #[error("the simulator has no {0} yet")]
    Missing(&'static str),
    /// The architecture's builder does not cover this variant of the model.
    #[error("{0}")]
    Variant(String),
    /// The builder made a shape ggml would reject: a bug or an unsupported variant of the model.
    #[error("ggml would reject the graph: {0}")]
    Rejected(String),
}

/// One device's compute buffer as the simulation sizes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceCompute {
    /// The device: the model's GPUs in llama.cpp's order, then the host (the CPU backend's buffer).
    pub location: Location,
    /// `ggml_backend_sched_get_buffer_size`: the buffer's size before llama.cpp's MiB rounding.
    pub bytes: Bytes,
}

/// The micro-batches llama.cpp reserves compute buffers for (src/llama-context.cpp:630-740,
/// `graph_reserve` at 2526-2575), in order: for llama-server the prompt graph, the generation graph
/// (`n_seqs` tokens) and the prompt graph again; for the dry run only the prompt graph, with a whole
/// micro-batch of outputs (`n_outputs_max` 0 becomes `n_batch`, src/llama-context.cpp:252).
pub fn reservations(context: &ResolvedContext, runner: Runner) -> Vec<Ubatch> {
    let n_seqs = i64::from(context.n_seq.max(1));
    let n_tokens = i64::from(context.n_ctx.min(context.n_ubatch));
    // graph_reserve rounds n_tokens up to a multiple of n_seqs (src/llama-context.cpp:2531-2534)
    let round = |n: i64| (n + n_seqs - 1) / n_seqs * n_seqs;
    match runner {
        Runner::FitParamsDryRun => {
            let n = round(n_tokens);
            vec![Ubatch { n_tokens: n, n_seqs, n_outputs: n_tokens }]
        }
        Runner::LlamaServer => {
            let n_outputs_pp = n_tokens.min(i64::from(context.n_outputs)).max(1);
            let pp = Ubatch { n_tokens: round(n_tokens), n_seqs, n_outputs: n_outputs_pp };
            let tg = Ubatch { n_tokens: n_seqs, n_seqs, n_outputs: n_seqs };
            vec![pp, tg, pp]
        }
    }
}

/// Builds llama.cpp's graph for `ubatch` (`llama_model::build_graph`), or says why it cannot.
pub fn build_graph<'a>(
    model: &'a ModelDescription,
    settings: &'a ServerSettings,
    context: &'a ResolvedContext,
    placement: &'a ResolvedPlacement,
    ubatch: Ubatch,
) -> Result<LlmGraph<'a>, NotCovered> {
    let mut g = LlmGraph::new(model, settings, context, placement, ubatch);
    match &model.architecture {
        Architecture::Llama if model.n_expert == 0 => build::llama::build(&mut g),
        Architecture::Qwen3 => build::qwen3::build(&mut g),
        Architecture::GptOss => build::openai_moe::build(&mut g),
        Architecture::Deepseek2 => {
            g.build_deepseek2().map_err(|e| NotCovered::Variant(e.to_string()))?;
        }
        other => return Err(NotCovered::Architecture(other.name().to_owned())),
    }
    if let Some(e) = g.ctx.error.take() {
        return Err(NotCovered::Rejected(e));
    }
    Ok(g)
}

/// llama.cpp's compute buffer per device for `model` under `settings`, as `runner` reserves them:
/// every reservation's graph built, scheduled and allocated, each buffer's size the largest
/// reservation's (`ggml_gallocr` only grows a buffer). Devices in placement order, then the host.
pub fn simulate(
    model: &ModelDescription,
    settings: &ServerSettings,
    context: &ResolvedContext,
    placement: &ResolvedPlacement,
    runner: Runner,
) -> Result<Vec<DeviceCompute>, NotCovered> {
    for ubatch in reservations(context, runner) {
        build_graph(model, settings, context, placement, ubatch)?;
    }
    // the scheduler (sched.rs) and the graph allocator (alloc.rs) are ported by their own helpers
    Err(NotCovered::Missing("backend scheduler and graph allocator"))
}
