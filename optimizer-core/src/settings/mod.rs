//! llama-server's command line as a core type: the one parser that turns llama-server flags
//! (`-c`, `-ub`, `-ctk`, `-ot`, `-ts`, …) and `LLAMA_ARG_*` environment variables into
//! [`ServerSettings`], and the renderer that turns settings back into flags.
//!
//! Every command of splitplan goes through here, so that a flag means the same thing everywhere
//! and exactly what it means to llama-server build 11434: the same spellings (common/arg.cpp), the
//! same defaults (common/common.h:452-640), the same number reading (`std::stoi`), the same order
//! of tensor overrides, and the same rejection of an unknown flag. Flags that do not change memory
//! (sampling, HTTP, logging, chat templates) are accepted and ignored, consuming the right number of
//! values; the table of every llama-server option is generated from arg.cpp by
//! `scripts/gen_server_flags.py`.
//!
//! [`ServerSettings`] holds the values as llama-server's argument parser leaves them. What the
//! server does to them after parsing (`-np` auto becomes 4 slots with a unified KV cache,
//! tools/server/server.cpp:168-172) is applied by the `effective_*` methods, so that rendering a
//! parsed command reproduces it.

mod error;
mod flag_table;
pub(crate) mod flags;
mod parse;
mod render;
#[cfg(test)]
mod tests;

use std::fmt;

pub use error::{Note, Origin, SettingsError};
pub use parse::{Parsed, parse, parse_args};

use crate::gguf::GgmlType;
use crate::units::Bytes;

/// The expert-tensor pattern of `--cpu-moe` and `--n-cpu-moe` (`LLM_FFN_EXPS_REGEX`,
/// common/common.h:1224): up, down, gate and merged gate_up experts, chunked (`chexps`) or not.
pub const FFN_EXPS_REGEX: &str = r"\.ffn_(up|down|gate|gate_up)_(ch|)exps";

/// The dense FFN pattern of `--n-cpu-ffn` (`LLM_FFN_DENSE_REGEX`, common/common.h:1226).
pub const FFN_DENSE_REGEX: &str = r"\.ffn_(up|down|gate)\.";

/// The most devices llama.cpp handles (`llama_max_devices`, src/llama.cpp:86-88): `-ts` and
/// `--fit-target` take fewer values than this (arg.cpp:2841, 2907).
pub const MAX_DEVICES: usize = 16;

/// The KV cache types `-ctk`/`-ctv` accept, in llama.cpp's order (`kv_cache_types`,
/// arg.cpp:298-308). They are spelled as ggml prints them, in lower case (`ggml_type_name`).
pub const KV_CACHE_TYPES: [GgmlType; 9] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Bf16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Iq4Nl,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
];

/// Default `--fit-target` margin per device: 1024 MiB (common/common.h:486).
pub const DEFAULT_FIT_TARGET: Bytes = Bytes::from_mib(1024);

/// Default `--fit-ctx`: the smallest context `--fit` may choose (common/common.h:483).
pub const DEFAULT_FIT_CTX: u32 = 4096;

/// What llama-server's `-fitc -1` and `-c 0` set `fit_params_min_ctx` to: fit never shrinks the
/// context (arg.cpp:1646-1649, `(uint32_t) -1`).
pub const FIT_CTX_NEVER_SHRINK: u32 = u32::MAX;

/// Every setting of llama-server that changes how much memory it uses or where it puts it, with
/// llama-server's own defaults (build 11434; [`ServerSettings::default`]).
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::struct_excessive_bools)] // each mirrors one of llama-server's on/off flags
pub struct ServerSettings {
    /// `-m/--model`: the model file (the first shard of a split model).
    pub model: Option<String>,
    /// `-c/--ctx-size`.
    pub ctx_size: CtxSize,
    /// `--kv-unified-per-slot N`: with no `-c`, the KV pool is sized to slots × N
    /// (server.cpp:176-186). `None` when unset (0).
    pub kv_unified_per_slot: Option<u32>,
    /// `-b/--batch-size`: the logical batch (default 2048, common.h:455).
    pub batch_size: u32,
    /// `-ub/--ubatch-size`: the micro-batch that sizes compute buffers (default 512, common.h:456).
    pub ubatch_size: u32,
    /// `-np/--parallel`: server slots (default auto, arg.cpp:1405-1406).
    pub parallel: Parallel,
    /// `-kvu/--kv-unified` and `-no-kvu/--no-kv-unified` as given (default off, common.h:579);
    /// see [`ServerSettings::effective_kv_unified`].
    pub kv_unified: bool,
    /// `-fa/--flash-attn` (default auto, common.h:503).
    pub flash_attn: FlashAttn,
    /// `-ctk/--cache-type-k` (default f16, common.h:593), one of [`KV_CACHE_TYPES`].
    pub cache_type_k: GgmlType,
    /// `-ctv/--cache-type-v` (default f16, common.h:594), one of [`KV_CACHE_TYPES`].
    pub cache_type_v: GgmlType,
    /// `-ngl/--gpu-layers/--n-gpu-layers` (default auto, common.h:476).
    pub n_gpu_layers: GpuLayers,
    /// `-ts/--tensor-split`: proportions per device, trailing zeros removed; empty means unset
    /// (llama.cpp then splits by free memory).
    pub tensor_split: Vec<f32>,
    /// `-sm/--split-mode` (default layer, common.h:488).
    pub split_mode: SplitMode,
    /// `-mg/--main-gpu` (default 0).
    pub main_gpu: i32,
    /// Tensor buffer-type overrides from `-ot`, `--cpu-moe`, `--n-cpu-moe` and `--n-cpu-ffn`, in
    /// command-line order: llama.cpp applies the first that matches (llama-model-loader.cpp:1233-1260).
    pub overrides: Vec<TensorOverride>,
    /// `-lm/--load-mode` (default auto, common.h:489).
    pub load_mode: LoadMode,
    /// `--no-host`: weights on the CPU skip the pinned host buffer (common.h:588).
    pub no_host: bool,
    /// `--repack` / `-nr/--no-repack`: CPU weight repacking (default on, common.h:587).
    pub repack: bool,
    /// `--op-offload` / `--no-op-offload`: host tensor operations offloaded to a GPU (default on).
    pub op_offload: bool,
    /// `-kvo/--kv-offload` / `-nkvo/--no-kv-offload`: KV cache on the GPUs (default on).
    pub kv_offload: bool,
    /// `--swa-full`: full-size sliding-window caches (default off).
    pub swa_full: bool,
    /// `-fit/--fit on|off` (default on, common.h:481).
    pub fit: bool,
    /// `-fitt/--fit-target`: the margin `--fit` leaves free per device.
    pub fit_target: FitTarget,
    /// `-fitc/--fit-ctx` (default 4096); [`FIT_CTX_NEVER_SHRINK`] after `-c 0` or `-fitc -1`.
    pub fit_ctx: u32,
    /// `-dev/--device`: the devices to offload to.
    pub devices: DeviceSelection,
    /// `-cram/--cache-ram`: the host-memory prompt cache (default 8192 MiB, common.h:638).
    pub prompt_cache: PromptCache,
    /// `-ctxcp/--ctx-checkpoints`: context checkpoints per slot (default 32, common.h:635); 0 disables.
    pub ctx_checkpoints: u32,
    /// `--embedding` or `--rerank`: embedding mode, which reserves outputs for a whole batch.
    pub embedding: bool,
    /// The multimodal projector (`--mmproj` and friends); its memory is not modelled yet.
    pub mmproj: MmprojSettings,
    /// LoRA adapters (`--lora`, `--lora-scaled`), in order; their memory is not modelled yet.
    pub lora: Vec<String>,
    /// `--override-kv KEY=TYPE:VALUE` items, in order: they can change the model's shape.
    pub kv_overrides: Vec<String>,
    /// Speculative decoding: a draft model or MTP layers cost memory.
    pub speculative: SpeculativeSettings,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            model: None,
            ctx_size: CtxSize::Unset,
            kv_unified_per_slot: None,
            batch_size: 2048,
            ubatch_size: 512,
            parallel: Parallel::Auto,
            kv_unified: false,
            flash_attn: FlashAttn::Auto,
            cache_type_k: GgmlType::F16,
            cache_type_v: GgmlType::F16,
            n_gpu_layers: GpuLayers::Auto,
            tensor_split: Vec::new(),
            split_mode: SplitMode::Layer,
            main_gpu: 0,
            overrides: Vec::new(),
            load_mode: LoadMode::Auto,
            no_host: false,
            repack: true,
            op_offload: true,
            kv_offload: true,
            swa_full: false,
            fit: true,
            fit_target: FitTarget::default(),
            fit_ctx: DEFAULT_FIT_CTX,
            devices: DeviceSelection::Default,
            prompt_cache: PromptCache::Limit(Bytes::from_mib(8192)),
            ctx_checkpoints: 32,
            embedding: false,
            mmproj: MmprojSettings::default(),
            lora: Vec::new(),
            kv_overrides: Vec::new(),
            speculative: SpeculativeSettings::default(),
        }
    }
}

impl ServerSettings {
    /// Parses llama-server arguments (without the program name) with no environment; see [`parse`].
    pub fn from_args<S: AsRef<str>>(args: &[S]) -> Result<ServerSettings, SettingsError> {
        parse_args(args)
    }

    /// The server slots llama-server runs: `-np` auto becomes 4 (server.cpp:168-172).
    pub fn effective_parallel(&self) -> u32 {
        match self.parallel {
            Parallel::Auto => 4,
            Parallel::Slots(n) => n,
        }
    }

    /// Whether the KV cache is one buffer shared by all slots: forced on when `-np` is auto,
    /// whatever `--no-kv-unified` said (server.cpp:168-172).
    pub fn effective_kv_unified(&self) -> bool {
        self.kv_unified || self.parallel == Parallel::Auto
    }

    /// The context llama-server asks for after `--kv-unified-per-slot`: with no `-c` (or `-c 0`
    /// whose no-shrink was undone by a later `--fit-ctx`), slots × per-slot (server.cpp:176-186).
    pub fn effective_ctx_size(&self) -> CtxSize {
        let n_ctx_zero = matches!(self.ctx_size, CtxSize::Unset | CtxSize::Train);
        match self.kv_unified_per_slot {
            Some(per_slot) if n_ctx_zero && self.fit_ctx != FIT_CTX_NEVER_SHRINK => {
                CtxSize::Tokens(self.effective_parallel().saturating_mul(per_slot))
            }
            _ => self.ctx_size,
        }
    }

    /// Flash attention as the context will ask for it: `auto` with a quantized V cache (or with
    /// `-sm tensor`) is turned on by llama_init_from_model (llama-context.cpp:3824-3847). A
    /// remaining `auto` is decided by the device (on for the CUDA GPUs splitplan targets,
    /// llama-context.cpp:559-561).
    pub fn effective_flash_attn(&self) -> FlashAttn {
        if self.flash_attn == FlashAttn::Auto
            && (self.cache_type_v.is_quantized() || self.split_mode == SplitMode::Tensor)
        {
            FlashAttn::On
        } else {
            self.flash_attn
        }
    }

    /// Whether the model's MTP/NextN layers are loaded: with `--spec-type draft-mtp`
    /// (common/common.cpp:1683).
    pub fn loads_mtp_layers(&self) -> bool {
        self.speculative.types.contains(&SpecType::DraftMtp)
    }

    /// Whether any tensor override is given; it turns pipeline parallelism off
    /// (llama-context.cpp:432-437).
    pub fn has_overrides(&self) -> bool {
        !self.overrides.is_empty()
    }

    /// Refuses what llama.cpp build 11434 cannot run, or what splitplan does not plan:
    /// `-sm row` (broken on CUDA), `-sm tensor` (experimental), a quantized V cache with flash
    /// attention off. [`parse`] runs this on what it parsed.
    ///
    /// The flash-attention rule: `-fa off` with a quantized V cache is refused
    /// (llama-context.cpp:3843-3851, and 466-470 once the context exists); `-fa auto` counts as on,
    /// because llama_init_from_model turns auto into on for a quantized V cache before anything
    /// else decides (llama-context.cpp:3844-3847).
    pub fn check(&self) -> Result<(), SettingsError> {
        match self.split_mode {
            SplitMode::Row => return Err(SettingsError::SplitModeRow),
            SplitMode::Tensor => return Err(SettingsError::SplitModeTensor),
            SplitMode::None | SplitMode::Layer => {}
        }
        if self.flash_attn == FlashAttn::Off && self.cache_type_v.is_quantized() {
            return Err(SettingsError::QuantizedVWithoutFlashAttention { cache_type_v: self.cache_type_v });
        }
        Ok(())
    }

    /// The llama-server arguments that reproduce these settings: only what differs from the
    /// defaults, in a fixed order, with llama.cpp's spellings. Parsing them gives back equal
    /// settings.
    pub fn to_args(&self) -> Vec<String> {
        render::to_args(self)
    }
}

/// `-c/--ctx-size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtxSize {
    /// Not given: llama.cpp starts from the training context, and `--fit` may shrink it down to
    /// `--fit-ctx` (common.h:454, 483).
    Unset,
    /// `-c 0`: the training context, which `--fit` must not shrink (arg.cpp:1646-1649).
    Train,
    /// `-c N`.
    Tokens(u32),
}

/// `-np/--parallel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parallel {
    /// `-1`, any negative number, or not given: 4 slots with a unified KV cache (server.cpp:168-172).
    Auto,
    /// A number of slots, 1 or more (`-np 0` is refused, arg.cpp:2550-2552).
    Slots(u32),
}

/// `-fa/--flash-attn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlashAttn {
    /// `on` (or `enabled`, `true`, `1`).
    On,
    /// `off` (or `disabled`, `false`, `0`).
    Off,
    /// `auto` (or `-1`): decided when the context is created.
    Auto,
}

impl FlashAttn {
    /// llama.cpp's name: `on`, `off`, `auto`.
    pub fn name(self) -> &'static str {
        match self {
            FlashAttn::On => "on",
            FlashAttn::Off => "off",
            FlashAttn::Auto => "auto",
        }
    }
}

/// `-ngl/--n-gpu-layers`: how many layers go to the GPUs, counting the output layer as one more
/// (`n_layer + 1` offloads everything, llama-model.cpp:1502-1617).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuLayers {
    /// `auto` or `-1`: all layers, unless `--fit` lowers it.
    Auto,
    /// `all` or any number below -1: every layer.
    All,
    /// A number of layers.
    Count(u32),
}

impl fmt::Display for GpuLayers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuLayers::Auto => f.write_str("auto"),
            GpuLayers::All => f.write_str("all"),
            GpuLayers::Count(n) => write!(f, "{n}"),
        }
    }
}

/// `-sm/--split-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitMode {
    /// One GPU only (`-mg`).
    None,
    /// Whole layers per GPU: the default and the only multi-GPU mode splitplan plans.
    Layer,
    /// Rows of each weight across GPUs: broken on CUDA in build 11434 ([`ServerSettings::check`]).
    Row,
    /// Experimental tensor parallelism: not planned ([`ServerSettings::check`]).
    Tensor,
}

impl SplitMode {
    /// llama.cpp's name.
    pub fn name(self) -> &'static str {
        match self {
            SplitMode::None => "none",
            SplitMode::Layer => "layer",
            SplitMode::Row => "row",
            SplitMode::Tensor => "tensor",
        }
    }
}

/// `-lm/--load-mode` (arg.cpp:2693-2710). Build 11434 has no `--mmap`/`--no-mmap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadMode {
    /// `auto`: mmap unless a device cannot use it.
    Auto,
    /// `none`: read the file into buffers.
    None,
    /// `mmap`.
    Mmap,
    /// `mlock`.
    Mlock,
    /// `mmap+mlock`.
    MmapMlock,
    /// `dio`: direct I/O.
    DirectIo,
}

impl LoadMode {
    /// llama.cpp's name.
    pub fn name(self) -> &'static str {
        match self {
            LoadMode::Auto => "auto",
            LoadMode::None => "none",
            LoadMode::Mmap => "mmap",
            LoadMode::Mlock => "mlock",
            LoadMode::MmapMlock => "mmap+mlock",
            LoadMode::DirectIo => "dio",
        }
    }
}

/// One tensor buffer-type override: tensors whose name the pattern matches (an ECMAScript regex,
/// searched, not anchored) go to the target's buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorOverride {
    /// The regex, as given (the text before the first `=` of an `-ot` item).
    pub pattern: String,
    /// Where the tensors go.
    pub target: OverrideTarget,
}

impl TensorOverride {
    /// The override `--cpu-moe` adds (`llm_ffn_exps_cpu_override`, common.h:1232-1234).
    pub fn cpu_moe() -> TensorOverride {
        TensorOverride { pattern: FFN_EXPS_REGEX.to_string(), target: OverrideTarget::Cpu }
    }

    /// The `n` overrides `--n-cpu-moe n` adds: the experts of layers 0 to n-1, by index
    /// (`llm_add_n_cpu_ffn_overrides` with `llm_ffn_block_regex`, common.h:1228-1243).
    pub fn n_cpu_moe(n: u32) -> Vec<TensorOverride> {
        (0..n).map(|i| TensorOverride::layer_to_cpu(i, FFN_EXPS_REGEX)).collect()
    }

    /// The `n` overrides `--n-cpu-ffn n` adds: the dense FFN of layers 0 to n-1.
    pub fn n_cpu_ffn(n: u32) -> Vec<TensorOverride> {
        (0..n).map(|i| TensorOverride::layer_to_cpu(i, FFN_DENSE_REGEX)).collect()
    }

    fn layer_to_cpu(layer: u32, ffn_regex: &str) -> TensorOverride {
        // `string_format("blk\\.%d%s", idx, ffn_regex)` (common.h:1228-1230)
        TensorOverride { pattern: format!(r"blk\.{layer}{ffn_regex}"), target: OverrideTarget::Cpu }
    }
}

impl fmt::Display for TensorOverride {
    /// The `-ot` item: `pattern=TARGET`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.pattern, self.target)
    }
}

/// Where an override sends tensors: the name of a device's default buffer type. Whether a device
/// of that name exists is checked against the devices later, not here.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum OverrideTarget {
    /// `CPU`: system RAM (pinned host memory, mmap or repacked, as the CPU buffer list decides).
    Cpu,
    /// A device buffer such as `CUDA0`.
    Device(String),
}

impl OverrideTarget {
    /// The target for a buffer-type name as written after `=`.
    pub fn from_name(name: &str) -> OverrideTarget {
        if name == "CPU" { OverrideTarget::Cpu } else { OverrideTarget::Device(name.to_string()) }
    }

    /// The buffer-type name.
    pub fn name(&self) -> &str {
        match self {
            OverrideTarget::Cpu => "CPU",
            OverrideTarget::Device(name) => name,
        }
    }
}

impl fmt::Display for OverrideTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `-fitt/--fit-target`: the memory `--fit` leaves free on each device.
///
/// One value applies to every device; a list sets the first devices and leaves the others at what
/// they were (arg.cpp:2911-2918). Entries are whole MiB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FitTarget {
    /// The margin of every device not in `per_device`.
    pub all: Bytes,
    /// Margins of devices 0, 1, … that differ from `all` (no trailing entry equal to `all`).
    pub per_device: Vec<Bytes>,
}

impl Default for FitTarget {
    fn default() -> Self {
        FitTarget { all: DEFAULT_FIT_TARGET, per_device: Vec::new() }
    }
}

impl FitTarget {
    /// One margin for every device.
    pub fn uniform(margin: Bytes) -> FitTarget {
        FitTarget { all: margin, per_device: Vec::new() }
    }

    /// Margins for devices 0, 1, …; later devices keep the default 1024 MiB.
    pub fn per_device(margins: Vec<Bytes>) -> FitTarget {
        let mut t = FitTarget { all: DEFAULT_FIT_TARGET, per_device: margins };
        t.normalize();
        t
    }

    /// The margin of device `index`.
    pub fn for_device(&self, index: usize) -> Bytes {
        self.per_device.get(index).copied().unwrap_or(self.all)
    }

    pub(crate) fn normalize(&mut self) {
        while self.per_device.last() == Some(&self.all) {
            self.per_device.pop();
        }
    }
}

/// `-dev/--device`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSelection {
    /// Not given: every GPU llama.cpp finds.
    Default,
    /// `none`: offload nothing.
    None,
    /// These devices, in this order (names such as `CUDA0`; checked against the devices later).
    List(Vec<String>),
}

/// `-cram/--cache-ram`: the server's prompt cache in host memory (server-context.cpp:1484-1492).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PromptCache {
    /// `0`.
    Disabled,
    /// Any negative number: no limit.
    Unlimited,
    /// Up to this much (whole MiB).
    Limit(Bytes),
}

/// The multimodal projector flags. splitplan recognises them; the projector's memory is not
/// modelled yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MmprojSettings {
    /// `-mm/--mmproj FILE`.
    pub path: Option<String>,
    /// `-mmu/--mmproj-url URL`.
    pub url: Option<String>,
    /// `--mmproj-auto` / `--no-mmproj`: use a projector found beside a downloaded model (default on).
    pub auto: bool,
    /// `--mmproj-offload` / `--no-mmproj-offload` (default on); `-mmdev none` turns it off.
    pub offload: bool,
    /// `-mmdev/--mmproj-device DEVICE` (not `none`).
    pub device: Option<String>,
}

impl Default for MmprojSettings {
    fn default() -> Self {
        MmprojSettings { path: None, url: None, auto: true, offload: true, device: None }
    }
}

/// Speculative decoding flags that change memory. Recognised and kept; a later version models
/// their memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpeculativeSettings {
    /// `--spec-type` entries, in order (appended to llama.cpp's default `none`).
    pub types: Vec<SpecType>,
    /// `--spec-draft-n-max`: tokens drafted per step (default 3, common.h:329).
    pub draft_n_max: u32,
    /// `-md/--spec-draft-model`: the draft model file.
    pub draft_model: Option<String>,
    /// `-ngld/--spec-draft-ngl` (default auto).
    pub draft_n_gpu_layers: GpuLayers,
    /// `-ctkd/--spec-draft-type-k` (default f16).
    pub draft_cache_type_k: GgmlType,
    /// `-ctvd/--spec-draft-type-v` (default f16).
    pub draft_cache_type_v: GgmlType,
    /// `-otd`, `-cmoed`, `-ncmoed` for the draft model, in order.
    pub draft_overrides: Vec<TensorOverride>,
    /// `-devd/--spec-draft-device`.
    pub draft_devices: DeviceSelection,
}

impl Default for SpeculativeSettings {
    fn default() -> Self {
        SpeculativeSettings {
            types: Vec::new(),
            draft_n_max: 3,
            draft_model: None,
            draft_n_gpu_layers: GpuLayers::Auto,
            draft_cache_type_k: GgmlType::F16,
            draft_cache_type_v: GgmlType::F16,
            draft_overrides: Vec::new(),
            draft_devices: DeviceSelection::Default,
        }
    }
}

/// A `--spec-type` name (common/speculative.cpp:2307-2321).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // the names are llama.cpp's own
pub enum SpecType {
    None,
    DraftSimple,
    DraftEagle3,
    DraftMtp,
    DraftDflash,
    DraftDspark,
    NgramSimple,
    NgramMapK,
    NgramMapK4v,
    NgramMod,
    NgramCache,
}

impl SpecType {
    const ALL: [SpecType; 11] = [
        SpecType::None,
        SpecType::DraftSimple,
        SpecType::DraftEagle3,
        SpecType::DraftMtp,
        SpecType::DraftDflash,
        SpecType::DraftDspark,
        SpecType::NgramSimple,
        SpecType::NgramMapK,
        SpecType::NgramMapK4v,
        SpecType::NgramMod,
        SpecType::NgramCache,
    ];

    /// llama.cpp's name, e.g. `draft-mtp`.
    pub fn name(self) -> &'static str {
        match self {
            SpecType::None => "none",
            SpecType::DraftSimple => "draft-simple",
            SpecType::DraftEagle3 => "draft-eagle3",
            SpecType::DraftMtp => "draft-mtp",
            SpecType::DraftDflash => "draft-dflash",
            SpecType::DraftDspark => "draft-dspark",
            SpecType::NgramSimple => "ngram-simple",
            SpecType::NgramMapK => "ngram-map-k",
            SpecType::NgramMapK4v => "ngram-map-k4v",
            SpecType::NgramMod => "ngram-mod",
            SpecType::NgramCache => "ngram-cache",
        }
    }

    /// The type of a name, if llama.cpp knows it.
    pub fn from_name(name: &str) -> Option<SpecType> {
        SpecType::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// The lower-case name llama.cpp's `-ctk`/`-ctv` expect for a KV cache type (`ggml_type_name`).
pub fn kv_type_name(t: GgmlType) -> String {
    t.name().to_ascii_lowercase()
}
