//! DP-SGD (Abadi et al. 2016) for patient-level differential privacy at a hospital: each step
//! takes a Poisson sample of the training images (each with probability q, drawn from the
//! CSPRNG: the amplification by sampling holds only if the sample is secret), clips every
//! example's gradient to L2 norm C, adds N(0, (zC)²) to their sum and divides by the expected
//! batch q·n. The configured optimizer then steps with that gradient (post-processing). The
//! `privacy` crate's accountant gives ε for (q, z, steps).
//!
//! Every example's gradient comes from one batched forward and backward pass: a zero tensor
//! that requires its gradient is added to the output of every layer with parameters, so its
//! gradient is each example's gradient at that output; with the layer's input that gives each
//! example's parameter gradient — as an outer product whose norm is ‖a‖·‖g‖ for dense layers
//! (never formed: Goodfellow's trick), from the unfolded input patches for convolutions, as
//! sums for the quadratic activations' a and b. The clipped sum is then formed the same way,
//! weighted by each example's clip factor. Batch-norm layers are refused: they mix a batch's
//! examples, so no example has a gradient of its own.

use std::time::Instant;

use burn::module::{Module, ParamId};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::activation::log_softmax;
use burn::tensor::module::unfold4d;
use burn::tensor::ops::UnfoldOptions;
use burn::tensor::{Device, Tensor, TensorData};
use privacy::noise::add_gaussian;
use privacy::sampler::Csprng;

use crate::data::Tensors;
use crate::data::one_hot;
use crate::error::TrainError;
use crate::model::{Activations, LayerKind, LayerParams, Network};
use crate::train_config::{EpochStats, TrainConfig, TrainReport};

/// The mechanism of one local training run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DpSgd {
    /// Per-example L2 bound C.
    pub clip: f64,
    /// Noise standard deviation over C.
    pub noise_multiplier: f64,
    /// Poisson sampling rate q of each step.
    pub sample_rate: f64,
    /// Steps to take.
    pub steps: u64,
}

/// Examples per forward and backward pass: bounds the memory of the unfolded patches.
const CHUNK: usize = 256;

/// A layer with parameters as DP-SGD sees it.
#[derive(Clone, Copy)]
enum Layer {
    Conv {
        kernel: usize,
        stride: usize,
        padding: usize,
        ids: [ParamId; 2],
    },
    Dense {
        ids: [ParamId; 2],
    },
    Quad {
        ids: [ParamId; 2],
    },
}

/// The layers with parameters, in `net.params` order; batch-norm refused.
fn layers(net: &Network) -> Result<Vec<Layer>, TrainError> {
    let kinds = net
        .spec
        .layers
        .iter()
        .filter(|l| crate::model::has_params(&l.kind));
    kinds
        .zip(&net.params)
        .map(|(l, p)| match (&l.kind, p) {
            (
                LayerKind::Conv {
                    kernel,
                    stride,
                    padding,
                    ..
                },
                LayerParams::Conv(c),
            ) => Ok(Layer::Conv {
                kernel: *kernel,
                stride: *stride,
                padding: *padding,
                ids: [c.weight.id, c.bias.id],
            }),
            (_, LayerParams::Dense(d)) => Ok(Layer::Dense {
                ids: [d.weight.id, d.bias.id],
            }),
            (_, LayerParams::Quad(q)) => Ok(Layer::Quad {
                ids: [q.a.id, q.b.id],
            }),
            (_, LayerParams::Poly(_)) => Err(TrainError::invalid(
                "[privacy]",
                "DP-SGD's per-example gradients cover `quadratic` activations, not per-channel \
                 `poly` ones yet",
            )),
            _ => Err(TrainError::invalid(
                "[privacy]",
                "DP-SGD needs per-example gradients; batch-norm layers (and residual blocks, \
                 which hold them) mix a batch's examples: freeze them ([model.init] freeze, \
                 a pretrained backbone's features) and train the layers after them",
            )),
        })
        .collect()
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_default()
}

/// Sums over every dimension but the first: `[b, …]` → `[b]`.
fn per_example<const D: usize>(t: Tensor<D>) -> Tensor<1> {
    let b = t.dims()[0];
    t.reshape([b as i64, -1]).sum_dim(1).reshape([b])
}

fn per_example_act(t: &Activations) -> Tensor<1> {
    match t {
        Activations::Img(t) => per_example(t.clone()),
        Activations::Vec(t) => per_example(t.clone()),
    }
}

fn mul(a: &Activations, b: &Activations) -> Activations {
    match (a, b) {
        (Activations::Img(a), Activations::Img(b)) => Activations::Img(a.clone() * b.clone()),
        (Activations::Vec(a), Activations::Vec(b)) => Activations::Vec(a.clone() * b.clone()),
        _ => unreachable!("an output has its input's rank"),
    }
}

/// What one layer holds of a chunk between its norms and its clipped sum.
enum Held {
    /// Per-example weight gradients `[b, out, in·k·k]` and bias gradients `[b, out]`.
    Conv(Tensor<3>, Tensor<2>),
    /// Inputs `[b, in]` and output gradients `[b, out]`.
    Dense(Tensor<2>, Tensor<2>),
    /// Per-example gradients of a and b, `[b]` each.
    Quad(Tensor<1>, Tensor<1>),
}

/// One chunk's sum of clipped per-example gradients, flat in the order of [`layers`] (each
/// layer's weight, then its bias; a, then b), with the chunk's summed loss and correct
/// predictions.
fn clipped_sum(
    net: &Network,
    layers: &[Layer],
    x: Tensor<4>,
    y: &[u32],
    smoothing: f64,
    clip: f64,
) -> Result<(Vec<f32>, f64, usize), TrainError> {
    let b = y.len();
    let k = net.spec.classes;
    let mut taps: Vec<(Activations, Activations)> = Vec::with_capacity(layers.len());
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
    let device = logits.device();
    let target = Tensor::<2>::from_data(TensorData::new(one_hot(y, k, smoothing), [b, k]), &device);
    // each example's loss: the sum's gradient at a layer's output is each example's own
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
    let mut held = Vec::with_capacity(layers.len());
    for (layer, (input, zero)) in layers.iter().zip(&taps) {
        let missing = || TrainError::invalid("[privacy]", "a layer's output has no gradient");
        let g = match zero {
            Activations::Img(z) => Activations::Img(z.grad(&grads).ok_or_else(missing)?),
            Activations::Vec(z) => Activations::Vec(z.grad(&grads).ok_or_else(missing)?),
        };
        match (layer, input, g) {
            (
                Layer::Conv {
                    kernel,
                    stride,
                    padding,
                    ..
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
                add(per_example(w.clone().powi_scalar(2))
                    + per_example(bias.clone().powi_scalar(2)));
                held.push(Held::Conv(w, bias));
            }
            (Layer::Dense { .. }, Activations::Vec(a), Activations::Vec(g)) => {
                let g2 = per_example(g.clone().powi_scalar(2));
                add(per_example(a.clone().powi_scalar(2)) * g2.clone() + g2);
                held.push(Held::Dense(a.clone(), g));
            }
            (Layer::Quad { .. }, x, g) => {
                let da = per_example_act(&mul(&mul(x, x), &g));
                let db = per_example_act(&mul(x, &g));
                add(da.clone().powi_scalar(2) + db.clone().powi_scalar(2));
                held.push(Held::Quad(da, db));
            }
            _ => unreachable!("layers() follows the spec"),
        }
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
    let mut flat = Vec::new();
    for h in held {
        match h {
            Held::Conv(w, bias) => {
                let [_, out, patch] = w.dims();
                let f3: Tensor<3> = factor.clone().reshape([b, 1, 1]);
                flat.extend(values((w * f3).sum_dim(0).reshape([out * patch])));
                let f2: Tensor<2> = factor.clone().reshape([b, 1]);
                flat.extend(values((bias * f2).sum_dim(0).reshape([out])));
            }
            Held::Dense(a, g) => {
                let f2: Tensor<2> = factor.clone().reshape([b, 1]);
                // Σ cᵢ·aᵢ ⊗ gᵢ in the [in, out] layout of the weight
                flat.extend(values((a * f2.clone()).transpose().matmul(g.clone())));
                flat.extend(values((g * f2).sum_dim(0)));
            }
            Held::Quad(da, db) => {
                flat.extend(values((da * factor.clone()).sum()));
                flat.extend(values((db * factor.clone()).sum()));
            }
        }
    }
    let loss = loss_values.iter().map(|&l| f64::from(l)).sum();
    Ok((flat, loss, correct))
}

/// Gradients holding `flat` (in the order of [`clipped_sum`]) in each parameter's shape.
fn gradients(net: &Network, layers: &[Layer], flat: &[f32], device: &Device) -> GradientsParams {
    let mut out = GradientsParams::new();
    let mut at = 0;
    let mut take = |len: usize| {
        let v = flat[at..at + len].to_vec();
        at += len;
        v
    };
    for (layer, p) in layers.iter().zip(&net.params) {
        match (layer, p) {
            (Layer::Conv { ids, .. }, LayerParams::Conv(c)) => {
                let dims: [usize; 4] = c.weight.val().dims();
                let w = take(dims.iter().product());
                out.register(
                    ids[0],
                    Tensor::<4>::from_data(TensorData::new(w, dims), device),
                );
                let bias = take(dims[0]);
                out.register(
                    ids[1],
                    Tensor::<1>::from_data(TensorData::new(bias, [dims[0]]), device),
                );
            }
            (Layer::Dense { ids }, LayerParams::Dense(d)) => {
                let dims: [usize; 2] = d.weight.val().dims();
                let w = take(dims[0] * dims[1]);
                out.register(
                    ids[0],
                    Tensor::<2>::from_data(TensorData::new(w, dims), device),
                );
                let bias = take(dims[1]);
                out.register(
                    ids[1],
                    Tensor::<1>::from_data(TensorData::new(bias, [dims[1]]), device),
                );
            }
            (Layer::Quad { ids }, LayerParams::Quad(_)) => {
                for id in ids {
                    let v = take(1);
                    out.register(*id, Tensor::<1>::from_data(TensorData::new(v, [1]), device));
                }
            }
            _ => unreachable!("layers() follows net.params"),
        }
    }
    out
}

/// Trainable values: the length of [`clipped_sum`]'s vector.
fn trainable(net: &Network) -> usize {
    crate::params::manifest(&net.spec)
        .entries
        .iter()
        .filter(|e| e.trainable)
        .map(|e| e.len)
        .sum()
}

/// The sum of the clipped gradients of the examples `batch`, chunk by chunk, with their summed
/// loss and correct predictions.
fn batch_sum(
    net: &Network,
    layers: &[Layer],
    data: &Tensors,
    batch: &[usize],
    cfg: &TrainConfig,
    clip: f64,
    device: &Device,
) -> Result<(Vec<f32>, f64, usize), TrainError> {
    let [c, h, w] = data.shape;
    let (mut sum, mut loss, mut correct) = (Vec::new(), 0.0, 0);
    for idx in batch.chunks(CHUNK) {
        let (xb, yb) = data.batch(idx, None);
        let x = Tensor::<4>::from_data(TensorData::new(xb, [idx.len(), c, h, w]), device);
        let (part, l, right) = clipped_sum(net, layers, x, &yb, cfg.label_smoothing, clip)?;
        if sum.is_empty() {
            sum = part;
        } else {
            sum.iter_mut().zip(&part).for_each(|(s, p)| *s += p);
        }
        loss += l;
        correct += right;
    }
    Ok((sum, loss, correct))
}

/// Runs `dp.steps` DP-SGD steps of `cfg`'s optimizer from `net` on `data`. With frozen layers
/// (`[model.init] freeze`, a public backbone) only the layers after them train: their inputs
/// are the frozen layers' outputs in evaluation mode (running statistics, so no example's
/// features depend on another's), and the noise covers only their parameters.
pub fn train_dp(
    net: Network,
    data: &Tensors,
    cfg: &TrainConfig,
    dp: DpSgd,
    optim: &mut ModuleOptimizer,
) -> Result<(Network, TrainReport), TrainError> {
    let frozen = net.spec.frozen;
    if frozen == 0 {
        return train_dp_all(net, data, cfg, dp, optim);
    }
    let features = frozen_features(&net, data, frozen)?;
    let spec = net.spec.clone();
    let (front, tail) = net.split_at(frozen);
    let (tail, report) = train_dp_all(tail, &features, cfg, dp, optim)?;
    Ok((Network::join(front, tail, spec), report))
}

/// `data` through the first `frozen` layers of `net`, in evaluation mode.
fn frozen_features(net: &Network, data: &Tensors, frozen: usize) -> Result<Tensors, TrainError> {
    let eval = net.clone().valid();
    let device = eval
        .devices()
        .into_iter()
        .next()
        .unwrap_or_else(Device::flex)
        .without_autodiff();
    let [c, h, w] = data.shape;
    let (mut x, mut shape) = (Vec::new(), [0usize; 3]);
    let all: Vec<usize> = (0..data.len()).collect();
    for chunk in all.chunks(CHUNK) {
        let (xb, _) = data.batch(chunk, None);
        let t = Tensor::<4>::from_data(TensorData::new(xb, [chunk.len(), c, h, w]), &device);
        let out = eval.forward_until(t, frozen, &mut |_, _, o| o, &mut |_, _| {});
        let (dims, v) = match out {
            Activations::Img(t) => {
                let [_, c, h, w] = t.dims();
                ([c, h, w], values(t))
            }
            Activations::Vec(t) => ([t.dims()[1], 1, 1], values(t)),
        };
        shape = dims;
        x.extend(v);
    }
    Tensors::from_parts(x, data.y.clone(), shape)
}

fn train_dp_all(
    mut net: Network,
    data: &Tensors,
    cfg: &TrainConfig,
    dp: DpSgd,
    optim: &mut ModuleOptimizer,
) -> Result<(Network, TrainReport), TrainError> {
    let layers = layers(&net)?;
    let device = net
        .params
        .first()
        .map(|p| match p {
            LayerParams::Conv(c) => c.bias.val().device(),
            LayerParams::Dense(d) => d.bias.val().device(),
            LayerParams::Quad(q) => q.a.val().device(),
            LayerParams::Norm(_) | LayerParams::Poly(_) | LayerParams::Block(_) => {
                unreachable!("refused by layers()")
            }
        })
        .ok_or_else(|| TrainError::invalid("device", "a network without parameters"))?;
    let inner = Tensor::<1>::zeros([1], &device).inner().device();
    let params = trainable(&net);
    let mut rng = Csprng::from_os().map_err(|e| TrainError::invalid("[privacy]", e.to_string()))?;
    let n = data.len();
    let expected = (dp.sample_rate * n as f64).max(1.0);
    let q_num = (dp.sample_rate * (1u64 << 53) as f64) as u128;
    let start = Instant::now();
    let (mut loss_sum, mut seen, mut correct) = (0f64, 0usize, 0usize);
    for step in 0..dp.steps {
        // Poisson sampling: each example independently with probability q
        let batch: Vec<usize> = (0..n).filter(|_| rng.bernoulli(q_num, 1 << 53)).collect();
        let (mut sum, loss, right) = batch_sum(&net, &layers, data, &batch, cfg, dp.clip, &device)?;
        if sum.is_empty() {
            // an empty sample still takes a step of pure noise (the accountant counts it)
            sum = vec![0.0; params];
        }
        loss_sum += loss;
        seen += batch.len();
        correct += right;
        add_gaussian(&mut rng, &mut sum, dp.noise_multiplier * dp.clip);
        sum.iter_mut().for_each(|x| *x /= expected as f32);
        let grads = gradients(&net, &layers, &sum, &inner);
        let lr = cfg.lr_at(step as f64 / dp.steps.max(1) as f64 * cfg.epochs as f64);
        net = optim.step(lr, net, grads);
    }
    let secs = start.elapsed().as_secs_f64();
    let stats = EpochStats {
        epoch: 1,
        train_loss: loss_sum / seen.max(1) as f64,
        train_acc: correct as f64 / seen.max(1) as f64,
        lr: cfg.lr,
        train_seconds: secs,
        images_per_s: seen as f64 / secs.max(1e-9),
        val_acc: None,
        val_auc: None,
        val_loss: None,
    };
    tracing::info!(
        steps = dp.steps,
        examples = seen,
        loss = format!("{:.4}", stats.train_loss),
        images_per_s = format!("{:.0}", stats.images_per_s),
        "DP-SGD done"
    );
    Ok((
        net,
        TrainReport {
            epochs: vec![stats],
            train_seconds: secs,
            images_per_s: seen as f64 / secs.max(1e-9),
            returned_epoch: 1,
            mean_gradient: None,
        },
    ))
}

#[cfg(test)]
mod tests;
