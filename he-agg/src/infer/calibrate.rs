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
//! inputs and tails not seen.
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
    plan: &InferencePlan,
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
    let pixels: usize = net.image_input().iter().product();
    let mut random = vec![0u8; pixels];
    for p in random.iter_mut() {
        *p = (prng.next_u64() & 0xff) as u8;
    }
    let images: Vec<Vec<Plaintext>> = [random, vec![0u8; pixels], vec![255u8; pixels]]
        .iter()
        .map(|image| spec.encode_input(&ctx, &net.normalize_hwc(image)?))
        .collect::<Result<_, InferError>>()?;
    // one encrypted model at a time (each is hundreds of MB at these parameters): every image
    // through the first, then through the second
    let plain = match weights {
        Weights::Plain => Some(Model::plain(plan, &ctx)?),
        Weights::Encrypted => None,
    };
    // a cut plan's segment outputs are refreshed here by decrypting with the collective
    // secret and encrypting afresh (what the keyholders' refresh gives, without its flooding,
    // which is independent of the secrets): each segment's own noise is measured, at every
    // refresh point and at the result
    let mut renew_enc = ctx.sk_encryptor(&secret)?;
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
        let mut points = Vec::with_capacity(images.len() * spec.segments());
        for encoded in &images {
            let cts: Vec<Ciphertext> = encoded.iter().map(|pt| enc.encrypt(pt)).collect();
            let out = model.evaluate_refreshed(&eval, &cts, |_, ct| {
                points.push(dec.decrypt(&ct));
                renew(&ctx, &dec, &mut renew_enc, &ct, spec.input_level())
            })?;
            points.push(dec.decrypt(&out));
        }
        runs.push(points);
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
    })
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
