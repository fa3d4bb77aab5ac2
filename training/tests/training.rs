//! Training on real images beats chance clearly; FedProx pulls towards the global model;
//! SCAFFOLD's correction enters every step; training is reproducible by seed.

mod common;

use burn::tensor::Device;
use training::model::{Activation, ModelConfig, Network};
use training::params::{network_from_flat, to_flat};
use training::train::{TrainConfig, TrainOptions, evaluate, train};

fn cfg(epochs: usize, batch: usize, lr: f64) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: batch,
        lr,
        grad_clip: Some(5.0),
        ..TrainConfig::default()
    }
}

#[test]
fn breastmnist_square_network_beats_chance() {
    let (train_t, test_t, names) = common::tensors("breastmnist", 546, 156);
    let spec = ModelConfig::default().resolve(train_t.shape, 2).unwrap();
    let net = Network::init(&spec, &Device::flex().autodiff());
    let (net, report) = train(net, &train_t, &cfg(6, 32, 1e-3), &TrainOptions::default()).unwrap();
    assert_eq!(report.epochs.len(), 6);
    assert!(report.epochs[5].train_loss < report.epochs[0].train_loss);
    let r = evaluate(&net, &test_t, &names).unwrap();
    // Chance AUC is 0.5 and the majority class is 73% of the test split.
    assert!(r.macro_auc > 0.75, "AUC {}", r.macro_auc);
    assert!(r.accuracy > 0.74, "accuracy {}", r.accuracy);
}

#[test]
fn organamnist_subset_quadratic_beats_chance() {
    let (train_t, test_t, names) = common::tensors("organamnist", 3000, 1500);
    let spec = ModelConfig::default()
        .with_activation(Activation::Quadratic)
        .resolve(train_t.shape, 11)
        .unwrap();
    let net = Network::init(&spec, &Device::flex().autodiff());
    let (net, _) = train(net, &train_t, &cfg(3, 64, 2e-3), &TrainOptions::default()).unwrap();
    let r = evaluate(&net, &test_t, &names).unwrap();
    // 11 classes: chance is about 0.1 accuracy and 0.5 AUC.
    assert!(r.accuracy > 0.6, "accuracy {}", r.accuracy);
    assert!(r.macro_auc > 0.9, "AUC {}", r.macro_auc);
    assert_eq!(
        r.confusion.iter().flatten().sum::<u64>() as usize,
        test_t.len()
    );
}

#[test]
fn fedprox_keeps_the_update_near_the_global_model() {
    let (train_t, _, _) = common::tensors("breastmnist", 256, 1);
    let spec = ModelConfig::default().resolve(train_t.shape, 2).unwrap();
    let device = Device::flex().autodiff();
    let global = to_flat(&Network::init(&spec, &device));
    let distance = |mu: f64| {
        let net = network_from_flat(&spec, &global, &device).unwrap();
        let c = TrainConfig {
            fedprox_mu: mu,
            ..cfg(2, 32, 5e-3)
        };
        let opts = TrainOptions {
            global: Some(&global),
            ..TrainOptions::default()
        };
        let (net, _) = train(net, &train_t, &c, &opts).unwrap();
        let w = to_flat(&net);
        w.iter()
            .zip(&global)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let free = distance(0.0);
    let held = distance(10.0);
    assert!(free > 0.0);
    assert!(
        held < 0.5 * free,
        "distance with FedProx {held}, without {free}"
    );
    // FedProx without a global model is refused.
    let net = Network::init(&spec, &device);
    let c = TrainConfig {
        fedprox_mu: 0.1,
        ..cfg(1, 32, 1e-3)
    };
    assert!(train(net, &train_t, &c, &TrainOptions::default()).is_err());
}

#[test]
fn scaffold_steps_by_the_gradient_plus_the_correction_and_reports_the_gradient_alone() {
    let (train_t, _, _) = common::tensors("breastmnist", 64, 1);
    let spec = ModelConfig::default().resolve(train_t.shape, 2).unwrap();
    let device = Device::flex().autodiff();
    let w0 = to_flat(&Network::init(&spec, &device));
    let m = training::params::manifest(&spec);
    let lr = 0.1;
    // one step of plain SGD over one batch: w1 = w0 − lr·(g + k)
    let c = TrainConfig {
        optimizer: training::train::OptimizerKind::Sgd,
        momentum: 0.0,
        grad_clip: None,
        scaffold: true,
        ..cfg(1, 64, lr)
    };
    let step = |k: &[f32]| {
        let net = network_from_flat(&spec, &w0, &device).unwrap();
        let opts = TrainOptions {
            control: Some(k),
            ..TrainOptions::default()
        };
        let (net, report) = train(net, &train_t, &c, &opts).unwrap();
        (
            to_flat(&net),
            report.mean_gradient.expect("SCAFFOLD reports it"),
        )
    };
    let zero = vec![0f32; m.total];
    let k: Vec<f32> = (0..m.total)
        .map(|i| ((i * 7919) % 201) as f32 / 1e4 - 0.01)
        .collect();
    let (w_plain, g_plain) = step(&zero);
    let (w_corr, g_corr) = step(&k);
    let mut checked = 0;
    for e in m.entries.iter().filter(|e| e.trainable) {
        for i in e.offset..e.offset + e.len {
            let tol = 1e-4 * (1.0 + g_plain[i].abs());
            // the gradient without the correction is the same at the same point
            assert!((g_plain[i] - g_corr[i]).abs() < tol, "{} [{i}]", e.name);
            let moved = (w0[i] - w_corr[i]) / lr as f32;
            let want = g_plain[i] + k[i];
            assert!(
                (moved - want).abs() < 1e-3 * (1.0 + want.abs()),
                "{}: {moved} for {want}",
                e.name
            );
            let moved = (w0[i] - w_plain[i]) / lr as f32;
            assert!((moved - g_plain[i]).abs() < 1e-3 * (1.0 + g_plain[i].abs()));
            checked += 1;
        }
    }
    assert!(checked > 1000 && g_plain.iter().any(|&g| g.abs() > 1e-4));
    for e in m.entries.iter().filter(|e| !e.trainable) {
        assert!(
            g_plain[e.offset..e.offset + e.len]
                .iter()
                .all(|&g| g == 0.0)
        );
    }
    // without the control variates, or with the wrong length, it is refused
    let net = network_from_flat(&spec, &w0, &device).unwrap();
    assert!(train(net, &train_t, &c, &TrainOptions::default()).is_err());
    let net = network_from_flat(&spec, &w0, &device).unwrap();
    let short = TrainOptions {
        control: Some(&k[1..]),
        ..TrainOptions::default()
    };
    assert!(train(net, &train_t, &c, &short).is_err());
}

#[test]
fn same_seed_same_weights() {
    let (train_t, _, _) = common::tensors("breastmnist", 200, 1);
    let spec = ModelConfig::default().resolve(train_t.shape, 2).unwrap();
    let run = |seed: u64| {
        let net = Network::init(&spec, &Device::flex().autodiff());
        let c = TrainConfig {
            seed,
            shift: 2,
            hflip: true,
            ..cfg(1, 32, 1e-3)
        };
        to_flat(
            &train(net, &train_t, &c, &TrainOptions::default())
                .unwrap()
                .0,
        )
    };
    let a = run(7);
    assert_eq!(a, run(7));
    assert_ne!(a, run(8));
}

#[test]
fn training_rejects_mismatched_data() {
    let (train_t, _, _) = common::tensors("breastmnist", 64, 1);
    // Network for RGB input, grey data.
    let spec = ModelConfig::default().resolve([3, 28, 28], 2).unwrap();
    let net = Network::init(&spec, &Device::flex().autodiff());
    assert!(train(net, &train_t, &cfg(1, 32, 1e-3), &TrainOptions::default()).is_err());
    // Network on a device without autodiff.
    let spec = ModelConfig::default().resolve([1, 28, 28], 2).unwrap();
    let net = Network::init(&spec, &Device::flex());
    assert!(train(net, &train_t, &cfg(1, 32, 1e-3), &TrainOptions::default()).is_err());
}

/// conv → x² → dense(128) → x² → dense: the family without batch-norm (per-example gradients).
fn without_batch_norm() -> ModelConfig {
    let mut m = ModelConfig::default();
    m.layers
        .retain(|l| !matches!(l, training::model::LayerConfig::BatchNorm { .. }));
    m
}

#[test]
fn dp_sgd_learns_and_refuses_batch_norm() {
    use training::dp_sgd::DpSgd;
    let (train_t, test_t, names) = common::tensors("organamnist", 2000, 1000);
    let spec = without_batch_norm().resolve(train_t.shape, 11).unwrap();
    let net = Network::init(&spec, &Device::flex().autodiff());
    let dp = DpSgd {
        clip: 1.0,
        noise_multiplier: 0.5,
        sample_rate: 256.0 / 2000.0,
        steps: 80,
    };
    let opts = TrainOptions {
        dp: Some(dp),
        ..Default::default()
    };
    let (net, report) = train(net, &train_t, &cfg(1, 256, 3e-3), &opts).unwrap();
    // Poisson batches: about q·n = 256 examples a step
    let seen = report.images_per_s * report.train_seconds;
    assert!(
        (seen / 80.0 - 256.0).abs() < 40.0,
        "{seen} examples in 80 steps"
    );
    let r = evaluate(&net, &test_t, &names).unwrap();
    // 11 classes: chance is 0.5 AUC; the noise (σ = 0.5 per clipped gradient) slows but does
    // not stop learning
    assert!(r.macro_auc > 0.8, "AUC {}", r.macro_auc);
    // a batch norm on each batch's statistics mixes the examples of a batch: refused, with the
    // key that makes it per example
    let spec = ModelConfig::default().resolve(train_t.shape, 11).unwrap();
    let bn = Network::init(&spec, &Device::flex().autodiff());
    let e = train(bn, &train_t, &cfg(1, 256, 3e-3), &opts).unwrap_err();
    assert!(e.to_string().contains("norm_statistics"), "{e}");
}
