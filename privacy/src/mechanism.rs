//! The distributed discrete Gaussian mechanism (Kairouz, Liu, Steinke 2021), as each hospital
//! runs it before encrypting: clip the update to L2 norm C − γ·√d/2 and round it to the grid
//! γ = C·2^-bits (so the rounded update is within C: the sensitivity is 2^bits grid steps in any
//! dimension d),
//! add discrete Gaussian noise of variance σ²/quorum (grid units) to every value, and send the
//! result as multiples of γ. The encrypted sum of the contributions then carries noise of
//! variance at least σ², exactly discrete: the hospitals round the decrypted sum back to the
//! grid ([`HospitalMechanism::snap`]), which removes CKKS's own approximation error whenever it
//! is below γ/2 — so what is released is the mechanism's output and nothing else.
//!
//! Why discrete and not a Gaussian in floating point: CKKS encodes fixed-point values, the sum
//! of the hospitals' noises must be analysed as a sum, and a floating-point Gaussian leaks
//! through its rounding (Mironov 2012). Integers on a grid are encoded exactly (|value| < 2^53
//! grid steps), summed exactly, and sampled exactly ([`crate::sampler`]).

use rayon::prelude::*;

use crate::config::Plan;
use crate::sampler::{Csprng, RngError};

/// Hospital-level DP of one hospital's updates.
#[derive(Clone, Debug)]
pub struct HospitalMechanism {
    clip: f64,
    grid: f64,
    var_each: u64,
}

/// One update after the mechanism.
#[derive(Clone, Debug)]
pub struct Privatized {
    /// The values to encrypt: multiples of the grid.
    pub values: Vec<f64>,
    /// The update's L2 norm before clipping, and whether it was clipped.
    pub norm: f64,
    pub clipped: bool,
}

/// One hospital's share of the noise for one update, in grid steps.
#[derive(Debug)]
pub struct Noise(Vec<i64>);

/// Coefficients per noise block: each block draws from its own OS-seeded generator, so blocks
/// run on every thread.
const BLOCK: usize = 8192;

impl HospitalMechanism {
    pub fn new(plan: &Plan) -> Self {
        Self {
            clip: plan.clip,
            grid: plan.grid,
            var_each: plan.var_each,
        }
    }

    /// This hospital's share of the noise for an update of `len` values, in grid steps, from
    /// the OS's randomness (never a seed). It does not depend on the update, so a hospital
    /// draws it while it trains.
    pub fn noise(&self, len: usize) -> Result<Noise, RngError> {
        self.noise_with(len, |_| Csprng::from_os())
    }

    fn noise_with(
        &self,
        len: usize,
        rng: impl Fn(usize) -> Result<Csprng, RngError> + Sync,
    ) -> Result<Noise, RngError> {
        let mut steps = vec![0i64; len];
        steps.par_chunks_mut(BLOCK).enumerate().try_for_each(
            |(b, out)| -> Result<(), RngError> {
                // (a variance of 0 only in tests: the rounding alone)
                if self.var_each == 0 {
                    return Ok(());
                }
                let mut g = rng(b)?;
                for o in out.iter_mut() {
                    // |z| < 2^40 whenever it is accepted at a variance ≤ 2^48
                    *o = g.discrete_gaussian(self.var_each) as i64;
                }
                Ok(())
            },
        )?;
        Ok(Noise(steps))
    }

    /// Clips `update`, rounds it to the grid and adds `noise` (drawn for its length).
    pub fn privatize(&self, update: &[f32], noise: Noise) -> Result<Privatized, RngError> {
        if noise.0.len() != update.len() {
            return Err(RngError::length(noise.0.len(), update.len()));
        }
        let norm = update
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt();
        // rounding moves each value by at most γ/2: ‖round(x)‖ ≤ ‖x‖ + γ·√d/2
        let bound = self.clip - self.grid * (update.len() as f64).sqrt() / 2.0;
        if bound <= 0.0 {
            return Err(RngError::dimension(update.len()));
        }
        let scale = if norm > bound { bound / norm } else { 1.0 };
        let values = update
            .par_iter()
            .zip(noise.0.par_iter())
            .map(|(&x, &z)| {
                let q = (f64::from(x) * scale / self.grid).round() as i64;
                // |q + z| < 2^53 grid steps: an exact double
                (q + z) as f64 * self.grid
            })
            .collect();
        Ok(Privatized {
            values,
            norm,
            clipped: norm > bound,
        })
    }

    /// Rounds a decrypted average of `contributors` contributions back to the grid (the sum is
    /// a whole number of grid steps; CKKS adds an error far below one). Returns the largest
    /// distance to the grid seen, in steps of the sum: above 0.25 the rounding may not have
    /// removed CKKS's error.
    pub fn snap(&self, average: &mut [f64], contributors: u64) -> f64 {
        let n = contributors.max(1) as f64;
        let mut worst = 0f64;
        for v in average.iter_mut() {
            let steps = *v * n / self.grid;
            let r = steps.round();
            worst = worst.max((steps - r).abs());
            *v = r * self.grid / n;
        }
        worst
    }

    /// Each hospital's noise standard deviation, in the update's units.
    pub fn sigma_each(&self) -> f64 {
        (self.var_each as f64).sqrt() * self.grid
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Mode, PrivacyConfig, RunShape};

    fn plan(quorum: u32, z: f64) -> Plan {
        PrivacyConfig {
            mode: Mode::Hospital,
            noise_multiplier: Some(z),
            clip: 0.5,
            ..Default::default()
        }
        .plan(RunShape {
            rounds: 10,
            quorum,
            examples: 0,
            batch_size: 0,
            epochs: 1,
        })
        .unwrap()
    }

    #[test]
    fn updates_are_clipped_and_on_the_grid() {
        let m = HospitalMechanism::new(&plan(3, 1.0));
        let update: Vec<f32> = (0..20_000).map(|i| ((i % 7) as f32 - 3.0) * 0.01).collect();
        let noise = m
            .noise_with(update.len(), |b| Ok(Csprng::from_seed_for_tests(b as u8)))
            .unwrap();
        let p = m.privatize(&update, noise).unwrap();
        assert!(p.clipped && p.norm > 0.5);
        for v in &p.values {
            let steps = v / m.grid;
            assert_eq!(steps, steps.round(), "{v} is not on the grid");
        }
        // without noise the rounded update is within the clip: the sensitivity holds in any
        // dimension
        let quiet = HospitalMechanism {
            var_each: 0,
            ..m.clone()
        };
        let big: Vec<f32> = (0..20_000)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let p = quiet
            .privatize(&big, quiet.noise(big.len()).unwrap())
            .unwrap();
        let norm = p.values.iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!(norm <= 0.5 * (1.0 + 1e-12), "{norm}");
        // noise drawn for another length is refused
        let e = m.privatize(&big, m.noise(10).unwrap()).unwrap_err();
        assert!(e.to_string().contains("10 values"), "{e}");
    }

    #[test]
    fn the_sum_of_the_shares_has_the_planned_variance_and_snaps_back() {
        // zero updates: what the sum holds is the noise alone
        let quorum = 4;
        let plan = plan(quorum, 1.5);
        let m = HospitalMechanism::new(&plan);
        let dim = 20_000;
        let zero = vec![0f32; dim];
        let mut sum = vec![0f64; dim];
        for h in 0..quorum {
            let noise = m
                .noise_with(dim, |b| {
                    Ok(Csprng::from_seed_for_tests((h * 50 + b as u32) as u8))
                })
                .unwrap();
            let p = m.privatize(&zero, noise).unwrap();
            for (s, v) in sum.iter_mut().zip(&p.values) {
                *s += v;
            }
        }
        let var = sum.iter().map(|s| s * s).sum::<f64>() / dim as f64;
        // σ_total = z·C (+ the rounding term of the sensitivity)
        let want = (quorum as f64) * (plan.var_each as f64) * plan.grid * plan.grid;
        let se = want * (2.0 / dim as f64).sqrt();
        assert!((var - want).abs() < 5.0 * se, "variance {var}, want {want}");
        assert!((want.sqrt() / (1.5 * 0.5) - 1.0).abs() < 0.01);
        // an average with CKKS-sized errors snaps back to the exact sum
        let n = quorum as u64;
        let mut avg: Vec<f64> = sum.iter().map(|s| s / n as f64 + 1e-9).collect();
        let worst = m.snap(&mut avg, n);
        assert!(worst < 0.01, "{worst}");
        for (a, s) in avg.iter().zip(&sum) {
            assert!((a * n as f64 - s).abs() < 1e-12 * s.abs().max(1.0));
        }
    }
}
