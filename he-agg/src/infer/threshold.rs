//! Mode (a) with a consortium: the model is encrypted under a collective key that no party
//! holds, the coordinator evaluates it on images encrypted under the same key, and t hospitals
//! switch each result to the requester's public key (PCKS) with flooded shares.
//!
//! [`CollectiveKeys`] runs the key generation of a plan among the hospitals: in round 1 every
//! hospital sends its share of the public key, of the relinearization key's first round and of
//! exactly the plan's Galois keys; in round 2, on the sum of the relinearization shares, its
//! second relinearization share. The sums are the keys the evaluator needs.
//!
//! [`result_flooding`] sizes the switch. Every share carries Gaussian flooding 2^λ (λ ≥ 30)
//! times a bound on the noise the result itself carries — the evaluation's, measured by
//! [`super::calibrate`] — and never less than 2^λ times a fresh encryption's bound. Its error in
//! the result's slots is σ·√(N·t)/Δ, so the plan's scale must be large:
//! [`super::ParamPolicy::threshold_switched`] rescales by two primes at a time (a 66–70-bit
//! scale) and keeps base primes under the result that hold the logits and the flooding.
//! Refused when the output level cannot hold the flooding of `switchers` shares.

use std::sync::Arc;

use crate::ckks::{CkksContext, GaloisKeys, PublicKey};
use crate::multiparty::flooding::fresh_noise_bound;
use crate::multiparty::{
    Crs, Flooding, GaloisKeyGen, GaloisKeyShare, PublicKeyGen, PublicKeyShare, PublicKeySwitch,
    Refresh, RelinKeyEphemeral, RelinKeyGen, RelinKeyShare1, RelinKeyShare2,
};
use crate::ring::Prng;
use crate::rlwe::SecretKey;

use super::error::InferError;
use super::spec::{EvaluationKeys, InferenceSpec};

/// Statistical security of the flooding of a served result's switch (bits over the calibrated
/// bound of the result's own noise; as the training rounds' switch).
pub const RESULT_LAMBDA: u32 = 40;

/// Bits kept under a served result for the flooding of its switch (see
/// [`super::ParamPolicy::threshold_switched`]).
pub const SERVED_ROOM_BITS: u32 = 4;

/// Largest logit magnitude a served result's parameters must hold.
pub const SERVED_MAX_LOGIT: f64 = 1024.0;

/// The parameter policy every party of a served deployment compiles its plan with (the server,
/// the keyholders and the requesters must agree: their fingerprints are compared).
pub fn served_policy() -> super::ParamPolicy {
    super::ParamPolicy::threshold_switched(SERVED_ROOM_BITS)
}

/// The flooding keyholders of a served deployment add to their switching shares: 2^λ above
/// `noise_bound`, the calibrated bound of the results' noise
/// ([`super::calibrate::calibrate_result_noise`]).
pub fn served_flooding(
    ctx: &CkksContext,
    spec: &InferenceSpec,
    noise_bound: f64,
    hospitals: usize,
    switchers: usize,
) -> Result<(Flooding, f64), InferError> {
    result_flooding(
        ctx,
        spec,
        noise_bound,
        hospitals,
        switchers,
        RESULT_LAMBDA,
        SERVED_MAX_LOGIT,
    )
}

/// The keyholders' collective refresh between the segments of a served plan that is cut
/// ([`InferenceSpec::refreshes`]): `switchers` shares, each flooded 2^λ above `noise_bound` (the
/// calibrated bound of a segment's output noise, which [`super::calibrate`] measures at every
/// refresh point as well as at the result), masks [`crate::multiparty::refresh::MASK_SECURITY`]
/// bits above values up to [`SERVED_MAX_LOGIT`]; `crs` the served keys' (every keyholder derives
/// the same common polynomial from it and the ciphertext). Refused when a refresh point's level
/// cannot hold the masks.
pub fn served_refresh(
    ctx: &Arc<CkksContext>,
    spec: &InferenceSpec,
    crs: &Crs,
    noise_bound: f64,
    hospitals: usize,
    switchers: usize,
) -> Result<Refresh, InferError> {
    let flooding = flooding_above(ctx, spec, noise_bound, hospitals, RESULT_LAMBDA)?;
    let refresh = Refresh::new(ctx, crs, flooding, switchers, SERVED_MAX_LOGIT)?;
    for p in spec.refreshes() {
        refresh.room(p.level, p.scale)?;
    }
    Ok(refresh)
}

/// What the server sums the keyholders' switching shares with: it adds no share of its own, so
/// the flooding it carries (a fresh encryption's bound) is never drawn.
pub fn served_combiner(
    ctx: &Arc<CkksContext>,
    hospitals: usize,
    switchers: usize,
) -> Result<PublicKeySwitch, InferError> {
    let flooding = Flooding::new(RESULT_LAMBDA, fresh_noise_bound(ctx, hospitals))?;
    Ok(PublicKeySwitch::new(ctx, flooding, switchers))
}

/// The common reference string of a federation's inference keys (apart from its training keys').
pub fn served_crs(federation: &[u8]) -> Crs {
    let mut label = b"HEAL served inference keys v1 ".to_vec();
    label.extend_from_slice(federation);
    Crs::from_federation(&label)
}

/// One hospital's round-1 shares of a plan's collective keys (or, summed, the round-1 aggregate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyShares {
    pub public_key: PublicKeyShare,
    pub relinearization: RelinKeyShare1,
    /// One per element of [`CollectiveKeys::galois_elements`], in that order.
    pub galois: Vec<GaloisKeyShare>,
}

/// The collective key generation of a plan's evaluation keys.
#[derive(Debug, Clone)]
pub struct CollectiveKeys {
    ctx: Arc<CkksContext>,
    pk: PublicKeyGen,
    rlk: RelinKeyGen,
    gk: GaloisKeyGen,
    elements: Vec<u64>,
}

impl CollectiveKeys {
    /// For `spec` (whose parameters `ctx` must have), with the common reference string `crs`.
    pub fn new(
        spec: &InferenceSpec,
        ctx: &Arc<CkksContext>,
        crs: &Crs,
    ) -> Result<Self, InferError> {
        if ctx.params() != spec.parameters() {
            return Err(InferError::ContextMismatch);
        }
        Self::for_rotations(ctx, spec.galois_steps(), crs)
    }

    /// For any computation under `ctx` that rotates by `steps` (encrypted head training's, say).
    pub fn for_rotations(
        ctx: &Arc<CkksContext>,
        steps: &[i64],
        crs: &Crs,
    ) -> Result<Self, InferError> {
        let rl = ctx.rlwe();
        let mut elements: Vec<u64> = steps
            .iter()
            .map(|&s| rl.galois_element_for_rotation(s))
            .filter(|&g| g != 1)
            .collect();
        elements.sort_unstable();
        elements.dedup();
        Ok(Self {
            ctx: ctx.clone(),
            pk: PublicKeyGen::new(ctx, crs),
            rlk: RelinKeyGen::new(ctx, crs)?,
            gk: GaloisKeyGen::new(ctx, crs)?,
            elements,
        })
    }

    /// The Galois elements keys are made for (the plan's rotations), ascending.
    pub fn galois_elements(&self) -> &[u64] {
        &self.elements
    }

    pub fn context(&self) -> &Arc<CkksContext> {
        &self.ctx
    }

    /// Round 1 of a hospital with secret share `sk`: its shares, and the ephemeral secret it
    /// keeps (wiped on drop) for round 2.
    pub fn round1(
        &self,
        sk: &SecretKey,
        prng: &mut Prng,
    ) -> Result<(RelinKeyEphemeral, KeyShares), InferError> {
        let public_key = self.pk.share(sk, prng)?;
        let (eph, relinearization) = self.rlk.round1(sk, prng)?;
        let galois = self
            .elements
            .iter()
            .map(|&g| self.gk.share(sk, g, prng))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((
            eph,
            KeyShares {
                public_key,
                relinearization,
                galois,
            },
        ))
    }

    /// acc += shares (round 1), refusing shares for other Galois elements.
    pub fn aggregate1(&self, acc: &mut KeyShares, shares: &KeyShares) -> Result<(), InferError> {
        self.check_galois(shares)?;
        self.pk.aggregate(&mut acc.public_key, &shares.public_key)?;
        self.rlk
            .aggregate1(&mut acc.relinearization, &shares.relinearization)?;
        for (a, s) in acc.galois.iter_mut().zip(&shares.galois) {
            self.gk.aggregate(a, s)?;
        }
        Ok(())
    }

    /// acc += share, the public-key shares alone (a keyholder makes the collective key itself).
    pub fn aggregate_public_key(
        &self,
        acc: &mut PublicKeyShare,
        share: &PublicKeyShare,
    ) -> Result<(), InferError> {
        Ok(self.pk.aggregate(acc, share)?)
    }

    /// The collective public key from the sum of every party's public-key share.
    pub fn public_key_of(&self, sum: PublicKeyShare) -> PublicKey {
        self.pk.finalize(sum)
    }

    /// acc += share, the relinearization round-1 shares alone (a keyholder makes the sum its
    /// round-2 share is made on itself: a sum of someone else's making could reveal its secret).
    pub fn aggregate_relinearization(
        &self,
        acc: &mut RelinKeyShare1,
        share: &RelinKeyShare1,
    ) -> Result<(), InferError> {
        Ok(self.rlk.aggregate1(acc, share)?)
    }

    /// Checks that `shares` hold exactly the plan's Galois elements, in order.
    pub fn check_galois(&self, shares: &KeyShares) -> Result<(), InferError> {
        self.check_elements(&shares.galois)
    }

    /// Checks that `galois` are exactly the plan's Galois elements, in order.
    pub fn check_elements(&self, galois: &[GaloisKeyShare]) -> Result<(), InferError> {
        if galois.len() != self.elements.len()
            || galois
                .iter()
                .zip(&self.elements)
                .any(|(s, &g)| s.galois_element() != g)
        {
            return Err(InferError::ModelMismatch(
                "Galois key shares are not the plan's rotations",
            ));
        }
        Ok(())
    }

    /// Round 2 of a hospital, on the round-1 aggregate's relinearization part.
    pub fn round2(
        &self,
        eph: &RelinKeyEphemeral,
        sk: &SecretKey,
        round1: &RelinKeyShare1,
        prng: &mut Prng,
    ) -> Result<RelinKeyShare2, InferError> {
        Ok(self.rlk.round2(eph, sk, round1, prng)?)
    }

    /// acc += share (round 2).
    pub fn aggregate2(
        &self,
        acc: &mut RelinKeyShare2,
        share: &RelinKeyShare2,
    ) -> Result<(), InferError> {
        Ok(self.rlk.aggregate2(acc, share)?)
    }

    /// The collective public key (round 1 alone gives it: the model and the images are
    /// encrypted under it).
    pub fn public_key(&self, round1: &KeyShares) -> PublicKey {
        self.pk.finalize(round1.public_key.clone())
    }

    /// The evaluation keys from both rounds' aggregates.
    pub fn finalize(
        &self,
        round1: KeyShares,
        round2: RelinKeyShare2,
    ) -> Result<EvaluationKeys, InferError> {
        self.evaluation_keys(&round1.relinearization, round2, round1.galois)
    }

    /// The evaluation keys from the aggregates they are made of: the relinearization rounds'
    /// and the Galois shares' (one per element of [`Self::galois_elements`], in that order).
    pub fn evaluation_keys(
        &self,
        relinearization: &RelinKeyShare1,
        round2: RelinKeyShare2,
        galois_shares: Vec<GaloisKeyShare>,
    ) -> Result<EvaluationKeys, InferError> {
        self.check_elements(&galois_shares)?;
        let relinearization = self.rlk.finalize(relinearization, round2)?;
        let mut galois = GaloisKeys::new();
        for share in galois_shares {
            galois.insert(self.gk.finalize(share)?);
        }
        Ok(EvaluationKeys {
            relinearization: Some(relinearization),
            galois,
        })
    }
}

/// The flooding of the switch of a served result to a requester's key: 2^λ times the larger of
/// `noise_bound` (the results' own noise) and the noise bound of a fresh encryption under the
/// key of `hospitals` parties, checked to fit under the result (logits up to `max_logit` in
/// magnitude, `switchers` shares) at the plan's output level. Also returns the expected
/// switching error per logit.
pub fn result_flooding(
    ctx: &CkksContext,
    spec: &InferenceSpec,
    noise_bound: f64,
    hospitals: usize,
    switchers: usize,
    lambda: u32,
    max_logit: f64,
) -> Result<(Flooding, f64), InferError> {
    let flooding = flooding_above(ctx, spec, noise_bound, hospitals, lambda)?;
    let room = flooding.check_headroom(
        ctx,
        spec.output_level(),
        spec.input_scale(),
        max_logit,
        switchers,
    )?;
    Ok((flooding, room.slot_error))
}

/// Flooding 2^λ above the larger of `noise_bound` and a fresh encryption's bound under the key
/// of `hospitals` parties, for `spec` under `ctx`.
fn flooding_above(
    ctx: &CkksContext,
    spec: &InferenceSpec,
    noise_bound: f64,
    hospitals: usize,
    lambda: u32,
) -> Result<Flooding, InferError> {
    if ctx.params() != spec.parameters() {
        return Err(InferError::ContextMismatch);
    }
    if !(noise_bound.is_finite() && noise_bound >= 0.0) {
        return Err(InferError::Policy(
            "a result noise bound must be finite and ≥ 0",
        ));
    }
    let bound = noise_bound.max(fresh_noise_bound(ctx, hospitals));
    Ok(Flooding::new(lambda, bound)?)
}
