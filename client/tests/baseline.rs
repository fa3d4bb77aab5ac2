//! The baseline command end to end (library and binary), and config errors.

mod common;

use std::path::Path;
use std::process::Command;

use training::TrainError;
use training::baseline::{BaselineConfig, run_baseline};

fn write_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let text = format!(
        "[dataset]\nkind = \"medmnist\"\nname = \"breastmnist\"\noffline = true\ndata_dir = {:?}\n\
         [train]\nepochs = 2\nbatch_size = 32\n{extra}\n[baseline]\nmax_train = 200\n",
        common::data_dir().display().to_string()
    );
    let p = dir.join("cfg.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn baseline_writes_summary_and_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_config(tmp.path(), "");
    let cfg = BaselineConfig::load(&path).unwrap();
    let out = tmp.path().join("out");
    let o = run_baseline(&cfg, tmp.path(), &out, false).unwrap();
    assert_eq!(o.summary.dataset, "breastmnist");
    assert_eq!(o.summary.activation, "square");
    assert_eq!(o.summary.epochs, 2);
    assert_eq!(o.summary.train_images, 200);
    assert_eq!(o.summary.test_images, 156);
    assert!(o.summary.train_images_per_s > 0.0);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    for key in [
        "dataset",
        "activation",
        "test_acc",
        "test_auc",
        "epochs",
        "train_images_per_s",
    ] {
        assert!(json.get(key).is_some(), "summary.json lacks {key}");
    }
    assert_eq!(json["test_acc"].as_f64().unwrap(), o.test.accuracy);
    for f in [
        "test_per_class.csv",
        "test_per_class.parquet",
        "test_confusion.csv",
        "test_confusion.parquet",
        "val_per_class.csv",
        "history.csv",
        "history.parquet",
        "model.f32",
        "params.json",
        "network.json",
        "config.toml",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let history = std::fs::read_to_string(out.join("history.csv")).unwrap();
    assert_eq!(history.lines().count(), 3);
    // The exported network (batch-norm folded) reproduces the trained network's predictions.
    let exp = he_agg::infer::NetworkFile::read_json(&out.join("network.json")).unwrap();
    let data = common::load("breastmnist");
    let n = exp.network.normalization().unwrap();
    let norm = datasets::Normalizer {
        mean: n.mean.clone(),
        std: n.std.clone(),
    };
    let test = data.test.head(20);
    let t = training::data::Tensors::new(&test, &norm).unwrap();
    let probs = training::train::predict(&o.network, &t).unwrap();
    for i in 0..test.len() {
        let x = exp.network.normalize_hwc(test.image_bytes(i)).unwrap();
        let logits = exp.network.forward(&x).unwrap();
        let p1 = 1.0 / (1.0 + (logits[0] - logits[1]).exp());
        assert!(
            (p1 - probs[2 * i + 1]).abs() < 1e-3,
            "{p1} vs {}",
            probs[2 * i + 1]
        );
    }
}

/// `[dataset] kind = "mnist"`: the original IDX files beside the MedMNIST ones, trained on and
/// tested on the whole official test split.
#[test]
fn a_baseline_trains_on_mnists_idx_files() {
    let dir = common::data_dir().join("../mnist");
    if !dir.join("train-images-idx3-ubyte.gz").is_file() {
        eprintln!("skipped: no MNIST files at {}", dir.display());
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("cfg.toml");
    std::fs::write(
        &path,
        format!(
            "[dataset]\nkind = \"mnist\"\ndata_dir = {:?}\n[train]\nepochs = 1\nbatch_size = 32\n\
             [baseline]\nmax_train = 2000\n",
            dir.display().to_string()
        ),
    )
    .unwrap();
    let cfg = BaselineConfig::load(&path).unwrap();
    let o = run_baseline(&cfg, tmp.path(), &tmp.path().join("out"), false).unwrap();
    assert_eq!(o.summary.dataset, "mnist");
    assert_eq!(
        (o.summary.train_images, o.summary.test_images),
        (2000, 10_000)
    );
    assert!(o.summary.test_acc > 0.6, "test ACC {}", o.summary.test_acc);
}

#[test]
fn unknown_config_keys_are_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_config(tmp.path(), "learning_rate = 0.1");
    let err = BaselineConfig::load(&path).unwrap_err();
    assert!(matches!(err, TrainError::Config { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("cfg.toml") && msg.contains("learning_rate"),
        "{msg}"
    );
    let bad_layer = tmp.path().join("layer.toml");
    std::fs::write(
        &bad_layer,
        "[dataset]\nkind = \"medmnist\"\nname = \"breastmnist\"\n[[model.layers]]\ntype = \"conv\"\nchannels = 4\nkernel = 3\ndilation = 2\n",
    )
    .unwrap();
    let msg = BaselineConfig::load(&bad_layer).unwrap_err().to_string();
    assert!(msg.contains("dilation"), "{msg}");
}

#[test]
fn shipped_configs_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    for (name, input) in [
        ("baseline-organamnist.toml", [1, 28, 28]),
        ("baseline-bloodmnist.toml", [3, 28, 28]),
        ("baseline-breastmnist.toml", [1, 28, 28]),
        ("baseline-example.toml", [1, 28, 28]),
        ("baseline-ct256.toml", [1, 256, 256]),
        ("clinical/organamnist-256.toml", [1, 256, 256]),
        ("clinical/bloodmnist-256.toml", [3, 256, 256]),
        ("clinical/breastmnist-256.toml", [1, 256, 256]),
        ("mnist/baseline.toml", [1, 28, 28]),
    ] {
        let cfg = BaselineConfig::load(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let spec = cfg
            .model
            .resolve(input, 11)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(spec.is_he_friendly(), "{name}");
        assert!(spec.multiplicative_depth() <= 6, "{name}");
    }
}

/// The transfer configs parse and name a backbone (none is present in a fresh clone: they are
/// made by `client pretrain`), and the pretraining configs their sources.
#[test]
fn shipped_transfer_configs_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/transfer");
    for name in [
        "breastmnist-finetune.toml",
        "breastmnist-finetune-centralised.toml",
        "breastmnist-finetune-relu.toml",
        "breastmnist-convert.toml",
        "breastmnist-finetune-contrastive.toml",
        "breastmnist-finetune-archive.toml",
    ] {
        let cfg = BaselineConfig::load(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let init = cfg.model.init.as_ref().map(|i| i.config());
        assert!(init.is_some_and(|i| i.path.extension().is_some()), "{name}");
        cfg.model
            .resolve([1, 28, 28], 2)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for (name, sources) in [
        ("pretrain-medmnist.toml", 3),
        ("pretrain-medmnist-organ.toml", 3),
        ("pretrain-contrastive.toml", 4),
        ("pretrain-contrastive-archive.toml", 4),
    ] {
        let cfg = training::transfer::pretrain::PretrainConfig::load(&dir.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(cfg.pretrain.sources.len(), sources, "{name}");
    }
    // the archive config's last source is a folder without labels
    let archive = training::transfer::pretrain::PretrainConfig::load(
        &dir.join("pretrain-contrastive-archive.toml"),
    )
    .unwrap();
    let labelled: Vec<bool> = archive
        .pretrain
        .sources
        .iter()
        .map(|s| s.is_labelled())
        .collect();
    assert_eq!(labelled, [true, true, true, false]);
}

/// The residual configs (ResNet-20-class at 28², the residual clinical family at 256²): their
/// depth, and an export with fresh weights plans into segments refreshed by the requester.
#[test]
fn shipped_residual_configs_plan_into_segments() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    for (name, input, classes, depth) in [
        ("resnet-organamnist.toml", [1, 28, 28], 11, 39),
        ("resnet-bloodmnist.toml", [3, 28, 28], 8, 39),
        ("resnet-breastmnist.toml", [1, 28, 28], 2, 39),
        ("resnet-ct256.toml", [1, 256, 256], 2, 19),
        ("clinical/resnet-breastmnist-256.toml", [1, 256, 256], 2, 19),
    ] {
        let cfg = BaselineConfig::load(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let spec = cfg
            .model
            .resolve(input, classes)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(spec.is_he_friendly(), "{name}");
        assert_eq!(spec.multiplicative_depth(), depth, "{name}");
        let net = training::model::Network::init(&spec, &burn::tensor::Device::flex());
        let names: Vec<String> = (0..classes).map(|c| format!("class {c}")).collect();
        let file = training::export::export(
            &net,
            &datasets::Normalizer::identity(input[0]),
            &names,
            &datasets::InputPreparation::default(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let plan = he_agg::infer::InferencePlan::new(
            &file.network,
            &he_agg::infer::ParamPolicy::default(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(plan.spec().depth(), depth, "{name}");
        assert!(plan.spec().segments() > 1, "{name}: not cut");
        assert!(!plan.spec().parameters().rlwe().is_insecure(), "{name}");
    }
}

#[test]
fn cli_baseline_and_bad_config() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_config(tmp.path(), "");
    let out = tmp.path().join("cli-out");
    let status = Command::new(env!("CARGO_BIN_EXE_client"))
        .args(["--quiet", "baseline"])
        .arg(&path)
        .arg("--out")
        .arg(&out)
        .args(["--activation", "relu", "--epochs", "1"])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(
        stdout.contains("images/s") && stdout.contains("per epoch"),
        "{stdout}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(json["activation"], "relu");
    assert_eq!(json["epochs"], 1);
    assert_eq!(json["he_friendly"], false);

    let bad = write_config(tmp.path(), "epocs = 3");
    let o = Command::new(env!("CARGO_BIN_EXE_client"))
        .args(["baseline"])
        .arg(&bad)
        .args(["--out"])
        .arg(tmp.path().join("x"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cfg.toml") && err.contains("epocs"), "{err}");
}

#[test]
fn cli_partition_prints_and_saves_the_table() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_config(tmp.path(), "");
    let out = tmp.path().join("part");
    let o = Command::new(env!("CARGO_BIN_EXE_client"))
        .args(["--quiet", "partition"])
        .arg(&path)
        .arg("--out")
        .arg(&out)
        .args([
            "--hospitals",
            "4",
            "--scheme",
            "dirichlet",
            "--alpha",
            "0.5",
            "--seed",
            "3",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("malignant") && stdout.contains("total"),
        "{stdout}"
    );
    let csv = std::fs::read_to_string(out.join("partition_summary.csv")).unwrap();
    assert_eq!(csv.lines().count(), 6); // header, 4 hospitals, total
    assert!(csv.contains("total,546,"));
    let assign = std::fs::read_to_string(out.join("partition_assignment.csv")).unwrap();
    assert_eq!(assign.lines().count(), 547);
}
