//! Affine maps as sums of rotated diagonals, and the baby-step/giant-step split.
//!
//! A map y = M·x acts on slot vectors as y = Σ_d diag_d ⊙ rot_d(x) (rot_d(x)[t] = x[t + d]).
//! Two layouts produce the diagonals:
//!
//! - **direct**: each input value sits at a known slot of a known input ciphertext (the im2col
//!   layout the requester encodes, possibly over several ciphertexts, or the layout a previous
//!   map chose), each output at a chosen slot; entry (o, j) lands on diagonal slot(j) − slot(o)
//!   of j's ciphertext. A convolution in im2col layout (tap·P + π(p)) with outputs at
//!   c·P + π(p) has only taps + channels − 1 diagonals, multiples of P, whatever the position
//!   order π; a strided map whose input positions are ordered by its stride (space-to-depth) is
//!   a product of channels with few diagonals too.
//! - **hybrid** (Juvekar et al., GAZELLE): the input is replicated with a power-of-two period
//!   p_in; outputs are padded to a power of two p_out. With p_out ≤ p_in the p_out diagonals
//!   diag_d[t] = M[t mod p_out][(t + d) mod p_in] cover every entry once, and log2(p_in/p_out)
//!   rotate-and-add steps fold the partial sums: the output comes out replicated with period
//!   p_out, ready for the next map. With p_out > p_in, p_in diagonals and no fold.
//!
//! All-zero diagonals are dropped. The sum is evaluated as Σ_g rot_{g}(Σ_k Σ_b diag'_{k,g,b} ⊙
//! rot_b(x_k)) with diag'_{k,g,b} = rot_{−g}(diag_{k,g+b}) over the input ciphertexts x_k: the
//! baby rotations of each input share one decomposition (hoisting), and each giant rotation acts
//! on a sum over every input, so a map of K input ciphertexts pays its giant steps once.

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

/// `d` modulo `m`, in (−m/2, m/2].
fn signed_mod(d: i64, m: i64) -> i64 {
    let r = d.rem_euclid(m);
    if r > m / 2 { r - m } else { r }
}

/// Diagonals of each of `inputs` input ciphertexts when the input value j read by output o sits
/// at `input(o, j)` = (ciphertext, slot) and output o goes to slot `output(o)`. Slots are below
/// `period`, a power of two dividing the slots: with `period` < slots the inputs are replicated
/// with it and so is the output. Offsets are reduced modulo the period when that merges
/// diagonals.
pub(crate) fn direct(
    map: &Affine,
    inputs: usize,
    slots: usize,
    period: usize,
    input: impl Fn(usize, u32) -> (usize, usize),
    output: impl Fn(usize) -> usize,
) -> Vec<Diagonals> {
    let p = period as i64;
    let raw = |o: usize, j: u32| -> (usize, i64, usize) {
        let (k, s) = input(o, j);
        let t = output(o);
        (k, s as i64 - t as i64, t)
    };
    // raw offsets keep arithmetic progressions (cheap giant steps); reduced ones merge
    // diagonals that wrap around the period
    let mut raw_set = BTreeSet::new();
    let mut reduced_set = BTreeSet::new();
    for (o, row) in map.rows.iter().enumerate() {
        for &(j, _) in row {
            let (k, d, _) = raw(o, j);
            raw_set.insert((k, d));
            reduced_set.insert((k, signed_mod(d, p)));
        }
    }
    let reduce = reduced_set.len() < raw_set.len();
    let mut diags = vec![Diagonals::new(); inputs];
    for (o, row) in map.rows.iter().enumerate() {
        for &(j, w) in row {
            let (k, d, t) = raw(o, j);
            let d = if reduce { signed_mod(d, p) } else { d };
            let mut u = t;
            while u < slots {
                add_entry(&mut diags[k], slots, d, u, w);
                u += period;
            }
        }
    }
    diags
}

/// The number of distinct diagonals [`direct`] makes (without building them).
pub(crate) fn direct_count(
    map: &Affine,
    period: usize,
    input: impl Fn(usize, u32) -> (usize, usize),
    output: impl Fn(usize) -> usize,
) -> Vec<(usize, i64)> {
    let p = period as i64;
    let mut raw_set = HashSet::new();
    let mut reduced_set = HashSet::new();
    for (o, row) in map.rows.iter().enumerate() {
        let t = output(o) as i64;
        for &(j, _) in row {
            let (k, s) = input(o, j);
            let d = s as i64 - t;
            raw_set.insert((k, d));
            reduced_set.insert((k, signed_mod(d, p)));
        }
    }
    let mut v: Vec<(usize, i64)> = if reduced_set.len() < raw_set.len() {
        reduced_set.into_iter().collect()
    } else {
        raw_set.into_iter().collect()
    };
    v.sort_unstable();
    v
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

/// One product of a giant step: input ciphertext, baby rotation (index into
/// [`Bsgs::baby_steps`]) and the pre-rotated diagonal it is multiplied by.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Term {
    pub input: usize,
    pub baby: usize,
    pub diag: Vec<f64>,
}

/// One giant step: the rotation after summing its terms over every input.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Giant {
    pub step: i64,
    pub terms: Vec<Term>,
}

/// The baby-step/giant-step evaluation order of a set of diagonals.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Bsgs {
    /// Input ciphertexts of the map.
    pub inputs: usize,
    pub baby_steps: Vec<i64>,
    pub giants: Vec<Giant>,
}

impl Bsgs {
    /// The baby indices input `k` is rotated by (ascending).
    pub fn babies_of(&self, k: usize) -> Vec<usize> {
        let set: BTreeSet<usize> = self
            .giants
            .iter()
            .flat_map(|g| &g.terms)
            .filter(|t| t.input == k)
            .map(|t| t.baby)
            .collect();
        set.into_iter().collect()
    }

    /// Hoisted baby rotations over all inputs (non-zero steps).
    pub fn baby_rotations(&self) -> usize {
        (0..self.inputs)
            .map(|k| {
                self.babies_of(k)
                    .iter()
                    .filter(|&&b| self.baby_steps[b] != 0)
                    .count()
            })
            .sum()
    }

    /// Diagonal products.
    pub fn products(&self) -> usize {
        self.giants.iter().map(|g| g.terms.len()).sum()
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Splits the offsets of every input as d = g + b (g a multiple of the giant size G,
/// 0 ≤ b < G), choosing G to minimise the rotations' cost: baby rotations are paid per input,
/// giant rotations once.
pub(crate) fn bsgs(diags: Vec<Diagonals>, costs: StepCosts) -> Bsgs {
    let offsets: Vec<Vec<i64>> = diags.iter().map(|d| d.keys().copied().collect()).collect();
    let size = choose_giant_size(&offsets, costs);
    let mut baby_set = BTreeSet::new();
    for &d in offsets.iter().flatten() {
        baby_set.insert(d.rem_euclid(size));
    }
    let baby_steps: Vec<i64> = baby_set.into_iter().collect();
    let mut giants: BTreeMap<i64, Vec<Term>> = BTreeMap::new();
    let inputs = diags.len();
    for (k, d) in diags.into_iter().enumerate() {
        for (off, v) in d {
            let b = off.rem_euclid(size);
            let g = off - b;
            let baby = baby_steps
                .binary_search(&b)
                .expect("every baby was collected");
            giants.entry(g).or_default().push(Term {
                input: k,
                baby,
                diag: if g == 0 { v } else { rotate_vec(&v, -g) },
            });
        }
    }
    Bsgs {
        inputs,
        baby_steps,
        giants: giants
            .into_iter()
            .map(|(step, terms)| Giant { step, terms })
            .collect(),
    }
}

/// The rotations' cost of the best split of these offsets (per input), for comparing layouts.
pub(crate) fn bsgs_cost(offsets: &[Vec<i64>], costs: StepCosts) -> f64 {
    split_cost(offsets, choose_giant_size(offsets, costs), costs)
}

fn split_cost(offsets: &[Vec<i64>], size: i64, costs: StepCosts) -> f64 {
    let mut giants = HashSet::new();
    let mut babies = 0usize;
    let mut seen = HashSet::new();
    for per_input in offsets {
        seen.clear();
        for &d in per_input {
            let b = d.rem_euclid(size);
            if b != 0 && seen.insert(b) {
                babies += 1;
            }
            if d - b != 0 {
                giants.insert(d - b);
            }
        }
    }
    babies as f64 * costs.baby + giants.len() as f64 * costs.giant
}

fn choose_giant_size(offsets: &[Vec<i64>], costs: StepCosts) -> i64 {
    let all: Vec<i64> = offsets.iter().flatten().copied().collect();
    if all.len() <= 1 {
        return 1;
    }
    let s = all
        .iter()
        .fold(0u64, |g, &d| gcd(g, d.unsigned_abs()))
        .max(1) as i64;
    let (lo, hi) = all
        .iter()
        .fold((i64::MAX, i64::MIN), |(a, b), &d| (a.min(d), b.max(d)));
    let span = (hi - lo) / s + 1;
    let mut best = (f64::INFINITY, 1i64);
    for k in 1..=span.min(2048) {
        let size = k * s;
        let cost = split_cost(offsets, size, costs);
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
        eval_bsgs_multi(b, &[x.to_vec()], fold)
    }

    fn eval_bsgs_multi(b: &Bsgs, xs: &[Vec<f64>], fold: &[i64]) -> Vec<f64> {
        let n = xs[0].len();
        let babies: Vec<Vec<Vec<f64>>> = xs
            .iter()
            .map(|x| b.baby_steps.iter().map(|&k| rotate_vec(x, k)).collect())
            .collect();
        let mut y = vec![0.0; n];
        for g in &b.giants {
            let mut acc = vec![0.0; n];
            for term in &g.terms {
                let bx = &babies[term.input][term.baby];
                for t in 0..n {
                    acc[t] += term.diag[t] * bx[t];
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
            let y = eval_bsgs(&bsgs(vec![diags], COSTS), &slots_x, &fold);
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
        let diags = direct(&map, 1, slots, slots, |_, j| (0, j as usize), |o| o);
        assert_eq!(diags.len(), 1);
        let diags = diags.into_iter().next().unwrap();
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
        let plan = bsgs(vec![diags], COSTS);
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
            vec![diags],
            StepCosts {
                baby: 1.0,
                giant: 1.0,
            },
        );
        // 64 contiguous offsets: 8 babies × 8 giants is optimal for equal costs
        assert_eq!(plan.baby_steps.len() + plan.giants.len(), 16);
    }

    #[test]
    fn a_map_over_several_input_ciphertexts_pays_its_giant_steps_once() {
        // 8 input ciphertexts of 4 taps × P positions each (im2col over 32 taps), 4 output
        // channels: output c·P + p = Σ_tap w[c, tap]·x[tap][p]
        let (p, taps_per_ct, cts, c) = (8usize, 4usize, 8usize, 4usize);
        let slots = taps_per_ct * p;
        let taps = taps_per_ct * cts;
        let map = Affine {
            n_in: taps * p,
            rows: (0..c * p)
                .map(|o| {
                    (0..taps)
                        .map(|tap| {
                            (
                                (tap * p + o % p) as u32,
                                ((o / p) * 31 + tap) as f64 * 0.01 - 0.3,
                            )
                        })
                        .collect()
                })
                .collect(),
            bias: vec![0.0; c * p],
            out_shape: Shape::Chw([c, 2, 4]),
        };
        let diags = direct(
            &map,
            cts,
            slots,
            slots,
            |_, j| (j as usize / slots, j as usize % slots),
            |o| o,
        );
        // offsets (tap − c)·P reduced modulo the slots: at most slots / P per input
        assert!(diags.iter().all(|d| d.len() <= taps_per_ct));
        let counts = direct_count(
            &map,
            slots,
            |_, j| (j as usize / slots, j as usize % slots),
            |o| o,
        );
        assert_eq!(counts.len(), diags.iter().map(|d| d.len()).sum::<usize>());
        let plan = bsgs(
            diags,
            StepCosts {
                baby: 1.0,
                giant: 3.0,
            },
        );
        // babies are per input, giants shared: all giants is the cheaper split here
        assert!(plan.baby_rotations() <= plan.giants.len() * cts);
        let xs: Vec<Vec<f64>> = (0..cts)
            .map(|k| {
                (0..slots)
                    .map(|t| ((k * slots + t) as f64 * 0.13).cos())
                    .collect()
            })
            .collect();
        let y = eval_bsgs_multi(&plan, &xs, &[]);
        let flat: Vec<f64> = xs.concat();
        let want = map.apply(&flat);
        for (t, w) in want.iter().enumerate() {
            assert!((y[t] - w).abs() < 1e-9, "slot {t}: {} vs {w}", y[t]);
        }
    }
}
