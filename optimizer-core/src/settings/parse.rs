//! The parser: environment first, then the command line, as `common_params_parse_ex` does
//! (common/arg.cpp:768-880), each value applied by the same rule as its llama.cpp handler.

use std::collections::BTreeSet;

use super::flags::{self, FlagDef, Handler};
use super::{
    CtxSize, DeviceSelection, FlashAttn, GpuLayers, KV_CACHE_TYPES, LoadMode, MAX_DEVICES, Note, Origin,
    Parallel, PromptCache, ServerSettings, SettingsError, SpecType, SplitMode, TensorOverride, kv_type_name,
};
use super::{FIT_CTX_NEVER_SHRINK, OverrideTarget};
use crate::gguf::GgmlType;
use crate::units::Bytes;

/// The outcome of [`parse`]: the settings and the remarks worth showing the user.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    /// The settings.
    pub settings: ServerSettings,
    /// What llama-server would warn about and what splitplan does not model, in the order met.
    pub notes: Vec<Note>,
}

/// Parses llama-server arguments (without the program name) and `LLAMA_ARG_*` environment
/// variables, given as (name, value) pairs, as llama-server build 11434 does: variables first, in
/// llama.cpp's option order, then the arguments, so that an argument overrides its variable (and
/// adds to it for the flags that add up, such as `-ot`). Variables that are no llama-server
/// option are ignored. Then [`ServerSettings::check`] refuses what llama.cpp cannot run.
pub fn parse<A, K, V>(args: &[A], env: &[(K, V)]) -> Result<Parsed, SettingsError>
where
    A: AsRef<str>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    // The last entry wins, as in a process environment built by successive assignments.
    let getenv = |name: &str| env.iter().rev().find(|(k, _)| k.as_ref() == name).map(|(_, v)| v.as_ref());
    let mut p = Parser { s: ServerSettings::default(), notes: Vec::new() };

    // arg.cpp:785-811
    for def in flags::all() {
        let Some(var) = def.env else { continue };
        let value = match def.neg_env() {
            Some(neg) if getenv(&neg).is_some() => "0",
            _ => match getenv(var) {
                Some(v) => v,
                None => continue,
            },
        };
        let origin = Origin::Env { var: var.to_string() };
        let val = match def.handler {
            Handler::Void if flags::is_truthy(value) => Val::Flag,
            Handler::Void | Handler::TwoStrings => continue,
            Handler::Int => Val::Int(int_value(value, &origin)?),
            Handler::Bool if flags::is_truthy(value) => Val::Bool(true),
            Handler::Bool if flags::is_falsey(value) => Val::Bool(false),
            Handler::Bool => {
                return Err(invalid(
                    &origin,
                    value,
                    "a boolean: on, off, enabled, disabled, true, false, 1 or 0",
                ));
            }
            Handler::Str => Val::Str(value),
        };
        p.apply(def, val, &origin)?;
    }

    // arg.cpp:813-880
    let mut seen = BTreeSet::new();
    let mut i = 0;
    while i < args.len() {
        let word = flags::normalize(args[i].as_ref());
        let index = i;
        let Some((def, positive)) = flags::lookup(&word) else {
            return Err(SettingsError::UnknownArgument { arg: word, index });
        };
        if !seen.insert(word.clone()) && word != "--spec-type" {
            p.notes.push(Note::Repeated { flag: word.clone() });
        }
        let env_set = def.env.is_some_and(|v| getenv(v).is_some())
            || def.neg_env().is_some_and(|v| getenv(&v).is_some());
        if let (true, Some(var)) = (env_set, def.env) {
            p.notes.push(Note::EnvOverridden { var: var.to_string(), flag: word.clone() });
        }
        let origin = Origin::Arg { flag: word.clone(), index };
        let value = |k: usize| {
            args.get(i + k)
                .map(AsRef::as_ref)
                .ok_or_else(|| SettingsError::MissingValue { flag: word.clone(), index })
        };
        let val = match def.handler {
            Handler::Void => Val::Flag,
            Handler::Bool => Val::Bool(positive),
            Handler::Int => Val::Int(int_value(value(1)?, &origin)?),
            Handler::Str => Val::Str(value(1)?),
            Handler::TwoStrings => {
                value(2)?;
                Val::Flag
            }
        };
        p.apply(def, val, &origin)?;
        i += 1 + def.arity();
    }

    p.s.check()?;
    Ok(Parsed { settings: p.s, notes: p.notes })
}

/// Parses llama-server arguments with no environment; see [`parse`].
pub fn parse_args<A: AsRef<str>>(args: &[A]) -> Result<ServerSettings, SettingsError> {
    parse(args, &[] as &[(&str, &str)]).map(|p| p.settings)
}

/// A value ready for a handler: what llama.cpp passes to `handler_void`, `handler_bool`,
/// `handler_int` (after `std::stoi`) or `handler_string`.
enum Val<'a> {
    Flag,
    Bool(bool),
    Int(i32),
    Str(&'a str),
}

fn int_value(value: &str, origin: &Origin) -> Result<i32, SettingsError> {
    flags::c_stoi(value).ok_or_else(|| invalid(origin, value, "an integer"))
}

fn invalid(origin: &Origin, value: &str, expected: &str) -> SettingsError {
    SettingsError::InvalidValue {
        origin: origin.clone(),
        value: value.to_string(),
        expected: expected.to_string(),
    }
}

struct Parser {
    s: ServerSettings,
    notes: Vec<Note>,
}

impl Parser {
    /// Applies one option the way its handler in common/arg.cpp does. Options that change no
    /// memory fall through and are ignored.
    fn apply(&mut self, def: &FlagDef, val: Val<'_>, origin: &Origin) -> Result<(), SettingsError> {
        if let Some(hint) = def.removed {
            return Err(SettingsError::Removed { origin: origin.clone(), hint });
        }
        let id = def.id();
        let flag = || match origin {
            Origin::Arg { flag, .. } => flag.clone(),
            Origin::Env { var } => var.clone(),
        };
        let index = match origin {
            Origin::Arg { index, .. } => *index,
            Origin::Env { .. } => 0,
        };
        let s = &mut self.s;
        match (id, val) {
            // arg.cpp:1641-1651
            ("-c", Val::Int(v)) => {
                let v =
                    non_negative(v, origin, "a context size of 0 (the model's training context) or more")?;
                if v == 0 {
                    s.ctx_size = CtxSize::Train;
                    s.fit_ctx = FIT_CTX_NEVER_SHRINK;
                } else {
                    s.ctx_size = CtxSize::Tokens(v);
                }
            }
            ("--kv-unified-per-slot", Val::Int(v)) => {
                s.kv_unified_per_slot = u32::try_from(v).ok().filter(|&v| v > 0);
            }
            ("-b", Val::Int(v)) => s.batch_size = non_negative(v, origin, "a batch size of 0 or more")?,
            ("-ub", Val::Int(v)) => {
                s.ubatch_size = non_negative(v, origin, "a micro-batch size of 0 or more")?;
            }
            ("--swa-full", Val::Flag) => s.swa_full = true,
            // A checkpoint count of 0 or less disables them (server-context.cpp:1498).
            ("-ctxcp", Val::Int(v)) => s.ctx_checkpoints = u32::try_from(v).unwrap_or(0),
            // server-context.cpp:1484-1492
            ("-cram", Val::Int(v)) => {
                s.prompt_cache = match u64::try_from(v) {
                    Ok(0) => PromptCache::Disabled,
                    Ok(mib) => PromptCache::Limit(Bytes::from_mib(mib)),
                    Err(_) => PromptCache::Unlimited,
                };
            }
            ("-kvu", Val::Bool(b)) => s.kv_unified = b,
            // arg.cpp:1757-1771
            ("-fa", Val::Str(v)) => {
                s.flash_attn = if flags::is_truthy(v) {
                    FlashAttn::On
                } else if flags::is_falsey(v) {
                    FlashAttn::Off
                } else if flags::is_autoy(v) {
                    FlashAttn::Auto
                } else {
                    return Err(invalid(origin, v, "on, off or auto"));
                };
            }
            ("-kvo", Val::Bool(b)) => s.kv_offload = b,
            ("--repack", Val::Bool(b)) => s.repack = b,
            ("--no-host", Val::Flag) => s.no_host = true,
            ("-ctk", Val::Str(v)) => s.cache_type_k = kv_cache_type(v, origin)?,
            ("-ctv", Val::Str(v)) => s.cache_type_v = kv_cache_type(v, origin)?,
            ("-dt", _) => self.notes.push(Note::Deprecated { flag: flag() }),
            // arg.cpp:2546-2556
            ("-np", Val::Int(v)) => {
                s.parallel = match u32::try_from(v) {
                    Ok(0) => {
                        return Err(invalid(origin, "0", "a number of slots of 1 or more, or -1 for auto"));
                    }
                    Ok(n) => Parallel::Slots(n),
                    Err(_) => Parallel::Auto,
                };
            }
            ("-mm", Val::Str(v)) => {
                s.mmproj.path = Some(v.to_string());
                self.notes.push(Note::NotModelled { flag: flag() });
            }
            ("-mmu", Val::Str(v)) => {
                s.mmproj.url = Some(v.to_string());
                self.notes.push(Note::NotModelled { flag: flag() });
            }
            ("--mmproj-auto", Val::Bool(b)) => s.mmproj.auto = b,
            ("--mmproj-offload", Val::Bool(b)) => s.mmproj.offload = b,
            // arg.cpp:2611-2630
            ("-mmdev", Val::Str(v)) => {
                if v == "none" {
                    s.mmproj.offload = false;
                    s.mmproj.device = None;
                } else {
                    match device_list(v, origin)? {
                        DeviceSelection::List(mut names) if names.len() == 1 => {
                            s.mmproj.offload = true;
                            s.mmproj.device = names.pop();
                        }
                        _ => return Err(invalid(origin, v, "one device for the multimodal projector")),
                    }
                }
            }
            ("--rpc" | "-mu" | "-dr" | "-hf" | "-hff" | "--spec-draft-hf", _) => {
                self.notes.push(Note::NotModelled { flag: flag() });
            }
            // arg.cpp:2693-2710
            ("-lm", Val::Str(v)) => {
                s.load_mode = match v {
                    "auto" => LoadMode::Auto,
                    "none" => LoadMode::None,
                    "mmap" => LoadMode::Mmap,
                    "mlock" => LoadMode::Mlock,
                    "mmap+mlock" => LoadMode::MmapMlock,
                    "dio" => LoadMode::DirectIo,
                    _ => return Err(invalid(origin, v, "auto, none, mmap, mlock, mmap+mlock or dio")),
                };
            }
            ("-dev", Val::Str(v)) => s.devices = device_list(v, origin)?,
            ("-ot", Val::Str(v)) => s.overrides.extend(override_list(v, origin)?),
            ("-cmoe", Val::Flag) => s.overrides.push(TensorOverride::cpu_moe()),
            // arg.cpp:2769-2790
            ("-ncmoe", Val::Int(v)) => {
                s.overrides.extend(TensorOverride::n_cpu_moe(non_negative(v, origin, "a number of layers")?));
            }
            ("-ncffn", Val::Int(v)) => {
                s.overrides.extend(TensorOverride::n_cpu_ffn(non_negative(v, origin, "a number of layers")?));
            }
            ("-ngl", Val::Str(v)) => s.n_gpu_layers = gpu_layers(v, origin)?,
            // arg.cpp:2809-2832
            ("-sm", Val::Str(v)) => {
                s.split_mode = match v {
                    "none" => SplitMode::None,
                    "layer" => SplitMode::Layer,
                    "row" => SplitMode::Row,
                    "tensor" => SplitMode::Tensor,
                    _ => return Err(invalid(origin, v, "none, layer, row or tensor")),
                };
            }
            ("-ts", Val::Str(v)) => s.tensor_split = tensor_split(v, origin)?,
            ("-mg", Val::Int(v)) => s.main_gpu = v,
            // arg.cpp:2870-2883
            ("-fit", Val::Str(v)) => {
                s.fit = if flags::is_truthy(v) {
                    true
                } else if flags::is_falsey(v) {
                    false
                } else {
                    return Err(invalid(origin, v, "on or off"));
                };
            }
            ("-fitt", Val::Str(v)) => fit_target(&mut s.fit_target, v, origin)?,
            // `fit_params_min_ctx` is a uint32_t: -1 means "never shrink" (arg.cpp:2926-2928).
            #[allow(clippy::cast_sign_loss)]
            ("-fitc", Val::Int(v)) => s.fit_ctx = v as u32,
            ("--override-kv", Val::Str(v)) => {
                for item in flags::parse_csv_row(v) {
                    if !kv_override_is_valid(&item) {
                        return Err(invalid(
                            origin,
                            &item,
                            "KEY=TYPE:VALUE with TYPE int, float, bool or str",
                        ));
                    }
                    s.kv_overrides.push(item);
                }
            }
            ("--op-offload", Val::Bool(b)) => s.op_offload = b,
            ("--lora", Val::Str(v)) => {
                s.lora.extend(flags::parse_csv_row(v));
                self.notes.push(Note::NotModelled { flag: flag() });
            }
            // arg.cpp:2967-2980
            ("--lora-scaled", Val::Str(v)) => {
                for item in flags::parse_csv_row(v) {
                    match item.split(':').collect::<Vec<_>>()[..] {
                        [path, scale] if flags::c_stof(scale).is_some() => s.lora.push(path.to_string()),
                        _ => return Err(invalid(origin, &item, "FNAME:SCALE")),
                    }
                }
                self.notes.push(Note::NotModelled { flag: flag() });
            }
            ("-m", Val::Str(v)) => s.model = Some(v.to_string()),
            ("--embedding" | "--rerank", Val::Flag) => s.embedding = true,
            // Speculative decoding (arg.cpp:4099-4280).
            ("--spec-type", Val::Str(v)) => s.speculative.types.extend(spec_types(v, origin)?),
            ("--spec-default", Val::Flag) => s.speculative.types.push(SpecType::NgramMod),
            ("--spec-draft-n-max", Val::Int(v)) => {
                s.speculative.draft_n_max = non_negative(v, origin, "a number of tokens")?;
            }
            ("--spec-draft-model", Val::Str(v)) => {
                s.speculative.draft_model = Some(v.to_string());
                self.notes.push(Note::NotModelled { flag: flag() });
            }
            ("--spec-draft-ngl", Val::Str(v)) => s.speculative.draft_n_gpu_layers = gpu_layers(v, origin)?,
            ("--spec-draft-type-k", Val::Str(v)) => {
                s.speculative.draft_cache_type_k = kv_cache_type(v, origin)?;
            }
            ("--spec-draft-type-v", Val::Str(v)) => {
                s.speculative.draft_cache_type_v = kv_cache_type(v, origin)?;
            }
            ("--spec-draft-override-tensor", Val::Str(v)) => {
                s.speculative.draft_overrides.extend(override_list(v, origin)?);
            }
            ("--spec-draft-cpu-moe", Val::Flag) => {
                s.speculative.draft_overrides.push(TensorOverride::cpu_moe());
            }
            ("--spec-draft-n-cpu-moe", Val::Int(v)) => {
                let n = non_negative(v, origin, "a number of layers")?;
                s.speculative.draft_overrides.extend(TensorOverride::n_cpu_moe(n));
            }
            ("--spec-draft-device", Val::Str(v)) => s.speculative.draft_devices = device_list(v, origin)?,
            ("-h" | "--version" | "-cl" | "--completion-bash" | "--list-devices", _) => {
                return Err(SettingsError::ExitsWithoutLoading { flag: flag(), index });
            }
            (id, _) if PRESETS.contains(&id) => return Err(SettingsError::Preset { flag: flag(), index }),
            _ => {}
        }
        Ok(())
    }
}

/// The built-in presets (arg.cpp:4584-4745): each downloads a model and sets context, batch and
/// slots of its own.
const PRESETS: [&str; 11] = [
    "--embd-gemma-default",
    "--fim-qwen-1.5b-default",
    "--fim-qwen-3b-default",
    "--fim-qwen-7b-default",
    "--fim-qwen-7b-spec",
    "--fim-qwen-14b-spec",
    "--fim-qwen-30b-default",
    "--gpt-oss-20b-default",
    "--gpt-oss-120b-default",
    "--vision-gemma-4b-default",
    "--vision-gemma-12b-default",
];

fn non_negative(v: i32, origin: &Origin, expected: &str) -> Result<u32, SettingsError> {
    u32::try_from(v).map_err(|_| invalid(origin, &v.to_string(), expected))
}

/// `kv_cache_type_from_str` (arg.cpp:310-317): the exact lower-case ggml name.
fn kv_cache_type(v: &str, origin: &Origin) -> Result<GgmlType, SettingsError> {
    KV_CACHE_TYPES.into_iter().find(|&t| kv_type_name(t) == v).ok_or_else(|| {
        let names: Vec<String> = KV_CACHE_TYPES.into_iter().map(kv_type_name).collect();
        invalid(origin, v, &format!("one of {}", names.join(", ")))
    })
}

/// `-ngl` (arg.cpp:2791-2808): `auto` is -1, `all` is -2, and below -1 means all.
fn gpu_layers(v: &str, origin: &Origin) -> Result<GpuLayers, SettingsError> {
    Ok(match v {
        "auto" => GpuLayers::Auto,
        "all" => GpuLayers::All,
        _ => match flags::c_stoi(v) {
            Some(-1) => GpuLayers::Auto,
            Some(n) => u32::try_from(n).map_or(GpuLayers::All, GpuLayers::Count),
            None => return Err(invalid(origin, v, "a number of layers, auto or all")),
        },
    })
}

/// `parse_device_list` (arg.cpp:1122-1142). The names are checked against the devices later; a
/// CPU device is refused as llama.cpp refuses it.
fn device_list(v: &str, origin: &Origin) -> Result<DeviceSelection, SettingsError> {
    let names: Vec<&str> = v.split(',').collect();
    if names == ["none"] {
        return Ok(DeviceSelection::None);
    }
    if names.iter().any(|n| n.is_empty() || *n == "CPU") {
        return Err(invalid(origin, v, "comma-separated GPU names such as CUDA0,CUDA1, or none"));
    }
    Ok(DeviceSelection::List(names.into_iter().map(str::to_string).collect()))
}

/// `parse_tensor_buffer_overrides` (arg.cpp:252-285): split on `,`, each item on its first `=`.
fn override_list(v: &str, origin: &Origin) -> Result<Vec<TensorOverride>, SettingsError> {
    v.split(',')
        .map(|item| match item.split_once('=') {
            Some((pattern, target)) if !target.is_empty() => {
                Ok(TensorOverride { pattern: pattern.to_string(), target: OverrideTarget::from_name(target) })
            }
            _ => Err(invalid(origin, item, "PATTERN=BUFFER items such as exps=CPU or blk\\.1\\.=CUDA0")),
        })
        .collect()
}

/// `-ts` (arg.cpp:2833-2859).
fn tensor_split(v: &str, origin: &Origin) -> Result<Vec<f32>, SettingsError> {
    let parts = flags::split_list(v);
    if parts.len() >= MAX_DEVICES {
        return Err(invalid(origin, v, &format!("at most {} proportions", MAX_DEVICES - 1)));
    }
    let mut out = parts
        .into_iter()
        .map(|p| match flags::c_stof(p) {
            // llama.cpp takes any float; a negative or non-finite share has no meaning.
            Some(x) if x.is_finite() && x >= 0.0 => Ok(x),
            _ => Err(invalid(origin, v, "comma-separated proportions of 0 or more, such as 3,1")),
        })
        .collect::<Result<Vec<f32>, _>>()?;
    while out.last() == Some(&0.0) {
        out.pop();
    }
    Ok(out)
}

/// `-fitt` (arg.cpp:2898-2921): one value for every device, or a list for the first devices.
fn fit_target(t: &mut super::FitTarget, v: &str, origin: &Origin) -> Result<(), SettingsError> {
    let parts = flags::split_list(v);
    if parts.len() >= MAX_DEVICES {
        return Err(invalid(origin, v, &format!("at most {} margins", MAX_DEVICES - 1)));
    }
    let margins = parts
        .into_iter()
        .map(|p| {
            flags::c_stoull(p).and_then(|mib| mib.checked_mul(crate::units::MIB).map(Bytes::new)).ok_or_else(
                || invalid(origin, v, "margins in MiB, one value or one per device, such as 128,1024"),
            )
        })
        .collect::<Result<Vec<Bytes>, _>>()?;
    if let [all] = margins[..] {
        *t = super::FitTarget::uniform(all);
    } else {
        if t.per_device.len() < margins.len() {
            t.per_device.resize(margins.len(), t.all);
        }
        t.per_device[..margins.len()].copy_from_slice(&margins);
        t.normalize();
    }
    Ok(())
}

/// `string_parse_kv_override` (common/common.cpp:657-700), as far as its form goes.
fn kv_override_is_valid(item: &str) -> bool {
    match item.split_once('=') {
        Some((key, value)) => {
            key.len() < 128
                && ["int:", "float:", "bool:", "str:"].iter().any(|prefix| value.starts_with(prefix))
        }
        None => false,
    }
}

/// `--spec-type` (common/speculative.cpp:2323-2340): a `none` ends the list.
fn spec_types(v: &str, origin: &Origin) -> Result<Vec<SpecType>, SettingsError> {
    let mut out = Vec::new();
    for name in v.split(',') {
        match SpecType::from_name(name) {
            Some(SpecType::None) => return Ok(vec![SpecType::None]),
            Some(t) => out.push(t),
            None => return Err(invalid(origin, name, "speculative types such as draft-mtp or ngram-mod")),
        }
    }
    Ok(out)
}
