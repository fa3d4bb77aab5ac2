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

    /// A stalled round is audited when it stalls and then once a minute, not every tick.
    fn stall_audit_due(&self, now: Instant) -> bool {
        self.quorum_audited
            .is_none_or(|t| now.saturating_duration_since(t) >= QUORUM_AUDIT_EVERY)
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
        if let Some((r, set)) = &self.pinned
            && r == round
        {
            return self.maybe_close_pinned(now, tick, set.clone(), out);
        }
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
            if tick && late && !quorum && self.stall_audit_due(now) {
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
        self.close(round, uploads, order, now, out);
    }

    /// A round redone after a restart whose switch had begun: it closes once every hospital
    /// of that switch has sent its update again, over exactly those (others' updates are left
    /// out: the switchers that switched the first sum refuse any other). A hospital of the set
    /// that does not come back holds the round; it is audited once a minute past the deadline.
    fn maybe_close_pinned(
        &mut self,
        now: Instant,
        tick: bool,
        set: BTreeMap<u32, u64>,
        out: &mut Vec<Action>,
    ) {
        let Stage::Collecting {
            round,
            started,
            uploads,
            order,
        } = &self.stage
        else {
            return;
        };
        let missing: Vec<u32> = set
            .keys()
            .filter(|h| !uploads.contains_key(h))
            .copied()
            .collect();
        if !missing.is_empty() {
            let late = now.saturating_duration_since(*started) >= self.cfg.round_timeout;
            if tick && late && self.stall_audit_due(now) {
                self.quorum_audited = Some(now);
                out.push(Action::Audit {
                    hospital: None,
                    round: *round,
                    event: "switch-set-missing",
                    detail: format!(
                        "the round's switch began over {:?} before a restart; waiting for {missing:?}",
                        set.keys().collect::<Vec<_>>()
                    ),
                });
            }
            return;
        }
        let round = *round;
        let kept: BTreeMap<u32, u64> = uploads
            .iter()
            .filter(|(h, _)| set.contains_key(h))
            .map(|(&h, &w)| (h, w))
            .collect();
        let order: Vec<u32> = order
            .iter()
            .filter(|h| set.contains_key(h))
            .copied()
            .collect();
        self.pinned = None;
        self.close(round, kept, order, now, out);
    }

    fn close(
        &mut self,
        round: u64,
        uploads: BTreeMap<u32, u64>,
        order: Vec<u32>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
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
