//! What can go wrong between HEAL and a PACS, sorted by what the poller does about it: wait and
//! try again (`is_passing`), record the series as refused and go on, or stop (configuration,
//! credentials).

use crate::infer::InferenceError;

#[derive(Debug, thiserror::Error)]
pub enum PacsError {
    #[error("{0}")]
    Config(String),
    #[error(
        "the PACS at {url} refused HEAL's credentials (HTTP {status}): check [pacs] auth, \
         username and the secret file"
    )]
    Unauthorized { url: String, status: u16 },
    #[error("the PACS answered HTTP {status} to {what} ({url}): {detail}")]
    Http {
        what: &'static str,
        url: String,
        status: u16,
        detail: String,
    },
    #[error("the PACS could not be reached for {what} ({url}): {detail}")]
    Unreachable {
        what: &'static str,
        url: String,
        detail: String,
    },
    #[error("the PACS's answer to {what} is larger than {limit} bytes ([pacs] {key})")]
    TooLarge {
        what: &'static str,
        limit: u64,
        key: &'static str,
    },
    #[error("the PACS's answer to {what} is malformed: {detail}")]
    BadAnswer { what: &'static str, detail: String },
    #[error("series {series}: {detail}")]
    Series { series: String, detail: String },
    #[error("the report could not be written: {0}")]
    Report(String),
    #[error("the record of diagnosed series ({path}): {detail}")]
    Record { path: String, detail: String },
    #[error(transparent)]
    Inference(#[from] InferenceError),
}

impl PacsError {
    /// A failure that may pass (the PACS or the server restarting, a timeout): the series is
    /// tried again at the next poll, nothing is recorded against it.
    pub fn is_passing(&self) -> bool {
        match self {
            PacsError::Unreachable { .. } => true,
            PacsError::Http { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            PacsError::Inference(e) => {
                matches!(e, InferenceError::Protocol(_) | InferenceError::Refused(_))
            }
            _ => false,
        }
    }

    /// A failure no later poll mends: the node stops and says why.
    pub fn is_fatal(&self) -> bool {
        match self {
            PacsError::Config(_) | PacsError::Unauthorized { .. } | PacsError::Record { .. } => {
                true
            }
            PacsError::Inference(e) => matches!(
                e,
                InferenceError::ModeRefused(_)
                    | InferenceError::FingerprintMismatch { .. }
                    | InferenceError::Usage(_)
            ),
            _ => false,
        }
    }
}
