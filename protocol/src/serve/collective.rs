//! Mode (a) serving: the final model stays encrypted at the server under a key the hospitals
//! make collectively after training, and each result is switched to its requester's key by t
//! hospitals ("keyholders"), each of which logs the request.
//!
//! Setup, every keyholder connected (`KeyholderHello`):
//! 1. server → `CollectiveStart`; keyholder → [`KeyholderRound1`] header, then its public-key
//!    share, its relinearization round-1 share and one Galois share per planned rotation;
//! 2. server → `CollectiveRound1Result` (sealed Shamir shares addressed to it, every
//!    keyholder's signature over its public-key share) with the relinearization round-1
//!    aggregate and the public-key shares; the keyholder checks the signatures and makes the
//!    collective public key itself; keyholder → `CollectiveRound2` with its round-2 share,
//!    then `ThresholdFormed` once it has combined its threshold secret;
//! 3. server → `ModelWanted` with the collective public key to one keyholder, which refuses
//!    any other key than the one it made and answers `EncryptedModel` with the model's
//!    ciphertexts in plan order.
//!
//! A setup is named by the hash of the round-1 relinearization sum every keyholder received; a
//! keyholder holding a threshold secret says which setup it is of when it connects, so a
//! restarted server (which saves its keys and model) asks only those of its own setup.
//!
//! Serving: a requester asks `InferInfoRequest` and gets `CollectiveInfo` (the model's
//! description and the collective public key); it sends [`CollectiveRequest`] with its own
//! public key and images encrypted under the collective key; the server evaluates and sends t
//! keyholders [`ResultSwitchRequest`]; they answer [`ResultSwitchShares`]; the requester gets
//! `InferResult` with the results under its own key.

use serde::{Deserialize, Serialize};

/// Most images one mode (a) request may carry (each is a full ciphertext at the plan's top
/// level, ~1.5 MB, and its evaluation holds the server for ~0.5 s).
pub const MAX_COLLECTIVE_IMAGES: u32 = 16;

/// Header of a keyholder's round-1 stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyholderRound1 {
    /// The final network's architecture without weights (JSON of `he_agg::infer::Architecture`).
    pub architecture: String,
    pub class_names: Vec<String>,
    /// Fingerprint of the plan the shares are made for (every keyholder's must agree).
    pub plan: [u8; 32],
    /// Galois shares in the stream (exactly the plan's rotations, ascending by element).
    pub galois: u32,
    /// For each other hospital, sealed for it: a Shamir share of this hospital's inference
    /// secret.
    pub sealed: Vec<(u32, Vec<u8>)>,
    /// The hospital's signature over its public-key share (the stream's first item),
    /// [`crate::transcript::Statement::InferenceKeyShare`]: every keyholder checks it and makes
    /// the collective key itself.
    pub signature: Vec<u8>,
}

impl KeyholderRound1 {
    /// Items that follow the header.
    pub fn items(&self) -> u64 {
        2 + u64::from(self.galois)
    }
}

/// Header of a switch request: the requester's public key, then `count` results follow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultSwitchRequest {
    /// The setup whose key the results are under (a keyholder refuses another).
    pub setup: [u8; 32],
    pub request: u64,
    pub attempt: u32,
    /// The hospital that asked (each keyholder logs it).
    pub requester: u32,
    /// The t keyholders switching this attempt (each makes its additive share for this set).
    pub active: Vec<u32>,
    pub count: u32,
}

/// Header of a keyholder's answer: `count` switching shares follow, one per result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultSwitchShares {
    pub request: u64,
    pub attempt: u32,
    pub count: u32,
}

/// Most ciphertexts of images one mode (a) request may carry (an image may span several).
pub const MAX_COLLECTIVE_CIPHERTEXTS: u32 = 64;

/// Header of a mode (a) request: the requester's public key, then `images` ×
/// `ciphertexts_per_image` ciphertexts under the collective key, image after image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollectiveRequest {
    pub request_id: u64,
    /// Fingerprint of the plan the images were encrypted for.
    pub fingerprint: [u8; 32],
    pub images: u32,
    /// Ciphertexts each image spans (the plan's; the server checks it).
    pub ciphertexts_per_image: u32,
}

impl CollectiveRequest {
    /// Items that follow the header: the public key and the images' ciphertexts.
    pub fn items(&self) -> u64 {
        1 + u64::from(self.images) * u64::from(self.ciphertexts_per_image)
    }
}
