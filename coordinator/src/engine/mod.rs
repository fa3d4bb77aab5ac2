//! The round engine, sans-IO (as quinn-proto and rustls are): a state machine fed [`Event`]s
//! (a hospital joined, an update was folded, a deadline passed) that returns [`Action`]s (send,
//! ask for switching shares, deliver and commit). It holds decisions, not data: the tokio layer
//! stores and folds the bytes, asks [`Engine::accepts_update`] before reading an upload, and
//! reports back. That keeps every protocol decision testable without sockets.
//!
//! Setup: every hospital sends its key shares; when all N have, each receives the collective
//! public key and the others' public keys; each deals sealed Shamir shares; when all have dealt,
//! each receives those addressed to it and reports setup done. Each round: announce, collect
//! updates until every connected hospital has sent one (at least the quorum) or the deadline
//! passes with the quorum in, then ask t connected hospitals for public-key-switch shares
//! towards the consortium receiving key (re-planning if one of them leaves), then deliver the one
//! switched aggregate to every connected hospital, commit and start the next round.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use protocol::message::Phase;

#[cfg(test)]
mod tests;

/// What the engine needs to know of the federation.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    pub hospitals: u32,
    pub threshold: u32,
    pub rounds: u64,
    pub min_hospitals: u32,
    pub plaintext: bool,
    pub round_timeout: Duration,
}

/// Something that happened.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A hospital connected and said hello; it holds the global model of `last_round`, whose
    /// updates have `items` items.
    Joined {
        hospital: u32,
        last_round: u64,
        items: u32,
        now: Instant,
    },
    /// Its connection ended.
    Left { hospital: u32, now: Instant },
    /// Its key shares were validated and stored.
    KeySharesStored { hospital: u32 },
    /// Its sealed Shamir shares were stored for relaying.
    SharesDealt { hospital: u32 },
    /// It formed its threshold secret.
    SetupDone { hospital: u32, now: Instant },
    /// Its whole update for `round` was validated and folded into the aggregate.
    UpdateFolded {
        hospital: u32,
        round: u64,
        weight: u64,
        now: Instant,
    },
    /// Its switching shares for `round`, attempt `attempt`, were folded.
    SwitchSharesFolded {
        hospital: u32,
        round: u64,
        attempt: u32,
        now: Instant,
    },
    /// The layer below committed `round` and sent the results.
    Committed { round: u64, now: Instant },
    /// A hospital found the committed `round`'s result malformed and did not apply it.
    Alarm {
        hospital: u32,
        round: u64,
        reason: String,
    },
    /// Time passes (deadlines).
    Tick { now: Instant },
}

/// Something the layer below must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Welcome {
        to: u32,
        phase: Phase,
    },
    /// Refuse the connection of `to` and close it: it cannot take part as configured.
    Reject {
        to: u32,
        reason: String,
    },
    /// Persist the federation's update size, settled by a majority of the hospitals.
    SettleItems {
        items: u32,
    },
    /// Make (once) and send the collective public key and everyone's public keys.
    SendSetupKeys {
        to: Vec<u32>,
    },
    /// Send the sealed Shamir shares addressed to `to`.
    RelayShares {
        to: u32,
    },
    /// Start collecting `round` (fresh aggregate) and announce it.
    StartRound {
        round: u64,
        to: Vec<u32>,
        deadline: Duration,
    },
    /// Announce the running round to a hospital that joined late.
    AnnounceRound {
        round: u64,
        to: u32,
        deadline: Duration,
    },
    /// Close the aggregate of `round` (once) and ask `active` for switching shares towards the
    /// consortium receiving key; a new attempt discards the shares of earlier ones.
    RequestSwitch {
        round: u64,
        attempt: u32,
        active: Vec<u32>,
        weights: Vec<(u32, u64)>,
    },
    /// Make the round's result (switched aggregate, or plaintext sum), commit the round with it,
    /// send it to `targets`, then report [`Event::Committed`].
    Deliver {
        round: u64,
        targets: Vec<u32>,
        weights: Vec<(u32, u64)>,
        switchers: Vec<u32>,
    },
    /// Send the result of the latest committed round (to a hospital that missed it).
    SendStoredResult {
        to: u32,
    },
    Finish {
        to: Vec<u32>,
    },
    /// An audit log entry.
    Audit {
        hospital: Option<u32>,
        round: u64,
        event: &'static str,
        detail: String,
    },
}

#[derive(Clone, Debug, PartialEq)]
enum Stage {
    Setup,
    Collecting {
        round: u64,
        started: Instant,
        uploads: BTreeMap<u32, u64>,
    },
    Switching {
        round: u64,
        attempt: u32,
        uploads: BTreeMap<u32, u64>,
        active: Vec<u32>,
        done: BTreeSet<u32>,
        /// a re-plan waits here for enough connected hospitals
        waiting: bool,
    },
    Delivering {
        round: u64,
    },
    Finished,
}

/// The coordinator's protocol state.
#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    stage: Stage,
    committed: u64,
    connected: BTreeSet<u32>,
    key_shares: BTreeSet<u32>,
    dealt: BTreeSet<u32>,
    setup_done: BTreeSet<u32>,
    /// items of every update, once a strict majority of the hospitals announced the same
    items: Option<u32>,
    /// what each hospital announced before that
    announced: BTreeMap<u32, u32>,
    /// when the running round's missing quorum was last audited
    quorum_audited: Option<Instant>,
}

/// How often a round that waits for its quorum past the deadline is audited.
pub const QUORUM_AUDIT_EVERY: Duration = Duration::from_secs(60);

/// What the engine restores from the store after a restart.
#[derive(Clone, Debug, Default)]
pub struct Restored {
    pub committed: u64,
    pub finished: bool,
    pub key_shares: BTreeSet<u32>,
    pub dealt: BTreeSet<u32>,
    pub setup_done: BTreeSet<u32>,
    pub items: Option<u32>,
}

impl Engine {
    pub fn new(cfg: EngineConfig, restored: Restored, now: Instant) -> Self {
        let all: BTreeSet<u32> = (1..=cfg.hospitals).collect();
        let setup_complete = cfg.plaintext || restored.setup_done == all;
        let stage = if restored.finished || restored.committed >= cfg.rounds {
            Stage::Finished
        } else if setup_complete {
            // the interrupted round starts again from scratch when hospitals return
            Stage::Collecting {
                round: restored.committed + 1,
                started: now,
                uploads: BTreeMap::new(),
            }
        } else {
            Stage::Setup
        };
        let setup_done = if cfg.plaintext {
            all
        } else {
            restored.setup_done
        };
        Self {
            cfg,
            stage,
            committed: restored.committed,
            connected: BTreeSet::new(),
            key_shares: restored.key_shares,
            dealt: restored.dealt,
            setup_done,
            items: restored.items,
            announced: BTreeMap::new(),
            quorum_audited: None,
        }
    }

    pub fn committed(&self) -> u64 {
        self.committed
    }

    pub fn is_finished(&self) -> bool {
        self.stage == Stage::Finished
    }

    /// The phase a joining hospital is told.
    pub fn phase(&self) -> Phase {
        match self.stage {
            Stage::Setup => Phase::Setup,
            Stage::Finished => Phase::Finished {
                rounds: self.committed,
            },
            _ => Phase::Training {
                committed: self.committed,
            },
        }
    }

    /// The round under way, if any.
    pub fn current_round(&self) -> Option<u64> {
        match &self.stage {
            Stage::Collecting { round, .. }
            | Stage::Switching { round, .. }
            | Stage::Delivering { round } => Some(*round),
            _ => None,
        }
    }

    fn all(&self) -> BTreeSet<u32> {
        (1..=self.cfg.hospitals).collect()
    }

    /// The items of every update, once settled.
    pub fn items(&self) -> Option<u32> {
        self.items
    }

    /// Whether an update of `hospital` for `round` may be read now (and why not); the items
    /// every update has.
    pub fn accepts_update(&self, hospital: u32, round: u64) -> Result<u32, String> {
        let accepted = match &self.stage {
            Stage::Collecting {
                round: r, uploads, ..
            } => {
                if round != *r {
                    Err(format!("update for round {round} while round {r} collects"))
                } else if uploads.contains_key(&hospital) {
                    Err(format!("a second update for round {round}"))
                } else if !self.setup_done.contains(&hospital) {
                    Err("update before finishing setup".into())
                } else {
                    Ok(())
                }
            }
            Stage::Setup => Err("update during setup".into()),
            Stage::Finished => Err("update after the last round".into()),
            _ => Err(format!("update for round {round} after collection closed")),
        };
        accepted?;
        self.items.ok_or_else(|| {
            format!(
                "the update size is not settled yet: {} of {} hospitals announced theirs and no size has a majority",
                self.announced.len(),
                self.cfg.hospitals
            )
        })
    }

    /// Whether switching shares of `hospital` for (`round`, `attempt`) may be read.
    pub fn accepts_switch_shares(
        &self,
        hospital: u32,
        round: u64,
        attempt: u32,
    ) -> Result<(), String> {
        match &self.stage {
            Stage::Switching {
                round: r,
                attempt: a,
                active,
                done,
                ..
            } => {
                if round != *r || attempt != *a {
                    Err(format!(
                        "switching shares for round {round} attempt {attempt}, expected round {r} attempt {a}"
                    ))
                } else if !active.contains(&hospital) {
                    Err("switching shares from a hospital not asked for them".into())
                } else if done.contains(&hospital) {
                    Err("switching shares sent twice".into())
                } else {
                    Ok(())
                }
            }
            _ => Err(format!(
                "switching shares for round {round} while not switching"
            )),
        }
    }

    /// Feeds one event; returns what to do.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Joined {
                hospital,
                last_round,
                items,
                now,
            } => {
                if self.admit(hospital, items, now, &mut out) {
                    self.joined(hospital, last_round, now, &mut out)
                }
            }
            Event::Left { hospital, now } => self.left(hospital, now, &mut out),
            Event::KeySharesStored { hospital } => {
                self.key_shares.insert(hospital);
                if self.key_shares == self.all() && self.stage == Stage::Setup {
                    out.push(Action::SendSetupKeys {
                        to: self.connected.iter().copied().collect(),
                    });
                }
            }
            Event::SharesDealt { hospital } => {
                self.dealt.insert(hospital);
                if self.dealt == self.all() && self.stage == Stage::Setup {
                    for &h in &self.connected {
                        out.push(Action::RelayShares { to: h });
                    }
                }
            }
            Event::SetupDone { hospital, now } => {
                self.setup_done.insert(hospital);
                out.push(Action::Audit {
                    hospital: Some(hospital),
                    round: 0,
                    event: "setup-done",
                    detail: String::new(),
                });
                if self.setup_done == self.all() && self.stage == Stage::Setup {
                    out.push(Action::Audit {
                        hospital: None,
                        round: 0,
                        event: "setup-complete",
                        detail: format!(
                            "{} hospitals hold threshold shares (t = {})",
                            self.cfg.hospitals, self.cfg.threshold
                        ),
                    });
                    self.start_round(self.committed + 1, now, &mut out);
                }
            }
            Event::UpdateFolded {
                hospital,
                round,
                weight,
                now,
            } => {
                if let Stage::Collecting {
                    round: r, uploads, ..
                } = &mut self.stage
                    && *r == round
                {
                    uploads.insert(hospital, weight);
                    out.push(Action::Audit {
                        hospital: Some(hospital),
                        round,
                        event: "update",
                        detail: format!("weight {weight}"),
                    });
                    self.maybe_close(now, false, &mut out);
                }
            }
            Event::SwitchSharesFolded {
                hospital,
                round,
                attempt,
                now: _,
            } => {
                let mut complete = None;
                if let Stage::Switching {
                    round: r,
                    attempt: a,
                    active,
                    done,
                    uploads,
                    ..
                } = &mut self.stage
                    && *r == round
                    && *a == attempt
                    && active.contains(&hospital)
                {
                    done.insert(hospital);
                    if done.len() == active.len() {
                        complete = Some((uploads.clone(), active.clone()));
                    }
                }
                if let Some((uploads, active)) = complete {
                    self.stage = Stage::Delivering { round };
                    out.push(Action::Deliver {
                        round,
                        targets: self.eligible(),
                        weights: uploads.into_iter().collect(),
                        switchers: active,
                    });
                }
            }
            Event::Committed { round, now } => {
                if self.stage == (Stage::Delivering { round }) {
                    self.committed = round;
                    if round >= self.cfg.rounds {
                        self.stage = Stage::Finished;
                        out.push(Action::Finish {
                            to: self.connected.iter().copied().collect(),
                        });
                    } else {
                        self.start_round(round + 1, now, &mut out);
                    }
                }
            }
            Event::Alarm {
                hospital,
                round,
                reason,
            } => {
                // only about the result last delivered (a reason is short text, cut to size)
                let reason: String = reason.chars().take(500).collect();
                if round != self.committed || round == 0 {
                    out.push(Action::Audit {
                        hospital: Some(hospital),
                        round,
                        event: "refused",
                        detail: format!(
                            "an alarm about round {round} while round {} is the last delivered: {reason}",
                            self.committed
                        ),
                    });
                    return out;
                }
                // every hospital decrypts the same result and refuses it; the first alarm stops
                // the federation, so no round builds on a model nobody applied
                out.push(Action::Audit {
                    hospital: Some(hospital),
                    round,
                    event: "alarm",
                    detail: reason,
                });
                if self.stage != Stage::Finished {
                    self.stage = Stage::Finished;
                    out.push(Action::Finish {
                        to: self.connected.iter().copied().collect(),
                    });
                }
            }
            Event::Tick { now } => self.maybe_close(now, true, &mut out),
        }
        out
    }

    /// Whether `h`, whose updates have `items` items, may take part. The update size is
    /// settled by a strict majority of the N hospitals, never by the first to speak: a
    /// hospital configured otherwise is refused at the door (and the rounds do not wait for
    /// it) instead of fixing the size for everyone.
    fn admit(&mut self, h: u32, items: u32, now: Instant, out: &mut Vec<Action>) -> bool {
        if self.items.is_none() {
            self.announced.insert(h, items);
            let votes = self.announced.values().filter(|&&i| i == items).count();
            if votes > self.cfg.hospitals as usize / 2 {
                self.items = Some(items);
                out.push(Action::SettleItems { items });
                out.push(Action::Audit {
                    hospital: None,
                    round: self.committed,
                    event: "update-size",
                    detail: format!("{items} items per update, announced by {votes} hospitals"),
                });
                // a hospital already connected with another size is refused now
                let others: Vec<(u32, u32)> = std::mem::take(&mut self.announced)
                    .into_iter()
                    .filter(|&(o, i)| i != items && self.connected.contains(&o))
                    .collect();
                for (o, i) in others {
                    self.connected.remove(&o);
                    out.push(self.reject_size(o, i, items));
                }
                // the running round was not announced before the size was settled
                if let Stage::Collecting {
                    round,
                    started,
                    uploads,
                } = &self.stage
                {
                    let deadline = self
                        .cfg
                        .round_timeout
                        .saturating_sub(now.saturating_duration_since(*started));
                    for to in self.eligible() {
                        if !uploads.contains_key(&to) {
                            out.push(Action::AnnounceRound {
                                round: *round,
                                to,
                                deadline,
                            });
                        }
                    }
                }
            }
        }
        match self.items {
            Some(want) if want != items => {
                out.push(self.reject_size(h, items, want));
                false
            }
            _ => true,
        }
    }

    fn reject_size(&self, h: u32, got: u32, want: u32) -> Action {
        Action::Reject {
            to: h,
            reason: format!(
                "this hospital's updates have {got} items and the federation's have {want}: its [model] and [dataset] differ from the other hospitals' (check site.toml and the data's classes)"
            ),
        }
    }

    fn joined(&mut self, h: u32, last_round: u64, now: Instant, out: &mut Vec<Action>) {
        self.connected.insert(h);
        out.push(Action::Welcome {
            to: h,
            phase: self.phase(),
        });
        out.push(Action::Audit {
            hospital: Some(h),
            round: self.committed,
            event: "joined",
            detail: format!("holds round {last_round}"),
        });
        if self.committed > 0 && last_round < self.committed {
            out.push(Action::SendStoredResult { to: h });
        }
        match &self.stage {
            Stage::Setup => {
                if self.key_shares == self.all() {
                    out.push(Action::SendSetupKeys { to: vec![h] });
                }
                if self.dealt == self.all() {
                    out.push(Action::RelayShares { to: h });
                }
            }
            Stage::Collecting {
                round,
                started,
                uploads,
            } if !uploads.contains_key(&h)
                && self.setup_done.contains(&h)
                && self.items.is_some() =>
            {
                let deadline = self
                    .cfg
                    .round_timeout
                    .saturating_sub(now.saturating_duration_since(*started));
                out.push(Action::AnnounceRound {
                    round: *round,
                    to: h,
                    deadline,
                });
            }
            Stage::Finished => out.push(Action::Finish { to: vec![h] }),
            _ => {}
        }
        if matches!(self.stage, Stage::Switching { waiting: true, .. }) {
            self.replan(now, out);
        }
    }

    fn left(&mut self, h: u32, now: Instant, out: &mut Vec<Action>) {
        self.connected.remove(&h);
        out.push(Action::Audit {
            hospital: Some(h),
            round: self.current_round().unwrap_or(self.committed),
            event: "left",
            detail: String::new(),
        });
        if matches!(self.stage, Stage::Collecting { .. }) {
            self.maybe_close(now, false, out);
            return;
        }
        // a hospital that leaves after sending its shares is not needed any more
        if matches!(&self.stage, Stage::Switching { active, done, .. }
            if active.contains(&h) && !done.contains(&h))
        {
            self.replan(now, out);
        }
    }

    /// Connected hospitals that finished setup: who rounds are announced and delivered to.
    fn eligible(&self) -> Vec<u32> {
        self.connected
            .intersection(&self.setup_done)
            .copied()
            .collect()
    }

    fn start_round(&mut self, round: u64, now: Instant, out: &mut Vec<Action>) {
        self.quorum_audited = None;
        self.stage = Stage::Collecting {
            round,
            started: now,
            uploads: BTreeMap::new(),
        };
        let to = self.eligible();
        out.push(Action::Audit {
            hospital: None,
            round,
            event: "round-start",
            detail: format!("announced to {to:?}"),
        });
        out.push(Action::StartRound {
            round,
            to,
            deadline: self.cfg.round_timeout,
        });
    }

    /// Closes collection when every connected hospital has sent its update (and the quorum is
    /// met), or at the deadline with the quorum.
    fn maybe_close(&mut self, now: Instant, tick: bool, out: &mut Vec<Action>) {
        let Stage::Collecting {
            round,
            started,
            uploads,
        } = &self.stage
        else {
            return;
        };
        let quorum = uploads.len() as u32 >= self.cfg.min_hospitals;
        let eligible: BTreeSet<u32> = self
            .connected
            .intersection(&self.setup_done)
            .copied()
            .collect();
        let everyone_in = !eligible.is_empty() && eligible.iter().all(|h| uploads.contains_key(h));
        let late = now.saturating_duration_since(*started) >= self.cfg.round_timeout;
        if !(quorum && (everyone_in || late)) {
            // a stalled round is audited when it stalls and then once a minute, not every tick
            let due = self
                .quorum_audited
                .is_none_or(|t| now.saturating_duration_since(t) >= QUORUM_AUDIT_EVERY);
            if tick && late && !quorum && due {
                self.quorum_audited = Some(now);
                out.push(Action::Audit {
                    hospital: None,
                    round: *round,
                    event: "quorum-missing",
                    detail: format!(
                        "{} of {} updates at the deadline; waiting",
                        uploads.len(),
                        self.cfg.min_hospitals
                    ),
                });
            }
            return;
        }
        let (round, uploads) = (*round, uploads.clone());
        out.push(Action::Audit {
            hospital: None,
            round,
            event: "collection-closed",
            detail: format!("updates from {:?}", uploads.keys().collect::<Vec<_>>()),
        });
        if self.cfg.plaintext {
            self.stage = Stage::Delivering { round };
            out.push(Action::Deliver {
                round,
                targets: self.connected.iter().copied().collect(),
                weights: uploads.into_iter().collect(),
                switchers: vec![],
            });
            return;
        }
        self.stage = Stage::Switching {
            round,
            attempt: 0,
            uploads,
            active: Vec::new(),
            done: BTreeSet::new(),
            waiting: true,
        };
        self.replan(now, out);
    }

    /// Picks t connected hospitals (uploaders first) to make switching shares.
    fn replan(&mut self, _now: Instant, out: &mut Vec<Action>) {
        let t = self.cfg.threshold as usize;
        let eligible = self.eligible();
        let Stage::Switching {
            round,
            attempt,
            uploads,
            active,
            done,
            waiting,
        } = &mut self.stage
        else {
            return;
        };
        let mut chosen: Vec<u32> = eligible
            .iter()
            .copied()
            .filter(|h| uploads.contains_key(h))
            .collect();
        chosen.extend(
            eligible
                .iter()
                .copied()
                .filter(|h| !uploads.contains_key(h)),
        );
        chosen.truncate(t);
        if chosen.len() < t {
            if !*waiting || active.is_empty() {
                out.push(Action::Audit {
                    hospital: None,
                    round: *round,
                    event: "switch-waiting",
                    detail: format!(
                        "{} connected hospitals, {t} needed to re-encrypt",
                        chosen.len()
                    ),
                });
            }
            *waiting = true;
            active.clear();
            return;
        }
        if !active.is_empty() || !done.is_empty() {
            *attempt += 1;
        }
        *active = chosen;
        done.clear();
        *waiting = false;
        out.push(Action::Audit {
            hospital: None,
            round: *round,
            event: "switch-request",
            detail: format!(
                "attempt {attempt}: {active:?} re-encrypt to the consortium receiving key"
            ),
        });
        out.push(Action::RequestSwitch {
            round: *round,
            attempt: *attempt,
            active: active.clone(),
            weights: uploads.clone().into_iter().collect(),
        });
    }
}
