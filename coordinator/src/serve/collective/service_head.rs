//! Head training in the mode (a) service (issue 20): a contributor's signed examples start a
//! run, relayed whole to every ready keyholder (each replays the run itself: issue 46, item 3)
//! and set up here off the service; after every step, computed off the service, the state's
//! refresh is a request t keyholders answer with signed shares of the state they reached
//! (replaced as a served request's are when one leaves), and the shares summed are relayed to
//! every keyholder of the run; the trained head is switched to the contributor's key as a
//! result is, each keyholder switching its own. One run at a time.

use std::sync::Arc;
use std::time::Instant;

use protocol::serve::head::{HeadContribution, HeadRefreshRequest, HeadStart};
use protocol::{Body, HeadMsg};

use super::ServingEvent;
use super::head::{HeadRequest, HeadRun, RunJob, check_contribution};
use super::requests::SwitchState;
use super::service::Service;
use super::service_io::{Action, Conn, Request};

impl Service {
    /// Whether a head-training stream may be read, and how many items follow.
    pub(super) fn admit_head(&mut self, hospital: u32, m: &HeadMsg) -> Result<usize, String> {
        match m {
            HeadMsg::HeadContribution(h) => {
                if self.cfg.head.is_none() {
                    return Err("this server serves a model; it trains no head".into());
                }
                self.engine.accepts_request(self.reading)?;
                if self.head.busy {
                    return Err("a head is being trained on another contribution; try later".into());
                }
                let plan = self
                    .keys
                    .compiled()
                    .and_then(|c| c.head().cloned())
                    .ok_or("the head's keys are not made yet")?;
                let training = self.cfg.head.as_ref().ok_or("no head training")?;
                check_contribution(h, &plan, training)?;
                if h.examples > self.cfg.max_head_examples {
                    return Err(format!(
                        "{} examples; this server trains on at most {}",
                        h.examples, self.cfg.max_head_examples
                    ));
                }
                let t = self.cfg.serving.threshold as usize;
                if self.engine.ready_keyholders().len() < t {
                    return Err(format!(
                        "{} keyholders are ready; a run needs at least t = {t} (try later)",
                        self.engine.ready_keyholders().len()
                    ));
                }
                self.head.busy = true;
                self.reading += 1;
                Ok(h.items() as usize)
            }
            HeadMsg::HeadRefreshShares(h) => {
                self.engine.accepts_shares(hospital, h.request, h.attempt)?;
                if !matches!(
                    self.head.requests.get(&h.request),
                    Some(HeadRequest::Refresh { .. })
                ) {
                    return Err("refresh shares of no refresh under way".into());
                }
                let (want, _) = self.head.run.as_ref().ok_or("no head run")?.pending();
                if h.count as usize != want {
                    return Err(format!("{} refresh shares for {want} ciphertexts", h.count));
                }
                if h.signature.is_empty() || h.signature.len() > protocol::transcript::MAX_SIGNATURE
                {
                    return Err("refresh shares without their keyholder's signature".into());
                }
                Ok(want)
            }
            HeadMsg::ResultShares(h) => {
                self.engine.accepts_shares(hospital, h.request, h.attempt)?;
                let want = self
                    .requests
                    .get(&h.request)
                    .filter(|r| r.signed.is_none())
                    .map(|r| r.switch.count())
                    .ok_or("unknown request")?;
                if h.count as usize != want {
                    return Err(format!("{} switching shares for {want} results", h.count));
                }
                Ok(want)
            }
            other => Err(format!("unexpected message {}", other.kind())),
        }
    }

    pub(super) fn head_message(
        &mut self,
        now: Instant,
        conn: Conn,
        hospital: u32,
        m: HeadMsg,
        items: Vec<Vec<u8>>,
    ) -> Result<(), String> {
        match m {
            HeadMsg::HeadContribution(header) => {
                self.reading = self.reading.saturating_sub(1);
                self.contribution(conn, hospital, header, items)
            }
            HeadMsg::HeadRefreshShares(h) => {
                // the attempt may have changed while the shares travelled
                self.engine.accepts_shares(hospital, h.request, h.attempt)?;
                let run = self.head.run.as_mut().ok_or("no head run")?;
                let folded = if h.state != run.pending().1 {
                    // its replay reached another state: its shares would refresh nothing here
                    Err(format!(
                        "hospital {hospital}'s shares of step {} are of another state than this \
                         server's replay reached",
                        h.step
                    ))
                } else {
                    run.fold(h.attempt, hospital, h.signature, items)
                        .map_err(|e| e.to_string())
                };
                self.shares_outcome(now, h.request, h.attempt, hospital, folded)
            }
            HeadMsg::ResultShares(h) => {
                self.engine.accepts_shares(hospital, h.request, h.attempt)?;
                let r = self.requests.get_mut(&h.request).ok_or("unknown request")?;
                let folded = r
                    .switch
                    .decode_shares(&items)
                    .and_then(|shares| r.switch.fold(h.attempt, shares))
                    .map_err(|e| e.to_string());
                self.shares_outcome(now, h.request, h.attempt, hospital, folded)
            }
            other => Err(format!("unexpected message {}", other.kind())),
        }
    }

    /// Feeds the engine whether a keyholder's shares were folded.
    fn shares_outcome(
        &mut self,
        now: Instant,
        request: u64,
        attempt: u32,
        hospital: u32,
        folded: Result<(), String>,
    ) -> Result<(), String> {
        let event = match &folded {
            Ok(()) => ServingEvent::SharesFolded {
                request,
                attempt,
                hospital,
            },
            Err(_) => ServingEvent::SharesRefused {
                request,
                attempt,
                hospital,
            },
        };
        self.drive(now, event);
        folded
    }

    /// A contributor's encrypted examples (header checked at admission): the run is set up off
    /// the service.
    fn contribution(
        &mut self,
        conn: Conn,
        contributor: u32,
        header: HeadContribution,
        items: Vec<Vec<u8>>,
    ) -> Result<(), String> {
        tracing::info!(
            contributor,
            examples = header.examples,
            chunks = header.chunks,
            "encrypted examples to train the head on"
        );
        // recorded in the audit log by the shell before it was read (`disk`)
        let fail = |s: &mut Service, reason: &str| {
            s.head.busy = false;
            Err::<(), String>(reason.to_string())
        };
        let Some(plan) = self.keys.compiled().and_then(|c| c.head().cloned()) else {
            return fail(self, "the head's keys are not made yet");
        };
        let Some(keys) = self
            .keys
            .head_keys()
            .map(|(pk, eval)| (pk.clone(), eval.clone()))
        else {
            return fail(self, "the head's keys are not made yet");
        };
        let Some(collective_key) = self.keys.public_key_bytes().map(<[u8]>::to_vec) else {
            return fail(self, "the head's keys are not made yet");
        };
        let Some(setup) = self.keys.setup() else {
            return fail(self, "the head's keys are not made yet");
        };
        self.head.conn = Some(conn);
        // every ready keyholder replays the run: it refreshes only the states it reaches itself
        let items = Arc::new(items);
        let start = Body::Head(HeadMsg::HeadStart(HeadStart {
            setup,
            contributor,
            signed: header.clone(),
        }));
        self.head.keyholders = self.engine.ready_keyholders();
        for h in self.head.keyholders.clone() {
            let first = vec![collective_key.clone()];
            self.send_keyholder_shared(h, start.clone(), first, items.clone());
        }
        self.out.push_back(Action::BuildRun(Box::new(RunJob {
            plan,
            keys,
            federation: self.cfg.federation,
            hospitals: self.cfg.serving.hospitals,
            threshold: self.cfg.serving.threshold,
            contributor,
            header,
            items,
        })));
        Ok(())
    }

    pub(super) fn run_built(&mut self, _now: Instant, run: Result<Box<HeadRun>, String>) {
        match run {
            Ok(run) => {
                tracing::info!(
                    steps = run.steps().0,
                    "training the head on the contribution"
                );
                self.out.push_back(Action::Step(run));
            }
            Err(e) => self.abort_head(&e),
        }
    }

    pub(super) fn step_done(
        &mut self,
        now: Instant,
        run: Box<HeadRun>,
        result: Result<(), String>,
    ) {
        let (steps, done) = run.steps();
        let contributor = run.contributor;
        self.head.run = Some(run);
        if let Err(e) = result {
            return self.abort_head(&format!("step {} failed: {e}", done + 1));
        }
        let id = self.next_request;
        self.next_request += 1;
        self.head
            .requests
            .insert(id, HeadRequest::Refresh { step: done });
        if (done + 1) % 10 == 0 || done + 1 == steps {
            tracing::info!(
                step = done + 1,
                steps,
                "head training step computed; refreshing"
            );
        }
        self.drive(
            now,
            ServingEvent::Ready {
                request: id,
                requester: contributor,
                now,
            },
        );
    }

    /// Asks `active` to refresh the state of the current step.
    pub(super) fn request_refresh(
        &mut self,
        setup: [u8; 32],
        request: u64,
        attempt: u32,
        contributor: u32,
        active: Vec<u32>,
    ) {
        let Some(run) = self.head.run.as_ref() else {
            return;
        };
        let (steps, done) = run.steps();
        let (count, state) = run.pending();
        let body = Body::Head(HeadMsg::HeadRefresh(HeadRefreshRequest {
            setup,
            request,
            attempt,
            request_id: run.request_id,
            step: done as u64 + 1,
            steps: steps as u64,
            contributor,
            active: active.clone(),
            count: count as u32,
            state,
        }));
        for h in active {
            self.send_keyholder(h, body.clone(), vec![]);
        }
    }

    /// After a refresh: the next step, or the trained head's switch to the contributor's key
    /// (the event that asks for it).
    pub(super) fn refreshed(
        &mut self,
        now: Instant,
        request: u64,
        step: usize,
    ) -> Option<ServingEvent> {
        self.head.requests.remove(&request);
        let mut run = self.head.run.take()?;
        let (count, _) = run.pending();
        // every keyholder of the run refreshes its own state with the same signed shares
        match run.relay() {
            Ok((body, items)) => {
                let items = Arc::new(items);
                for h in self.head.keyholders.clone() {
                    self.send_keyholder_shared(h, body.clone(), vec![], items.clone());
                }
            }
            Err(e) => {
                self.abort_head(&format!("the refresh of step {} failed: {e}", step + 1));
                return None;
            }
        }
        if let Err(e) = run.finish_refresh() {
            self.abort_head(&format!("the refresh of step {} failed: {e}", step + 1));
            return None;
        }
        let steps = run.steps().0;
        self.audit(
            Some(run.contributor),
            "head-refresh",
            format!(
                "step {} of {steps}: {count} ciphertexts refreshed",
                step + 1
            ),
        );
        if !run.finished() {
            self.out.push_back(Action::Step(run));
            return None;
        }
        let f = run.figures.clone();
        tracing::info!(
            steps,
            step_s = f.step.as_secs_f64(),
            refresh_s = f.refresh.as_secs_f64(),
            refreshes = f.refreshes,
            share_mb = f.share_bytes as f64 / 1e6,
            "head trained; switching it to the contributor's key"
        );
        let (n, t) = (
            self.cfg.serving.hospitals as usize,
            self.cfg.serving.threshold as usize,
        );
        let pcks = match run.plan().head_switch(n, t) {
            Ok(p) => p,
            Err(e) => {
                self.abort_head(&format!("cannot switch the head: {e}"));
                return None;
            }
        };
        let Some(conn) = self.head.conn else {
            self.abort_head("the contributor is gone");
            return None;
        };
        let switch = SwitchState::new(run.context().clone(), pcks, run.weights());
        let (contributor, request_id) = (run.contributor, run.request_id);
        self.head.run = Some(run);
        let id = self.next_request;
        self.next_request += 1;
        self.head.requests.insert(id, HeadRequest::Deliver);
        self.requests.insert(
            id,
            Request {
                conn,
                request_id,
                requester: contributor,
                signed: None,
                evaluate_us: f.step.as_micros() as u64,
                validate_us: f.refresh.as_micros() as u64,
                switch,
                refresh: None,
            },
        );
        Some(ServingEvent::Ready {
            request: id,
            requester: contributor,
            now,
        })
    }

    /// The trained head reaches its contributor: the run is over.
    pub(super) fn head_delivered(&mut self, request: u64, contributor: u32) {
        self.head.requests.remove(&request);
        self.audit(
            Some(contributor),
            "head-delivered",
            "the trained head, switched to the contributor's key".into(),
        );
        self.head.run = None;
        self.head.busy = false;
    }

    /// Ends a head run that cannot go on, telling its contributor why.
    pub(super) fn abort_head(&mut self, reason: &str) {
        tracing::warn!("head training stopped: {reason}");
        self.audit(None, "head-training-stopped", reason.to_string());
        self.head.run = None;
        self.head.busy = false;
        self.head.requests.clear();
        self.head.keyholders.clear();
        if let Some(conn) = self.head.conn.take() {
            self.send(
                conn,
                Body::Refused {
                    reason: reason.to_string(),
                },
                vec![],
            );
        }
    }
}
