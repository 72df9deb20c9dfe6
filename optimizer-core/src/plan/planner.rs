//! The planner's entry point: two placements (aggressive and moderate) for a model, its
//! llama-server settings and a machine, each rendered as flags, parsed back by the one settings
//! parser and checked with the memory prediction of exactly those flags; beside them, what
//! llama.cpp's own `--fit` would choose for the same inputs.

use serde::Serialize;

use crate::gguf::GgmlType;
use crate::memory::{
    CUDA_ALIGNMENT, Location, MATRIX_ROW_PADDING, MemoryPrediction, ResolvedContext, cuda_tensor_size,
};
use crate::model::{LayerSlot, ModelDescription, TensorRole};
use crate::render::{PlacementFlags, placement_flags};
use crate::settings::{CtxSize, GpuLayers, OverrideTarget, ServerSettings, SplitMode, TensorOverride};
use crate::units::Bytes;

use super::Hardware;
use super::budget::{ComputeReserve, Evaluation, Evaluator};
use super::error::PlanError;
use super::fit::{DeviceUse, FitInputs, FitOutcome, FitStatus, Probe, emulate_fit};
use super::objective::{Resolved, Speed, SpeedInputs, SpeedModel, predict_speed};
use super::placement::{Device, Placement};
use super::search::{Costs, ExpertCost, Split, candidate_splits, fill, gpu_bytes};

/// The extra margin of the moderate plan by default: about one expert layer of Qwen3-Coder-Next,
/// room for a desktop that takes more of the display GPU than when the plan was made.
pub const DEFAULT_MODERATE_EXTRA: Bytes = Bytes::from_mib(1024);

/// System RAM kept for the operating system and other programs by default.
pub const DEFAULT_HOST_RESERVE: Bytes = Bytes::from_gib(4);

/// What the user fixed: placement flags given explicitly, which every plan keeps.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pins {
    /// `-ngl`.
    pub n_gpu_layers: Option<GpuLayers>,
    /// `-ts`.
    pub tensor_split: Option<Vec<f32>>,
    /// `-ot`, `--cpu-moe`, `--n-cpu-moe`, `--n-cpu-ffn`, in order: they come first in every plan's
    /// `-ot` list, so they win over the planner's entries (first match wins).
    pub overrides: Vec<TensorOverride>,
}

impl Pins {
    /// The placement flags set in `explicit`, settings parsed from the flags the user gave on the
    /// command line (not a profile's): whatever differs from llama-server's defaults.
    pub fn from_settings(explicit: &ServerSettings) -> Pins {
        Pins {
            n_gpu_layers: (explicit.n_gpu_layers != GpuLayers::Auto).then_some(explicit.n_gpu_layers),
            tensor_split: (!explicit.tensor_split.is_empty()).then(|| explicit.tensor_split.clone()),
            overrides: explicit.overrides.clone(),
        }
    }

    /// Whether anything is pinned.
    pub fn is_empty(&self) -> bool {
        self.n_gpu_layers.is_none() && self.tensor_split.is_none() && self.overrides.is_empty()
    }
}

/// Which context to plan for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ContextRequest {
    /// The settings' `-c` (the model's training context when unset or 0).
    #[default]
    AsGiven,
    /// The largest context whose dense parts and KV cache fit on the GPUs (experts go to RAM first).
    Max,
}

/// Options of [`plan`].
#[derive(Clone, Debug, PartialEq)]
pub struct PlanOptions {
    /// Margins per GPU for the aggressive plan; `None` takes the settings' `--fit-target`.
    pub margins: Option<Vec<Bytes>>,
    /// What the moderate plan keeps free on every GPU on top of the aggressive margins.
    pub moderate_extra: Bytes,
    /// llama.cpp's memory beyond its breakdown after the first long request, per GPU, instead of
    /// the memory model's calibrated term ([`crate::memory::overhead`]).
    pub overhead: Option<Bytes>,
    /// Where compute-buffer sizes come from.
    pub compute: ComputeReserve,
    /// System RAM kept free.
    pub host_reserve: Bytes,
    /// The context to plan for.
    pub context: ContextRequest,
    /// The speed model.
    pub speed: SpeedModel,
    /// What the user pinned.
    pub pins: Pins,
    /// Also emulate llama.cpp's `--fit` and look for `--fit-target` margins that reproduce each
    /// plan.
    pub emulate_fit: bool,
    /// Check every placement the search settles on against the graph-level simulation of the
    /// compute buffers (llama.cpp's own sizes) and tighten it until it keeps its margins there;
    /// off, the phase model's estimate is the check too (faster, for the context ladder's rungs).
    pub simulate_checks: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            margins: None,
            moderate_extra: DEFAULT_MODERATE_EXTRA,
            overhead: None,
            compute: ComputeReserve::Modelled,
            host_reserve: DEFAULT_HOST_RESERVE,
            context: ContextRequest::AsGiven,
            speed: SpeedModel::CALIBRATED,
            pins: Pins::default(),
            emulate_fit: true,
            simulate_checks: true,
        }
    }
}

/// Which of the two plans.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanKind {
    /// The user's margins on top of llama.cpp's runtime overhead.
    Aggressive,
    /// A further safety margin.
    Moderate,
}

/// One plan.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    /// Aggressive or moderate.
    pub kind: PlanKind,
    /// Where everything goes.
    pub placement: Placement,
    /// The placement flags (`-ngl`, `-ts`, `-ot`, `--fit off`), the user's pinned overrides first.
    pub placement_args: Vec<String>,
    /// The full llama-server arguments: the settings with the placement flags.
    pub args: Vec<String>,
    /// Memory per GPU and host, as predicted for exactly `args`.
    pub memory: Evaluation,
    /// The margin each GPU keeps beyond the runtime overhead.
    pub margins: Vec<Bytes>,
    /// Predicted speed and graph splits.
    pub speed: Speed,
    /// Routed-expert bytes on the GPUs.
    pub gpu_expert_bytes: Bytes,
    /// Layers whose routed experts are all on GPUs.
    pub gpu_expert_layers: usize,
    /// `--fit on --fit-target …` margins with which llama.cpp's own fitter lands on this plan,
    /// when the emulation finds some.
    pub fit_target_form: Option<Vec<Bytes>>,
    /// `-ngl`/`-ts`/`--n-cpu-moe` arguments that express this plan exactly, when they can.
    pub n_cpu_moe_form: Option<Vec<String>>,
}

/// What llama.cpp's `--fit` would do with the same settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FitPlan {
    /// The emulation's outcome.
    pub outcome: FitOutcome,
    /// The flags fit would apply, as `llama-fit-params` prints them (`-c N -ngl M -ts … -ot …`).
    pub fit_args: Vec<String>,
    /// Memory per GPU for them, checked against the plan's runtime overhead and zero margin: a
    /// negative `left` means the first long request is predicted to run out of memory.
    pub memory: Evaluation,
    /// Predicted speed.
    pub speed: Speed,
}

/// Both plans and what `--fit` would do.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlanSet {
    /// The context the plans are for.
    pub n_ctx: u32,
    /// As many layers on the GPUs as fit with the user's margins.
    pub aggressive: Plan,
    /// With a further safety margin.
    pub moderate: Plan,
    /// llama.cpp's own `--fit`, emulated (unless turned off).
    pub fit: Option<FitPlan>,
    /// Things worth telling the user.
    pub notes: Vec<String>,
}

/// Plans `model` with `settings` on `hardware`.
pub fn plan(
    model: &ModelDescription,
    settings: &ServerSettings,
    hardware: &Hardware,
    options: &PlanOptions,
) -> Result<PlanSet, PlanError> {
    let mut planner = Planner::new(model, settings, hardware, options)?;
    let n_ctx = match options.context {
        ContextRequest::AsGiven => None,
        ContextRequest::Max => Some(super::context::max_dense_context(&mut planner)?),
    };
    if let Some(n) = n_ctx {
        planner.base.ctx_size = CtxSize::Tokens(n);
        // llama.cpp's fit is compared at the same context.
        planner.given.ctx_size = CtxSize::Tokens(n);
    }
    planner.plan_set()
}

/// Memory and speed of a configuration as given (a profile's own placement, say), checked against
/// the same margins and overhead the plans keep.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Assessment {
    /// Memory per GPU and host.
    pub memory: Evaluation,
    /// Predicted speed and graph splits.
    pub speed: Speed,
    /// Where every tensor goes.
    #[serde(skip)]
    pub resolved: Resolved,
}

/// Predicts memory and speed for `settings` exactly as given (no planning), with the aggressive
/// margins of `options` (or the settings' `--fit-target`).
pub fn assess(
    model: &ModelDescription,
    settings: &ServerSettings,
    hardware: &Hardware,
    options: &PlanOptions,
) -> Result<Assessment, PlanError> {
    let mut planner = Planner::new(model, settings, hardware, options)?;
    let margins = planner.margins.clone();
    let memory = planner.eval.evaluate(settings, &margins)?;
    let resolved = planner.resolve(&memory.prediction);
    let speed = predict_speed(model, &resolved, &planner.speed_inputs(settings), &options.speed);
    Ok(Assessment { memory, speed, resolved })
}

/// The planner's state for one model, settings and machine.
pub(crate) struct Planner<'m> {
    pub(crate) model: &'m ModelDescription,
    pub(crate) hardware: Hardware,
    pub(crate) options: PlanOptions,
    /// The settings without placement flags, with the pins.
    pub(crate) base: ServerSettings,
    /// The settings as given (for the fit emulation).
    pub(crate) given: ServerSettings,
    pub(crate) eval: Evaluator<'m>,
    pub(crate) margins: Vec<Bytes>,
    names: Vec<String>,
    /// Costs already measured, by GPUs in use and context.
    costs_cache: Vec<(Vec<usize>, CtxSize, Costs)>,
    /// The dense split the pins fix, once known.
    pinned_cache: Option<PinnedSplit>,
}

impl<'m> Planner<'m> {
    pub(crate) fn new(
        model: &'m ModelDescription,
        settings: &ServerSettings,
        hardware: &Hardware,
        options: &PlanOptions,
    ) -> Result<Planner<'m>, PlanError> {
        let n = hardware.gpus.len();
        check_pins(&options.pins, n)?;
        let mut base = settings.clone();
        base.n_gpu_layers = options.pins.n_gpu_layers.unwrap_or(GpuLayers::Auto);
        base.tensor_split = options.pins.tensor_split.clone().unwrap_or_default();
        base.overrides.clone_from(&options.pins.overrides);
        base.split_mode = SplitMode::Layer;
        base.main_gpu = 0;
        base.fit = false;
        let margins = options
            .margins
            .clone()
            .unwrap_or_else(|| (0..n).map(|i| settings.fit_target.for_device(i)).collect());
        let eval =
            Evaluator::new(model, hardware, options.compute.clone(), options.overhead, options.host_reserve)
                .with_simulated_checks(options.simulate_checks);
        Ok(Planner {
            model,
            hardware: hardware.clone(),
            options: options.clone(),
            base,
            given: settings.clone(),
            eval,
            margins,
            names: hardware.gpus.iter().map(super::Gpu::backend_name).collect(),
            costs_cache: Vec::new(),
            pinned_cache: None,
        })
    }

    fn speed_inputs(&self, s: &ServerSettings) -> SpeedInputs<'_> {
        SpeedInputs {
            hardware: &self.hardware,
            kv_types: (s.cache_type_k, s.cache_type_v),
            flash_attn: s.effective_flash_attn() != crate::settings::FlashAttn::Off,
            ubatch: s.ubatch_size,
            op_offload: s.op_offload,
            mtp: s.loads_mtp_layers(),
        }
    }

    /// The settings for placement flags `args` on top of the base settings, through the parser.
    pub(crate) fn settings_with(&self, placement_args: &[String]) -> Result<ServerSettings, PlanError> {
        let mut base = self.base.clone();
        base.overrides.clear();
        base.n_gpu_layers = GpuLayers::Auto;
        base.tensor_split.clear();
        let mut args = base.to_args();
        args.extend(placement_args.iter().cloned());
        Ok(ServerSettings::from_args(&args)?)
    }

    /// The placement flags of `p`, the pinned overrides first.
    fn placement_args(&self, p: &Placement) -> (PlacementFlags, Vec<String>) {
        let mut flags = placement_flags(self.model, p);
        if !self.options.pins.overrides.is_empty() {
            let mut all = self.options.pins.overrides.clone();
            all.extend(flags.overrides);
            flags.overrides = all;
        }
        let args = flags.args();
        (flags, args)
    }

    /// Byte costs of every placeable item, measured from a prediction of the base settings.
    pub(crate) fn costs(&mut self, use_gpus: &[usize]) -> Result<Costs, PlanError> {
        let ctx = self.base.ctx_size;
        if let Some((_, _, c)) = self.costs_cache.iter().find(|(g, c, _)| g == use_gpus && *c == ctx) {
            return Ok(c.clone());
        }
        let costs = self.measure_costs(use_gpus)?;
        self.costs_cache.push((use_gpus.to_vec(), ctx, costs.clone()));
        Ok(costs)
    }

    fn measure_costs(&mut self, use_gpus: &[usize]) -> Result<Costs, PlanError> {
        let model = self.model;
        let n = self.hardware.gpus.len();
        // Dense parts spread over the GPUs in use, experts in RAM: the compute buffers of a typical
        // plan, and where the pins put things.
        let mut probe = self.base.clone();
        if probe.overrides.is_empty()
            || !self.options.pins.overrides.iter().any(|o| o.pattern.contains("exps"))
        {
            probe.overrides.push(TensorOverride::cpu_moe());
        }
        if self.options.pins.tensor_split.is_none() && n > 1 {
            probe.tensor_split = (0..n).map(|g| if use_gpus.contains(&g) { 1.0 } else { 0.0 }).collect();
        }
        let prediction = self.eval.predict(&probe)?;
        let ctx = prediction.context.clone();
        let pinned: Vec<Option<Location>> = {
            let mut v = vec![None; model.tensors.len()];
            for tp in &prediction.placement.tensors {
                if let Some(i) = tp.override_index {
                    if i < self.options.pins.overrides.len() {
                        v[tp.tensor] = Some(tp.location);
                    }
                }
            }
            v
        };
        let mtp = self.base.loads_mtp_layers();
        let n_layer_all = model.n_layer_all;
        let mut dense = vec![0i64; n_layer_all];
        let mut experts: Vec<Vec<ExpertCost>> = vec![Vec::new(); n_layer_all];
        let mut output = 0i64;
        let mut fixed = vec![0i64; n];
        for (ti, t) in model.tensors.iter().enumerate() {
            if !t.is_loaded(mtp) {
                continue;
            }
            let bytes = signed(cuda_tensor_size(t));
            if let Some(loc) = pinned[ti] {
                if let Location::Gpu(g) = loc {
                    fixed[g] += bytes;
                }
                continue;
            }
            match (t.slot, t.role) {
                (LayerSlot::Layer(il), TensorRole::Experts { part, .. }) if il < n_layer_all => {
                    match experts[il].iter_mut().find(|e| e.part == part) {
                        Some(e) => e.bytes += bytes,
                        None => experts[il].push(ExpertCost { part, bytes }),
                    }
                }
                (LayerSlot::Layer(il), _) if il < n_layer_all => dense[il] += bytes,
                (LayerSlot::Output, _) => output += bytes,
                // One copy per GPU that holds layers: charged to every GPU in use.
                (LayerSlot::EveryLayer, _) => {
                    for &g in use_gpus {
                        fixed[g] += bytes;
                    }
                }
                _ => {}
            }
        }
        if model.tied_embeddings {
            if let Some(t) = model.tensor("token_embd.weight") {
                output += signed(cuda_tensor_size(t));
            }
        }
        for (il, d) in dense.iter_mut().enumerate() {
            *d += signed(state_bytes(model, &ctx, il));
        }
        for (il, e) in experts.iter_mut().enumerate() {
            let order = Costs::expert_order(model, il);
            e.sort_by_key(|c| order.iter().position(|p| *p == c.part).unwrap_or(usize::MAX));
        }
        for &g in use_gpus {
            let (compute, _) = self.eval.compute_of(&prediction, g)?;
            fixed[g] += signed(compute) + signed(self.eval.overhead_of(&prediction, g));
        }
        Ok(Costs { dense, experts, output, fixed })
    }

    /// The dense split the pins fix, if they fix one.
    fn pinned_split(&mut self) -> Result<Option<Split>, PlanError> {
        if let Some(PinnedSplit(split)) = &self.pinned_cache {
            return Ok(split.clone());
        }
        let split = self.measure_pinned_split()?;
        self.pinned_cache = Some(PinnedSplit(split.clone()));
        Ok(split)
    }

    fn measure_pinned_split(&mut self) -> Result<Option<Split>, PlanError> {
        let pins = &self.options.pins;
        if pins.n_gpu_layers.is_none() && pins.tensor_split.is_none() {
            return Ok(None);
        }
        let prediction = self.eval.predict(&self.base)?;
        let n = self.hardware.gpus.len();
        let slots: Vec<Location> = prediction
            .placement
            .layers
            .iter()
            .copied()
            .chain(std::iter::once(prediction.placement.output))
            .collect();
        let cpu_prefix = slots.iter().take_while(|l| **l == Location::Host).count();
        let mut counts = vec![0; n];
        for l in &slots[cpu_prefix..] {
            if let Location::Gpu(g) = l {
                counts[*g] += 1;
            }
        }
        Ok(Some(Split { cpu_prefix, counts }))
    }

    /// The budget of each GPU for a plan with these margins: free memory at load minus the margin.
    pub(crate) fn budgets(&self, extra: Bytes) -> Vec<i64> {
        (0..self.hardware.gpus.len())
            .map(|g| {
                let margin = self.margins.get(g).copied().unwrap_or(Bytes::ZERO) + extra;
                self.hardware.free_at_load(g).signed_sub(margin)
            })
            .collect()
    }

    /// The fastest placement for `budgets` among the dense splits tried, and the GPUs it was
    /// searched over.
    fn search(
        &mut self,
        budgets: &[i64],
        floor_bytes: Option<i64>,
    ) -> Result<(Placement, Vec<usize>), PlanError> {
        let model = self.model;
        let n = self.hardware.gpus.len();
        let n_layer_all = model.n_layer_all;
        let pinned = self.pinned_split()?;
        let speed_settings = self.base.clone();

        // One GPU when everything fits on one: the fastest such GPU.
        if pinned.is_none() && n > 1 {
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|a, b| {
                let bw = |g: usize| self.hardware.gpus[g].bandwidth_gbs.unwrap_or(0.0);
                bw(*b).total_cmp(&bw(*a)).then(a.cmp(b))
            });
            for g in order {
                let costs = self.costs(&[g])?;
                let split = candidate_splits(n_layer_all, n, &[g], 0, budgets).remove(0);
                if let Some(p) = fill(&costs, budgets, &split, &self.names) {
                    if p.experts_with_layers(model) && p.layers.iter().all(|l| l.dense == Device::Gpu(g)) {
                        return Ok((p, vec![g]));
                    }
                }
            }
        }

        let subsets = match &pinned {
            Some(_) => vec![(0..n).collect()],
            None => gpu_subsets(budgets),
        };
        let mut tightest: Option<PlanError> = None;
        for use_gpus in subsets {
            let costs = self.costs(&use_gpus)?;
            // A GPU left out takes nothing, not even experts.
            let masked: Vec<i64> =
                (0..n).map(|g| if use_gpus.contains(&g) { budgets[g] } else { 0 }).collect();
            let budgets = &masked[..];
            let candidates = match &pinned {
                Some(split) => vec![split.clone()],
                None => feasible_splits(&costs, budgets, n_layer_all, &use_gpus, true),
            };
            let mut best: Option<(f64, i64, Placement)> = None;
            for split in &candidates {
                let Some(p) = fill(&costs, budgets, split, &self.names) else { continue };
                let bytes: i64 = gpu_bytes(&costs, &p, n).iter().sum();
                if floor_bytes.is_some_and(|f| bytes < f) {
                    continue;
                }
                let resolved = Resolved::from_placement(model, &p, speed_settings.loads_mtp_layers());
                let speed =
                    predict_speed(model, &resolved, &self.speed_inputs(&speed_settings), &self.options.speed);
                let better = best.as_ref().is_none_or(|(s, b, _)| {
                    speed.decode_tps > *s * (1.0 + 1e-9)
                        || (speed.decode_tps >= *s * (1.0 - 1e-9) && bytes > *b)
                });
                if better {
                    best = Some((speed.decode_tps, bytes, p));
                }
            }
            if let Some((_, _, p)) = best {
                return Ok((p, use_gpus));
            }
            if tightest.is_none() {
                tightest = Some(self.does_not_fit(&costs, budgets, &use_gpus));
            }
        }
        Err(tightest.unwrap_or(PlanError::DoesNotFit {
            what: "the GPUs".into(),
            needed: Bytes::ZERO,
            available: Bytes::ZERO,
            deficit: Bytes::ZERO,
        }))
    }

    /// Whether the dense parts, with their KV cache, compute buffers and runtime overhead, fit on
    /// the GPUs with every routed expert in RAM and no layer on the CPU.
    pub(crate) fn dense_fits(&mut self, budgets: &[i64]) -> Result<bool, PlanError> {
        let n = self.hardware.gpus.len();
        for use_gpus in gpu_subsets(budgets) {
            let costs = self.costs(&use_gpus)?;
            let masked: Vec<i64> =
                (0..n).map(|g| if use_gpus.contains(&g) { budgets[g] } else { 0 }).collect();
            if !feasible_splits(&costs, &masked, self.model.n_layer_all, &use_gpus, false).is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The smallest thing that did not fit: the output layer, with the compute buffer and runtime
    /// overhead, on the GPU with the largest budget.
    fn does_not_fit(&self, costs: &Costs, budgets: &[i64], use_gpus: &[usize]) -> PlanError {
        let g = use_gpus.iter().copied().max_by_key(|&g| (budgets[g], std::cmp::Reverse(g))).unwrap_or(0);
        let needed = costs.fixed.get(g).copied().unwrap_or(0) + costs.output;
        let available = budgets.get(g).copied().unwrap_or(0);
        PlanError::DoesNotFit {
            what: format!(
                "the output layer with the compute buffer and runtime overhead on {} (the largest budget)",
                self.names.get(g).cloned().unwrap_or_default()
            ),
            needed: unsigned(needed),
            available: unsigned(available),
            deficit: unsigned(needed - available),
        }
    }

    /// Searches, then checks the flags with the full prediction and tightens until they keep every
    /// margin.
    fn make_plan(
        &mut self,
        kind: PlanKind,
        extra: Bytes,
        floor_bytes: Option<i64>,
    ) -> Result<Plan, PlanError> {
        let mut budgets = self.budgets(extra);
        let margins: Vec<Bytes> = (0..self.hardware.gpus.len())
            .map(|g| self.margins.get(g).copied().unwrap_or(Bytes::ZERO) + extra)
            .collect();
        let mut last: Option<(Placement, Evaluation, Vec<String>, Vec<String>)> = None;
        let (mut p, mut use_gpus) = self.search(&budgets, floor_bytes)?;
        for round in 0..MAX_TIGHTEN {
            let (_, placement_args) = self.placement_args(&p);
            let settings = self.settings_with(&placement_args)?;
            let eval = self.eval.evaluate(&settings, &margins)?;
            let over: Vec<i64> = eval.gpus.iter().map(|g| if g.fits() { 0 } else { -g.left() }).collect();
            let args = settings.to_args();
            last = Some((p.clone(), eval, placement_args, args));
            if over.iter().all(|&o| o <= 0) {
                break;
            }
            // Without any -ot, llama.cpp runs several GPUs as a pipeline (llama-context.cpp:432-437),
            // which prompt processing gains much from and which takes compute memory the search's
            // costs leave out. Tightening would pin an expert tensor with -ot and lose the pipeline:
            // a neighbouring -ts split that still needs no -ot is tried first.
            if round == 0
                && settings.overrides.is_empty()
                && let Some(q) = self.pipeline_neighbour(&p, &use_gpus, &margins)?
            {
                p = q;
                continue;
            }
            // The costs disagreed with the prediction (compute buffers move with the placement):
            // shrink the budgets of the GPUs that are over to what this placement costs there less
            // the overage, and fill the same dense split again, so the placement loses at least the
            // overage and the loop converges. (Shrinking the budget by the overage alone is not
            // enough when the costs are far below the prediction, as with pipeline parallelism's
            // compute buffers: the same placement came back eight times, GLM at 128 / 5,120 MiB.)
            let split = split_of(&p);
            let costs = self.costs(&use_gpus)?;
            let cost_now = gpu_bytes(&costs, &p, self.hardware.gpus.len());
            for (g, (b, o)) in budgets.iter_mut().zip(&over).enumerate() {
                if *o > 0 {
                    *b = (*b - o).min(cost_now.get(g).copied().unwrap_or(*b) - o);
                }
            }
            let masked: Vec<i64> =
                budgets.iter().enumerate().map(|(g, &b)| if use_gpus.contains(&g) { b } else { 0 }).collect();
            match fill(&costs, &masked, &split, &self.names) {
                Some(q) => p = q,
                // The same dense split no longer fits the shrunk budgets: search again under them,
                // which may move a layer to another GPU (GLM-4.7-Flash at 128 / 5,120 MiB margins: the
                // split was 15 MiB short on CUDA0 and the plan failed, where 6,144 MiB planned).
                None => match self.search(&budgets, floor_bytes) {
                    Ok((q, gpus)) => {
                        p = q;
                        use_gpus = gpus;
                    }
                    Err(_) => break,
                },
            }
        }
        let Some((placement, memory, placement_args, args)) = last else {
            return Err(PlanError::DoesNotFit {
                what: "the GPUs".into(),
                needed: Bytes::ZERO,
                available: Bytes::ZERO,
                deficit: Bytes::ZERO,
            });
        };
        if let Some(g) = memory.gpus.iter().find(|g| !g.fits()) {
            let needed = g.used() + g.margin;
            return Err(PlanError::DoesNotFit {
                what: format!("{} with its margin", g.name),
                needed,
                available: g.free_at_load,
                deficit: needed.saturating_sub(g.free_at_load),
            });
        }
        if memory.host.fits() == Some(false) {
            let needed = memory.host.used + memory.host.reserve;
            let total = memory.host.total.unwrap_or(Bytes::ZERO);
            return Err(PlanError::DoesNotFit {
                what: "system RAM (with the reserve kept for the system)".into(),
                needed,
                available: total,
                deficit: needed.saturating_sub(total),
            });
        }
        let settings = ServerSettings::from_args(&args)?;
        let resolved = self.resolve(&memory.prediction);
        let speed = predict_speed(self.model, &resolved, &self.speed_inputs(&settings), &self.options.speed);
        let (gpu_expert_bytes, gpu_expert_layers) = expert_stats(self.model, &placement);
        let n_cpu_moe_form = n_cpu_moe_form(self.model, &placement, &self.options.pins);
        Ok(Plan {
            kind,
            placement,
            placement_args,
            args,
            memory,
            margins,
            speed,
            gpu_expert_bytes,
            gpu_expert_layers,
            fit_target_form: None,
            n_cpu_moe_form,
        })
    }

    /// The fastest placement with every tensor on its own layer's GPU (no `-ot`, so pipeline
    /// parallel) whose dense split moves one boundary of `p`'s by up to three layers and which
    /// keeps every margin under the full prediction; `None` when there is none.
    fn pipeline_neighbour(
        &mut self,
        from: &Placement,
        use_gpus: &[usize],
        margins: &[Bytes],
    ) -> Result<Option<Placement>, PlanError> {
        let base = split_of(from);
        if base.cpu_prefix > 0 || use_gpus.len() < 2 {
            return Ok(None);
        }
        let costs = self.costs(use_gpus)?;
        // every expert on its own layer's GPU: no limit on the GPUs in use, the full prediction decides
        let roomy: Vec<i64> = (0..self.hardware.gpus.len())
            .map(|g| if use_gpus.contains(&g) { i64::MAX / 4 } else { 0 })
            .collect();
        let mut best: Option<(f64, Placement)> = None;
        for pair in use_gpus.windows(2) {
            let (left, right) = (pair[0], pair[1]);
            for delta in [1i64, -1, 2, -2, 3, -3] {
                let mut split = base.clone();
                let (Some(ca), Some(cb)) = (
                    usize::try_from(i64::try_from(split.counts[left]).unwrap_or(0) + delta).ok(),
                    usize::try_from(i64::try_from(split.counts[right]).unwrap_or(0) - delta).ok(),
                ) else {
                    continue;
                };
                if ca == 0 || cb == 0 {
                    continue;
                }
                split.counts[left] = ca;
                split.counts[right] = cb;
                let Some(cand) = fill(&costs, &roomy, &split, &self.names) else { continue };
                if !cand.experts_with_layers(self.model) {
                    continue;
                }
                let (_, args) = self.placement_args(&cand);
                let settings = self.settings_with(&args)?;
                if !settings.overrides.is_empty() {
                    continue;
                }
                let eval = self.eval.evaluate(&settings, margins)?;
                if !eval.gpus.iter().all(super::budget::GpuUse::fits) {
                    continue;
                }
                let resolved = self.resolve(&eval.prediction);
                let speed =
                    predict_speed(self.model, &resolved, &self.speed_inputs(&settings), &self.options.speed);
                if best.as_ref().is_none_or(|(fastest, _)| speed.decode_tps > *fastest) {
                    best = Some((speed.decode_tps, cand));
                }
            }
        }
        Ok(best.map(|(_, cand)| cand))
    }

    /// Per-tensor devices of a memory prediction, for the speed model.
    pub(crate) fn resolve(&self, prediction: &MemoryPrediction) -> Resolved {
        let dev = |l: Location| match l {
            Location::Gpu(g) => Device::Gpu(g),
            Location::Host => Device::Cpu,
        };
        let mut tensors = vec![None; self.model.tensors.len()];
        for tp in &prediction.placement.tensors {
            if tp.copy == crate::memory::TensorCopy::Primary {
                tensors[tp.tensor] = Some(dev(tp.location));
            }
        }
        Resolved {
            tensors,
            layers: prediction.placement.layers.iter().map(|&l| dev(l)).collect(),
            output: dev(prediction.placement.output),
            first_gpu: prediction.placement.devices.first().copied(),
        }
    }

    /// Both plans, the fit emulation and its forms.
    pub(crate) fn plan_set(&mut self) -> Result<PlanSet, PlanError> {
        let moderate = self.make_plan(PlanKind::Moderate, self.options.moderate_extra, None)?;
        let floor: i64 = moderate.memory.gpus.iter().map(|g| signed(g.weights)).sum();
        let mut aggressive = self.make_plan(PlanKind::Aggressive, Bytes::ZERO, None)?;
        let aggressive_bytes: i64 = aggressive.memory.gpus.iter().map(|g| signed(g.weights)).sum();
        if aggressive_bytes < floor {
            // The fastest split holds fewer bytes than the moderate plan: take the fastest among
            // those that hold at least as much, so aggressive is never below moderate.
            aggressive = self.make_plan(PlanKind::Aggressive, Bytes::ZERO, Some(floor))?;
        }
        let mut moderate = moderate;
        let mut notes = Vec::new();
        let fit = if self.options.emulate_fit && !self.hardware.gpus.is_empty() {
            Some(self.emulate_fit()?)
        } else {
            None
        };
        if fit.is_some() {
            aggressive.fit_target_form = self.fit_target_form(&aggressive)?;
            moderate.fit_target_form = self.fit_target_form(&moderate)?;
        }
        if !aggressive.speed.assumed_bandwidth.is_empty() {
            notes.push("a GPU's memory bandwidth is not known: its speed share was assumed".into());
        }
        let n_ctx = aggressive.memory.prediction.context.n_ctx;
        Ok(PlanSet { n_ctx, aggressive, moderate, fit, notes })
    }

    /// The inputs of llama.cpp's fit for the given settings.
    fn fit_inputs(&self, margins: &[Bytes]) -> FitInputs {
        let s = &self.given;
        let n_ctx = match s.effective_ctx_size() {
            CtxSize::Unset | CtxSize::Train => 0,
            CtxSize::Tokens(n) => n,
        };
        let devices: Vec<usize> = match s.split_mode {
            SplitMode::None => vec![usize::try_from(s.main_gpu).unwrap_or(0)],
            _ => (0..self.hardware.gpus.len()).collect(),
        };
        let mtp = s.loads_mtp_layers();
        FitInputs {
            free: devices.iter().map(|&g| self.hardware.free_at_load(g)).collect(),
            margins: margins.to_vec(),
            n_ctx,
            n_ctx_min: s.fit_ctx,
            n_ctx_train: self.model.n_ctx_train,
            n_streams: if s.effective_kv_unified() { 1 } else { s.effective_parallel() },
            hp_ngl: u32::try_from(if mtp { self.model.n_layer_all } else { self.model.n_layer() })
                .unwrap_or(u32::MAX),
            n_expert: self.model.n_expert,
            user_ngl: s.n_gpu_layers != GpuLayers::Auto,
            user_tensor_split: s.tensor_split.iter().any(|&x| x != 0.0),
            user_overrides: !s.overrides.is_empty(),
            devices: devices.iter().map(|&g| self.names[g].clone()).collect(),
        }
    }

    /// Runs the fit emulation with `margins` over the memory prediction.
    fn run_fit(&mut self, margins: &[Bytes]) -> Result<(FitOutcome, ServerSettings), PlanError> {
        let inputs = self.fit_inputs(margins);
        let mut given = self.given.clone();
        given.fit = false;
        let n_devices = inputs.free.len();
        let eval = &mut self.eval;
        let outcome = emulate_fit(&inputs, |probe: &Probe| -> Result<Vec<DeviceUse>, PlanError> {
            let s = fit_settings(&given, probe.n_ctx, &probe.params);
            let prediction = eval.predict(&s)?;
            let mut out = Vec::with_capacity(n_devices);
            for &g in &prediction.placement.devices {
                let row = prediction.devices.iter().find(|d| d.location == Location::Gpu(g));
                let (model_b, context) = row.map_or((Bytes::ZERO, Bytes::ZERO), |d| (d.weights, d.context()));
                let (compute, _) = eval.compute_of(&prediction, g)?;
                out.push(DeviceUse { model: model_b, total: model_b + context + compute });
            }
            Ok(out)
        })?;
        let n_ctx = outcome.params.n_ctx.unwrap_or(match given.effective_ctx_size() {
            CtxSize::Tokens(n) => n,
            _ => self.model.n_ctx_train,
        });
        let settings = fit_settings(&given, n_ctx, &outcome.params);
        Ok((outcome, settings))
    }

    /// What llama.cpp's fit chooses with the settings' own `--fit-target`.
    pub(crate) fn emulate_fit(&mut self) -> Result<FitPlan, PlanError> {
        let margins: Vec<Bytes> =
            (0..self.hardware.gpus.len()).map(|i| self.given.fit_target.for_device(i)).collect();
        let (outcome, settings) = self.run_fit(&margins)?;
        // Checked against the runtime overhead with no margin: does it survive the first request?
        let zero = vec![Bytes::ZERO; self.hardware.gpus.len()];
        let memory = self.eval.evaluate(&settings, &zero)?;
        let resolved = self.resolve(&memory.prediction);
        let speed = predict_speed(self.model, &resolved, &self.speed_inputs(&settings), &self.options.speed);
        // As llama-fit-params prints them (fit-params.cpp:41-64): the context first, `-ngl -1`
        // when fit changed nothing.
        let mut fit_args = vec!["-c".to_owned(), memory.prediction.context.n_ctx.to_string()];
        if outcome.status == FitStatus::NoChange {
            fit_args.extend(["-ngl".to_owned(), "-1".to_owned()]);
        } else {
            let mut params = outcome.params.clone();
            params.n_ctx = None;
            fit_args.extend(params.args());
        }
        Ok(FitPlan { outcome, fit_args, memory, speed })
    }

    /// Margins with which llama.cpp's fit lands exactly on `plan`: tried with the margins each GPU
    /// is left with under the plan, as llama.cpp itself measures them (its breakdown, no runtime
    /// overhead).
    fn fit_target_form(&mut self, plan: &Plan) -> Result<Option<Vec<Bytes>>, PlanError> {
        if !self.options.pins.is_empty() || plan.placement.used_gpus().len() < 2 {
            return Ok(None);
        }
        let left: Vec<Bytes> = plan
            .memory
            .gpus
            .iter()
            .map(|g| {
                let breakdown = g.weights + g.kv_cache + g.recurrent_state + g.compute;
                Bytes::from_mib(g.free_at_load.saturating_sub(breakdown).mib_floor())
            })
            .collect();
        let (outcome, settings) = self.run_fit(&left)?;
        if outcome.status != FitStatus::Fitted {
            return Ok(None);
        }
        let ours = ServerSettings::from_args(&plan.args)?;
        let a = self.eval.predict(&settings)?;
        let b = self.eval.predict(&ours)?;
        let same = a.placement.layers == b.placement.layers
            && a.placement.output == b.placement.output
            && a.placement.tensors.iter().map(|t| (t.tensor, t.location)).eq(b
                .placement
                .tensors
                .iter()
                .map(|t| (t.tensor, t.location)));
        Ok(same.then_some(left))
    }
}

/// The sets of GPUs to plan over, largest first: all of them, then without the smallest budgets one
/// by one (a GPU that cannot hold even its compute buffer is better left out than failing).
fn gpu_subsets(budgets: &[i64]) -> Vec<Vec<usize>> {
    let n = budgets.len();
    let mut by_budget: Vec<usize> = (0..n).collect();
    by_budget.sort_by_key(|&g| (std::cmp::Reverse(budgets[g]), g));
    (1..=n)
        .rev()
        .map(|k| {
            let mut s = by_budget[..k].to_vec();
            s.sort_unstable();
            s
        })
        .collect()
}

/// The dense splits over `use_gpus` whose dense parts fit, with the fewest layers on the CPU (none
/// unless `cpu_layers` allows some).
fn feasible_splits(
    costs: &Costs,
    budgets: &[i64],
    n_layer_all: usize,
    use_gpus: &[usize],
    cpu_layers: bool,
) -> Vec<Split> {
    let n = budgets.len();
    let max_prefix = if cpu_layers { n_layer_all + 1 } else { 0 };
    (0..=max_prefix)
        .map(|cpu_prefix| {
            candidate_splits(n_layer_all, n, use_gpus, cpu_prefix, budgets)
                .into_iter()
                .filter(|s| super::search::capacities(costs, budgets, s).is_some())
                .collect::<Vec<Split>>()
        })
        .find(|c| !c.is_empty())
        .unwrap_or_default()
}

/// Rounds of checking a plan with the full prediction and filling it again with smaller budgets.
const MAX_TIGHTEN: usize = 8;

/// The dense split of a placement.
fn split_of(p: &Placement) -> Split {
    let cpu_prefix = p
        .layers
        .iter()
        .map(|l| l.dense)
        .chain(std::iter::once(p.output))
        .take_while(|d| *d == Device::Cpu)
        .count();
    Split { cpu_prefix, counts: p.tensor_split() }
}

/// The dense split the pins fix (`None` inside when they fix none).
#[derive(Clone, Debug)]
struct PinnedSplit(Option<Split>);

/// The settings llama.cpp runs after fit applied `params` at context `n_ctx`.
fn fit_settings(given: &ServerSettings, n_ctx: u32, params: &super::fit::FitParams) -> ServerSettings {
    let mut s = given.clone();
    s.fit = false;
    s.ctx_size = CtxSize::Tokens(n_ctx);
    if let Some(ngl) = params.n_gpu_layers {
        s.n_gpu_layers = GpuLayers::Count(ngl);
    }
    if !params.tensor_split.is_empty() {
        #[allow(clippy::cast_precision_loss)]
        let ts = params.tensor_split.iter().map(|&c| c as f32).collect();
        s.tensor_split = ts;
    }
    s.overrides.extend(params.overrides.iter().cloned());
    s
}

/// Bytes of KV cache and recurrent state block `il` puts on its GPU in context `ctx`, padded as a
/// CUDA buffer holds them (llama-kv-cache.cpp:163-305; llama-memory-recurrent.cpp:83-103; the
/// memory model sums the same terms per device).
pub(crate) fn state_bytes(model: &ModelDescription, ctx: &ResolvedContext, il: usize) -> Bytes {
    let Some(layer) = model.layer(il) else { return Bytes::ZERO };
    if !ctx.kv_offload {
        return Bytes::ZERO;
    }
    let mut total = Bytes::ZERO;
    if layer.has_kv {
        let size = match (layer.is_swa, ctx.swa_size) {
            (true, Some(s)) => s,
            _ => ctx.kv_size,
        };
        let cells = u64::from(size) * u64::from(ctx.n_stream);
        let (k_width, v_width) = model.kv_widths(il, ctx.v_trans);
        if let Ok(row) = model.kv_bytes_per_token(il, ctx.type_k, ctx.type_v, ctx.v_trans) {
            total += cuda_alloc(ctx.type_k, k_width, row.k.saturating_mul(cells));
            if v_width > 0 {
                total += cuda_alloc(ctx.type_v, v_width, row.v.saturating_mul(cells));
            }
        }
    }
    if layer.is_recurrent {
        let rows = u64::from(ctx.n_seq.max(1)) * (1 + u64::from(ctx.n_rs_seq));
        for width in [layer.n_embd_r, layer.n_embd_s] {
            total +=
                cuda_alloc(GgmlType::F32, width, Bytes::new(width.saturating_mul(4).saturating_mul(rows)));
        }
    }
    total
}

/// `PAD128(nbytes + one padding row)` (ggml-cuda.cu:904-919), as the memory model's weights use it.
fn cuda_alloc(ggml_type: GgmlType, ne0: u64, nbytes: Bytes) -> Bytes {
    let mut size = nbytes;
    let rem = ne0 % MATRIX_ROW_PADDING;
    if ggml_type.is_quantized() && rem != 0 {
        size +=
            Bytes::new(ggml_type.type_size() * (MATRIX_ROW_PADDING - rem) / ggml_type.block_size().max(1));
    }
    size.align_up(CUDA_ALIGNMENT)
}

/// Routed-expert bytes on GPUs and layers whose experts are all on GPUs.
fn expert_stats(model: &ModelDescription, p: &Placement) -> (Bytes, usize) {
    let mut bytes = Bytes::ZERO;
    for t in &model.tensors {
        if t.role.is_routed_expert() && !t.nextn && p.tensor_device(t) != Device::Cpu {
            bytes += t.size;
        }
    }
    let layers = (0..model.n_layer())
        .filter(|&il| {
            let parts = super::placement::expert_parts(model, il);
            !parts.is_empty() && parts.iter().all(|e| p.layers[il].experts.get(e.part) != Device::Cpu)
        })
        .count();
    (bytes, layers)
}

/// `-ngl N [-ts …] --n-cpu-moe K` when it places exactly as `p`: every layer's experts with its
/// dense part, except all experts of layers `0..K` in RAM.
pub(crate) fn n_cpu_moe_form(model: &ModelDescription, p: &Placement, pins: &Pins) -> Option<Vec<String>> {
    if !pins.overrides.is_empty() || p.layers.iter().any(|l| l.dense == Device::Cpu) {
        return None;
    }
    let mut k = 0usize;
    let mut in_prefix = true;
    for (il, l) in p.layers.iter().enumerate() {
        let parts = super::placement::expert_parts(model, il);
        if parts.is_empty() {
            if in_prefix {
                k = il + 1;
            }
            continue;
        }
        let all_cpu = parts.iter().all(|e| l.experts.get(e.part) == Device::Cpu);
        let all_own = parts.iter().all(|e| l.experts.get(e.part) == l.dense);
        match (in_prefix, all_cpu, all_own) {
            (true, true, _) => k = il + 1,
            (_, false, true) => in_prefix = false,
            (false, true, _) | (_, false, false) => return None,
        }
    }
    let mut flags = placement_flags(
        model,
        &Placement {
            layers: p
                .layers
                .iter()
                .map(|l| super::placement::LayerPlacement {
                    dense: l.dense,
                    experts: super::placement::ExpertPlacement::all(l.dense),
                })
                .collect(),
            ..p.clone()
        },
    );
    flags.overrides.clear();
    let mut args = flags.args();
    args.pop();
    args.pop();
    if k > 0 {
        args.extend(["--n-cpu-moe".to_owned(), k.to_string()]);
    }
    args.extend(["--fit".to_owned(), "off".to_owned()]);
    Some(args)
}

/// Checks pins against the machine.
fn check_pins(pins: &Pins, n_gpus: usize) -> Result<(), PlanError> {
    if let Some(ts) = &pins.tensor_split {
        if ts.len() > n_gpus.max(1) {
            return Err(PlanError::ConflictingPins {
                first: format!("-ts {}", ts.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")),
                second: format!("{n_gpus} GPU(s)"),
                why: "more split values than GPUs".into(),
            });
        }
        if ts.iter().all(|&x| x == 0.0) {
            return Err(PlanError::ConflictingPins {
                first: "-ts".into(),
                second: "-ngl".into(),
                why: "every split value is 0: no GPU gets a layer".into(),
            });
        }
    }
    if let (Some(GpuLayers::Count(0)), Some(ts)) = (pins.n_gpu_layers, &pins.tensor_split) {
        return Err(PlanError::ConflictingPins {
            first: "-ngl 0".into(),
            second: format!("-ts {}", ts.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")),
            why: "no layer is offloaded, so the split places nothing".into(),
        });
    }
    for o in &pins.overrides {
        if let OverrideTarget::Device(name) = &o.target {
            let known = (0..n_gpus).any(|g| format!("CUDA{g}") == *name);
            if !known {
                return Err(PlanError::ConflictingPins {
                    first: format!("-ot {o}"),
                    second: format!("{n_gpus} GPU(s)"),
                    why: format!("there is no {name}"),
                });
            }
        }
    }
    Ok(())
}

fn signed(b: Bytes) -> i64 {
    i64::try_from(b.get()).unwrap_or(i64::MAX)
}

fn unsigned(v: i64) -> Bytes {
    Bytes::new(u64::try_from(v.max(0)).unwrap_or(0))
}
