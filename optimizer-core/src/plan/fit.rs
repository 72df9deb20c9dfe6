//! llama.cpp's own `--fit`, emulated: the algorithm of `common_params_fit_impl`
//! (common/fit.cpp:180-880, build 11434) step by step, with a measurement function in place of
//! llama.cpp's dry-run loads.
//!
//! llama.cpp measures each candidate by loading the model without allocating
//! (`common_get_device_memory_data_impl`, fit.cpp:31-152) and reading the per-device breakdown:
//! model + context + compute. [`emulate_fit`] asks its `measure` argument for the same numbers; the
//! planner passes the memory prediction, the trace tests pass what llama.cpp itself logged. The
//! steps, the integer arithmetic (false-position steps in `int64_t`, truncated to `uint32_t`), the
//! order of the probes and the `-ot` patterns it emits are llama.cpp's, so that with the same
//! measurements the emulation makes the same probes and lands on the same flags.

use serde::Serialize;

use crate::settings::{OverrideTarget, TensorOverride};
use crate::units::Bytes;

/// What part of its first partial layer a device keeps (`common_layer_fraction_t`,
/// fit.cpp:18-24); the rest goes to the overflow buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerFraction {
    /// `LAYER_FRACTION_ATTN`: attention only; every `ffn_*` tensor (router and shared experts
    /// included) overflows.
    Attn,
    /// `LAYER_FRACTION_UP`: attention and `ffn_up*`.
    Up,
    /// `LAYER_FRACTION_GATE`: attention, up and gate; only `ffn_down*` overflows.
    Gate,
    /// `LAYER_FRACTION_MOE`: everything but the routed experts.
    #[default]
    Moe,
}

impl LayerFraction {
    /// The pattern fit writes for layer `il` (`get_overflow_pattern`, fit.cpp:492-529).
    pub fn pattern(self, il: u32) -> String {
        match self {
            LayerFraction::Attn => format!(r"blk\.{il}\.ffn_(gate|up|gate_up|down).*"),
            LayerFraction::Up => format!(r"blk\.{il}\.ffn_(gate|gate_up|down).*"),
            LayerFraction::Gate => format!(r"blk\.{il}\.ffn_down.*"),
            LayerFraction::Moe => format!(r"blk\.{il}\.ffn_(up|down|gate_up|gate)_(ch|)exps"),
        }
    }
}

/// The pattern of fit's MoE probe: every routed expert (fit.cpp:617).
pub const ALL_MOE_PATTERN: &str = r"blk\.\d+\.ffn_(up|down|gate_up|gate)_(ch|)exps";

/// Layers of one device (`ngl_t`, fit.cpp:532-545).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeviceLayers {
    /// Layers on the device, the output layer included on the last one.
    pub n_layer: u32,
    /// Of those, layers whose routed experts are elsewhere (the first one by `overflow`).
    pub n_part: u32,
    /// What the device keeps of its first partial layer.
    pub overflow: LayerFraction,
}

impl DeviceLayers {
    fn n_full(&self) -> u32 {
        self.n_layer - self.n_part
    }
}

/// Parameters fit tries or settles on: what it writes into llama.cpp's model and context params.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FitParams {
    /// The context, when fit set it (`-c`).
    pub n_ctx: Option<u32>,
    /// `-ngl`, when fit set it.
    pub n_gpu_layers: Option<u32>,
    /// `-ts` layer counts, when fit set them (several devices only).
    pub tensor_split: Vec<u32>,
    /// The `-ot` entries fit set, in order.
    #[serde(serialize_with = "crate::plan::serialize_overrides")]
    pub overrides: Vec<TensorOverride>,
}

impl FitParams {
    /// What `llama-fit-params` prints for these params (fit-params.cpp:41-64), without quotes:
    /// `-c N -ngl M [-ts a,b] [-ot p=B,…]`.
    pub fn args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(c) = self.n_ctx {
            a.extend(["-c".to_owned(), c.to_string()]);
        }
        if let Some(n) = self.n_gpu_layers {
            a.extend(["-ngl".to_owned(), n.to_string()]);
        }
        if !self.tensor_split.is_empty() {
            let ts: Vec<String> = self.tensor_split.iter().map(u32::to_string).collect();
            a.extend(["-ts".to_owned(), ts.join(",")]);
        }
        if !self.overrides.is_empty() {
            let ot: Vec<String> = self.overrides.iter().map(ToString::to_string).collect();
            a.extend(["-ot".to_owned(), ot.join(",")]);
        }
        a
    }
}

/// One device in a measurement: bytes as llama.cpp's breakdown sums them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeviceUse {
    /// The "model" column.
    pub model: Bytes,
    /// model + context + compute (`mb.total()`).
    pub total: Bytes,
}

/// What fit needs to know besides the measurements.
#[derive(Clone, Debug, PartialEq)]
pub struct FitInputs {
    /// Free memory per model device as llama.cpp reads it at fit time.
    pub free: Vec<Bytes>,
    /// `--fit-target` per model device.
    pub margins: Vec<Bytes>,
    /// `n_ctx` as given: 0 when unset or `-c 0` (fit may then choose it).
    pub n_ctx: u32,
    /// `--fit-ctx` (u32::MAX after `-c 0`).
    pub n_ctx_min: u32,
    /// `n_ctx_train`.
    pub n_ctx_train: u32,
    /// KV streams: 1 with a unified cache, else the sequences (fit.cpp:193).
    pub n_streams: u32,
    /// `hp_ngl`: `n_layer()`, plus the NextN blocks when MTP is loaded (fit.cpp:140-143).
    pub hp_ngl: u32,
    /// `n_expert`.
    pub n_expert: u32,
    /// Whether the user set `-ngl` (any value but auto).
    pub user_ngl: bool,
    /// Whether the user set a non-zero `-ts` (several devices only).
    pub user_tensor_split: bool,
    /// Whether the user gave any tensor override (`-ot`, `--cpu-moe`, `--n-cpu-moe`).
    pub user_overrides: bool,
    /// The device names (`CUDA0`, …) in llama.cpp's order, for the overflow targets.
    pub devices: Vec<String>,
}

/// How fit ended (`common_params_fit_status`, fit.h:8-12).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "reason")]
pub enum FitStatus {
    /// The initial parameters leave every margin: nothing changed.
    NoChange,
    /// Only the context was reduced (one device: fit returns there).
    ContextReduced,
    /// Layers were distributed.
    Fitted,
    /// Fit gave up (`common_params_fit_exception`) with llama.cpp's reason; the load goes on with
    /// whatever was changed before.
    Failure(String),
}

/// The result of [`emulate_fit`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FitOutcome {
    /// How it ended.
    pub status: FitStatus,
    /// What fit set.
    pub params: FitParams,
    /// The per-device layers it chose (empty unless [`FitStatus::Fitted`]).
    pub layers: Vec<DeviceLayers>,
    /// How many measurements (dry-run loads) it made.
    pub probes: usize,
}

/// What fit asks to be measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    /// The context to measure at.
    pub n_ctx: u32,
    /// The params to apply (`n_ctx` inside is ignored; see the field above).
    pub params: FitParams,
}

/// Emulates `common_params_fit_impl` (fit.cpp:180-880) with `measure` standing in for the dry-run
/// loads: it gets the context and the params to try and returns the per-device use of the model
/// devices, in order.
pub fn emulate_fit<E>(
    inputs: &FitInputs,
    mut measure: impl FnMut(&Probe) -> Result<Vec<DeviceUse>, E>,
) -> Result<FitOutcome, E> {
    let nd = inputs.free.len();
    let mut probes = 0usize;
    let mut params = FitParams::default();
    let mut measure_all = |n_ctx: u32, p: &FitParams, probes: &mut usize| -> Result<Vec<DeviceUse>, E> {
        *probes += 1;
        let m = measure(&Probe { n_ctx, params: p.clone() })?;
        Ok((0..nd).map(|i| m.get(i).copied().unwrap_or_default()).collect())
    };
    let done = |status, params, layers, probes| Ok(FitOutcome { status, params, layers, probes });

    if nd == 0 {
        return done(FitStatus::Failure("no GPU: fit only reduces the context".into()), params, vec![], 0);
    }
    let n_ctx_auto = inputs.n_ctx == 0;
    let n_streams = inputs.n_streams.max(1);
    // fit.cpp:266-267, saturating.
    let n_ctx_max = sat_u32(u64::from(inputs.n_ctx_train) * u64::from(n_streams));
    let n_ctx_min_total = sat_u32(u64::from(inputs.n_ctx_min) * u64::from(n_streams));
    let mut n_ctx = if n_ctx_auto { n_ctx_max } else { inputs.n_ctx };

    // Step 1: the initial parameters (fit.cpp:261-371).
    let full = measure_all(n_ctx, &FitParams::default(), &mut probes)?;
    let margins: Vec<i64> = (0..nd).map(|i| inputs.margins.get(i).map_or(1 << 30, |m| signed(*m))).collect();
    let free: Vec<i64> = inputs.free.iter().map(|f| signed(*f)).collect();
    let used: Vec<i64> = full.iter().map(|d| signed(d.total)).collect();
    let sum_free: i64 = free.iter().sum();
    let sum_used: i64 = used.iter().sum();
    let sum_model: i64 = full.iter().map(|d| signed(d.model)).sum();
    let projected_free: Vec<i64> = (0..nd).map(|i| free[i] - used[i]).collect();
    if (0..nd).all(|i| projected_free[i] >= margins[i]) {
        return done(FitStatus::NoChange, params, vec![], probes);
    }

    // Step 2: a smaller context (fit.cpp:373-457).
    let sum_margins: i64 = margins.iter().sum();
    let global_surplus = sum_free - sum_used - sum_margins;
    if global_surplus < 0 && n_ctx_auto && n_ctx_max > n_ctx_min_total {
        let mut sum_used_target = sum_free - sum_margins;
        if nd > 1 {
            // `min(uint32_t(n_gpu_layers), hp_ngl)` with n_gpu_layers = -1: hp_ngl.
            let model_per_layer = sum_model / i64::from(inputs.hp_ngl.max(1));
            let nd64 = i64::try_from(nd).unwrap_or(i64::MAX);
            sum_used_target -= (nd64 + 1) * model_per_layer / if inputs.n_expert == 0 { 2 } else { 6 };
        }
        n_ctx = n_ctx_min_total;
        let used_min: i64 = totals(&measure_all(n_ctx, &params, &mut probes)?).iter().sum();
        if sum_used_target > used_min {
            let grow =
                i64::from(n_ctx_max - n_ctx_min_total) * (sum_used_target - used_min) / (sum_used - used_min);
            // `cparams->n_ctx += int64` truncates to uint32_t.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let grown = n_ctx.wrapping_add(grow as u32);
            let align = 256 * n_streams;
            n_ctx = (grown - grown % align).max(n_ctx_min_total);
            params.n_ctx = Some(n_ctx);
            if nd <= 1 {
                return done(FitStatus::ContextReduced, params, vec![], probes);
            }
        } else {
            params.n_ctx = Some(n_ctx);
        }
    }

    // Step 3 preconditions (fit.cpp:458-486).
    let fail = |reason: &str, params: FitParams, probes| {
        done(FitStatus::Failure(reason.to_owned()), params, vec![], probes)
    };
    if inputs.user_ngl {
        return fail("n_gpu_layers already set by user, abort", params, probes);
    }
    if nd > 1 && inputs.user_tensor_split {
        return fail("model_params::tensor_split already set by user, abort", params, probes);
    }
    if inputs.user_overrides {
        return fail("model_params::tensor_buft_overrides already set by user, abort", params, probes);
    }

    let hp_ngl = inputs.hp_ngl;
    let hp_nex = inputs.n_expert;
    let cpu = OverrideTarget::Cpu;
    let dev_target = |id: usize| OverrideTarget::Device(inputs.devices.get(id).cloned().unwrap_or_default());
    let to_params = |ngl: &[DeviceLayers], overflow: &[OverrideTarget]| -> FitParams {
        set_ngl_tensor_split_tbo(hp_ngl, ngl, overflow, params.n_ctx)
    };

    // Step 4: the MoE probe (fit.cpp:615-645).
    let mut global_surplus_cpu_moe: i64 = 0;
    if hp_nex > 0 {
        let probe = FitParams {
            overrides: vec![TensorOverride { pattern: ALL_MOE_PATTERN.to_owned(), target: cpu.clone() }],
            ..params.clone()
        };
        let mem = totals(&measure_all(n_ctx, &probe, &mut probes)?);
        for id in 0..nd {
            global_surplus_cpu_moe += free[id] - (mem[id] + margins[id]);
        }
    }

    let targets: Vec<i64> = (0..nd).map(|id| free[id] - margins[id]).collect();
    let mut overflow: Vec<OverrideTarget> = vec![cpu.clone(); nd];
    let mut ngl = vec![DeviceLayers::default(); nd];
    let mut mem = totals(&measure_all(n_ctx, &to_params(&ngl, &overflow), &mut probes)?);

    // Step 5: dense(-only) layers back to front (fit.cpp:658-733).
    for id in (0..nd).rev() {
        let n_unassigned = hp_ngl + 1 - ngl[id + 1..].iter().map(|n| n.n_layer).sum::<u32>();
        let mut high = ngl.clone();
        high[id].n_layer = n_unassigned;
        if hp_nex > 0 {
            high[id].n_part = if id < nd - 1 { high[id].n_layer } else { high[id].n_layer.saturating_sub(1) };
        }
        if high[id].n_layer == 0 {
            continue;
        }
        let mut mem_high = totals(&measure_all(n_ctx, &to_params(&high, &overflow), &mut probes)?);
        if mem_high[id] > targets[id] {
            let mut delta = high[id].n_layer - ngl[id].n_layer;
            while delta > 1 {
                let step = false_position_step(delta, targets[id], mem[id], mem_high[id]);
                let mut test = ngl.clone();
                test[id].n_layer += step;
                if hp_nex > 0 {
                    // The first layer of the last device is the output layer, which must be full.
                    test[id].n_part += if id == nd - 1 && test[id].n_part == 0 { step - 1 } else { step };
                }
                let mem_test = totals(&measure_all(n_ctx, &to_params(&test, &overflow), &mut probes)?);
                if mem_test[id] <= targets[id] {
                    ngl = test;
                    mem = mem_test;
                } else {
                    high = test;
                    mem_high = mem_test;
                }
                delta = high[id].n_layer - ngl[id].n_layer;
            }
        } else {
            ngl = high;
            mem = mem_high;
        }
    }
    if hp_nex == 0 || global_surplus_cpu_moe <= 0 {
        let params = to_params(&ngl, &overflow);
        return done(FitStatus::Fitted, params, ngl, probes);
    }

    // Step 6: convert dense-only layers to full layers, front to back (fit.cpp:735-877).
    let mut id_dense_start = nd;
    for id in (0..nd).rev() {
        if ngl[id].n_layer > 0 {
            id_dense_start = id;
            continue;
        }
        break;
    }
    let mut id = 0;
    while id <= id_dense_start && id_dense_start < nd {
        let mut high = ngl.clone();
        for jd in id_dense_start..nd {
            let n_move = if jd < nd - 1 { high[jd].n_layer } else { high[jd].n_layer.saturating_sub(1) };
            high[id].n_layer += n_move;
            high[jd].n_layer -= n_move;
            high[jd].n_part = 0;
        }
        let id_dense_start_high = nd - 1;
        let mut mem_high = totals(&measure_all(n_ctx, &to_params(&high, &overflow), &mut probes)?);
        if mem_high[id] > targets[id] {
            let mut delta = high[id].n_full() - ngl[id].n_full();
            while delta > 1 {
                let step = false_position_step(delta, targets[id], mem[id], mem_high[id]);
                let mut test = ngl.clone();
                let mut id_dense_start_test = id_dense_start;
                let mut converted = 0;
                while id_dense_start_test < nd {
                    let n_convert = (step - converted).min(test[id_dense_start_test].n_part);
                    test[id_dense_start_test].n_layer -= n_convert;
                    test[id_dense_start_test].n_part -= n_convert;
                    test[id].n_layer += n_convert;
                    converted += n_convert;
                    if test[id_dense_start_test].n_part > 0 {
                        break;
                    }
                    id_dense_start_test += 1;
                }
                let mem_test = totals(&measure_all(n_ctx, &to_params(&test, &overflow), &mut probes)?);
                if mem_test[id] <= targets[id] {
                    ngl = test;
                    mem = mem_test;
                    id_dense_start = id_dense_start_test;
                } else {
                    // llama.cpp also records id_dense_start_high here; nothing reads it after the loop.
                    high = test;
                    mem_high = mem_test;
                }
                delta = high[id].n_full() - ngl[id].n_full();
            }
        } else {
            ngl = high;
            mem = mem_high;
            id_dense_start = id_dense_start_high;
        }

        // One more layer, straddling this device and the next buffer (fit.cpp:812-867).
        let floor = u32::from(id + 1 == nd);
        if id_dense_start < nd && ngl[id_dense_start].n_layer > floor {
            let mut test = ngl.clone();
            let mut id_dense_start_test = id_dense_start;
            test[id_dense_start_test].n_layer -= 1;
            test[id_dense_start_test].n_part = test[id_dense_start_test].n_part.saturating_sub(1);
            test[id].n_layer += 1;
            test[id].n_part += 1;
            if test[id_dense_start_test].n_part == 0 {
                id_dense_start_test += 1;
            }
            test[id].overflow = LayerFraction::Up;
            let mut overflow_test = overflow.clone();
            if id < nd - 1 {
                overflow_test[id] = dev_target(id + 1);
            }
            let fits = |m: &[i64]| m[id] < targets[id] && (id + 1 == nd || m[id + 1] < targets[id + 1]);
            let mem_test = totals(&measure_all(n_ctx, &to_params(&test, &overflow_test), &mut probes)?);
            if fits(&mem_test) {
                ngl.clone_from(&test);
                overflow.clone_from(&overflow_test);
                mem = mem_test;
                id_dense_start = id_dense_start_test;
                test[id].overflow = LayerFraction::Gate;
                let mem_test = totals(&measure_all(n_ctx, &to_params(&test, &overflow_test), &mut probes)?);
                if fits(&mem_test) {
                    ngl = test;
                    overflow = overflow_test;
                    mem = mem_test;
                    id_dense_start = id_dense_start_test;
                }
            } else {
                test[id].overflow = LayerFraction::Attn;
                let mem_test = totals(&measure_all(n_ctx, &to_params(&test, &overflow_test), &mut probes)?);
                if fits(&mem_test) {
                    ngl = test;
                    overflow = overflow_test;
                    mem = mem_test;
                    id_dense_start = id_dense_start_test;
                }
            }
        }
        id += 1;
    }
    let _ = mem;
    let params = to_params(&ngl, &overflow);
    done(FitStatus::Fitted, params, ngl, probes)
}

/// `set_ngl_tensor_split_tbo` (fit.cpp:548-588): the params for per-device layers.
fn set_ngl_tensor_split_tbo(
    hp_ngl: u32,
    ngl: &[DeviceLayers],
    overflow: &[OverrideTarget],
    n_ctx: Option<u32>,
) -> FitParams {
    let nd = ngl.len();
    let total: u32 = ngl.iter().map(|n| n.n_layer).sum();
    let tensor_split = if nd > 1 { ngl.iter().map(|n| n.n_layer).collect() } else { Vec::new() };
    let mut overrides = Vec::new();
    let mut il0 = hp_ngl + 1 - total.min(hp_ngl + 1);
    for (id, n) in ngl.iter().enumerate() {
        il0 += n.n_full();
        for il in il0..il0 + n.n_part {
            let first = il == il0;
            let fraction = if first { n.overflow } else { LayerFraction::Moe };
            let target = if first {
                overflow.get(id).cloned().unwrap_or(OverrideTarget::Cpu)
            } else {
                OverrideTarget::Cpu
            };
            overrides.push(TensorOverride { pattern: fraction.pattern(il), target });
        }
        il0 += n.n_part;
    }
    FitParams { n_ctx, n_gpu_layers: Some(total), tensor_split, overrides }
}

/// One false-position step: `int64_t(delta) * (target - lo) / (hi - lo)` truncated to `uint32_t`
/// as the C++ assignment does, then clamped to `[1, delta - 1]` (fit.cpp:688-690, 768-770).
fn false_position_step(delta: u32, target: i64, lo: i64, hi: i64) -> u32 {
    let den = hi - lo;
    let raw = if den == 0 { 0 } else { i64::from(delta) * (target - lo) / den };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let step = raw as u32;
    step.max(1).min(delta - 1)
}

fn totals(m: &[DeviceUse]) -> Vec<i64> {
    m.iter().map(|d| signed(d.total)).collect()
}

fn signed(b: Bytes) -> i64 {
    i64::try_from(b.get()).unwrap_or(i64::MAX)
}

fn sat_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}
