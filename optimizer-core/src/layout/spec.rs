//! The layout spec file format (TOML) and its validation into a [`LayoutSpec`].
//!
//! fixtures/README.md in the repository documents the format with an example; fixtures/layouts/ holds
//! one spec per model family. Everything a spec names (ggml types, expressions, layer lists, metadata
//! value kinds) is checked here, when the file is read, so that building a layout only fails on
//! problems that depend on the quant or the layer count.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::LayoutError;
use super::expr::Expr;
use crate::gguf::GgmlType;

/// A parsed, checked layout spec: one model, its tensors and its quants.
#[derive(Clone, Debug, PartialEq)]
pub struct LayoutSpec {
    pub(super) model: ModelInfo,
    pub(super) hparams: BTreeMap<String, Number>,
    pub(super) derived: BTreeMap<String, Expr>,
    pub(super) metadata: Vec<MetaEntry>,
    pub(super) tokenizer: Option<TokenizerSpec>,
    pub(super) globals: Vec<TensorSpec>,
    pub(super) groups: Vec<LayerGroup>,
    pub(super) quants: BTreeMap<String, QuantSpec>,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct ModelInfo {
    pub key: String,
    pub arch: String,
    pub n_layer: u64,
}

/// A hyperparameter value: integers take part in expressions, floats only in metadata.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub(super) enum Number {
    Int(i64),
    Float(f64),
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct MetaEntry {
    pub key: String,
    pub value: MetaValueSpec,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum MetaValueSpec {
    /// A string, written as it is.
    String(String),
    /// A string whose `{name}` placeholders are filled in when the layout is built.
    Template(String),
    U16(Expr),
    U32(Expr),
    I32(Expr),
    U64(Expr),
    /// A float literal or the name of a hyperparameter.
    F32(FloatSpec),
    Bool(bool),
    Generated(Generated),
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum FloatSpec {
    Literal(f64),
    Name(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Generated {
    Tokens,
    TokenTypes,
    Merges,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct TokenizerSpec {
    pub tokens: Expr,
    pub merges: Expr,
    pub special: BTreeMap<u64, String>,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct TensorSpec {
    pub name: String,
    pub shape: Vec<Expr>,
    /// The type the converter writes (before quantization).
    pub ggml_type: GgmlType,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct LayerGroup {
    pub kind: String,
    /// Which layers have these tensors; `None`: every layer.
    pub when: Option<Expr>,
    pub tensors: Vec<TensorSpec>,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct QuantSpec {
    pub file: String,
    pub file_type: u32,
    pub split: Option<SplitSpec>,
    pub rules: Vec<TypeRule>,
}

/// How a model is split into several files, as `gguf-split --split` does it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitSpec {
    /// `--split-max-size`: the most tensor bytes (each padded to 32) in one file
    /// (gguf-split.cpp:256-268, 287-290).
    pub max_bytes: u64,
    /// `--no-tensor-first-split`: the first file holds the metadata and no tensors
    /// (gguf-split.cpp:251-254), as Unsloth's split files do.
    pub metadata_only_first: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct TypeRule {
    /// A global tensor's full name, or a per-layer tensor's name after `blk.N.`.
    pub tensor: String,
    pub ggml_type: GgmlType,
    /// `None`: every layer (or a global tensor).
    pub layers: Option<LayerSet>,
}

/// A set of layers written as in layouts.md: `0-5,8,11,41-47`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct LayerSet {
    pub text: String,
    ranges: Vec<(u64, u64)>,
}

impl LayerSet {
    pub fn parse(text: &str) -> Result<LayerSet, LayoutError> {
        let bad =
            |message: &str| LayoutError::BadLayerList { list: text.to_owned(), message: message.to_owned() };
        let mut ranges = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let a: u64 = a.trim().parse().map_err(|_| bad("expected a layer number or a range like 6-7"))?;
            let b: u64 = b.trim().parse().map_err(|_| bad("expected a layer number or a range like 6-7"))?;
            if a > b {
                return Err(bad("a range must go upwards"));
            }
            ranges.push((a, b));
        }
        Ok(LayerSet { text: text.to_owned(), ranges })
    }

    pub fn contains(&self, layer: u64) -> bool {
        self.ranges.iter().any(|&(a, b)| (a..=b).contains(&layer))
    }
}

// ---------------------------------------------------------------------------------------------
// The file as serde reads it. `deny_unknown_fields` everywhere: a misspelt key is an error, not a
// silently ignored line.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    model: RawModel,
    hparams: BTreeMap<String, Number>,
    #[serde(default)]
    derived: BTreeMap<String, String>,
    metadata: RawMetadata,
    tokenizer: Option<RawTokenizer>,
    tensors: RawTensors,
    quants: BTreeMap<String, RawQuant>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    key: String,
    arch: String,
    #[allow(dead_code)] // documentation for the reader of the spec
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetadata {
    keys: Vec<RawMeta>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IntOrExpr {
    Int(i64),
    Expr(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum FloatOrName {
    Float(f64),
    Name(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMeta {
    key: String,
    string: Option<String>,
    template: Option<String>,
    u16: Option<IntOrExpr>,
    u32: Option<IntOrExpr>,
    i32: Option<IntOrExpr>,
    u64: Option<IntOrExpr>,
    f32: Option<FloatOrName>,
    bool: Option<bool>,
    generate: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokenizer {
    tokens: IntOrExpr,
    merges: IntOrExpr,
    #[serde(default)]
    special: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTensors {
    global: Vec<RawTensor>,
    #[serde(default)]
    layer: Vec<RawGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTensor {
    name: String,
    shape: Vec<IntOrExpr>,
    #[serde(rename = "type")]
    ggml_type: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    kind: String,
    when: Option<String>,
    tensors: Vec<RawTensor>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuant {
    file: String,
    file_type: u32,
    split: Option<RawSplit>,
    #[allow(dead_code)] // documentation for the reader of the spec
    source: Option<String>,
    types: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSplit {
    max_bytes: u64,
    metadata_only_first: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    tensor: String,
    #[serde(rename = "type")]
    ggml_type: String,
    layers: Option<String>,
}

fn expr_of(v: IntOrExpr) -> Result<Expr, LayoutError> {
    match v {
        IntOrExpr::Int(i) => Ok(Expr::literal(i)),
        IntOrExpr::Expr(s) => Ok(Expr::parse(&s)?),
    }
}

fn type_of(name: &str, context: &str) -> Result<GgmlType, LayoutError> {
    GgmlType::from_name(name)
        .ok_or_else(|| LayoutError::UnknownType { name: name.to_owned(), context: context.to_owned() })
}

fn tensor_of(raw: RawTensor) -> Result<TensorSpec, LayoutError> {
    if raw.shape.is_empty() || raw.shape.len() > crate::gguf::MAX_DIMS {
        return Err(LayoutError::BadShape {
            tensor: raw.name,
            message: format!("expected 1 to {} dimensions, found {}", crate::gguf::MAX_DIMS, raw.shape.len()),
        });
    }
    Ok(TensorSpec {
        ggml_type: type_of(&raw.ggml_type, &raw.name)?,
        shape: raw.shape.into_iter().map(expr_of).collect::<Result<_, _>>()?,
        name: raw.name,
    })
}

fn meta_of(raw: RawMeta) -> Result<MetaEntry, LayoutError> {
    let key = raw.key;
    let mut values = Vec::new();
    if let Some(s) = raw.string {
        values.push(MetaValueSpec::String(s));
    }
    if let Some(s) = raw.template {
        values.push(MetaValueSpec::Template(s));
    }
    if let Some(v) = raw.u16 {
        values.push(MetaValueSpec::U16(expr_of(v)?));
    }
    if let Some(v) = raw.u32 {
        values.push(MetaValueSpec::U32(expr_of(v)?));
    }
    if let Some(v) = raw.i32 {
        values.push(MetaValueSpec::I32(expr_of(v)?));
    }
    if let Some(v) = raw.u64 {
        values.push(MetaValueSpec::U64(expr_of(v)?));
    }
    if let Some(v) = raw.f32 {
        values.push(MetaValueSpec::F32(match v {
            FloatOrName::Float(f) => FloatSpec::Literal(f),
            FloatOrName::Name(n) => FloatSpec::Name(n),
        }));
    }
    if let Some(b) = raw.bool {
        values.push(MetaValueSpec::Bool(b));
    }
    if let Some(g) = raw.generate {
        values.push(MetaValueSpec::Generated(match g.as_str() {
            "tokens" => Generated::Tokens,
            "token_types" => Generated::TokenTypes,
            "merges" => Generated::Merges,
            _ => {
                return Err(LayoutError::BadMetadata {
                    key,
                    message: format!(
                        "cannot generate {g:?}; expected \"tokens\", \"token_types\" or \"merges\""
                    ),
                });
            }
        }));
    }
    if values.len() != 1 {
        return Err(LayoutError::BadMetadata {
            key,
            message: format!(
                "expected exactly one of string, template, u16, u32, i32, u64, f32, bool, generate; found {}",
                values.len()
            ),
        });
    }
    let value = values.remove(0);
    Ok(MetaEntry { key, value })
}

impl LayoutSpec {
    /// Reads and checks a spec from TOML text.
    pub fn parse(text: &str) -> Result<LayoutSpec, LayoutError> {
        let raw: RawSpec = toml::from_str(text).map_err(|e| LayoutError::Toml { message: e.to_string() })?;

        let n_layer = match raw.hparams.get("n_layer") {
            Some(&Number::Int(n)) if n > 0 => n.unsigned_abs(),
            other => {
                return Err(LayoutError::BadHparam {
                    name: "n_layer".to_owned(),
                    message: format!("expected a positive integer, found {other:?}"),
                });
            }
        };
        for name in raw.derived.keys() {
            if raw.hparams.contains_key(name) {
                return Err(LayoutError::BadHparam {
                    name: name.clone(),
                    message: "defined both in [hparams] and in [derived]".to_owned(),
                });
            }
        }
        let derived = raw
            .derived
            .into_iter()
            .map(|(k, v)| Ok((k, Expr::parse(&v)?)))
            .collect::<Result<_, LayoutError>>()?;

        let mut metadata = Vec::with_capacity(raw.metadata.keys.len());
        for m in raw.metadata.keys {
            let entry = meta_of(m)?;
            if metadata.iter().any(|e: &MetaEntry| e.key == entry.key) {
                return Err(LayoutError::BadMetadata {
                    key: entry.key,
                    message: "the key appears twice".to_owned(),
                });
            }
            metadata.push(entry);
        }

        let tokenizer = raw
            .tokenizer
            .map(|t| {
                let special = t
                    .special
                    .into_iter()
                    .map(|(id, s)| {
                        id.parse::<u64>().map(|id| (id, s)).map_err(|_| LayoutError::BadMetadata {
                            key: "tokenizer.special".to_owned(),
                            message: format!("expected a token id, found {id:?}"),
                        })
                    })
                    .collect::<Result<_, _>>()?;
                Ok::<_, LayoutError>(TokenizerSpec {
                    tokens: expr_of(t.tokens)?,
                    merges: expr_of(t.merges)?,
                    special,
                })
            })
            .transpose()?;
        let generates = metadata.iter().any(|e| matches!(e.value, MetaValueSpec::Generated(_)));
        if generates && tokenizer.is_none() {
            return Err(LayoutError::BadMetadata {
                key: "tokenizer".to_owned(),
                message: "metadata generates tokenizer arrays but the spec has no [tokenizer] table"
                    .to_owned(),
            });
        }

        let globals = raw.tensors.global.into_iter().map(tensor_of).collect::<Result<Vec<_>, _>>()?;
        if let Some(t) = globals.iter().find(|t| t.name.starts_with("blk.")) {
            return Err(LayoutError::BadShape {
                tensor: t.name.clone(),
                message: "a global tensor cannot be named blk.*; put it in a [[tensors.layer]] group"
                    .to_owned(),
            });
        }
        let groups = raw
            .tensors
            .layer
            .into_iter()
            .map(|g| {
                Ok(LayerGroup {
                    when: g.when.as_deref().map(Expr::parse).transpose()?,
                    tensors: g.tensors.into_iter().map(tensor_of).collect::<Result<_, LayoutError>>()?,
                    kind: g.kind,
                })
            })
            .collect::<Result<Vec<_>, LayoutError>>()?;

        let quants = raw
            .quants
            .into_iter()
            .map(|(name, q)| {
                let rules = q
                    .types
                    .into_iter()
                    .map(|r| {
                        Ok(TypeRule {
                            ggml_type: type_of(&r.ggml_type, &format!("quant {name} rule for {}", r.tensor))?,
                            layers: r.layers.as_deref().map(LayerSet::parse).transpose()?,
                            tensor: r.tensor,
                        })
                    })
                    .collect::<Result<_, LayoutError>>()?;
                let split = q.split.map(|s| SplitSpec {
                    max_bytes: s.max_bytes,
                    metadata_only_first: s.metadata_only_first,
                });
                Ok((name, QuantSpec { file: q.file, file_type: q.file_type, split, rules }))
            })
            .collect::<Result<_, LayoutError>>()?;

        Ok(LayoutSpec {
            model: ModelInfo { key: raw.model.key, arch: raw.model.arch, n_layer },
            hparams: raw.hparams,
            derived,
            metadata,
            tokenizer,
            globals,
            groups,
            quants,
        })
    }

    /// The model's key, e.g. `qwen3-coder-next` (make_fixture.py's model key).
    pub fn key(&self) -> &str {
        &self.model.key
    }

    /// The llama.cpp architecture, e.g. `qwen3next`.
    pub fn arch(&self) -> &str {
        &self.model.arch
    }

    /// The real model's layer count (`n_layer` in `[hparams]`).
    pub fn n_layer(&self) -> u64 {
        self.model.n_layer
    }

    /// The quant names, sorted.
    pub fn quants(&self) -> impl Iterator<Item = &str> {
        self.quants.keys().map(String::as_str)
    }

    /// The file a quant is written to, relative to the models folder (before split naming).
    pub fn file(&self, quant: &str) -> Option<&str> {
        self.quants.get(quant).map(|q| q.file.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_sets_parse_as_layouts_md_writes_them() {
        let s = LayerSet::parse("0-5,8,11, 41-47").unwrap();
        assert!(s.contains(0) && s.contains(5) && s.contains(8) && s.contains(47));
        assert!(!s.contains(6) && !s.contains(12) && !s.contains(48));
        assert!(matches!(LayerSet::parse("5-3"), Err(LayoutError::BadLayerList { .. })));
        assert!(matches!(LayerSet::parse("L3"), Err(LayoutError::BadLayerList { .. })));
        assert!(matches!(LayerSet::parse(""), Err(LayoutError::BadLayerList { .. })));
    }
}
