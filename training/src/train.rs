//! Local training and evaluation.
//!
//! [`train`] runs mini-batch training of a [`Network`] on [`Tensors`] with SGD, Adam or AdamW,
//! a learning-rate schedule (constant, step, cosine; optional linear warm-up), weight decay,
//! gradient-norm clipping, an optional FedProx proximal term, shift/flip/rotation/zoom
//! augmentation and a
//! progress bar. Everything random (shuffles, augmentation, initialisation) is seeded.
//!
//! Squares are kept from blowing up by normalising inputs with training statistics, batch-norm
//! before each activation (folded away for inference), Kaiming-uniform initialisation and
//! gradient clipping; a NaN/infinite loss stops training with [`TrainError::Diverged`].

use std::time::Instant;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;

use crate::batch_readout::Pending;
use crate::data::{Tensors, one_hot};
use crate::error::TrainError;
use crate::metrics::{EvalReport, evaluate_probs};
use crate::model::Network;
pub use crate::train_config::{
    Distill, EpochStats, NormStatistics, OptimizerKind, Schedule, ScheduleSpan, TrainConfig,
    TrainReport,
};
use crate::{param_walk, params};

// where every caller found it before the device had a file of its own
pub use crate::device::{check_device_name, select_device};

/// Options of one training run besides the hyper-parameters.
#[derive(Clone, Debug, Default)]
pub struct TrainOptions<'a> {
    /// Evaluated after every epoch when given.
    pub val: Option<&'a Tensors>,
    /// Class names for the validation report (defaults to indices).
    pub class_names: Option<&'a [String]>,
    /// Return the weights of the epoch with the best validation accuracy (needs `val`).
    pub keep_best_on_val: bool,
    /// FedProx anchor: the global model's flat vector (with `fedprox_mu > 0`).
    pub global: Option<&'a [f32]>,
    /// SCAFFOLD's correction c − cᵢ (the flat vector's length; with `[train] scaffold`): added
    /// to every step's gradient; the report then carries the steps' mean gradient without it
    /// (each tensor's clipped to `grad_clip` as the optimiser clips it).
    pub control: Option<&'a [f32]>,
    /// Show progress bars.
    pub progress: bool,
    /// Patient-level differential privacy: DP-SGD steps instead of epochs of batches.
    pub dp: Option<crate::dp_sgd::DpSgd>,
    /// Learn from a teacher's outputs too (distillation: a ReLU network converted to an
    /// HE-friendly one keeps what it learnt).
    pub teacher: Option<Teacher<'a>>,
}

/// A teacher network and how much its softened outputs weigh against the labels.
#[derive(Clone, Copy, Debug)]
pub struct Teacher<'a> {
    /// The teacher (evaluated with its running statistics, never trained).
    pub net: &'a Network,
    /// The settings.
    pub distill: Distill,
}

/// Mean cross-entropy of `logits` against `one_hot` targets over a batch of `b`.
fn cross_entropy(logits: Tensor<2>, one_hot: Tensor<2>, b: usize) -> Tensor<1> {
    (log_softmax(logits, 1) * one_hot)
        .sum()
        .neg()
        .div_scalar(b as f32)
}

pub(crate) fn progress_bar(
    show: bool,
    len: u64,
    epoch: usize,
    epochs: usize,
) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{prefix} [{bar:30}] {pos}/{len} batches {elapsed_precise} eta {eta} {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(format!("epoch {epoch}/{epochs}"));
    bar
}

/// Trains `net` (which must live on an autodiff device, e.g. `Device::flex().autodiff()`) on
/// `data` and returns the trained network and a report.
pub fn train(
    mut net: Network,
    data: &Tensors,
    cfg: &TrainConfig,
    opts: &TrainOptions<'_>,
) -> Result<(Network, TrainReport), TrainError> {
    cfg.validate()?;
    if data.is_empty() {
        return Err(TrainError::invalid("training data", "no images"));
    }
    // `[model.init] freeze`: whoever built the network, its first layers stay as they are
    net = net.freeze_front();
    if cfg.norm_statistics == NormStatistics::Frozen {
        net = net.freeze_norm_statistics();
    }
    if data.shape != net.spec.input {
        return Err(TrainError::invalid(
            "training data",
            format!(
                "images are {:?}, the network takes {:?}",
                data.shape, net.spec.input
            ),
        ));
    }
    let k = net.spec.classes;
    if let Some(&l) = data.y.iter().find(|&&l| l as usize >= k) {
        return Err(TrainError::invalid(
            "training data",
            format!("label {l} but the network has {k} classes"),
        ));
    }
    let device = net
        .devices()
        .into_iter()
        .next()
        .unwrap_or_else(|| Device::flex().autodiff());
    if !device.is_autodiff() {
        return Err(TrainError::invalid(
            "device",
            "training needs the network on an autodiff device (Device::flex().autodiff())",
        ));
    }
    let anchor = match (cfg.fedprox_mu > 0.0, opts.global) {
        (true, Some(g)) if g.len() == params::manifest(&net.spec).total => Some(g),
        (true, Some(g)) => {
            return Err(TrainError::invalid(
                "TrainOptions::global",
                format!(
                    "{} values for a network of {}",
                    g.len(),
                    params::manifest(&net.spec).total
                ),
            ));
        }
        (true, None) => {
            return Err(TrainError::invalid(
                "[train] fedprox_mu",
                "FedProx needs the global model (TrainOptions::global)",
            ));
        }
        (false, _) => None,
    };
    let total = params::manifest(&net.spec).total;
    let control = match (cfg.scaffold, opts.control) {
        (true, Some(k)) if k.len() == total && opts.dp.is_none() => Some(k),
        (true, Some(k)) if k.len() != total => {
            return Err(TrainError::invalid(
                "TrainOptions::control",
                format!("{} values for a network of {total}", k.len()),
            ));
        }
        (true, Some(_)) => {
            return Err(TrainError::invalid(
                "[train] scaffold",
                "SCAFFOLD's control variates are plain mean gradients: not under DP-SGD",
            ));
        }
        (true, None) => {
            return Err(TrainError::invalid(
                "[train] scaffold",
                "SCAFFOLD needs the federation's control variates: it is for federated runs \
                 (coordinator simulate / client run), not centralised training",
            ));
        }
        (false, _) => None,
    };
    // SCAFFOLD: Σ of the steps' gradients without the correction, and how many steps
    let mut grad_sum = control.map(|_| vec![0f64; total]);
    let mut steps = 0usize;
    let default_names: Vec<String>;
    let names = match opts.class_names {
        Some(n) => n,
        None => {
            default_names = (0..k).map(|i| i.to_string()).collect();
            &default_names
        }
    };

    let teacher = match opts.teacher {
        Some(t) => {
            t.distill.validate()?;
            if t.net.spec.input != net.spec.input || t.net.spec.classes != k {
                return Err(TrainError::invalid(
                    "teacher",
                    format!(
                        "the teacher reads {:?} and gives {} classes, the student {:?} and {k}",
                        t.net.spec.input, t.net.spec.classes, net.spec.input
                    ),
                ));
            }
            Some((t.net.clone().valid(), t.distill))
        }
        None => None,
    };
    let mut optim = cfg.optimizer();
    if let Some(dp) = opts.dp {
        if teacher.is_some() {
            return Err(TrainError::invalid(
                "teacher",
                "distillation under DP-SGD is not supported (the teacher saw the same images)",
            ));
        }
        return crate::dp_sgd::train_dp(net, data, cfg, dp, &mut optim);
    }
    let augment = cfg.augment();
    if augment.is_active() && net.spec.front.is_some() {
        // the data are the front's features by now, not images
        return Err(TrainError::invalid(
            "[train]",
            "augmentation (shift, hflip, rotate, scale, brightness, contrast) moves pixels, and a \
             network with [model.front] trains on the front's features: set them to 0",
        ));
    }
    // Dropout draws from the backend's generator.
    device.seed(cfg.seed);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let n = data.len();
    let [c, h, w] = data.shape;
    let mut order: Vec<usize> = (0..n).collect();
    let batches: Vec<(usize, usize)> = {
        let mut v = Vec::new();
        let mut s = 0;
        while s < n {
            let e = (s + cfg.batch_size).min(n);
            // A batch of one gives batch-norm no variance; fold it into the previous batch.
            if e - s < 2 && !v.is_empty() {
                if let Some(last) = v.last_mut() {
                    let (a, _): (usize, usize) = *last;
                    *last = (a, e);
                }
            } else {
                v.push((s, e));
            }
            s = e;
        }
        v
    };
    let mut stats = Vec::with_capacity(cfg.epochs);
    let mut total_train = 0.0;
    let mut total_images = 0usize;
    let mut best: Option<(f64, usize, Vec<f32>)> = None;
    for epoch in 1..=cfg.epochs {
        order.shuffle(&mut rng);
        let bar = progress_bar(opts.progress, batches.len() as u64, epoch, cfg.epochs);
        let start = Instant::now();
        let mut loss_sum = 0.0f64;
        let mut correct = 0usize;
        let mut seen = 0usize;
        let mut lr = cfg.lr;
        let mut pending = Pending::default();
        for (bi, &(s, e)) in batches.iter().enumerate() {
            let idx = &order[s..e];
            let b = idx.len();
            let aug = augment.is_active().then_some((&mut rng, &augment));
            let (xb, yb) = data.batch(idx, aug);
            let soft = match &teacher {
                Some((t, d)) => Some(teacher_targets(
                    t,
                    &xb,
                    [b, c, h, w],
                    d.temperature,
                    &device,
                )?),
                None => None,
            };
            let x = Tensor::<4>::from_data(TensorData::new(xb, [b, c, h, w]), &device);
            let target = Tensor::<2>::from_data(
                TensorData::new(one_hot(&yb, k, cfg.label_smoothing), [b, k]),
                &device,
            );
            let (logits, range) = if cfg.range_penalty > 0.0 {
                net.forward_with_range(x, cfg.range_bound as f32)
            } else {
                (net.forward(x), None)
            };
            let ce = match (&teacher, soft) {
                (Some((_, d)), Some(soft)) => {
                    let hard = cross_entropy(logits.clone(), target, b);
                    let temp = d.temperature as f32;
                    let kd = cross_entropy(logits.clone().div_scalar(temp), soft, b)
                        .mul_scalar(temp * temp);
                    hard.mul_scalar(1.0 - d.alpha as f32) + kd.mul_scalar(d.alpha as f32)
                }
                _ => cross_entropy(logits.clone(), target, b),
            };
            let ce = match range {
                Some(r) => ce + r.mul_scalar(cfg.range_penalty as f32),
                None => ce,
            };
            let loss = match anchor.and_then(|a| param_walk::squared_distance(&net, a)) {
                Some(p) => ce + p.mul_scalar((cfg.fedprox_mu / 2.0) as f32),
                None => ce,
            };
            // the loss reported is without SCAFFOLD's linear term (a correction, not a loss);
            // it and the batch's accuracy are read with the next batches' (see `Pending`)
            pending.push(loss.clone(), logits, &yb);
            let loss = match control.and_then(|k| param_walk::dot(&net, k)) {
                Some(d) => loss + d,
                None => loss,
            };
            if (pending.full() || bi + 1 == batches.len())
                && let Err((batch, loss)) = pending.read(&mut loss_sum, &mut correct)
            {
                bar.abandon();
                return Err(TrainError::Diverged { epoch, batch, loss });
            }
            seen += b;
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            if let Some(sum) = grad_sum.as_mut() {
                // as clipped by the optimiser, tensor by tensor: a deep polynomial network's raw
                // gradients can be orders above what a step uses (they once put values past
                // ±64 into cᵢ and diverged the next round)
                param_walk::add_gradients(&net, &grads, sum, 1.0, control, cfg.grad_clip);
                steps += 1;
            }
            lr = cfg.lr_at((epoch - 1) as f64 + bi as f64 / batches.len() as f64);
            net = optim.step(lr, net, grads);
            bar.inc(1);
            if bi % 10 == 0 {
                let secs = start.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!(
                    "loss {:.4} {:.0} img/s",
                    loss_sum / pending.images_read().max(1) as f64,
                    seen as f64 / secs
                ));
            }
        }
        let secs = start.elapsed().as_secs_f64();
        bar.finish_and_clear();
        total_train += secs;
        total_images += seen;
        let mut st = EpochStats {
            epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            train_acc: correct as f64 / seen.max(1) as f64,
            lr,
            train_seconds: secs,
            images_per_s: seen as f64 / secs.max(1e-9),
            val_acc: None,
            val_auc: None,
            val_loss: None,
        };
        if let Some(val) = opts.val
            && !val.is_empty()
        {
            let r = evaluate(&net, val, names)?;
            st.val_acc = Some(r.accuracy);
            st.val_auc = Some(r.macro_auc);
            st.val_loss = Some(r.loss);
            if opts.keep_best_on_val && best.as_ref().is_none_or(|(a, _, _)| r.accuracy > *a) {
                best = Some((r.accuracy, epoch, params::to_flat(&net)));
            }
        }
        tracing::info!(
            epoch,
            loss = format!("{:.4}", st.train_loss),
            train_acc = format!("{:.4}", st.train_acc),
            val_acc = st.val_acc.map(|v| format!("{v:.4}")).unwrap_or_default(),
            val_auc = st.val_auc.map(|v| format!("{v:.4}")).unwrap_or_default(),
            seconds = format!("{secs:.1}"),
            images_per_s = format!("{:.0}", st.images_per_s),
            "epoch done"
        );
        stats.push(st);
    }
    let mut returned_epoch = cfg.epochs;
    if let Some((_, epoch, flat)) = best {
        net = params::from_flat(net, &flat)?;
        returned_epoch = epoch;
    }
    Ok((
        net,
        TrainReport {
            epochs: stats,
            train_seconds: total_train,
            images_per_s: total_images as f64 / total_train.max(1e-9),
            returned_epoch,
            mean_gradient: grad_sum.map(|s| {
                let steps = steps.max(1) as f64;
                s.into_iter().map(|g| (g / steps) as f32).collect()
            }),
        },
    ))
}

/// The teacher's class probabilities at `temperature` for a batch, as constant targets on
/// `device`.
fn teacher_targets(
    teacher: &Network,
    xb: &[f32],
    shape: [usize; 4],
    temperature: f64,
    device: &Device,
) -> Result<Tensor<2>, TrainError> {
    let plain = teacher.plain_device();
    let x = Tensor::<4>::from_data(TensorData::new(xb.to_vec(), shape), &plain);
    let p = softmax(teacher.forward(x).div_scalar(temperature as f32), 1);
    let values = p
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| TrainError::invalid("teacher", format!("{e:?}")))?;
    let k = values.len() / shape[0].max(1);
    Ok(Tensor::<2>::from_data(
        TensorData::new(values, [shape[0], k]),
        device,
    ))
}

/// Class probabilities (`n × classes`, row-major) of `data` under `net` (evaluated without
/// autodiff, batch-norm with its running statistics).
pub fn predict(net: &Network, data: &Tensors) -> Result<Vec<f32>, TrainError> {
    if data.shape != net.spec.input {
        return Err(TrainError::invalid(
            "evaluation data",
            format!(
                "images are {:?}, the network takes {:?}",
                data.shape, net.spec.input
            ),
        ));
    }
    let net = net.valid();
    let device = net.plain_device();
    let [c, h, w] = data.shape;
    let k = net.spec.classes;
    let mut out = Vec::with_capacity(data.len() * k);
    let all: Vec<usize> = (0..data.len()).collect();
    for chunk in all.chunks(512) {
        let (xb, _) = data.batch(chunk, None);
        let x = Tensor::<4>::from_data(TensorData::new(xb, [chunk.len(), c, h, w]), &device);
        let p = softmax(net.forward(x), 1);
        out.extend(
            p.into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .map_err(|e| TrainError::invalid("evaluation", format!("{e:?}")))?,
        );
    }
    Ok(out)
}

/// Accuracy, AUC, per-class metrics and confusion matrix of `net` on `data`.
pub fn evaluate(
    net: &Network,
    data: &Tensors,
    class_names: &[String],
) -> Result<EvalReport, TrainError> {
    let probs = predict(net, data)?;
    evaluate_probs(&probs, &data.y, class_names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        let mut c = TrainConfig {
            epochs: 10,
            lr: 1.0,
            ..TrainConfig::default()
        };
        assert!((c.lr_at(0.0) - 1.0).abs() < 1e-12);
        assert!((c.lr_at(5.0) - 0.5).abs() < 1e-12);
        assert!(c.lr_at(9.99) < 0.01);
        c.schedule = Schedule::Step;
        c.step_epochs = 3;
        c.gamma = 0.5;
        assert_eq!(c.lr_at(2.9), 1.0);
        assert_eq!(c.lr_at(3.0), 0.5);
        assert_eq!(c.lr_at(6.5), 0.25);
        c.warmup_epochs = 2;
        assert!((c.lr_at(0.0) - 0.1).abs() < 1e-12);
        assert!((c.lr_at(1.0) - 0.55).abs() < 1e-12);
        assert_eq!(c.lr_at(2.0), 1.0);
    }

    #[test]
    fn a_federation_span_runs_the_schedule_over_every_round() {
        let c: TrainConfig = toml::from_str("epochs = 2\nlr = 1.0\nschedule = \"cosine\"").unwrap();
        // the default: every round runs its own schedule from lr
        assert_eq!(c.for_round(7, Some(10)), c);
        let f = TrainConfig {
            schedule_span: ScheduleSpan::Federation,
            ..c.clone()
        };
        let lrs: Vec<f64> = (1..=10).map(|r| f.for_round(r, Some(10)).lr).collect();
        assert_eq!(lrs[0], 1.0);
        // round 6 starts at epoch 10 of 20: half way down the cosine
        assert!((lrs[5] - 0.5).abs() < 1e-12, "{lrs:?}");
        assert!(lrs.windows(2).all(|w| w[1] < w[0]), "{lrs:?}");
        assert!(lrs[9] < 0.03);
        let r = f.for_round(6, Some(10));
        assert_eq!((r.schedule, r.epochs), (Schedule::Constant, 2));
        // a kit that does not say how many rounds: the round's own schedule
        assert_eq!(f.for_round(6, None), f);
    }

    #[test]
    fn config_rejects_unknown_and_bad_values() {
        assert!(toml::from_str::<TrainConfig>("epocs = 3").is_err());
        let c: TrainConfig = toml::from_str("batch_size = 0").unwrap();
        assert!(c.validate().is_err());
        let c: TrainConfig = toml::from_str("grad_clip = -1.0").unwrap();
        assert!(c.validate().is_err());
    }
}
