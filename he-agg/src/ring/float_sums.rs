//! Sums of products modulo a prime below 2^51 in double precision, four lanes with AVX2+FMA:
//! the key switch's inner product with the key and its basis extensions, on CPUs without IFMA.
//! Their scalar forms take a 64×64-bit `mulx` per product and a 128-bit reduction per sum
//! (a third of a one-thread mode (b) inference at AVX2, measured with perf); x86 has no vector
//! 64-bit multiply before IFMA, but a word below 2^51 is an exact double.
//!
//! x·y mod t for x, y < t < 2^51: h = fl(x·y) and l = x·y − h exactly (one FMA); the quotient
//! q = ⌊fl(h·fl(1/t))⌋ is within 0.76 of x·y/t < 2^51 (three roundings of 2^−53 each), so
//! r = (h − q·t) + l lies in [−t, 2t). h − q·t is an integer below 2^53 in magnitude, so the
//! fused operation gives it exactly, and the addition of l is exact too; one conditional +t
//! makes [0, 2t). Sums are folded back to [0, 2t) after every addition (4t < 2^53) and to
//! [0, t) at the end: the words equal the scalar kernels' exactly.

#![allow(unsafe_op_in_unsafe_fn)] // every function here is a kernel of one target level

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

use super::Modulus;

/// Moduli up to this many bits (source and target) run here.
pub(crate) const MAX_BITS: u32 = 51;

const MAGIC: u64 = 0x4330_0000_0000_0000; // the bits of 2^52
const TWO52: f64 = 4_503_599_627_370_496.0;
const FLOOR: i32 = _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC;

/// Whether these kernels run for moduli of at most `bits` bits at the level in force: AVX2 and
/// AVX-512 without IFMA (the IFMA level keeps the scalar kernels; no IFMA host measured this).
pub(crate) fn usable(bits: u32) -> bool {
    use crate::simd::{Level, level};
    bits <= MAX_BITS && matches!(level(), Level::Avx2 | Level::Avx512)
}

/// A modulus t broadcast, with 2t and fl(1/t).
#[derive(Clone, Copy)]
struct K {
    t: __m256d,
    two_t: __m256d,
    inv: __m256d,
    magic: __m256i,
    two52: __m256d,
    mask: __m256i,
}

impl K {
    #[inline(always)]
    unsafe fn new(t: u64) -> Self {
        let tf = t as f64;
        K {
            t: _mm256_set1_pd(tf),
            two_t: _mm256_set1_pd(2.0 * tf),
            inv: _mm256_set1_pd(1.0 / tf),
            magic: _mm256_set1_epi64x(MAGIC as i64),
            two52: _mm256_set1_pd(TWO52),
            mask: _mm256_set1_epi64x(((1u64 << 52) - 1) as i64),
        }
    }

    /// Four words below 2^52 as doubles of the same value.
    #[inline(always)]
    unsafe fn load(&self, p: *const u64) -> __m256d {
        let raw = _mm256_loadu_si256(p.cast());
        _mm256_sub_pd(
            _mm256_castsi256_pd(_mm256_or_si256(raw, self.magic)),
            self.two52,
        )
    }

    /// Values in [0, 2t) reduced to [0, t) and stored as words.
    #[inline(always)]
    unsafe fn store(&self, p: *mut u64, v: __m256d) {
        let u = _mm256_sub_pd(v, self.t);
        let v = _mm256_blendv_pd(u, v, u);
        let bits = _mm256_and_si256(_mm256_castpd_si256(_mm256_add_pd(v, self.two52)), self.mask);
        _mm256_storeu_si256(p.cast(), bits);
    }

    /// x·y mod t in [0, 2t), for x, y < t (or x·y/t < 2^51).
    #[inline(always)]
    unsafe fn mul(&self, x: __m256d, y: __m256d) -> __m256d {
        let h = _mm256_mul_pd(x, y);
        let l = _mm256_fmsub_pd(x, y, h);
        let q = _mm256_round_pd::<FLOOR>(_mm256_mul_pd(h, self.inv));
        let r = _mm256_add_pd(_mm256_fnmadd_pd(q, self.t, h), l);
        // the sign bit picks r + t
        _mm256_blendv_pd(r, _mm256_add_pd(r, self.t), r)
    }

    /// a + b for a, b in [0, 2t), in [0, 2t).
    #[inline(always)]
    unsafe fn add(&self, a: __m256d, b: __m256d) -> __m256d {
        let s = _mm256_add_pd(a, b);
        let u = _mm256_sub_pd(s, self.two_t);
        _mm256_blendv_pd(u, s, u)
    }
}

/// o0[k] = Σ_j xs[j][k]·bs[j][k] mod t and o1[k] = Σ_j xs[j][k]·as_[j][k] mod t: every word
/// of both written. All words below t; the caller checked [`usable`] for t's bits.
pub(crate) fn dot_pairs(
    t: &Modulus,
    xs: &[&[u64]],
    bs: &[&[u64]],
    as_: &[&[u64]],
    o0: &mut [MaybeUninit<u64>],
    o1: &mut [MaybeUninit<u64>],
) {
    let n = o0.len();
    assert!(
        o1.len() == n && !xs.is_empty(),
        "outputs of one length, a digit at least"
    );
    assert!(
        xs.len() == bs.len() && xs.len() == as_.len(),
        "one key part per digit"
    );
    for s in xs.iter().chain(bs).chain(as_) {
        assert!(s.len() >= n, "inputs cover the outputs");
    }
    debug_assert!(t.bits() <= MAX_BITS);
    // SAFETY: the caller checked the level (AVX2 and FMA); every slice covers n words.
    unsafe { dot_pairs_avx2(t, xs, bs, as_, o0, o1) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn dot_pairs_avx2(
    t: &Modulus,
    xs: &[&[u64]],
    bs: &[&[u64]],
    as_: &[&[u64]],
    o0: &mut [MaybeUninit<u64>],
    o1: &mut [MaybeUninit<u64>],
) {
    let n = o0.len();
    let k = K::new(t.value());
    let whole = n - n % 4;
    for c in (0..whole).step_by(4) {
        let x = k.load(xs[0].as_ptr().add(c));
        let mut s0 = k.mul(x, k.load(bs[0].as_ptr().add(c)));
        let mut s1 = k.mul(x, k.load(as_[0].as_ptr().add(c)));
        for j in 1..xs.len() {
            let x = k.load(xs[j].as_ptr().add(c));
            s0 = k.add(s0, k.mul(x, k.load(bs[j].as_ptr().add(c))));
            s1 = k.add(s1, k.mul(x, k.load(as_[j].as_ptr().add(c))));
        }
        k.store(o0.as_mut_ptr().add(c).cast(), s0);
        k.store(o1.as_mut_ptr().add(c).cast(), s1);
    }
    for c in whole..n {
        let sum = |ks: &[&[u64]]| {
            xs.iter()
                .zip(ks)
                .fold(0, |s, (x, y)| t.add(s, t.mul(x[c], y[c])))
        };
        o0[c].write(sum(bs));
        o1[c].write(sum(as_));
    }
}

/// out[k] = Σ_i rows[i][k]·w[i] mod t, for rows' words below 2^51 and constants below t (a
/// basis extension's second step). The caller checked [`usable`] for t's bits and the rows'.
pub(crate) fn sum_const_products(t: &Modulus, rows: &[&[u64]], w: &[u64], out: &mut [u64]) {
    let n = out.len();
    assert!(
        !rows.is_empty() && rows.len() == w.len(),
        "one constant per row"
    );
    for r in rows {
        assert!(r.len() >= n, "rows cover the output");
    }
    debug_assert!(t.bits() <= MAX_BITS && w.iter().all(|&c| c < t.value()));
    // SAFETY: the caller checked the level (AVX2 and FMA); every slice covers n words.
    unsafe { sum_const_products_avx2(t, rows, w, out) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn sum_const_products_avx2(t: &Modulus, rows: &[&[u64]], w: &[u64], out: &mut [u64]) {
    let n = out.len();
    let k = K::new(t.value());
    let ws: Vec<__m256d> = w.iter().map(|&c| _mm256_set1_pd(c as f64)).collect();
    let whole = n - n % 4;
    let o = out.as_mut_ptr();
    if let ([r0, r1, r2], [w0, w1, w2]) = (rows, &ws[..]) {
        // the usual three special primes or a digit of three, unrolled
        for c in (0..whole).step_by(4) {
            let s = k.add(
                k.mul(k.load(r0.as_ptr().add(c)), *w0),
                k.mul(k.load(r1.as_ptr().add(c)), *w1),
            );
            k.store(o.add(c), k.add(s, k.mul(k.load(r2.as_ptr().add(c)), *w2)));
        }
    } else {
        for c in (0..whole).step_by(4) {
            let mut s = k.mul(k.load(rows[0].as_ptr().add(c)), ws[0]);
            for i in 1..rows.len() {
                s = k.add(s, k.mul(k.load(rows[i].as_ptr().add(c)), ws[i]));
            }
            k.store(o.add(c), s);
        }
    }
    for c in whole..n {
        out[c] = rows
            .iter()
            .zip(w)
            .fold(0, |s, (r, &c_)| t.add(s, t.mul(t.reduce(r[c]), c_)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::primes::generate_primes;
    use crate::simd::{Level, level};
    use proptest::prelude::*;

    fn avx2() -> bool {
        level() >= Level::Avx2
    }

    fn dot_scalar(t: &Modulus, xs: &[Vec<u64>], ks: &[Vec<u64>], c: usize) -> u64 {
        xs.iter()
            .zip(ks)
            .fold(0, |s, (x, y)| t.add(s, t.mul(x[c], y[c])))
    }

    /// Inputs from `seed`, with every extreme word (0, 1, t − 1) among them.
    fn words(t: u64, n: usize, seed: u64) -> Vec<u64> {
        let mut s = seed | 1;
        (0..n)
            .map(|i| match i % 7 {
                0 => t - 1,
                3 => 0,
                5 => 1,
                _ => {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    s % t
                }
            })
            .collect()
    }

    fn check_dot(bits: u32, digits: usize, n: usize, seed: u64) {
        let t = Modulus::new(generate_primes(bits, 32, 1, &[]).expect("a prime")[0]);
        let xs: Vec<Vec<u64>> = (0..digits)
            .map(|j| words(t.value(), n, seed + j as u64))
            .collect();
        let bs: Vec<Vec<u64>> = (0..digits)
            .map(|j| words(t.value(), n, seed + 50 + j as u64))
            .collect();
        let as_: Vec<Vec<u64>> = (0..digits)
            .map(|j| words(t.value(), n, seed + 99 + j as u64))
            .collect();
        fn r(v: &[Vec<u64>]) -> Vec<&[u64]> {
            v.iter().map(Vec::as_slice).collect()
        }
        let (mut o0, mut o1) = (
            vec![MaybeUninit::uninit(); n],
            vec![MaybeUninit::uninit(); n],
        );
        dot_pairs(&t, &r(&xs), &r(&bs), &r(&as_), &mut o0, &mut o1);
        for c in 0..n {
            // SAFETY: dot_pairs writes every word
            let (a, b) = unsafe { (o0[c].assume_init(), o1[c].assume_init()) };
            assert_eq!(
                a,
                dot_scalar(&t, &xs, &bs, c),
                "bits {bits}, digits {digits}, word {c}"
            );
            assert_eq!(
                b,
                dot_scalar(&t, &xs, &as_, c),
                "bits {bits}, digits {digits}, word {c}"
            );
        }
    }

    #[test]
    fn dot_pairs_equal_the_scalar_sums_at_the_widest_primes() {
        if !avx2() {
            return;
        }
        for digits in 1..=5 {
            for bits in [30, 40, 44, 50, 51] {
                check_dot(bits, digits, 64 + 3, bits as u64 * 7 + digits as u64);
            }
        }
    }

    #[test]
    fn constant_sums_equal_the_scalar_sums_with_rows_from_wider_primes() {
        if !avx2() {
            return;
        }
        let t = Modulus::new(generate_primes(40, 32, 1, &[]).expect("a prime")[0]);
        // rows reduced modulo 51-bit source primes: above t, below 2^51
        let big = generate_primes(51, 32, 3, &[]).expect("primes");
        let n = 128 + 2;
        let rows: Vec<Vec<u64>> = big
            .iter()
            .enumerate()
            .map(|(i, &b)| words(b, n, 5 + i as u64))
            .collect();
        let w = [t.value() - 1, 1, t.value() / 3];
        let refs: Vec<&[u64]> = rows.iter().map(Vec::as_slice).collect();
        let mut out = vec![0; n];
        sum_const_products(&t, &refs, &w, &mut out);
        for c in 0..n {
            let want = rows
                .iter()
                .zip(&w)
                .fold(0, |s, (r, &wc)| t.add(s, t.mul(t.reduce(r[c]), wc)));
            assert_eq!(out[c], want, "word {c}");
        }
    }

    proptest! {
        #[test]
        fn one_product_is_exact_for_any_words(bits in 20u32..=51, x in any::<u64>(), y in any::<u64>()) {
            if avx2() {
                let t = Modulus::new(generate_primes(bits, 32, 1, &[]).expect("a prime")[0]);
                let (x, y) = (x % t.value(), y % t.value());
                let (xs, ys) = (vec![x; 4], vec![y; 4]);
                let (mut o0, mut o1) = (vec![MaybeUninit::uninit(); 4], vec![MaybeUninit::uninit(); 4]);
                dot_pairs(&t, &[&xs], &[&ys], &[&xs], &mut o0, &mut o1);
                // SAFETY: every word written
                let (a, b) = unsafe { (o0[0].assume_init(), o1[0].assume_init()) };
                prop_assert_eq!(a, t.mul(x, y));
                prop_assert_eq!(b, t.mul(x, x));
            }
        }
    }
}
