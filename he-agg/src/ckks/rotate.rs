//! Rotations and other Galois automorphisms of [`Evaluator`]: one, many of one ciphertext
//! sharing a decomposition (hoisting), and the sum of rotations of many ciphertexts with one
//! division by P for the whole sum.

use rayon::prelude::*;

use crate::ring::Poly;
use crate::rlwe::Ciphertext;

use super::error::CkksError;
use super::evaluator::Evaluator;

/// One term of [`Evaluator::rotate_sum`]: an unrotated ciphertext, or σ_g(c0) and the key
/// switch's inner product over Q·P (both halves), before the division by P.
enum Term {
    Same(Poly, Poly),
    Switched(Poly, Poly, Poly),
}

impl Evaluator {
    pub(super) fn galois_key(&self, g: u64) -> Result<&crate::rlwe::GaloisKey, CkksError> {
        self.galois
            .as_ref()
            .and_then(|k| k.get(g))
            .ok_or(CkksError::MissingGaloisKey(g))
    }

    /// The Galois element of each rotation step, each one's key checked present.
    fn elements_with_keys(&self, steps: &[i64]) -> Result<Vec<u64>, CkksError> {
        let rlwe = self.ctx.rlwe();
        let elements: Vec<u64> = steps
            .iter()
            .map(|&k| rlwe.galois_element_for_rotation(k))
            .collect();
        for &g in elements.iter().filter(|&&g| g != 1) {
            self.galois_key(g)?;
        }
        Ok(elements)
    }

    /// Refuses a ciphertext of degree other than 1 (a rotation switches c_1 only).
    fn check_linear(a: &Ciphertext) -> Result<(), CkksError> {
        if a.degree() != 1 {
            return Err(CkksError::Degree {
                got: a.degree(),
                want: 1,
            });
        }
        Ok(())
    }

    /// Applies X ↦ X^g and switches back to the secret key.
    pub fn apply_galois(&self, a: &Ciphertext, g: u64) -> Result<Ciphertext, CkksError> {
        self.check_ct(a)?;
        Self::check_linear(a)?;
        if g == 1 {
            return Ok(a.clone());
        }
        let key = self.galois_key(g)?;
        let level = a.level();
        let basis = self.basis(level);
        let ring = self.ctx.rlwe().ring();
        let c1 = ring.automorphism_ntt(&a.parts[1], g, basis);
        let (ks0, ks1) = self.ctx.rlwe().key_switch(&c1, level, &key.key)?;
        let mut c0 = ring.automorphism_ntt(&a.parts[0], g, basis);
        ring.add_assign(&mut c0, &ks0, basis);
        Ok(Ciphertext {
            parts: vec![c0, ks1],
            scale: a.scale,
        })
    }

    /// Rotates the slots left by `k` (right for negative k).
    pub fn rotate(&self, a: &Ciphertext, k: i64) -> Result<Ciphertext, CkksError> {
        self.apply_galois(a, self.ctx.rlwe().galois_element_for_rotation(k))
    }

    /// Complex conjugation of every slot.
    pub fn conjugate(&self, a: &Ciphertext) -> Result<Ciphertext, CkksError> {
        self.apply_galois(a, self.ctx.rlwe().galois_element_conjugate())
    }

    /// Many rotations of one ciphertext, sharing one decomposition of c_1 (hoisting): the costly
    /// inverse NTT and basis extension run once instead of once per step.
    pub fn rotate_hoisted(
        &self,
        a: &Ciphertext,
        steps: &[i64],
    ) -> Result<Vec<Ciphertext>, CkksError> {
        self.check_ct(a)?;
        Self::check_linear(a)?;
        let rlwe = self.ctx.rlwe();
        let elements = self.elements_with_keys(steps)?;
        if elements.iter().all(|&g| g == 1) {
            return Ok(vec![a.clone(); steps.len()]);
        }
        let level = a.level();
        let basis = self.basis(level);
        let ring = rlwe.ring();
        let dec = rlwe.decompose(&a.parts[1], level)?;
        // one rotation per thread: each one's limb-wise passes are too short to share well
        elements
            .par_iter()
            .map(|&g| {
                if g == 1 {
                    return Ok(a.clone());
                }
                let key = self.galois_key(g)?;
                let (ks0, ks1) =
                    rlwe.key_switch_decomposed(&dec.automorphism(rlwe, g), &key.key)?;
                let mut c0 = ring.automorphism_ntt(&a.parts[0], g, basis);
                ring.add_assign(&mut c0, &ks0, basis);
                Ok(Ciphertext {
                    parts: vec![c0, ks1],
                    scale: a.scale,
                })
            })
            .collect()
    }

    /// Σ_j rot_{steps[j]}(xs[j]) — a linear map's giant steps — with one division by P for the
    /// whole sum: each rotation's key-switching inner product is summed over Q·P and the sum is
    /// brought down once (linear, so the same sum with one rounding instead of one per term).
    /// Inputs of one level and scale, degree 1.
    pub fn rotate_sum(&self, xs: &[Ciphertext], steps: &[i64]) -> Result<Ciphertext, CkksError> {
        let (first, level) = match xs.first() {
            Some(x) if xs.len() == steps.len() => (x, x.level()),
            _ => {
                return Err(CkksError::RotationCount {
                    ciphertexts: xs.len(),
                    steps: steps.len(),
                });
            }
        };
        for x in xs {
            self.check_ct(x)?;
            Self::check_linear(x)?;
            if x.level() != level {
                return Err(CkksError::LevelMismatch {
                    a: level,
                    b: x.level(),
                });
            }
            Self::check_scales(first.scale, x.scale)?;
        }
        let rlwe = self.ctx.rlwe();
        let elements = self.elements_with_keys(steps)?;
        let basis = self.basis(level);
        let ring = rlwe.ring();
        let qp = rlwe.qp_basis(level);
        let add = |a: Option<Poly>, b: Poly, basis: &[usize]| match a {
            None => b,
            Some(mut a) => {
                ring.add_assign(&mut a, &b, basis);
                a
            }
        };
        // per term: σ_g(c0) and the inner product over Q·P, or (an identity term) itself
        let terms: Vec<Term> = xs
            .par_iter()
            .zip(&elements)
            .map(|(x, &g)| {
                if g == 1 {
                    return Ok(Term::Same(x.parts[0].clone(), x.parts[1].clone()));
                }
                let key = self.galois_key(g)?;
                let c1 = ring.automorphism_ntt(&x.parts[1], g, basis);
                let dec = rlwe.decompose(&c1, level)?;
                let (p0, p1) = rlwe.inner_product(&dec, &key.key)?;
                Ok(Term::Switched(
                    ring.automorphism_ntt(&x.parts[0], g, basis),
                    p0,
                    p1,
                ))
            })
            .collect::<Result<_, CkksError>>()?;
        let (mut c0, mut c1, mut p0, mut p1) = (None, None, None, None);
        for term in terms {
            match term {
                Term::Same(a0, a1) => {
                    c0 = Some(add(c0, a0, basis));
                    c1 = Some(add(c1, a1, basis));
                }
                Term::Switched(a0, i0, i1) => {
                    c0 = Some(add(c0, a0, basis));
                    p0 = Some(add(p0, i0, qp));
                    p1 = Some(add(p1, i1, qp));
                }
            }
        }
        let mut c0 = c0.ok_or(CkksError::RotationCount {
            ciphertexts: 0,
            steps: 0,
        })?;
        let c1 = match (p0, p1) {
            (Some(p0), Some(p1)) => {
                let (d0, d1) =
                    rayon::join(|| rlwe.mod_down(p0, level), || rlwe.mod_down(p1, level));
                ring.add_assign(&mut c0, &d0, basis);
                add(c1, d1, basis)
            }
            _ => c1.ok_or(CkksError::RotationCount {
                ciphertexts: 0,
                steps: 0,
            })?,
        };
        Ok(Ciphertext {
            parts: vec![c0, c1],
            scale: first.scale,
        })
    }
}
