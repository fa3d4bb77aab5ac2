//! Modular arithmetic on 64-bit words in x86 vector lanes, for primes below 2^61: four lanes
//! with AVX2 ([`v4`]), eight with AVX-512F ([`v8`]). x86 has no 64-bit vector multiply-high
//! before IFMA, so each 64×64-bit product is made of 32×32-bit ones (`vpmuludq`), and only
//! products by a constant with a precomputed Shoup quotient (twiddles, RNS constants, a public
//! key) are cheap enough to beat scalar code. The NTTs ([`super::ntt`]) and the limb-wise passes
//! ([`super::limbwise`]) are built on these.
//!
//! Shoup multiplication y·w mod p with w' = ⌊w·2^64/p⌋: the quotient q ≈ ⌊y·w'/2^64⌋ skips the
//! low×low partial product and the carries of the two cross products, so it is at most 2 below
//! the exact one, which is at most 1 below ⌊y·w/p⌋. Hence r = y·w − q·p lies in [0, 4p) for any
//! y < 2^63, and one conditional subtraction makes [0, 2p). Every value stays below 4p < 2^63,
//! so signed comparisons order them.

#![allow(unsafe_op_in_unsafe_fn)] // every function here runs inside a kernel of its level

use std::arch::x86_64::*;

/// Primes below 2^MAX_BITS: every value the kernels form (< 4p) is below 2^63.
pub(crate) const MAX_BITS: u32 = 61;

/// Whether p ≡ 1 mod 2^32 (the primes HEAL generates above 51 bits): the kernels' `S` variant
/// then forms q·p with one 32×32-bit product instead of three.
#[inline]
pub(crate) fn low_word_one(p: u64) -> bool {
    p & 0xffff_ffff == 1
}

/// Four lanes (AVX2).
pub(crate) mod v4 {
    use super::*;

    /// A modulus p, broadcast.
    #[derive(Clone, Copy)]
    pub(crate) struct K {
        pub p: __m256i,
        pub two_p: __m256i,
        pub p_hi: __m256i,
    }

    impl K {
        #[inline(always)]
        pub unsafe fn new(p: u64) -> Self {
            K {
                p: _mm256_set1_epi64x(p as i64),
                two_p: _mm256_set1_epi64x(2 * p as i64),
                p_hi: _mm256_set1_epi64x((p >> 32) as i64),
            }
        }
    }

    /// Constants w (< p) and their Shoup quotients, with the high halves in the low 32 bits of
    /// each lane (`vpmuludq` reads the low halves of the words themselves).
    #[derive(Clone, Copy)]
    pub(crate) struct W {
        w: __m256i,
        w_hi: __m256i,
        s: __m256i,
        s_hi: __m256i,
    }

    impl W {
        #[inline(always)]
        pub unsafe fn new(w: __m256i, s: __m256i) -> Self {
            W {
                w,
                w_hi: _mm256_srli_epi64::<32>(w),
                s,
                s_hi: _mm256_srli_epi64::<32>(s),
            }
        }

        /// One constant in every lane.
        #[inline(always)]
        pub unsafe fn splat(w: u64, s: u64) -> Self {
            W {
                w: _mm256_set1_epi64x(w as i64),
                w_hi: _mm256_set1_epi64x((w >> 32) as i64),
                s: _mm256_set1_epi64x(s as i64),
                s_hi: _mm256_set1_epi64x((s >> 32) as i64),
            }
        }

        /// Four constants and their quotients from memory.
        #[inline(always)]
        pub unsafe fn load(w: *const u64, s: *const u64) -> Self {
            W::new(load(w), load(s))
        }
    }

    #[inline(always)]
    pub unsafe fn load(p: *const u64) -> __m256i {
        _mm256_loadu_si256(p.cast())
    }

    /// The low 32 bits of a times those of b, per lane (`vpmuludq`). Through `asm!` because
    /// LLVM otherwise recognises the partial products of a 64-bit multiply, fuses them into
    /// one and lowers that again — recomputing the precomputed halves inside the loop and
    /// adding instructions.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub unsafe fn mul32(a: __m256i, b: __m256i) -> __m256i {
        let out: __m256i;
        std::arch::asm!(
            "vpmuludq {o}, {a}, {b}",
            a = in(ymm_reg) a,
            b = in(ymm_reg) b,
            o = lateout(ymm_reg) out,
            options(pure, nomem, nostack, preserves_flags),
        );
        out
    }

    #[inline(always)]
    pub unsafe fn store(p: *mut u64, v: __m256i) {
        _mm256_storeu_si256(p.cast(), v)
    }

    #[inline(always)]
    pub unsafe fn splat(x: u64) -> __m256i {
        _mm256_set1_epi64x(x as i64)
    }

    /// v in [0, 2m) (m < 2^62) to [0, m): the sign of v − m picks.
    #[inline(always)]
    pub unsafe fn fold(v: __m256i, m: __m256i) -> __m256i {
        let t = _mm256_sub_epi64(v, m);
        _mm256_castpd_si256(_mm256_blendv_pd(
            _mm256_castsi256_pd(t),
            _mm256_castsi256_pd(v),
            _mm256_castsi256_pd(t),
        ))
    }

    /// v in (−m, m) to [0, m).
    #[inline(always)]
    pub unsafe fn lift(v: __m256i, m: __m256i) -> __m256i {
        let t = _mm256_add_epi64(v, m);
        _mm256_castpd_si256(_mm256_blendv_pd(
            _mm256_castsi256_pd(v),
            _mm256_castsi256_pd(t),
            _mm256_castsi256_pd(v),
        ))
    }

    /// y·w mod p in [0, 2p), for y < 2^63; `S`: p ≡ 1 mod 2^32 ([`super::low_word_one`]).
    #[inline(always)]
    pub unsafe fn mul_shoup_lazy<const S: bool>(y: __m256i, w: W, k: K) -> __m256i {
        let y_hi = _mm256_srli_epi64::<32>(y);
        let hh = mul32(y_hi, w.s_hi);
        let hl = mul32(y_hi, w.s);
        let lh = mul32(y, w.s_hi);
        let q = _mm256_add_epi64(
            hh,
            _mm256_add_epi64(_mm256_srli_epi64::<32>(hl), _mm256_srli_epi64::<32>(lh)),
        );
        // y·w − q·p modulo 2^64: the low products and the cross products shifted up
        let yw_cross = _mm256_add_epi64(mul32(y_hi, w.w), mul32(y, w.w_hi));
        let (low, cross) = if S {
            // p = p_hi·2^32 + 1: q·p ≡ q + (q_lo·p_hi)·2^32
            (
                _mm256_sub_epi64(mul32(y, w.w), q),
                _mm256_sub_epi64(yw_cross, mul32(q, k.p_hi)),
            )
        } else {
            let q_hi = _mm256_srli_epi64::<32>(q);
            (
                _mm256_sub_epi64(mul32(y, w.w), mul32(q, k.p)),
                _mm256_sub_epi64(
                    yw_cross,
                    _mm256_add_epi64(mul32(q_hi, k.p), mul32(q, k.p_hi)),
                ),
            )
        };
        fold(
            _mm256_add_epi64(low, _mm256_slli_epi64::<32>(cross)),
            k.two_p,
        )
    }

    /// y·w mod p in [0, p), for y < 2^63.
    #[inline(always)]
    pub unsafe fn mul_shoup<const S: bool>(y: __m256i, w: W, k: K) -> __m256i {
        fold(mul_shoup_lazy::<S>(y, w, k), k.p)
    }
}

/// Eight lanes (AVX-512F): the same arithmetic, comparisons through unsigned minima.
pub(crate) mod v8 {
    use super::*;

    #[derive(Clone, Copy)]
    pub(crate) struct K {
        pub p: __m512i,
        pub two_p: __m512i,
        pub p_hi: __m512i,
    }

    impl K {
        #[inline(always)]
        pub unsafe fn new(p: u64) -> Self {
            K {
                p: _mm512_set1_epi64(p as i64),
                two_p: _mm512_set1_epi64(2 * p as i64),
                p_hi: _mm512_set1_epi64((p >> 32) as i64),
            }
        }
    }

    #[derive(Clone, Copy)]
    pub(crate) struct W {
        w: __m512i,
        w_hi: __m512i,
        s: __m512i,
        s_hi: __m512i,
    }

    impl W {
        #[inline(always)]
        pub unsafe fn splat(w: u64, s: u64) -> Self {
            W {
                w: _mm512_set1_epi64(w as i64),
                w_hi: _mm512_set1_epi64((w >> 32) as i64),
                s: _mm512_set1_epi64(s as i64),
                s_hi: _mm512_set1_epi64((s >> 32) as i64),
            }
        }
    }

    #[inline(always)]
    pub unsafe fn load(p: *const u64) -> __m512i {
        _mm512_loadu_si512(p.cast())
    }

    /// `vpmuludq` through `asm!`, as [`super::v4::mul32`].
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn mul32(a: __m512i, b: __m512i) -> __m512i {
        let out: __m512i;
        std::arch::asm!(
            "vpmuludq {o}, {a}, {b}",
            a = in(zmm_reg) a,
            b = in(zmm_reg) b,
            o = lateout(zmm_reg) out,
            options(pure, nomem, nostack, preserves_flags),
        );
        out
    }

    #[inline(always)]
    pub unsafe fn store(p: *mut u64, v: __m512i) {
        _mm512_storeu_si512(p.cast(), v)
    }

    /// v in [0, 2m) to [0, m).
    #[inline(always)]
    pub unsafe fn fold(v: __m512i, m: __m512i) -> __m512i {
        _mm512_min_epu64(v, _mm512_sub_epi64(v, m))
    }

    /// y·w mod p in [0, 2p), for y < 2^63.
    #[inline(always)]
    pub unsafe fn mul_shoup_lazy<const S: bool>(y: __m512i, w: W, k: K) -> __m512i {
        let y_hi = _mm512_srli_epi64::<32>(y);
        let hh = mul32(y_hi, w.s_hi);
        let hl = mul32(y_hi, w.s);
        let lh = mul32(y, w.s_hi);
        let q = _mm512_add_epi64(
            hh,
            _mm512_add_epi64(_mm512_srli_epi64::<32>(hl), _mm512_srli_epi64::<32>(lh)),
        );
        let yw_cross = _mm512_add_epi64(mul32(y_hi, w.w), mul32(y, w.w_hi));
        let (low, cross) = if S {
            (
                _mm512_sub_epi64(mul32(y, w.w), q),
                _mm512_sub_epi64(yw_cross, mul32(q, k.p_hi)),
            )
        } else {
            let q_hi = _mm512_srli_epi64::<32>(q);
            (
                _mm512_sub_epi64(mul32(y, w.w), mul32(q, k.p)),
                _mm512_sub_epi64(
                    yw_cross,
                    _mm512_add_epi64(mul32(q_hi, k.p), mul32(q, k.p_hi)),
                ),
            )
        };
        fold(
            _mm512_add_epi64(low, _mm512_slli_epi64::<32>(cross)),
            k.two_p,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::Modulus;
    use proptest::prelude::*;

    /// y·w mod p through the four-lane kernel, for the same y in every lane.
    fn lanes(y: u64, w: u64, p: u64) -> Option<u64> {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return None;
        }
        #[target_feature(enable = "avx2")]
        unsafe fn run(y: u64, w: u64, p: u64) -> [u64; 4] {
            let c = Modulus::new(p).shoup(w);
            let (y, w, k) = (v4::splat(y), v4::W::splat(c.w, c.w_shoup), v4::K::new(p));
            let r = if low_word_one(p) {
                v4::mul_shoup_lazy::<true>(y, w, k)
            } else {
                v4::mul_shoup_lazy::<false>(y, w, k)
            };
            let mut out = [0u64; 4];
            v4::store(out.as_mut_ptr(), r);
            out
        }
        // SAFETY: AVX2 checked above.
        let out = unsafe { run(y, w, p) };
        assert!(out.iter().all(|&x| x == out[0]));
        Some(out[0])
    }

    proptest! {
        /// Any y below 4p (the lazy range) and any constant: the result is y·w mod p, below 2p.
        #[test]
        fn shoup_in_lanes_is_exact_and_lazy(y in any::<u64>(), w in any::<u64>(), k in 0usize..5) {
            let p = [(1u64 << 60) - 93_184_511, (1 << 40) - 1_179_647, (1 << 61) - 1, 65_537, (0x0fff_fff0u64 << 32) | 1][k];
            let y = y % (4 * p);
            let w = w % p;
            if let Some(r) = lanes(y, w, p) {
                prop_assert!(r < 2 * p, "{r} not below 2p");
                prop_assert_eq!(r % p, ((y as u128 * w as u128) % p as u128) as u64);
            }
        }
    }

    #[test]
    fn shoup_in_lanes_at_the_extremes() {
        for p in [
            (1u64 << 61) - 1,
            (1 << 60) - 93_184_511,
            3,
            (0x1fff_ffffu64 << 32) | 1,
        ] {
            for y in [0, 1, p - 1, 2 * p - 1, 4 * p - 1, (1 << 62) + 12_345] {
                for w in [0, 1, p - 1, p / 2, (p - 1) ^ 0xffff_ffff] {
                    let w = w % p;
                    if let Some(r) = lanes(y, w, p) {
                        assert!(r < 2 * p);
                        assert_eq!(
                            r % p,
                            ((y as u128 * w as u128) % p as u128) as u64,
                            "{y}·{w} mod {p}"
                        );
                    }
                }
            }
        }
    }
}
