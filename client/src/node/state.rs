//! What a hospital keeps between rounds and across restarts: the round of the global model it
//! holds, that model (flat f32), the server optimiser's state, and the sum it last switched.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::keys::write_secret;
use super::participant::SwitchRecord;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelState {
    /// Round of the global model held (0: the initial model).
    pub round: u64,
    pub global: Vec<f32>,
    /// fedavgm momentum, or fedadam first moment.
    pub m: Vec<f32>,
    /// fedadam second moment.
    pub v: Vec<f32>,
}

pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(dir: &Path) -> Self {
        Self {
            path: dir.join("model-state.bin"),
        }
    }

    pub fn load(&self) -> anyhow::Result<Option<ModelState>> {
        match std::fs::read(&self.path) {
            Ok(b) => {
                Ok(Some(postcard::from_bytes(&b).with_context(|| {
                    format!("{} is corrupt", self.path.display())
                })?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", self.path.display())),
        }
    }

    /// Replaces the state durably (temporary file, fsync, rename, directory fsync), readable by
    /// this hospital's user only: it is the global model.
    pub fn save(&self, s: &ModelState) -> anyhow::Result<()> {
        write_secret(&self.path, &postcard::to_allocvec(s)?)
    }
}

/// The one sum this hospital switched in its latest switched round (`switched.bin`), stored
/// before any of its shares leaves: a restarted switcher refuses a second sum of that round.
pub struct SwitchRecordFile {
    path: PathBuf,
}

impl SwitchRecordFile {
    pub fn new(dir: &Path) -> Self {
        Self {
            path: dir.join("switched.bin"),
        }
    }

    pub fn load(&self) -> anyhow::Result<Option<SwitchRecord>> {
        match std::fs::read(&self.path) {
            // a damaged record must not be mistaken for none: the node stops and says so
            Ok(b) => Ok(Some(postcard::from_bytes(&b).with_context(|| {
                format!(
                    "{} is corrupt: it records the sum this hospital switched last; restore it \
                     from a backup rather than delete it",
                    self.path.display()
                )
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", self.path.display())),
        }
    }

    /// Replaces the record durably (fsynced, renamed, directory fsynced).
    pub fn save(&self, r: &SwitchRecord) -> anyhow::Result<()> {
        super::keys::write_public(&self.path, &postcard::to_allocvec(r)?)
    }
}
