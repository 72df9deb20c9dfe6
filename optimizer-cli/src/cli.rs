//! The command line as clap sees it. The doc comments are the help: the first line is the short
//! help (`-h`), the paragraphs after it the long help (`--help`), which names defaults and
//! environment variables. Nothing here interprets a value: `settings.rs` turns these into core types.
//!
//! One grammar for every command (docs/cli.md, STYLE.md): a subcommand, its arguments, and
//! llama-server's own flags after `--`. The plan command will take a first word that is no
//! subcommand (a profile or a model file): clap's `#[command(external_subcommand)]` on a
//! `Plan(Vec<String>)` variant of [`Command`] catches exactly that, and will be added with the
//! planner.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The exit codes, printed at the end of `--help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  done
  1  it ran, but the answer is no (does not fit, out of memory, a launch failed)
  2  bad input or usage (a missing or broken model file, an unknown flag, a malformed models.conf)";

/// Plan where llama.cpp puts every tensor of a model across GPUs and system RAM
///
/// splitplan reads a GGUF model's header (every shard, never the weights) and works out what
/// llama.cpp (build 11434) would allocate on each GPU and in system RAM, before a 60 GB model is
/// loaded.
///
/// Data goes to stdout; notes, warnings and errors go to stderr. Colour is used on a terminal only,
/// never when NO_COLOR is set.
#[derive(Debug, Parser)]
#[command(name = "splitplan", version, after_help = EXIT_CODES, max_term_width = 100)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
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
