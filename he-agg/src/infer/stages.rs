//! The stages a plan is compiled into — maps (diagonals in baby-step/giant-step order, the
//! bias, folds and replications), activations, a block's kept input and its shortcut — and the
//! helpers that make them: a map's stage from its diagonals, the slots of biases and per-channel
//! constants, the rotations that replicate an output, the relative costs of rotations.

use crate::ckks::Parameters;

use super::diagonals::{self, Bsgs, StepCosts};
use super::trace::Trace;

/// A linear stage: y = Σ_g rot_g(Σ_k Σ_b diag ⊙ rot_b(x_k)) over its input ciphertexts x_k,
/// folded, plus the bias.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LinearStage {
    pub level: usize,
    pub bsgs: Bsgs,
    pub fold_steps: Vec<i64>,
    pub bias: Option<Vec<f64>>,
    /// the scale the diagonals are encoded at
    pub weight_scale: f64,
    /// the scale of the output (the bias is encoded at it)
    pub out_scale: f64,
    /// rotate-and-add steps after the bias: an output smaller than its input's period
    /// replicated with its own (later maps then merge their offsets modulo it)
    pub replicate: Vec<i64>,
}

/// The c of an activation: one constant, or one value per slot (per channel, laid out as the
/// activation's input is).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum StageShift {
    Same(f64),
    Slots(Vec<f64>),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Stage {
    Linear(LinearStage),
    /// x·(x + c) [· post], at input level `level` and scale `scale`.
    Activation {
        level: usize,
        scale: f64,
        c: StageShift,
        post: Option<f64>,
    },
    /// Keeps the current ciphertext for a block's shortcut.
    Save,
    /// Adds the kept ciphertext, mapped when `map` is given (at the kept value's level).
    AddShortcut {
        map: Option<LinearStage>,
    },
}

/// What one stage of a plan costs, for reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StageInfo {
    /// `true` for a linear map, `false` for an activation.
    pub linear: bool,
    /// Level of the stage's input.
    pub level: usize,
    /// Input ciphertexts of the stage (more than one only for the first map of a large image).
    pub inputs: usize,
    /// Diagonal products (plaintext × ciphertext, or ciphertext × ciphertext in mode a).
    pub diagonals: usize,
    /// Hoisted baby-step rotations (non-zero steps).
    pub baby_steps: usize,
    /// Giant-step rotations (non-zero steps).
    pub giant_steps: usize,
    /// Rotate-and-add steps folding the partial sums.
    pub fold_steps: usize,
}

/// Relative costs (in NTT-sized passes) of a hoisted rotation and of a giant step at `level`.
pub(crate) fn step_costs(params: &Parameters, level: usize) -> StepCosts {
    let rl = params.rlwe();
    let k = rl.p().len() as f64;
    let alpha = rl.q().len().div_ceil(rl.dnum()) as f64;
    let digits = |l: f64| (l / alpha).ceil();
    let l = level as f64;
    let moddown = |l: f64| 2.0 * (k + l);
    let inner = |l: f64| 0.3 * digits(l) * (l + k);
    let decompose = |l: f64| l + digits(l) * (l + k - alpha).max(0.0);
    let lg = (l - 1.0).max(1.0);
    StepCosts {
        baby: moddown(l) + inner(l),
        giant: 2.0 * l + decompose(lg) + moddown(lg) + inner(lg),
    }
}

/// The bias of every output at its slot, repeated with the period; `None` when all zero.
pub(crate) fn bias_slots(
    bias: &[f64],
    slots: usize,
    period: usize,
    out_slot: impl Fn(usize) -> usize,
) -> Option<Vec<f64>> {
    if bias.iter().all(|&b| b == 0.0) {
        return None;
    }
    let mut v = vec![0.0; slots];
    for (o, &b) in bias.iter().enumerate() {
        let mut t = out_slot(o);
        while t < slots {
            v[t] = b;
            t += period;
        }
    }
    Some(v)
}

/// A map's stage at `level` from its diagonals (op `k` of the trace gives its scales); its
/// rotation steps join `steps`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn linear_stage(
    (diags, fold, replicate): (Vec<diagonals::Diagonals>, Vec<i64>, Vec<i64>),
    bias: Option<Vec<f64>>,
    params: &Parameters,
    level: usize,
    tr: &Trace,
    k: usize,
    steps: &mut Vec<i64>,
) -> LinearStage {
    let mut diags = diags;
    if diags.iter().all(|d| d.is_empty()) {
        // every weight reads padding only: the output is the bias, still a ciphertext at the
        // right level and scale
        diags[0].insert(0, vec![0.0; params.slots()]);
    }
    let bsgs = diagonals::bsgs(diags, step_costs(params, level));
    steps.extend(bsgs.baby_steps.iter().copied());
    steps.extend(bsgs.giants.iter().map(|g| g.step));
    steps.extend(fold.iter().copied());
    steps.extend(replicate.iter().copied());
    LinearStage {
        level,
        bsgs,
        fold_steps: fold,
        bias,
        weight_scale: tr.weight_scales[k],
        out_scale: tr.out_scales[k],
        replicate,
    }
}

/// Rotations that copy a value living in `[0, extent)` of each `period` over the whole period
/// (extent and period powers of two): steps −extent, −2·extent, … (as left rotations).
pub(crate) fn replication(extent: usize, period: usize, slots: usize) -> Vec<i64> {
    let mut steps = Vec::new();
    let mut e = extent;
    while e < period {
        steps.push((slots - e) as i64);
        e *= 2;
    }
    steps
}

/// Per-value constants at their slots (`slot(j)` below the period), repeated with the period.
pub(crate) fn spread(
    v: &[f64],
    slots: usize,
    period: usize,
    slot: impl Fn(usize) -> usize,
) -> Vec<f64> {
    let mut out = vec![0.0; slots];
    for (j, &c) in v.iter().enumerate() {
        let mut t = slot(j);
        while t < slots {
            out[t] = c;
            t += period;
        }
    }
    out
}
