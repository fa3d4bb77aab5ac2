//! AVX2 versions of the multiply-accumulate kernels for CPUs without IFMA, for moduli below
//! 2^51: each product x·y (x, y < 2^51, exact doubles) is split with two FMAs into
//! k·2^52 + l — t = x·y + 2^104 rounds x·y to a multiple of 2^52 and holds k in its mantissa
//! bits; l = x·y − (t − 2^104) is exact, |l| ≤ 2^51 — and k and l + 1.5·2^52 are summed as
//! 64-bit integers (their bit patterns), four products per instruction. The sums are exact for
//! 4095 products (Σ|l| < 2^63); the constants are subtracted once at the end and the value
//! K·2^52 + L is reduced like the 128-bit path's.

use crate::ring::Modulus;

/// Whether these kernels run for this modulus at the level in force (IFMA's are faster).
pub(crate) fn usable(m: &Modulus) -> bool {
    use crate::simd::{Level, level};
    cfg!(target_arch = "x86_64") && m.bits() <= 51 && matches!(level(), Level::Avx2 | Level::Avx512)
}

/// Coefficients per block: both accumulators stay in L1.
const BLOCK: usize = 32;
/// Products per block before folding (Σ|l| < 2^63).
const LIMIT: u64 = 4095;

const MAGIC: u64 = 0x4330_0000_0000_0000; // the bits of 2^52
const TWO52: f64 = 4_503_599_627_370_496.0;
const C: f64 = 20_282_409_603_651_670_423_947_251_286_016.0; // 2^104
const M: f64 = 6_755_399_441_055_744.0; // 1.5·2^52

#[inline(always)]
fn to_f64(x: u64) -> f64 {
    f64::from_bits(x | MAGIC) - TWO52
}

/// Exact running sums of products for one block of coefficients.
struct Acc {
    hi: [u64; BLOCK],
    lo: [u64; BLOCK],
    count: u64,
}

impl Acc {
    /// Starting from `init` (values below 2^51) or zero.
    #[inline(always)]
    fn new(init: Option<&[u64]>) -> Self {
        let mut acc = Acc {
            hi: [C.to_bits(); BLOCK],
            lo: [M.to_bits(); BLOCK],
            count: 1,
        };
        if let Some(v) = init {
            for (l, &x) in acc.lo.iter_mut().zip(v) {
                *l += x;
            }
        }
        acc
    }

    #[inline(always)]
    fn push(&mut self, k: usize, x: f64, y: f64) {
        let t = x.mul_add(y, C);
        let l = x.mul_add(y, -(t - C));
        self.hi[k] = self.hi[k].wrapping_add(t.to_bits());
        self.lo[k] = self.lo[k].wrapping_add((l + M).to_bits());
    }

    /// Σ x·y for the coefficient `k`, as a 128-bit value.
    #[inline(always)]
    fn value(&self, k: usize) -> u128 {
        let big = self.hi[k].wrapping_sub(self.count.wrapping_mul(C.to_bits()));
        let low = self.lo[k].wrapping_sub(self.count.wrapping_mul(M.to_bits())) as i64;
        ((big as u128) << 52).wrapping_add(low as i128 as u128)
    }

    /// Counts a product row; folds every sum into its residue before the bounds are reached.
    #[inline(always)]
    fn counted(&mut self, m: &Modulus, len: usize) {
        self.count += 1;
        if self.count == LIMIT {
            let r: [u64; BLOCK] = std::array::from_fn(|k| {
                if k < len {
                    m.reduce_u128(self.value(k))
                } else {
                    0
                }
            });
            *self = Acc::new(Some(&r));
        }
    }

    #[inline(always)]
    fn store(&self, m: &Modulus, out: &mut [u64]) {
        for (k, o) in out.iter_mut().enumerate() {
            *o = m.reduce_u128(self.value(k));
        }
    }
}

/// out[k] = Σ_j a_j[k]·b_j[k] mod m (see [`super::kernels`]).
#[inline(always)]
fn mac_pairs_body(m: &Modulus, pairs: &[(&[u64], &[u64])], out: &mut [u64]) {
    for (start, chunk) in (0..out.len()).step_by(BLOCK).zip(out.chunks_mut(BLOCK)) {
        let len = chunk.len();
        let mut acc = Acc::new(None);
        for (a, b) in pairs {
            let (a, b) = (&a[start..start + len], &b[start..start + len]);
            for k in 0..len {
                acc.push(k, to_f64(a[k]), to_f64(b[k]));
            }
            acc.counted(m, len);
        }
        acc.store(m, chunk);
    }
}

/// outs[r][k] (+)= Σ_e weights[r·cols.len() + e]·inputs[cols[e]][k] mod m.
#[inline(always)]
fn group_product_body(
    m: &Modulus,
    cols: &[u32],
    weights: &[u64],
    inputs: &[&[u64]],
    outs: &mut [&mut [u64]],
    accumulate: bool,
) {
    let nnz = cols.len();
    for (r, out) in outs.iter_mut().enumerate() {
        let w = &weights[r * nnz..(r + 1) * nnz];
        for (start, chunk) in (0..out.len()).step_by(BLOCK).zip(out.chunks_mut(BLOCK)) {
            let len = chunk.len();
            let mut acc = Acc::new(accumulate.then_some(&*chunk));
            for (&c, &w) in cols.iter().zip(w) {
                let x = &inputs[c as usize][start..start + len];
                let wf = to_f64(w);
                for (k, &v) in x.iter().enumerate() {
                    acc.push(k, wf, to_f64(v));
                }
                acc.counted(m, len);
            }
            acc.store(m, chunk);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn mac_pairs_avx2(m: &Modulus, pairs: &[(&[u64], &[u64])], out: &mut [u64]) {
    mac_pairs_body(m, pairs, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn group_product_avx2(
    m: &Modulus,
    cols: &[u32],
    weights: &[u64],
    inputs: &[&[u64]],
    outs: &mut [&mut [u64]],
    accumulate: bool,
) {
    group_product_body(m, cols, weights, inputs, outs, accumulate)
}

/// [`mac_pairs_body`] compiled for AVX2+FMA; the caller checked [`usable`].
pub(crate) fn mac_pairs(m: &Modulus, pairs: &[(&[u64], &[u64])], out: &mut [u64]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `usable` checked the level, which set_level keeps within the CPU's (AVX2, FMA)
    unsafe {
        mac_pairs_avx2(m, pairs, out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    mac_pairs_body(m, pairs, out)
}

/// [`group_product_body`] compiled for AVX2+FMA; the caller checked [`usable`].
pub(crate) fn group_product(
    m: &Modulus,
    cols: &[u32],
    weights: &[u64],
    inputs: &[&[u64]],
    outs: &mut [&mut [u64]],
    accumulate: bool,
) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as in `mac_pairs`
    unsafe {
        group_product_avx2(m, cols, weights, inputs, outs, accumulate)
    }
    #[cfg(not(target_arch = "x86_64"))]
    group_product_body(m, cols, weights, inputs, outs, accumulate)
}
