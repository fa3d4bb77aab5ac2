//! The tokio shell of mode (a) serving and head training: accepts the federation's mTLS QUIC
//! connections, hands each keyholder's hello and each stream to the sans-IO [`Service`] (after
//! [`Service::admit`] says how many items to read), and carries out what it decides: sending,
//! closing a replaced connection, running head training's computations on blocking threads,
//! saving the served state, writing the audit log. The service sits behind one mutex that is
//! never held across an `await`. What goes to one connection leaves in the order the service
//! decided it (one writer per connection): a keyholder must have a step's relayed shares before
//! the request that follows them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use protocol::link::{Link, accept_connection, listen};
use protocol::tls::TlsFiles;
use protocol::{Body, CollectiveMsg, FederationId, HeadMsg, Incoming, Items, Outbox, Party};
use tokio::sync::Notify;
use tracing::{info, warn};

use super::disk::ServingDisk;
use super::service::Service;
use super::service_io::{Action, Conn, Event};
use crate::timer::until_due;
use he_agg::aggregate::BackendChoice;

/// The mode (a) server.
pub struct CollectiveServer {
    federation: FederationId,
    roster: HashMap<String, Party>,
    tls: TlsFiles,
    /// time a peer gets to deliver each item
    item_timeout: Duration,
    /// the audit log and the saved served state (none in tests without a state directory)
    disk: Option<ServingDisk>,
    service: Mutex<Service>,
    /// woken when a call into the service may have moved its next deadline
    deadline_moved: Notify,
    conns: Mutex<HashMap<Conn, Peer>>,
    next_conn: AtomicU64,
    /// where head-training steps run (`coordinator train-head --backend`)
    head_backend: BackendChoice,
}

impl CollectiveServer {
    /// A server around `service`; `disk` keeps its audit log and saves the served state.
    pub fn new(
        service: Service,
        roster: HashMap<String, Party>,
        tls: TlsFiles,
        item_timeout: Duration,
        disk: Option<ServingDisk>,
        head_backend: BackendChoice,
    ) -> Arc<Self> {
        Arc::new(Self {
            federation: service.federation(),
            roster,
            tls,
            item_timeout,
            disk,
            service: Mutex::new(service),
            deadline_moved: Notify::new(),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            head_backend,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Service> {
        // a panic elsewhere must not take serving down with a poisoned lock
        self.service.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn conns(&self) -> MutexGuard<'_, HashMap<Conn, Peer>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Binds the QUIC endpoint (port 0: any free port).
    pub fn bind(&self, addr: SocketAddr) -> anyhow::Result<protocol::quinn::Endpoint> {
        listen(addr, &self.tls).with_context(|| format!("listening on {addr}"))
    }

    /// Serves connections until the endpoint is closed.
    pub async fn serve(self: Arc<Self>, endpoint: protocol::quinn::Endpoint) -> anyhow::Result<()> {
        info!(addr = %endpoint.local_addr()?, "serving mode (a): waiting for every keyholder");
        let timer = self.clone();
        tokio::spawn(async move {
            loop {
                let due = timer.lock().poll_timeout();
                if until_due(due, &timer.deadline_moved).await {
                    timer.timeout();
                }
            }
        });
        while let Some(incoming) = endpoint.accept().await {
            let server = self.clone();
            tokio::spawn(async move {
                match accept_connection(incoming, server.federation, &server.roster).await {
                    Ok(link) => {
                        let link = link.with_timeout(server.item_timeout);
                        server.connection(link).await
                    }
                    Err(e) => warn!("connection refused: {e}"),
                }
            });
        }
        Ok(())
    }

    /// Feeds an event and carries out what the service decides.
    async fn feed(self: &Arc<Self>, event: Event) {
        self.with_service(|s| tokio::task::block_in_place(|| s.handle(Instant::now(), event)));
    }

    /// The service's deadline came.
    fn timeout(self: &Arc<Self>) {
        self.with_service(|s| s.handle_timeout(Instant::now()));
    }

    /// Runs `f` on the service, then carries out what it decided, in order, outside the lock;
    /// wakes the timer, whose deadline may have moved.
    fn with_service(self: &Arc<Self>, f: impl FnOnce(&mut Service)) {
        let actions: Vec<Action> = {
            let mut s = self.lock();
            f(&mut s);
            std::iter::from_fn(|| s.poll_action()).collect()
        };
        self.deadline_moved.notify_one();
        for action in actions {
            self.carry_out(action);
        }
    }

    fn carry_out(self: &Arc<Self>, action: Action) {
        match action {
            Action::Send { conn, body, items } => self.post(conn, body, items.into()),
            Action::SendShared {
                conn,
                body,
                first,
                items,
            } => {
                let items = Items {
                    own: first,
                    shared: Some(items),
                };
                self.post(conn, body, items);
            }
            Action::Close { conn, reason } => {
                if let Some(p) = self.conns().get(&conn) {
                    p.link.close(reason);
                }
            }
            Action::BuildRun(job) => {
                let (server, backend) = (self.clone(), self.head_backend);
                tokio::spawn(async move {
                    let built = tokio::task::spawn_blocking(move || job.build(backend))
                        .await
                        .unwrap_or_else(|e| Err(format!("reading the contribution failed: {e}")));
                    server.feed(Event::RunBuilt(built)).await;
                });
            }
            Action::Step(mut run) => {
                let server = self.clone();
                tokio::spawn(async move {
                    let done = tokio::task::spawn_blocking(move || {
                        let r = run.compute_step().map_err(|e| e.to_string());
                        (run, r)
                    })
                    .await;
                    match done {
                        Ok((run, result)) => server.feed(Event::StepDone { run, result }).await,
                        Err(e) => warn!("a head training step failed: {e}"),
                    }
                });
            }
            Action::Save(state) => {
                if let Some(disk) = &self.disk {
                    disk.save(*state)
                }
            }
            Action::Audit {
                hospital,
                event,
                detail,
            } => self.audit(hospital, event, &detail),
        }
    }

    /// Queues a message for `conn`'s writer (none once the connection is gone).
    fn post(&self, conn: Conn, body: Body, items: Items) {
        if let Some(p) = self.conns().get(&conn) {
            p.outbox.post(body, items);
        }
    }

    /// An audit entry; one that cannot be written is logged (the disk's error is the warning).
    fn audit(&self, hospital: Option<u32>, event: &str, detail: &str) {
        info!(?hospital, event, "{detail}");
        if let Some(disk) = &self.disk {
            let _ = disk.audit(hospital, event, detail);
        }
    }

    /// A request is recorded in the audit log before anything of it is read or evaluated;
    /// one that cannot be recorded is refused (`disk`).
    fn record_request(&self, hospital: u32, body: &Body) -> Result<(), String> {
        let (event, detail) = match body {
            Body::Collective(CollectiveMsg::InferCollective(h)) => (
                "inference-request",
                format!("request {} of {} images", h.request_id, h.images),
            ),
            Body::Head(HeadMsg::HeadContribution(h)) => (
                "head-contribution",
                format!("{} examples in {} chunks", h.examples, h.chunks),
            ),
            _ => return Ok(()),
        };
        info!(hospital, event, "{detail}");
        let Some(disk) = &self.disk else {
            return Ok(());
        };
        disk.audit(Some(hospital), event, &detail).map_err(|e| {
            format!(
                "the server cannot record this request in its audit log ({e}); nothing was \
                     evaluated: try again once its operator has freed space on its state disk"
            )
        })
    }

    async fn connection(self: Arc<Self>, link: Link) {
        let peer = link.peer();
        let Party::Hospital(hospital) = peer else {
            link.close("hospitals only");
            return;
        };
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let peer_out = Peer {
            link: link.clone(),
            outbox: Outbox::spawn(link.clone()),
        };
        self.conns().insert(conn, peer_out);
        loop {
            let mut incoming = match link.accept().await {
                Ok(i) => i,
                Err(e) => {
                    info!(%peer, "connection closed: {e}");
                    break;
                }
            };
            let body = incoming.envelope.body.clone();
            if let Body::Collective(CollectiveMsg::KeyholderHello {
                software,
                setup,
                ready,
            }) = body
            {
                info!(%peer, %software, "keyholder connected");
                let hello = Event::KeyholderHello {
                    conn,
                    hospital,
                    setup,
                    ready,
                };
                self.feed(hello).await;
                continue;
            }
            let kind = body.kind();
            let admitted = tokio::task::block_in_place(|| self.lock().admit(hospital, &body));
            let recorded = match admitted {
                Ok(count) => {
                    match tokio::task::block_in_place(|| self.record_request(hospital, &body)) {
                        Ok(()) => Ok(count),
                        Err(reason) => {
                            self.feed(Event::Unread {
                                hospital,
                                body: body.clone(),
                            })
                            .await;
                            Err(reason)
                        }
                    }
                }
                Err(reason) => Err(reason),
            };
            let outcome = match recorded {
                Ok(count) => match read_all(&mut incoming, count).await {
                    Ok(items) => {
                        let message = Event::Message {
                            conn,
                            hospital,
                            body,
                            items,
                        };
                        self.feed(message).await;
                        Ok(())
                    }
                    Err(reason) => {
                        self.feed(Event::Unread { hospital, body }).await;
                        Err(reason)
                    }
                },
                Err(reason) => Err(reason),
            };
            if let Err(reason) = outcome {
                warn!(%peer, message = kind, "refused: {reason}");
                self.post(conn, Body::Refused { reason }, Items::from(vec![]));
            }
        }
        self.conns().remove(&conn);
        self.feed(Event::Closed { conn, hospital }).await;
    }
}

/// Exactly `count` items, then the stream's end.
async fn read_all(incoming: &mut Incoming, count: usize) -> Result<Vec<Vec<u8>>, String> {
    let mut items = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        match incoming.next_item().await {
            Ok(Some(item)) => items.push(item),
            Ok(None) => return Err("the stream ended before its announced items".into()),
            Err(e) => return Err(format!("reading the stream: {e}")),
        }
    }
    match incoming.next_item().await {
        Ok(None) => Ok(items),
        Ok(Some(_)) => Err("more items than announced".into()),
        Err(e) => Err(format!("reading the stream: {e}")),
    }
}

/// A connection and the queue of what is to be sent on it.
struct Peer {
    link: Link,
    outbox: Outbox,
}
