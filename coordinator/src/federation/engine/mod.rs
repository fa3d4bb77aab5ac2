//! The federation's decisions, sans-IO: fed [`Event`]s (a hospital joined, an update was folded,
//! a deadline passed), it returns [`Action`]s (send, ask for switching shares, deliver and
//! commit). It holds decisions, not data: [`super::Federation`] owns it beside the round's data
//! ([`super::round`]) and completes its decisions with that data. Every protocol decision is
//! testable without sockets.
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

mod collect;
mod events;
mod membership;
#[cfg(test)]
mod tests;

pub use events::{Action, Event};

/// What the engine needs to know of the federation.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    pub hospitals: u32,
    pub threshold: u32,
    pub rounds: u64,
    pub min_hospitals: u32,
    pub plaintext: bool,
    pub round_timeout: Duration,
    /// Committed rounds whose results are kept for a hospital catching up.
    pub keep_results: u64,
}

#[derive(Clone, Debug, PartialEq)]
enum Stage {
    Setup,
    Collecting {
        round: u64,
        started: Instant,
        uploads: BTreeMap<u32, u64>,
        /// the uploaders in the order their updates were folded
        order: Vec<u32>,
    },
    Switching {
        round: u64,
        attempt: u32,
        uploads: BTreeMap<u32, u64>,
        order: Vec<u32>,
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
    /// the round of the global model each connected hospital holds (from its hello, then from
    /// the deliveries made to it)
    held: BTreeMap<u32, u64>,
    /// Hospitals refused at the door (another update size): no round waits for them.
    refused: BTreeSet<u32>,
    /// when the running round's missing quorum was last audited
    quorum_audited: Option<Instant>,
    /// a round whose switch began before a restart, and the hospitals (weights) it began over
    pinned: Option<(u64, BTreeMap<u32, u64>)>,
    /// the switchers of the last round delivered (they make the next round's flooding ahead)
    last_switchers: Vec<u32>,
    /// hospitals that (re)joined while a round was being delivered: that delivery may have
    /// gone to their old connection, so once it is committed they are sent it from the store
    joined_while_delivering: BTreeSet<u32>,
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
    /// The interrupted round's switch had begun over these hospitals (weights): the round is
    /// redone over exactly them ([`crate::store::Store::switch_set`]).
    pub pinned: Option<(u64, BTreeMap<u32, u64>)>,
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
                order: Vec::new(),
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
            held: BTreeMap::new(),
            refused: BTreeSet::new(),
            quorum_audited: None,
            pinned: restored
                .pinned
                .filter(|(r, _)| *r == restored.committed + 1),
            last_switchers: Vec::new(),
            joined_while_delivering: BTreeSet::new(),
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
                } else if let Some((_, set)) = self.pinned.as_ref().filter(|(p, _)| *p == round)
                    && !set.contains_key(&hospital)
                {
                    Err(format!(
                        "round {round} is redone over the hospitals its switch began with before \
                         the coordinator restarted ({:?}): this update is left out of it",
                        set.keys().collect::<Vec<_>>()
                    ))
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
                    round: r,
                    uploads,
                    order,
                    ..
                } = &mut self.stage
                    && *r == round
                {
                    uploads.insert(hospital, weight);
                    order.push(hospital);
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
                    self.last_switchers = active.clone();
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
                    // the hospitals it was delivered to hold it now; one that joined again
                    // meanwhile is sent it (and any before it) from the store, in order
                    for h in self.eligible() {
                        if self.joined_while_delivering.contains(&h)
                            && let Some(&held) = self.held.get(&h)
                            && held < round
                        {
                            out.push(Action::SendStoredResults { to: h, after: held });
                        }
                        self.held.insert(h, round);
                    }
                    self.joined_while_delivering.clear();
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

    /// Picks t connected hospitals to make switching shares: uploaders first — last round's
    /// switchers before the others (a node makes its flooding ahead, while the last hospital
    /// trains, only after switching the round before), each group in the order the updates came
    /// — and the hospital whose update came last after every other uploader: the slowest one,
    /// whose update closes the round, does not also make the shares the round waits for.
    fn replan(&mut self, _now: Instant, out: &mut Vec<Action>) {
        let t = self.cfg.threshold as usize;
        let eligible = self.eligible();
        let last_switchers = self.last_switchers.clone();
        let Stage::Switching {
            round,
            attempt,
            uploads,
            order,
            active,
            done,
            waiting,
        } = &mut self.stage
        else {
            return;
        };
        let last = order.last().copied();
        let mut chosen: Vec<u32> = order
            .iter()
            .copied()
            .filter(|h| eligible.contains(h))
            .collect();
        // a stable sort keeps the arrival order within each group
        chosen.sort_by_key(|h| (Some(*h) == last, !last_switchers.contains(h)));
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
