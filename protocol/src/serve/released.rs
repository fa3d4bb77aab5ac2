//! Encrypted inference over the federation's links (mode b: a named server holds the model in
//! the clear, the image travels encrypted under the requester's own key).
//!
//! A requester (a hospital, authenticated by its certificate) first asks what is served
//! ([`Body::InferInfoRequest`](crate::Body::InferInfoRequest) → [`ModelInfo`]): the
//! architecture without weights, from which it compiles the server's plan and so the encryption
//! layout (how many ciphertexts an image spans), levels and the exact Galois steps, the plan's
//! fingerprint to compare with its own, and how images are prepared.
//!
//! Evaluation keys travel once, not with every request: an [`InferKeys`] header followed by the
//! relinearization key (when [`InferKeys::relinearization`]) and one Galois key per planned
//! rotation; the server checks them, keeps them (bounded, per requester, by [`KeysId`]) and
//! answers [`Body::InferKeysStored`](crate::Body::InferKeysStored). Each [`InferRequest`] then
//! names the keys by id and is followed by the images' seeded ciphertexts, the plan's count per
//! image. A request naming keys the server does not hold (never sent, or evicted) is refused
//! with [`KEYS_UNKNOWN`]; the requester sends its keys again and repeats the request. The server
//! answers with an [`InferResult`] header followed by one ciphertext per image, or with
//! [`Body::Refused`](crate::Body::Refused) and the reason. A deep model's evaluation stops
//! between its segments for a refresh round trip ([`RefreshHeader`]) before the result.
//!
//! Items are opaque bytes here; the server validates them with `he_agg`'s wire decoders.

use serde::{Deserialize, Serialize};

/// Most images one request may carry (a server may set a lower limit, told in [`ModelInfo`]).
pub const MAX_IMAGES: u32 = 256;
/// Most Galois keys a request may carry.
pub const MAX_GALOIS_KEYS: u32 = 1024;
/// Largest architecture description (JSON) a requester accepts.
pub const MAX_ARCHITECTURE_BYTES: usize = 1 << 20;
/// Most class names a requester accepts.
pub const MAX_CLASSES: usize = 4096;
/// Most bytes in one class name.
pub const MAX_CLASS_NAME_BYTES: usize = 256;

/// The one check of a model's description wherever one is received (a requester reading what a
/// server serves, a serving coordinator reading what a keyholder holds): its architecture and
/// class names within the limits every party holds in memory.
pub fn check_model_description(architecture: &str, class_names: &[String]) -> Result<(), String> {
    if architecture.len() > MAX_ARCHITECTURE_BYTES {
        return Err(format!(
            "the model's architecture is {} bytes; at most {MAX_ARCHITECTURE_BYTES} are accepted",
            architecture.len()
        ));
    }
    if class_names.len() > MAX_CLASSES {
        return Err(format!(
            "the model has {} classes; at most {MAX_CLASSES} are accepted",
            class_names.len()
        ));
    }
    if let Some(c) = class_names.iter().find(|c| c.len() > MAX_CLASS_NAME_BYTES) {
        return Err(format!(
            "a class name of {} bytes; at most {MAX_CLASS_NAME_BYTES} are accepted",
            c.len()
        ));
    }
    Ok(())
}

/// Start of the refusal of a request whose keys the server does not hold.
pub const KEYS_UNKNOWN: &str = "evaluation keys unknown";

/// Names a set of evaluation keys: BLAKE3 of its items, each prefixed by its length.
pub type KeysId = [u8; 32];

/// The id of the key items `items` (in protocol order).
pub fn keys_id<'a>(items: impl IntoIterator<Item = &'a [u8]>) -> KeysId {
    let mut h = blake3::Hasher::new();
    h.update(b"HEAL evaluation keys v1");
    for item in items {
        h.update(&(item.len() as u64).to_le_bytes());
        h.update(item);
    }
    *h.finalize().as_bytes()
}

/// A model's input preparation as a server tells it: JSON (of `datasets::InputPreparation`)
/// within [`MAX_ARCHITECTURE_BYTES`], or empty when the model does not say.
pub fn check_input_preparation(prep: &str) -> Result<(), String> {
    if prep.len() > MAX_ARCHITECTURE_BYTES {
        return Err(format!(
            "the model's input preparation is {} bytes; at most {MAX_ARCHITECTURE_BYTES} are accepted",
            prep.len()
        ));
    }
    if !prep.is_empty() && serde_json::from_str::<serde_json::Value>(prep).is_err() {
        return Err("the model's input preparation is not JSON".into());
    }
    Ok(())
}

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
    /// How image files are made into inputs (JSON of `datasets::InputPreparation`; empty when
    /// the model does not say).
    pub input_preparation: String,
}

impl ModelInfo {
    /// What a server tells of a model, checked as every requester checks it ([`Self::check`]):
    /// a server never serves a description its requesters refuse. No input preparation until
    /// [`Self::set_input_preparation`].
    pub fn new(
        name: impl Into<String>,
        architecture: String,
        class_names: Vec<String>,
        fingerprint: [u8; 32],
        max_images: u32,
    ) -> Result<Self, String> {
        let info = Self {
            name: name.into(),
            architecture,
            class_names,
            fingerprint,
            max_images,
            input_preparation: String::new(),
        };
        info.check()?;
        Ok(info)
    }

    /// Sets how image files are made into inputs ([`check_input_preparation`]).
    pub fn set_input_preparation(&mut self, prep: String) -> Result<(), String> {
        check_input_preparation(&prep)?;
        self.input_preparation = prep;
        Ok(())
    }

    /// The one check of a model's description, by whoever receives or serves it:
    /// [`check_model_description`], its name bounded, its input preparation
    /// ([`check_input_preparation`]).
    pub fn check(&self) -> Result<(), String> {
        check_model_description(&self.architecture, &self.class_names)?;
        if self.name.len() > MAX_CLASS_NAME_BYTES {
            return Err(format!(
                "the model's name is {} bytes; at most {MAX_CLASS_NAME_BYTES} are accepted",
                self.name.len()
            ));
        }
        check_input_preparation(&self.input_preparation)
    }
}

/// Header of a key stream: the evaluation keys a requester's images are evaluated with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InferKeys {
    /// [`keys_id`] of the items (the server recomputes it).
    pub keys: KeysId,
    /// The fingerprint of the plan the keys are made for.
    pub fingerprint: [u8; 32],
    /// Whether a relinearization key is the first item.
    pub relinearization: bool,
    /// Galois keys that follow (exactly the plan's steps).
    pub galois_keys: u32,
}

impl InferKeys {
    /// Items announced by the header.
    pub fn items(&self) -> u64 {
        u64::from(self.relinearization) + u64::from(self.galois_keys)
    }
}

/// Header of an inference request; the images' seeded ciphertexts follow on the same stream,
/// `ciphertexts_per_image` per image, image after image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InferRequest {
    /// Chosen by the requester, echoed in the result and in the server's log.
    pub request_id: u64,
    /// The fingerprint of the plan the requester encrypted for.
    pub fingerprint: [u8; 32],
    /// The evaluation keys (sent before with [`InferKeys`]).
    pub keys: KeysId,
    /// Images in the request.
    pub images: u32,
    /// Ciphertexts each image spans (the plan's; the server checks it).
    pub ciphertexts_per_image: u32,
}

impl InferRequest {
    /// Items announced by the header.
    pub fn items(&self) -> u64 {
        u64::from(self.images) * u64::from(self.ciphertexts_per_image)
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

/// Header of a refresh stream. A deep model's plan is cut into segments
/// (`InferenceSpec::segments`); after segment `index` of request `request_id` the server sends
/// [`ReleasedMsg::Refresh`] and one masked ciphertext per image (at the plan's refresh level),
/// and the requester answers [`ReleasedMsg::Refreshed`] with the same header and one seeded
/// ciphertext per image, re-encrypted at the plan's input level; then the next segment runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshHeader {
    pub request_id: u64,
    /// The refresh's place in the plan (0 after the first segment).
    pub index: u32,
    /// Ciphertexts that follow: one per image of the request.
    pub count: u32,
}

/// The messages of mode (b) serving (requester ↔ inference server); the requester's first
/// question, [`crate::Body::InferInfoRequest`], is common to both modes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ReleasedMsg {
    /// The served model's architecture, classes and plan fingerprint.
    InferInfo(ModelInfo),
    /// Header of a key stream: the relinearization key, then the Galois keys.
    InferKeys(InferKeys),
    /// The server checked and keeps these keys for this requester.
    InferKeysStored { keys: KeysId },
    /// Header of a request stream: the encrypted images (keys named by id).
    Infer(InferRequest),
    /// Header of a result stream: one ciphertext per image.
    InferResult(InferResult),
    /// Server → requester: a segment's outputs, masked, to refresh.
    Refresh(RefreshHeader),
    /// Requester → server: the refreshed ciphertexts.
    Refreshed(RefreshHeader),
}

impl ReleasedMsg {
    /// A short name for logs and audit entries.
    pub fn kind(&self) -> &'static str {
        match self {
            ReleasedMsg::InferInfo(_) => "infer-info",
            ReleasedMsg::InferKeys(_) => "infer-keys",
            ReleasedMsg::InferKeysStored { .. } => "infer-keys-stored",
            ReleasedMsg::Infer(_) => "infer",
            ReleasedMsg::InferResult(_) => "infer-result",
            ReleasedMsg::Refresh(_) => "refresh",
            ReleasedMsg::Refreshed(_) => "refreshed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_descriptions_past_the_limits_are_refused_with_the_figures() {
        let names = |n: usize, len: usize| vec!["x".repeat(len); n];
        assert!(check_model_description("{}", &names(11, 10)).is_ok());
        let e = check_model_description(&" ".repeat(MAX_ARCHITECTURE_BYTES + 1), &[]);
        assert!(e.unwrap_err().contains(&MAX_ARCHITECTURE_BYTES.to_string()));
        let e = check_model_description("{}", &names(MAX_CLASSES + 1, 1));
        assert!(e.unwrap_err().contains("4097 classes"));
        let e = check_model_description("{}", &names(2, MAX_CLASS_NAME_BYTES + 1));
        assert!(e.unwrap_err().contains("257 bytes"));
    }

    #[test]
    fn a_model_info_is_made_and_checked_as_requesters_check_it() {
        let names = vec!["a".to_string(), "b".to_string()];
        let info = ModelInfo::new("net", "{}".into(), names.clone(), [1; 32], 4).unwrap();
        assert!(info.check().is_ok() && info.input_preparation.is_empty());
        let long = "n".repeat(MAX_CLASS_NAME_BYTES + 1);
        let e = ModelInfo::new(long, "{}".into(), names.clone(), [1; 32], 4).unwrap_err();
        assert!(e.contains(&MAX_CLASS_NAME_BYTES.to_string()), "{e}");
        let mut info = info;
        assert!(
            info.set_input_preparation("{\"resize\": \"crop\"}".into())
                .is_ok()
        );
        let e = info.set_input_preparation("not json".into()).unwrap_err();
        assert!(e.contains("not JSON"), "{e}");
        // the refused one is not kept
        assert_eq!(info.input_preparation, "{\"resize\": \"crop\"}");
        let big = format!("\"{}\"", "x".repeat(MAX_ARCHITECTURE_BYTES));
        assert!(check_input_preparation(&big).is_err());
        // what a requester receives is checked the same way
        info.input_preparation = "not json".into();
        assert!(info.check().is_err());
    }
}
