//! The hospital's side of the federation protocol as a state machine without I/O (as
//! quinn-proto and rustls are): fed the coordinator's messages and the outcomes of its own work
//! (an update sent, a result applied), it decides what happens next and returns it as actions.
//! [`super::session`] carries the actions out — training, encryption, key material, the link —
//! and never decides on its own which round it is in or whom to trust.

use protocol::FederationMsg;
use protocol::message::{Body, Phase};
use protocol::transcript::{Contribution, PartyKeys, SealedShare};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// What the site is configured to be part of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    pub index: u32,
    pub hospitals: u32,
    pub threshold: u32,
    pub plaintext: bool,
}

/// The shape of a switch request: masks made ahead for one serve only a request of the same
/// shape, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchShape {
    pub round: u64,
    pub weights: Vec<u64>,
    pub parties: usize,
}

/// A switch request as the participant passes it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchOrder {
    pub round: u64,
    pub attempt: u32,
    /// the switching parties (their Lagrange coefficients make the additive shares)
    pub active: Vec<u32>,
    /// the contributors' weights (the flooding is sized for their sum)
    pub weights: Vec<u64>,
    /// what each contributor signed of its update: the shell checks the signatures and makes
    /// what it switches from their seeds and weights
    pub contributions: Vec<Contribution>,
    /// ciphertexts in the sum
    pub count: u32,
    /// the masks made ahead fit this request
    pub prepared: bool,
}

/// The sum a switcher switched in a round: the (hospital, weight) of the updates it summed.
/// Kept on disk before a share leaves, so that a restart never lets a second sum of the round
/// through (their difference could be one hospital's update).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchRecord {
    pub round: u64,
    pub sum: Vec<(u32, u64)>,
}

/// The rounds a hospital's differential-privacy budget covers (`[privacy]`): past them it
/// contributes nothing, whatever the coordinator asks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub rounds: u64,
    /// ε at δ after `rounds`, for the refusal's message
    pub epsilon: f64,
    pub delta: f64,
}

/// Whether a round's result was applied, as the shell reports it back.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    Yes,
    /// it decrypted to values no sum of clipped updates takes (why): not applied
    OutOfRange(String),
}

/// What the shell is to do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Setup: send the key shares (or "setup done" when it is).
    StartSetup,
    /// Setup: check every hospital's signed key shares, make the collective public key from
    /// them and store it with the exchange keys, then deal sealed shares.
    CheckSetupKeys { parties: Vec<PartyKeys> },
    /// Setup: check the dealers' signatures, open the relayed sealed shares and form the
    /// threshold secret.
    OpenRelayedShares { sealed: Vec<SealedShare> },
    /// Train from the global model held, clip the update to ±`clip`, encrypt it and send it.
    Train { round: u64, clip: f64 },
    /// Store this record durably (before the switch that follows): it is the one sum of its
    /// round this hospital switches, across restarts.
    RecordSwitch(SwitchRecord),
    /// Make switching shares from the signed updates named and send them.
    Switch(SwitchOrder),
    /// Start making the masks of `shape`'s switch of `count` ciphertexts ahead.
    PrepareMasks { shape: SwitchShape, count: usize },
    /// Read the `count` items of the message, decrypt the sum, apply the server step, store,
    /// evaluate and report.
    /// A result whose average leaves ±`clip` is no sum of clipped updates: it is refused.
    ApplyResult {
        round: u64,
        total_weight: u64,
        participants: Vec<u32>,
        count: u32,
        clip: f64,
    },
    /// Read the message's items and drop them.
    Drain,
    /// Tell the coordinator that `round`'s result is not the sum of honest updates, then stop
    /// (the federation stops on it): no model of that round is applied.
    Alarm { round: u64, reason: String },
    /// The federation is finished.
    Finished,
}

/// Why the session with the coordinator cannot go on.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParticipantError {
    #[error(
        "the coordinator describes another federation (index {index}, {hospitals} hospitals, t = {threshold})"
    )]
    Foreign {
        index: u32,
        hospitals: u32,
        threshold: u32,
    },
    #[error("the coordinator runs with plaintext = {coordinator}, this site with {site}")]
    Plaintext { coordinator: bool, site: bool },
    #[error("{0} in a plaintext federation")]
    NotEncrypted(&'static str),
    #[error("a {what} of {count} items where a model of this size takes at most {max}")]
    TooManyItems {
        what: &'static str,
        count: u32,
        max: usize,
    },
    #[error("setup keys for hospitals {got:?} where the consortium is hospitals 1..={hospitals}")]
    SetupParties { got: Vec<u32>, hospitals: u32 },
    #[error("relayed shares from hospitals {from:?}: one from each of the other {} hospitals of 1..={hospitals} is needed", hospitals - 1)]
    RelayedFrom { from: Vec<u32>, hospitals: u32 },
    #[error("a round result with no weight")]
    NoWeight,
    #[error("a switch request for {parties} parties with {weights} weights")]
    BadSwitchRequest { parties: usize, weights: usize },
    #[error(
        "a switch request for round {round} while this hospital holds round {held}'s model: only the open round is switched"
    )]
    SwitchRound { round: u64, held: u64 },
    #[error(
        "a switch request summing the updates of hospitals {got:?}: at least {threshold} distinct hospitals of 1..={hospitals}, each update of the sum's {count} items, are needed"
    )]
    SwitchContributors {
        got: Vec<u32>,
        threshold: u32,
        hospitals: u32,
        count: u32,
    },
    #[error(
        "a second switch request for round {0} over other hospitals or weights: each round's sum is switched once"
    )]
    SwitchedOther(u64),
    #[error(
        "round {round} would take this hospital past its privacy budget ({rounds} rounds, ε = {epsilon:.3} at δ = {delta:e}); it contributes no more"
    )]
    PastBudget {
        round: u64,
        rounds: u64,
        epsilon: f64,
        delta: f64,
    },
    #[error(
        "the federation finished at round {committed} while this hospital holds round {held}'s model (it missed more rounds than the coordinator keeps results of, [federation] keep_results): no final model is written; restore its state directory from a backup of a later round, or take the final model from another hospital"
    )]
    FinishedAhead { held: u64, committed: u64 },
}

/// The participant: which round's global model it holds and what it has been asked.
#[derive(Debug)]
pub struct Participant {
    me: Membership,
    /// the round of the global model held
    held: u64,
    /// items a result or a switch request may carry (the model's ciphertexts or plain chunks)
    max_items: usize,
    /// a round announced before the previous round's result arrived
    pending_start: Option<u64>,
    /// the last switch request this node served
    last_switch: Option<SwitchShape>,
    /// the round it last switched and the (hospital, weight) of the updates that aggregate
    /// summed (restored from disk after a restart)
    switched: Option<SwitchRecord>,
    /// the request masks are being made ahead for
    prepared: Option<SwitchShape>,
    /// the rounds this hospital's privacy budget covers (`None`: no differential privacy)
    budget: Option<Budget>,
    /// the bound each update value is clipped to, and every result's average checked against
    clip: f64,
}

impl Participant {
    pub fn new(me: Membership, held: u64, max_items: usize) -> Self {
        Self {
            me,
            held,
            max_items,
            pending_start: None,
            last_switch: None,
            switched: None,
            prepared: None,
            budget: None,
            clip: he_agg::aggregate::HeSettings::default().max_update,
        }
    }

    /// Clips updates to ±`clip` and refuses results outside it (`[he] max_update`).
    pub fn with_clip(mut self, clip: f64) -> Self {
        self.clip = clip;
        self
    }

    /// Contributes to no round past `budget`.
    pub fn with_budget(mut self, budget: Option<Budget>) -> Self {
        self.budget = budget;
        self
    }

    /// With the sum it switched before a restart (what the shell stored for `RecordSwitch`).
    pub fn with_switched(mut self, record: Option<SwitchRecord>) -> Self {
        self.switched = record;
        self
    }

    /// The round of the global model held.
    pub fn held(&self) -> u64 {
        self.held
    }

    /// The first message of a connection.
    pub fn hello(&self) -> Body {
        Body::Federation(FederationMsg::Hello {
            software: format!("heal-client {}", env!("CARGO_PKG_VERSION")),
            last_round: self.held,
            items: u32::try_from(self.max_items).unwrap_or(u32::MAX),
        })
    }

    /// A message from the coordinator, sent for `round`.
    pub fn handle(&mut self, round: u64, body: &Body) -> Result<Vec<Action>, ParticipantError> {
        Ok(match body {
            Body::Federation(FederationMsg::Welcome {
                index,
                hospitals,
                threshold,
                plaintext,
                phase,
            }) => {
                if (*index, *hospitals, *threshold)
                    != (self.me.index, self.me.hospitals, self.me.threshold)
                {
                    return Err(ParticipantError::Foreign {
                        index: *index,
                        hospitals: *hospitals,
                        threshold: *threshold,
                    });
                }
                if *plaintext != self.me.plaintext {
                    return Err(ParticipantError::Plaintext {
                        coordinator: *plaintext,
                        site: self.me.plaintext,
                    });
                }
                info!(?phase, "welcomed");
                match phase {
                    Phase::Setup if !self.me.plaintext => vec![Action::StartSetup],
                    // a node that reconnects after the end (it missed `Finished`)
                    Phase::Finished { .. } => vec![Action::Finished],
                    Phase::Setup | Phase::Training { .. } => vec![],
                }
            }
            Body::Federation(FederationMsg::SetupKeys { parties }) => {
                self.encrypted("setup keys")?;
                // each hospital of the consortium once, in order: nobody left out, nobody added
                let got: Vec<u32> = parties.iter().map(|p| p.hospital).collect();
                if !got.iter().copied().eq(1..=self.me.hospitals) {
                    return Err(ParticipantError::SetupParties {
                        got,
                        hospitals: self.me.hospitals,
                    });
                }
                vec![Action::CheckSetupKeys {
                    parties: parties.clone(),
                }]
            }
            Body::Federation(FederationMsg::RelayedShares { sealed }) => {
                self.encrypted("relayed shares")?;
                // one share from each other hospital, none from this one
                let mut from: Vec<u32> = sealed.iter().map(|s| s.peer).collect();
                from.sort_unstable();
                if !from
                    .iter()
                    .copied()
                    .eq((1..=self.me.hospitals).filter(|&h| h != self.me.index))
                {
                    return Err(ParticipantError::RelayedFrom {
                        from,
                        hospitals: self.me.hospitals,
                    });
                }
                vec![Action::OpenRelayedShares {
                    sealed: sealed.clone(),
                }]
            }
            Body::Federation(FederationMsg::RoundStart { .. }) => self.round_start(round)?,
            Body::Federation(FederationMsg::SwitchRequest {
                attempt,
                active,
                contributions,
                count,
            }) => {
                self.encrypted("a switch request")?;
                self.check_items("switch request", *count)?;
                if active.is_empty() || contributions.is_empty() {
                    return Err(ParticipantError::BadSwitchRequest {
                        parties: active.len(),
                        weights: contributions.len(),
                    });
                }
                let record = self.check_switch(round, *count, contributions)?;
                let weights: Vec<u64> = contributions.iter().map(|c| c.weight).collect();
                let shape = SwitchShape {
                    round,
                    weights: weights.clone(),
                    parties: active.len(),
                };
                // masks made ahead serve only the request they were made for, and only once
                let prepared = self.prepared.take().as_ref() == Some(&shape);
                self.last_switch = Some(shape);
                let mut actions: Vec<Action> =
                    record.into_iter().map(Action::RecordSwitch).collect();
                actions.push(Action::Switch(SwitchOrder {
                    round,
                    attempt: *attempt,
                    active: active.clone(),
                    weights,
                    contributions: contributions.clone(),
                    count: *count,
                    prepared,
                }));
                actions
            }
            Body::Federation(FederationMsg::RoundResult {
                total_weight,
                participants,
                count,
            }) => {
                if round != self.held + 1 {
                    warn!(
                        round,
                        held = self.held,
                        "result for a round this node does not follow: ignored"
                    );
                    return Ok(vec![Action::Drain]);
                }
                if *total_weight == 0 {
                    return Err(ParticipantError::NoWeight);
                }
                self.check_items("round result", *count)?;
                vec![Action::ApplyResult {
                    round,
                    total_weight: *total_weight,
                    participants: participants.clone(),
                    count: *count,
                    clip: self.clip,
                }]
            }
            Body::Federation(FederationMsg::Finished) => {
                if round > self.held {
                    return Err(ParticipantError::FinishedAhead {
                        held: self.held,
                        committed: round,
                    });
                }
                info!(round = self.held, "the federation is finished");
                vec![Action::Finished]
            }
            Body::Refused { reason } => {
                warn!(round, "the coordinator refused a message: {reason}");
                vec![]
            }
            other => {
                warn!("unexpected {} from the coordinator", other.kind());
                vec![]
            }
        })
    }

    /// This node's update for `round` (of `items` items) is sent: if it switched the previous
    /// round, the masks of this round's switch can be made while the others train.
    pub fn update_sent(&mut self, round: u64, items: usize) -> Vec<Action> {
        self.prepared = None;
        match &self.last_switch {
            Some(last) if !self.me.plaintext && last.round + 1 == round => {
                let shape = SwitchShape {
                    round,
                    ..last.clone()
                };
                self.prepared = Some(shape.clone());
                vec![Action::PrepareMasks {
                    shape,
                    count: items,
                }]
            }
            _ => vec![],
        }
    }

    /// The result of `round` is applied and stored: the node holds that round's model. A round
    /// announced meanwhile starts now.
    pub fn result_applied(&mut self, round: u64) -> Result<Vec<Action>, ParticipantError> {
        self.held = self.held.max(round);
        match self.pending_start {
            Some(next) if next == self.held + 1 => {
                self.pending_start = None;
                self.train(next)
            }
            _ => Ok(vec![]),
        }
    }

    /// The result of `round` decrypted to values no sum of clipped updates can take
    /// (`detail`): it is not applied, the coordinator is told, and this node stops — the
    /// consortium must look at what its coordinator sent before anyone trains on it.
    pub fn result_out_of_range(&mut self, round: u64, detail: &str) -> Vec<Action> {
        vec![Action::Alarm {
            round,
            reason: format!("round {round}: {detail}; this hospital did not apply the model"),
        }]
    }

    /// Train `round` if the privacy budget covers it.
    fn train(&self, round: u64) -> Result<Vec<Action>, ParticipantError> {
        match self.budget {
            Some(b) if round > b.rounds => Err(ParticipantError::PastBudget {
                round,
                rounds: b.rounds,
                epsilon: b.epsilon,
                delta: b.delta,
            }),
            _ => Ok(vec![Action::Train {
                round,
                clip: self.clip,
            }]),
        }
    }

    fn round_start(&mut self, round: u64) -> Result<Vec<Action>, ParticipantError> {
        if self.held + 1 == round {
            return self.train(round);
        }
        if self.held + 1 < round {
            info!(
                round,
                held = self.held,
                "round announced before the previous result: waiting for it"
            );
            self.pending_start = Some(round);
        } else {
            warn!(
                round,
                held = self.held,
                "announcement of a round already done: ignored"
            );
        }
        Ok(vec![])
    }

    /// A switch request is for the open round (the one after the model held), sums the signed
    /// updates of at least t distinct hospitals of the consortium, and is the only aggregate
    /// this hospital switches in that round (a retry with other switchers is the same one).
    /// Returns the record to store first when the round's sum is new here.
    fn check_switch(
        &mut self,
        round: u64,
        count: u32,
        contributions: &[Contribution],
    ) -> Result<Option<SwitchRecord>, ParticipantError> {
        if round != self.held + 1 {
            return Err(ParticipantError::SwitchRound {
                round,
                held: self.held,
            });
        }
        let mut got: Vec<u32> = contributions.iter().map(|c| c.hospital).collect();
        got.sort_unstable();
        got.dedup();
        let h = self.me.hospitals;
        if got.len() != contributions.len()
            || got.len() < self.me.threshold as usize
            || got.iter().any(|&i| i == 0 || i > h)
            || contributions.iter().any(|c| c.count != count)
        {
            return Err(ParticipantError::SwitchContributors {
                got: contributions.iter().map(|c| c.hospital).collect(),
                threshold: self.me.threshold,
                hospitals: h,
                count,
            });
        }
        // Two aggregates of one round over different hospitals would give their difference
        // away (one hospital's update, if they differ by one). The same hospitals with the same
        // signed weights is the same sum: a retry with other switchers, or the round redone
        // after a coordinator restart (each hospital retrains from the same model and seed).
        // The record survives restarts (the shell stores it before any share leaves), and with
        // t > N/2 (the site's and the federation's configs refuse less) any two sets of t
        // switchers share one that refuses the second sum.
        let mut sum: Vec<(u32, u64)> = contributions
            .iter()
            .map(|c| (c.hospital, c.weight))
            .collect();
        sum.sort_unstable();
        match &self.switched {
            Some(r) if r.round == round && r.sum != sum => {
                Err(ParticipantError::SwitchedOther(round))
            }
            Some(r) if r.round == round => Ok(None),
            _ => {
                let record = SwitchRecord { round, sum };
                self.switched = Some(record.clone());
                Ok(Some(record))
            }
        }
    }

    fn encrypted(&self, what: &'static str) -> Result<(), ParticipantError> {
        if self.me.plaintext {
            return Err(ParticipantError::NotEncrypted(what));
        }
        Ok(())
    }

    fn check_items(&self, what: &'static str, count: u32) -> Result<(), ParticipantError> {
        if count as usize > self.max_items {
            return Err(ParticipantError::TooManyItems {
                what,
                count,
                max: self.max_items,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "participant_tests.rs"]
mod tests;
