//! A trained burn network exported in the one network format, `heal-network/1`
//! ([`he_agg::infer::NetworkFile`]): `f32` weights with shapes, batch-norm folded away, ready
//! for encrypted inference and for the plaintext reference forward pass
//! ([`he_agg::infer::Network::forward`]).
//!
//! Batch-norm `γ (x − μ)/√(σ² + ε) + β` after a conv/dense layer is folded into it:
//! `W' = W · s`, `b' = (b − μ)·s + β` with `s = γ/√(σ² + ε)` per output channel.

use std::path::Path;

use datasets::{InputPreparation, Normalizer};
use he_agg::infer::{Conv2d, Dense, Layer, NetworkFile, Residual};

use crate::error::TrainError;
use crate::model::{Activation, LayerKind, Network};
use crate::params::{manifest, to_flat};

/// Exports `net` (batch-norm folded with its running statistics), recording how its inputs
/// were prepared.
pub fn export(
    net: &Network,
    normalizer: &Normalizer,
    class_names: &[String],
    preparation: &InputPreparation,
) -> Result<NetworkFile, TrainError> {
    let spec = &net.spec;
    if normalizer.mean.len() != spec.image_input()[0] || class_names.len() != spec.classes {
        return Err(TrainError::invalid(
            "export",
            format!(
                "{} normaliser channels / {} class names for a network of {:?} → {}",
                normalizer.mean.len(),
                class_names.len(),
                spec.input,
                spec.classes
            ),
        ));
    }
    let flat = to_flat(net);
    let m = manifest(spec);
    let mut entries = m.entries.iter();
    let mut take = || -> Vec<f32> {
        let e = entries.next().expect("manifest matches the spec");
        flat[e.offset..e.offset + e.len].to_vec()
    };
    let mut layers: Vec<Layer> = Vec::new();
    let mut flattened = false;
    for l in &spec.layers {
        match &l.kind {
            LayerKind::Conv {
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
            } => {
                let weight = take();
                let bias = take();
                layers.push(Layer::Conv2d(Conv2d {
                    in_channels: *in_channels,
                    out_channels: *out_channels,
                    kernel: *kernel,
                    stride: *stride,
                    padding: *padding,
                    weight,
                    bias,
                }));
            }
            LayerKind::AvgPool { kernel, stride } => layers.push(Layer::AvgPool2d {
                kernel: *kernel,
                stride: *stride,
            }),
            LayerKind::Dense {
                in_features,
                out_features,
            } => {
                if !flattened && l.input.len() == 3 {
                    layers.push(Layer::Flatten);
                }
                flattened = true;
                let weight = take();
                let bias = take();
                layers.push(Layer::Dense(Dense {
                    in_features: *in_features,
                    out_features: *out_features,
                    weight,
                    bias,
                }));
            }
            LayerKind::BatchNorm { epsilon, .. } => match layers.last_mut() {
                Some(Layer::Conv2d(Conv2d { weight, bias, .. }))
                | Some(Layer::Dense(Dense { weight, bias, .. })) => {
                    fold_norm(weight, bias, &mut take, *epsilon as f32)
                }
                _ => unreachable!("resolve() puts batch-norm right after conv/dense"),
            },
            LayerKind::Dropout { .. } => {}
            LayerKind::Act { activation } => {
                layers.push(act_layer(*activation, &mut take, spec.poly_bounds))
            }
            LayerKind::GlobalAvgPool => layers.push(Layer::GlobalAvgPool),
            LayerKind::MaxPool { .. } => {
                return Err(TrainError::invalid(
                    "export",
                    "max-pool cannot be evaluated under CKKS: turn the network HE-friendly first \
                     (`client convert`, which makes every max-pool an average and every relu a \
                     trainable polynomial)",
                ));
            }
            LayerKind::Residual {
                in_channels,
                out_channels,
                kernel,
                stride,
                activation,
            } => {
                let (ci, co, k, s) = (*in_channels, *out_channels, *kernel, *stride);
                let eps = 1e-5;
                let conv = |ci: usize, k: usize, s: usize, take: &mut dyn FnMut() -> Vec<f32>| {
                    let mut c = Conv2d {
                        in_channels: ci,
                        out_channels: co,
                        kernel: k,
                        stride: s,
                        padding: k / 2,
                        weight: take(),
                        bias: take(),
                    };
                    fold_norm(&mut c.weight, &mut c.bias, take, eps);
                    c
                };
                let conv1 = conv(ci, k, s, &mut take);
                let act1 = act_layer(*activation, &mut take, spec.poly_bounds);
                let conv2 = conv(co, k, 1, &mut take);
                let shortcut = l.kind.projects().then(|| conv(ci, 1, s, &mut take));
                layers.push(Layer::Residual(Residual {
                    body: vec![Layer::Conv2d(conv1), act1, Layer::Conv2d(conv2)],
                    shortcut,
                }));
                // the sum's batch-norm folds into the activation after it
                let (g, b, m, v) = (take(), take(), take(), take());
                let norm: Vec<(f32, f32)> = (0..co)
                    .map(|o| {
                        let sc = g[o] / (v[o] + eps).sqrt();
                        (sc, b[o] - m[o] * sc)
                    })
                    .collect();
                let act2 = act_layer(*activation, &mut take, spec.poly_bounds);
                layers.extend(normalized_act(act2, &norm));
            }
        }
    }
    let invalid = |e: he_agg::infer::NetworkError| TrainError::Model(format!("export: {e}"));
    let network = he_agg::infer::Network::new(spec.input, layers)
        .and_then(|n| match spec.front {
            Some(f) => n.with_front(f),
            None => Ok(n),
        })
        .and_then(|n| n.with_normalization(normalizer.mean.clone(), normalizer.std.clone()))
        .map_err(invalid)?;
    let mut file = NetworkFile::new(network, class_names.to_vec(), spec.multiplicative_depth())
        .map_err(invalid)?;
    file.input_preparation = Some(
        serde_json::to_value(preparation).map_err(|e| TrainError::Model(format!("export: {e}")))?,
    );
    Ok(file)
}

/// Folds the batch-norm whose γ, β, μ, σ² `take` gives next into the layer before it:
/// `W' = W·s`, `b' = (b − μ)·s + β` with `s = γ/√(σ² + ε)` per output channel.
fn fold_norm(weight: &mut [f32], bias: &mut [f32], take: &mut dyn FnMut() -> Vec<f32>, eps: f32) {
    let (gamma, beta, mean, var) = (take(), take(), take(), take());
    let per = weight.len() / bias.len();
    for (o, b) in bias.iter_mut().enumerate() {
        let scale = gamma[o] / (var[o] + eps).sqrt();
        for w in &mut weight[o * per..(o + 1) * per] {
            *w *= scale;
        }
        *b = (*b - mean[o]) * scale + beta[o];
    }
}

/// An activation layer, its coefficients from `take` (a per-channel polynomial's a clamped to
/// `bounds`, as the forward pass clamps it).
fn act_layer(a: Activation, take: &mut dyn FnMut() -> Vec<f32>, bounds: [f32; 2]) -> Layer {
    match a {
        Activation::Square => Layer::Square,
        Activation::Relu => Layer::Relu,
        Activation::Quadratic => {
            let a = take()[0];
            let b = take()[0];
            Layer::Quadratic { a, b }
        }
        Activation::Poly => {
            let a = take()
                .iter()
                .map(|v| v.clamp(bounds[0], bounds[1]))
                .collect();
            Layer::ChannelQuadratic {
                a,
                b: take(),
                c: take(),
            }
        }
    }
}

/// `act(s·x + t)` per channel, the channel's (s, t) in `norm`: a polynomial becomes the
/// per-channel quadratic a·s²·x² + (2·a·s·t + b·s)·x + (a·t² + b·t + c); a ReLU cannot absorb
/// it, so it is preceded by the affine map, written as a per-channel quadratic with a = 0 (the
/// ReLU twin is plaintext only: encrypted plans refuse both).
fn normalized_act(act: Layer, norm: &[(f32, f32)]) -> Vec<Layer> {
    let k = norm.len();
    let (a, b, c): (Vec<f32>, Vec<f32>, Vec<f32>) = match act {
        Layer::Square => (vec![1.0; k], vec![0.0; k], vec![0.0; k]),
        Layer::Quadratic { a, b } => (vec![a; k], vec![b; k], vec![0.0; k]),
        Layer::ChannelQuadratic { a, b, c } => (a, b, c),
        other => {
            let affine = Layer::ChannelQuadratic {
                a: vec![0.0; k],
                b: norm.iter().map(|n| n.0).collect(),
                c: norm.iter().map(|n| n.1).collect(),
            };
            return vec![affine, other];
        }
    };
    let mut out = (
        Vec::with_capacity(k),
        Vec::with_capacity(k),
        Vec::with_capacity(k),
    );
    for (o, &(s, t)) in norm.iter().enumerate() {
        out.0.push(a[o] * s * s);
        out.1.push(2.0 * a[o] * s * t + b[o] * s);
        out.2.push(a[o] * t * t + b[o] * t + c[o]);
    }
    vec![Layer::ChannelQuadratic {
        a: out.0,
        b: out.1,
        c: out.2,
    }]
}

/// How a network file's inputs are prepared (the defaults for a file that does not say).
pub fn preparation(file: &NetworkFile) -> Result<InputPreparation, TrainError> {
    match &file.input_preparation {
        None => Ok(InputPreparation::default()),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| TrainError::invalid("network file", format!("input_preparation: {e}"))),
    }
}

/// Reads a network file with its input preparation.
pub fn read_network(path: &Path) -> Result<(NetworkFile, InputPreparation), TrainError> {
    let file = NetworkFile::read_json(path)?;
    let prep = preparation(&file).map_err(|e| match e {
        TrainError::Invalid { what, message } => TrainError::Invalid {
            what,
            message: format!("{}: {message}", path.display()),
        },
        other => other,
    })?;
    Ok((file, prep))
}

/// The image shape a network takes (its front's image where it has one).
pub fn input_shape(net: &he_agg::infer::Network) -> datasets::ImageShape {
    let [channels, height, width] = net.image_input();
    datasets::ImageShape {
        channels,
        height,
        width,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LayerConfig, ModelConfig};
    use crate::params::{from_flat, manifest};
    use burn::tensor::{Device, Tensor, TensorData};
    use rand::{RngExt, SeedableRng};

    fn random_net(cfg: &ModelConfig, input: [usize; 3], classes: usize) -> Network {
        let spec = cfg.resolve(input, classes).unwrap();
        let net = Network::init(&spec, &Device::flex());
        let m = manifest(&spec);
        let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(1);
        let mut flat = to_flat(&net);
        // Give batch-norm non-trivial statistics and affine parameters.
        for e in &m.entries {
            for v in &mut flat[e.offset..e.offset + e.len] {
                if e.name.ends_with("running_var") || e.name.ends_with("gamma") {
                    *v = rng.random_range(0.5..2.0);
                } else if e.name.ends_with("running_mean") || e.name.ends_with("beta") {
                    *v = rng.random_range(-0.5..0.5);
                } else if e.name.ends_with("poly.a") {
                    // some below the lower bound: export clamps as the forward pass does
                    *v = rng.random_range(-0.2..0.6);
                } else if e.name.ends_with("poly.b") || e.name.ends_with("poly.c") {
                    *v = rng.random_range(-0.5..0.5);
                }
            }
        }
        from_flat(net, &flat).unwrap()
    }

    fn burn_forward(net: &Network, x: &[f32], shape: [usize; 4]) -> Vec<f32> {
        net.forward(Tensor::<4>::from_data(
            TensorData::new(x.to_vec(), shape),
            &Device::flex(),
        ))
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
    }

    #[test]
    fn residual_export_matches_burn() {
        let cfg = ModelConfig {
            activation: Activation::Poly,
            layers: vec![
                LayerConfig::Conv {
                    channels: 3,
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
                    channels: 3,
                    stride: 1,
                    kernel: 3,
                    kind: None,
                },
                LayerConfig::Residual {
                    channels: 5,
                    stride: 2,
                    kernel: 3,
                    kind: None,
                },
                LayerConfig::GlobalAvgPool,
                LayerConfig::Dense { units: None },
            ],
            ..ModelConfig::default()
        };
        let net = random_net(&cfg, [1, 8, 8], 4);
        assert_eq!(net.spec.multiplicative_depth(), 2 + 4 + 4 + 1);
        let exp = export(
            &net,
            &Normalizer::identity(1),
            &["a", "b", "c", "d"].map(String::from),
            &InputPreparation::default(),
        )
        .unwrap();
        let layers = exp.network.layers();
        // conv (its batch-norm folded), act, block, act, block, act, pooling, dense
        assert!(matches!(&layers[2], Layer::Residual(r) if r.shortcut.is_none()));
        assert!(matches!(&layers[4], Layer::Residual(r) if r.shortcut.is_some()));
        assert!(matches!(layers[6], Layer::GlobalAvgPool));
        // a standalone activation's a within the bounds; after a block's sum, times s² > 0
        let Layer::ChannelQuadratic { a, .. } = &layers[1] else {
            panic!("{:?}", layers[1])
        };
        assert!(a.iter().all(|&v| (0.01..=1.0).contains(&v)), "{a:?}");
        for l in layers {
            if let Layer::ChannelQuadratic { a, .. } = l {
                assert!(a.iter().all(|&v| v > 0.0), "{a:?}");
            }
        }
        let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(3);
        for _ in 0..3 {
            let x: Vec<f32> = (0..64).map(|_| rng.random_range(-1.0..1.0)).collect();
            let burn_out = burn_forward(&net, &x, [1, 1, 8, 8]);
            let ours = exp.network.forward(&x).unwrap();
            for (a, b) in burn_out.iter().zip(&ours) {
                assert!(
                    (a - b).abs() < 1e-3 * (1.0 + a.abs()),
                    "{burn_out:?} vs {ours:?}"
                );
            }
        }
        // and it plans for encrypted inference with the exported depth
        let plan =
            he_agg::infer::InferencePlan::new(&exp.network, &he_agg::infer::ParamPolicy::default())
                .unwrap();
        assert_eq!(plan.spec().depth(), 11);
    }

    #[test]
    fn folded_export_matches_burn() {
        let cfg = ModelConfig {
            layers: vec![
                LayerConfig::Conv {
                    channels: 4,
                    kernel: 3,
                    stride: 2,
                    padding: 1,
                },
                LayerConfig::BatchNorm {
                    momentum: 0.1,
                    epsilon: 1e-5,
                },
                LayerConfig::Act {
                    kind: Some(Activation::Quadratic),
                },
                LayerConfig::AvgPool {
                    kernel: 2,
                    stride: None,
                },
                LayerConfig::Dense { units: Some(6) },
                LayerConfig::BatchNorm {
                    momentum: 0.1,
                    epsilon: 1e-5,
                },
                LayerConfig::Act {
                    kind: Some(Activation::Square),
                },
                LayerConfig::Dense { units: None },
            ],
            ..ModelConfig::default()
        };
        let net = random_net(&cfg, [2, 9, 9], 3);
        let names: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
        let prep = InputPreparation {
            resize: datasets::ResizePolicy::Crop,
            ..Default::default()
        };
        let exp = export(&net, &Normalizer::identity(2), &names, &prep).unwrap();
        let layers = exp.network.layers();
        assert!(matches!(
            layers[2],
            Layer::AvgPool2d {
                kernel: 2,
                stride: 2
            }
        ));
        assert!(matches!(layers[3], Layer::Flatten));
        let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(2);
        let x: Vec<f32> = (0..2 * 81).map(|_| rng.random_range(-1.0..1.0)).collect();
        let burn_out = net
            .forward(Tensor::<4>::from_data(
                TensorData::new(x.clone(), [1, 2, 9, 9]),
                &Device::flex(),
            ))
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let ours = exp.network.forward(&x).unwrap();
        for (a, b) in burn_out.iter().zip(&ours) {
            assert!(
                (a - b).abs() < 1e-4 * (1.0 + a.abs()),
                "{burn_out:?} vs {ours:?}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("n.json");
        exp.write_json(&p).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(v["format"], he_agg::infer::NETWORK_FORMAT);
        assert_eq!(v["network"]["input"], serde_json::json!([2, 9, 9]));
        assert_eq!(v["network"]["layers"][0]["type"], "conv2d");
        assert_eq!(v["network"]["layers"][0]["in_channels"], 2);
        assert_eq!(v["network"]["layers"][2]["type"], "avg-pool2d");
        assert_eq!(v["network"]["layers"][3]["type"], "flatten");
        assert_eq!(v["network"]["layers"][1]["type"], "quadratic");
        assert_eq!(
            v["network"]["normalization"]["std"],
            serde_json::json!([1.0, 1.0])
        );
        assert_eq!(NetworkFile::read_json(&p).unwrap(), exp);
        assert_eq!(read_network(&p).unwrap().1, prep);
        assert_eq!(v["input_preparation"]["resize"], "crop");
    }

    #[test]
    fn a_front_is_exported_and_applied_to_image_bytes() {
        let cfg = ModelConfig {
            front: Some(crate::model::FrontConfig::Scatter {
                scales: 2,
                angles: 8,
                groups: 9,
            }),
            layers: vec![LayerConfig::Dense { units: None }],
            ..ModelConfig::default()
        };
        let net = random_net(&cfg, [1, 28, 28], 3);
        let names: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
        let exp = export(
            &net,
            &Normalizer::identity(1),
            &names,
            &InputPreparation::default(),
        )
        .unwrap();
        assert_eq!(exp.network.input(), [81, 7, 7]);
        assert_eq!(input_shape(&exp.network).height, 28);
        // bytes → pixel/255 → front → dense, as a requester does it, equals burn on the features
        let hwc: Vec<u8> = (0..784).map(|i| (i * 11 % 256) as u8).collect();
        let pixels: Vec<f32> = hwc.iter().map(|&b| f32::from(b) / 255.0).collect();
        let t = crate::data::Tensors::from_parts(pixels, vec![0], [1, 28, 28]).unwrap();
        let features = crate::front::apply(&net.spec, t).unwrap().image(0);
        let burn_out = net
            .forward(Tensor::<4>::from_data(
                TensorData::new(features, [1, 81, 7, 7]),
                &Device::flex(),
            ))
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let ours = exp
            .network
            .forward(&exp.network.normalize_hwc(&hwc).unwrap())
            .unwrap();
        for (a, b) in burn_out.iter().zip(&ours) {
            assert!(
                (a - b).abs() < 1e-4 * (1.0 + a.abs()),
                "{burn_out:?} vs {ours:?}"
            );
        }
        // a normaliser fitted to the layers' input instead of the image is refused
        assert!(
            export(
                &net,
                &Normalizer::identity(81),
                &names,
                &InputPreparation::default()
            )
            .is_err()
        );
    }
}
