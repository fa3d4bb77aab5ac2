//! `client pretrain`: a backbone trained on public data — several labelled sets at once, each
//! with its own classes (OrganAMNIST's organs, BloodMNIST's cells, …) in one label space — and
//! written with its provenance, for `[model.init]` to start a hospital's task from.
//!
//! ```toml
//! [pretrain]
//! channels = 1                 # every source converted to grey (luma) or to RGB (replicated)
//! # max_per_source = 20000     # at most this many training images of each source
//! [[pretrain.sources]]         # any [dataset] table: MedMNIST, folders, manifests, DICOM
//! kind = "medmnist"
//! name = "organamnist"
//! [[pretrain.sources]]
//! kind = "medmnist"
//! name = "bloodmnist"
//! [model]                      # the network, as the task will use it (its last layer is
//! ...                          # replaced there)
//! [train]
//! ...
//! ```
//!
//! Each source is normalised with its own training split's statistics, as the task's data will
//! be with its own, so that the backbone sees standardised images whatever their source.
//!
//! `method = "contrastive"` learns without the labels (SimCLR, [`super::contrastive`]): from
//! unlabelled archives, or a hospital's own images before they are labelled. Its
//! `summary.json` then measures the features by a k-nearest-neighbour vote on each source's
//! test split.

use std::path::Path;

use datasets::{DatasetConfig, ImageShape, Normalizer, Task};
use serde::{Deserialize, Serialize};

use crate::baseline::{BaselineSettings, read_toml, write_json};
use crate::data::Tensors;
use crate::error::TrainError;
use crate::metrics::write_table;
use crate::model::{ModelConfig, Network};
use crate::params::manifest;
use crate::train::{TrainConfig, TrainOptions, TrainReport, predict, select_device, train};
use crate::transfer::contrastive::{knn_accuracy, train_contrastive};
use crate::transfer::weights_of;

fn one() -> usize {
    1
}

/// The `[pretrain]` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainSettings {
    /// The labelled sets, each with its own classes.
    pub sources: Vec<DatasetConfig>,
    /// Channels every image is converted to (1 or 3; default 1).
    #[serde(default = "one")]
    pub channels: usize,
    /// At most this many training images of each source (default: all).
    #[serde(default)]
    pub max_per_source: Option<usize>,
    /// What the backbone learns from: the sources' labels, or two augmented views of each
    /// image without them.
    #[serde(default)]
    pub method: Method,
    /// Contrastive: the temperature of the similarities (default 0.2).
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Contrastive: outputs of the projection head, the network's last (dense) layer
    /// (default 64).
    #[serde(default)]
    pub projection: Option<usize>,
}

/// `[pretrain] method`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// One classifier over every source's classes (default).
    #[default]
    Supervised,
    /// Self-supervised (SimCLR): labels are never read while training.
    Contrastive,
}

/// A pretraining config: `[pretrain]`, `[model]`, `[train]`, `[baseline]` (device, subsets,
/// validation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainConfig {
    /// The public data.
    pub pretrain: PretrainSettings,
    /// The network.
    #[serde(default)]
    pub model: ModelConfig,
    /// Training.
    #[serde(default)]
    pub train: TrainConfig,
    /// Run settings (`device`, `use_val`, `keep_best_on_val`; `max_train` is `max_per_source`'s).
    #[serde(default)]
    pub baseline: BaselineSettings,
}

impl PretrainConfig {
    /// Reads a config file.
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        read_toml(path)
    }
}

/// One source's share of the backbone's training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceSummary {
    /// Data set name.
    pub name: String,
    /// Its first label in the backbone's label space (an unlabelled source: where the next
    /// source's labels start; it has none).
    pub first_label: usize,
    /// Its classes.
    pub classes: usize,
    /// Training images used.
    pub train_images: usize,
    /// Accuracy on its test split (over the whole label space; contrastive: of the
    /// k-nearest-neighbour vote over the labelled training images' features); none for an
    /// unlabelled source.
    pub test_acc: Option<f64>,
}

/// What `summary.json` of a pretraining run holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PretrainSummary {
    /// How the backbone learnt.
    #[serde(default)]
    pub method: Method,
    /// The sources.
    pub sources: Vec<SourceSummary>,
    /// Classes of the label space.
    pub classes: usize,
    /// Accuracy over every labelled source's test split together (none without one).
    pub test_acc: Option<f64>,
    /// Epochs trained.
    pub epochs: usize,
    /// Training throughput.
    pub train_images_per_s: f64,
    /// Seconds of training.
    pub train_seconds: f64,
    /// Values in the network.
    pub parameters: usize,
    /// The backbone's BLAKE3 (hex), as `[model.init] blake3` takes it.
    pub blake3: String,
}

/// The splits of every source in one label space; unlabelled sources' images apart.
struct Pooled {
    train: Tensors,
    val: Tensors,
    /// Each source's test split (none for an unlabelled source).
    test: Vec<Option<Tensors>>,
    /// Images of the unlabelled sources (labels 0, never read).
    unlabelled: Tensors,
    names: Vec<String>,
    sources: Vec<SourceSummary>,
}

fn normalised(
    set: &datasets::ImageSet,
    norm: &Normalizer,
    offset: u32,
    x: &mut Vec<f32>,
    y: &mut Vec<u32>,
) -> Result<(), TrainError> {
    x.extend(norm.to_nchw(set, None)?);
    y.extend(set.class_labels()?.iter().map(|l| l + offset));
    Ok(())
}

fn pool(cfg: &PretrainConfig, base_dir: &Path, progress: bool) -> Result<Pooled, TrainError> {
    let s = &cfg.pretrain;
    if s.sources.is_empty() || !(s.channels == 1 || s.channels == 3) {
        return Err(TrainError::invalid(
            "[pretrain]",
            format!(
                "{} sources and channels = {}: at least one source, and 1 or 3 channels",
                s.sources.len(),
                s.channels
            ),
        ));
    }
    let (mut tx, mut ty, mut vx, mut vy) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut test, mut names, mut sources) = (Vec::new(), Vec::new(), Vec::new());
    let mut shape: Option<[usize; 3]> = None;
    let mut ux = Vec::new();
    for src in &s.sources {
        if !src.is_labelled() {
            let first = names.len();
            let set = unlabelled_source(cfg, src, base_dir, progress, first, &mut shape, &mut ux)?;
            sources.push(set);
            test.push(None);
            continue;
        }
        let data = datasets::load_dataset(src, base_dir, progress)?;
        if data.info.task == Task::MultiLabel {
            return Err(TrainError::invalid(
                "[pretrain] sources",
                format!(
                    "{} is multi-label; pretraining takes single-label sets",
                    data.info.name
                ),
            ));
        }
        let (h, w) = (data.train.height(), data.train.width());
        let here = [s.channels, h, w];
        same_shape(&mut shape, here, &data.info.name)?;
        let conform = |set: &datasets::ImageSet| {
            datasets::preprocess::conform(
                set,
                ImageShape {
                    channels: s.channels,
                    height: h,
                    width: w,
                },
            )
        };
        let mut train_set = conform(&data.train)?;
        if let Some(m) = s.max_per_source.filter(|m| *m < train_set.len()) {
            train_set = train_set.head(m);
        }
        let norm = Normalizer::fit(&train_set)?;
        let offset = names.len() as u32;
        normalised(&train_set, &norm, offset, &mut tx, &mut ty)?;
        if !data.val.is_empty() {
            normalised(&conform(&data.val)?, &norm, offset, &mut vx, &mut vy)?;
        }
        let (mut x, mut y) = (Vec::new(), Vec::new());
        normalised(&conform(&data.test)?, &norm, offset, &mut x, &mut y)?;
        test.push(Some(Tensors::from_parts(x, y, here)?));
        sources.push(SourceSummary {
            name: data.info.name.clone(),
            first_label: offset as usize,
            classes: data.info.num_classes,
            train_images: train_set.len(),
            test_acc: None,
        });
        names.extend(
            data.info
                .class_names
                .iter()
                .map(|c| format!("{}/{c}", data.info.name)),
        );
    }
    let shape = shape.unwrap_or([s.channels, 1, 1]);
    let un = ux.len() / shape.iter().product::<usize>().max(1);
    Ok(Pooled {
        train: Tensors::from_parts(tx, ty, shape)?,
        val: Tensors::from_parts(vx, vy, shape)?,
        test,
        unlabelled: Tensors::from_parts(ux, vec![0; un], shape)?,
        names,
        sources,
    })
}

fn same_shape(
    shape: &mut Option<[usize; 3]>,
    here: [usize; 3],
    name: &str,
) -> Result<(), TrainError> {
    if shape.is_some_and(|s| s != here) {
        return Err(TrainError::invalid(
            "[pretrain] sources",
            format!(
                "{name} has {}×{} images, the sources before it {:?}: give every source the same size",
                here[1],
                here[2],
                shape.map(|s| [s[1], s[2]])
            ),
        ));
    }
    *shape = Some(here);
    Ok(())
}

/// An unlabelled folder's images, normalised by their own statistics, into `ux`; only
/// contrastive pretraining takes one. It has no classes: `first_label` is where the next
/// source's labels start.
fn unlabelled_source(
    cfg: &PretrainConfig,
    src: &DatasetConfig,
    base_dir: &Path,
    progress: bool,
    first_label: usize,
    shape: &mut Option<[usize; 3]>,
    ux: &mut Vec<f32>,
) -> Result<SourceSummary, TrainError> {
    let s = &cfg.pretrain;
    if s.method != Method::Contrastive {
        return Err(TrainError::invalid(
            "[pretrain] sources",
            format!(
                "{} is unlabelled: supervised pretraining needs labels; use method = \"contrastive\"",
                src.name()
            ),
        ));
    }
    let read = datasets::load_unlabelled(src, base_dir, progress)?;
    let (h, w) = (read.images.height(), read.images.width());
    same_shape(shape, [s.channels, h, w], &src.name())?;
    let mut set = datasets::preprocess::conform(
        &read.images,
        ImageShape {
            channels: s.channels,
            height: h,
            width: w,
        },
    )?;
    if let Some(m) = s.max_per_source.filter(|m| *m < set.len()) {
        set = set.head(m);
    }
    let norm = Normalizer::fit(&set)?;
    ux.extend(norm.to_nchw(&set, None)?);
    Ok(SourceSummary {
        name: src.name(),
        first_label,
        classes: 0,
        train_images: set.len(),
        test_acc: None,
    })
}

fn accuracy(net: &Network, data: &Tensors) -> Result<(usize, usize), TrainError> {
    let k = net.spec.classes;
    let p = predict(net, data)?;
    let correct = p
        .chunks_exact(k)
        .zip(&data.y)
        .filter(|(row, y)| {
            let best = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i);
            best == Some(**y as usize)
        })
        .count();
    Ok((correct, data.len()))
}

/// Trains the backbone `cfg` describes and writes `backbone.safetensors` (HEAL's names, with
/// the sources, their md5-checked files' names, the label space and the config as metadata),
/// `summary.json`, `history.csv` and `config.toml` to `out_dir`.
pub fn run_pretrain(
    cfg: &PretrainConfig,
    base_dir: &Path,
    out_dir: &Path,
    progress: bool,
) -> Result<(PretrainSummary, TrainReport), TrainError> {
    std::fs::create_dir_all(out_dir).map_err(|e| TrainError::io(out_dir, e))?;
    let mut pooled = pool(cfg, base_dir, progress)?;
    if cfg.model.init.is_some() || cfg.model.front.is_some() {
        return Err(TrainError::invalid(
            "[model]",
            "a backbone is pretrained from random weights on images: no init, no front",
        ));
    }
    let p = &cfg.pretrain;
    let outputs = match p.method {
        Method::Supervised => {
            if p.temperature.is_some() || p.projection.is_some() {
                return Err(TrainError::invalid(
                    "[pretrain]",
                    "temperature and projection are for method = \"contrastive\"",
                ));
            }
            pooled.names.len()
        }
        Method::Contrastive => p.projection.unwrap_or(64),
    };
    if outputs == 0 {
        return Err(TrainError::invalid(
            "[pretrain] projection",
            "must be at least 1",
        ));
    }
    let spec = cfg.model.resolve(pooled.train.shape, outputs)?;
    let device = select_device(&cfg.baseline.device)?;
    let net = Network::init(&spec, &device);
    tracing::info!(
        sources = ?pooled.sources.iter().map(|s| &s.name).collect::<Vec<_>>(),
        train = pooled.train.len(),
        unlabelled = pooled.unlabelled.len(),
        method = ?p.method,
        outputs,
        parameters = manifest(&spec).total,
        "pretraining:\n{}",
        spec.describe()
    );
    let joined;
    let (net, report) = match p.method {
        Method::Supervised => {
            let val = (cfg.baseline.use_val && !pooled.val.is_empty()).then_some(&pooled.val);
            train(
                net,
                &pooled.train,
                &cfg.train,
                &TrainOptions {
                    val,
                    class_names: Some(&pooled.names),
                    keep_best_on_val: cfg.baseline.keep_best_on_val && val.is_some(),
                    progress,
                    ..TrainOptions::default()
                },
            )?
        }
        Method::Contrastive => train_contrastive(
            net,
            if pooled.unlabelled.is_empty() {
                &pooled.train
            } else {
                joined = pooled.train.concat(&pooled.unlabelled)?;
                &joined
            },
            &cfg.train,
            p.temperature.unwrap_or(0.2),
            progress,
        )?,
    };
    let (mut right, mut all) = (0f64, 0);
    for (s, t) in pooled.sources.iter_mut().zip(&pooled.test) {
        let Some(t) = t else { continue };
        let acc = match p.method {
            Method::Supervised => {
                let (r, n) = accuracy(&net, t)?;
                r as f64 / n.max(1) as f64
            }
            Method::Contrastive => knn_accuracy(&net, &pooled.train, t)?,
        };
        s.test_acc = Some(acc);
        right += acc * t.len() as f64;
        all += t.len();
        tracing::info!(source = %s.name, test_acc = format!("{acc:.4}"), "pretrained");
    }
    let effective =
        toml::to_string_pretty(cfg).map_err(|e| TrainError::invalid("config", e.to_string()))?;
    let sources = serde_json::to_string(&pooled.sources).unwrap_or_default();
    let path = out_dir.join("backbone.safetensors");
    weights_of(
        &net,
        [
            ("made_by", "client pretrain".to_string()),
            ("sources", sources),
            ("classes", pooled.names.join(",")),
            ("config", effective.clone()),
        ],
    )
    .write_safetensors(&path)?;
    let bytes = std::fs::read(&path).map_err(|e| TrainError::io(&path, e))?;
    let summary = PretrainSummary {
        method: p.method,
        sources: pooled.sources,
        classes: pooled.names.len(),
        test_acc: (all > 0).then(|| right / all as f64),
        epochs: report.epochs.len(),
        train_images_per_s: report.images_per_s,
        train_seconds: report.train_seconds,
        parameters: manifest(&spec).total,
        blake3: blake3::hash(&bytes).to_hex().to_string(),
    };
    write_json(&out_dir.join("summary.json"), &summary)?;
    write_table(
        &crate::baseline::history_table(&report)?,
        out_dir,
        "history",
    )?;
    let cfg_path = out_dir.join("config.toml");
    std::fs::write(&cfg_path, effective).map_err(|e| TrainError::io(&cfg_path, e))?;
    Ok((summary, report))
}
