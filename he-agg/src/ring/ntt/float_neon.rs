//! The double-precision NTT of [`super::float`] on aarch64's Advanced SIMD (NEON), two
//! butterflies per instruction, for primes below 2^51. aarch64 has a scalar 64×64-bit
//! multiply-high (`umulh`), so HEAL's portable Harvey butterflies are already lean there, but
//! NEON has no 64-bit vector multiply at all; doubles with fused multiply-adds are the vector
//! form that pays (instruction counts in he-agg/BENCHMARKS.md). Same arithmetic and bounds as
//! the x86 kernel: y·w = h + l exactly with one FMA, q = ⌊y·(w/p)⌋, r = y·w − q·p in (−p, 2p),
//! every value in [0, 2p) between stages and every intermediate an integer below 2^53.

#![allow(unsafe_op_in_unsafe_fn)] // every function here is a kernel of one target level

use std::arch::aarch64::*;

/// Below this every value the kernels form (< 4p) is an exact double.
pub(crate) const MAX_BITS: u32 = 51;

#[derive(Clone, Copy)]
struct K {
    p: float64x2_t,
    two_p: float64x2_t,
}

/// y·w mod p in [0, 2p).
#[inline(always)]
unsafe fn mul(y: float64x2_t, w: float64x2_t, wp: float64x2_t, k: K) -> float64x2_t {
    let h = vmulq_f64(y, w);
    // t = h − y·w (fused, exact): the rounding error of h, negated
    let t = vfmsq_f64(h, y, w);
    let q = vrndmq_f64(vmulq_f64(y, wp));
    let r = vsubq_f64(vfmsq_f64(h, q, k.p), t);
    vbslq_f64(vcltzq_f64(r), vaddq_f64(r, k.p), r)
}

/// s in [0, 4p) to [0, 2p).
#[inline(always)]
unsafe fn fold(s: float64x2_t, k: K) -> float64x2_t {
    let t = vsubq_f64(s, k.two_p);
    vbslq_f64(vcltzq_f64(t), s, t)
}

/// d in (−2p, 2p) to [0, 2p).
#[inline(always)]
unsafe fn lift(d: float64x2_t, k: K) -> float64x2_t {
    vbslq_f64(vcltzq_f64(d), vaddq_f64(d, k.two_p), d)
}

#[inline(always)]
unsafe fn bf<const FWD: bool>(
    x: float64x2_t,
    y: float64x2_t,
    w: float64x2_t,
    wp: float64x2_t,
    k: K,
) -> (float64x2_t, float64x2_t) {
    if FWD {
        let v = mul(y, w, wp, k);
        (fold(vaddq_f64(x, v), k), lift(vsubq_f64(x, v), k))
    } else {
        let d = lift(vsubq_f64(x, y), k);
        (fold(vaddq_f64(x, y), k), mul(d, w, wp, k))
    }
}

/// A stage with t = 1: blocks [x, y], two per vector pair, their twiddles adjacent.
#[inline(always)]
unsafe fn stage1<const FWD: bool>(d: &mut [f64], w: &[f64], wp: &[f64], k: K) {
    for ((c, w), wp) in d
        .chunks_exact_mut(4)
        .zip(w.chunks_exact(2))
        .zip(wp.chunks_exact(2))
    {
        let a = vld1q_f64(c.as_ptr());
        let b = vld1q_f64(c.as_ptr().add(2));
        let (x, y) = (vzip1q_f64(a, b), vzip2q_f64(a, b));
        let (x, y) = bf::<FWD>(x, y, vld1q_f64(w.as_ptr()), vld1q_f64(wp.as_ptr()), k);
        vst1q_f64(c.as_mut_ptr(), vzip1q_f64(x, y));
        vst1q_f64(c.as_mut_ptr().add(2), vzip2q_f64(x, y));
    }
}

/// A stage with t ≥ 2: one twiddle per block, two butterflies per vector.
#[inline(always)]
unsafe fn stage_wide<const FWD: bool>(d: &mut [f64], t: usize, w: &[f64], wp: &[f64], k: K) {
    for ((block, &w), &wp) in d.chunks_exact_mut(2 * t).zip(w).zip(wp) {
        let (wv, wq) = (vdupq_n_f64(w), vdupq_n_f64(wp));
        let px = block.as_mut_ptr();
        let py = px.add(t);
        for j in (0..t).step_by(2) {
            let (x, y) = bf::<FWD>(vld1q_f64(px.add(j)), vld1q_f64(py.add(j)), wv, wq, k);
            vst1q_f64(px.add(j), x);
            vst1q_f64(py.add(j), y);
        }
    }
}

#[inline(always)]
unsafe fn transform<const FWD: bool>(data: &mut [u64], p: u64, w: &[f64], wp: &[f64]) {
    let n = data.len();
    // words below 2^52 convert exactly, both ways
    for x in data.iter_mut() {
        *x = (*x as f64).to_bits();
    }
    // SAFETY: u64 and f64 share size and alignment and every bit pattern is valid for both.
    let d = std::slice::from_raw_parts_mut(data.as_mut_ptr().cast::<f64>(), n);
    let pf = p as f64;
    let k = K {
        p: vdupq_n_f64(pf),
        two_p: vdupq_n_f64(2.0 * pf),
    };
    for (range, t, tw) in super::stage_order::<FWD>(n) {
        let (d, w, wp) = (&mut d[range], &w[tw.clone()], &wp[tw]);
        if t == 1 {
            stage1::<FWD>(d, w, wp, k)
        } else {
            stage_wide::<FWD>(d, t, w, wp, k)
        }
    }
    for x in d.iter_mut() {
        let v = if *x >= pf { *x - pf } else { *x };
        *x = f64::from_bits(v as u64);
    }
}

/// Forward transform (see [`super::shoup::fwd`]); `w`, `wp`: the twiddles as doubles and w/p.
///
/// # Safety
/// The CPU has NEON (every aarch64 CPU does); `data.len()` ≥ 4 is a power of two, p < 2^51.
#[target_feature(enable = "neon")]
pub(super) unsafe fn fwd(data: &mut [u64], p: u64, w: &[f64], wp: &[f64]) {
    transform::<true>(data, p, w, wp)
}

/// Inverse transform without the division by N. Safety as [`fwd`].
#[target_feature(enable = "neon")]
pub(super) unsafe fn inv(data: &mut [u64], p: u64, w: &[f64], wp: &[f64]) {
    transform::<false>(data, p, w, wp)
}
