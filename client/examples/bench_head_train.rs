//! Encrypted head training against plaintext training of the same head (issue 20's evidence).
//!
//! The features are those the federated backbone gives: every layer of a trained network but the
//! last (`network.json` of a hospital node after `coordinator simulate`), each L2-normalised. A site's examples are encrypted under the collective key of
//! three keyholders (collective key generation as in a federation); the head (last dense layer and
//! bias) is trained by mini-batch gradient descent on the ciphertexts, refreshed by the keyholders
//! after every step; it is then switched to a receiving key, decrypted and tested on the official
//! test split. The same steps in plaintext, on the same batches, give the reference; the federated
//! model's own head is reported beside them.
//!
//!     cargo run --release -p client --example bench_head_train -- \
//!         --network out/organamnist-5-hospitals/hospital-1/network.json [--samples 5000] \
//!         [--epochs 10] [--batch-chunks 8] [--lr 1] [--momentum 0.9] [--json FILE] [--dump DIR]
//!
//! `--dump DIR` writes the raw features, labels and the federated head (little-endian f32/u32)
//! and stops, for a look at the head's training outside HEAL.
//!
//! MedMNIST is read from $HEAL_DATA_DIR; the set is OrganAMNIST unless $HEAL_HEAD_DATASET names
//! another (it must be the one the network was trained on).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use client::head::{backbone_features, head_metrics, l2_normalise};
use he_agg::ckks::{Ciphertext, CkksContext, wire};
use he_agg::multiparty::flooding::{DEFAULT_STATISTICAL_SECURITY, fresh_noise_bound};
use he_agg::multiparty::wire as shares;
use he_agg::multiparty::{
    Crs, Flooding, GaloisKeyGen, PublicKeyGen, PublicKeySwitch, Refresh, RelinKeyGen,
};
use he_agg::ring::Prng;
use he_agg::train::{
    EncryptedChunk, HeadLayout, HeadScales, HeadTrainer, PlainHead, encrypt_chunk,
    head_training_parameters, schedule,
};

struct Args {
    network: PathBuf,
    samples: usize,
    epochs: usize,
    batch_chunks: usize,
    lr: f64,
    momentum: f64,
    keyholders: usize,
    json: Option<PathBuf>,
    dump: Option<PathBuf>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        network: PathBuf::new(),
        samples: 5000,
        epochs: 10,
        batch_chunks: 8,
        lr: 1.0,
        momentum: 0.9,
        keyholders: 3,
        json: None,
        dump: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--network" => a.network = v()?.into(),
            "--samples" => a.samples = v()?.parse()?,
            "--epochs" => a.epochs = v()?.parse()?,
            "--batch-chunks" => a.batch_chunks = v()?.parse()?,
            "--lr" => a.lr = v()?.parse()?,
            "--momentum" => a.momentum = v()?.parse()?,
            "--keyholders" => a.keyholders = v()?.parse()?,
            "--json" => a.json = Some(v()?.into()),
            "--dump" => a.dump = Some(v()?.into()),
            other => bail!("unknown argument {other}"),
        }
    }
    if a.network.as_os_str().is_empty() {
        bail!("--network NETWORK_JSON is required (a hospital's network.json after simulate)");
    }
    Ok(a)
}

fn write_f32(path: &std::path::Path, v: impl Iterator<Item = f32>) -> anyhow::Result<()> {
    let bytes: Vec<u8> = v.flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// Raw features, labels and the federated head as little-endian f32/u32 files.
fn dump(
    dir: &std::path::Path,
    xs: &[Vec<f64>],
    ys: &[u32],
    tx: &[Vec<f64>],
    ty: &[u32],
    w: &[f32],
    b: &[f32],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    write_f32(
        &dir.join("train_x.f32"),
        xs.iter().flatten().map(|&v| v as f32),
    )?;
    write_f32(
        &dir.join("test_x.f32"),
        tx.iter().flatten().map(|&v| v as f32),
    )?;
    write_f32(&dir.join("head_w.f32"), w.iter().copied())?;
    write_f32(&dir.join("head_b.f32"), b.iter().copied())?;
    for (name, y) in [("train_y.u32", ys), ("test_y.u32", ty)] {
        let bytes: Vec<u8> = y.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    let (file, prep) = training::export::read_network(&a.network)?;
    let net = &file.network;
    let data_dir = std::env::var_os("HEAL_DATA_DIR").map(PathBuf::from);
    let name = std::env::var("HEAL_HEAD_DATASET").unwrap_or_else(|_| "organamnist".to_string());
    let data = client::infer::eval_split::EvalData::MedMnist(name.clone());
    let load = |split: &str, limit| {
        client::infer::eval_split::load_split(
            &data,
            split,
            limit,
            net,
            &prep,
            data_dir.as_deref(),
            false,
        )
    };
    let t = Instant::now();
    let train = load("train", None)?;
    let test = load("test", None)?;
    // a site's examples: a fixed random sample of the training split
    let mut order: Vec<usize> = (0..train.labels.len()).collect();
    let mut prng = Prng::from_seed(&[5; 32]);
    for i in (1..order.len()).rev() {
        order.swap(i, (prng.next_u64() % (i as u64 + 1)) as usize);
    }
    order.truncate(a.samples);
    let site_pixels: Vec<Vec<u8>> = order.iter().map(|&i| train.pixels[i].clone()).collect();
    let site_labels: Vec<u32> = order.iter().map(|&i| train.labels[i]).collect();
    let bb = backbone_features(net, &site_pixels)?;
    let (mut xs, head_w, head_b) = (bb.features, bb.weight, bb.bias);
    let test_x = backbone_features(net, &test.pixels)?.features;
    if let Some(dir) = &a.dump {
        dump(
            dir,
            &xs,
            &site_labels,
            &test_x,
            &test.labels,
            &head_w,
            &head_b,
        )?;
        eprintln!("features written to {}", dir.display());
        return Ok(());
    }
    // each feature vector L2-normalised (a site needs no shared statistics for it, and gradient
    // descent converges far better than on features divided by one global norm)
    let (raw_test_x, mut test_x) = (test_x.clone(), test_x);
    l2_normalise(&mut xs);
    l2_normalise(&mut test_x);
    let classes = head_b.len();
    let d = xs[0].len();
    eprintln!(
        "{name}: {} site examples, {} test images, {d} features → {classes} classes ({:.1} s)",
        xs.len(),
        test_x.len(),
        t.elapsed().as_secs_f64()
    );
    let names = &file.class_names;

    // the federated model's own head, on the features it was trained with
    let fw: Vec<f64> = head_w.iter().map(|&v| v as f64).collect();
    let fb: Vec<f64> = head_b.iter().map(|&v| v as f64).collect();

    let ctx = CkksContext::new(head_training_parameters()?)?;
    let layout = HeadLayout::new(ctx.slots(), d, classes)?;
    let scales = HeadScales::new(&ctx)?;
    let chunk = layout.samples();
    let chunks_total = xs.len().div_ceil(chunk);
    // batches: the public schedule `coordinator train-head` follows, taken by both runs
    let batches = schedule(chunks_total, a.epochs, a.batch_chunks);
    let rows = |c: usize| c * chunk..((c + 1) * chunk).min(xs.len());

    // ---- plaintext: the same steps on the same batches ----
    let t = Instant::now();
    let mut plain = PlainHead::zeros(d, classes);
    for batch in &batches {
        let idx: Vec<usize> = batch.iter().flat_map(|&c| rows(c)).collect();
        let bx: Vec<&[f64]> = idx.iter().map(|&i| xs[i].as_slice()).collect();
        let by: Vec<u32> = idx.iter().map(|&i| site_labels[i]).collect();
        plain.step(&bx, &by, a.lr, a.momentum);
    }
    let (pw, pb) = (&plain.w, &plain.b);
    let plain_s = t.elapsed().as_secs_f64();

    // ---- the keyholders' collective keys ----
    let t = Instant::now();
    let crs = Crs::from_federation(b"bench head training");
    let mut kgs: Vec<_> = (0..a.keyholders)
        .map(|_| ctx.key_generator())
        .collect::<Result<_, _>>()?;
    let secrets: Vec<_> = kgs.iter_mut().map(|k| k.secret_key()).collect();
    let mut prngs: Vec<Prng> = (0..a.keyholders)
        .map(|_| Prng::from_os())
        .collect::<Result<_, _>>()?;
    let pkg = PublicKeyGen::new(&ctx, &crs);
    let mut pk_acc = pkg.share(&secrets[0], &mut prngs[0])?;
    for i in 1..a.keyholders {
        let s = pkg.share(&secrets[i], &mut prngs[i])?;
        pkg.aggregate(&mut pk_acc, &s)?;
    }
    let pk = pkg.finalize(pk_acc);
    let rkg = RelinKeyGen::new(&ctx, &crs)?;
    let mut ephs = Vec::new();
    let mut r1 = None;
    for i in 0..a.keyholders {
        let (e, s) = rkg.round1(&secrets[i], &mut prngs[i])?;
        ephs.push(e);
        match r1.as_mut() {
            None => r1 = Some(s),
            Some(acc) => rkg.aggregate1(acc, &s)?,
        }
    }
    let r1 = r1.expect("keyholders");
    let mut r2 = None;
    for i in 0..a.keyholders {
        let s = rkg.round2(&ephs[i], &secrets[i], &r1, &mut prngs[i])?;
        match r2.as_mut() {
            None => r2 = Some(s),
            Some(acc) => rkg.aggregate2(acc, &s)?,
        }
    }
    let rlk = rkg.finalize(&r1, r2.expect("keyholders"))?;
    let gkg = GaloisKeyGen::new(&ctx, &crs)?;
    let mut elements: Vec<u64> = layout
        .rotations()
        .iter()
        .map(|&k| ctx.rlwe().galois_element_for_rotation(k))
        .collect();
    elements.sort_unstable();
    elements.dedup();
    let mut gks = he_agg::ckks::GaloisKeys::new();
    for &g in &elements {
        let mut acc = None;
        for i in 0..a.keyholders {
            let s = gkg.share(&secrets[i], g, &mut prngs[i])?;
            match acc.as_mut() {
                None => acc = Some(s),
                Some(x) => gkg.aggregate(x, &s)?,
            }
        }
        gks.insert(gkg.finalize(acc.expect("keyholders"))?);
    }
    let keys_s = t.elapsed().as_secs_f64();

    // ---- the contributing site: encrypt features and labels ----
    let t = Instant::now();
    let mut enc = ctx.pk_encryptor(&pk)?;
    let chunks: Vec<EncryptedChunk> = (0..chunks_total)
        .map(|c| {
            let xr: Vec<&[f64]> = rows(c).map(|i| xs[i].as_slice()).collect();
            encrypt_chunk(&ctx, &mut enc, &layout, &xr, &site_labels[rows(c)])
        })
        .collect::<Result<_, _>>()?;
    let encrypt_s = t.elapsed().as_secs_f64();
    let upload_bytes: usize = chunks
        .iter()
        .map(|c| {
            c.features
                .iter()
                .chain([&c.labels])
                .map(|ct| wire::encode_ciphertext(&ctx, ct).len())
                .sum::<usize>()
        })
        .sum();

    // ---- encrypted training, refreshed by the keyholders after every step ----
    let flooding = Flooding::new(
        DEFAULT_STATISTICAL_SECURITY,
        fresh_noise_bound(&ctx, a.keyholders),
    )?;
    let refresh = Refresh::new(&ctx, &crs, flooding.clone(), a.keyholders, 16.0)?;
    let room = refresh.room(scales.refresh_level, scales.weight)?;
    let initial: Vec<Ciphertext> =
        HeadTrainer::pack_head(&layout, &vec![0.0; classes * d], &vec![0.0; classes])
            .iter()
            .map(|v| Ok(enc.encrypt(&ctx.encode_reals(v, scales.top, scales.weight)?)))
            .collect::<anyhow::Result<_>>()?;
    let mut trainer =
        HeadTrainer::new(&ctx, &rlk, &gks, layout.clone(), a.lr, a.momentum, initial)?;
    let (mut step_s, mut refresh_s, mut refresh_bytes, mut refreshes) = (0.0, 0.0, 0usize, 0usize);
    let t_all = Instant::now();
    for (n, batch) in batches.iter().enumerate() {
        let t = Instant::now();
        let refs: Vec<&EncryptedChunk> = batch.iter().map(|&c| &chunks[c]).collect();
        let updated = trainer.step(&refs)?;
        step_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut refreshed = Vec::with_capacity(updated.len());
        for ct in &updated {
            let mut acc = None;
            for i in 0..a.keyholders {
                let s = refresh.share(&secrets[i], ct, &mut prngs[i])?;
                let bytes = shares::encode_refresh_share(&ctx, &s);
                refresh_bytes += bytes.len();
                let s = shares::decode_refresh_share(&ctx, &bytes)?;
                match acc.as_mut() {
                    None => acc = Some(s),
                    Some(x) => refresh.aggregate(x, &s)?,
                }
            }
            refreshed.push(refresh.finalize(ct, &acc.expect("keyholders"))?);
            refreshes += 1;
        }
        trainer.set_state(refreshed)?;
        refresh_s += t.elapsed().as_secs_f64();
        if (n + 1) % 10 == 0 || n + 1 == batches.len() {
            eprintln!(
                "step {}/{}: {:.1} s (steps {:.1} s, refreshes {:.1} s)",
                n + 1,
                batches.len(),
                t_all.elapsed().as_secs_f64(),
                step_s,
                refresh_s
            );
        }
    }
    let train_s = t_all.elapsed().as_secs_f64();

    // ---- switched to a receiving key (PCKS by the keyholders), decrypted there ----
    let mut kg = ctx.key_generator()?;
    let receiver = kg.secret_key();
    let receiver_pk = kg.public_key(&receiver);
    let pcks_flooding = Flooding::new(30, fresh_noise_bound(&ctx, a.keyholders) * 2f64.powi(10))?;
    let pcks = PublicKeySwitch::new(&ctx, pcks_flooding, a.keyholders);
    let dec = ctx.decryptor(&receiver)?;
    let mut ew = vec![0.0; classes * d];
    let mut eb = vec![0.0; classes];
    for (g, ct) in trainer.weights().iter().enumerate() {
        let mut acc = None;
        for i in 0..a.keyholders {
            let s = pcks.share(&secrets[i], &receiver_pk, ct, &mut prngs[i])?;
            match acc.as_mut() {
                None => acc = Some(s),
                Some(x) => pcks.aggregate(x, &s)?,
            }
        }
        let out = pcks.finalize(ct, acc.expect("keyholders"))?;
        let slots = ctx.decode_reals(&dec.decrypt(&out))?;
        if g < layout.groups() {
            layout.unpack_weights(&slots, g, &mut ew);
        } else {
            eb = layout.unpack_bias(&slots);
        }
    }
    let max_diff = ew
        .iter()
        .zip(pw)
        .chain(eb.iter().zip(pb))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);

    let (acc_e, auc_e) = head_metrics(&ew, &eb, &test_x, &test.labels, names)?;
    let (acc_p, auc_p) = head_metrics(pw, pb, &test_x, &test.labels, names)?;
    let (acc_f, auc_f) = head_metrics(&fw, &fb, &raw_test_x, &test.labels, names)?;
    let report = serde_json::json!({
        "dataset": name,
        "site_examples": xs.len(),
        "test_images": test_x.len(),
        "features": d,
        "classes": classes,
        "epochs": a.epochs,
        "steps": batches.len(),
        "batch_examples": a.batch_chunks * chunk,
        "lr": a.lr,
        "momentum": a.momentum,
        "loss": "squared error on one-hot labels",
        "keyholders": a.keyholders,
        "n": ctx.n(),
        "log_qp": ctx.params().rlwe().log_qp(),
        "encrypted": {"test_acc": acc_e, "test_auc": auc_e, "train_s": train_s, "step_s": step_s,
                       "refresh_s": refresh_s, "refreshes": refreshes, "refresh_bytes": refresh_bytes,
                       "encrypt_s": encrypt_s, "upload_bytes": upload_bytes, "keygen_s": keys_s,
                       "refresh_slot_error": room.slot_error, "max_weight_diff": max_diff},
        "plaintext_same_steps": {"test_acc": acc_p, "test_auc": auc_p, "train_s": plain_s},
        "federated_head": {"test_acc": acc_f, "test_auc": auc_f},
        "simd_level": format!("{:?}", he_agg::simd::level()),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(path) = a.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
