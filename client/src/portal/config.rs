//! What `client portal` is started with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::infer::remote::Target;

/// Default address: only this machine, so nothing is exposed until the operator chooses to.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default upload limit (a MedMNIST image is a few KB; a phone photo of a film a few MB).
pub const DEFAULT_UPLOAD_LIMIT: usize = 5 * 1024 * 1024;

/// The portal's configuration.
#[derive(Clone, Debug)]
pub struct PortalConfig {
    /// Portal directory: `users.json`, and per user `users/<name>/history.jsonl` and uploads.
    pub dir: PathBuf,
    pub listen: SocketAddr,
    /// `heal-network/1` file evaluated in this process on images encrypted under a key made
    /// here (mode (b) evaluated on this node).
    pub network: Option<PathBuf>,
    /// A mode (b) inference server reached over the federation's mutual-TLS QUIC.
    pub remote: Option<Target>,
    /// The node's outputs: `client run --out DIR`, or a `coordinator simulate` output directory.
    pub node_out: Option<PathBuf>,
    /// This hospital's index, to pick its rows and audit entries.
    pub hospital: Option<u32>,
    pub upload_limit: usize,
    /// A session ends after this long without a request …
    pub session_idle: Duration,
    /// … and after this long in any case.
    pub session_lifetime: Duration,
    /// Mark the cookie `Secure` (when a TLS proxy fronts the portal).
    pub secure_cookies: bool,
}

impl PortalConfig {
    /// Defaults for everything but the directory.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            network: None,
            remote: None,
            node_out: None,
            hospital: None,
            upload_limit: DEFAULT_UPLOAD_LIMIT,
            session_idle: Duration::from_secs(30 * 60),
            session_lifetime: Duration::from_secs(12 * 3600),
            secure_cookies: false,
        }
    }
}
