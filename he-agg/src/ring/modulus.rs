//! Arithmetic modulo one word-sized prime: Barrett reduction for variable operands, Shoup
//! multiplication for constants, and the u128 reduction used after lazy accumulation.

/// The largest modulus the ring accepts. Primes below 2^62 keep tfhe-ntt on its fast path and
/// leave two bits of headroom for lazy additions.
pub const MAX_MODULUS_BITS: u32 = 62;

/// A prime modulus with precomputed reduction constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Modulus {
    q: u64,
    bits: u32,
    /// floor(2^(2·bits) / q), for products of two reduced operands.
    barrett: u64,
    /// floor(2^128 / q) as (low, high) words, for arbitrary 128-bit values.
    ratio: (u64, u64),
    /// floor(2^64 / q), for single words.
    ratio64: u64,
}

impl Modulus {
    /// Panics if `q` is outside 2..2^62; callers validate untrusted moduli first
    /// (see [`crate::ring::primes::is_prime`] and the parameter checks).
    pub fn new(q: u64) -> Self {
        assert!(
            (2..(1 << MAX_MODULUS_BITS)).contains(&q),
            "modulus out of range"
        );
        let bits = 64 - q.leading_zeros();
        let barrett = ((1u128 << (2 * bits)) / q as u128) as u64;
        // floor(2^128 / q) = floor((2^128 - 1) / q) since q is not a power of two (q odd > 2)
        // or q = 2 (handled identically: 2^128/2 has no remainder but fits after the -1 fix).
        let r = u128::MAX / q as u128 + u128::from(u128::MAX % q as u128 == q as u128 - 1);
        Self {
            q,
            bits,
            barrett,
            ratio: (r as u64, (r >> 64) as u64),
            ratio64: (r >> 64) as u64,
        }
    }

    #[inline(always)]
    pub fn value(&self) -> u64 {
        self.q
    }

    #[inline(always)]
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// ⌊2^128 / q⌋ as (low, high) words: the constant of [`Modulus::reduce_u128`], for kernels
    /// that repeat its arithmetic elsewhere (the GPU).
    #[inline]
    pub fn ratio(&self) -> (u64, u64) {
        self.ratio
    }

    // Branch-free conditional subtraction: for r < 2q (< 2^63), r − q wraps to a value above r
    // exactly when r < q, so the minimum is the reduced value. Random residues would make a
    // branch mispredict half the time.
    #[inline(always)]
    fn csub(&self, r: u64) -> u64 {
        r.min(r.wrapping_sub(self.q))
    }

    #[inline(always)]
    pub fn add(&self, a: u64, b: u64) -> u64 {
        self.csub(a + b)
    }

    #[inline(always)]
    pub fn sub(&self, a: u64, b: u64) -> u64 {
        let d = a.wrapping_sub(b);
        d.min(d.wrapping_add(self.q))
    }

    #[inline(always)]
    pub fn neg(&self, a: u64) -> u64 {
        // q − a for a > 0; 0 stays 0 (q − 0 = q reduces to 0)
        self.csub(self.q - a)
    }

    /// a·b mod q for a, b < q.
    #[inline(always)]
    pub fn mul(&self, a: u64, b: u64) -> u64 {
        self.reduce_product((a as u128) * (b as u128))
    }

    /// x mod q for x < q² (a product of two reduced operands).
    #[inline(always)]
    pub fn reduce_product(&self, x: u128) -> u64 {
        // Shifts done on words: the shift amounts are below 64, which u128 shifts cannot know,
        // and the generic u128 shift costs more than the rest of the reduction.
        let (lo, hi) = (x as u64, (x >> 64) as u64);
        let s = self.bits;
        let shifted = (lo >> (s - 1)) | (hi << (65 - s));
        let p = shifted as u128 * self.barrett as u128;
        let (plo, phi) = (p as u64, (p >> 64) as u64);
        let qhat = (plo >> (s + 1)) | (phi << (63 - s));
        let r = (x as u64).wrapping_sub(qhat.wrapping_mul(self.q));
        self.csub(self.csub(r))
    }

    /// x mod q for a sum of at most three products of reduced operands (x < 3q², q < 2^61;
    /// see [`Modulus::bits`]): Barrett as
    /// in [`Modulus::reduce_product`], whose estimate is then at most 4 short (x/2^(2·bits) < 3
    /// and two floors), so r < 5q < 2^64 and three conditional subtractions finish. Cheaper than
    /// [`Modulus::reduce_u128`], which takes any 128-bit value.
    #[inline(always)]
    pub fn reduce_sum3(&self, x: u128) -> u64 {
        debug_assert!(self.bits <= 61 && x < 3 * (self.q as u128) * (self.q as u128));
        let (lo, hi) = (x as u64, (x >> 64) as u64);
        let s = self.bits;
        // x < 3q² < 2^(2s+2): the shift keeps s + 3 bits, the product below 2^(2s+4) ≤ 2^126
        let shifted = (lo >> (s - 1)) | (hi << (65 - s));
        let p = shifted as u128 * self.barrett as u128;
        // p >> (s + 1) on words (below 2^(s+3) ≤ 2^64), as in reduce_product
        let (plo, phi) = (p as u64, (p >> 64) as u64);
        let qhat = (plo >> (s + 1)) | (phi << (63 - s));
        let r = lo.wrapping_sub(qhat.wrapping_mul(self.q));
        let r = r.min(r.wrapping_sub(self.q << 2));
        let r = r.min(r.wrapping_sub(self.q << 1));
        self.csub(r)
    }

    /// x mod q for any 128-bit x (used after lazily accumulating many products).
    #[inline(always)]
    pub fn reduce_u128(&self, x: u128) -> u64 {
        let (x_lo, x_hi) = (x as u64, (x >> 64) as u64);
        let (r_lo, r_hi) = self.ratio;
        // floor(x · ratio / 2^128), computed from the four partial products.
        let lo_lo_hi = ((x_lo as u128 * r_lo as u128) >> 64) as u64;
        let lo_hi = x_lo as u128 * r_hi as u128;
        let hi_lo = x_hi as u128 * r_lo as u128;
        let mid = lo_hi + lo_lo_hi as u128;
        let mid2 = (mid as u64) as u128 + (hi_lo as u64) as u128;
        let carry = (mid >> 64) + (hi_lo >> 64) + (mid2 >> 64);
        let qhat = (x_hi.wrapping_mul(r_hi)).wrapping_add(carry as u64);
        // the Barrett estimate is at most one short
        self.csub(x_lo.wrapping_sub(qhat.wrapping_mul(self.q)))
    }

    /// x mod q for any u64 (one-word Barrett: the estimate is at most one short).
    #[inline(always)]
    pub fn reduce(&self, x: u64) -> u64 {
        let qhat = ((x as u128 * self.ratio64 as u128) >> 64) as u64;
        self.csub(x - qhat * self.q)
    }

    /// Reduces a signed integer into [0, q), without branches.
    #[inline(always)]
    pub fn reduce_i64(&self, x: i64) -> u64 {
        let r = self.reduce(x.unsigned_abs());
        let neg = self.neg(r);
        let mask = (x >> 63) as u64;
        (neg & mask) | (r & !mask)
    }

    /// Reduces a signed integer with |x| < q into [0, q), without branches (noise, secrets).
    #[inline(always)]
    pub fn reduce_small(&self, x: i64) -> u64 {
        debug_assert!(x.unsigned_abs() < self.q);
        let r = x as u64;
        r.min(r.wrapping_add(self.q))
    }

    /// Reduces a signed 128-bit integer into [0, q).
    #[inline]
    pub fn reduce_i128(&self, x: i128) -> u64 {
        if x >= 0 {
            self.reduce_u128(x as u128)
        } else {
            self.neg(self.reduce_u128(x.unsigned_abs()))
        }
    }

    /// The centred representative of a in (-q/2, q/2].
    #[inline(always)]
    pub fn center(&self, a: u64) -> i64 {
        if a > self.q / 2 {
            a as i64 - self.q as i64
        } else {
            a as i64
        }
    }

    pub fn pow(&self, mut base: u64, mut exp: u64) -> u64 {
        let mut acc = 1 % self.q;
        base %= self.q;
        while exp > 0 {
            if exp & 1 == 1 {
                acc = self.mul(acc, base);
            }
            base = self.mul(base, base);
            exp >>= 1;
        }
        acc
    }

    /// The inverse of a modulo the prime q, or None for a ≡ 0.
    pub fn inv(&self, a: u64) -> Option<u64> {
        let a = a % self.q;
        (a != 0).then(|| self.pow(a, self.q - 2))
    }

    /// Precomputes `w` for repeated multiplication with [`Modulus::mul_shoup`].
    #[inline]
    pub fn shoup(&self, w: u64) -> ShoupConst {
        let w = w % self.q;
        ShoupConst {
            w,
            w_shoup: (((w as u128) << 64) / self.q as u128) as u64,
        }
    }

    /// a·w mod q with w precomputed (one high and two low multiplications). Any a < 2^64 is
    /// accepted, so lazily reduced inputs need no normalisation first.
    #[inline(always)]
    pub fn mul_shoup(&self, a: u64, w: ShoupConst) -> u64 {
        self.csub(self.mul_shoup_lazy(a, w))
    }

    /// a·w mod q up to one q: the result is below 2q (any a < 2^64).
    #[inline(always)]
    pub fn mul_shoup_lazy(&self, a: u64, w: ShoupConst) -> u64 {
        let qhat = ((a as u128 * w.w_shoup as u128) >> 64) as u64;
        a.wrapping_mul(w.w).wrapping_sub(qhat.wrapping_mul(self.q))
    }
}

/// A constant prepared for Shoup multiplication.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ShoupConst {
    pub w: u64,
    pub w_shoup: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PRIMES: [u64; 4] = [
        65537,
        1099511480321,
        1152921504606830593,
        4611686018427322369,
    ];

    proptest! {
        #[test]
        fn mul_matches_u128(a in any::<u64>(), b in any::<u64>(), k in 0usize..4) {
            let m = Modulus::new(PRIMES[k]);
            let (a, b) = (a % m.value(), b % m.value());
            prop_assert_eq!(m.mul(a, b), ((a as u128 * b as u128) % m.value() as u128) as u64);
        }

        #[test]
        fn reduce_u128_matches(x in any::<u128>(), k in 0usize..4) {
            let m = Modulus::new(PRIMES[k]);
            prop_assert_eq!(m.reduce_u128(x), (x % m.value() as u128) as u64);
        }

        #[test]
        fn reduce_sum3_matches(a in any::<[u64; 6]>(), terms in 1usize..=3, k in 0usize..3) {
            let m = Modulus::new(PRIMES[k]);
            let q = m.value();
            let x: u128 = (0..terms).map(|t| (a[2 * t] % q) as u128 * (a[2 * t + 1] % q) as u128).sum();
            prop_assert_eq!(m.reduce_sum3(x), (x % q as u128) as u64);
            // the extreme: three products of q − 1
            let top = 3 * ((q - 1) as u128 * (q - 1) as u128);
            prop_assert_eq!(m.reduce_sum3(top), (top % q as u128) as u64);
        }

        #[test]
        fn shoup_matches(a in any::<u64>(), w in any::<u64>(), k in 0usize..4) {
            let m = Modulus::new(PRIMES[k]);
            let a = a % m.value();
            let c = m.shoup(w);
            prop_assert_eq!(m.mul_shoup(a, c), m.mul(a, w % m.value()));
            let lazy = a + m.value();
            prop_assert_eq!(m.mul_shoup(lazy, c), m.mul(a, w % m.value()));
        }

        #[test]
        fn word_reduction(x in any::<u64>(), k in 0usize..4) {
            let m = Modulus::new(PRIMES[k]);
            prop_assert_eq!(m.reduce(x), x % m.value());
        }

        #[test]
        fn signed_reduction(x in any::<i64>(), k in 0usize..4) {
            let m = Modulus::new(PRIMES[k]);
            prop_assert_eq!(m.reduce_i64(x) as i128, (x as i128).rem_euclid(m.value() as i128));
        }
    }

    #[test]
    fn inverse_and_center() {
        for &q in &PRIMES {
            let m = Modulus::new(q);
            for a in [1u64, 2, 12345, q - 1] {
                assert_eq!(m.mul(a, m.inv(a).unwrap()), 1);
            }
            assert_eq!(m.inv(0), None);
            assert_eq!(m.center(q - 1), -1);
            assert_eq!(m.center(1), 1);
        }
    }
}
