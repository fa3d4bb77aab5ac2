//! Mode (a) serving: the final model stays with the hospitals. Each holds it in the clear and a
//! share of a key the hospitals make collectively after training; a requester encrypts its
//! images under the collective key, and t hospitals ("keyholders") each evaluate the signed
//! request themselves and switch their result to the requester's key, logging it. The server
//! relays, checks and combines: it never holds the model, and no keyholder switches a ciphertext
//! it did not compute from a request its requester signed (issue 46).
//!
//! Setup, every keyholder connected (`KeyholderHello`):
//! 1. server → `CollectiveStart`; keyholder → [`KeyholderRound1`] header (with its signature
//!    over the digests of its shares and of its final model), then its public-key share, its
//!    relinearization round-1 share and one Galois share per planned rotation;
//! 2. server → `CollectiveRound1Result`: the sealed Shamir shares addressed to it and, for every
//!    keyholder, its signed record ([`KeyholderShares`]) with its public-key and
//!    relinearization round-1 shares. The keyholder checks every signature and makes the
//!    collective public key and the relinearization sum itself (a sum of the server's making
//!    would let round 2 reveal its secret); keyholder → `CollectiveRound2` with its round-2
//!    share, then `ThresholdFormed` once it has combined its threshold secret;
//! 3. server → [`ServingKeys`]: the sums the evaluation keys are made of; the keyholder checks
//!    the relinearization sum against the setup it made, finalizes the keys and answers
//!    `KeyholderReady`.
//!
//! A setup is named by the hash of the round-1 relinearization sum; a keyholder holding a
//! threshold secret says which setup it is of when it connects, so a restarted server (which
//! saves its keys) asks only those of its own setup, and sends the keys again to one that no
//! longer holds them.
//!
//! Serving: a requester asks `InferInfoRequest` and gets `CollectiveInfo` (the model's
//! description and the collective public key); it sends [`CollectiveRequest`], signed, with its
//! own public key and images encrypted under the collective key; the server checks it and sends
//! t keyholders [`EvaluateRequest`] with the same items; each checks the signature, evaluates
//! and answers [`EvaluatedShares`] (its results and its switching shares); the server checks the
//! results agree and sends the requester `InferResult` with the results under its own key.
//! A network deeper than one ring holds is cut into segments: after each segment but the last,
//! every switching keyholder sends [`RefreshShares`] of the output it computed, the server
//! relays all t keyholders' signed shares to each ([`RefreshRelay`]), and each combines them
//! and refreshes its own output before the next segment (one round trip per refresh).
//!
//! Head training's final switch (a trained head to its contributor) travels in
//! [`super::head`].

use serde::{Deserialize, Serialize};

use super::released::ModelInfo;

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
    /// How image files become the model's inputs (JSON; empty: unknown): requesters are told
    /// the lowest-numbered keyholder's (each hospital normalises with its own data's
    /// statistics; the weights are the same).
    pub input_preparation: String,
    /// BLAKE3 of the final model's weights (the network without its normalization): every
    /// keyholder's must agree, as each evaluates requests itself.
    pub model: [u8; 32],
    /// The digest of its Galois shares (items 2.., [`crate::transcript::digest_items`]).
    pub galois_digest: [u8; 32],
    /// The hospital's signature over [`crate::transcript::Statement::InferenceKeyShare`]:
    /// every keyholder checks it and makes the collective key and the relinearization sum
    /// itself.
    pub signature: Vec<u8>,
}

/// One keyholder's round-1 record as every keyholder is relayed it (its public-key and
/// relinearization shares follow as items): what it signed, by digest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyholderShares {
    pub hospital: u32,
    pub model: [u8; 32],
    pub galois_digest: [u8; 32],
    pub signature: Vec<u8>,
}

/// Header of the keys a keyholder evaluates with: `galois` + 2 items follow (the round-1
/// relinearization sum, the round-2 relinearization sum, then the Galois sums in the plan's
/// order of elements).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServingKeys {
    pub setup: [u8; 32],
    pub galois: u32,
}

impl KeyholderRound1 {
    /// Items that follow the header.
    pub fn items(&self) -> u64 {
        2 + u64::from(self.galois)
    }
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
    /// The requester's signature over [`CollectiveRequest::statement`] (its site certificate's
    /// key): the keyholders switch only what it signed, to the key it signed.
    pub signature: Vec<u8>,
}

impl CollectiveRequest {
    /// Items that follow the header: the public key and the images' ciphertexts.
    pub fn items(&self) -> u64 {
        1 + u64::from(self.images) * u64::from(self.ciphertexts_per_image)
    }

    /// What the requester signs: this request of hospital `requester` with `items` (its public
    /// key, then the images' ciphertexts).
    pub fn statement<'a>(
        &self,
        federation: crate::FederationId,
        requester: u32,
        items: impl IntoIterator<Item = &'a [u8]>,
    ) -> crate::transcript::Statement {
        let mut items = items.into_iter();
        let key = items.next().unwrap_or_default();
        crate::transcript::Statement::InferenceRequest {
            federation,
            requester,
            request_id: self.request_id,
            plan: self.fingerprint,
            images: self.images,
            requester_key: crate::transcript::digest(key),
            ciphertexts: crate::transcript::digest_items(items),
        }
    }
}

/// Header of the server's request to a switching keyholder: evaluate `signed` (the requester's
/// header as it signed it; its items follow: its public key, then the images) as one of
/// `active` (t keyholders), and switch the results to the requester's key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvaluateRequest {
    /// The setup whose key the images are under (a keyholder refuses another).
    pub setup: [u8; 32],
    /// The server's number for the request, and its attempt (an attempt fixes the active set).
    pub request: u64,
    pub attempt: u32,
    pub active: Vec<u32>,
    /// The hospital that asked (its certificate checks the signature; each keyholder logs it).
    pub requester: u32,
    pub signed: CollectiveRequest,
}

/// Header of a keyholder's answer to [`EvaluateRequest`]: `count` results (its own evaluation,
/// under the collective key), then `count` switching shares of them follow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvaluatedShares {
    pub request: u64,
    pub attempt: u32,
    pub count: u32,
    /// How long its evaluation took.
    pub evaluate_us: u64,
}

/// Header of a switching keyholder's shares of the collective refresh between two segments of
/// a plan cut into segments (`he_agg::infer::threshold::served_refresh`): `count` items follow,
/// one share per image of the request (`he_agg::multiparty::wire::encode_refresh_share`), of
/// the segment output it computed itself. `signature`: its site key over
/// [`crate::transcript::Statement::RefreshShares`], so that every keyholder combines only
/// shares their keyholders made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefreshShares {
    pub request: u64,
    pub attempt: u32,
    /// Which refresh of the plan (0: after the first segment).
    pub index: u32,
    pub count: u32,
    pub signature: Vec<u8>,
}

/// Header of the server's relay of every active keyholder's shares of one refresh: for each
/// `(hospital, signature)` of `from`, in that order, its `count` shares follow. Each keyholder
/// checks every signature, sums the shares and refreshes its own segment output itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefreshRelay {
    pub request: u64,
    pub attempt: u32,
    pub index: u32,
    pub count: u32,
    pub from: Vec<(u32, Vec<u8>)>,
}

impl RefreshRelay {
    /// Items that follow the header.
    pub fn items(&self) -> u64 {
        self.from.len() as u64 * u64::from(self.count)
    }
}

/// The messages of mode (a) serving: setup and requests between keyholders and the serving
/// coordinator, and requests and results between requesters and it. Head training's keys are
/// made with the same setup messages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CollectiveMsg {
    /// Keyholder → server: first message; `setup` names the setup whose threshold secret it
    /// holds (none before its first), `ready` whether it holds that setup's evaluation keys.
    KeyholderHello {
        software: String,
        setup: Option<[u8; 32]>,
        ready: bool,
    },
    /// Server → keyholder: make round-1 shares for the plan of your final model.
    CollectiveStart { hospitals: u32, threshold: u32 },
    /// Keyholder → server: header of its round-1 stream.
    CollectiveRound1(KeyholderRound1),
    /// Server → keyholder: header of a stream of every keyholder's public-key share and
    /// relinearization round-1 share (two items each, in the order of `key_shares`, whose
    /// records carry what each signed), with the sealed Shamir shares addressed to this
    /// hospital, by sender.
    CollectiveRound1Result {
        sealed: Vec<(u32, Vec<u8>)>,
        key_shares: Vec<KeyholderShares>,
    },
    /// Keyholder → server: header of a 1-item stream (its relinearization round-2 share).
    CollectiveRound2,
    /// Keyholder → server: its threshold secret of the key is formed.
    ThresholdFormed,
    /// Server → keyholder: header of the stream of the sums the evaluation keys are made of.
    ServingKeys(ServingKeys),
    /// Keyholder → server: it holds the evaluation keys of its setup and serves requests.
    KeyholderReady,
    /// Server → keyholder: header of a stream (the requester's public key, then the images):
    /// evaluate the signed request and switch the results to the requester's key.
    CollectiveEvaluate(EvaluateRequest),
    /// Keyholder → server: header of a stream of its results, then its switching shares.
    CollectiveEvaluated(EvaluatedShares),
    /// Server → requester: what is served (as mode (b)'s `InferInfo`), header of a 1-item stream:
    /// the collective public key the images are encrypted under.
    CollectiveInfo(ModelInfo),
    /// Requester → server: header of a request stream (its public key, then the images).
    InferCollective(CollectiveRequest),
    /// Server → requester: header of a result stream, one ciphertext per image under the
    /// requester's key.
    InferResult(super::released::InferResult),
    /// Keyholder → server: its shares of a refresh between two segments of a deep plan.
    CollectiveRefreshShares(RefreshShares),
    /// Server → keyholder: every active keyholder's shares of that refresh.
    CollectiveRefreshRelay(RefreshRelay),
}

impl CollectiveMsg {
    /// A short name for logs and audit entries.
    pub fn kind(&self) -> &'static str {
        match self {
            CollectiveMsg::KeyholderHello { .. } => "keyholder-hello",
            CollectiveMsg::CollectiveStart { .. } => "collective-start",
            CollectiveMsg::CollectiveRound1(_) => "collective-round1",
            CollectiveMsg::CollectiveRound1Result { .. } => "collective-round1-result",
            CollectiveMsg::CollectiveRound2 => "collective-round2",
            CollectiveMsg::ThresholdFormed => "threshold-formed",
            CollectiveMsg::ServingKeys(_) => "serving-keys",
            CollectiveMsg::KeyholderReady => "keyholder-ready",
            CollectiveMsg::CollectiveEvaluate(_) => "collective-evaluate",
            CollectiveMsg::CollectiveEvaluated(_) => "collective-evaluated",
            CollectiveMsg::CollectiveRefreshShares(_) => "collective-refresh-shares",
            CollectiveMsg::CollectiveRefreshRelay(_) => "collective-refresh-relay",
            CollectiveMsg::CollectiveInfo(_) => "collective-info",
            CollectiveMsg::InferCollective(_) => "infer-collective",
            CollectiveMsg::InferResult(_) => "infer-result",
        }
    }
}
