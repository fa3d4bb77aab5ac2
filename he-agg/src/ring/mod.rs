//! The ring layer: R_q = Z_q[X]/(X^N + 1) in residue-number-system form over a chain of
//! word-sized primes, with NTTs at every SIMD level ([`ntt`]), automorphisms, basis extension and sampling.
//!
//! A polynomial is a [`Poly`]: `limbs × N` words, limb `i` reduced modulo the ring modulus named by
//! the caller's basis (a list of indices into [`Ring::moduli`]). Which domain (coefficients or NTT
//! evaluations) a polynomial is in is a convention of the caller: ciphertexts, plaintexts and keys
//! live in the NTT domain; only transient values are in coefficient form.

mod aes_expand;
mod automorphism;
mod basis;
pub mod expand;
#[cfg(target_arch = "x86_64")]
pub(crate) mod float_sums;
#[cfg(target_arch = "x86_64")]
mod lanes;
pub mod limbwise;
mod modulus;
pub mod ntt;
mod par;
mod poly;
pub mod primes;
mod sampling;

pub use automorphism::GaloisPermutation;
pub use basis::{BasisExtender, RescaleConsts};
pub use modulus::{MAX_MODULUS_BITS, Modulus, ShoupConst};
pub use par::{for_each_limb, for_each_limb_heavy, for_each_limb_pair_heavy};
pub use poly::Poly;
#[cfg(feature = "cuda")]
pub(crate) use sampling::cdt_thresholds;
pub use sampling::{GAUSSIAN_BOUND, GAUSSIAN_SIGMA, Prng, RngError, Seed};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ntt::NttPlan;

/// Why a ring cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RingError {
    #[error("ring degree {0} is not a power of two in 16..=65536")]
    Degree(usize),
    #[error("modulus {q} is not an NTT-friendly prime below 2^62 for degree {n}")]
    Modulus { q: u64, n: usize },
    #[error("modulus {0} appears twice in the chain")]
    Duplicate(u64),
}

/// The ring of degree N over an ordered list of prime moduli, with NTT plans and cached
/// automorphism tables.
pub struct Ring {
    n: usize,
    log_n: u32,
    moduli: Vec<Modulus>,
    plans: Vec<NttPlan>,
    n_inv: Vec<ShoupConst>,
    galois: Mutex<HashMap<u64, Arc<GaloisPermutation>>>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("n", &self.n)
            .field(
                "moduli",
                &self.moduli.iter().map(Modulus::value).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Ring {
    pub fn new(n: usize, moduli: &[u64]) -> Result<Self, RingError> {
        if !n.is_power_of_two() || !(16..=65536).contains(&n) {
            return Err(RingError::Degree(n));
        }
        let mut plans = Vec::with_capacity(moduli.len());
        for (i, &q) in moduli.iter().enumerate() {
            if moduli[..i].contains(&q) {
                return Err(RingError::Duplicate(q));
            }
            if !primes::is_ntt_prime(q, n) {
                return Err(RingError::Modulus { q, n });
            }
            plans.push(NttPlan::new(n, q).ok_or(RingError::Modulus { q, n })?);
        }
        let moduli: Vec<Modulus> = moduli.iter().map(|&q| Modulus::new(q)).collect();
        let n_inv = moduli
            .iter()
            .map(|m| {
                m.shoup(
                    m.inv(n as u64 % m.value())
                        .expect("n is invertible mod an odd prime"),
                )
            })
            .collect();
        Ok(Self {
            n,
            log_n: n.trailing_zeros(),
            moduli,
            plans,
            n_inv,
            galois: Mutex::new(HashMap::new()),
        })
    }

    #[inline]
    pub fn n(&self) -> usize {
        self.n
    }

    #[inline]
    pub fn log_n(&self) -> u32 {
        self.log_n
    }

    #[inline]
    pub fn moduli(&self) -> &[Modulus] {
        &self.moduli
    }

    #[inline]
    pub fn modulus(&self, i: usize) -> &Modulus {
        &self.moduli[i]
    }

    /// A zero polynomial over `limbs` moduli.
    pub fn zero(&self, limbs: usize) -> Poly {
        Poly::zero(self.n, limbs)
    }

    /// Forward NTT of every limb (limb `i` modulo `moduli[basis[i]]`).
    pub fn ntt(&self, p: &mut Poly, basis: &[usize]) {
        debug_assert_eq!(p.limbs(), basis.len());
        for_each_limb_heavy(p.data_mut(), self.n, |i, limb| {
            self.plans[basis[i]].fwd(limb)
        });
    }

    /// Inverse NTT of every limb, including the division by N.
    pub fn intt(&self, p: &mut Poly, basis: &[usize]) {
        debug_assert_eq!(p.limbs(), basis.len());
        for_each_limb_heavy(p.data_mut(), self.n, |i, limb| {
            self.intt_limb(limb, basis[i])
        });
    }

    /// Inverse NTT of every limb without the division by N (the caller folds N^{-1} into a
    /// constant it multiplies by anyway).
    pub fn intt_unnormalized(&self, p: &mut Poly, basis: &[usize]) {
        debug_assert_eq!(p.limbs(), basis.len());
        for_each_limb_heavy(p.data_mut(), self.n, |i, limb| {
            self.plans[basis[i]].inv(limb)
        });
    }

    /// [N^{-1}] modulo `moduli[idx]`.
    pub fn n_inv(&self, idx: usize) -> ShoupConst {
        self.n_inv[idx]
    }

    /// Inverse NTT of one limb modulo `moduli[idx]`, including the division by N.
    pub fn intt_limb(&self, limb: &mut [u64], idx: usize) {
        self.plans[idx].inv(limb);
        limbwise::mul_const_assign(limb, self.n_inv[idx], &self.moduli[idx]);
    }

    /// Forward NTT of one limb modulo `moduli[idx]`.
    #[inline]
    pub fn ntt_limb(&self, limb: &mut [u64], idx: usize) {
        self.plans[idx].fwd(limb);
    }

    /// a += b limb-wise.
    pub fn add_assign(&self, a: &mut Poly, b: &Poly, basis: &[usize]) {
        for_each_limb(a.data_mut(), self.n, |i, la| {
            limbwise::add_assign(la, b.limb(i), &self.moduli[basis[i]])
        });
    }

    /// a -= b limb-wise.
    pub fn sub_assign(&self, a: &mut Poly, b: &Poly, basis: &[usize]) {
        for_each_limb(a.data_mut(), self.n, |i, la| {
            limbwise::sub_assign(la, b.limb(i), &self.moduli[basis[i]])
        });
    }

    /// a = -a limb-wise.
    pub fn neg_assign(&self, a: &mut Poly, basis: &[usize]) {
        for_each_limb(a.data_mut(), self.n, |i, la| {
            let m = self.moduli[basis[i]];
            for x in la.iter_mut() {
                *x = m.neg(*x);
            }
        });
    }

    /// out = a + b limb-wise, into a fresh polynomial (one pass, no copy first).
    pub fn add(&self, a: &Poly, b: &Poly, basis: &[usize]) -> Poly {
        let mut out = Poly::zero(self.n, basis.len());
        for_each_limb(out.data_mut(), self.n, |i, lo| {
            limbwise::add(lo, a.limb(i), b.limb(i), &self.moduli[basis[i]])
        });
        out
    }

    /// out = a - b limb-wise, into a fresh polynomial.
    pub fn sub(&self, a: &Poly, b: &Poly, basis: &[usize]) -> Poly {
        let mut out = Poly::zero(self.n, basis.len());
        for_each_limb(out.data_mut(), self.n, |i, lo| {
            limbwise::sub(lo, a.limb(i), b.limb(i), &self.moduli[basis[i]])
        });
        out
    }

    /// a ⊙= b (NTT domain) limb-wise.
    pub fn mul_assign(&self, a: &mut Poly, b: &Poly, basis: &[usize]) {
        for_each_limb(a.data_mut(), self.n, |i, la| {
            limbwise::mul_assign(la, b.limb(i), &self.moduli[basis[i]])
        });
    }

    /// out = a ⊙ b (NTT domain) into a fresh polynomial.
    pub fn mul(&self, a: &Poly, b: &Poly, basis: &[usize]) -> Poly {
        let mut out = Poly::zero(self.n, basis.len());
        for_each_limb(out.data_mut(), self.n, |i, lo| {
            limbwise::mul(lo, a.limb(i), b.limb(i), &self.moduli[basis[i]])
        });
        out
    }

    /// out = c + a ⊙ b (NTT domain) into a fresh polynomial, in one pass.
    pub fn mul_add(&self, c: &Poly, a: &Poly, b: &Poly, basis: &[usize]) -> Poly {
        let mut out = Poly::zero(self.n, basis.len());
        for_each_limb(out.data_mut(), self.n, |i, lo| {
            limbwise::mul_add_var(lo, c.limb(i), a.limb(i), b.limb(i), &self.moduli[basis[i]])
        });
        out
    }

    /// acc += a ⊙ b (NTT domain) limb-wise.
    pub fn mul_add_assign(&self, acc: &mut Poly, a: &Poly, b: &Poly, basis: &[usize]) {
        for_each_limb(acc.data_mut(), self.n, |i, lc| {
            limbwise::mul_add_var_assign(lc, a.limb(i), b.limb(i), &self.moduli[basis[i]])
        });
    }

    /// acc += Σ_j a_j ⊙ b_j over `basis`, reduced once per coefficient (a sum of products of
    /// many pairs, such as a switcher's Σ_k a_k·key_k).
    pub fn mul_sum_assign(&self, acc: &mut Poly, terms: &[(&Poly, &Poly)], basis: &[usize]) {
        for_each_limb(acc.data_mut(), self.n, |i, lc| {
            let limbs: Vec<(&[u64], &[u64])> =
                terms.iter().map(|(a, b)| (a.limb(i), b.limb(i))).collect();
            limbwise::mul_sum_assign(lc, &limbs, &self.moduli[basis[i]])
        });
    }

    /// a ·= c for one constant per limb (already reduced for that limb).
    pub fn mul_scalar_assign(&self, a: &mut Poly, consts: &[u64], basis: &[usize]) {
        for_each_limb(a.data_mut(), self.n, |i, la| {
            let m = &self.moduli[basis[i]];
            limbwise::mul_const_assign(la, m.shoup(consts[i]), m)
        });
    }

    /// a += c for one constant per limb; in the NTT domain this adds c to every evaluation,
    /// i.e. the constant polynomial c.
    pub fn add_scalar_assign(&self, a: &mut Poly, consts: &[u64], basis: &[usize]) {
        for_each_limb(a.data_mut(), self.n, |i, la| {
            limbwise::add_const_assign(la, consts[i], &self.moduli[basis[i]])
        });
    }

    /// Writes small signed coefficients (|c| below every modulus: noise, secrets) into every limb
    /// of a fresh polynomial (coefficient domain); coefficients past the slice are zero.
    pub fn from_small_signed(&self, coeffs: &[i64], basis: &[usize]) -> Poly {
        self.written_from(coeffs, basis, |m, c| m.reduce_small(c))
    }

    /// Writes signed coefficients of any size into every limb of a fresh polynomial
    /// (coefficient domain); coefficients past the slice are zero.
    pub fn from_signed(&self, coeffs: &[i64], basis: &[usize]) -> Poly {
        self.written_from(coeffs, basis, |m, c| m.reduce_i64(c))
    }

    /// A fresh polynomial whose every limb holds `reduce` of the coefficients (zero past the
    /// last), written once (a cleared buffer first cost a memset for each of the three
    /// polynomials of every fresh public-key encryption).
    fn written_from(
        &self,
        coeffs: &[i64],
        basis: &[usize],
        reduce: impl Fn(Modulus, i64) -> u64 + Sync + Send,
    ) -> Poly {
        let n = self.n;
        let k = coeffs.len().min(n);
        // SAFETY: every word of every limb is written, the coefficients' and the zeros past them
        unsafe {
            Poly::written(n, basis.len(), |data| {
                for_each_limb(data, n, |i, lo| {
                    let m = self.moduli[basis[i]];
                    let (head, tail) = lo.split_at_mut(k);
                    for (o, &c) in head.iter_mut().zip(coeffs) {
                        o.write(reduce(m, c));
                    }
                    for o in tail {
                        o.write(0);
                    }
                })
            })
        }
    }

    /// The permutation of NTT-domain evaluations that applies X ↦ X^g (g odd, mod 2N).
    pub fn galois_permutation(&self, g: u64) -> Arc<GaloisPermutation> {
        let g = g % (2 * self.n as u64);
        let mut cache = self.galois.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry(g)
            .or_insert_with(|| Arc::new(GaloisPermutation::new(self.n, g)))
            .clone()
    }

    /// out = σ_g(a) for `a` in the NTT domain.
    pub fn automorphism_ntt(&self, a: &Poly, g: u64, basis: &[usize]) -> Poly {
        let perm = self.galois_permutation(g);
        let n = self.n;
        // SAFETY: `apply_into` writes every word of each limb (it asserts a limb's length)
        unsafe {
            Poly::written(n, basis.len(), |data| {
                for_each_limb(data, n, |i, lo| perm.apply_into(a.limb(i), lo))
            })
        }
    }

    /// Samples a polynomial uniform modulo every limb (directly in either domain: the uniform
    /// distribution is the same in both).
    pub fn sample_uniform(&self, prng: &mut Prng, basis: &[usize]) -> Poly {
        let mut out = Poly::zero(self.n, basis.len());
        for (i, limb) in out.data_mut().chunks_mut(self.n).enumerate() {
            prng.fill_uniform(&self.moduli[basis[i]], limb);
        }
        out
    }

    /// Expands a uniform polynomial from a public seed. Limb `i` is drawn from its own ChaCha20
    /// stream (numbered by the ring modulus index), so any sub-basis of the expansion equals the
    /// expansion over that sub-basis: a seeded ciphertext at a lower level re-expands the same.
    pub fn expand_uniform(&self, seed: &Seed, basis: &[usize]) -> Poly {
        let mut out = Poly::zero(self.n, basis.len());
        for_each_limb_heavy(out.data_mut(), self.n, |i, limb| {
            let mut prng = Prng::from_seed_stream(seed, basis[i] as u64);
            prng.fill_uniform(&self.moduli[basis[i]], limb);
        });
        out
    }
}

#[cfg(test)]
mod tests;
