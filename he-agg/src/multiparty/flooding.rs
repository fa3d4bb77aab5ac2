//! Flooding noise (noise smudging) for every decryption or key-switching share that leaves a
//! party: Gaussian noise 2^λ times larger than the noise it must hide, so the result is
//! statistically independent of the secrets behind that noise (Li–Micciancio 2021; Lattigo's
//! smudging, OpenFHE's NOISE_FLOODING_DECRYPT). λ is the statistical security parameter.

use crate::ckks::CkksContext;
use crate::ring::expand::MAX_FLOODING_SIGMA;
use crate::ring::{GAUSSIAN_SIGMA, Prng};

use super::error::MultipartyError;

/// Default statistical security of flooding, in bits.
pub const DEFAULT_STATISTICAL_SECURITY: u32 = 40;
/// The least statistical security HEAL accepts.
pub const MIN_STATISTICAL_SECURITY: u32 = 30;
/// A bound on flooding samples in standard deviations, for the headroom check (the sampler's
/// never exceed 8.6σ, see [`crate::ring::expand::flooding`]).
pub const FLOOD_TAIL: f64 = 12.0;

/// Flooding noise of standard deviation 2^λ · B, B bounding the noise being flooded.
#[derive(Clone, Debug, PartialEq)]
pub struct Flooding {
    lambda: u32,
    noise_bound: f64,
    sigma: f64,
}

/// What a flooded key switch leaves of the parameter set's room.
#[derive(Clone, Debug, PartialEq)]
pub struct Headroom {
    /// log2 of the largest coefficient the result can hold (message plus all flooding).
    pub used_bits: f64,
    /// log2 of Q/2 at the level.
    pub room_bits: f64,
    /// Expected standard deviation of the flooding noise in each slot, in slot units.
    pub slot_error: f64,
}

impl Flooding {
    /// `noise_bound`: a bound on the coefficients of the noise the shares must hide (see
    /// [`fresh_noise_bound`] for fresh encryptions under a collective key).
    pub fn new(lambda: u32, noise_bound: f64) -> Result<Self, MultipartyError> {
        if lambda < MIN_STATISTICAL_SECURITY {
            return Err(MultipartyError::WeakFlooding(lambda));
        }
        if !(noise_bound.is_finite() && noise_bound >= 1.0) {
            return Err(MultipartyError::NoiseBound(noise_bound));
        }
        let sigma = 2f64.powi(lambda as i32) * noise_bound;
        if sigma > MAX_FLOODING_SIGMA {
            return Err(MultipartyError::FloodingTooWide(sigma.log2()));
        }
        Ok(Self {
            lambda,
            noise_bound,
            sigma,
        })
    }

    pub fn lambda(&self) -> u32 {
        self.lambda
    }
    pub fn noise_bound(&self) -> f64 {
        self.noise_bound
    }
    pub fn sigma(&self) -> f64 {
        self.sigma
    }

    /// N coefficients of flooding noise.
    pub fn sample(&self, prng: &mut Prng, n: usize) -> Vec<i128> {
        prng.gaussian_flooding(n, self.sigma)
    }

    /// Checks that `parties` flooded shares on a message of slot magnitude ≤ `max_abs_value` at
    /// `scale` fit below Q/2 at `level`, and reports the flooding error per slot.
    pub fn check_headroom(
        &self,
        ctx: &CkksContext,
        level: usize,
        scale: f64,
        max_abs_value: f64,
        parties: usize,
    ) -> Result<Headroom, MultipartyError> {
        let parties = parties.max(1) as f64;
        // coefficients of an encoding are bounded by the largest slot value times the scale
        let message = max_abs_value.max(0.0) * scale;
        let flood = FLOOD_TAIL * self.sigma * parties.sqrt();
        let used_bits = (message + flood).log2();
        let room_bits = ctx.log_q(level) - 1.0;
        if used_bits >= room_bits {
            return Err(MultipartyError::Headroom {
                level,
                flood_bits: flood.log2(),
                message_bits: message.max(1.0).log2(),
                room_bits,
            });
        }
        // a slot sums N coefficients times unit roots: variance N·σ²·parties
        let slot_error = self.sigma * (parties * ctx.n() as f64).sqrt() / scale;
        Ok(Headroom {
            used_bits,
            room_bits,
            slot_error,
        })
    }
}

/// A bound (six standard deviations) on the coefficients of the noise of a fresh public-key
/// encryption under the collective key of `parties` parties: u·e_pk + e_0 + e_1·s with
/// e_pk = Σ e_i and s = Σ s_i, i.e. variance ≈ σ²·(4/3·N·parties + 1).
pub fn fresh_noise_bound(ctx: &CkksContext, parties: usize) -> f64 {
    let n = ctx.n() as f64;
    6.0 * GAUSSIAN_SIGMA * (4.0 / 3.0 * n * parties.max(1) as f64 + 1.0).sqrt()
}
