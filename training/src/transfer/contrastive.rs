//! Self-supervised pretraining on images without labels (`[pretrain] method = "contrastive"`):
//! SimCLR's objective (Chen et al., 2020). Each image of a batch is augmented twice by `[train]`'s
//! augmentation; the network's last layer (a dense layer of `projection` outputs) is the
//! projection head; the loss (NT-Xent) asks each view's normalised output to be nearer its
//! twin's than any other of the batch's 2B − 1, at `temperature`. Labels are never read while
//! training; the sources' labels only measure the features afterwards, by the accuracy of a
//! k-nearest-neighbour vote over the training images' features (the layer before the head).

use std::time::Instant;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;

use crate::batch_readout::Pending;
use crate::data::Tensors;
use crate::error::TrainError;
use crate::model::Network;
use crate::train::progress_bar;
use crate::train_config::{EpochStats, TrainConfig, TrainReport};

/// Neighbours of the k-NN vote (as in Wu et al., 2018, and DINO's evaluation).
pub const KNN: usize = 20;

/// Each row over its L2 norm.
fn normalise(z: Tensor<2>) -> Tensor<2> {
    let norm = z.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-8);
    z / norm
}

/// The NT-Xent logits of `z` (`[2B, d]`, the two views of image i at rows i and B + i): the
/// cosine similarities over `temperature`, each row's own similarity taken out.
fn pair_logits(z: Tensor<2>, temperature: f64, device: &Device) -> Tensor<2> {
    let n = z.dims()[0];
    let z = normalise(z);
    let sim = z
        .clone()
        .matmul(z.transpose())
        .div_scalar(temperature as f32);
    let mut own = vec![0f32; n * n];
    for i in 0..n {
        own[i * n + i] = -1e9;
    }
    sim + Tensor::<2>::from_data(TensorData::new(own, [n, n]), device)
}

/// Each row's twin: B + i for i < B, i − B after.
fn twins(b: usize) -> Vec<u32> {
    (0..2 * b).map(|i| ((i + b) % (2 * b)) as u32).collect()
}

/// Trains `net` (on an autodiff device) with the contrastive objective on `data`'s images.
/// The report's `train_acc` is how often a view's nearest other view was its twin.
pub fn train_contrastive(
    mut net: Network,
    data: &Tensors,
    cfg: &TrainConfig,
    temperature: f64,
    progress: bool,
) -> Result<(Network, TrainReport), TrainError> {
    cfg.validate()?;
    let augment = cfg.augment();
    if !augment.is_active() {
        return Err(TrainError::invalid(
            "[train]",
            "contrastive pretraining learns what two augmented views of an image share: set \
             [train] augmentation (shift, hflip, rotate, scale, brightness, contrast)",
        ));
    }
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(TrainError::invalid(
            "[pretrain] temperature",
            format!("{temperature}: must be a positive number (SimCLR uses 0.1–0.5)"),
        ));
    }
    if data.len() < 2 {
        return Err(TrainError::invalid(
            "training data",
            format!("{} images: at least 2 are needed", data.len()),
        ));
    }
    let device = net
        .devices()
        .into_iter()
        .next()
        .unwrap_or_else(|| Device::flex().autodiff());
    let mut optim = cfg.optimizer();
    device.seed(cfg.seed);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let [c, h, w] = data.shape;
    let per = c * h * w;
    let mut order: Vec<usize> = (0..data.len()).collect();
    // whole batches only: the last partial one would compare fewer negatives
    let batches = (data.len() / cfg.batch_size).max(1);
    let b_of = |bi: usize| {
        let s = bi * cfg.batch_size;
        (s, (s + cfg.batch_size).min(data.len()))
    };
    let (mut stats, mut total_secs, mut total_images) = (Vec::new(), 0.0, 0usize);
    for epoch in 1..=cfg.epochs {
        order.shuffle(&mut rng);
        let bar = progress_bar(progress, batches as u64, epoch, cfg.epochs);
        let start = Instant::now();
        let (mut loss_sum, mut correct, mut seen, mut lr) = (0f64, 0usize, 0usize, cfg.lr);
        let mut pending = Pending::default();
        for bi in 0..batches {
            let (s, e) = b_of(bi);
            let idx = &order[s..e];
            let b = idx.len();
            let (mut x, _) = data.batch(idx, Some((&mut rng, &augment)));
            let (second, _) = data.batch(idx, Some((&mut rng, &augment)));
            x.extend(second);
            debug_assert_eq!(x.len(), 2 * b * per);
            let x = Tensor::<4>::from_data(TensorData::new(x, [2 * b, c, h, w]), &device);
            let (z, range) = if cfg.range_penalty > 0.0 {
                net.forward_with_range(x, cfg.range_bound as f32)
            } else {
                (net.forward(x), None)
            };
            let logits = pair_logits(z, temperature, &device);
            let y = twins(b);
            let target = Tensor::<2>::from_data(
                TensorData::new(crate::data::one_hot(&y, 2 * b, 0.0), [2 * b, 2 * b]),
                &device,
            );
            let loss = (log_softmax(logits.clone(), 1) * target)
                .sum()
                .neg()
                .div_scalar((2 * b) as f32);
            let loss = match range {
                Some(r) => loss + r.mul_scalar(cfg.range_penalty as f32),
                None => loss,
            };
            pending.push(loss.clone(), logits, &y);
            if (pending.full() || bi + 1 == batches)
                && let Err((batch, loss)) = pending.read(&mut loss_sum, &mut correct)
            {
                bar.abandon();
                return Err(TrainError::Diverged { epoch, batch, loss });
            }
            seen += 2 * b;
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            lr = cfg.lr_at((epoch - 1) as f64 + bi as f64 / batches as f64);
            net = optim.step(lr, net, grads);
            bar.inc(1);
        }
        let secs = start.elapsed().as_secs_f64();
        bar.finish_and_clear();
        total_secs += secs;
        total_images += seen / 2;
        let st = EpochStats {
            epoch,
            train_loss: loss_sum / pending.images_read().max(1) as f64,
            train_acc: correct as f64 / seen.max(1) as f64,
            lr,
            train_seconds: secs,
            images_per_s: (seen / 2) as f64 / secs.max(1e-9),
            val_acc: None,
            val_auc: None,
            val_loss: None,
        };
        tracing::info!(
            epoch,
            loss = format!("{:.4}", st.train_loss),
            twin_found = format!("{:.4}", st.train_acc),
            seconds = format!("{secs:.1}"),
            images_per_s = format!("{:.0}", st.images_per_s),
            "contrastive epoch done"
        );
        stats.push(st);
    }
    Ok((
        net,
        TrainReport {
            epochs: stats,
            train_seconds: total_secs,
            images_per_s: total_images as f64 / total_secs.max(1e-9),
            returned_epoch: cfg.epochs,
            mean_gradient: None,
        },
    ))
}

/// The normalised features of `data` at the layer before the network's last (the projection
/// head), `[n × d]` row-major with d.
fn features(net: &Network, data: &Tensors) -> Result<(Vec<f32>, usize), TrainError> {
    let f = net.features_until(data, net.spec.layers.len().saturating_sub(1))?;
    let d = f.per_image();
    let all: Vec<usize> = (0..f.len()).collect();
    let (mut x, _) = f.batch(&all, None);
    for row in x.chunks_exact_mut(d) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-8);
        row.iter_mut().for_each(|v| *v /= norm);
    }
    Ok((x, d))
}

/// The accuracy on `test` of a [`KNN`]-neighbour majority vote (cosine similarity of the
/// features) over `train`'s labelled features: how well the features separate the classes
/// without any training on the labels.
pub fn knn_accuracy(net: &Network, train: &Tensors, test: &Tensors) -> Result<f64, TrainError> {
    if train.is_empty() || test.is_empty() {
        return Err(TrainError::invalid("k-NN", "no images to compare"));
    }
    let (tf, d) = features(net, train)?;
    let (qf, _) = features(net, test)?;
    let classes = train
        .y
        .iter()
        .chain(&test.y)
        .max()
        .map_or(1, |m| *m as usize + 1);
    let k = KNN.min(train.len());
    let mut right = 0usize;
    let mut sims: Vec<(f32, u32)> = Vec::with_capacity(train.len());
    for (q, &label) in qf.chunks_exact(d).zip(&test.y) {
        sims.clear();
        sims.extend(
            tf.chunks_exact(d)
                .zip(&train.y)
                .map(|(t, &y)| (t.iter().zip(q).map(|(a, b)| a * b).sum::<f32>(), y)),
        );
        sims.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
        let mut votes = vec![0usize; classes];
        sims[..k].iter().for_each(|&(_, y)| votes[y as usize] += 1);
        let best = (0..classes).max_by_key(|&c| (votes[c], std::cmp::Reverse(c)));
        right += usize::from(best == Some(label as usize));
    }
    Ok(right as f64 / test.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pair_logits_leave_out_each_row_and_peak_at_the_twin() {
        let device = Device::flex();
        // two images, each view equal to its twin: the twin is the nearest other row
        let z = Tensor::<2>::from_data(
            TensorData::new(vec![1.0, 0.0, 0.0, 2.0, 3.0, 0.0, 0.0, 0.5], [4, 2]),
            &device,
        );
        let l = crate::dp_sgd::values(pair_logits(z, 0.5, &device));
        assert_eq!(twins(2), vec![2, 3, 0, 1]);
        for (i, row) in l.chunks_exact(4).enumerate() {
            assert!(row[i] < -1e8, "row {i} keeps itself: {row:?}");
            let best = (0..4).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            assert_eq!(best, twins(2)[i] as usize, "row {i}: {row:?}");
            // cos = 1 for the twin, over the temperature
            assert!((row[best] - 2.0).abs() < 1e-5, "{row:?}");
        }
    }
}
