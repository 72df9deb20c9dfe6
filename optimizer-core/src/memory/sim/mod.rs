//! A graph-level simulation of llama.cpp's compute buffers: llama.cpp's graph builders ported to a
//! shape-only model of ggml (`ggml`), ggml's backend scheduler (`sched`: which backend runs each
//! node, the splits and their input copies) and ggml's graph allocator (`alloc`: the best-fit free
//! list that decides each compute buffer's high-water mark). Where it covers an architecture and a
//! configuration, its sizes are llama.cpp's own, to the byte; `compute` falls back to the phase model
//! elsewhere.

pub mod ggml;
