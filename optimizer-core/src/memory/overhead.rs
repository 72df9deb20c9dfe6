//! GPU memory llama-server holds beyond its own memory breakdown: cuBLAS handles and workspace, and
//! the ggml CUDA pool that backs kernels' temporaries and grows at the first long request, never
//! shrinking (ggml-cuda.cu:413-620). llama.cpp's breakdown does not show it and `--fit` leaves it to
//! its margin; a placement that ignores it loads, then dies at the first request (anchor-runs.md).
//!
//! The CUDA context itself is not here: the free memory llama.cpp reports at load, which
//! [`GpuAtLoad::free`](super::GpuAtLoad) carries, is already net of it.
//!
//! Calibrated on the 2026-11-21 ground truth (2x H200, driver 580.159.04, llama.cpp 11434; 40 GPU
//! readings of 24 real loads in fixtures/ground-truth/data/*/rows/*.json): NVML free before start −
//! free after load − llama.cpp's `self` = 595–604 MiB, of which 524 MiB is the CUDA context (the
//! 24,081 → 23,557 MiB drop llama.cpp logs); after the first request 607–721 MiB, after a 13.9K-token
//! prompt at `-ub 2048` up to 754 MiB.

use serde::Serialize;

use super::context::ResolvedContext;
use crate::units::{Bytes, KIB, MIB};

/// Beyond the breakdown right after load: 604 − 524 MiB, the largest reading (cuBLAS and the like).
pub const AFTER_LOAD: Bytes = Bytes::from_mib(80);

/// The pool's growth at the first request: a constant plus a term per micro-batch token. With
/// `-ub 512`: 128 MiB (measured 113–121 MiB with quantized MoE experts, 12 MiB on the dense Qwen3-8B);
/// with `-ub 2048`: 152 MiB (measured 126–154 MiB, the most after a 13.9K-token prompt).
const POOL_BASE: u64 = 120 * MIB;
const POOL_PER_TOKEN: u64 = 16 * KIB;

/// Memory held outside the breakdown on one GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Overhead {
    /// Right after load.
    pub after_load: Bytes,
    /// After the first long request: what a placement must leave free to survive it.
    pub after_request: Bytes,
}

/// The overhead on a GPU that holds part of the model.
pub fn overhead(context: &ResolvedContext) -> Overhead {
    let pool = Bytes(POOL_BASE + POOL_PER_TOKEN * u64::from(context.n_ubatch));
    Overhead { after_load: AFTER_LOAD, after_request: AFTER_LOAD + pool }
}
