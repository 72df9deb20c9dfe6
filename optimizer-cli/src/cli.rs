//! The command line as clap sees it. The doc comments are the help: the first line is the short
//! help (`-h`), the paragraphs after it the long help (`--help`), which names defaults and
//! environment variables. Nothing here interprets a value: `settings.rs` turns these into core types.
//!
//! One grammar for every command (STYLE.md): a subcommand, its arguments, and llama-server's own
//! flags after `--`. The plan command takes a first word that is no subcommand (a profile or a model
//! file): clap's `#[command(external_subcommand)]` catches exactly that, and [`Cli::parse_args`]
//! parses those words again as [`PlanArgs`], so that `splitplan PROFILE --help` shows the plan
//! command's own help.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Plan where llama.cpp puts every tensor of a model across GPUs and system RAM
///
/// splitplan reads a GGUF model's header (every shard, never the weights) and works out what
/// llama.cpp (build 11434) would allocate on each GPU and in system RAM, before a 60 GB model is
/// loaded.
///
/// The plan command is the first word that is no subcommand: a profile of models.conf or a model
/// file. It prints two placements (aggressive: the --fit-target margins; moderate: a further safety
/// margin) with the memory per GPU, the predicted speed, the flags and the llama-server command,
/// beside what llama.cpp's own --fit would do. `splitplan PROFILE --help` lists its options.
///
/// Data goes to stdout; notes, warnings and errors go to stderr. Colour is used on a terminal only,
/// never when NO_COLOR is set.
#[derive(Debug, Parser)]
#[command(
    name = "splitplan",
    version,
    override_usage = "splitplan <PROFILE|MODEL> [OPTIONS] [-- <LLAMA_SERVER_FLAGS>...]\n       splitplan <COMMAND>",
    after_help = TOP_AFTER_HELP,
    max_term_width = 100
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Examples and exit codes, at the end of `splitplan --help`.
const TOP_AFTER_HELP: &str = "\
Examples:
  splitplan qwen3-coder-ud-q5                      plan a profile of ./models.conf on the GPUs found
  splitplan qwen3-coder-ud-q5 --ctx max            the largest context that fits
  splitplan model.gguf --gpu 4090,5070ti:2500 -- -c 131072 -ub 512
                                                   a model file on a described pair of GPUs
  splitplan advise                                 advice_test_plan.md for every profile
  splitplan apply qwen3-coder-ud-q5 --plan moderate
                                                   write the moderate plan into the profile
  splitplan confirm qwen3-coder-ud-q5              prove it with real launches

Exit codes:
  0  done
  1  it ran, but the answer is no (does not fit, out of memory, a launch failed)
  2  bad input or usage (a missing or broken model file, an unknown flag, a malformed models.conf)
  130  confirm was interrupted (Ctrl-C, SIGTERM) and stopped its llama-server";

/// Examples and exit codes, at the end of the plan command's `--help`.
const PLAN_AFTER_HELP: &str = "\
Examples:
  splitplan qwen3-coder-ud-q5
  splitplan qwen3-coder-ud-q5 --ctx 262144 --free 23557,14477
  splitplan qwen3-coder-ud-q5 --ctx max --json
  splitplan model.gguf --gpu 4090,5070ti:2500 --ram 64G -- -c 131072 -ub 512 -ctk q8_0 -ctv q8_0
  splitplan qwen3-coder-ud-q5 -- -ngl 99 -ot 'blk\\.0\\.=CUDA0'   (pinned: kept in both plans)

Exit codes:
  0  both plans fit
  1  nothing fits (the message says what is short and by how much)
  2  bad input or usage (unknown profile, missing model file, conflicting pins, an unknown flag)";

impl Cli {
    /// Parses the process's arguments, the plan command's included.
    pub fn parse_args() -> Result<Cli, clap::Error> {
        let mut cli = Cli::try_parse()?;
        if let Command::External(words) = &cli.command {
            let args = PlanArgs::try_parse_from(
                std::iter::once("splitplan".to_owned()).chain(words.iter().cloned()),
            )?;
            cli.command = Command::Plan(Box::new(args));
        }
        Ok(cli)
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The plan command's words (a first word that is no subcommand), before they are parsed.
    #[command(external_subcommand)]
    External(Vec<String>),

    /// The plan command, parsed.
    #[command(skip)]
    Plan(Box<PlanArgs>),

    /// Write advice_test_plan.md: both plans of every profile, with tables for test results
    ///
    /// For each profile named (all active profiles of models.conf when none is): the profile's
    /// current lines, the model's architecture, what each GPU holds at the profile's context with a
    /// bar per GPU, Suggestion A (aggressive) and Suggestion B (moderate) as exact models.conf
    /// lines with the expected VRAM per GPU, graph splits and speed, what llama.cpp's --fit would
    /// do, and empty test-result tables that `splitplan confirm` fills in the same shape. Profiles
    /// are grouped by model. The file goes beside models.conf unless --out; an existing one is kept
    /// as .bak.
    Advise(AdviseArgs),

    /// Write a plan into a profile of models.conf
    ///
    /// Plans the profile as the plan command does and rewrites only that profile's lines: the
    /// placement flags in EXTRA_ARGS (-ot, -ts, -ngl, --n-cpu-moe, --fit*, -sm, -mg) and the FIT,
    /// N_GPU_LAYERS and CTX_SIZE keys (a missing key goes after the profile's last key line).
    /// Every other byte of the file stays as it was. The file is replaced through a temporary file
    /// and a rename; the previous one is kept as models.conf.bak. Prints the lines that changed.
    Apply(ApplyArgs),

    /// Show what a model file holds that matters for memory
    ///
    /// Reads the GGUF header of MODEL and every other shard of a split model, never the weights, so
    /// header-only files and partial downloads work (and are called what they are). Prints the
    /// architecture and the hyperparameters that decide memory (layers, attention kinds, heads,
    /// experts, sliding window, recurrent state, MLA), the files read, a table of every layer (its
    /// dense and expert weights, its KV cache per 1,024 tokens at f16 and at q8_0) and the tensor
    /// types.
    Inspect(InspectArgs),

    /// List the GPUs a plan is for: found through NVML, or described
    ///
    /// Where the GPUs come from, first match wins: --free and --gpu; the [hardware] section of the
    /// config named by --config or SPLITPLAN_CONFIG; NVML (unless --no-nvml); the [hardware]
    /// section of the default config file when it exists. NVML's GPUs are put in CUDA's order:
    /// fastest first, as CUDA numbers them by default, or PCI bus order when
    /// CUDA_DEVICE_ORDER=PCI_BUS_ID; CUDA_VISIBLE_DEVICES is applied as CUDA applies it. Check the
    /// order against the PCI bus ids in llama-server's "using device CUDA0 (…) (0000:01:00.0)" line.
    Gpus(GpusArgs),

    /// Predict llama.cpp's memory per GPU and in system RAM for a model and llama-server flags
    ///
    /// Prints what llama.cpp (build 11434) would allocate, in the shape of its own memory breakdown
    /// (model, context and compute per GPU and Host, in MiB rounded down as llama.cpp rounds them),
    /// the output buffer, host RAM, and what is left of each GPU's free memory. The prediction is
    /// for the flags as given: --fit is not applied. Compute buffers are predicted phase by phase,
    /// each part marked exact or calibrated (--json lists them; docs/accuracy.md says how close they
    /// come). Exits with 1 when some GPU is over after the first long request.
    ///
    /// MODEL is a .gguf file (any shard of a split model); PROFILE a profile of models.conf, whose
    /// llama-server flags come first, the flags after -- next. For a .gguf file, llama-server's
    /// LLAMA_ARG_* environment variables apply, as they would to llama-server; for a profile they do
    /// not (the user's container does not pass them).
    ///
    /// The GPUs are found or described as for `splitplan gpus` (see its --help).
    Memory(MemoryArgs),

    /// Prove a placement by launching llama-server: detect out-of-memory, bisect, measure
    ///
    /// Launches the real llama-server with the profile's command (or MODEL and the flags after
    /// --), each time with -lv 4, --host 127.0.0.1, a free port and a log file kept for you;
    /// waits for /health, sends a worst-case request (a prompt filling --fill of the context, then
    /// --n-predict generated tokens), samples each GPU's memory through NVML, and stops the server
    /// (SIGINT, then SIGKILL after --grace), always, Ctrl-C included. On out-of-memory it steps back
    /// along the ladder of candidate placements by what was missing, and stops at the most
    /// GPU-resident placement that loaded and survived the request: usually one or two launches,
    /// at most ⌈log2(rungs)⌉ + 2.
    ///
    /// llama-server is --llama-server, else LLAMA_SERVER, else llama-server on PATH; or a launch
    /// template (--launch-template, SPLITPLAN_LAUNCH_TEMPLATE, or launch_template in the [confirm]
    /// section of the config) for Docker setups, with {args} where the arguments go, {args_plain}
    /// for an unquoted list (EXTRA_ARGS={args_plain}) and {port}. The load timeout is one minute
    /// plus the model files read at 250 MiB/s. Measurements go to the calibration cache
    /// ($SPLITPLAN_CACHE_DIR, else $XDG_CACHE_HOME/splitplan, else ~/.cache/splitplan) unless
    /// --no-cache; logs to its logs/ folder unless --log-dir.
    Confirm(ConfirmArgs),
}

/// `splitplan inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The model: a .gguf file, or any shard of a split model (NAME-00001-of-00003.gguf)
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,

    /// Print JSON instead of tables (schema: docs/json.md, "inspect")
    #[arg(long)]
    pub json: bool,
}

/// `splitplan gpus`.
#[derive(Debug, Args)]
pub struct GpusArgs {
    /// How the GPUs are given.
    #[command(flatten)]
    pub devices: DeviceArgs,

    /// Print JSON instead of a table (schema: docs/json.md, "gpus")
    #[arg(long)]
    pub json: bool,
}

/// `splitplan memory`.
#[derive(Debug, Args)]
pub struct MemoryArgs {
    /// A .gguf file (any shard of a split model) or a profile of models.conf
    #[arg(value_name = "MODEL|PROFILE")]
    pub target: String,

    /// The context in tokens: -c N after the other llama-server flags
    ///
    /// The same as -c N after --. (`max`, the largest context that fits, is the plan command's.)
    #[arg(long, value_name = "N|max")]
    pub ctx: Option<String>,

    /// The models.conf that PROFILE is read from [default: ./models.conf]
    #[arg(long, env = "SPLITPLAN_MODELS_CONF", value_name = "FILE")]
    pub models_conf: Option<PathBuf>,

    /// The folder profiles' MODEL paths are relative to [default: models/ beside models.conf]
    #[arg(long, env = "MODELS_DIR", value_name = "DIR")]
    pub models_dir: Option<PathBuf>,

    /// How the GPUs are given.
    #[command(flatten)]
    pub devices: DeviceArgs,

    /// Print JSON instead of tables (schema: docs/json.md, "memory")
    #[arg(long)]
    pub json: bool,

    /// llama-server flags, after --, spelled as llama-server spells them
    ///
    /// For example: -- -c 131072 -ub 512 -ctk q8_0 -ctv q8_0 -ot "exps=CPU". They are read by the
    /// same rules as llama-server build 11434 reads them: an unknown flag is an error.
    #[arg(last = true, value_name = "LLAMA_SERVER_FLAGS", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
}

/// `splitplan confirm`.
#[derive(Debug, Args)]
#[allow(clippy::struct_excessive_bools)] // each is one on/off flag of the command line
pub struct ConfirmArgs {
    /// A profile of models.conf, or a model file (.gguf)
    #[arg(value_name = "PROFILE|MODEL")]
    pub target: String,

    /// llama-server flags, added after the profile's (a later flag overrides an earlier one)
    #[arg(last = true, value_name = "LLAMA-SERVER FLAGS", allow_hyphen_values = true)]
    pub server_flags: Vec<String>,

    /// The models.conf to read [default: ./models.conf]
    #[arg(long, env = "SPLITPLAN_MODELS_CONF", value_name = "FILE")]
    pub models_conf: Option<PathBuf>,

    /// The folder the profiles' MODEL paths are under [default: models/ beside models.conf]
    #[arg(long, env = "MODELS_DIR", value_name = "DIR")]
    pub models_dir: Option<PathBuf>,

    /// The llama-server binary [default: llama-server on PATH]
    #[arg(long, env = "LLAMA_SERVER", value_name = "PATH")]
    pub llama_server: Option<PathBuf>,

    /// A command that starts llama-server, with {args} where its arguments go (Docker setups)
    #[arg(long, env = "SPLITPLAN_LAUNCH_TEMPLATE", value_name = "COMMAND")]
    pub launch_template: Option<String>,

    /// The ladder of candidate placements, as JSON (schema: docs/json.md, "ladder")
    ///
    /// [default: the planner's: the aggressive plan, then plans with fewer expert tensors on the
    /// GPUs down to the moderate plan and beyond, then the last of them at 196,608 and 131,072
    /// tokens when the context is larger. When the model cannot be planned (no GPU found or
    /// described, a model file that is not a GGUF), the profile's own placement and those context
    /// steps.]
    #[arg(long, value_name = "FILE")]
    pub ladder: Option<PathBuf>,

    /// How the GPUs are given, for the planner's ladder (see `splitplan gpus --help`).
    #[command(flatten)]
    pub devices: DeviceArgs,

    /// The share of the context the worst-case prompt fills, from 0 to 1 [default: 0.25]
    #[arg(long, value_name = "SHARE", default_value_t = 0.25)]
    pub fill: f64,

    /// Tokens generated after the worst-case prompt
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub n_predict: u32,

    /// Speed runs after the worst-case request: a 512-token prompt and 256 generated tokens each
    ///
    /// Their medians are the speed in the results (prompt and decode tokens per second, as
    /// llama-server's `timings` report them); 0 skips them.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub speed_runs: u32,

    /// Go on when another program already computes on a GPU
    ///
    /// By default confirm stops when NVML lists a compute process on a GPU (a llama-server still
    /// running, a training job): its memory would make every measurement wrong. With this flag
    /// its memory is simply not free, as llama.cpp will see it.
    #[arg(long)]
    pub allow_busy: bool,

    /// Measure llama.cpp's own --fit beside the proven placement on this machine
    ///
    /// After the search: one launch of the same command with the placement flags replaced by
    /// `--fit on --fit-target <margins>` (the worst-case request and the speed runs), then the
    /// proven placement once more, so that the speed runs alternate (placement, --fit,
    /// placement). Prints both side by side: what --fit chose, VRAM left at the peak, speed.
    #[arg(long)]
    pub compare_fit: bool,

    /// Seconds a load may take [default: 60 + the model size at 250 MiB/s]
    #[arg(long, value_name = "SECS")]
    pub load_timeout: Option<u64>,

    /// Seconds the worst-case request may take [default: 120 + the prompt at 50 tokens/s]
    #[arg(long, value_name = "SECS")]
    pub request_timeout: Option<u64>,

    /// Seconds between SIGINT and SIGKILL when stopping llama-server
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub grace: u64,

    /// The margin per GPU that must stay free at the peak, MiB (one value for all, or one each)
    ///
    /// [default: the profile's --fit-target, else 128,1024]. Headroom beyond it lets the search
    /// try a more GPU-resident placement; a prediction off by more than it is reported.
    #[arg(long, value_name = "MiB,…")]
    pub margin: Option<String>,

    /// Where the llama-server logs go [default: logs/ in the cache folder]
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,

    /// Neither read nor write the calibration cache
    #[arg(long)]
    pub no_cache: bool,

    /// Write the proven placement to the profile in models.conf (a .bak is kept beside it)
    #[arg(long)]
    pub apply: bool,

    /// The advice_test_plan.md whose results table for this profile is filled in
    ///
    /// [default: advice_test_plan.md beside models.conf, when it exists (`splitplan advise` writes
    /// it)]. The proven suggestion's table (A or B, else a table of its own) is replaced, with the
    /// `--fit` comparison under it when there is one; nothing else in the file changes, and the
    /// previous version is kept as .bak.
    #[arg(long, value_name = "FILE")]
    pub advice: Option<PathBuf>,

    /// Print JSON instead of the results table (schema: docs/json.md, "confirm")
    #[arg(long)]
    pub json: bool,

    /// No progress on stderr
    #[arg(long, short)]
    pub quiet: bool,
}

/// The plan command: `splitplan PROFILE|MODEL [OPTIONS] [-- FLAGS]`.
#[derive(Debug, Parser)]
#[command(
    name = "splitplan",
    about = "Plan where llama.cpp puts every tensor: an aggressive and a moderate placement",
    long_about = "Plan where llama.cpp puts every tensor: an aggressive and a moderate placement\n\n\
        Prints, for each plan, the memory per GPU (weights, KV cache, recurrent state, compute \
        buffers, llama.cpp's overhead beyond its own breakdown, the margin, what is left) with a bar \
        per GPU, the predicted decode and prompt speed, the graph splits, the placement flags \
        (-ngl, -ts, -ot, --fit off) and the full llama-server command; then what llama.cpp's own \
        --fit would choose for the same settings, with its speed and memory; then notes: what was \
        pinned, and what a smaller context buys.\n\n\
        The aggressive plan keeps the --margin (default: the profile's --fit-target, 128,1024) free \
        on each GPU after the first long request; the moderate plan keeps --moderate-extra more.\n\n\
        PROFILE is a section of models.conf: its llama-server flags are the starting point, and its \
        placement flags are replaced. Flags after -- are pinned: a -ngl, -ts, -ot or --n-cpu-moe \
        given there is kept in both plans, and the rest is planned around it.",
    override_usage = "splitplan <PROFILE|MODEL> [OPTIONS] [-- <LLAMA_SERVER_FLAGS>...]",
    after_help = PLAN_AFTER_HELP,
    max_term_width = 100
)]
pub struct PlanArgs {
    /// What to plan.
    #[command(flatten)]
    pub target: TargetArgs,

    /// The margins of the aggressive plan per GPU, MiB (one value for all, or one per GPU)
    ///
    /// What each GPU keeps free after the first long request, on top of llama.cpp's own overhead
    /// beyond its breakdown. [default: the settings' --fit-target, which for a profile is its
    /// FIT_TARGET, else 128,1024]
    #[arg(long, value_name = "MiB,…")]
    pub margin: Option<String>,

    /// What the moderate plan keeps free on every GPU beyond the aggressive margins
    #[arg(long, value_name = "MiB", default_value = "1024")]
    pub moderate_extra: String,

    /// How the GPUs are given.
    #[command(flatten)]
    pub devices: DeviceArgs,

    /// Print JSON instead of tables (schema: docs/json.md, "plan")
    #[arg(long)]
    pub json: bool,

    /// llama-server flags, after --, spelled as llama-server spells them; placement flags are pinned
    #[arg(last = true, value_name = "LLAMA_SERVER_FLAGS", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
}

/// The model, its context and where profiles come from: shared by the plan command and `apply`.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// A profile of models.conf, or a .gguf file (any shard of a split model)
    #[arg(value_name = "PROFILE|MODEL")]
    pub target: String,

    /// The context in tokens, or max: the largest context whose dense parts and KV cache fit on
    /// the GPUs with the moderate margins
    #[arg(long, value_name = "N|max")]
    pub ctx: Option<String>,

    /// The models.conf that PROFILE is read from [default: ./models.conf]
    #[arg(long, env = "SPLITPLAN_MODELS_CONF", value_name = "FILE")]
    pub models_conf: Option<PathBuf>,

    /// The folder profiles' MODEL paths are relative to [default: models/ beside models.conf]
    #[arg(long, env = "MODELS_DIR", value_name = "DIR")]
    pub models_dir: Option<PathBuf>,
}

/// `splitplan advise`.
#[derive(Debug, Args)]
pub struct AdviseArgs {
    /// The profiles to advise on [default: every active profile of models.conf]
    #[arg(value_name = "PROFILE")]
    pub profiles: Vec<String>,

    /// Where to write [default: advice_test_plan.md beside models.conf]; - for stdout
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,

    /// The models.conf to read [default: ./models.conf]
    #[arg(long, env = "SPLITPLAN_MODELS_CONF", value_name = "FILE")]
    pub models_conf: Option<PathBuf>,

    /// The folder profiles' MODEL paths are relative to [default: models/ beside models.conf]
    #[arg(long, env = "MODELS_DIR", value_name = "DIR")]
    pub models_dir: Option<PathBuf>,

    /// The margins of the aggressive plans per GPU, MiB [default: each profile's --fit-target]
    #[arg(long, value_name = "MiB,…")]
    pub margin: Option<String>,

    /// What the moderate plans keep free on every GPU beyond the aggressive margins
    #[arg(long, value_name = "MiB", default_value = "1024")]
    pub moderate_extra: String,

    /// How the GPUs are given.
    #[command(flatten)]
    pub devices: DeviceArgs,
}

/// `splitplan apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The profile, and its context.
    #[command(flatten)]
    pub target: TargetArgs,

    /// Which plan to write
    #[arg(long, value_enum, value_name = "PLAN")]
    pub plan: PlanChoice,

    /// The margins of the aggressive plan per GPU, MiB [default: the profile's --fit-target]
    #[arg(long, value_name = "MiB,…")]
    pub margin: Option<String>,

    /// What the moderate plan keeps free on every GPU beyond the aggressive margins
    #[arg(long, value_name = "MiB", default_value = "1024")]
    pub moderate_extra: String,

    /// How the GPUs are given.
    #[command(flatten)]
    pub devices: DeviceArgs,

    /// Show the changed lines, write nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// `--plan`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanChoice {
    /// The --fit-target margins.
    Aggressive,
    /// A further safety margin.
    Moderate,
}

/// How the GPUs a plan is for are given: shared by every command that needs them.
#[derive(Debug, Args)]
pub struct DeviceArgs {
    /// Free memory per GPU as llama.cpp reports it at load, in CUDA order
    ///
    /// The numbers of llama-server's "using device CUDA0 (…) - 23557 MiB free" lines: MiB, or a
    /// size with a unit (23G), separated by commas. They are used as they are: llama.cpp reports
    /// them after its own CUDA context. With --gpu, the cards come from --gpu and their free memory
    /// from here.
    #[arg(long, value_name = "MiB,…")]
    pub free: Option<String>,

    /// The GPUs by total memory or card name, in CUDA order
    ///
    /// Each entry is a total (24564 MiB, or a size with a unit: 24G) or a card name (4090, 5070ti,
    /// 3090, a6000, h100, h200, …), optionally followed by :USED, the memory other programs and the
    /// desktop hold on it (5070ti:2500). The free memory llama.cpp will report is the total, less
    /// USED, less its CUDA context (--cuda-context).
    #[arg(long, value_name = "GPU,…")]
    pub gpu: Option<String>,

    /// splitplan's config file; its [hardware] section describes the machine
    ///
    /// [default: $XDG_CONFIG_HOME/splitplan/config.toml (~/.config/splitplan/config.toml), read
    /// when it exists and NVML finds no GPU]. The format is in the README.
    #[arg(long, env = "SPLITPLAN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Memory llama.cpp's CUDA context takes per GPU before it reports free memory
    ///
    /// MiB, or a size with a unit. [default: the config's cuda_context, else 524 MiB, measured on
    /// an H200 with llama.cpp build 11434: NVML's free memory less what llama.cpp then reported]
    #[arg(long, value_name = "MiB")]
    pub cuda_context: Option<String>,

    /// Do not read the GPUs through NVML
    #[arg(long)]
    pub no_nvml: bool,

    /// System RAM of the machine planned for (64G, 65536 MiB) [default: the config's host_ram,
    /// else this machine's]
    #[arg(long, value_name = "SIZE")]
    pub ram: Option<String>,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }
}
