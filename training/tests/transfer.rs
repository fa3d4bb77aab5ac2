//! Pretrained weights in: a torchvision ResNet-18 state dict (written here as safetensors and
//! as a PyTorch zip file, never downloaded) loads into HEAL's network and gives the outputs of
//! an independent evaluation of the same state dict; files that do not fit are refused by name;
//! HEAL's own files round-trip; frozen layers stay put.

mod common;
#[path = "support/resnet_reference.rs"]
mod reference;
#[path = "support/torch_file.rs"]
mod torch_file;

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use reference::{Map, StateDict};
use training::model::{Activation, HeadInit, InitConfig, ModelConfig, Network, WeightsLayout};
use training::params::to_flat;
use training::train::{TrainConfig, TrainOptions, train};
use training::transfer::{NamedTensor, Weights, load_init, torchvision_resnet, weights_of};

fn resnet(blocks: &[usize], activation: Activation) -> ModelConfig {
    torchvision_resnet(blocks).with_activation(activation)
}

fn to_weights(sd: &StateDict) -> Weights {
    let mut w = Weights::default();
    for (n, (shape, values)) in sd {
        w.tensors.insert(
            n.clone(),
            NamedTensor {
                shape: shape.clone(),
                values: values.clone(),
            },
        );
    }
    w
}

fn write_pth(path: &Path, sd: &StateDict) {
    let mut tensors: Vec<(String, Vec<usize>, torch_file::Values)> = sd
        .iter()
        .map(|(n, (s, v))| (n.clone(), s.clone(), torch_file::Values::F32(v.clone())))
        .collect();
    // integer tensors are skipped on reading, as PyTorch writes them into every batch norm
    tensors.push((
        "bn1.num_batches_tracked".into(),
        vec![],
        torch_file::Values::I64(vec![7]),
    ));
    torch_file::write(path, &tensors);
}

fn init(path: &Path, layout: WeightsLayout, head: HeadInit) -> InitConfig {
    InitConfig {
        path: path.to_path_buf(),
        layout,
        head,
        freeze: 0,
        layers: None,
        blake3: None,
    }
}

fn images(n: usize, c: usize, side: usize, seed: u64) -> Vec<f32> {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(seed);
    (0..n * c * side * side)
        .map(|_| rng.random_range(-2.0f32..2.0))
        .collect()
}

fn logits(net: &Network, x: &[f32], shape: [usize; 4]) -> Vec<f32> {
    let t = Tensor::<4>::from_data(TensorData::new(x.to_vec(), shape), &Device::flex());
    net.forward(t)
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    let err = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert_eq!(got.len(), want.len(), "{what}");
    assert!(
        err <= 1e-4 * scale,
        "{what}: largest difference {err} for logits up to {scale}"
    );
}

#[test]
fn a_torchvision_resnet18_loads_from_safetensors_and_pytorch_and_matches_the_reference() {
    let blocks = [2, 2, 2, 2];
    let sd = reference::random(&blocks, 10, 18);
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("resnet18.safetensors");
    to_weights(&sd).write_safetensors(&st).unwrap();
    let pth = dir.path().join("resnet18.pth");
    write_pth(&pth, &sd);

    let side = 32;
    let x = images(2, 3, side, 1);
    let want: Vec<f32> = (0..2)
        .flat_map(|i| {
            let per = 3 * side * side;
            let m = Map {
                c: 3,
                h: side,
                w: side,
                v: x[i * per..(i + 1) * per].to_vec(),
            };
            reference::forward(&sd, &blocks, &m)
        })
        .collect();
    let spec = resnet(&blocks, Activation::Relu)
        .resolve([3, side, side], 10)
        .unwrap();
    let device = Device::flex();
    for file in [&st, &pth] {
        let (net, report) = load_init(
            &spec,
            &init(file, WeightsLayout::Torchvision, HeadInit::Keep),
            Path::new("."),
            &device,
        )
        .unwrap();
        // 62 tensors of torchvision's ResNet-18 (weights, biases, statistics): all read
        assert_eq!(report.loaded, sd.len(), "{}", file.display());
        assert!(report.ignored.is_empty(), "{:?}", report.ignored);
        assert_close(
            &logits(&net, &x, [2, 3, side, side]),
            &want,
            &file.display().to_string(),
        );
    }

    // grey images: the first convolution summed over R, G, B reads R = G = B
    let grey = images(1, 1, side, 2);
    let rgb: Vec<f32> = grey.iter().cycle().take(3 * grey.len()).copied().collect();
    let want = reference::forward(
        &sd,
        &blocks,
        &Map {
            c: 3,
            h: side,
            w: side,
            v: rgb,
        },
    );
    let spec1 = resnet(&blocks, Activation::Relu)
        .resolve([1, side, side], 10)
        .unwrap();
    let (net, report) = load_init(
        &spec1,
        &init(&st, WeightsLayout::Torchvision, HeadInit::Keep),
        Path::new("."),
        &device,
    )
    .unwrap();
    assert_eq!(report.adapted.len(), 1, "{:?}", report.adapted);
    assert_close(&logits(&net, &grey, [1, 1, side, side]), &want, "grey");
}

#[test]
fn files_that_do_not_fit_are_refused_with_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex();
    let spec18 = resnet(&[2, 2, 2, 2], Activation::Relu)
        .resolve([3, 32, 32], 10)
        .unwrap();
    // a ResNet-34 (3, 4, 6, 3 blocks) given to a ResNet-18 config
    let p34 = dir.path().join("resnet34.safetensors");
    to_weights(&reference::random(&[3, 4, 6, 3], 10, 34))
        .write_safetensors(&p34)
        .unwrap();
    let e = load_init(
        &spec18,
        &init(&p34, WeightsLayout::Torchvision, HeadInit::Keep),
        dir.path(),
        &device,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("no place for") && e.contains("layer1.2."), "{e}");

    // a torchvision head of 1000 classes kept for 10: the shapes, and what to set
    let p = dir.path().join("imagenet.safetensors");
    let sd = reference::random(&[2, 2, 2, 2], 1000, 1);
    to_weights(&sd).write_safetensors(&p).unwrap();
    let e = load_init(
        &spec18,
        &init(&p, WeightsLayout::Torchvision, HeadInit::Keep),
        dir.path(),
        &device,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("[1000, 512]") && e.contains("head = \"replace\""),
        "{e}"
    );
    // … replaced, it loads, the fc tensors reported as ignored
    let (_, r) = load_init(
        &spec18,
        &init(&p, WeightsLayout::Torchvision, HeadInit::Replace),
        dir.path(),
        &device,
    )
    .unwrap();
    assert_eq!(
        r.ignored,
        vec!["fc.bias".to_string(), "fc.weight".to_string()]
    );

    // a missing tensor, a non-finite value, another digest, another format
    let mut broken = sd.clone();
    broken.remove("layer3.1.bn2.running_var");
    to_weights(&broken).write_safetensors(&p).unwrap();
    let e = load_init(
        &spec18,
        &init(&p, WeightsLayout::Torchvision, HeadInit::Replace),
        dir.path(),
        &device,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("layer3.1.bn2.running_var") && e.contains("not in the file"),
        "{e}"
    );
    let mut nan = sd.clone();
    nan.get_mut("layer2.0.conv1.weight").unwrap().1[5] = f32::NAN;
    to_weights(&nan).write_safetensors(&p).unwrap();
    let e = load_init(
        &spec18,
        &init(&p, WeightsLayout::Torchvision, HeadInit::Replace),
        dir.path(),
        &device,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("layer2.0.conv1.weight: value 5 is NaN"), "{e}");
    let mut wrong = init(&p, WeightsLayout::Torchvision, HeadInit::Replace);
    wrong.blake3 = Some("00".repeat(32));
    let e = load_init(&spec18, &wrong, dir.path(), &device)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not the agreed backbone"), "{e}");
    let garbage = dir.path().join("w.pth");
    std::fs::write(&garbage, b"PK\x03\x04 not really a zip").unwrap();
    assert!(
        load_init(
            &spec18,
            &init(&garbage, WeightsLayout::Torchvision, HeadInit::Replace),
            dir.path(),
            &device
        )
        .is_err()
    );
}

fn small_resnet(activation: Activation) -> ModelConfig {
    toml::from_str::<ModelConfig>(&format!(
        r#"
        activation = "{}"
        [[layers]]
        type = "conv"
        channels = 8
        kernel = 3
        stride = 2
        padding = 1
        [[layers]]
        type = "batch-norm"
        [[layers]]
        type = "act"
        [[layers]]
        type = "residual"
        channels = 8
        [[layers]]
        type = "residual"
        channels = 16
        stride = 2
        [[layers]]
        type = "global-avg-pool"
        [[layers]]
        type = "dense"
        "#,
        activation.name()
    ))
    .unwrap()
}

#[test]
fn heal_weights_round_trip_and_a_replaced_head_keeps_the_backbone() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex();
    let spec = small_resnet(Activation::Poly)
        .resolve([1, 28, 28], 24)
        .unwrap();
    let src = Network::init(
        &training::model::NetworkSpec {
            init_seed: 9,
            ..spec.clone()
        },
        &device,
    );
    let p = dir.path().join("backbone.safetensors");
    weights_of(&src, [("made_by", "test".to_string())])
        .write_safetensors(&p)
        .unwrap();
    let (same, r) = load_init(
        &spec,
        &init(&p, WeightsLayout::Heal, HeadInit::Keep),
        dir.path(),
        &device,
    )
    .unwrap();
    assert_eq!(to_flat(&same), to_flat(&src));
    assert_eq!(r.metadata.get("made_by").map(String::as_str), Some("test"));
    assert_eq!(
        r.metadata.get("format").map(String::as_str),
        Some("heal-weights/1")
    );

    // the task has 2 classes: everything but the last dense layer comes from the backbone
    let task = small_resnet(Activation::Poly)
        .resolve([1, 28, 28], 2)
        .unwrap();
    let (net, r) = load_init(
        &task,
        &init(&p, WeightsLayout::Heal, HeadInit::Replace),
        dir.path(),
        &device,
    )
    .unwrap();
    let m = training::params::manifest(&task);
    let (a, b) = (to_flat(&net), to_flat(&src));
    let head = m
        .entries
        .iter()
        .position(|e| e.name.ends_with("dense.weight"))
        .unwrap();
    let cut = m.entries[head].offset;
    assert_eq!(a[..cut], b[..cut]);
    assert_eq!(r.initial.len(), 2);
    assert_eq!(r.ignored.len(), 2);

    // the first 4 layers only (stem and first block): the rest starts from init_seed, and the
    // file's deeper tensors are left unread
    let mut first4 = init(&p, WeightsLayout::Heal, HeadInit::Replace);
    first4.layers = Some(4);
    let (net, r) = load_init(&task, &first4, dir.path(), &device).unwrap();
    let fresh = to_flat(&Network::init(&task, &device));
    let a = to_flat(&net);
    let cut = m
        .entries
        .iter()
        .find(|e| e.name.starts_with("4."))
        .unwrap()
        .offset;
    assert_eq!(a[..cut], b[..cut]);
    assert_eq!(a[cut..], fresh[cut..]);
    assert!(
        r.ignored.iter().any(|n| n.starts_with("4.residual")),
        "{:?}",
        r.ignored
    );
    first4.layers = Some(99);
    assert!(load_init(&task, &first4, dir.path(), &device).is_err());

    // a ReLU backbone into the polynomial network: the coefficients start at poly_init
    let relu = small_resnet(Activation::Relu)
        .resolve([1, 28, 28], 24)
        .unwrap();
    let p2 = dir.path().join("relu.safetensors");
    weights_of(&Network::init(&relu, &device), [])
        .write_safetensors(&p2)
        .unwrap();
    let (_, r) = load_init(
        &task,
        &init(&p2, WeightsLayout::Heal, HeadInit::Replace),
        dir.path(),
        &device,
    )
    .unwrap();
    assert_eq!(r.initial.len(), 2 + 3 * 5, "{:?}", r.initial);
}

#[test]
fn frozen_layers_do_not_move_and_the_rest_trains() {
    let (train_t, _, _) = common::tensors("breastmnist", 128, 1);
    let device = Device::flex().autodiff();
    let dir = tempfile::tempdir().unwrap();
    let spec = small_resnet(Activation::Poly)
        .resolve(train_t.shape, 2)
        .unwrap();
    let p = dir.path().join("b.safetensors");
    weights_of(&Network::init(&spec, &device), [])
        .write_safetensors(&p)
        .unwrap();
    let mut cfg = init(&p, WeightsLayout::Heal, HeadInit::Keep);
    cfg.freeze = 4; // the stem and the first block
    let spec = training::model::NetworkSpec { frozen: 4, ..spec };
    let (net, _) = load_init(&spec, &cfg, dir.path(), &device).unwrap();
    let before = to_flat(&net);
    let tc = TrainConfig {
        epochs: 1,
        batch_size: 32,
        lr: 1e-2,
        ..TrainConfig::default()
    };
    let (net, _) = train(net, &train_t, &tc, &TrainOptions::default()).unwrap();
    let after = to_flat(&net);
    let m = training::params::manifest(&spec);
    for e in &m.entries {
        let moved = before[e.offset..e.offset + e.len] != after[e.offset..e.offset + e.len];
        let layer: usize = e.name.split('.').next().unwrap().parse().unwrap();
        if !e.trainable {
            continue; // running statistics follow the data either way
        }
        assert_eq!(moved, layer >= 4, "{} moved: {moved}", e.name);
    }
}

#[test]
fn frozen_norm_statistics_stay_as_loaded_while_gamma_and_beta_train() {
    let (train_t, _, _) = common::tensors("breastmnist", 128, 1);
    let device = Device::flex().autodiff();
    let spec = small_resnet(Activation::Poly)
        .resolve(train_t.shape, 2)
        .unwrap();
    let m = training::params::manifest(&spec);
    let run = |stats: training::train::NormStatistics| {
        let net = Network::init(&spec, &device);
        let before = to_flat(&net);
        let tc = TrainConfig {
            epochs: 1,
            batch_size: 32,
            lr: 1e-2,
            norm_statistics: stats,
            ..TrainConfig::default()
        };
        let (net, _) = train(net, &train_t, &tc, &TrainOptions::default()).unwrap();
        let after = to_flat(&net);
        let moved = |pred: &dyn Fn(&str) -> bool| {
            m.entries
                .iter()
                .filter(|e| pred(&e.name))
                .filter(|e| before[e.offset..e.offset + e.len] != after[e.offset..e.offset + e.len])
                .count()
        };
        let running = moved(&|n: &str| n.contains("running"));
        let affine = moved(&|n: &str| n.ends_with("gamma") || n.ends_with("beta"));
        (running, affine)
    };
    let stats = m
        .entries
        .iter()
        .filter(|e| e.name.contains("running"))
        .count();
    assert!(stats > 0, "the network has batch norms");
    let (running, affine) = run(training::train::NormStatistics::Batch);
    assert_eq!(running, stats, "batch statistics move the running ones");
    assert!(affine > 0);
    let (running, affine) = run(training::train::NormStatistics::Frozen);
    assert_eq!(running, 0, "frozen statistics stay as loaded");
    assert!(affine > 0, "γ and β still train");
}
