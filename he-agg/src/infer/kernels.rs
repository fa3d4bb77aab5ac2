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
    if super::float_mac::usable(m) {
        return super::float_mac::group_product(m, cols, weights, inputs, outs, accumulate);
    }
    group_product_generic(m, cols, weights, inputs, outs, accumulate)
}

fn group_product_generic(
    m: &Modulus,
    cols: &[u32],
    weights: &[u64],
    inputs: &[&[u64]],
    outs: &mut [&mut [u64]],
    accumulate: bool,
) {
    let nnz = cols.len();
    let q1 = (m.value() - 1) as u128;
    let limit = (u128::MAX / (q1 * q1).max(1) - 1).clamp(1, 1 << 20) as usize;
    for (r, out) in outs.iter_mut().enumerate() {
        let w = &weights[r * nnz..(r + 1) * nnz];
        for (start, chunk) in (0..out.len()).step_by(BLOCK).zip(out.chunks_mut(BLOCK)) {
            let len = chunk.len();
            let mut acc = [0u128; BLOCK];
            if accumulate {
                for (a, &o) in acc.iter_mut().zip(chunk.iter()) {
                    *a = o as u128;
                }
            }
            let mut count = 1usize;
            for (&c, &w) in cols.iter().zip(w) {
                let x = &inputs[c as usize][start..start + len];
                for k in 0..len {
                    acc[k] += w as u128 * x[k] as u128;
                }
                count += 1;
                if count == limit {
                    for v in acc.iter_mut().take(len) {
                        *v = m.reduce_u128(*v) as u128;
                    }
                    count = 1;
                }
            }
            for (o, &v) in chunk.iter_mut().zip(&acc) {
                *o = m.reduce_u128(v);
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
mod tests {
    use super::*;

    fn words(seed: u64, q: u64, len: usize) -> Vec<u64> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 7) % q
            })
            .collect()
    }

    #[test]
    fn simd_and_generic_kernels_agree() {
        // a 51-bit prime (IFMA path where the CPU has it) and 4100 terms (one fold)
        let q = 2251799813554177u64;
        let m = Modulus::new(q);
        let n = 128;
        let a: Vec<Vec<u64>> = (0..4100).map(|j| words(j, q, n)).collect();
        let b: Vec<Vec<u64>> = (0..4100).map(|j| words(j + 9999, q, n)).collect();
        let pairs: Vec<(&[u64], &[u64])> =
            a.iter().zip(&b).map(|(x, y)| (&x[..], &y[..])).collect();
        let (mut fast, mut slow) = (vec![0u64; n], vec![0u64; n]);
        mac_limb(&m, &pairs, &mut fast);
        mac_limb_generic(&m, &pairs, &mut slow);
        assert_eq!(fast, slow);
        // a group of 5 rows over 4100 shared columns (one fold), accumulating onto 7s
        let cols: Vec<u32> = (0..4100u32).rev().collect();
        let weights = words(5, q, 5 * 4100);
        let inputs: Vec<&[u64]> = a.iter().map(|v| &v[..]).collect();
        let mut o1 = vec![vec![7u64; n]; 5];
        let mut o2 = o1.clone();
        let mut r1: Vec<&mut [u64]> = o1.iter_mut().map(|v| &mut v[..]).collect();
        let mut r2: Vec<&mut [u64]> = o2.iter_mut().map(|v| &mut v[..]).collect();
        group_product(&m, &cols, &weights, &inputs, &mut r1, true);
        group_product_generic(&m, &cols, &weights, &inputs, &mut r2, true);
        assert_eq!(o1, o2);
        let (r, k) = (3, 17);
        let want = (0..4100).fold(7u64, |acc, e| {
            m.add(acc, m.mul(weights[r * 4100 + e], a[cols[e] as usize][k]))
        });
        assert_eq!(o1[r][k], want);
        let mut o3 = vec![vec![7u64; n]; 2];
        let mut r3: Vec<&mut [u64]> = o3.iter_mut().map(|v| &mut v[..]).collect();
        group_product(&m, &cols, &weights[..2 * 4100], &inputs, &mut r3, false);
        assert_eq!(
            o3[1],
            o1[1].iter().map(|&v| m.sub(v, 7)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_generic_kernel_equals_a_product_by_product_sum_past_its_folds() {
        // 59- and 61-bit primes (1,023 and 63 products per fold), the largest words beside
        // ordinary ones, and pair counts that are not multiples of the group of four
        for (q, count) in [
            (576460752303423433u64, 2055usize),
            (2305843009213693951, 131),
        ] {
            let m = Modulus::new(q);
            let n = 300;
            let a: Vec<Vec<u64>> = (0..count)
                .map(|j| {
                    let w = words(j as u64, q, n);
                    (0..n)
                        .map(|k| if k % 5 == 0 { q - 1 } else { w[k] })
                        .collect()
                })
                .collect();
            let b: Vec<Vec<u64>> = (0..count)
                .map(|j| {
                    let w = words(j as u64 + 5000, q, n);
                    (0..n)
                        .map(|k| if k % 3 == 0 { q - 1 } else { w[k] })
                        .collect()
                })
                .collect();
            for pairs_len in [1, 3, 4, 7, count] {
                let pairs: Vec<(&[u64], &[u64])> = a[..pairs_len]
                    .iter()
                    .zip(&b)
                    .map(|(x, y)| (&x[..], &y[..]))
                    .collect();
                let mut got = vec![0u64; n];
                mac_limb_generic(&m, &pairs, &mut got);
                let want: Vec<u64> = (0..n)
                    .map(|k| (0..pairs_len).fold(0, |s, j| m.add(s, m.mul(a[j][k], b[j][k]))))
                    .collect();
                assert_eq!(got, want, "q = {q}, {pairs_len} pairs");
            }
        }
    }

    #[test]
    fn pair_sums_match_the_generic_kernel_over_and_between_blocks() {
        // whole and partial blocks of 256 coefficients, and a length that is not a multiple of
        // 4 (the portable fallback)
        let q = 2251799813554177u64;
        let m = Modulus::new(q);
        for n in [4, 300, 612, 1030] {
            let a: Vec<Vec<u64>> = (0..37).map(|j| words(j, q, n)).collect();
            let b: Vec<Vec<u64>> = (0..37).map(|j| words(j + 77, q, n)).collect();
            let pairs: Vec<(&[u64], &[u64])> =
                a.iter().zip(&b).map(|(x, y)| (&x[..], &y[..])).collect();
            let (mut fast, mut slow) = (vec![0u64; n], vec![0u64; n]);
            mac_limb(&m, &pairs, &mut fast);
            mac_limb_generic(&m, &pairs, &mut slow);
            assert_eq!(fast, slow, "n = {n}");
            let k = n - 1;
            let want = (0..37).fold(0, |acc, j| m.add(acc, m.mul(a[j][k], b[j][k])));
            assert_eq!(slow[k], want, "n = {n}");
        }
    }

    #[test]
    fn every_giant_step_at_once_equals_each_one_alone() {
        use crate::ckks::Parameters;
        // 59-bit limbs (the generic kernel) beside 40-bit ones (the vector kernels); N = 2^12:
        // two tasks per limb, each of several passes
        let params = Parameters::insecure_for_tests(12, &[59, 59, 40, 40], &[59], 4, 40.0).unwrap();
        let ctx = CkksContext::new(params).unwrap();
        let mut kg = ctx.key_generator().unwrap();
        let sk = kg.secret_key();
        let mut enc = ctx.sk_encryptor(&sk).unwrap();
        let level = 3;
        let value = |i: usize, j: usize| Complex::new(((i * 31 + j * 7) % 13) as f64 - 6.0, 0.0);
        let cts: Vec<Ciphertext> = (0..5)
            .map(|i| {
                let v: Vec<Complex> = (0..ctx.slots()).map(|j| value(i, j)).collect();
                enc.encrypt(&ctx.encode(&v, level, ctx.default_scale()).unwrap())
            })
            .collect();
        let pts: Vec<Poly> = (0..7)
            .map(|i| {
                let v: Vec<Complex> = (0..ctx.slots()).map(|j| value(i + 5, j)).collect();
                ctx.encode(&v, level, ctx.default_scale()).unwrap().poly
            })
            .collect();
        // three giant steps over overlapping inputs, one of them a single product
        let giants: Vec<(Vec<&Ciphertext>, Vec<&Poly>)> = vec![
            (cts.iter().collect(), pts[..5].iter().collect()),
            (
                vec![&cts[4], &cts[0], &cts[2]],
                vec![&pts[6], &pts[5], &pts[0]],
            ),
            (vec![&cts[3]], vec![&pts[2]]),
        ];
        let all = dot_plain_giants(&ctx, level, &giants);
        assert_eq!(all.len(), 3);
        for ((xs, ws), got) in giants.iter().zip(&all) {
            assert_eq!(*got, dot_plain(&ctx, level, xs, ws));
        }
    }

    #[test]
    fn double_precision_sums_are_exact_at_the_extremes() {
        // the largest words of a 51-bit prime, 4100 terms (a fold at 4095), and small values
        if crate::simd::Level::detected() < crate::simd::Level::Avx2 {
            return; // the AVX2 kernels cannot run here; the generic path is tested above
        }
        let q = 2251799813554177u64;
        let m = Modulus::new(q);
        let n = 64;
        let a: Vec<Vec<u64>> = (0..4100)
            .map(|j| {
                (0..n)
                    .map(|k| {
                        if k % 3 == 0 {
                            q - 1
                        } else {
                            (j * k) as u64 % q
                        }
                    })
                    .collect()
            })
            .collect();
        let b: Vec<Vec<u64>> = (0..4100)
            .map(|j| {
                (0..n)
                    .map(|k| {
                        if k % 2 == 0 {
                            q - 1 - (j % 2) as u64
                        } else {
                            k as u64
                        }
                    })
                    .collect()
            })
            .collect();
        let pairs: Vec<(&[u64], &[u64])> =
            a.iter().zip(&b).map(|(x, y)| (&x[..], &y[..])).collect();
        let (mut fast, mut slow) = (vec![0u64; n], vec![0u64; n]);
        super::super::float_mac::mac_pairs(&m, &pairs, &mut fast);
        mac_limb_generic(&m, &pairs, &mut slow);
        assert_eq!(fast, slow);
        let cols: Vec<u32> = (0..4100u32).collect();
        let weights = vec![q - 1; 2 * 4100];
        let inputs: Vec<&[u64]> = a.iter().map(|v| &v[..]).collect();
        let mut o1 = vec![vec![q - 1; n]; 2];
        let mut o2 = o1.clone();
        let mut r1: Vec<&mut [u64]> = o1.iter_mut().map(|v| &mut v[..]).collect();
        let mut r2: Vec<&mut [u64]> = o2.iter_mut().map(|v| &mut v[..]).collect();
        super::super::float_mac::group_product(&m, &cols, &weights, &inputs, &mut r1, true);
        group_product_generic(&m, &cols, &weights, &inputs, &mut r2, true);
        assert_eq!(o1, o2);
    }

    #[test]
    fn register_blocked_double_precision_groups_match_for_any_row_count() {
        if crate::simd::Level::detected() < crate::simd::Level::Avx2 {
            return;
        }
        let q = 2251799813554177u64;
        let m = Modulus::new(q);
        let a: Vec<Vec<u64>> = (0..40).map(|j| words(j, q, 40)).collect();
        let inputs: Vec<&[u64]> = a.iter().map(|v| &v[..]).collect();
        let cols: Vec<u32> = (0..40u32).step_by(3).collect();
        // rows 1–7 cover whole and partial blocks of rows; 40 and 36 coefficients the
        // vector path (blocks of 8) and the portable fallback
        for rows in 1..=7 {
            for n in [40, 36] {
                let weights = words(rows as u64 + 77, q, rows * cols.len());
                let inputs: Vec<&[u64]> = inputs.iter().map(|v| &v[..n]).collect();
                for accumulate in [false, true] {
                    let mut o1: Vec<Vec<u64>> = (0..rows).map(|r| words(r as u64, q, n)).collect();
                    let mut o2 = o1.clone();
                    let mut r1: Vec<&mut [u64]> = o1.iter_mut().map(|v| &mut v[..]).collect();
                    let mut r2: Vec<&mut [u64]> = o2.iter_mut().map(|v| &mut v[..]).collect();
                    super::super::float_mac::group_product(
                        &m, &cols, &weights, &inputs, &mut r1, accumulate,
                    );
                    group_product_generic(&m, &cols, &weights, &inputs, &mut r2, accumulate);
                    assert_eq!(
                        o1, o2,
                        "{rows} rows, {n} coefficients, accumulate {accumulate}"
                    );
                }
            }
        }
    }

    #[test]
    fn lazy_sums_match_reduced_products() {
        // a 61-bit modulus forces intermediate reductions (63 products per u128)
        for q in [(1u64 << 61) - 1, 1_099_511_480_321] {
            let m = Modulus::new(q);
            let terms = 150;
            let a: Vec<Vec<u64>> = (0..terms)
                .map(|j| (0..70).map(|k| q - 1 - (j * 131 + k * 7) as u64).collect())
                .collect();
            let b: Vec<Vec<u64>> = (0..terms)
                .map(|j| (0..70).map(|k| q - 1 - (j * 17 + k) as u64 % 5).collect())
                .collect();
            let pairs: Vec<(&[u64], &[u64])> =
                a.iter().zip(&b).map(|(x, y)| (&x[..], &y[..])).collect();
            let mut out = vec![0u64; 70];
            mac_limb(&m, &pairs, &mut out);
            for k in 0..70 {
                let want = (0..terms).fold(0u64, |acc, j| m.add(acc, m.mul(a[j][k], b[j][k])));
                assert_eq!(out[k], want);
            }
        }
    }
}
