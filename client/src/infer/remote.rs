//! `client infer` against an inference server over the federation's QUIC/mTLS link: ask what is
//! served, compile its plan from the architecture and check the fingerprint, make keys and send
//! them once (mode b: the server keeps them for this requester), then the encrypted images in
//! requests of at most the server's limit, read and decrypt the results. Async shell over
//! [`Requester`]; everything the server sends is validated.

use protocol::{CollectiveMsg, ReleasedMsg};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use he_agg::infer::Architecture;
use protocol::link::{Link, connect};
use protocol::serve::released::{KEYS_UNKNOWN, ModelInfo};
use protocol::tls::TlsFiles;
use protocol::{Body, FederationId};
use tracing::info;

use super::error::InferenceError;
use super::images::{ImageArg, load_images};
use super::outcome::{ImageResult, InferOutcome, Sizes, Timings};
use super::pinned::Accepted;
use super::requester::Requester;

/// Where the server is and who this requester is in the federation.
#[derive(Clone, Debug)]
pub struct Target {
    pub server: String,
    pub tls: TlsFiles,
    pub federation: FederationId,
    /// This hospital's index (its certificate says the same).
    pub me: u32,
    /// Time the server gets for each step (connect, each item, the evaluation).
    pub timeout: Duration,
    /// The mode (and mode (a) key) this site accepts; anything else is refused.
    pub accept: Accepted,
}

async fn resolve(server: &str) -> Result<SocketAddr, InferenceError> {
    tokio::net::lookup_host(server)
        .await
        .map_err(|e| InferenceError::Usage(format!("server address {server}: {e}")))?
        .next()
        .ok_or_else(|| {
            InferenceError::Usage(format!("server address {server} resolves to nothing"))
        })
}

/// Connects to the server.
pub async fn open(target: &Target) -> Result<Link, InferenceError> {
    let addr = resolve(&target.server).await?;
    let link = tokio::time::timeout(
        target.timeout,
        connect(addr, &target.tls, target.federation, target.me),
    )
    .await
    .map_err(|_| protocol::ProtocolError::Timeout(target.timeout))??;
    Ok(link.with_timeout(target.timeout))
}

async fn next_message(
    link: &Link,
    timeout: Duration,
) -> Result<protocol::Incoming, InferenceError> {
    Ok(tokio::time::timeout(timeout, link.accept())
        .await
        .map_err(|_| protocol::ProtocolError::Timeout(timeout))??)
}

/// What a server serves: the model's description, and for mode (a) the collective public key
/// images are encrypted under.
#[derive(Clone, Debug)]
pub struct Served {
    pub info: ModelInfo,
    pub collective_key: Option<Vec<u8>>,
}

/// Asks the server what it serves (validated).
pub async fn fetch_info(link: &Link, timeout: Duration) -> Result<Served, InferenceError> {
    link.send(0, Body::InferInfoRequest).await?;
    let mut msg = next_message(link, timeout).await?;
    let check = |info: &ModelInfo| info.check().map_err(InferenceError::BadAnswer);
    match msg.envelope.body.clone() {
        Body::Released(ReleasedMsg::InferInfo(info)) => {
            check(&info)?;
            Ok(Served {
                info,
                collective_key: None,
            })
        }
        Body::Collective(CollectiveMsg::CollectiveInfo(info)) => {
            check(&info)?;
            let key = msg.next_item().await?.ok_or_else(|| {
                InferenceError::BadAnswer("the collective public key is missing".into())
            })?;
            if msg.next_item().await?.is_some() {
                return Err(InferenceError::BadAnswer(
                    "more than the collective public key".into(),
                ));
            }
            Ok(Served {
                info,
                collective_key: Some(key),
            })
        }
        Body::Refused { reason } => Err(InferenceError::Refused(reason)),
        other => Err(InferenceError::BadAnswer(format!(
            "{} where the model information was expected",
            other.kind()
        ))),
    }
}

/// Encrypts `args`, has the server evaluate them, decrypts the results.
pub async fn infer_remote(
    target: &Target,
    args: &[ImageArg],
    prep: &datasets::InputPreparation,
    data_dir: Option<&std::path::Path>,
) -> Result<InferOutcome, InferenceError> {
    let start = Instant::now();
    let link = open(target).await?;
    let served = fetch_info(&link, target.timeout).await?;
    let served_mode = target.accept.check(served.collective_key.as_deref())?;
    let info = served.info;
    let arch: Architecture = serde_json::from_str(&info.architecture)
        .map_err(|e| InferenceError::BadAnswer(format!("architecture: {e}")))?;
    let req = tokio::task::block_in_place(|| match &served.collective_key {
        Some(key) => Requester::for_collective(&arch, key),
        None => Requester::for_architecture(&arch),
    })?;
    req.check_fingerprint(&info.fingerprint)?;
    let spec = req.spec();
    if info.class_names.len() != spec.output_len() {
        return Err(InferenceError::BadAnswer(format!(
            "{} class names for {} outputs",
            info.class_names.len(),
            spec.output_len()
        )));
    }
    if args.is_empty() {
        return Err(InferenceError::Usage("no images to diagnose".into()));
    }
    // the server says how its model's inputs are prepared; else the caller's preparation
    let served_prep;
    let prep = if info.input_preparation.is_empty() {
        prep
    } else {
        served_prep = serde_json::from_str::<datasets::InputPreparation>(&info.input_preparation)
            .map_err(|e| InferenceError::BadAnswer(format!("input preparation: {e}")))?;
        &served_prep
    };
    let [channels, height, width] = req.input();
    let shape = datasets::ImageShape {
        channels,
        height,
        width,
    };
    let decoder = prep.decoder(shape);
    let images = tokio::task::block_in_place(|| load_images(args, &decoder, prep, data_dir))?;
    info!(server = %target.server, model = %info.name, images = images.len(), "encrypting");
    let mut timings = Timings {
        setup_s: req.setup.as_secs_f64(),
        ..Default::default()
    };
    let t = Instant::now();
    let encrypted = tokio::task::block_in_place(|| {
        images
            .iter()
            .map(|im| req.encrypt(&req.normalize(&im.hwc)?))
            .collect::<Result<Vec<_>, InferenceError>>()
    })?;
    timings.encrypt_s = t.elapsed().as_secs_f64();

    let mut sizes = Sizes::default();
    let t = Instant::now();
    if !req.is_collective() {
        sizes.keys_sent += send_keys(&link, &req, target.timeout).await?;
    }
    // mode (a): each request is signed with this site's certificate key
    let signer = match req.is_collective() {
        true => Some(
            protocol::transcript::Signer::from_files(&target.tls)
                .map_err(|e| InferenceError::Usage(format!("this site's kit: {e}")))?,
        ),
        false => None,
    };
    let signing = signer.as_ref().map(|s| (target.federation, target.me, s));
    timings.send_s = t.elapsed().as_secs_f64();
    // requests of at most max_images images; the keys are not sent again
    let per_request = (info.max_images as usize).max(1);
    let mut answers = Vec::with_capacity(images.len());
    let base_id = u64::from_le_bytes(req.fingerprint()[..8].try_into().unwrap_or([0; 8]))
        ^ start.elapsed().as_nanos() as u64;
    for (k, chunk) in encrypted.chunks(per_request).enumerate() {
        let request_id = base_id.wrapping_add(k as u64);
        let t = Instant::now();
        let asked = request(&link, &req, request_id, chunk, signing, target.timeout).await;
        let (sent, result) = match asked {
            Err(InferenceError::Refused(reason)) if reason.starts_with(KEYS_UNKNOWN) => {
                // the server evicted the keys: send them again, once
                sizes.keys_sent += send_keys(&link, &req, target.timeout).await?;
                request(&link, &req, request_id, chunk, signing, target.timeout).await?
            }
            other => other?,
        };
        sizes.images_sent += sent.0;
        sizes.keys_sent += sent.1;
        sizes.refresh_received += result.refresh.0;
        sizes.refresh_sent += result.refresh.1;
        sizes.refreshes += result.refresh.2;
        timings.send_s += sent.2;
        timings.images_send_s += sent.2;
        sizes.requests += 1;
        timings.wait_s += t.elapsed().as_secs_f64() - sent.2;
        timings.evaluate_s += result.evaluate_us as f64 / 1e6;
        for item in result.items {
            sizes.results_received += 4 + item.len() as u64;
            answers.push(item);
        }
    }
    let t = Instant::now();
    let mut results = Vec::with_capacity(images.len());
    for (im, a) in images.iter().zip(&answers) {
        let logits = req.decrypt(a)?;
        results.push(ImageResult::from_logits(
            im.name.clone(),
            logits,
            &info.class_names,
            im.label,
            None,
        ));
    }
    timings.decrypt_s = t.elapsed().as_secs_f64();
    timings.total_s = start.elapsed().as_secs_f64();
    link.close("done");
    Ok(InferOutcome {
        mode: "remote".into(),
        inference: served_mode,
        model: info.name.clone(),
        ring_degree: spec.parameters().n(),
        depth: spec.depth(),
        galois_keys: spec.galois_steps().len(),
        fingerprint: spec
            .fingerprint()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        classes: info.class_names.clone(),
        images: results,
        timings,
        bytes: sizes,
    })
}

/// The answer to a refused stream: the server's reason when it sent one.
async fn refusal(link: &Link, e: protocol::ProtocolError) -> InferenceError {
    match next_message(link, Duration::from_secs(5)).await {
        Ok(msg) => match msg.envelope.body {
            Body::Refused { reason } => InferenceError::Refused(reason),
            _ => e.into(),
        },
        Err(_) => e.into(),
    }
}

/// Sends this requester's evaluation keys and waits until the server keeps them; the bytes sent.
async fn send_keys(link: &Link, req: &Requester, timeout: Duration) -> Result<u64, InferenceError> {
    let header = req.keys_header();
    let items = req.key_items();
    let upload = async {
        let mut out = link
            .open(0, Body::Released(ReleasedMsg::InferKeys(header.clone())))
            .await?;
        for k in &items {
            out.item(k).await?;
        }
        out.finish().await
    };
    let bytes = match upload.await {
        Ok(b) => b,
        Err(e) => return Err(refusal(link, e).await),
    };
    let msg = next_message(link, timeout).await?;
    match msg.envelope.body {
        Body::Released(ReleasedMsg::InferKeysStored { keys }) if keys == header.keys => Ok(bytes),
        Body::Refused { reason } => Err(InferenceError::Refused(reason)),
        other => Err(InferenceError::BadAnswer(format!(
            "{} where the keys' acknowledgement was expected",
            other.kind()
        ))),
    }
}

/// A result stream's header and items, and the refreshes on the way (bytes in, bytes out,
/// round trips).
struct Answer {
    evaluate_us: u64,
    items: Vec<Vec<u8>>,
    refresh: (u64, u64, u64),
}

/// Answers the server's refresh of a request's segment (`header`, its masked ciphertexts in
/// `msg`): one re-encryption per image, in order. The index must be the next of the plan's;
/// anything more or less than one item per image is refused. Bytes in and out.
async fn answer_refresh(
    link: &Link,
    req: &Requester,
    (request_id, images, next): (u64, usize, usize),
    header: protocol::serve::released::RefreshHeader,
    msg: &mut protocol::Incoming,
) -> Result<(u64, u64), InferenceError> {
    if header.request_id != request_id
        || header.count as usize != images
        || header.index as usize != next
        || next >= req.spec().refreshes().len()
    {
        return Err(InferenceError::BadAnswer(format!(
            "refresh {} of request {} with {} ciphertexts, where refresh {next} of request \
             {request_id} with {images} (of {} in the plan) was due",
            header.index,
            header.request_id,
            header.count,
            req.spec().refreshes().len()
        )));
    }
    let mut received = 0u64;
    let mut answers = Vec::with_capacity(images);
    while let Some(item) = msg.next_item().await? {
        if answers.len() == images {
            return Err(InferenceError::BadAnswer(
                "more to refresh than images".into(),
            ));
        }
        received += 4 + item.len() as u64;
        answers.push(tokio::task::block_in_place(|| req.refresh(next, &item))?);
    }
    if answers.len() != images {
        return Err(InferenceError::BadAnswer(format!(
            "{} ciphertexts to refresh for {images} images",
            answers.len()
        )));
    }
    let mut out = link
        .open(0, Body::Released(ReleasedMsg::Refreshed(header)))
        .await?;
    for a in &answers {
        out.item(a).await?;
    }
    Ok((received, out.finish().await?))
}

/// One request of `images` (each its ciphertexts): (bytes of images, bytes of keys — mode a's
/// public key —, seconds sending) and the results.
async fn request(
    link: &Link,
    req: &Requester,
    request_id: u64,
    images: &[Vec<Vec<u8>>],
    signing: Option<(FederationId, u32, &protocol::transcript::Signer)>,
    timeout: Duration,
) -> Result<((u64, u64, f64), Answer), InferenceError> {
    let header = match signing {
        Some(signing) if req.is_collective() => Body::Collective(CollectiveMsg::InferCollective(
            req.collective_header(request_id, images, signing),
        )),
        _ => Body::Released(ReleasedMsg::Infer(
            req.header(request_id, images.len() as u32),
        )),
    };
    // mode (a): the requester's public key first (what the results are switched to); mode
    // (b)'s keys were sent once before
    let keys = if req.is_collective() {
        req.key_items()
    } else {
        Vec::new()
    };
    let t = Instant::now();
    let upload = async {
        let mut out = link.open(0, header).await?;
        if req.is_collective() {
            for k in &keys {
                out.item(k).await?;
            }
        }
        let key_bytes = out.bytes;
        for ct in images.iter().flatten() {
            out.item(ct).await?;
        }
        let total = out.finish().await?;
        Ok::<_, protocol::ProtocolError>((total - key_bytes, key_bytes))
    };
    let (image_bytes, key_bytes) = match upload.await {
        Ok(v) => v,
        Err(e) => return Err(refusal(link, e).await),
    };
    let sent = (image_bytes, key_bytes, t.elapsed().as_secs_f64());
    // a deep model's segments: refresh after refresh, then the result
    let mut refresh = (0u64, 0u64, 0u64);
    let (mut msg, result) = loop {
        let mut msg = next_message(link, timeout).await?;
        match &msg.envelope.body {
            Body::Released(ReleasedMsg::InferResult(r))
            | Body::Collective(CollectiveMsg::InferResult(r)) => {
                let r = r.clone();
                break (msg, r);
            }
            Body::Released(ReleasedMsg::Refresh(h)) if !req.is_collective() => {
                let h = *h;
                let next = refresh.2 as usize;
                let (down, up) =
                    answer_refresh(link, req, (request_id, images.len(), next), h, &mut msg)
                        .await?;
                refresh = (refresh.0 + down, refresh.1 + up, refresh.2 + 1);
            }
            Body::Refused { reason } => return Err(InferenceError::Refused(reason.clone())),
            other => {
                return Err(InferenceError::BadAnswer(format!(
                    "{} where the result was expected",
                    other.kind()
                )));
            }
        }
    };
    if (refresh.2 as usize) < req.spec().refreshes().len() && !req.is_collective() {
        return Err(InferenceError::BadAnswer(format!(
            "a result after {} of the plan's {} refreshes",
            refresh.2,
            req.spec().refreshes().len()
        )));
    }
    if result.request_id != request_id || result.count as usize != images.len() {
        return Err(InferenceError::BadAnswer(format!(
            "result {} with {} ciphertexts for request {request_id} of {} images",
            result.request_id,
            result.count,
            images.len()
        )));
    }
    let mut items = Vec::with_capacity(images.len());
    while let Some(item) = msg.next_item().await? {
        if items.len() == images.len() {
            return Err(InferenceError::BadAnswer("more results than images".into()));
        }
        items.push(item);
    }
    if items.len() != images.len() {
        return Err(InferenceError::BadAnswer(format!(
            "{} results for {} images",
            items.len(),
            images.len()
        )));
    }
    Ok((
        sent,
        Answer {
            evaluate_us: result.evaluate_us,
            items,
            refresh,
        },
    ))
}
