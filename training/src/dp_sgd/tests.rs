//! The batched clipped sum against each example's own backward pass.

use burn::optim::GradientsParams;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor, TensorData};

use super::per_example::Op;
use super::*;
use crate::data::one_hot;
use crate::model::{Activation, LayerConfig, ModelConfig};

/// conv (stride 2, padding 1) → a·x² + b·x → pool → conv → x² → dense → a·x² + b·x → dense:
/// every layer kind DP-SGD reads, images and vectors after quadratic activations.
fn network() -> Network {
    let cfg = ModelConfig {
        activation: Activation::Quadratic,
        init_seed: 3,
        layers: vec![
            LayerConfig::Conv {
                channels: 3,
                kernel: 3,
                stride: 2,
                padding: 1,
            },
            LayerConfig::Act { kind: None },
            LayerConfig::AvgPool {
                kernel: 2,
                stride: None,
            },
            LayerConfig::Conv {
                channels: 4,
                kernel: 2,
                stride: 1,
                padding: 0,
            },
            LayerConfig::Act {
                kind: Some(Activation::Square),
            },
            LayerConfig::Dense { units: Some(6) },
            LayerConfig::Act { kind: None },
            LayerConfig::Dense { units: None },
        ],
        ..ModelConfig::default()
    };
    let spec = cfg.resolve([2, 12, 12], 5).unwrap();
    Network::init(&spec, &Device::flex().autodiff())
}

fn images(b: usize) -> (Tensor<4>, Vec<u32>) {
    let x: Vec<f32> = (0..b * 2 * 144)
        .map(|i| ((i * 7919 % 113) as f32 / 56.0 - 1.0) * 1.5)
        .collect();
    let y = (0..b as u32).map(|i| (i * 3) % 5).collect();
    (
        Tensor::from_data(
            TensorData::new(x, [b, 2, 12, 12]),
            &Device::flex().autodiff(),
        ),
        y,
    )
}

/// One example's gradient from its own backward pass, flat in [`clipped_sum`]'s order.
fn own_gradient(net: &Network, ops: &[Op], x: Tensor<4>, y: u32) -> Vec<f32> {
    let k = net.spec.classes;
    let logits = net.forward(x);
    let target = Tensor::<2>::from_data(
        TensorData::new(one_hot(&[y], k, 0.1), [1, k]),
        &logits.device(),
    );
    let loss = (log_softmax(logits, 1) * target).sum().neg();
    let grads = GradientsParams::from_grads(loss.backward(), net);
    let mut flat = Vec::new();
    for (id, dims) in ops.iter().flat_map(|op| &op.params) {
        flat.extend(match dims.len() {
            1 => values(grads.get::<1>(*id).unwrap()),
            2 => values(grads.get::<2>(*id).unwrap()),
            _ => values(grads.get::<4>(*id).unwrap()),
        });
    }
    flat
}

/// The batched clipped sums of `net` on `b` images against each example's own gradient,
/// clipped and summed, at a clip below some norms and at one above all.
fn check_clipped_sums(net: &Network, b: usize) {
    let device = Device::flex().autodiff();
    let ops = layout(net, &device).unwrap();
    let (x, y) = images(b);
    let own: Vec<Vec<f32>> = (0..b)
        .map(|i| own_gradient(net, &ops, x.clone().narrow(0, i, 1), y[i]))
        .collect();
    let norms: Vec<f64> = own
        .iter()
        .map(|g| g.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt())
        .collect();
    assert_eq!(own[0].len(), trainable(&ops));
    let mut sorted = norms.clone();
    sorted.sort_by(f64::total_cmp);
    assert!(sorted[0] < sorted[b - 1] * 0.9, "{norms:?}");
    for clip in [(sorted[1] + sorted[2]) / 2.0, sorted[b - 1] * 2.0] {
        let (sum, loss, _) = clipped_sum(net, &ops, x.clone(), &y, 0.1, clip).unwrap();
        assert!(loss.is_finite() && loss > 0.0);
        let mut want = vec![0f64; sum.len()];
        for (g, n) in own.iter().zip(&norms) {
            let c = (clip / n).min(1.0);
            want.iter_mut()
                .zip(g)
                .for_each(|(w, &v)| *w += c * f64::from(v));
        }
        let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
        for (i, (got, want)) in sum.iter().zip(&want).enumerate() {
            assert!(
                (f64::from(*got) - want).abs() < 1e-4 * scale,
                "clip {clip}: value {i}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn the_batched_clipped_sum_is_the_sum_of_clipped_per_example_gradients() {
    check_clipped_sums(&network(), 6);
}

/// conv → batch norm → poly → a residual block with a projection (stride 2) → one without →
/// global pool → dense → batch norm → poly → dense, every batch norm on fixed statistics that
/// are not the identity, γ of every block's second batch norm away from its initial 0, and one
/// polynomial coefficient past its bound (its gradient is 0 there).
fn residual_network() -> Network {
    let cfg = ModelConfig {
        activation: Activation::Poly,
        init_seed: 5,
        layers: vec![
            LayerConfig::Conv {
                channels: 4,
                kernel: 3,
                stride: 1,
                padding: 1,
            },
            LayerConfig::BatchNorm {
                momentum: 0.1,
                epsilon: 1e-5,
            },
            LayerConfig::Act { kind: None },
            LayerConfig::Residual {
                channels: 6,
                stride: 2,
                kernel: 3,
                kind: None,
            },
            LayerConfig::Residual {
                channels: 6,
                stride: 1,
                kernel: 3,
                kind: None,
            },
            LayerConfig::GlobalAvgPool,
            LayerConfig::Dense { units: Some(8) },
            LayerConfig::BatchNorm {
                momentum: 0.1,
                epsilon: 1e-5,
            },
            LayerConfig::Act { kind: None },
            LayerConfig::Dense { units: None },
        ],
        ..ModelConfig::default()
    };
    let spec = cfg.resolve([2, 12, 12], 5).unwrap();
    let net = Network::init(&spec, &Device::flex().autodiff());
    let mut flat = crate::params::to_flat(&net);
    let mut first_a = true;
    for e in crate::params::manifest(&spec).entries {
        for (j, v) in flat[e.offset..e.offset + e.len].iter_mut().enumerate() {
            let u = ((e.offset + j) * 7919 % 101) as f32 / 101.0;
            if e.name.ends_with("running_var") {
                *v = 0.5 + u;
            } else if e.name.ends_with("running_mean") {
                *v = 0.4 * (u - 0.5);
            } else if e.name.ends_with("gamma") {
                *v = 0.6 + 0.8 * u;
            } else if e.name.ends_with("beta") {
                *v = 0.2 * (u - 0.5);
            } else if e.name.ends_with("poly.a") {
                *v = if std::mem::take(&mut first_a) {
                    1.5
                } else {
                    0.05 + 0.2 * u
                };
            }
        }
    }
    crate::params::from_flat(net, &flat)
        .unwrap()
        .freeze_norm_statistics()
}

#[test]
fn residual_blocks_and_batch_norms_on_fixed_statistics_give_each_example_its_gradient() {
    let net = residual_network();
    let ops = layout(&net, &Device::flex().autodiff()).unwrap();
    // stem conv, bn, poly; 2 blocks of conv, bn, poly, conv, bn, (proj, bn), bn, poly; dense,
    // bn, poly, dense
    assert_eq!(ops.len(), 3 + 9 + 7 + 4);
    check_clipped_sums(&net, 6);
}

#[test]
fn batch_norm_on_each_batch_is_refused() {
    let spec = ModelConfig::default().resolve([1, 28, 28], 11).unwrap();
    let device = Device::flex().autodiff();
    let net = Network::init(&spec, &device);
    let e = layout(&net, &device).err().unwrap().to_string();
    assert!(e.contains("norm_statistics"), "{e}");
    // the same network normalising by its running statistics trains
    let ops = layout(&net.freeze_norm_statistics(), &device).unwrap();
    assert!(trainable(&ops) > 0);
}
