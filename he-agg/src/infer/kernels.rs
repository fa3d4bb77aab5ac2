//! Lazy multiply-accumulate of slot-wise products (NTT domain): Σ_b x_b ⊙ w_b with one modular
//! reduction per coefficient instead of one per product, as 128-bit sums.

use crate::ckks::{Ciphertext, CkksContext, CkksError, Complex, Evaluator};

use super::error::InferError;
use crate::ring::{Modulus, Poly, for_each_limb_heavy};

/// Coefficients per block: the accumulators stay in registers and L1.
const BLOCK: usize = 32;

/// out[k] = Σ_j a_j[k]·b_j[k] mod m over the pairs.
fn mac_limb(m: &Modulus, pairs: &[(&[u64], &[u64])], out: &mut [u64]) {
    if super::ifma::usable(m, out.len()) {
        return super::ifma::mac_pairs(m, pairs, out);
    }
    if super::float_mac::usable(m) {
        return super::float_mac::mac_pairs(m, pairs, out);
    }
    mac_limb_generic(m, pairs, out)
}

/// Coefficients per block of [`mac_limb_generic`]: each pair's words are read in runs of 2 KB
/// (a map's diagonals stream from memory; shorter runs jumping between many pairs leave the
/// hardware prefetchers behind) while the 4 KB of sums stay in L1.
const PAIR_BLOCK: usize = 256;

fn mac_limb_generic<'a>(m: &Modulus, pairs: &[(&'a [u64], &'a [u64])], out: &mut [u64]) {
    let q1 = (m.value() - 1) as u128;
    // products that fit in a u128 beside one reduced value
    let limit = (u128::MAX / (q1 * q1).max(1) - 1).clamp(1, 1 << 20) as usize;
    // four pairs' products summed in registers before each sum in L1 is read and written (one
    // load and one store of 16 bytes per product otherwise; a 59-bit modulus allows 1,023)
    let group = GROUP.min(limit - 1).max(1);
    for (start, chunk) in (0..out.len())
        .step_by(PAIR_BLOCK)
        .zip(out.chunks_mut(PAIR_BLOCK))
    {
        let len = chunk.len();
        let mut acc = [0u128; PAIR_BLOCK];
        let mut count = 0usize;
        for g in pairs.chunks(group) {
            if count + g.len() > limit {
                for v in acc.iter_mut().take(len) {
                    *v = m.reduce_u128(*v) as u128;
                }
                count = 1;
            }
            count += g.len();
            let at = |p: &(&'a [u64], &'a [u64])| -> (&'a [u64], &'a [u64]) {
                (&p.0[start..start + len], &p.1[start..start + len])
            };
            if let [p0, p1, p2, p3] = g {
                let ((a0, b0), (a1, b1), (a2, b2), (a3, b3)) = (at(p0), at(p1), at(p2), at(p3));
                for k in 0..len {
                    acc[k] += a0[k] as u128 * b0[k] as u128
                        + a1[k] as u128 * b1[k] as u128
                        + a2[k] as u128 * b2[k] as u128
                        + a3[k] as u128 * b3[k] as u128;
                }
            } else {
                for p in g {
                    let (a, b) = at(p);
                    for k in 0..len {
                        acc[k] += a[k] as u128 * b[k] as u128;
                    }
                }
            }
        }
        for (o, &v) in chunk.iter_mut().zip(&acc) {
            *o = m.reduce_u128(v);
        }
    }
}

/// Pairs whose products [`mac_limb_generic`] sums before adding them to the running sums.
const GROUP: usize = 4;

/// Σ_b xs[b] ⊙ ws[b] for degree-1 ciphertexts and plaintext polynomials (at least `level`
/// limbs): the two parts of the result, at `level`.
pub(crate) fn dot_plain(
    ctx: &CkksContext,
    level: usize,
    xs: &[&Ciphertext],
    ws: &[&Poly],
) -> Vec<Poly> {
    let ring = ctx.rlwe().ring();
    let n = ctx.n();
    let mut out = Poly::zero(n, 2 * level);
    for_each_limb_heavy(out.data_mut(), n, |p, limb| {
        let (part, i) = (p / level, p % level);
        let pairs: Vec<(&[u64], &[u64])> = xs
            .iter()
            .zip(ws)
            .map(|(x, w)| (x.parts[part].limb(i), w.limb(i)))
            .collect();
        mac_limb(ring.modulus(i), &pairs, limb);
    });
    let second = out.slice_limbs(level..2 * level);
    out.truncate(level);
    vec![out, second]
}

/// Coefficients of every limb a task of [`dot_plain_giants`] owns.
const TASK: usize = 2048;
/// Coefficients of a pass over every giant step: the baby rotations' words of one pass
/// (babies × 2 parts × 256 × 8 bytes: 180 KB for 44 babies) stay in L2 while each giant step's
/// diagonals stream through once.
const PASS: usize = 256;

/// [`dot_plain`] for every giant step of a map at once: `giants[g]` = (its rotated inputs, its
/// diagonals), all at `level`; one two-part sum per giant step.
///
/// One giant step after another, each streams its baby rotations from memory again (a map of
/// 21 giant steps over 44 babies reads every rotation 21 times); here each pass over
/// [`PASS`] coefficients reads the rotations once from memory and every giant step's
/// diagonals once, and the babies' words are reused from cache by all the giant steps.
pub(crate) fn dot_plain_giants(
    ctx: &CkksContext,
    level: usize,
    giants: &[(Vec<&Ciphertext>, Vec<&Poly>)],
) -> Vec<Vec<Poly>> {
    let ring = ctx.rlwe().ring();
    let n = ctx.n();
    let task = TASK.min(n);
    let mut outs: Vec<[Poly; 2]> = giants
        .iter()
        .map(|_| [Poly::zero(n, level), Poly::zero(n, level)])
        .collect();
    // every task's slices of every output: task t = limb · (n / task) + chunk, its outputs in
    // giant-major, part-minor order
    let per_limb = n / task;
    let mut tasks: Vec<Vec<&mut [u64]>> = (0..level * per_limb)
        .map(|_| Vec::with_capacity(2 * giants.len()))
        .collect();
    for parts in &mut outs {
        for part in parts.iter_mut() {
            for (t, slice) in part.data_mut().chunks_mut(task).enumerate() {
                tasks[t].push(slice);
            }
        }
    }
    let work = |t: usize, outs: &mut Vec<&mut [u64]>| {
        let (i, start) = (t / per_limb, (t % per_limb) * task);
        let m = ring.modulus(i);
        let mut pairs: Vec<(&[u64], &[u64])> = Vec::new();
        for from in (0..task).step_by(PASS) {
            let to = (from + PASS).min(task);
            let (a, b) = (start + from, start + to);
            for (g, (xs, ws)) in giants.iter().enumerate() {
                for part in 0..2 {
                    pairs.clear();
                    pairs.extend(
                        xs.iter()
                            .zip(ws)
                            .map(|(x, w)| (&x.parts[part].limb(i)[a..b], &w.limb(i)[a..b])),
                    );
                    mac_limb(m, &pairs, &mut outs[2 * g + part][from..to]);
                }
            }
        }
    };
    if rayon::current_num_threads() > 1 {
        use rayon::prelude::*;
        tasks
            .into_par_iter()
            .enumerate()
            .for_each(|(t, mut o)| work(t, &mut o));
    } else {
        for (t, mut o) in tasks.into_iter().enumerate() {
            work(t, &mut o);
        }
    }
    outs.into_iter().map(|[a, b]| vec![a, b]).collect()
}

/// Σ_b xs[b] ⊗ ws[b] for degree-1 ciphertexts: the three parts of the degree-2 result.
pub(crate) fn dot_cipher(
    ctx: &CkksContext,
    level: usize,
    xs: &[&Ciphertext],
    ws: &[&Ciphertext],
) -> Vec<Poly> {
    let ring = ctx.rlwe().ring();
    let n = ctx.n();
    let mut out = Poly::zero(n, 3 * level);
    for_each_limb_heavy(out.data_mut(), n, |p, limb| {
        let (part, i) = (p / level, p % level);
        let mut pairs: Vec<(&[u64], &[u64])> = Vec::with_capacity(2 * xs.len());
        for (x, w) in xs.iter().zip(ws) {
            let (x0, x1) = (x.parts[0].limb(i), x.parts[1].limb(i));
            let (w0, w1) = (w.parts[0].limb(i), w.parts[1].limb(i));
            match part {
                0 => pairs.push((x0, w0)),
                1 => {
                    pairs.push((x0, w1));
                    pairs.push((x1, w0));
                }
                _ => pairs.push((x1, w1)),
            }
        }
        mac_limb(ring.modulus(i), &pairs, limb);
    });
    let third = out.slice_limbs(2 * level..3 * level);
    let second = out.slice_limbs(level..2 * level);
    out.truncate(level);
    vec![out, second, third]
}

/// For the rows r of a group sharing the input columns `cols`:
/// outs[r][k] (+)= Σ_e weights[r·cols.len() + e]·inputs[cols[e]][k] mod m (one limb of every
/// input and output; `accumulate` adds to the outputs' values, which are below m).
pub(crate) fn group_product(
    m: &Modulus,
    cols: &[u32],
    weights: &[u64],
    inputs: &[&[u64]],
    outs: &mut [&mut [u64]],
    accumulate: bool,
) {
    let n = outs.first().map_or(0, |o| o.len());
    if super::ifma::usable(m, n) {
        return super::ifma::group_product(m, cols, weights, inputs, outs, accumulate);
    }
    // small weights (a chain with a prime above 51 bits rounds them): two FMAs per four
    // products at up to 40 bits where float_mac takes five operations for any weight (a
    // 3×3×64 group at 40 bits: 69–77 ms against float_mac's 97–106, `small_weight_product_cost`)
    if super::wide_mac::usable(m)
        && super::wide_mac::group_product(m, cols, weights, inputs, outs, accumulate)
    {
        return;
    }
    if super::float_mac::usable(m) {
        return super::float_mac::group_product(m, cols, weights, inputs, outs, accumulate);
    }
    group_product_generic(m, cols, weights, inputs, outs, accumulate)
}

/// Primes wider than the vector kernels take (over 51 bits: a deep network's batched chain
/// keeps two 59-bit limbs) in 128-bit sums, two rows at a time: each block's inputs are
/// gathered once, coefficient-major, so a coefficient's column walk reads one contiguous run
/// and both rows' sums stay in registers (one input word per two products; no sum goes
/// through memory between products).
pub(crate) fn group_product_generic(
    m: &Modulus,
    cols: &[u32],
    weights: &[u64],
    inputs: &[&[u64]],
    outs: &mut [&mut [u64]],
    accumulate: bool,
) {
    let nnz = cols.len();
    let n = outs.first().map_or(0, |o| o.len());
    let q1 = (m.value() - 1) as u128;
    let limit = (u128::MAX / (q1 * q1).max(1) - 1).clamp(1, 1 << 20) as usize;
    // products per run beside the running value (itself below q), before it is folded
    let per = (limit - 1).max(1);
    let mut block = vec![0u64; nnz * BLOCK];
    for start in (0..n).step_by(BLOCK) {
        let len = BLOCK.min(n - start);
        for (e, &c) in cols.iter().enumerate() {
            for (k, &x) in inputs[c as usize][start..start + len].iter().enumerate() {
                block[k * nnz + e] = x;
            }
        }
        for (r0, rows) in (0..outs.len()).step_by(2).zip(outs.chunks_mut(2)) {
            let w0 = &weights[r0 * nnz..(r0 + 1) * nnz];
            // a lone last row is computed twice over, its copy never stored
            let w1 = if rows.len() == 2 {
                &weights[(r0 + 1) * nnz..(r0 + 2) * nnz]
            } else {
                w0
            };
            for k in 0..len {
                let xs = &block[k * nnz..(k + 1) * nnz];
                let init = |r: usize| -> u128 {
                    match rows.get(r) {
                        Some(row) if accumulate => row[start + k] as u128,
                        _ => 0,
                    }
                };
                let (mut a0, mut a1) = (init(0), init(1));
                for (run, from) in (0..nnz).step_by(per).enumerate() {
                    if run > 0 {
                        a0 = m.reduce_u128(a0) as u128;
                        a1 = m.reduce_u128(a1) as u128;
                    }
                    let to = (from + per).min(nnz);
                    for ((&x, &u), &v) in xs[from..to].iter().zip(&w0[from..to]).zip(&w1[from..to])
                    {
                        a0 += u as u128 * x as u128;
                        a1 += v as u128 * x as u128;
                    }
                }
                let (first, rest) = rows.split_at_mut(1);
                first[0][start + k] = m.reduce_u128(a0);
                if let Some(second) = rest.first_mut() {
                    second[start + k] = m.reduce_u128(a1);
                }
            }
        }
    }
}

/// Checks that a ciphertext from outside is a well-formed degree-1 ciphertext of this ring at
/// `level` with scale `scale` (relative 1e-9), so nothing downstream can index out of bounds.
pub(crate) fn check_input(
    ctx: &CkksContext,
    ct: &Ciphertext,
    level: usize,
    scale: f64,
) -> Result<(), InferError> {
    if ct.parts.len() != 2 {
        return Err(InferError::Ckks(CkksError::Degree {
            got: ct.parts.len().saturating_sub(1),
            want: 1,
        }));
    }
    let found = ct.parts[0].limbs();
    if ct
        .parts
        .iter()
        .any(|p| p.n() != ctx.n() || p.limbs() != level || p.data().len() != ctx.n() * level)
    {
        return Err(InferError::InputLevel {
            expected: level,
            found,
        });
    }
    if !(ct.scale.is_finite() && ((ct.scale - scale) / scale).abs() < 1e-9) {
        return Err(InferError::InputScale {
            expected: scale.log2(),
            found: ct.scale.log2(),
        });
    }
    Ok(())
}

/// ct + c for a real constant c in every slot. The constant polynomial's NTT is the constant
/// itself, so this is one scalar addition per limb (the evaluator's `add_const` also handles
/// imaginary parts, at the price of an NTT).
pub(crate) fn add_real_const(
    eval: &Evaluator,
    ct: &mut Ciphertext,
    c: f64,
) -> Result<(), CkksError> {
    let v = (c * ct.scale).round();
    // NaN or too large for an i64: the evaluator's general path decides
    if v.is_nan() || v.abs() >= 9.2e18 {
        *ct = eval.add_const(ct, Complex::new(c, 0.0))?;
        return Ok(());
    }
    let rlwe = eval.context().rlwe();
    let basis = rlwe.q_basis(ct.level());
    let consts: Vec<u64> = basis
        .iter()
        .map(|&i| rlwe.q_modulus(i).reduce_i64(v as i64))
        .collect();
    rlwe.ring()
        .add_scalar_assign(&mut ct.parts[0], &consts, basis);
    Ok(())
}

#[cfg(test)]
#[path = "kernels_tests.rs"]
mod tests;
