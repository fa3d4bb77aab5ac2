//! Errors of the requester's side of encrypted inference.

use he_agg::ckks::CkksError;
use he_agg::ckks::wire::WireError;
use he_agg::infer::{InferError, NetworkError};
use protocol::ProtocolError;

use training::error::TrainError;

#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error(transparent)]
    Client(#[from] TrainError),
    #[error(transparent)]
    Dataset(#[from] datasets::DatasetError),
    #[error("encrypted inference: {0}")]
    Infer(#[from] InferError),
    #[error("network: {0}")]
    Network(#[from] NetworkError),
    #[error("CKKS: {0}")]
    Ckks(#[from] CkksError),
    #[error("cannot seed the key generator: {0}")]
    Rng(String),
    #[error("{what} is invalid: {source}")]
    Wire {
        what: &'static str,
        #[source]
        source: WireError,
    },
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("the inference server refused the request: {0}")]
    Refused(String),
    #[error("the inference server's answer is malformed: {0}")]
    BadAnswer(String),
    #[error("refused by this site's pinned inference mode: {0}")]
    ModeRefused(String),
    #[error(
        "the plan compiled here from the server's architecture (fingerprint {local}) differs \
         from the server's ({server}); the server uses other parameters or its weights cancel a \
         diagonal"
    )]
    FingerprintMismatch { local: String, server: String },
    #[error("image {source_name}: {message}")]
    Image {
        source_name: String,
        message: String,
    },
    #[error("{0}")]
    Usage(String),
}

/// The first bytes of a fingerprint, for messages.
pub fn short_hex(b: &[u8]) -> String {
    b.iter()
        .take(8)
        .map(|x| format!("{x:02x}"))
        .collect::<String>()
        + "…"
}
