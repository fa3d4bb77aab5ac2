//! Errors of the portal library (users file, history, training outputs, the server itself).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is invalid: {message}")]
    InvalidFile { path: PathBuf, message: String },
    #[error(
        "user name {0:?} is invalid: 1 to 64 characters from a-z, 0-9, '.', '_' and '-', not starting with '.'"
    )]
    InvalidUserName(String),
    #[error("user {0:?} already exists (use --replace to set a new password)")]
    UserExists(String),
    #[error("the password must be {min} to {max} bytes long")]
    PasswordLength { min: usize, max: usize },
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("cannot draw random bytes from the operating system: {0}")]
    Random(String),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Client(#[from] ::training::TrainError),
}

impl PortalError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::InvalidFile {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// `n` random bytes from the OS, as lowercase hex (session ids, CSRF tokens, diagnosis ids).
pub fn random_hex(n: usize) -> Result<String, PortalError> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|e| PortalError::Random(e.to_string()))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a crash never leaves a
/// half-written file; owner-only permissions on Unix (password hashes, clinical history).
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<(), PortalError> {
    ops::durable_file::write_private(path, bytes).map_err(|e| PortalError::io(path, e))
}

/// Creates `dir` (and parents) with owner-only permissions on Unix.
pub fn create_private_dir(dir: &std::path::Path) -> Result<(), PortalError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        b.mode(0o700);
    }
    b.create(dir).map_err(|e| PortalError::io(dir, e))
}
