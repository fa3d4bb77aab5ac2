//! `client infer` against a mode (b) inference server over the federation's QUIC/mTLS link:
//! ask what is served, compile its plan from the architecture and check the fingerprint, make
//! keys, send keys and encrypted images on one stream, read and decrypt the results. Async shell
//! over [`Requester`]; everything the server sends is validated.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use he_agg::infer::Architecture;
use protocol::inference::{MAX_ARCHITECTURE_BYTES, MAX_CLASSES, ModelInfo};
use protocol::link::{Link, connect};
use protocol::tls::TlsFiles;
use protocol::{Body, FederationId};
use tracing::info;

use super::error::InferenceError;
use super::images::{ImageArg, load_images};
use super::outcome::{ImageResult, InferOutcome, Sizes, Timings};
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
    let check = |info: &ModelInfo| {
        if info.architecture.len() > MAX_ARCHITECTURE_BYTES
            || info.class_names.len() > MAX_CLASSES
            || info.class_names.iter().any(|c| c.len() > 256)
        {
            return Err(InferenceError::BadAnswer(
                "the model description exceeds the limits".into(),
            ));
        }
        Ok(())
    };
    match msg.envelope.body.clone() {
        Body::InferInfo(info) => {
            check(&info)?;
            Ok(Served {
                info,
                collective_key: None,
            })
        }
        Body::CollectiveInfo(info) => {
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
    if args.is_empty() || args.len() > info.max_images as usize {
        return Err(InferenceError::Usage(format!(
            "{} images; the server takes 1 to {} per request",
            args.len(),
            info.max_images
        )));
    }
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
    let keys = req.key_items();
    timings.encrypt_s = t.elapsed().as_secs_f64();

    let request_id = u64::from_le_bytes(req.fingerprint()[..8].try_into().unwrap_or([0; 8]))
        ^ start.elapsed().as_nanos() as u64;
    let header = if req.is_collective() {
        Body::InferCollective(req.collective_header(request_id, images.len() as u32))
    } else {
        Body::Infer(req.header(request_id, images.len() as u32))
    };
    let t = Instant::now();
    let mut sizes = Sizes::default();
    let upload = async {
        let mut out = link.open(0, header).await?;
        for k in &keys {
            out.item(k).await?;
        }
        let key_bytes = out.bytes;
        for ct in &encrypted {
            out.item(ct).await?;
        }
        let total = out.finish().await?;
        Ok::<_, protocol::ProtocolError>((key_bytes, total - key_bytes))
    };
    match upload.await {
        Ok((k, i)) => {
            sizes.keys_sent = k;
            sizes.images_sent = i;
        }
        Err(e) => {
            // a refusal stops the stream: report the server's reason when it sent one
            return match next_message(&link, Duration::from_secs(5)).await {
                Ok(msg) => match msg.envelope.body {
                    Body::Refused { reason } => Err(InferenceError::Refused(reason)),
                    _ => Err(e.into()),
                },
                Err(_) => Err(e.into()),
            };
        }
    }
    timings.send_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut msg = next_message(&link, target.timeout).await?;
    let result = match &msg.envelope.body {
        Body::InferResult(r) => r.clone(),
        Body::Refused { reason } => return Err(InferenceError::Refused(reason.clone())),
        other => {
            return Err(InferenceError::BadAnswer(format!(
                "{} where the result was expected",
                other.kind()
            )));
        }
    };
    if result.request_id != request_id || result.count as usize != images.len() {
        return Err(InferenceError::BadAnswer(format!(
            "result {} with {} ciphertexts for request {request_id} of {} images",
            result.request_id,
            result.count,
            images.len()
        )));
    }
    let mut answers = Vec::with_capacity(images.len());
    while let Some(item) = msg.next_item().await? {
        if answers.len() == images.len() {
            return Err(InferenceError::BadAnswer("more results than images".into()));
        }
        sizes.results_received += 4 + item.len() as u64;
        answers.push(item);
    }
    if answers.len() != images.len() {
        return Err(InferenceError::BadAnswer(format!(
            "{} results for {} images",
            answers.len(),
            images.len()
        )));
    }
    timings.wait_s = t.elapsed().as_secs_f64();
    timings.evaluate_s = result.evaluate_us as f64 / 1e6;
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
        model: info.name.clone(),
        ring_degree: spec.parameters().n(),
        depth: spec.depth(),
        galois_keys: spec.galois_steps().len(),
        classes: info.class_names.clone(),
        images: results,
        timings,
        bytes: sizes,
    })
}
