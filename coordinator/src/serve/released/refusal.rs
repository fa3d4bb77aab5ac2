//! Why the inference server refuses keys or a request: said to the requester and logged.

use he_agg::ckks::wire;
use he_agg::infer::InferError;
use protocol::serve::released::KEYS_UNKNOWN;

/// Why a request is refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Refusal {
    #[error(
        "the request was encrypted for another plan or parameter set (fingerprint {got}, this \
         server's plan is {want}): fetch the model information again"
    )]
    Fingerprint { got: String, want: String },
    #[error("{got} images in one request; this server takes 1 to {max}")]
    ImageCount { got: u32, max: u32 },
    #[error("{got} ciphertexts per image announced; the plan's image spans {want}")]
    CiphertextsPerImage { got: u32, want: usize },
    #[error(
        "{KEYS_UNKNOWN} (id {id}): send them with an infer-keys stream, then repeat the request"
    )]
    UnknownKeys { id: String },
    #[error("the keys hash to {got}, the header announced {announced}")]
    KeysId { got: String, announced: String },
    #[error("{got} Galois keys announced; the plan needs exactly {want}")]
    GaloisCount { got: u32, want: usize },
    #[error("relinearization key {}; the plan {}", if *.sent { "sent" } else { "missing" }, if *.needed { "needs one" } else { "needs none" })]
    Relinearization { sent: bool, needed: bool },
    #[error("item {index} ({what}) is invalid: {source}")]
    Item {
        index: u64,
        what: &'static str,
        #[source]
        source: wire::WireError,
    },
    #[error("item {index}: a Galois key for element {element}, which the plan does not use")]
    UnplannedGaloisKey { index: u64, element: u64 },
    #[error("item {index}: a second Galois key for element {element}")]
    DuplicateGaloisKey { index: u64, element: u64 },
    #[error("image {image}: encrypted at level {found}, the plan starts at level {expected}")]
    InputLevel {
        image: usize,
        expected: usize,
        found: usize,
    },
    #[error("image {image}: encoded at scale 2^{found:.3}, the plan expects 2^{expected:.3}")]
    InputScale {
        image: usize,
        expected: f64,
        found: f64,
    },
    #[error("more items than the {announced} the header announced")]
    TooManyItems { announced: u64 },
    #[error("the stream ended after {got} of the {announced} items the header announced")]
    MissingItems { got: u64, announced: u64 },
    #[error(
        "refresh {got_index} of request {got_request} with {got_count} ciphertexts, where refresh \
         {index} of request {request} with {count} was asked for"
    )]
    RefreshHeader {
        got_request: u64,
        got_index: u32,
        got_count: u32,
        request: u64,
        index: u32,
        count: u32,
    },
    #[error(
        "image {image}: refreshed at level {found} and scale 2^{scale:.3}, the plan resumes at \
         level {expected} and scale 2^{want_scale:.3}"
    )]
    RefreshedShape {
        image: usize,
        expected: usize,
        found: usize,
        scale: f64,
        want_scale: f64,
    },
    #[error("evaluation failed: {0}")]
    Evaluation(InferError),
    #[error("unexpected message {0:?} (this server answers inference requests only)")]
    Unexpected(&'static str),
}

/// The first 8 bytes of a fingerprint or key id in hex, for refusals and logs.
pub(crate) fn hex(b: &[u8]) -> String {
    b.iter()
        .take(8)
        .map(|x| format!("{x:02x}"))
        .collect::<String>()
        + "…"
}
