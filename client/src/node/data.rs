//! The hospital's own data: its part of the data set (the federation's partition, by its index),
//! normalised with its own training statistics, and the network every hospital builds alike.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use datasets::{Normalizer, Task};
use training::data::Tensors;
use training::model::NetworkSpec;
use training::params::{ParamManifest, manifest};

use super::site::SiteConfig;

/// A hospital's splits are shared, never copied: each round's training and the evaluation
/// beside it read the same images.
pub struct LocalData {
    pub train: Arc<Tensors>,
    pub val: Option<Arc<Tensors>>,
    /// Training images held out of training (`[node] membership_holdout`).
    pub holdout: Option<Arc<Tensors>>,
    pub test: Arc<Tensors>,
    pub class_names: Vec<String>,
    pub spec: NetworkSpec,
    pub manifest: ParamManifest,
    /// Per value of the flat vector: trained by gradient (false for batch-norm statistics).
    pub trainable: Vec<bool>,
    /// Per value: a parameter of a frozen layer (`[model.init] freeze`), which no round changes
    /// (the average of unchanged values is exact only up to CKKS's error, and DP noise).
    pub frozen: Vec<bool>,
    pub normalizer: Normalizer,
    /// How the data set made files into inputs (recorded in the exported network).
    pub preparation: datasets::InputPreparation,
}

pub fn load(cfg: &SiteConfig, base_dir: &Path) -> anyhow::Result<LocalData> {
    let data =
        datasets::load_dataset(&cfg.dataset, base_dir, false).context("loading the data set")?;
    if data.info.task == Task::MultiLabel {
        anyhow::bail!(
            "{} is multi-label; the federation trains single-label classifiers",
            data.info.name
        );
    }
    let me = cfg.site.index as usize - 1;
    let (train_set, val_set) = if !cfg.simulated_share() {
        // a real site: all of its own data
        (
            data.train.clone(),
            (!data.val.is_empty()).then(|| data.val.clone()),
        )
    } else {
        let pcfg = cfg.partition_config()?;
        let part = datasets::partition::partition(&data.train, &pcfg)
            .context("partitioning the training split")?;
        let mine = part
            .indices
            .get(me)
            .context("no partition for this hospital")?;
        (data.train.subset(mine), split_val(&data.val, &pcfg, me)?)
    };
    let (kept, held) = hold_out(train_set.len(), cfg.node.membership_holdout, me as u64);
    let (train_set, holdout_set) = match held.is_empty() {
        true => (train_set, None),
        false => (train_set.subset(&kept), Some(train_set.subset(&held))),
    };
    // With a front or [model.normalization], no statistics of this hospital's images go
    // into the exported model; otherwise its own training images' statistics.
    let normalizer = cfg
        .model
        .normalizer(&train_set)
        .context("normalisation statistics")?;

    let train = Tensors::new(&train_set, &normalizer)?;
    let val = val_set.map(|v| Tensors::new(&v, &normalizer)).transpose()?;
    let test = Tensors::new(&data.test, &normalizer)?;
    let holdout = holdout_set
        .map(|h| Tensors::new(&h, &normalizer))
        .transpose()?;
    let spec = cfg.model.resolve(train.shape, data.info.num_classes)?;
    let front = |t| training::front::apply(&spec, t).context("the model's front");
    let train = front(train)?;
    let val = val.map(front).transpose()?;
    let test = front(test)?;
    let holdout = holdout.map(front).transpose()?;
    let manifest = manifest(&spec);
    let mut trainable = vec![true; manifest.total];
    let mut frozen = vec![false; manifest.total];
    for e in &manifest.entries {
        trainable[e.offset..e.offset + e.len].fill(e.trainable);
        let layer: usize = e
            .name
            .split('.')
            .next()
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        frozen[e.offset..e.offset + e.len].fill(e.trainable && layer < spec.frozen);
    }
    tracing::info!(
        dataset = %data.info.name,
        train = train.len(),
        val = val.as_ref().map(|v| v.len()).unwrap_or(0),
        held_out = holdout.as_ref().map(|v| v.len()).unwrap_or(0),
        test = test.len(),
        parameters = manifest.total,
        "hospital {} data ready",
        cfg.site.index
    );
    Ok(LocalData {
        train: Arc::new(train),
        val: val.map(Arc::new),
        holdout: holdout.map(Arc::new),
        test: Arc::new(test),
        class_names: data.info.class_names.clone(),
        spec,
        manifest,
        trainable,
        frozen,
        normalizer,
        preparation: cfg.dataset.preparation(),
    })
}

/// The training images kept and those held out (a `share` of them, each chosen by a hash of
/// the hospital and its index: the same images in every run of a config, plaintext or not).
fn hold_out(n: usize, share: f64, hospital: u64) -> (Vec<usize>, Vec<usize>) {
    // splitmix64 of (hospital, index): uniform enough for a random subset, no generator state
    let mix = |i: u64| {
        let mut z = (hospital << 40 ^ i).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let cut = (share * 2f64.powi(64)) as u64;
    (0..n).partition(|&i| share == 0.0 || mix(i as u64) >= cut)
}

/// This hospital's share of the validation split, partitioned like the training split so each
/// hospital validates on its own kind of images.
fn split_val(
    val: &datasets::ImageSet,
    pcfg: &datasets::PartitionConfig,
    me: usize,
) -> anyhow::Result<Option<datasets::ImageSet>> {
    if val.is_empty() {
        return Ok(None);
    }
    let vcfg = datasets::PartitionConfig {
        min_samples: 0,
        ..pcfg.clone()
    };
    let vpart =
        datasets::partition::partition(val, &vcfg).context("partitioning the validation split")?;
    Ok(vpart
        .indices
        .get(me)
        .filter(|v| !v.is_empty())
        .map(|v| val.subset(v)))
}

#[cfg(test)]
mod tests {
    use super::hold_out;

    #[test]
    fn the_holdout_is_the_share_asked_and_the_same_every_time() {
        let (kept, held) = hold_out(10_000, 0.1, 2);
        assert_eq!(kept.len() + held.len(), 10_000);
        assert!((held.len() as f64 - 1000.0).abs() < 100.0, "{}", held.len());
        assert_eq!(hold_out(10_000, 0.1, 2).1, held);
        // another hospital holds out other images
        assert_ne!(hold_out(10_000, 0.1, 3).1, held);
        assert!(hold_out(50, 0.0, 2).1.is_empty());
    }
}
