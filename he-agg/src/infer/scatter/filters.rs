//! The scattering transform's filter bank: Morlet wavelets and a Gaussian low-pass, built in
//! space on the padded grid (periodised over ±2 periods) and kept as their real Fourier
//! transforms — kymatio's `filter_bank` (Andreux et al. 2020), which the scattering results of
//! Tramèr & Boneh (2021) used.

use std::f64::consts::PI;
use std::sync::Arc;

use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

/// A Gabor filter `exp(−xᵀ A x + i ξ (x cos θ + y sin θ))` on an `m × n` periodic grid, where
/// `A = R diag(1, slant²) Rᵀ / (2σ²)`, summed over neighbouring periods so that it wraps.
fn gabor(m: usize, n: usize, sigma: f64, theta: f64, xi: f64, slant: f64) -> Vec<Complex<f64>> {
    let (c, s) = (theta.cos(), theta.sin());
    let d = slant * slant;
    let k = 1.0 / (2.0 * sigma * sigma);
    // R diag(1, d) Rᵀ
    let (a00, a01, a11) = (
        (c * c + d * s * s) * k,
        (c * s - d * c * s) * k,
        (s * s + d * c * c) * k,
    );
    let mut out = vec![Complex::new(0.0, 0.0); m * n];
    for ex in -2i64..=2 {
        for ey in -2i64..=2 {
            for i in 0..m {
                let x = (i as i64 + ex * m as i64) as f64;
                for j in 0..n {
                    let y = (j as i64 + ey * n as i64) as f64;
                    let re = -(a00 * x * x + 2.0 * a01 * x * y + a11 * y * y);
                    let im = xi * (x * c + y * s);
                    out[i * n + j] += Complex::from_polar(re.exp(), im);
                }
            }
        }
    }
    let norm = 2.0 * PI * sigma * sigma / slant;
    out.iter_mut().for_each(|v| *v /= norm);
    out
}

/// A Morlet wavelet: the Gabor filter minus the multiple of its envelope that makes it sum to 0.
fn morlet(m: usize, n: usize, sigma: f64, theta: f64, xi: f64, slant: f64) -> Vec<Complex<f64>> {
    let wave = gabor(m, n, sigma, theta, xi, slant);
    let env = gabor(m, n, sigma, theta, 0.0, slant);
    let k = wave.iter().sum::<Complex<f64>>() / env.iter().sum::<Complex<f64>>();
    wave.iter().zip(&env).map(|(w, e)| w - k * e).collect()
}

/// The real part of the 2D DFT of `x` (`m × n`, row-major). The filters are Hermitian in space,
/// so their transforms are real up to rounding.
fn real_dft2(mut x: Vec<Complex<f64>>, m: usize, n: usize) -> Vec<f64> {
    let mut planner = FftPlanner::<f64>::new();
    planner.plan_fft_forward(n).process(&mut x);
    let mut t = transpose(&x, m, n);
    planner.plan_fft_forward(m).process(&mut t);
    transpose(&t, n, m).iter().map(|v| v.re).collect()
}

/// `m × n` → `n × m`.
pub(super) fn transpose<T: Copy>(x: &[T], m: usize, n: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(x.len());
    for j in 0..n {
        out.extend((0..m).map(|i| x[i * n + j]));
    }
    out
}

/// A filter's transform at resolution `r`: the low-frequency `m/2^r × n/2^r` corner block of the
/// full transform (kymatio's `periodize_filter_fft`, which masks and folds to the same).
fn at_resolution(full: &[f64], m: usize, n: usize, r: usize) -> Vec<f32> {
    let (mr, nr) = (m >> r, n >> r);
    let src = |k: usize, len: usize, full_len: usize| {
        if k < len / 2 { k } else { k + full_len - len }
    };
    let mut out = Vec::with_capacity(mr * nr);
    for a in 0..mr {
        let i = src(a, mr, m);
        out.extend((0..nr).map(|b| full[i * n + src(b, nr, n)] as f32));
    }
    out
}

/// FFT plans of one resolution.
pub(super) struct Plans {
    pub rows: usize,
    pub cols: usize,
    pub fwd_row: Arc<dyn Fft<f32>>,
    pub fwd_col: Arc<dyn Fft<f32>>,
    pub inv_row: Arc<dyn Fft<f32>>,
    pub inv_col: Arc<dyn Fft<f32>>,
}

/// Every filter's transform at every resolution it is used at, and the FFT plans.
pub(super) struct Bank {
    /// `psi[j][θ][r]` for `r ≤ j`.
    pub psi: Vec<Vec<Vec<Vec<f32>>>>,
    /// `phi[r]` for `r ≤ J`.
    pub phi: Vec<Vec<f32>>,
    /// `plans[r]` for `r ≤ J`.
    pub plans: Vec<Plans>,
}

impl Bank {
    /// The bank of `scales` (J) × `angles` (L) wavelets on an `m × n` grid (both divisible by
    /// 2^J), with kymatio's parameters: σ = 0.8·2^j, ξ = 3π/4 / 2^j, slant 4/L, and a low-pass of
    /// σ = 0.8·2^(J−1).
    pub fn new(m: usize, n: usize, scales: usize, angles: usize) -> Self {
        let l = angles as f64;
        let psi = (0..scales)
            .map(|j| {
                (0..angles)
                    .map(|t| {
                        let theta = ((angles - angles / 2 - 1) as f64 - t as f64) * PI / l;
                        let sigma = 0.8 * f64::from(1u32 << j);
                        let xi = 0.75 * PI / f64::from(1u32 << j);
                        let full = real_dft2(morlet(m, n, sigma, theta, xi, 4.0 / l), m, n);
                        (0..=j).map(|r| at_resolution(&full, m, n, r)).collect()
                    })
                    .collect()
            })
            .collect();
        let sigma_phi = 0.8 * f64::from(1u32 << (scales - 1));
        let phi_full = real_dft2(gabor(m, n, sigma_phi, 0.0, 0.0, 1.0), m, n);
        let phi = (0..=scales)
            .map(|r| at_resolution(&phi_full, m, n, r))
            .collect();
        let mut planner = FftPlanner::<f32>::new();
        let plans = (0..=scales)
            .map(|r| {
                let (rows, cols) = (m >> r, n >> r);
                Plans {
                    rows,
                    cols,
                    fwd_row: planner.plan_fft_forward(cols),
                    fwd_col: planner.plan_fft_forward(rows),
                    inv_row: planner.plan_fft_inverse(cols),
                    inv_col: planner.plan_fft_inverse(rows),
                }
            })
            .collect();
        Self { psi, phi, plans }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wavelets_have_no_mean_and_the_low_pass_keeps_it() {
        let bank = Bank::new(32, 32, 2, 8);
        for j in 0..2 {
            for t in 0..8 {
                // the DC coefficient of a Morlet wavelet is 0
                assert!(
                    bank.psi[j][t][0][0].abs() < 1e-5,
                    "{}",
                    bank.psi[j][t][0][0]
                );
            }
        }
        assert!((bank.phi[0][0] - 1.0).abs() < 1e-5, "{}", bank.phi[0][0]);
    }

    #[test]
    fn a_wavelet_passes_its_own_frequency_and_orientation() {
        // ψ for θ = 0 (t = L − L/2 − 1 = 3 with L = 8) peaks near ξ = 3π/4 along the first axis
        let m = 64;
        let bank = Bank::new(m, m, 1, 8);
        let psi = &bank.psi[0][3][0];
        let (mut best, mut at) = (f32::MIN, (0, 0));
        for i in 0..m {
            for j in 0..m {
                if psi[i * m + j] > best {
                    best = psi[i * m + j];
                    at = (i, j);
                }
            }
        }
        // 3π/4 rad/pixel is 3/8 of the grid's frequencies: bin 24 of 64
        assert!(at.0.abs_diff(24) <= 1 && at.1 == 0, "peak at {at:?}");
    }

    #[test]
    fn a_block_at_lower_resolution_is_the_low_frequency_corner() {
        let full: Vec<f64> = (0..64).map(f64::from).collect();
        let half = at_resolution(&full, 8, 8, 1);
        // rows 0, 1, 6, 7 and columns 0, 1, 6, 7 of the 8 × 8 grid
        assert_eq!(
            half,
            vec![
                0., 1., 6., 7., 8., 9., 14., 15., 48., 49., 54., 55., 56., 57., 62., 63.
            ]
        );
    }
}
