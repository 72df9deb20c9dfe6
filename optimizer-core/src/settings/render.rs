//! The canonical llama-server arguments for a [`ServerSettings`]: only what differs from the
//! defaults, in one fixed order, with the spellings users write (`-c`, `-ub`, `-ngl`, `-ot`, …).
//! Parsing the result gives back equal settings (tested as a property).

use super::{
    CtxSize, DEFAULT_FIT_CTX, DeviceSelection, FFN_DENSE_REGEX, FFN_EXPS_REGEX, FIT_CTX_NEVER_SHRINK,
    FitTarget, FlashAttn, GpuLayers, LoadMode, Parallel, PromptCache, ServerSettings, SpecType, SplitMode,
    TensorOverride, kv_type_name,
};

pub(super) fn to_args(s: &ServerSettings) -> Vec<String> {
    let d = ServerSettings::default();
    let mut a = Args(Vec::new());
    if let Some(m) = &s.model {
        a.two("-m", m);
    }
    match s.ctx_size {
        CtxSize::Unset => {}
        CtxSize::Train => a.two("-c", "0"),
        CtxSize::Tokens(n) => a.two("-c", n),
    }
    if let Some(n) = s.kv_unified_per_slot {
        a.two("--kv-unified-per-slot", n);
    }
    if s.batch_size != d.batch_size {
        a.two("-b", s.batch_size);
    }
    if s.ubatch_size != d.ubatch_size {
        a.two("-ub", s.ubatch_size);
    }
    if let Parallel::Slots(n) = s.parallel {
        a.two("-np", n);
    }
    if s.kv_unified {
        a.one("-kvu");
    }
    if s.flash_attn != FlashAttn::Auto {
        a.two("-fa", s.flash_attn.name());
    }
    if s.cache_type_k != d.cache_type_k {
        a.two("-ctk", kv_type_name(s.cache_type_k));
    }
    if s.cache_type_v != d.cache_type_v {
        a.two("-ctv", kv_type_name(s.cache_type_v));
    }
    if !s.kv_offload {
        a.one("-nkvo");
    }
    if s.swa_full {
        a.one("--swa-full");
    }
    if s.n_gpu_layers != GpuLayers::Auto {
        a.two("-ngl", s.n_gpu_layers);
    }
    if s.split_mode != SplitMode::Layer {
        a.two("-sm", s.split_mode.name());
    }
    if s.main_gpu != 0 {
        a.two("-mg", s.main_gpu);
    }
    if !s.tensor_split.is_empty() {
        let parts: Vec<String> = s.tensor_split.iter().map(f32::to_string).collect();
        a.two("-ts", parts.join(","));
    }
    devices(&mut a, "-dev", &s.devices);
    overrides(&mut a, &s.overrides, ["-ot", "--cpu-moe", "--n-cpu-moe"], Some("--n-cpu-ffn"));
    if !s.fit {
        a.two("--fit", "off");
    }
    fit_target(&mut a, &s.fit_target);
    // `-c 0` already set "never shrink"; any other value after it must be written out.
    let fit_ctx_implied = if s.ctx_size == CtxSize::Train { FIT_CTX_NEVER_SHRINK } else { DEFAULT_FIT_CTX };
    if s.fit_ctx != fit_ctx_implied {
        // fit_params_min_ctx is read with stoi and stored in a uint32_t: u32::MAX is written -1.
        #[allow(clippy::cast_possible_wrap)]
        a.two("--fit-ctx", s.fit_ctx as i32);
    }
    if s.load_mode != LoadMode::Auto {
        a.two("-lm", s.load_mode.name());
    }
    if s.no_host {
        a.one("--no-host");
    }
    if !s.repack {
        a.one("--no-repack");
    }
    if !s.op_offload {
        a.one("--no-op-offload");
    }
    if s.prompt_cache != d.prompt_cache {
        match s.prompt_cache {
            PromptCache::Disabled => a.two("-cram", 0),
            PromptCache::Unlimited => a.two("-cram", -1),
            PromptCache::Limit(b) => a.two("-cram", b.mib_floor()),
        }
    }
    if s.ctx_checkpoints != d.ctx_checkpoints {
        a.two("-ctxcp", s.ctx_checkpoints);
    }
    if s.embedding {
        a.one("--embedding");
    }
    if let Some(p) = &s.mmproj.path {
        a.two("-mm", p);
    }
    if let Some(u) = &s.mmproj.url {
        a.two("-mmu", u);
    }
    if !s.mmproj.auto {
        a.one("--no-mmproj");
    }
    if let Some(dev) = &s.mmproj.device {
        a.two("-mmdev", dev);
    }
    if !s.mmproj.offload {
        a.one("--no-mmproj-offload");
    }
    if !s.lora.is_empty() {
        let items: Vec<String> = s.lora.iter().map(|p| csv_field(p)).collect();
        a.two("--lora", items.join(","));
    }
    for kv in &s.kv_overrides {
        a.two("--override-kv", csv_field(kv));
    }
    speculative(&mut a, s);
    a.0
}

struct Args(Vec<String>);

impl Args {
    fn one(&mut self, flag: &str) {
        self.0.push(flag.to_string());
    }

    #[allow(clippy::needless_pass_by_value)] // numbers and short strings, taken as they come
    fn two(&mut self, flag: &str, value: impl ToString) {
        self.0.push(flag.to_string());
        self.0.push(value.to_string());
    }
}

fn devices(a: &mut Args, flag: &str, d: &DeviceSelection) {
    match d {
        DeviceSelection::Default => {}
        DeviceSelection::None => a.two(flag, "none"),
        DeviceSelection::List(names) => a.two(flag, names.join(",")),
    }
}

/// Writes an override list in order, as `--cpu-moe`, `--n-cpu-moe N` and `--n-cpu-ffn N` where
/// a stretch of the list is exactly what those flags add, and as `-ot` lists in between.
fn overrides(a: &mut Args, list: &[TensorOverride], [ot, cmoe, ncmoe]: [&str; 3], ncffn: Option<&str>) {
    let mut pending: Vec<String> = Vec::new();
    let flush = |a: &mut Args, pending: &mut Vec<String>| {
        if !pending.is_empty() {
            a.two(ot, pending.join(","));
            pending.clear();
        }
    };
    let mut i = 0;
    while i < list.len() {
        if list[i] == TensorOverride::cpu_moe() {
            flush(a, &mut pending);
            a.one(cmoe);
            i += 1;
            continue;
        }
        let moe = layer_run(&list[i..], FFN_EXPS_REGEX);
        if moe > 0 {
            flush(a, &mut pending);
            a.two(ncmoe, moe);
            i += moe;
            continue;
        }
        if let Some(ncffn) = ncffn {
            let ffn = layer_run(&list[i..], FFN_DENSE_REGEX);
            if ffn > 0 {
                flush(a, &mut pending);
                a.two(ncffn, ffn);
                i += ffn;
                continue;
            }
        }
        pending.push(list[i].to_string());
        i += 1;
    }
    flush(a, &mut pending);
}

/// How many entries at the start of `list` are layers 0, 1, 2, … of `ffn_regex` sent to the CPU.
fn layer_run(list: &[TensorOverride], ffn_regex: &str) -> usize {
    list.iter()
        .zip(0u32..)
        .take_while(|(o, layer)| **o == TensorOverride::layer_to_cpu(*layer, ffn_regex))
        .count()
}

fn fit_target(a: &mut Args, t: &FitTarget) {
    let default = FitTarget::default();
    if t.all != default.all {
        a.two("--fit-target", t.all.mib_floor());
    }
    if !t.per_device.is_empty() {
        let mut mib: Vec<String> = t.per_device.iter().map(|b| b.mib_floor().to_string()).collect();
        // One value would apply to every device: write the next device's margin too.
        if mib.len() == 1 {
            mib.push(t.all.mib_floor().to_string());
        }
        a.two("--fit-target", mib.join(","));
    }
}

fn speculative(a: &mut Args, s: &ServerSettings) {
    let sp = &s.speculative;
    let d = super::SpeculativeSettings::default();
    if sp.types.contains(&SpecType::None) {
        // A `none` inside a list would drop the rest of that list.
        for t in &sp.types {
            a.two("--spec-type", t.name());
        }
    } else if !sp.types.is_empty() {
        let names: Vec<&str> = sp.types.iter().map(|t| t.name()).collect();
        a.two("--spec-type", names.join(","));
    }
    if sp.draft_n_max != d.draft_n_max {
        a.two("--spec-draft-n-max", sp.draft_n_max);
    }
    if let Some(m) = &sp.draft_model {
        a.two("-md", m);
    }
    if sp.draft_n_gpu_layers != GpuLayers::Auto {
        a.two("-ngld", sp.draft_n_gpu_layers);
    }
    if sp.draft_cache_type_k != d.draft_cache_type_k {
        a.two("-ctkd", kv_type_name(sp.draft_cache_type_k));
    }
    if sp.draft_cache_type_v != d.draft_cache_type_v {
        a.two("-ctvd", kv_type_name(sp.draft_cache_type_v));
    }
    devices(a, "-devd", &sp.draft_devices);
    overrides(a, &sp.draft_overrides, ["-otd", "-cmoed", "-ncmoed"], None);
}

/// A field for `parse_csv_row`: quoted when it holds a comma or starts with a quote.
fn csv_field(s: &str) -> String {
    if s.contains(',') || s.starts_with('"') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
