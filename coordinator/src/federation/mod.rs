//! The federation protocol of the coordinator, sans-IO (quinn-proto's shape): one state machine
//! that owns the decisions ([`engine`]: setup, rounds, membership, switching plans) and the
//! round's data ([`round`]: updates folded, the aggregate closed, shares folded, the result
//! made). The shell ([`crate::server`]) moves bytes: it reads and decodes a stream, checks its
//! signature against the store's certificates, hands the decoded values here, and carries out
//! the [`Action`]s it polls out ([`Federation::poll_action`]). Time is always passed in: the
//! shell wakes the machine at [`Federation::poll_timeout`] ([`Federation::handle_timeout`])
//! rather than on a fixed tick.
//!
//! One update's walk: [`Federation::announce_update`] (wanted now? the hospital's slot and
//! weight reserved before anything is buffered), then [`Federation::update_read`] (still
//! wanted? folded, its signed statement kept, and what follows decided — closing collection,
//! the switch request with the contributions the switchers are shown). One switching stream's:
//! [`Federation::announce_shares`], then [`Federation::shares_read`] (folded; once every switcher
//! has sent its shares the result and record are made and [`Action::Commit`] comes out).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use he_agg::aggregate::Backend;
use he_agg::multiparty::KeySwitchShare;
use protocol::message::Phase;
use protocol::transcript::Contribution;

pub mod engine;
pub mod round;

pub use engine::{Action, Engine, EngineConfig, Event, QUORUM_AUDIT_EVERY, Restored};
pub use round::{MAX_ITEMS, Round, RoundError, Update};

use crate::he::HeSetup;

/// The coordinator's federation state: decisions and the round's data together.
pub struct Federation {
    engine: Engine,
    round: Round,
    rounds: u64,
    /// the plan's bound on the sum of a round's weights
    max_total_weight: u64,
    he: Option<Arc<HeSetup>>,
    backend: Box<dyn Backend>,
    /// updates the aggregation backend batches (the number of hospitals)
    batch: usize,
    /// decided and not yet polled out
    actions: VecDeque<Action>,
}

impl Federation {
    /// `he` is `None` in a plaintext federation.
    pub fn new(
        cfg: EngineConfig,
        restored: Restored,
        now: Instant,
        he: Option<Arc<HeSetup>>,
        backend: Box<dyn Backend>,
        max_total_weight: u64,
    ) -> Self {
        Self {
            rounds: cfg.rounds,
            batch: cfg.hospitals as usize,
            engine: Engine::new(cfg, restored, now),
            round: Round::default(),
            max_total_weight,
            he,
            backend,
            actions: VecDeque::new(),
        }
    }

    /// The next thing the shell is to do, in the order decided.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Federation::handle_timeout`] is next due (a round's deadline, or the next audit
    /// of a round stalled past it); `None` while no deadline runs. Any event may move it: the
    /// shell asks again after each.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.engine.next_deadline()
    }

    /// Time reached `now` (at or after [`Federation::poll_timeout`]): a round past its
    /// deadline closes with its quorum, or its stall is audited.
    pub fn handle_timeout(&mut self, now: Instant, unix_ms: u64) {
        self.handle(now, unix_ms, Event::Tick { now });
    }

    pub fn committed(&self) -> u64 {
        self.engine.committed()
    }

    pub fn is_finished(&self) -> bool {
        self.engine.is_finished()
    }

    /// The round under way, if any.
    pub fn current_round(&self) -> Option<u64> {
        self.engine.current_round()
    }

    /// Feeds one event at `now` (`unix_ms`: the wall clock, for the round's record); what it
    /// decides is polled out.
    pub fn handle(&mut self, now: Instant, unix_ms: u64, event: Event) {
        let actions = self.engine.handle(event);
        self.complete(actions, now, unix_ms);
    }

    fn reset_round(&mut self, round: u64, unix_ms: u64) {
        self.round = Round::new(round, unix_ms, self.max_total_weight);
    }

    fn ensure_round(&mut self, round: u64, unix_ms: u64) {
        if self.round.number() != round {
            self.reset_round(round, unix_ms);
        }
    }

    /// The header of `hospital`'s update of `round` (`weight`, `count` items): whether it is
    /// wanted now; on success its slot and weight are held until [`Federation::update_read`]
    /// or [`Federation::abandon_update`].
    pub fn announce_update(
        &mut self,
        hospital: u32,
        round: u64,
        weight: u64,
        count: u32,
        unix_ms: u64,
    ) -> Result<(), String> {
        let items = self.engine.accepts_update(hospital, round)?;
        self.ensure_round(round, unix_ms);
        self.round
            .announce(hospital, round, weight, count, items)
            .map_err(|e| e.to_string())
    }

    /// `hospital`'s announced update of `round` did not arrive whole (or was refused).
    pub fn abandon_update(&mut self, hospital: u32, round: u64) {
        self.round.abandon(hospital, round);
    }

    /// `hospital`'s announced update of `round`, read whole (`bytes` on the wire) with what it
    /// signed of it: folded unless the round closed while it streamed in, then what follows.
    /// A refused update leaves the sums untouched and frees its slot.
    pub fn update_read(
        &mut self,
        now: Instant,
        unix_ms: u64,
        round: u64,
        signed: Contribution,
        update: Update,
        bytes: u64,
    ) -> Result<(), String> {
        let (hospital, weight) = (signed.hospital, signed.weight);
        if let Err(e) = self.engine.accepts_update(hospital, round) {
            self.round.abandon(hospital, round);
            return Err(e);
        }
        let he = self
            .he
            .as_deref()
            .map(|he| (he, self.backend.as_ref(), self.batch));
        self.round
            .fold(hospital, round, he, bytes, update)
            .map_err(|e| e.to_string())?;
        self.round.record_contribution(signed);
        let event = Event::UpdateFolded {
            hospital,
            round,
            weight,
            now,
        };
        self.handle(now, unix_ms, event);
        Ok(())
    }

    /// Whether `hospital`'s switching stream of (`round`, `attempt`) of `count` shares is
    /// wanted now; the level its shares must come at.
    pub fn announce_shares(
        &self,
        hospital: u32,
        round: u64,
        attempt: u32,
        count: u32,
    ) -> Result<usize, String> {
        self.engine
            .accepts_switch_shares(hospital, round, attempt)?;
        let expected = self.round.shares_expected().map_err(|e| e.to_string())?;
        if count as usize != expected {
            return Err(format!(
                "{count} switching shares for an aggregate of {expected} ciphertexts"
            ));
        }
        Ok(self.round.share_level())
    }

    /// `hospital`'s switching shares of (`round`, `attempt`), read whole: folded unless the
    /// attempt changed while they streamed in, then what follows (the commit once every
    /// switcher's are in).
    pub fn shares_read(
        &mut self,
        now: Instant,
        unix_ms: u64,
        hospital: u32,
        (round, attempt): (u64, u32),
        shares: Vec<KeySwitchShare>,
        bytes: u64,
    ) -> Result<(), String> {
        let he = self
            .he
            .clone()
            .ok_or("switching shares in a plaintext federation")?;
        self.engine
            .accepts_switch_shares(hospital, round, attempt)?;
        self.round
            .fold_shares(round, &he, attempt, bytes, shares)
            .map_err(|e| e.to_string())?;
        let event = Event::SwitchSharesFolded {
            hospital,
            round,
            attempt,
            now,
        };
        self.handle(now, unix_ms, event);
        Ok(())
    }

    /// Bytes sent to a hospital for `round` outside its result (switch requests).
    pub fn add_bytes_down(&mut self, round: u64, bytes: u64) {
        if self.round.number() == round {
            self.round.add_bytes_down(bytes);
        }
    }

    /// The engine's decisions, completed with the round's data: a round started or announced
    /// gets its data; a switch request carries the contributions the switchers are shown; a
    /// delivery becomes the commit of the round's result and record.
    fn complete(&mut self, actions: Vec<Action>, now: Instant, unix_ms: u64) {
        for action in actions {
            match action {
                Action::StartRound { round, .. } => {
                    self.reset_round(round, unix_ms);
                    self.actions.push_back(action);
                }
                Action::AnnounceRound { round, .. } => {
                    self.ensure_round(round, unix_ms);
                    self.actions.push_back(action);
                }
                Action::RequestSwitch {
                    round,
                    attempt,
                    active,
                    weights,
                } => {
                    let request = self.switch_request(round, attempt, active, &weights, now);
                    self.actions.push_back(request)
                }
                Action::Deliver {
                    round,
                    targets,
                    weights,
                    switchers,
                } => {
                    let commit = self.commit(round, targets, &weights, &switchers, now, unix_ms);
                    self.actions.push_back(commit)
                }
                other => self.actions.push_back(other),
            }
        }
    }

    /// Closes the aggregate (once) for switching attempt `attempt` by `active`.
    fn switch_request(
        &mut self,
        round: u64,
        attempt: u32,
        active: Vec<u32>,
        weights: &[(u32, u64)],
        now: Instant,
    ) -> Action {
        let Some(he) = self.he.clone() else {
            return refusal(
                round,
                "switch-refused",
                "a switch in a plaintext federation",
            );
        };
        match self.round.close(round, &he, attempt, weights, &active, now) {
            Ok(contributions) => Action::SwitchRequest {
                round,
                attempt,
                count: contributions.first().map_or(0, |c| c.count),
                active,
                contributions,
            },
            Err(e) => refusal(
                round,
                "switch-refused",
                &format!("cannot ask for switching shares: {e}"),
            ),
        }
    }

    /// The round's result and record, to commit and then send to `targets`.
    fn commit(
        &mut self,
        round: u64,
        targets: Vec<u32>,
        weights: &[(u32, u64)],
        switchers: &[u32],
        now: Instant,
        unix_ms: u64,
    ) -> Action {
        let made = self.round.result(
            round,
            self.he.as_deref(),
            weights,
            switchers,
            &targets,
            (now, unix_ms),
        );
        match made {
            Ok((result, record)) => Action::Commit {
                round,
                phase: if round >= self.rounds {
                    Phase::Finished { rounds: round }
                } else {
                    Phase::Training { committed: round }
                },
                result: Box::new(result),
                record: Box::new(record),
                targets,
            },
            Err(e) => refusal(
                round,
                "result-failed",
                &format!("cannot make the round's result: {e}"),
            ),
        }
    }
}

/// What a decision the round's data cannot carry out becomes: an audited row (the round
/// waits, as it did when the shell found the same).
fn refusal(round: u64, event: &'static str, detail: &str) -> Action {
    Action::Audit {
        hospital: None,
        round,
        event,
        detail: detail.to_string(),
    }
}

#[cfg(test)]
mod tests;
