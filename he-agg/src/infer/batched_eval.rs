//! The evaluation of a [`super::BatchedModel`]'s operations on a batch, written once over a
//! [`BatchedBackend`]: maps as matrix products over whole ciphertexts, then rescale,
//! relinearization (deferred past the next map where one follows) and bias; map → activation →
//! map streamed in chunks; a residual block's input kept (moved, not copied) until its shortcut
//! is added.

use rayon::prelude::*;

use super::backend::BatchedBackend;
use super::batched_ops::{BatchedLinear, BatchedOp, FusedChunk, Group};
use super::error::InferError;

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

/// Where the current values are: the batch's inputs, the last operation's outputs, or the
/// input of the block under way (kept for its shortcut).
enum Current<C> {
    Inputs,
    Owned(Vec<C>),
    Kept,
}

/// Runs one segment's operations: one ciphertext per input value in, one per value out (per
/// logit after the last). Values are dropped as soon as nothing reads them (a batch of a deep
/// network holds thousands of ciphertexts: memory, not time, bounds it).
pub(crate) fn run<B: BatchedBackend>(
    b: &B,
    ops: &[BatchedOp<B::Weights>],
    inputs: &[B::Ct],
) -> Result<Vec<B::Ct>, InferError> {
    let mut current: Current<B::Ct> = Current::Inputs;
    // the inputs of the blocks under way, innermost last
    let mut kept: Vec<Vec<B::Ct>> = Vec::new();
    for op in ops {
        let taken = std::mem::replace(&mut current, Current::Inputs);
        let next = match op {
            BatchedOp::Linear(l) => {
                let out = {
                    let xs = view(&taken, inputs, &kept)?;
                    map(b, &l.groups, xs, l.bias.len(), None, l.multiplier)?
                };
                drop(taken);
                finish_map(b, out, &l.bias)?
            }
            BatchedOp::Activation { c, post, lazy } => match taken {
                Current::Owned(v) => {
                    let xs: Vec<(usize, B::Ct)> = v.into_iter().enumerate().collect();
                    each(b, xs, |(j, x)| activation(b, &x, c.at(j), *post, *lazy))?
                }
                other => {
                    let xs: Vec<(usize, &B::Ct)> =
                        view(&other, inputs, &kept)?.iter().enumerate().collect();
                    each(b, xs, |(j, x)| activation(b, x, c.at(j), *post, *lazy))?
                }
            },
            BatchedOp::Fused {
                chunks,
                multiplier,
                bias,
                lazy,
            } => {
                let xs = view(&taken, inputs, &kept)?;
                let acc = fused_products(b, xs, chunks, *multiplier, bias, *lazy)?;
                drop(taken);
                finish_map(b, acc, bias)?
            }
            BatchedOp::Save => {
                let values = match taken {
                    Current::Owned(v) => v,
                    other => view(&other, inputs, &kept)?
                        .iter()
                        .map(|x| b.copy(x))
                        .collect::<Result<_, _>>()?,
                };
                kept.push(values);
                current = Current::Kept;
                continue;
            }
            BatchedOp::AddShortcut { map, level } => {
                let Current::Owned(mut body) = taken else {
                    return Err(InferError::ModelMismatch(
                        "a shortcut added to a block without a body",
                    ));
                };
                let x = kept.pop().ok_or(InferError::ModelMismatch(
                    "a shortcut without its block's input",
                ))?;
                // the kept values dropped first: the map then runs on fewer limbs
                let x = each(b, x, |x| b.drop_to(x, *level))?;
                let short = match map {
                    Some(l) => {
                        let out = self::map(b, &l.groups, &x, l.bias.len(), None, l.multiplier)?;
                        drop(x);
                        finish_map(b, out, &l.bias)?
                    }
                    None => x,
                };
                if short.len() != body.len() {
                    return Err(InferError::ModelMismatch(
                        "a shortcut of another width than its block's body",
                    ));
                }
                let pairs: Vec<(&mut B::Ct, B::Ct)> = body.iter_mut().zip(short).collect();
                each(b, pairs, |(y, s)| b.add_assign(y, &s))?;
                body
            }
        };
        current = Current::Owned(next);
    }
    match current {
        Current::Owned(out) => Ok(out),
        Current::Inputs => inputs.iter().map(|x| b.copy(x)).collect(),
        Current::Kept => Err(InferError::ModelMismatch("a segment ends inside a block")),
    }
}

/// The values `current` names.
fn view<'a, C>(
    current: &'a Current<C>,
    inputs: &'a [C],
    kept: &'a [Vec<C>],
) -> Result<&'a [C], InferError> {
    Ok(match current {
        Current::Inputs => inputs,
        Current::Owned(v) => v,
        Current::Kept => kept
            .last()
            .ok_or(InferError::ModelMismatch("no kept values"))?,
    })
}

/// One map: products, rescale, relinearization, bias.
fn linear<B: BatchedBackend>(
    b: &B,
    l: &BatchedLinear<B::Weights>,
    xs: &[B::Ct],
) -> Result<Vec<B::Ct>, InferError> {
    let out = map(b, &l.groups, xs, l.bias.len(), None, l.multiplier)?;
    finish_map(b, out, &l.bias)
}

/// A map's products: at the inputs' scale times the weights' multiplier, which the rescale
/// that follows brings to the map's output scale.
fn map<B: BatchedBackend>(
    b: &B,
    groups: &[Group<B::Weights>],
    xs: &[B::Ct],
    n_out: usize,
    acc: Option<Vec<B::Ct>>,
    multiplier: f64,
) -> Result<Vec<B::Ct>, InferError> {
    let x0 = xs
        .first()
        .ok_or(InferError::ModelMismatch("a map over no inputs"))?;
    let scale = b.scale(x0) * multiplier;
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

/// A fused map → activation → map's products (the second map's, not yet rescaled).
fn fused_products<B: BatchedBackend>(
    b: &B,
    xs: &[B::Ct],
    chunks: &[FusedChunk<B::Weights>],
    multiplier: f64,
    bias: &[f64],
    lazy: bool,
) -> Result<Vec<B::Ct>, InferError> {
    // the second map reads the activations (degree 2 when lazy) two levels down, accumulated
    // over the chunks
    let mut acc: Option<Vec<B::Ct>> = None;
    for chunk in chunks {
        let mapped = linear(b, &chunk.first, xs)?;
        let items: Vec<(usize, B::Ct)> = mapped.into_iter().enumerate().collect();
        let acts = each(b, items, |(j, x)| {
            activation(b, &x, chunk.c.get(j).copied().unwrap_or(0.0), None, lazy)
        })?;
        acc = Some(map(b, &chunk.second, &acts, bias.len(), acc, multiplier)?);
    }
    acc.ok_or(InferError::ModelMismatch("empty fused map"))
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
