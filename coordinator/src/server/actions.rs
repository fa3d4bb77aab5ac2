//! The shell's side of the [`Federation`] state machine: every call into it goes through
//! [`Server::with_federation`], which polls out what it decided and carries that out outside
//! the lock; a timer task sleeps until the machine's next deadline instead of ticking.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use protocol::FederationMsg;
use protocol::message::{Body, Phase};
use tracing::{info, warn};

use super::{Server, lock};
use crate::federation::{Action, Event, Federation};
use crate::store::now_ms;
use crate::timer::until_due;

/// How often refused connections held back are written out (a log's rate, not a protocol's).
const REFUSALS_EVERY: Duration = Duration::from_secs(1);

impl Server {
    /// Runs `f` on the federation, then carries out what it decided, in order, outside the
    /// lock; wakes the timer, whose deadline may have moved.
    pub(super) fn with_federation<R>(self: &Arc<Self>, f: impl FnOnce(&mut Federation) -> R) -> R {
        let (r, actions) = {
            let mut fed = lock(&self.federation_state);
            let r = f(&mut fed);
            let actions: Vec<Action> = std::iter::from_fn(|| fed.poll_action()).collect();
            (r, actions)
        };
        self.deadline_moved.notify_one();
        for action in actions {
            self.execute(action);
        }
        r
    }

    /// Feeds the federation one event and carries out what it decides.
    pub(super) fn feed(self: &Arc<Self>, event: Event) {
        self.with_federation(|f| f.handle(Instant::now(), now_ms(), event));
    }

    /// The federation's timer (it sleeps until [`Federation::poll_timeout`], woken early when
    /// that moves) and the refused connections' log.
    pub(super) fn spawn_timers(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        let refusals = tokio::spawn(async move {
            let mut iv = tokio::time::interval(REFUSALS_EVERY);
            loop {
                iv.tick().await;
                let held_back = lock(&me.refusals).flush(Instant::now());
                if let Some(row) = held_back {
                    warn!("{row}");
                    me.audit(None, 0, "connections-refused", &row);
                }
            }
        });
        tokio::spawn(async move {
            // aborted with the federation's timer
            let _refusals = AbortOnDrop(refusals);
            loop {
                let due = lock(&self.federation_state).poll_timeout();
                if until_due(due, &self.deadline_moved).await {
                    self.with_federation(|f| f.handle_timeout(Instant::now(), now_ms()));
                }
            }
        })
    }

    fn execute(self: &Arc<Self>, action: Action) {
        match action {
            Action::Audit {
                hospital,
                round,
                event,
                detail,
            } => {
                info!(hospital, round, "{event} {detail}");
                self.audit(hospital, round, event, &detail);
            }
            Action::Welcome { to, phase } => self.send(
                to,
                0,
                Body::Federation(FederationMsg::Welcome {
                    index: to,
                    hospitals: self.cfg.federation.hospitals,
                    threshold: self.cfg.threshold(),
                    plaintext: self.cfg.he.plaintext,
                    phase,
                }),
            ),
            Action::Reject { to, reason } => {
                if let Some(link) = self.link(to) {
                    let me = self.clone();
                    tokio::spawn(async move {
                        me.refuse(&link, to, 0, &reason).await;
                        link.close("refused");
                    });
                }
            }
            Action::Notify { to, reason } => {
                if let Some(link) = self.link(to) {
                    let me = self.clone();
                    tokio::spawn(async move { me.refuse(&link, to, 0, &reason).await });
                }
            }
            Action::SettleItems { items } => {
                if let Err(e) = self.store.set_model_items(items) {
                    warn!("storing the update size: {e}");
                }
            }
            Action::SendSetupKeys { to } => match self.setup_keys() {
                Ok(body) => {
                    for h in to {
                        self.send(h, 0, body.clone());
                    }
                }
                Err(e) => warn!("cannot make the collective public key: {e:#}"),
            },
            Action::RelayShares { to } => match self.store.shamir_for(to) {
                Ok(sealed) => self.send(
                    to,
                    0,
                    Body::Federation(FederationMsg::RelayedShares { sealed }),
                ),
                Err(e) => warn!("relaying shares: {e}"),
            },
            Action::StartRound {
                round,
                to,
                deadline,
            } => {
                *lock(&self.round_opened) = Some((round, Instant::now()));
                for h in to {
                    self.send(h, round, round_start(deadline));
                }
            }
            Action::AnnounceRound {
                round,
                to,
                deadline,
            } => self.send(to, round, round_start(deadline)),
            Action::SwitchRequest {
                round,
                attempt,
                active,
                contributions,
                count,
            } => self.request_switch(round, attempt, active, contributions, count),
            Action::Commit {
                round,
                phase,
                result,
                record,
                targets,
            } => {
                let me = self.clone();
                tokio::spawn(async move {
                    match me.deliver(phase, &record, *result, &targets).await {
                        Ok(()) => me.feed(Event::Committed {
                            round,
                            now: Instant::now(),
                        }),
                        // the store refused the commit (a full disk, a failing one): the
                        // round cannot be kept, so the coordinator stops and says why instead
                        // of waiting for a commit that never comes
                        Err(e) => {
                            let why = format!(
                                "round {round} cannot be committed: {e:#}. The store keeps round \
                                 {} and everything before it (and round {round} too if the disk \
                                 failed after redb had made the commit durable: a commit that \
                                 reports an I/O error may or may not have happened); free the \
                                 space or mend the disk under {}, and start the coordinator \
                                 again: it redoes round {round} with the hospitals, or delivers \
                                 it if it was kept",
                                round - 1,
                                me.store_path.display(),
                            );
                            tracing::error!("{why}");
                            me.stop(why);
                        }
                    }
                });
            }
            // the federation completes these into SwitchRequest and Commit
            Action::RequestSwitch { round, .. } | Action::Deliver { round, .. } => {
                warn!(round, "an engine decision reached the shell uncompleted")
            }
            Action::SendStoredResults { to, after } => {
                let me = self.clone();
                // taken now, in the engine's order: a later round's delivery waits behind it
                let order = self.delivery_order(to);
                let held = order.clone().try_lock_owned().ok();
                tokio::spawn(async move {
                    let _turn = match held {
                        Some(g) => g,
                        None => order.lock_owned().await,
                    };
                    if let Err(e) = me.send_stored_results(to, after).await {
                        warn!(hospital = to, "sending the stored results: {e:#}");
                    }
                });
            }
            Action::Finish { to } => {
                let committed = lock(&self.federation_state).committed();
                if let Err(e) = self.store.set_phase(Phase::Finished { rounds: committed }) {
                    warn!("storing the phase: {e}");
                }
                let me = self.clone();
                tokio::spawn(async move {
                    for h in to {
                        if let Some(link) = me.link(h) {
                            let _ = link
                                .send(committed, Body::Federation(FederationMsg::Finished))
                                .await;
                        }
                    }
                    me.finished.store(true, Ordering::SeqCst);
                    me.finished_notify.notify_one();
                });
            }
        }
    }
}

/// A round's announcement, with the time left to its deadline.
fn round_start(deadline: Duration) -> Body {
    Body::Federation(FederationMsg::RoundStart {
        deadline_ms: deadline.as_millis() as u64,
    })
}

/// Aborts a task when dropped (the timer's companion ends with it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
