//! Tensor → buffer: llama.cpp's tensor buffer-type overrides (`-ot`, `--cpu-moe`, `--n-cpu-moe`,
//! `--n-cpu-ffn`) and the per-class device lists, for every tensor of the model
//! (llama-model-loader.cpp:1115-1290).
//!
//! Overrides are tried in command-line order and the first whose pattern is found anywhere in the
//! tensor name wins (`std::regex_search`, llama-model-loader.cpp:1233-1260). llama.cpp compiles the
//! patterns as ECMAScript; they are compiled here with Rust's `regex`, which agrees on everything
//! but a few constructs ([`RegexConstruct`]): a pattern using one is refused with an error naming it.
//!
//! Each pattern is compiled once. [`PatternMatches`] remembers, per pattern, which tensors of one
//! model it matches, so that predicting many configurations that share patterns (the planner's
//! `--n-cpu-moe`-style candidates) neither recompiles nor rescans.

use std::collections::BTreeMap;

use regex::Regex;

use super::error::{MemoryError, RegexConstruct};
use super::{GpuAtLoad, Location, ResolvedPlacement, TensorCopy, TensorPlacement};
use crate::model::{LayerSlot, ModelDescription, TensorRole};
use crate::settings::{OverrideTarget, TensorOverride};

/// Where `o` sends tensors: `CPU` or a GPU's name, as llama.cpp checks when it parses `-ot`
/// (common/arg.cpp:252-287): any GPU of the machine, not only the model's devices.
fn target(o: &TensorOverride, gpus: &[GpuAtLoad]) -> Result<Location, MemoryError> {
    match &o.target {
        OverrideTarget::Cpu => Ok(Location::Host),
        OverrideTarget::Device(name) => {
            if let Some(i) = gpus.iter().position(|g| g.name == *name) {
                return Ok(Location::Gpu(i));
            }
            let mut available = vec!["CPU".to_owned()];
            available.extend(gpus.iter().map(|g| g.name.clone()));
            Err(MemoryError::UnknownBufferType {
                pattern: o.pattern.clone(),
                target: name.clone(),
                available,
            })
        }
    }
}

/// The targets of `overrides`, every one checked before any pattern is compiled.
fn targets(overrides: &[TensorOverride], gpus: &[GpuAtLoad]) -> Result<Vec<Location>, MemoryError> {
    overrides.iter().map(|o| target(o, gpus)).collect()
}

/// Compiles one pattern, refusing the constructs the two regex engines disagree on.
fn compile(pattern: &str) -> Result<Regex, MemoryError> {
    if let Some(construct) = unsupported_construct(pattern) {
        return Err(MemoryError::UnsupportedRegex { pattern: pattern.to_owned(), construct });
    }
    Regex::new(pattern)
        .map_err(|e| MemoryError::InvalidRegex { pattern: pattern.to_owned(), message: one_line(&e) })
}

/// The tensor overrides of a configuration, compiled and checked against the GPUs.
#[derive(Clone, Debug)]
pub struct OverrideMatcher {
    regexes: Vec<Regex>,
    targets: Vec<Location>,
}

impl OverrideMatcher {
    /// Compiles `overrides` (in order) for a machine with `gpus`.
    pub fn compile(overrides: &[TensorOverride], gpus: &[GpuAtLoad]) -> Result<OverrideMatcher, MemoryError> {
        let targets = targets(overrides, gpus)?;
        let regexes = overrides.iter().map(|o| compile(&o.pattern)).collect::<Result<_, _>>()?;
        Ok(OverrideMatcher { regexes, targets })
    }

    /// The first override whose pattern is found in `name`: its index and where it sends the tensor.
    pub fn first_match(&self, name: &str) -> Option<(usize, Location)> {
        let index = self.regexes.iter().position(|r| r.is_match(name))?;
        self.targets.get(index).map(|&loc| (index, loc))
    }

    /// How many overrides there are.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// True without overrides.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

/// Which tensors of one model each pattern matches, remembered per pattern: a bit per tensor of
/// [`ModelDescription::tensors`].
#[derive(Clone, Debug, Default)]
pub(crate) struct PatternMatches {
    by_pattern: BTreeMap<String, Vec<u64>>,
}

/// The overrides of one configuration, resolved against a model's tensors.
pub(crate) struct ResolvedOverrides<'a> {
    matches: Vec<&'a [u64]>,
    targets: Vec<Location>,
}

impl ResolvedOverrides<'_> {
    /// The first override matching tensor `index`, and where it sends it.
    pub(crate) fn first_match(&self, index: usize) -> Option<(usize, Location)> {
        let (word, bit) = (index / 64, index % 64);
        let i = self.matches.iter().position(|m| m.get(word).is_some_and(|w| w >> bit & 1 == 1))?;
        self.targets.get(i).map(|&loc| (i, loc))
    }
}

impl PatternMatches {
    /// Resolves `overrides` for `model`, compiling and scanning only patterns not seen before.
    /// The same `PatternMatches` must always be used with the same model.
    pub(crate) fn resolve(
        &mut self,
        model: &ModelDescription,
        overrides: &[TensorOverride],
        gpus: &[GpuAtLoad],
    ) -> Result<ResolvedOverrides<'_>, MemoryError> {
        let targets = targets(overrides, gpus)?;
        for o in overrides {
            if self.by_pattern.contains_key(&o.pattern) {
                continue;
            }
            let regex = compile(&o.pattern)?;
            let mut bits = vec![0_u64; model.tensors.len().div_ceil(64)];
            for (i, t) in model.tensors.iter().enumerate() {
                if regex.is_match(&t.name) {
                    bits[i / 64] |= 1 << (i % 64);
                }
            }
            self.by_pattern.insert(o.pattern.clone(), bits);
        }
        let matches =
            overrides.iter().filter_map(|o| self.by_pattern.get(&o.pattern).map(Vec::as_slice)).collect();
        Ok(ResolvedOverrides { matches, targets })
    }
}

/// The regex error on one line: its message lists the pattern with a caret on separate lines.
fn one_line(e: &regex::Error) -> String {
    e.to_string().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

/// The first construct in `pattern` that ECMAScript and Rust's `regex` do not share, outside
/// character classes.
pub(crate) fn unsupported_construct(pattern: &str) -> Option<RegexConstruct> {
    let b = pattern.as_bytes();
    let mut in_class = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                let next = b.get(i + 1).copied();
                if !in_class && matches!(next, Some(b'1'..=b'9' | b'k')) {
                    return Some(RegexConstruct::Backreference);
                }
                i += 2;
                continue;
            }
            b'[' if !in_class => {
                in_class = true;
                // A `]` right after `[` or `[^` is a literal in Rust's regex.
                if b.get(i + 1) == Some(&b'^') {
                    i += 1;
                }
                if b.get(i + 1) == Some(&b']') {
                    i += 1;
                }
            }
            b']' if in_class => in_class = false,
            b'(' if !in_class && b.get(i + 1) == Some(&b'?') => match (b.get(i + 2), b.get(i + 3)) {
                (Some(b':'), _) => i += 2,
                (Some(b'=' | b'!'), _) => return Some(RegexConstruct::Lookahead),
                (Some(b'<'), Some(b'=' | b'!')) => return Some(RegexConstruct::Lookbehind),
                _ => return Some(RegexConstruct::NonEcmaScriptGroup),
            },
            _ => {}
        }
        i += 1;
    }
    None
}

/// Places every tensor of `model`: overrides first, else the device list of its layer class
/// (llama-model-loader.cpp:1196-1260; llama-model.cpp:1964-1974); NextN/MTP tensors are skipped
/// unless `mtp`; tied embeddings get their output copy and per-layer tensors one copy per buffer.
pub(crate) fn place_tensors(
    model: &ModelDescription,
    mut placement: ResolvedPlacement,
    overrides: &ResolvedOverrides<'_>,
    mtp: bool,
) -> ResolvedPlacement {
    let mut tensors = Vec::with_capacity(model.tensors.len() + 2);
    let mut skipped = Vec::new();
    for (index, t) in model.tensors.iter().enumerate() {
        if !t.is_loaded(mtp) {
            skipped.push(index);
            continue;
        }
        let found = overrides.first_match(index);
        let override_index = found.map(|(i, _)| i);
        let by_layer = |il: usize| placement.layers.get(il).copied().unwrap_or(placement.output);
        let primary = match (found, t.slot) {
            (Some((_, loc)), _) => loc,
            // llama-model.cpp:1605-1607: the input layer stays on the CPU.
            (None, LayerSlot::Input) => Location::Host,
            (None, LayerSlot::Output) => placement.output,
            (None, LayerSlot::Layer(il)) => by_layer(il),
            (None, LayerSlot::EveryLayer) => by_layer(0),
        };
        tensors.push(TensorPlacement {
            tensor: index,
            location: primary,
            copy: TensorCopy::Primary,
            override_index,
        });

        // Created by every layer, the first time plainly and then TENSOR_DUPLICATED: one copy per
        // buffer type (models/llama.cpp:62-66; llama-model-loader.cpp:1370-1375). An override applies
        // to every layer's copy alike: they share the name.
        if t.slot == LayerSlot::EveryLayer && found.is_none() {
            let mut seen = vec![primary];
            for il in 1..model.n_layer() {
                let loc = by_layer(il);
                if !seen.contains(&loc) {
                    seen.push(loc);
                    tensors.push(TensorPlacement {
                        tensor: index,
                        location: loc,
                        copy: TensorCopy::LayerDuplicate,
                        override_index,
                    });
                }
            }
        }

        // Tied embeddings: token_embd is created again as the output (TENSOR_DUPLICATED, class
        // OUTPUT), with the output layer's buffer unless an override matches its name; a second
        // copy when that buffer differs (llama-model-loader.cpp:1174-1181, 1368-1377).
        if model.tied_embeddings && t.role == TensorRole::TokenEmbd {
            let out = found.map_or(placement.output, |(_, loc)| loc);
            if out != primary {
                tensors.push(TensorPlacement {
                    tensor: index,
                    location: out,
                    copy: TensorCopy::TiedOutput,
                    override_index,
                });
            }
        }
    }
    placement.tensors = tensors;
    placement.skipped = skipped;
    placement
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::ServerSettings;
    use crate::units::Bytes;

    fn gpus() -> Vec<GpuAtLoad> {
        vec![
            GpuAtLoad::new("CUDA0", Bytes::from_mib(20_000)),
            GpuAtLoad::new("CUDA1", Bytes::from_mib(10_000)),
        ]
    }

    fn matcher(args: &[&str]) -> Result<OverrideMatcher, MemoryError> {
        OverrideMatcher::compile(&ServerSettings::from_args(args).unwrap().overrides, &gpus())
    }

    #[test]
    fn first_matching_override_wins_and_search_is_unanchored() {
        let m =
            matcher(&["-ot", r"blk\.([0-9]|1[0-4])\.=CUDA0,blk\.(1[5-9]|2[0-1])\.=CUDA1,exps=CPU"]).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m.first_match("blk.3.ffn_up_exps.weight"), Some((0, Location::Gpu(0))));
        assert_eq!(m.first_match("blk.17.attn_q.weight"), Some((1, Location::Gpu(1))));
        assert_eq!(m.first_match("blk.30.ffn_down_exps.weight"), Some((2, Location::Host)));
        assert_eq!(m.first_match("blk.30.attn_q.weight"), None);
        assert_eq!(m.first_match("output.weight"), None);
    }

    #[test]
    fn n_cpu_moe_matches_whole_layer_numbers() {
        let m = matcher(&["--n-cpu-moe", "2"]).unwrap();
        assert_eq!(m.first_match("blk.1.ffn_gate_exps.weight"), Some((1, Location::Host)));
        assert_eq!(m.first_match("blk.1.ffn_gate_up_exps.weight"), Some((1, Location::Host)));
        assert_eq!(m.first_match("blk.0.ffn_down_chexps.weight"), Some((0, Location::Host)));
        // `blk\.1\.` needs the dot: layer 10 is not layer 1.
        assert_eq!(m.first_match("blk.10.ffn_up_exps.weight"), None);
        assert_eq!(m.first_match("blk.1.ffn_up_shexp.weight"), None);
        assert!(matcher(&[]).unwrap().is_empty());
    }

    #[test]
    fn targets_are_checked_against_every_gpu() {
        let e = matcher(&["-ot", "exps=CUDA2"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown buffer type 'CUDA2' in tensor override 'exps=CUDA2', expected one of CPU, CUDA0, CUDA1"
        );
        // llama.cpp's host buffer types are not targets.
        assert!(matches!(matcher(&["-ot", "exps=CUDA_Host"]), Err(MemoryError::UnknownBufferType { .. })));
    }

    #[test]
    fn constructs_rust_regex_lacks_are_named() {
        // `-ot` splits at the first `=`, so `(?=` and `(?<=` only reach here from a hand-built override.
        assert_eq!(unsupported_construct(r"(?=blk)blk"), Some(RegexConstruct::Lookahead));
        assert_eq!(unsupported_construct(r"(?<=blk\.)1\."), Some(RegexConstruct::Lookbehind));
        let cases = [
            (r"blk\.(?!1\.)\d+\.ffn=CPU", RegexConstruct::Lookahead),
            (r"(?<!x)blk=CPU", RegexConstruct::Lookbehind),
            (r"(a)\1=CPU", RegexConstruct::Backreference),
            (r"(?<n>a)\k<n>=CPU", RegexConstruct::NonEcmaScriptGroup),
            (r"(?i)EXPS=CPU", RegexConstruct::NonEcmaScriptGroup),
        ];
        for (ot, construct) in cases {
            match matcher(&["-ot", ot]) {
                Err(MemoryError::UnsupportedRegex { construct: c, .. }) => assert_eq!(c, construct, "{ot}"),
                other => panic!("{ot}: {other:?}"),
            }
        }
        let e = matcher(&["-ot", r"(?!x)exps=CPU"]).unwrap_err();
        assert!(e.to_string().starts_with("tensor override pattern '(?!x)exps' uses a lookahead"), "{e}");
        // Escaped or in a class, the same characters are literals.
        for ok in [r"\(\?!\)=CPU", r"[(?!]=CPU", r"(?:blk)\.=CPU", r"[]?(]=CPU", r"[^]?(]=CPU", r"\\1=CPU"] {
            assert!(matcher(&["-ot", ok]).is_ok(), "{ok}");
        }
    }

    #[test]
    fn pattern_matches_are_remembered_per_pattern() {
        let model = ModelDescription::from_gguf(&crate::model::testing::qwen3_8b(12).build()).unwrap();
        let mut cache = PatternMatches::default();
        let first = ServerSettings::from_args(&["--n-cpu-moe", "2", "-ot", r"blk\.1[01]\.=CUDA1"]).unwrap();
        let second = ServerSettings::from_args(&["-ot", r"blk\.1[01]\.=CUDA0,ffn_up=CPU"]).unwrap();
        let index = |name: &str| model.tensors.iter().position(|t| t.name == name).unwrap();
        let r = cache.resolve(&model, &first.overrides, &gpus()).unwrap();
        assert_eq!(r.first_match(index("blk.10.ffn_up.weight")), Some((2, Location::Gpu(1))));
        assert_eq!(r.first_match(index("blk.1.ffn_up.weight")), None);
        assert_eq!(cache.by_pattern.len(), 3);
        // The shared pattern is reused, with this configuration's order and target.
        let r = cache.resolve(&model, &second.overrides, &gpus()).unwrap();
        assert_eq!(r.first_match(index("blk.10.ffn_up.weight")), Some((0, Location::Gpu(0))));
        assert_eq!(r.first_match(index("blk.1.ffn_up.weight")), Some((1, Location::Host)));
        assert_eq!(r.first_match(model.tensors.len() + 100), None);
        assert_eq!(cache.by_pattern.len(), 4);
        // Errors are the same as compiling.
        let bad = ServerSettings::from_args(&["-ot", "(?!x)y=CPU"]).unwrap();
        assert!(matches!(
            cache.resolve(&model, &bad.overrides, &gpus()),
            Err(MemoryError::UnsupportedRegex { .. })
        ));
    }

    #[test]
    fn invalid_patterns_are_reported_with_the_pattern() {
        let e = matcher(&["-ot", r"exps=CPU,blk\.(1=CUDA0"]).unwrap_err();
        match e {
            MemoryError::InvalidRegex { pattern, message } => {
                assert_eq!(pattern, r"blk\.(1");
                assert!(!message.contains('\n'));
            }
            other => panic!("{other:?}"),
        }
    }
}
