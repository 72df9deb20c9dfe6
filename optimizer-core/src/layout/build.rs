//! Building a [`Layout`] from a [`LayoutSpec`]: evaluate shapes, pick each tensor's type from the
//! quant's rules, order the tensors as llama-quantize writes them, and fill in the metadata.

use std::collections::BTreeMap;

use super::spec::{FloatSpec, Generated, LayerSet, MetaValueSpec, Number, QuantSpec, TensorSpec, TypeRule};
use super::tokenizer::{TokenizerMode, Vocab};
use super::{Layout, LayoutError, LayoutSpec, LayoutTensor};
use crate::gguf::{GgmlType, Metadata, MetadataValue};
use crate::units::Bytes;

/// How to build a layout.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildOptions {
    /// Build a model with this many layers instead of the real count (only fewer: each layer keeps
    /// the type the full model's table gives it, i.e. the first `n` layers of the real file; unlike
    /// `make_fixture.py --layers`, which re-runs the quantizer's layer-count rules).
    pub n_layer: Option<u64>,
    /// How long the tokenizer arrays are.
    pub tokenizer: TokenizerMode,
    /// The file will have its data region (sparse: a hole with a few real rows), not only the
    /// header. Only changes the note in `general.fixture.layout`.
    pub sparse: bool,
}

/// Derived values may refer to other derived values; a chain longer than this is a cycle.
const MAX_DERIVED_DEPTH: u32 = 32;

struct Env<'a> {
    spec: &'a LayoutSpec,
    n_layer: u64,
    file_type: u32,
    layer: Option<u64>,
}

impl Env<'_> {
    fn value(&self, name: &str, depth: u32) -> Result<Option<i64>, LayoutError> {
        match name {
            "n_layer" => return Ok(i64::try_from(self.n_layer).ok()),
            "file_type" => return Ok(Some(i64::from(self.file_type))),
            "i" => {
                if let Some(i) = self.layer {
                    return Ok(i64::try_from(i).ok());
                }
            }
            _ => {}
        }
        if let Some(n) = self.spec.hparams.get(name) {
            return match *n {
                Number::Int(v) => Ok(Some(v)),
                Number::Float(_) => Err(LayoutError::BadHparam {
                    name: name.to_owned(),
                    message: "a float cannot be used in an integer expression".to_owned(),
                }),
            };
        }
        if let Some(e) = self.spec.derived.get(name) {
            if depth >= MAX_DERIVED_DEPTH {
                return Err(LayoutError::BadHparam {
                    name: name.to_owned(),
                    message: "derived values refer to each other in a cycle".to_owned(),
                });
            }
            return e.eval(&mut |n: &str| self.value(n, depth + 1)).map(Some);
        }
        Ok(None)
    }

    fn eval(&self, e: &super::Expr) -> Result<i64, LayoutError> {
        e.eval(&mut |n: &str| self.value(n, 0))
    }
}

fn rule_text(r: &TypeRule) -> String {
    match &r.layers {
        Some(l) => format!("{}[{}] = {}", r.tensor, l.text, r.ggml_type),
        None => format!("{} = {}", r.tensor, r.ggml_type),
    }
}

fn rule_covers(r: &TypeRule, t: &LayoutTensor, suffix: &str) -> bool {
    match (t.layer, &r.layers) {
        (None, None) => r.tensor == t.name,
        (None, Some(_)) => false,
        (Some(_), None) => r.tensor == suffix,
        (Some(i), Some(l)) => r.tensor == suffix && LayerSet::contains(l, i),
    }
}

impl LayoutSpec {
    /// Builds the layout of `quant`.
    pub fn build(&self, quant: &str, options: &BuildOptions) -> Result<Layout, LayoutError> {
        let q = self.quants.get(quant).ok_or_else(|| LayoutError::UnknownQuant {
            model: self.model.key.clone(),
            quant: quant.to_owned(),
            available: self.quants.keys().cloned().collect::<Vec<_>>().join(", "),
        })?;
        let n_layer = options.n_layer.unwrap_or(self.model.n_layer);
        if n_layer > self.model.n_layer {
            return Err(LayoutError::TooManyLayers {
                model: self.model.key.clone(),
                requested: n_layer,
                max: self.model.n_layer,
            });
        }
        let mut env = Env { spec: self, n_layer, file_type: q.file_type, layer: None };

        // source tensors, with their converter types
        let mut tensors: Vec<(LayoutTensor, GgmlType)> = Vec::new();
        for t in &self.globals {
            tensors.push(Self::instantiate(&env, t, t.name.clone())?);
        }
        for i in 0..n_layer {
            env.layer = Some(i);
            for g in &self.groups {
                if let Some(when) = &g.when {
                    if env.eval(when)? == 0 {
                        continue;
                    }
                }
                for t in &g.tensors {
                    tensors.push(Self::instantiate(&env, t, format!("blk.{i}.{}", t.name))?);
                }
            }
        }
        env.layer = None;
        tensors.sort_by(|a, b| (a.0.layer, &a.0.name).cmp(&(b.0.layer, &b.0.name)));
        if let Some(w) = tensors.windows(2).find(|w| w[0].0.name == w[1].0.name) {
            return Err(LayoutError::DuplicateTensor { tensor: w[0].0.name.clone() });
        }

        let tensors = assign_types(quant, q, tensors, n_layer == self.model.n_layer)?;
        let metadata = self.metadata(quant, &env, options)?;
        Ok(Layout {
            model: self.model.key.clone(),
            quant: quant.to_owned(),
            n_layer,
            metadata,
            tensors,
            file: q.file.clone(),
            split: q.split,
        })
    }

    fn instantiate(
        env: &Env<'_>,
        t: &TensorSpec,
        name: String,
    ) -> Result<(LayoutTensor, GgmlType), LayoutError> {
        let mut dims = Vec::with_capacity(t.shape.len());
        for e in &t.shape {
            let v = env.eval(e)?;
            let d = u64::try_from(v).ok().filter(|&d| d > 0).ok_or_else(|| LayoutError::BadShape {
                tensor: name.clone(),
                message: format!("dimension {e} is {v}; expected a positive number"),
            })?;
            dims.push(d);
        }
        let tensor = LayoutTensor { name, dims, ggml_type: t.ggml_type, layer: env.layer, size: Bytes::ZERO };
        Ok((tensor, t.ggml_type))
    }

    fn metadata(&self, quant: &str, env: &Env<'_>, options: &BuildOptions) -> Result<Metadata, LayoutError> {
        let vocab = match &self.tokenizer {
            Some(t) if self.metadata.iter().any(|e| matches!(e.value, MetaValueSpec::Generated(_))) => {
                let count = |e: &super::Expr, what: &str| {
                    let v = env.eval(e)?;
                    usize::try_from(v).map_err(|_| LayoutError::BadMetadata {
                        key: format!("tokenizer.{what}"),
                        message: format!("expected a count, found {v}"),
                    })
                };
                let n_tokens = count(&t.tokens, "tokens")?;
                let n_merges = count(&t.merges, "merges")?;
                if options.tokenizer == TokenizerMode::Full {
                    if let Some((&id, _)) = t.special.iter().find(|(id, _)| **id >= n_tokens as u64) {
                        return Err(LayoutError::BadMetadata {
                            key: "tokenizer.special".to_owned(),
                            message: format!("token id {id} is not below the token count {n_tokens}"),
                        });
                    }
                }
                Some((Vocab::build(options.tokenizer, n_tokens, n_merges, &t.special), n_tokens))
            }
            _ => None,
        };

        let mut vars: BTreeMap<&str, String> = BTreeMap::new();
        vars.insert("model", self.model.key.clone());
        vars.insert("quant", quant.to_owned());
        vars.insert("n_layer", env.n_layer.to_string());
        let suffix = if env.n_layer == self.model.n_layer {
            String::new()
        } else {
            format!(" ({}-layer fixture)", env.n_layer)
        };
        vars.insert("name_suffix", suffix);
        let tokenizer_note = match &vocab {
            Some((v, n)) if v.tokens.len() != *n => {
                format!("tokenizer shortened to {} of {n} tokens", v.tokens.len())
            }
            _ => "full-length tokenizer".to_owned(),
        };
        let data_note = if options.sparse { "data sparse-zero" } else { "data absent" };
        vars.insert("fixture", format!("splitplan xtask fixtures; {tokenizer_note}; {data_note}"));

        let mut metadata = Metadata::default();
        for entry in &self.metadata {
            let key = &entry.key;
            let bad = |message: String| LayoutError::BadMetadata { key: key.clone(), message };
            let int = |e: &super::Expr| env.eval(e);
            let value = match &entry.value {
                MetaValueSpec::String(s) => MetadataValue::String(s.clone()),
                MetaValueSpec::Template(template) => {
                    MetadataValue::String(fill(template, &vars).map_err(bad)?)
                }
                MetaValueSpec::U16(e) => {
                    let v = int(e)?;
                    MetadataValue::U16(u16::try_from(v).map_err(|_| bad(format!("{v} does not fit in u16")))?)
                }
                MetaValueSpec::U32(e) => {
                    let v = int(e)?;
                    MetadataValue::U32(u32::try_from(v).map_err(|_| bad(format!("{v} does not fit in u32")))?)
                }
                MetaValueSpec::I32(e) => {
                    let v = int(e)?;
                    MetadataValue::I32(i32::try_from(v).map_err(|_| bad(format!("{v} does not fit in i32")))?)
                }
                MetaValueSpec::U64(e) => {
                    let v = int(e)?;
                    MetadataValue::U64(u64::try_from(v).map_err(|_| bad(format!("{v} does not fit in u64")))?)
                }
                #[allow(clippy::cast_possible_truncation)] // GGUF stores these as f32, as gguf-py does
                MetaValueSpec::F32(f) => MetadataValue::F32(match f {
                    FloatSpec::Literal(v) => *v as f32,
                    FloatSpec::Name(n) => match self.hparams.get(n) {
                        Some(Number::Float(v)) => *v as f32,
                        Some(Number::Int(v)) => *v as f32,
                        None => return Err(bad(format!("{n:?} is not a hyperparameter"))),
                    },
                }),
                MetaValueSpec::Bool(b) => MetadataValue::Bool(*b),
                MetaValueSpec::Generated(g) => {
                    // parse() guarantees a [tokenizer] table whenever something is generated
                    let Some((v, _)) = &vocab else {
                        return Err(bad("no [tokenizer] table to generate from".to_owned()));
                    };
                    match g {
                        Generated::Tokens => v.tokens_value(),
                        Generated::TokenTypes => v.types_value(),
                        Generated::Merges => v.merges_value(),
                    }
                }
            };
            metadata.insert(key.clone(), value);
        }
        Ok(metadata)
    }
}

/// Picks each tensor's type: the one rule of the quant that covers it; F32 tensors that no rule
/// covers stay F32 (norms, routers, biases: llama-quant.cpp never quantizes them), anything else
/// must be covered. With `check_unused`, a rule that covers nothing is an error too.
fn assign_types(
    quant: &str,
    q: &QuantSpec,
    tensors: Vec<(LayoutTensor, GgmlType)>,
    check_unused: bool,
) -> Result<Vec<LayoutTensor>, LayoutError> {
    let mut used = vec![false; q.rules.len()];
    let mut out = Vec::with_capacity(tensors.len());
    for (mut t, source) in tensors {
        let suffix = match t.layer {
            Some(i) => t.name.strip_prefix(&format!("blk.{i}.")).unwrap_or(&t.name).to_owned(),
            None => t.name.clone(),
        };
        let mut chosen: Option<usize> = None;
        for (k, r) in q.rules.iter().enumerate() {
            if !rule_covers(r, &t, &suffix) {
                continue;
            }
            if let Some(first) = chosen {
                return Err(LayoutError::OverlappingRules {
                    quant: quant.to_owned(),
                    tensor: t.name,
                    first: rule_text(&q.rules[first]),
                    second: rule_text(r),
                });
            }
            chosen = Some(k);
        }
        t.ggml_type = match chosen {
            Some(k) => {
                used[k] = true;
                q.rules[k].ggml_type
            }
            None if source == GgmlType::F32 => GgmlType::F32,
            None => {
                return Err(LayoutError::UnassignedTensor {
                    quant: quant.to_owned(),
                    tensor: t.name,
                    source_type: source,
                });
            }
        };
        let size = t.ggml_type.tensor_bytes(&t.dims).ok_or_else(|| LayoutError::BadShape {
            tensor: t.name.clone(),
            message: format!(
                "ne0 {} is not a multiple of {}'s block size {} (or the size overflows)",
                t.ne0(),
                t.ggml_type,
                t.ggml_type.block_size()
            ),
        })?;
        t.size = Bytes::new(size);
        out.push(t);
    }
    if check_unused {
        if let Some(k) = used.iter().position(|u| !u) {
            return Err(LayoutError::UnusedRule { quant: quant.to_owned(), rule: rule_text(&q.rules[k]) });
        }
    }
    Ok(out)
}

impl LayoutTensor {
    /// `ne0`, the row length.
    pub fn ne0(&self) -> u64 {
        self.dims.first().copied().unwrap_or(0)
    }
}

/// Fills `{name}` placeholders; `{{` and `}}` stand for braces.
fn fill(template: &str, vars: &BTreeMap<&str, String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(pos) = rest.find(['{', '}']) {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        let Some(end) = tail.find('}').filter(|_| tail.starts_with('{')) else {
            return Err(format!("unmatched brace in {template:?}; write }}}} for a literal brace"));
        };
        let name = &tail[1..end];
        let value = vars.get(name).ok_or_else(|| {
            format!(
                "unknown placeholder {{{name}}} in {template:?}; expected one of {}",
                vars.keys().map(|k| format!("{{{k}}}")).collect::<Vec<_>>().join(", ")
            )
        })?;
        out.push_str(value);
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<&'static str, String> {
        [("quant", "Q8_0".to_owned()), ("n_layer", "2".to_owned())].into_iter().collect()
    }

    #[test]
    fn templates_fill_placeholders() {
        assert_eq!(fill("{quant} n_layer={n_layer}", &vars()).unwrap(), "Q8_0 n_layer=2");
        assert_eq!(fill("{{literal}} {quant}", &vars()).unwrap(), "{literal} Q8_0");
        assert!(fill("{nope}", &vars()).unwrap_err().contains("unknown placeholder {nope}"));
        assert!(fill("a } b", &vars()).unwrap_err().contains("unmatched brace"));
        assert!(fill("a { b", &vars()).unwrap_err().contains("unmatched brace"));
    }
}
