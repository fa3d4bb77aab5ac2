//! The mode (a) server's state on disk: its audit log and the saved served state. Two rules:
//! - **No request unrecorded.** A request is admitted only once its audit entry is written; a
//!   server that cannot write one (a full disk) refuses the request with the disk's error and
//!   evaluates nothing, instead of serving requests nobody can account for later.
//! - **Back without a restart.** redb refuses every call after an I/O error until the database
//!   is reopened, so after a failed write the store is dropped and reopened at the next write;
//!   a served state that could not be saved is kept and saved again then. An operator who
//!   frees space needs to do nothing else.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use protocol::FederationId;
use tracing::{info, warn};

use super::saved::SavedServing;
use crate::store::Store;

/// The store and the state directory, shared by the shell's tasks.
pub struct ServingDisk {
    federation: FederationId,
    /// the state directory (the saved state's file lives here)
    dir: PathBuf,
    /// the redb store in it
    path: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    /// None after an I/O error, until reopened
    store: Option<Store>,
    /// a served state whose save failed, saved again at the next write that succeeds
    unsaved: Option<SavedServing>,
}

impl ServingDisk {
    /// `store` is open on `path`, in the state directory `dir`.
    pub fn new(store: Store, path: PathBuf, dir: PathBuf, federation: FederationId) -> Self {
        Self {
            federation,
            dir,
            path,
            inner: Mutex::new(Inner {
                store: Some(store),
                unsaved: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the store, reopening it first when an earlier call failed; a failure
    /// drops it so that the next call reopens it.
    fn with_store<T>(
        &self,
        inner: &mut Inner,
        f: impl FnOnce(&Store) -> Result<T, String>,
    ) -> Result<T, String> {
        if inner.store.is_none() {
            let store = Store::open(&self.path, self.federation)
                .map_err(|e| format!("reopening {}: {e}", self.path.display()))?;
            info!(path = %self.path.display(), "state store reopened after an I/O error");
            inner.store = Some(store);
        }
        let Some(store) = inner.store.as_ref() else {
            return Err("no store".into());
        };
        let r = f(store);
        if r.is_err() {
            inner.store = None;
        }
        r
    }

    /// Writes one audit entry; `Err` carries the store's error (the caller decides whether
    /// what it records may go on without it).
    pub fn audit(&self, hospital: Option<u32>, event: &str, detail: &str) -> Result<(), String> {
        let mut inner = self.lock();
        let written = self.with_store(&mut inner, |s| {
            s.audit(hospital, 0, event, detail)
                .map_err(|e| e.to_string())
        });
        if let Err(e) = &written {
            warn!(path = %self.path.display(), event, "cannot write the audit log: {e}");
        } else if let Some(state) = inner.unsaved.take() {
            self.save_locked(&mut inner, state);
        }
        written
    }

    /// Saves the served state (kept and saved again after the next successful write if the
    /// disk refuses it now).
    pub fn save(&self, state: SavedServing) {
        let mut inner = self.lock();
        self.save_locked(&mut inner, state);
    }

    fn save_locked(&self, inner: &mut Inner, state: SavedServing) {
        let t = Instant::now();
        let dir = self.dir.clone();
        match self.with_store(inner, |s| {
            super::saved::save(&dir, s, &state).map_err(|e| e.to_string())
        }) {
            Ok(()) => info!(
                seconds = t.elapsed().as_secs_f64(),
                path = %super::saved::path(&self.dir).display(),
                "served keys saved"
            ),
            Err(e) => {
                warn!(
                    "cannot save the served state (kept, and saved again once the disk takes \
                     a write; a restart before that needs a new setup): {e}"
                );
                inner.unsaved = Some(state);
            }
        }
    }

    /// Whether a served state waits to be saved.
    pub fn save_pending(&self) -> bool {
        self.lock().unsaved.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved() -> SavedServing {
        SavedServing {
            format: super::super::saved::FORMAT,
            hospitals: 3,
            threshold: 2,
            architecture: "{}".into(),
            input_preparation: String::new(),
            class_names: vec!["a".into(), "b".into()],
            fingerprint: [1; 32],
            setup: [2; 32],
            public_key: vec![3; 64],
            keys: vec![vec![4; 4096]],
        }
    }

    /// A store and its state directory in `dir`, with the federation they belong to.
    fn disk_in(dir: &std::path::Path) -> (ServingDisk, PathBuf, FederationId) {
        let path = dir.join("state.redb");
        let fed = FederationId([9; 16]);
        let store = Store::open(&path, fed).unwrap();
        let disk = ServingDisk::new(store, path.clone(), dir.to_path_buf(), fed);
        (disk, path, fed)
    }

    /// A served state whose file cannot be written (a folder stands where it goes, as a failing
    /// disk refuses it) is kept while audit entries go on; once the file can be written, the
    /// next entry saves it without a restart.
    #[test]
    fn a_failed_write_is_reported_and_the_store_comes_back_with_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (disk, path, fed) = disk_in(dir.path());
        disk.audit(Some(1), "inference-request", "request 1")
            .unwrap();
        // the state's file cannot be written: a folder stands where it goes
        let file = super::super::saved::path(dir.path());
        std::fs::create_dir_all(file.join("blocker")).unwrap();
        disk.save(saved());
        assert!(disk.save_pending());
        disk.audit(Some(1), "inference-request", "request 2")
            .unwrap();
        assert!(disk.save_pending(), "still blocked");
        std::fs::remove_dir_all(&file).unwrap();
        disk.audit(Some(2), "inference-request", "request 3")
            .unwrap();
        assert!(!disk.save_pending(), "saved at the next write");
        drop(disk);
        let store = Store::open(&path, fed).unwrap();
        let loaded = super::super::saved::load(dir.path(), &store).unwrap();
        assert_eq!(loaded, Some(saved()));
        let details: Vec<String> = store
            .audit_log()
            .unwrap()
            .into_iter()
            .map(|e| e.detail)
            .collect();
        assert_eq!(details, ["request 1", "request 2", "request 3"]);
    }

    /// A real full disk (a tmpfs of 8 MB filled by another file): the audit entry is refused
    /// with the disk's error; once the file is removed the next entry is written by the same
    /// server (redb alone would refuse every call after the error until reopened). Mounting
    /// needs root, as CI has; elsewhere it says it skipped.
    #[test]
    fn a_full_disk_refuses_entries_and_the_store_is_written_again_once_it_has_space() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m,mode=0700", "heal-test"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            assert!(
                std::env::var_os("HEAL_REQUIRE_NETNS").is_none(),
                "cannot mount a tmpfs"
            );
            eprintln!("skipped: cannot mount a tmpfs; run as root");
            return;
        }
        struct Unmount<'a>(&'a std::path::Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(self.0)
                    .status();
            }
        }
        let _unmount = Unmount(dir.path());
        let (disk, path, fed) = disk_in(dir.path());
        disk.audit(Some(1), "inference-request", "before").unwrap();
        let filler = dir.path().join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 1 << 16];
        while f.write_all(&block).is_ok() {}
        drop(f);
        let refused: Vec<String> = (0..64)
            .filter_map(|i| {
                let detail = format!("full {i} {}", "x".repeat(512));
                disk.audit(Some(1), "inference-request", &detail).err()
            })
            .collect();
        assert!(
            refused
                .iter()
                .any(|e| e.contains("No space left on device")),
            "the full disk refused nothing: {refused:?}"
        );
        std::fs::remove_file(&filler).unwrap();
        disk.audit(Some(1), "inference-request", "after").unwrap();
        drop(disk);
        let log = Store::open(&path, fed).unwrap().audit_log().unwrap();
        assert_eq!(log.first().map(|e| e.detail.as_str()), Some("before"));
        assert_eq!(log.last().map(|e| e.detail.as_str()), Some("after"));
    }
}
