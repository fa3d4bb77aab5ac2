//! Samples expanded from a seed with a fixed layout on its ChaCha20 stream (stream 0, 64-bit
//! block counter), so that any coefficient can be made on its own: a GPU makes them all at once
//! (`heal_sample` in `gpu/kernels.rs`) and equals this code word for word.
//!
//! - ternary and Gaussian: coefficient j from stream word j;
//! - flooding: coefficients 2p and 2p + 1 from words 4p..4p+4 (Box–Muller on the first two, a
//!   uniform fine part for each from the other two).
//!
//! Box–Muller here uses no libm: its logarithm and sine/cosine are fixed polynomials evaluated
//! with correctly rounded operations only (+, −, ×, ÷, √, fused multiply-add), which IEEE 754
//! makes identical on every CPU and GPU.

use super::sampling::{Prng, Seed, cdt};

/// Uniform in {-1, 0, 1} from one word (⌊3w/2^64⌋ − 1; bias below 2^-62).
#[inline]
pub(crate) fn ternary_word(w: u64) -> i64 {
    ((w as u128 * 3) >> 64) as i64 - 1
}

/// N coefficients uniform in {-1, 0, 1}.
pub fn ternary(seed: &Seed, n: usize) -> Vec<i64> {
    let mut prng = Prng::from_seed(seed);
    (0..n).map(|_| ternary_word(prng.next_u64())).collect()
}

/// N coefficients of the discrete Gaussian of σ = 3.2 on [-19, 19].
pub fn gaussian(seed: &Seed, n: usize) -> Vec<i64> {
    let table = cdt();
    let mut prng = Prng::from_seed(seed);
    (0..n).map(|_| table.sample(prng.next_u64())).collect()
}

/// The largest flooding σ the sampler takes (its fine part then needs ≤ 50 bits of a word).
pub const MAX_FLOODING_SIGMA: f64 = 1.2676506002282294e30; // 2^100

/// Bits of the uniform fine part added below the float's resolution at σ.
pub fn fine_bits(sigma: f64) -> u32 {
    (sigma.log2() - 50.0).max(0.0).ceil() as u32
}

/// N coefficients of a Gaussian of standard deviation `sigma` (1 ≤ σ ≤ 2^100) for noise
/// flooding. A float sample of σ ≈ 2^70 has only its top 53 bits random, which would leave the
/// low bits of whatever it floods readable, so a uniform integer below the float's resolution is
/// added: every bit of the result is smoothed. Samples never exceed 8.6σ (Box–Muller on uniforms
/// of 53 bits: √(2·53·ln 2) < 8.6).
pub fn flooding(seed: &Seed, n: usize, sigma: f64) -> Vec<i128> {
    debug_assert!((1.0..=MAX_FLOODING_SIGMA).contains(&sigma));
    let mut prng = Prng::from_seed(seed);
    let mut out = Vec::with_capacity(n + 1);
    fill_flooding(&mut prng, &mut out, n, sigma);
    out.truncate(n);
    out
}

crate::simd::dispatch! {
    /// Pairs of flooding samples until `out` holds `n`: compiled with fused multiply-adds where
    /// the CPU has them (the polynomials' `mul_add` is otherwise a library call; the result is
    /// the same, fma being correctly rounded either way).
    fn fill_flooding(prng: &mut Prng, out: &mut Vec<i128>, n: usize, sigma: f64) {
        let fine = fine_bits(sigma);
        while out.len() < n {
            let w = [
                prng.next_u64(),
                prng.next_u64(),
                prng.next_u64(),
                prng.next_u64(),
            ];
            let (a, b) = flooding_pair(w, sigma, fine);
            out.push(a);
            out.push(b);
        }
    }
}

/// Two flooding samples from four stream words.
#[inline(always)]
pub(crate) fn flooding_pair(w: [u64; 4], sigma: f64, fine_bits: u32) -> (i128, i128) {
    let (z0, z1) = box_muller(w[0], w[1], sigma);
    (
        z0.round() as i128 + fine_part(w[2], fine_bits),
        z1.round() as i128 + fine_part(w[3], fine_bits),
    )
}

/// Uniform in [-2^(bits-1), 2^(bits-1)) from the top `bits` of a word (0 when bits = 0).
#[inline(always)]
fn fine_part(w: u64, bits: u32) -> i128 {
    if bits == 0 {
        0
    } else {
        (w >> (64 - bits)) as i128 - (1i128 << (bits - 1))
    }
}

/// Box–Muller on two words: uniforms u1 ∈ (0, 1] and u2 ∈ [0, 1) of 53 bits, then
/// r = σ·√(−2 ln u1) and (r·cos 2πu2, r·sin 2πu2).
#[inline(always)]
pub(crate) fn box_muller(w1: u64, w2: u64, sigma: f64) -> (f64, f64) {
    let k = constants();
    let u1 = ((w1 >> 11) + 1) as f64 * k.two_m53;
    let u2 = (w2 >> 11) as f64 * k.two_m53;
    let r = (-2.0 * ln(u1, k)).sqrt() * sigma;
    let (s, c) = sin_cos_turns(u2, k);
    (r * c, r * s)
}

/// Terms of the series the polynomials use.
const LN_TERMS: usize = 12;
const TRIG_TERMS: usize = 10;

/// The polynomials' constants, computed once in f64 (the kernel receives these same words).
#[derive(Debug, Clone)]
pub(crate) struct BoxMullerConstants {
    /// 1/(2k+1) for k = 0..LN_TERMS
    pub ln: [f64; LN_TERMS],
    /// (−1)^k/(2k+1)! for k = 0..TRIG_TERMS
    pub sin: [f64; TRIG_TERMS],
    /// (−1)^k/(2k)! for k = 0..TRIG_TERMS
    pub cos: [f64; TRIG_TERMS],
    pub ln2: f64,
    pub sqrt2: f64,
    pub half_pi: f64,
    pub two_m53: f64,
}

impl BoxMullerConstants {
    /// The words in the order the kernel reads them.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn to_words(&self) -> Vec<f64> {
        let mut v = Vec::with_capacity(LN_TERMS + 2 * TRIG_TERMS + 4);
        v.extend_from_slice(&self.ln);
        v.extend_from_slice(&self.sin);
        v.extend_from_slice(&self.cos);
        v.extend_from_slice(&[self.ln2, self.sqrt2, self.half_pi, self.two_m53]);
        v
    }
}

pub(crate) fn constants() -> &'static BoxMullerConstants {
    static K: std::sync::OnceLock<BoxMullerConstants> = std::sync::OnceLock::new();
    K.get_or_init(|| {
        let mut ln = [0.0; LN_TERMS];
        for (k, c) in ln.iter_mut().enumerate() {
            *c = 1.0 / (2 * k + 1) as f64;
        }
        let (mut sin, mut cos) = ([0.0; TRIG_TERMS], [0.0; TRIG_TERMS]);
        let mut fact = 1.0f64; // (2k)!
        for k in 0..TRIG_TERMS {
            if k > 0 {
                fact *= ((2 * k - 1) * (2 * k)) as f64;
            }
            let sign = if k % 2 == 0 { 1.0 } else { -1.0 };
            cos[k] = sign / fact;
            sin[k] = sign / (fact * (2 * k + 1) as f64);
        }
        BoxMullerConstants {
            ln,
            sin,
            cos,
            ln2: std::f64::consts::LN_2,
            sqrt2: std::f64::consts::SQRT_2,
            half_pi: std::f64::consts::FRAC_PI_2,
            two_m53: 1.0 / (1u64 << 53) as f64,
        }
    })
}

/// Horner's rule with fused multiply-adds: Σ c_k·t^k.
#[inline(always)]
fn horner(c: &[f64], t: f64) -> f64 {
    c.iter().rev().fold(0.0, |acc, &ck| acc.mul_add(t, ck))
}

/// ln x for a normal x > 0: x = m·2^e with m ∈ [√2/2, √2), ln m = 2·atanh((m−1)/(m+1)).
#[inline(always)]
fn ln(x: f64, k: &BoxMullerConstants) -> f64 {
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    if m > k.sqrt2 {
        m *= 0.5;
        e += 1;
    }
    let f = (m - 1.0) / (m + 1.0);
    let lnm = 2.0 * f * horner(&k.ln, f * f);
    (e as f64).mul_add(k.ln2, lnm)
}

/// (sin 2πu, cos 2πu) for u ∈ [0, 1): the quadrant and the reflection at π/4 are exact, the
/// polynomials run on [0, π/4].
#[inline(always)]
fn sin_cos_turns(u: f64, k: &BoxMullerConstants) -> (f64, f64) {
    let v = u * 4.0;
    let q = v as u32; // 0..=3 (v < 4)
    let mut r = v - q as f64;
    let swap = r > 0.5;
    if swap {
        r = 1.0 - r;
    }
    let theta = r * k.half_pi;
    let t = theta * theta;
    let (mut s, mut c) = (theta * horner(&k.sin, t), horner(&k.cos, t));
    if swap {
        std::mem::swap(&mut s, &mut c);
    }
    match q {
        0 => (s, c),
        1 => (c, -s),
        2 => (-s, -c),
        _ => (-c, s),
    }
}

impl Prng {
    /// Coefficients from a Gaussian of standard deviation `sigma` (1 ≤ σ ≤ 2^100), for noise
    /// flooding: a fresh seed from this generator, expanded as [`flooding`] does (the layout a
    /// GPU reproduces word for word).
    pub fn gaussian_flooding(&mut self, n: usize, sigma: f64) -> Vec<i128> {
        let seed = zeroize::Zeroizing::new(self.seed());
        flooding(&seed, n, sigma)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_polynomials_match_libm() {
        let k = constants();
        for i in 1..=10_000u64 {
            let x = i as f64 / 10_000.0;
            let (a, b) = (ln(x, k), x.ln());
            assert!(
                (a - b).abs() <= 4e-16 * b.abs().max(1.0),
                "ln {x}: {a} vs {b}"
            );
        }
        assert_eq!(ln(1.0, k), 0.0);
        let tiny = 2f64.powi(-53);
        assert!((ln(tiny, k) - tiny.ln()).abs() < 1e-14);
        for i in 0..10_000u64 {
            let u = i as f64 / 10_000.0;
            let (s, c) = sin_cos_turns(u, k);
            let (s2, c2) = (std::f64::consts::TAU * u).sin_cos();
            assert!((s - s2).abs() < 1e-15 && (c - c2).abs() < 1e-15, "{u}");
        }
    }

    #[test]
    fn samples_follow_their_layout() {
        let seed = [5u8; 32];
        let mut words = Prng::from_seed(&seed);
        let w: Vec<u64> = (0..16).map(|_| words.next_u64()).collect();
        let t = ternary(&seed, 16);
        let g = gaussian(&seed, 16);
        for j in 0..16 {
            assert_eq!(t[j], ternary_word(w[j]));
            assert_eq!(g[j], cdt().sample(w[j]));
        }
        let sigma = 2f64.powi(70);
        let f = flooding(&seed, 7, sigma);
        assert_eq!(f.len(), 7);
        let (a, b) = flooding_pair([w[4], w[5], w[6], w[7]], sigma, fine_bits(sigma));
        assert_eq!((f[2], f[3]), (a, b));
        assert_eq!(fine_bits(sigma), 20);
        assert_eq!(fine_bits(2f64.powi(40)), 0);
    }

    #[test]
    fn ternary_is_balanced() {
        let v = ternary(&[2; 32], 90_000);
        for t in -1..=1 {
            let c = v.iter().filter(|&&x| x == t).count();
            assert!((c as i64 - 30_000).abs() < 600, "{t}: {c}");
        }
    }

    #[test]
    fn flooding_variance_bound_and_low_bits() {
        for log_sigma in [20, 70, 100] {
            let sigma = 2f64.powi(log_sigma);
            let v = flooding(&[4; 32], 100_000, sigma);
            let var = v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / v.len() as f64;
            let ratio = var.sqrt() / sigma;
            assert!((ratio - 1.0).abs() < 0.02, "σ ratio {ratio}");
            assert!(v.iter().all(|x| (x.abs() as f64) <= 8.6 * sigma));
            // every low bit is used: each of the 8 lowest bits is set in about half the samples
            for bit in 0..8 {
                let ones = v.iter().filter(|&&x| (x >> bit) & 1 == 1).count();
                assert!(
                    (ones as i64 - 50_000).abs() < 1_500,
                    "σ 2^{log_sigma} bit {bit}: {ones}"
                );
            }
        }
    }
}
