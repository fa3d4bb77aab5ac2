//! The researcher's training commands: `baseline` (centralised, from scratch or from a
//! backbone), `pretrain` (a backbone on public data) and `convert` (a ReLU network made
//! HE-friendly by distillation).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use training::baseline::{BaselineConfig, BaselineOutcome, Overrides, run_baseline};
use training::model::Activation;
use training::transfer::pretrain::{Method, PretrainConfig, run_pretrain};
use training::transfer::run_convert;

use crate::base_dir;

/// `client baseline`.
#[derive(Args)]
pub struct BaselineArgs {
    /// Baseline config (TOML: [dataset], [model], [train], [baseline]).
    config: PathBuf,
    /// Output directory (summary.json, metric tables, model, weights.safetensors).
    #[arg(long)]
    out: PathBuf,
    /// Replace every activation: square, quadratic, poly or relu (plaintext comparison).
    #[arg(long)]
    activation: Option<Activation>,
    /// Replace [train] epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// MedMNIST data directory (default: config, then $HEAL_DATA_DIR, then the cache dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Never download data.
    #[arg(long)]
    offline: bool,
    /// Compute device: cpu, cuda[:N] (builds with `--features cuda`) or wgpu[:N] (`--features wgpu`).
    #[arg(long)]
    device: Option<String>,
    /// Train on a random subset of this many images.
    #[arg(long)]
    max_train: Option<usize>,
}

impl BaselineArgs {
    fn config(&self) -> Result<BaselineConfig> {
        let cfg = BaselineConfig::load(&self.config)
            .with_context(|| format!("reading config {}", self.config.display()))?;
        Ok(Overrides {
            activation: self.activation,
            epochs: self.epochs,
            data_dir: self.data_dir.clone(),
            offline: self.offline,
            device: self.device.clone(),
            max_train: self.max_train,
        }
        .apply(cfg))
    }

    pub fn run(self, progress: bool) -> Result<()> {
        let cfg = self.config()?;
        let outcome = run_baseline(&cfg, &base_dir(&self.config), &self.out, progress)
            .with_context(|| format!("baseline {}", self.config.display()))?;
        report(&outcome, &self.out);
        Ok(())
    }
}

fn report(outcome: &BaselineOutcome, out: &std::path::Path) {
    let s = &outcome.summary;
    println!("epoch  train_loss  train_acc  val_acc  val_auc  seconds  images/s");
    for e in &outcome.train.epochs {
        let opt = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
        println!(
            "{:>5}  {:>10.4}  {:>9.4}  {:>7}  {:>7}  {:>7.1}  {:>8.0}",
            e.epoch,
            e.train_loss,
            e.train_acc,
            opt(e.val_acc),
            opt(e.val_auc),
            e.train_seconds,
            e.images_per_s
        );
    }
    if let Some(init) = &s.init {
        println!(
            "started from {} (BLAKE3 {}…): {} tensors loaded, {} at their initial values, {} layers frozen",
            init.path.display(),
            &init.blake3[..16.min(init.blake3.len())],
            init.loaded,
            init.initial.len(),
            init.frozen_layers
        );
    }
    println!(
        "{} ({}, depth {}): test acc {:.4}, test AUC {:.4} on {} images",
        s.dataset, s.activation, s.multiplicative_depth, s.test_acc, s.test_auc, s.test_images
    );
    println!(
        "training: {:.0} images/s, {:.1} s per epoch, {} epochs, {} threads; results in {}",
        s.train_images_per_s,
        s.seconds_per_epoch,
        s.epochs,
        s.threads,
        out.display()
    );
}

/// `client pretrain`.
#[derive(Args)]
pub struct PretrainArgs {
    /// Pretraining config (TOML: [pretrain] sources, [model], [train], [baseline]).
    config: PathBuf,
    /// Output directory (backbone.safetensors, summary.json, history, config.toml).
    #[arg(long)]
    out: PathBuf,
    /// Replace every activation (a ReLU backbone to convert later: relu).
    #[arg(long)]
    activation: Option<Activation>,
    /// Replace [train] epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Compute device: cpu, cuda[:N] (builds with `--features cuda`) or wgpu[:N] (`--features wgpu`).
    #[arg(long)]
    device: Option<String>,
}

impl PretrainArgs {
    pub fn run(self, progress: bool) -> Result<()> {
        let mut cfg = PretrainConfig::load(&self.config)
            .with_context(|| format!("reading config {}", self.config.display()))?;
        if let Some(a) = self.activation {
            cfg.model = cfg.model.with_activation(a);
        }
        if let Some(e) = self.epochs {
            cfg.train.epochs = e;
        }
        if let Some(d) = self.device {
            cfg.baseline.device = d;
        }
        let (s, _) = run_pretrain(&cfg, &base_dir(&self.config), &self.out, progress)
            .with_context(|| format!("pretrain {}", self.config.display()))?;
        // contrastive: the labels only measure the features, by a k-NN vote
        let measure = match s.method {
            Method::Supervised => "test acc",
            Method::Contrastive => "k-NN test acc",
        };
        let acc = |a: Option<f64>| a.map_or("none (no labels)".into(), |a| format!("{a:.4}"));
        for src in &s.sources {
            if src.classes == 0 {
                println!(
                    "{:<20} {:>6} training images, unlabelled",
                    src.name, src.train_images
                );
                continue;
            }
            println!(
                "{:<20} {:>6} training images, classes {}..{}: {measure} {}",
                src.name,
                src.train_images,
                src.first_label,
                src.first_label + src.classes,
                acc(src.test_acc)
            );
        }
        println!(
            "backbone ({:?}): {} classes, {measure} {} over every labelled source, {} epochs at \
             {:.0} images/s",
            s.method,
            s.classes,
            acc(s.test_acc),
            s.epochs,
            s.train_images_per_s
        );
        println!(
            "written {} (BLAKE3 {})",
            self.out.join("backbone.safetensors").display(),
            s.blake3
        );
        Ok(())
    }
}

/// `client convert`.
#[derive(Args)]
pub struct ConvertArgs {
    /// The ReLU network's config: [dataset], [model] with [model.init] naming its trained
    /// weights (head = "keep"), [train] for the twin's training, [distill].
    config: PathBuf,
    /// Output directory (what `client baseline` writes, and conversion.json).
    #[arg(long)]
    out: PathBuf,
    /// Replace [train] epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Compute device: cpu, cuda[:N] (builds with `--features cuda`) or wgpu[:N] (`--features wgpu`).
    #[arg(long)]
    device: Option<String>,
}

impl ConvertArgs {
    pub fn run(self, progress: bool) -> Result<()> {
        let base = BaselineArgs {
            config: self.config.clone(),
            out: self.out.clone(),
            activation: None,
            epochs: self.epochs,
            data_dir: None,
            offline: false,
            device: self.device,
            max_train: None,
        };
        let cfg = base.config()?;
        let (c, outcome) = run_convert(&cfg, &base_dir(&self.config), &self.out, progress)
            .with_context(|| format!("convert {}", self.config.display()))?;
        report(&outcome, &self.out);
        println!(
            "converted {} activations and {} max-pools: test acc {:.4} / AUC {:.4} (ReLU) → {:.4} / {:.4} \
             swapped, before training → {:.4} / {:.4} HE-friendly (depth {})",
            c.conversion.activations,
            c.conversion.max_pools,
            c.teacher_test_acc,
            c.teacher_test_auc,
            c.swapped_test_acc,
            c.swapped_test_auc,
            c.test_acc,
            c.test_auc,
            c.multiplicative_depth
        );
        Ok(())
    }
}
