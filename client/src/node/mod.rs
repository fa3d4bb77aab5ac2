//! `client run`: the hospital node. It connects to the coordinator with its kit (mutual TLS over
//! QUIC), takes part in setup (its key share, sealed Shamir shares of it, its threshold secret),
//! then in every round: trains from the global model it holds, encrypts its update under the
//! collective key and streams it up, contributes public-key-switching shares when asked, and
//! decrypts the re-encrypted aggregate it receives, applies the server step, evaluates, and
//! reports. It reconnects by itself when the connection drops.

pub mod contribute;
mod data;
mod evaluation;
mod evaluation_pool;
mod held_setup;
pub mod keyholder;
mod keys;
mod metrics;
mod participant;
mod privacy;
mod result;
mod result_noise;
mod scaffold;
mod session;
mod setup;
mod site;
mod state;
mod switching;
mod trace;
mod trust;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tracing::{info, warn};

pub use site::SiteConfig;

use session::{Node, SessionEnd};

/// Runs the node of `site` (a site TOML) with its outputs and state under `out`.
pub fn run(site: &Path, out: &Path) -> anyhow::Result<()> {
    let cfg = SiteConfig::load(site)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut node = Node::open(cfg, site, out).await?;
        if let Some(addr) = node.cfg.node.metrics_addr()? {
            node.metrics.serve(addr, out).await;
        }
        let patience = Duration::from_secs(node.cfg.node.reconnect_s);
        let mut last_contact = Instant::now();
        let mut backoff = Duration::from_millis(200);
        loop {
            match node.connect().await {
                Ok(link) => {
                    backoff = Duration::from_millis(200);
                    node.metrics.connected(true);
                    let ended = node.session(&link).await;
                    node.metrics.connected(false);
                    match ended {
                        Ok(SessionEnd::Finished) => {
                            link.close("finished");
                            node.finish()?;
                            ops::prometheus::hold(node.cfg.node.linger(), "[node]").await;
                            return Ok(());
                        }
                        Ok(SessionEnd::Disconnected(reason)) => {
                            warn!("disconnected: {reason}; reconnecting")
                        }
                        Err(e) if trust::distrusted(&e) => {
                            link.close("refused");
                            return Err(e);
                        }
                        Err(e) if diverged(&e) => {
                            // the same model, data and seed diverge again: retrying the round
                            // only burns the hospital's CPU until the round's deadline
                            link.close("training diverged");
                            return Err(e.context(
                                "local training diverged; the node stops rather than retry the \
                                 same round (the federation goes on with the others): lower \
                                 [train] lr, or check [model.init]'s backbone on this data, \
                                 and start the node again",
                            ));
                        }
                        Err(e) if past_budget(&e) => {
                            // asked again after a reconnect, it would refuse again
                            link.close("privacy budget spent");
                            return Err(e.context(
                                "the node stops: the federation goes on with the others, and \
                                 this hospital's model is the last one it applied",
                            ));
                        }
                        Err(e) if finished_ahead(&e) => {
                            // its model is not the federation's: nothing to retry, nothing to
                            // write as final
                            link.close("finished without this hospital");
                            return Err(e);
                        }
                        Err(e) if peer_finished(&e) => {
                            info!("the coordinator closed: the federation is finished");
                            node.finish()?;
                            ops::prometheus::hold(node.cfg.node.linger(), "[node]").await;
                            return Ok(());
                        }
                        Err(e) => {
                            // logged before the close: whoever sees the link close can read why
                            warn!("session failed: {e:#}; reconnecting");
                            link.close("error");
                        }
                    }
                    last_contact = Instant::now();
                }
                Err(e) => {
                    if last_contact.elapsed() > patience {
                        bail!("no coordinator for {} s: {e}", patience.as_secs());
                    }
                    info!("coordinator not reachable yet: {e}");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    })
}

/// Whether `e` is local training that diverged (a NaN or infinite loss).
fn diverged(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<training::TrainError>(),
            Some(training::TrainError::Diverged { .. })
        )
    })
}

/// Whether `e` is a round past this hospital's privacy budget.
fn past_budget(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<participant::ParticipantError>(),
            Some(participant::ParticipantError::PastBudget { .. })
        )
    })
}

/// Whether `e` is the federation finishing at a round this hospital's model has not reached.
fn finished_ahead(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<participant::ParticipantError>(),
            Some(participant::ParticipantError::FinishedAhead { .. })
        )
    })
}

/// Whether `e` says the coordinator hung up because the federation is finished (the node may
/// have been busy when the final `Finished` message came).
fn peer_finished(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<protocol::error::ProtocolError>(),
            Some(protocol::error::ProtocolError::PeerFinished)
        )
    })
}

/// Where the node writes.
#[derive(Clone, Debug)]
pub struct NodeDirs {
    pub out: PathBuf,
    pub state: PathBuf,
}

impl NodeDirs {
    pub fn new(out: &Path) -> Self {
        Self {
            out: out.to_path_buf(),
            state: out.join("state"),
        }
    }
}
