//! The model family's specs, parameters and forward pass.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::*;
use crate::error::TrainError;

#[test]
fn default_network_shapes_and_depth() {
    let spec = ModelConfig::default().resolve([1, 28, 28], 11).unwrap();
    assert_eq!(spec.layers[0].output, vec![16, 12, 12]);
    assert_eq!(
        spec.layers[3].kind,
        LayerKind::Dense {
            in_features: 2304,
            out_features: 128
        }
    );
    assert_eq!(spec.layers.last().unwrap().output, vec![11]);
    assert_eq!(spec.multiplicative_depth(), 5);
    assert!(spec.is_he_friendly());
    let relu = ModelConfig::default()
        .with_activation(Activation::Relu)
        .resolve([1, 28, 28], 11)
        .unwrap();
    assert!(!relu.is_he_friendly());
    assert_eq!(relu.activation(), Some(Activation::Relu));
}

#[test]
fn pool_depth_and_bad_layouts() {
    let mut cfg = ModelConfig {
        layers: vec![
            LayerConfig::Conv {
                channels: 4,
                kernel: 3,
                stride: 1,
                padding: 1,
            },
            LayerConfig::Act { kind: None },
            LayerConfig::AvgPool {
                kernel: 2,
                stride: None,
            },
            LayerConfig::Dense { units: None },
        ],
        ..ModelConfig::default()
    };
    let spec = cfg.resolve([3, 8, 8], 2).unwrap();
    assert_eq!(spec.layers[2].output, vec![4, 4, 4]);
    assert_eq!(spec.multiplicative_depth(), 3); // conv + square + dense, pool folded
    // Pool as the last image op before the end (nothing to fold into) costs a level.
    cfg.layers.insert(
        0,
        LayerConfig::AvgPool {
            kernel: 2,
            stride: None,
        },
    );
    cfg.layers.insert(1, LayerConfig::Act { kind: None });
    assert_eq!(cfg.resolve([3, 8, 8], 2).unwrap().multiplicative_depth(), 5);

    let bn_first = ModelConfig {
        layers: vec![
            LayerConfig::BatchNorm {
                momentum: 0.1,
                epsilon: 1e-5,
            },
            LayerConfig::Dense { units: None },
        ],
        ..ModelConfig::default()
    };
    assert!(matches!(
        bn_first.resolve([1, 4, 4], 2),
        Err(TrainError::Model(_))
    ));
    let no_dense = ModelConfig {
        layers: vec![LayerConfig::Conv {
            channels: 2,
            kernel: 3,
            stride: 1,
            padding: 0,
        }],
        ..ModelConfig::default()
    };
    assert!(no_dense.resolve([1, 4, 4], 2).is_err());
    let too_big = ModelConfig {
        layers: vec![
            LayerConfig::Conv {
                channels: 2,
                kernel: 9,
                stride: 1,
                padding: 0,
            },
            LayerConfig::Dense { units: None },
        ],
        ..ModelConfig::default()
    };
    assert!(too_big.resolve([1, 4, 4], 2).is_err());
    let wrong_units = ModelConfig {
        layers: vec![LayerConfig::Dense { units: Some(3) }],
        ..ModelConfig::default()
    };
    assert!(wrong_units.resolve([1, 4, 4], 2).is_err());
}

#[test]
fn forward_shapes_for_every_activation() {
    let device = Device::flex();
    for a in [Activation::Square, Activation::Quadratic, Activation::Relu] {
        let spec = ModelConfig::default()
            .with_activation(a)
            .resolve([3, 28, 28], 8)
            .unwrap();
        let net = Network::init(&spec, &device);
        let y = net.forward(Tensor::zeros([2, 3, 28, 28], &device));
        assert_eq!(y.dims(), [2, 8]);
    }
}

#[test]
fn patch_layers_are_non_overlapping_convolutions() {
    let cfg: ModelConfig = toml::from_str(
        "[[layers]]\ntype = \"patch\"\nchannels = 8\nsize = 8\n\
         [[layers]]\ntype = \"act\"\n[[layers]]\ntype = \"dense\"\n",
    )
    .unwrap();
    let spec = cfg.resolve([1, 256, 256], 3).unwrap();
    assert_eq!(
        spec.layers[0].kind,
        LayerKind::Conv {
            in_channels: 1,
            out_channels: 8,
            kernel: 8,
            stride: 8,
            padding: 0
        }
    );
    assert_eq!(spec.layers[0].output, vec![8, 32, 32]);
    assert_eq!(spec.multiplicative_depth(), 3);
    assert!(toml::from_str::<ModelConfig>("[[layers]]\ntype = \"patch\"\nchannels = 8\n").is_err());
}

#[test]
fn the_range_penalty_measures_what_passes_the_bound_and_training_pulls_it_in() {
    use crate::data::Tensors;
    use crate::train::{TrainConfig, TrainOptions, train};
    let model: ModelConfig = toml::from_str(
        r#"
        activation = "poly"
        poly_init = [0.5, 1.0, 0.0]
        [[layers]]
        type = "conv"
        channels = 4
        kernel = 3
        padding = 1
        [[layers]]
        type = "act"
        [[layers]]
        type = "residual"
        channels = 4
        [[layers]]
        type = "global-avg-pool"
        [[layers]]
        type = "dense"
        "#,
    )
    .unwrap();
    let spec = model.resolve([1, 8, 8], 2).unwrap();
    let device = Device::flex().autodiff();
    let net = Network::init(&spec, &device);
    // inputs of size 3: a·x² with a = 0.5 already passes 1 on many values
    let x: Vec<f32> = (0..64 * 64)
        .map(|i| ((i * 7919) % 13) as f32 / 2.0 - 3.0)
        .collect();
    let y: Vec<u32> = (0..64).map(|i| i % 2).collect();
    let data = Tensors::from_parts(x.clone(), y, [1, 8, 8]).unwrap();
    let excess = |net: &Network| {
        let t = Tensor::<4>::from_data(
            burn::tensor::TensorData::new(x.clone(), [64, 1, 8, 8]),
            &Device::flex(),
        );
        let (_, p) = net.clone().valid().forward_with_range(t, 1.0);
        p.unwrap()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap()[0]
    };
    let before = excess(&net);
    assert!(before > 0.1, "{before}");
    let cfg = |penalty| TrainConfig {
        epochs: 30,
        batch_size: 16,
        lr: 1e-2,
        range_penalty: penalty,
        range_bound: 1.0,
        ..TrainConfig::default()
    };
    let (plain, _) = train(net.clone(), &data, &cfg(0.0), &TrainOptions::default()).unwrap();
    let (kept, _) = train(net, &data, &cfg(10.0), &TrainOptions::default()).unwrap();
    let (p, k) = (excess(&plain), excess(&kept));
    assert!(
        k < p / 4.0 && k < before / 4.0,
        "with the penalty {k}, without {p}, before {before}"
    );
    assert!(
        toml::from_str::<TrainConfig>("range_penalty = -1.0")
            .unwrap()
            .validate()
            .is_err()
    );
}

#[test]
fn a_fixed_normalization_is_every_hospitals_and_checked() {
    // two "hospitals" whose images differ in brightness
    let set = |offset: u8| {
        let images =
            ndarray::Array4::from_shape_fn((4, 2, 2, 1), |(n, y, x, _)| offset + (n + y + x) as u8);
        datasets::ImageSet::new(
            images,
            datasets::Labels::Class(vec![0, 1, 0, 1]),
            None,
            None,
        )
        .unwrap()
    };
    let (dark, bright) = (set(10), set(200));
    let local = ModelConfig::default();
    assert_ne!(
        local.normalizer(&dark).unwrap(),
        local.normalizer(&bright).unwrap(),
        "without [model.normalization] each fits its own images"
    );
    let agreed: ModelConfig =
        toml::from_str("[normalization]\nmean = [0.5]\nstd = [0.25]\n").unwrap();
    let a = agreed.normalizer(&dark).unwrap();
    assert_eq!(a, agreed.normalizer(&bright).unwrap());
    assert_eq!((a.mean, a.std), (vec![0.5], vec![0.25]));
    // one value per channel, positive deviations, no front beside it
    for bad in [
        "[normalization]\nmean = [0.5, 0.5]\nstd = [0.25, 0.25]\n",
        "[normalization]\nmean = [0.5]\nstd = [0.0]\n",
        "[normalization]\nmean = [0.5]\nstd = [-1.0]\n",
        "[normalization]\nmean = [0.5]\nstd = [0.25]\n[front]\ntype = \"scatter\"\n",
    ] {
        let cfg: ModelConfig = toml::from_str(bad).unwrap();
        let e = cfg.normalizer(&dark).unwrap_err().to_string();
        assert!(e.contains("[model"), "{bad}: {e}");
    }
    assert!(toml::from_str::<ModelConfig>("[normalization]\nmean = [0.5]\n").is_err());
}
