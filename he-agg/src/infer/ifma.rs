//! AVX-512 IFMA versions of the multiply-accumulate kernels (52-bit multiply-add, 8 lanes),
//! chosen at run time; the crate stays built for baseline x86-64.
//!
//! Each product a·b (a, b < 2^51) is split by the hardware into its low and high 52 bits and
//! added to two 64-bit accumulators, so 4095 products sum without overflow or reduction. The
//! sum lo + hi·2^52 is then reduced in vector registers: with B = 2^52 it is
//! l0 + m1·B + h1·B² (each part below B), and three Shoup multiplications by 1, [B]_q and
//! [B²]_q (52-bit Shoup: x·w − ⌊x·w'/B⌋·q ∈ [0, 2q) for w' = ⌊w·B/q⌋, exact modulo B because
//! 2q < B) bring it below 6q, then three conditional subtractions below q.

use crate::ring::Modulus;

/// Whether the IFMA kernels can run for this modulus and length.
pub(crate) fn usable(m: &Modulus, len: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        m.bits() <= 51
            && len.is_multiple_of(imp::PAIR_BLOCK)
            && crate::simd::level() >= crate::simd::Level::Ifma
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (m, len);
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use std::arch::x86_64::*;

    use crate::ring::Modulus;

    /// Coefficients per block of the pairwise kernel (8 vectors, 16 accumulators).
    pub(crate) const PAIR_BLOCK: usize = 64;
    /// Products per accumulator before folding: lo gains < 2^52 per product, so 4095 fit in
    /// 64 bits beside one folded value.
    const LIMIT: usize = 4095;
    const B: u64 = 1 << 52;

    /// Broadcast constants of one modulus.
    #[derive(Clone, Copy)]
    pub(crate) struct Consts {
        q: __m512i,
        q2: __m512i,
        q4: __m512i,
        mask: __m512i,
        one: __m512i,
        one_s: __m512i,
        c1: __m512i,
        c1_s: __m512i,
        c2: __m512i,
        c2_s: __m512i,
    }

    impl Consts {
        #[target_feature(enable = "avx512f")]
        pub(crate) fn new(m: &Modulus) -> Self {
            let q = m.value();
            let shoup = |w: u64| (((w as u128) << 52) / q as u128) as u64;
            let c1 = B % q;
            let c2 = ((c1 as u128 * c1 as u128) % q as u128) as u64;
            let v = |x: u64| _mm512_set1_epi64(x as i64);
            Self {
                q: v(q),
                q2: v(2 * q),
                q4: v(4 * q),
                mask: v(B - 1),
                one: v(1),
                one_s: v(shoup(1)),
                c1: v(c1),
                c1_s: v(shoup(c1)),
                c2: v(c2),
                c2_s: v(shoup(c2)),
            }
        }
    }

    /// x·w mod q in [0, 2q) for x < 2^52.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn shoup(k: &Consts, x: __m512i, w: __m512i, w_s: __m512i) -> __m512i {
        let z = _mm512_setzero_si512();
        let qhat = _mm512_madd52hi_epu64(z, x, w_s);
        let r = _mm512_sub_epi64(
            _mm512_madd52lo_epu64(z, x, w),
            _mm512_madd52lo_epu64(z, qhat, k.q),
        );
        _mm512_and_si512(r, k.mask)
    }

    /// min(x, x − c) as unsigned: subtracts c where x ≥ c.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn csub(x: __m512i, c: __m512i) -> __m512i {
        _mm512_min_epu64(x, _mm512_sub_epi64(x, c))
    }

    /// (lo + hi·2^52) mod q.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn reduce(k: &Consts, lo: __m512i, hi: __m512i) -> __m512i {
        let l0 = _mm512_and_si512(lo, k.mask);
        let m1 = _mm512_add_epi64(_mm512_srli_epi64(lo, 52), _mm512_and_si512(hi, k.mask));
        let h1 = _mm512_add_epi64(_mm512_srli_epi64(hi, 52), _mm512_srli_epi64(m1, 52));
        let m1 = _mm512_and_si512(m1, k.mask);
        let s = _mm512_add_epi64(
            _mm512_add_epi64(shoup(k, l0, k.one, k.one_s), shoup(k, m1, k.c1, k.c1_s)),
            shoup(k, h1, k.c2, k.c2_s),
        );
        csub(csub(csub(s, k.q4), k.q2), k.q)
    }

    /// # Safety
    /// `at + 8 ≤ s.len()`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load(s: &[u64], at: usize) -> __m512i {
        debug_assert!(at + 8 <= s.len());
        // SAFETY: the caller guarantees 8 words from `at`
        unsafe { _mm512_loadu_si512(s.as_ptr().add(at).cast()) }
    }

    /// # Safety
    /// `at + 8 ≤ s.len()`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store(s: &mut [u64], at: usize, v: __m512i) {
        debug_assert!(at + 8 <= s.len());
        // SAFETY: the caller guarantees 8 words from `at`
        unsafe { _mm512_storeu_si512(s.as_mut_ptr().add(at).cast(), v) }
    }

    /// out[k] = Σ_j a_j[k]·b_j[k] mod m; operands below 2^51, len a multiple of PAIR_BLOCK.
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub(crate) fn mac_pairs(m: &Modulus, pairs: &[(&[u64], &[u64])], out: &mut [u64]) {
        const V: usize = PAIR_BLOCK / 8;
        let k = Consts::new(m);
        let n = out.len();
        for (a, b) in pairs {
            assert!(a.len() >= n && b.len() >= n, "operands cover the output");
        }
        for start in (0..n).step_by(PAIR_BLOCK) {
            let z = _mm512_setzero_si512();
            let (mut lo, mut hi) = ([z; V], [z; V]);
            for (ci, chunk) in pairs.chunks(LIMIT).enumerate() {
                if ci > 0 {
                    // fold: the running sum becomes one term below q
                    for v in 0..V {
                        lo[v] = reduce(&k, lo[v], hi[v]);
                        hi[v] = z;
                    }
                }
                for (a, b) in chunk {
                    for v in 0..V {
                        // SAFETY: start + 8v + 8 ≤ n ≤ len of a and b (asserted above)
                        let (x, y) = unsafe { (load(a, start + 8 * v), load(b, start + 8 * v)) };
                        lo[v] = _mm512_madd52lo_epu64(lo[v], x, y);
                        hi[v] = _mm512_madd52hi_epu64(hi[v], x, y);
                    }
                }
            }
            for v in 0..V {
                // SAFETY: start + 8v + 8 ≤ n = out.len()
                unsafe { store(out, start + 8 * v, reduce(&k, lo[v], hi[v])) };
            }
        }
    }

    /// Rows at once in the grouped kernel, and vectors per row (16 accumulators).
    const R: usize = 4;
    const V: usize = 2;
    pub(crate) const GROUP_BLOCK: usize = 8 * V;

    /// For rows r of a group sharing the input columns `cols`:
    /// outs[r][k] (+)= Σ_e weights[r·cols.len() + e]·inputs[cols[e]][k] mod m.
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub(crate) fn group_product(
        m: &Modulus,
        cols: &[u32],
        weights: &[u64],
        inputs: &[&[u64]],
        outs: &mut [&mut [u64]],
        accumulate: bool,
    ) {
        let k = Consts::new(m);
        let n = super::super::batched_ops::group_shape(cols, weights, inputs, outs);
        let nnz = cols.len();
        // one block's inputs side by side, read once for every row of the group: the inputs
        // are as many arrays (and pages) as the group has columns
        let mut xb: Vec<[__m512i; V]> = vec![[_mm512_setzero_si512(); V]; nnz];
        for start in (0..n).step_by(GROUP_BLOCK) {
            for (x, &c) in xb.iter_mut().zip(cols) {
                let input = inputs[c as usize];
                // SAFETY: start + 16 ≤ n ≤ input.len() (asserted above)
                *x = unsafe { [load(input, start), load(input, start + 8)] };
            }
            for (r0, rows) in (0..outs.len()).step_by(R).zip(outs.chunks_mut(R)) {
                let z = _mm512_setzero_si512();
                let (mut lo, mut hi) = ([[z; V]; R], [[z; V]; R]);
                let live = rows.len();
                for (ci, chunk) in cols.chunks(LIMIT).enumerate() {
                    if ci > 0 {
                        for r in 0..R {
                            for v in 0..V {
                                lo[r][v] = reduce(&k, lo[r][v], hi[r][v]);
                                hi[r][v] = z;
                            }
                        }
                    }
                    let base = ci * LIMIT;
                    for (e, x) in xb[base..base + chunk.len()].iter().enumerate() {
                        for r in 0..R {
                            // rows past the group's end reuse row 0's weight; never stored
                            let row = if r < live { r0 + r } else { r0 };
                            let w = _mm512_set1_epi64(weights[row * nnz + base + e] as i64);
                            for v in 0..V {
                                lo[r][v] = _mm512_madd52lo_epu64(lo[r][v], x[v], w);
                                hi[r][v] = _mm512_madd52hi_epu64(hi[r][v], x[v], w);
                            }
                        }
                    }
                }
                for (r, out) in rows.iter_mut().enumerate() {
                    for v in 0..V {
                        let at = start + 8 * v;
                        // SAFETY: at + 8 ≤ n = out.len()
                        unsafe {
                            let mut s = reduce(&k, lo[r][v], hi[r][v]);
                            if accumulate {
                                s = csub(_mm512_add_epi64(s, load(out, at)), k.q);
                            }
                            store(out, at, s);
                        }
                    }
                }
            }
        }
    }
}

/// [`imp::mac_pairs`]; the caller checked [`usable`].
pub(crate) fn mac_pairs(m: &Modulus, pairs: &[(&[u64], &[u64])], out: &mut [u64]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `usable` checked the level, which set_level keeps within the CPU's (AVX-512F, IFMA)
    unsafe {
        imp::mac_pairs(m, pairs, out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (m, pairs, out);
        unreachable!("usable() is false off x86-64")
    }
}

/// [`imp::group_product`]; the caller checked [`usable`].
pub(crate) fn group_product(
    m: &Modulus,
    cols: &[u32],
    weights: &[u64],
    inputs: &[&[u64]],
    outs: &mut [&mut [u64]],
    accumulate: bool,
) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `usable` checked the level, which set_level keeps within the CPU's (AVX-512F, IFMA)
    unsafe {
        imp::group_product(m, cols, weights, inputs, outs, accumulate)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (m, cols, weights, inputs, outs, accumulate);
        unreachable!("usable() is false off x86-64")
    }
}
