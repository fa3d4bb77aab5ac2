//! The evaluation of a [`super::Model`]'s stages on one image, written once over a
//! [`Backend`]: baby-step rotations hoisted per input, one multiply-accumulate per giant step,
//! rescale before the giant rotation, folds, bias; activations x·(x + c), then a's product.

use rayon::prelude::*;

use super::backend::{Backend, CpuBackend};
use super::error::InferError;
use super::model::{
    GiantOps, LinearOps, Model, ModelStage, Operand, Scalar, Shift, check_segment_inputs,
};
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

/// f(i, item) for every item, on many threads when the backend allows.
fn each_owned<B: Backend, T: Send, R: Send>(
    b: &B,
    items: Vec<T>,
    f: impl Fn(usize, T) -> Result<R, InferError> + Sync + Send,
) -> Result<Vec<R>, InferError> {
    if b.parallel() {
        items
            .into_par_iter()
            .enumerate()
            .map(|(i, t)| f(i, t))
            .collect()
    } else {
        items
            .into_iter()
            .enumerate()
            .map(|(i, t)| f(i, t))
            .collect()
    }
}

/// A giant step's rotated inputs, one per product.
fn giant_inputs<'a, P, C>(
    rotated: &'a [Vec<Option<C>>],
    g: &GiantOps<P, C>,
) -> Result<Vec<&'a C>, InferError> {
    g.terms
        .iter()
        .map(|t| {
            rotated
                .get(t.input)
                .and_then(|r| r.get(t.baby))
                .and_then(Option::as_ref)
                .ok_or(InferError::ModelMismatch("a baby rotation was not made"))
        })
        .collect()
}

/// A giant step's weights when all are plaintexts.
fn plain_weights<P, C>(g: &GiantOps<P, C>) -> Option<Vec<&P>> {
    g.terms
        .iter()
        .map(|t| match &t.weight {
            Operand::Plain(p) => Some(p),
            Operand::Cipher(_) => None,
        })
        .collect()
}

impl Model {
    /// Evaluates the network on one encrypted image (encoded by [`InferenceSpec::encode_input`]
    /// and encrypted at [`InferenceSpec::input_level`]: [`InferenceSpec::input_ciphertexts`]
    /// ciphertexts); the result decrypts to the logits in its first slots
    /// ([`InferenceSpec::decode_output`]). The evaluator must hold the relinearization key and
    /// the Galois keys of [`InferenceSpec::galois_steps`].
    ///
    /// A plan cut into segments is refused ([`InferError::NeedsRefresh`]): evaluate it with
    /// [`Model::evaluate_segment`], or [`Model::evaluate_refreshed`].
    pub fn evaluate(
        &self,
        eval: &Evaluator,
        inputs: &[Ciphertext],
    ) -> Result<Ciphertext, InferError> {
        if self.spec().segments() > 1 {
            return Err(InferError::NeedsRefresh {
                segments: self.spec().segments(),
            });
        }
        self.evaluate_segment(eval, 0, inputs)
    }

    /// Evaluates segment `k` ([`InferenceSpec::segments`]): the first on the image's
    /// ciphertexts, each later one on the refreshed output of the one before (one ciphertext at
    /// the input level, with the refresh's scale). Every segment but the last returns its output
    /// at the refresh's level, ready for [`super::refresh::mask`]; the last, the logits.
    pub fn evaluate_segment(
        &self,
        eval: &Evaluator,
        k: usize,
        inputs: &[Ciphertext],
    ) -> Result<Ciphertext, InferError> {
        let backend = CpuBackend::for_model(eval, self.spec().parameters(), self.ctx())?;
        check_segment_inputs(self.ctx(), self.spec(), k, inputs)?;
        let out = run(
            &backend,
            &self.segment(k)?,
            inputs.to_vec(),
            self.spec().step_primes(),
        )?;
        drop_to_refresh(eval, self.spec(), k, out)
    }

    /// Evaluates every segment, `refresh(k, ct)` turning segment k's output into segment k + 1's
    /// input (the requester's round trip, or a local decryption in tests and benchmarks).
    pub fn evaluate_refreshed(
        &self,
        eval: &Evaluator,
        inputs: &[Ciphertext],
        mut refresh: impl FnMut(usize, Ciphertext) -> Result<Ciphertext, InferError>,
    ) -> Result<Ciphertext, InferError> {
        let mut out = self.evaluate_segment(eval, 0, inputs)?;
        for k in 1..self.spec().segments() {
            let next = refresh(k - 1, out)?;
            out = self.evaluate_segment(eval, k, std::slice::from_ref(&next))?;
        }
        Ok(out)
    }
}

/// Segment `k`'s output, dropped to its refresh's level when a refresh follows.
pub(crate) fn drop_to_refresh(
    eval: &Evaluator,
    spec: &super::InferenceSpec,
    k: usize,
    out: Ciphertext,
) -> Result<Ciphertext, InferError> {
    match spec.refreshes().get(k) {
        Some(p) if out.level() > p.level => Ok(eval.drop_levels(&out, out.level() - p.level)?),
        _ => Ok(out),
    }
}

/// Runs `stages` (a whole plan, or one segment of it) on their input ciphertexts, each
/// rescaling step dividing by `k` primes; the result is the last stage's output.
pub(crate) fn run<B: Backend>(
    b: &B,
    stages: &[ModelStage<B::Pt, B::Ct>],
    inputs: Vec<B::Ct>,
    k: usize,
) -> Result<B::Ct, InferError> {
    let mut xs = inputs;
    // the inputs of the residual blocks under way, for their shortcuts
    let mut kept: Vec<B::Ct> = Vec::new();
    fn one<C>(xs: &[C]) -> Result<&C, InferError> {
        match xs {
            [x] => Ok(x),
            _ => Err(InferError::ModelMismatch(
                "a stage after the first map needs one input",
            )),
        }
    }
    for stage in stages {
        let y = match stage {
            ModelStage::Linear(l) => linear(b, &xs, l, k)?,
            ModelStage::Activation { c, post } => {
                activation(b, one(&xs)?, c.as_ref(), post.as_ref(), k)?
            }
            ModelStage::Save => {
                kept.push(b.copy(one(&xs)?)?);
                continue;
            }
            ModelStage::AddShortcut(map) => {
                let x = kept.pop().ok_or(InferError::ModelMismatch(
                    "a shortcut without its block's input",
                ))?;
                let short = match map {
                    Some(l) => linear(b, std::slice::from_ref(&x), l, k)?,
                    None => x,
                };
                let mut y = b.copy(one(&xs)?)?;
                // the body's output is at the lower level: the sum is taken there
                b.add_assign(&mut y, &short)?;
                y
            }
        };
        xs = vec![y];
    }
    xs.pop().ok_or(InferError::ModelMismatch("no stages"))
}

fn linear<B: Backend>(
    b: &B,
    xs: &[B::Ct],
    l: &LinearOps<B::Pt, B::Ct>,
    k: usize,
) -> Result<B::Ct, InferError> {
    let LinearOps {
        baby_steps,
        babies,
        giants,
        fold_steps,
        bias,
        replicate,
    } = l;
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
    // plaintext weights: every giant step's products in one pass over the rotations
    let sums: Vec<B::Ct> = match giants.iter().map(plain_weights).collect::<Option<Vec<_>>>() {
        Some(ws) if !giants.is_empty() => {
            let pairs = giants
                .iter()
                .zip(ws)
                .map(|(g, w)| Ok((giant_inputs(&rotated, g)?, w)))
                .collect::<Result<Vec<_>, InferError>>()?;
            b.dot_plain_giants(&pairs)?
        }
        _ => each(b, giants.len(), |gi| {
            let g = &giants[gi];
            let ws = g
                .terms
                .iter()
                .map(|t| match &t.weight {
                    Operand::Cipher(c) => Ok(c),
                    Operand::Plain(_) => Err(InferError::ModelMismatch("mixed")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            if ws.is_empty() {
                return Err(InferError::ModelMismatch("a giant step without products"));
            }
            b.dot_cipher(&giant_inputs(&rotated, g)?, &ws)
        })?,
    };
    // rescale first: the relinearization and rotation then run one level lower
    let partial: Vec<B::Ct> = each_owned(b, sums, |_, acc| b.relinearize(b.rescale_step(acc, k)?))?;
    if partial.is_empty() {
        return Err(InferError::ModelMismatch("empty map"));
    }
    let steps: Vec<i64> = giants.iter().map(|g| g.step).collect();
    let mut y = b.rotate_sum(&partial, &steps)?;
    for &f in fold_steps {
        let r = b.rotate(&y, f)?;
        b.add_assign(&mut y, &r)?;
    }
    match bias.as_ref() {
        Some(Operand::Plain(p)) => b.add_plain(&mut y, p)?,
        Some(Operand::Cipher(c)) => b.add_assign(&mut y, c)?,
        None => {}
    }
    for &r in replicate {
        let copy = b.rotate(&y, r)?;
        b.add_assign(&mut y, &copy)?;
    }
    Ok(y)
}

fn activation<B: Backend>(
    b: &B,
    x: &B::Ct,
    c: Option<&Shift<B::Pt, B::Ct>>,
    post: Option<&Scalar<B::Ct>>,
    k: usize,
) -> Result<B::Ct, InferError> {
    let shifted = match c {
        None => None,
        Some(shift) => {
            let mut s = b.copy(x)?;
            match shift {
                Shift::Scalar(Scalar::Plain(c)) => b.add_real_const(&mut s, *c)?,
                Shift::Scalar(Scalar::Cipher(c)) | Shift::Slots(Operand::Cipher(c)) => {
                    b.add_assign(&mut s, c)?
                }
                Shift::Slots(Operand::Plain(p)) => b.add_plain(&mut s, p)?,
            }
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
