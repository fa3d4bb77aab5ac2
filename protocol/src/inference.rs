//! Encrypted inference over the federation's links (mode b: a named server holds the model in
//! the clear, the image travels encrypted under the requester's own key).
//!
//! A requester (a hospital, authenticated by its certificate) first asks what is served
//! ([`Body::InferInfoRequest`](crate::Body::InferInfoRequest) → [`ModelInfo`]): the
//! architecture without weights, from which it compiles the server's plan and so the encryption
//! layout, levels and the exact Galois steps, and the plan's fingerprint to compare with its
//! own. Then it sends an [`InferRequest`] header followed on the same stream by its items, in
//! this order: the relinearization key (when [`InferRequest::relinearization`]), one Galois key
//! per planned rotation, one seeded ciphertext per image. The server answers with an
//! [`InferResult`] header followed by one ciphertext per image, or with
//! [`Body::Refused`](crate::Body::Refused) and the reason.
//!
//! Items are opaque bytes here; the server validates them with `he_agg`'s wire decoders.

use serde::{Deserialize, Serialize};

/// Most images one request may carry (a server may set a lower limit, told in [`ModelInfo`]).
pub const MAX_IMAGES: u32 = 256;
/// Most Galois keys a request may carry.
pub const MAX_GALOIS_KEYS: u32 = 1024;
/// Largest architecture description (JSON) a requester accepts.
pub const MAX_ARCHITECTURE_BYTES: usize = 1 << 20;
/// Most class names (and bytes per name) a requester accepts.
pub const MAX_CLASSES: usize = 4096;

/// What a server serves (answer to [`Body::InferInfoRequest`](crate::Body::InferInfoRequest)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// A name for logs and reports.
    pub name: String,
    /// The network's architecture without weights (JSON of `he_agg::infer::Architecture`).
    pub architecture: String,
    /// Class names, in output order.
    pub class_names: Vec<String>,
    /// `InferenceSpec::fingerprint` of the served plan.
    pub fingerprint: [u8; 32],
    /// Most images the server takes in one request.
    pub max_images: u32,
}

/// Header of an inference request; the items follow on the same stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InferRequest {
    /// Chosen by the requester, echoed in the result and in the server's log.
    pub request_id: u64,
    /// The fingerprint of the plan the requester encrypted for.
    pub fingerprint: [u8; 32],
    /// Whether a relinearization key is the first item.
    pub relinearization: bool,
    /// Galois keys that follow (exactly the plan's steps).
    pub galois_keys: u32,
    /// Seeded ciphertexts that follow, one per image.
    pub images: u32,
}

impl InferRequest {
    /// Items announced by the header.
    pub fn items(&self) -> u64 {
        u64::from(self.relinearization) + u64::from(self.galois_keys) + u64::from(self.images)
    }
}

/// Header of an inference result: `count` ciphertexts follow, one per image, in request order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InferResult {
    pub request_id: u64,
    /// Server time spent evaluating (all images), in microseconds.
    pub evaluate_us: u64,
    /// Server time spent decoding and checking the request's items, in microseconds.
    pub validate_us: u64,
    pub count: u32,
}
