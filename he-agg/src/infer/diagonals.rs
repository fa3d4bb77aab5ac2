//! Affine maps as sums of rotated diagonals, and the baby-step/giant-step split.
//!
//! A map y = M·x acts on slot vectors as y = Σ_d diag_d ⊙ rot_d(x) (rot_d(x)[t] = x[t + d]).
//! Two layouts produce the diagonals:
//!
//! - **direct**: each input value sits at one known slot (e.g. the im2col layout the requester
//!   encodes), output o goes to slot o; entry (o, j) lands on diagonal slot(j) − o. A
//!   convolution in im2col layout (tap·P + p) with outputs in CHW order (c·P + p) has only
//!   taps + channels − 1 diagonals, multiples of P.
//! - **hybrid** (Juvekar et al., GAZELLE): the input is replicated with a power-of-two period
//!   p_in; outputs are padded to a power of two p_out. With p_out ≤ p_in the p_out diagonals
//!   diag_d[t] = M[t mod p_out][(t + d) mod p_in] cover every entry once, and log2(p_in/p_out)
//!   rotate-and-add steps fold the partial sums: the output comes out replicated with period
//!   p_out, ready for the next map. With p_out > p_in, p_in diagonals and no fold.
//!
//! All-zero diagonals are dropped. The sum is evaluated as Σ_g rot_{g}(Σ_b diag'_{g,b} ⊙
//! rot_b(x)) with diag'_{g,b} = rot_{−g}(diag_{g+b}): the baby rotations rot_b(x) share one
//! decomposition (hoisting), and each giant rotation acts on a sum.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::lower::Affine;

/// Diagonals by (signed) rotation offset; each a full slot vector.
pub(crate) type Diagonals = BTreeMap<i64, Vec<f64>>;

/// Rotation left by k: out[t] = v[(t + k) mod len].
pub(crate) fn rotate_vec(v: &[f64], k: i64) -> Vec<f64> {
    let n = v.len() as i64;
    let k = k.rem_euclid(n) as usize;
    let mut out = Vec::with_capacity(v.len());
    out.extend_from_slice(&v[k..]);
    out.extend_from_slice(&v[..k]);
    out
}

fn add_entry(diags: &mut Diagonals, slots: usize, d: i64, t: usize, w: f64) {
    diags.entry(d).or_insert_with(|| vec![0.0; slots])[t] += w;
}

/// Diagonals when input j for output o sits at `slot(o, j)`, output o at slot o; with an input
/// replicated with period `period` (a power of two dividing the slots, above every slot used),
/// the diagonals repeat with it and so does the output.
pub(crate) fn direct(
    map: &Affine,
    slots: usize,
    period: usize,
    slot: impl Fn(usize, u32) -> usize,
) -> Diagonals {
    let mut diags = Diagonals::new();
    for (o, row) in map.rows.iter().enumerate() {
        for &(j, w) in row {
            let d = slot(o, j) as i64 - o as i64;
            let mut t = o;
            while t < slots {
                add_entry(&mut diags, slots, d, t, w);
                t += period;
            }
        }
    }
    diags
}

/// Hybrid diagonals for an input replicated with period `p_in`: returns them, the output
/// period and the fold steps.
pub(crate) fn hybrid(map: &Affine, p_in: usize, slots: usize) -> (Diagonals, usize, Vec<i64>) {
    debug_assert!(p_in.is_power_of_two() && map.n_in <= p_in && p_in <= slots);
    let p_out = map.n_out().next_power_of_two();
    let mut diags = Diagonals::new();
    // signed representative of d mod p_in: the smallest magnitude keeps offsets structured
    let signed = |d: usize| -> i64 {
        if d > p_in / 2 {
            d as i64 - p_in as i64
        } else {
            d as i64
        }
    };
    for (row, entries) in map.rows.iter().enumerate() {
        for &(col, w) in entries {
            let delta = (col as usize + p_in - row % p_in) % p_in;
            let (d, t, period) = if p_out <= p_in {
                // the one t ≡ row (mod p_out) in 0..p_in whose diagonal d < p_out reaches col
                let d = delta % p_out;
                (d, row + delta - d, p_in)
            } else {
                (delta, row, p_out)
            };
            let key = signed(d);
            let mut u = t;
            while u < slots {
                add_entry(&mut diags, slots, key, u, w);
                u += period;
            }
        }
    }
    let mut fold = Vec::new();
    let mut step = p_out;
    while step < p_in {
        fold.push(step as i64);
        step *= 2;
    }
    (diags, p_out, fold)
}

/// The number of nonzero hybrid diagonals (without building them).
pub(crate) fn hybrid_count(map: &Affine, p_in: usize) -> usize {
    let p_out = map.n_out().next_power_of_two();
    let mut offsets = HashSet::new();
    for (row, entries) in map.rows.iter().enumerate() {
        for &(col, _) in entries {
            let delta = (col as usize + p_in - row % p_in) % p_in;
            offsets.insert(if p_out <= p_in { delta % p_out } else { delta });
        }
    }
    offsets.len()
}

/// Relative costs of a hoisted (baby) rotation and of a giant step (its rotation and the
/// rescale before it), for the split search.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StepCosts {
    pub baby: f64,
    pub giant: f64,
}

/// One giant step: the rotation after summing, and its (baby index, pre-rotated diagonal)
/// terms.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Giant {
    pub step: i64,
    pub terms: Vec<(usize, Vec<f64>)>,
}

/// The baby-step/giant-step evaluation order of a set of diagonals.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Bsgs {
    pub baby_steps: Vec<i64>,
    pub giants: Vec<Giant>,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Splits the offsets as d = g + b (g a multiple of the giant size G, 0 ≤ b < G), choosing
/// G to minimise the rotations' cost.
pub(crate) fn bsgs(diags: Diagonals, costs: StepCosts) -> Bsgs {
    let offsets: Vec<i64> = diags.keys().copied().collect();
    let size = choose_giant_size(&offsets, costs);
    let mut baby_set = BTreeSet::new();
    for &d in &offsets {
        baby_set.insert(d.rem_euclid(size));
    }
    let baby_steps: Vec<i64> = baby_set.into_iter().collect();
    let mut giants: BTreeMap<i64, Vec<(usize, Vec<f64>)>> = BTreeMap::new();
    for (d, v) in diags {
        let b = d.rem_euclid(size);
        let g = d - b;
        let bi = baby_steps
            .binary_search(&b)
            .expect("every baby was collected");
        giants
            .entry(g)
            .or_default()
            .push((bi, if g == 0 { v } else { rotate_vec(&v, -g) }));
    }
    Bsgs {
        baby_steps,
        giants: giants
            .into_iter()
            .map(|(step, terms)| Giant { step, terms })
            .collect(),
    }
}

fn choose_giant_size(offsets: &[i64], costs: StepCosts) -> i64 {
    if offsets.len() <= 1 {
        return 1;
    }
    let s = offsets
        .iter()
        .fold(0u64, |g, &d| gcd(g, d.unsigned_abs()))
        .max(1) as i64;
    let (lo, hi) = (offsets[0], offsets[offsets.len() - 1]);
    let span = (hi - lo) / s + 1;
    let mut best = (f64::INFINITY, 1i64);
    let mut babies = HashSet::new();
    let mut giants = HashSet::new();
    for k in 1..=span.min(2048) {
        let size = k * s;
        babies.clear();
        giants.clear();
        for &d in offsets {
            let b = d.rem_euclid(size);
            babies.insert(b);
            giants.insert(d - b);
        }
        let nb = babies.len() - usize::from(babies.contains(&0));
        let ng = giants.len() - usize::from(giants.contains(&0));
        let cost = nb as f64 * costs.baby + ng as f64 * costs.giant;
        if cost < best.0 {
            best = (cost, size);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::network::Shape;
    use proptest::prelude::*;

    fn dense_map(n_out: usize, n_in: usize, seed: u64) -> Affine {
        let mut s = seed;
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as f64 / (1u64 << 31) as f64 - 0.5
        };
        Affine {
            n_in,
            rows: (0..n_out)
                .map(|_| (0..n_in as u32).map(|j| (j, next())).collect())
                .collect(),
            bias: vec![0.0; n_out],
            out_shape: Shape::Flat(n_out),
        }
    }

    /// Evaluates the BSGS form on plain slot vectors, exactly as the encrypted evaluation does.
    fn eval_bsgs(b: &Bsgs, x: &[f64], fold: &[i64]) -> Vec<f64> {
        let babies: Vec<Vec<f64>> = b.baby_steps.iter().map(|&k| rotate_vec(x, k)).collect();
        let mut y = vec![0.0; x.len()];
        for g in &b.giants {
            let mut acc = vec![0.0; x.len()];
            for (bi, d) in &g.terms {
                for t in 0..x.len() {
                    acc[t] += d[t] * babies[*bi][t];
                }
            }
            for (yt, a) in y.iter_mut().zip(rotate_vec(&acc, g.step)) {
                *yt += a;
            }
        }
        for &f in fold {
            let r = rotate_vec(&y, f);
            y.iter_mut().zip(r).for_each(|(a, b)| *a += b);
        }
        y
    }

    const COSTS: StepCosts = StepCosts {
        baby: 1.0,
        giant: 3.0,
    };

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn hybrid_bsgs_equals_matrix_product(
            n_out in 1usize..40, n_in in 1usize..40, log_slots in 6u32..8, seed in any::<u64>(),
            replicate in any::<bool>(),
        ) {
            let slots = 1usize << log_slots;
            let map = dense_map(n_out, n_in, seed);
            let p_in = if replicate { n_in.next_power_of_two() } else { slots };
            let x: Vec<f64> = (0..n_in).map(|i| (i as f64 * 0.37).sin()).collect();
            let slots_x: Vec<f64> = (0..slots)
                .map(|t| x.get(t % p_in).copied().unwrap_or(0.0))
                .collect();
            let (diags, p_out, fold) = hybrid(&map, p_in, slots);
            prop_assert!(diags.len() <= p_out.min(p_in));
            let y = eval_bsgs(&bsgs(diags, COSTS), &slots_x, &fold);
            let want = map.apply(&x);
            // output replicated with period p_out, zero beyond n_out
            for (t, yt) in y.iter().enumerate() {
                let w = want.get(t % p_out).copied().unwrap_or(0.0);
                prop_assert!((yt - w).abs() < 1e-9, "slot {} got {} want {}", t, yt, w);
            }
        }
    }

    #[test]
    fn im2col_convolution_has_taps_plus_channels_diagonals() {
        // 4 outputs channels over P = 9 positions, 5 taps per position (input slot tap·P + p)
        let (c, p, taps) = (4usize, 9usize, 5usize);
        let map = Affine {
            n_in: taps * p,
            rows: (0..c * p)
                .map(|o| {
                    (0..taps)
                        .map(|tap| ((tap * p + o % p) as u32, (o * 7 + tap) as f64 * 0.01))
                        .collect()
                })
                .collect(),
            bias: vec![0.0; c * p],
            out_shape: Shape::Chw([c, 3, 3]),
        };
        let slots = 64;
        let diags = direct(&map, slots, slots, |_, j| j as usize);
        assert_eq!(diags.len(), taps + c - 1);
        assert!(diags.keys().all(|d| d % p as i64 == 0));
        let x: Vec<f64> = (0..slots)
            .map(|t| {
                if t < taps * p {
                    t as f64 * 0.1 - 1.0
                } else {
                    0.0
                }
            })
            .collect();
        let plan = bsgs(diags, COSTS);
        // structured offsets give a structured split: steps are multiples of P
        assert!(plan.baby_steps.iter().all(|b| b % p as i64 == 0));
        let y = eval_bsgs(&plan, &x, &[]);
        let want = map.apply(&x[..taps * p]);
        for (t, yt) in y.iter().enumerate() {
            let w = want.get(t).copied().unwrap_or(0.0);
            assert!((yt - w).abs() < 1e-9);
        }
    }

    #[test]
    fn giant_size_balances_rotations() {
        let diags: Diagonals = (0..64).map(|d| (d, vec![1.0; 128])).collect();
        let plan = bsgs(
            diags,
            StepCosts {
                baby: 1.0,
                giant: 1.0,
            },
        );
        // 64 contiguous offsets: 8 babies × 8 giants is optimal for equal costs
        assert_eq!(plan.baby_steps.len() + plan.giants.len(), 16);
    }
}
