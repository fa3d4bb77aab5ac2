//! `client contribute-encrypted`: a site with no ML staff, or one whose rules forbid training
//! here, still improves the consortium's model. It computes the features its images give under
//! the final model's frozen backbone, L2-normalises them, encrypts them with their labels under
//! the collective key of `coordinator train-head`'s keyholders and uploads them; the coordinator
//! trains the head on the ciphertexts, the keyholders refresh it after every step, and the
//! trained head comes back switched to a key made here — nobody else ever reads the features,
//! the labels or the head. The same steps are then replayed in plaintext for comparison, and
//! both heads are tested on the split named.

use protocol::HeadMsg;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use client::head::{backbone_features, head_metrics, l2_normalise};
use client::infer::eval_split::{EvalData, load_split};
use client::infer::remote::{Target, fetch_info, open};
use he_agg::ckks::wire;
use he_agg::train::{EncryptedChunk, HeadPlan, PlainHead, encrypt_chunk, schedule};
use protocol::serve::head::{HeadContribution, HeadJob};
use protocol::{Body, ProtocolError};
use rayon::prelude::*;
use serde_json::json;
use tracing::{info, warn};

use super::site::SiteConfig;

/// What to contribute and where.
pub struct Contribute {
    pub site: PathBuf,
    /// The node's directory of `client run --out` (its final model, network.json).
    pub out: PathBuf,
    /// A MedMNIST data set name, or `mnist` (the one the model was trained on).
    pub dataset: String,
    /// Examples of the training split to contribute (the first N of a fixed shuffle).
    pub limit: usize,
    /// Test images to evaluate the heads on (all when none).
    pub test_limit: Option<usize>,
    pub server: String,
    pub data_dir: Option<PathBuf>,
    /// BLAKE3 of the only collective key accepted (the keyholders log it at setup).
    pub collective_key: Option<String>,
    /// The report (JSON) and the trained head.
    pub json: Option<PathBuf>,
    /// How long to wait for the trained head.
    pub timeout: Duration,
}

pub fn run(c: &Contribute) -> anyhow::Result<()> {
    let cfg = SiteConfig::load(&c.site)?;
    let network = c.out.join("network.json");
    let (file, prep) = training::export::read_network(&network)
        .with_context(|| format!("the final model {}", network.display()))?;
    let net = &file.network;
    let data = EvalData::MedMnist(c.dataset.clone());
    let load = |split: &str, limit| {
        load_split(
            &data,
            split,
            limit,
            net,
            &prep,
            c.data_dir.as_deref(),
            false,
        )
    };
    let t = Instant::now();
    let train = load("train", None)?;
    // the contributed examples: a fixed shuffle of the training split, cut at --limit
    let mut order: Vec<usize> = (0..train.labels.len()).collect();
    let mut prng = he_agg::ring::Prng::from_seed(&[5; 32]);
    for i in (1..order.len()).rev() {
        order.swap(i, (prng.next_u64() % (i as u64 + 1)) as usize);
    }
    order.truncate(c.limit);
    if order.is_empty() {
        bail!("no examples to contribute (--limit 0 or an empty split)");
    }
    let pixels: Vec<Vec<u8>> = order.iter().map(|&i| train.pixels[i].clone()).collect();
    let labels: Vec<u32> = order.iter().map(|&i| train.labels[i]).collect();
    let mut bb = backbone_features(net, &pixels)?;
    l2_normalise(&mut bb.features);
    let xs = bb.features;
    let classes = bb.bias.len();
    let d = xs[0].len();
    let plan = HeadPlan::new(d, classes)?;
    let ctx = plan.context().clone();
    let layout = plan.layout().clone();
    info!(
        examples = xs.len(),
        features = d,
        classes,
        seconds = t.elapsed().as_secs_f64(),
        "features of the frozen backbone computed"
    );

    let target = Target {
        server: c.server.clone(),
        tls: protocol::tls::TlsFiles::in_dir(&cfg.kit_dir(&c.site)),
        federation: cfg.federation_id()?,
        me: cfg.site.index,
        timeout: Duration::from_secs(120),
        accept: Default::default(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let link = rt.block_on(open(&target))?;
    let served = rt.block_on(fetch_info(&link, target.timeout))?;
    let key = served
        .collective_key
        .context("the server trains no head (it answered without a collective key)")?;
    if served.info.fingerprint != plan.fingerprint() {
        bail!(
            "the server trains a head for other parameters or another shape than this site's final \
             model ({d} features → {classes} classes): is it the consortium's final model?"
        );
    }
    let job = HeadJob::parse(&served.info.architecture)
        .context("the server's description is not a head-training job")?;
    let training = job
        .training
        .context("the server did not say how it trains the head")?;
    let key_hash = blake3::hash(&key);
    if let Some(want) = &c.collective_key {
        let want = client::infer::pinned::parse_hex32(want)
            .with_context(|| format!("--collective-key {want} is not 64 hex digits"))?;
        if key_hash.as_bytes() != &want {
            bail!(
                "the server's collective key has BLAKE3 {}, not the one given with \
                 --collective-key",
                key_hash.to_hex()
            );
        }
    }
    let pk = wire::decode_public_key(&ctx, &key).context("the collective public key")?;
    info!(
        collective_key = %key_hash.to_hex(),
        epochs = training.epochs,
        batch_chunks = training.batch_chunks,
        lr = training.lr,
        momentum = training.momentum,
        "encrypting the examples under the collective key"
    );

    // the trained head comes back under a key made here
    let mut kg = ctx.key_generator()?;
    let sk = kg.secret_key();
    let own_pk = kg.public_key(&sk);
    let t = Instant::now();
    let per = layout.samples();
    let chunks: Vec<EncryptedChunk> = (0..xs.len().div_ceil(per))
        .into_par_iter()
        .map_init(
            || ctx.pk_encryptor(&pk),
            |enc, k| -> anyhow::Result<EncryptedChunk> {
                let enc = enc
                    .as_mut()
                    .map_err(|e| anyhow::anyhow!("encryptor: {e}"))?;
                let rows = k * per..((k + 1) * per).min(xs.len());
                let xr: Vec<&[f64]> = rows.clone().map(|i| xs[i].as_slice()).collect();
                Ok(encrypt_chunk(&ctx, enc, &layout, &xr, &labels[rows])?)
            },
        )
        .collect::<anyhow::Result<_>>()?;
    let mut items = vec![wire::encode_public_key(&ctx, &own_pk)];
    for ch in &chunks {
        items.extend(
            ch.features
                .iter()
                .map(|ct| wire::encode_ciphertext(&ctx, ct)),
        );
        items.push(wire::encode_ciphertext(&ctx, &ch.labels));
    }
    let upload: usize = items.iter().map(Vec::len).sum();
    let encrypt_s = t.elapsed().as_secs_f64();
    let mut header = HeadContribution {
        request_id: 1,
        fingerprint: plan.fingerprint(),
        examples: xs.len() as u64,
        chunks: chunks.len() as u32,
        ciphertexts_per_chunk: (layout.groups() + 1) as u32,
        counts: chunks.iter().map(|ch| ch.count as u32).collect(),
        training: training.clone(),
        signature: Vec::new(),
    };
    drop(chunks);
    // every keyholder trains on exactly what this site signed, and switches the head only to
    // the key it signed
    let signer =
        protocol::transcript::Signer::from_files(&target.tls).context("this site's kit")?;
    header.signature = signer.sign(&header.statement(
        target.federation,
        target.me,
        items.iter().map(Vec::as_slice),
    ));
    info!(
        chunks = header.chunks,
        mb = upload as f64 / 1e6,
        seconds = encrypt_s,
        "uploading the encrypted examples"
    );
    let t = Instant::now();
    let result = rt.block_on(async {
        let mut s = link
            .open(0, Body::Head(HeadMsg::HeadContribution(header)))
            .await?;
        for item in &items {
            s.item(item).await?;
        }
        s.finish().await?;
        drop(items);
        let deadline = Instant::now() + c.timeout;
        loop {
            let mut msg = match link.accept().await {
                Ok(m) => m,
                Err(ProtocolError::Timeout(_)) if Instant::now() < deadline => continue,
                Err(e) => {
                    return Err(anyhow::Error::from(e).context("waiting for the trained head"));
                }
            };
            match msg.envelope.body.clone() {
                Body::Head(HeadMsg::InferResult(r)) => {
                    let want = layout.groups() + 1;
                    if r.count as usize != want {
                        bail!("{} ciphertexts where the head has {want}", r.count);
                    }
                    let mut out = Vec::with_capacity(want);
                    while let Some(item) = msg.next_item().await? {
                        if out.len() == want {
                            bail!("more ciphertexts than announced");
                        }
                        out.push(item);
                    }
                    return Ok(out);
                }
                Body::Refused { reason } => bail!("the coordinator refused: {reason}"),
                other => warn!("unexpected message {}", other.kind()),
            }
        }
    })?;
    let train_s = t.elapsed().as_secs_f64();

    // the trained head, decrypted here
    let dec = ctx.decryptor(&sk)?;
    let (mut ew, mut eb) = (vec![0.0; classes * d], vec![0.0; classes]);
    for (g, bytes) in result.iter().enumerate() {
        let ct = wire::decode_ciphertext(&ctx, bytes).context("the trained head")?;
        let slots = ctx.decode_reals(&dec.decrypt(&ct))?;
        if g < layout.groups() {
            layout.unpack_weights(&slots, g, &mut ew);
        } else {
            eb = layout.unpack_bias(&slots);
        }
    }
    // the same steps in plaintext, on the same (public) schedule
    let batches = schedule(
        xs.len().div_ceil(per),
        training.epochs as usize,
        training.batch_chunks as usize,
    );
    let mut plain = PlainHead::zeros(d, classes);
    for batch in &batches {
        let idx: Vec<usize> = batch
            .iter()
            .flat_map(|&k| k * per..((k + 1) * per).min(xs.len()))
            .collect();
        let bx: Vec<&[f64]> = idx.iter().map(|&i| xs[i].as_slice()).collect();
        let by: Vec<u32> = idx.iter().map(|&i| labels[i]).collect();
        plain.step(&bx, &by, training.lr, training.momentum);
    }
    let max_diff = ew
        .iter()
        .zip(&plain.w)
        .chain(eb.iter().zip(&plain.b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    let test = load("test", c.test_limit)?;
    let raw = backbone_features(net, &test.pixels)?;
    let mut test_x = raw.features.clone();
    l2_normalise(&mut test_x);
    let names = &file.class_names;
    let (acc_e, auc_e) = head_metrics(&ew, &eb, &test_x, &test.labels, names)?;
    let (acc_p, auc_p) = head_metrics(&plain.w, &plain.b, &test_x, &test.labels, names)?;
    let fw: Vec<f64> = raw.weight.iter().map(|&v| v as f64).collect();
    let fb: Vec<f64> = raw.bias.iter().map(|&v| v as f64).collect();
    let (acc_f, auc_f) = head_metrics(&fw, &fb, &raw.features, &test.labels, names)?;
    let report = json!({
        "dataset": c.dataset,
        "examples": xs.len(),
        "test_images": test.labels.len(),
        "features": d,
        "classes": classes,
        "steps": batches.len(),
        "training": {"epochs": training.epochs, "batch_chunks": training.batch_chunks,
                     "batch_examples": training.batch_chunks as usize * per,
                     "lr": training.lr, "momentum": training.momentum,
                     "loss": "squared error on one-hot labels"},
        "collective_key": key_hash.to_hex().to_string(),
        "encrypted": {"test_acc": acc_e, "test_auc": auc_e, "encrypt_s": encrypt_s,
                       "upload_bytes": upload, "train_and_return_s": train_s,
                       "max_weight_diff": max_diff},
        "plaintext_same_steps": {"test_acc": acc_p, "test_auc": auc_p},
        "federated_head": {"test_acc": acc_f, "test_auc": auc_f},
        "head": {"weight": ew, "bias": eb, "features": "the backbone's output, L2-normalised"},
    });
    println!(
        "trained on {} encrypted examples ({} steps): test ACC {acc_e:.4} / AUC {auc_e:.4} \
         (the same steps in plaintext: {acc_p:.4} / {auc_p:.4}; largest weight difference \
         {max_diff:.2e}); the federated head: {acc_f:.4} / {auc_f:.4}",
        xs.len(),
        batches.len()
    );
    if let Some(path) = &c.json {
        write_report(path, &report)?;
    }
    Ok(())
}

fn write_report(path: &Path, report: &serde_json::Value) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(report)?)
        .with_context(|| format!("cannot write {}", path.display()))
}
