//! `coordinator run`: the tokio shell around the [`Federation`] state machine. It accepts
//! hospitals over QUIC with mutual TLS, reads, decodes and stores what they send, hands updates
//! and switching shares to the federation as they stream in, and carries out its actions. Every
//! refusal is logged and audited; the round goes on with the others.

use protocol::FederationMsg;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use he_agg::aggregate::{Backend, BackendChoice, CpuBackend, MAX_WEIGHT, select_backend};
use he_agg::ckks::wire;
use he_agg::multiparty::{PublicKeyGen, wire as shares};
use protocol::link::{Incoming, accept_connection, listen};
use protocol::message::{Body, Phase};
use protocol::transcript::{Contribution, ItemsDigest, PartyKeys, SealedShare, Verifier};
use protocol::{FederationId, Link, Party, ProtocolError};
use tracing::{info, warn};

use crate::config::FederationConfig;
use crate::federation::{EngineConfig, Event, Federation, Restored, Update};
use crate::he::HeSetup;
use crate::provision::Roster;
use crate::refusal_log::RefusalLog;
use crate::store::{PartyRecord, RoundRecord, Store, StoredResult, now_ms};

mod actions;
mod dir;
mod metrics;
mod rounds;
mod setup;

use rounds::UpdateHeader;

pub use dir::CoordinatorDir;

/// Longest wait, once finished, for the hospitals to read `Finished` and hang up.
const FINISH_DRAIN: Duration = Duration::from_secs(60);
pub struct Server {
    cfg: FederationConfig,
    federation: FederationId,
    roster: HashMap<String, Party>,
    /// checks the hospitals' signed key material against the consortium CA
    verifier: Verifier,
    store: Store,
    /// the store's file, for what an operator is told when it cannot be written
    store_path: std::path::PathBuf,
    he: Option<Arc<HeSetup>>,
    federation_state: Mutex<Federation>,
    links: Mutex<HashMap<u32, (u64, Link)>>,
    /// per hospital, held while results are sent to it: a hospital catching up gets every
    /// stored result before the next live one (it applies them in round order only)
    deliveries: Mutex<HashMap<u32, Arc<tokio::sync::Mutex<()>>>>,
    next_conn: AtomicU64,
    /// refused connections, audited in aggregate
    refusals: Mutex<RefusalLog>,
    /// connections and messages refused, for /metrics
    refused_total: AtomicU64,
    finished: AtomicBool,
    finished_notify: tokio::sync::Notify,
    /// why the coordinator must stop before the federation's end (a round it cannot commit):
    /// `serve` returns it as its error
    fatal: Mutex<Option<String>>,
    /// woken after the federation handled anything: its next deadline may have moved
    deadline_moved: tokio::sync::Notify,
    /// the round announced last and when, for /metrics' open round's age
    round_opened: Mutex<Option<(u64, std::time::Instant)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Server {
    /// Loads a provisioned coordinator directory and its state (resuming after a restart).
    pub fn open(dir: &CoordinatorDir) -> anyhow::Result<Arc<Self>> {
        Self::open_with_backend(dir, None)
    }

    /// [`Server::open`], aggregating on `backend` (default: `[coordinator] backend`).
    pub fn open_with_backend(
        dir: &CoordinatorDir,
        backend: Option<BackendChoice>,
    ) -> anyhow::Result<Arc<Self>> {
        let cfg = FederationConfig::from_file(&dir.config())?;
        // plaintext rounds add floats: there is nothing for a GPU to do
        let backend: Box<dyn Backend> = if cfg.he.plaintext {
            Box::new(CpuBackend)
        } else {
            let choice = backend.unwrap_or(cfg.coordinator.backend);
            select_backend(choice).with_context(|| format!("aggregation backend {choice}"))?
        };
        let roster = Roster::read(&dir.roster())?;
        let federation = roster.federation_id()?;
        let store = Store::open(&dir.state(), federation).context("opening the state store")?;
        let he = if cfg.he.plaintext {
            None
        } else {
            Some(Arc::new(crate::he::setup(&cfg, federation)?))
        };
        let phase = store.phase()?;
        let mut restored = Restored::default();
        match phase {
            Phase::Setup => {}
            Phase::Training { committed } => restored.committed = committed,
            Phase::Finished { rounds } => {
                restored.committed = rounds;
                restored.finished = true;
            }
        }
        restored.items = store.model_items()?;
        restored.pinned = store
            .switch_set()?
            .map(|(round, sum)| (round, sum.into_iter().collect()));
        for (h, rec) in store.parties()? {
            if rec.public_key_share.is_some() {
                restored.key_shares.insert(h);
            }
            if rec.dealt {
                restored.dealt.insert(h);
            }
            if rec.setup_done {
                restored.setup_done.insert(h);
            }
        }
        // the plan's bound, a whole number of samples (config checks it is at least 1)
        let max_total_weight = cfg.he.max_total_weight.min(MAX_WEIGHT as f64) as u64;
        let federation_state = Federation::new(
            EngineConfig {
                hospitals: cfg.federation.hospitals,
                threshold: cfg.threshold(),
                rounds: cfg.rounds(),
                min_hospitals: cfg.min_hospitals(),
                plaintext: cfg.he.plaintext,
                round_timeout: Duration::from_secs(cfg.federation.round_timeout_s),
                keep_results: cfg.federation.keep_results,
            },
            restored.clone(),
            Instant::now(),
            he.clone(),
            backend,
            max_total_weight,
        );
        info!(federation = %federation, committed = restored.committed, "coordinator state opened");
        let verifier = Verifier::from_files(&dir.tls()).context("the consortium CA")?;
        Ok(Arc::new(Self {
            roster: roster.parties(),
            verifier,
            cfg,
            federation,
            store,
            store_path: dir.state(),
            he,
            federation_state: Mutex::new(federation_state),
            links: Mutex::new(HashMap::new()),
            deliveries: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            refusals: Mutex::new(RefusalLog::default()),
            refused_total: AtomicU64::new(0),
            finished: AtomicBool::new(false),
            finished_notify: tokio::sync::Notify::new(),
            fatal: Mutex::new(None),
            round_opened: Mutex::new(None),
            deadline_moved: tokio::sync::Notify::new(),
        }))
    }

    /// Listens and serves until the last round is committed and announced.
    pub async fn serve(
        self: Arc<Self>,
        dir: &CoordinatorDir,
        listen_addr: std::net::SocketAddr,
    ) -> anyhow::Result<()> {
        let endpoint = listen(listen_addr, &dir.tls()).context("cannot listen")?;
        info!(address = %endpoint.local_addr()?, "listening (QUIC, TLS 1.3, client certificates required)");
        if lock(&self.federation_state).is_finished() {
            info!("all rounds are committed already; serving results to late hospitals");
        }
        if let Some(addr) = self.cfg.coordinator.metrics_addr()? {
            let me = self.clone();
            match ops::prometheus::serve(addr, std::sync::Arc::new(move || me.metrics_text())).await
            {
                Ok(bound) => {
                    info!(address = %bound, "metrics for Prometheus at http://{bound}/metrics")
                }
                // the federation does not depend on it: say why, and go on
                Err(e) => {
                    warn!("metrics endpoint not started on {addr}: {e} ([coordinator] metrics)")
                }
            }
        }
        let timers = self.clone().spawn_timers();
        loop {
            tokio::select! {
                incoming = endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    let me = self.clone();
                    tokio::spawn(async move { me.connection(incoming).await });
                }
                _ = self.finished_notify.notified() => break,
            }
        }
        timers.abort();
        if let Some(why) = lock(&self.fatal).take() {
            // nothing is half-written: the store's last transaction is whole, and the round
            // under way is redone from it when the coordinator starts again
            endpoint.close(0u32.into(), b"coordinator stopped");
            anyhow::bail!("{why}");
        }
        // Let the last messages reach the hospitals: each closes its link once it has read
        // `Finished` (a busy one may still be evaluating); bounded so a silent peer cannot hold
        // the coordinator, which then closes with a reason that also says "finished".
        let drained = async {
            while !lock(&self.links).is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        if tokio::time::timeout(FINISH_DRAIN, drained).await.is_err() {
            warn!("hospitals still connected after {FINISH_DRAIN:?}: closing anyway");
        }
        endpoint.close(0u32.into(), protocol::error::FINISHED_REASON);
        endpoint.wait_idle().await;
        info!("finished");
        ops::prometheus::hold(self.cfg.coordinator.linger(), "[coordinator]").await;
        Ok(())
    }

    /// Stops serving with `why` (returned by `serve`).
    fn stop(&self, why: String) {
        lock(&self.fatal).get_or_insert(why);
        self.finished_notify.notify_one();
    }

    fn audit(&self, hospital: Option<u32>, round: u64, event: &str, detail: &str) {
        if let Err(e) = self.store.audit(hospital, round, event, detail) {
            warn!("audit log: {e}");
        }
    }

    /// Hospital `h`'s turn to be sent results (see `deliveries`).
    fn delivery_order(&self, h: u32) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.deliveries).entry(h).or_default().clone()
    }

    fn link(&self, h: u32) -> Option<Link> {
        lock(&self.links).get(&h).map(|(_, l)| l.clone())
    }

    /// Sends a small message in the background.
    fn send(self: &Arc<Self>, to: u32, round: u64, body: Body) {
        if let Some(link) = self.link(to) {
            let kind = body.kind();
            tokio::spawn(async move {
                if let Err(e) = link.send(round, body).await {
                    warn!(hospital = to, "sending {kind}: {e}");
                }
            });
        }
    }

    // ----- connections -----

    async fn connection(self: Arc<Self>, incoming: protocol::quinn::Incoming) {
        let remote = incoming.remote_address();
        let link = match accept_connection(incoming, self.federation, &self.roster).await {
            Ok(l) => l,
            Err(e) => {
                // anyone can knock: counted, and audited at most once a minute
                tracing::debug!(%remote, "connection refused: {e}");
                self.refused_total.fetch_add(1, Ordering::Relaxed);
                let row = lock(&self.refusals).refused(Instant::now(), format!("{remote}: {e}"));
                if let Some(row) = row {
                    warn!("connection refused: {row}");
                    self.audit(None, 0, "connection-refused", &row);
                }
                return;
            }
        };
        let Party::Hospital(h) = link.peer() else {
            return;
        };
        // the first message is the hello
        let hello = tokio::time::timeout(Duration::from_secs(30), link.accept()).await;
        let (last_round, items) = match hello {
            Ok(Ok(Incoming { envelope, .. })) => match envelope.body {
                Body::Federation(FederationMsg::Hello {
                    last_round, items, ..
                }) => (last_round, items),
                other => {
                    self.refuse(
                        &link,
                        h,
                        envelope.round,
                        &format!("{} before hello", other.kind()),
                    )
                    .await;
                    link.close("hello expected");
                    return;
                }
            },
            Ok(Err(e)) => {
                warn!(hospital = h, "no hello: {e}");
                link.close("hello expected");
                return;
            }
            Err(_) => {
                link.close("hello expected");
                return;
            }
        };
        let id = self.next_conn.fetch_add(1, Ordering::SeqCst);
        if let Some((_, old)) = lock(&self.links).insert(h, (id, link.clone())) {
            old.close("replaced by a new connection");
        }
        info!(hospital = h, %remote, last_round, "hospital connected");
        self.feed(Event::Joined {
            hospital: h,
            last_round,
            items,
            now: Instant::now(),
        });
        loop {
            match link.accept().await {
                Ok(msg) => {
                    let me = self.clone();
                    let link = link.clone();
                    // each message on its own task: a large upload does not hold up the others
                    tokio::spawn(async move { me.message(&link, h, msg).await });
                }
                Err(ProtocolError::Connection(reason)) => {
                    info!(hospital = h, "connection ended: {reason}");
                    break;
                }
                Err(ProtocolError::PeerFinished) => {
                    info!(hospital = h, "the hospital hung up after the end");
                    break;
                }
                Err(e) => {
                    warn!(hospital = h, "refused a message: {e}");
                    self.audit(
                        Some(h),
                        lock(&self.federation_state).current_round().unwrap_or(0),
                        "refused",
                        &e.to_string(),
                    );
                }
            }
        }
        let current = lock(&self.links).get(&h).map(|(i, _)| *i);
        if current == Some(id) {
            lock(&self.links).remove(&h);
            self.feed(Event::Left {
                hospital: h,
                now: Instant::now(),
            });
        }
    }

    async fn refuse(self: &Arc<Self>, link: &Link, h: u32, round: u64, reason: &str) {
        warn!(hospital = h, round, "refused: {reason}");
        self.refused_total.fetch_add(1, Ordering::Relaxed);
        self.audit(Some(h), round, "refused", reason);
        let _ = link
            .send(
                round,
                Body::Refused {
                    reason: reason.to_string(),
                },
            )
            .await;
    }

    async fn message(self: Arc<Self>, link: &Link, h: u32, msg: Incoming) {
        let round = msg.envelope.round;
        let result = match msg.envelope.body.clone() {
            Body::Federation(FederationMsg::KeyShares {
                public_key_share,
                exchange_key,
                certificate,
                signature,
            }) => self.key_shares(
                h,
                PartyKeys {
                    hospital: h,
                    public_key_share,
                    exchange_key,
                    certificate,
                    signature,
                },
            ),
            Body::Federation(FederationMsg::ShamirShares { sealed }) => {
                self.shamir_shares(h, sealed)
            }
            Body::Federation(FederationMsg::SetupDone {
                receive_key,
                signature,
            }) => self.setup_done(h, &receive_key, &signature),
            Body::Federation(FederationMsg::Update {
                weight,
                count,
                a_seed,
                signature,
            }) => {
                let header = UpdateHeader {
                    weight,
                    count,
                    a_seed,
                    signature,
                };
                self.update(h, round, header, msg).await
            }
            Body::Federation(FederationMsg::SwitchShares { attempt, count }) => {
                self.switch_shares(h, round, attempt, count, msg).await
            }
            Body::Federation(FederationMsg::Alarm { reason }) => {
                self.feed(Event::Alarm {
                    hospital: h,
                    round,
                    reason,
                });
                Ok(())
            }
            Body::Federation(FederationMsg::Metrics(m)) => {
                // a hospital may report before the engine has heard of the commit it follows
                let latest = {
                    let f = lock(&self.federation_state);
                    f.committed().max(f.current_round().unwrap_or(0))
                };
                if m.round != round || m.round == 0 || m.round > latest {
                    Err(format!(
                        "metrics for round {} (envelope round {round}, latest round {latest})",
                        m.round
                    ))
                } else {
                    self.store.put_metrics(h, &m).map_err(|e| e.to_string())
                }
            }
            other => Err(format!(
                "{} is not a message a hospital sends",
                other.kind()
            )),
        };
        if let Err(reason) = result {
            self.refuse(link, h, round, &reason).await;
        }
    }
}
