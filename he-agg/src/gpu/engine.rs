//! CKKS operations as short sequences of [`Exec`] launches: decomposition, key switching,
//! rotations (hoisted), rescaling. Written once; [`super::HostExec`] and the CUDA executor run
//! the same sequence, and both equal the CPU evaluator word for word.

use std::sync::Arc;

use super::exec::{DotShape, Exec, LimbOp, MapJob};
use super::plans::{ExtendPlan, LevelPlan};
use crate::aggregate::CudaError;
use crate::ckks::Ciphertext;
use crate::ring::Poly;
use crate::rlwe::{RlweContext, SwitchingKey};

/// Why an operation on the device cannot run.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum GpuError {
    #[error(transparent)]
    Cuda(#[from] CudaError),
    #[error("these parameters have no special primes P, so key switching is unavailable")]
    NoSpecialPrimes,
    #[error("the switching key was made for other parameters")]
    ForeignKey,
    #[error("the switching key has {have} parts, level {level} needs {need}")]
    ShortKey {
        have: usize,
        need: usize,
        level: usize,
    },
    #[error("a ciphertext at level {0} cannot be {1}")]
    Level(usize, &'static str),
    #[error("this operation takes ciphertexts of degree 1; this one has degree {0}")]
    Degree(usize),
    #[error("a ciphertext at level {0} meets one at level {1}")]
    LevelMismatch(usize, usize),
    #[error("no switching key for Galois element {0} was uploaded")]
    MissingKey(u64),
    #[error("the constant {0} does not fit the ciphertext's scale (not finite or ≥ 2^63)")]
    Constant(f64),
    #[error("no ciphertexts or shares were given")]
    Empty,
    #[error("ciphertexts of one batch share their scale: 2^{:.2} meets 2^{:.2}", .0.log2(), .1.log2())]
    Scale(f64, f64),
    #[error(transparent)]
    Switch(#[from] crate::multiparty::MultipartyError),
}

/// A ciphertext on the device: `[part][limb]` (2 parts, or 3 before relinearization), NTT
/// domain.
pub struct DevCiphertext<B> {
    pub buf: B,
    pub level: usize,
    pub scale: f64,
    pub parts: usize,
}

impl<B> DevCiphertext<B> {
    pub fn degree(&self) -> usize {
        self.parts - 1
    }

    /// Refuses anything but degree 1 (rotations and products take those only).
    pub(crate) fn check_linear(&self) -> Result<(), GpuError> {
        if self.parts != 2 {
            return Err(GpuError::Degree(self.degree()));
        }
        Ok(())
    }
}

/// c_1 of a ciphertext decomposed into raised digits, `[digit][Q_l ∪ P]`.
pub struct DevDecomposition<B> {
    buf: B,
    level: usize,
    digits: usize,
}

/// A switching key on the device, `[digit][b, a][Q_L ∪ P]`.
pub struct DevSwitchingKey<B> {
    buf: B,
    parts: usize,
    fingerprint: [u8; 32],
}

/// Limb `level + i` of a ciphertext (its c1) to limb `i` of a buffer of its own.
fn c1_jobs(lp: &LevelPlan) -> Vec<MapJob> {
    lp.ct_limbs[lp.level..2 * lp.level]
        .iter()
        .map(|j| MapJob {
            dst: j.dst - lp.level as u32,
            ..*j
        })
        .collect()
}

/// One term of [`Engine::apply_galois_sum`]: a ciphertext, its Galois element and that element's
/// key (`None` for the identity).
pub type GaloisTerm<'a, B> = (&'a DevCiphertext<B>, u64, Option<&'a DevSwitchingKey<B>>);

/// CKKS on an executor, for one parameter set.
pub struct Engine<E: Exec> {
    exec: E,
    rlwe: Arc<RlweContext>,
    /// Indexed by level (0 unused).
    plans: Vec<LevelPlan>,
}

impl<E: Exec> Engine<E> {
    pub fn new(exec: E, rlwe: Arc<RlweContext>) -> Self {
        let plans = (0..=rlwe.max_level())
            .map(|l| LevelPlan::new(&rlwe, l))
            .collect();
        Self { exec, rlwe, plans }
    }

    pub fn exec(&self) -> &E {
        &self.exec
    }

    pub fn rlwe(&self) -> &Arc<RlweContext> {
        &self.rlwe
    }

    fn plan(&self, level: usize, what: &'static str) -> Result<&LevelPlan, GpuError> {
        self.plans
            .get(level)
            .filter(|_| level >= 1)
            .ok_or(GpuError::Level(level, what))
    }

    /// A ciphertext of degree 1 or 2 to the device.
    pub fn upload_ct(&self, ct: &Ciphertext) -> Result<DevCiphertext<E::Buf>, GpuError> {
        let parts = ct.parts.len();
        if !(2..=3).contains(&parts) {
            return Err(GpuError::Degree(parts.saturating_sub(1)));
        }
        let level = ct.parts[0].limbs();
        self.plan(level, "held")?;
        let n = self.rlwe.n();
        if ct.parts.iter().any(|p| p.limbs() != level || p.n() != n) {
            return Err(GpuError::Level(level, "held with parts of other sizes"));
        }
        let words: Vec<u64> = ct
            .parts
            .iter()
            .flat_map(|p| p.data().iter().copied())
            .collect();
        Ok(DevCiphertext {
            buf: self.exec.upload(&words)?,
            level,
            scale: ct.scale,
            parts,
        })
    }

    pub fn download_ct(&self, ct: &DevCiphertext<E::Buf>) -> Result<Ciphertext, GpuError> {
        let words = self.exec.download(&ct.buf)?;
        let n = self.rlwe.n();
        let part = ct.level * n;
        Ok(Ciphertext {
            parts: words
                .chunks(part)
                .take(ct.parts)
                .map(|w| Poly::from_data(n, w.to_vec()))
                .collect(),
            scale: ct.scale,
        })
    }

    pub fn upload_key(&self, key: &SwitchingKey) -> Result<DevSwitchingKey<E::Buf>, GpuError> {
        if key.fingerprint() != self.rlwe.fingerprint() {
            return Err(GpuError::ForeignKey);
        }
        let words: Vec<u64> = key
            .parts()
            .iter()
            .flat_map(|(b, a)| b.data().iter().chain(a.data()).copied())
            .collect();
        Ok(DevSwitchingKey {
            buf: self.exec.upload(&words)?,
            parts: key.parts().len(),
            fingerprint: *key.fingerprint(),
        })
    }

    /// Runs `p` from the limbs of `src` (left in the coefficient domain) into `out`.
    fn extend_ntt(
        &self,
        src: &mut E::Buf,
        p: &ExtendPlan,
        out: &mut E::Buf,
    ) -> Result<(), GpuError> {
        let e = &self.exec;
        e.intt(src, &p.intt, false)?;
        let mut y = e.scratch(p.y_limbs)?;
        e.map(LimbOp::MulConst, &mut y, src, &p.prepare, &p.prepare_consts)?;
        e.extend(out, &y, &p.extend, &p.rows)?;
        e.ntt(out, &p.ntt)?;
        Ok(())
    }

    /// Decomposes `c1` (level limbs, NTT domain) into raised digits.
    pub fn decompose(
        &self,
        c1: &E::Buf,
        level: usize,
    ) -> Result<DevDecomposition<E::Buf>, GpuError> {
        let lp = self.plan(level, "key-switched")?;
        let p = lp.decompose.as_ref().ok_or(GpuError::NoSpecialPrimes)?;
        let e = &self.exec;
        let mut dc = e.scratch(level)?;
        e.map(LimbOp::Copy, &mut dc, c1, &lp.ct_limbs[..level], &[])?;
        let mut digits = e.scratch(p.digits * lp.width)?;
        self.extend_ntt(&mut dc, &p.raise, &mut digits)?;
        e.map(LimbOp::Copy, &mut digits, c1, &p.own, &[])?;
        Ok(DevDecomposition {
            buf: digits,
            level,
            digits: p.digits,
        })
    }

    /// The decomposition after X ↦ X^g (every digit permuted), for hoisted rotations.
    pub fn permute_decomposition(
        &self,
        dec: &DevDecomposition<E::Buf>,
        g: u64,
    ) -> Result<DevDecomposition<E::Buf>, GpuError> {
        let width = self.plan(dec.level, "rotated")?.width;
        let perm = self.rlwe.ring().galois_permutation(g);
        let limbs = dec.digits * width;
        let jobs: Vec<MapJob> = (0..limbs)
            .map(|i| MapJob {
                dst: i as u32,
                src: i as u32,
                modulus: 0,
                konst: 0,
            })
            .collect();
        let mut out = self.exec.scratch(limbs)?;
        self.exec
            .permute(&mut out, &dec.buf, &jobs, perm.map(), false)?;
        Ok(DevDecomposition {
            buf: out,
            level: dec.level,
            digits: dec.digits,
        })
    }

    /// (ks_0, ks_1) as one buffer `[2][level]` from a decomposition and a key.
    pub fn key_switch_decomposed(
        &self,
        dec: &DevDecomposition<E::Buf>,
        key: &DevSwitchingKey<E::Buf>,
    ) -> Result<E::Buf, GpuError> {
        if &key.fingerprint != self.rlwe.fingerprint() {
            return Err(GpuError::ForeignKey);
        }
        if key.parts < dec.digits {
            return Err(GpuError::ShortKey {
                have: key.parts,
                need: dec.digits,
                level: dec.level,
            });
        }
        let x = self.inner_product(dec, key)?;
        self.mod_down(x, dec.level)
    }

    /// The decomposition's inner product with the key over Q_l ∪ P, `[2][width]` (as
    /// [`crate::rlwe::RlweContext::inner_product`]).
    fn inner_product(
        &self,
        dec: &DevDecomposition<E::Buf>,
        key: &DevSwitchingKey<E::Buf>,
    ) -> Result<E::Buf, GpuError> {
        let lp = self.plan(dec.level, "key-switched")?;
        let mut x = self.exec.scratch(2 * lp.width)?;
        let shape = DotShape {
            digits: dec.digits,
            width: lp.width,
            key_limbs: self.rlwe.max_level() + self.rlwe.num_p(),
        };
        self.exec.dot(&mut x, &dec.buf, &key.buf, &lp.qp, shape)?;
        Ok(x)
    }

    /// `[2][width]` over Q_l ∪ P divided by P onto `[2][level]` (as
    /// [`crate::rlwe::RlweContext::mod_down`] of each half).
    fn mod_down(&self, mut x: E::Buf, level: usize) -> Result<E::Buf, GpuError> {
        let lp = self.plan(level, "key-switched")?;
        let p = lp.mod_down.as_ref().ok_or(GpuError::NoSpecialPrimes)?;
        let mut out = self.exec.scratch(2 * level)?;
        self.extend_ntt(&mut x, &p.from_p, &mut out)?;
        self.exec.map(
            LimbOp::RevSubMulConst,
            &mut out,
            &x,
            &p.combine,
            &p.combine_consts,
        )?;
        Ok(out)
    }

    /// Σ_j σ_{g_j}(ct_j) switched back with one division by P for the whole sum (as
    /// [`crate::ckks::Evaluator::rotate_sum`], word for word): `terms[j]` = (ct_j, g_j, its
    /// key, `None` where g_j = 1). Degree-1 ciphertexts of one level; the first one's scale.
    pub fn apply_galois_sum(
        &self,
        terms: &[GaloisTerm<'_, E::Buf>],
    ) -> Result<DevCiphertext<E::Buf>, GpuError> {
        let (first, _, _) = *terms.first().ok_or(GpuError::Empty)?;
        let level = first.level;
        let lp = self.plan(level, "rotated")?;
        let (width, e) = (lp.width, &self.exec);
        let qp_jobs: Vec<MapJob> = (0..2 * width)
            .map(|i| MapJob {
                dst: i as u32,
                src: i as u32,
                modulus: lp.qp[i % width],
                konst: 0,
            })
            .collect();
        let mut sum: Option<E::Buf> = None;
        for &(ct, g, key) in terms {
            ct.check_linear()?;
            if ct.level != level {
                return Err(GpuError::LevelMismatch(level, ct.level));
            }
            let Some(key) = key else { continue };
            let perm = self.rlwe.ring().galois_permutation(g);
            let mut c1 = e.scratch(level)?;
            e.permute(&mut c1, &ct.buf, &c1_jobs(lp), perm.map(), false)?;
            let x = self.inner_product(&self.decompose(&c1, level)?, key)?;
            match sum.as_mut() {
                None => sum = Some(x),
                Some(s) => e.map(LimbOp::Add, s, &x, &qp_jobs, &[])?,
            }
        }
        let mut out = match sum {
            Some(x) => self.mod_down(x, level)?,
            None => e.zeros(2 * level)?,
        };
        let both = &lp.ct_limbs[..2 * level];
        for &(ct, g, key) in terms {
            match key {
                None => e.map(LimbOp::Add, &mut out, &ct.buf, both, &[])?,
                Some(_) => {
                    let perm = self.rlwe.ring().galois_permutation(g);
                    e.permute(&mut out, &ct.buf, &lp.ct_limbs[..level], perm.map(), true)?
                }
            }
        }
        Ok(DevCiphertext {
            buf: out,
            level,
            scale: first.scale,
            parts: 2,
        })
    }

    /// σ_g(c0) + ks_0 into the first half of `ks` (which becomes the rotated ciphertext).
    fn finish_galois(
        &self,
        ct: &DevCiphertext<E::Buf>,
        g: u64,
        mut ks: E::Buf,
    ) -> Result<DevCiphertext<E::Buf>, GpuError> {
        let lp = self.plan(ct.level, "rotated")?;
        let perm = self.rlwe.ring().galois_permutation(g);
        let first = &lp.ct_limbs[..ct.level];
        // σ_g(c0) added in the permutation's own pass (one launch, no temporary)
        self.exec
            .permute(&mut ks, &ct.buf, first, perm.map(), true)?;
        Ok(DevCiphertext {
            buf: ks,
            level: ct.level,
            scale: ct.scale,
            parts: 2,
        })
    }

    /// X ↦ X^g and a switch back to the secret key (as [`crate::ckks::Evaluator::apply_galois`]).
    pub fn apply_galois(
        &self,
        ct: &DevCiphertext<E::Buf>,
        g: u64,
        key: &DevSwitchingKey<E::Buf>,
    ) -> Result<DevCiphertext<E::Buf>, GpuError> {
        ct.check_linear()?;
        let level = ct.level;
        let lp = self.plan(level, "rotated")?;
        let perm = self.rlwe.ring().galois_permutation(g);
        // c1 is limbs level..2·level of the ciphertext
        let jobs = c1_jobs(lp);
        let mut c1 = self.exec.scratch(level)?;
        self.exec
            .permute(&mut c1, &ct.buf, &jobs, perm.map(), false)?;
        let dec = self.decompose(&c1, level)?;
        let ks = self.key_switch_decomposed(&dec, key)?;
        self.finish_galois(ct, g, ks)
    }

    /// Many Galois elements of one ciphertext sharing one decomposition of c_1 (as
    /// [`crate::ckks::Evaluator::rotate_hoisted`]).
    pub fn apply_galois_hoisted(
        &self,
        ct: &DevCiphertext<E::Buf>,
        keys: &[(u64, &DevSwitchingKey<E::Buf>)],
    ) -> Result<Vec<DevCiphertext<E::Buf>>, GpuError> {
        ct.check_linear()?;
        let level = ct.level;
        let lp = self.plan(level, "rotated")?;
        let jobs = c1_jobs(lp);
        let mut c1 = self.exec.scratch(level)?;
        self.exec.map(LimbOp::Copy, &mut c1, &ct.buf, &jobs, &[])?;
        let dec = self.decompose(&c1, level)?;
        keys.iter()
            .map(|&(g, key)| {
                let rotated = self.permute_decomposition(&dec, g)?;
                let ks = self.key_switch_decomposed(&rotated, key)?;
                self.finish_galois(ct, g, ks)
            })
            .collect()
    }

    /// a ⊗ b without relinearization (as [`crate::ckks::Evaluator::mul`] on two ciphertexts
    /// at the same level): degree 2, the scales multiplied.
    pub fn mul(
        &self,
        a: &DevCiphertext<E::Buf>,
        b: &DevCiphertext<E::Buf>,
    ) -> Result<DevCiphertext<E::Buf>, GpuError> {
        a.check_linear()?;
        b.check_linear()?;
        let level = a.level;
        if b.level != level {
            return Err(GpuError::LevelMismatch(level, b.level));
        }
        self.plan(level, "multiplied")?;
        let mut t = self.exec.scratch(3 * level)?;
        self.exec.tensor(&mut t, &a.buf, &b.buf, level)?;
        Ok(DevCiphertext {
            buf: t,
            level,
            scale: a.scale * b.scale,
            parts: 3,
        })
    }

    /// Degree 2 back to degree 1 with `rlk` (as [`crate::ckks::Evaluator::relinearize`]); a
    /// degree-1 ciphertext is returned as it is.
    pub fn relinearize(
        &self,
        t: DevCiphertext<E::Buf>,
        rlk: &DevSwitchingKey<E::Buf>,
    ) -> Result<DevCiphertext<E::Buf>, GpuError> {
        if t.parts == 2 {
            return Ok(t);
        }
        let level = t.level;
        let lp = self.plan(level, "relinearized")?;
        let e = &self.exec;
        let c2_jobs: Vec<MapJob> = lp.ct_limbs[..level]
            .iter()
            .map(|j| MapJob {
                src: j.src + 2 * level as u32,
                ..*j
            })
            .collect();
        let mut c2 = e.scratch(level)?;
        e.map(LimbOp::Copy, &mut c2, &t.buf, &c2_jobs, &[])?;
        let dec = self.decompose(&c2, level)?;
        let mut ks = self.key_switch_decomposed(&dec, rlk)?;
        e.map(LimbOp::Add, &mut ks, &t.buf, &lp.ct_limbs[..2 * level], &[])?;
        Ok(DevCiphertext {
            buf: ks,
            level,
            scale: t.scale,
            parts: 2,
        })
    }

    /// a ⊗ b relinearized with `rlk` (as [`crate::ckks::Evaluator::mul_relin`] on two
    /// ciphertexts at the same level).
    pub fn mul_relin(
        &self,
        a: &DevCiphertext<E::Buf>,
        b: &DevCiphertext<E::Buf>,
        rlk: &DevSwitchingKey<E::Buf>,
    ) -> Result<DevCiphertext<E::Buf>, GpuError> {
        self.relinearize(self.mul(a, b)?, rlk)
    }

    /// Divides by the last modulus of the level (as [`crate::ckks::Evaluator::rescale`]), any
    /// degree.
    pub fn rescale(
        &self,
        mut ct: DevCiphertext<E::Buf>,
    ) -> Result<DevCiphertext<E::Buf>, GpuError> {
        let level = ct.level;
        let plan = self
            .plan(level, "rescaled")?
            .rescale
            .as_ref()
            .ok_or(GpuError::Level(level, "rescaled"))?;
        let p = plan.for_parts(ct.parts);
        let e = &self.exec;
        e.intt(&mut ct.buf, p.intt_last, true)?;
        e.map_within(LimbOp::AddConst, &mut ct.buf, p.add_half, &plan.half)?;
        let mut out = e.scratch(ct.parts * (level - 1))?;
        e.map(
            LimbOp::LiftSub,
            &mut out,
            &ct.buf,
            p.lift,
            &plan.lift_consts,
        )?;
        e.ntt(&mut out, p.ntt)?;
        e.map(
            LimbOp::RevSubMulConst,
            &mut out,
            &ct.buf,
            p.combine,
            &plan.combine_consts,
        )?;
        let q_last = self.rlwe.q_modulus(level - 1).value() as f64;
        Ok(DevCiphertext {
            buf: out,
            level: level - 1,
            scale: ct.scale / q_last,
            parts: ct.parts,
        })
    }
}
