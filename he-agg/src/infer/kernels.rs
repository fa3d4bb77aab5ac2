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

fn mac_limb_generic(m: &Modulus, pairs: &[(&[u64], &[u64])], out: &mut [u64]) {
    let q1 = (m.value() - 1) as u128;
    // products that fit in a u128 beside one reduced value
    let limit = (u128::MAX / (q1 * q1).max(1) - 1).clamp(1, 1 << 20) as usize;
    for (start, chunk) in (0..out.len()).step_by(BLOCK).zip(out.chunks_mut(BLOCK)) {
        let len = chunk.len();
        let mut acc = [0u128; BLOCK];
        let mut count = 0usize;
        for (a, b) in pairs {
            let (a, b) = (&a[start..start + len], &b[start..start + len]);
            for k in 0..len {
                acc[k] += a[k] as u128 * b[k] as u128;
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
