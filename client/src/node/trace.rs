//! `HEAL_TRACE_DIR`: what this hospital sent and what it applied, written for a fault
//! harness that checks every committed aggregate against the updates it lists (issue 41:
//! coordinator/tests/crashes.rs). Unset — always, outside such a test — nothing is written.
//! Set, the hospital writes its own plaintext update of each round and the average it
//! decrypted into that directory on its own disk (0600), nothing more; the files are the
//! hospital's own data, never sent anywhere.
//!
//! `DIR/hospital-<i>/update-<round>.f64`: the values it encrypted (after clipping, and noise
//! under `[privacy]`); `DIR/hospital-<i>/average-<round>.f64`: the decrypted average it
//! applied; both little-endian f64.

use std::path::PathBuf;

use anyhow::Context;

/// The environment variable that names the directory.
pub const VAR: &str = "HEAL_TRACE_DIR";

fn dir(hospital: u32) -> Option<PathBuf> {
    std::env::var_os(VAR).map(|d| PathBuf::from(d).join(format!("hospital-{hospital}")))
}

fn write(hospital: u32, name: String, bytes: Vec<u8>) -> anyhow::Result<()> {
    let Some(dir) = dir(hospital) else {
        return Ok(());
    };
    ops::durable_file::create_private_dir(&dir)
        .with_context(|| format!("{VAR}: cannot create {}", dir.display()))?;
    let path = dir.join(name);
    ops::durable_file::write_private(&path, &bytes)
        .with_context(|| format!("{VAR}: cannot write {}", path.display()))
}

/// The update of `round` as encrypted: its f32 values, or the f64 ones noise made.
pub fn update(hospital: u32, round: u64, f32s: &[f32], f64s: Option<&[f64]>) -> anyhow::Result<()> {
    if dir(hospital).is_none() {
        return Ok(());
    }
    let values: Vec<f64> = match f64s {
        Some(v) => v.to_vec(),
        None => f32s.iter().map(|&x| x as f64).collect(),
    };
    write(hospital, format!("update-{round}.f64"), le_bytes(&values))
}

fn le_bytes(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The decrypted average of `round` as applied.
pub fn average(hospital: u32, round: u64, values: &[f64]) -> anyhow::Result<()> {
    if dir(hospital).is_none() {
        return Ok(());
    }
    write(hospital, format!("average-{round}.f64"), le_bytes(values))
}
