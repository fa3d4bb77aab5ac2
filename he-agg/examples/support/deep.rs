//! `bench_infer` on a network cut into segments (a deep one, refreshed by its requester between
//! them, mode b): latency on one thread and on all, each segment's time and levels (the latency
//! per level), the refreshes and every byte a request moves, checked against the plain forward
//! pass. The refreshes are made as a requester makes them (mask, decrypt and re-encrypt, unmask),
//! in this process: what a loopback round trip adds on top is measured by `client infer`.

use std::sync::Arc;
use std::time::Instant;

use he_agg::ckks::{Ciphertext, CkksContext, Evaluator, SecretKey, wire};
use he_agg::infer::refresh::{mask, reencrypt, unmask};
use he_agg::infer::{InferencePlan, Model, Network};
use he_agg::ring::Prng;
use he_agg::rlwe::expand_seeded;
use serde_json::{Value, json};

/// One image: its seconds per segment (refresh work included in the segment after it), its
/// refresh bytes both ways, and its worst logit error and whether the label agrees.
struct Image {
    segments: Vec<f64>,
    refresh_s: f64,
    refresh_bytes: usize,
    total_s: f64,
    err: f64,
    agree: bool,
}

fn one_image(
    net: &Network,
    model: &Model,
    ctx: &Arc<CkksContext>,
    eval: &Evaluator,
    sk: &SecretKey,
    x: &[f32],
) -> Image {
    let spec = model.spec();
    let mut prng = Prng::from_os().expect("os rng");
    let t0 = Instant::now();
    let mut enc = ctx.sk_encryptor(sk).expect("encryptor");
    let cts: Vec<Ciphertext> = spec
        .encode_input(ctx, x)
        .expect("encode")
        .iter()
        .map(|p| expand_seeded(ctx.rlwe(), &enc.encrypt_seeded(p)))
        .collect();
    let mut segments = Vec::with_capacity(spec.segments());
    let (mut refresh_s, mut refresh_bytes) = (0.0, 0usize);
    let t = Instant::now();
    let mut out = model.evaluate_segment(eval, 0, &cts).expect("segment");
    segments.push(t.elapsed().as_secs_f64());
    for k in 1..spec.segments() {
        let t = Instant::now();
        let (masked, m) = mask(ctx, spec, k - 1, &out, &mut prng).expect("mask");
        let fresh = reencrypt(ctx, spec, k - 1, sk, &masked).expect("reencrypt");
        refresh_bytes += wire::encode_ciphertext(ctx, &masked).len()
            + wire::encode_seeded_ciphertext(ctx, &fresh).len();
        let next = unmask(ctx, spec, expand_seeded(ctx.rlwe(), &fresh), m).expect("unmask");
        refresh_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        out = model.evaluate_segment(eval, k, &[next]).expect("segment");
        segments.push(t.elapsed().as_secs_f64());
    }
    let got = spec
        .decode_output(ctx, &ctx.decryptor(sk).expect("decryptor").decrypt(&out))
        .expect("decode");
    let total_s = t0.elapsed().as_secs_f64();
    let want = net.forward(x).expect("reference");
    let err = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - *w as f64).abs())
        .fold(0.0, f64::max);
    let argmax = |v: &[f64]| (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b });
    let want64: Vec<f64> = want.iter().map(|&v| v as f64).collect();
    Image {
        segments,
        refresh_s,
        refresh_bytes,
        total_s,
        err,
        agree: argmax(&got) == argmax(&want64),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The deep-network section of the report.
#[allow(clippy::too_many_arguments)]
pub fn run(
    net: &Network,
    plan: &InferencePlan,
    ctx: &Arc<CkksContext>,
    eval: &Evaluator,
    sk: &SecretKey,
    xs: &[Vec<f32>],
    reps: usize,
    one: &rayon::ThreadPool,
) -> Value {
    let spec = plan.spec();
    let t = Instant::now();
    let model = Model::plain(plan, ctx).expect("plain model");
    let model_s = t.elapsed().as_secs_f64();
    let depths = plan.segment_depths();
    let xs = super::networks::images_near_mean(net, xs.len(), 7);
    let mut runs = serde_json::Map::new();
    let mut per_segment = Vec::new();
    let (mut refresh_bytes, mut worst, mut agree) = (0usize, 0f64, true);
    for (name, pool) in [("t1", Some(one)), ("all", None)] {
        let mut images = Vec::new();
        let mut go = || {
            for r in 0..reps.max(1) {
                images.push(one_image(net, &model, ctx, eval, sk, &xs[r % xs.len()]));
            }
        };
        match pool {
            Some(p) => p.install(go),
            None => go(),
        }
        for im in &images {
            worst = worst.max(im.err);
            agree &= im.agree;
            refresh_bytes = im.refresh_bytes;
        }
        let total = median(images.iter().map(|i| i.total_s).collect());
        let refresh = median(images.iter().map(|i| i.refresh_s).collect());
        if name == "all" {
            per_segment = (0..spec.segments())
                .map(|k| median(images.iter().map(|i| i.segments[k]).collect()))
                .collect();
        }
        println!(
            "deep mode (b) {name:>3}: {total:.2} s per image ({} segments, {} refreshes, {refresh:.3} \
             s of refresh work), max |err| {worst:.2e}, argmax agrees: {agree}",
            spec.segments(),
            spec.refreshes().len()
        );
        runs.insert(
            name.into(),
            json!({"total_s": total, "refresh_work_s": refresh, "images": images.len()}),
        );
    }
    let request: usize =
        spec.input_ciphertexts() * wire::seeded_ciphertext_len(ctx, spec.input_level());
    let response = wire::ciphertext_len(ctx, spec.output_level(), 1);
    let per_level: Vec<Value> = per_segment
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let levels = depths.get(k).copied().unwrap_or(0).max(1);
            json!({"segment": k, "seconds": s, "levels": levels, "seconds_per_level": s / levels as f64})
        })
        .collect();
    println!(
        "deep mode (b): request {:.2} MB, refreshes {:.2} MB both ways, response {} KB: {:.2} MB \
         per image in all; model encoded in {model_s:.1} s",
        request as f64 / 1e6,
        refresh_bytes as f64 / 1e6,
        response / 1000,
        (request + refresh_bytes + response) as f64 / 1e6
    );
    for (k, s) in per_segment.iter().enumerate() {
        let levels = depths.get(k).copied().unwrap_or(0).max(1);
        println!(
            "  segment {k}: {s:.3} s, {levels} levels, {:.3} s per level",
            s / levels as f64
        );
    }
    json!({
        "depth": spec.depth(),
        "segments": spec.segments(),
        "refreshes": spec.refreshes().len(),
        "refresh_level": spec.refreshes().first().map(|r| r.level),
        "latency": runs,
        "latency_s": runs["all"]["total_s"],
        "latency_t1_s": runs["t1"]["total_s"],
        "per_segment": per_level,
        "request_bytes": request,
        "refresh_bytes": refresh_bytes,
        "response_bytes": response,
        "bytes_per_image": request + refresh_bytes + response,
        "max_abs_err": worst,
        "argmax_agrees": agree,
        "model_encode_s": model_s,
        "diagonals": plan.diagonal_count(),
    })
}
