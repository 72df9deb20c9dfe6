//! The context llama.cpp creates from llama-server's settings: sequences, the padded context, the
//! batch sizes, the outputs the server reserves, and the sizes of the KV caches
//! (llama-context.cpp:102-331; tools/server/server.cpp:160-172; server-context.cpp:42-56).

use serde::Serialize;

use super::error::MemoryError;
use crate::gguf::GgmlType;
use crate::model::ModelDescription;
use crate::settings::{CtxSize, FlashAttn, ServerSettings, SpecType};

/// The most sequences (server slots) a context may have (`LLAMA_MAX_SEQ`, llama-cparams.h:8).
pub const LLAMA_MAX_SEQ: u32 = 256;

/// `n_ctx` is padded to this once, at context creation (llama-context.cpp:292).
const N_CTX_PAD: u64 = 256;

/// The sliding-window cache is padded to this (llama-kv-cache-iswa.cpp:71-73).
const SWA_PAD: u64 = 256;

/// The draft sizes of the n-gram speculative types, which llama-server's flags here do not set:
/// llama.cpp's defaults (common/common.h:357-368; common/speculative.cpp:2408-2421).
const NGRAM_MAP_SIZE_M: u32 = 48;
const NGRAM_MOD_N_MAX: u32 = 64;
const NGRAM_CACHE_N_MAX: u32 = 8;

/// The context as llama.cpp resolves it.
// The flags mirror llama.cpp's own cparams (kv_unified, flash_attn, v_trans, offload_kqv).
#[allow(clippy::struct_excessive_bools)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ResolvedContext {
    /// `n_seq_max`: `max(1, n_parallel)`, where llama-server's `-np` auto means 4
    /// (llama-context.cpp:102; server.cpp:168-172).
    pub n_seq: u32,
    /// One KV buffer shared by every sequence (`kv_unified`; forced on by `-np` auto).
    pub kv_unified: bool,
    /// KV streams: 1 when unified, else `n_seq` (llama-kv-cache.cpp:84).
    pub n_stream: u32,
    /// `n_ctx` after padding to 256 and, without a unified cache, rounding to whole per-sequence
    /// contexts (llama-context.cpp:292-307).
    pub n_ctx: u32,
    /// `n_ctx_seq`: each sequence's context.
    pub n_ctx_seq: u32,
    /// `n_batch`, at most the requested context (llama-context.cpp:248).
    pub n_batch: u32,
    /// `n_ubatch`, at most `n_batch` (llama-context.cpp:250).
    pub n_ubatch: u32,
    /// The outputs one batch may produce, as llama-server reserves them: `n_batch` in embedding
    /// mode, else `min(n_batch, n_parallel × (1 + n_draft))` (server-context.cpp:42-56,
    /// speculative.cpp:2667-2676).
    pub n_outputs: u32,
    /// Cells of the (non-sliding) KV cache per stream: `n_ctx_seq` (llama-model.cpp:2360-2905).
    pub kv_size: u32,
    /// Cells of the sliding-window cache per stream, for a model with sliding-window layers:
    /// `PAD(min(kv_size, n_swa × (unified ? n_seq : 1) + n_ubatch), 256)`, or `kv_size` with
    /// `--swa-full` (llama-kv-cache-iswa.cpp:71-81).
    pub swa_size: Option<u32>,
    /// Flash attention as the memory sees it: `-fa auto` still counts as on when the caches are
    /// created (llama-context.cpp:509-562 resolves it later).
    pub flash_attn: bool,
    /// The V cache is transposed: without flash attention (`v_trans = !flash_attn`).
    pub v_trans: bool,
    /// Recurrent-state rollback snapshots per sequence (`n_rs_seq`): the draft length for the MTP,
    /// EAGLE3, DFlash and DSpark drafts (common/common.h:399-405), on architectures that support
    /// rollback (llama-context.cpp:107-112); else 0.
    pub n_rs_seq: u32,
    /// `-ctk`.
    pub type_k: GgmlType,
    /// `-ctv`.
    pub type_v: GgmlType,
    /// KV cache and recurrent state on the layers' GPUs (`!--no-kv-offload`).
    pub kv_offload: bool,
}

/// The longest draft any of the speculative types asks for (`common_speculative_n_max`,
/// common/speculative.cpp:2396-2430).
fn n_draft(settings: &ServerSettings) -> u32 {
    let spec = &settings.speculative;
    spec.types
        .iter()
        .map(|t| match t {
            SpecType::DraftSimple
            | SpecType::DraftEagle3
            | SpecType::DraftMtp
            | SpecType::DraftDflash
            | SpecType::DraftDspark => spec.draft_n_max,
            SpecType::NgramSimple | SpecType::NgramMapK | SpecType::NgramMapK4v => NGRAM_MAP_SIZE_M,
            SpecType::NgramMod => NGRAM_MOD_N_MAX,
            SpecType::NgramCache => NGRAM_CACHE_N_MAX,
            SpecType::None => 0,
        })
        .max()
        .unwrap_or(0)
}

/// `need_n_rs_seq` (common/common.h:399-405).
fn need_n_rs_seq(settings: &ServerSettings) -> u32 {
    let spec = &settings.speculative;
    let needs = spec.types.iter().any(|t| {
        matches!(
            t,
            SpecType::DraftMtp | SpecType::DraftEagle3 | SpecType::DraftDflash | SpecType::DraftDspark
        )
    });
    if needs { spec.draft_n_max } else { 0 }
}

fn pad(x: u64, n: u64) -> u64 {
    x.div_ceil(n).saturating_mul(n)
}

/// Resolves the context `settings` create for `model`.
pub(crate) fn resolve(
    model: &ModelDescription,
    settings: &ServerSettings,
) -> Result<ResolvedContext, MemoryError> {
    // llama-context.cpp:3838-3841: MLA's V is a view of its K cache.
    if model.mla.is_some() && settings.cache_type_k != settings.cache_type_v {
        return Err(MemoryError::MlaMixedKvTypes {
            type_k: settings.cache_type_k,
            type_v: settings.cache_type_v,
        });
    }
    // server.cpp:168-172: -np auto is 4 slots with a unified cache; llama-context.cpp:102.
    let n_parallel = settings.effective_parallel();
    let n_seq = n_parallel.max(1);
    if n_seq > LLAMA_MAX_SEQ {
        return Err(MemoryError::TooManySequences { n_seq, max: LLAMA_MAX_SEQ });
    }
    let kv_unified = settings.effective_kv_unified();

    // llama-context.cpp:134: 0 means the training context.
    let n_ctx_param = match settings.effective_ctx_size() {
        CtxSize::Unset | CtxSize::Train | CtxSize::Tokens(0) => model.n_ctx_train,
        CtxSize::Tokens(n) => n,
    };

    // server.cpp:160-166: embeddings need the whole batch in one micro-batch.
    let (batch_param, ubatch_param) = if settings.embedding && settings.batch_size > settings.ubatch_size {
        (settings.ubatch_size, settings.ubatch_size)
    } else {
        (settings.batch_size, settings.ubatch_size)
    };
    // llama-context.cpp:248-250 (every architecture planned here is causal).
    let n_batch = n_ctx_param.min(batch_param);
    let n_ubatch = n_batch.min(if ubatch_param == 0 { batch_param } else { ubatch_param });

    // llama-context.cpp:292-307
    let n_ctx = pad(u64::from(n_ctx_param), N_CTX_PAD);
    let (n_ctx, n_ctx_seq) = if kv_unified {
        (n_ctx, n_ctx)
    } else {
        // Never 0: n_ctx >= 256 >= n_seq.
        let per_seq = pad(n_ctx / u64::from(n_seq), N_CTX_PAD);
        (per_seq * u64::from(n_seq), per_seq)
    };
    let to_u32 = |x: u64| u32::try_from(x).map_err(|_| MemoryError::ContextTooLarge { n_ctx: x });
    let (n_ctx, n_ctx_seq) = (to_u32(n_ctx)?, to_u32(n_ctx_seq)?);

    // server-context.cpp:42-56; speculative.cpp:2667-2676
    let n_outputs = if settings.embedding {
        batch_param
    } else {
        let per_seq = 1 + u64::from(n_draft(settings));
        let total = u64::from(n_parallel).saturating_mul(per_seq).min(u64::from(batch_param));
        u32::try_from(total).unwrap_or(u32::MAX)
    }
    .max(1);

    let kv_size = n_ctx_seq;
    let swa_size = model.is_swa_any().then(|| {
        if settings.swa_full {
            kv_size
        } else {
            // llama-kv-cache-iswa.cpp:73
            let window = u64::from(model.n_swa) * if kv_unified { u64::from(n_seq) } else { 1 };
            let cells = pad(u64::from(kv_size).min(window + u64::from(n_ubatch)), SWA_PAD);
            u32::try_from(cells).unwrap_or(u32::MAX)
        }
    });

    let flash_attn = settings.effective_flash_attn() != FlashAttn::Off;
    let n_rs_seq = if model.architecture.supports_rs_rollback() { need_n_rs_seq(settings) } else { 0 };

    Ok(ResolvedContext {
        n_seq,
        kv_unified,
        n_stream: if kv_unified { 1 } else { n_seq },
        n_ctx,
        n_ctx_seq,
        n_batch,
        n_ubatch,
        n_outputs,
        kv_size,
        swa_size,
        flash_attn,
        v_trans: !flash_attn,
        n_rs_seq,
        type_k: settings.cache_type_k,
        type_v: settings.cache_type_v,
        kv_offload: settings.kv_offload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing;

    fn model(b: testing::Builder) -> ModelDescription {
        ModelDescription::from_gguf(&b.build()).unwrap()
    }

    fn resolve_args(m: &ModelDescription, args: &[&str]) -> ResolvedContext {
        resolve(m, &ServerSettings::from_args(args).unwrap()).unwrap()
    }

    #[test]
    fn context_is_padded_to_256_and_split_per_sequence() {
        let m = model(testing::qwen3_8b(2));
        let c = resolve_args(&m, &["-c", "10000", "-np", "1"]);
        assert_eq!((c.n_ctx, c.n_ctx_seq, c.n_stream, c.kv_size), (10_240, 10_240, 1, 10_240));
        // 4096 / 3 rounds UP per sequence: 1536 * 3 = 4608 (llama-context.cpp:297-307).
        let c = resolve_args(&m, &["-c", "4096", "-np", "3"]);
        assert_eq!((c.n_ctx, c.n_ctx_seq, c.n_stream), (4608, 1536, 3));
        // A unified cache keeps the whole context for every sequence.
        let c = resolve_args(&m, &["-c", "4096", "-np", "3", "-kvu"]);
        assert_eq!((c.n_ctx, c.n_ctx_seq, c.n_stream), (4096, 4096, 1));
    }

    #[test]
    fn server_defaults_are_four_unified_slots_at_the_training_context() {
        let m = model(testing::qwen3_8b(2));
        let c = resolve_args(&m, &[]);
        assert_eq!((c.n_seq, c.kv_unified, c.n_ctx), (4, true, 40_960));
        assert_eq!((c.n_batch, c.n_ubatch, c.n_outputs), (2048, 512, 4));
        assert!(c.flash_attn && !c.v_trans);
        assert_eq!(c.swa_size, None);
    }

    #[test]
    fn batches_are_capped_by_the_context() {
        let m = model(testing::qwen3_8b(2));
        let c = resolve_args(&m, &["-c", "300", "-b", "4096", "-ub", "4096", "-np", "1"]);
        // n_batch = min(requested n_ctx, n_batch), before padding (llama-context.cpp:248).
        assert_eq!((c.n_ctx, c.n_batch, c.n_ubatch), (512, 300, 300));
    }

    #[test]
    fn sliding_window_cache_size() {
        let m = model(testing::gpt_oss_120b(4));
        let c = resolve_args(&m, &["-c", "131072", "-np", "1"]);
        // PAD(min(131072, 128 + 512), 256) = 768, as the gpt-oss load logs print.
        assert_eq!(c.swa_size, Some(768));
        let c = resolve_args(&m, &["-c", "131072"]);
        // Unified with 4 slots: 128 * 4 + 512 = 1024.
        assert_eq!(c.swa_size, Some(1024));
        let c = resolve_args(&m, &["-c", "131072", "-np", "1", "--swa-full"]);
        assert_eq!(c.swa_size, Some(131_072));
        let c = resolve_args(&m, &["-c", "512", "-np", "1"]);
        assert_eq!(c.swa_size, Some(512));
    }

    #[test]
    fn outputs_follow_drafts_and_embeddings() {
        let m = model(testing::qwen3_8b(2));
        let c = resolve_args(&m, &["-np", "2", "--spec-type", "draft-mtp", "--spec-draft-n-max", "5"]);
        assert_eq!(c.n_outputs, 12);
        // Qwen3 has no recurrent rollback.
        assert_eq!(c.n_rs_seq, 0);
        let c = resolve_args(&m, &["--embedding", "-b", "4096", "-ub", "1024"]);
        assert_eq!((c.n_batch, c.n_ubatch, c.n_outputs), (1024, 1024, 1024));
    }

    #[test]
    fn flash_attention_off_transposes_v() {
        let m = model(testing::qwen3_8b(2));
        let c = resolve_args(&m, &["-fa", "off"]);
        assert!(!c.flash_attn && c.v_trans);
        let c = resolve_args(&m, &["-fa", "auto"]);
        assert!(c.flash_attn);
    }

    #[test]
    fn impossible_contexts_are_errors() {
        let m = model(testing::qwen3_8b(2));
        let huge = model(testing::qwen3_8b(2).u32("context_length", u32::MAX));
        let s = ServerSettings::from_args(&["-np", "1"]).unwrap();
        assert!(matches!(resolve(&huge, &s), Err(MemoryError::ContextTooLarge { n_ctx: 4_294_967_296 })));
        let s =
            ServerSettings { parallel: crate::settings::Parallel::Slots(300), ..ServerSettings::default() };
        assert!(matches!(resolve(&m, &s), Err(MemoryError::TooManySequences { n_seq: 300, .. })));
    }
}
