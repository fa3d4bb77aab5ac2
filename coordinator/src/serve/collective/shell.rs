//! The tokio shell of mode (a) serving: accepts the federation's mTLS QUIC connections, feeds
//! keyholders' and requesters' messages to [`ServingEngine`] and [`ServedKeys`], and carries out
//! the engine's actions (sending, making the keys, relaying requests to the keyholders that
//! evaluate them, delivering). The state sits behind one mutex that is never held across an
//! `await`; head training's steps run on blocking threads.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use he_agg::infer::threshold::served_combiner;
use protocol::link::{Link, accept_connection, listen};
use protocol::serve::collective::{
    CollectiveRequest, EvaluateRequest, MAX_COLLECTIVE_CIPHERTEXTS, MAX_COLLECTIVE_IMAGES,
    ResultSwitchRequest,
};
use protocol::serve::head::{HeadRefreshRequest, HeadTraining};
use protocol::serve::released::InferResult;
use protocol::tls::TlsFiles;
use protocol::{Body, FederationId, Incoming, Party};
use tracing::{info, warn};

use super::head::{HeadRequest, HeadRequests, HeadRun, check_contribution, decode_chunks};
use super::keys::ServedKeys;
use super::requests::{SwitchState, decode_images};
use super::{ServingAction, ServingConfig, ServingEngine, ServingEvent};
use crate::store::Store;

/// How the server runs.
#[derive(Clone, Debug)]
pub struct CollectiveOptions {
    pub serving: ServingConfig,
    /// Most images in one request.
    pub max_images: u32,
    /// Time a peer gets to deliver each item.
    pub item_timeout: Duration,
    /// Head training instead of serving a model: how the head is trained.
    pub head: Option<HeadTraining>,
    /// Most examples one contribution may carry (they are held in memory while trained on).
    pub max_head_examples: u64,
}

/// A request being served: who asked, on which connection, what it signed (mode a), and its
/// switch.
struct Served {
    link: Link,
    request_id: u64,
    requester: u32,
    signed: Option<CollectiveRequest>,
    evaluate_us: u64,
    validate_us: u64,
    switch: SwitchState,
}

struct State {
    engine: ServingEngine,
    keys: ServedKeys,
    keyholders: HashMap<u32, Link>,
    requests: HashMap<u64, Served>,
    next_request: u64,
    /// requests admitted and still being read or evaluated (not yet in the engine)
    reading: usize,
    /// head training: the run (taken out while a step is computed), its contributor's
    /// connection, and which engine requests are its refreshes or its delivery
    head: Option<HeadRun>,
    head_link: Option<Link>,
    head_requests: HeadRequests,
    /// a run is being read, set up or stepped (no second contribution meanwhile)
    head_busy: bool,
    /// the run's next step is due
    step_wanted: bool,
    /// events the shell feeds itself after acting (the coordinator's own zero head)
    follow: Vec<ServingEvent>,
}

/// One admitted request being read or evaluated: counted in [`State::reading`] until dropped.
struct Reading<'a>(&'a CollectiveServer);

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.reading = st.reading.saturating_sub(1);
    }
}

/// A message ready to go: a header and its items.
struct Outgoing {
    link: Link,
    body: Body,
    items: Vec<Vec<u8>>,
}

/// The mode (a) server.
pub struct CollectiveServer {
    federation: FederationId,
    roster: HashMap<String, Party>,
    tls: TlsFiles,
    options: CollectiveOptions,
    store: Option<Store>,
    /// where the served state is saved (with `store`)
    dir: Option<std::path::PathBuf>,
    state: Mutex<State>,
}

impl CollectiveServer {
    /// A server; `persist` (a store and a directory) saves the served state and `restored`
    /// serves a saved one.
    pub fn new(
        federation: FederationId,
        roster: HashMap<String, Party>,
        tls: TlsFiles,
        options: CollectiveOptions,
        persist: Option<(Store, std::path::PathBuf)>,
        restored: Option<ServedKeys>,
    ) -> Arc<Self> {
        let fresh = |o: &CollectiveOptions| match &o.head {
            Some(training) => {
                ServedKeys::for_head(federation, o.serving.hospitals, training.clone())
            }
            None => ServedKeys::new(federation, o.serving.hospitals, o.max_images),
        };
        let (engine, keys) = match restored {
            Some(keys) => (ServingEngine::restored(options.serving.clone()), keys),
            None => (ServingEngine::new(options.serving.clone()), fresh(&options)),
        };
        let (store, dir) = persist.unzip();
        let state = State {
            engine,
            keys,
            keyholders: HashMap::new(),
            requests: HashMap::new(),
            next_request: 1,
            reading: 0,
            head: None,
            head_link: None,
            head_requests: HeadRequests::new(),
            head_busy: false,
            step_wanted: false,
            follow: Vec::new(),
        };
        Arc::new(Self {
            federation,
            roster,
            tls,
            options,
            store,
            dir,
            state: Mutex::new(state),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // a panic elsewhere must not take serving down with a poisoned lock
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Binds the QUIC endpoint (port 0: any free port).
    pub fn bind(&self, addr: SocketAddr) -> anyhow::Result<protocol::quinn::Endpoint> {
        listen(addr, &self.tls).with_context(|| format!("listening on {addr}"))
    }

    /// Serves connections until the endpoint is closed.
    pub async fn serve(self: Arc<Self>, endpoint: protocol::quinn::Endpoint) -> anyhow::Result<()> {
        info!(
            addr = %endpoint.local_addr()?,
            hospitals = self.options.serving.hospitals,
            threshold = self.options.serving.threshold,
            "serving mode (a): waiting for every keyholder"
        );
        let ticker = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                ticker
                    .event(ServingEvent::Tick {
                        now: Instant::now(),
                    })
                    .await;
            }
        });
        while let Some(incoming) = endpoint.accept().await {
            let server = self.clone();
            tokio::spawn(async move {
                match accept_connection(incoming, server.federation, &server.roster).await {
                    Ok(link) => {
                        let link = link.with_timeout(server.options.item_timeout);
                        server.connection(link).await;
                    }
                    Err(e) => warn!("connection refused: {e}"),
                }
            });
        }
        Ok(())
    }

    /// Feeds an event and carries out what the engine decides.
    async fn event(&self, event: ServingEvent) {
        self.drive(vec![event]).await
    }

    /// Feeds events (and those acting on them leads to, and a head's due steps) in turn.
    async fn drive(&self, mut queue: Vec<ServingEvent>) {
        loop {
            let (out, step) = {
                let mut st = self.lock();
                let out = match queue.pop() {
                    Some(event) => {
                        let actions = st.engine.handle(event);
                        tokio::task::block_in_place(|| self.act(&mut st, actions))
                    }
                    None => Vec::new(),
                };
                queue.append(&mut st.follow);
                (out, std::mem::take(&mut st.step_wanted))
            };
            send_all(out).await;
            if step && let Some(e) = self.step().await {
                queue.push(e);
            }
            if queue.is_empty() {
                return;
            }
        }
    }

    /// Computes the head's next step on a blocking thread; the event that asks for its refresh.
    async fn step(&self) -> Option<ServingEvent> {
        let mut run = self.lock().head.take()?;
        let outcome = tokio::task::spawn_blocking(move || {
            let r = run.compute_step();
            (run, r)
        })
        .await;
        let mut st = self.lock();
        let (run, result) = match outcome {
            Ok(x) => x,
            Err(e) => {
                self.abort_head(&mut st, &format!("a training step failed: {e}"));
                return None;
            }
        };
        let contributor = run.contributor;
        let (steps, done) = run.steps();
        st.head = Some(run);
        if let Err(e) = result {
            self.abort_head(&mut st, &format!("step {} failed: {e}", done + 1));
            return None;
        }
        let id = st.next_request;
        st.next_request += 1;
        st.head_requests
            .insert(id, HeadRequest::Refresh { step: done });
        if (done + 1) % 10 == 0 || done + 1 == steps {
            info!(
                step = done + 1,
                steps, "head training step computed; refreshing"
            );
        }
        Some(ServingEvent::Ready {
            request: id,
            requester: contributor,
            now: Instant::now(),
        })
    }

    /// Ends a head run that cannot go on, telling its contributor why.
    fn abort_head(&self, st: &mut State, reason: &str) {
        warn!("head training stopped: {reason}");
        self.audit(None, "head-training-stopped", reason);
        st.head = None;
        st.head_busy = false;
        st.head_requests.clear();
        if let Some(link) = st.head_link.take() {
            let reason = reason.to_string();
            tokio::spawn(async move {
                let _ = link.send(0, Body::Refused { reason }).await;
            });
        }
    }

    /// After a refresh: the next step, or the trained head's switch to the contributor's key.
    fn refreshed(&self, st: &mut State, request: u64, step: usize) {
        st.head_requests.remove(&request);
        let Some(run) = st.head.as_mut() else {
            return;
        };
        let count = run.pending().len();
        if let Err(e) = run.finish_refresh() {
            self.abort_head(st, &format!("the refresh of step {} failed: {e}", step + 1));
            return;
        }
        self.audit(
            Some(run.contributor),
            "head-refresh",
            &format!(
                "step {} of {}: {count} ciphertexts refreshed",
                step + 1,
                run.steps().0
            ),
        );
        if !run.finished() {
            st.step_wanted = true;
            return;
        }
        let f = run.figures.clone();
        info!(
            steps = run.steps().0,
            step_s = f.step.as_secs_f64(),
            refresh_s = f.refresh.as_secs_f64(),
            refreshes = f.refreshes,
            share_mb = f.share_bytes as f64 / 1e6,
            "head trained; switching it to the contributor's key"
        );
        let (n, t) = (
            self.options.serving.hospitals as usize,
            self.options.serving.threshold as usize,
        );
        let pcks = match run.plan().head_switch(n, t) {
            Ok(p) => p,
            Err(e) => {
                self.abort_head(st, &format!("cannot switch the head: {e}"));
                return;
            }
        };
        let switch = SwitchState::new(
            run.context().clone(),
            pcks,
            run.receiver_key.clone(),
            run.weights(),
        );
        let (contributor, request_id) = (run.contributor, run.request_id);
        let Some(link) = st.head_link.take() else {
            self.abort_head(st, "the contributor is gone");
            return;
        };
        let id = st.next_request;
        st.next_request += 1;
        st.head_requests.insert(id, HeadRequest::Deliver);
        st.requests.insert(
            id,
            Served {
                link,
                request_id,
                requester: contributor,
                signed: None,
                evaluate_us: f.step.as_micros() as u64,
                validate_us: f.refresh.as_micros() as u64,
                switch,
            },
        );
        st.follow.push(ServingEvent::Ready {
            request: id,
            requester: contributor,
            now: Instant::now(),
        });
    }

    /// Turns actions into messages (making keys and finishing switches on the way).
    fn act(&self, st: &mut State, actions: Vec<ServingAction>) -> Vec<Outgoing> {
        let mut out = Vec::new();
        for action in actions {
            match action {
                ServingAction::StartSetup { to } => {
                    for h in to {
                        if let Some(link) = st.keyholders.get(&h) {
                            out.push(Outgoing {
                                link: link.clone(),
                                body: Body::CollectiveStart {
                                    hospitals: self.options.serving.hospitals,
                                    threshold: self.options.serving.threshold,
                                },
                                items: vec![],
                            });
                        }
                    }
                }
                ServingAction::SendRound1 { to } => {
                    for h in to {
                        let (Some(link), Ok((body, items))) =
                            (st.keyholders.get(&h), st.keys.round1_result(h))
                        else {
                            continue;
                        };
                        out.push(Outgoing {
                            link: link.clone(),
                            body,
                            items,
                        });
                    }
                }
                ServingAction::MakeKeys => {
                    let t = Instant::now();
                    match st.keys.make_keys() {
                        Ok(()) => info!(
                            seconds = t.elapsed().as_secs_f64(),
                            "evaluation keys made from every keyholder's shares"
                        ),
                        Err(e) => warn!("cannot make the evaluation keys: {e}"),
                    }
                }
                ServingAction::SendKeys { to } => {
                    let Some((body, items)) = st.keys.keyholder_keys() else {
                        continue;
                    };
                    for h in to {
                        if let Some(link) = st.keyholders.get(&h) {
                            info!(hospital = h, "sending the evaluation keys' sums");
                            out.push(Outgoing {
                                link: link.clone(),
                                body: body.clone(),
                                items: items.clone(),
                            });
                        }
                    }
                }
                ServingAction::RequestSwitch {
                    request,
                    attempt,
                    requester,
                    active,
                } if matches!(
                    st.head_requests.get(&request),
                    Some(HeadRequest::Refresh { .. })
                ) =>
                {
                    let (Some(run), Some(setup)) = (st.head.as_ref(), st.keys.setup()) else {
                        continue;
                    };
                    let (steps, done) = run.steps();
                    let items = run.pending().to_vec();
                    for h in &active {
                        if let Some(link) = st.keyholders.get(h) {
                            out.push(Outgoing {
                                link: link.clone(),
                                body: Body::HeadRefresh(HeadRefreshRequest {
                                    setup,
                                    request,
                                    attempt,
                                    step: done as u64 + 1,
                                    steps: steps as u64,
                                    contributor: requester,
                                    active: active.clone(),
                                    count: items.len() as u32,
                                }),
                                items: items.clone(),
                            });
                        }
                    }
                }
                ServingAction::RequestSwitch {
                    request,
                    attempt,
                    requester,
                    active,
                } => {
                    let (Some(served), Some(setup)) = (st.requests.get(&request), st.keys.setup())
                    else {
                        continue;
                    };
                    // mode (a): the signed request itself, which each keyholder evaluates; a
                    // trained head: the head, switched to its contributor
                    let body = match &served.signed {
                        Some(signed) => Body::CollectiveEvaluate(EvaluateRequest {
                            setup,
                            request,
                            attempt,
                            active: active.clone(),
                            requester,
                            signed: signed.clone(),
                        }),
                        None => Body::ResultSwitch(ResultSwitchRequest {
                            setup,
                            request,
                            attempt,
                            requester,
                            active: active.clone(),
                            count: served.switch.count() as u32,
                        }),
                    };
                    for h in &active {
                        if let Some(link) = st.keyholders.get(h) {
                            out.push(Outgoing {
                                link: link.clone(),
                                body: body.clone(),
                                items: served.switch.items.clone(),
                            });
                        }
                    }
                }
                ServingAction::Deliver { request, .. }
                    if matches!(
                        st.head_requests.get(&request),
                        Some(HeadRequest::Refresh { .. })
                    ) =>
                {
                    if let Some(HeadRequest::Refresh { step }) = st.head_requests.get(&request) {
                        let step = *step;
                        self.refreshed(st, request, step);
                    }
                }
                ServingAction::Deliver { request, requester } => {
                    if st.head_requests.remove(&request).is_some() {
                        // the trained head reaches its contributor: the run is over
                        self.audit(
                            Some(requester),
                            "head-delivered",
                            "the trained head, switched to the contributor's key",
                        );
                        st.head = None;
                        st.head_busy = false;
                    }
                    let Some(served) = st.requests.remove(&request) else {
                        continue;
                    };
                    let (link, request_id) = (served.link.clone(), served.request_id);
                    let evaluate_us = match served.signed {
                        Some(_) => served.switch.evaluate_us,
                        None => served.evaluate_us,
                    };
                    match served.switch.finish() {
                        Ok(results) => {
                            info!(
                                request,
                                requester, "results switched to the requester's key"
                            );
                            out.push(Outgoing {
                                link,
                                body: Body::InferResult(InferResult {
                                    request_id,
                                    evaluate_us,
                                    validate_us: served.validate_us,
                                    count: results.len() as u32,
                                }),
                                items: results,
                            });
                        }
                        Err(e) => out.push(Outgoing {
                            link,
                            body: Body::Refused {
                                reason: format!("the switch failed: {e}"),
                            },
                            items: vec![],
                        }),
                    }
                }
                ServingAction::Refuse { request, reason }
                    if st.head_requests.contains_key(&request) =>
                {
                    st.requests.remove(&request);
                    self.abort_head(st, &reason);
                }
                ServingAction::Refuse { request, reason } => {
                    if let Some(served) = st.requests.remove(&request) {
                        warn!(request, requester = served.requester, "refused: {reason}");
                        out.push(Outgoing {
                            link: served.link,
                            body: Body::Refused { reason },
                            items: vec![],
                        });
                    }
                }
                ServingAction::Audit {
                    hospital,
                    event,
                    detail,
                } => self.audit(hospital, event, &detail),
                ServingAction::Persist => self.save(st),
            }
        }
        out
    }

    /// Saves the keys once serving starts, so a restart serves the same setup.
    fn save(&self, st: &mut State) {
        let (Some(store), Some(dir)) = (&self.store, &self.dir) else {
            return;
        };
        let Some(state) = st.keys.take_unsaved(self.options.serving.threshold) else {
            return;
        };
        let t = Instant::now();
        match super::saved::save(dir, store, &state) {
            Ok(()) => info!(
                seconds = t.elapsed().as_secs_f64(),
                path = %super::saved::path(dir).display(),
                "served keys saved"
            ),
            Err(e) => warn!("cannot save the served state (a restart will need a new setup): {e}"),
        }
    }

    fn audit(&self, hospital: Option<u32>, event: &str, detail: &str) {
        info!(?hospital, event, "{detail}");
        if let Some(store) = &self.store
            && let Err(e) = store.audit(hospital, 0, event, detail)
        {
            warn!("cannot write the audit log: {e}");
        }
    }

    async fn connection(self: Arc<Self>, link: Link) {
        let peer = link.peer();
        let Party::Hospital(hospital) = peer else {
            link.close("hospitals only");
            return;
        };
        let mut keyholder = false;
        loop {
            let incoming = match link.accept().await {
                Ok(i) => i,
                Err(e) => {
                    info!(%peer, "connection closed: {e}");
                    break;
                }
            };
            let kind = incoming.envelope.body.kind();
            let outcome = match &incoming.envelope.body {
                Body::KeyholderHello {
                    software,
                    setup,
                    ready,
                } => {
                    info!(%peer, %software, "keyholder connected");
                    keyholder = true;
                    let (old, holds_current) = {
                        let mut st = self.lock();
                        let current = st
                            .keys
                            .setup()
                            .filter(|_| st.engine.step() == super::SetupStep::Serving);
                        let old = st.keyholders.insert(hospital, link.clone());
                        (old, current.is_some() && *setup == current)
                    };
                    if let Some(old) = old {
                        old.close("replaced by a new connection");
                    }
                    self.event(ServingEvent::Joined { hospital }).await;
                    if holds_current {
                        self.event(ServingEvent::ThresholdFormed {
                            hospital,
                            keys: *ready,
                        })
                        .await;
                    }
                    Ok(())
                }
                Body::InferInfoRequest => self.info(&link).await,
                Body::InferCollective(_) => self.request(&link, hospital, incoming).await,
                Body::HeadContribution(_) => self.contribution(&link, hospital, incoming).await,
                _ if keyholder => self.keyholder_message(hospital, incoming).await,
                _ => Err(format!("unexpected message {kind}")),
            };
            if let Err(reason) = outcome {
                warn!(%peer, message = kind, "refused: {reason}");
                if let Err(e) = link.send(0, Body::Refused { reason }).await {
                    info!(%peer, "cannot tell the peer: {e}");
                    break;
                }
            }
        }
        if keyholder {
            let current = {
                let mut st = self.lock();
                let same = st
                    .keyholders
                    .get(&hospital)
                    .is_some_and(|l| l.remote_address() == link.remote_address());
                if same {
                    st.keyholders.remove(&hospital);
                }
                same
            };
            if current {
                info!(%peer, "keyholder left");
                self.event(ServingEvent::Left { hospital }).await;
            }
        }
    }

    /// Malformed shares: the request goes on without this keyholder (another t are asked).
    async fn shares_refused(
        &self,
        hospital: u32,
        h: &protocol::serve::collective::ResultSwitchShares,
        e: super::keys::KeysError,
    ) -> String {
        self.event(ServingEvent::SharesRefused {
            request: h.request,
            attempt: h.attempt,
            hospital,
        })
        .await;
        e.to_string()
    }

    async fn info(&self, link: &Link) -> Result<(), String> {
        let (info, pk) = {
            let st = self.lock();
            st.engine.accepts_request(st.reading)?;
            let info = st.keys.compiled().map(|c| c.info.clone());
            let pk = st.keys.public_key_bytes().map(<[u8]>::to_vec);
            info.zip(pk).ok_or("the keys are not made yet")?
        };
        send_all(vec![Outgoing {
            link: link.clone(),
            body: Body::CollectiveInfo(info),
            items: vec![pk],
        }])
        .await;
        Ok(())
    }

    async fn keyholder_message(&self, hospital: u32, mut incoming: Incoming) -> Result<(), String> {
        match incoming.envelope.body.clone() {
            Body::CollectiveRound1(header) => {
                let (mut stream, ctx) = {
                    let mut st = self.lock();
                    st.engine.accepts_round1(hospital, &header.plan)?;
                    let stream =
                        tokio::task::block_in_place(|| st.keys.begin_round1(hospital, header))
                            .map_err(|e| e.to_string())?;
                    let ctx = st.keys.compiled().map(|c| c.ctx.clone()).ok_or("no plan")?;
                    (stream, ctx)
                };
                while stream.remaining() > 0 {
                    let item = next(&mut incoming).await?;
                    tokio::task::block_in_place(|| stream.push(&ctx, &item))
                        .map_err(|e| e.to_string())?;
                }
                end(&mut incoming).await?;
                let plan = stream.plan();
                {
                    let mut st = self.lock();
                    st.engine.accepts_round1(hospital, &plan)?;
                    tokio::task::block_in_place(|| st.keys.store_round1(stream))
                        .map_err(|e| e.to_string())?;
                }
                info!(hospital, "round-1 key shares stored");
                self.event(ServingEvent::Round1Stored { hospital, plan })
                    .await;
            }
            Body::CollectiveRound2 => {
                let item = next(&mut incoming).await?;
                end(&mut incoming).await?;
                {
                    let mut st = self.lock();
                    st.engine.accepts_round2(hospital)?;
                    tokio::task::block_in_place(|| st.keys.store_round2(&item))
                        .map_err(|e| e.to_string())?;
                }
                self.event(ServingEvent::Round2Stored { hospital }).await;
            }
            Body::ThresholdFormed => {
                self.event(ServingEvent::ThresholdFormed {
                    hospital,
                    keys: false,
                })
                .await;
            }
            Body::KeyholderReady => {
                self.event(ServingEvent::KeyholderReady { hospital }).await;
            }
            Body::CollectiveEvaluated(h) => {
                let want = {
                    let st = self.lock();
                    st.engine.accepts_shares(hospital, h.request, h.attempt)?;
                    st.requests
                        .get(&h.request)
                        .filter(|s| s.signed.is_some())
                        .map(|s| s.switch.count())
                        .ok_or("unknown request")?
                };
                if h.count as usize != want {
                    return Err(format!(
                        "{} results for a request of {want} images",
                        h.count
                    ));
                }
                let items = read_all(&mut incoming, 2 * want).await?;
                let folded = {
                    let mut st = self.lock();
                    // the attempt may have changed while the answer travelled
                    st.engine.accepts_shares(hospital, h.request, h.attempt)?;
                    let served = st.requests.get_mut(&h.request).ok_or("unknown request")?;
                    tokio::task::block_in_place(|| {
                        served
                            .switch
                            .fold_evaluated(h.attempt, &items, h.evaluate_us)
                    })
                };
                if let Err(e) = folded {
                    self.event(ServingEvent::SharesRefused {
                        request: h.request,
                        attempt: h.attempt,
                        hospital,
                    })
                    .await;
                    return Err(e.to_string());
                }
                self.event(ServingEvent::SharesFolded {
                    request: h.request,
                    attempt: h.attempt,
                    hospital,
                })
                .await;
            }
            Body::ResultShares(h) => {
                // a head's refresh shares, or a served result's switching shares
                let refresh = matches!(
                    self.lock().head_requests.get(&h.request),
                    Some(HeadRequest::Refresh { .. })
                );
                let want = {
                    let st = self.lock();
                    st.engine.accepts_shares(hospital, h.request, h.attempt)?;
                    if refresh {
                        st.head
                            .as_ref()
                            .map(|r| r.pending().len())
                            .ok_or("no head run")?
                    } else {
                        st.requests
                            .get(&h.request)
                            .filter(|s| s.signed.is_none())
                            .map(|s| s.switch.count())
                            .ok_or("unknown request")?
                    }
                };
                if h.count as usize != want {
                    return Err(if refresh {
                        format!("{} refresh shares for {want} ciphertexts", h.count)
                    } else {
                        format!("{} switching shares for {want} results", h.count)
                    });
                }
                let items = read_all(&mut incoming, want).await?;
                let folded = {
                    let mut st = self.lock();
                    // the attempt may have changed while the shares travelled
                    st.engine.accepts_shares(hospital, h.request, h.attempt)?;
                    if refresh {
                        let run = st.head.as_mut().ok_or("no head run")?;
                        tokio::task::block_in_place(|| run.fold(h.attempt, &items))
                    } else {
                        let served = st.requests.get_mut(&h.request).ok_or("unknown request")?;
                        served
                            .switch
                            .decode_shares(&items)
                            .and_then(|shares| served.switch.fold(h.attempt, shares))
                    }
                };
                if let Err(e) = folded {
                    return Err(self.shares_refused(hospital, &h, e).await);
                }
                self.event(ServingEvent::SharesFolded {
                    request: h.request,
                    attempt: h.attempt,
                    hospital,
                })
                .await;
            }
            other => return Err(format!("unexpected message {}", other.kind())),
        }
        Ok(())
    }

    /// A requester's signed images: checked, then evaluated and switched by t keyholders.
    async fn request(
        &self,
        link: &Link,
        requester: u32,
        mut incoming: Incoming,
    ) -> Result<(), String> {
        let Body::InferCollective(header) = incoming.envelope.body.clone() else {
            return Err("not a request".into());
        };
        let (ctx, plan, n, t) = {
            let mut st = self.lock();
            st.engine.accepts_request(st.reading)?;
            let Some((ctx, plan)) = st.keys.served() else {
                return Err("the model is not served yet".into());
            };
            st.reading += 1;
            (
                ctx,
                plan,
                self.options.serving.hospitals as usize,
                self.options.serving.threshold as usize,
            )
        };
        // from here on this request counts against max_in_flight until it returns (registered,
        // it counts as in flight in the engine)
        let _reading = Reading(self);
        check_header(
            &header,
            &plan.spec().fingerprint(),
            plan.spec().input_ciphertexts(),
            self.options.max_images,
        )?;
        info!(
            requester,
            request = header.request_id,
            images = header.images,
            "mode (a) request"
        );
        self.audit(
            Some(requester),
            "inference-request",
            &format!("request {} of {} images", header.request_id, header.images),
        );
        let items = read_all(&mut incoming, header.items() as usize).await?;
        let t0 = Instant::now();
        let request_id = header.request_id;
        let signed = header.clone();
        // checked here so that a malformed request never reaches a keyholder; each keyholder
        // checks it again, and its signature, before it evaluates
        let switch = tokio::task::spawn_blocking(move || {
            decode_images(&ctx, &plan, &header, &items).map_err(|e| e.to_string())?;
            let pcks = served_combiner(&ctx, n, t).map_err(|e| e.to_string())?;
            let level = plan.spec().output_level();
            let images = header.images as usize;
            Ok::<_, String>(SwitchState::evaluated_by_keyholders(
                ctx, pcks, items, images, level,
            ))
        })
        .await
        .map_err(|e| format!("checking the request failed: {e}"))??;
        let validate = t0.elapsed();
        info!(
            requester,
            request = request_id,
            "checked; asking t keyholders to evaluate and switch it"
        );
        let id = {
            let mut st = self.lock();
            let id = st.next_request;
            st.next_request += 1;
            st.requests.insert(
                id,
                Served {
                    link: link.clone(),
                    request_id,
                    requester,
                    signed: Some(signed),
                    evaluate_us: 0,
                    validate_us: validate.as_micros() as u64,
                    switch,
                },
            );
            id
        };
        self.event(ServingEvent::Ready {
            request: id,
            requester,
            now: Instant::now(),
        })
        .await;
        Ok(())
    }
}

impl CollectiveServer {
    /// A contributor's encrypted examples: checked, then trained on (one run at a time).
    async fn contribution(
        &self,
        link: &Link,
        contributor: u32,
        mut incoming: Incoming,
    ) -> Result<(), String> {
        let Body::HeadContribution(header) = incoming.envelope.body.clone() else {
            return Err("not a contribution".into());
        };
        let plan = {
            let mut st = self.lock();
            if self.options.head.is_none() {
                return Err("this server serves a model; it trains no head".into());
            }
            st.engine.accepts_request(st.reading)?;
            if st.head_busy {
                return Err("a head is being trained on another contribution; try later".into());
            }
            let plan = st
                .keys
                .compiled()
                .and_then(|c| c.head().cloned())
                .ok_or("the head's keys are not made yet")?;
            check_contribution(&header, &plan)?;
            if header.examples > self.options.max_head_examples {
                return Err(format!(
                    "{} examples; this server trains on at most {}",
                    header.examples, self.options.max_head_examples
                ));
            }
            st.head_busy = true;
            plan
        };
        let outcome = self
            .start_run(link, contributor, header, plan, &mut incoming)
            .await;
        if outcome.is_err() {
            self.lock().head_busy = false;
        }
        outcome
    }

    async fn start_run(
        &self,
        link: &Link,
        contributor: u32,
        header: protocol::serve::head::HeadContribution,
        plan: he_agg::train::HeadPlan,
        incoming: &mut Incoming,
    ) -> Result<(), String> {
        info!(
            contributor,
            examples = header.examples,
            chunks = header.chunks,
            "encrypted examples to train the head on"
        );
        self.audit(
            Some(contributor),
            "head-contribution",
            &format!("{} examples in {} chunks", header.examples, header.chunks),
        );
        let mut items = read_all(incoming, header.items() as usize).await?;
        let (keys, training) = {
            let st = self.lock();
            let keys = st
                .keys
                .head_keys()
                .map(|(pk, eval)| (pk.clone(), eval.clone()))
                .ok_or("the head's keys are not made yet")?;
            let training = st.keys.head_training().cloned().ok_or("no head training")?;
            (keys, training)
        };
        let federation = self.federation;
        let (n, t) = (
            self.options.serving.hospitals,
            self.options.serving.threshold,
        );
        let request_id = header.request_id;
        let run = tokio::task::spawn_blocking(move || {
            let receiver = items.remove(0);
            he_agg::ckks::wire::decode_public_key(plan.context(), &receiver)
                .map_err(|e| format!("the contributor's public key: {e}"))?;
            let chunks = decode_chunks(&plan, &header, &items).map_err(|e| e.to_string())?;
            drop(items);
            HeadRun::new(
                plan,
                (&keys.0, &keys.1),
                &training,
                &federation.0,
                n,
                t,
                contributor,
                request_id,
                receiver,
                chunks,
            )
            .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("reading the contribution failed: {e}"))??;
        info!(
            steps = run.steps().0,
            "training the head on the contribution"
        );
        {
            let mut st = self.lock();
            st.head = Some(run);
            st.head_link = Some(link.clone());
            st.step_wanted = true;
        }
        self.drive(Vec::new()).await;
        Ok(())
    }
}

fn check_header(
    h: &CollectiveRequest,
    plan: &[u8; 32],
    per_image: usize,
    max: u32,
) -> Result<(), String> {
    if &h.fingerprint != plan {
        return Err(
            "the request was encrypted for another plan: fetch the model information again".into(),
        );
    }
    if h.ciphertexts_per_image as usize != per_image {
        return Err(format!(
            "{} ciphertexts per image; the plan's image spans {per_image}",
            h.ciphertexts_per_image
        ));
    }
    // requests are held in memory until evaluated: bounded in images and in ciphertexts
    let max = max
        .min(MAX_COLLECTIVE_IMAGES)
        .min(MAX_COLLECTIVE_CIPHERTEXTS / per_image.max(1) as u32)
        .max(1);
    if h.images == 0 || h.images > max {
        return Err(format!(
            "{} images in one request; this server takes 1 to {max}",
            h.images
        ));
    }
    if h.signature.is_empty() || h.signature.len() > protocol::transcript::MAX_SIGNATURE {
        return Err(
            "the request is not signed: keyholders evaluate only what a hospital of the \
             consortium signed (update the client)"
                .into(),
        );
    }
    Ok(())
}

async fn next(incoming: &mut Incoming) -> Result<Vec<u8>, String> {
    match incoming.next_item().await {
        Ok(Some(item)) => Ok(item),
        Ok(None) => Err("the stream ended before its announced items".into()),
        Err(e) => Err(format!("reading the stream: {e}")),
    }
}

/// Exactly `count` items, then the stream's end.
async fn read_all(incoming: &mut Incoming, count: usize) -> Result<Vec<Vec<u8>>, String> {
    let mut items = Vec::with_capacity(count);
    for _ in 0..count {
        items.push(next(incoming).await?);
    }
    end(incoming).await?;
    Ok(items)
}

async fn end(incoming: &mut Incoming) -> Result<(), String> {
    match incoming.next_item().await {
        Ok(None) => Ok(()),
        Ok(Some(_)) => Err("more items than announced".into()),
        Err(e) => Err(format!("reading the stream: {e}")),
    }
}

async fn send_all(out: Vec<Outgoing>) {
    for o in out {
        tokio::spawn(async move {
            let kind = o.body.kind();
            let peer = o.link.peer();
            let sent = async {
                let mut s = o.link.open(0, o.body).await?;
                for item in &o.items {
                    s.item(item).await?;
                }
                s.finish().await
            };
            if let Err(e) = sent.await {
                warn!(%peer, message = kind, "cannot send: {e}");
            }
        });
    }
}

/// `coordinator serve-inference --collective`: the coordinator directory's certificate, roster
/// and audit log, until interrupted. Serves the saved setup when there is one (unless
/// `new_setup`).
pub fn run(
    dir: &crate::server::CoordinatorDir,
    listen_addr: &str,
    max_images: u32,
    new_setup: bool,
) -> anyhow::Result<()> {
    serve(dir, listen_addr, max_images, new_setup, None)
}

/// How `coordinator train-head` trains.
#[derive(Clone, Debug)]
pub struct HeadOptions {
    pub training: HeadTraining,
    /// Most examples one contribution may carry.
    pub max_examples: u64,
}

/// `coordinator train-head`: the keyholders make a key at the head-training parameters, then
/// each contribution of encrypted examples is trained on and its head switched to its
/// contributor's key, until interrupted. A restart makes a new key (nothing is saved).
pub fn run_head(
    dir: &crate::server::CoordinatorDir,
    listen_addr: &str,
    head: HeadOptions,
) -> anyhow::Result<()> {
    he_agg::train::HeadTrainer::check_settings(head.training.lr, head.training.momentum)?;
    if head.training.epochs == 0 || head.training.batch_chunks == 0 {
        anyhow::bail!("--epochs and --batch-chunks must be at least 1");
    }
    serve(dir, listen_addr, 0, true, Some(head))
}

fn serve(
    dir: &crate::server::CoordinatorDir,
    listen_addr: &str,
    max_images: u32,
    new_setup: bool,
    head: Option<HeadOptions>,
) -> anyhow::Result<()> {
    let roster = crate::provision::Roster::read(&dir.roster())
        .with_context(|| format!("reading the roster in {}", dir.dir.display()))?;
    let federation = roster.federation_id()?;
    let cfg = crate::config::FederationConfig::from_file(&dir.config())?;
    let store = Store::open(&dir.state(), federation)
        .with_context(|| format!("opening {}", dir.state().display()))?;
    let addr: SocketAddr = listen_addr
        .parse()
        .with_context(|| format!("listen address {listen_addr}"))?;
    let options = CollectiveOptions {
        serving: ServingConfig {
            hospitals: cfg.federation.hospitals,
            threshold: cfg.threshold(),
            request_timeout: Duration::from_secs(120),
            max_in_flight: 8,
            head: head.is_some(),
        },
        max_images,
        item_timeout: Duration::from_secs(120),
        head: head.as_ref().map(|h| h.training.clone()),
        max_head_examples: head.as_ref().map_or(0, |h| h.max_examples),
    };
    let saved = if new_setup {
        None
    } else {
        super::saved::load(&dir.state_dir, &store).with_context(
            || "reading the saved served state (start with --new-setup to make a new key instead)",
        )?
    };
    let restored = match saved {
        Some(saved) => {
            if saved.hospitals != options.serving.hospitals
                || saved.threshold != options.serving.threshold
            {
                anyhow::bail!(
                    "the saved served state is for {} hospitals, threshold {}; the federation \
                     has {} and {} (start with --new-setup)",
                    saved.hospitals,
                    saved.threshold,
                    options.serving.hospitals,
                    options.serving.threshold
                );
            }
            let t = Instant::now();
            let keys = ServedKeys::restore(federation, max_images, &saved)
                .context("the saved served state does not check out (start with --new-setup)")?;
            info!(
                seconds = t.elapsed().as_secs_f64(),
                "serving the saved setup again: waiting for its keyholders"
            );
            Some(keys)
        }
        None => None,
    };
    let server = CollectiveServer::new(
        federation,
        roster.parties(),
        dir.tls(),
        options,
        Some((store, dir.state_dir.clone())),
        restored,
    );
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let endpoint = server.bind(addr)?;
        server.serve(endpoint).await
    })
}
