//! Who takes part: a hospital admitted by the update size it announces (settled by a strict
//! majority), joining (welcomed, caught up, announced the running round), leaving, and which
//! connected hospitals rounds are announced and delivered to.

use std::time::Instant;

use super::{Action, Engine, Stage};

impl Engine {
    /// Whether `h`, whose updates have `items` items, may take part. The update size is
    /// settled by a strict majority of the N hospitals, never by the first to speak: a
    /// hospital configured otherwise is refused at the door (and the rounds do not wait for
    /// it) instead of fixing the size for everyone.
    pub(super) fn admit(
        &mut self,
        h: u32,
        items: u32,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> bool {
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
                    self.refused.insert(o);
                    out.push(self.reject_size(o, i, items));
                }
                // the running round was not announced before the size was settled
                if let Stage::Collecting {
                    round,
                    started,
                    uploads,
                    ..
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
                self.refused.insert(h);
                out.push(self.reject_size(h, items, want));
                false
            }
            _ => true,
        }
    }

    pub(super) fn reject_size(&self, h: u32, got: u32, want: u32) -> Action {
        Action::Reject {
            to: h,
            reason: format!(
                "this hospital's updates have {got} items and the federation's have {want}: its [model] and [dataset] differ from the other hospitals' (check site.toml and the data's classes)"
            ),
        }
    }

    pub(super) fn joined(&mut self, h: u32, last_round: u64, now: Instant, out: &mut Vec<Action>) {
        self.connected.insert(h);
        if matches!(self.stage, Stage::Delivering { .. }) {
            self.joined_while_delivering.insert(h);
        }
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
        self.held.insert(h, last_round);
        let keep = self.cfg.keep_results.max(1);
        if last_round < self.committed && self.committed - last_round <= keep {
            // deliveries missed: the stored results bring it up to date, one after another
            out.push(Action::SendStoredResults {
                to: h,
                after: last_round,
            });
            self.held.insert(h, self.committed);
        } else if last_round < self.committed {
            // older results are gone: it cannot catch up, and no round waits for it
            let reason = format!(
                "this hospital holds the global model of round {last_round}; the federation has committed round {} and keeps the results of its last {keep} rounds, so it cannot catch up: it takes no part in the rounds (restore its state directory from a backup of round {} or later to rejoin)",
                self.committed,
                self.committed - keep
            );
            out.push(Action::Audit {
                hospital: Some(h),
                round: self.committed,
                event: "stale",
                detail: reason.clone(),
            });
            out.push(Action::Notify { to: h, reason });
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
                ..
            } if !uploads.contains_key(&h)
                && self.setup_done.contains(&h)
                && self.items.is_some()
                && self.is_current(h) =>
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

    pub(super) fn left(&mut self, h: u32, now: Instant, out: &mut Vec<Action>) {
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

    /// Connected hospitals that finished setup and hold the latest committed model: who rounds
    /// are announced, waited for and delivered to, and who switches.
    pub(super) fn eligible(&self) -> Vec<u32> {
        self.connected
            .intersection(&self.setup_done)
            .copied()
            .filter(|&h| self.is_current(h))
            .collect()
    }

    /// Hospital `h` holds the latest committed model (or is being sent it).
    fn is_current(&self, h: u32) -> bool {
        self.held.get(&h).is_some_and(|&r| r >= self.committed)
    }
}
