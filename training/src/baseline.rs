//! The centralised baseline: train on all training images, evaluate on the official test
//! split, write `summary.json` and metric tables. Also the `partition` command's work.
//!
//! Output directory of [`run_baseline`]:
//!
//! | file | what |
//! |---|---|
//! | `summary.json` | `dataset`, `activation`, `test_acc`, `test_auc`, `epochs`, `train_images_per_s`, `seconds_per_epoch`, … ([`BaselineSummary`]) |
//! | `history.csv`, `history.parquet` | one row per epoch: loss, accuracy, validation metrics, seconds, images/s |
//! | `test_per_class.{csv,parquet}`, `test_confusion.{csv,parquet}` | test metrics |
//! | `val_per_class.{csv,parquet}`, `val_confusion.{csv,parquet}` | validation metrics (when a validation split exists) |
//! | `model.f32`, `params.json` | the flat parameter vector (little-endian f32) and its manifest |
//! | `network.json` | the exported network (`heal-network/1`, batch-norm folded; not for networks with max-pool) |
//! | `weights.safetensors` | the weights by HEAL's names with their provenance: a `[model.init]` for the next run |
//! | `config.toml` | the effective configuration, overrides applied |

use std::path::{Path, PathBuf};

use datasets::{DatasetConfig, ImageSet, Normalizer, PartitionConfig, Task};
use polars::prelude::*;
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;

use crate::data::Tensors;
use crate::error::TrainError;
use crate::export::export;
use crate::metrics::{EvalReport, write_table};
use crate::model::{Activation, ModelConfig, Network, NetworkSpec};
use crate::params::{manifest, to_flat, write_flat};
use crate::train::{
    Teacher, TrainConfig, TrainOptions, TrainReport, evaluate, select_device, train,
};
use crate::transfer::{InitReport, initial_network, weights_of};

fn cpu() -> String {
    "cpu".into()
}
fn yes() -> bool {
    true
}

/// The `[baseline]` table.
///
/// ```toml
/// [baseline]
/// device = "cpu"            # "cpu" (burn flex backend) or "cuda"/"cuda:N" in CUDA builds
/// # max_train = 2000        # use a random subset of this many training images (quick runs)
/// # max_test = 1000         # … and of test images
/// use_val = true            # evaluate the validation split after every epoch
/// keep_best_on_val = false  # return the epoch with the best validation accuracy
/// ```
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineSettings {
    /// Compute device (default `cpu`).
    #[serde(default = "cpu")]
    pub device: String,
    /// Random subset of the training split (default: all of it).
    #[serde(default)]
    pub max_train: Option<usize>,
    /// Random subset of the test split (default: all of it).
    #[serde(default)]
    pub max_test: Option<usize>,
    /// Evaluate the validation split after every epoch (default true).
    #[serde(default = "yes")]
    pub use_val: bool,
    /// Keep the weights of the epoch with the best validation accuracy (default false).
    #[serde(default)]
    pub keep_best_on_val: bool,
}

impl Default for BaselineSettings {
    fn default() -> Self {
        Self {
            device: cpu(),
            max_train: None,
            max_test: None,
            use_val: true,
            keep_best_on_val: false,
        }
    }
}

/// A baseline config file: `[dataset]`, `[model]`, `[train]`, `[baseline]`. Unknown keys are
/// rejected everywhere.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineConfig {
    /// Where the images come from.
    pub dataset: DatasetConfig,
    /// The network (default: the HE-friendly default network).
    #[serde(default)]
    pub model: ModelConfig,
    /// Training hyper-parameters.
    #[serde(default)]
    pub train: TrainConfig,
    /// Run settings.
    #[serde(default)]
    pub baseline: BaselineSettings,
    /// How `client convert` distils the ReLU network into its HE-friendly twin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distill: Option<crate::train::Distill>,
}

fn config_error(path: &Path, message: impl Into<String>) -> TrainError {
    TrainError::Config {
        path: path.into(),
        message: message.into(),
    }
}

/// Reads and parses a TOML file into `T` (errors name the file, line and column).
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, TrainError> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    toml::from_str(&text).map_err(|e| config_error(path, e.to_string()))
}

impl BaselineConfig {
    /// Reads a config file.
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        read_toml(path)
    }
}

/// Command-line overrides of a baseline config.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// Replace every activation (`--activation relu` for the plaintext comparison).
    pub activation: Option<Activation>,
    /// Replace `[train] epochs`.
    pub epochs: Option<usize>,
    /// Replace the MedMNIST data directory.
    pub data_dir: Option<PathBuf>,
    /// Force offline mode.
    pub offline: bool,
    /// Replace `[baseline] device`.
    pub device: Option<String>,
    /// Replace `[baseline] max_train`.
    pub max_train: Option<usize>,
}

impl Overrides {
    /// Applies the overrides.
    pub fn apply(&self, mut cfg: BaselineConfig) -> BaselineConfig {
        if let Some(a) = self.activation {
            cfg.model = cfg.model.with_activation(a);
        }
        if let Some(e) = self.epochs {
            cfg.train.epochs = e;
        }
        if let Some(d) = &self.device {
            cfg.baseline.device = d.clone();
        }
        if let Some(m) = self.max_train {
            cfg.baseline.max_train = Some(m);
        }
        if let DatasetConfig::Medmnist {
            data_dir, offline, ..
        } = &mut cfg.dataset
        {
            if let Some(d) = &self.data_dir {
                *data_dir = Some(d.clone());
            }
            *offline |= self.offline;
        }
        cfg
    }
}

/// What `summary.json` holds.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BaselineSummary {
    /// Data set name.
    pub dataset: String,
    /// Activation of the network (`square`, `quadratic`, `relu`).
    pub activation: String,
    /// Every activation is a polynomial (CKKS can evaluate the network).
    pub he_friendly: bool,
    /// Multiplicative depth of encrypted inference.
    pub multiplicative_depth: usize,
    /// Test accuracy.
    pub test_acc: f64,
    /// Test macro one-vs-rest AUC.
    pub test_auc: f64,
    /// Validation accuracy (if evaluated).
    pub val_acc: Option<f64>,
    /// Validation macro AUC.
    pub val_auc: Option<f64>,
    /// Epochs trained.
    pub epochs: usize,
    /// Epoch whose weights were evaluated.
    pub returned_epoch: usize,
    /// Training images.
    pub train_images: usize,
    /// Test images.
    pub test_images: usize,
    /// Training throughput (images per second of training, validation excluded).
    pub train_images_per_s: f64,
    /// Mean seconds of training per epoch.
    pub seconds_per_epoch: f64,
    /// Total seconds of training.
    pub train_seconds: f64,
    /// Values in the flat parameter vector.
    pub parameters: usize,
    /// Compute device.
    pub device: String,
    /// Worker threads of the CPU backend.
    pub threads: usize,
    /// Training seed.
    pub seed: u64,
    /// The backbone the network started from (`[model.init]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<InitReport>,
}

/// Everything a baseline run produced.
#[derive(Debug)]
pub struct BaselineOutcome {
    /// The summary (also in `summary.json`).
    pub summary: BaselineSummary,
    /// Per-epoch training report.
    pub train: TrainReport,
    /// Test metrics.
    pub test: EvalReport,
    /// The trained network.
    pub network: Network,
}

fn random_subset(set: &ImageSet, max: Option<usize>, seed: u64) -> ImageSet {
    match max {
        Some(m) if m < set.len() => {
            let mut idx: Vec<usize> = (0..set.len()).collect();
            idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
            idx.truncate(m);
            idx.sort_unstable();
            set.subset(&idx)
        }
        _ => set.clone(),
    }
}

pub(crate) fn history_table(r: &TrainReport) -> Result<DataFrame, TrainError> {
    let e = &r.epochs;
    DataFrame::new_infer_height(vec![
        Column::new(
            "epoch".into(),
            e.iter().map(|s| s.epoch as u32).collect::<Vec<_>>(),
        ),
        Column::new(
            "train_loss".into(),
            e.iter().map(|s| s.train_loss).collect::<Vec<_>>(),
        ),
        Column::new(
            "train_acc".into(),
            e.iter().map(|s| s.train_acc).collect::<Vec<_>>(),
        ),
        Column::new("lr".into(), e.iter().map(|s| s.lr).collect::<Vec<_>>()),
        Column::new(
            "val_loss".into(),
            e.iter().map(|s| s.val_loss).collect::<Vec<_>>(),
        ),
        Column::new(
            "val_acc".into(),
            e.iter().map(|s| s.val_acc).collect::<Vec<_>>(),
        ),
        Column::new(
            "val_auc".into(),
            e.iter().map(|s| s.val_auc).collect::<Vec<_>>(),
        ),
        Column::new(
            "train_seconds".into(),
            e.iter().map(|s| s.train_seconds).collect::<Vec<_>>(),
        ),
        Column::new(
            "images_per_s".into(),
            e.iter().map(|s| s.images_per_s).collect::<Vec<_>>(),
        ),
    ])
    .map_err(|source| TrainError::Table {
        context: "history table".into(),
        source,
    })
}

/// A run's data, loaded and normalised.
pub struct Prepared {
    /// The data set's name.
    pub name: String,
    /// Class names in label order.
    pub class_names: Vec<String>,
    /// The training split's statistics (or the identity under a front).
    pub norm: Normalizer,
    /// Training images.
    pub train: Tensors,
    /// Test images.
    pub test: Tensors,
    /// Validation images, when evaluated.
    pub val: Option<Tensors>,
}

/// Loads `cfg`'s data (relative paths against `base_dir`): the subsets it asks for,
/// normalised with the training split's statistics.
pub fn prepare(
    cfg: &BaselineConfig,
    base_dir: &Path,
    progress: bool,
) -> Result<Prepared, TrainError> {
    let data = datasets::load_dataset(&cfg.dataset, base_dir, progress)?;
    if data.info.task == Task::MultiLabel {
        return Err(datasets::DatasetError::MultiLabel {
            name: data.info.name.clone(),
            operation: "the baseline (single-label classification)".into(),
        }
        .into());
    }
    let seed = cfg.train.seed;
    let train_set = random_subset(&data.train, cfg.baseline.max_train, seed);
    let test_set = random_subset(&data.test, cfg.baseline.max_test, seed.wrapping_add(1));
    let norm = cfg.model.normalizer(&train_set)?;
    let train = Tensors::new(&train_set, &norm)?;
    let test = Tensors::new(&test_set, &norm)?;
    let val = if cfg.baseline.use_val && !data.val.is_empty() {
        Some(Tensors::new(&data.val, &norm)?)
    } else {
        None
    };
    Ok(Prepared {
        name: data.info.name.clone(),
        class_names: data.info.class_names.clone(),
        norm,
        train,
        test,
        val,
    })
}

impl Prepared {
    /// The network `model` describes for these images and classes.
    pub fn resolve(&self, model: &ModelConfig) -> Result<NetworkSpec, TrainError> {
        model.resolve(self.train.shape, self.class_names.len())
    }

    /// The splits through the network's front (unchanged without one).
    pub fn through_front(mut self, spec: &NetworkSpec) -> Result<Self, TrainError> {
        self.train = crate::front::apply(spec, self.train)?;
        self.test = crate::front::apply(spec, self.test)?;
        self.val = self.val.map(|v| crate::front::apply(spec, v)).transpose()?;
        Ok(self)
    }
}

/// Runs the baseline described by `cfg` (relative paths resolved against `base_dir`, the
/// config file's folder) and writes its outputs to `out_dir`. With `[model.init]` the network
/// starts from that backbone.
pub fn run_baseline(
    cfg: &BaselineConfig,
    base_dir: &Path,
    out_dir: &Path,
    progress: bool,
) -> Result<BaselineOutcome, TrainError> {
    std::fs::create_dir_all(out_dir).map_err(|e| TrainError::io(out_dir, e))?;
    if cfg.distill.is_some() {
        return Err(TrainError::invalid(
            "[distill]",
            "is read by `client convert` (a teacher's outputs); `client baseline` has no teacher",
        ));
    }
    let data = prepare(cfg, base_dir, progress)?;
    let spec = data.resolve(&cfg.model)?;
    let data = data.through_front(&spec)?;
    let device = select_device(&cfg.baseline.device)?;
    let init = cfg.model.init.as_ref().map(|i| i.config());
    let (net, init) = initial_network(&spec, init.as_ref(), base_dir, &device)?;
    run_prepared(cfg, &data, net, init, None, out_dir, progress)
}

/// Trains `net` on `data` as `cfg` says (learning from `teacher` too, when given), evaluates
/// it on the test split and writes every output file to `out_dir`.
pub fn run_prepared(
    cfg: &BaselineConfig,
    data: &Prepared,
    net: Network,
    init: Option<InitReport>,
    teacher: Option<Teacher<'_>>,
    out_dir: &Path,
    progress: bool,
) -> Result<BaselineOutcome, TrainError> {
    std::fs::create_dir_all(out_dir).map_err(|e| TrainError::io(out_dir, e))?;
    let spec = net.spec.clone();
    let names = &data.class_names;
    let (train_t, test_t, val_t) = (&data.train, &data.test, data.val.as_ref());
    let seed = cfg.train.seed;
    let n_params = manifest(&spec).total;
    tracing::info!(
        dataset = %data.name,
        train = train_t.len(),
        val = val_t.map(|v| v.len()).unwrap_or(0),
        test = test_t.len(),
        parameters = n_params,
        depth = spec.multiplicative_depth(),
        "network:\n{}",
        spec.describe()
    );
    let (net, report) = train(
        net,
        train_t,
        &cfg.train,
        &TrainOptions {
            val: val_t,
            class_names: Some(names),
            keep_best_on_val: cfg.baseline.keep_best_on_val && val_t.is_some(),
            global: None,
            control: None,
            progress,
            dp: None,
            teacher,
        },
    )?;
    let test = evaluate(&net, test_t, names)?;
    let val = match val_t {
        Some(v) => Some(evaluate(&net, v, names)?),
        None => None,
    };

    test.write_tables(out_dir, "test")?;
    if let Some(v) = &val {
        v.write_tables(out_dir, "val")?;
    }
    write_table(&history_table(&report)?, out_dir, "history")?;
    write_flat(&out_dir.join("model.f32"), &to_flat(&net))?;
    write_json(&out_dir.join("params.json"), &manifest(&spec))?;
    let effective =
        toml::to_string_pretty(cfg).map_err(|e| TrainError::invalid("config", e.to_string()))?;
    let provenance = [
        ("made_by", "client baseline".to_string()),
        ("dataset", data.name.clone()),
        ("classes", names.join(",")),
        ("test_acc", format!("{:.4}", test.accuracy)),
        ("config", effective.clone()),
    ];
    weights_of(&net, provenance).write_safetensors(&out_dir.join("weights.safetensors"))?;
    // heal-network/1 has no max-pool (CKKS takes no maximum): such a network is exported once
    // `client convert` has made it HE-friendly
    let has_max_pool = spec
        .layers
        .iter()
        .any(|l| matches!(l.kind, crate::model::LayerKind::MaxPool { .. }));
    if !has_max_pool {
        export(&net, &data.norm, names, &cfg.dataset.preparation())?
            .write_json(&out_dir.join("network.json"))?;
    }
    let cfg_path = out_dir.join("config.toml");
    std::fs::write(&cfg_path, effective).map_err(|e| TrainError::io(&cfg_path, e))?;

    let epochs = report.epochs.len();
    let summary = BaselineSummary {
        dataset: data.name.clone(),
        activation: spec
            .activation()
            .map(|a| a.name().to_string())
            .unwrap_or_else(|| "none".into()),
        he_friendly: spec.is_he_friendly(),
        multiplicative_depth: spec.multiplicative_depth(),
        test_acc: test.accuracy,
        test_auc: test.macro_auc,
        val_acc: val.as_ref().map(|v| v.accuracy),
        val_auc: val.as_ref().map(|v| v.macro_auc),
        epochs,
        returned_epoch: report.returned_epoch,
        train_images: train_t.len(),
        test_images: test_t.len(),
        train_images_per_s: report.images_per_s,
        seconds_per_epoch: report.train_seconds / epochs.max(1) as f64,
        train_seconds: report.train_seconds,
        parameters: n_params,
        device: cfg.baseline.device.clone(),
        threads: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        seed,
        init,
    };
    write_json(&out_dir.join("summary.json"), &summary)?;
    Ok(BaselineOutcome {
        summary,
        train: report,
        test,
        network: net,
    })
}

pub(crate) fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), TrainError> {
    let text = serde_json::to_string_pretty(value).map_err(|source| TrainError::Json {
        path: path.into(),
        source,
    })?;
    std::fs::write(path, text + "\n").map_err(|e| TrainError::io(path, e))
}

/// A `partition` run: `[dataset]` from a config file plus `[partition]` (from the same file or
/// the command line).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionRun {
    /// Where the images come from.
    pub dataset: DatasetConfig,
    /// How to split them.
    pub partition: PartitionConfig,
}

/// Reads `[dataset]` and, if present, `[partition]` from a config file; other tables (model,
/// train …) are left to their own commands.
pub fn load_partition_tables(
    path: &Path,
) -> Result<(DatasetConfig, Option<PartitionConfig>), TrainError> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    let mut table: toml::Table =
        toml::from_str(&text).map_err(|e| config_error(path, e.to_string()))?;
    let dataset = table
        .remove("dataset")
        .ok_or_else(|| config_error(path, "no [dataset] table"))?
        .try_into::<DatasetConfig>()
        .map_err(|e| config_error(path, format!("[dataset]: {e}")))?;
    let partition = table
        .remove("partition")
        .map(|v| v.try_into::<PartitionConfig>())
        .transpose()
        .map_err(|e| config_error(path, format!("[partition]: {e}")))?;
    Ok((dataset, partition))
}

/// Partitions the training split, writes `partition_summary.csv` (per hospital and class) and
/// `partition_assignment.csv` (`index, hospital`) to `out_dir`, and returns the summary table.
pub fn run_partition(
    run: &PartitionRun,
    base_dir: &Path,
    out_dir: &Path,
    progress: bool,
) -> Result<DataFrame, TrainError> {
    std::fs::create_dir_all(out_dir).map_err(|e| TrainError::io(out_dir, e))?;
    let data = datasets::load_dataset(&run.dataset, base_dir, progress)?;
    let part = datasets::partition::partition(&data.train, &run.partition)?;
    let labels = data.train.class_labels()?;
    let table = datasets::partition::summary(&part, labels, &data.info.class_names)?;
    datasets::partition::write_csv(&table, &out_dir.join("partition_summary.csv"))?;
    let mut index = Vec::with_capacity(data.train.len());
    let mut hospital = Vec::with_capacity(data.train.len());
    for (h, idx) in part.indices.iter().enumerate() {
        for &i in idx {
            index.push(i as u64);
            hospital.push(part.names[h].clone());
        }
    }
    let assign = DataFrame::new_infer_height(vec![
        Column::new("index".into(), index),
        Column::new("hospital".into(), hospital),
    ])
    .map_err(|source| TrainError::Table {
        context: "assignment table".into(),
        source,
    })?;
    datasets::partition::write_csv(&assign, &out_dir.join("partition_assignment.csv"))?;
    Ok(table)
}
