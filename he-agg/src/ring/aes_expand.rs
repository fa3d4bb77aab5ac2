//! Public uniform polynomials expanded from a 32-byte seed with AES-128 in counter mode, for the
//! round protocol's many of them (every update's a, every switcher's mask a'): AES-NI or the
//! ARMv8 crypto extensions, present wherever AVX2 or NEON is, expand 4–7× faster than ChaCha20
//! ([`super::Ring::expand_uniform`], which keys, common reference polynomials and the GPU keep).
//! Limb i is keyed by BLAKE3(seed, ring modulus index i), so any sub-basis of an expansion is
//! the expansion over that sub-basis, as with ChaCha20; 128-bit keys meet the parameters' 128-bit
//! security.

use aes::Aes128;
use ctr::cipher::{KeyIvInit, StreamCipher};

use super::{Poly, Ring, Seed, for_each_limb_heavy};

type Aes128Ctr = ctr::Ctr64LE<Aes128>;

/// Words of keystream converted per pass (4 KiB: stays in L1).
const CHUNK_WORDS: usize = 512;

impl Ring {
    /// A uniform polynomial over `basis` from the public `seed` (AES-128-CTR; see the module).
    pub fn expand_uniform_aes(&self, seed: &Seed, basis: &[usize]) -> Poly {
        let mut out = Poly::zero(self.n, basis.len());
        for_each_limb_heavy(out.data_mut(), self.n, |i, limb| {
            let m = &self.moduli[basis[i]];
            let mut input = [0u8; 40];
            input[..32].copy_from_slice(seed);
            input[32..].copy_from_slice(&(basis[i] as u64).to_le_bytes());
            let key = blake3::derive_key("HEAL uniform polynomial, AES-128-CTR v1", &input);
            let mut stream = Aes128Ctr::new((&key[..16]).into(), &[0u8; 16].into());
            let (q, bits) = (m.value(), m.bits());
            let mask = if bits == 64 {
                u64::MAX
            } else {
                (1u64 << bits) - 1
            };
            let mut buf = [0u8; CHUNK_WORDS * 8];
            let mut filled = 0;
            while filled < limb.len() {
                buf.fill(0);
                stream.apply_keystream(&mut buf);
                for w in buf.chunks_exact(8) {
                    let x = u64::from_le_bytes(w.try_into().expect("8 bytes")) & mask;
                    // rejection keeps it exactly uniform below q
                    if x < q && filled < limb.len() {
                        limb[filled] = x;
                        filled += 1;
                    }
                }
            }
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::primes::generate_primes;

    #[test]
    fn an_aes_expansion_is_uniform_below_each_modulus_deterministic_and_prefix_stable() {
        let n = 4096;
        let mut moduli = generate_primes(60, n, 1, &[]).unwrap();
        moduli.extend(generate_primes(40, n, 1, &moduli).unwrap());
        let ring = Ring::new(n, &moduli).unwrap();
        let a = ring.expand_uniform_aes(&[1; 32], &[0, 1]);
        assert_eq!(a, ring.expand_uniform_aes(&[1; 32], &[0, 1]));
        assert_ne!(a, ring.expand_uniform_aes(&[2; 32], &[0, 1]));
        // a sub-basis expands to the same limbs; each limb has its own stream
        assert_eq!(a.limb(0), ring.expand_uniform_aes(&[1; 32], &[0]).limb(0));
        assert_eq!(a.limb(1), ring.expand_uniform_aes(&[1; 32], &[1]).limb(0));
        assert_ne!(a.limb(0)[..64], a.limb(1)[..64]);
        // not ChaCha20's polynomial of the same seed
        assert_ne!(a, ring.expand_uniform(&[1; 32], &[0, 1]));
        for (i, &q) in moduli.iter().enumerate() {
            let limb = a.limb(i);
            assert!(limb.iter().all(|&x| x < q));
            // mean q/2 and top half hit half the time, within 6 standard deviations
            let mean = limb.iter().map(|&x| x as f64 / q as f64).sum::<f64>() / n as f64;
            let sd = (1.0 / 12.0 / n as f64).sqrt();
            assert!((mean - 0.5).abs() < 6.0 * sd, "limb {i}: mean {mean}");
            let high = limb.iter().filter(|&&x| x >= q / 2).count() as f64 / n as f64;
            assert!(
                (high - 0.5).abs() < 6.0 * (0.25 / n as f64).sqrt(),
                "limb {i}: {high}"
            );
        }
    }
}
