//! What a hospital keeps between rounds and across restarts: the round of the global model it
//! holds, that model (flat f32), the server optimiser's state, and the sum it last switched.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

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

    /// The state, or None before the first round; a damaged file (its hash checked,
    /// `ops::checked_file`) is refused with its path and left as it is.
    pub fn load(&self) -> anyhow::Result<Option<ModelState>> {
        match ops::checked_file::read(&self.path)? {
            Some(b) => {
                Ok(Some(postcard::from_bytes(&b).with_context(|| {
                    format!("{} is corrupt", self.path.display())
                })?))
            }
            None => Ok(None),
        }
    }

    /// Replaces the state durably (temporary file, fsync, rename, directory fsync), readable by
    /// this hospital's user only: it is the global model.
    pub fn save(&self, s: &ModelState) -> anyhow::Result<()> {
        ops::checked_file::write_private(&self.path, &postcard::to_allocvec(s)?)
            .with_context(|| format!("cannot write {}", self.path.display()))
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
        // a damaged record must not be mistaken for none: the node stops and says so
        let restore = || {
            format!(
                "{} records the sum this hospital switched last; restore it from a backup \
                 rather than delete it",
                self.path.display()
            )
        };
        match ops::checked_file::read(&self.path).with_context(restore)? {
            Some(b) => Ok(Some(postcard::from_bytes(&b).with_context(|| {
                format!("{} is corrupt: {}", self.path.display(), restore())
            })?)),
            None => Ok(None),
        }
    }

    /// Replaces the record durably (fsynced, renamed, directory fsynced).
    pub fn save(&self, r: &SwitchRecord) -> anyhow::Result<()> {
        ops::checked_file::write_public(&self.path, &postcard::to_allocvec(r)?)
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_model_state_is_refused_with_its_path_and_a_state_of_before_frames_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path());
        let state = ModelState {
            round: 7,
            global: (0..64).map(|i| i as f32 * 0.25).collect(),
            m: vec![],
            v: vec![],
        };
        file.save(&state).unwrap();
        assert_eq!(file.load().unwrap(), Some(state.clone()));
        // one bit of one weight: postcard would read it as another float
        let path = dir.path().join("model-state.bin");
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let err = format!("{:#}", file.load().unwrap_err());
        assert!(err.contains("model-state.bin is damaged"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "left as it was");
        // as HEAL wrote it before the hash
        std::fs::write(&path, postcard::to_allocvec(&state).unwrap()).unwrap();
        assert_eq!(file.load().unwrap(), Some(state));
    }
}
