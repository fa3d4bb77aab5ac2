//! Every example's gradient from one batched forward and backward pass, clipped and summed.
//!
//! A zero tensor that requires its gradient is added to the output of every operation with
//! parameters ([`Site`]: top-level layers and the convolutions, batch norms and activations
//! inside residual blocks), so its gradient is each example's gradient at that output; with the
//! operation's input that gives each example's parameter gradient — as an outer product whose
//! norm is ‖a‖·‖g‖ for dense layers (never formed: Goodfellow's trick), from the unfolded input
//! patches for convolutions, as per-channel sums for batch norms (g·x̂ and g) and polynomial
//! activations (g·x², g·x, g). That holds only while no example's output depends on another's:
//! a batch norm must normalise by fixed statistics (`[train] norm_statistics = "frozen"`, or a
//! frozen layer's evaluation mode), never by the batch's.

use burn::module::ParamId;
use burn::optim::GradientsParams;
use burn::tensor::activation::log_softmax;
use burn::tensor::module::unfold4d;
use burn::tensor::ops::UnfoldOptions;
use burn::tensor::{Device, Tensor, TensorData};

use crate::data::one_hot;
use crate::error::TrainError;
use crate::model::{Activations, Network, Site};

use super::values;

/// An operation with parameters as DP-SGD holds it.
#[derive(Clone, Debug)]
pub(super) struct Op {
    kind: OpKind,
    /// Its parameters (ids and shapes), in the order of its gradients in the flat vector.
    pub(super) params: Vec<(ParamId, Vec<usize>)>,
}

#[derive(Clone, Debug)]
enum OpKind {
    Conv {
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    Dense,
    /// A batch norm by fixed statistics: x̂ = (x − mean)·inv per channel.
    Norm {
        mean: Vec<f32>,
        inv: Vec<f32>,
    },
    /// a·x² + b·x with scalar a, b.
    Quad,
    /// a·x² + b·x + c per channel; `live` is 1 where a is inside its bounds (the clamp passes
    /// the gradient there), else 0.
    Poly {
        live: Vec<f32>,
    },
}

const BATCH_NORM: &str = "DP-SGD needs per-example gradients, and a batch norm that normalises by \
    each batch's statistics mixes a batch's examples: set [train] norm_statistics = \"frozen\" \
    (batch norms then use their running statistics, a public backbone's), or freeze them \
    ([model.init] freeze)";

fn op_of(site: Site<'_>) -> Result<Op, TrainError> {
    use crate::model::ActParamsRef;
    let dims1 = |t: &burn::module::Param<Tensor<1>>| vec![t.val().dims()[0]];
    Ok(match site {
        Site::Conv {
            p,
            kernel,
            stride,
            padding,
        } => Op {
            kind: OpKind::Conv {
                kernel,
                stride,
                padding,
            },
            params: vec![
                (p.weight.id, p.weight.val().dims().to_vec()),
                (p.bias.id, dims1(&p.bias)),
            ],
        },
        Site::Dense(p) => Op {
            kind: OpKind::Dense,
            params: vec![
                (p.weight.id, p.weight.val().dims().to_vec()),
                (p.bias.id, dims1(&p.bias)),
            ],
        },
        Site::Norm(bn) => {
            if bn.training.is_enabled() {
                return Err(TrainError::invalid("[privacy]", BATCH_NORM));
            }
            let mean = values(bn.running_mean.value());
            let inv = values(bn.running_var.value())
                .iter()
                .map(|v| 1.0 / (f64::from(*v) + bn.epsilon).sqrt() as f32)
                .collect();
            Op {
                kind: OpKind::Norm { mean, inv },
                params: vec![
                    (bn.gamma.id, dims1(&bn.gamma)),
                    (bn.beta.id, dims1(&bn.beta)),
                ],
            }
        }
        Site::Act {
            p: ActParamsRef::Quad(q),
            ..
        } => Op {
            kind: OpKind::Quad,
            params: vec![(q.a.id, vec![1]), (q.b.id, vec![1])],
        },
        Site::Act {
            p: ActParamsRef::Poly(q),
            bounds,
        } => Op {
            kind: OpKind::Poly {
                live: values(q.a.val())
                    .iter()
                    .map(|a| f32::from(u8::from(*a >= bounds[0] && *a <= bounds[1])))
                    .collect(),
            },
            params: vec![
                (q.a.id, dims1(&q.a)),
                (q.b.id, dims1(&q.b)),
                (q.c.id, dims1(&q.c)),
            ],
        },
    })
}

/// The operations with parameters of `net`, in the order its forward pass meets them; refused
/// where a batch norm normalises by the batch.
pub(super) fn layout(net: &Network, device: &Device) -> Result<Vec<Op>, TrainError> {
    let [c, h, w] = net.spec.input;
    let mut ops = Vec::new();
    let mut refused = None;
    net.forward_tapped(Tensor::zeros([1, c, h, w], device), &mut |site, _, out| {
        match op_of(site) {
            Ok(op) => ops.push(op),
            Err(e) => refused = Some(e),
        }
        out
    });
    match refused {
        Some(e) => Err(e),
        None if ops.is_empty() => Err(TrainError::invalid(
            "[privacy]",
            "a network without parameters",
        )),
        None => Ok(ops),
    }
}

/// Sums over every dimension but the first: `[b, …]` → `[b]`.
fn per_example<const D: usize>(t: Tensor<D>) -> Tensor<1> {
    let b = t.dims()[0];
    t.reshape([b as i64, -1]).sum_dim(1).reshape([b])
}

/// Per example and channel (dimension 1): `[b, c, …]` → `[b, c]`.
fn per_channel(t: &Activations) -> Tensor<2> {
    match t {
        Activations::Img(t) => {
            let [b, c, _, _] = t.dims();
            t.clone()
                .reshape([b as i64, c as i64, -1])
                .sum_dim(2)
                .reshape([b, c])
        }
        Activations::Vec(t) => t.clone(),
    }
}

/// An activation as an image: vectors `[n, c]` as `[n, c, 1, 1]`.
fn as_image(t: &Activations) -> Tensor<4> {
    match t {
        Activations::Img(t) => t.clone(),
        Activations::Vec(t) => {
            let [n, c] = t.dims();
            t.clone().reshape([n, c, 1, 1])
        }
    }
}

/// `t` back in the rank of `like`.
fn shaped_as(t: Tensor<4>, like: &Activations) -> Activations {
    match like {
        Activations::Img(_) => Activations::Img(t),
        Activations::Vec(_) => {
            let [n, c, _, _] = t.dims();
            Activations::Vec(t.reshape([n, c]))
        }
    }
}

/// `f` of `t` and a per-channel constant (`[1, c, 1, 1]`, broadcast).
fn by_channel(
    t: &Activations,
    k: &[f32],
    f: impl Fn(Tensor<4>, Tensor<4>) -> Tensor<4>,
) -> Activations {
    let x = as_image(t);
    let k = Tensor::<4>::from_data(TensorData::new(k.to_vec(), [1, k.len(), 1, 1]), &x.device());
    shaped_as(f(x, k), t)
}

fn mul(a: &Activations, b: &Activations) -> Activations {
    shaped_as(as_image(a) * as_image(b), a)
}

/// What one operation holds of a chunk between its norms and its clipped sum.
enum Held {
    /// Per-example weight gradients `[b, out, in·k·k]` and bias gradients `[b, out]`.
    Conv(Tensor<3>, Tensor<2>),
    /// Inputs `[b, in]` and output gradients `[b, out]`.
    Dense(Tensor<2>, Tensor<2>),
    /// Per-example gradients of each parameter, `[b, len]` each.
    Each(Vec<Tensor<2>>),
}

/// One chunk's sum of clipped per-example gradients, flat in the order of `ops` (each
/// operation's parameters in turn), with the chunk's summed loss and correct predictions.
pub(super) fn clipped_sum(
    net: &Network,
    ops: &[Op],
    x: Tensor<4>,
    y: &[u32],
    smoothing: f64,
    clip: f64,
) -> Result<(Vec<f32>, f64, usize), TrainError> {
    let b = y.len();
    let k = net.spec.classes;
    let mut taps: Vec<(Activations, Activations)> = Vec::with_capacity(ops.len());
    let logits = net.forward_tapped(x, &mut |_, input, out| {
        let zero = match &out {
            Activations::Img(t) => {
                Activations::Img(Tensor::zeros(t.dims(), &t.device()).require_grad())
            }
            Activations::Vec(t) => {
                Activations::Vec(Tensor::zeros(t.dims(), &t.device()).require_grad())
            }
        };
        let input = match input {
            Activations::Img(t) => Activations::Img(t.clone().inner()),
            Activations::Vec(t) => Activations::Vec(t.clone().inner()),
        };
        taps.push((input, zero.clone()));
        match (out, zero) {
            (Activations::Img(o), Activations::Img(z)) => Activations::Img(o + z),
            (Activations::Vec(o), Activations::Vec(z)) => Activations::Vec(o + z),
            _ => unreachable!("the zero has the output's rank"),
        }
    });
    if taps.len() != ops.len() {
        return Err(TrainError::invalid(
            "[privacy]",
            format!(
                "{} operations with parameters in the pass, {} in the layout",
                taps.len(),
                ops.len()
            ),
        ));
    }
    let device = logits.device();
    let target = Tensor::<2>::from_data(TensorData::new(one_hot(y, k, smoothing), [b, k]), &device);
    // each example's loss: the sum's gradient at an operation's output is each example's own
    let losses = (log_softmax(logits.clone(), 1) * target).sum_dim(1).neg();
    let grads = losses.clone().sum().backward();
    let loss_values = values(losses.inner());
    if let Some(l) = loss_values.iter().find(|l| !l.is_finite()) {
        return Err(TrainError::Diverged {
            epoch: 1,
            batch: 0,
            loss: *l,
        });
    }
    let predicted = values(logits.inner().argmax(1).float());
    let correct = predicted
        .iter()
        .zip(y)
        .filter(|(p, y)| **p as u32 == **y)
        .count();

    let mut norm2: Option<Tensor<1>> = None;
    let mut add = |t: Tensor<1>| {
        norm2 = Some(match norm2.take() {
            Some(n) => n + t,
            None => t,
        })
    };
    let mut held = Vec::with_capacity(ops.len());
    for (op, (input, zero)) in ops.iter().zip(&taps) {
        let missing = || TrainError::invalid("[privacy]", "an operation's output has no gradient");
        let g = match zero {
            Activations::Img(z) => Activations::Img(z.grad(&grads).ok_or_else(missing)?),
            Activations::Vec(z) => Activations::Vec(z.grad(&grads).ok_or_else(missing)?),
        };
        let h = match (&op.kind, input, g) {
            (
                OpKind::Conv {
                    kernel,
                    stride,
                    padding,
                },
                Activations::Img(x),
                Activations::Img(g),
            ) => {
                let [_, out, ..] = g.dims();
                let patches = unfold4d(
                    x.clone(),
                    [*kernel; 2],
                    UnfoldOptions::new([*stride; 2], [*padding; 2], [1, 1]),
                );
                let g: Tensor<3> = g.reshape([b as i64, out as i64, -1]);
                let w = g.clone().matmul(patches.swap_dims(1, 2));
                let bias: Tensor<2> = g.sum_dim(2).reshape([b, out]);
                Held::Conv(w, bias)
            }
            (OpKind::Dense, Activations::Vec(a), Activations::Vec(g)) => Held::Dense(a.clone(), g),
            (OpKind::Norm { mean, inv }, x, g) => {
                let centred = by_channel(x, mean, |x, m| x - m);
                let xhat = by_channel(&centred, inv, |x, i| x * i);
                Held::Each(vec![per_channel(&mul(&xhat, &g)), per_channel(&g)])
            }
            (OpKind::Quad, x, g) => {
                let scalar = |t: Activations| {
                    let t = match t {
                        Activations::Img(t) => per_example(t),
                        Activations::Vec(t) => per_example(t),
                    };
                    t.reshape([b, 1])
                };
                let x2g = mul(&mul(x, x), &g);
                Held::Each(vec![scalar(x2g), scalar(mul(x, &g))])
            }
            (OpKind::Poly { live }, x, g) => {
                let x2g = by_channel(&mul(&mul(x, x), &g), live, |t, l| t * l);
                Held::Each(vec![
                    per_channel(&x2g),
                    per_channel(&mul(x, &g)),
                    per_channel(&g),
                ])
            }
            _ => unreachable!("an operation's input has the rank its kind takes"),
        };
        let squares = match &h {
            Held::Conv(w, bias) => Some(
                per_example(w.clone().powi_scalar(2)) + per_example(bias.clone().powi_scalar(2)),
            ),
            Held::Dense(a, g) => {
                let g2 = per_example(g.clone().powi_scalar(2));
                Some(per_example(a.clone().powi_scalar(2)) * g2.clone() + g2)
            }
            Held::Each(ts) => ts
                .iter()
                .map(|t| per_example(t.clone().powi_scalar(2)))
                .reduce(|a, b| a + b),
        };
        if let Some(n) = squares {
            add(n);
        }
        held.push(h);
    }
    let Some(norm2) = norm2 else {
        return Err(TrainError::invalid(
            "[privacy]",
            "a network without parameters",
        ));
    };
    // each example's factor min(1, C/‖g‖)
    let factor = norm2
        .sqrt()
        .clamp_min(1e-12)
        .recip()
        .mul_scalar(clip)
        .clamp_max(1.0);
    let f2: Tensor<2> = factor.clone().reshape([b, 1]);
    let mut flat = Vec::new();
    for h in held {
        match h {
            Held::Conv(w, bias) => {
                let [_, out, patch] = w.dims();
                let f3: Tensor<3> = factor.clone().reshape([b, 1, 1]);
                flat.extend(values((w * f3).sum_dim(0).reshape([out * patch])));
                flat.extend(values((bias * f2.clone()).sum_dim(0).reshape([out])));
            }
            Held::Dense(a, g) => {
                // Σ cᵢ·aᵢ ⊗ gᵢ in the [in, out] layout of the weight
                flat.extend(values((a * f2.clone()).transpose().matmul(g.clone())));
                flat.extend(values((g * f2.clone()).sum_dim(0)));
            }
            Held::Each(ts) => {
                for t in ts {
                    flat.extend(values((t * f2.clone()).sum_dim(0)));
                }
            }
        }
    }
    let loss = loss_values.iter().map(|&l| f64::from(l)).sum();
    Ok((flat, loss, correct))
}

/// Gradients holding `flat` (in the order of [`clipped_sum`]) in each parameter's shape.
pub(super) fn gradients(ops: &[Op], flat: &[f32], device: &Device) -> GradientsParams {
    let mut out = GradientsParams::new();
    let mut at = 0;
    for (id, dims) in ops.iter().flat_map(|op| &op.params) {
        let len: usize = dims.iter().product();
        let v = flat[at..at + len].to_vec();
        at += len;
        match dims.len() {
            1 => out.register(
                *id,
                Tensor::<1>::from_data(TensorData::new(v, [dims[0]]), device),
            ),
            2 => out.register(
                *id,
                Tensor::<2>::from_data(TensorData::new(v, [dims[0], dims[1]]), device),
            ),
            _ => out.register(
                *id,
                Tensor::<4>::from_data(
                    TensorData::new(v, [dims[0], dims[1], dims[2], dims[3]]),
                    device,
                ),
            ),
        }
    }
    out
}

/// Trainable values: the length of [`clipped_sum`]'s vector.
pub(super) fn trainable(ops: &[Op]) -> usize {
    ops.iter()
        .flat_map(|op| &op.params)
        .map(|(_, d)| d.iter().product::<usize>())
        .sum()
}
