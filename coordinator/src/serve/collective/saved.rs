//! The served state on disk, so a restarted coordinator serves again without a new setup: the
//! sums the evaluation keys are made of (what keyholders are sent), the collective public key
//! and what identifies the setup, in one file (`served.bin` in the coordinator directory) whose
//! BLAKE3 hash the redb store names as current once the file is synced. Loading checks the
//! hash and the format, then decodes and validates every key against the plan as if it came
//! from the network. The model is never here: the keyholders hold it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store::Store;

/// Largest served state read back (the default model's key sums are ~0.3 GB).
const MAX_SAVED_BYTES: u64 = 8 << 30;

/// The format this version writes and reads (before 25 November 2026 the file held the
/// evaluation keys and an encrypted model, and had no marker).
pub const FORMAT: [u8; 8] = *b"served-2";

/// What a restarted coordinator needs to serve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedServing {
    pub format: [u8; 8],
    pub hospitals: u32,
    pub threshold: u32,
    /// The served architecture (with the uploader's normalization) and classes.
    pub architecture: String,
    /// How image files become its inputs (the uploader's; JSON, empty when unknown).
    pub input_preparation: String,
    pub class_names: Vec<String>,
    pub fingerprint: [u8; 32],
    /// Identifies the setup (the hash of the round-1 relinearization sum every keyholder got).
    pub setup: [u8; 32],
    pub public_key: Vec<u8>,
    /// The sums keyholders make their evaluation keys of, as they are sent them: the round-1
    /// and round-2 relinearization sums, then the Galois sums.
    pub keys: Vec<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SavedError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{path} does not match the hash the store names as current (damaged or replaced)")]
    Hash { path: PathBuf },
    #[error("{path} is not a served state: {message}")]
    Decode { path: PathBuf, message: String },
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join("served.bin")
}

/// Writes the state (synced, then renamed into place) and names it current in `store`.
pub fn save(dir: &Path, store: &Store, state: &SavedServing) -> Result<(), SavedError> {
    let bytes = postcard::to_allocvec(state).map_err(|e| SavedError::Decode {
        path: path(dir),
        message: e.to_string(),
    })?;
    let target = path(dir);
    // whole or not at all, 0600, and the rename durable before the store names the new hash
    ops::durable_file::write_private(&target, &bytes).map_err(|source| SavedError::Io {
        path: target.clone(),
        source,
    })?;
    store.set_served_state(blake3::hash(&bytes).as_bytes())?;
    Ok(())
}

/// The current state, if the store names one.
pub fn load(dir: &Path, store: &Store) -> Result<Option<SavedServing>, SavedError> {
    let Some(hash) = store.served_state()? else {
        return Ok(None);
    };
    let p = path(dir);
    let io = |source| SavedError::Io {
        path: p.clone(),
        source,
    };
    let len = std::fs::metadata(&p).map_err(io)?.len();
    if len > MAX_SAVED_BYTES {
        return Err(SavedError::Decode {
            path: p,
            message: format!("{len} bytes, more than any served state"),
        });
    }
    let bytes = std::fs::read(&p).map_err(io)?;
    if blake3::hash(&bytes).as_bytes() != &hash {
        return Err(SavedError::Hash { path: p });
    }
    if !bytes.starts_with(&FORMAT) {
        return Err(SavedError::Decode {
            path: p,
            message: "the format of HEAL before 25 November 2026 (an encrypted model served by \
                      the coordinator): start with --new-setup"
                .into(),
        });
    }
    postcard::from_bytes::<SavedServing>(&bytes)
        .map(Some)
        .map_err(|e| SavedError::Decode {
            path: p,
            message: e.to_string(),
        })
}
