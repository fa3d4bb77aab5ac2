//! Messages. Each travels in an [`Envelope`] that binds it to the protocol version, the
//! federation, the round and the sender; the receiver checks all four against the connection
//! before acting. Bodies that announce a stream of items (ciphertexts, shares, vectors) are the
//! first frame of their stream; the items follow as frames of opaque bytes.

use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;
use crate::identity::{FederationId, Party};
use crate::serve::collective::{
    CollectiveRequest, EvaluateRequest, EvaluatedShares, KeyholderRound1, KeyholderShares,
    ResultSwitchRequest, ResultSwitchShares, ServingKeys,
};
use crate::serve::head::{HeadContribution, HeadRefreshRequest};
use crate::serve::released::{InferKeys, InferRequest, InferResult, KeysId, ModelInfo};
use crate::transcript::{Contribution, PartyKeys, SealedShare};

pub const PROTOCOL_VERSION: u16 = 8;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u16,
    pub federation: FederationId,
    pub round: u64,
    pub sender: Party,
    pub body: Body,
}

/// Per-round figures a hospital reports after evaluating the new global model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundMetrics {
    pub round: u64,
    pub train_loss: f32,
    pub val_loss: f32,
    pub val_acc: f32,
    pub val_auc: f32,
    pub test_acc: f32,
    pub test_auc: f32,
    pub samples: u64,
    pub train_s: f32,
    pub encrypt_s: f32,
    pub upload_s: f32,
    pub switch_s: f32,
    pub decrypt_s: f32,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

/// Where the consortium is, as the coordinator tells a (re)connecting hospital.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Collecting key shares.
    Setup,
    /// Rounds under way; the last committed round.
    Training { committed: u64 },
    /// All rounds done.
    Finished { rounds: u64 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Body {
    // ----- hospital → coordinator -----
    /// First message of a connection; `last_round` is the newest global model the hospital
    /// holds, and its updates have `items` items (ciphertexts, or plaintext chunks): the
    /// federation's update size is the one a majority of the hospitals announce.
    Hello {
        software: String,
        last_round: u64,
        items: u32,
    },
    /// Setup: its share of the collective public key and its key-exchange key (for sealed
    /// Shamir shares), with its certificate and its signature over both
    /// ([`crate::transcript::Statement::KeyShares`]).
    KeyShares {
        public_key_share: Vec<u8>,
        exchange_key: [u8; 32],
        certificate: Vec<u8>,
        signature: Vec<u8>,
    },
    /// Setup: for each other hospital, sealed for it and signed, a Shamir share of this
    /// hospital's secret and its contribution to the consortium receiving key.
    ShamirShares { sealed: Vec<SealedShare> },
    /// Setup is complete on this side (threshold secret formed): the public half of the
    /// consortium receiving key it derived, which every hospital must report identically, and
    /// its signature over it.
    SetupDone {
        receive_key: Vec<u8>,
        signature: Vec<u8>,
    },
    /// Header of an update stream: `count` items (ciphertexts, or f32 chunks in plaintext mode)
    /// of its model weighted by `weight` samples, the seed its items' a's derive from and the
    /// hospital's signature over [`crate::transcript::Statement::Update`] (seed and signature
    /// empty in a plaintext federation).
    Update {
        weight: u64,
        count: u32,
        a_seed: [u8; 32],
        signature: Vec<u8>,
    },
    /// Header of a stream of `count` public-key-switch shares towards the consortium receiving
    /// key, made for switching attempt `attempt` of the round (an attempt fixes the active set).
    SwitchShares { attempt: u32, count: u32 },
    /// Evaluation of the round's global model.
    Metrics(RoundMetrics),
    /// The round's decrypted result is not what honest updates can produce (outside the clip
    /// bound): this hospital did not apply it, and the federation must stop.
    Alarm { reason: String },

    // ----- coordinator → hospital -----
    /// Answer to Hello: the hospital's index, the consortium's shape and where it is.
    Welcome {
        index: u32,
        hospitals: u32,
        threshold: u32,
        plaintext: bool,
        phase: Phase,
    },
    /// Setup result: every hospital's signed key shares, as it sent them; each hospital checks
    /// them and makes the collective public key itself.
    SetupKeys { parties: Vec<PartyKeys> },
    /// Sealed Shamir shares addressed to this hospital, by sender, with their signatures.
    RelayedShares { sealed: Vec<SealedShare> },
    /// Round `round` starts: train from the global model of round − 1, upload before the deadline.
    RoundStart { deadline_ms: u64 },
    /// Switch the round's sum of `count` ciphertexts to the consortium receiving key as one of
    /// `active` (no items follow). `contributions` are the signed updates it sums: a switcher
    /// makes what it switches from their seeds and weights (which also size its flooding).
    SwitchRequest {
        attempt: u32,
        active: Vec<u32>,
        contributions: Vec<Contribution>,
        count: u32,
    },
    /// Header of a stream of the round's `count` result items (the aggregate switched to the
    /// consortium receiving key, or the plaintext sum), with the total weight to divide by.
    RoundResult {
        total_weight: u64,
        participants: Vec<u32>,
        count: u32,
    },
    /// No more rounds.
    Finished,
    /// The coordinator refused a message (logged on both sides).
    Refused { reason: String },

    // ----- encrypted inference (requester ↔ inference server, see `inference`) -----
    /// What model is served?
    InferInfoRequest,
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

    // ----- mode (a): the model served under a collective key (see `collective`) -----
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
    /// Head training: server → keyholder, header of a stream (the contributor's public key,
    /// then the trained head) to switch to the contributor's key.
    ResultSwitch(ResultSwitchRequest),
    /// Keyholder → server: header of a stream of its switching (or refresh) shares.
    ResultShares(ResultSwitchShares),
    /// Server → requester: what is served (as [`Body::InferInfo`]), header of a 1-item stream:
    /// the collective public key the images are encrypted under.
    CollectiveInfo(ModelInfo),
    /// Requester → server: header of a request stream (its public key, then the images).
    InferCollective(CollectiveRequest),

    // ----- encrypted head training, served like mode (a) (see `serve::head`) -----
    /// Contributor → server: header of a contribution stream (its public key, then the chunks).
    HeadContribution(HeadContribution),
    /// Server → keyholder: header of a stream of the head's state to refresh.
    HeadRefresh(HeadRefreshRequest),
}

impl Body {
    /// A short name for logs and audit entries.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Hello { .. } => "hello",
            Body::Alarm { .. } => "alarm",
            Body::KeyShares { .. } => "key-shares",
            Body::ShamirShares { .. } => "shamir-shares",
            Body::SetupDone { .. } => "setup-done",
            Body::Update { .. } => "update",
            Body::SwitchShares { .. } => "switch-shares",
            Body::Metrics(_) => "metrics",
            Body::Welcome { .. } => "welcome",
            Body::SetupKeys { .. } => "setup-keys",
            Body::RelayedShares { .. } => "relayed-shares",
            Body::RoundStart { .. } => "round-start",
            Body::SwitchRequest { .. } => "switch-request",
            Body::RoundResult { .. } => "round-result",
            Body::Finished => "finished",
            Body::Refused { .. } => "refused",
            Body::InferInfoRequest => "infer-info-request",
            Body::InferInfo(_) => "infer-info",
            Body::InferKeys(_) => "infer-keys",
            Body::InferKeysStored { .. } => "infer-keys-stored",
            Body::Infer(_) => "infer",
            Body::InferResult(_) => "infer-result",
            Body::KeyholderHello { .. } => "keyholder-hello",
            Body::CollectiveStart { .. } => "collective-start",
            Body::CollectiveRound1(_) => "collective-round1",
            Body::CollectiveRound1Result { .. } => "collective-round1-result",
            Body::CollectiveRound2 => "collective-round2",
            Body::ThresholdFormed => "threshold-formed",
            Body::ServingKeys(_) => "serving-keys",
            Body::KeyholderReady => "keyholder-ready",
            Body::CollectiveEvaluate(_) => "collective-evaluate",
            Body::CollectiveEvaluated(_) => "collective-evaluated",
            Body::ResultSwitch(_) => "result-switch",
            Body::ResultShares(_) => "result-shares",
            Body::CollectiveInfo(_) => "collective-info",
            Body::InferCollective(_) => "infer-collective",
            Body::HeadContribution(_) => "head-contribution",
            Body::HeadRefresh(_) => "head-refresh",
        }
    }
}

impl Envelope {
    pub fn new(federation: FederationId, round: u64, sender: Party, body: Body) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            federation,
            round,
            sender,
            body,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("envelopes always serialize")
    }

    /// Decodes and checks version, federation and sender (against the connection's identity).
    pub fn decode(
        bytes: &[u8],
        federation: FederationId,
        peer: Party,
    ) -> Result<Self, ProtocolError> {
        let env: Envelope =
            postcard::from_bytes(bytes).map_err(|e| ProtocolError::Decode(e.to_string()))?;
        if env.version != PROTOCOL_VERSION {
            return Err(ProtocolError::Version {
                got: env.version,
                want: PROTOCOL_VERSION,
            });
        }
        if env.federation != federation {
            return Err(ProtocolError::Federation {
                got: env.federation.to_hex(),
                want: federation.to_hex(),
            });
        }
        if env.sender != peer {
            return Err(ProtocolError::Impersonation {
                claimed: env.sender,
                actual: peer,
            });
        }
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FED: FederationId = FederationId([7; 16]);

    #[test]
    fn envelopes_round_trip_and_bind_their_context() {
        let env = Envelope::new(
            FED,
            3,
            Party::Hospital(2),
            Body::Update {
                weight: 120,
                count: 37,
                a_seed: [5; 32],
                signature: vec![1; 70],
            },
        );
        let bytes = env.encode();
        assert_eq!(
            Envelope::decode(&bytes, FED, Party::Hospital(2)).unwrap(),
            env
        );
        assert!(matches!(
            Envelope::decode(&bytes, FED, Party::Hospital(3)),
            Err(ProtocolError::Impersonation {
                claimed: Party::Hospital(2),
                actual: Party::Hospital(3)
            })
        ));
        assert!(matches!(
            Envelope::decode(&bytes, FederationId([8; 16]), Party::Hospital(2)),
            Err(ProtocolError::Federation { .. })
        ));
        let mut old = env.clone();
        old.version = 0;
        assert!(matches!(
            Envelope::decode(&old.encode(), FED, Party::Hospital(2)),
            Err(ProtocolError::Version { .. })
        ));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Envelope::decode(&bytes, FED, Party::Coordinator);
        }
    }
}
