//! The evaluation of a [`super::Model`]'s stages on one image, written once over a
//! [`Backend`]: baby-step rotations hoisted per input, one multiply-accumulate per giant step,
//! rescale before the giant rotation, folds, bias; activations x·(x + c), then a's product.

use rayon::prelude::*;

use super::backend::{Backend, CpuBackend};
use super::error::InferError;
use super::model::{GiantOps, Model, ModelStage, Operand, Scalar};
use crate::ckks::{Ciphertext, Evaluator};

/// f(0..n), on many threads when the backend allows.
fn each<B: Backend, R: Send>(
    b: &B,
    n: usize,
    f: impl Fn(usize) -> Result<R, InferError> + Sync + Send,
) -> Result<Vec<R>, InferError> {
    if b.parallel() {
        (0..n).into_par_iter().map(f).collect()
    } else {
        (0..n).map(f).collect()
    }
}

impl Model {
    /// Evaluates the network on one encrypted image (encoded by [`InferenceSpec::encode_input`]
    /// and encrypted at [`InferenceSpec::input_level`]: [`InferenceSpec::input_ciphertexts`]
    /// ciphertexts); the result decrypts to the logits in its first slots
    /// ([`InferenceSpec::decode_output`]). The evaluator must hold the relinearization key and
    /// the Galois keys of [`InferenceSpec::galois_steps`].
    pub fn evaluate(
        &self,
        eval: &Evaluator,
        inputs: &[Ciphertext],
    ) -> Result<Ciphertext, InferError> {
        let backend = CpuBackend::for_model(eval, self.spec().parameters(), self.ctx())?;
        self.check_inputs(inputs)?;
        run(
            &backend,
            self.stages(),
            inputs.to_vec(),
            self.spec().step_primes(),
        )
    }
}

/// Runs every stage on the image's ciphertexts, each rescaling step dividing by `k` primes;
/// the result holds the logits.
pub(crate) fn run<B: Backend>(
    b: &B,
    stages: &[ModelStage<B::Pt, B::Ct>],
    inputs: Vec<B::Ct>,
    k: usize,
) -> Result<B::Ct, InferError> {
    let mut xs = inputs;
    for stage in stages {
        let y = match stage {
            ModelStage::Linear {
                baby_steps,
                babies,
                giants,
                fold_steps,
                bias,
            } => linear(
                b,
                &xs,
                baby_steps,
                babies,
                giants,
                fold_steps,
                bias.as_ref(),
                k,
            )?,
            ModelStage::Activation { c, post } => {
                let x = xs
                    .first()
                    .ok_or(InferError::ModelMismatch("an activation without input"))?;
                activation(b, x, c.as_ref(), post.as_ref(), k)?
            }
        };
        xs = vec![y];
    }
    xs.pop().ok_or(InferError::ModelMismatch("no stages"))
}

#[allow(clippy::too_many_arguments)]
fn linear<B: Backend>(
    b: &B,
    xs: &[B::Ct],
    baby_steps: &[i64],
    babies: &[Vec<usize>],
    giants: &[GiantOps<B::Pt, B::Ct>],
    fold_steps: &[i64],
    bias: Option<&Operand<B::Pt, B::Ct>>,
    k: usize,
) -> Result<B::Ct, InferError> {
    if xs.len() != babies.len() {
        return Err(InferError::ModelMismatch("input ciphertexts of a map"));
    }
    // each input's baby rotations share one decomposition
    let rotated: Vec<Vec<Option<B::Ct>>> = each(b, xs.len(), |k| {
        let used = &babies[k];
        let steps: Vec<i64> = used.iter().map(|&i| baby_steps[i]).collect();
        let mut out: Vec<Option<B::Ct>> = (0..baby_steps.len()).map(|_| None).collect();
        for (&i, ct) in used.iter().zip(b.rotate_hoisted(&xs[k], &steps)?) {
            out[i] = Some(ct);
        }
        Ok(out)
    })?;
    let partial: Vec<B::Ct> = each(b, giants.len(), |gi| {
        let g = &giants[gi];
        let xs: Vec<&B::Ct> = g
            .terms
            .iter()
            .map(|t| {
                rotated
                    .get(t.input)
                    .and_then(|r| r.get(t.baby))
                    .and_then(Option::as_ref)
                    .ok_or(InferError::ModelMismatch("a baby rotation was not made"))
            })
            .collect::<Result<_, _>>()?;
        let acc = match g.terms.first().map(|t| &t.weight) {
            Some(Operand::Plain(_)) => {
                let ws = g
                    .terms
                    .iter()
                    .map(|t| match &t.weight {
                        Operand::Plain(p) => Ok(p),
                        Operand::Cipher(_) => Err(InferError::ModelMismatch("mixed")),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                b.dot_plain(&xs, &ws)?
            }
            Some(Operand::Cipher(_)) => {
                let ws = g
                    .terms
                    .iter()
                    .map(|t| match &t.weight {
                        Operand::Cipher(c) => Ok(c),
                        Operand::Plain(_) => Err(InferError::ModelMismatch("mixed")),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                b.dot_cipher(&xs, &ws)?
            }
            None => return Err(InferError::ModelMismatch("a giant step without products")),
        };
        // rescale first: the relinearization and rotation then run one level lower
        let mut acc = b.relinearize(b.rescale_step(acc, k)?)?;
        if g.step != 0 {
            acc = b.rotate(&acc, g.step)?;
        }
        Ok(acc)
    })?;
    let mut iter = partial.into_iter();
    let mut y = iter.next().ok_or(InferError::ModelMismatch("empty map"))?;
    for p in iter {
        b.add_assign(&mut y, &p)?;
    }
    for &f in fold_steps {
        let r = b.rotate(&y, f)?;
        b.add_assign(&mut y, &r)?;
    }
    match bias {
        Some(Operand::Plain(p)) => b.add_plain(&mut y, p)?,
        Some(Operand::Cipher(c)) => b.add_assign(&mut y, c)?,
        None => {}
    }
    Ok(y)
}

fn activation<B: Backend>(
    b: &B,
    x: &B::Ct,
    c: Option<&Scalar<B::Ct>>,
    post: Option<&Scalar<B::Ct>>,
    k: usize,
) -> Result<B::Ct, InferError> {
    let shifted = match c {
        None => None,
        Some(Scalar::Plain(c)) => {
            let mut s = b.copy(x)?;
            b.add_real_const(&mut s, *c)?;
            Some(s)
        }
        Some(Scalar::Cipher(c)) => {
            let mut s = b.copy(x)?;
            b.add_assign(&mut s, c)?;
            Some(s)
        }
    };
    let y = b.mul(x, shifted.as_ref().unwrap_or(x))?;
    let mut y = b.relinearize(b.rescale_step(y, k)?)?;
    match post {
        None => {}
        Some(Scalar::Plain(a)) => {
            let q = b.step_modulus(&y, k);
            y = b.rescale_step(b.mul_const(y, *a, q)?, k)?;
        }
        Some(Scalar::Cipher(a)) => {
            y = b.relinearize(b.rescale_step(b.mul(&y, a)?, k)?)?;
        }
    }
    Ok(y)
}
