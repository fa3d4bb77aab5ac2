//! A CKKS context: the RLWE context of a parameter set plus the encoder's tables.

use std::sync::Arc;

use crate::ring::{RngError, ShoupConst};
use crate::rlwe::{
    Decryptor, GaloisKeys, KeyGenerator, PkEncryptor, PublicKey, RelinearizationKey, RlweContext,
    SecretKey, SkEncryptor,
};

use super::error::CkksError;
use super::fft::SpecialFft;
use super::params::Parameters;

/// Constants to lift residues modulo Q_l back to centred integers (CRT), per level.
/// x = Σ_i y_i·(Q/q_i) − v·Q with y_i = [x_i·(Q/q_i)^{-1}]_{q_i} and v = round(Σ_i y_i/q_i);
/// the sums run in `words`-word integer arithmetic, wide enough to hold Q, so the result is exact.
#[derive(Debug, Clone)]
pub(crate) struct CrtLift {
    /// y_i = x_i·factor_i mod q_i with factor_i = [(Q/q_i)^{-1}]_{q_i} for normalised input
    /// (index 0) and [(Q/q_i)^{-1}·N^{-1}]_{q_i} for input straight from an unnormalised inverse
    /// NTT (index 1), which folds the division by N into this multiplication.
    pub factor: [Vec<ShoupConst>; 2],
    /// Q/q_i as little-endian words
    pub punctured: Vec<Vec<u64>>,
    /// Q as little-endian words
    pub q: Vec<u64>,
    /// 1/q_i
    pub q_inv: Vec<f64>,
    /// number of 64-bit words (log2 Q + 2 bits rounded up)
    pub words: usize,
}

/// Everything needed to encode, encrypt, evaluate and decrypt under one parameter set.
#[derive(Debug)]
pub struct CkksContext {
    params: Parameters,
    rlwe: Arc<RlweContext>,
    pub(crate) fft: SpecialFft,
    pub(crate) crt: Vec<Option<CrtLift>>,
}

impl CkksContext {
    pub fn new(params: Parameters) -> Result<Arc<Self>, CkksError> {
        let rlwe = RlweContext::new(params.rlwe().clone())?;
        let fft = SpecialFft::new(params.n());
        let crt = (0..=params.max_level())
            .map(|level| (level >= 1).then(|| crt_lift(&rlwe, level)))
            .collect();
        Ok(Arc::new(Self {
            params,
            rlwe,
            fft,
            crt,
        }))
    }

    pub fn params(&self) -> &Parameters {
        &self.params
    }
    pub fn rlwe(&self) -> &Arc<RlweContext> {
        &self.rlwe
    }
    pub fn n(&self) -> usize {
        self.params.n()
    }
    pub fn slots(&self) -> usize {
        self.params.slots()
    }
    pub fn max_level(&self) -> usize {
        self.params.max_level()
    }
    pub fn default_scale(&self) -> f64 {
        self.params.default_scale()
    }
    pub fn fingerprint(&self) -> &[u8; 32] {
        self.rlwe.fingerprint()
    }
    /// log2 of Q at `level`.
    pub fn log_q(&self, level: usize) -> f64 {
        self.params.rlwe().q()[..level]
            .iter()
            .map(|&q| (q as f64).log2())
            .sum()
    }

    pub fn key_generator(&self) -> Result<KeyGenerator, RngError> {
        KeyGenerator::new(&self.rlwe)
    }

    pub fn pk_encryptor(&self, pk: &PublicKey) -> Result<PkEncryptor, CkksError> {
        if pk.fingerprint() != self.fingerprint() {
            return Err(CkksError::ForeignKey { what: "public key" });
        }
        Ok(PkEncryptor::new(&self.rlwe, pk)?)
    }

    /// An encryptor of public plaintexts whose randomness every party reproduces from `seed`
    /// ([`PkEncryptor::seeded_for_public`]).
    pub fn pk_encryptor_seeded_for_public(
        &self,
        pk: &PublicKey,
        seed: &crate::ring::Seed,
    ) -> Result<PkEncryptor, CkksError> {
        if pk.fingerprint() != self.fingerprint() {
            return Err(CkksError::ForeignKey { what: "public key" });
        }
        Ok(PkEncryptor::seeded_for_public(&self.rlwe, pk, seed))
    }

    pub fn sk_encryptor(&self, sk: &SecretKey) -> Result<SkEncryptor, CkksError> {
        if sk.fingerprint() != self.fingerprint() {
            return Err(CkksError::ForeignKey { what: "secret key" });
        }
        Ok(SkEncryptor::new(&self.rlwe, sk)?)
    }

    pub fn decryptor(&self, sk: &SecretKey) -> Result<Decryptor, CkksError> {
        if sk.fingerprint() != self.fingerprint() {
            return Err(CkksError::ForeignKey { what: "secret key" });
        }
        Ok(Decryptor::new(&self.rlwe, sk))
    }

    /// An evaluator with the keys it may need (either may be absent).
    pub fn evaluator(
        self: &Arc<Self>,
        rlk: Option<&RelinearizationKey>,
        galois: Option<&GaloisKeys>,
    ) -> Result<super::Evaluator, CkksError> {
        super::Evaluator::new(self, rlk, galois)
    }

    pub(crate) fn check_level(&self, level: usize) -> Result<(), CkksError> {
        if level == 0 || level > self.max_level() {
            return Err(CkksError::Level {
                level,
                max: self.max_level(),
            });
        }
        Ok(())
    }
}

fn crt_lift(rlwe: &RlweContext, level: usize) -> CrtLift {
    let moduli: Vec<_> = (0..level).map(|i| *rlwe.q_modulus(i)).collect();
    let inv_punctured: Vec<u64> = moduli
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let prod = moduli
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .fold(1u64, |acc, (_, o)| m.mul(acc, m.reduce(o.value())));
            m.inv(prod).expect("distinct primes")
        })
        .collect();
    let factor = [
        moduli
            .iter()
            .zip(&inv_punctured)
            .map(|(m, &f)| m.shoup(f))
            .collect(),
        moduli
            .iter()
            .enumerate()
            .zip(&inv_punctured)
            .map(|((i, m), &f)| m.shoup(m.mul(f, rlwe.ring().n_inv(i).w)))
            .collect(),
    ];
    let log_q: f64 = moduli.iter().map(|m| (m.value() as f64).log2()).sum();
    let words = ((log_q + 2.0) / 64.0).ceil() as usize;
    let product = |skip: Option<usize>| {
        let mut acc = vec![0u64; words];
        acc[0] = 1;
        for (j, m) in moduli.iter().enumerate() {
            if Some(j) != skip {
                mul_small_assign(&mut acc, m.value());
            }
        }
        acc
    };
    CrtLift {
        factor,
        punctured: (0..level).map(|i| product(Some(i))).collect(),
        q: product(None),
        q_inv: moduli.iter().map(|m| 1.0 / m.value() as f64).collect(),
        words,
    }
}

/// acc ← acc·m in fixed-width little-endian words (wrapping).
pub(crate) fn mul_small_assign(acc: &mut [u64], m: u64) {
    let mut carry = 0u128;
    for w in acc.iter_mut() {
        let t = *w as u128 * m as u128 + carry;
        *w = t as u64;
        carry = t >> 64;
    }
}
