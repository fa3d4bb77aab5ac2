//! The keyholder's tokio shell: one connection to the serving coordinator at a time (hello,
//! then each message to [`Keyholder`] and its answer back), reconnecting with backoff until
//! the coordinator has been unreachable for the patience given.

use protocol::{CollectiveMsg, HeadMsg};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use protocol::link::{Incoming, connect};
use protocol::tls::TlsFiles;
use protocol::{Body, Link, ProtocolError};
use tracing::{error, info, warn};

use super::{Keyholder, MAX_KEYHOLDERS, Reply, serve};
use crate::node::site::SiteConfig;

/// Reads all items of a stream (at most `max`).
async fn items(incoming: &mut Incoming, max: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    while let Some(item) = incoming.next_item().await? {
        if out.len() == max {
            bail!("more than {max} items");
        }
        out.push(item);
    }
    Ok(out)
}

async fn send(link: &Link, replies: Vec<Reply>) -> anyhow::Result<()> {
    for r in replies {
        let mut s = link.open(0, r.body).await?;
        for item in &r.items {
            s.item(item).await?;
        }
        s.finish().await?;
    }
    Ok(())
}

/// One connection: hello, then answer until the link drops.
async fn session(link: &Link, kh: &mut Keyholder) -> anyhow::Result<()> {
    link.send(
        0,
        Body::Collective(CollectiveMsg::KeyholderHello {
            software: format!("heal-client {}", env!("CARGO_PKG_VERSION")),
            setup: kh.setup(),
            ready: kh.ready(),
        }),
    )
    .await?;
    loop {
        let mut msg = match link.accept().await {
            Ok(m) => m,
            Err(e @ (ProtocolError::Connection(_) | ProtocolError::PeerFinished)) => {
                return Err(e.into());
            }
            Err(ProtocolError::Timeout(_)) => continue,
            Err(e) => {
                warn!("ignored a message: {e}");
                continue;
            }
        };
        let body = msg.envelope.body.clone();
        let replies = match body {
            Body::Collective(CollectiveMsg::CollectiveStart {
                hospitals,
                threshold,
            }) => {
                info!("setup of the {} key: making round-1 shares", kh.key_name());
                let t = Instant::now();
                let r = tokio::task::block_in_place(|| kh.start(hospitals, threshold))?;
                info!(
                    seconds = t.elapsed().as_secs_f64(),
                    items = r.items.len(),
                    "round-1 shares made"
                );
                vec![r]
            }
            Body::Collective(CollectiveMsg::CollectiveRound1Result { sealed, key_shares }) => {
                let it = items(&mut msg, 2 * key_shares.len().min(MAX_KEYHOLDERS)).await?;
                tokio::task::block_in_place(|| kh.round2(&sealed, &key_shares, &it))?
            }
            Body::Collective(CollectiveMsg::ServingKeys(header)) => {
                let it = items(&mut msg, kh.max_key_items()).await?;
                vec![tokio::task::block_in_place(|| {
                    kh.serving_keys(&header, &it)
                })?]
            }
            Body::Collective(CollectiveMsg::CollectiveEvaluate(req)) => {
                let it = items(&mut msg, serve::max_request_items()).await?;
                // the consortium's record of who decrypted what: one line per request
                info!(
                    request = req.request,
                    attempt = req.attempt,
                    requester = format!("hospital-{}", req.requester),
                    request_id = req.signed.request_id,
                    images = req.signed.images,
                    with = ?req.active,
                    "evaluating a signed request and switching a served result to its requester's key"
                );
                match tokio::task::block_in_place(|| kh.evaluate(&req, &it)) {
                    Ok(r) => vec![r],
                    Err(e) => {
                        // a forged or altered request: the serving host may be compromised
                        error!(request = req.request, "refused to serve: {e:#}");
                        continue;
                    }
                }
            }
            Body::Collective(CollectiveMsg::CollectiveRefreshRelay(relay)) => {
                let it = items(&mut msg, kh.max_relay_items()).await?;
                // the consortium's record: one line per refresh between two segments
                info!(
                    request = relay.request,
                    attempt = relay.attempt,
                    refresh = relay.index,
                    images = relay.count,
                    with = ?relay.from.iter().map(|(h, _)| *h).collect::<Vec<_>>(),
                    "refreshing a served request's segment output with the keyholders' signed shares"
                );
                match tokio::task::block_in_place(|| kh.refresh_relay(&relay, &it)) {
                    Ok(r) => vec![r],
                    Err(e) => {
                        error!(request = relay.request, "refused to refresh: {e:#}");
                        continue;
                    }
                }
            }
            Body::Head(HeadMsg::HeadStart(req)) => {
                let it = items(&mut msg, kh.max_start_items()).await?;
                // the consortium's record: one line per run this keyholder replays
                info!(
                    contributor = format!("hospital-{}", req.contributor),
                    request_id = req.signed.request_id,
                    examples = req.signed.examples,
                    epochs = req.signed.training.epochs,
                    "training a head on a signed contribution: every step it refreshes is \
                     replayed here"
                );
                if let Err(e) = tokio::task::block_in_place(|| kh.start_run(&req, &it)) {
                    error!("refused to train on the contribution: {e:#}");
                }
                continue;
            }
            Body::Head(HeadMsg::HeadRefresh(req)) => {
                // the consortium's record of every refresh: one line per step and attempt
                info!(
                    step = req.step,
                    steps = req.steps,
                    attempt = req.attempt,
                    contributor = format!("hospital-{}", req.contributor),
                    ciphertexts = req.count,
                    with = ?req.active,
                    "refreshing the head's state after a training step"
                );
                match tokio::task::block_in_place(|| kh.refresh(&req)) {
                    Ok(r) => vec![r],
                    Err(e) => {
                        error!(step = req.step, "refused to refresh: {e:#}");
                        continue;
                    }
                }
            }
            Body::Head(HeadMsg::HeadRefreshRelay(relay)) => {
                let it = items(&mut msg, kh.max_head_relay_items()).await?;
                match tokio::task::block_in_place(|| kh.refresh_relayed(&relay, &it)) {
                    Ok(()) => {}
                    Err(e) => error!(step = relay.step, "refused a step's refresh shares: {e:#}"),
                }
                continue;
            }
            Body::Head(HeadMsg::ResultSwitch(req)) => {
                info!(
                    request = req.request,
                    attempt = req.attempt,
                    contributor = format!("hospital-{}", req.requester),
                    ciphertexts = req.count,
                    with = ?req.active,
                    "switching the head this keyholder trained to its contributor's key"
                );
                match tokio::task::block_in_place(|| kh.switch(&req)) {
                    Ok(r) => vec![r],
                    Err(e) => {
                        error!(request = req.request, "refused to switch: {e:#}");
                        continue;
                    }
                }
            }
            Body::Refused { reason } => {
                warn!("the server refused: {reason}");
                continue;
            }
            other => {
                warn!("unexpected message {}", other.kind());
                continue;
            }
        };
        // what the keyholder decided to keep is on disk before anything it returned leaves
        while let Some(p) = kh.poll_persist() {
            tokio::task::block_in_place(|| super::persist::write(kh.dir(), p))?;
        }
        send(link, replies).await?;
    }
}

/// `client hold-keys`: serves as a keyholder until interrupted (or `patience` without a server).
pub fn run(
    site: &Path,
    out: &Path,
    server: &str,
    patience: Duration,
    head: Option<u64>,
) -> anyhow::Result<()> {
    let cfg = SiteConfig::load(site)?;
    let tls = TlsFiles::in_dir(&cfg.kit_dir(site));
    let mut kh = if let Some(max_examples) = head {
        Keyholder::open_head(&cfg, out, &tls, max_examples)?
    } else {
        Keyholder::open(&cfg, out, &tls)?
    };
    let federation = cfg.federation_id()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let addr = tokio::net::lookup_host(server)
            .await
            .with_context(|| format!("server address {server}"))?
            .next()
            .with_context(|| format!("no address for {server}"))?;
        let mut last_contact = Instant::now();
        let mut backoff = Duration::from_millis(200);
        loop {
            match connect(addr, &tls, federation, cfg.site.index).await {
                Ok(link) => {
                    let link = link.with_timeout(Duration::from_secs(300));
                    info!(%server, "connected as keyholder");
                    backoff = Duration::from_millis(200);
                    if let Err(e) = session(&link, &mut kh).await {
                        warn!("keyholder session ended: {e:#}; reconnecting");
                    }
                    last_contact = Instant::now();
                }
                Err(e) => {
                    if last_contact.elapsed() > patience {
                        bail!("no serving coordinator for {} s: {e}", patience.as_secs());
                    }
                    info!("serving coordinator not reachable yet: {e}");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    })
}
