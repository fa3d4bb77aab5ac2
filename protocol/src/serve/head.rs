//! Encrypted head training (issue 20), served like mode (a): the keyholders (`client hold-keys
//! --head`) make a collective key at the head-training parameters in the same two setup rounds
//! (their round-1 header's `architecture` is a [`HeadJob`]'s JSON instead of a network's); a
//! contributing site (`client contribute-encrypted`) asks `InferInfoRequest`, gets
//! `CollectiveInfo` (the job and the collective public key) and sends [`HeadContribution`] with
//! its own public key and its examples encrypted under the collective key; the coordinator trains
//! the head on them and after every step sends t keyholders [`HeadRefreshRequest`] with the
//! state to refresh; they answer `ResultShares` with one refresh share per ciphertext. The
//! trained head is switched to the contributor's key as a served result is (`ResultSwitch`,
//! `ResultShares`) and reaches it as `InferResult`.

use serde::{Deserialize, Serialize};

/// Most examples one contribution may carry (each chunk is ~10 MB of ciphertexts).
pub const MAX_HEAD_EXAMPLES: u64 = 100_000;

/// The head a deployment trains and how: what the keyholders' round-1 headers and the
/// coordinator's `CollectiveInfo` carry as `architecture` (JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadJob {
    /// Inputs of the head: the width of the backbone's output.
    pub features: u32,
    pub classes: u32,
    /// How the coordinator trains (absent in the keyholders' headers: the coordinator's choice,
    /// told to the contributor, which can replay the same steps in plaintext).
    #[serde(default)]
    pub training: Option<HeadTraining>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadTraining {
    pub epochs: u32,
    /// Chunks per mini-batch.
    pub batch_chunks: u32,
    pub lr: f64,
    pub momentum: f64,
}

impl HeadJob {
    /// Parses a job from an `architecture` string; `None` when it describes a network.
    pub fn parse(architecture: &str) -> Option<Self> {
        #[derive(Deserialize)]
        struct Wrapper {
            head: HeadJob,
        }
        serde_json::from_str::<Wrapper>(architecture)
            .ok()
            .map(|w| w.head)
    }

    pub fn to_architecture(&self) -> String {
        serde_json::json!({ "head": self }).to_string()
    }
}

/// Header of a contribution: the contributor's public key at the head-training parameters
/// (the trained head comes back under it), then `chunks` × `ciphertexts_per_chunk`
/// ciphertexts (each chunk's feature groups, then its labels).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadContribution {
    pub request_id: u64,
    /// The head plan's fingerprint the chunks were encrypted for.
    pub fingerprint: [u8; 32],
    pub examples: u64,
    pub chunks: u32,
    pub ciphertexts_per_chunk: u32,
    /// Examples in each chunk (the last may hold fewer).
    pub counts: Vec<u32>,
}

impl HeadContribution {
    pub fn items(&self) -> u64 {
        1 + u64::from(self.chunks) * u64::from(self.ciphertexts_per_chunk)
    }
}

/// Header of a refresh request: the head's state after step `step` (of `steps`), `count`
/// ciphertexts at the refresh level, to be refreshed by `active` (each makes its additive share
/// for this set). Answered by `ResultShares` with one share per ciphertext.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadRefreshRequest {
    /// The setup whose key the state is under (a keyholder refuses another).
    pub setup: [u8; 32],
    pub request: u64,
    pub attempt: u32,
    pub step: u64,
    pub steps: u64,
    /// The hospital whose examples are trained on (each keyholder logs it).
    pub contributor: u32,
    pub active: Vec<u32>,
    pub count: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_job_round_trips_and_a_network_is_not_a_job() {
        let job = HeadJob {
            features: 128,
            classes: 11,
            training: Some(HeadTraining {
                epochs: 10,
                batch_chunks: 8,
                lr: 1.0,
                momentum: 0.9,
            }),
        };
        assert_eq!(HeadJob::parse(&job.to_architecture()), Some(job));
        let shape = HeadJob {
            features: 3,
            classes: 2,
            training: None,
        };
        assert_eq!(
            HeadJob::parse(r#"{"head":{"features":3,"classes":2}}"#),
            Some(shape)
        );
        assert_eq!(HeadJob::parse(r#"{"input":[1,28,28],"layers":[]}"#), None);
        assert_eq!(
            HeadJob::parse(r#"{"head":{"features":-1,"classes":2}}"#),
            None
        );
    }

    proptest! {
        #[test]
        fn any_text_parses_to_a_job_or_none(text in ".{0,200}") {
            let _ = HeadJob::parse(&text);
        }
    }
}

/// Head training: header of the switch of a trained head to its contributor: the
/// contributor's public key, then `count` ciphertexts follow.
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

/// Head training: header of a keyholder's answer: `count` switching shares (or refresh
/// shares) follow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultSwitchShares {
    pub request: u64,
    pub attempt: u32,
    pub count: u32,
}

/// The messages of head training: a contributor's examples, the keyholders' refreshes of each
/// step, the trained head's switch to the contributor and its delivery (the keys are made with
/// the messages of [`super::collective`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum HeadMsg {
    /// Head training: server → keyholder, header of a stream (the contributor's public key,
    /// then the trained head) to switch to the contributor's key.
    ResultSwitch(ResultSwitchRequest),
    /// Keyholder → server: header of a stream of its switching (or refresh) shares.
    ResultShares(ResultSwitchShares),
    /// Contributor → server: header of a contribution stream (its public key, then the chunks).
    HeadContribution(HeadContribution),
    /// Server → keyholder: header of a stream of the head's state to refresh.
    HeadRefresh(HeadRefreshRequest),
    /// Server → contributor: header of the trained head's stream, under the contributor's key.
    InferResult(super::released::InferResult),
}

impl HeadMsg {
    /// A short name for logs and audit entries.
    pub fn kind(&self) -> &'static str {
        match self {
            HeadMsg::ResultSwitch(_) => "result-switch",
            HeadMsg::ResultShares(_) => "result-shares",
            HeadMsg::HeadContribution(_) => "head-contribution",
            HeadMsg::HeadRefresh(_) => "head-refresh",
            HeadMsg::InferResult(_) => "infer-result",
        }
    }
}
