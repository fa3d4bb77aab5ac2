//! The serving state machine: fed [`ServingEvent`]s, returns [`ServingAction`]s.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// What the engine needs to know.
#[derive(Clone, Debug, PartialEq)]
pub struct ServingConfig {
    pub hospitals: u32,
    pub threshold: u32,
    /// How long a request may wait for its t switching shares before it is refused.
    pub request_timeout: Duration,
    /// How long the keyholders asked for a request get to answer before those that did not
    /// are left out of it and others are asked (when t others are ready): a hung keyholder
    /// (stopped, swapping, behind a dead link the transport has not noticed yet) would
    /// otherwise hold every request it was asked for until the request timeout.
    pub attempt_timeout: Duration,
    /// Requests being evaluated or switched at once (more are refused: memory is bounded).
    pub max_in_flight: usize,
    /// The keys are for head training (`coordinator train-head`): the audit names its steps so.
    pub head: bool,
}

/// Where setup is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupStep {
    /// Collecting round-1 key shares and sealed Shamir shares.
    Round1,
    /// Collecting relinearization round-2 shares.
    Round2,
    /// Waiting for every keyholder to be ready: its threshold secret formed and, serving a
    /// model, the evaluation keys held.
    Keys,
    /// Serving requests.
    Serving,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ServingEvent {
    Joined {
        hospital: u32,
    },
    Left {
        hospital: u32,
    },
    /// A hospital's round-1 shares and sealed shares were validated and stored; `plan` is the
    /// fingerprint of the plan it made them for.
    Round1Stored {
        hospital: u32,
        plan: [u8; 32],
    },
    Round2Stored {
        hospital: u32,
    },
    /// A hospital formed its threshold secret of the key; `keys`: it also holds the setup's
    /// evaluation keys (it said so reconnecting).
    ThresholdFormed {
        hospital: u32,
        keys: bool,
    },
    /// A keyholder holds the evaluation keys it was sent and serves requests.
    KeyholderReady {
        hospital: u32,
    },
    /// A request was checked (mode a: its images, for the keyholders to evaluate) or a head's
    /// step computed (its state, to refresh): it waits for t keyholders.
    Ready {
        request: u64,
        requester: u32,
        now: Instant,
    },
    /// A hospital's switching shares for (request, attempt) were folded.
    SharesFolded {
        request: u64,
        attempt: u32,
        hospital: u32,
    },
    /// A hospital's shares for (request, attempt) did not decode or fit: it takes no further
    /// part in that request, which goes on with another t.
    SharesRefused {
        request: u64,
        attempt: u32,
        hospital: u32,
    },
    /// Time passed: requests older than the request timeout are refused; the silent
    /// keyholders of an attempt older than the attempt timeout are left out of it.
    Tick {
        now: Instant,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum ServingAction {
    /// Ask `to` for its round-1 shares (it compiles the plan of its final model).
    StartSetup { to: Vec<u32> },
    /// Make (once) and send the round-1 aggregate and the sealed shares addressed to each.
    SendRound1 { to: Vec<u32> },
    /// Make (once) the evaluation keys (or, serving a model, the sums they are made of) from
    /// both rounds and store them.
    MakeKeys,
    /// Send the keyholders `to` the sums their evaluation keys are made of.
    SendKeys { to: Vec<u32> },
    /// Ask `active` to evaluate a request and switch its results towards its requester's key
    /// (head training: to refresh a step's state, or switch the trained head).
    RequestSwitch {
        request: u64,
        attempt: u32,
        requester: u32,
        active: Vec<u32>,
    },
    /// Finish the switch and send the results to the requester.
    Deliver { request: u64, requester: u32 },
    /// Refuse a request with a reason the requester reads.
    Refuse { request: u64, reason: String },
    /// Save the served setup (its keys), so a restart serves the same one.
    Persist,
    Audit {
        hospital: Option<u32>,
        event: &'static str,
        detail: String,
    },
}

#[derive(Clone, Debug, PartialEq)]
struct Pending {
    requester: u32,
    since: Instant,
    attempt: u32,
    /// whether a switch was asked for already (a new one is a new attempt, so late shares of
    /// an abandoned attempt are never folded into the next)
    asked: bool,
    active: Vec<u32>,
    /// when the current attempt's clock started (`None`: asked since the last tick; the next
    /// tick, due at once, starts it: the engine knows the time only from its events)
    asked_at: Option<Instant>,
    done: BTreeSet<u32>,
    /// hospitals whose shares for this request were malformed, or that did not answer an
    /// attempt in time
    excluded: BTreeSet<u32>,
}

/// The serving protocol's state.
#[derive(Debug)]
pub struct ServingEngine {
    cfg: ServingConfig,
    step: SetupStep,
    connected: BTreeSet<u32>,
    plan: Option<[u8; 32]>,
    round1: BTreeSet<u32>,
    round2: BTreeSet<u32>,
    formed: BTreeSet<u32>,
    /// formed and, serving a model, holding the evaluation keys: who may be asked
    ready: BTreeSet<u32>,
    requests: BTreeMap<u64, Pending>,
}

impl ServingEngine {
    pub fn new(cfg: ServingConfig) -> Self {
        Self {
            cfg,
            step: SetupStep::Round1,
            connected: BTreeSet::new(),
            plan: None,
            round1: BTreeSet::new(),
            round2: BTreeSet::new(),
            formed: BTreeSet::new(),
            ready: BTreeSet::new(),
            requests: BTreeMap::new(),
        }
    }

    /// Serving a saved setup after a restart: every keyholder must say it holds a share of it
    /// (`ThresholdFormed`) and be ready before it is asked.
    pub fn restored(cfg: ServingConfig) -> Self {
        let all: BTreeSet<u32> = (1..=cfg.hospitals).collect();
        Self {
            step: SetupStep::Serving,
            round1: all.clone(),
            round2: all,
            ..Self::new(cfg)
        }
    }

    pub fn step(&self) -> SetupStep {
        self.step
    }

    /// When time alone next changes something ([`ServingEvent::Tick`]): the oldest waiting
    /// request's timeout, or an attempt's (at once for an attempt whose clock has not started).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.requests
            .values()
            .map(|p| {
                let request = p.since + self.cfg.request_timeout;
                match (p.active.is_empty(), p.asked_at) {
                    (true, _) => request,
                    (false, None) => p.since,
                    (false, Some(at)) => request.min(at + self.cfg.attempt_timeout),
                }
            })
            .min()
    }

    fn all(&self) -> BTreeSet<u32> {
        (1..=self.cfg.hospitals).collect()
    }

    /// Whether round-1 shares of `hospital` for `plan` may be read (and why not).
    pub fn accepts_round1(&self, hospital: u32, plan: &[u8; 32]) -> Result<(), String> {
        if self.step != SetupStep::Round1 {
            return Err("round-1 key shares after round 1".into());
        }
        if self.round1.contains(&hospital) {
            return Err("round-1 key shares sent twice".into());
        }
        match &self.plan {
            Some(p) if p != plan => Err(
                "key shares for another plan than the other hospitals': is this the final model?"
                    .into(),
            ),
            _ => Ok(()),
        }
    }

    /// Whether the round-2 share of `hospital` may be read (and why not).
    pub fn accepts_round2(&self, hospital: u32) -> Result<(), String> {
        if self.step != SetupStep::Round2 {
            return Err("a round-2 share outside round 2".into());
        }
        if self.round2.contains(&hospital) {
            return Err("round-2 share sent twice".into());
        }
        Ok(())
    }

    /// Whether a request may be taken now (and why not), with `reading` more admitted by the
    /// shell that are still being read or evaluated: every request counts from its header on.
    pub fn accepts_request(&self, reading: usize) -> Result<(), String> {
        if self.step != SetupStep::Serving {
            return Err("not serving yet: key setup is under way".into());
        }
        let in_flight = self.requests.len() + reading;
        if in_flight >= self.cfg.max_in_flight {
            return Err(format!(
                "{in_flight} requests are in progress (at most {}); try again shortly",
                self.cfg.max_in_flight
            ));
        }
        Ok(())
    }

    /// Whether switching shares of `hospital` for (request, attempt) may be read.
    /// The keyholders asked for the current attempt of `request`, in the order they were asked.
    pub fn active(&self, request: u64) -> Option<(u32, &[u32])> {
        self.requests
            .get(&request)
            .map(|p| (p.attempt, p.active.as_slice()))
    }

    pub fn accepts_shares(&self, hospital: u32, request: u64, attempt: u32) -> Result<(), String> {
        let p = self
            .requests
            .get(&request)
            .ok_or(format!("switching shares for unknown request {request}"))?;
        if p.attempt != attempt {
            return Err(format!(
                "switching shares for attempt {attempt}, expected {}",
                p.attempt
            ));
        }
        if !p.active.contains(&hospital) {
            return Err("switching shares from a hospital not asked for them".into());
        }
        if p.done.contains(&hospital) {
            return Err("switching shares sent twice".into());
        }
        Ok(())
    }

    pub fn handle(&mut self, event: ServingEvent) -> Vec<ServingAction> {
        let mut out = Vec::new();
        match event {
            ServingEvent::Joined { hospital } => {
                self.connected.insert(hospital);
                match self.step {
                    SetupStep::Round1 if !self.round1.contains(&hospital) => {
                        out.push(ServingAction::StartSetup { to: vec![hospital] })
                    }
                    SetupStep::Round2 if !self.round2.contains(&hospital) => {
                        out.push(ServingAction::SendRound1 { to: vec![hospital] })
                    }
                    SetupStep::Keys if !self.formed.contains(&hospital) => {
                        out.push(ServingAction::SendRound1 { to: vec![hospital] })
                    }
                    _ => {}
                }
                self.replan_all(&mut out);
            }
            ServingEvent::Left { hospital } => {
                self.connected.remove(&hospital);
                // it says again whether it holds the keys when it comes back
                self.ready.remove(&hospital);
                let stalled: Vec<u64> = self
                    .requests
                    .iter()
                    .filter(|(_, p)| p.active.contains(&hospital) && !p.done.contains(&hospital))
                    .map(|(r, _)| *r)
                    .collect();
                for r in stalled {
                    self.replan(r, &mut out);
                }
            }
            ServingEvent::Round1Stored { hospital, plan } => {
                if self.accepts_round1(hospital, &plan).is_err() {
                    return out;
                }
                self.plan.get_or_insert(plan);
                self.round1.insert(hospital);
                if self.round1 == self.all() {
                    self.step = SetupStep::Round2;
                    out.push(ServingAction::SendRound1 {
                        to: self.connected.iter().copied().collect(),
                    });
                }
            }
            ServingEvent::Round2Stored { hospital } => {
                if self.step != SetupStep::Round2 {
                    return out;
                }
                self.round2.insert(hospital);
                if self.round2 == self.all() {
                    self.step = SetupStep::Keys;
                    out.push(ServingAction::MakeKeys);
                    out.push(ServingAction::Audit {
                        hospital: None,
                        event: if self.cfg.head {
                            "head-keys"
                        } else {
                            "inference-keys"
                        },
                        detail: format!(
                            "evaluation keys made from the shares of {} hospitals",
                            self.cfg.hospitals
                        ),
                    });
                    // head training too: each keyholder replays the steps it refreshes
                    let to: Vec<u32> = self.formed.intersection(&self.connected).copied().collect();
                    if !to.is_empty() {
                        out.push(ServingAction::SendKeys { to });
                    }
                    self.maybe_serve(&mut out);
                }
            }
            ServingEvent::ThresholdFormed { hospital, keys } => {
                self.formed.insert(hospital);
                let made = matches!(self.step, SetupStep::Keys | SetupStep::Serving);
                if keys {
                    if made {
                        self.ready.insert(hospital);
                    }
                } else if made {
                    out.push(ServingAction::SendKeys { to: vec![hospital] });
                }
                self.maybe_serve(&mut out);
                self.replan_all(&mut out);
            }
            ServingEvent::KeyholderReady { hospital } => {
                if self.formed.contains(&hospital) && self.connected.contains(&hospital) {
                    self.ready.insert(hospital);
                    out.push(ServingAction::Audit {
                        hospital: Some(hospital),
                        event: "keyholder-ready",
                        detail: "holds the evaluation keys; evaluates and switches requests".into(),
                    });
                    self.maybe_serve(&mut out);
                    self.replan_all(&mut out);
                }
            }
            ServingEvent::Ready {
                request,
                requester,
                now,
            } => {
                if self.step == SetupStep::Serving && !self.requests.contains_key(&request) {
                    self.requests.insert(
                        request,
                        Pending {
                            requester,
                            since: now,
                            attempt: 0,
                            asked: false,
                            active: Vec::new(),
                            asked_at: None,
                            done: BTreeSet::new(),
                            excluded: BTreeSet::new(),
                        },
                    );
                    self.replan(request, &mut out);
                }
            }
            ServingEvent::SharesFolded {
                request,
                attempt,
                hospital,
            } => {
                if self.accepts_shares(hospital, request, attempt).is_ok() {
                    let p = self.requests.get_mut(&request).expect("checked above");
                    p.done.insert(hospital);
                    if p.done.len() == p.active.len() {
                        let requester = p.requester;
                        self.requests.remove(&request);
                        out.push(ServingAction::Deliver { request, requester });
                    }
                }
            }
            ServingEvent::SharesRefused {
                request,
                attempt,
                hospital,
            } => {
                let Some(p) = self.requests.get_mut(&request) else {
                    return out;
                };
                if p.attempt != attempt || !p.active.contains(&hospital) {
                    return out;
                }
                p.excluded.insert(hospital);
                out.push(ServingAction::Audit {
                    hospital: Some(hospital),
                    event: "shares-refused",
                    detail: format!(
                        "request {request}: malformed shares; asking {} others",
                        self.cfg.threshold
                    ),
                });
                self.replan(request, &mut out);
            }
            ServingEvent::Tick { now } => {
                let late: Vec<u64> = self
                    .requests
                    .iter()
                    .filter(|(_, p)| {
                        now.saturating_duration_since(p.since) >= self.cfg.request_timeout
                    })
                    .map(|(r, _)| *r)
                    .collect();
                for request in late {
                    self.requests.remove(&request);
                    out.push(ServingAction::Refuse {
                        request,
                        reason: format!(
                            "{} hospitals did not re-encrypt the result within {} s",
                            self.cfg.threshold,
                            self.cfg.request_timeout.as_secs()
                        ),
                    });
                }
                self.slow_attempts(now, &mut out);
            }
        }
        out
    }

    fn maybe_serve(&mut self, out: &mut Vec<ServingAction>) {
        if self.step == SetupStep::Keys && self.ready == self.all() {
            self.step = SetupStep::Serving;
            out.push(ServingAction::Persist);
            let (event, what) = if self.cfg.head {
                ("head-ready", "contributions are trained on; each refresh")
            } else {
                (
                    "serving",
                    "the model is served by its keyholders; each request's evaluation and switch",
                )
            };
            out.push(ServingAction::Audit {
                hospital: None,
                event,
                detail: format!(
                    "{what} need {} of {} hospitals",
                    self.cfg.threshold, self.cfg.hospitals
                ),
            });
        }
    }

    /// Starts the clock of attempts asked since the last tick; leaves out of a request the
    /// keyholders that let its attempt outlive the attempt timeout, and asks others when t
    /// others are ready (else the attempt goes on, its clock started again).
    fn slow_attempts(&mut self, now: Instant, out: &mut Vec<ServingAction>) {
        let t = self.cfg.threshold as usize;
        let mut slow = Vec::new();
        for (&r, p) in self
            .requests
            .iter_mut()
            .filter(|(_, p)| !p.active.is_empty())
        {
            match p.asked_at {
                None => p.asked_at = Some(now),
                Some(at) if now.saturating_duration_since(at) >= self.cfg.attempt_timeout => {
                    slow.push(r)
                }
                Some(_) => {}
            }
        }
        for request in slow {
            let Some(p) = self.requests.get_mut(&request) else {
                continue;
            };
            let silent: Vec<u32> = p
                .active
                .iter()
                .filter(|h| !p.done.contains(h))
                .copied()
                .collect();
            let others = self
                .connected
                .intersection(&self.ready)
                .filter(|h| !p.excluded.contains(h) && !silent.contains(h))
                .count();
            if others < t {
                p.asked_at = Some(now);
                continue;
            }
            p.excluded.extend(&silent);
            out.push(ServingAction::Audit {
                hospital: None,
                event: "inference-switch-slow",
                detail: format!(
                    "request {request}: hospitals {silent:?} did not answer attempt {} within \
                     {} s; asking {t} others",
                    p.attempt,
                    self.cfg.attempt_timeout.as_secs()
                ),
            });
            self.replan(request, out);
        }
    }

    fn replan_all(&mut self, out: &mut Vec<ServingAction>) {
        let waiting: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, p)| p.active.is_empty())
            .map(|(r, _)| *r)
            .collect();
        for r in waiting {
            self.replan(r, out);
        }
    }

    /// The connected keyholders that are ready, ascending.
    pub fn ready_keyholders(&self) -> Vec<u32> {
        self.connected.intersection(&self.ready).copied().collect()
    }

    /// Picks t connected hospitals that are ready (holding a threshold secret and, serving a
    /// model, its evaluation keys) for a request; waits when there are fewer.
    fn replan(&mut self, request: u64, out: &mut Vec<ServingAction>) {
        let t = self.cfg.threshold as usize;
        let Some(p) = self.requests.get_mut(&request) else {
            return;
        };
        let ready: Vec<u32> = self
            .connected
            .intersection(&self.ready)
            .filter(|h| !p.excluded.contains(h))
            .copied()
            .collect();
        if ready.len() < t {
            if !p.active.is_empty() {
                out.push(ServingAction::Audit {
                    hospital: None,
                    event: "inference-switch-waiting",
                    detail: format!(
                        "request {request}: {} connected hospitals, {t} needed",
                        ready.len()
                    ),
                });
            }
            p.active.clear();
            p.done.clear();
            return;
        }
        if p.asked {
            p.attempt += 1;
        }
        p.asked = true;
        p.active = ready.into_iter().take(t).collect();
        p.asked_at = None;
        p.done.clear();
        out.push(ServingAction::RequestSwitch {
            request,
            attempt: p.attempt,
            requester: p.requester,
            active: p.active.clone(),
        });
    }
}
