//! The batched clipped sum against each example's own backward pass.

use burn::module::ParamId;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};

use super::*;
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

fn ids(layers: &[Layer]) -> Vec<(ParamId, usize)> {
    layers
        .iter()
        .flat_map(|l| match l {
            Layer::Conv { ids, .. } => [(ids[0], 4), (ids[1], 1)],
            Layer::Dense { ids } => [(ids[0], 2), (ids[1], 1)],
            Layer::Quad { ids } => [(ids[0], 1), (ids[1], 1)],
        })
        .collect()
}

/// One example's gradient from its own backward pass, flat in [`clipped_sum`]'s order.
fn own_gradient(net: &Network, layers: &[Layer], x: Tensor<4>, y: u32) -> Vec<f32> {
    let k = net.spec.classes;
    let logits = net.forward(x);
    let target = Tensor::<2>::from_data(
        TensorData::new(one_hot(&[y], k, 0.1), [1, k]),
        &logits.device(),
    );
    let loss = (log_softmax(logits, 1) * target).sum().neg();
    let grads = GradientsParams::from_grads(loss.backward(), net);
    let mut flat = Vec::new();
    for (id, rank) in ids(layers) {
        flat.extend(match rank {
            1 => values(grads.get::<1>(id).unwrap()),
            2 => values(grads.get::<2>(id).unwrap()),
            _ => values(grads.get::<4>(id).unwrap()),
        });
    }
    flat
}

#[test]
fn the_batched_clipped_sum_is_the_sum_of_clipped_per_example_gradients() {
    let net = network();
    let layers = layers(&net).unwrap();
    let b = 6;
    let (x, y) = images(b);
    let own: Vec<Vec<f32>> = (0..b)
        .map(|i| own_gradient(&net, &layers, x.clone().narrow(0, i, 1), y[i]))
        .collect();
    let norms: Vec<f64> = own
        .iter()
        .map(|g| g.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt())
        .collect();
    assert_eq!(own[0].len(), trainable(&net));
    // a clip below some norms and above others, then one above all (the plain sum)
    let mut sorted = norms.clone();
    sorted.sort_by(f64::total_cmp);
    assert!(sorted[0] < sorted[b - 1] * 0.9, "{norms:?}");
    for clip in [(sorted[1] + sorted[2]) / 2.0, sorted[b - 1] * 2.0] {
        let (sum, loss, _) = clipped_sum(&net, &layers, x.clone(), &y, 0.1, clip).unwrap();
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
fn batch_norm_is_refused() {
    let spec = ModelConfig::default().resolve([1, 28, 28], 11).unwrap();
    let net = Network::init(&spec, &Device::flex().autodiff());
    let e = layers(&net).err().unwrap().to_string();
    assert!(e.contains("batch-norm"), "{e}");
}
