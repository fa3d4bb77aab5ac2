//! Hybrid key switching (Han–Ki): decompose into digits, raise each digit to Q_l ∪ P, take the
//! inner product with the switching key, and divide by P. The decomposition can be reused for
//! many automorphisms of the same polynomial (hoisting).

use std::mem::MaybeUninit;

use super::context::RlweContext;
use super::keys::SwitchingKey;
use crate::ring::{Poly, for_each_limb_heavy, for_each_limb_pair_heavy, limbwise};

/// A polynomial at level `level` decomposed into digits, each raised to Q_l ∪ P (NTT domain).
#[derive(Debug, Clone)]
pub struct Decomposition {
    level: usize,
    digits: Vec<Poly>,
}

impl Decomposition {
    pub fn level(&self) -> usize {
        self.level
    }

    /// The same decomposition after X ↦ X^g: every digit permuted in the NTT domain.
    pub fn automorphism(&self, ctx: &RlweContext, g: u64) -> Decomposition {
        let basis = ctx.qp_basis(self.level);
        let digits = self
            .digits
            .iter()
            .map(|d| ctx.ring().automorphism_ntt(d, g, basis))
            .collect();
        Decomposition {
            level: self.level,
            digits,
        }
    }
}

/// Why a key switch cannot run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeySwitchError {
    #[error("these parameters have no special primes P, so key switching is unavailable")]
    NoSpecialPrimes,
    #[error("the switching key was made for other parameters")]
    ForeignKey,
}

impl RlweContext {
    /// Decomposes `d` (NTT domain over Q_level) into raised digits.
    pub fn decompose(&self, d: &Poly, level: usize) -> Result<Decomposition, KeySwitchError> {
        if self.num_p() == 0 {
            return Err(KeySwitchError::NoSpecialPrimes);
        }
        let ring = self.ring();
        let n = ring.n();
        let qb = self.q_basis(level);
        let qpb = self.qp_basis(level);
        let mut dc = d.clone();
        // the division by N happens in `prepare`, in the pass it makes anyway
        ring.intt_unnormalized(&mut dc, qb);
        let mut digits = Vec::with_capacity(self.digits().len());
        for range in self.digits() {
            let range = range.start..range.end.min(level);
            if range.is_empty() {
                break;
            }
            let ext = self.extender_from_digit(range.clone());
            let src: Vec<&[u64]> = range.clone().map(|i| dc.limb(i)).collect();
            let y = ext.prepare(ring, &src, true);
            let mut out = Poly::zero(n, qpb.len());
            for_each_limb_heavy(out.data_mut(), n, |pos, limb| {
                let idx = qpb[pos];
                if range.contains(&idx) {
                    // the digit's own limbs are d itself, already in the NTT domain
                    limb.copy_from_slice(d.limb(idx));
                } else {
                    ext.extend_limb(ring, &y, idx, limb);
                    ring.ntt_limb(limb, idx);
                }
            });
            digits.push(out);
        }
        Ok(Decomposition { level, digits })
    }

    /// Σ_j digit_j ⊙ (b_j, a_j) over Q_l ∪ P, with one modular reduction per coefficient
    /// (products are summed lazily in 128 bits). Both components are made in one pass over
    /// each limb, so the digits are read once.
    pub fn inner_product(
        &self,
        dec: &Decomposition,
        key: &SwitchingKey,
    ) -> Result<(Poly, Poly), KeySwitchError> {
        if &key.fingerprint != self.fingerprint() {
            return Err(KeySwitchError::ForeignKey);
        }
        let ring = self.ring();
        let n = ring.n();
        let qpb = self.qp_basis(dec.level);
        let width = qpb.len();
        // SAFETY: `dot_lazy` writes every word of both outputs of each limb
        let (c0, c1) = unsafe {
            Poly::written_pair(n, width, |d0, d1| {
                for_each_limb_pair_heavy(d0, d1, n, |pos, o0, o1| {
                    let idx = qpb[pos];
                    let xs: Vec<&[u64]> = dec.digits.iter().map(|d| d.limb(pos)).collect();
                    let parts = &key.parts[..xs.len()];
                    let bs: Vec<&[u64]> = parts.iter().map(|(b, _)| b.limb(idx)).collect();
                    let as_: Vec<&[u64]> = parts.iter().map(|(_, a)| a.limb(idx)).collect();
                    dot_lazy(ring.modulus(idx), &xs, &bs, &as_, o0, o1);
                })
            })
        };
        Ok((c0, c1))
    }

    /// Divides a polynomial over Q_l ∪ P (NTT domain) by P, rounding, onto Q_l.
    pub fn mod_down(&self, mut x: Poly, level: usize) -> Poly {
        let ring = self.ring();
        let n = ring.n();
        let k = self.num_p();
        let l = self.max_level();
        let mut p_part = x.slice_limbs(level..level + k);
        ring.intt_unnormalized(&mut p_part, &self.key_basis()[l..l + k]);
        let from_p = self
            .extender_from_p()
            .expect("mod_down needs special primes");
        let p_limbs: Vec<&[u64]> = (0..k).map(|i| p_part.limb(i)).collect();
        let y = from_p.prepare(ring, &p_limbs, true);
        x.truncate(level);
        let p_inv = self.p_inv_mod_q();
        for_each_limb_heavy(x.data_mut(), n, |i, limb| {
            let mut e = vec![0u64; n];
            from_p.extend_limb(ring, &y, i, &mut e);
            ring.ntt_limb(&mut e, i);
            limbwise::sub_mul_const_assign(limb, &e, p_inv[i], ring.modulus(i));
        });
        x
    }

    /// (ks_0, ks_1) over Q_level with ks_0 + ks_1·s ≈ d·s' for the key from s' to s.
    pub fn key_switch(
        &self,
        d: &Poly,
        level: usize,
        key: &SwitchingKey,
    ) -> Result<(Poly, Poly), KeySwitchError> {
        let dec = self.decompose(d, level)?;
        self.key_switch_decomposed(&dec, key)
    }

    /// Key switching from an existing decomposition (hoisting).
    pub fn key_switch_decomposed(
        &self,
        dec: &Decomposition,
        key: &SwitchingKey,
    ) -> Result<(Poly, Poly), KeySwitchError> {
        let (p0, p1) = self.inner_product(dec, key)?;
        Ok((self.mod_down(p0, dec.level), self.mod_down(p1, dec.level)))
    }
}

/// [`dot_lazy_body`], compiled with BMI2 (mulx, and shifts by a register without the CL
/// juggling the reductions' variable shifts cost) where the level allows; in double precision
/// for primes below 2^51 at AVX2 ([`crate::ring::float_sums`]).
fn dot_lazy(
    m: &crate::ring::Modulus,
    xs: &[&[u64]],
    bs: &[&[u64]],
    as_: &[&[u64]],
    o0: &mut [MaybeUninit<u64>],
    o1: &mut [MaybeUninit<u64>],
) {
    #[cfg(target_arch = "x86_64")]
    if crate::ring::float_sums::usable(m.bits()) {
        return crate::ring::float_sums::dot_pairs(m, xs, bs, as_, o0, o1);
    }
    #[cfg(target_arch = "x86_64")]
    if crate::simd::level() >= crate::simd::Level::Avx2 {
        #[target_feature(enable = "avx2,bmi2")]
        unsafe fn bmi2(
            m: &crate::ring::Modulus,
            xs: &[&[u64]],
            bs: &[&[u64]],
            as_: &[&[u64]],
            o0: &mut [MaybeUninit<u64>],
            o1: &mut [MaybeUninit<u64>],
        ) {
            dot_lazy_body(m, xs, bs, as_, o0, o1)
        }
        // SAFETY: the level includes AVX2 and BMI2 (simd::Level::Avx2).
        return unsafe { bmi2(m, xs, bs, as_, o0, o1) };
    }
    dot_lazy_body(m, xs, bs, as_, o0, o1)
}

/// o0[k] = Σ_j xs[j][k]·bs[j][k] mod m and o1[k] = Σ_j xs[j][k]·as[j][k] mod m (every word of
/// both written; none read), summing
/// 128-bit products and reducing once (every 15 products at most). Up to three digits (primes
/// below 2^61) get straight-line loops and the cheaper reduction of short sums.
#[inline(always)]
fn dot_lazy_body(
    m: &crate::ring::Modulus,
    xs: &[&[u64]],
    bs: &[&[u64]],
    as_: &[&[u64]],
    o0: &mut [MaybeUninit<u64>],
    o1: &mut [MaybeUninit<u64>],
) {
    let p = |a: u64, b: u64| a as u128 * b as u128;
    let n = o0.len();
    let short = m.bits() <= 61;
    match (xs, bs, as_) {
        ([x0], [b0], [a0]) => {
            for k in 0..n {
                o0[k].write(m.mul(x0[k], b0[k]));
                o1[k].write(m.mul(x0[k], a0[k]));
            }
        }
        // one output at a time: four input streams stay in registers (both at once spill)
        ([x0, x1], [b0, b1], [a0, a1]) if short => {
            let (x0, x1) = (&x0[..n], &x1[..n]);
            for (ks, out) in [
                ((&b0[..n], &b1[..n]), &mut *o0),
                ((&a0[..n], &a1[..n]), &mut *o1),
            ] {
                let (k0, k1) = ks;
                for k in 0..n {
                    out[k].write(m.reduce_sum3(p(x0[k], k0[k]) + p(x1[k], k1[k])));
                }
            }
        }
        ([x0, x1, x2], [b0, b1, b2], [a0, a1, a2]) if short => {
            let (x0, x1, x2) = (&x0[..n], &x1[..n], &x2[..n]);
            for (ks, out) in [
                ((&b0[..n], &b1[..n], &b2[..n]), &mut *o0),
                ((&a0[..n], &a1[..n], &a2[..n]), &mut *o1),
            ] {
                let (k0, k1, k2) = ks;
                for k in 0..n {
                    out[k]
                        .write(m.reduce_sum3(p(x0[k], k0[k]) + p(x1[k], k1[k]) + p(x2[k], k2[k])));
                }
            }
        }
        _ => {
            for (ks, out) in [(bs, &mut *o0), (as_, &mut *o1)] {
                for (k, o) in out.iter_mut().enumerate() {
                    let mut acc = 0u128;
                    for (j, (x, y)) in xs.iter().zip(ks.iter()).enumerate() {
                        acc += p(x[k], y[k]);
                        if j % 15 == 14 {
                            acc = m.reduce_u128(acc) as u128;
                        }
                    }
                    o.write(m.reduce_u128(acc));
                }
            }
        }
    }
}
