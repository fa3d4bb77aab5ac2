//! Homomorphic operations on CKKS ciphertexts, with scale tracking: operands whose scales differ
//! are refused; operands at different levels meet at the lower one.

use std::borrow::Cow;
use std::sync::Arc;

use crate::ring::{Poly, for_each_limb, for_each_limb_heavy, limbwise};
use crate::rlwe::{Ciphertext, GaloisKeys, Plaintext, RelinearizationKey};

use super::context::CkksContext;
use super::error::CkksError;
use super::fft::Complex;

/// Relative difference under which two scales count as equal (float rounding of the same
/// sequence of operations gives bit-identical scales; this only absorbs re-association).
const SCALE_TOLERANCE: f64 = 1e-9;

/// Evaluates operations on ciphertexts of one context, with the keys it was given.
#[derive(Debug, Clone)]
pub struct Evaluator {
    pub(super) ctx: Arc<CkksContext>,
    rlk: Option<Arc<RelinearizationKey>>,
    pub(super) galois: Option<Arc<GaloisKeys>>,
}

impl Evaluator {
    pub fn new(
        ctx: &Arc<CkksContext>,
        rlk: Option<&RelinearizationKey>,
        galois: Option<&GaloisKeys>,
    ) -> Result<Self, CkksError> {
        if rlk.is_some_and(|k| k.0.fingerprint() != ctx.fingerprint()) {
            return Err(CkksError::ForeignKey {
                what: "relinearization key",
            });
        }
        if let Some(g) = galois {
            for e in g.elements() {
                if g.get(e)
                    .is_some_and(|k| k.key.fingerprint() != ctx.fingerprint())
                {
                    return Err(CkksError::ForeignKey { what: "Galois key" });
                }
            }
        }
        Ok(Self {
            ctx: ctx.clone(),
            rlk: rlk.map(|k| Arc::new(k.clone())),
            galois: galois.map(|g| Arc::new(g.clone())),
        })
    }

    pub fn context(&self) -> &Arc<CkksContext> {
        &self.ctx
    }

    pub(super) fn basis(&self, level: usize) -> &[usize] {
        self.ctx.rlwe().q_basis(level)
    }

    pub(super) fn check_scales(a: f64, b: f64) -> Result<(), CkksError> {
        if (a - b).abs() <= SCALE_TOLERANCE * a.abs().max(b.abs()) {
            Ok(())
        } else {
            Err(CkksError::ScaleMismatch {
                a: a.log2(),
                b: b.log2(),
            })
        }
    }

    pub(super) fn check_ct(&self, ct: &Ciphertext) -> Result<(), CkksError> {
        self.ctx.check_level(ct.level())?;
        if ct.parts.len() < 2
            || ct
                .parts
                .iter()
                .any(|p| p.n() != self.ctx.n() || p.limbs() != ct.level())
        {
            return Err(CkksError::Degree {
                got: ct.parts.len().saturating_sub(1),
                want: 1,
            });
        }
        Ok(())
    }

    /// The ciphertext restricted to `level` moduli (a view when it already is there).
    fn at_level<'a>(ct: &'a Ciphertext, level: usize) -> Cow<'a, Ciphertext> {
        if ct.level() == level {
            Cow::Borrowed(ct)
        } else {
            Cow::Owned(Ciphertext {
                parts: ct.parts.iter().map(|p| p.slice_limbs(0..level)).collect(),
                scale: ct.scale,
            })
        }
    }

    fn plain_at_level<'a>(
        &self,
        pt: &'a Plaintext,
        level: usize,
    ) -> Result<Cow<'a, Poly>, CkksError> {
        if pt.level() < level {
            return Err(CkksError::Level {
                level: pt.level(),
                max: level,
            });
        }
        if pt.is_ntt {
            Ok(if pt.level() == level {
                Cow::Borrowed(&pt.poly)
            } else {
                Cow::Owned(pt.poly.slice_limbs(0..level))
            })
        } else {
            let mut p = pt.poly.slice_limbs(0..level);
            self.ctx.rlwe().ring().ntt(&mut p, self.basis(level));
            Ok(Cow::Owned(p))
        }
    }

    /// a + b.
    pub fn add(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext, CkksError> {
        self.combine(a, b, false)
    }

    /// a − b.
    pub fn sub(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext, CkksError> {
        self.combine(a, b, true)
    }

    fn combine(
        &self,
        a: &Ciphertext,
        b: &Ciphertext,
        subtract: bool,
    ) -> Result<Ciphertext, CkksError> {
        self.check_ct(a)?;
        self.check_ct(b)?;
        Self::check_scales(a.scale, b.scale)?;
        let level = a.level().min(b.level());
        let (a, b) = (Self::at_level(a, level), Self::at_level(b, level));
        let basis = self.basis(level);
        let ring = self.ctx.rlwe().ring();
        let parts = (0..a.parts.len().max(b.parts.len()))
            .map(|i| match (a.parts.get(i), b.parts.get(i)) {
                (Some(x), Some(y)) if subtract => ring.sub(x, y, basis),
                (Some(x), Some(y)) => ring.add(x, y, basis),
                (Some(x), None) => x.clone(),
                (None, Some(y)) => {
                    let mut y = y.clone();
                    if subtract {
                        ring.neg_assign(&mut y, basis);
                    }
                    y
                }
                (None, None) => unreachable!("index below the longer length"),
            })
            .collect();
        Ok(Ciphertext {
            parts,
            scale: a.scale,
        })
    }

    /// a += b in place (b at a level ≥ a's).
    pub fn add_assign(&self, a: &mut Ciphertext, b: &Ciphertext) -> Result<(), CkksError> {
        self.check_ct(a)?;
        self.check_ct(b)?;
        Self::check_scales(a.scale, b.scale)?;
        if b.level() < a.level() || b.parts.len() > a.parts.len() {
            *a = self.add(a, b)?;
            return Ok(());
        }
        let basis = self.basis(a.level());
        let ring = self.ctx.rlwe().ring();
        let level = a.level();
        for (x, y) in a.parts.iter_mut().zip(&b.parts) {
            let y = if y.limbs() == level {
                Cow::Borrowed(y)
            } else {
                Cow::Owned(y.slice_limbs(0..level))
            };
            ring.add_assign(x, &y, basis);
        }
        Ok(())
    }

    /// −a.
    pub fn neg(&self, a: &Ciphertext) -> Result<Ciphertext, CkksError> {
        self.check_ct(a)?;
        let mut out = a.clone();
        let basis = self.basis(a.level());
        for p in out.parts.iter_mut() {
            self.ctx.rlwe().ring().neg_assign(p, basis);
        }
        Ok(out)
    }

    /// a + pt (same scale).
    pub fn add_plain(&self, a: &Ciphertext, pt: &Plaintext) -> Result<Ciphertext, CkksError> {
        self.check_ct(a)?;
        Self::check_scales(a.scale, pt.scale)?;
        let p = self.plain_at_level(pt, a.level())?;
        let mut out = a.clone();
        self.ctx
            .rlwe()
            .ring()
            .add_assign(&mut out.parts[0], &p, self.basis(a.level()));
        Ok(out)
    }

    /// a − pt (same scale).
    pub fn sub_plain(&self, a: &Ciphertext, pt: &Plaintext) -> Result<Ciphertext, CkksError> {
        self.check_ct(a)?;
        Self::check_scales(a.scale, pt.scale)?;
        let p = self.plain_at_level(pt, a.level())?;
        let mut out = a.clone();
        self.ctx
            .rlwe()
            .ring()
            .sub_assign(&mut out.parts[0], &p, self.basis(a.level()));
        Ok(out)
    }

    /// a ⊙ pt slot-wise; the scales multiply (rescale afterwards).
    pub fn mul_plain(&self, a: &Ciphertext, pt: &Plaintext) -> Result<Ciphertext, CkksError> {
        self.check_ct(a)?;
        let p = self.plain_at_level(pt, a.level())?;
        let basis = self.basis(a.level());
        let ring = self.ctx.rlwe().ring();
        let parts = a.parts.iter().map(|c| ring.mul(c, &p, basis)).collect();
        Ok(Ciphertext {
            parts,
            scale: a.scale * pt.scale,
        })
    }

    /// a + c in every slot (c encoded at a's scale: real part as the constant term, imaginary
    /// part on X^(N/2), which evaluates to i at every slot).
    pub fn add_const(&self, a: &Ciphertext, c: Complex) -> Result<Ciphertext, CkksError> {
        self.check_ct(a)?;
        if !(c.re.is_finite() && c.im.is_finite()) {
            return Err(CkksError::NotFinite { index: 0 });
        }
        let level = a.level();
        let basis = self.basis(level);
        let ring = self.ctx.rlwe().ring();
        let n = self.ctx.n();
        let mut coeffs = vec![0f64; n];
        coeffs[0] = (c.re * a.scale).round();
        coeffs[n / 2] = (c.im * a.scale).round();
        let mut poly = Poly::zero(n, level);
        let rlwe = self.ctx.rlwe();
        for_each_limb(poly.data_mut(), n, |i, limb| {
            let m = rlwe.q_modulus(basis[i]);
            limb[0] = super::encoder::reduce_f64(m, coeffs[0]);
            limb[n / 2] = super::encoder::reduce_f64(m, coeffs[n / 2]);
        });
        ring.ntt(&mut poly, basis);
        let mut out = a.clone();
        ring.add_assign(&mut out.parts[0], &poly, basis);
        Ok(out)
    }

    /// a · c for a real constant c encoded at `const_scale`; the scales multiply.
    pub fn mul_const(
        &self,
        a: &Ciphertext,
        c: f64,
        const_scale: f64,
    ) -> Result<Ciphertext, CkksError> {
        self.check_ct(a)?;
        if !c.is_finite() {
            return Err(CkksError::NotFinite { index: 0 });
        }
        if !(const_scale.is_finite() && const_scale >= 1.0) {
            return Err(CkksError::BadScale(const_scale));
        }
        let level = a.level();
        let basis = self.basis(level);
        let v = (c * const_scale).round();
        let rlwe = self.ctx.rlwe();
        let consts: Vec<u64> = basis
            .iter()
            .map(|&i| super::encoder::reduce_f64(rlwe.q_modulus(i), v))
            .collect();
        let mut out = a.clone();
        for p in out.parts.iter_mut() {
            rlwe.ring().mul_scalar_assign(p, &consts, basis);
        }
        out.scale = a.scale * const_scale;
        Ok(out)
    }

    /// a · k for an integer k, exactly; the scale is unchanged (sample-count weighting).
    pub fn mul_int(&self, a: &Ciphertext, k: i64) -> Result<Ciphertext, CkksError> {
        self.check_ct(a)?;
        let basis = self.basis(a.level());
        let rlwe = self.ctx.rlwe();
        let consts: Vec<u64> = basis
            .iter()
            .map(|&i| rlwe.q_modulus(i).reduce_i64(k))
            .collect();
        let mut out = a.clone();
        for p in out.parts.iter_mut() {
            rlwe.ring().mul_scalar_assign(p, &consts, basis);
        }
        Ok(out)
    }

    /// a ⊗ b without relinearization: a degree-2 ciphertext whose scale is the product.
    pub fn mul(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext, CkksError> {
        self.check_ct(a)?;
        self.check_ct(b)?;
        for ct in [a, b] {
            if ct.degree() != 1 {
                return Err(CkksError::Degree {
                    got: ct.degree(),
                    want: 1,
                });
            }
        }
        let level = a.level().min(b.level());
        let (a, b) = (Self::at_level(a, level), Self::at_level(b, level));
        let basis = self.basis(level);
        let ring = self.ctx.rlwe().ring();
        let n = self.ctx.n();
        // d0 = a0b0, d1 = a0b1 + a1b0 (one reduction), d2 = a1b1, each straight into its part
        let mut parts = [(); 3].map(|_| Poly::zero(n, level));
        for (which, part) in parts.iter_mut().enumerate() {
            for_each_limb_heavy(part.data_mut(), n, |i, limb| {
                let m = ring.modulus(basis[i]);
                let (a0, a1) = (a.parts[0].limb(i), a.parts[1].limb(i));
                let (b0, b1) = (b.parts[0].limb(i), b.parts[1].limb(i));
                match which {
                    0 => limbwise::mul(limb, a0, b0, m),
                    1 => limbwise::mul_sum2(limb, a0, b1, a1, b0, m),
                    _ => limbwise::mul(limb, a1, b1, m),
                }
            });
        }
        let [out, d1, d2] = parts;
        Ok(Ciphertext {
            parts: vec![out, d1, d2],
            scale: a.scale * b.scale,
        })
    }

    /// a² without relinearization.
    pub fn square(&self, a: &Ciphertext) -> Result<Ciphertext, CkksError> {
        self.mul(a, a)
    }

    /// Brings a degree-2 ciphertext back to degree 1 with the relinearization key.
    pub fn relinearize(&self, a: &Ciphertext) -> Result<Ciphertext, CkksError> {
        self.check_ct(a)?;
        if a.degree() == 1 {
            return Ok(a.clone());
        }
        if a.degree() != 2 {
            return Err(CkksError::Degree {
                got: a.degree(),
                want: 2,
            });
        }
        let rlk = self
            .rlk
            .as_ref()
            .ok_or(CkksError::MissingRelinearizationKey)?;
        let level = a.level();
        let (ks0, ks1) = self.ctx.rlwe().key_switch(&a.parts[2], level, &rlk.0)?;
        let ring = self.ctx.rlwe().ring();
        let basis = self.basis(level);
        let c0 = ring.add(&a.parts[0], &ks0, basis);
        let c1 = ring.add(&a.parts[1], &ks1, basis);
        Ok(Ciphertext {
            parts: vec![c0, c1],
            scale: a.scale,
        })
    }

    /// a ⊗ b, relinearized.
    pub fn mul_relin(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext, CkksError> {
        let prod = self.mul(a, b)?;
        self.relinearize(&prod)
    }

    /// Divides by the last modulus of the level: the level drops by one and the scale by q_last.
    pub fn rescale(&self, a: &Ciphertext) -> Result<Ciphertext, CkksError> {
        let mut out = a.clone();
        self.rescale_assign(&mut out)?;
        Ok(out)
    }

    pub fn rescale_assign(&self, a: &mut Ciphertext) -> Result<(), CkksError> {
        self.check_ct(a)?;
        let level = a.level();
        if level < 2 {
            return Err(CkksError::LastLevel);
        }
        let rlwe = self.ctx.rlwe();
        let consts = rlwe.rescale_consts(level);
        let basis = self.basis(level);
        for p in a.parts.iter_mut() {
            rlwe.ring().div_round_by_last(p, basis, consts);
        }
        a.scale /= rlwe.q_modulus(level - 1).value() as f64;
        Ok(())
    }

    /// Drops `k` moduli without dividing (the message and scale are unchanged).
    pub fn drop_levels(&self, a: &Ciphertext, k: usize) -> Result<Ciphertext, CkksError> {
        self.check_ct(a)?;
        if k >= a.level() {
            return Err(CkksError::DropTooFar {
                drop: k,
                level: a.level(),
            });
        }
        Ok(Self::at_level(a, a.level() - k).into_owned())
    }
}
