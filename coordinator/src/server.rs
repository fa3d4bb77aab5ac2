//! `coordinator run`: the tokio shell around the [`Engine`]. It accepts hospitals over QUIC with
//! mutual TLS, validates and stores what they send, folds updates and switching shares as they
//! stream in, and carries out the engine's actions. Every refusal is logged and audited; the
//! round goes on with the others.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use he_agg::aggregate::{Aggregator, Backend, BackendChoice, CpuBackend, Shape, select_backend};
use he_agg::ckks::{Ciphertext, wire};
use he_agg::multiparty::{PublicKeyGen, PublicKeySwitch, PublicKeySwitchShare, wire as shares};
use protocol::link::{Incoming, accept_connection, listen};
use protocol::message::{Body, Phase};
use protocol::tls::TlsFiles;
use protocol::{FederationId, Link, Party, ProtocolError};
use tracing::{info, warn};

use crate::config::FederationConfig;
use crate::engine::{Action, Engine, EngineConfig, Event, Restored};
use crate::he::HeSetup;
use crate::provision::Roster;
use crate::store::{PartyRecord, RoundRecord, Store, StoredResult, now_ms};

/// Longest wait, once finished, for the hospitals to read `Finished` and hang up.
const FINISH_DRAIN: Duration = Duration::from_secs(60);
/// Most items a single update or share stream may announce (a 100M-parameter model).
const MAX_ITEMS: u32 = 20_000;
/// Where a coordinator's files are.
#[derive(Clone, Debug)]
pub struct CoordinatorDir {
    pub dir: PathBuf,
}

impl CoordinatorDir {
    pub fn config(&self) -> PathBuf {
        self.dir.join("federation.toml")
    }
    pub fn roster(&self) -> PathBuf {
        self.dir.join("roster.toml")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.redb")
    }
    pub fn tls(&self) -> TlsFiles {
        TlsFiles::in_dir(&self.dir)
    }
}

#[derive(Default)]
struct RoundData {
    round: u64,
    /// items per update, fixed by the first update the round accepts
    items: Option<u32>,
    aggs: Vec<Aggregator>,
    plain: Vec<f64>,
    aggregate: Option<Arc<Vec<Ciphertext>>>,
    aggregate_bytes: Option<Arc<Vec<Vec<u8>>>>,
    attempt: u32,
    /// accumulated switching share per ciphertext (towards the consortium receiving key)
    switch_acc: Vec<Option<PublicKeySwitchShare>>,
    started_unix_ms: u64,
    aggregate_s: f64,
    switch_started: Option<Instant>,
    bytes_up: u64,
    bytes_down: u64,
}

pub struct Server {
    cfg: FederationConfig,
    federation: FederationId,
    roster: HashMap<String, Party>,
    store: Store,
    he: Option<HeSetup>,
    backend: Box<dyn Backend>,
    engine: Mutex<Engine>,
    links: Mutex<HashMap<u32, (u64, Link)>>,
    round: Mutex<RoundData>,
    next_conn: AtomicU64,
    finished: AtomicBool,
    finished_notify: tokio::sync::Notify,
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
            Some(HeSetup::new(&cfg, federation)?)
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
        let engine = Engine::new(
            EngineConfig {
                hospitals: cfg.federation.hospitals,
                threshold: cfg.threshold(),
                rounds: cfg.federation.rounds,
                min_hospitals: cfg.min_hospitals(),
                plaintext: cfg.he.plaintext,
                round_timeout: Duration::from_secs(cfg.federation.round_timeout_s),
            },
            restored.clone(),
            Instant::now(),
        );
        info!(federation = %federation, committed = restored.committed, "coordinator state opened");
        Ok(Arc::new(Self {
            roster: roster.parties(),
            cfg,
            federation,
            store,
            he,
            backend,
            engine: Mutex::new(engine),
            links: Mutex::new(HashMap::new()),
            round: Mutex::new(RoundData::default()),
            next_conn: AtomicU64::new(1),
            finished: AtomicBool::new(false),
            finished_notify: tokio::sync::Notify::new(),
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
        if lock(&self.engine).is_finished() {
            info!("all rounds are committed already; serving results to late hospitals");
        }
        let ticker = {
            let me = self.clone();
            tokio::spawn(async move {
                let mut iv = tokio::time::interval(Duration::from_secs(1));
                loop {
                    iv.tick().await;
                    me.feed(Event::Tick {
                        now: Instant::now(),
                    });
                }
            })
        };
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
        ticker.abort();
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
        Ok(())
    }

    /// Feeds the engine and carries out what it decides.
    fn feed(self: &Arc<Self>, event: Event) {
        let actions = lock(&self.engine).handle(event);
        for action in actions {
            self.execute(action);
        }
    }

    fn audit(&self, hospital: Option<u32>, round: u64, event: &str, detail: &str) {
        if let Err(e) = self.store.audit(hospital, round, event, detail) {
            warn!("audit log: {e}");
        }
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
                Body::Welcome {
                    index: to,
                    hospitals: self.cfg.federation.hospitals,
                    threshold: self.cfg.threshold(),
                    plaintext: self.cfg.he.plaintext,
                    phase,
                },
            ),
            Action::SendSetupKeys { to } => match self.setup_keys() {
                Ok(body) => {
                    for h in to {
                        self.send(h, 0, body.clone());
                    }
                }
                Err(e) => warn!("cannot make the collective public key: {e:#}"),
            },
            Action::RelayShares { to } => match self.store.shamir_for(to) {
                Ok(sealed) => self.send(to, 0, Body::RelayedShares { sealed }),
                Err(e) => warn!("relaying shares: {e}"),
            },
            Action::StartRound {
                round,
                to,
                deadline,
            } => {
                self.reset_round(round);
                for h in to {
                    self.send(
                        h,
                        round,
                        Body::RoundStart {
                            deadline_ms: deadline.as_millis() as u64,
                        },
                    );
                }
            }
            Action::AnnounceRound {
                round,
                to,
                deadline,
            } => {
                self.ensure_round(round);
                self.send(
                    to,
                    round,
                    Body::RoundStart {
                        deadline_ms: deadline.as_millis() as u64,
                    },
                )
            }
            Action::RequestSwitch {
                round,
                attempt,
                active,
                weights,
            } => {
                let me = self.clone();
                tokio::spawn(
                    async move { me.request_switch(round, attempt, active, weights).await },
                );
            }
            Action::Deliver {
                round,
                targets,
                weights,
                switchers,
            } => {
                let me = self.clone();
                tokio::spawn(async move {
                    match me.deliver(round, &targets, &weights, &switchers).await {
                        Ok(()) => me.feed(Event::Committed {
                            round,
                            now: Instant::now(),
                        }),
                        Err(e) => warn!(round, "delivering the round failed: {e:#}"),
                    }
                });
            }
            Action::SendStoredResult { to } => {
                let me = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = me.send_stored_result(to).await {
                        warn!(hospital = to, "sending the stored result: {e:#}");
                    }
                });
            }
            Action::Finish { to } => {
                let committed = lock(&self.engine).committed();
                if let Err(e) = self.store.set_phase(Phase::Finished { rounds: committed }) {
                    warn!("storing the phase: {e}");
                }
                let me = self.clone();
                tokio::spawn(async move {
                    for h in to {
                        if let Some(link) = me.link(h) {
                            let _ = link.send(committed, Body::Finished).await;
                        }
                    }
                    me.finished.store(true, Ordering::SeqCst);
                    me.finished_notify.notify_one();
                });
            }
        }
    }

    // ----- connections -----

    async fn connection(self: Arc<Self>, incoming: protocol::quinn::Incoming) {
        let remote = incoming.remote_address();
        let link = match accept_connection(incoming, self.federation, &self.roster).await {
            Ok(l) => l,
            Err(e) => {
                warn!(%remote, "connection refused: {e}");
                self.audit(None, 0, "connection-refused", &format!("{remote}: {e}"));
                return;
            }
        };
        let Party::Hospital(h) = link.peer() else {
            return;
        };
        // the first message is the hello
        let hello = tokio::time::timeout(Duration::from_secs(30), link.accept()).await;
        let last_round = match hello {
            Ok(Ok(Incoming { envelope, .. })) => match envelope.body {
                Body::Hello { last_round, .. } => last_round,
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
                        lock(&self.engine).current_round().unwrap_or(0),
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
            Body::KeyShares {
                public_key_share,
                exchange_key,
            } => self.key_shares(h, public_key_share, exchange_key),
            Body::ShamirShares { sealed } => self.shamir_shares(h, sealed),
            Body::SetupDone { receive_key } => self.setup_done(h, &receive_key),
            Body::Update { weight, count } => self.update(h, round, weight, count, msg).await,
            Body::SwitchShares { attempt, count } => {
                self.switch_shares(h, round, attempt, count, msg).await
            }
            Body::Metrics(m) => {
                // a hospital may report before the engine has heard of the commit it follows
                let latest = {
                    let e = lock(&self.engine);
                    e.committed().max(e.current_round().unwrap_or(0))
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

    // ----- setup -----

    fn key_shares(
        self: &Arc<Self>,
        h: u32,
        pk_share: Vec<u8>,
        exchange: [u8; 32],
    ) -> Result<(), String> {
        let he = self
            .he
            .as_ref()
            .ok_or("key shares in a plaintext federation")?;
        shares::decode_public_key_share(&he.ctx, &pk_share)
            .map_err(|e| format!("public key share: {e}"))?;
        if exchange == [0u8; 32] {
            return Err("all-zero exchange key".into());
        }
        let mut rec = self.store.party(h).map_err(|e| e.to_string())?;
        if rec.public_key_share.is_some() && rec.public_key_share.as_deref() != Some(&pk_share[..])
        {
            return Err(
                "key shares sent again with other keys; a hospital's keys never change".into(),
            );
        }
        rec.public_key_share = Some(pk_share);
        rec.exchange_key = Some(exchange);
        self.store.put_party(h, &rec).map_err(|e| e.to_string())?;
        self.feed(Event::KeySharesStored { hospital: h });
        Ok(())
    }

    /// The collective public key (made once from all N shares and stored) and every hospital's
    /// key-exchange key.
    fn setup_keys(&self) -> anyhow::Result<Body> {
        let he = self.he.as_ref().context("plaintext federation")?;
        let parties = self.store.parties()?;
        let pk = match self.store.collective_public_key()? {
            Some(b) => b,
            None => {
                let ckg = PublicKeyGen::new(&he.ctx, &he.crs);
                let mut acc = None;
                for (_, rec) in &parties {
                    let bytes = rec
                        .public_key_share
                        .as_ref()
                        .context("a key share is missing")?;
                    let share = shares::decode_public_key_share(&he.ctx, bytes)?;
                    match acc.as_mut() {
                        None => acc = Some(share),
                        Some(a) => ckg.aggregate(a, &share)?,
                    }
                }
                let pk = ckg.finalize(acc.context("no key shares")?);
                let bytes = wire::encode_public_key(&he.ctx, &pk);
                self.store.set_collective_public_key(&bytes)?;
                self.audit(
                    None,
                    0,
                    "collective-key",
                    &format!("from the shares of {} hospitals", parties.len()),
                );
                bytes
            }
        };
        Ok(Body::SetupKeys {
            collective_public_key: pk,
            exchange_keys: parties
                .iter()
                .filter_map(|(h, r)| r.exchange_key.map(|k| (*h, k)))
                .collect(),
        })
    }

    fn shamir_shares(self: &Arc<Self>, h: u32, sealed: Vec<(u32, Vec<u8>)>) -> Result<(), String> {
        let he = self
            .he
            .as_ref()
            .ok_or("Shamir shares in a plaintext federation")?;
        let n = self.cfg.federation.hospitals;
        let expected: BTreeSet<u32> = (1..=n).filter(|&j| j != h).collect();
        let got: BTreeSet<u32> = sealed.iter().map(|(to, _)| *to).collect();
        if got != expected || sealed.len() != expected.len() {
            return Err(format!(
                "sealed shares for {got:?}, expected exactly one for each of {expected:?}"
            ));
        }
        // the coordinator cannot open them, but can check their size: a Shamir share and a
        // contribution to the consortium receiving key
        let size = shares::shamir_share_len(&he.ctx)
            + he_agg::multiparty::group_key::CONTRIBUTION_LEN
            + he_agg::multiparty::sealed::SEAL_OVERHEAD;
        if let Some((to, s)) = sealed.iter().find(|(_, s)| s.len() != size) {
            return Err(format!(
                "sealed share for {to} has {} bytes, expected {size}",
                s.len()
            ));
        }
        if self.store.party(h).map_err(|e| e.to_string())?.dealt {
            return Err("shares dealt twice".into());
        }
        self.store
            .put_shamir(h, &sealed)
            .map_err(|e| e.to_string())?;
        self.feed(Event::SharesDealt { hospital: h });
        Ok(())
    }

    /// A hospital formed its threshold secret and derived the consortium receiving key: the
    /// first report fixes the key, every later one must match it (a hospital that dealt
    /// different contributions to different peers shows up here).
    fn setup_done(self: &Arc<Self>, h: u32, receive_key: &[u8]) -> Result<(), String> {
        let mut rec: PartyRecord = self.store.party(h).map_err(|e| e.to_string())?;
        if rec.public_key_share.is_none() {
            return Err("setup done before sending key shares".into());
        }
        if let Some(he) = self.he.as_ref() {
            wire::decode_public_key(&he.ctx, receive_key)
                .map_err(|e| format!("consortium receiving key: {e}"))?;
            match self.store.receive_key().map_err(|e| e.to_string())? {
                Some(k) if k != receive_key => {
                    self.audit(
                        Some(h),
                        0,
                        "receive-key-mismatch",
                        "derived another consortium receiving key than the others",
                    );
                    return Err("your consortium receiving key differs from the other hospitals': a hospital dealt inconsistent contributions; setup cannot complete".into());
                }
                Some(_) => {}
                None => self
                    .store
                    .set_receive_key(receive_key)
                    .map_err(|e| e.to_string())?,
            }
        }
        rec.setup_done = true;
        self.store.put_party(h, &rec).map_err(|e| e.to_string())?;
        self.feed(Event::SetupDone {
            hospital: h,
            now: Instant::now(),
        });
        Ok(())
    }

    // ----- rounds -----

    fn reset_round(&self, round: u64) {
        let mut r = lock(&self.round);
        *r = RoundData {
            round,
            started_unix_ms: now_ms(),
            ..Default::default()
        };
    }

    fn ensure_round(&self, round: u64) {
        if lock(&self.round).round != round {
            self.reset_round(round);
        }
    }

    async fn update(
        self: &Arc<Self>,
        h: u32,
        round: u64,
        weight: u64,
        count: u32,
        mut msg: Incoming,
    ) -> Result<(), String> {
        lock(&self.engine).accepts_update(h, round)?;
        if weight == 0 || weight > he_agg::aggregate::MAX_WEIGHT {
            return Err(format!("weight {weight} is outside 1..=2^40"));
        }
        if count == 0 || count > MAX_ITEMS {
            return Err(format!("{count} items announced (1..={MAX_ITEMS})"));
        }
        self.ensure_round(round);
        {
            let r = lock(&self.round);
            if let Some(items) = r.items
                && items != count
            {
                return Err(format!(
                    "{count} items where this round's updates have {items}"
                ));
            }
        }
        // read and validate everything first: a broken upload leaves the aggregate untouched
        let mut cts = Vec::new();
        let mut plain: Vec<Vec<f32>> = Vec::new();
        let mut bytes = 0u64;
        for i in 0..count {
            let item = msg
                .next_item()
                .await
                .map_err(|e| format!("item {i}: {e}"))?
                .ok_or(format!("stream ended after {i} of {count} items"))?;
            bytes += item.len() as u64;
            match &self.he {
                Some(he) => cts.push(
                    he.decode_update(&item)
                        .map_err(|e| format!("item {i}: {e}"))?,
                ),
                None => plain.push(
                    protocol::plain::decode_f32s(&item).map_err(|e| format!("item {i}: {e}"))?,
                ),
            }
        }
        if msg.next_item().await.map_err(|e| e.to_string())?.is_some() {
            return Err(format!("more than the {count} items announced"));
        }
        lock(&self.engine).accepts_update(h, round)?;
        {
            let mut r = lock(&self.round);
            if r.round != round {
                return Err(format!("round {round} ended while the update arrived"));
            }
            if r.items.is_some_and(|n| n != count) {
                return Err("item count changed".into());
            }
            r.items = Some(count);
            r.bytes_up += bytes;
            match &self.he {
                Some(he) => {
                    if r.aggs.is_empty() {
                        let shape = Shape {
                            level: he.plan.level,
                            degree: 1,
                            scale: he.plan.scale,
                        };
                        let batch = self.cfg.federation.hospitals as usize;
                        r.aggs = (0..count)
                            .map(|_| Aggregator::new(&he.ctx, self.backend.as_ref(), shape, batch))
                            .collect::<Result<_, _>>()
                            .map_err(|e| e.to_string())?;
                    }
                    for (agg, ct) in r.aggs.iter_mut().zip(cts) {
                        agg.push(ct, weight).map_err(|e| e.to_string())?;
                    }
                }
                None => {
                    let values: Vec<f32> = plain.concat();
                    if r.plain.is_empty() {
                        r.plain = vec![0.0; values.len()];
                    }
                    if r.plain.len() != values.len() {
                        return Err(format!(
                            "{} values where this round's updates have {}",
                            values.len(),
                            r.plain.len()
                        ));
                    }
                    for (s, v) in r.plain.iter_mut().zip(&values) {
                        *s += weight as f64 * f64::from(*v);
                    }
                }
            }
        }
        self.feed(Event::UpdateFolded {
            hospital: h,
            round,
            weight,
            now: Instant::now(),
        });
        Ok(())
    }

    /// Closes the aggregate (once) and streams it to every active hospital.
    async fn request_switch(
        self: Arc<Self>,
        round: u64,
        attempt: u32,
        active: Vec<u32>,
        weights: Vec<(u32, u64)>,
    ) {
        let Some(he) = self.he.as_ref() else { return };
        let bytes = {
            let mut r = lock(&self.round);
            if r.round != round {
                return;
            }
            if r.aggregate.is_none() {
                let t = Instant::now();
                let aggs = std::mem::take(&mut r.aggs);
                let cts: Result<Vec<Ciphertext>, _> =
                    aggs.into_iter().map(|a| a.finish()).collect();
                match cts {
                    Ok(cts) => {
                        r.aggregate_bytes = Some(Arc::new(
                            cts.iter()
                                .map(|c| wire::encode_ciphertext(&he.ctx, c))
                                .collect(),
                        ));
                        r.aggregate = Some(Arc::new(cts));
                        r.aggregate_s = t.elapsed().as_secs_f64();
                    }
                    Err(e) => {
                        warn!(round, "aggregation failed: {e}");
                        return;
                    }
                }
            }
            r.attempt = attempt;
            r.switch_acc.clear();
            r.switch_started = Some(Instant::now());
            r.aggregate_bytes.clone().expect("aggregate closed above")
        };
        let body = Body::SwitchRequest {
            attempt,
            active: active.clone(),
            weights: weights.iter().map(|w| w.1).collect(),
            count: bytes.len() as u32,
        };
        for h in active {
            let Some(link) = self.link(h) else { continue };
            let body = body.clone();
            let bytes = bytes.clone();
            let me = self.clone();
            tokio::spawn(async move {
                let sent = async {
                    let mut s = link.open(round, body).await?;
                    for b in bytes.iter() {
                        s.item(b).await?;
                    }
                    s.finish().await
                };
                match sent.await {
                    Ok(n) => lock(&me.round).bytes_down += n,
                    Err(e) => warn!(hospital = h, round, "switch request: {e}"),
                }
            });
        }
    }

    async fn switch_shares(
        self: &Arc<Self>,
        h: u32,
        round: u64,
        attempt: u32,
        count: u32,
        mut msg: Incoming,
    ) -> Result<(), String> {
        let he = self
            .he
            .as_ref()
            .ok_or("switching shares in a plaintext federation")?;
        lock(&self.engine).accepts_switch_shares(h, round, attempt)?;
        let expected = lock(&self.round)
            .aggregate
            .as_ref()
            .map(|a| a.len())
            .ok_or("no aggregate to switch")?;
        if count as usize != expected {
            return Err(format!(
                "{count} switching shares for an aggregate of {expected} ciphertexts"
            ));
        }
        let mut got = Vec::with_capacity(expected);
        let mut bytes = 0u64;
        for i in 0..count {
            let item = msg
                .next_item()
                .await
                .map_err(|e| format!("share {i}: {e}"))?
                .ok_or(format!("stream ended after {i} of {count} shares"))?;
            bytes += item.len() as u64;
            got.push(
                he.decode_switch_share(&item)
                    .map_err(|e| format!("share {i}: {e}"))?,
            );
        }
        lock(&self.engine).accepts_switch_shares(h, round, attempt)?;
        {
            let mut r = lock(&self.round);
            if r.round != round || r.attempt != attempt {
                return Err("the switching attempt changed while the shares arrived".into());
            }
            r.bytes_up += bytes;
            let pcks = PublicKeySwitch::new(
                &he.ctx,
                he.plan.flooding(&[1.0]).map_err(|e| e.to_string())?,
                1,
            );
            if r.switch_acc.is_empty() {
                r.switch_acc = vec![None; expected];
            }
            for (slot, share) in r.switch_acc.iter_mut().zip(got) {
                match slot {
                    None => *slot = Some(share),
                    Some(a) => pcks.aggregate(a, &share).map_err(|e| e.to_string())?,
                }
            }
        }
        self.feed(Event::SwitchSharesFolded {
            hospital: h,
            round,
            attempt,
            now: Instant::now(),
        });
        Ok(())
    }

    /// Makes the round's result, commits the round with it, then sends it to every target.
    async fn deliver(
        self: &Arc<Self>,
        round: u64,
        targets: &[u32],
        weights: &[(u32, u64)],
        switchers: &[u32],
    ) -> anyhow::Result<()> {
        let total_weight: u64 = weights.iter().map(|w| w.1).sum();
        let participants: Vec<u32> = weights.iter().map(|w| w.0).collect();
        let (result, record) = {
            let mut r = lock(&self.round);
            anyhow::ensure!(
                r.round == round,
                "round data of {} while delivering {round}",
                r.round
            );
            let items = match &self.he {
                Some(he) => {
                    let aggregate = r.aggregate.clone().context("no aggregate")?;
                    let pcks = PublicKeySwitch::new(&he.ctx, he.plan.flooding(&[1.0])?, 1);
                    let acc = std::mem::take(&mut r.switch_acc);
                    anyhow::ensure!(
                        acc.len() == aggregate.len(),
                        "switching shares for {} of {} ciphertexts",
                        acc.len(),
                        aggregate.len()
                    );
                    let mut items = Vec::with_capacity(acc.len());
                    for (ct, share) in aggregate.iter().zip(acc) {
                        let share = share.context("a ciphertext without switching shares")?;
                        items.push(wire::encode_ciphertext(&he.ctx, &pcks.finalize(ct, share)?));
                    }
                    items
                }
                None => protocol::plain::encode_f64s(&r.plain),
            };
            let result = StoredResult {
                round,
                total_weight,
                participants: participants.clone(),
                items,
            };
            let record = RoundRecord {
                round,
                participants: weights.to_vec(),
                total_weight,
                switchers: switchers.to_vec(),
                receivers: targets.to_vec(),
                started_unix_ms: r.started_unix_ms,
                committed_unix_ms: now_ms(),
                aggregate_s: r.aggregate_s,
                switch_s: r
                    .switch_started
                    .map(|t| t.elapsed().as_secs_f64())
                    .unwrap_or(0.0),
                bytes_up: r.bytes_up,
                bytes_down: r.bytes_down,
            };
            (result, record)
        };
        let phase = if round >= self.cfg.federation.rounds {
            Phase::Finished { rounds: round }
        } else {
            Phase::Training { committed: round }
        };
        self.store.commit_round(&record, &result, phase)?;
        info!(round, participants = ?participants, "committed round {round}");
        println!("HEAL-ROUND-COMMITTED {round}");
        // the same bytes go to every hospital, concurrently
        let result = Arc::new(result);
        let mut sends = tokio::task::JoinSet::new();
        for &t in targets {
            let (me, result) = (self.clone(), result.clone());
            sends.spawn(async move {
                if let Err(e) = me.send_result(t, &result).await {
                    warn!(hospital = t, round, "sending the result: {e:#}");
                }
            });
        }
        while sends.join_next().await.is_some() {}
        Ok(())
    }

    async fn send_result(&self, to: u32, res: &StoredResult) -> anyhow::Result<()> {
        let link = self.link(to).context("not connected")?;
        let mut s = link
            .open(
                res.round,
                Body::RoundResult {
                    total_weight: res.total_weight,
                    participants: res.participants.clone(),
                    count: res.items.len() as u32,
                },
            )
            .await?;
        for item in &res.items {
            s.item(item).await?;
        }
        s.finish().await?;
        Ok(())
    }

    async fn send_stored_result(&self, to: u32) -> anyhow::Result<()> {
        match self.store.latest_result()? {
            Some(res) => self.send_result(to, &res).await,
            None => {
                self.audit(
                    Some(to),
                    lock(&self.engine).committed(),
                    "no-result",
                    "missed the last round's re-encryption",
                );
                Ok(())
            }
        }
    }
}
