//! Exact samplers over the integers from a CSPRNG: Bernoulli(exp(−γ)) for rational γ, the
//! discrete Laplace and the discrete Gaussian of Canonne, Kamath and Steinke ("The Discrete
//! Gaussian for Differential Privacy", NeurIPS 2020, Algorithms 1–3). Every decision is a
//! comparison of integers, so no floating-point rounding can leak through the noise (the attack
//! of Mironov 2012 on textbook Laplace samplers), and the distribution is exactly the one the
//! accountant analyses.

use chacha20::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

/// Why noise could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RngError(String);

impl RngError {
    pub(crate) fn length(noise: usize, update: usize) -> Self {
        RngError(format!(
            "noise drawn for {noise} values cannot protect an update of {update}"
        ))
    }

    pub(crate) fn dimension(d: usize) -> Self {
        RngError(format!(
            "an update of {d} values cannot be rounded to the grid within the clip bound: raise \
             [privacy] granularity_bits"
        ))
    }
}

/// ChaCha20 seeded from the operating system: the only randomness DP noise is drawn from.
pub struct Csprng(ChaCha20Rng);

impl Csprng {
    pub fn from_os() -> Result<Self, RngError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| {
            RngError(format!(
                "the operating system's random number generator failed: {e}"
            ))
        })?;
        let rng = ChaCha20Rng::from_seed(seed);
        seed.fill(0);
        Ok(Self(rng))
    }

    /// A generator from a fixed seed: for tests of the samplers' distributions only.
    #[cfg(test)]
    pub(crate) fn from_seed_for_tests(seed: u8) -> Self {
        Self(ChaCha20Rng::from_seed([seed; 32]))
    }

    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [0, n) for n ≥ 1, by rejection (no modulo bias).
    pub fn below(&mut self, n: u128) -> u128 {
        debug_assert!(n >= 1);
        if n <= 1 << 64 {
            let n = n as u64;
            if n == 0 {
                return 0;
            }
            // the largest multiple of n that fits, as in rand's unbiased range sampling
            let zone = u64::MAX - (u64::MAX - n + 1) % n;
            loop {
                let x = self.next_u64();
                if x <= zone {
                    return u128::from(x % n);
                }
            }
        }
        let bits = 128 - (n - 1).leading_zeros();
        loop {
            let x = (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64());
            let x = x >> (128 - bits);
            if x < n {
                return x;
            }
        }
    }

    /// Bernoulli(num/den), 0 ≤ num ≤ den.
    pub fn bernoulli(&mut self, num: u128, den: u128) -> bool {
        self.below(den) < num
    }

    /// Bernoulli(exp(−num/den)) (CKS Algorithm 1): for γ ≤ 1 the parity of the first failure
    /// of Bernoulli(γ/k), k = 1, 2, …; above 1, ⌊γ⌋ trials of exp(−1) and one of the rest.
    pub fn bernoulli_exp_minus(&mut self, num: u128, den: u128) -> bool {
        debug_assert!(den > 0);
        if num <= den {
            let mut k: u128 = 1;
            while self.bernoulli(num, den * k) {
                k += 1;
            }
            return k % 2 == 1;
        }
        let whole = num / den;
        for _ in 0..whole {
            if !self.bernoulli_exp_minus(1, 1) {
                return false;
            }
        }
        self.bernoulli_exp_minus(num - whole * den, den)
    }

    /// The discrete Laplace with scale t: P(y) ∝ exp(−|y|/t) (CKS Algorithm 2 with s = 1).
    pub fn discrete_laplace(&mut self, t: u128) -> i128 {
        loop {
            let u = self.below(t);
            if !self.bernoulli_exp_minus(u, t) {
                continue;
            }
            let mut v: u128 = 0;
            while self.bernoulli_exp_minus(1, 1) {
                v += 1;
            }
            let y = u + t * v;
            let negative = self.bernoulli(1, 2);
            if negative && y == 0 {
                continue;
            }
            return if negative { -(y as i128) } else { y as i128 };
        }
    }

    /// The discrete Gaussian N_Z(0, σ²) for an integer variance σ² ≥ 1: P(y) ∝ exp(−y²/(2σ²))
    /// (CKS Algorithm 3: discrete Laplace proposals with t = ⌊σ⌋ + 1, accepted with probability
    /// exp(−(|y| − σ²/t)²/(2σ²)), all in integers). σ² is at most [`MAX_VARIANCE`], which keeps
    /// every product in u128 for any proposal below 2^40; a larger one (acceptance probability
    /// below exp(−2^20)) is rejected outright.
    pub fn discrete_gaussian(&mut self, var: u64) -> i128 {
        assert!(var <= MAX_VARIANCE, "variance {var} above 2^48");
        let var = u128::from(var.max(1));
        let t = isqrt(var) + 1;
        loop {
            let y = self.discrete_laplace(t);
            // γ = (|y|·t − σ²)² / (2σ²t²)
            let a = y.unsigned_abs() * t;
            let diff = a.abs_diff(var);
            let Some(num) = diff.checked_mul(diff) else {
                continue;
            };
            if self.bernoulli_exp_minus(num, 2 * var * t * t) {
                return y;
            }
        }
    }
}

/// The largest variance (in grid units squared) [`Csprng::discrete_gaussian`] takes.
pub const MAX_VARIANCE: u64 = 1 << 48;

/// ⌊√v⌋ exactly.
fn isqrt(v: u128) -> u128 {
    let mut r = (v as f64).sqrt() as u128;
    while r * r > v {
        r -= 1;
    }
    while (r + 1) * (r + 1) <= v {
        r += 1;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_is_uniform_and_in_range() {
        let mut g = Csprng::from_seed_for_tests(1);
        let mut counts = [0u32; 7];
        for _ in 0..70_000 {
            counts[g.below(7) as usize] += 1;
        }
        for c in counts {
            assert!((c as i64 - 10_000).abs() < 400, "{counts:?}");
        }
        let big = (1u128 << 100) + 12_345;
        assert!((0..1000).all(|_| g.below(big) < big));
        assert_eq!(g.below(1), 0);
    }

    #[test]
    fn bernoulli_exp_minus_has_the_right_rate() {
        let mut g = Csprng::from_seed_for_tests(2);
        for (num, den) in [(1u128, 2u128), (1, 1), (7, 3), (5, 1)] {
            let n = 200_000;
            let hits = (0..n).filter(|_| g.bernoulli_exp_minus(num, den)).count();
            let want = (-(num as f64) / den as f64).exp();
            let got = hits as f64 / n as f64;
            let se = (want * (1.0 - want) / n as f64).sqrt();
            assert!(
                (got - want).abs() < 5.0 * se,
                "exp(−{num}/{den}): {got} vs {want}"
            );
        }
    }

    #[test]
    fn discrete_gaussian_moments_small_and_large() {
        let mut g = Csprng::from_seed_for_tests(3);
        for var in [1u64, 10, 1 << 20, 1 << 40, MAX_VARIANCE] {
            let n = 40_000;
            let xs: Vec<f64> = (0..n).map(|_| g.discrete_gaussian(var) as f64).collect();
            let mean = xs.iter().sum::<f64>() / n as f64;
            let v = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
            let sd = (var as f64).sqrt();
            assert!(
                mean.abs() < 5.0 * sd / (n as f64).sqrt(),
                "var {var}: mean {mean}"
            );
            // the discrete Gaussian's variance is below σ² and within 1e-... of it for σ ≥ 1;
            // the estimate's standard error is σ²·√(2/n)
            assert!(
                (v / var as f64 - 1.0).abs() < 5.0 * (2.0 / n as f64).sqrt() + 0.03,
                "var {var}: got {v}"
            );
        }
    }

    #[test]
    fn discrete_gaussian_small_variance_matches_its_pmf() {
        // σ² = 2: P(y) ∝ exp(−y²/4); compare the frequencies of −3..=3
        let mut g = Csprng::from_seed_for_tests(4);
        let n = 200_000;
        let mut counts = std::collections::HashMap::new();
        for _ in 0..n {
            *counts.entry(g.discrete_gaussian(2)).or_insert(0u32) += 1;
        }
        let z: f64 = (-40i32..=40).map(|y| (-(y * y) as f64 / 4.0).exp()).sum();
        for y in -3i128..=3 {
            let p = (-(y * y) as f64 / 4.0).exp() / z;
            let got = *counts.get(&y).unwrap_or(&0) as f64 / n as f64;
            let se = (p * (1.0 - p) / n as f64).sqrt();
            assert!((got - p).abs() < 5.0 * se, "P({y}) = {got}, want {p}");
        }
    }

    #[test]
    fn isqrt_is_exact() {
        for v in [
            0u128,
            1,
            2,
            3,
            4,
            15,
            16,
            17,
            (1 << 60) - 1,
            1 << 60,
            u64::MAX as u128,
        ] {
            let r = isqrt(v);
            assert!(r * r <= v && (r + 1) * (r + 1) > v, "{v}");
        }
    }
}
