//! Mode (a) as a consortium serves it: five hospitals make the plan's keys collectively and hold
//! 3-of-5 threshold shares; the image is encrypted under the collective key; each of three
//! switching keyholders evaluates it with the model it holds (plaintext weights: it switches
//! only what it computed itself from the signed request) and switches the result to the
//! requester's key with flooded shares 2^40 above the calibrated noise. Latency = encrypt + one
//! keyholder's evaluation and switching share (the t keyholders work in parallel at t machines)
//! + combining them + the requester's decrypt.

use std::time::Instant;

use he_agg::ckks::{CkksContext, wire};
use he_agg::infer::calibrate::{Weights, calibrate_result_noise};
use he_agg::infer::testing::consortium;
use he_agg::infer::threshold::{CollectiveKeys, RESULT_LAMBDA, result_flooding, served_refresh};
use he_agg::infer::{InferencePlan, Model, Network, ParamPolicy};
use he_agg::multiparty::{PublicKeySwitch, wire as mpw};
use he_agg::ring::Prng;
use serde_json::{Value, json};

const HOSPITALS: u32 = 5;
const THRESHOLD: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn argmax(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap_or(0)
}

/// Runs the measurement with rayon's current pool; prints and returns the figures.
/// `model_memory`: the bytes a keyholder holds its encoded model in (default a quarter of
/// `MemAvailable` once the keys are made); segments beyond it are encoded per request.
pub fn run(
    net: &Network,
    xs: &[Vec<f32>],
    reps: usize,
    one: &rayon::ThreadPool,
    model_memory: Option<u64>,
) -> Value {
    let plan = std::sync::Arc::new(
        InferencePlan::new(net, &ParamPolicy::threshold_switched(4)).expect("mode (a) plan"),
    );
    let spec = plan.spec();
    // calibrated first, one set of keys at a time (a ResNet's at N = 2^15 are gigabytes): its
    // keys and segments are gone when the budget below reads what memory is left
    let t = Instant::now();
    let calibration = calibrate_result_noise(&plan, net, HOSPITALS as usize, Weights::Plain)
        .expect("calibration");
    let calibrate_s = t.elapsed().as_secs_f64();
    he_agg::alloc::release_freed();
    let t = Instant::now();
    let c = consortium(spec, HOSPITALS, THRESHOLD);
    let key_setup_s = t.elapsed().as_secs_f64();
    let (ctx, eval, crs) = (c.ctx.clone(), &c.eval, &c.crs);
    let pk = &c.public_key;
    let mut prng = Prng::from_os().expect("os rng");
    // one hospital's round-1 shares again, for their time and size
    let keys = CollectiveKeys::new(spec, &ctx, crs).expect("keys");
    let sk = ctx.key_generator().expect("rng").secret_key();
    let t1 = Instant::now();
    let (_, first) = keys.round1(&sk, &mut prng).expect("round 1");
    let share_s = vec![t1.elapsed().as_secs_f64()];
    let share_bytes = mpw::encode_public_key_share(&ctx, &first.public_key).len()
        + mpw::encode_relin_share1(&ctx, &first.relinearization).len()
        + first
            .galois
            .iter()
            .map(|g| mpw::encode_galois_share(&ctx, g).len())
            .sum::<usize>();
    // relayed to every keyholder from each (it makes the sum its round-2 share is made on)
    let relin_share_bytes = mpw::encode_relin_share1(&ctx, &first.relinearization).len();
    drop(first);
    // what the keys' setup freed goes back before the budget below reads what is available
    he_agg::alloc::release_freed();
    let ids: Vec<u32> = (1..=HOSPITALS).collect();

    let mut enc = ctx.pk_encryptor(pk).expect("encryptor");
    let t = Instant::now();
    // what each keyholder holds: its final model, encoded at the plan's parameters as far as
    // its memory allows (the rest per request)
    let budget = model_memory
        .or_else(|| he_agg::alloc::available_memory().map(|b| b / 4))
        .unwrap_or(u64::MAX);
    let model = Model::plain_within(&plan, &ctx, budget).expect("the model, encoded");
    let model_encode_s = t.elapsed().as_secs_f64();
    let (held_segments, held_bytes) = model.held();
    println!(
        "mode (a) keyholder's model: {held_segments} of {} segments held encoded ({:.2} GB, budget {:.2} GB), the rest encoded per request",
        spec.segments(),
        held_bytes as f64 / 1e9,
        budget as f64 / 1e9
    );
    let mut rkg = ctx.key_generator().expect("rng");
    let req_sk = rkg.secret_key();
    let req_pk = rkg.public_key(&req_sk);
    let (flooding, slot_error) = result_flooding(
        &ctx,
        spec,
        calibration.bound,
        HOSPITALS as usize,
        THRESHOLD,
        RESULT_LAMBDA,
        1024.0,
    )
    .expect("flooding fits");
    let sigma = flooding.sigma();
    let pcks = PublicKeySwitch::new(&ctx, flooding, THRESHOLD);
    let active: Vec<u32> = ids[..THRESHOLD].to_vec();
    let additive = c.additive(&active);
    let dec = ctx.decryptor(&req_sk).expect("decryptor");
    // the requester's public key and the image's ciphertexts (under the collective key: full,
    // not seeded)
    let request_bytes = wire::encode_public_key(&ctx, &req_pk).len()
        + spec.input_ciphertexts() * wire::ciphertext_len(&ctx, spec.input_level(), 1);
    let response_bytes = wire::ciphertext_len(&ctx, spec.output_level(), 1);
    let switch_share_bytes = mpw::public_key_switch_share_len(&ctx, spec.output_level());
    // a plan cut into segments: the t keyholders refresh between them (each sends its share
    // and is relayed all t)
    let refresh = served_refresh(
        &ctx,
        spec,
        crs,
        calibration.bound,
        HOSPITALS as usize,
        THRESHOLD,
    )
    .expect("refresh room");
    let refreshes = spec.refreshes().len();
    // one share's bytes on the wire (of a zero ciphertext at the refresh level: same size)
    let refresh_share_bytes = spec.refreshes().first().map_or(0, |p| {
        let zero = he_agg::ckks::Ciphertext {
            parts: vec![he_agg::ring::Poly::zero(ctx.n(), p.level); 2],
            scale: p.scale,
        };
        let share = refresh
            .share(&additive[0], &zero, &mut prng)
            .expect("share");
        mpw::encode_refresh_share(&ctx, &share).len()
    });

    let mut figures = serde_json::Map::new();
    for (name, pool) in [("t1", Some(one)), ("all", None)] {
        let mut measure = || {
            let (mut te, mut tv, mut ts, mut tc, mut td, mut tt, mut tr) =
                (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
            let (mut max_err, mut agree) = (0f64, true);
            for r in 0..=reps {
                let x = &xs[r % xs.len()];
                let t0 = Instant::now();
                let ct: Vec<_> = spec
                    .encode_input(&ctx, x)
                    .expect("encode")
                    .iter()
                    .map(|p| enc.encrypt(p))
                    .collect();
                let t1 = Instant::now();
                // each refresh: the slowest keyholder's share (they make them at once, each at
                // its own machine), then a keyholder's sum and finalize
                let mut refresh_s = 0f64;
                let out = model
                    .evaluate_refreshed(eval, &ct, |_, c| {
                        let mut slowest = 0f64;
                        let mut shares = Vec::new();
                        for sk in &additive {
                            let t = Instant::now();
                            shares.push(refresh.share(sk, &c, &mut prng)?);
                            slowest = slowest.max(t.elapsed().as_secs_f64());
                        }
                        let t = Instant::now();
                        let mut acc = shares.pop().expect("t shares");
                        for s in &shares {
                            refresh.aggregate(&mut acc, s)?;
                        }
                        let fresh = refresh.finalize(&c, &acc)?;
                        refresh_s += slowest + t.elapsed().as_secs_f64();
                        Ok(fresh)
                    })
                    .expect("evaluate");
                let t2 = Instant::now();
                let mut slowest = 0f64;
                let mut shares = Vec::new();
                for sk in &additive {
                    let t = Instant::now();
                    shares.push(pcks.share(sk, &req_pk, &out, &mut prng).expect("share"));
                    slowest = slowest.max(t.elapsed().as_secs_f64());
                }
                let t3 = Instant::now();
                let mut acc = shares.pop().expect("t shares");
                for s in &shares {
                    pcks.aggregate(&mut acc, s).expect("aggregate");
                }
                let switched = pcks.finalize(&out, acc).expect("finalize");
                let t4 = Instant::now();
                let logits = spec
                    .decode_output(&ctx, &dec.decrypt(&switched))
                    .expect("decode");
                let t5 = Instant::now();
                let want: Vec<f64> = net
                    .forward(x)
                    .expect("reference")
                    .iter()
                    .map(|&v| f64::from(v))
                    .collect();
                let e = logits
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                max_err = max_err.max(e);
                agree &= argmax(&logits) == argmax(&want);
                if r > 0 {
                    te.push((t1 - t0).as_secs_f64());
                    tv.push((t2 - t1).as_secs_f64() - refresh_s);
                    tr.push(refresh_s);
                    ts.push(slowest);
                    tc.push((t4 - t3).as_secs_f64());
                    td.push((t5 - t4).as_secs_f64());
                    tt.push(((t2 - t0) + (t5 - t3)).as_secs_f64() + slowest);
                    // (the refreshes' time is inside t2 − t0: all keyholders' shares were made
                    // here one after the other, so the total counts the slowest only)
                }
            }
            json!({
                "encrypt_s": median(te), "evaluate_s": median(tv), "refresh_s": median(tr),
                "switch_share_s": median(ts),
                "combine_s": median(tc), "decrypt_s": median(td), "total_s": median(tt),
                "max_abs_error": max_err, "argmax_agrees": agree,
            })
        };
        let l = match pool {
            Some(p) => p.install(&mut measure),
            None => measure(),
        };
        println!(
            "mode (a) {name:>3}: encrypt {:.1} ms, keyholder's evaluation {:.1} ms, \
             {refreshes} collective refreshes {:.1} ms, switching \
             share {:.1} ms (each of {THRESHOLD} keyholders), combine {:.1} ms, decrypt {:.1} ms, \
             total {:.1} ms; \
             max |err| {:.2e}, argmax agrees: {}",
            l["encrypt_s"].as_f64().unwrap_or(f64::NAN) * 1e3,
            l["evaluate_s"].as_f64().unwrap_or(f64::NAN) * 1e3,
            l["refresh_s"].as_f64().unwrap_or(f64::NAN) * 1e3,
            l["switch_share_s"].as_f64().unwrap_or(f64::NAN) * 1e3,
            l["combine_s"].as_f64().unwrap_or(f64::NAN) * 1e3,
            l["decrypt_s"].as_f64().unwrap_or(f64::NAN) * 1e3,
            l["total_s"].as_f64().unwrap_or(f64::NAN) * 1e3,
            l["max_abs_error"].as_f64().unwrap_or(f64::NAN),
            l["argmax_agrees"]
        );
        figures.insert(name.into(), l);
    }
    // what the server evaluated before 25 November 2026 (the model encrypted under the
    // collective key), for comparison in the same run; a cut plan's encrypted model is tens of
    // GB at these parameters and was never served
    let mut before = serde_json::Map::new();
    if refreshes == 0 {
        let encrypted =
            Model::encrypted(&plan, &ctx, &mut |p| enc.encrypt(p)).expect("encrypted model");
        let image: Vec<_> = spec
            .encode_input(&ctx, &xs[0])
            .expect("encode")
            .iter()
            .map(|p| enc.encrypt(p))
            .collect();
        for (name, pool) in [("t1", Some(one)), ("all", None)] {
            let run = || {
                let t = Instant::now();
                encrypted.evaluate(eval, &image).expect("evaluate");
                t.elapsed().as_secs_f64()
            };
            let s = match pool {
                Some(p) => p.install(run),
                None => run(),
            };
            println!(
                "mode (a) {name:>3}, before: the server's evaluation of the encrypted model {:.1} ms",
                s * 1e3
            );
            before.insert(name.into(), json!(s));
        }
        drop(encrypted);
    }
    let mut out = finish(
        figures,
        before,
        spec,
        &ctx,
        key_setup_s,
        &share_s,
        share_bytes,
        relin_share_bytes,
        model_encode_s,
        request_bytes,
        switch_share_bytes,
        response_bytes,
        calibrate_s,
        &calibration,
        sigma,
        slot_error,
        refreshes,
        refresh_share_bytes,
    );
    out["model_held_segments"] = json!(held_segments);
    out["model_held_bytes"] = json!(held_bytes);
    out["model_memory_budget_bytes"] = json!(budget);
    out
}

/// Prints the run's parameters and sizes; the figures as JSON.
#[allow(clippy::too_many_arguments)]
fn finish(
    figures: serde_json::Map<String, Value>,
    before: serde_json::Map<String, Value>,
    spec: &he_agg::infer::InferenceSpec,
    ctx: &CkksContext,
    key_setup_s: f64,
    share_s: &[f64],
    share_bytes: usize,
    relin_share_bytes: usize,
    model_encode_s: f64,
    request_bytes: usize,
    switch_share_bytes: usize,
    response_bytes: usize,
    calibrate_s: f64,
    calibration: &he_agg::infer::calibrate::NoiseCalibration,
    sigma: f64,
    slot_error: f64,
    refreshes: usize,
    refresh_share_bytes: usize,
) -> Value {
    let params = spec.parameters();
    let _ = ctx;
    if refreshes > 0 {
        println!(
            "mode (a) refreshes: {refreshes} between {} segments; each keyholder sends a {:.1} MB \
             share per refresh and is relayed {THRESHOLD} ({:.1} MB per image per keyholder in all)",
            spec.segments(),
            refresh_share_bytes as f64 / 1e6,
            (refreshes * (1 + THRESHOLD) * refresh_share_bytes) as f64 / 1e6
        );
    }
    println!("mode (a) parameters: {}", super::report::describe(params));
    println!(
        "mode (a): N = {}, log QP {:.0}, scale 2^{}, result at level {}; collective \
         keys of {HOSPITALS} hospitals in {:.1} s ({:.1} s per hospital's shares, {:.1} MB each); \
         each relays {:.1} MB of relinearization share to every keyholder; a keyholder encodes \
         its model in {:.1} s; request {} KB, switching share {} KB, response \
         {} KB; result noise calibrated in {:.1} s: 2^{:.1} per coefficient, flooding \
         σ = 2^{:.1} (2^{:.1} over it); expected switching error per logit {:.1e}",
        params.n(),
        params.rlwe().log_qp(),
        params.log_scale(),
        spec.output_level(),
        key_setup_s,
        median(share_s.to_vec()),
        share_bytes as f64 / 1e6,
        relin_share_bytes as f64 / 1e6,
        model_encode_s,
        request_bytes / 1000,
        switch_share_bytes / 1000,
        response_bytes / 1000,
        calibrate_s,
        calibration.measured.log2(),
        sigma.log2(),
        (sigma / calibration.measured).log2(),
        slot_error
    );
    json!({
        "latency": figures, "encrypted_model_evaluate_s": before,
        "hospitals": HOSPITALS, "threshold": THRESHOLD, "lambda": RESULT_LAMBDA,
        "N": params.n(), "log_qp": params.rlwe().log_qp(), "log_scale": params.log_scale(),
        "output_level": spec.output_level(), "expected_switch_error": slot_error,
        "step_primes": spec.step_primes(), "calibrate_s": calibrate_s,
        "result_noise_log2": calibration.measured.log2(), "flooding_sigma_log2": sigma.log2(),
        "key_setup_s": key_setup_s, "key_shares_bytes_per_hospital": share_bytes,
        "model_encode_s": model_encode_s, "relin_share_bytes": relin_share_bytes,
        "request_bytes": request_bytes, "switch_share_bytes": switch_share_bytes,
        "input_ciphertexts": spec.input_ciphertexts(),
        "response_bytes": response_bytes,
        "segments": spec.segments(), "refreshes": refreshes,
        "refresh_share_bytes": refresh_share_bytes,
        "refresh_bytes_per_image_per_keyholder": refreshes * (1 + THRESHOLD) * refresh_share_bytes,
    })
}
