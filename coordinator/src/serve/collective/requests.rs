//! A mode (a) request at the coordinator, sans-IO: its images checked against the plan, the
//! results the switching keyholders computed (which must agree word for word), and the sum of
//! the switching shares of the current attempt. Everything a keyholder sends is decoded and
//! checked in full before any is summed, and a new attempt starts from nothing, so a bad or
//! late stream never reaches the result.

use std::sync::Arc;

use he_agg::ckks::{Ciphertext, CkksContext, PublicKey, wire};
use he_agg::infer::InferencePlan;
use he_agg::multiparty::{PublicKeySwitch, PublicKeySwitchShare, wire as mpw};
use protocol::serve::collective::{
    CollectiveRequest, MAX_COLLECTIVE_CIPHERTEXTS, MAX_COLLECTIVE_IMAGES,
};

use super::error::KeysError;

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

/// A request whose results wait for their switch: mode (a)'s, whose results each switching
/// keyholder computes and sends with its shares (they must agree: the first of an attempt is
/// the reference), or a trained head's, known here.
pub struct SwitchState {
    ctx: Arc<CkksContext>,
    pcks: PublicKeySwitch,
    /// what every asked keyholder is sent after the header: mode (a), the requester's public
    /// key and its images; a head, nothing
    pub items: Vec<Vec<u8>>,
    count: usize,
    /// the level results are at
    level: usize,
    /// the results of the current attempt (a head's are fixed), decoded and as encoded
    results: Option<(u32, Vec<Ciphertext>, Vec<Vec<u8>>)>,
    fixed: bool,
    sum: Option<(u32, Vec<PublicKeySwitchShare>)>,
    /// the slowest evaluation of the current attempt
    pub evaluate_us: u64,
}

impl SwitchState {
    /// Mode (a): `count` images whose results the keyholders compute (at `level`); `items` is
    /// what the requester sent (its public key, then the images).
    pub fn evaluated_by_keyholders(
        ctx: Arc<CkksContext>,
        pcks: PublicKeySwitch,
        items: Vec<Vec<u8>>,
        count: usize,
        level: usize,
    ) -> Self {
        Self {
            ctx,
            pcks,
            items,
            count,
            level,
            results: None,
            fixed: false,
            sum: None,
            evaluate_us: 0,
        }
    }

    /// Head training: the trained head `results`, as this coordinator replayed it; each
    /// keyholder switches its own to the key the contributor signed.
    pub fn new(ctx: Arc<CkksContext>, pcks: PublicKeySwitch, results: Vec<Ciphertext>) -> Self {
        let encoded: Vec<Vec<u8>> = results
            .iter()
            .map(|c| wire::encode_ciphertext(&ctx, c))
            .collect();
        // each keyholder switches the head it trained itself, to the key its contributor signed
        let items = Vec::new();
        Self {
            count: results.len(),
            level: results.first().map_or(0, Ciphertext::level),
            ctx,
            pcks,
            items,
            results: Some((0, results, encoded)),
            fixed: true,
            sum: None,
            evaluate_us: 0,
        }
    }

    /// Results (and switching shares) one keyholder sends.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Decodes one keyholder's shares (one per result, at the results' level); nothing summed.
    pub fn decode_shares(&self, items: &[Vec<u8>]) -> Result<Vec<PublicKeySwitchShare>, KeysError> {
        if items.len() != self.count {
            return Err(invalid(format!(
                "{} switching shares for {} results",
                items.len(),
                self.count
            )));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let s = mpw::decode_public_key_switch_share(&self.ctx, b).map_err(|e| {
                    KeysError::Item {
                        index: i as u64,
                        what: "switching share",
                        reason: e.to_string(),
                    }
                })?;
                if s.level() != self.level {
                    return Err(invalid(format!(
                        "switching share {i} at level {}, the results are at {}",
                        s.level(),
                        self.level
                    )));
                }
                Ok(s)
            })
            .collect()
    }

    /// Mode (a): a keyholder's answer to `attempt` — its results, then its shares of them. The
    /// results must be the attempt's (every honest keyholder computes the same words from the
    /// same signed request and keys); nothing is kept when they are not.
    pub fn fold_evaluated(
        &mut self,
        attempt: u32,
        items: &[Vec<u8>],
        evaluate_us: u64,
    ) -> Result<(), KeysError> {
        if self.fixed || items.len() != 2 * self.count {
            return Err(invalid(format!(
                "{} items where {} results and their switching shares were expected",
                items.len(),
                self.count
            )));
        }
        let (results, shares) = items.split_at(self.count);
        let current = self.results.as_ref().filter(|(a, _, _)| *a == attempt);
        let decoded = match current {
            Some((_, _, encoded)) => {
                if encoded.as_slice() != results {
                    return Err(invalid(
                        "results other than another keyholder's evaluation of the same request",
                    ));
                }
                None
            }
            None => Some(self.decode_results(results)?),
        };
        let shares = self.decode_shares(shares)?;
        if let Some(cts) = decoded {
            self.results = Some((attempt, cts, results.to_vec()));
            self.evaluate_us = 0;
        }
        self.fold(attempt, shares)?;
        self.evaluate_us = self.evaluate_us.max(evaluate_us);
        Ok(())
    }

    fn decode_results(&self, items: &[Vec<u8>]) -> Result<Vec<Ciphertext>, KeysError> {
        items
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let ct = wire::decode_ciphertext(&self.ctx, b).map_err(|e| KeysError::Item {
                    index: i as u64,
                    what: "result",
                    reason: e.to_string(),
                })?;
                if ct.level() != self.level || ct.degree() != 1 {
                    return Err(invalid(format!(
                        "result {i} at level {} degree {}; results are at level {} degree 1",
                        ct.level(),
                        ct.degree(),
                        self.level
                    )));
                }
                Ok(ct)
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
        let (a, sum) = self
            .sum
            .ok_or_else(|| invalid("no switching shares were folded"))?;
        let (r, results, _) = self
            .results
            .ok_or_else(|| invalid("no results were folded"))?;
        if !self.fixed && r != a {
            return Err(invalid("the results are another attempt's"));
        }
        results
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

/// A mode (a) request's header, checked against the plan before its items are read.
pub(super) fn check_header(
    h: &CollectiveRequest,
    plan: &[u8; 32],
    per_image: usize,
    max: u32,
) -> Result<(), String> {
    if &h.fingerprint != plan {
        return Err(
            "the request was encrypted for another plan: fetch the model information again".into(),
        );
    }
    if h.ciphertexts_per_image as usize != per_image {
        return Err(format!(
            "{} ciphertexts per image; the plan's image spans {per_image}",
            h.ciphertexts_per_image
        ));
    }
    // requests are held in memory until switched: bounded in images and in ciphertexts
    let max = max
        .min(MAX_COLLECTIVE_IMAGES)
        .min(MAX_COLLECTIVE_CIPHERTEXTS / per_image.max(1) as u32)
        .max(1);
    if h.images == 0 || h.images > max {
        return Err(format!(
            "{} images in one request; this server takes 1 to {max}",
            h.images
        ));
    }
    if h.signature.is_empty() || h.signature.len() > protocol::transcript::MAX_SIGNATURE {
        return Err(
            "the request is not signed: keyholders evaluate only what a hospital of the \
             consortium signed (update the client)"
                .into(),
        );
    }
    Ok(())
}
