//! Why something a keyholder or a requester sent is refused (it changes nothing).

/// Why a keyholder's message is refused (it changes nothing).
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("{0}")]
    Invalid(String),
    #[error("item {index} ({what}) is invalid: {reason}")]
    Item {
        index: u64,
        what: &'static str,
        reason: String,
    },
    #[error("the keys are not made yet")]
    NotReady,
}
