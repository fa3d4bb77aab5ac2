//! The scattering front: a fixed, parameter-free feature map put before a network (Mallat 2012;
//! Bruna & Mallat 2013), computed in the clear by whoever holds the image — the hospital while
//! training, the requester before encrypting — so the encrypted part of the network starts from
//! its output.
//!
//! Why: under DP-SGD the noise grows with the parameters a network trains, and a small CNN
//! learns its first layer badly from 20 rounds of noisy clipped gradients. Fixed wavelet
//! features with a linear head train far better privately (Tramèr & Boneh, "Differentially
//! private learning needs better features (or much more data)", ICLR 2021), and the front costs
//! no multiplicative depth under encryption, since the requester computes it.
//!
//! For each input channel, with J scales and L orientations (kymatio's `Scattering2D`, the
//! implementation that paper used): order 0 `x ⋆ φ`, order 1 `|x ⋆ ψ_{j,θ}| ⋆ φ`, order 2
//! `||x ⋆ ψ_{j1,θ1}| ⋆ ψ_{j2,θ2}| ⋆ φ` for j1 < j2, each sampled every 2^J pixels: 1 + J·L +
//! L²·J(J−1)/2 maps of ⌈h/2^J⌉ × ⌈w/2^J⌉ (81 maps of 7 × 7 for a 28 × 28 image with J = 2,
//! L = 8). The image is padded by reflection (six widths of the widest filter, rounded up to
//! 2^J) and filtered by products in the Fourier domain; each order is computed at the lowest
//! resolution that holds it (kymatio's subsampling). Last, each example's maps are normalised
//! in `groups` groups of consecutive maps (zero mean, unit variance over a group's values, as a
//! group-norm layer without trained scale does): that uses no statistics of anyone's data, so
//! it costs no privacy budget, and it makes the features comparable across scanners.

mod filters;

use std::sync::Arc;

use rustfft::num_complex::Complex;

use self::filters::{Bank, Plans, transpose};
use super::error::NetworkError;

type C32 = Complex<f32>;

/// Largest number of scales (J): the widest filter then spans 38 pixels of padding each side.
pub const MAX_SCALES: usize = 4;
/// Largest number of orientations (L).
pub const MAX_ANGLES: usize = 16;
/// Most output maps × padded grid pixels a front may have: the transform's work and the filter
/// bank grow with it, and a front can arrive from a server in an architecture. 81 maps of a
/// 512 × 512 image (23M) fit; 1,601 maps (J = 4, L = 16) of one do not.
pub const MAX_FRONT_WORK: usize = 1 << 25;
/// Added to a group's standard deviation: keeps a flat image finite. On the deviation, not the
/// variance as PyTorch's `GroupNorm` does, since order-2 maps of a [0, 1] image have variances
/// near 1e-4, where a variance floor of 1e-5 would already bend the features.
const GROUP_EPSILON: f32 = 1e-5;

/// What the front is: the image it reads and the transform's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct ScatterFront {
    /// The image `[c, h, w]` it reads (normalised as the network's `normalization` says).
    pub image: [usize; 3],
    /// Scales J (1 ..= 4).
    pub scales: usize,
    /// Orientations L (1 ..= 16).
    pub angles: usize,
    /// Groups of consecutive output maps normalised per example; divides the number of maps.
    pub groups: usize,
}

impl ScatterFront {
    /// Maps per input channel: 1 + J·L + L²·J(J−1)/2.
    pub fn maps_per_channel(&self) -> usize {
        let (j, l) = (self.scales, self.angles);
        1 + j * l + l * l * j * j.saturating_sub(1) / 2
    }

    /// The output shape `[c·maps, ⌈h/2^J⌉, ⌈w/2^J⌉]`.
    pub fn output(&self) -> [usize; 3] {
        let s = 1 << self.scales.min(MAX_SCALES);
        let [c, h, w] = self.image;
        [c * self.maps_per_channel(), h.div_ceil(s), w.div_ceil(s)]
    }

    /// Padding on the top/left: six widths (σ = 0.8·2^(J−1)) of the widest filter, rounded up
    /// to a multiple of 2^J so that the output samples fall on the subsampled grid.
    fn pad(&self) -> usize {
        let s = 1usize << self.scales;
        let six_sigma = (6.0 * 0.8 * f64::from(1u32 << (self.scales - 1))).ceil() as usize;
        six_sigma.div_ceil(s) * s
    }

    /// Checks the settings against the image.
    pub fn check(&self) -> Result<(), NetworkError> {
        let bad = |what: &'static str, value: usize| Err(NetworkError::Scatter { what, value });
        if self.image.contains(&0) {
            return Err(NetworkError::EmptyInput(self.image));
        }
        if !(1..=MAX_SCALES).contains(&self.scales) {
            return bad("scales (1 to 4)", self.scales);
        }
        if !(1..=MAX_ANGLES).contains(&self.angles) {
            return bad("angles (1 to 16)", self.angles);
        }
        if self.image[0] > 16 || self.image[1].max(self.image[2]) > 512 {
            return bad(
                "image size (at most 16 channels and 512 pixels a side)",
                self.image[1].max(self.image[2]),
            );
        }
        let maps = self.output()[0];
        if self.groups == 0 || !maps.is_multiple_of(self.groups) {
            return bad("groups (must divide the number of maps)", self.groups);
        }
        let side = self.image[1].min(self.image[2]);
        // reflection padding needs more pixels than it mirrors (plus the rounding to 2^J)
        if self.pad() + (1 << self.scales) >= side {
            return bad("image side (too small for these scales)", side);
        }
        let [gh, gw] = self.grid();
        let work = maps * gh * gw;
        if work > MAX_FRONT_WORK {
            return bad("maps × padded pixels (at most 2^25)", work);
        }
        Ok(())
    }

    /// The padded grid: each side rounded up to 2^J, plus the padding on both sides.
    fn grid(&self) -> [usize; 2] {
        let s = 1usize << self.scales;
        let pad = self.pad();
        [
            self.image[1].next_multiple_of(s) + 2 * pad,
            self.image[2].next_multiple_of(s) + 2 * pad,
        ]
    }
}

/// A front ready to apply: its settings with the filter bank and FFT plans built once.
#[derive(Clone)]
pub struct Scatter {
    front: ScatterFront,
    bank: Arc<Bank>,
    /// Padded grid (divisible by 2^J).
    grid: [usize; 2],
    pad: usize,
}

impl std::fmt::Debug for Scatter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scatter")
            .field("front", &self.front)
            .finish()
    }
}

impl PartialEq for Scatter {
    fn eq(&self, other: &Self) -> bool {
        self.front == other.front
    }
}

impl Scatter {
    /// Builds the filter bank for `front` (a few milliseconds for a 28 × 28 image).
    pub fn new(front: ScatterFront) -> Result<Self, NetworkError> {
        front.check()?;
        let (grid, pad) = (front.grid(), front.pad());
        let bank = Bank::new(grid[0], grid[1], front.scales, front.angles);
        Ok(Self {
            front,
            bank: Arc::new(bank),
            grid,
            pad,
        })
    }

    /// The settings.
    pub fn front(&self) -> &ScatterFront {
        &self.front
    }

    /// The features of one image given in CHW order, in CHW order of [`ScatterFront::output`].
    pub fn apply(&self, chw: &[f32]) -> Result<Vec<f32>, NetworkError> {
        let [c, h, w] = self.front.image;
        if chw.len() != c * h * w {
            return Err(NetworkError::InputLen {
                expected: c * h * w,
                found: chw.len(),
            });
        }
        let [_, oh, ow] = self.front.output();
        let per = self.front.maps_per_channel();
        let mut out = vec![0f32; c * per * oh * ow];
        for ch in 0..c {
            let maps = &mut out[ch * per * oh * ow..(ch + 1) * per * oh * ow];
            self.channel(&chw[ch * h * w..(ch + 1) * h * w], maps);
        }
        group_normalise(&mut out, self.front.groups);
        Ok(out)
    }

    /// The scattering maps of one channel into `out` (`maps × oh × ow`).
    fn channel(&self, x: &[f32], out: &mut [f32]) {
        let (j_max, l) = (self.front.scales, self.front.angles);
        let b = &*self.bank;
        let [_, h, w] = self.front.image;
        let padded = reflect_pad(x, h, w, self.pad, self.grid);
        let mut xf: Vec<C32> = padded.iter().map(|&v| C32::new(v, 0.0)).collect();
        fft2(&mut xf, &b.plans[0], false);
        let area = out.len() / self.front.maps_per_channel();
        let mut next_second = 1 + j_max * l;
        self.low_pass(&xf, 0, &mut out[..area]);
        for j1 in 0..j_max {
            for t1 in 0..l {
                // U1 = |x ⋆ ψ_{j1,θ1}| at resolution j1, and its transform
                let u1 = self.modulus_at(&xf, 0, &b.psi[j1][t1][0], j1);
                let first = 1 + j1 * l + t1;
                self.low_pass(&u1, j1, &mut out[first * area..(first + 1) * area]);
                for j2 in j1 + 1..j_max {
                    for t2 in 0..l {
                        let u2 = self.modulus_at(&u1, j1, &b.psi[j2][t2][j1], j2);
                        let k = next_second;
                        next_second += 1;
                        self.low_pass(&u2, j2, &mut out[k * area..(k + 1) * area]);
                    }
                }
            }
        }
    }

    /// `|F⁻¹(spec · filter)|` subsampled to resolution `to`, returned as its transform there.
    fn modulus_at(&self, spec: &[C32], from: usize, filter: &[f32], to: usize) -> Vec<C32> {
        let p = &self.bank.plans[from];
        let prod: Vec<C32> = spec.iter().zip(filter).map(|(s, f)| s * f).collect();
        let mut u = subsample(&prod, p.rows, p.cols, 1 << (to - from));
        let q = &self.bank.plans[to];
        fft2(&mut u, q, true);
        u.iter_mut().for_each(|v| *v = C32::new(v.norm(), 0.0));
        fft2(&mut u, q, false);
        u
    }

    /// `F⁻¹(spec · φ)` sampled every 2^J pixels of the original grid, the padding cut off.
    fn low_pass(&self, spec: &[C32], res: usize, out: &mut [f32]) {
        let j_max = self.front.scales;
        let p = &self.bank.plans[res];
        let prod: Vec<C32> = spec
            .iter()
            .zip(&self.bank.phi[res])
            .map(|(s, f)| s * f)
            .collect();
        let mut y = subsample(&prod, p.rows, p.cols, 1 << (j_max - res));
        let q = &self.bank.plans[j_max];
        fft2(&mut y, q, true);
        let [_, oh, ow] = self.front.output();
        let off = self.pad >> j_max;
        for i in 0..oh {
            for j in 0..ow {
                out[i * ow + j] = y[(i + off) * q.cols + off + j].re;
            }
        }
    }
}

/// `x` (`h × w`) padded by reflection (the edge not repeated) to `grid`, `pad` pixels before.
fn reflect_pad(x: &[f32], h: usize, w: usize, pad: usize, grid: [usize; 2]) -> Vec<f32> {
    let mirror = |k: isize, n: usize| -> usize {
        let n = n as isize;
        let period = 2 * (n - 1);
        let k = k.rem_euclid(period);
        (if k < n { k } else { period - k }) as usize
    };
    let mut out = Vec::with_capacity(grid[0] * grid[1]);
    for i in 0..grid[0] {
        let si = mirror(i as isize - pad as isize, h);
        out.extend((0..grid[1]).map(|j| x[si * w + mirror(j as isize - pad as isize, w)]));
    }
    out
}

/// The transform of the signal sampled every `k` pixels: the mean of the `k × k` aliased blocks
/// of its transform (exact, with the inverse normalised by its size).
fn subsample(spec: &[C32], rows: usize, cols: usize, k: usize) -> Vec<C32> {
    if k == 1 {
        return spec.to_vec();
    }
    let (r, c) = (rows / k, cols / k);
    let mut out = vec![C32::new(0.0, 0.0); r * c];
    for bi in 0..k {
        for i in 0..r {
            let src = &spec[(bi * r + i) * cols..(bi * r + i + 1) * cols];
            let dst = &mut out[i * c..(i + 1) * c];
            for bj in 0..k {
                for (d, s) in dst.iter_mut().zip(&src[bj * c..(bj + 1) * c]) {
                    *d += s;
                }
            }
        }
    }
    let scale = 1.0 / (k * k) as f32;
    out.iter_mut().for_each(|v| *v *= scale);
    out
}

/// In-place 2D DFT of a `rows × cols` grid; the inverse is divided by the grid's size.
fn fft2(x: &mut Vec<C32>, p: &Plans, inverse: bool) {
    let (row, col) = match inverse {
        false => (&p.fwd_row, &p.fwd_col),
        true => (&p.inv_row, &p.inv_col),
    };
    row.process(x);
    let mut t = transpose(x, p.rows, p.cols);
    col.process(&mut t);
    *x = transpose(&t, p.cols, p.rows);
    if inverse {
        let s = 1.0 / (p.rows * p.cols) as f32;
        x.iter_mut().for_each(|v| *v *= s);
    }
}

/// Zero mean and unit variance within each of `groups` equal runs of `x`.
fn group_normalise(x: &mut [f32], groups: usize) {
    let len = x.len() / groups;
    for g in x.chunks_mut(len) {
        let n = g.len() as f64;
        let mean = g.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = g
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        let inv = 1.0 / ((var as f32).sqrt() + GROUP_EPSILON);
        let mean = mean as f32;
        g.iter_mut().for_each(|v| *v = (*v - mean) * inv);
    }
}

#[cfg(test)]
mod tests;
