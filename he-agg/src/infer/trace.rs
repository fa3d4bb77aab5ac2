//! The level and scale of every stage of a plan, decided before anything is encoded: the model
//! encodes its weights at these scales and the requester checks refreshed ciphertexts and
//! results against them.
//!
//! Levels fall by one rescaling step per map and per activation; a segment after a refresh
//! starts at the top again. Scales: a map's weights are encoded at the scale of the modulus its
//! rescale removes, so a map keeps its input's scale, and an activation squares it and divides by
//! its modulus. Networks with residual blocks or refreshes *pin* their scales instead: each map
//! chooses its weights' scale so that the activation after it comes back to the nominal scale Δ
//! (its output is √(Δ·q)), and a block's body ends at the scale of its shortcut (the kept value's
//! own for an identity, the body's for a mapped one) — otherwise squaring would let a long chain
//! of blocks drift away from Δ.

use crate::ckks::Parameters;

use super::error::InferError;
use super::lower::{Lowered, Op};
use super::spec::RefreshPoint;

/// Levels and scales of every op of a lowered network.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Trace {
    /// input level of each op
    pub levels: Vec<usize>,
    /// input scale of each op
    pub scales: Vec<f64>,
    /// a map's (or a mapped shortcut's) weights' scale; 0 for the rest
    pub weight_scales: Vec<f64>,
    /// a map's (or a mapped shortcut's) output scale; 0 for the rest
    pub out_scales: Vec<f64>,
    /// a shortcut's kept value: its level (0 for the rest)
    pub kept_levels: Vec<usize>,
    pub refreshes: Vec<RefreshPoint>,
    pub output_level: usize,
}

/// The product of the `k` moduli a rescaling step at `level` removes.
pub(crate) fn step_modulus(params: &Parameters, level: usize, k: usize) -> f64 {
    params.rlwe().q()[level - k..level]
        .iter()
        .map(|&q| q as f64)
        .product()
}

/// Levels and scales of `low` from `input_level` (`k` primes per step), refreshed before each op
/// of `cuts` from `refresh_level`.
pub(crate) fn trace(
    low: &Lowered,
    params: &Parameters,
    input_level: usize,
    k: usize,
    cuts: &[usize],
    refresh_level: usize,
    pinned: bool,
) -> Result<Trace, InferError> {
    let n = low.ops.len();
    let too_deep = || InferError::TooFewLevels {
        levels: input_level.saturating_sub(1),
        depth: low.depth(),
    };
    // levels
    let mut levels = vec![0; n];
    let mut level = input_level;
    for (j, op) in low.ops.iter().enumerate() {
        if cuts.contains(&j) {
            if level < refresh_level {
                return Err(too_deep());
            }
            level = input_level;
        }
        levels[j] = level;
        level = level
            .checked_sub(op.depth() * k)
            .filter(|&l| l >= 1)
            .ok_or_else(too_deep)?;
    }
    let output_level = level;
    let delta = params.default_scale();
    let modulus = |l: usize| step_modulus(params, l, k);
    // scales
    let mut t = Trace {
        levels,
        scales: vec![0.0; n],
        weight_scales: vec![0.0; n],
        out_scales: vec![0.0; n],
        kept_levels: vec![0; n],
        refreshes: Vec::with_capacity(cuts.len()),
        output_level,
    };
    let mut scale = params.default_scale();
    let mut kept: Vec<(usize, f64)> = Vec::new();
    for (j, op) in low.ops.iter().enumerate() {
        if cuts.contains(&j) {
            t.refreshes.push(RefreshPoint {
                level: refresh_level,
                scale,
            });
        }
        let l = t.levels[j];
        t.scales[j] = scale;
        match op {
            Op::Linear(_) => {
                let q = modulus(l);
                let w = if pinned {
                    q * target(low, &t.levels, j, &kept, delta, &modulus) / scale
                } else {
                    q
                };
                scale = scale * w / q;
                t.weight_scales[j] = w;
                t.out_scales[j] = scale;
            }
            Op::Activation { post, .. } => {
                scale = scale * scale / modulus(l);
                if post.is_some() {
                    let q = modulus(l - k);
                    scale = scale * q / q;
                }
            }
            Op::Save => kept.push((l, scale)),
            Op::AddShortcut { map } => {
                let (kl, ks) = kept
                    .pop()
                    .ok_or(InferError::ModelMismatch("blocks unbalanced"))?;
                t.kept_levels[j] = kl;
                match map {
                    Some(_) => {
                        let q = modulus(kl);
                        let w = q * scale / ks;
                        t.weight_scales[j] = w;
                        t.out_scales[j] = ks * w / q;
                    }
                    None if ((ks - scale) / scale).abs() > 1e-10 => {
                        return Err(InferError::ModelMismatch(
                            "a block's body ends at another scale than its identity shortcut",
                        ));
                    }
                    None => {}
                }
            }
        }
    }
    Ok(t)
}

/// The output scale map `j` aims at (pinned scales): √(Δ·q) when an activation follows it (on
/// the main path, past a block's sum), the kept value's scale before an identity shortcut, Δ
/// otherwise.
fn target(
    low: &Lowered,
    levels: &[usize],
    j: usize,
    kept: &[(usize, f64)],
    delta: f64,
    modulus: &dyn Fn(usize) -> f64,
) -> f64 {
    let before_activation = |i: usize| match low.ops.get(i) {
        Some(Op::Activation { .. }) => Some((delta * modulus(levels[i])).sqrt()),
        _ => None,
    };
    match low.ops.get(j + 1) {
        Some(Op::AddShortcut { map: None }) => kept.last().map_or(delta, |&(_, s)| s),
        Some(Op::AddShortcut { map: Some(_) }) => before_activation(j + 2).unwrap_or(delta),
        _ => before_activation(j + 1).unwrap_or(delta),
    }
}
