//! `client infer --local`: the requester's work exactly as for a server (plan compiled from the
//! architecture, own keys, seeded ciphertexts on the wire format), with the server's evaluation
//! in this process on the network file's weights; the plaintext network's label beside each.

use std::time::Instant;

use he_agg::ckks::wire;
use he_agg::infer::{InferencePlan, Model, Network, ParamPolicy, refresh};
use he_agg::rlwe::expand_seeded;

use super::error::InferenceError;
use super::images::LoadedImage;
use super::outcome::{ImageResult, InferOutcome, Sizes, Timings};
use super::requester::Requester;

/// Encrypts, evaluates and decrypts `images` in this process.
pub fn infer_local(
    net: &Network,
    classes: &[String],
    model_name: &str,
    images: &[LoadedImage],
) -> Result<InferOutcome, InferenceError> {
    let start = Instant::now();
    let req = Requester::for_architecture(&net.architecture())?;
    // the server's side: the real weights, compiled with the same policy
    let plan = InferencePlan::new(net, &ParamPolicy::default())?;
    req.check_fingerprint(&plan.spec().fingerprint())?;
    let ctx = req.context().clone();
    let model = Model::plain(&plan, &ctx)?;
    let keys = req.evaluation_keys();
    let eval = ctx.evaluator(keys.relinearization.as_ref(), Some(&keys.galois))?;
    let mut timings = Timings {
        setup_s: req.setup.as_secs_f64(),
        ..Default::default()
    };
    let mut sizes = Sizes {
        keys_sent: req.key_items().iter().map(|k| k.len() as u64 + 4).sum(),
        ..Default::default()
    };
    let mut results = Vec::with_capacity(images.len());
    let mut prng = he_agg::ring::Prng::from_os().map_err(|e| InferenceError::Rng(e.to_string()))?;
    for im in images {
        let x = req.normalize(&im.hwc)?;
        let t0 = Instant::now();
        let request = req.encrypt(&x)?;
        let t1 = Instant::now();
        let cts = request
            .iter()
            .map(|item| {
                wire::decode_seeded_ciphertext(&ctx, item)
                    .map(|s| expand_seeded(ctx.rlwe(), &s))
                    .map_err(|source| InferenceError::Wire {
                        what: "the encrypted image",
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // a deep model's refreshes, both sides of the round trip in this process
        let spec = req.spec();
        let mut out = model.evaluate_segment(&eval, 0, &cts)?;
        for k in 1..spec.segments() {
            let (masked, mask) = refresh::mask(&ctx, spec, k - 1, &out, &mut prng)?;
            let down = wire::encode_ciphertext(&ctx, &masked);
            let up = req.refresh(k - 1, &down)?;
            sizes.refresh_received += down.len() as u64 + 4;
            sizes.refresh_sent += up.len() as u64 + 4;
            sizes.refreshes += 1;
            let seeded = wire::decode_seeded_ciphertext(&ctx, &up).map_err(|source| {
                InferenceError::Wire {
                    what: "a refreshed ciphertext",
                    source,
                }
            })?;
            let next = refresh::unmask(&ctx, spec, expand_seeded(ctx.rlwe(), &seeded), mask)?;
            out = model.evaluate_segment(&eval, k, &[next])?;
        }
        let response = wire::encode_ciphertext(&ctx, &out);
        let t2 = Instant::now();
        let logits = req.decrypt(&response)?;
        let t3 = Instant::now();
        timings.encrypt_s += (t1 - t0).as_secs_f64();
        timings.evaluate_s += (t2 - t1).as_secs_f64();
        timings.decrypt_s += (t3 - t2).as_secs_f64();
        sizes.images_sent += request.iter().map(|r| r.len() as u64 + 4).sum::<u64>();
        sizes.results_received += response.len() as u64 + 4;
        let plain: Vec<f64> = net.forward(&x)?.iter().map(|&v| v as f64).collect();
        results.push(ImageResult::from_logits(
            im.name.clone(),
            logits,
            classes,
            im.label,
            Some(training::metrics::argmax(&plain)),
        ));
    }
    timings.wait_s = timings.evaluate_s;
    timings.total_s = start.elapsed().as_secs_f64();
    let spec = req.spec();
    Ok(InferOutcome {
        mode: "local".into(),
        inference: protocol::site::InferenceMode::Released,
        model: model_name.into(),
        ring_degree: spec.parameters().n(),
        depth: spec.depth(),
        galois_keys: spec.galois_steps().len(),
        fingerprint: spec
            .fingerprint()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        classes: classes.to_vec(),
        images: results,
        timings,
        bytes: sizes,
    })
}
