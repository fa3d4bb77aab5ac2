//! A trained burn network exported in the one network format, `heal-network/1`
//! ([`he_agg::infer::NetworkFile`]): `f32` weights with shapes, batch-norm folded away, ready
//! for encrypted inference and for the plaintext reference forward pass
//! ([`he_agg::infer::Network::forward`]).
//!
//! Batch-norm `γ (x − μ)/√(σ² + ε) + β` after a conv/dense layer is folded into it:
//! `W' = W · s`, `b' = (b − μ)·s + β` with `s = γ/√(σ² + ε)` per output channel.

use std::path::Path;

use datasets::{InputPreparation, Normalizer};
use he_agg::infer::{Conv2d, Dense, Layer, NetworkFile};

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
            LayerKind::BatchNorm { epsilon, .. } => {
                let (gamma, beta, mean, var) = (take(), take(), take(), take());
                let scale: Vec<f32> = gamma
                    .iter()
                    .zip(&var)
                    .map(|(g, v)| g / (v + *epsilon as f32).sqrt())
                    .collect();
                let fold = |weight: &mut [f32], bias: &mut [f32]| {
                    let per = weight.len() / bias.len();
                    for (o, b) in bias.iter_mut().enumerate() {
                        for w in &mut weight[o * per..(o + 1) * per] {
                            *w *= scale[o];
                        }
                        *b = (*b - mean[o]) * scale[o] + beta[o];
                    }
                };
                match layers.last_mut() {
                    Some(Layer::Conv2d(Conv2d { weight, bias, .. }))
                    | Some(Layer::Dense(Dense { weight, bias, .. })) => fold(weight, bias),
                    _ => unreachable!("resolve() puts batch-norm right after conv/dense"),
                }
            }
            LayerKind::Dropout { .. } => {}
            LayerKind::Act { activation } => layers.push(match activation {
                Activation::Square => Layer::Square,
                Activation::Relu => Layer::Relu,
                Activation::Quadratic => {
                    let a = take()[0];
                    let b = take()[0];
                    Layer::Quadratic { a, b }
                }
            }),
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
                }
            }
        }
        from_flat(net, &flat).unwrap()
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
