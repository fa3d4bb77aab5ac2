//! Levels for a network of any depth: the smallest ring that holds the slots, and, where the
//! network is deeper than that ring's modulus, segments that each fit it, with the ciphertext
//! refreshed to the top level between them (by the requester in mode b: [`super::refresh`]).
//!
//! A refresh may cut the network only where one ciphertext carries everything (no residual
//! block's input is still waiting for its shortcut): between blocks, or anywhere in a sequential
//! network. Each candidate ring and scale gives a segment depth (what the chain holds above a
//! base that keeps the refresh's mask); the choice with the fewest segments wins, then the
//! largest scale. A ring whose segments hold fewer than [`ParamPolicy::min_segment_depth`]
//! levels is passed over for the next one while a larger ring remains.

use crate::ckks::Parameters;

use super::error::InferError;
use super::lower::Lowered;
use super::params::{
    ParamPolicy, check_slots, choose_parameters, may_fit, try_chain_digits, try_ring,
};

/// The levels of a plan: its parameters, the level an image is encrypted at, and where the
/// segments start.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Levels {
    pub params: Parameters,
    pub input_level: usize,
    /// op indices where a segment after the first starts (a refresh happens just before)
    pub cuts: Vec<usize>,
    /// the level a ciphertext is refreshed from (the base, which holds the mask)
    pub refresh_level: usize,
}

/// The greedy cut of `low` into segments of at most `depth` levels at its allowed points;
/// `None` when some stretch between two allowed points is deeper.
pub(crate) fn cut(low: &Lowered, depth: usize) -> Option<Vec<usize>> {
    let mut before = Vec::with_capacity(low.ops.len() + 1);
    let mut acc = 0usize;
    before.push(0);
    for op in &low.ops {
        acc += op.depth();
        before.push(acc);
    }
    let total = acc;
    let allowed = low.cut_points();
    let (mut start, mut start_depth) = (0usize, 0usize);
    let mut cuts = Vec::new();
    while total - start_depth > depth {
        let p = allowed
            .iter()
            .copied()
            .filter(|&p| p > start && before[p] - start_depth <= depth)
            .max()?;
        if before[p] == start_depth {
            return None;
        }
        cuts.push(p);
        start = p;
        start_depth = before[p];
    }
    Some(cuts)
}

/// The deepest stretch between two allowed cut points: no segment can be shallower.
fn deepest_stretch(low: &Lowered) -> usize {
    let mut points = vec![0];
    points.extend(low.cut_points());
    points.push(low.ops.len());
    points
        .windows(2)
        .map(|w| low.ops[w[0]..w[1]].iter().map(|o| o.depth()).sum())
        .max()
        .unwrap_or(0)
}

/// The levels of `low` for `min_slots` slots under `policy`.
pub(crate) fn choose_levels(
    low: &Lowered,
    min_slots: usize,
    policy: &ParamPolicy,
) -> Result<Levels, InferError> {
    let depth = low.depth();
    let k = policy.step_primes as usize;
    let whole = |params: Parameters| {
        let input_level = params.max_level();
        Levels {
            params,
            input_level,
            cuts: Vec::new(),
            refresh_level: input_level - depth * k,
        }
    };
    if !policy.refresh {
        return Ok(whole(choose_parameters(depth, min_slots, policy)?));
    }
    check_slots(min_slots, policy)?;
    let min_log_n = policy
        .min_log_n
        .max(min_slots.max(1).next_power_of_two().trailing_zeros() + 1);
    let stretch = deepest_stretch(low);
    for log_n in min_log_n..=policy.max_log_n {
        // a network that fits this ring is never cut
        if let Some(params) = try_ring(log_n, depth, policy)? {
            return Ok(whole(params));
        }
        let last = log_n == policy.max_log_n;
        let need = stretch.max(depth.min(policy.min_segment_depth as usize));
        if let Some(levels) = cut_ring(low, log_n, policy, if last { stretch } else { need })? {
            return Ok(levels);
        }
    }
    Err(InferError::TooDeepToCut {
        stretch,
        min_scale_bits: policy.min_scale_bits,
    })
}

/// The best cut of `low` on ring 2^log_n with segments of at least `need` levels.
fn cut_ring(
    low: &Lowered,
    log_n: u32,
    policy: &ParamPolicy,
    need: usize,
) -> Result<Option<Levels>, InferError> {
    // every prime of a cut plan on the fast kernels
    let policy = &ParamPolicy {
        max_prime_bits: policy.refresh_prime_bits.min(policy.max_prime_bits),
        ..*policy
    };
    let k = policy.step_primes as usize;
    let digits = policy.max_refresh_digits.max(1) as usize;
    let mut best: Option<(usize, Levels)> = None;
    let lowest = policy.min_scale_bits.max(policy.min_refresh_scale_bits);
    for s in (lowest..=policy.max_scale_bits).rev() {
        // the deepest segment this scale allows, then down while primes run short or the
        // special primes would need more digits
        let mut d = 0;
        while may_fit(
            log_n,
            &policy.q_bits_with(d + 1, s, policy.refresh_room_bits),
        ) {
            d += 1;
        }
        let found = loop {
            if d < need.max(1) {
                break None;
            }
            let q = policy.q_bits_with(d, s, policy.refresh_room_bits);
            if let Some(params) = try_chain_digits(log_n, &q, s, digits, policy.max_prime_bits)? {
                break Some((d, params));
            }
            d -= 1;
        };
        let Some((d, params)) = found else { continue };
        let Some(cuts) = cut(low, d) else { continue };
        let segments = cuts.len() + 1;
        if best.as_ref().is_none_or(|(b, _)| segments < *b) {
            let input_level = params.max_level();
            best = Some((
                segments,
                Levels {
                    params,
                    input_level,
                    cuts,
                    refresh_level: input_level - d * k,
                },
            ));
        }
    }
    Ok(best.map(|(_, l)| l))
}
