//! Where a coordinator's files are: its kit and its state.

use std::path::PathBuf;

use protocol::tls::TlsFiles;

/// Where a coordinator's files are: its kit (config, roster, certificates) and its state (the
/// redb store, the serving state), by default in the same directory.
#[derive(Clone, Debug)]
pub struct CoordinatorDir {
    pub dir: PathBuf,
    /// Where the state is written (an installed service: /var/lib/heal/coordinator, with the
    /// kit read-only in /etc/heal/coordinator).
    pub state_dir: PathBuf,
}

impl CoordinatorDir {
    /// Kit and state in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            state_dir: dir.clone(),
            dir,
        }
    }

    /// The kit in `dir`, the state in `state_dir` (default `dir`).
    pub fn with_state(dir: PathBuf, state_dir: Option<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.unwrap_or_else(|| dir.clone()),
            dir,
        }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("federation.toml")
    }
    pub fn roster(&self) -> PathBuf {
        self.dir.join("roster.toml")
    }
    pub fn state(&self) -> PathBuf {
        self.state_dir.join("state.redb")
    }
    pub fn tls(&self) -> TlsFiles {
        TlsFiles::in_dir(&self.dir)
    }
}
