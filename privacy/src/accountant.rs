//! Rényi-DP accounting (Mironov 2017) at the integer orders 2…256, as Google's `dp_accounting`
//! (and TF-Privacy, Opacus) compute it:
//!
//! - the Gaussian mechanism with noise multiplier z (σ = z·Δ): ε(α) = α / (2z²);
//! - its Poisson-subsampled form with rate q (DP-SGD; Mironov, Talwar, Zhang 2019, integer α):
//!   ε(α) = log Σ_k C(α,k) (1−q)^(α−k) q^k exp((k²−k)/(2z²)) / (α − 1);
//! - the distributed discrete Gaussian's extra term (Kairouz, Liu, Steinke 2021, Theorem 1): the
//!   sum of n discrete Gaussians is not exactly one, which costs τ = 10 Σ_{k<n} exp(−2π²σ²k/(k+1))
//!   (σ in grid units) inside its concentrated-DP bound; for σ ≥ 2^10 grid units it is 0 in f64.
//!
//! Compositions add RDP order by order; ε at δ comes from the conversion of Canonne, Kamath and
//! Steinke 2020 (Proposition 12): ε = ε(α) + log(1 − 1/α) − log(δ·α)/(α − 1), minimised over α.
//! The tests compare with `dp_accounting` 0.6.0's values.

/// The orders RDP is tracked at.
pub const ORDERS: std::ops::RangeInclusive<u32> = 2..=256;

/// RDP of one use of a mechanism, at every order of [`ORDERS`].
#[derive(Clone, Debug, PartialEq)]
pub struct Rdp(Vec<f64>);

impl Rdp {
    /// Zero at every order (nothing released).
    pub fn zero() -> Self {
        Rdp(vec![0.0; ORDERS.count()])
    }

    fn from_fn(f: impl Fn(f64) -> f64) -> Self {
        Rdp(ORDERS.map(|a| f(f64::from(a))).collect())
    }

    /// The Gaussian mechanism with noise multiplier `z` (std / L2 sensitivity).
    pub fn gaussian(z: f64) -> Self {
        Rdp::from_fn(|a| a / (2.0 * z * z))
    }

    /// The sum of `n` discrete Gaussians of variance `var_each` (grid units²) over a query of L2
    /// sensitivity `delta_grid` (grid units) in dimension `dim`: Theorem 1 of Kairouz, Liu and
    /// Steinke, ½ε²-concentrated DP with ε = min(√(Δ²/(nσ²) + 2τd), √(Δ²/(nσ²)) + τ√d), which is
    /// RDP α·ε²/2.
    pub fn distributed_discrete_gaussian(
        delta_grid: f64,
        var_each: f64,
        n: u32,
        dim: usize,
    ) -> Self {
        let pi2 = std::f64::consts::PI * std::f64::consts::PI;
        let tau = 10.0
            * (1..n)
                .map(|k| (-2.0 * pi2 * var_each * f64::from(k) / f64::from(k + 1)).exp())
                .sum::<f64>();
        let base = delta_grid * delta_grid / (f64::from(n) * var_each);
        let d = dim as f64;
        let eps = (base + 2.0 * tau * d)
            .sqrt()
            .min(base.sqrt() + tau * d.sqrt());
        Rdp::from_fn(|a| a * eps * eps / 2.0)
    }

    /// The Poisson-subsampled Gaussian with sampling rate `q` and noise multiplier `z`.
    pub fn subsampled_gaussian(q: f64, z: f64) -> Self {
        if q >= 1.0 {
            return Rdp::gaussian(z);
        }
        if q <= 0.0 {
            return Rdp::zero();
        }
        let (lq, l1q) = (q.ln(), (-q).ln_1p());
        Rdp(ORDERS
            .map(|a| {
                let log_a = (0..=a)
                    .map(|k| {
                        let kf = f64::from(k);
                        log_binomial(a, k)
                            + kf * lq
                            + f64::from(a - k) * l1q
                            + (kf * kf - kf) / (2.0 * z * z)
                    })
                    .fold(f64::NEG_INFINITY, log_add);
                log_a / f64::from(a - 1)
            })
            .collect())
    }

    /// This mechanism used `times` times.
    pub fn times(&self, times: u64) -> Self {
        Rdp(self.0.iter().map(|r| r * times as f64).collect())
    }

    /// The composition of two mechanisms.
    pub fn plus(&self, other: &Rdp) -> Self {
        Rdp(self.0.iter().zip(&other.0).map(|(a, b)| a + b).collect())
    }

    /// (ε, the order that gives it) at `delta`.
    pub fn epsilon(&self, delta: f64) -> (f64, u32) {
        let mut best = (f64::INFINITY, 0);
        for (a, &r) in ORDERS.zip(&self.0) {
            let af = f64::from(a);
            let eps = if r <= 0.0 || delta * delta + (-r).exp_m1() > 0.0 {
                // bounded through the KL divergence (as dp_accounting does)
                0.0
            } else {
                r + (-1.0 / af).ln_1p() - (delta * af).ln() / (af - 1.0)
            };
            if eps < best.0 {
                best = (eps, a);
            }
        }
        (best.0.max(0.0), best.1)
    }
}

fn log_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

fn log_binomial(n: u32, k: u32) -> f64 {
    let t = ln_factorials();
    t[n as usize] - t[k as usize] - t[(n - k) as usize]
}

/// ln(n!) for n up to the largest order, summed once.
fn ln_factorials() -> &'static [f64] {
    static TABLE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let top = *ORDERS.end() as usize;
        let mut t = vec![0.0; top + 1];
        for i in 2..=top {
            t[i] = t[i - 1] + (i as f64).ln();
        }
        t
    })
}

/// The smallest noise multiplier whose `rdp_of(z)` gives ε ≤ `target` at `delta`, by bisection
/// over [0.05, 1000] (ε falls as z grows); `None` if even 1000 is not enough.
pub fn multiplier_for(target: f64, delta: f64, rdp_of: impl Fn(f64) -> Rdp) -> Option<f64> {
    let eps = |z: f64| rdp_of(z).epsilon(delta).0;
    let (mut lo, mut hi) = (0.05f64, 1000.0f64);
    if eps(hi) > target {
        return None;
    }
    if eps(lo) <= target {
        return Some(lo);
    }
    for _ in 0..60 {
        let mid = (lo * hi).sqrt();
        if eps(mid) <= target {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ε from Google's dp_accounting 0.6.0 (`RdpAccountant(orders=range(2, 257))`,
    /// `SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(z)), steps)`).
    const PUBLISHED: [(f64, f64, u64, f64, f64); 7] = [
        (256.0 / 60000.0, 1.1, 14063, 1e-5, 2.5970795196566616),
        (1.0, 1.0, 20, 1e-5, 30.12663110385034),
        (1.0, 3.0, 20, 1e-5, 7.53230607327611),
        (0.01, 1.0, 1000, 1e-5, 2.1077530754515745),
        (0.05, 0.8, 500, 1e-6, 15.833667081031958),
        (0.004, 0.7, 2000, 1e-5, 3.4312653797240875),
        (1.0, 10.0, 1, 1e-5, 0.3752912223662765),
    ];

    #[test]
    fn epsilon_matches_dp_accounting() {
        for (q, z, steps, delta, want) in PUBLISHED {
            let (got, _) = Rdp::subsampled_gaussian(q, z).times(steps).epsilon(delta);
            assert!(
                (got - want).abs() < 1e-6 * want.max(1.0),
                "q {q}, z {z}, {steps} steps, δ {delta}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn the_discrete_sum_costs_nothing_more_at_large_variance() {
        // 5 hospitals, Δ = 2^16 grid units, each adds σ² = (3·2^16)²/5: the total is a
        // Gaussian of multiplier 3
        let var = (3.0f64 * 65536.0).powi(2) / 5.0;
        let ddg = Rdp::distributed_discrete_gaussian(65536.0, var, 5, 300_000);
        let g = Rdp::gaussian(3.0);
        for (a, b) in ddg.0.iter().zip(&g.0) {
            assert!((a - b).abs() < 1e-9 * b, "{a} vs {b}");
        }
        // at a variance of a few grid units the extra term shows
        let small = Rdp::distributed_discrete_gaussian(4.0, 0.5, 5, 300_000);
        assert!(small.0[0] > Rdp::gaussian(4.0 / (5.0f64 * 0.5).sqrt()).0[0]);
    }

    #[test]
    fn composition_and_monotonicity() {
        let one = Rdp::gaussian(2.0);
        assert_eq!(one.times(3), one.plus(&one).plus(&one));
        let e1 = one.times(10).epsilon(1e-5).0;
        let e2 = one.times(20).epsilon(1e-5).0;
        assert!(e2 > e1 && e1 > 0.0);
        assert_eq!(Rdp::zero().epsilon(1e-5).0, 0.0);
        assert!(Rdp::subsampled_gaussian(0.01, 1.0).0[5] < Rdp::gaussian(1.0).0[5]);
    }

    #[test]
    fn the_multiplier_for_a_target_meets_it() {
        let z = multiplier_for(8.0, 1e-5, |z| Rdp::gaussian(z).times(20)).unwrap();
        let e = Rdp::gaussian(z).times(20).epsilon(1e-5).0;
        assert!(e <= 8.0 && e > 7.99, "{z}: {e}");
        assert!(multiplier_for(1e-9, 1e-5, |z| Rdp::gaussian(z).times(20)).is_none());
    }
}
