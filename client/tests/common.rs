//! Shared helpers of the integration tests (included with `mod common;`).
#![allow(dead_code)]

use std::path::PathBuf;

use client::data::Tensors;
use datasets::medmnist::{self, MedMnistOptions};
use datasets::{Dataset, Normalizer};

/// The real MedMNIST files: `$HEAL_DATA_DIR`, else `<workspace>/../shared/datasets/medmnist`.
pub fn data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("HEAL_DATA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets/medmnist")
}

/// Loads a real MedMNIST set offline.
pub fn load(name: &str) -> Dataset {
    medmnist::load(
        name,
        28,
        &MedMnistOptions {
            data_dir: Some(data_dir()),
            offline: true,
            progress: false,
            ..MedMnistOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e} (the tests need the MedMNIST files; set HEAL_DATA_DIR)"))
}

/// Train/test tensors of `name`, normalised with training statistics, train subset of
/// `max_train` images taken with a stride (all classes appear).
pub fn tensors(name: &str, max_train: usize, max_test: usize) -> (Tensors, Tensors, Vec<String>) {
    let d = load(name);
    let pick = |n: usize, m: usize| -> Vec<usize> {
        let step = (n / m.max(1)).max(1);
        (0..n).step_by(step).take(m).collect()
    };
    let train = d.train.subset(&pick(d.train.len(), max_train));
    let test = d.test.subset(&pick(d.test.len(), max_test));
    let norm = Normalizer::fit(&train).unwrap();
    (
        Tensors::new(&train, &norm).unwrap(),
        Tensors::new(&test, &norm).unwrap(),
        d.info.class_names,
    )
}
