//! The training federation's messages (hospital ↔ coordinator): setup, rounds, results, and
//! the figures a hospital reports.

use serde::{Deserialize, Serialize};

use crate::transcript::{Contribution, PartyKeys, SealedShare};

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

/// A message of the training rounds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FederationMsg {
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
}

impl FederationMsg {
    /// A short name for logs and audit entries.
    pub fn kind(&self) -> &'static str {
        match self {
            FederationMsg::Hello { .. } => "hello",
            FederationMsg::Alarm { .. } => "alarm",
            FederationMsg::KeyShares { .. } => "key-shares",
            FederationMsg::ShamirShares { .. } => "shamir-shares",
            FederationMsg::SetupDone { .. } => "setup-done",
            FederationMsg::Update { .. } => "update",
            FederationMsg::SwitchShares { .. } => "switch-shares",
            FederationMsg::Metrics(_) => "metrics",
            FederationMsg::Welcome { .. } => "welcome",
            FederationMsg::SetupKeys { .. } => "setup-keys",
            FederationMsg::RelayedShares { .. } => "relayed-shares",
            FederationMsg::RoundStart { .. } => "round-start",
            FederationMsg::SwitchRequest { .. } => "switch-request",
            FederationMsg::RoundResult { .. } => "round-result",
            FederationMsg::Finished => "finished",
        }
    }
}
