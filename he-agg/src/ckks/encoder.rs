//! Encoding by the canonical embedding: N/2 complex slots per plaintext, or N real values by
//! packing pairs of reals into one complex slot (for real-valued data such as model updates).

use crate::ring::{Modulus, Poly, for_each_limb};
use crate::rlwe::Plaintext;

use super::context::CkksContext;
use super::error::CkksError;
use super::fft::Complex;

impl CkksContext {
    /// Encodes up to N/2 complex values (missing slots are zero), NTT domain.
    pub fn encode(
        &self,
        values: &[Complex],
        level: usize,
        scale: f64,
    ) -> Result<Plaintext, CkksError> {
        let mut pt = self.encode_coeffs(values, level, scale)?;
        self.rlwe()
            .ring()
            .ntt(&mut pt.poly, self.rlwe().q_basis(level));
        pt.is_ntt = true;
        Ok(pt)
    }

    /// Encodes up to N/2 real values, one per slot (imaginary parts zero), NTT domain.
    pub fn encode_reals(
        &self,
        values: &[f64],
        level: usize,
        scale: f64,
    ) -> Result<Plaintext, CkksError> {
        let v: Vec<Complex> = values.iter().map(|&x| Complex::new(x, 0.0)).collect();
        self.encode(&v, level, scale)
    }

    /// Encodes up to N real values, two per slot: value i goes to the real part of slot i for
    /// i < N/2 and to the imaginary part of slot i − N/2 otherwise. Additions and multiplications
    /// by real constants act on every value; slot-wise products do not (use
    /// [`CkksContext::encode_reals`] for those). Coefficient form, ready for fused encryption.
    pub fn encode_real_pairs(
        &self,
        values: &[f64],
        level: usize,
        scale: f64,
    ) -> Result<Plaintext, CkksError> {
        let slots = self.slots();
        if values.len() > 2 * slots {
            return Err(CkksError::TooManyValues {
                got: values.len(),
                slots: 2 * slots,
            });
        }
        let mut re = vec![0f64; slots];
        let mut im = vec![0f64; slots];
        let (first, second) = values.split_at(values.len().min(slots));
        re[..first.len()].copy_from_slice(first);
        im[..second.len()].copy_from_slice(second);
        self.encode_split(re, im, level, scale)
    }

    /// Encodes up to N/2 complex values into a coefficient-form plaintext.
    pub fn encode_coeffs(
        &self,
        values: &[Complex],
        level: usize,
        scale: f64,
    ) -> Result<Plaintext, CkksError> {
        let slots = self.slots();
        if values.len() > slots {
            return Err(CkksError::TooManyValues {
                got: values.len(),
                slots,
            });
        }
        let mut re = vec![0f64; slots];
        let mut im = vec![0f64; slots];
        for (i, z) in values.iter().enumerate() {
            re[i] = z.re;
            im[i] = z.im;
        }
        self.encode_split(re, im, level, scale)
    }

    /// Encodes slot values given as separate real and imaginary arrays of N/2 each.
    fn encode_split(
        &self,
        mut re: Vec<f64>,
        mut im: Vec<f64>,
        level: usize,
        scale: f64,
    ) -> Result<Plaintext, CkksError> {
        self.check_level(level)?;
        if !(scale.is_finite() && scale >= 1.0) {
            return Err(CkksError::BadScale(scale));
        }
        if let Some(index) = re
            .iter()
            .zip(&im)
            .position(|(a, b)| !(a.is_finite() && b.is_finite()))
        {
            return Err(CkksError::NotFinite { index });
        }
        self.fft.inverse_to_bit_reversed(&mut re, &mut im);
        // coefficient i is the real part of value i, coefficient i + N/2 its imaginary part;
        // the FFT's output permutation and 1/slots factor are applied here, in the same pass
        let mut coeffs = vec![0f64; self.n()];
        let (lo, hi) = coeffs.split_at_mut(self.slots());
        let max_abs = gather_scale_round(
            self.fft.bit_reverse(),
            &re,
            &im,
            scale / self.slots() as f64,
            lo,
            hi,
        );
        let log_q = self.log_q(level);
        if max_abs > 0.0 && max_abs.log2() >= log_q - 1.0 {
            return Err(CkksError::Overflow {
                bits: max_abs.log2(),
                level,
                log_q,
            });
        }
        let rlwe = self.rlwe();
        let basis = rlwe.q_basis(level);
        let n = self.n();
        let poly = if max_abs < 9.2e18 {
            rlwe.ring().from_signed(&to_i64(&coeffs), basis)
        } else {
            let mut poly = Poly::zero(n, level);
            for_each_limb(poly.data_mut(), n, |i, limb| {
                reduce_f64_limb(rlwe.q_modulus(basis[i]), &coeffs, limb);
            });
            poly
        };
        Ok(Plaintext {
            poly,
            scale,
            is_ntt: false,
        })
    }

    /// The slots as separate real and imaginary arrays.
    fn decode_split(&self, pt: &Plaintext) -> Result<(Vec<f64>, Vec<f64>), CkksError> {
        self.check_level(pt.level())?;
        let coeffs = self.lift_coefficients(pt);
        let slots = self.slots();
        let (mut re, mut im) = (vec![0f64; slots], vec![0f64; slots]);
        // the FFT's input permutation and the division by the scale, in one pass
        scatter_scale(
            self.fft.bit_reverse(),
            &coeffs[..slots],
            &coeffs[slots..],
            1.0 / pt.scale,
            &mut re,
            &mut im,
        );
        self.fft.forward_from_bit_reversed(&mut re, &mut im);
        Ok((re, im))
    }

    /// Decodes all N/2 slots.
    pub fn decode(&self, pt: &Plaintext) -> Result<Vec<Complex>, CkksError> {
        let (re, im) = self.decode_split(pt)?;
        Ok(re
            .into_iter()
            .zip(im)
            .map(|(a, b)| Complex::new(a, b))
            .collect())
    }

    /// Decodes the real parts of all N/2 slots.
    pub fn decode_reals(&self, pt: &Plaintext) -> Result<Vec<f64>, CkksError> {
        Ok(self.decode_split(pt)?.0)
    }

    /// Decodes the N reals of [`CkksContext::encode_real_pairs`].
    pub fn decode_real_pairs(&self, pt: &Plaintext) -> Result<Vec<f64>, CkksError> {
        let (mut re, mut im) = self.decode_split(pt)?;
        re.append(&mut im);
        Ok(re)
    }

    /// The centred integer coefficients of a plaintext, as floats (exact below 2^53, correctly
    /// rounded beyond).
    pub fn lift_coefficients(&self, pt: &Plaintext) -> Vec<f64> {
        let rlwe = self.rlwe();
        let level = pt.level();
        let basis = rlwe.q_basis(level);
        let owned;
        let (poly, unnormalized) = if pt.is_ntt {
            let mut p = pt.poly.clone();
            rlwe.ring().intt_unnormalized(&mut p, basis);
            owned = p;
            (&owned, 1)
        } else {
            (&pt.poly, 0)
        };
        let crt = self.crt[level]
            .as_ref()
            .expect("CRT tables exist for every level");
        let f = &crt.factor[unnormalized];
        let moduli: Vec<Modulus> = (0..level).map(|i| *rlwe.q_modulus(i)).collect();
        let limbs: Vec<&[u64]> = (0..level).map(|i| poly.limb(i)).collect();
        match level {
            1 => {
                let m = moduli[0];
                limbs[0]
                    .iter()
                    .map(|&x| m.center(m.mul_shoup(x, f[0])) as f64)
                    .collect()
            }
            2 => {
                let mut out = vec![0f64; self.n()];
                lift_two_limbs(
                    &moduli,
                    [f[0], f[1]],
                    [crt.q_inv[0], crt.q_inv[1]],
                    limbs[0],
                    limbs[1],
                    &mut out,
                );
                out
            }
            _ => {
                let mut out = vec![0f64; self.n()];
                let lift = Lift {
                    moduli: &moduli,
                    factor: f,
                    crt,
                    limbs: &limbs,
                };
                // fixed sizes let the compiler unroll the word arithmetic
                match (level, crt.words) {
                    (3, 2) => lift.run::<3, 2>(&mut out),
                    (3, 3) => lift.run::<3, 3>(&mut out),
                    (4, 3) => lift.run::<4, 3>(&mut out),
                    (4, 4) => lift.run::<4, 4>(&mut out),
                    (_, 2..=4) => lift.run::<0, 4>(&mut out),
                    (_, 5..=8) => lift.run::<0, 8>(&mut out),
                    (_, 9..=16) => lift.run::<0, 16>(&mut out),
                    _ => lift.run::<0, 64>(&mut out),
                }
                out
            }
        }
    }
}

/// The CRT lift for three limbs or more, in W-word integer arithmetic on the stack; L is the
/// number of limbs when known at compile time (0: read it at run time).
struct Lift<'a> {
    moduli: &'a [Modulus],
    factor: &'a [crate::ring::ShoupConst],
    crt: &'a super::context::CrtLift,
    limbs: &'a [&'a [u64]],
}

impl Lift<'_> {
    fn run<const L: usize, const W: usize>(&self, out: &mut [f64]) {
        #[cfg(target_arch = "x86_64")]
        if crate::simd::has_avx2_fma() {
            // SAFETY: the CPU supports the features `run_avx2` is compiled for.
            unsafe { self.run_avx2::<L, W>(out) };
            return;
        }
        self.run_generic::<L, W>(out);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2<const L: usize, const W: usize>(&self, out: &mut [f64]) {
        self.run_generic::<L, W>(out);
    }

    #[inline(always)]
    #[allow(clippy::needless_range_loop)] // y, the limbs and the constants share the index
    fn run_generic<const L: usize, const W: usize>(&self, out: &mut [f64]) {
        let level = if L > 0 { L } else { self.moduli.len() };
        let words = if L > 0 { W } else { self.crt.words };
        debug_assert!(words <= W);
        let mut y = [0u64; 64];
        for (k, o) in out.iter_mut().enumerate() {
            let mut frac = 0f64;
            for i in 0..level {
                y[i] = self.moduli[i].mul_shoup(self.limbs[i][k], self.factor[i]);
                frac += y[i] as f64 * self.crt.q_inv[i];
            }
            // Σ y_i·Q/q_i = x + v·Q, v the nearest integer to Σ y_i/q_i (exact enough: |x|/Q
            // is far from 1/2 for any decryptable value)
            let v = frac.round_ties_even() as u64;
            let mut acc = [0u64; W];
            for i in 0..level {
                mul_add_words(&mut acc[..words], &self.crt.punctured[i], y[i]);
            }
            sub_mul_words(&mut acc[..words], &self.crt.q, v);
            *o = signed_words_to_f64(&acc[..words]);
        }
    }
}

crate::simd::dispatch! {
    /// lo[i] = round(re[rev(i)]·scale), hi[i] = round(im[rev(i)]·scale); returns the largest
    /// magnitude.
    fn gather_scale_round(rev: &[u32], re: &[f64], im: &[f64], scale: f64, lo: &mut [f64], hi: &mut [f64]) -> f64 {
        let mut max_abs = 0f64;
        for ((l, h), &j) in lo.iter_mut().zip(hi.iter_mut()).zip(rev) {
            *l = (re[j as usize] * scale).round_ties_even();
            *h = (im[j as usize] * scale).round_ties_even();
            max_abs = max_abs.max(l.abs()).max(h.abs());
        }
        max_abs
    }
}

crate::simd::dispatch! {
    /// re[rev(i)] = lo[i]·scale, im[rev(i)] = hi[i]·scale.
    fn scatter_scale(rev: &[u32], lo: &[f64], hi: &[f64], scale: f64, re: &mut [f64], im: &mut [f64]) {
        for ((&l, &h), &j) in lo.iter().zip(hi).zip(rev) {
            re[j as usize] = l * scale;
            im[j as usize] = h * scale;
        }
    }
}

crate::simd::dispatch! {
    /// Integer-valued floats below 2^63 as integers.
    fn to_i64(coeffs: &[f64]) -> Vec<i64> {
        coeffs.iter().map(|&c| c as i64).collect()
    }
}

crate::simd::dispatch! {
    /// The centred values of residues modulo two primes: x = y_0·q_1 + y_1·q_0 − v·Q with
    /// y_i = a_i·f_i mod q_i and v = round(y_0/q_0 + y_1/q_1) ∈ {0, 1, 2}; |x| < 2^126.
    fn lift_two_limbs(moduli: &[Modulus], f: [crate::ring::ShoupConst; 2], q_inv: [f64; 2], a0: &[u64], a1: &[u64], out: &mut [f64]) {
        let (m0, m1) = (moduli[0], moduli[1]);
        let (q0, q1) = (m0.value(), m1.value());
        let q = q0 as u128 * q1 as u128;
        for ((o, &x0), &x1) in out.iter_mut().zip(a0).zip(a1) {
            let y0 = m0.mul_shoup(x0, f[0]);
            let y1 = m1.mul_shoup(x1, f[1]);
            // f64 → u64 is one instruction, f64 → u128 a library call
            let v = (y0 as f64 * q_inv[0] + y1 as f64 * q_inv[1]).round_ties_even() as u64;
            let vq = q * u128::from(v & 1) + (q << 1) * u128::from(v >> 1);
            let x = (y0 as u128 * q1 as u128 + y1 as u128 * q0 as u128).wrapping_sub(vq) as i128;
            // i128 → f64 is a library call; convert the magnitude word by word (no cancellation)
            let a = x.unsigned_abs();
            let mag = (a >> 64) as u64 as f64 * 18446744073709551616.0 + a as u64 as f64;
            *o = if x < 0 { -mag } else { mag };
        }
    }
}

/// acc += a·m (wrapping, fixed width).
fn mul_add_words(acc: &mut [u64], a: &[u64], m: u64) {
    let mut carry = 0u128;
    for (w, &x) in acc.iter_mut().zip(a) {
        let t = *w as u128 + x as u128 * m as u128 + carry;
        *w = t as u64;
        carry = t >> 64;
    }
}

/// acc −= a·m (wrapping, fixed width).
fn sub_mul_words(acc: &mut [u64], a: &[u64], m: u64) {
    let (mut carry, mut borrow) = (0u128, false);
    for (w, &x) in acc.iter_mut().zip(a) {
        let t = x as u128 * m as u128 + carry;
        carry = t >> 64;
        let (d1, b1) = w.overflowing_sub(t as u64);
        let (d2, b2) = d1.overflowing_sub(u64::from(borrow));
        *w = d2;
        borrow = b1 || b2;
    }
}

/// A two's-complement little-endian integer as a float.
fn signed_words_to_f64(w: &[u64]) -> f64 {
    let negative = w.last().is_some_and(|&top| top >> 63 == 1);
    // magnitude of a negative value: its bitwise complement plus one, word by word
    let mut carry = u64::from(negative);
    let mut v = 0f64;
    let mut scale = 1f64;
    for &x in w {
        let word = if negative { !x } else { x };
        let (s, c) = word.overflowing_add(carry);
        carry = u64::from(c);
        v += s as f64 * scale;
        scale *= 18446744073709551616.0;
    }
    if negative { -v } else { v }
}

/// An integer-valued float (any magnitude) modulo q: mantissa·2^exponent.
pub(crate) fn reduce_f64(m: &Modulus, c: f64) -> u64 {
    if c.abs() < 9.2e18 {
        return m.reduce_i64(c as i64);
    }
    let (mantissa, exponent) = split_large(c);
    // |c| ≥ 2^63 so the exponent is positive; below 2^127 the integer fits a u128 (one
    // Barrett reduction — the power of two by squarings cost a dozen products a coefficient,
    // most of an update's encryption at the aggregation scale 2^82)
    let r = if exponent <= 127 - 53 {
        m.reduce_u128(u128::from(mantissa) << exponent)
    } else {
        m.mul(m.reduce(mantissa), m.pow(2, exponent as u64))
    };
    if c < 0.0 { m.neg(r) } else { r }
}

/// |c| = mantissa·2^exponent for a finite |c| ≥ 2^53 (53-bit mantissa, positive exponent).
fn split_large(c: f64) -> (u64, i64) {
    let bits = c.abs().to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i64 - 1075;
    ((bits & ((1 << 52) - 1)) | (1 << 52), exponent)
}

/// Exponents of the powers of two [`reduce_f64_limb`] tabulates: every |c| below 2^127.
const POW2_TABLE: usize = 127 - 53 + 1;

/// [`reduce_f64`] of every coefficient into one limb. A large coefficient is mantissa·2^e with
/// e ≤ 74 below 2^127, so 2^e mod q comes from a table of Shoup constants: one product per
/// coefficient instead of a 128-bit reduction (at the scale 2^90 of mode (a) the reduction was
/// a tenth of a keyholder's evaluation of a ResNet, which encodes most segments per request).
pub(crate) fn reduce_f64_limb(m: &Modulus, coeffs: &[f64], out: &mut [u64]) {
    let mut pows = [crate::ring::ShoupConst::default(); POW2_TABLE];
    let mut p = m.reduce(1);
    for slot in pows.iter_mut() {
        *slot = m.shoup(p);
        p = m.add(p, p);
    }
    for (o, &c) in out.iter_mut().zip(coeffs) {
        if c.abs() < 9.2e18 {
            *o = m.reduce_i64(c as i64);
            continue;
        }
        let (mantissa, exponent) = split_large(c);
        // |c| ≥ 2^63: the exponent is at least 11; past the table (or not finite), the general way
        let Some(&pow) = pows.get(exponent as usize) else {
            *o = reduce_f64(m, c);
            continue;
        };
        // Shoup's product takes any multiplicand below 2^64: the 53-bit mantissa as it is
        let r = m.mul_shoup(mantissa, pow);
        *o = if c < 0.0 { m.neg(r) } else { r };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limb_of_floats_reduces_as_each_float_does() {
        // 30- to 61-bit moduli (every prime size a plan takes), coefficients from 0 to past 2^127
        for q in [
            (1u64 << 30) - 35,
            (1 << 45) - 229,
            (1 << 49) - 81,
            (1 << 51) - 129,
            (1 << 59) - 55,
            1152921504606830593,
        ] {
            let m = Modulus::new(q);
            let mut x = 0x2545_f491_4f6c_dd1du64;
            let mut coeffs = vec![0.0, -0.0, 1.0, -1.0, 9.2e18, -9.2e18, 2f64.powi(63)];
            for e in [63, 64, 90, 100, 126] {
                coeffs.push(2f64.powi(e));
                coeffs.push(-(2f64.powi(e + 1) - 2f64.powi(e - 52)));
            }
            coeffs.extend([2f64.powi(127), -2f64.powi(127), 2f64.powi(200)]);
            for _ in 0..4000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // exponents spread over 2^0 … 2^130, both signs, full mantissas
                let e = (x % 131) as i32;
                let mantissa = (x >> 11) as f64 / (1u64 << 53) as f64 + 0.5;
                let c = (mantissa * 2f64.powi(e)).round();
                coeffs.push(if x & 1 == 0 { c } else { -c });
            }
            let mut out = vec![0u64; coeffs.len()];
            reduce_f64_limb(&m, &coeffs, &mut out);
            for (c, o) in coeffs.iter().zip(&out) {
                assert_eq!(*o, reduce_f64(&m, *c), "{c:e} mod {q}");
            }
        }
    }

    #[test]
    fn large_floats_reduce_exactly() {
        let m = Modulus::new(1152921504606830593);
        for &(c, exact) in &[
            (2f64.powi(70), 1u128 << 70),
            (
                -(2f64.powi(126) + 2f64.powi(90)),
                (1u128 << 126) + (1u128 << 90),
            ),
            (
                2f64.powi(127) - 2f64.powi(74),
                (1u128 << 127) - (1u128 << 74),
            ),
            (
                -(2f64.powi(100) + 2f64.powi(60)),
                (1u128 << 100) + (1u128 << 60),
            ),
        ] {
            let want = (exact % m.value() as u128) as u64;
            let want = if c < 0.0 { m.neg(want) } else { want };
            assert_eq!(reduce_f64(&m, c), want);
        }
        assert_eq!(reduce_f64(&m, -5.0), m.value() - 5);
        // beyond a u128: the power of two by squarings
        assert_eq!(reduce_f64(&m, 2f64.powi(200)), m.pow(2, 200));
        // every exponent of the u128 path against mantissa·2^e mod q
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for e in 11..=74u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mantissa = (x >> 11) | (1 << 52);
            let c = mantissa as f64 * 2f64.powi(e as i32);
            let want = m.mul(m.reduce(mantissa), m.pow(2, e));
            assert_eq!(reduce_f64(&m, c), want, "2^{e}");
            assert_eq!(reduce_f64(&m, -c), m.neg(want), "-2^{e}");
        }
    }
}
