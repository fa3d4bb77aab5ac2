//! The evaluation of a [`super::BatchedModel`]'s operations on a batch, written once over a
//! [`BatchedBackend`]: maps as matrix products over whole ciphertexts, then rescale,
//! relinearization (deferred past the next map where one follows) and bias; map → activation →
//! map streamed in chunks.

use rayon::prelude::*;

use super::backend::{BatchedBackend, CpuBackend};
use super::batched::BatchedModel;
use super::batched_ops::{BatchedOp, FusedChunk, Group};
use super::error::InferError;
use crate::ckks::{Ciphertext, Evaluator};

/// f over the items, on many threads when the backend allows.
fn each<B: BatchedBackend, T: Send, R: Send>(
    b: &B,
    items: Vec<T>,
    f: impl Fn(T) -> Result<R, InferError> + Sync + Send,
) -> Result<Vec<R>, InferError> {
    if b.parallel() {
        items.into_par_iter().map(f).collect()
    } else {
        items.into_iter().map(f).collect()
    }
}

impl BatchedModel {
    /// Evaluates a batch: one ciphertext per input value in, one per logit out.
    pub fn evaluate(
        &self,
        eval: &Evaluator,
        inputs: &[Ciphertext],
    ) -> Result<Vec<Ciphertext>, InferError> {
        let backend = CpuBackend::for_model(eval, self.spec().parameters(), self.ctx())?;
        self.check_inputs(inputs)?;
        run(&backend, self.ops(), inputs)
    }
}

/// Runs every operation: one ciphertext per input value in, one per logit out.
pub(crate) fn run<B: BatchedBackend>(
    b: &B,
    ops: &[BatchedOp<B::Weights>],
    inputs: &[B::Ct],
) -> Result<Vec<B::Ct>, InferError> {
    let mut owned: Option<Vec<B::Ct>> = None;
    for op in ops {
        let cur: &[B::Ct] = owned.as_deref().unwrap_or(inputs);
        let next = match op {
            BatchedOp::Linear(l) => {
                let out = map(b, &l.groups, cur, l.bias.len(), None)?;
                finish_map(b, out, &l.bias)?
            }
            BatchedOp::Activation { c, post, lazy } => {
                let xs: Vec<&B::Ct> = cur.iter().collect();
                each(b, xs, |x| activation(b, x, *c, *post, *lazy))?
            }
            BatchedOp::Fused { chunks, c, bias } => fused(b, cur, chunks, *c, bias)?,
        };
        owned = Some(next);
    }
    match owned {
        Some(out) => Ok(out),
        None => inputs.iter().map(|x| b.copy(x)).collect(),
    }
}

/// A map's products at the scale its rescale divides back.
fn map<B: BatchedBackend>(
    b: &B,
    groups: &[Group<B::Weights>],
    xs: &[B::Ct],
    n_out: usize,
    acc: Option<Vec<B::Ct>>,
) -> Result<Vec<B::Ct>, InferError> {
    let x0 = xs
        .first()
        .ok_or(InferError::ModelMismatch("a map over no inputs"))?;
    let scale = b.scale(x0) * b.step_modulus(x0, 1);
    b.products(groups, xs, n_out, acc, scale)
}

/// Rescales, relinearizes and adds the bias to a map's products.
fn finish_map<B: BatchedBackend>(
    b: &B,
    out: Vec<B::Ct>,
    bias: &[f64],
) -> Result<Vec<B::Ct>, InferError> {
    if out.len() != bias.len() {
        return Err(InferError::ModelMismatch("a map's bias"));
    }
    let items: Vec<(B::Ct, f64)> = out.into_iter().zip(bias.iter().copied()).collect();
    each(b, items, |(ct, bias)| {
        let mut ct = b.relinearize(b.rescale(ct)?)?;
        if bias != 0.0 {
            b.add_real_const(&mut ct, bias)?;
        }
        Ok(ct)
    })
}

fn fused<B: BatchedBackend>(
    b: &B,
    xs: &[B::Ct],
    chunks: &[FusedChunk<B::Weights>],
    c: f64,
    bias: &[f64],
) -> Result<Vec<B::Ct>, InferError> {
    // the second map reads degree-2 activations two levels down, accumulated over the chunks
    let mut acc: Option<Vec<B::Ct>> = None;
    for chunk in chunks {
        let out = map(b, &chunk.first.groups, xs, chunk.first.bias.len(), None)?;
        let mapped = finish_map(b, out, &chunk.first.bias)?;
        let acts = each(b, mapped, |x| activation(b, &x, c, None, true))?;
        acc = Some(map(b, &chunk.second, &acts, bias.len(), acc)?);
    }
    let acc = acc.ok_or(InferError::ModelMismatch("empty fused map"))?;
    finish_map(b, acc, bias)
}

fn activation<B: BatchedBackend>(
    b: &B,
    x: &B::Ct,
    c: f64,
    post: Option<f64>,
    lazy: bool,
) -> Result<B::Ct, InferError> {
    let y = if c == 0.0 {
        b.mul(x, x)?
    } else {
        let mut shifted = b.copy(x)?;
        b.add_real_const(&mut shifted, c)?;
        b.mul(x, &shifted)?
    };
    let mut y = b.rescale(y)?;
    if !lazy {
        y = b.relinearize(y)?;
    }
    if let Some(a) = post {
        let q = b.step_modulus(&y, 1);
        y = b.rescale(b.mul_const(y, a, q)?)?;
    }
    Ok(y)
}
