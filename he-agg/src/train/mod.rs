//! Training a classifier's last dense layer on encrypted features (issue 20): a contributing
//! site encrypts the features its images produce under the frozen backbone, with their labels,
//! under the collective key; the trainer runs mini-batch gradient descent of the head (weights
//! and bias) on ciphertexts; the parties refresh the weights collectively between steps
//! ([`crate::multiparty::refresh`]). Nothing is ever decrypted on the way.
//!
//! The loss is the squared error against one-hot labels, ½‖W·x + b − y‖², whose gradient
//! (W·x + b − y)·xᵀ needs two products per step and no polynomial approximation; a softmax
//! cross-entropy would need a high-degree approximation of exp and a division, i.e. several
//! refreshes per step. Predictions are the arg-max of W·x + b, as with cross-entropy.
//!
//! [`layout`] places every value in the slots so that a step needs only rotations that sum,
//! never a repacking; [`params`] sizes the chain (three double-prime rescales between refreshes)
//! and the parameter set; [`plan`] is what every party agrees on (the fingerprint, the keys'
//! reference string and rotations, the flooding of refreshes and of the final switch, the public
//! batch schedule); [`trainer`] evaluates a step; [`chunk`] encrypts and checks a site's
//! examples; [`run`] is a whole run as every party replays it.

pub mod chunk;
pub mod device;
pub mod layout;
pub mod params;
pub mod plan;
pub mod run;
pub mod trainer;

pub use chunk::{EncryptedChunk, MAX_ABS_FEATURE, encrypt_chunk};
pub use device::{DeviceHeadTrainer, StepDevice};
pub use layout::HeadLayout;
pub use params::{HeadScales, head_training_parameters};
pub use plan::{HeadPlan, MAX_ABS_WEIGHT, schedule};
pub use run::{HeadRun, RunSettings, decode_chunks, state_digest};
pub use trainer::{HeadTrainer, PlainHead};

use crate::ckks::CkksError;
use crate::multiparty::MultipartyError;

/// Why a head cannot be trained as asked.
#[derive(Debug, thiserror::Error)]
pub enum HeadTrainError {
    #[error("{0}")]
    Shape(String),
    #[error("example {index}: {reason}")]
    Example { index: usize, reason: String },
    #[error("{what} at level {got}, expected {want}")]
    Level {
        what: &'static str,
        got: usize,
        want: usize,
    },
    #[error("{what} at scale 2^{got:.2}, expected 2^{want:.2}")]
    Scale {
        what: &'static str,
        got: f64,
        want: f64,
    },
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Ckks(#[from] CkksError),
    #[error(transparent)]
    Multiparty(#[from] MultipartyError),
    #[error("on the device: {0}")]
    Device(String),
}

#[cfg(test)]
mod device_tests;
#[cfg(test)]
mod tests;
