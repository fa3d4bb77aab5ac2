//! DP-SGD (Abadi et al. 2016) for patient-level differential privacy at a hospital: each step
//! takes a Poisson sample of the training images (each with probability q, drawn from the
//! CSPRNG: the amplification by sampling holds only if the sample is secret), clips every
//! example's gradient to L2 norm C, adds N(0, (zC)²) to their sum and divides by the expected
//! batch q·n. The configured optimizer then steps with that gradient (post-processing). The
//! `privacy` crate's accountant gives ε for (q, z, steps).
//!
//! Every example's gradient comes from one batched forward and backward pass
//! ([`per_example`]): dense layers, convolutions, quadratic and per-channel polynomial
//! activations, batch norms with fixed statistics and residual blocks made of them. A batch
//! norm that normalises by each batch is refused: it mixes a batch's examples, so no example
//! would have a gradient of its own.

use std::time::Instant;

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::tensor::{Device, Tensor, TensorData};
use privacy::noise::add_gaussian;
use privacy::sampler::Csprng;

use crate::data::Tensors;
use crate::error::TrainError;
use crate::model::Network;

mod per_example;
use crate::train_config::{EpochStats, TrainConfig, TrainReport};
use per_example::{Op, clipped_sum, gradients, layout, trainable};

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

pub(crate) fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_default()
}

/// The sum of the clipped gradients of the examples `batch`, chunk by chunk, with their summed
/// loss and correct predictions.
fn batch_sum(
    net: &Network,
    ops: &[Op],
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
        let (part, l, right) = clipped_sum(net, ops, x, &yb, cfg.label_smoothing, clip)?;
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
    let features = net.features_until(data, frozen)?;
    let spec = net.spec.clone();
    let (front, tail) = net.split_at(frozen);
    let (tail, report) = train_dp_all(tail, &features, cfg, dp, optim)?;
    Ok((Network::join(front, tail, spec), report))
}

fn train_dp_all(
    mut net: Network,
    data: &Tensors,
    cfg: &TrainConfig,
    dp: DpSgd,
    optim: &mut ModuleOptimizer,
) -> Result<(Network, TrainReport), TrainError> {
    let device = net
        .devices()
        .into_iter()
        .next()
        .ok_or_else(|| TrainError::invalid("device", "a network without parameters"))?;
    let ops = layout(&net, &device)?;
    let inner = Tensor::<1>::zeros([1], &device).inner().device();
    let params = trainable(&ops);
    let mut rng = Csprng::from_os().map_err(|e| TrainError::invalid("[privacy]", e.to_string()))?;
    let n = data.len();
    let expected = (dp.sample_rate * n as f64).max(1.0);
    let q_num = (dp.sample_rate * (1u64 << 53) as f64) as u128;
    let start = Instant::now();
    let (mut loss_sum, mut seen, mut correct) = (0f64, 0usize, 0usize);
    for step in 0..dp.steps {
        // Poisson sampling: each example independently with probability q
        let batch: Vec<usize> = (0..n).filter(|_| rng.bernoulli(q_num, 1 << 53)).collect();
        let (mut sum, loss, right) = batch_sum(&net, &ops, data, &batch, cfg, dp.clip, &device)?;
        if sum.is_empty() {
            // an empty sample still takes a step of pure noise (the accountant counts it)
            sum = vec![0.0; params];
        }
        loss_sum += loss;
        seen += batch.len();
        correct += right;
        add_gaussian(&mut rng, &mut sum, dp.noise_multiplier * dp.clip);
        sum.iter_mut().for_each(|x| *x /= expected as f32);
        let grads = gradients(&ops, &sum, &inner);
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
