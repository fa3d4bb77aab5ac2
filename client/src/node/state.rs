//! What a hospital keeps between rounds and across restarts: the round of the global model it
//! holds, that model (flat f32), and the server optimiser's state.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::keys::write_secret;

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
