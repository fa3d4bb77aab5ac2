//! The special FFT of CKKS: evaluation of a real polynomial at the primitive 2N-th roots
//! ζ^(5^j) (j < N/2), and its inverse. Slot j holds m(ζ^(5^j)), so the automorphism X ↦ X^5
//! rotates slots left by one and X ↦ X^(-1) conjugates them.

use std::f64::consts::PI;

/// A complex number (f64 parts).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Complex {
    pub re: f64,
    pub im: f64,
}

impl Complex {
    pub const fn new(re: f64, im: f64) -> Self {
        Self { re, im }
    }
    #[inline(always)]
    pub fn scale(self, s: f64) -> Self {
        Self::new(self.re * s, self.im * s)
    }
    #[inline(always)]
    pub fn conj(self) -> Self {
        Self::new(self.re, -self.im)
    }
    pub fn abs(self) -> f64 {
        self.re.hypot(self.im)
    }
}

impl std::ops::Add for Complex {
    type Output = Self;
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        Self::new(self.re + o.re, self.im + o.im)
    }
}

impl std::ops::Sub for Complex {
    type Output = Self;
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        Self::new(self.re - o.re, self.im - o.im)
    }
}

impl std::ops::Mul for Complex {
    type Output = Self;
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        Self::new(
            self.re * o.re - self.im * o.im,
            self.re * o.im + self.im * o.re,
        )
    }
}

/// Precomputed tables for the special FFT over `slots` = N/2 values. The transforms work on
/// split real and imaginary arrays, which the compiler vectorises.
#[derive(Debug, Clone)]
pub struct SpecialFft {
    slots: usize,
    /// twiddles of the stage with half-length h start at index h - 1 (real, imaginary parts)
    tw_re: Vec<f64>,
    tw_im: Vec<f64>,
    bit_reverse: Vec<u32>,
}

impl SpecialFft {
    pub fn new(n: usize) -> Self {
        let slots = n / 2;
        let m = 2 * n; // the roots are 2N-th roots of unity
        let mut rot_group = vec![1usize; slots];
        for j in 1..slots {
            rot_group[j] = rot_group[j - 1] * 5 % m;
        }
        let (mut tw_re, mut tw_im) = (Vec::with_capacity(slots), Vec::with_capacity(slots));
        let mut len = 2;
        while len <= slots {
            let (lenh, lenq) = (len / 2, len * 4);
            for &r in rot_group.iter().take(lenh) {
                let idx = (r % lenq) * (m / lenq);
                let angle = 2.0 * PI * idx as f64 / m as f64;
                tw_re.push(angle.cos());
                tw_im.push(angle.sin());
            }
            len *= 2;
        }
        let log = slots.trailing_zeros();
        let bit_reverse = (0..slots as u32)
            .map(|i| {
                if log == 0 {
                    0
                } else {
                    i.reverse_bits() >> (32 - log)
                }
            })
            .collect();
        Self {
            slots,
            tw_re,
            tw_im,
            bit_reverse,
        }
    }

    /// Index map of the bit-reversal permutation of the slots.
    pub fn bit_reverse(&self) -> &[u32] {
        &self.bit_reverse
    }

    #[cfg(test)]
    fn permute(&self, re: &mut [f64], im: &mut [f64]) {
        for (i, &j) in self.bit_reverse.iter().enumerate() {
            let j = j as usize;
            if i < j {
                re.swap(i, j);
                im.swap(i, j);
            }
        }
    }

    /// Decoding direction: from the "coefficient" vector (m_i + i·m_{i+N/2}) to the slots.
    #[cfg(test)]
    pub fn forward(&self, re: &mut [f64], im: &mut [f64]) {
        self.permute(re, im);
        self.forward_from_bit_reversed(re, im);
    }

    /// Encoding direction: the inverse of [`SpecialFft::forward`], including the 1/slots factor.
    #[cfg(test)]
    pub fn inverse(&self, re: &mut [f64], im: &mut [f64]) {
        self.inverse_to_bit_reversed(re, im);
        self.permute(re, im);
        let s = 1.0 / self.slots as f64;
        for x in re.iter_mut().chain(im.iter_mut()) {
            *x *= s;
        }
    }

    /// [`SpecialFft::forward`] for input already in bit-reversed order (callers fuse the
    /// permutation into the pass that fills the arrays).
    pub fn forward_from_bit_reversed(&self, re: &mut [f64], im: &mut [f64]) {
        debug_assert!(re.len() == self.slots && im.len() == self.slots);
        #[cfg(target_arch = "x86_64")]
        if crate::simd::has_avx2_fma() {
            // SAFETY: the CPU has the features this copy is compiled for.
            unsafe { self.forward_avx2(re, im) };
            return;
        }
        self.forward_core(re, im);
    }

    /// The butterflies of [`SpecialFft::inverse`], leaving the output in bit-reversed order and
    /// without the 1/slots factor (callers fuse both into the pass that reads the arrays).
    pub fn inverse_to_bit_reversed(&self, re: &mut [f64], im: &mut [f64]) {
        debug_assert!(re.len() == self.slots && im.len() == self.slots);
        #[cfg(target_arch = "x86_64")]
        if crate::simd::has_avx2_fma() {
            // SAFETY: the CPU has the features this copy is compiled for.
            unsafe { self.inverse_avx2(re, im) };
            return;
        }
        self.inverse_core(re, im);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn forward_avx2(&self, re: &mut [f64], im: &mut [f64]) {
        self.forward_core(re, im);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn inverse_avx2(&self, re: &mut [f64], im: &mut [f64]) {
        self.inverse_core(re, im);
    }

    #[inline(always)]
    fn forward_core(&self, re: &mut [f64], im: &mut [f64]) {
        let mut len = 2;
        if self.slots >= 4 {
            // the first two stages together, one block of four at a time: their inner loops
            // would be one and two butterflies long
            let (w_re, w_im) = (self.tw_re[0], self.tw_im[0]);
            let (t0r, t0i, t1r, t1i) = (self.tw_re[1], self.tw_im[1], self.tw_re[2], self.tw_im[2]);
            for (r, i) in re.chunks_exact_mut(4).zip(im.chunks_exact_mut(4)) {
                let (y1r, y1i) = (r[1] * w_re - i[1] * w_im, r[1] * w_im + i[1] * w_re);
                let (y3r, y3i) = (r[3] * w_re - i[3] * w_im, r[3] * w_im + i[3] * w_re);
                let (a0r, a0i, a1r, a1i) = (r[0] + y1r, i[0] + y1i, r[0] - y1r, i[0] - y1i);
                let (a2r, a2i, a3r, a3i) = (r[2] + y3r, i[2] + y3i, r[2] - y3r, i[2] - y3i);
                let (z0r, z0i) = (a2r * t0r - a2i * t0i, a2r * t0i + a2i * t0r);
                let (z1r, z1i) = (a3r * t1r - a3i * t1i, a3r * t1i + a3i * t1r);
                r[0] = a0r + z0r;
                i[0] = a0i + z0i;
                r[2] = a0r - z0r;
                i[2] = a0i - z0i;
                r[1] = a1r + z1r;
                i[1] = a1i + z1i;
                r[3] = a1r - z1r;
                i[3] = a1i - z1i;
            }
            len = 8;
        }
        while len <= self.slots {
            let lenh = len / 2;
            let (wr, wi) = (
                &self.tw_re[lenh - 1..2 * lenh - 1],
                &self.tw_im[lenh - 1..2 * lenh - 1],
            );
            for (br, bi) in re.chunks_exact_mut(len).zip(im.chunks_exact_mut(len)) {
                let (ur, vr) = br.split_at_mut(lenh);
                let (ui, vi) = bi.split_at_mut(lenh);
                for (((((ur, ui), vr), vi), &wr), &wi) in ur
                    .iter_mut()
                    .zip(ui.iter_mut())
                    .zip(vr.iter_mut())
                    .zip(vi.iter_mut())
                    .zip(wr)
                    .zip(wi)
                {
                    let (yr, yi) = (*vr * wr - *vi * wi, *vr * wi + *vi * wr);
                    let (xr, xi) = (*ur, *ui);
                    *ur = xr + yr;
                    *ui = xi + yi;
                    *vr = xr - yr;
                    *vi = xi - yi;
                }
            }
            len *= 2;
        }
    }

    #[inline(always)]
    fn inverse_core(&self, re: &mut [f64], im: &mut [f64]) {
        let mut len = self.slots;
        let last = if self.slots >= 4 { 8 } else { 2 };
        while len >= last {
            let lenh = len / 2;
            let (wr, wi) = (
                &self.tw_re[lenh - 1..2 * lenh - 1],
                &self.tw_im[lenh - 1..2 * lenh - 1],
            );
            for (br, bi) in re.chunks_exact_mut(len).zip(im.chunks_exact_mut(len)) {
                let (ur, vr) = br.split_at_mut(lenh);
                let (ui, vi) = bi.split_at_mut(lenh);
                for (((((ur, ui), vr), vi), &wr), &wi) in ur
                    .iter_mut()
                    .zip(ui.iter_mut())
                    .zip(vr.iter_mut())
                    .zip(vi.iter_mut())
                    .zip(wr)
                    .zip(wi)
                {
                    let (xr, xi, yr, yi) = (*ur, *ui, *vr, *vi);
                    *ur = xr + yr;
                    *ui = xi + yi;
                    let (dr, di) = (xr - yr, xi - yi);
                    // times the conjugate twiddle
                    *vr = dr * wr + di * wi;
                    *vi = di * wr - dr * wi;
                }
            }
            len /= 2;
        }
        if self.slots >= 4 {
            // the last two stages together (see forward_core)
            let (w_re, w_im) = (self.tw_re[0], self.tw_im[0]);
            let (t0r, t0i, t1r, t1i) = (self.tw_re[1], self.tw_im[1], self.tw_re[2], self.tw_im[2]);
            for (r, i) in re.chunks_exact_mut(4).zip(im.chunks_exact_mut(4)) {
                // stage of length 4: pairs (0, 2) with t0 and (1, 3) with t1
                let (a0r, a0i) = (r[0] + r[2], i[0] + i[2]);
                let (d0r, d0i) = (r[0] - r[2], i[0] - i[2]);
                let (a2r, a2i) = (d0r * t0r + d0i * t0i, d0i * t0r - d0r * t0i);
                let (a1r, a1i) = (r[1] + r[3], i[1] + i[3]);
                let (d1r, d1i) = (r[1] - r[3], i[1] - i[3]);
                let (a3r, a3i) = (d1r * t1r + d1i * t1i, d1i * t1r - d1r * t1i);
                // stage of length 2: pairs (0, 1) and (2, 3) with w
                r[0] = a0r + a1r;
                i[0] = a0i + a1i;
                let (e0r, e0i) = (a0r - a1r, a0i - a1i);
                r[1] = e0r * w_re + e0i * w_im;
                i[1] = e0i * w_re - e0r * w_im;
                r[2] = a2r + a3r;
                i[2] = a2i + a3i;
                let (e1r, e1i) = (a2r - a3r, a2i - a3i);
                r[3] = e1r * w_re + e1i * w_im;
                i[3] = e1i * w_re - e1r * w_im;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct evaluation: slot j = Σ_k m_k ζ^(5^j·k).
    fn naive_slots(coeffs: &[f64]) -> Vec<Complex> {
        let n = coeffs.len();
        let m = 2 * n;
        let mut g = 1usize;
        (0..n / 2)
            .map(|_| {
                let mut acc = Complex::default();
                for (k, &c) in coeffs.iter().enumerate() {
                    let a = 2.0 * PI * ((g * k) % m) as f64 / m as f64;
                    acc = acc + Complex::new(a.cos(), a.sin()).scale(c);
                }
                g = g * 5 % m;
                acc
            })
            .collect()
    }

    #[test]
    fn forward_is_the_canonical_embedding() {
        for n in [4usize, 16, 64] {
            let coeffs: Vec<f64> = (0..n).map(|i| ((i * 37 % 11) as f64) - 5.0).collect();
            let fft = SpecialFft::new(n);
            let (mut re, mut im) = (coeffs[..n / 2].to_vec(), coeffs[n / 2..].to_vec());
            fft.forward(&mut re, &mut im);
            for (j, b) in naive_slots(&coeffs).into_iter().enumerate() {
                assert!((Complex::new(re[j], im[j]) - b).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn inverse_inverts() {
        let fft = SpecialFft::new(1 << 12);
        let slots = 1 << 11;
        let re0: Vec<f64> = (0..slots).map(|i| (i as f64).sin()).collect();
        let im0: Vec<f64> = (0..slots).map(|i| (i as f64 * 0.3).cos()).collect();
        let (mut re, mut im) = (re0.clone(), im0.clone());
        fft.inverse(&mut re, &mut im);
        fft.forward(&mut re, &mut im);
        for j in 0..slots {
            assert!((re[j] - re0[j]).abs() < 1e-12 && (im[j] - im0[j]).abs() < 1e-12);
        }
    }
}
