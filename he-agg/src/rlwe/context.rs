//! Everything precomputed for one parameter set: the ring over Q ∪ P, digit layout for hybrid
//! key switching, rescaling and basis-extension constants.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use super::params::{ParamsError, RlweParams};
use crate::ring::{BasisExtender, Modulus, RescaleConsts, Ring, ShoupConst};

/// A parameter set made ready for computation. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct RlweContext {
    params: RlweParams,
    ring: Ring,
    fingerprint: [u8; 32],
    /// digit j covers ciphertext moduli `digits[j]` (at the top level).
    digits: Vec<Range<usize>>,
    /// rescale constants indexed by the number of limbs before rescaling (2..=L).
    rescale: Vec<Option<RescaleConsts>>,
    /// [P]_{q_i}
    p_mod_q: Vec<u64>,
    /// [P^{-1}]_{q_i}
    p_inv_mod_q: Vec<ShoupConst>,
    /// basis extension from P to Q (for ModDown)
    from_p: Option<BasisExtender>,
    /// basis extension from (a prefix of) one digit, keyed by its moduli range
    from_digit: Mutex<HashMap<(usize, usize), Arc<BasisExtender>>>,
    /// ring index lists for Q at every level and for Q_l ∪ P, to avoid re-building them per op
    q_basis: Vec<usize>,
    qp_bases: Vec<Vec<usize>>,
}

impl RlweContext {
    pub fn new(params: RlweParams) -> Result<Arc<Self>, ParamsError> {
        let moduli: Vec<u64> = params.q().iter().chain(params.p()).copied().collect();
        let ring = Ring::new(params.n(), &moduli).map_err(|e| match e {
            crate::ring::RingError::Degree(_) => ParamsError::Degree(params.log_n()),
            crate::ring::RingError::Modulus { q, n } => ParamsError::BadModulus { q, n },
            crate::ring::RingError::Duplicate(q) => ParamsError::DuplicateModulus(q),
        })?;
        let l = params.q().len();
        let k = params.p().len();
        let digits = params.digit_ranges();
        let q_basis: Vec<usize> = (0..l).collect();
        let rescale = (0..=l)
            .map(|limbs| (limbs >= 2).then(|| RescaleConsts::new(&ring, &q_basis[..limbs])))
            .collect();
        let p_mod_q: Vec<u64> = (0..l)
            .map(|i| {
                let m = ring.modulus(i);
                params
                    .p()
                    .iter()
                    .fold(1u64, |acc, &p| m.mul(acc, m.reduce(p)))
            })
            .collect();
        let p_inv_mod_q = (0..l)
            .map(|i| {
                let m = ring.modulus(i);
                m.shoup(m.inv(p_mod_q[i]).expect("P is coprime to Q"))
            })
            .collect();
        let p_basis: Vec<usize> = (l..l + k).collect();
        let from_p = (k > 0).then(|| BasisExtender::new(&ring, &p_basis));
        let qp_bases = (0..=l)
            .map(|lvl| (0..lvl).chain(l..l + k).collect())
            .collect();
        Ok(Arc::new(Self {
            fingerprint: params.fingerprint(),
            params,
            ring,
            digits,
            rescale,
            p_mod_q,
            p_inv_mod_q,
            from_p,
            from_digit: Mutex::new(HashMap::new()),
            q_basis,
            qp_bases,
        }))
    }

    pub fn params(&self) -> &RlweParams {
        &self.params
    }
    pub fn ring(&self) -> &Ring {
        &self.ring
    }
    pub fn n(&self) -> usize {
        self.ring.n()
    }
    pub fn fingerprint(&self) -> &[u8; 32] {
        &self.fingerprint
    }
    /// The number of ciphertext moduli at the top level.
    pub fn max_level(&self) -> usize {
        self.params.q().len()
    }
    pub fn num_p(&self) -> usize {
        self.params.p().len()
    }
    /// Ring indices of Q at `level` (the first `level` ciphertext moduli).
    pub fn q_basis(&self, level: usize) -> &[usize] {
        &self.q_basis[..level]
    }
    /// Ring indices of Q at `level` followed by all of P.
    pub fn qp_basis(&self, level: usize) -> &[usize] {
        &self.qp_bases[level]
    }
    /// Ring indices of the whole chain Q_L ∪ P (the basis of keys).
    pub fn key_basis(&self) -> &[usize] {
        &self.qp_bases[self.max_level()]
    }
    pub fn q_modulus(&self, i: usize) -> &Modulus {
        self.ring.modulus(i)
    }
    pub fn digits(&self) -> &[Range<usize>] {
        &self.digits
    }
    pub(crate) fn rescale_consts(&self, limbs: usize) -> &RescaleConsts {
        self.rescale[limbs]
            .as_ref()
            .expect("rescale needs two limbs or more")
    }
    pub(crate) fn p_mod_q(&self) -> &[u64] {
        &self.p_mod_q
    }
    pub(crate) fn p_inv_mod_q(&self) -> &[ShoupConst] {
        &self.p_inv_mod_q
    }
    pub(crate) fn extender_from_p(&self) -> Option<&BasisExtender> {
        self.from_p.as_ref()
    }

    /// The basis extender from ciphertext moduli `range` (a digit, possibly cut by the level).
    pub(crate) fn extender_from_digit(&self, range: Range<usize>) -> Arc<BasisExtender> {
        let mut cache = self.from_digit.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry((range.start, range.end))
            .or_insert_with(|| {
                let src: Vec<usize> = range.collect();
                Arc::new(BasisExtender::new(&self.ring, &src))
            })
            .clone()
    }

    /// The Galois element of a left rotation by `k` slots (negative: right).
    pub fn galois_element_for_rotation(&self, k: i64) -> u64 {
        let slots = (self.n() / 2) as i64;
        let mut k = k.rem_euclid(slots) as u64;
        // 5^k mod 2N by squaring; 2N is a power of two, so reduction is a mask
        let mask = 2 * self.n() as u64 - 1;
        let (mut g, mut base) = (1u64, 5u64);
        while k > 0 {
            if k & 1 == 1 {
                g = g.wrapping_mul(base) & mask;
            }
            base = base.wrapping_mul(base) & mask;
            k >>= 1;
        }
        g
    }

    /// The Galois element of complex conjugation of the slots (X ↦ X^{-1}).
    pub fn galois_element_conjugate(&self) -> u64 {
        2 * self.n() as u64 - 1
    }
}
