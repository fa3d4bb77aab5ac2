//! The tokio shell of the inference server: accepts the federation's mTLS QUIC connections
//! (hospitals known to the roster), answers model-information requests, feeds key streams to
//! [`keys`](super::keys) (kept per requester) and request streams item by item to the sans-IO
//! [`handler`](super::handler), evaluates complete requests on a blocking thread and streams the
//! results back. Every request and every refusal is logged with the requester's identity.

use protocol::ReleasedMsg;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use protocol::link::{Link, accept_connection, listen};
use protocol::tls::TlsFiles;
use protocol::{Body, FederationId, Incoming, Party};
use tokio::sync::{Semaphore, SemaphorePermit};
use tracing::{info, warn};

use super::handler::{ReadyRequest, Refreshing, Step};
use super::keys::KeyCache;
use super::model::ServedModel;
use super::refusal::{Refusal, hex};

/// How the server runs.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Requests received and evaluated at once (each holds its requester's keys in memory).
    pub concurrent_requests: usize,
    /// Time a requester gets to deliver each item.
    pub item_timeout: Duration,
    /// Bytes of evaluation keys kept for requesters (least recently used out first): what
    /// bounds the server's memory.
    pub key_cache_bytes: u64,
    /// Key sets kept at most, a guard against very many small sets. It was 16: 20 requesters
    /// of 39 MB sets, far inside the byte budget, then evicted each other and sent their keys
    /// again for 36 of 200 requests (coordinator/tests/load.rs).
    pub key_cache_sets: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            concurrent_requests: 2,
            item_timeout: Duration::from_secs(60),
            key_cache_bytes: 2 << 30,
            key_cache_sets: 1024,
        }
    }
}

/// A mode (b) inference server.
pub struct InferenceServer {
    model: Arc<ServedModel>,
    federation: FederationId,
    roster: HashMap<String, Party>,
    tls: TlsFiles,
    options: ServeOptions,
    slots: Semaphore,
    /// one stream (keys or request) at a time per hospital, so one cannot hold every slot
    per_peer: Mutex<HashMap<Party, Arc<Semaphore>>>,
    keys: Mutex<KeyCache>,
}

/// Time a request's or key stream's items get in all: this much per item, so a peer that
/// trickles its items cannot hold a slot for item_timeout × items.
const READ_PER_ITEM: Duration = Duration::from_secs(10);

/// Reads up to `items` items of `incoming` into `push`, all within [`READ_PER_ITEM`] each;
/// whether all came (a stream that ends early stops the loop: the caller sees what is missing).
async fn read_items(
    incoming: &mut Incoming,
    items: u64,
    what: &str,
    mut push: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<bool, String> {
    let budget = READ_PER_ITEM * u32::try_from(items).unwrap_or(u32::MAX);
    let read = async {
        for _ in 0..items {
            match incoming.next_item().await {
                Ok(Some(item)) => push(&item)?,
                Ok(None) => return Ok(false),
                Err(e) => return Err(format!("reading {what}: {e}")),
            }
        }
        Ok(true)
    };
    tokio::time::timeout(budget, read)
        .await
        .map_err(|_| format!("{what} did not arrive within {} s", budget.as_secs()))?
}

impl InferenceServer {
    pub fn new(
        model: ServedModel,
        federation: FederationId,
        roster: HashMap<String, Party>,
        tls: TlsFiles,
        options: ServeOptions,
    ) -> Arc<Self> {
        Arc::new(Self {
            model: Arc::new(model),
            federation,
            roster,
            tls,
            slots: Semaphore::new(options.concurrent_requests.max(1)),
            per_peer: Mutex::new(HashMap::new()),
            keys: Mutex::new(KeyCache::new(
                options.key_cache_bytes,
                options.key_cache_sets,
            )),
            options,
        })
    }

    pub fn model(&self) -> &Arc<ServedModel> {
        &self.model
    }

    /// Binds the QUIC endpoint (port 0: any free port; see `local_addr`).
    pub fn bind(&self, addr: SocketAddr) -> anyhow::Result<protocol::quinn::Endpoint> {
        listen(addr, &self.tls).with_context(|| format!("listening on {addr}"))
    }

    /// Serves connections until the endpoint is closed.
    pub async fn serve(self: Arc<Self>, endpoint: protocol::quinn::Endpoint) -> anyhow::Result<()> {
        let spec = self.model.plan().spec();
        info!(
            addr = %endpoint.local_addr()?,
            model = %self.model.info().name,
            n = spec.parameters().n(),
            depth = spec.depth(),
            galois_keys = spec.galois_steps().len(),
            "serving encrypted inference (mode b)"
        );
        while let Some(incoming) = endpoint.accept().await {
            let server = self.clone();
            tokio::spawn(async move {
                match accept_connection(incoming, server.federation, &server.roster).await {
                    Ok(link) => {
                        let link = link.with_timeout(server.options.item_timeout);
                        info!(peer = %link.peer(), addr = %link.remote_address(), "requester connected");
                        server.connection(link).await;
                    }
                    Err(e) => warn!("connection refused: {e}"),
                }
            });
        }
        Ok(())
    }

    async fn connection(self: Arc<Self>, link: Link) {
        loop {
            let incoming = match link.accept().await {
                Ok(i) => i,
                Err(e) => {
                    info!(peer = %link.peer(), "requester gone: {e}");
                    return;
                }
            };
            let kind = incoming.envelope.body.kind();
            let outcome = match &incoming.envelope.body {
                Body::InferInfoRequest => link
                    .send(
                        0,
                        Body::Released(ReleasedMsg::InferInfo(self.model.info().clone())),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Body::Released(ReleasedMsg::InferKeys(_)) => self.keys(&link, incoming).await,
                Body::Released(ReleasedMsg::Infer(_)) => self.request(&link, incoming).await,
                _ => Err(Refusal::Unexpected(kind).to_string()),
            };
            if let Err(reason) = outcome {
                warn!(peer = %link.peer(), message = kind, "refused: {reason}");
                if let Err(e) = link.send(0, Body::Refused { reason }).await {
                    info!(peer = %link.peer(), "cannot tell the requester: {e}");
                    return;
                }
            }
        }
    }

    /// Reads a stream's `items` items into `push` once its slots are taken (the peer's own,
    /// refused at once while busy, then one of the server's), all within [`READ_PER_ITEM`]
    /// each; anything after them is refused. The slots are returned to be held further.
    async fn stream_in(
        &self,
        peer: Party,
        incoming: &mut Incoming,
        items: u64,
        what: &str,
        push: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(tokio::sync::OwnedSemaphorePermit, SemaphorePermit<'_>), String> {
        let mine = self.peer_slot(peer)?;
        let slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| "the server is shutting down".to_string())?;
        if read_items(incoming, items, what, push).await? {
            match incoming.next_item().await {
                Ok(None) => {}
                Ok(Some(_)) => {
                    return Err(Refusal::TooManyItems { announced: items }.to_string());
                }
                Err(e) => return Err(format!("reading {what}: {e}")),
            }
        }
        Ok((mine, slot))
    }

    /// The peer's own slot: refused at once while its previous stream still runs.
    fn peer_slot(&self, peer: Party) -> Result<tokio::sync::OwnedSemaphorePermit, String> {
        let sem = self
            .per_peer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(peer)
            .or_insert_with(|| Arc::new(Semaphore::new(1)))
            .clone();
        sem.try_acquire_owned().map_err(|_| {
            "this hospital's previous request or key stream is still in progress: one at a time"
                .to_string()
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, KeyCache> {
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A key stream: checked key by key, kept, acknowledged. `Err` carries the refusal.
    async fn keys(&self, link: &Link, mut incoming: Incoming) -> Result<(), String> {
        let Body::Released(ReleasedMsg::InferKeys(header)) = &incoming.envelope.body else {
            return Err("not a key stream".into());
        };
        let header = header.clone();
        let peer = link.peer();
        let mut pending = self.model.begin_keys(&header).map_err(|e| e.to_string())?;
        // keys are large: one stream at a time per request slot, and per hospital
        let items = pending.remaining();
        let _slots = self
            .stream_in(peer, &mut incoming, items, "the keys", |item| {
                pending.push(item).map_err(|e| e.to_string())
            })
            .await?;
        let set = pending.finish().map_err(|e| e.to_string())?;
        let (bytes, validate) = (set.bytes, set.validate);
        let (set, kept, kept_bytes) = {
            let mut cache = self.cache();
            let set = cache.insert(peer, set);
            (set, cache.len(), cache.bytes())
        };
        // on a device the keys go there now, so that no request waits for their upload
        let model = self.model.clone();
        tokio::task::spawn_blocking(move || set.resident(&model).map(|_| ()))
            .await
            .map_err(|e| format!("placing the keys: {e}"))?
            .map_err(|e| format!("the keys could not be placed on the device: {e}"))?;
        info!(
            %peer,
            keys = %hex(&header.keys),
            mb = bytes as f64 / 1e6,
            validate_ms = validate.as_millis() as u64,
            kept,
            kept_mb = kept_bytes as f64 / 1e6,
            "evaluation keys stored"
        );
        link.send(
            0,
            Body::Released(ReleasedMsg::InferKeysStored { keys: header.keys }),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
    }

    /// One request: header, items, evaluation, result stream. `Err` carries the refusal.
    async fn request(&self, link: &Link, mut incoming: Incoming) -> Result<(), String> {
        let Body::Released(ReleasedMsg::Infer(header)) = &incoming.envelope.body else {
            return Err("not an inference request".into());
        };
        let header = header.clone();
        let peer = link.peer();
        info!(
            %peer,
            request = header.request_id,
            images = header.images,
            keys = %hex(&header.keys),
            "inference request"
        );
        let keys = self.cache().get(peer, &header.keys).ok_or_else(|| {
            Refusal::UnknownKeys {
                id: hex(&header.keys),
            }
            .to_string()
        })?;
        let mut pending = self.model.begin(&header, keys).map_err(|e| e.to_string())?;
        // the slots are held through the evaluation
        let items = pending.remaining();
        let _slots = self
            .stream_in(peer, &mut incoming, items, "the request", |item| {
                pending.push(item).map_err(|e| e.to_string())
            })
            .await?;
        let mut ready = pending.finish().map_err(|e| e.to_string())?;
        let mut refreshes = 0u32;
        // segment by segment: a deep model's requester refreshes the ciphertexts in between
        let response = loop {
            let step = tokio::task::spawn_blocking(move || ready.evaluate())
                .await
                .map_err(|e| format!("evaluation task failed: {e}"))?
                .map_err(|e| e.to_string())?;
            match step {
                Step::Done(response) => break response,
                Step::Refresh(refreshing) => {
                    ready = self.refresh(link, refreshing).await?;
                    refreshes += 1;
                }
            }
        };
        let mut out = link
            .open(
                0,
                Body::Released(ReleasedMsg::InferResult(
                    protocol::serve::released::InferResult {
                        request_id: response.request_id,
                        evaluate_us: response.evaluate.as_micros() as u64,
                        validate_us: response.validate.as_micros() as u64,
                        count: response.ciphertexts.len() as u32,
                    },
                )),
            )
            .await
            .map_err(|e| e.to_string())?;
        for ct in &response.ciphertexts {
            out.item(ct).await.map_err(|e| e.to_string())?;
        }
        let bytes = out.finish().await.map_err(|e| e.to_string())?;
        info!(
            %peer,
            request = header.request_id,
            images = response.ciphertexts.len(),
            evaluate_ms = response.evaluate.as_millis() as u64,
            refreshes,
            bytes,
            "inference answered"
        );
        Ok(())
    }

    /// One refresh round trip: the masked outputs out, the requester's answer in (its items
    /// within [`READ_PER_ITEM`] each, nothing more), the next segment's request back.
    async fn refresh(&self, link: &Link, mut out: Refreshing) -> Result<ReadyRequest, String> {
        let header = out.header;
        let mut stream = link
            .open(0, Body::Released(ReleasedMsg::Refresh(header)))
            .await
            .map_err(|e| e.to_string())?;
        for ct in std::mem::take(&mut out.ciphertexts) {
            stream.item(&ct).await.map_err(|e| e.to_string())?;
        }
        stream.finish().await.map_err(|e| e.to_string())?;
        let wait = self.options.item_timeout;
        let mut answer = tokio::time::timeout(wait, link.accept())
            .await
            .map_err(|_| format!("no refreshed ciphertexts within {} s", wait.as_secs()))?
            .map_err(|e| e.to_string())?;
        let got = match &answer.envelope.body {
            Body::Released(ReleasedMsg::Refreshed(h)) => *h,
            Body::Refused { reason } => {
                return Err(format!(
                    "the requester refused refresh {}: {reason}",
                    header.index
                ));
            }
            other => return Err(Refusal::Unexpected(other.kind()).to_string()),
        };
        let mut pending = out.begin(&got).map_err(|e| e.to_string())?;
        let items = pending.remaining();
        let what = "the refreshed ciphertexts";
        let complete = read_items(&mut answer, items, what, |item| {
            pending.push(item).map_err(|e| e.to_string())
        })
        .await?;
        if complete
            && answer
                .next_item()
                .await
                .map_err(|e| e.to_string())?
                .is_some()
        {
            return Err(Refusal::TooManyItems { announced: items }.to_string());
        }
        pending.finish().map_err(|e| e.to_string())
    }
}

/// `coordinator serve-inference`: the coordinator directory's certificate and roster, the model
/// at `model`, until interrupted.
pub fn run(
    dir: &crate::server::CoordinatorDir,
    model: &std::path::Path,
    listen_addr: &str,
    max_images: u32,
    backend: he_agg::aggregate::BackendChoice,
) -> anyhow::Result<()> {
    let roster = crate::provision::Roster::read(&dir.roster())
        .with_context(|| format!("reading the roster in {}", dir.dir.display()))?;
    let federation = roster.federation_id()?;
    let t = std::time::Instant::now();
    let served = ServedModel::load(model, max_images)?;
    let placement = served
        .select_placement(backend)
        .with_context(|| format!("--backend {backend}"))?;
    let served = served.with_placement(placement);
    info!(
        model = %model.display(),
        seconds = t.elapsed().as_secs_f64(),
        evaluated_on = served.placement().name(),
        "model compiled"
    );
    let addr: SocketAddr = listen_addr
        .parse()
        .with_context(|| format!("listen address {listen_addr}"))?;
    let server = InferenceServer::new(
        served,
        federation,
        roster.parties(),
        dir.tls(),
        ServeOptions::default(),
    );
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let endpoint = server.bind(addr)?;
        server.serve(endpoint).await
    })
}
