//! Group products on small weights at AVX2 (a deep network's batched chain keeps two 59-bit
//! limbs to hold its refresh masks; no 64-bit vector multiply exists below AVX-512, so they ran
//! on 128-bit scalar products, four times a 40-bit limb's time). Here each row's weights are
//! small signed integers times one power of two (the batched builder rounds them to 23
//! significant bits per row where the chain has a prime above 51 bits, see
//! `batched_ops::make_groups`): every input word is split into ⌈bits/20⌉ pieces of 20 bits,
//! each an exact double, and each piece's products with the weights (below 2^43) are summed by
//! FMAs exactly in doubles, no reduction until a row's sum is done. That is three FMAs per four
//! products at 41–60 bits and two at up to 40 bits, where `float_mac`'s exact product of full
//! words takes five operations; so the same chain's 40-bit limbs take this kernel too.
//! Weights that are not of that form leave the call to the other kernels; the words are the
//! same either way (the tests below).

use crate::ring::{Modulus, ShoupConst};

/// The largest |weight| the kernel takes once a row's common power of two is taken out.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const SMALL_WEIGHT: i64 = 1 << 23;

/// Products summed before a row's sums are reduced: 1023 · 2^20 · 2^23 < 2^53 (exact doubles).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const PER: usize = 1023;

/// Bits per piece of an input word: 2^20 · 2^23 · 1023 < 2^53.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const PIECE_BITS: u32 = 20;

/// Whether this modulus's limbs can take the kernel at the level in force (its weights decide
/// the rest, see [`group_product`]). At IFMA, whose 52-bit products take eight lanes in two
/// instructions, `ifma` keeps the primes up to 51 bits.
pub(crate) fn usable(m: &Modulus) -> bool {
    use crate::simd::{Level, level};
    cfg!(target_arch = "x86_64")
        && m.bits() <= 60
        && match level() {
            Level::Ifma => m.bits() > super::FAST_PRIME_BITS,
            l => l >= Level::Avx2,
        }
}

/// Each row's weights (centred residues) as small integers, as doubles, and per row the
/// constants 2^(b + 20i) mod q (i < P) that bring the P pieces' sums back, b being the row's
/// common power of two; None when some weight stays above [`SMALL_WEIGHT`]. The dispatcher
/// asks this of every group at AVX2, most of whose weights are not small (a chain without a
/// prime above 51 bits does not round them): a row is checked before anything is allocated.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn split_rows<const P: usize>(
    m: &Modulus,
    weights: &[u64],
    nnz: usize,
) -> Option<(Vec<f64>, Vec<[ShoupConst; P]>)> {
    let q = m.value();
    let signed = |w: u64| {
        if w > q / 2 {
            w as i64 - q as i64
        } else {
            w as i64
        }
    };
    let (mut small, mut consts) = (Vec::new(), Vec::new());
    for row in weights.chunks(nnz.max(1)) {
        let b = row
            .iter()
            .map(|&w| signed(w))
            .filter(|&s| s != 0)
            .map(|s| s.trailing_zeros())
            .min()
            .unwrap_or(0);
        if row.iter().any(|&w| (signed(w) >> b).abs() > SMALL_WEIGHT) {
            return None;
        }
        if small.is_empty() {
            small.reserve_exact(weights.len());
            consts.reserve_exact(weights.len() / nnz.max(1));
        }
        small.extend(row.iter().map(|&w| (signed(w) >> b) as f64));
        consts.push(std::array::from_fn(|i| {
            m.shoup(m.reduce_u128(1u128 << (b as usize + PIECE_BITS as usize * i)))
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
        // SAFETY (each call): `usable` checked the level (AVX2, FMA), the shapes were
        // checked above, and the pieces cover the modulus's bits
        match m.bits().div_ceil(PIECE_BITS) {
            0 | 1 => {
                let Some((small, k)) = split_rows::<1>(m, weights, cols.len()) else {
                    return false;
                };
                unsafe { product_avx2::<1, 8>(m, cols, &small, &k, inputs, outs, accumulate) }
            }
            2 => {
                let Some((small, k)) = split_rows::<2>(m, weights, cols.len()) else {
                    return false;
                };
                unsafe { product_avx2::<2, ROWS2>(m, cols, &small, &k, inputs, outs, accumulate) }
            }
            _ => {
                let Some((small, k)) = split_rows::<3>(m, weights, cols.len()) else {
                    return false;
                };
                unsafe { product_avx2::<3, 3>(m, cols, &small, &k, inputs, outs, accumulate) }
            }
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (m, cols, weights, inputs, outs, accumulate);
        false
    }
}

/// Rows whose sums are held in registers at once with two pieces: 2 × ROWS2 sums, the
/// input's 2 pieces and a weight within the 16 ymm registers. With three pieces, 3 rows (9
/// sums); with one, 8.
#[cfg(target_arch = "x86_64")]
const ROWS2: usize = 6;

/// Words ahead of the block in hand that each column's prefetch asks for (two cache lines).
#[cfg(target_arch = "x86_64")]
const AHEAD: usize = 16;

/// outs (+)= the products of `R` rows at a time, each input word in `P` pieces of 20 bits
/// (the last piece unmasked: the words are below q < 2^(20·P)).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn product_avx2<const P: usize, const R: usize>(
    m: &Modulus,
    cols: &[u32],
    small: &[f64],
    consts: &[[ShoupConst; P]],
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
    let mask = _mm256_set1_epi64x((1 << PIECE_BITS) - 1);
    let piece = |v: __m256i| _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(v, magic)), two52);
    let split = |raw: __m256i, i: usize| {
        let v = match i {
            0 => raw,
            1 => _mm256_srli_epi64::<20>(raw),
            _ => _mm256_srli_epi64::<40>(raw),
        };
        piece(if i + 1 < P {
            _mm256_and_si256(v, mask)
        } else {
            v
        })
    };
    // one block's inputs in P pieces, converted once for every row of the group
    let mut xf: Vec<[__m256d; P]> = vec![[_mm256_setzero_pd(); P]; nnz];
    for start in (0..n).step_by(4) {
        for (x, &c) in xf.iter_mut().zip(cols) {
            let input = inputs[c as usize].as_ptr();
            // SAFETY: start + 4 ≤ n ≤ the input's length (group_shape)
            let raw = unsafe { _mm256_loadu_si256(input.add(start).cast()) };
            // a group reads hundreds of columns, more streams than the hardware prefetchers
            // follow: without this the loads waited on memory for a third of the time
            _mm_prefetch::<_MM_HINT_T0>(input.wrapping_add(start + AHEAD).cast());
            *x = std::array::from_fn(|i| split(raw, i));
        }
        for (r0, rows) in (0..outs.len()).step_by(R).zip(outs.chunks_mut(R)) {
            let live = rows.len();
            let mut carry = [[0u64; 4]; R];
            if accumulate {
                for (c, row) in carry.iter_mut().zip(rows.iter()) {
                    c.copy_from_slice(&row[start..start + 4]);
                }
            }
            for from in (0..nnz).step_by(PER) {
                let to = (from + PER).min(nnz);
                let mut acc = [[_mm256_setzero_pd(); P]; R];
                // rows past the group's end reuse row 0's weights; never stored
                let w: [&[f64]; R] = std::array::from_fn(|r| {
                    let row = r0 + if r < live { r } else { 0 };
                    &small[row * nnz + from..row * nnz + to]
                });
                for (e, x) in xf[from..to].iter().enumerate() {
                    for (a, w) in acc.iter_mut().zip(&w) {
                        // SAFETY: every row's slice holds to − from weights
                        let w = _mm256_set1_pd(unsafe { *w.get_unchecked(e) });
                        for i in 0..P {
                            a[i] = _mm256_fmadd_pd(x[i], w, a[i]);
                        }
                    }
                }
                for (r, c) in carry.iter_mut().enumerate().take(live) {
                    let mut sums = [[0f64; 4]; P];
                    for i in 0..P {
                        // SAFETY: 4 doubles each
                        unsafe { _mm256_storeu_pd(sums[i].as_mut_ptr(), acc[r][i]) };
                    }
                    let k = &consts[r0 + r];
                    for (j, c) in c.iter_mut().enumerate() {
                        let mut s = *c;
                        for i in 0..P {
                            // an exact integer, |v| < 2^53, made non-negative
                            let v = sums[i][j] as i64 as u64;
                            s += m.mul_shoup_lazy(v.min(v.wrapping_add(lift)), k[i]);
                        }
                        // s < q + P·2q ≤ 7q < 2^63
                        s = s.min(s.wrapping_sub(q << 2));
                        s = s.min(s.wrapping_sub(q << 1));
                        *c = s.min(s.wrapping_sub(q));
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
