//! Choosing a round's encoding scale and flooding noise so the weighted average of the updates
//! survives aggregation and public-key switching with the asked precision, checked against the
//! parameter set's room before any client encrypts.
//!
//! With weights w (sample counts) the sum's noise is at most B_f·‖w‖₂ (B_f bounds a fresh
//! encryption's noise); PCKS floods it with σ = 2^λ·B_f·‖w‖₂ per party. Dividing by Σw ≥ ‖w‖₂,
//! the error of the average per slot has standard deviation at most 2^λ·B_f·√(T·N)/Δ whatever the
//! weights, so Δ follows from the precision alone; the room needed is Δ·Σw·max|x| plus the
//! flooding tail, which must stay below Q/2.

use crate::ckks::CkksContext;
use crate::multiparty::MultipartyError;
use crate::multiparty::flooding::{FLOOD_TAIL, Flooding, fresh_noise_bound};

/// Standard deviations between the expected error and the precision promised (the maximum over
/// a million slots stays below it).
const MARGIN_SIGMAS: f64 = 6.0;

/// The scale and flooding of an aggregation round.
#[derive(Clone, Debug, PartialEq)]
pub struct AggregationPlan {
    /// Encoding scale Δ (a power of two) every client uses.
    pub scale: f64,
    /// Ciphertext level the updates are encrypted at.
    pub level: usize,
    /// Statistical security of the flooding, in bits.
    pub lambda: u32,
    /// Parties holding the collective key (the noise of fresh encryptions grows with them).
    pub key_parties: usize,
    /// Parties contributing switching shares (each floods).
    pub switch_parties: usize,
    /// Bound on the noise of one fresh update.
    pub fresh_noise: f64,
    /// Expected standard deviation of the error of the weighted average, per value.
    pub expected_error: f64,
}

impl AggregationPlan {
    /// A plan for averages of values in [−max_abs_value, max_abs_value] with total weight up
    /// to `max_total_weight`, accurate to `precision` (absolute, on the average).
    pub fn new(
        ctx: &CkksContext,
        key_parties: usize,
        switch_parties: usize,
        max_total_weight: f64,
        max_abs_value: f64,
        lambda: u32,
        precision: f64,
    ) -> Result<Self, MultipartyError> {
        if !(precision.is_finite() && precision > 0.0) {
            return Err(MultipartyError::NoiseBound(precision));
        }
        let level = ctx.max_level();
        let fresh = fresh_noise_bound(ctx, key_parties);
        // validates λ and the bound
        Flooding::new(lambda, fresh)?;
        let t = switch_parties.max(1) as f64;
        let spread = 2f64.powi(lambda as i32) * fresh * (t * ctx.n() as f64).sqrt();
        let log_scale = (spread * MARGIN_SIGMAS / precision).log2().ceil().max(1.0);
        let scale = 2f64.powf(log_scale);
        let plan = Self {
            scale,
            level,
            lambda,
            key_parties,
            switch_parties,
            fresh_noise: fresh,
            expected_error: spread / scale,
        };
        // the worst round: all the weight on values of the largest magnitude, flooding of a
        // noise bound B_f·Σw (‖w‖₂ ≤ Σw)
        let worst = plan.flooding(&[max_total_weight])?;
        worst.check_headroom(
            ctx,
            level,
            scale,
            max_abs_value * max_total_weight,
            switch_parties,
        )?;
        Ok(plan)
    }

    /// The flooding for a round with these weights: σ = 2^λ·B_f·‖w‖₂.
    pub fn flooding(&self, weights: &[f64]) -> Result<Flooding, MultipartyError> {
        let norm = weights.iter().map(|w| w * w).sum::<f64>().sqrt().max(1.0);
        Flooding::new(self.lambda, self.fresh_noise * norm)
    }

    /// The level a round's switched result travels at: one below the updates' when dividing
    /// by the last modulus fits within the error this plan promises, else the updates' own.
    ///
    /// The promise (see the module) is a coefficient error of variance at most
    /// 2^2λ·B_f²·T·(Σw)², of which the round's flooding takes `switchers`·2^2λ·B_f²·‖w‖₂²;
    /// since Σw > ‖w‖₂ as soon as two hospitals contribute, the rest is free. Rescaling the
    /// switchers' shares and c₀ (each rounded by at most 1/2 at the new scale, h₁'s times the
    /// receiving secret, ternary with variance 2/3 per coefficient) adds
    /// q²·((switchers + 1)/12 + switchers·N·(2/3)/12); when that fits in the rest, shares and
    /// result are sent a level lower — half the bytes at the main job's two limbs. Every party
    /// computes this from the signed weights, so they agree.
    pub fn result_level(&self, ctx: &CkksContext, weights: &[f64], switchers: usize) -> usize {
        if self.level < 2 {
            return self.level;
        }
        let t = switchers.max(1) as f64;
        let fresh = 2f64.powi(self.lambda as i32) * self.fresh_noise;
        let total: f64 = weights.iter().sum();
        let norm2: f64 = weights.iter().map(|w| w * w).sum::<f64>().max(1.0);
        let promise = fresh * fresh * self.switch_parties.max(1) as f64 * total * total;
        let flooding = t * fresh * fresh * norm2;
        let q = ctx.rlwe().q_modulus(self.level - 1).value() as f64;
        let rounding = q * q * ((t + 1.0) / 12.0 + t * ctx.n() as f64 * (2.0 / 3.0) / 12.0);
        if flooding + rounding <= promise {
            self.level - 1
        } else {
            self.level
        }
    }

    /// The scale of a result at `level` ([`Self::result_level`]): Δ, divided by each modulus
    /// dropped (as [`crate::ckks::Evaluator::rescale`] divides it).
    pub fn result_scale(&self, ctx: &CkksContext, level: usize) -> f64 {
        (level..self.level).fold(self.scale, |s, l| {
            s / ctx.rlwe().q_modulus(l).value() as f64
        })
    }

    /// log2 of the largest coefficient of the round's sum (message and flooding), for reports.
    pub fn used_bits(&self, max_total_weight: f64, max_abs_value: f64) -> f64 {
        let flood = FLOOD_TAIL
            * 2f64.powi(self.lambda as i32)
            * self.fresh_noise
            * max_total_weight
            * (self.switch_parties.max(1) as f64).sqrt();
        (self.scale * max_abs_value * max_total_weight + flood).log2()
    }
}
