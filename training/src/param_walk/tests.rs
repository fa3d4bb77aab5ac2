//! The walk against the flat vector's manifest, on a network of every layer kind.

use burn::optim::GradientsParams;
use burn::tensor::Device;

use super::*;
use crate::model::ModelConfig;
use crate::params::{manifest, to_flat};

/// conv, per-channel polynomial, a residual block with a projection, pooling, dense: every
/// kind of trained tensor.
fn network() -> Network {
    let model: ModelConfig = toml::from_str(
        r#"
        activation = "poly"
        [[layers]]
        type = "conv"
        channels = 3
        kernel = 3
        padding = 1
        [[layers]]
        type = "batch-norm"
        [[layers]]
        type = "act"
        [[layers]]
        type = "residual"
        channels = 4
        stride = 2
        [[layers]]
        type = "global-avg-pool"
        [[layers]]
        type = "dense"
        "#,
    )
    .unwrap();
    let spec = model.resolve([1, 8, 8], 3).unwrap();
    Network::init(&spec, &Device::flex().autodiff())
}

/// A step's gradients as one flat vector of the network's length (the walk's order): 0 for
/// running statistics and for tensors that took no gradient (frozen ones).
fn flat_gradients(net: &Network, grads: &GradientsParams, len: usize) -> Vec<f32> {
    let mut out = vec![0f64; len];
    add_gradients(net, grads, &mut out, 1.0, None, None);
    out.into_iter().map(|g| g as f32).collect()
}

fn scalar(t: Tensor<1>) -> f32 {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()[0]
}

#[test]
fn the_proximal_gradient_pulls_every_trained_value_towards_its_own_anchor_value() {
    let net = network();
    let m = manifest(&net.spec);
    let flat = to_flat(&net);
    // a distinct offset per position: a walk off by one tensor, or a dense weight transposed
    // the wrong way, pulls values towards where the manifest says others are
    let v: Vec<f32> = (0..m.total).map(|i| (i % 97) as f32 / 10.0 - 4.0).collect();
    let anchor: Vec<f32> = flat.iter().zip(&v).map(|(w, d)| w - d).collect();
    let loss = squared_distance(&net, &anchor).expect("the network trains something");
    let grads = GradientsParams::from_grads(loss.backward(), &net);
    let g = flat_gradients(&net, &grads, m.total);
    for e in &m.entries {
        let (want, got) = (
            &v[e.offset..e.offset + e.len],
            &g[e.offset..e.offset + e.len],
        );
        if e.trainable {
            // d/dw (w − (w − v))² = 2v
            for (w, g) in want.iter().zip(got) {
                let ok = (2.0 * w - g).abs() <= 1e-4 * (1.0 + w.abs());
                assert!(ok, "{}: {g} for 2·{w}", e.name);
            }
        } else {
            assert!(
                got.iter().all(|&x| x == 0.0),
                "{}: statistics take no gradient",
                e.name
            );
        }
    }
}

#[test]
fn the_squared_distance_counts_every_trained_value_of_every_layer_kind() {
    let net = network();
    let m = manifest(&net.spec);
    let flat = to_flat(&net);
    assert_eq!(scalar(squared_distance(&net, &flat).unwrap()), 0.0);
    // the anchor 1 away at every trained value: the distance is how many there are (the
    // residual block's and the polynomials' included)
    let shifted: Vec<f32> = flat
        .iter()
        .zip(
            m.entries
                .iter()
                .flat_map(|e| std::iter::repeat_n(e.trainable, e.len)),
        )
        .map(|(&w, trained)| if trained { w + 1.0 } else { w + 100.0 })
        .collect();
    let trained: usize = m
        .entries
        .iter()
        .filter(|e| e.trainable)
        .map(|e| e.len)
        .sum();
    let d = scalar(squared_distance(&net, &shifted).unwrap());
    assert!(
        m.entries
            .iter()
            .any(|e| e.name.contains("block") || e.name.contains("residual"))
    );
    assert!(
        (d - trained as f32).abs() < 1e-3 * trained as f32,
        "{d} vs {trained}"
    );
}

#[test]
fn the_dot_term_adds_its_own_vector_to_every_trained_gradient_and_nothing_elsewhere() {
    let net = network();
    let m = manifest(&net.spec);
    let k: Vec<f32> = (0..m.total).map(|i| (i % 89) as f32 / 8.0 - 5.0).collect();
    let loss = dot(&net, &k).expect("the network trains something");
    let grads = GradientsParams::from_grads(loss.backward(), &net);
    // read back twice with weight ½: the accumulation adds, and weighs
    let mut acc = vec![0f64; m.total];
    add_gradients(&net, &grads, &mut acc, 0.5, None, None);
    add_gradients(&net, &grads, &mut acc, 0.5, None, None);
    // less the term's own vector: nothing left where a gradient was, nothing put elsewhere
    let mut raw = vec![0f64; m.total];
    add_gradients(&net, &grads, &mut raw, 1.0, Some(&k), None);
    for e in &m.entries {
        for (i, g) in acc[e.offset..e.offset + e.len].iter().enumerate() {
            let want = if e.trainable {
                k[e.offset + i] as f64
            } else {
                0.0
            };
            assert!((g - want).abs() < 1e-5, "{} [{i}]: {g} for {want}", e.name);
            let r = raw[e.offset + i];
            assert!(r.abs() < 1e-5, "{} [{i}]: {r} left", e.name);
        }
    }
    // clipped: every trained tensor's part has a norm of at most the clip, in its direction
    let mut clipped = vec![0f64; m.total];
    add_gradients(&net, &grads, &mut clipped, 1.0, None, Some(0.5));
    for e in m.entries.iter().filter(|e| e.trainable) {
        let part = &clipped[e.offset..e.offset + e.len];
        let norm = part.iter().map(|x| x * x).sum::<f64>().sqrt();
        let full: f64 = acc[e.offset..e.offset + e.len]
            .iter()
            .map(|x| x * x)
            .sum::<f64>()
            .sqrt();
        assert!(
            (norm - full.min(0.5)).abs() < 1e-6,
            "{}: norm {norm} of {full}",
            e.name
        );
        let cos: f64 = part
            .iter()
            .zip(&acc[e.offset..])
            .map(|(a, b)| a * b)
            .sum::<f64>()
            / (norm * full).max(1e-30);
        assert!(
            full == 0.0 || (cos - 1.0).abs() < 1e-9,
            "{}: turned",
            e.name
        );
    }
}
