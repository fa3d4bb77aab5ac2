//! Errors of the protocol layer.

use crate::identity::Party;

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("frame of {size} bytes exceeds the limit of {limit}")]
    FrameTooLarge { size: usize, limit: usize },
    #[error("the peer closed the stream in the middle of a frame")]
    Truncated,
    #[error("malformed message: {0}")]
    Decode(String),
    #[error("protocol version {got} where {want} is spoken")]
    Version { got: u16, want: u16 },
    #[error("message for federation {got} where this is {want}")]
    Federation { got: String, want: String },
    #[error("message claims to come from {claimed} but the connection is {actual}")]
    Impersonation { claimed: Party, actual: Party },
    #[error("timed out after {0:?} waiting for the peer")]
    Timeout(std::time::Duration),
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("cannot read {path}: {reason}")]
    File { path: String, reason: String },
    #[error("connection: {0}")]
    Connection(String),
    #[error("the peer presented a certificate this consortium does not know")]
    UnknownPeer,
    /// The coordinator closed the connection because the federation is finished.
    #[error("the peer closed the connection: the federation is finished")]
    PeerFinished,
}

/// Close reason the coordinator gives when the federation is finished: a node that misses the
/// final `Finished` message still learns from the close that there is nothing to reconnect to.
pub const FINISHED_REASON: &[u8] = b"finished";

impl From<quinn::ConnectionError> for ProtocolError {
    fn from(e: quinn::ConnectionError) -> Self {
        match &e {
            quinn::ConnectionError::ApplicationClosed(c) if &c.reason[..] == FINISHED_REASON => {
                ProtocolError::PeerFinished
            }
            _ => ProtocolError::Connection(e.to_string()),
        }
    }
}

impl From<quinn::WriteError> for ProtocolError {
    fn from(e: quinn::WriteError) -> Self {
        match e {
            quinn::WriteError::ConnectionLost(c) => c.into(),
            other => ProtocolError::Connection(other.to_string()),
        }
    }
}

impl From<quinn::ClosedStream> for ProtocolError {
    fn from(e: quinn::ClosedStream) -> Self {
        ProtocolError::Connection(e.to_string())
    }
}
