//! Randomness: a ChaCha20 CSPRNG seeded by the operating system (or by a public seed for common
//! reference polynomials and seeded ciphertexts), and the distributions RLWE needs: uniform
//! modulo q, uniform ternary, and a discrete Gaussian of σ = 3.2 bounded at 6σ.

use chacha20::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use zeroize::Zeroize;

use super::modulus::Modulus;

/// A 32-byte seed for ChaCha20.
pub type Seed = [u8; 32];

/// Standard deviation of the error distribution (HE standard).
pub const GAUSSIAN_SIGMA: f64 = 3.2;
/// Samples are bounded by ⌊6σ⌋ in absolute value.
pub const GAUSSIAN_BOUND: i64 = 19;

/// The operating system refused to provide randomness.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the operating system's random number generator failed: {0}")]
pub struct RngError(String);

/// A cryptographically secure generator (ChaCha20). Its state is wiped on drop.
pub struct Prng {
    rng: ChaCha20Rng,
    buf: [u8; 512],
    pos: usize,
}

impl std::fmt::Debug for Prng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prng { .. }")
    }
}

impl Drop for Prng {
    fn drop(&mut self) {
        self.buf.zeroize();
        // ChaCha20Rng zeroizes its own key and buffer (chacha20's `zeroize` feature).
    }
}

impl Prng {
    /// A generator seeded with 32 bytes from the operating system.
    pub fn from_os() -> Result<Self, RngError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| RngError(e.to_string()))?;
        let prng = Self::from_seed(&seed);
        seed.zeroize();
        Ok(prng)
    }

    /// A deterministic generator: the same seed gives the same stream on every machine.
    pub fn from_seed(seed: &Seed) -> Self {
        Self::from_seed_stream(seed, 0)
    }

    /// A deterministic generator on ChaCha20 stream `stream` of `seed` (independent streams).
    pub fn from_seed_stream(seed: &Seed, stream: u64) -> Self {
        let mut rng = ChaCha20Rng::from_seed(*seed);
        rng.set_stream(stream);
        Self {
            rng,
            buf: [0; 512],
            pos: 512,
        }
    }

    /// A fresh 32-byte seed drawn from this generator.
    pub fn seed(&mut self) -> Seed {
        let mut s = [0u8; 32];
        self.fill_bytes(&mut s);
        s
    }

    pub fn fill_bytes(&mut self, out: &mut [u8]) {
        self.rng.fill_bytes(out);
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        if self.pos + 8 > self.buf.len() {
            self.rng.fill_bytes(&mut self.buf);
            self.pos = 0;
        }
        let v = u64::from_le_bytes(
            self.buf[self.pos..self.pos + 8]
                .try_into()
                .expect("8 bytes"),
        );
        self.pos += 8;
        v
    }

    /// Fills `out` with values uniform in [0, q) (rejection sampling on the bit length of q).
    pub fn fill_uniform(&mut self, m: &Modulus, out: &mut [u64]) {
        let q = m.value();
        let mask = if m.bits() == 64 {
            u64::MAX
        } else {
            (1u64 << m.bits()) - 1
        };
        let mut filled = 0;
        // what is buffered first, then the rest of the stream in bulk: the same words, in the
        // same order, as successive `next_u64` calls (and the stream left where they leave it)
        while filled < out.len() && self.pos + 8 <= self.buf.len() {
            let x = self.next_u64() & mask;
            if x < q {
                out[filled] = x;
                filled += 1;
            }
        }
        while filled < out.len() {
            let mut bytes = zeroize::Zeroizing::new(vec![0u8; (out.len() - filled) * 8]);
            self.rng.fill_bytes(&mut bytes);
            for w in bytes.chunks_exact(8) {
                let x = u64::from_le_bytes(w.try_into().expect("8 bytes")) & mask;
                if x < q {
                    out[filled] = x;
                    filled += 1;
                }
            }
        }
    }

    /// Coefficients uniform in {-1, 0, 1}.
    pub fn ternary(&mut self, n: usize) -> Vec<i64> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let mut word = self.next_u64();
            for _ in 0..32 {
                let t = word & 3;
                word >>= 2;
                if t < 3 && out.len() < n {
                    out.push(t as i64 - 1);
                }
            }
        }
        out
    }

    /// Coefficients from the discrete Gaussian of σ = 3.2 on [-19, 19] (inversion of a 64-bit
    /// cumulative table). The 64-bit uniform r of a sample is drawn lazily: its top 12 bits
    /// decide the sample unless a threshold falls inside their interval (under 1% of draws),
    /// and only then are its other 52 bits drawn. The samples are exactly those of a full r
    /// each, from about a fifth of the random bytes (ChaCha20 was a quarter of an encryption).
    pub fn gaussian(&mut self, n: usize) -> Vec<i64> {
        let cdt = cdt();
        let mut out = Vec::with_capacity(n);
        'words: loop {
            let mut w = self.next_u64();
            // five 12-bit prefixes per word
            for _ in 0..5 {
                if out.len() == n {
                    break 'words;
                }
                let top = w & (PREFIXES as u64 - 1);
                w >>= PREFIX_BITS;
                let v = match cdt.by_prefix[top as usize] {
                    UNRESOLVED => {
                        cdt.sample((top << (64 - PREFIX_BITS)) | (self.next_u64() >> PREFIX_BITS))
                    }
                    count => count as i64 - GAUSSIAN_BOUND,
                };
                out.push(v);
            }
        }
        out
    }
}

/// Inversion sampling of the bounded discrete Gaussian from a 64-bit uniform r: the sample is
/// the number of cumulative thresholds at or below r (minus B). A table on the top byte of r
/// gives that count directly for most r; only bytes that a threshold falls in need comparisons.
pub(crate) struct Cdt {
    /// cumulative probabilities of -B..B-1, scaled to 2^64 (the last value, B, takes the rest)
    thresholds: Vec<u64>,
    /// per top byte: (thresholds certainly ≤ r, thresholds possibly ≤ r)
    buckets: [(u8, u8); 256],
    /// per top 12 bits: the count of thresholds ≤ r when those bits decide it, else UNRESOLVED
    by_prefix: Box<[u8; PREFIXES]>,
}

const PREFIX_BITS: u32 = 12;
const PREFIXES: usize = 1 << PREFIX_BITS;
const UNRESOLVED: u8 = u8::MAX;

impl Cdt {
    /// The cumulative thresholds (a sample is their count at or below r, minus B).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn thresholds(&self) -> &[u64] {
        &self.thresholds
    }

    #[inline]
    pub(crate) fn sample(&self, r: u64) -> i64 {
        let (lo, hi) = self.buckets[(r >> 56) as usize];
        let extra: u8 = self.thresholds[lo as usize..hi as usize]
            .iter()
            .map(|&t| u8::from(t <= r))
            .sum();
        (lo + extra) as i64 - GAUSSIAN_BOUND
    }
}

/// The Gaussian sampler's cumulative thresholds (a device samples with them).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn cdt_thresholds() -> &'static [u64] {
    cdt().thresholds()
}

pub(crate) fn cdt() -> &'static Cdt {
    static TABLE: std::sync::OnceLock<Cdt> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let weights: Vec<f64> = (-GAUSSIAN_BOUND..=GAUSSIAN_BOUND)
            .map(|x| (-((x * x) as f64) / (2.0 * GAUSSIAN_SIGMA * GAUSSIAN_SIGMA)).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let thresholds: Vec<u64> = weights[..weights.len() - 1]
            .iter()
            .map(|w| {
                acc += w / total;
                (acc * 2f64.powi(64)).min(u64::MAX as f64) as u64
            })
            .collect();
        let count_le = |r: u64| thresholds.iter().filter(|&&t| t <= r).count() as u8;
        let mut buckets = [(0u8, 0u8); 256];
        for (b, bucket) in buckets.iter_mut().enumerate() {
            let start = (b as u64) << 56;
            *bucket = (count_le(start), count_le(start | ((1u64 << 56) - 1)));
        }
        let mut by_prefix = Box::new([0u8; PREFIXES]);
        for (h, entry) in by_prefix.iter_mut().enumerate() {
            let start = (h as u64) << (64 - PREFIX_BITS);
            let (lo, hi) = (count_le(start), count_le(start | (u64::MAX >> PREFIX_BITS)));
            *entry = if lo == hi { lo } else { UNRESOLVED };
        }
        Cdt {
            thresholds,
            buckets,
            by_prefix,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_uniform_words_are_those_of_successive_draws() {
        // a 20-bit modulus rejects often, so the refills land anywhere in a word run
        for bits in [20u32, 50, 60] {
            let m =
                Modulus::new(crate::ring::primes::generate_primes(bits, 16, 1, &[]).unwrap()[0]);
            for skip in [0usize, 3, 63, 64] {
                let seed = [bits as u8; 32];
                let (mut a, mut b) = (Prng::from_seed(&seed), Prng::from_seed(&seed));
                for _ in 0..skip {
                    a.next_u64();
                    b.next_u64();
                }
                let mut fast = vec![0u64; 1000];
                a.fill_uniform(&m, &mut fast);
                let mask = (1u64 << m.bits()) - 1;
                let slow: Vec<u64> = (0..1000)
                    .map(|_| {
                        loop {
                            let x = b.next_u64() & mask;
                            if x < m.value() {
                                break x;
                            }
                        }
                    })
                    .collect();
                assert_eq!(fast, slow, "{bits} bits after {skip} words");
                // and the stream goes on alike
                assert_eq!(a.next_u64(), b.next_u64());
            }
        }
    }

    #[test]
    fn seeded_streams_are_reproducible_and_independent() {
        let seed = [7u8; 32];
        let m = Modulus::new(1152921504606830593);
        let (mut a, mut b) = (vec![0; 64], vec![0; 64]);
        Prng::from_seed(&seed).fill_uniform(&m, &mut a);
        Prng::from_seed(&seed).fill_uniform(&m, &mut b);
        assert_eq!(a, b);
        Prng::from_seed_stream(&seed, 1).fill_uniform(&m, &mut b);
        assert_ne!(a, b);
        let mut os1 = Prng::from_os().unwrap();
        let mut os2 = Prng::from_os().unwrap();
        assert_ne!(os1.seed(), os2.seed());
    }

    #[test]
    fn uniform_is_in_range_and_balanced() {
        let m = Modulus::new(65537);
        let mut prng = Prng::from_seed(&[1; 32]);
        let mut v = vec![0; 100_000];
        prng.fill_uniform(&m, &mut v);
        assert!(v.iter().all(|&x| x < 65537));
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        // mean of U[0, q) is (q-1)/2 with standard error q/sqrt(12·n) ≈ 60
        assert!((mean - 32768.0).abs() < 400.0, "mean {mean}");
    }

    #[test]
    fn ternary_distribution() {
        let mut prng = Prng::from_seed(&[2; 32]);
        let v = prng.ternary(90_000);
        assert_eq!(v.len(), 90_000);
        for t in -1..=1 {
            let c = v.iter().filter(|&&x| x == t).count();
            assert!((c as i64 - 30_000).abs() < 600, "{t}: {c}");
        }
    }

    #[test]
    fn gaussian_moments_and_bound() {
        let mut prng = Prng::from_seed(&[3; 32]);
        let v = prng.gaussian(200_000);
        assert!(v.iter().all(|x| x.abs() <= GAUSSIAN_BOUND));
        let mean = v.iter().sum::<i64>() as f64 / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.05, "mean {mean}");
        // σ² = 10.24; standard error of the variance estimate ≈ σ²·sqrt(2/n) ≈ 0.03
        assert!((var - 10.24).abs() < 0.2, "variance {var}");
    }

    #[test]
    fn the_lazy_prefix_table_agrees_with_the_full_inversion() {
        let c = cdt();
        let mut unresolved = 0;
        for (h, &entry) in c.by_prefix.iter().enumerate() {
            let start = (h as u64) << (64 - PREFIX_BITS);
            let end = start | (u64::MAX >> PREFIX_BITS);
            if entry == UNRESOLVED {
                unresolved += 1;
                // a threshold lies inside: the two ends differ
                assert_ne!(c.sample(start), c.sample(end), "prefix {h}");
            } else {
                for r in [start, start + 1, end / 2 + start / 2, end] {
                    assert_eq!(entry as i64 - GAUSSIAN_BOUND, c.sample(r), "prefix {h}");
                }
            }
        }
        // at most one prefix per threshold: under 1% of draws need the other 52 bits
        assert!(unresolved <= c.thresholds.len(), "{unresolved}");
    }

    #[test]
    fn gaussian_table_inverts_the_cdf() {
        let c = cdt();
        // exhaustive over the bucket boundaries and the thresholds themselves
        let naive =
            |r: u64| c.thresholds.iter().filter(|&&t| t <= r).count() as i64 - GAUSSIAN_BOUND;
        for &t in &c.thresholds {
            for r in [t.saturating_sub(1), t, t.saturating_add(1)] {
                assert_eq!(c.sample(r), naive(r));
            }
        }
        for b in 0..256u64 {
            for r in [b << 56, (b << 56) | ((1 << 56) - 1)] {
                assert_eq!(c.sample(r), naive(r));
            }
        }
        assert_eq!(c.sample(0), -GAUSSIAN_BOUND);
        assert_eq!(c.sample(u64::MAX), GAUSSIAN_BOUND);
    }
}
