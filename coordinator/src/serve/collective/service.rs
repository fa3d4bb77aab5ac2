//! Mode (a) serving and head training as one state machine without I/O (quinn-proto's shape):
//! the shell admits each stream's header ([`Service::admit`], which says how many items to
//! read), reads it whole and hands it in with [`Service::handle`]; the service decides, and the
//! shell polls out what to do ([`Service::poll_action`]): messages to send to connections, head
//! training's computations to run off the service, the served state to save, audit entries.
//! Time is passed in: the shell sleeps until [`Service::poll_timeout`]. It owns the protocol's decisions ([`ServingEngine`]: setup steps, who is
//! ready, attempts), the keys ([`ServedKeys`]), every request's switch ([`SwitchState`]), the
//! admission of requests in flight, and a head run's progress ([`super::service_head`]).

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use he_agg::infer::threshold::served_combiner;
use protocol::serve::collective::{CollectiveRequest, EvaluateRequest};
use protocol::serve::head::ResultSwitchRequest;
use protocol::serve::released::InferResult;
use protocol::{Body, CollectiveMsg, FederationId, HeadMsg};

use super::head::{HeadRequest, HeadState};
use super::keys::ServedKeys;
use super::requests::{SwitchState, check_header, decode_images};
use super::service_io::{Action, Conn, Event, Request, ServiceConfig};
use super::{ServingAction, ServingEngine, ServingEvent};

/// The mode (a) service.
pub struct Service {
    pub(super) cfg: ServiceConfig,
    pub(super) engine: ServingEngine,
    pub(super) keys: ServedKeys,
    /// the connection each keyholder is on
    keyholders: HashMap<u32, Conn>,
    pub(super) requests: HashMap<u64, Request>,
    pub(super) next_request: u64,
    /// requests and contributions admitted whose streams are still being read
    pub(super) reading: usize,
    pub(super) head: HeadState,
    pub(super) out: VecDeque<Action>,
}

impl Service {
    /// A service; `restored` serves a saved setup again.
    pub fn new(cfg: ServiceConfig, restored: Option<ServedKeys>) -> Self {
        let (engine, keys) = match restored {
            Some(keys) => (ServingEngine::restored(cfg.serving.clone()), keys),
            None => (
                ServingEngine::new(cfg.serving.clone()),
                match &cfg.head {
                    Some(t) => {
                        ServedKeys::for_head(cfg.federation, cfg.serving.hospitals, t.clone())
                    }
                    None => ServedKeys::new(cfg.federation, cfg.serving.hospitals, cfg.max_images),
                },
            ),
        };
        Self {
            cfg,
            engine,
            keys,
            keyholders: HashMap::new(),
            requests: HashMap::new(),
            next_request: 1,
            reading: 0,
            head: HeadState::default(),
            out: VecDeque::new(),
        }
    }

    /// The federation it serves.
    pub fn federation(&self) -> FederationId {
        self.cfg.federation
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    /// Whether the stream a header starts may be read, and how many items follow it; a
    /// request or a contribution counts against the requests in flight from here on.
    pub fn admit(&mut self, hospital: u32, body: &Body) -> Result<usize, String> {
        match body {
            Body::InferInfoRequest => Ok(0),
            Body::Collective(m) => self.admit_collective(hospital, m),
            Body::Head(m) => self.admit_head(hospital, m),
            other => Err(format!("unexpected message {}", other.kind())),
        }
    }

    fn admit_collective(&mut self, hospital: u32, m: &CollectiveMsg) -> Result<usize, String> {
        let keyholder = self.keyholders.contains_key(&hospital);
        match m {
            CollectiveMsg::InferCollective(h) => {
                self.engine.accepts_request(self.reading)?;
                let (_, plan) = self.keys.served().ok_or("the model is not served yet")?;
                check_header(
                    h,
                    &plan.spec().fingerprint(),
                    plan.spec().input_ciphertexts(),
                    self.cfg.max_images,
                )?;
                self.reading += 1;
                Ok(h.items() as usize)
            }
            _ if !keyholder => Err(format!("unexpected message {}", m.kind())),
            CollectiveMsg::CollectiveRound1(h) => {
                self.engine.accepts_round1(hospital, &h.plan)?;
                Ok(h.items() as usize)
            }
            CollectiveMsg::CollectiveRound2 => {
                self.engine.accepts_round2(hospital)?;
                Ok(1)
            }
            CollectiveMsg::ThresholdFormed | CollectiveMsg::KeyholderReady => Ok(0),
            CollectiveMsg::CollectiveRefreshShares(h) => self.admit_refresh(hospital, h),
            CollectiveMsg::CollectiveEvaluated(h) => {
                self.engine.accepts_shares(hospital, h.request, h.attempt)?;
                let want = self
                    .requests
                    .get(&h.request)
                    .filter(|r| r.signed.is_some())
                    .map(|r| r.switch.count())
                    .ok_or("unknown request")?;
                if h.count as usize != want {
                    return Err(format!(
                        "{} results for a request of {want} images",
                        h.count
                    ));
                }
                Ok(2 * want)
            }
            other => Err(format!("unexpected message {}", other.kind())),
        }
    }

    /// Feeds an event; what to do next is in [`Service::poll_action`].
    pub fn handle(&mut self, now: Instant, event: Event) {
        match event {
            Event::KeyholderHello {
                conn,
                hospital,
                setup,
                ready,
            } => {
                if let Some(old) = self.keyholders.insert(hospital, conn)
                    && old != conn
                {
                    self.out.push_back(Action::Close {
                        conn: old,
                        reason: "replaced by a new connection",
                    });
                }
                let holds_current = self.engine.step() == super::SetupStep::Serving
                    && setup.is_some()
                    && setup == self.keys.setup();
                self.drive(now, ServingEvent::Joined { hospital });
                if holds_current {
                    self.drive(
                        now,
                        ServingEvent::ThresholdFormed {
                            hospital,
                            keys: ready,
                        },
                    );
                }
            }
            Event::Closed { conn, hospital } => {
                if self.keyholders.get(&hospital) == Some(&conn) {
                    self.keyholders.remove(&hospital);
                    self.drive(now, ServingEvent::Left { hospital });
                }
            }
            Event::Message {
                conn,
                hospital,
                body,
                items,
            } => {
                let outcome = match body {
                    Body::InferInfoRequest => self.info(conn),
                    Body::Collective(m) => self.collective(now, conn, hospital, m, items),
                    Body::Head(m) => self.head_message(now, conn, hospital, m, items),
                    other => Err(format!("unexpected message {}", other.kind())),
                };
                if let Err(reason) = outcome {
                    tracing::warn!(hospital, "refused: {reason}");
                    self.send(conn, Body::Refused { reason }, vec![]);
                }
            }
            Event::Unread { body, .. } => self.release(&body),
            Event::RunBuilt(run) => self.run_built(now, run),
            Event::StepDone { run, result } => self.step_done(now, run, result),
        }
    }

    /// When the shell is to call [`Service::handle_timeout`] next (a waiting request's
    /// timeout), if anything waits on time.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.engine.next_deadline()
    }

    /// Time reached [`Service::poll_timeout`]: requests past their timeout are refused.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.drive(now, ServingEvent::Tick { now });
    }

    /// An admitted request or contribution is no longer being read.
    fn release(&mut self, body: &Body) {
        if matches!(
            body,
            Body::Collective(CollectiveMsg::InferCollective(_))
                | Body::Head(HeadMsg::HeadContribution(_))
        ) {
            self.reading = self.reading.saturating_sub(1);
        }
        if matches!(body, Body::Head(HeadMsg::HeadContribution(_))) {
            self.head.busy = false;
        }
    }

    pub(super) fn send(&mut self, conn: Conn, body: Body, items: Vec<Vec<u8>>) {
        self.out.push_back(Action::Send { conn, body, items });
    }

    /// Sends to a keyholder on the connection it is on, if any.
    pub(super) fn send_keyholder(&mut self, hospital: u32, body: Body, items: Vec<Vec<u8>>) {
        if let Some(&conn) = self.keyholders.get(&hospital) {
            self.send(conn, body, items);
        }
    }

    /// Sends to a keyholder on the connection it is on, if any, items shared with others.
    pub(super) fn send_keyholder_shared(
        &mut self,
        hospital: u32,
        body: Body,
        first: Vec<Vec<u8>>,
        items: std::sync::Arc<Vec<Vec<u8>>>,
    ) {
        if let Some(&conn) = self.keyholders.get(&hospital) {
            self.out.push_back(Action::SendShared {
                conn,
                body,
                first,
                items,
            });
        }
    }

    pub(super) fn audit(&mut self, hospital: Option<u32>, event: &'static str, detail: String) {
        self.out.push_back(Action::Audit {
            hospital,
            event,
            detail,
        });
    }

    fn info(&mut self, conn: Conn) -> Result<(), String> {
        self.engine.accepts_request(self.reading)?;
        let info = self.keys.compiled().map(|c| c.info.clone());
        let pk = self.keys.public_key_bytes().map(<[u8]>::to_vec);
        let (info, pk) = info.zip(pk).ok_or("the keys are not made yet")?;
        self.send(
            conn,
            Body::Collective(CollectiveMsg::CollectiveInfo(info)),
            vec![pk],
        );
        Ok(())
    }

    fn collective(
        &mut self,
        now: Instant,
        conn: Conn,
        hospital: u32,
        m: CollectiveMsg,
        items: Vec<Vec<u8>>,
    ) -> Result<(), String> {
        match m {
            CollectiveMsg::InferCollective(header) => {
                self.reading = self.reading.saturating_sub(1);
                self.request(now, conn, hospital, header, items)
            }
            CollectiveMsg::CollectiveRound1(header) => {
                self.engine.accepts_round1(hospital, &header.plan)?;
                let plan = header.plan;
                let mut stream = self
                    .keys
                    .begin_round1(hospital, header)
                    .map_err(|e| e.to_string())?;
                let ctx = self
                    .keys
                    .compiled()
                    .map(|c| c.ctx.clone())
                    .ok_or("no plan")?;
                for item in &items {
                    stream.push(&ctx, item).map_err(|e| e.to_string())?;
                }
                self.keys.store_round1(stream).map_err(|e| e.to_string())?;
                tracing::info!(hospital, "round-1 key shares stored");
                self.drive(now, ServingEvent::Round1Stored { hospital, plan });
                Ok(())
            }
            CollectiveMsg::CollectiveRound2 => {
                self.engine.accepts_round2(hospital)?;
                let item = items.first().ok_or("no round-2 share")?;
                self.keys.store_round2(item).map_err(|e| e.to_string())?;
                self.drive(now, ServingEvent::Round2Stored { hospital });
                Ok(())
            }
            CollectiveMsg::ThresholdFormed => {
                let keys = false;
                self.drive(now, ServingEvent::ThresholdFormed { hospital, keys });
                Ok(())
            }
            CollectiveMsg::KeyholderReady => {
                self.drive(now, ServingEvent::KeyholderReady { hospital });
                Ok(())
            }
            CollectiveMsg::CollectiveRefreshShares(h) => self.refresh_shares(hospital, h, items),
            CollectiveMsg::CollectiveEvaluated(h) => {
                // the attempt may have changed while the answer travelled
                self.engine.accepts_shares(hospital, h.request, h.attempt)?;
                let r = self.requests.get_mut(&h.request).ok_or("unknown request")?;
                if let Err(e) = r.switch.fold_evaluated(h.attempt, &items, h.evaluate_us) {
                    self.drive(
                        now,
                        ServingEvent::SharesRefused {
                            request: h.request,
                            attempt: h.attempt,
                            hospital,
                        },
                    );
                    return Err(e.to_string());
                }
                self.drive(
                    now,
                    ServingEvent::SharesFolded {
                        request: h.request,
                        attempt: h.attempt,
                        hospital,
                    },
                );
                Ok(())
            }
            other => Err(format!("unexpected message {}", other.kind())),
        }
    }

    /// A requester's signed images: checked, then evaluated and switched by t keyholders.
    fn request(
        &mut self,
        now: Instant,
        conn: Conn,
        requester: u32,
        header: CollectiveRequest,
        items: Vec<Vec<u8>>,
    ) -> Result<(), String> {
        let t0 = Instant::now();
        let (ctx, plan) = self.keys.served().ok_or("the model is not served yet")?;
        tracing::info!(
            requester,
            request = header.request_id,
            images = header.images,
            "mode (a) request"
        );
        // recorded in the audit log by the shell before it was read (`disk`)
        // checked here so that a malformed request never reaches a keyholder; each keyholder
        // checks it again, and its signature, before it evaluates
        decode_images(&ctx, &plan, &header, &items).map_err(|e| e.to_string())?;
        let (n, t) = (
            self.cfg.serving.hospitals as usize,
            self.cfg.serving.threshold as usize,
        );
        let pcks = served_combiner(&ctx, n, t).map_err(|e| e.to_string())?;
        let switch = SwitchState::evaluated_by_keyholders(
            ctx,
            pcks,
            items,
            header.images as usize,
            plan.spec().output_level(),
        );
        let id = self.next_request;
        self.next_request += 1;
        self.requests.insert(
            id,
            Request {
                conn,
                request_id: header.request_id,
                requester,
                signed: Some(header),
                evaluate_us: 0,
                validate_us: t0.elapsed().as_micros() as u64,
                switch,
                refresh: None,
            },
        );
        self.drive(
            now,
            ServingEvent::Ready {
                request: id,
                requester,
                now,
            },
        );
        Ok(())
    }

    /// Feeds the engine and carries out what it decides.
    pub(super) fn drive(&mut self, now: Instant, event: ServingEvent) {
        let mut queue = VecDeque::from([event]);
        while let Some(event) = queue.pop_front() {
            for action in self.engine.handle(event) {
                if let Some(next) = self.act(now, action) {
                    queue.push_back(next);
                }
            }
        }
    }

    /// One engine decision; an event it leads to, if any.
    fn act(&mut self, now: Instant, action: ServingAction) -> Option<ServingEvent> {
        match action {
            ServingAction::StartSetup { to } => {
                let start = CollectiveMsg::CollectiveStart {
                    hospitals: self.cfg.serving.hospitals,
                    threshold: self.cfg.serving.threshold,
                };
                for h in to {
                    self.send_keyholder(h, Body::Collective(start.clone()), vec![]);
                }
            }
            ServingAction::SendRound1 { to } => {
                for h in to {
                    if let Ok((body, items)) = self.keys.round1_result(h) {
                        self.send_keyholder(h, body, items);
                    }
                }
            }
            ServingAction::MakeKeys => {
                let t = Instant::now();
                match self.keys.make_keys() {
                    Ok(()) => tracing::info!(
                        seconds = t.elapsed().as_secs_f64(),
                        "keys made from every keyholder's shares"
                    ),
                    Err(e) => tracing::warn!("cannot make the keys: {e}"),
                }
            }
            ServingAction::SendKeys { to } => {
                if let Some((body, items)) = self.keys.keyholder_keys() {
                    for h in to {
                        tracing::info!(hospital = h, "sending the evaluation keys' sums");
                        self.send_keyholder(h, body.clone(), items.clone());
                    }
                }
            }
            ServingAction::RequestSwitch {
                request,
                attempt,
                requester,
                active,
            } => self.request_switch(request, attempt, requester, active),
            ServingAction::Deliver { request, requester } => {
                return self.deliver(now, request, requester);
            }
            ServingAction::Refuse { request, reason } => self.refuse(request, reason),
            ServingAction::Audit {
                hospital,
                event,
                detail,
            } => self.audit(hospital, event, detail),
            ServingAction::Persist => {
                if let Some(state) = self.keys.take_unsaved(self.cfg.serving.threshold) {
                    self.out.push_back(Action::Save(Box::new(state)));
                }
            }
        }
        None
    }

    fn request_switch(&mut self, request: u64, attempt: u32, requester: u32, active: Vec<u32>) {
        let Some(setup) = self.keys.setup() else {
            return;
        };
        if let Some(HeadRequest::Refresh { .. }) = self.head.requests.get(&request) {
            return self.request_refresh(setup, request, attempt, requester, active);
        }
        let Some(r) = self.requests.get(&request) else {
            return;
        };
        // mode (a): the signed request itself, which each keyholder evaluates; a trained head:
        // each keyholder switches the head it trained to the key its contributor signed
        let body = match &r.signed {
            Some(signed) => Body::Collective(CollectiveMsg::CollectiveEvaluate(EvaluateRequest {
                setup,
                request,
                attempt,
                active: active.clone(),
                requester,
                signed: signed.clone(),
            })),
            None => Body::Head(HeadMsg::ResultSwitch(ResultSwitchRequest {
                setup,
                request,
                attempt,
                requester,
                request_id: r.request_id,
                active: active.clone(),
                count: r.switch.count() as u32,
            })),
        };
        let items = r.switch.items.clone();
        for h in active {
            self.send_keyholder(h, body.clone(), items.clone());
        }
    }

    fn deliver(&mut self, now: Instant, request: u64, requester: u32) -> Option<ServingEvent> {
        match self.head.requests.get(&request).copied() {
            Some(HeadRequest::Refresh { step }) => return self.refreshed(now, request, step),
            Some(HeadRequest::Deliver) => self.head_delivered(request, requester),
            None => {}
        }
        let r = self.requests.remove(&request)?;
        let evaluate_us = match r.signed {
            Some(_) => r.switch.evaluate_us,
            None => r.evaluate_us,
        };
        let served = r.signed.is_some();
        match r.switch.finish() {
            Ok(results) => {
                tracing::info!(
                    request,
                    requester,
                    "results switched to the requester's key"
                );
                let result = InferResult {
                    request_id: r.request_id,
                    evaluate_us,
                    validate_us: r.validate_us,
                    count: results.len() as u32,
                };
                // a served request's results, or a trained head
                let body = match served {
                    true => Body::Collective(CollectiveMsg::InferResult(result)),
                    false => Body::Head(HeadMsg::InferResult(result)),
                };
                self.send(r.conn, body, results);
            }
            Err(e) => {
                let reason = format!("the switch failed: {e}");
                self.send(r.conn, Body::Refused { reason }, vec![]);
            }
        }
        None
    }

    fn refuse(&mut self, request: u64, reason: String) {
        if self.head.requests.contains_key(&request) {
            self.requests.remove(&request);
            return self.abort_head(&reason);
        }
        if let Some(r) = self.requests.remove(&request) {
            tracing::warn!(request, requester = r.requester, "refused: {reason}");
            self.send(r.conn, Body::Refused { reason }, vec![]);
        }
    }
}
