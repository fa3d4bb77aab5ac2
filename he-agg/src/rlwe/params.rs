//! RLWE parameters: ring degree, ciphertext moduli Q, special moduli P, the key-switching digit
//! count; the HE-standard security check and the parameter fingerprint carried on the wire.

use crate::ring::primes;

/// HomomorphicEncryption.org standard (2018), Table 1: 128-bit classical security for uniform
/// ternary secrets and σ = 3.2 — the largest log2(QP) per ring degree.
pub const HE_STANDARD_128: [(u32, f64); 6] = [
    (10, 27.0),
    (11, 54.0),
    (12, 109.0),
    (13, 218.0),
    (14, 438.0),
    (15, 881.0),
];

/// The 128-bit bound on log2(QP) for ring degree 2^log_n, if the standard covers it.
pub fn max_log_qp_128(log_n: u32) -> Option<f64> {
    HE_STANDARD_128
        .iter()
        .find(|(l, _)| *l == log_n)
        .map(|(_, b)| *b)
}

/// Why a parameter set is refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParamsError {
    #[error("ring degree 2^{0} is outside the supported range 2^4..=2^16")]
    Degree(u32),
    #[error("no ciphertext moduli given")]
    NoModuli,
    #[error("modulus {q} is not an NTT-friendly prime below 2^62 for N = {n}")]
    BadModulus { q: u64, n: usize },
    #[error("modulus {0} appears twice")]
    DuplicateModulus(u64),
    #[error("cannot generate {count} primes of {bits} bits for N = {n}")]
    PrimeGeneration { bits: u32, count: usize, n: usize },
    #[error("digit count {dnum} must be between 1 and the number of ciphertext moduli ({q})")]
    Digits { dnum: usize, q: usize },
    #[error(
        "insecure parameters: log2(QP) = {log_qp:.1} exceeds {bound:.0} bits, the 128-bit bound \
         of the HE standard for N = 2^{log_n}"
    )]
    Insecure { log_n: u32, log_qp: f64, bound: f64 },
    #[error(
        "special modulus P has {p_bits:.1} bits but a key-switching digit has {digit_bits:.1}: \
         P must be at least as large as every digit, or key switching drowns the message"
    )]
    SpecialModulusTooSmall { p_bits: f64, digit_bits: f64 },
    #[error("the HE standard gives no 128-bit bound for N = 2^{0}; use 2^10..=2^15")]
    Uncovered(u32),
    #[error("scale 2^{0} is not usable: it must be in 2^1..2^120")]
    Scale(f64),
}

/// RLWE parameters. Build with [`RlweParams::new`] (checked for 128-bit security) or, in tests
/// only, [`RlweParams::insecure_for_tests`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RlweParams {
    log_n: u32,
    q: Vec<u64>,
    p: Vec<u64>,
    dnum: usize,
    insecure: bool,
}

impl RlweParams {
    /// Checked parameters: moduli NTT-friendly and distinct, digit count valid, and log2(QP)
    /// within the HE standard's 128-bit bound.
    pub fn new(log_n: u32, q: Vec<u64>, p: Vec<u64>, dnum: usize) -> Result<Self, ParamsError> {
        let params = Self::unchecked(log_n, q, p, dnum, false)?;
        let bound = max_log_qp_128(log_n).ok_or(ParamsError::Uncovered(log_n))?;
        let log_qp = params.log_qp();
        if log_qp > bound {
            return Err(ParamsError::Insecure {
                log_n,
                log_qp,
                bound,
            });
        }
        Ok(params)
    }

    /// Parameters without the security check, for fast tests. They carry an `insecure` mark that
    /// is part of their fingerprint, so nothing made with them is accepted by secure parameters.
    #[doc(hidden)]
    pub fn insecure_for_tests(
        log_n: u32,
        q: Vec<u64>,
        p: Vec<u64>,
        dnum: usize,
    ) -> Result<Self, ParamsError> {
        Self::unchecked(log_n, q, p, dnum, true)
    }

    fn unchecked(
        log_n: u32,
        q: Vec<u64>,
        p: Vec<u64>,
        dnum: usize,
        insecure: bool,
    ) -> Result<Self, ParamsError> {
        if !(4..=16).contains(&log_n) {
            return Err(ParamsError::Degree(log_n));
        }
        if q.is_empty() {
            return Err(ParamsError::NoModuli);
        }
        let n = 1usize << log_n;
        let all: Vec<u64> = q.iter().chain(&p).copied().collect();
        for (i, &m) in all.iter().enumerate() {
            if all[..i].contains(&m) {
                return Err(ParamsError::DuplicateModulus(m));
            }
            if !primes::is_ntt_prime(m, n) {
                return Err(ParamsError::BadModulus { q: m, n });
            }
        }
        if dnum == 0 || dnum > q.len() {
            return Err(ParamsError::Digits { dnum, q: q.len() });
        }
        let params = Self {
            log_n,
            q,
            p,
            dnum,
            insecure,
        };
        if !params.p.is_empty() {
            let p_bits: f64 = params.p.iter().map(|&x| (x as f64).log2()).sum();
            let digit_bits = params
                .digit_ranges()
                .iter()
                .map(|r| {
                    params.q[r.clone()]
                        .iter()
                        .map(|&x| (x as f64).log2())
                        .sum::<f64>()
                })
                .fold(0.0, f64::max);
            // one bit of slack: primes "of b bits" differ slightly in size
            if p_bits + 1.0 < digit_bits {
                return Err(ParamsError::SpecialModulusTooSmall { p_bits, digit_bits });
            }
        }
        Ok(params)
    }

    /// The ciphertext moduli of each key-switching digit: `dnum` contiguous groups, as equal as
    /// possible, larger groups first.
    pub fn digit_ranges(&self) -> Vec<std::ops::Range<usize>> {
        let l = self.q.len();
        let mut start = 0;
        (0..self.dnum)
            .map(|j| {
                let len = l / self.dnum + usize::from(j < l % self.dnum);
                start += len;
                start - len..start
            })
            .collect()
    }

    /// Generates primes of the given bit sizes (largest first below 2^bits, all distinct).
    pub fn primes_for(
        log_n: u32,
        q_bits: &[u32],
        p_bits: &[u32],
    ) -> Result<(Vec<u64>, Vec<u64>), ParamsError> {
        let n = 1usize << log_n;
        let mut chosen: Vec<u64> = Vec::new();
        let mut pick = |bits: u32| -> Result<u64, ParamsError> {
            let q = primes::generate_primes(bits, n, 1, &chosen)
                .and_then(|v| v.first().copied())
                .ok_or(ParamsError::PrimeGeneration { bits, count: 1, n })?;
            chosen.push(q);
            Ok(q)
        };
        let q = q_bits
            .iter()
            .map(|&b| pick(b))
            .collect::<Result<Vec<_>, _>>()?;
        let p = p_bits
            .iter()
            .map(|&b| pick(b))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((q, p))
    }

    pub fn log_n(&self) -> u32 {
        self.log_n
    }
    pub fn n(&self) -> usize {
        1 << self.log_n
    }
    pub fn q(&self) -> &[u64] {
        &self.q
    }
    pub fn p(&self) -> &[u64] {
        &self.p
    }
    pub fn dnum(&self) -> usize {
        self.dnum
    }
    pub fn is_insecure(&self) -> bool {
        self.insecure
    }
    /// Number of ciphertext moduli (the top level).
    pub fn max_level(&self) -> usize {
        self.q.len()
    }
    pub fn log_q(&self) -> f64 {
        self.q.iter().map(|&q| (q as f64).log2()).sum()
    }
    pub fn log_qp(&self) -> f64 {
        self.log_q() + self.p.iter().map(|&p| (p as f64).log2()).sum::<f64>()
    }

    /// A hash of everything that must agree between parties for ciphertexts and keys to mean the
    /// same thing. Carried by every serialized object.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(b"HEAL rlwe parameters v1");
        h.update(&self.log_n.to_le_bytes());
        h.update(&(self.q.len() as u64).to_le_bytes());
        for q in &self.q {
            h.update(&q.to_le_bytes());
        }
        h.update(&(self.p.len() as u64).to_le_bytes());
        for p in &self.p {
            h.update(&p.to_le_bytes());
        }
        h.update(&(self.dnum as u64).to_le_bytes());
        // error distribution and secret distribution are fixed: say so in the hash
        h.update(b"gaussian sigma=3.2 bound=19; ternary uniform secret");
        h.update(&[self.insecure as u8]);
        *h.finalize().as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_table_is_enforced() {
        // N = 2^13 allows 218 bits: [60, 40, 60] passes, [60; 4] does not
        let (q, p) = RlweParams::primes_for(13, &[60, 40], &[60]).unwrap();
        assert!(RlweParams::new(13, q, p, 2).is_ok());
        let (q, p) = RlweParams::primes_for(13, &[60, 60, 60], &[60]).unwrap();
        let err = RlweParams::new(13, q.clone(), p.clone(), 3).unwrap_err();
        assert!(matches!(err, ParamsError::Insecure { log_n: 13, bound, .. } if bound == 218.0));
        assert!(err.to_string().contains("128-bit"));
        // the test-only constructor accepts it, marked
        let insecure = RlweParams::insecure_for_tests(13, q, p, 3).unwrap();
        assert!(insecure.is_insecure());
        // every table row: one bit over is refused
        for (log_n, bound) in HE_STANDARD_128 {
            let total = bound as u32 + 1;
            let count = total.div_ceil(60);
            let q_bits = vec![total.div_ceil(count); count as usize];
            let (q, p) = RlweParams::primes_for(log_n, &q_bits, &[]).unwrap();
            let total: f64 = q.iter().map(|&x| (x as f64).log2()).sum();
            if total > bound {
                assert!(matches!(
                    RlweParams::new(log_n, q, p, 1),
                    Err(ParamsError::Insecure { .. })
                ));
            }
        }
        assert_eq!(
            RlweParams::new(16, vec![], vec![], 1).unwrap_err(),
            ParamsError::NoModuli
        );
    }

    #[test]
    fn special_modulus_must_cover_every_digit() {
        let (q, p) = RlweParams::primes_for(13, &[50, 50], &[40]).unwrap();
        assert!(matches!(
            RlweParams::new(13, q.clone(), p.clone(), 1),
            Err(ParamsError::SpecialModulusTooSmall { .. })
        ));
        assert!(matches!(
            RlweParams::new(13, q, p, 2),
            Err(ParamsError::SpecialModulusTooSmall { .. })
        ));
    }

    #[test]
    fn malformed_parameters_are_refused() {
        assert_eq!(
            RlweParams::new(3, vec![17], vec![], 1).unwrap_err(),
            ParamsError::Degree(3)
        );
        assert!(matches!(
            RlweParams::new(12, vec![97], vec![], 1),
            Err(ParamsError::BadModulus { q: 97, .. })
        ));
        let (q, _) = RlweParams::primes_for(12, &[40], &[]).unwrap();
        assert_eq!(
            RlweParams::new(12, vec![q[0], q[0]], vec![], 1).unwrap_err(),
            ParamsError::DuplicateModulus(q[0])
        );
        assert_eq!(
            RlweParams::new(12, q.clone(), vec![], 2).unwrap_err(),
            ParamsError::Digits { dnum: 2, q: 1 }
        );
    }

    #[test]
    fn fingerprint_separates_parameters() {
        let (q, p) = RlweParams::primes_for(13, &[40, 30], &[45, 45]).unwrap();
        let a = RlweParams::new(13, q.clone(), p.clone(), 1).unwrap();
        let b = RlweParams::new(13, q.clone(), p.clone(), 2).unwrap();
        let c = RlweParams::insecure_for_tests(13, q, p, 1).unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
    }
}
