//! What a keyholder asks its shell to store durably: the keyholder decides (a fresh secret, the
//! collective key it made, a formed setup) and queues a [`Persist`]; the shell writes each one
//! before anything the keyholder returned with it is sent, so that nothing leaves that a
//! restarted keyholder could not stand by.

use std::path::Path;

use anyhow::Context;
use zeroize::Zeroizing;

use super::super::held_setup;
use super::super::keys::{write_public, write_secret};

/// Where a keyholder keeps the hash of the collective key it made (public).
pub const COLLECTIVE_KEY_HASH: &str = "collective-key.hash";
/// Where a keyholder keeps the inference secret of the setup it started (private).
const SECRET: &str = "share.key";

/// One durable write a keyholder asks for.
pub enum Persist {
    /// the fresh inference secret of a setup it starts (encoded)
    Secret(Zeroizing<Vec<u8>>),
    /// the hash of the collective key it made: the only key it takes requests under
    CollectiveKey([u8; 32]),
    /// a formed setup: its id and this keyholder's threshold secret ([`held_setup::encode`])
    Setup(Zeroizing<Vec<u8>>),
}

impl std::fmt::Debug for Persist {
    // never the secrets
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Persist::Secret(_) => "Persist::Secret",
            Persist::CollectiveKey(_) => "Persist::CollectiveKey",
            Persist::Setup(_) => "Persist::Setup",
        })
    }
}

/// Carries out `p` in the keyholder's directory `dir`.
pub fn write(dir: &Path, p: Persist) -> anyhow::Result<()> {
    match p {
        Persist::Secret(bytes) => write_secret(&dir.join(SECRET), &bytes),
        Persist::CollectiveKey(hash) => write_public(&dir.join(COLLECTIVE_KEY_HASH), &hash)
            .context("storing the collective key's hash"),
        Persist::Setup(bytes) => held_setup::store_encoded(dir, &bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::keys::read;
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn each_write_lands_where_a_restarted_keyholder_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), Persist::CollectiveKey([9; 32])).unwrap();
        assert_eq!(
            read(&dir.path().join(COLLECTIVE_KEY_HASH))
                .unwrap()
                .unwrap(),
            [9; 32]
        );
        write(dir.path(), Persist::Secret(Zeroizing::new(vec![1, 2, 3]))).unwrap();
        let secret = dir.path().join(SECRET);
        assert_eq!(read(&secret).unwrap().unwrap(), [1, 2, 3]);
        // readable by this hospital's user only
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "mode {mode:o}");
        assert_eq!(
            format!("{:?}", Persist::Secret(Zeroizing::new(vec![42]))),
            "Persist::Secret"
        );
    }
}
