//! The transfer commands end to end on real MedMNIST files: a backbone pretrained on two sets
//! starts a third set's training; a ReLU network with max-pool is converted into an
//! HE-friendly twin that learns from it; DP-SGD trains only what follows a frozen backbone.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use datasets::DatasetConfig;
use training::baseline::{BaselineConfig, BaselineSettings, run_baseline};
use training::model::{HeadInit, InitConfig, InitSpec, ModelConfig, Network, WeightsLayout};
use training::params::{manifest, to_flat};
use training::train::{Distill, TrainConfig, TrainOptions, evaluate, train};
use training::transfer::pretrain::{Method, PretrainConfig, PretrainSettings, run_pretrain};
use training::transfer::{Weights, run_convert};

fn data_dir() -> PathBuf {
    std::env::var_os("HEAL_DATA_DIR")
        .map(PathBuf::from)
        .expect("the tests need the MedMNIST files; set HEAL_DATA_DIR")
}

fn medmnist(name: &str) -> DatasetConfig {
    toml::from_str(&format!(
        "kind = \"medmnist\"\nname = \"{name}\"\noffline = true\ndata_dir = {:?}",
        data_dir()
    ))
    .unwrap()
}

fn network(activation: &str, pool: bool) -> ModelConfig {
    let pool = if pool {
        "[[layers]]\ntype = \"max-pool\"\nkernel = 3\nstride = 2\npadding = 1\n"
    } else {
        ""
    };
    toml::from_str(&format!(
        r#"
        activation = "{activation}"
        [[layers]]
        type = "conv"
        channels = 8
        kernel = 3
        padding = 1
        [[layers]]
        type = "batch-norm"
        [[layers]]
        type = "act"
        {pool}
        [[layers]]
        type = "residual"
        channels = 16
        stride = 2
        [[layers]]
        type = "global-avg-pool"
        [[layers]]
        type = "dense"
        "#
    ))
    .unwrap()
}

fn quick(epochs: usize, lr: f64) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 32,
        lr,
        grad_clip: Some(5.0),
        ..TrainConfig::default()
    }
}

fn baseline(model: ModelConfig, epochs: usize, lr: f64) -> BaselineConfig {
    BaselineConfig {
        dataset: medmnist("breastmnist"),
        model,
        train: quick(epochs, lr),
        baseline: BaselineSettings {
            max_train: Some(300),
            use_val: false,
            ..BaselineSettings::default()
        },
        distill: None,
    }
}

fn init(path: &Path, head: HeadInit) -> Option<InitSpec> {
    Some(InitSpec::Table(InitConfig {
        path: path.to_path_buf(),
        layout: WeightsLayout::Heal,
        head,
        freeze: 0,
        layers: None,
        blake3: None,
    }))
}

#[test]
fn a_backbone_pretrained_on_two_sets_starts_a_third() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = PretrainConfig {
        pretrain: PretrainSettings {
            sources: vec![medmnist("bloodmnist"), medmnist("retinamnist")],
            channels: 1,
            max_per_source: Some(400),
            method: Method::Supervised,
            temperature: None,
            projection: None,
        },
        model: network("poly", false),
        train: quick(1, 2e-3),
        baseline: BaselineSettings::default(),
    };
    let out = dir.path().join("pretrain");
    let (s, _) = run_pretrain(&cfg, dir.path(), &out, false).unwrap();
    assert_eq!(s.classes, 8 + 5);
    assert_eq!(s.sources[1].first_label, 8);
    assert_eq!(s.sources.iter().map(|s| s.train_images).sum::<usize>(), 800);
    let file = out.join("backbone.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(s.blake3, blake3::hash(&bytes).to_hex().to_string());
    let w = Weights::read(&file).unwrap();
    assert_eq!(w.metadata["made_by"], "client pretrain");
    assert!(
        w.metadata["classes"].starts_with("bloodmnist/"),
        "{}",
        w.metadata["classes"]
    );
    assert!(w.metadata["sources"].contains("retinamnist"));

    // BreastMNIST from that backbone: every tensor but the 13-class head comes from the file
    let mut model = network("poly", false);
    model.init = init(&file, HeadInit::Replace);
    let run = dir.path().join("finetune");
    let o = run_baseline(&baseline(model, 1, 1e-3), dir.path(), &run, false).unwrap();
    let r = o.summary.init.as_ref().unwrap();
    assert_eq!(r.blake3, s.blake3);
    assert_eq!(r.initial.len(), 2);
    assert_eq!(r.loaded, manifest(&o.network.spec).entries.len() - 2);
    assert!(run.join("network.json").exists() && run.join("weights.safetensors").exists());
    // the same from a missing file: refused before any training
    let mut model = network("poly", false);
    model.init = init(&dir.path().join("missing.safetensors"), HeadInit::Replace);
    let e = run_baseline(&baseline(model, 1, 1e-3), dir.path(), &run, false).unwrap_err();
    assert!(e.to_string().contains("missing.safetensors"), "{e}");
}

#[test]
fn a_relu_network_with_max_pool_becomes_an_he_friendly_twin_that_learns_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let teacher_out = dir.path().join("relu");
    let relu = run_baseline(
        &baseline(network("relu", true), 8, 2e-3),
        dir.path(),
        &teacher_out,
        false,
    )
    .unwrap();
    assert!(!relu.summary.he_friendly);
    assert!(
        !teacher_out.join("network.json").exists(),
        "max-pool is not exported"
    );

    let mut model = network("relu", true);
    model.init = init(&teacher_out.join("weights.safetensors"), HeadInit::Keep);
    let mut cfg = baseline(model, 8, 2e-3);
    cfg.distill = Some(Distill::default());
    let out = dir.path().join("converted");
    let (c, o) = run_convert(&cfg, dir.path(), &out, false).unwrap();
    assert_eq!((c.conversion.activations, c.conversion.max_pools), (3, 1));
    assert!(o.summary.he_friendly);
    assert_eq!(c.teacher_test_acc, relu.summary.test_acc);
    // what the ReLU network learnt is carried over: the trained twin agrees with it more
    // than the twin with its weights and untrained polynomials did
    assert!(
        c.agreement > c.swapped_agreement && c.agreement >= 0.8,
        "agreement {} (before training {})",
        c.agreement,
        c.swapped_agreement
    );
    let file = he_agg::infer::NetworkFile::read_json(&out.join("network.json")).unwrap();
    assert_eq!(file.class_names.len(), 2);
    // [distill] belongs to convert; a baseline with one is refused
    let e = run_baseline(&cfg, dir.path(), &out, false).unwrap_err();
    assert!(e.to_string().contains("[distill]"), "{e}");
}

#[test]
fn dp_sgd_trains_only_what_follows_a_frozen_backbone() {
    use training::dp_sgd::DpSgd;
    let (train_t, test_t, names) = common::tensors("organamnist", 2000, 1000);
    let mut model = network("relu", false);
    model.init = None;
    let mut spec = model.resolve(train_t.shape, 11).unwrap();
    spec.frozen = 4; // conv, batch norm, act, the block: global pooling and dense train
    let device = Device::flex().autodiff();
    let net = Network::init(&spec, &device);
    let before = to_flat(&net);
    let dp = DpSgd {
        clip: 1.0,
        noise_multiplier: 0.8,
        sample_rate: 256.0 / 2000.0,
        steps: 60,
    };
    let opts = TrainOptions {
        dp: Some(dp),
        ..Default::default()
    };
    let (net, _) = train(net, &train_t, &quick(1, 0.5), &opts).unwrap();
    let after = to_flat(&net);
    for e in &manifest(&spec).entries {
        let moved = before[e.offset..e.offset + e.len] != after[e.offset..e.offset + e.len];
        // the frozen layers' statistics too: their features are taken in evaluation mode
        assert_eq!(
            moved,
            e.name.ends_with("dense.weight") || e.name.ends_with("dense.bias"),
            "{}",
            e.name
        );
    }
    let r = evaluate(&net, &test_t, &names).unwrap();
    assert!(r.macro_auc > 0.75, "AUC {}", r.macro_auc);
    // unfrozen, the same network is refused: its batch norms mix a batch's examples
    let spec = training::model::NetworkSpec { frozen: 0, ..spec };
    let e = train(
        Network::init(&spec, &device),
        &train_t,
        &quick(1, 0.5),
        &opts,
    )
    .unwrap_err();
    assert!(e.to_string().contains("freeze"), "{e}");
}

#[test]
fn dp_sgd_trains_batch_norms_and_residual_blocks_on_fixed_statistics() {
    use training::dp_sgd::DpSgd;
    use training::train::NormStatistics;
    let (train_t, test_t, names) = common::tensors("organamnist", 2000, 1000);
    let mut model = network("poly", false);
    model.init = None;
    let spec = model.resolve(train_t.shape, 11).unwrap();
    let device = Device::flex().autodiff();
    let net = Network::init(&spec, &device);
    let before = to_flat(&net);
    let opts = TrainOptions {
        dp: Some(DpSgd {
            clip: 1.0,
            noise_multiplier: 0.8,
            sample_rate: 256.0 / 2000.0,
            steps: 60,
        }),
        ..Default::default()
    };
    let cfg = TrainConfig {
        norm_statistics: NormStatistics::Frozen,
        ..quick(1, 0.03)
    };
    let (net, report) = train(net, &train_t, &cfg, &opts).unwrap();
    let after = to_flat(&net);
    for e in &manifest(&spec).entries {
        let moved = before[e.offset..e.offset + e.len] != after[e.offset..e.offset + e.len];
        // γ, β, convolutions and coefficients train; the statistics stay the ones it started with
        assert_eq!(moved, e.trainable, "{}", e.name);
    }
    let r = evaluate(&net, &test_t, &names).unwrap();
    eprintln!("AUC {}", r.macro_auc);
    // 0.80 in two runs on 2 cores; a network that learns nothing gives 0.5
    assert!(
        r.macro_auc > 0.7,
        "AUC {} (train loss {:?})",
        r.macro_auc,
        report.epochs
    );
}

#[test]
fn a_backbone_learnt_without_labels_separates_classes_and_starts_a_task() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = PretrainConfig {
        pretrain: PretrainSettings {
            sources: vec![medmnist("bloodmnist"), medmnist("retinamnist")],
            channels: 1,
            max_per_source: Some(400),
            method: Method::Contrastive,
            temperature: Some(0.2),
            projection: Some(32),
        },
        model: network("poly", false),
        train: TrainConfig {
            batch_size: 64,
            ..quick(4, 2e-3)
        },
        baseline: BaselineSettings::default(),
    };
    let out = dir.path().join("contrastive");
    // two views of an image must differ
    let e = run_pretrain(&cfg, dir.path(), &out, false).unwrap_err();
    assert!(e.to_string().contains("augmentation"), "{e}");
    cfg.train.shift = 2;
    cfg.train.hflip = true;
    cfg.train.brightness = 0.2;
    cfg.train.contrast = 0.2;
    let (s, report) = run_pretrain(&cfg, dir.path(), &out, false).unwrap();
    assert_eq!(s.method, Method::Contrastive);
    let (first, last) = (&report.epochs[0], report.epochs.last().unwrap());
    assert!(last.train_loss < first.train_loss, "{report:?}");
    // a view's nearest other view is its twin far more often than by chance (1 in 127; 0.11
    // to 0.13 in a run)
    assert!(last.train_acc > 0.05, "{report:?}");
    let w = Weights::read(&out.join("backbone.safetensors")).unwrap();
    assert_eq!(w.metadata["made_by"], "client pretrain");
    // the projection head is the last layer; a task replaces it
    let mut model = network("poly", false);
    model.init = init(&out.join("backbone.safetensors"), HeadInit::Replace);
    let run = dir.path().join("finetune");
    let o = run_baseline(&baseline(model, 1, 1e-3), dir.path(), &run, false).unwrap();
    let r = o.summary.init.as_ref().unwrap();
    assert_eq!(r.blake3, s.blake3);
    assert_eq!(r.loaded, manifest(&o.network.spec).entries.len() - 2);
    // supervised pretraining takes no contrastive keys
    cfg.pretrain.method = Method::Supervised;
    let e = run_pretrain(&cfg, dir.path(), &out, false).unwrap_err();
    assert!(e.to_string().contains("contrastive"), "{e}");
}

#[test]
fn an_unlabelled_archive_feeds_contrastive_pretraining_and_nothing_else() {
    use datasets::dicom_writer::{ct_slice, synthetic_hu};
    let dir = tempfile::tempdir().unwrap();
    // a PACS export: patient/series folders, DICOM files without extensions
    for i in 0..40u32 {
        let series = dir.path().join(format!("archive/P{}/CT", i % 5));
        std::fs::create_dir_all(&series).unwrap();
        let hu = synthetic_hu(32, (i % 2) as usize, i);
        let file = ct_slice(32, 32, &hu, Some(&format!("P{}", i % 5))).unwrap();
        std::fs::write(series.join(format!("IM{i:04}")), file).unwrap();
    }
    let archive: DatasetConfig = toml::from_str(
        "kind = \"unlabelled\"\nroot = \"archive\"\nchannels = 1\nheight = 28\nwidth = 28\n",
    )
    .unwrap();
    let mut cfg = PretrainConfig {
        pretrain: PretrainSettings {
            sources: vec![archive.clone()],
            channels: 1,
            max_per_source: Some(100),
            method: Method::Contrastive,
            temperature: Some(0.2),
            projection: Some(16),
        },
        model: network("poly", false),
        train: TrainConfig {
            shift: 2,
            hflip: true,
            brightness: 0.2,
            contrast: 0.2,
            ..quick(1, 2e-3)
        },
        baseline: BaselineSettings::default(),
    };
    // the archive alone: trained on, nothing to measure
    let (s, report) = run_pretrain(&cfg, dir.path(), &dir.path().join("a"), false).unwrap();
    assert_eq!(report.epochs.len(), 1);
    assert_eq!((s.sources[0].train_images, s.sources[0].classes), (40, 0));
    assert_eq!(
        (s.sources[0].test_acc, s.test_acc, s.classes),
        (None, None, 0)
    );
    // beside a labelled set: the labelled one is measured by its own training images only
    cfg.pretrain.sources.insert(0, medmnist("retinamnist"));
    let (s, _) = run_pretrain(&cfg, dir.path(), &dir.path().join("b"), false).unwrap();
    let n: Vec<_> = s.sources.iter().map(|s| s.train_images).collect();
    assert_eq!(n, [100, 40]);
    assert_eq!((s.sources[1].first_label, s.sources[1].classes), (5, 0));
    assert!(s.sources[0].test_acc.is_some_and(|a| a > 0.0));
    assert_eq!(s.test_acc, s.sources[0].test_acc);
    // labels are needed everywhere else
    cfg.pretrain.method = Method::Supervised;
    cfg.pretrain.temperature = None;
    cfg.pretrain.projection = None;
    let e = run_pretrain(&cfg, dir.path(), &dir.path().join("c"), false).unwrap_err();
    assert!(e.to_string().contains("archive is unlabelled"), "{e}");
    let mut job = baseline(network("poly", false), 1, 1e-3);
    job.dataset = archive;
    let e = run_baseline(&job, dir.path(), &dir.path().join("d"), false).unwrap_err();
    assert!(e.to_string().contains("client pretrain"), "{e}");
}
