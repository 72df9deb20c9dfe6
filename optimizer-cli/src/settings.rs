//! Where command-line arguments become core types, and nowhere else: device descriptions become a
//! [`Hardware`], llama-server flags go through core's one settings parser. Commands receive what
//! this module returns, never clap's structs' raw strings.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow};
use optimizer_core::plan::devices::{self, DeviceOrder, Hardware};
use optimizer_core::plan::{ContextRequest, Pins, PlanOptions};
use optimizer_core::profile;
use optimizer_core::render::gpus::DeviceSource;
use optimizer_core::settings::{self, GpuLayers, Note, ServerSettings};
use optimizer_core::units::Bytes;

use crate::cli::DeviceArgs;
use crate::devices as machine;

/// The machine a command works for, and where its description came from.
#[derive(Debug)]
pub struct Machine {
    /// GPUs and host.
    pub hardware: Hardware,
    /// Where the GPUs came from.
    pub source: DeviceSource,
    /// The config file read, if one was.
    pub config: Option<PathBuf>,
    /// PCI bus ids, one per GPU, when read through NVML.
    pub pci_bus_ids: Vec<String>,
    /// What is worth telling on stderr (why NVML was not used, ...).
    pub notes: Vec<String>,
}

/// The machine, as the arguments describe it or as NVML finds it; see `splitplan gpus --help` for
/// the order in which the sources are tried.
pub fn machine(args: &DeviceArgs) -> Result<Machine> {
    let cuda_context = args
        .cuda_context
        .as_deref()
        .map(|s| Bytes::parse_mib_default(s).with_context(|| "invalid value for --cuda-context".to_owned()))
        .transpose()?;
    let mut m = described(args, cuda_context)?;
    if let Some(ram) = &args.ram {
        m.hardware.host_ram = Some(
            Bytes::parse_mib_default(ram)
                .with_context(|| format!("invalid value '{ram}' for --ram, expected a size such as 64G"))?,
        );
    }
    if m.hardware.host_ram.is_none() {
        m.hardware.host_ram = machine::host_ram();
    }
    Ok(m)
}

fn described(args: &DeviceArgs, cuda_context: Option<Bytes>) -> Result<Machine> {
    let ctx = cuda_context.unwrap_or(devices::CUDA_CONTEXT_OVERHEAD);
    let plain = |hardware, source| Machine {
        hardware,
        source,
        config: None,
        pci_bus_ids: Vec::new(),
        notes: Vec::new(),
    };
    let free = args.free.as_deref().map(devices::parse_free_list).transpose()?;
    if let Some(spec) = &args.gpu {
        let mut hw = Hardware::new(devices::parse_gpu_list(spec)?).with_cuda_context(ctx);
        if let Some(free) = &free {
            hw.set_free_at_load(free)?;
        }
        return Ok(plain(hw, DeviceSource::GpuFlag));
    }
    if let Some(free) = &free {
        return Ok(plain(Hardware::from_free_at_load(free, ctx)?, DeviceSource::FreeFlag));
    }
    if let Some(path) = &args.config {
        return from_config(path, cuda_context);
    }
    let mut notes = Vec::new();
    let nvml_problem = if args.no_nvml {
        "NVML not tried (--no-nvml)".to_owned()
    } else {
        match machine::read_nvml() {
            Ok(found) => {
                let env = |name: &str| std::env::var(name).ok();
                let order = DeviceOrder::from_env(env("CUDA_DEVICE_ORDER").as_deref());
                let visible = env("CUDA_VISIBLE_DEVICES");
                let ordered = devices::cuda_order(found, order, visible.as_deref())?;
                if ordered.is_empty() {
                    if visible.is_some() {
                        "NVML found no GPU that CUDA_VISIBLE_DEVICES shows"
                    } else {
                        "NVML found no GPU"
                    }
                    .to_owned()
                } else {
                    let pci_bus_ids = ordered.iter().map(|g| g.pci_bus_id.clone()).collect();
                    let gpus = ordered.into_iter().enumerate().map(|(i, g)| g.into_gpu(i)).collect();
                    let hardware = Hardware::new(gpus).with_cuda_context(ctx);
                    return Ok(Machine {
                        hardware,
                        source: DeviceSource::Nvml,
                        config: None,
                        pci_bus_ids,
                        notes,
                    });
                }
            }
            Err(e) => format!("{e:#}"),
        }
    };
    if let Some(path) = default_config().filter(|p| p.is_file()) {
        notes.push(format!("{nvml_problem}; using the [hardware] section of {}", path.display()));
        let mut m = from_config(&path, cuda_context)?;
        m.notes = notes;
        return Ok(m);
    }
    Err(anyhow!(
        "no GPU found and none described: {nvml_problem}\n\
         hint: give the free memory llama.cpp reports at load with --free (e.g. --free 23557,14477), \
         or the cards with --gpu (e.g. --gpu 4090,5070ti:2500)"
    ))
}

fn from_config(path: &Path, cuda_context: Option<Bytes>) -> Result<Machine> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read the config {}", path.display()))?;
    let mut hardware =
        Hardware::from_toml(&text).with_context(|| format!("invalid config {}", path.display()))?;
    if let Some(c) = cuda_context {
        hardware.cuda_context = c;
    }
    Ok(Machine {
        hardware,
        source: DeviceSource::Config,
        config: Some(path.to_owned()),
        pci_bus_ids: Vec::new(),
        notes: Vec::new(),
    })
}

/// `$XDG_CONFIG_HOME/splitplan/config.toml`, else `~/.config/splitplan/config.toml`.
pub(crate) fn default_config() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = var("XDG_CONFIG_HOME").or_else(|| var("HOME").map(|h| h.join(".config")))?;
    Some(base.join("splitplan").join("config.toml"))
}

/// What `memory`, the plan command and `apply` work on: a model file and llama-server settings.
#[derive(Debug)]
pub struct Target {
    /// The model file to read (the first shard of a split model, or any shard).
    pub model: PathBuf,
    /// The models.conf profile it came from.
    pub profile: Option<ProfileSource>,
    /// The llama-server settings: the profile's flags, then the user's.
    pub settings: ServerSettings,
    /// The placement flags the user gave (after `--`, or all of a model file's flags): every plan
    /// keeps them.
    pub pins: Pins,
    /// `--ctx max` asks for the largest context.
    pub context: ContextRequest,
    /// `--ctx N`, when given.
    pub ctx_tokens: Option<u32>,
    /// What the settings parser found worth saying.
    pub notes: Vec<Note>,
}

/// The models.conf a profile was read from.
#[derive(Debug)]
pub struct ProfileSource {
    /// The profile id.
    pub id: String,
    /// The file.
    pub conf_path: PathBuf,
    /// Its text when read.
    pub conf_text: String,
}

impl Target {
    /// The `CTX_SIZE` a plan writes into the profile: the context asked for (`--ctx N`, or what
    /// `--ctx max` found), none when the profile's own was planned.
    pub fn ctx_to_write(&self, planned: u32) -> Option<u32> {
        match self.context {
            ContextRequest::Max => Some(planned),
            ContextRequest::AsGiven => self.ctx_tokens,
        }
    }

    /// The settings the planner starts from: the profile's `-ngl`, `-ts` and `-ot` replaced by
    /// the pins, so that llama.cpp's `--fit` is emulated as it would run on this profile with only
    /// what the user pinned. `-sm none -mg N` stay: they say which GPUs llama.cpp may use.
    pub fn plan_settings(&self) -> ServerSettings {
        let mut s = self.settings.clone();
        s.n_gpu_layers = self.pins.n_gpu_layers.unwrap_or(GpuLayers::Auto);
        s.tensor_split = self.pins.tensor_split.clone().unwrap_or_default();
        s.overrides.clone_from(&self.pins.overrides);
        s
    }
}

/// Where models.conf is: `--models-conf`/`SPLITPLAN_MODELS_CONF`, else `./models.conf`.
pub fn models_conf_path(models_conf: Option<&Path>) -> PathBuf {
    models_conf.map_or_else(|| PathBuf::from("models.conf"), Path::to_owned)
}

/// The models folder: `--models-dir`/`MODELS_DIR`, else `models/` beside models.conf.
pub fn models_dir(conf_path: &Path, models_dir: Option<&Path>) -> PathBuf {
    models_dir.map_or_else(|| conf_path.parent().unwrap_or(Path::new("")).join("models"), Path::to_owned)
}

/// Reads and parses models.conf.
pub fn read_models_conf(conf_path: &Path) -> Result<(String, profile::ModelsConf)> {
    let text = std::fs::read_to_string(conf_path).with_context(|| {
        format!(
            "could not read models.conf at '{}'\nhint: name it with --models-conf or SPLITPLAN_MODELS_CONF",
            conf_path.display()
        )
    })?;
    let conf = profile::parse(&text).map_err(|e| anyhow!("{}: {e}", conf_path.display()))?;
    Ok((text, conf))
}

/// The subcommands, for a hint when a first word meant as one names no profile.
const SUBCOMMANDS: [&str; 6] = ["inspect", "gpus", "memory", "advise", "apply", "confirm"];

/// `hint: did you mean …` when `word` is a subcommand misspelt.
fn subcommand_hint(word: &str) -> String {
    SUBCOMMANDS
        .iter()
        .find(|c| edit_distance(word, c) <= 2)
        .map_or_else(String::new, |c| format!("\nhint: the subcommand is `splitplan {c}`"))
}

/// Levenshtein distance, for short words.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Resolves `TARGET`, `--ctx`, the models.conf options and the llama-server flags after `--` into
/// a model file and settings. A TARGET that ends in `.gguf`, holds a `/`, or is an existing file is a
/// model file; anything else names a profile, whose model file must exist (the error says where it
/// was looked for).
pub fn target(
    target: &str,
    ctx: Option<&str>,
    models_conf: Option<&Path>,
    models_dir_arg: Option<&Path>,
    server_args: &[String],
) -> Result<Target> {
    let mut extra: Vec<String> = server_args.to_vec();
    let (context, tokens) = match ctx {
        Some("max") => (ContextRequest::Max, None),
        Some(ctx) => {
            let n = ctx_tokens(ctx)?;
            extra.extend(["-c".to_owned(), n.to_string()]);
            (ContextRequest::AsGiven, Some(n))
        }
        None => (ContextRequest::AsGiven, None),
    };
    // Flags appended here override the profile's or the user's own on purpose: that they repeat
    // an earlier flag is no news.
    let appended: Vec<String> = extra.iter().filter(|w| w.starts_with('-')).cloned().collect();
    let keep = |n: &Note| !matches!(n, Note::Repeated { flag } if appended.contains(flag));
    let is_file = Path::new(target).extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        || target.contains(std::path::MAIN_SEPARATOR)
        || target.contains('/')
        || Path::new(target).is_file();
    if is_file {
        // llama-server reads its LLAMA_ARG_* variables; so do we, from this process's environment.
        let env: Vec<(String, String)> =
            std::env::vars().filter(|(k, _)| k.starts_with("LLAMA_ARG_")).collect();
        let parsed = settings::parse(&extra, &env).context("invalid llama-server flags after --")?;
        let notes = parsed.notes.into_iter().filter(keep).collect();
        // A missing file is reported by the reader, with the path.
        let model = PathBuf::from(target);
        let pins = Pins::from_settings(&parsed.settings);
        return Ok(Target {
            model,
            profile: None,
            settings: parsed.settings,
            pins,
            context,
            ctx_tokens: tokens,
            notes,
        });
    }

    let conf_path = models_conf_path(models_conf);
    let text = match std::fs::read_to_string(&conf_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(anyhow!(
                "'{target}' is no .gguf file, so it names a profile of models.conf, but {} does not exist\n\
                 hint: give the models.conf with --models-conf or SPLITPLAN_MODELS_CONF, or the path of a .gguf file{}",
                conf_path.display(),
                subcommand_hint(target)
            ));
        }
        Err(e) => return Err(e).with_context(|| format!("could not read {}", conf_path.display())),
    };
    let in_conf = |e: optimizer_core::profile::ProfileError| anyhow!("{}: {e}", conf_path.display());
    let conf = profile::parse(&text).map_err(in_conf)?;
    let p =
        conf.find(target).map_err(|e| anyhow!("{}: {e}{}", conf_path.display(), subcommand_hint(target)))?;
    // The profile on its own first, so that its own mistakes are reported with their line.
    p.server_settings().map_err(in_conf)?;
    let explicit =
        settings::parse(&extra, &[] as &[(&str, &str)]).context("invalid llama-server flags after --")?;
    let mut args = p.server_args();
    args.extend(extra);
    // The container passes no LLAMA_ARG_* variables to llama-server.
    let parsed = settings::parse(&args, &[] as &[(&str, &str)])
        .context(format!("invalid llama-server flags after -- for profile [{}]", p.id))?;
    let dir = models_dir(&conf_path, models_dir_arg);
    let model = dir.join(p.model_path());
    if !model.is_file() {
        let from = if models_dir_arg.is_some() {
            "--models-dir or MODELS_DIR"
        } else {
            "the default: models/ beside models.conf"
        };
        return Err(anyhow!(
            "model file not found: '{}'\n\
             profile [{}] of {} has MODEL={}, looked for under the models folder '{}' ({from})\n\
             hint: name the models folder with --models-dir or MODELS_DIR",
            model.display(),
            p.id,
            conf_path.display(),
            p.model_path(),
            dir.display()
        ));
    }
    Ok(Target {
        model,
        profile: Some(ProfileSource {
            id: p.id.clone(),
            conf_path: conf_path.clone(),
            conf_text: text.clone(),
        }),
        settings: parsed.settings,
        pins: Pins::from_settings(&explicit.settings),
        context,
        ctx_tokens: tokens,
        notes: parsed.notes.into_iter().filter(keep).collect(),
    })
}

/// `--ctx N`.
fn ctx_tokens(ctx: &str) -> Result<u32> {
    ctx.parse::<u32>().ok().filter(|&n| n > 0).ok_or_else(|| {
        anyhow!("invalid value '{ctx}' for --ctx, expected a number of tokens (e.g. 131072) or max")
    })
}

/// `--margin a,b`: MiB per GPU, one value for all GPUs or one each, for `n_gpus` GPUs.
pub fn margins(spec: Option<&str>, n_gpus: usize) -> Result<Option<Vec<Bytes>>> {
    let Some(spec) = spec else { return Ok(None) };
    let values = spec
        .split(',')
        .map(|v| Bytes::parse_mib_default(v.trim()))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| {
        format!("invalid value '{spec}' for --margin: expected MiB per GPU, e.g. 128,1024")
    })?;
    match values.len() {
        1 => Ok(Some(vec![values[0]; n_gpus])),
        n if n == n_gpus => Ok(Some(values)),
        n => Err(anyhow!(
            "invalid value '{spec}' for --margin: {n} margins for {n_gpus} GPU(s)\nhint: give one margin for all GPUs or one per GPU"
        )),
    }
}

/// The planner's options from the command line.
pub fn plan_options(
    target: &Target,
    margin: Option<&str>,
    moderate_extra: &str,
    hardware: &Hardware,
) -> Result<PlanOptions> {
    let moderate_extra = Bytes::parse_mib_default(moderate_extra.trim())
        .with_context(|| format!("invalid value '{moderate_extra}' for --moderate-extra, expected MiB"))?;
    Ok(PlanOptions {
        margins: margins(margin, hardware.gpus.len())?,
        moderate_extra,
        context: target.context,
        pins: target.pins.clone(),
        ..PlanOptions::default()
    })
}
