//! Gaussian noise for DP-SGD (patient-level DP): N(0, σ²) per coordinate from the CSPRNG, by
//! Box–Muller on 53-bit uniforms. Unlike the hospital-level mechanism this noise is continuous:
//! DP-SGD adds it to float gradients at every step (millions of values per round), where the
//! exact integer sampler would cost seconds; the noise never leaves the hospital alone — only
//! the model trained with it does — and the accountant treats it as the Gaussian it
//! approximates, as Opacus and TF-Privacy do.

use crate::sampler::Csprng;

impl Csprng {
    /// Uniform in (0, 1), 53 bits.
    fn open_unit(&mut self) -> f64 {
        ((self.below(1u128 << 53) as f64) + 0.5) / (1u64 << 53) as f64
    }
}

/// Adds N(0, std²) to every value.
pub fn add_gaussian(rng: &mut Csprng, values: &mut [f32], std: f64) {
    let mut pairs = values.chunks_exact_mut(2);
    for pair in &mut pairs {
        let (a, b) = box_muller(rng);
        pair[0] += (a * std) as f32;
        pair[1] += (b * std) as f32;
    }
    if let [last] = pairs.into_remainder() {
        *last += (box_muller(rng).0 * std) as f32;
    }
}

fn box_muller(rng: &mut Csprng) -> (f64, f64) {
    let (u1, u2) = (rng.open_unit(), rng.open_unit());
    let r = (-2.0 * u1.ln()).sqrt();
    let (s, c) = (2.0 * std::f64::consts::PI * u2).sin_cos();
    (r * c, r * s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments() {
        let mut g = Csprng::from_seed_for_tests(9);
        let mut v = vec![0f32; 100_001];
        add_gaussian(&mut g, &mut v, 2.0);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n;
        assert!(mean.abs() < 0.03, "{mean}");
        assert!((var - 4.0).abs() < 0.06, "{var}");
        assert!(v[100_000] != 0.0, "the odd last value gets noise too");
    }
}
