//! The collecting stage of a round: its start, its deadline (the only decision time alone
//! makes), and when collection closes — every eligible hospital in with the quorum, or the
//! deadline passed with it — to switch the sum (or deliver it, in plaintext).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::{Action, Engine, QUORUM_AUDIT_EVERY, Stage};

impl Engine {
    /// When time alone next changes something ([`Event::Tick`]): a collecting round's
    /// deadline, or past it without the quorum, the next audit of the stall.
    pub fn next_deadline(&self) -> Option<std::time::Instant> {
        let Stage::Collecting {
            started, uploads, ..
        } = &self.stage
        else {
            return None;
        };
        match self.quorum_audited {
            Some(t) if (uploads.len() as u32) < self.cfg.min_hospitals => {
                Some(t + QUORUM_AUDIT_EVERY)
            }
            _ => Some(*started + self.cfg.round_timeout),
        }
    }

    pub(super) fn start_round(&mut self, round: u64, now: Instant, out: &mut Vec<Action>) {
        self.quorum_audited = None;
        self.stage = Stage::Collecting {
            round,
            started: now,
            uploads: BTreeMap::new(),
            order: Vec::new(),
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
    pub(super) fn maybe_close(&mut self, now: Instant, tick: bool, out: &mut Vec<Action>) {
        let Stage::Collecting {
            round,
            started,
            uploads,
            order,
        } = &self.stage
        else {
            return;
        };
        let quorum = uploads.len() as u32 >= self.cfg.min_hospitals;
        let eligible: BTreeSet<u32> = self.eligible().into_iter().collect();
        // Plaintext runs have no key setup, which gathers every hospital before the encrypted
        // pipeline's first round: theirs waits for every hospital that may still come (until
        // the deadline), so that both pipelines start with the same consortium.
        let gathering = self.cfg.plaintext
            && self.committed == 0
            && self
                .all()
                .iter()
                .any(|h| !self.held.contains_key(h) && !self.refused.contains(h));
        let everyone_in =
            !gathering && !eligible.is_empty() && eligible.iter().all(|h| uploads.contains_key(h));
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
        let (round, uploads, order) = (*round, uploads.clone(), order.clone());
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
            order,
            active: Vec::new(),
            done: BTreeSet::new(),
            waiting: true,
        };
        self.replan(now, out);
    }
}
