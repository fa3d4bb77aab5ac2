//! Group products for primes of 52–60 bits at AVX2 (a deep network's batched chain keeps two
//! 59-bit limbs to hold its refresh masks; no 64-bit vector multiply exists below AVX-512, so
//! they ran on 128-bit scalar products, four times a 40-bit limb's time). Here each row's
//! weights are small signed integers times one power of two (the batched builder rounds them
//! to 23 significant bits per row where the chain has such primes, see
//! `batched_ops::make_groups`): every input word is split into three 20-bit pieces, each an
//! exact double, and each piece's products with the weights (below 2^43) are summed by FMAs
//! exactly in doubles — three FMAs per four products, no reduction until a row's sum is done.
//! Weights that are not of that form leave the call to the 128-bit kernel; the words are the
//! same either way (the tests below).

use crate::ring::{Modulus, ShoupConst};

/// The largest |weight| the kernel takes once a row's common power of two is taken out.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const SMALL_WEIGHT: i64 = 1 << 23;

/// Products summed before a row's sums are reduced: 1023 · 2^20 · 2^23 < 2^53 (exact doubles).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const PER: usize = 1023;

/// Whether this modulus's limbs take the kernel at the level in force.
pub(crate) fn usable(m: &Modulus) -> bool {
    use crate::simd::{Level, level};
    cfg!(target_arch = "x86_64")
        && (super::FAST_PRIME_BITS + 1..=60).contains(&m.bits())
        && level() >= Level::Avx2
}

/// Each row's weights (centred residues) as small integers, as doubles, and per row the
/// constants 2^(b + 20i) mod q (i = 0, 1, 2) that bring the three pieces' sums back, b being
/// the row's common power of two; None when some weight stays above [`SMALL_WEIGHT`].
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn split_rows(
    m: &Modulus,
    weights: &[u64],
    nnz: usize,
) -> Option<(Vec<f64>, Vec<[ShoupConst; 3]>)> {
    let q = m.value();
    let mut small = Vec::with_capacity(weights.len());
    let mut consts = Vec::with_capacity(weights.len() / nnz.max(1));
    for row in weights.chunks(nnz.max(1)) {
        let signed = |w: u64| {
            if w > q / 2 {
                w as i64 - q as i64
            } else {
                w as i64
            }
        };
        let b = row
            .iter()
            .map(|&w| signed(w))
            .filter(|&s| s != 0)
            .map(|s| s.trailing_zeros())
            .min()
            .unwrap_or(0);
        for &w in row {
            let v = signed(w) >> b;
            if v.abs() > SMALL_WEIGHT {
                return None;
            }
            small.push(v as f64);
        }
        consts.push(std::array::from_fn(|i| {
            m.shoup(m.reduce_u128(1u128 << (b as usize + 20 * i)))
        }));
    }
    Some((small, consts))
}

/// outs[r][k] (+)= Σ_e weights[r·cols.len() + e]·inputs[cols[e]][k] mod m, as
/// `kernels::group_product`; false (nothing written) when the weights are not small integers
/// times a power of two per row or the length is not a multiple of 4.
pub(crate) fn group_product(
    m: &Modulus,
    cols: &[u32],
    weights: &[u64],
    inputs: &[&[u64]],
    outs: &mut [&mut [u64]],
    accumulate: bool,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let n = super::batched_ops::group_shape(cols, weights, inputs, outs);
        if !n.is_multiple_of(4) || m.bits() > 60 {
            return false;
        }
        let Some((small, consts)) = split_rows(m, weights, cols.len()) else {
            return false;
        };
        // SAFETY: `usable` checked the level (AVX2, FMA), the shapes were checked above
        unsafe { group_product_avx2(m, cols, &small, &consts, inputs, outs, accumulate) };
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (m, cols, weights, inputs, outs, accumulate);
        false
    }
}

/// Rows whose sums are held in registers at once: 3 rows × 3 pieces is 9 of the 16 ymm
/// registers, beside the 3 pieces of the input and a weight.
#[cfg(target_arch = "x86_64")]
const ROWS: usize = 3;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn group_product_avx2(
    m: &Modulus,
    cols: &[u32],
    small: &[f64],
    consts: &[[ShoupConst; 3]],
    inputs: &[&[u64]],
    outs: &mut [&mut [u64]],
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    const MAGIC: i64 = 0x4330_0000_0000_0000; // the bits of 2^52
    const TWO52: f64 = 4_503_599_627_370_496.0;
    let n = outs.first().map_or(0, |o| o.len());
    let nnz = cols.len();
    let q = m.value();
    // a multiple of q above 2^53: a negative sum plus it is its residue's representative
    let lift = q * (1u64 << 53).div_ceil(q);
    let (magic, two52) = (_mm256_set1_epi64x(MAGIC), _mm256_set1_pd(TWO52));
    let mask = _mm256_set1_epi64x((1 << 20) - 1);
    let piece = |v: __m256i| _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(v, magic)), two52);
    // one block's inputs in three pieces, converted once for every row of the group
    let mut xf: Vec<[__m256d; 3]> = vec![[_mm256_setzero_pd(); 3]; nnz];
    for start in (0..n).step_by(4) {
        for (x, &c) in xf.iter_mut().zip(cols) {
            // SAFETY: start + 4 ≤ n ≤ the input's length (group_shape)
            let raw = unsafe { _mm256_loadu_si256(inputs[c as usize].as_ptr().add(start).cast()) };
            *x = [
                piece(_mm256_and_si256(raw, mask)),
                piece(_mm256_and_si256(_mm256_srli_epi64::<20>(raw), mask)),
                piece(_mm256_srli_epi64::<40>(raw)),
            ];
        }
        for (r0, rows) in (0..outs.len()).step_by(ROWS).zip(outs.chunks_mut(ROWS)) {
            let live = rows.len();
            let mut carry = [[0u64; 4]; ROWS];
            if accumulate {
                for (c, row) in carry.iter_mut().zip(rows.iter()) {
                    c.copy_from_slice(&row[start..start + 4]);
                }
            }
            for from in (0..nnz).step_by(PER) {
                let to = (from + PER).min(nnz);
                let mut acc = [[_mm256_setzero_pd(); 3]; ROWS];
                for (e, x) in xf[from..to].iter().enumerate() {
                    for (r, a) in acc.iter_mut().enumerate() {
                        // rows past the group's end reuse row 0's weights; never stored
                        let row = if r < live { r0 + r } else { r0 };
                        let w = _mm256_set1_pd(small[row * nnz + from + e]);
                        for i in 0..3 {
                            a[i] = _mm256_fmadd_pd(x[i], w, a[i]);
                        }
                    }
                }
                for (r, c) in carry.iter_mut().enumerate().take(live) {
                    let mut sums = [[0f64; 4]; 3];
                    for i in 0..3 {
                        // SAFETY: 4 doubles each
                        unsafe { _mm256_storeu_pd(sums[i].as_mut_ptr(), acc[r][i]) };
                    }
                    let k3 = &consts[r0 + r];
                    for k in 0..4 {
                        let mut s = c[k];
                        for i in 0..3 {
                            // an exact integer, |v| < 2^53, made non-negative
                            let v = sums[i][k] as i64 as u64;
                            s += m.mul_shoup_lazy(v.min(v.wrapping_add(lift)), k3[i]);
                        }
                        // s < q + 3·2q = 7q < 2^63
                        s = s.min(s.wrapping_sub(q << 2));
                        s = s.min(s.wrapping_sub(q << 1));
                        c[k] = s.min(s.wrapping_sub(q));
                    }
                }
            }
            for (row, c) in rows.iter_mut().zip(&carry) {
                row[start..start + 4].copy_from_slice(c);
            }
        }
    }
}

#[cfg(test)]
#[path = "wide_mac_tests.rs"]
mod tests;
