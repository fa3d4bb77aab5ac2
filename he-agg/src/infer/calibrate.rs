//! The noise a served result carries, to size the flooding of its threshold switch (mode a).
//!
//! The flooding of a switch must sit 2^λ above the noise the requester would otherwise decrypt:
//! the evaluation's, not a fresh encryption's. No closed form follows that noise tightly through
//! a network's rotations, ciphertext products and rescales, so it is measured, as OpenFHE's
//! `NOISE_FLOODING_DECRYPT` mode does (Li, Micciancio, Schultz, Sorrell, CRYPTO 2022): the same
//! plan and parameters, keys made by the same collective protocol among as many throwaway
//! parties as the consortium has hospitals, the model and each calibration image encrypted twice
//! independently and evaluated. The difference of the two decryptions is the difference of two
//! independent noises (the message cancels exactly, in the RNS words), so its largest
//! coefficient over √2 estimates the largest noise coefficient. The bound is the largest over a
//! random image and two saturated ones (all pixels 0, all 255), times 2^[`MARGIN_BITS`] for
//! inputs and tails not seen. A network whose values leave their range on those images (a deep
//! polynomial network's logits on random pixels are not finite) is measured on images near its
//! normalisation's mean in their place: the noise of a blown-up evaluation sizes nothing.
//!
//! A plan cut into segments is measured at every segment's output (each refreshed by
//! decrypting and encrypting afresh): the keyholders' refresh floods each segment's output as
//! the switch floods the result, so one bound sizes both.
//!
//! Served mode (a) evaluates with plaintext weights at every switching keyholder
//! ([`Weights::Plain`]: the image alone is encrypted twice); [`Weights::Encrypted`] measures a
//! model encrypted under the collective key, as a server holding one would evaluate it.
//!
//! What it covers: honestly formed requests (fresh encryptions of images), the plan's own
//! operations and the collective keys' noise. A requester that crafts its ciphertexts' noise is
//! outside it (docs/SECURITY.md's threat model says so).

use std::sync::Arc;

use crate::ckks::{Ciphertext, CkksContext, Plaintext};
use crate::multiparty::Crs;
use crate::ring::Prng;

use super::error::InferError;
use super::model::Model;
use super::network::Network;
use super::plan::InferencePlan;
use super::refresh::renew;
use super::threshold::CollectiveKeys;

/// Bits of margin over the largest noise coefficient measured.
pub const MARGIN_BITS: u32 = 4;

/// What a calibration measured.
#[derive(Clone, Debug, PartialEq)]
pub struct NoiseCalibration {
    /// The largest noise coefficient estimated over the calibration images.
    pub measured: f64,
    /// `measured` × 2^MARGIN_BITS: the bound flooding is sized by.
    pub bound: f64,
    /// The same, relative to the output scale, in slot units (≈ coefficient·√N / Δ).
    pub relative_slot_noise: f64,
    /// How many of the extreme images (random, black, white) left the network's value range
    /// and were replaced by images near its mean. Not zero: the bound covers images of the
    /// data's range only; a request of an extreme image yields a result with more noise than
    /// the flooding is sized for (docs/SECURITY.md).
    pub extremes_replaced: usize,
}

/// How the weights enter the evaluation whose noise is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weights {
    /// Encoded in the clear: served mode (a), where each switching keyholder evaluates the
    /// request itself with the model it holds.
    Plain,
    /// Encrypted under the collective key.
    Encrypted,
}

/// Measures the noise of `net`'s results under `plan` with keys made collectively by
/// `hospitals` throwaway parties (see the module's documentation).
pub fn calibrate_result_noise(
    plan: &Arc<InferencePlan>,
    net: &Network,
    hospitals: usize,
    weights: Weights,
) -> Result<NoiseCalibration, InferError> {
    let spec = plan.spec();
    let ctx: Arc<CkksContext> = CkksContext::new(spec.parameters().clone())?;
    let mut prng = Prng::from_os()?;
    let crs = Crs::from_seed(prng.seed());
    let keys = CollectiveKeys::new(spec, &ctx, &crs)?;

    // the collective protocol among `hospitals` parties, all here
    let mut secrets = Vec::with_capacity(hospitals.max(1));
    let mut ephemeral = Vec::with_capacity(hospitals.max(1));
    let mut round1 = None;
    for _ in 0..hospitals.max(1) {
        let sk = ctx.key_generator()?.secret_key();
        let (eph, shares) = keys.round1(&sk, &mut prng)?;
        match round1.as_mut() {
            None => round1 = Some(shares),
            Some(acc) => keys.aggregate1(acc, &shares)?,
        }
        secrets.push(sk);
        ephemeral.push(eph);
    }
    let round1 = round1.ok_or(InferError::ModelMismatch("no parties"))?;
    let mut round2 = None;
    for (sk, eph) in secrets.iter().zip(&ephemeral) {
        let share = keys.round2(eph, sk, &round1.relinearization, &mut prng)?;
        match round2.as_mut() {
            None => round2 = Some(share),
            Some(acc) => keys.aggregate2(acc, &share)?,
        }
    }
    let round2 = round2.ok_or(InferError::ModelMismatch("no parties"))?;
    let pk = keys.public_key(&round1);
    let eval_keys = keys.finalize(round1, round2)?;
    let eval = ctx.evaluator(eval_keys.relinearization.as_ref(), Some(&eval_keys.galois))?;
    let secret = crate::multiparty::sum_of_secrets(&ctx, &secrets);
    let dec = ctx.decryptor(&secret)?;

    let mut enc = ctx.pk_encryptor(&pk)?;
    let (chosen, extremes_replaced) = calibration_images(net, &mut prng)?;
    let images: Vec<Vec<Plaintext>> = chosen
        .iter()
        .map(|x| spec.encode_input(&ctx, x))
        .collect::<Result<_, InferError>>()?;
    // one encrypted model at a time (each is hundreds of MB at these parameters): every image
    // through the first, then through the second, segment by segment so that a segment the
    // plaintext model does not hold is encoded once per run
    // a cut plan's segment outputs are refreshed here by decrypting with the collective
    // secret and encrypting afresh (what the keyholders' refresh gives, without its flooding,
    // which is independent of the secrets): each segment's own noise is measured, at every
    // refresh point and at the result
    let mut renew_enc = ctx.sk_encryptor(&secret)?;
    // plaintext weights encoded once for both runs, as far as a quarter of the free memory
    // holds them (a keyholder's own budget's default); the rest per segment and run
    let plain = match weights {
        Weights::Plain => {
            let budget = crate::alloc::available_memory().map_or(u64::MAX, |b| b / 4);
            Some(Model::plain_within(plan, &ctx, budget)?)
        }
        Weights::Encrypted => None,
    };
    let mut runs: Vec<Vec<Plaintext>> = Vec::with_capacity(2);
    for _ in 0..2 {
        let encrypted;
        let model = match &plain {
            Some(m) => m,
            None => {
                encrypted = Model::encrypted(plan, &ctx, &mut |pt| enc.encrypt(pt))?;
                &encrypted
            }
        };
        let mut inputs: Vec<Vec<Ciphertext>> = images
            .iter()
            .map(|encoded| encoded.iter().map(|pt| enc.encrypt(pt)).collect())
            .collect();
        // points[image]: each segment's output, decrypted
        let mut points: Vec<Vec<Plaintext>> =
            vec![Vec::with_capacity(spec.segments()); images.len()];
        for k in 0..spec.segments() {
            for (cts, seen) in inputs.iter_mut().zip(points.iter_mut()) {
                let out = model.evaluate_segment(&eval, k, cts)?;
                seen.push(dec.decrypt(&out));
                if k + 1 < spec.segments() {
                    *cts = vec![renew(&ctx, &dec, &mut renew_enc, &out, spec.input_level())?];
                }
            }
        }
        runs.push(points.into_iter().flatten().collect());
    }
    let mut measured = 0f64;
    for (a, b) in runs[0].iter().zip(&runs[1]) {
        measured = measured.max(largest_difference(&ctx, a, b) / 2f64.sqrt());
    }
    let out_scale = runs[0]
        .get(spec.segments() - 1)
        .map_or(spec.input_scale(), |pt| pt.scale);
    let bound = measured.max(1.0) * f64::from(1u32 << MARGIN_BITS);
    Ok(NoiseCalibration {
        measured,
        bound,
        relative_slot_noise: measured * (ctx.n() as f64).sqrt() / out_scale,
        extremes_replaced,
    })
}

/// Logits beyond this (the plans' output bound, `ParamPolicy::output_bits`) mark an image the
/// network's values leave their range on.
const VALUE_RANGE: f64 = 1024.0;

/// The images calibration runs, normalised: random pixels and the two saturated images, the
/// extremes a requester can send, where the network's logits stay finite and within
/// [`VALUE_RANGE`] on them. A deep polynomial network's do not (a ResNet-20's logits on random
/// pixels are not finite: its values grow through 19 quadratics), and the noise of such an
/// evaluation measures nothing a refresh or switch could flood; for it, images near the
/// normalisation's mean (pixels within ±32 of it) stand in, the data's own range.
/// Also returns how many extremes were replaced.
fn calibration_images(
    net: &Network,
    prng: &mut Prng,
) -> Result<(Vec<Vec<f32>>, usize), InferError> {
    let [c, h, w] = net.image_input();
    let pixels = c * h * w;
    let mut random = vec![0u8; pixels];
    for p in random.iter_mut() {
        *p = (prng.next_u64() & 0xff) as u8;
    }
    let extremes = [random, vec![0u8; pixels], vec![255u8; pixels]];
    let mut images = Vec::with_capacity(extremes.len());
    for image in &extremes {
        let x = net.normalize_hwc(image)?;
        let logits = net.forward(&x)?;
        if logits
            .iter()
            .all(|v| v.is_finite() && f64::from(v.abs()) < VALUE_RANGE)
        {
            images.push(x);
        }
    }
    let replaced = extremes.len() - images.len();
    let mean = net.normalization().map_or(vec![0.5; c], |n| n.mean.clone());
    while images.len() < extremes.len() {
        let px: Vec<u8> = (0..pixels)
            .map(|i| {
                let noise = (prng.next_u64() % 65) as f32 - 32.0;
                (mean[i % c] * 255.0 + noise).clamp(0.0, 255.0) as u8
            })
            .collect();
        images.push(net.normalize_hwc(&px)?);
    }
    Ok((images, replaced))
}

/// max |a − b| over the coefficients, the difference taken in the RNS words (exact).
fn largest_difference(ctx: &CkksContext, a: &Plaintext, b: &Plaintext) -> f64 {
    let level = a.level().min(b.level());
    let basis = ctx.rlwe().q_basis(level);
    let mut diff = a.clone();
    ctx.rlwe().ring().sub_assign(&mut diff.poly, &b.poly, basis);
    ctx.lift_coefficients(&diff)
        .iter()
        .fold(0f64, |m, c| m.max(c.abs()))
}
