//! What evaluating a network needs from a CKKS implementation: the evaluation in
//! [`super::evaluate`] is written once over this, and runs on the CPU evaluator
//! ([`CpuBackend`]) or on a GPU (`super::device`), with the same arithmetic word for word.

use crate::ckks::{Ciphertext, CkksContext, Evaluator, Plaintext};

use super::error::InferError;
use super::kernels;

/// A giant step's products: its rotated inputs and their weights, one each.
pub(crate) type GiantProducts<'a, C, P> = (Vec<&'a C>, Vec<&'a P>);

/// The operations of one encrypted inference.
pub(crate) trait Backend: Sync {
    type Ct: Send + Sync;
    type Pt: Send + Sync;

    /// Whether independent operations may run on many threads (the CPU), or one after
    /// another (a device stream).
    fn parallel(&self) -> bool;
    fn copy(&self, x: &Self::Ct) -> Result<Self::Ct, InferError>;
    /// Rotations of one ciphertext sharing one decomposition.
    fn rotate_hoisted(&self, x: &Self::Ct, steps: &[i64]) -> Result<Vec<Self::Ct>, InferError>;
    fn rotate(&self, x: &Self::Ct, step: i64) -> Result<Self::Ct, InferError>;
    /// Σ_j rot_{steps[j]}(xs[j]) (a map's giant steps) with one division by P for the whole
    /// sum; degree 1, one level and scale.
    fn rotate_sum(&self, xs: &[Self::Ct], steps: &[i64]) -> Result<Self::Ct, InferError>;
    /// Σ xs ⊙ ws (degree 1), not rescaled.
    fn dot_plain(&self, xs: &[&Self::Ct], ws: &[&Self::Pt]) -> Result<Self::Ct, InferError>;
    /// [`Backend::dot_plain`] of every giant step of a map (`giants[g]` = its inputs and
    /// weights); one after another unless the backend does better.
    fn dot_plain_giants(
        &self,
        giants: &[GiantProducts<'_, Self::Ct, Self::Pt>],
    ) -> Result<Vec<Self::Ct>, InferError> {
        giants
            .iter()
            .map(|(xs, ws)| self.dot_plain(xs, ws))
            .collect()
    }
    /// Σ xs ⊗ ws (degree 2), not rescaled.
    fn dot_cipher(&self, xs: &[&Self::Ct], ws: &[&Self::Ct]) -> Result<Self::Ct, InferError>;
    fn rescale(&self, x: Self::Ct) -> Result<Self::Ct, InferError>;
    /// Degree 2 to 1 (degree 1 unchanged).
    fn relinearize(&self, x: Self::Ct) -> Result<Self::Ct, InferError>;
    fn add_assign(&self, y: &mut Self::Ct, x: &Self::Ct) -> Result<(), InferError>;
    fn add_plain(&self, y: &mut Self::Ct, p: &Self::Pt) -> Result<(), InferError>;
    /// + c in every slot, at y's scale.
    fn add_real_const(&self, y: &mut Self::Ct, c: f64) -> Result<(), InferError>;
    /// a ⊗ b, degree 2, not rescaled.
    fn mul(&self, a: &Self::Ct, b: &Self::Ct) -> Result<Self::Ct, InferError>;
    /// y · c with c encoded at `scale`, not rescaled.
    fn mul_const(&self, y: Self::Ct, c: f64, scale: f64) -> Result<Self::Ct, InferError>;
    /// The product of the last `k` moduli of a ciphertext's level (the scale one rescaling
    /// step of `k` primes divides by).
    fn step_modulus(&self, x: &Self::Ct, k: usize) -> f64;
    /// `x` with its moduli above `level` dropped (message and scale unchanged); `x` itself when
    /// it is at `level` already.
    fn drop_to(&self, x: Self::Ct, level: usize) -> Result<Self::Ct, InferError>;

    /// One rescaling step: divides by the last `k` primes.
    fn rescale_step(&self, x: Self::Ct, k: usize) -> Result<Self::Ct, InferError> {
        let mut x = x;
        for _ in 0..k {
            x = self.rescale(x)?;
        }
        Ok(x)
    }
}

/// The CPU evaluator, its products through the inference kernels (AVX-512 IFMA where present).
pub(crate) struct CpuBackend<'a> {
    pub eval: &'a Evaluator,
    pub ctx: &'a CkksContext,
}

impl<'a> CpuBackend<'a> {
    /// The evaluator for a model made at `params` (refused when its context is another).
    pub(crate) fn for_model(
        eval: &'a Evaluator,
        params: &crate::ckks::Parameters,
        ctx: &'a CkksContext,
    ) -> Result<Self, InferError> {
        if eval.context().params() != params {
            return Err(InferError::ContextMismatch);
        }
        Ok(Self { eval, ctx })
    }
}

impl Backend for CpuBackend<'_> {
    type Ct = Ciphertext;
    type Pt = Plaintext;

    fn parallel(&self) -> bool {
        true
    }
    fn copy(&self, x: &Ciphertext) -> Result<Ciphertext, InferError> {
        Ok(x.clone())
    }
    fn rotate_hoisted(&self, x: &Ciphertext, steps: &[i64]) -> Result<Vec<Ciphertext>, InferError> {
        Ok(self.eval.rotate_hoisted(x, steps)?)
    }
    fn rotate(&self, x: &Ciphertext, step: i64) -> Result<Ciphertext, InferError> {
        Ok(self.eval.rotate(x, step)?)
    }
    fn rotate_sum(&self, xs: &[Ciphertext], steps: &[i64]) -> Result<Ciphertext, InferError> {
        Ok(self.eval.rotate_sum(xs, steps)?)
    }
    fn dot_plain(&self, xs: &[&Ciphertext], ws: &[&Plaintext]) -> Result<Ciphertext, InferError> {
        let (x0, w0) = first(xs, ws)?;
        let polys: Vec<_> = ws.iter().map(|w| &w.poly).collect();
        Ok(Ciphertext {
            parts: kernels::dot_plain(self.ctx, x0.level(), xs, &polys),
            scale: x0.scale * w0.scale,
        })
    }
    fn dot_plain_giants(
        &self,
        giants: &[GiantProducts<'_, Ciphertext, Plaintext>],
    ) -> Result<Vec<Ciphertext>, InferError> {
        let mut level = None;
        let mut scales = Vec::with_capacity(giants.len());
        let mut polys = Vec::with_capacity(giants.len());
        for (xs, ws) in giants {
            let (x0, w0) = first(xs, ws)?;
            if *level.get_or_insert(x0.level()) != x0.level() {
                return Err(InferError::ModelMismatch("giant steps at different levels"));
            }
            scales.push(x0.scale * w0.scale);
            polys.push((xs.clone(), ws.iter().map(|w| &w.poly).collect::<Vec<_>>()));
        }
        let Some(level) = level else {
            return Ok(Vec::new());
        };
        Ok(kernels::dot_plain_giants(self.ctx, level, &polys)
            .into_iter()
            .zip(scales)
            .map(|(parts, scale)| Ciphertext { parts, scale })
            .collect())
    }
    fn dot_cipher(&self, xs: &[&Ciphertext], ws: &[&Ciphertext]) -> Result<Ciphertext, InferError> {
        let (x0, w0) = first(xs, ws)?;
        Ok(Ciphertext {
            parts: kernels::dot_cipher(self.ctx, x0.level(), xs, ws),
            scale: x0.scale * w0.scale,
        })
    }
    fn rescale(&self, mut x: Ciphertext) -> Result<Ciphertext, InferError> {
        self.eval.rescale_assign(&mut x)?;
        Ok(x)
    }
    fn relinearize(&self, x: Ciphertext) -> Result<Ciphertext, InferError> {
        if x.degree() == 1 {
            return Ok(x);
        }
        Ok(self.eval.relinearize(&x)?)
    }
    fn add_assign(&self, y: &mut Ciphertext, x: &Ciphertext) -> Result<(), InferError> {
        Ok(self.eval.add_assign(y, x)?)
    }
    fn add_plain(&self, y: &mut Ciphertext, p: &Plaintext) -> Result<(), InferError> {
        *y = self.eval.add_plain(y, p)?;
        Ok(())
    }
    fn add_real_const(&self, y: &mut Ciphertext, c: f64) -> Result<(), InferError> {
        Ok(kernels::add_real_const(self.eval, y, c)?)
    }
    fn mul(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext, InferError> {
        Ok(self.eval.mul(a, b)?)
    }
    fn mul_const(&self, y: Ciphertext, c: f64, scale: f64) -> Result<Ciphertext, InferError> {
        Ok(self.eval.mul_const(&y, c, scale)?)
    }
    fn step_modulus(&self, x: &Ciphertext, k: usize) -> f64 {
        super::model::step_modulus(self.ctx, x.level(), k)
    }
    fn drop_to(&self, mut x: Ciphertext, level: usize) -> Result<Ciphertext, InferError> {
        if level == 0 || level > x.level() {
            return Err(InferError::ModelMismatch(
                "a drop to a level above the value's",
            ));
        }
        for part in &mut x.parts {
            part.truncate(level);
        }
        Ok(x)
    }
}

/// The first pair of a non-empty product list of equal lengths.
pub(crate) fn first<'a, X, W>(xs: &[&'a X], ws: &[&'a W]) -> Result<(&'a X, &'a W), InferError> {
    match (xs.first(), ws.first()) {
        (Some(x), Some(w)) if xs.len() == ws.len() => Ok((x, w)),
        _ => Err(InferError::ModelMismatch("a giant step without products")),
    }
}

/// What the batched packing needs beyond [`Backend`]: the modular matrix products of a map
/// over whole ciphertexts.
pub(crate) trait BatchedBackend: Backend {
    type Weights: Send + Sync;

    /// One ciphertext per output (at the inputs' level and degree, scale `scale`): zero, or
    /// `acc` when given, plus the products of every group.
    fn products(
        &self,
        groups: &[super::batched_ops::Group<Self::Weights>],
        xs: &[Self::Ct],
        n_out: usize,
        acc: Option<Vec<Self::Ct>>,
        scale: f64,
    ) -> Result<Vec<Self::Ct>, InferError>;
    fn scale(&self, x: &Self::Ct) -> f64;
}
