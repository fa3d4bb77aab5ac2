//! Shared helpers of the integration tests (included with `mod common;`).
#![allow(dead_code)]

use std::path::PathBuf;

use datasets::{Dataset, medmnist};

/// The real MedMNIST files: `$HEAL_DATA_DIR`, else `<workspace>/../shared/datasets/medmnist`.
pub fn data_dir() -> PathBuf {
    medmnist::workspace_data_dir()
}

/// Loads a real MedMNIST set offline.
pub fn load(name: &str) -> Dataset {
    medmnist::load_workspace(name)
        .unwrap_or_else(|e| panic!("{e} (the tests need the MedMNIST files; set HEAL_DATA_DIR)"))
}
