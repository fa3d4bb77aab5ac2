//! Shared helpers of the integration tests (included with `mod common;`).
#![allow(dead_code)]

use std::path::PathBuf;

/// The real MedMNIST files: `$HEAL_DATA_DIR`, else `<workspace>/../shared/datasets/medmnist`.
pub fn data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("HEAL_DATA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets/medmnist")
}

/// Path of one real file, with a clear message when it is missing.
pub fn real_file(name: &str) -> PathBuf {
    let p = data_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: the tests need the MedMNIST files (set HEAL_DATA_DIR)",
        p.display()
    );
    p
}
