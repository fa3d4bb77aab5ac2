//! The output directory of `simulate`: every run provisions a new federation, so the hospitals'
//! state left there by an earlier run (keys, model state, round) belongs to another federation.
//! Nodes started on it would hold another federation's round and wait for ever; such a directory
//! is refused with what it holds, or cleared with `--force`.

use std::path::Path;

use anyhow::{Context, bail};

/// The files a simulation writes at the top of its output directory (`report`, `serving`).
const OUR_FILES: [&str; 11] = [
    "summary.json",
    "inference_mode_a.json",
    "metrics_per_round.csv",
    "metrics_per_round.parquet",
    "metrics_per_hospital.csv",
    "metrics_per_hospital.parquet",
    "accuracy.png",
    "loss.png",
    "bytes.png",
    "time.png",
    "privacy.png",
];

/// Refuses `out` when it holds an earlier run, unless `force`, which removes that run's files
/// (only the ones a simulation writes; anything else in `out` is left alone).
pub fn prepare(out: &Path, force: bool) -> anyhow::Result<()> {
    // the hospitals' state, or any result file, marks an earlier run
    let found: Vec<&str> = std::iter::once("hospitals")
        .chain(OUR_FILES)
        .filter(|name| out.join(name).exists())
        .collect();
    if found.is_empty() {
        return Ok(());
    }
    if !force {
        bail!(
            "{} holds an earlier simulation ({}): its hospitals' keys and state belong to another \
             federation. Choose another --out, or add --force to replace it",
            out.display(),
            found.join(", ")
        );
    }
    for name in ["hospitals", "logs"] {
        let dir = out.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot remove {}", dir.display()))?;
        }
    }
    for name in OUR_FILES {
        let path = out.join(name);
        if path.is_file() {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    println!(
        "--force: replaced the earlier simulation in {}",
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_earlier_run_is_refused_then_replaced_with_force() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("run");
        prepare(&out, false).unwrap(); // nothing there yet
        std::fs::create_dir_all(out.join("hospitals/hospital-1")).unwrap();
        std::fs::write(out.join("hospitals/hospital-1/model-state.bin"), b"x").unwrap();
        std::fs::write(out.join("summary.json"), b"{}").unwrap();
        std::fs::write(out.join("notes.txt"), b"mine").unwrap();
        let e = prepare(&out, false).unwrap_err().to_string();
        assert!(
            e.contains("earlier simulation") && e.contains("--force"),
            "{e}"
        );
        assert!(e.contains("hospitals") && e.contains("summary.json"), "{e}");
        prepare(&out, true).unwrap();
        assert!(!out.join("hospitals").exists() && !out.join("summary.json").exists());
        assert!(
            out.join("notes.txt").exists(),
            "files not ours are left alone"
        );
        prepare(&out, false).unwrap();
    }
}
