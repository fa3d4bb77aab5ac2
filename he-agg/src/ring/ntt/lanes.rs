//! Negacyclic NTTs on 64-bit words in vector lanes, for primes too wide for the double-precision
//! kernels (2^51 … 2^61) on CPUs without IFMA: Harvey's lazy butterflies with Shoup
//! multiplication by the twiddles in four (AVX2) or eight (AVX-512F) lanes, the arithmetic of
//! [`crate::ring::lanes`]. Values stay below 4p between stages.

#![allow(unsafe_op_in_unsafe_fn)] // every function here is a kernel of one target level

use std::arch::x86_64::*;

use crate::ring::lanes::{v4, v8};

pub(crate) use crate::ring::lanes::MAX_BITS;

/// Four-lane stages (AVX2; also the short stages of the AVX-512 kernel).
mod s4 {
    use super::*;
    use v4::{K, W, fold, load, store};

    #[inline(always)]
    unsafe fn bf<const FWD: bool, const S: bool>(
        x: __m256i,
        y: __m256i,
        w: W,
        k: K,
    ) -> (__m256i, __m256i) {
        if FWD {
            // x ∈ [0, 4p) → [0, 2p); outputs in [0, 4p)
            let x = fold(x, k.two_p);
            let v = v4::mul_shoup_lazy::<S>(y, w, k);
            (
                _mm256_add_epi64(x, v),
                _mm256_sub_epi64(_mm256_add_epi64(x, k.two_p), v),
            )
        } else {
            // x, y ∈ [0, 2p): the sum back below 2p, the difference (in (0, 4p)) times w
            let s = fold(_mm256_add_epi64(x, y), k.two_p);
            let d = _mm256_sub_epi64(_mm256_add_epi64(x, k.two_p), y);
            (s, v4::mul_shoup_lazy::<S>(d, w, k))
        }
    }

    /// A stage with t = 1: blocks [x, y], four per vector pair.
    #[inline(always)]
    pub unsafe fn stage1<const FWD: bool, const S: bool>(
        d: &mut [u64],
        w: &[u64],
        ws: &[u64],
        k: K,
    ) {
        for ((c, w), ws) in d
            .chunks_exact_mut(8)
            .zip(w.chunks_exact(4))
            .zip(ws.chunks_exact(4))
        {
            let a = load(c.as_ptr());
            let b = load(c.as_ptr().add(4));
            // x = [x0 x2 x1 x3], y likewise: the twiddles in that order
            let x = _mm256_unpacklo_epi64(a, b);
            let y = _mm256_unpackhi_epi64(a, b);
            let wv = _mm256_permute4x64_epi64::<0b11_01_10_00>(load(w.as_ptr()));
            let sv = _mm256_permute4x64_epi64::<0b11_01_10_00>(load(ws.as_ptr()));
            let (x, y) = bf::<FWD, S>(x, y, W::new(wv, sv), k);
            store(c.as_mut_ptr(), _mm256_unpacklo_epi64(x, y));
            store(c.as_mut_ptr().add(4), _mm256_unpackhi_epi64(x, y));
        }
    }

    /// Two words, each twice: [a a b b].
    #[inline(always)]
    unsafe fn pair(p: *const u64) -> __m256i {
        _mm256_permute4x64_epi64::<0b01_01_00_00>(_mm256_castsi128_si256(_mm_loadu_si128(p.cast())))
    }

    /// A stage with t = 2: blocks [x0 x1 y0 y1], two per vector pair.
    #[inline(always)]
    pub unsafe fn stage2<const FWD: bool, const S: bool>(
        d: &mut [u64],
        w: &[u64],
        ws: &[u64],
        k: K,
    ) {
        for ((c, w), ws) in d
            .chunks_exact_mut(8)
            .zip(w.chunks_exact(2))
            .zip(ws.chunks_exact(2))
        {
            let a = load(c.as_ptr());
            let b = load(c.as_ptr().add(4));
            let x = _mm256_permute2x128_si256::<0x20>(a, b);
            let y = _mm256_permute2x128_si256::<0x31>(a, b);
            let (x, y) = bf::<FWD, S>(x, y, W::new(pair(w.as_ptr()), pair(ws.as_ptr())), k);
            store(c.as_mut_ptr(), _mm256_permute2x128_si256::<0x20>(x, y));
            store(
                c.as_mut_ptr().add(4),
                _mm256_permute2x128_si256::<0x31>(x, y),
            );
        }
    }

    /// A stage with t ≥ 4: one twiddle per block, four butterflies per vector.
    #[inline(always)]
    pub unsafe fn stage_wide<const FWD: bool, const S: bool>(
        d: &mut [u64],
        t: usize,
        w: &[u64],
        ws: &[u64],
        k: K,
    ) {
        for ((block, &w), &ws) in d.chunks_exact_mut(2 * t).zip(w).zip(ws) {
            let wv = W::splat(w, ws);
            let px = block.as_mut_ptr();
            let py = px.add(t);
            for j in (0..t).step_by(4) {
                let (x, y) = bf::<FWD, S>(load(px.add(j)), load(py.add(j)), wv, k);
                store(px.add(j), x);
                store(py.add(j), y);
            }
        }
    }

    /// Every word from [0, 4p) (forward) or [0, 2p) to [0, p).
    #[inline(always)]
    pub unsafe fn finish<const FWD: bool>(d: &mut [u64], k: K) {
        for c in d.chunks_exact_mut(4) {
            let mut v = load(c.as_ptr());
            if FWD {
                v = fold(v, k.two_p);
            }
            store(c.as_mut_ptr(), fold(v, k.p));
        }
    }
}

/// Eight-lane stages (AVX-512F), for t ≥ 8.
mod s8 {
    use super::*;
    use v8::{K, W, fold, load, store};

    #[inline(always)]
    unsafe fn bf<const FWD: bool, const S: bool>(
        x: __m512i,
        y: __m512i,
        w: W,
        k: K,
    ) -> (__m512i, __m512i) {
        if FWD {
            let x = fold(x, k.two_p);
            let v = v8::mul_shoup_lazy::<S>(y, w, k);
            (
                _mm512_add_epi64(x, v),
                _mm512_sub_epi64(_mm512_add_epi64(x, k.two_p), v),
            )
        } else {
            let s = fold(_mm512_add_epi64(x, y), k.two_p);
            let d = _mm512_sub_epi64(_mm512_add_epi64(x, k.two_p), y);
            (s, v8::mul_shoup_lazy::<S>(d, w, k))
        }
    }

    #[inline(always)]
    pub unsafe fn stage_wide<const FWD: bool, const S: bool>(
        d: &mut [u64],
        t: usize,
        w: &[u64],
        ws: &[u64],
        k: K,
    ) {
        for ((block, &w), &ws) in d.chunks_exact_mut(2 * t).zip(w).zip(ws) {
            let wv = W::splat(w, ws);
            let px = block.as_mut_ptr();
            let py = px.add(t);
            for j in (0..t).step_by(8) {
                let (x, y) = bf::<FWD, S>(load(px.add(j)), load(py.add(j)), wv, k);
                store(px.add(j), x);
                store(py.add(j), y);
            }
        }
    }
}

/// One stage (a plain function, not a closure: closures are not compiled for the caller's
/// target features).
#[inline(always)]
unsafe fn stage<const FWD: bool, const S: bool>(
    d: &mut [u64],
    t: usize,
    w: &[u64],
    ws: &[u64],
    k4: v4::K,
    k8: Option<v8::K>,
) {
    match (t, k8) {
        (1, _) => s4::stage1::<FWD, S>(d, w, ws, k4),
        (2, _) => s4::stage2::<FWD, S>(d, w, ws, k4),
        (t, Some(k8)) if t >= 8 => s8::stage_wide::<FWD, S>(d, t, w, ws, k8),
        (t, _) => s4::stage_wide::<FWD, S>(d, t, w, ws, k4),
    }
}

/// Runs every stage; `WIDE`: whether t ≥ 8 stages use eight lanes. Needs n ≥ 8.
#[inline(always)]
unsafe fn transform<const FWD: bool, const WIDE: bool, const S: bool>(
    d: &mut [u64],
    p: u64,
    w: &[u64],
    ws: &[u64],
) {
    let n = d.len();
    let k4 = v4::K::new(p);
    let k8 = if WIDE { Some(v8::K::new(p)) } else { None };
    for (range, t, tw) in super::stage_order::<FWD>(n) {
        stage::<FWD, S>(&mut d[range], t, &w[tw.clone()], &ws[tw], k4, k8);
    }
    s4::finish::<FWD>(d, k4);
}

/// Forward transform (see [`super::shoup::fwd`]): `w`, `ws` the twiddles and Shoup constants.
///
/// # Safety
/// The CPU has AVX2; `data.len()` ≥ 8 is a power of two, `p` < 2^61, the words below p.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn fwd_avx2(data: &mut [u64], p: u64, w: &[u64], ws: &[u64]) {
    if crate::ring::lanes::low_word_one(p) {
        transform::<true, false, true>(data, p, w, ws)
    } else {
        transform::<true, false, false>(data, p, w, ws)
    }
}

/// Inverse transform without the division by N. Safety as [`fwd_avx2`].
#[target_feature(enable = "avx2")]
pub(super) unsafe fn inv_avx2(data: &mut [u64], p: u64, w: &[u64], ws: &[u64]) {
    if crate::ring::lanes::low_word_one(p) {
        transform::<false, false, true>(data, p, w, ws)
    } else {
        transform::<false, false, false>(data, p, w, ws)
    }
}

/// Safety as [`fwd_avx2`], and the CPU has AVX-512F.
#[target_feature(enable = "avx512f,avx2")]
pub(super) unsafe fn fwd_avx512(data: &mut [u64], p: u64, w: &[u64], ws: &[u64]) {
    if crate::ring::lanes::low_word_one(p) {
        transform::<true, true, true>(data, p, w, ws)
    } else {
        transform::<true, true, false>(data, p, w, ws)
    }
}

/// Safety as [`fwd_avx512`].
#[target_feature(enable = "avx512f,avx2")]
pub(super) unsafe fn inv_avx512(data: &mut [u64], p: u64, w: &[u64], ws: &[u64]) {
    if crate::ring::lanes::low_word_one(p) {
        transform::<false, true, true>(data, p, w, ws)
    } else {
        transform::<false, true, false>(data, p, w, ws)
    }
}
