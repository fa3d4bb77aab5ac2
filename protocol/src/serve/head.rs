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
/// ciphertexts (each chunk's feature groups, then its labels). Signed by the contributor: every
/// keyholder trains on exactly what it signed, as it signed to train (issue 46, item 3).
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
    /// How the head is trained on them (the coordinator's `HeadJob::training`, as told).
    pub training: HeadTraining,
    /// The contributor's signature over [`HeadContribution::statement`] (its site key).
    pub signature: Vec<u8>,
}

impl HeadContribution {
    pub fn items(&self) -> u64 {
        1 + u64::from(self.chunks) * u64::from(self.ciphertexts_per_chunk)
    }

    /// What the contributor signs: this contribution of hospital `contributor` with `items`
    /// (its public key, then the chunks' ciphertexts) and its training.
    pub fn statement<'a>(
        &self,
        federation: crate::FederationId,
        contributor: u32,
        items: impl IntoIterator<Item = &'a [u8]>,
    ) -> crate::transcript::Statement {
        let mut items = items.into_iter();
        let key = items.next().unwrap_or_default();
        let t = &self.training;
        crate::transcript::Statement::HeadContribution {
            federation,
            contributor,
            request_id: self.request_id,
            plan: self.fingerprint,
            counts: self.counts.clone(),
            training: (
                t.epochs,
                t.batch_chunks,
                t.lr.to_bits(),
                t.momentum.to_bits(),
            ),
            contributor_key: crate::transcript::digest(key),
            ciphertexts: crate::transcript::digest_items(items),
        }
    }

    /// Checks the header against a head plan (its fingerprint, `groups` feature ciphertexts
    /// per chunk and `samples` examples per chunk) before any item is read.
    pub fn check(
        &self,
        fingerprint: [u8; 32],
        groups: usize,
        samples: usize,
    ) -> Result<(), String> {
        if self.fingerprint != fingerprint {
            return Err(
                "the examples were encrypted for another head plan: fetch the job again".into(),
            );
        }
        let per = groups + 1;
        if self.ciphertexts_per_chunk as usize != per {
            return Err(format!(
                "{} ciphertexts per chunk; this head's chunks have {per}",
                self.ciphertexts_per_chunk
            ));
        }
        let samples = samples as u64;
        let most = MAX_HEAD_EXAMPLES.div_ceil(samples);
        if self.chunks == 0
            || u64::from(self.chunks) > most
            || self.counts.len() != self.chunks as usize
        {
            return Err(format!(
                "{} chunks with {} counts; a contribution holds 1 to {most} chunks",
                self.chunks,
                self.counts.len()
            ));
        }
        if self
            .counts
            .iter()
            .any(|&c| c == 0 || u64::from(c) > samples)
            || self.counts.iter().map(|&c| u64::from(c)).sum::<u64>() != self.examples
        {
            return Err(format!(
                "chunk counts must be 1 to {samples} each and sum to the {} examples announced",
                self.examples
            ));
        }
        // every chunk but the last full: the memory a contribution takes follows its examples
        if let Some(i) = self.counts[..self.counts.len() - 1]
            .iter()
            .position(|&c| u64::from(c) != samples)
        {
            return Err(format!(
                "chunk {i} holds {} examples; every chunk but the last holds {samples}",
                self.counts[i]
            ));
        }
        Ok(())
    }
}

/// Header of the server's start of a run at every keyholder (issue 46, item 3): train on the
/// contribution `signed` (its items follow as the contributor sent them: its public key, then
/// the chunks). Each keyholder checks the contributor's signature and replays every step
/// itself; it refreshes nothing but the state its own replay reaches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadStart {
    /// The setup whose key the examples are under (a keyholder refuses another).
    pub setup: [u8; 32],
    /// The hospital that contributed (its certificate checks the signature).
    pub contributor: u32,
    pub signed: HeadContribution,
}

/// Header of a refresh request (no items): refresh the head's state after step `step` (of
/// `steps`) of the run on contribution `request_id`, as one of `active` (each makes its additive
/// share for this set). Each keyholder refreshes the state its own replay reached, whose digest
/// must be `state` (the server's). Answered by [`HeadRefreshShares`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadRefreshRequest {
    /// The setup whose key the state is under (a keyholder refuses another).
    pub setup: [u8; 32],
    pub request: u64,
    pub attempt: u32,
    /// The contribution trained on (its `request_id`).
    pub request_id: u64,
    pub step: u64,
    pub steps: u64,
    /// The hospital whose examples are trained on (each keyholder logs it).
    pub contributor: u32,
    pub active: Vec<u32>,
    pub count: u32,
    /// Digest of the state's ciphertexts as the server computed them.
    pub state: [u8; 32],
}

/// Header of a keyholder's refresh shares of a step: `count` shares follow, of the state whose
/// digest is `state`, signed (over [`crate::transcript::Statement::HeadRefreshShares`]) so that
/// every keyholder combines only shares their keyholders made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadRefreshShares {
    pub request: u64,
    pub attempt: u32,
    pub step: u64,
    pub count: u32,
    pub state: [u8; 32],
    pub signature: Vec<u8>,
}

/// Header of the server's relay of the shares it combined for a step, to every keyholder of
/// the run: for each `(hospital, signature)` of `from`, in that order, its `count` shares
/// follow. Each keyholder checks every signature, sums the shares and refreshes its own state,
/// then computes the next step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadRefreshRelay {
    pub request_id: u64,
    pub step: u64,
    pub attempt: u32,
    pub count: u32,
    pub from: Vec<(u32, Vec<u8>)>,
}

impl HeadRefreshRelay {
    /// Items that follow the header.
    pub fn items(&self) -> u64 {
        self.from.len() as u64 * u64::from(self.count)
    }
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

/// Head training: header of the switch of a trained head to its contributor (no items): each
/// keyholder switches the head its own replay trained to the key the contributor signed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultSwitchRequest {
    /// The setup whose key the results are under (a keyholder refuses another).
    pub setup: [u8; 32],
    pub request: u64,
    pub attempt: u32,
    /// The hospital that asked (each keyholder logs it).
    pub requester: u32,
    /// The contribution trained on (its `request_id`).
    pub request_id: u64,
    /// The t keyholders switching this attempt (each makes its additive share for this set).
    pub active: Vec<u32>,
    pub count: u32,
}

/// Head training: header of a keyholder's answer to [`ResultSwitchRequest`]: `count` switching
/// shares follow.
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
    /// Head training: server → keyholder, switch the head you trained to its contributor's key.
    ResultSwitch(ResultSwitchRequest),
    /// Keyholder → server: header of a stream of its switching shares.
    ResultShares(ResultSwitchShares),
    /// Contributor → server: header of a contribution stream (its public key, then the chunks).
    HeadContribution(HeadContribution),
    /// Server → keyholder: header of a run's start (the contribution's stream, relayed).
    HeadStart(HeadStart),
    /// Server → keyholder: refresh the state of a step (no items).
    HeadRefresh(HeadRefreshRequest),
    /// Keyholder → server: header of a stream of its signed refresh shares of a step.
    HeadRefreshShares(HeadRefreshShares),
    /// Server → keyholder: header of a stream of every active keyholder's shares of a step.
    HeadRefreshRelay(HeadRefreshRelay),
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
            HeadMsg::HeadStart(_) => "head-start",
            HeadMsg::HeadRefresh(_) => "head-refresh",
            HeadMsg::HeadRefreshShares(_) => "head-refresh-shares",
            HeadMsg::HeadRefreshRelay(_) => "head-refresh-relay",
            HeadMsg::InferResult(_) => "infer-result",
        }
    }
}
