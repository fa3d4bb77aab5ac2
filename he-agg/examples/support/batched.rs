//! `bench_infer`'s batched section: one image per slot (a ciphertext per input value), a full
//! batch encrypted, evaluated and decrypted, every image checked against the plain forward
//! pass. A network cut into segments has its values refreshed between them as its requester
//! would (each decrypted and encrypted again at the top level, here in this process), timed
//! apart from the evaluation.

use std::time::Instant;

use he_agg::ckks::{Ciphertext, CkksContext, wire};
use he_agg::infer::refresh::renew_all;
use he_agg::infer::{BatchedModel, BatchedSpec, Network, ParamPolicy};
use rayon::prelude::*;
use serde_json::{Value, json};

use super::report::{compare, cpu_seconds, describe};

/// Peak resident memory of this process so far (VmHWM), in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The batched run on `batch` (at most one batch of images), printed and as JSON.
pub fn run(net: &Network, policy: &ParamPolicy, batch: &[Vec<f32>], threads: usize) -> Value {
    let spec = BatchedSpec::new(net, policy).expect("spec");
    let ctx = CkksContext::new(spec.parameters().clone()).expect("context");
    let t = Instant::now();
    let model = BatchedModel::with_policy(net, &ctx, policy).expect("batched model");
    let model_s = t.elapsed().as_secs_f64();
    let mut kg = ctx.key_generator().expect("os rng");
    let sk = kg.secret_key();
    let rlk = kg.relinearization_key(&sk);
    let eval = ctx.evaluator(Some(&rlk), None).expect("evaluator");
    let count = batch.len().min(spec.batch_size());
    let refs: Vec<&[f32]> = batch[..count].iter().map(Vec::as_slice).collect();
    let t0 = Instant::now();
    let pts = spec.encode_inputs(&ctx, &refs).expect("encode");
    let cts: Vec<Ciphertext> = pts
        .par_iter()
        .map_init(
            || ctx.sk_encryptor(&sk).expect("encryptor"),
            |enc, pt| enc.encrypt(pt),
        )
        .collect();
    drop(pts);
    let t1 = Instant::now();
    let cpu_b = cpu_seconds();
    let dec = ctx.decryptor(&sk).expect("decryptor");
    let top = spec.input_level();
    let (mut refresh_s, mut refreshed) = (0.0, 0usize);
    let outs = model
        .evaluate_refreshed(&eval, cts, |_, values| {
            let t = Instant::now();
            refreshed += values.len();
            let next = renew_all(&ctx, &sk, &values, top);
            refresh_s += t.elapsed().as_secs_f64();
            next
        })
        .expect("evaluate");
    let t2 = Instant::now();
    let eval_cpu_s = match (cpu_b, cpu_seconds()) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let pts: Vec<_> = outs.par_iter().map(|c| dec.decrypt(c)).collect();
    let logits = spec.decode_outputs(&ctx, &pts, count).expect("decode");
    let t3 = Instant::now();
    let (mut max_err, mut agree) = (0f64, 0usize);
    // the plaintext's smallest top-2 gap, and the largest gap among images whose label moved:
    // a label moves by noise only where the gap is below the error
    let (mut min_gap, mut moved_gap) = (f64::INFINITY, 0f64);
    for (x, got) in batch.iter().zip(&logits) {
        let want = net.forward(x).expect("reference");
        let (e, a) = compare(got, &want);
        max_err = max_err.max(e);
        agree += usize::from(a);
        let mut y: Vec<f64> = want.iter().map(|&v| v as f64).collect();
        y.sort_by(|a, b| b.total_cmp(a));
        let gap = if y.len() > 1 {
            y[0] - y[1]
        } else {
            f64::INFINITY
        };
        min_gap = min_gap.min(gap);
        if !a {
            moved_gap = moved_gap.max(gap);
        }
    }
    let eval_s = (t2 - t1).as_secs_f64();
    let request_b = spec.input_len() * wire::seeded_ciphertext_len(&ctx, spec.input_level());
    let response_b = spec.output_len() * wire::ciphertext_len(&ctx, 1, 1);
    let peak = peak_rss();
    println!(
        "batched: {count} images, encrypt {:.2} s, evaluate {:.2} s ({:.1} images/s; CPU \
         {:.1} s on {threads} threads), decrypt {:.2} s; end to end {:.1} images/s; max |err| \
         {:.2e}, argmax agrees {agree}/{count}; request {:.1} MB ({:.1} KB/image), response \
         {:.1} MB",
        (t1 - t0).as_secs_f64(),
        eval_s,
        count as f64 / eval_s,
        eval_cpu_s.unwrap_or(f64::NAN),
        (t3 - t2).as_secs_f64(),
        count as f64 / (t3 - t0).as_secs_f64(),
        max_err,
        request_b as f64 / 1e6,
        request_b as f64 / 1e3 / count as f64,
        response_b as f64 / 1e6,
    );
    println!(
        "batched: smallest top-2 gap of the plaintext logits {min_gap:.2e}{}",
        if agree < count {
            format!(
                "; the {} images whose label moved had gaps of at most {moved_gap:.2e}",
                count - agree
            )
        } else {
            String::new()
        }
    );
    if spec.segments() > 1 {
        println!(
            "batched: {} segments, {refreshed} values refreshed ({:.2} s of the evaluation); \
             model built in {model_s:.1} s; peak memory {:.1} GB (the model's estimate of its \
             values: {:.1} GB)",
            spec.segments(),
            refresh_s,
            peak.map_or(f64::NAN, |b| b as f64 / 1e9),
            model.peak_bytes() as f64 / 1e9,
        );
    }
    println!("batched parameters: {}", describe(spec.parameters()));
    json!({
        "images": count, "encrypt_s": (t1 - t0).as_secs_f64(), "evaluate_s": eval_s,
        "evaluate_cpu_s": eval_cpu_s,
        "images_per_s": count as f64 / eval_s,
        "decrypt_s": (t3 - t2).as_secs_f64(),
        "end_to_end_images_per_s": count as f64 / (t3 - t0).as_secs_f64(),
        "max_abs_error": max_err, "argmax_agreement": agree as f64 / count as f64,
        "min_top2_gap": min_gap,
        "request_bytes": request_b, "response_bytes": response_b,
        "segments": spec.segments(), "values_refreshed": refreshed, "refresh_s": refresh_s,
        "model_build_s": model_s, "peak_rss_bytes": peak,
        "peak_estimate_bytes": model.peak_bytes(),
        "parameters": describe(spec.parameters()),
    })
}
