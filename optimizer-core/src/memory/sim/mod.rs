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

pub mod build;
pub mod ggml;
pub mod sched;
