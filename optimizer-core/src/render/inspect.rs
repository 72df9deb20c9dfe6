//! `splitplan inspect`: what a model file holds that matters for memory. [`InspectReport`] is the
//! JSON schema (docs/json.md, "inspect"); [`text`] and [`json`] render it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::{indent_table, mib2, table};
use crate::gguf::{DataStatus, GgmlType, GgufModel};
use crate::model::{LayerKind, MlaParams, ModelDescription, SsmParams};
use crate::units::{Bytes, group_thousands};

/// The version of the JSON schema; it changes only when a field changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 1;

/// The tokens the per-layer KV columns are given for.
pub const KV_TOKENS: u64 = 1024;

/// Everything `inspect` reports about a model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InspectReport {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// `general.name`.
    pub name: Option<String>,
    /// `general.architecture`.
    pub architecture: String,
    /// Whether splitplan has rules of its own for the architecture (otherwise generic ones).
    pub architecture_known: bool,
    /// The files read, in shard order.
    pub shards: Vec<ShardReport>,
    /// Whether every file holds all of its tensor data. False for header-only fixtures and partial
    /// downloads: the model can be planned, not loaded.
    pub data_complete: bool,
    /// The number of tensors, all shards.
    pub tensor_count: usize,
    /// The bytes of all tensor data (llama.cpp's `print_info: file size`).
    pub total_bytes: Bytes,
    /// The hyperparameters that decide memory.
    pub hparams: Hparams,
    /// One row per block, NextN blocks included.
    pub layers: Vec<LayerRow>,
    /// The tensors outside every block (embeddings, output, final norm), in file order.
    pub outside_layers: Vec<TensorRow>,
    /// Tensors and bytes per ggml type, in ggml type id order.
    pub types: Vec<TypeRow>,
    /// What the model description found worth saying.
    pub warnings: Vec<String>,
}

/// One file of the model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ShardReport {
    /// The path as it was given or found.
    pub path: String,
    /// Tensors in this file.
    pub tensor_count: usize,
    /// Their data bytes.
    pub tensor_bytes: Bytes,
    /// The file's length.
    pub file_size: u64,
    /// Where its tensor data ends, from the start of the file.
    pub data_end: u64,
    /// Whether the file is at least that long.
    pub data_complete: bool,
}

/// The hyperparameters that decide memory.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hparams {
    /// Every block, NextN/MTP blocks included (`block_count`).
    pub n_layer_all: usize,
    /// The blocks that are not NextN/MTP.
    pub n_layer: usize,
    /// NextN/MTP blocks (`nextn_predict_layers`).
    pub n_nextn: usize,
    /// How many blocks of each kind.
    pub layer_kinds: LayerKinds,
    /// `embedding_length`.
    pub n_embd: u32,
    /// The vocabulary, from the embedding tensor's shape.
    pub n_vocab: u64,
    /// `context_length`.
    pub n_ctx_train: u32,
    /// `rope.dimension_count`.
    pub n_rot: u32,
    /// Attention shapes over the blocks that have a KV cache.
    pub attention: Attention,
    /// Mixture of experts, `null` for a dense model.
    pub experts: Option<Experts>,
    /// Sliding-window attention, `null` without.
    pub sliding_window: Option<SlidingWindow>,
    /// State-space sizes of a recurrent model, `null` otherwise.
    pub ssm: Option<SsmParams>,
    /// Multi-head latent attention sizes, `null` without MLA.
    pub mla: Option<MlaParams>,
    /// No `output.weight`: `token_embd` is also the output projection.
    pub tied_embeddings: bool,
}

/// Blocks per kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LayerKinds {
    /// Full attention.
    pub full_attention: usize,
    /// Sliding-window attention.
    pub sliding_window: usize,
    /// Multi-head latent attention.
    pub mla: usize,
    /// Recurrent (Gated DeltaNet / SSM).
    pub recurrent: usize,
    /// NextN/MTP.
    pub nextn: usize,
}

/// Attention shapes: the distinct values over the blocks with a KV cache, ascending (usually one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Attention {
    /// `n_head`.
    pub n_head: Vec<u32>,
    /// `n_head_kv`.
    pub n_head_kv: Vec<u32>,
    /// K head size as cached (under MLA: `kv_lora_rank + n_rot`).
    pub head_dim_k: Vec<u32>,
    /// V head size as cached.
    pub head_dim_v: Vec<u32>,
}

/// Mixture-of-experts sizes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Experts {
    /// Routed experts per layer (`expert_count`).
    pub count: u32,
    /// Experts used per token (`expert_used_count`).
    pub used: u32,
    /// Shared experts (`expert_shared_count`).
    pub shared: u32,
    /// One routed expert's FFN width.
    pub ff_exp: u32,
    /// The shared expert block's FFN width (0 without).
    pub ff_shexp: u32,
    /// Dense blocks before the MoE ones.
    pub leading_dense_layers: u32,
}

/// Sliding-window attention.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SlidingWindow {
    /// The window in tokens.
    pub window: u32,
    /// Blocks that use it.
    pub layers: usize,
}

/// One block.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerRow {
    /// The block index.
    pub index: usize,
    /// What it is.
    pub kind: LayerKind,
    /// Every tensor of the block except the routed experts: attention, norms, router, shared
    /// expert, dense FFN, recurrent projections.
    pub dense_bytes: Bytes,
    /// The routed experts (`*_exps`), what `-ot exps=CPU` moves to system RAM.
    pub expert_bytes: Bytes,
    /// K + V cache bytes for [`KV_TOKENS`] tokens with an f16 cache and flash attention (V not
    /// transposed); 0 for a block without KV cache.
    pub kv_bytes_per_1024_f16: Bytes,
    /// The same with a q8_0 cache; `null` if the row width is not a whole number of q8_0 blocks.
    pub kv_bytes_per_1024_q8_0: Option<Bytes>,
    /// Recurrent state bytes per sequence (conv + SSM, f32); 0 unless recurrent.
    pub recurrent_bytes_per_seq: Bytes,
}

/// One tensor.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TensorRow {
    /// Its name.
    pub name: String,
    /// Its ggml type.
    #[serde(rename = "type")]
    pub ggml_type: GgmlType,
    /// Its data bytes.
    pub bytes: Bytes,
}

/// Tensors of one ggml type.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TypeRow {
    /// The type, as ggml names it (`q5_K`, `mxfp4`).
    #[serde(rename = "type")]
    pub ggml_type: GgmlType,
    /// How many tensors.
    pub count: usize,
    /// Their bytes.
    pub bytes: Bytes,
}

impl InspectReport {
    /// The report for `model`, described from `gguf`.
    pub fn new(gguf: &GgufModel, model: &ModelDescription) -> InspectReport {
        let shards: Vec<ShardReport> = gguf
            .shards
            .iter()
            .map(|s| {
                let (data_end, data_complete) = match s.file.data {
                    DataStatus::Complete => {
                        let end = s
                            .file
                            .tensors
                            .iter()
                            .map(|t| s.file.data_offset.saturating_add(t.offset).saturating_add(t.size.get()))
                            .max()
                            .unwrap_or(s.file.data_offset);
                        (end, true)
                    }
                    DataStatus::Missing { expected_end, .. } => (expected_end, false),
                };
                ShardReport {
                    path: s.path.display().to_string(),
                    tensor_count: s.file.tensors.len(),
                    tensor_bytes: s.file.tensors.iter().map(|t| t.size).sum(),
                    file_size: s.file.file_size,
                    data_end,
                    data_complete,
                }
            })
            .collect();

        let mut kinds = LayerKinds::default();
        for l in &model.layers {
            *match l.kind {
                LayerKind::FullAttention => &mut kinds.full_attention,
                LayerKind::SlidingWindow => &mut kinds.sliding_window,
                LayerKind::Mla => &mut kinds.mla,
                LayerKind::Recurrent => &mut kinds.recurrent,
                LayerKind::Nextn => &mut kinds.nextn,
            } += 1;
        }
        let distinct = |f: &dyn Fn(&crate::model::LayerInfo) -> u32| {
            let mut v: Vec<u32> = model.kv_layers().map(f).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let attention = Attention {
            n_head: distinct(&|l| l.n_head),
            n_head_kv: distinct(&|l| l.n_head_kv),
            head_dim_k: distinct(&|l| l.head_dim_k),
            head_dim_v: distinct(&|l| l.head_dim_v),
        };
        let hparams = Hparams {
            n_layer_all: model.n_layer_all,
            n_layer: model.n_layer(),
            n_nextn: model.n_nextn,
            layer_kinds: kinds,
            n_embd: model.n_embd,
            n_vocab: model.n_vocab,
            n_ctx_train: model.n_ctx_train,
            n_rot: model.n_rot,
            attention,
            experts: (model.n_expert > 0).then_some(Experts {
                count: model.n_expert,
                used: model.n_expert_used,
                shared: model.n_expert_shared,
                ff_exp: model.n_ff_exp,
                ff_shexp: model.n_ff_shexp,
                leading_dense_layers: model.n_layer_dense_lead,
            }),
            sliding_window: model.is_swa_any().then(|| SlidingWindow {
                window: model.n_swa,
                layers: model.layers.iter().filter(|l| l.is_swa).count(),
            }),
            ssm: model.ssm,
            mla: model.mla,
            tied_embeddings: model.tied_embeddings,
        };

        let kv = |il: usize, t: GgmlType| {
            model.kv_bytes_per_token(il, t, t, false).ok().map(|b| b.total().saturating_mul(KV_TOKENS))
        };
        let layers = model
            .layers
            .iter()
            .map(|l| LayerRow {
                index: l.index,
                kind: l.kind,
                dense_bytes: model.non_expert_bytes(l.index),
                expert_bytes: model.expert_bytes(l.index),
                kv_bytes_per_1024_f16: kv(l.index, GgmlType::F16).unwrap_or(Bytes::ZERO),
                kv_bytes_per_1024_q8_0: kv(l.index, GgmlType::Q8_0),
                recurrent_bytes_per_seq: model.recurrent_bytes_per_seq(l.index),
            })
            .collect();

        let outside_layers = model
            .global_tensors()
            .map(|t| TensorRow { name: t.name.clone(), ggml_type: t.ggml_type, bytes: t.size })
            .collect();

        let mut by_type: BTreeMap<u32, TypeRow> = BTreeMap::new();
        for t in &model.tensors {
            let row = by_type.entry(t.ggml_type.id()).or_insert(TypeRow {
                ggml_type: t.ggml_type,
                count: 0,
                bytes: Bytes::ZERO,
            });
            row.count += 1;
            row.bytes += t.size;
        }

        InspectReport {
            schema_version: SCHEMA_VERSION,
            name: model.name.clone(),
            architecture: model.architecture.name().to_owned(),
            architecture_known: model.architecture.is_known(),
            data_complete: shards.iter().all(|s| s.data_complete),
            shards,
            tensor_count: model.tensors.len(),
            total_bytes: model.total_bytes(),
            hparams,
            layers,
            outside_layers,
            types: by_type.into_values().collect(),
            warnings: model.warnings.iter().map(ToString::to_string).collect(),
        }
    }
}

/// The report as JSON (docs/json.md, "inspect").
pub fn json(report: &InspectReport) -> String {
    super::json(report)
}

fn kind_label(kind: LayerKind) -> &'static str {
    match kind {
        LayerKind::FullAttention => "full attention",
        LayerKind::SlidingWindow => "sliding window",
        LayerKind::Mla => "MLA",
        LayerKind::Recurrent => "recurrent",
        LayerKind::Nextn => "NextN",
    }
}

fn list(values: &[u32]) -> String {
    values.iter().map(|v| group_thousands(u64::from(*v))).collect::<Vec<_>>().join("/")
}

fn bytes_long(b: Bytes) -> String {
    format!("{b} ({} bytes)", group_thousands(b.get()))
}

/// The report as text: a summary, the files, the hyperparameters, a table of layers and a table
/// of tensor types.
// Short names keep the many table-building lines readable.
#[allow(clippy::many_single_char_names)]
pub fn text(r: &InspectReport) -> String {
    let mut out = String::new();
    let hp = &r.hparams;

    let mut summary: Vec<(&str, String)> = Vec::new();
    summary.push(("model", r.name.clone().unwrap_or_else(|| "(no general.name)".to_owned())));
    let arch = if r.architecture_known {
        r.architecture.clone()
    } else {
        format!("{} (no rules of its own: generic rules used)", r.architecture)
    };
    summary.push(("architecture", arch));
    summary.push((
        "tensors",
        format!("{}, {}", group_thousands(r.tensor_count as u64), bytes_long(r.total_bytes)),
    ));
    let missing = r.shards.iter().filter(|s| !s.data_complete).count();
    summary.push((
        "data",
        if r.data_complete {
            "complete".to_owned()
        } else {
            format!(
                "missing: {missing} of {} file(s) end before their tensor data (a header-only fixture or a \
                 partial download); the model can be planned, not loaded",
                r.shards.len()
            )
        },
    ));
    write_pairs(&mut out, "", &summary);

    out.push_str("\nfiles\n");
    // The shards of a split model share a folder: name it once, and the files by name.
    let parent = |p: &str| std::path::Path::new(p).parent().map(|d| d.display().to_string());
    let folder = r.shards.first().and_then(|s| parent(&s.path)).filter(|f| {
        !f.is_empty() && r.shards.len() > 1 && r.shards.iter().all(|s| parent(&s.path).as_ref() == Some(f))
    });
    if let Some(f) = &folder {
        let _ = writeln!(out, "  folder {f}");
    }
    let mut t = table(&["shard", "file", "tensors", "tensor MiB", "file size", "data"], &[0, 2, 3, 4]);
    for (i, s) in r.shards.iter().enumerate() {
        let data = if s.data_complete {
            "complete".to_owned()
        } else {
            format!("missing: the data ends at {}", Bytes::new(s.data_end))
        };
        let shown = match &folder {
            Some(_) => std::path::Path::new(&s.path)
                .file_name()
                .map_or_else(|| s.path.clone(), |n| n.to_string_lossy().into_owned()),
            None => s.path.clone(),
        };
        t.add_row(vec![
            (i + 1).to_string(),
            shown,
            group_thousands(s.tensor_count as u64),
            mib2(s.tensor_bytes),
            Bytes::new(s.file_size).to_string(),
            data,
        ]);
    }
    out.push_str(&indent_table(&t, "  "));

    out.push_str("\nhyperparameters\n");
    let mut pairs: Vec<(&str, String)> = Vec::new();
    let k = &hp.layer_kinds;
    let kinds: Vec<String> = [
        (k.full_attention, "full attention"),
        (k.sliding_window, "sliding window"),
        (k.mla, "MLA"),
        (k.recurrent, "recurrent"),
        (k.nextn, "NextN"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    pairs.push(("layers", format!("{} ({})", hp.n_layer_all, kinds.join(", "))));
    pairs.push(("embedding", group_thousands(u64::from(hp.n_embd))));
    pairs.push(("vocabulary", group_thousands(hp.n_vocab)));
    pairs.push(("training context", group_thousands(u64::from(hp.n_ctx_train))));
    let a = &hp.attention;
    pairs.push((
        "attention",
        if a.n_head.is_empty() {
            "no layer with a KV cache".to_owned()
        } else {
            format!(
                "{} heads, {} KV heads, head dim {} (K) / {} (V), rope {}",
                list(&a.n_head),
                list(&a.n_head_kv),
                list(&a.head_dim_k),
                list(&a.head_dim_v),
                hp.n_rot
            )
        },
    ));
    if let Some(e) = &hp.experts {
        let mut s = format!("{} routed, {} used per token", e.count, e.used);
        if e.shared > 0 {
            let _ = write!(s, ", {} shared", e.shared);
        }
        let _ = write!(s, "; expert FFN {}", group_thousands(u64::from(e.ff_exp)));
        if e.ff_shexp > 0 {
            let _ = write!(s, ", shared FFN {}", group_thousands(u64::from(e.ff_shexp)));
        }
        if e.leading_dense_layers > 0 {
            let _ = write!(s, "; {} dense layer(s) first", e.leading_dense_layers);
        }
        pairs.push(("experts", s));
    }
    if let Some(w) = &hp.sliding_window {
        pairs.push((
            "sliding window",
            format!("{} tokens, {} layers", group_thousands(u64::from(w.window)), w.layers),
        ));
    }
    if let Some(s) = &hp.ssm {
        pairs.push((
            "recurrent state",
            format!(
                "conv kernel {}, inner {}, state {}, groups {}, time-step rank {}",
                s.d_conv,
                group_thousands(u64::from(s.d_inner)),
                s.d_state,
                s.n_group,
                s.dt_rank
            ),
        ));
    }
    if let Some(m) = &hp.mla {
        pairs.push((
            "MLA",
            format!(
                "kv_lora_rank {}, q_lora_rank {}, K head {}, V head {}",
                m.kv_lora_rank, m.q_lora_rank, m.key_length_mla, m.value_length_mla
            ),
        ));
    }
    pairs.push((
        "output",
        if hp.tied_embeddings {
            "tied to token_embd (no output.weight)".to_owned()
        } else {
            "output.weight".to_owned()
        },
    ));
    write_pairs(&mut out, "  ", &pairs);

    let recurrent = r.layers.iter().any(|l| l.recurrent_bytes_per_seq > Bytes::ZERO);
    let _ = write!(
        out,
        "\nlayers (MiB; KV per {} tokens with flash attention{})\n",
        group_thousands(KV_TOKENS),
        if recurrent { "; recurrent state per sequence" } else { "" }
    );
    let mut header = vec!["layer", "kind", "dense", "experts", "KV f16", "KV q8_0"];
    if recurrent {
        header.push("state");
    }
    let right: Vec<usize> = (0..header.len()).filter(|&i| i != 1).collect();
    let mut t = table(&header, &right);
    let dash_if_zero = |b: Bytes| if b == Bytes::ZERO { "-".to_owned() } else { mib2(b) };
    for l in &r.layers {
        let has_kv = l.kv_bytes_per_1024_f16 > Bytes::ZERO;
        let mut row = vec![
            l.index.to_string(),
            kind_label(l.kind).to_owned(),
            mib2(l.dense_bytes),
            dash_if_zero(l.expert_bytes),
            dash_if_zero(l.kv_bytes_per_1024_f16),
            match (has_kv, l.kv_bytes_per_1024_q8_0) {
                (false, _) => "-".to_owned(),
                (true, Some(b)) => mib2(b),
                (true, None) => "n/a".to_owned(),
            },
        ];
        if recurrent {
            row.push(dash_if_zero(l.recurrent_bytes_per_seq));
        }
        t.add_row(row);
    }
    let sum = |f: fn(&LayerRow) -> Bytes| r.layers.iter().map(f).sum::<Bytes>();
    let q8_total: Option<Bytes> = r.layers.iter().map(|l| l.kv_bytes_per_1024_q8_0).sum();
    let mut total = vec![
        "all".to_owned(),
        String::new(),
        mib2(sum(|l| l.dense_bytes)),
        mib2(sum(|l| l.expert_bytes)),
        mib2(sum(|l| l.kv_bytes_per_1024_f16)),
        q8_total.map_or_else(|| "n/a".to_owned(), mib2),
    ];
    if recurrent {
        total.push(mib2(sum(|l| l.recurrent_bytes_per_seq)));
    }
    t.add_row(total);
    out.push_str(&indent_table(&t, "  "));
    if !r.outside_layers.is_empty() {
        out.push_str("\noutside the layers\n");
        let mut t = table(&["tensor", "type", "MiB"], &[2]);
        for o in &r.outside_layers {
            t.add_row(vec![o.name.clone(), o.ggml_type.name().to_owned(), mib2(o.bytes)]);
        }
        out.push_str(&indent_table(&t, "  "));
    }

    out.push_str("\ntensor types\n");
    let mut t = table(&["type", "tensors", "MiB"], &[1, 2]);
    for row in &r.types {
        t.add_row(vec![row.ggml_type.name().to_owned(), group_thousands(row.count as u64), mib2(row.bytes)]);
    }
    t.add_row(vec!["all".to_owned(), group_thousands(r.tensor_count as u64), mib2(r.total_bytes)]);
    out.push_str(&indent_table(&t, "  "));
    out
}

/// `key  value` lines with the values aligned.
fn write_pairs(out: &mut String, indent: &str, pairs: &[(&str, String)]) {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in pairs {
        let _ = writeln!(out, "{indent}{k:width$}  {v}");
    }
}
