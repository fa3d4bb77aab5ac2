//! Negacyclic NTTs in double precision for primes below 2^51, for x86 CPUs without IFMA: a
//! word below 2^52 is an exact f64, and y·w mod p is exact with two FMAs (the product as h + l,
//! h rounded and l its exact error) and a quotient from the precomputed w/p. Four (AVX2) or
//! eight (AVX-512) butterflies run per instruction, where 64-bit multiplies have no vector form
//! before IFMA.
//!
//! Bounds (p < 2^51, y < 2p, w < p): Q = y·w/p < 2^52 and y·(w/p) is within Q·2^-52 < 1 of
//! it, so q = ⌊y·(w/p)⌋ leaves r = y·w − q·p in (−p, 2p); one conditional +p makes [0, 2p).
//! Every value lies in [0, 2p) between stages, and every intermediate is an integer below
//! 2^53, hence exact.

#![allow(unsafe_op_in_unsafe_fn)] // every function here is a kernel of one target level

use std::arch::x86_64::*;

/// Below this every value the kernels form (< 4p) is an exact double.
pub(crate) const MAX_BITS: u32 = 51;

const MAGIC: u64 = 0x4330_0000_0000_0000; // the bits of 2^52
const TWO52: f64 = 4_503_599_627_370_496.0;
const FLOOR: i32 = _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC;

/// Words below 2^52 to doubles of the same value in place, and back (no vector u64↔f64 before
/// AVX-512DQ; the bits of 2^52 + x are MAGIC | x).
#[inline(always)]
fn words_to_f64(data: &mut [u64]) -> &mut [f64] {
    for x in data.iter_mut() {
        *x = (f64::from_bits(*x | MAGIC) - TWO52).to_bits();
    }
    // SAFETY: u64 and f64 share size and alignment and every bit pattern is valid for both;
    // the borrow is the input's.
    unsafe { std::slice::from_raw_parts_mut(data.as_mut_ptr().cast::<f64>(), data.len()) }
}

/// Values in [0, 2p) to words in [0, p).
#[inline(always)]
fn f64_to_words(d: &mut [f64], p: f64) {
    for x in d.iter_mut() {
        let v = if *x >= p { *x - p } else { *x };
        *x = f64::from_bits((v + TWO52).to_bits() & ((1 << 52) - 1));
    }
}

/// The four-lane butterflies (AVX2; also the short stages of the AVX-512 kernel).
mod v4 {
    use super::*;

    #[derive(Clone, Copy)]
    pub(super) struct K {
        pub p: __m256d,
        pub two_p: __m256d,
    }

    impl K {
        #[inline(always)]
        pub unsafe fn new(p: f64) -> Self {
            K {
                p: _mm256_set1_pd(p),
                two_p: _mm256_set1_pd(2.0 * p),
            }
        }
    }

    /// y·w mod p in [0, 2p).
    #[inline(always)]
    unsafe fn mul(y: __m256d, w: __m256d, wp: __m256d, k: K) -> __m256d {
        let h = _mm256_mul_pd(y, w);
        let l = _mm256_fmsub_pd(y, w, h);
        let q = _mm256_round_pd::<FLOOR>(_mm256_mul_pd(y, wp));
        let r = _mm256_add_pd(_mm256_fnmadd_pd(q, k.p, h), l);
        // the sign bit picks r + p
        _mm256_blendv_pd(r, _mm256_add_pd(r, k.p), r)
    }

    /// s in [0, 4p) to [0, 2p).
    #[inline(always)]
    unsafe fn fold(s: __m256d, k: K) -> __m256d {
        let t = _mm256_sub_pd(s, k.two_p);
        _mm256_blendv_pd(t, s, t)
    }

    /// d in (−2p, 2p) to [0, 2p).
    #[inline(always)]
    unsafe fn lift(d: __m256d, k: K) -> __m256d {
        _mm256_blendv_pd(d, _mm256_add_pd(d, k.two_p), d)
    }

    #[inline(always)]
    pub unsafe fn bf<const FWD: bool>(
        x: __m256d,
        y: __m256d,
        w: __m256d,
        wp: __m256d,
        k: K,
    ) -> (__m256d, __m256d) {
        if FWD {
            let v = mul(y, w, wp, k);
            (fold(_mm256_add_pd(x, v), k), lift(_mm256_sub_pd(x, v), k))
        } else {
            let d = lift(_mm256_sub_pd(x, y), k);
            (fold(_mm256_add_pd(x, y), k), mul(d, w, wp, k))
        }
    }

    /// A stage with t = 1: blocks [x, y], four per vector pair.
    #[inline(always)]
    pub unsafe fn stage1<const FWD: bool>(d: &mut [f64], w: &[f64], wp: &[f64], k: K) {
        for ((c, w), wp) in d
            .chunks_exact_mut(8)
            .zip(w.chunks_exact(4))
            .zip(wp.chunks_exact(4))
        {
            let a = _mm256_loadu_pd(c.as_ptr());
            let b = _mm256_loadu_pd(c.as_ptr().add(4));
            // x = [x0 x2 x1 x3], y likewise: the twiddles in that order
            let x = _mm256_unpacklo_pd(a, b);
            let y = _mm256_unpackhi_pd(a, b);
            let wv = _mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_loadu_pd(w.as_ptr()));
            let wq = _mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_loadu_pd(wp.as_ptr()));
            let (x, y) = bf::<FWD>(x, y, wv, wq, k);
            _mm256_storeu_pd(c.as_mut_ptr(), _mm256_unpacklo_pd(x, y));
            _mm256_storeu_pd(c.as_mut_ptr().add(4), _mm256_unpackhi_pd(x, y));
        }
    }

    /// A stage with t = 2: blocks [x0 x1 y0 y1], two per vector pair.
    #[inline(always)]
    pub unsafe fn stage2<const FWD: bool>(d: &mut [f64], w: &[f64], wp: &[f64], k: K) {
        for ((c, w), wp) in d
            .chunks_exact_mut(8)
            .zip(w.chunks_exact(2))
            .zip(wp.chunks_exact(2))
        {
            let a = _mm256_loadu_pd(c.as_ptr());
            let b = _mm256_loadu_pd(c.as_ptr().add(4));
            let x = _mm256_permute2f128_pd::<0x20>(a, b);
            let y = _mm256_permute2f128_pd::<0x31>(a, b);
            let wv = _mm256_permute4x64_pd::<0b01_01_00_00>(_mm256_castpd128_pd256(_mm_loadu_pd(
                w.as_ptr(),
            )));
            let wq = _mm256_permute4x64_pd::<0b01_01_00_00>(_mm256_castpd128_pd256(_mm_loadu_pd(
                wp.as_ptr(),
            )));
            let (x, y) = bf::<FWD>(x, y, wv, wq, k);
            _mm256_storeu_pd(c.as_mut_ptr(), _mm256_permute2f128_pd::<0x20>(x, y));
            _mm256_storeu_pd(c.as_mut_ptr().add(4), _mm256_permute2f128_pd::<0x31>(x, y));
        }
    }

    /// A stage with t ≥ 4: one twiddle per block, four butterflies per vector.
    #[inline(always)]
    pub unsafe fn stage_wide<const FWD: bool>(
        d: &mut [f64],
        t: usize,
        w: &[f64],
        wp: &[f64],
        k: K,
    ) {
        for ((block, &w), &wp) in d.chunks_exact_mut(2 * t).zip(w).zip(wp) {
            let (wv, wq) = (_mm256_set1_pd(w), _mm256_set1_pd(wp));
            let px = block.as_mut_ptr();
            let py = px.add(t);
            for j in (0..t).step_by(4) {
                let (x, y) = bf::<FWD>(
                    _mm256_loadu_pd(px.add(j)),
                    _mm256_loadu_pd(py.add(j)),
                    wv,
                    wq,
                    k,
                );
                _mm256_storeu_pd(px.add(j), x);
                _mm256_storeu_pd(py.add(j), y);
            }
        }
    }
}

/// The eight-lane butterflies (AVX-512F, comparisons into mask registers).
mod v8 {
    use super::*;

    #[derive(Clone, Copy)]
    pub(super) struct K {
        pub p: __m512d,
        pub two_p: __m512d,
    }

    impl K {
        #[inline(always)]
        pub unsafe fn new(p: f64) -> Self {
            K {
                p: _mm512_set1_pd(p),
                two_p: _mm512_set1_pd(2.0 * p),
            }
        }
    }

    #[inline(always)]
    unsafe fn mul(y: __m512d, w: __m512d, wp: __m512d, k: K) -> __m512d {
        let h = _mm512_mul_pd(y, w);
        let l = _mm512_fmsub_pd(y, w, h);
        let q = _mm512_roundscale_pd::<FLOOR>(_mm512_mul_pd(y, wp));
        let r = _mm512_add_pd(_mm512_fnmadd_pd(q, k.p, h), l);
        let neg = _mm512_cmp_pd_mask::<_CMP_LT_OQ>(r, _mm512_setzero_pd());
        _mm512_mask_add_pd(r, neg, r, k.p)
    }

    #[inline(always)]
    unsafe fn fold(s: __m512d, k: K) -> __m512d {
        let ge = _mm512_cmp_pd_mask::<_CMP_GE_OQ>(s, k.two_p);
        _mm512_mask_sub_pd(s, ge, s, k.two_p)
    }

    #[inline(always)]
    unsafe fn lift(d: __m512d, k: K) -> __m512d {
        let neg = _mm512_cmp_pd_mask::<_CMP_LT_OQ>(d, _mm512_setzero_pd());
        _mm512_mask_add_pd(d, neg, d, k.two_p)
    }

    #[inline(always)]
    unsafe fn bf<const FWD: bool>(
        x: __m512d,
        y: __m512d,
        w: __m512d,
        wp: __m512d,
        k: K,
    ) -> (__m512d, __m512d) {
        if FWD {
            let v = mul(y, w, wp, k);
            (fold(_mm512_add_pd(x, v), k), lift(_mm512_sub_pd(x, v), k))
        } else {
            let d = lift(_mm512_sub_pd(x, y), k);
            (fold(_mm512_add_pd(x, y), k), mul(d, w, wp, k))
        }
    }

    /// A stage with t ≥ 8.
    #[inline(always)]
    pub unsafe fn stage_wide<const FWD: bool>(
        d: &mut [f64],
        t: usize,
        w: &[f64],
        wp: &[f64],
        k: K,
    ) {
        for ((block, &w), &wp) in d.chunks_exact_mut(2 * t).zip(w).zip(wp) {
            let (wv, wq) = (_mm512_set1_pd(w), _mm512_set1_pd(wp));
            let px = block.as_mut_ptr();
            let py = px.add(t);
            for j in (0..t).step_by(8) {
                let (x, y) = bf::<FWD>(
                    _mm512_loadu_pd(px.add(j)),
                    _mm512_loadu_pd(py.add(j)),
                    wv,
                    wq,
                    k,
                );
                _mm512_storeu_pd(px.add(j), x);
                _mm512_storeu_pd(py.add(j), y);
            }
        }
    }
}

/// One stage: blocks of 2t values, block i with twiddle `ws[i]` (a plain function, not a
/// closure: closures are not compiled for the caller's target features and would call every
/// intrinsic out of line).
#[inline(always)]
unsafe fn stage<const FWD: bool>(
    d: &mut [f64],
    t: usize,
    ws: &[f64],
    wps: &[f64],
    k4: v4::K,
    k8: Option<v8::K>,
) {
    match (t, k8) {
        (1, _) => v4::stage1::<FWD>(d, ws, wps, k4),
        (2, _) => v4::stage2::<FWD>(d, ws, wps, k4),
        (t, Some(k8)) if t >= 8 => v8::stage_wide::<FWD>(d, t, ws, wps, k8),
        (t, _) => v4::stage_wide::<FWD>(d, t, ws, wps, k4),
    }
}

/// Runs every stage; `WIDE`: whether t ≥ 8 stages use eight lanes. Needs n ≥ 16.
#[inline(always)]
unsafe fn transform<const FWD: bool, const WIDE: bool>(
    data: &mut [u64],
    p: u64,
    w: &[f64],
    wp: &[f64],
) {
    let d = words_to_f64(data);
    let n = d.len();
    let pf = p as f64;
    let k4 = v4::K::new(pf);
    let k8 = if WIDE { Some(v8::K::new(pf)) } else { None };
    for (range, t, tw) in super::stage_order::<FWD>(n) {
        stage::<FWD>(&mut d[range], t, &w[tw.clone()], &wp[tw], k4, k8);
    }
    f64_to_words(d, pf);
}

/// Forward transform (see [`super::shoup::fwd`]); `w`, `wp`: the twiddles as doubles and w/p.
///
/// # Safety
/// The CPU has AVX2 and FMA; `data.len()` ≥ 16 is a power of two, `p` < 2^51.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn fwd_avx2(data: &mut [u64], p: u64, w: &[f64], wp: &[f64]) {
    transform::<true, false>(data, p, w, wp)
}

/// Inverse transform without the division by N. Safety as [`fwd_avx2`].
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn inv_avx2(data: &mut [u64], p: u64, w: &[f64], wp: &[f64]) {
    transform::<false, false>(data, p, w, wp)
}

/// Safety as [`fwd_avx2`], and the CPU has AVX-512F/DQ/VL.
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx2,fma")]
pub(super) unsafe fn fwd_avx512(data: &mut [u64], p: u64, w: &[f64], wp: &[f64]) {
    transform::<true, true>(data, p, w, wp)
}

/// Safety as [`fwd_avx512`].
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx2,fma")]
pub(super) unsafe fn inv_avx512(data: &mut [u64], p: u64, w: &[f64], wp: &[f64]) {
    transform::<false, true>(data, p, w, wp)
}
