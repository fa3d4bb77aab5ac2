//! A mode (a) request at the coordinator, sans-IO: its images checked against the plan, its
//! evaluated results, and the sum of the switching shares of the current attempt. Shares are
//! decoded and checked in full before any is summed, and a new attempt starts from nothing, so
//! a bad or late stream never reaches the result.

use std::sync::Arc;

use he_agg::ckks::{Ciphertext, CkksContext, Evaluator, PublicKey, wire};
use he_agg::infer::{InferencePlan, Model};
use he_agg::multiparty::{PublicKeySwitch, PublicKeySwitchShare, wire as mpw};
use protocol::serve::collective::CollectiveRequest;

use super::keys::KeysError;

fn invalid(s: impl Into<String>) -> KeysError {
    KeysError::Invalid(s.into())
}

/// Checks a request's images: decoded (parameters, sizes, residues), at the plan's input level
/// and scale, degree 1; every image's ciphertexts one after the other.
pub fn decode_images(
    ctx: &CkksContext,
    plan: &InferencePlan,
    header: &CollectiveRequest,
    items: &[Vec<u8>],
) -> Result<(PublicKey, Vec<Ciphertext>), KeysError> {
    let item = |index: usize, what: &'static str, e: wire::WireError| KeysError::Item {
        index: index as u64,
        what,
        reason: e.to_string(),
    };
    let spec = plan.spec();
    if header.ciphertexts_per_image as usize != spec.input_ciphertexts()
        || items.len() as u64 != header.items()
    {
        return Err(invalid(format!(
            "{} items for a request of {} images of {} ciphertexts (its public key and the \
             images; the plan's image spans {})",
            items.len(),
            header.images,
            header.ciphertexts_per_image,
            spec.input_ciphertexts()
        )));
    }
    let pk = wire::decode_public_key(ctx, &items[0])
        .map_err(|e| item(0, "the requester's public key", e))?;
    let mut images = Vec::with_capacity(items.len() - 1);
    for (i, bytes) in items[1..].iter().enumerate() {
        let ct = wire::decode_ciphertext(ctx, bytes).map_err(|e| item(i + 1, "image", e))?;
        if ct.level() != spec.input_level() || ct.degree() != 1 {
            return Err(invalid(format!(
                "image {i}: level {} degree {}; the plan takes level {} degree 1",
                ct.level(),
                ct.degree(),
                spec.input_level()
            )));
        }
        if (ct.scale / spec.input_scale() - 1.0).abs() > 1e-9 {
            return Err(invalid(format!(
                "image {i}: scale 2^{:.3}, the plan expects 2^{:.3}",
                ct.scale.log2(),
                spec.input_scale().log2()
            )));
        }
        images.push(ct);
    }
    Ok((pk, images))
}

/// Evaluates the encrypted model on every image (`images`: each image's ciphertexts one after
/// the other; CPU-bound: run it off the async runtime).
pub fn evaluate(
    eval: &Evaluator,
    model: &Model,
    images: &[Ciphertext],
) -> Result<Vec<Ciphertext>, KeysError> {
    let per = model.spec().input_ciphertexts().max(1);
    images
        .chunks(per)
        .map(|image| {
            model
                .evaluate(eval, image)
                .map_err(|e| invalid(format!("evaluation failed: {e}")))
        })
        .collect()
}

/// A request whose results wait for their switch.
pub struct SwitchState {
    ctx: Arc<CkksContext>,
    pcks: PublicKeySwitch,
    /// the requester's public key, encoded, as keyholders get it
    pub requester_key: Vec<u8>,
    pub results: Vec<Ciphertext>,
    /// the results, encoded, as keyholders get them
    pub encoded: Vec<Vec<u8>>,
    sum: Option<(u32, Vec<PublicKeySwitchShare>)>,
}

impl SwitchState {
    pub fn new(
        ctx: Arc<CkksContext>,
        pcks: PublicKeySwitch,
        requester_key: Vec<u8>,
        results: Vec<Ciphertext>,
    ) -> Self {
        let encoded = results
            .iter()
            .map(|c| wire::encode_ciphertext(&ctx, c))
            .collect();
        Self {
            ctx,
            pcks,
            requester_key,
            results,
            encoded,
            sum: None,
        }
    }

    /// Decodes one keyholder's shares (one per result, at the result's level); nothing summed.
    pub fn decode_shares(&self, items: &[Vec<u8>]) -> Result<Vec<PublicKeySwitchShare>, KeysError> {
        if items.len() != self.results.len() {
            return Err(invalid(format!(
                "{} switching shares for {} results",
                items.len(),
                self.results.len()
            )));
        }
        items
            .iter()
            .zip(&self.results)
            .enumerate()
            .map(|(i, (b, r))| {
                let s = mpw::decode_public_key_switch_share(&self.ctx, b).map_err(|e| {
                    KeysError::Item {
                        index: i as u64,
                        what: "switching share",
                        reason: e.to_string(),
                    }
                })?;
                if s.level() != r.level() {
                    return Err(invalid(format!(
                        "switching share {i} at level {}, the result is at {}",
                        s.level(),
                        r.level()
                    )));
                }
                Ok(s)
            })
            .collect()
    }

    /// Adds decoded shares to the sum of `attempt` (a new attempt starts a new sum).
    pub fn fold(
        &mut self,
        attempt: u32,
        shares: Vec<PublicKeySwitchShare>,
    ) -> Result<(), KeysError> {
        match self.sum.as_mut() {
            Some((a, sum)) if *a == attempt => {
                for (acc, s) in sum.iter_mut().zip(&shares) {
                    self.pcks
                        .aggregate(acc, s)
                        .map_err(|e| invalid(e.to_string()))?;
                }
            }
            _ => self.sum = Some((attempt, shares)),
        }
        Ok(())
    }

    /// The results under the requester's key, encoded.
    pub fn finish(self) -> Result<Vec<Vec<u8>>, KeysError> {
        let (_, sum) = self
            .sum
            .ok_or_else(|| invalid("no switching shares were folded"))?;
        self.results
            .iter()
            .zip(sum)
            .map(|(r, s)| {
                let out = self
                    .pcks
                    .finalize(r, s)
                    .map_err(|e| invalid(e.to_string()))?;
                Ok(wire::encode_ciphertext(&self.ctx, &out))
            })
            .collect()
    }
}
