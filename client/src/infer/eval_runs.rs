//! The encrypted half of `client evaluate-encrypted`, in one of two packings:
//!
//! - **batched**: one image per slot, N/2 images per ciphertext and one ciphertext per input
//!   value — throughput for small images (a 28×28 image is 784 ciphertexts per batch);
//! - **per image**: the latency plan (one image per ciphertext, or per few for a large image),
//!   image after image, each evaluation on every core — what a requester gets, and the only
//!   practical packing at clinical resolution (a 256×256 batch would be 65,536 ciphertexts).

use std::sync::Arc;
use std::time::Instant;

use he_agg::ckks::{Ciphertext, CkksContext, wire};
use he_agg::infer::{InferencePlan, Model, Network, ParamPolicy, refresh};
use indicatif::ProgressBar;
use rayon::prelude::*;
use serde::Serialize;

use super::batched_setup::BatchedSetup;
use super::error::InferenceError;

/// Which packing an evaluation uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Packing {
    /// Batched when an image has at most [`BATCHED_MAX_INPUT`] values, else per image.
    #[default]
    Auto,
    Batched,
    PerImage,
}

/// Largest image (values) the automatic choice evaluates batched.
pub const BATCHED_MAX_INPUT: usize = 4096;
/// Largest image (values) batched packing accepts when asked for (64² RGB; ~20 GB of input
/// ciphertexts at N = 2^14).
pub const BATCHED_FORCED_MAX_INPUT: usize = 3 * 64 * 64;

impl Packing {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "batched" => Some(Self::Batched),
            "per-image" => Some(Self::PerImage),
            _ => None,
        }
    }

    /// The packing used for `net`; batched packing is refused on an image too large for it
    /// (it holds one ciphertext per input value, whatever the batch size). Whether a batch fits
    /// this machine's memory is checked next ([`super::batched_setup::choose`]).
    pub fn resolve(self, net: &Network) -> Result<Self, InferenceError> {
        let values = net.input_len();
        match self {
            Self::Auto if values <= BATCHED_MAX_INPUT => Ok(Self::Batched),
            Self::Auto => Ok(Self::PerImage),
            Self::Batched if values > BATCHED_FORCED_MAX_INPUT => {
                Err(InferenceError::Usage(format!(
                    "batched packing holds one ciphertext per input value: this network's \
                     {values} values per image would need {values} ciphertexts at once (at \
                     most {BATCHED_FORCED_MAX_INPUT}); use --packing per-image"
                )))
            }
            p => Ok(p),
        }
    }
}

/// The parameters used, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct ParamSummary {
    pub n: usize,
    pub log_scale: f64,
    pub q_bits: Vec<u32>,
    pub p_bits: Vec<u32>,
    pub log_qp: f64,
}

pub fn summary(ctx: &CkksContext) -> ParamSummary {
    let bits = |v: &[u64]| -> Vec<u32> { v.iter().map(|&q| 64 - q.leading_zeros()).collect() };
    let p = ctx.params();
    ParamSummary {
        n: p.n(),
        log_scale: p.log_scale(),
        q_bits: bits(p.rlwe().q()),
        p_bits: bits(p.rlwe().p()),
        log_qp: p.rlwe().log_qp(),
    }
}

/// What an encrypted run gave and cost.
pub struct EncryptedRun {
    pub logits: Vec<Vec<f64>>,
    pub packing: Packing,
    pub depth: usize,
    pub parameters: ParamSummary,
    pub batch_size: usize,
    pub batches: usize,
    pub keygen_s: f64,
    pub encrypt_s: f64,
    pub evaluate_s: f64,
    pub decrypt_s: f64,
    /// Median seconds per image, end to end (per image packing; the batch's for batched).
    pub latency_s: f64,
    pub request_bytes_per_image: f64,
    pub response_bytes_per_batch: usize,
    /// Evaluation keys a requester sends once (per image packing: relinearization and Galois).
    pub eval_key_bytes: usize,
    /// Refresh round trips per image (a deep model's segments, per image packing) and their
    /// bytes, both ways.
    pub refreshes: usize,
    pub refresh_bytes_per_image: f64,
}

fn rng_err(e: impl std::fmt::Display) -> InferenceError {
    InferenceError::Rng(e.to_string())
}

/// One image per slot.
pub fn batched(
    setup: BatchedSetup,
    inputs: &[Vec<f32>],
    batch: Option<usize>,
    pb: &ProgressBar,
) -> Result<EncryptedRun, InferenceError> {
    let n = inputs.len();
    let t = Instant::now();
    let BatchedSetup { spec, ctx, model } = setup;
    let mut kg = ctx.key_generator().map_err(rng_err)?;
    let sk = kg.secret_key();
    let rlk = spec
        .needs_relinearization()
        .then(|| kg.relinearization_key(&sk));
    let eval = ctx.evaluator(rlk.as_ref(), None)?;
    let keygen_s = t.elapsed().as_secs_f64();
    let batch = batch
        .unwrap_or(spec.batch_size())
        .clamp(1, spec.batch_size());
    let (mut encrypt_s, mut evaluate_s, mut decrypt_s) = (0.0, 0.0, 0.0);
    let mut logits: Vec<Vec<f64>> = Vec::with_capacity(n);
    let dec = ctx.decryptor(&sk)?;
    ctx.sk_encryptor(&sk)?;
    let top = spec.input_level();
    // what a served refresh of one value moves: masked at the refresh level, back seeded
    let refresh_value_bytes = wire::ciphertext_len(&ctx, spec.refresh_level(), 1)
        + wire::seeded_ciphertext_len(&ctx, top);
    let mut refresh_bytes = 0usize;
    for chunk in inputs.chunks(batch) {
        let refs: Vec<&[f32]> = chunk.iter().map(Vec::as_slice).collect();
        let t0 = Instant::now();
        let cts: Vec<Ciphertext> = spec
            .encode_inputs(&ctx, &refs)?
            .par_iter()
            .map_init(
                || ctx.sk_encryptor(&sk).ok(),
                |enc, pt| enc.as_mut().map(|e| e.encrypt(pt)),
            )
            .collect::<Option<_>>()
            .ok_or_else(|| rng_err("cannot make an encryptor"))?;
        let t1 = Instant::now();
        // a deep model's values refreshed between its segments by their requester, here
        let outs = model.evaluate_refreshed(&eval, cts, |_, values| {
            refresh_bytes += values.len() * refresh_value_bytes;
            refresh::renew_all(&ctx, &sk, &values, top)
        })?;
        let t2 = Instant::now();
        let pts: Vec<_> = outs.par_iter().map(|c| dec.decrypt(c)).collect();
        logits.extend(spec.decode_outputs(&ctx, &pts, chunk.len())?);
        let t3 = Instant::now();
        encrypt_s += (t1 - t0).as_secs_f64();
        evaluate_s += (t2 - t1).as_secs_f64();
        decrypt_s += (t3 - t2).as_secs_f64();
        pb.inc(chunk.len() as u64);
    }
    let batches = n.div_ceil(batch);
    Ok(EncryptedRun {
        logits,
        packing: Packing::Batched,
        depth: spec.depth(),
        parameters: summary(&ctx),
        batch_size: batch,
        batches,
        keygen_s,
        encrypt_s,
        evaluate_s,
        decrypt_s,
        latency_s: (encrypt_s + evaluate_s + decrypt_s) / batches as f64,
        request_bytes_per_image: (spec.input_len()
            * wire::seeded_ciphertext_len(&ctx, spec.input_level()))
            as f64
            / batch as f64,
        response_bytes_per_batch: spec.output_len() * wire::ciphertext_len(&ctx, 1, 1),
        eval_key_bytes: rlk
            .as_ref()
            .map_or(0, |r| wire::encode_relinearization_key(&ctx, r).len()),
        refreshes: spec.segments() - 1,
        refresh_bytes_per_image: refresh_bytes as f64 / n.max(1) as f64,
    })
}

/// The latency plan, image after image.
pub fn per_image(
    net: &Network,
    inputs: &[Vec<f32>],
    policy: &ParamPolicy,
    pb: &ProgressBar,
) -> Result<EncryptedRun, InferenceError> {
    let t = Instant::now();
    let plan = InferencePlan::new(net, policy)?;
    let spec = plan.spec();
    let ctx: Arc<CkksContext> = CkksContext::new(spec.parameters().clone())?;
    let mut kg = ctx.key_generator().map_err(rng_err)?;
    let sk = kg.secret_key();
    let keys = spec.generate_keys(&mut kg, &sk);
    let eval = ctx.evaluator(keys.relinearization.as_ref(), Some(&keys.galois))?;
    let model = Model::plain(&plan, &ctx)?;
    let keygen_s = t.elapsed().as_secs_f64();
    let eval_key_bytes = keys.wire_bytes(&ctx);
    let mut enc = ctx.sk_encryptor(&sk)?;
    let dec = ctx.decryptor(&sk)?;
    let (mut encrypt_s, mut evaluate_s, mut decrypt_s) = (0.0, 0.0, 0.0);
    let mut latencies = Vec::with_capacity(inputs.len());
    let mut logits = Vec::with_capacity(inputs.len());
    let mut request_bytes = 0usize;
    let mut refresh_bytes = 0usize;
    let mut prng = he_agg::ring::Prng::from_os().map_err(rng_err)?;
    for x in inputs {
        let t0 = Instant::now();
        let cts: Vec<Ciphertext> = spec
            .encode_input(&ctx, x)?
            .iter()
            .map(|pt| {
                let seeded = enc.encrypt_seeded(pt);
                request_bytes =
                    wire::encode_seeded_ciphertext(&ctx, &seeded).len() * spec.input_ciphertexts();
                he_agg::rlwe::expand_seeded(ctx.rlwe(), &seeded)
            })
            .collect();
        let t1 = Instant::now();
        // a deep model's refreshes as a requester makes them: masked by the server, decrypted
        // and re-encrypted here, unmasked
        let mut bytes = 0usize;
        let out = model.evaluate_refreshed(&eval, &cts, |i, ct| {
            let (masked, mask) = refresh::mask(&ctx, spec, i, &ct, &mut prng)?;
            let fresh = refresh::reencrypt(&ctx, spec, i, &sk, &masked)?;
            bytes += wire::ciphertext_len(&ctx, masked.level(), 1)
                + wire::encode_seeded_ciphertext(&ctx, &fresh).len();
            refresh::unmask(
                &ctx,
                spec,
                he_agg::rlwe::expand_seeded(ctx.rlwe(), &fresh),
                mask,
            )
        })?;
        refresh_bytes = bytes;
        let t2 = Instant::now();
        logits.push(spec.decode_output(&ctx, &dec.decrypt(&out))?);
        let t3 = Instant::now();
        encrypt_s += (t1 - t0).as_secs_f64();
        evaluate_s += (t2 - t1).as_secs_f64();
        decrypt_s += (t3 - t2).as_secs_f64();
        latencies.push((t3 - t0).as_secs_f64());
        pb.inc(1);
    }
    latencies.sort_by(f64::total_cmp);
    Ok(EncryptedRun {
        logits,
        packing: Packing::PerImage,
        depth: spec.depth(),
        parameters: summary(&ctx),
        batch_size: 1,
        batches: inputs.len(),
        keygen_s,
        encrypt_s,
        evaluate_s,
        decrypt_s,
        latency_s: latencies.get(latencies.len() / 2).copied().unwrap_or(0.0),
        request_bytes_per_image: request_bytes as f64,
        response_bytes_per_batch: wire::ciphertext_len(&ctx, spec.output_level(), 1),
        eval_key_bytes,
        refreshes: spec.refreshes().len(),
        refresh_bytes_per_image: refresh_bytes as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use he_agg::infer::testing;

    #[test]
    fn packing_follows_the_image_size_and_refuses_batched_on_large_images() {
        let small = testing::tiny_network();
        let large = testing::clinical_network(128, 1, 3);
        assert_eq!(Packing::Auto.resolve(&small).unwrap(), Packing::Batched);
        assert_eq!(Packing::Auto.resolve(&large).unwrap(), Packing::PerImage);
        assert_eq!(
            Packing::PerImage.resolve(&small).unwrap(),
            Packing::PerImage
        );
        let msg = Packing::Batched.resolve(&large).unwrap_err().to_string();
        assert!(
            msg.contains("16384 values") && msg.contains("per-image"),
            "{msg}"
        );
    }
}
