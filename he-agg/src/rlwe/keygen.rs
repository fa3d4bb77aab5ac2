//! Key generation for one party holding the whole secret (the multiparty layer builds the same
//! keys collectively).

use std::sync::Arc;

use zeroize::{Zeroize, Zeroizing};

use super::context::RlweContext;
use super::keys::{GaloisKey, GaloisKeys, PublicKey, RelinearizationKey, SecretKey, SwitchingKey};
use crate::ring::{Poly, Prng, RngError};

/// Generates keys with a CSPRNG seeded by the operating system.
#[derive(Debug)]
pub struct KeyGenerator {
    ctx: Arc<RlweContext>,
    prng: Prng,
}

impl KeyGenerator {
    pub fn new(ctx: &Arc<RlweContext>) -> Result<Self, RngError> {
        Ok(Self {
            ctx: ctx.clone(),
            prng: Prng::from_os()?,
        })
    }

    /// A generator driven by `prng` instead of the OS: for keys that several parties must derive
    /// identically from a secret seed they share (the consortium receiving key).
    pub fn from_prng(ctx: &Arc<RlweContext>, prng: Prng) -> Self {
        Self {
            ctx: ctx.clone(),
            prng,
        }
    }

    /// A uniform ternary secret (no sparse secrets), NTT domain over Q_L ∪ P.
    pub fn secret_key(&mut self) -> SecretKey {
        let ring = self.ctx.ring();
        let mut coeffs = self.prng.ternary(ring.n());
        let mut poly = ring.from_small_signed(&coeffs, self.ctx.key_basis());
        coeffs.zeroize();
        ring.ntt(&mut poly, self.ctx.key_basis());
        SecretKey {
            poly,
            fingerprint: *self.ctx.fingerprint(),
        }
    }

    /// A fresh encryption of zero under `sk` over Q_L: (-a·s + e, a).
    pub fn public_key(&mut self, sk: &SecretKey) -> PublicKey {
        let ctx = &self.ctx;
        let basis = ctx.q_basis(ctx.max_level());
        let a = ctx.ring().sample_uniform(&mut self.prng, basis);
        let b = rlwe_sample(ctx, &mut self.prng, sk, &a, basis);
        PublicKey {
            b,
            a,
            fingerprint: *ctx.fingerprint(),
        }
    }

    /// The relinearization key (s² → s).
    pub fn relinearization_key(&mut self, sk: &SecretKey) -> RelinearizationKey {
        let ctx = self.ctx.clone();
        let basis = ctx.q_basis(ctx.max_level());
        let s = Zeroizing::new(sk.poly.slice_limbs(0..ctx.max_level()));
        let mut s2 = ctx.ring().mul(&s, &s, basis);
        let key = self.switching_key(&s2, sk);
        s2.zeroize();
        RelinearizationKey(key)
    }

    /// The Galois key for X ↦ X^g (σ_g(s) → s).
    pub fn galois_key(&mut self, sk: &SecretKey, galois_element: u64) -> GaloisKey {
        let ctx = self.ctx.clone();
        let basis = ctx.q_basis(ctx.max_level());
        let s = Zeroizing::new(sk.poly.slice_limbs(0..ctx.max_level()));
        let mut sg = ctx.ring().automorphism_ntt(&s, galois_element, basis);
        let key = self.switching_key(&sg, sk);
        sg.zeroize();
        GaloisKey {
            galois_element,
            key,
        }
    }

    /// Galois keys for left rotations by each step in `steps` (negative: right), and for
    /// conjugation if asked. Only the keys asked for are made.
    pub fn galois_keys(&mut self, sk: &SecretKey, steps: &[i64], conjugate: bool) -> GaloisKeys {
        let mut keys = GaloisKeys::new();
        let mut elements: Vec<u64> = steps
            .iter()
            .map(|&k| self.ctx.galois_element_for_rotation(k))
            .collect();
        if conjugate {
            elements.push(self.ctx.galois_element_conjugate());
        }
        elements.sort_unstable();
        elements.dedup();
        for g in elements.into_iter().filter(|&g| g != 1) {
            keys.insert(self.galois_key(sk, g));
        }
        keys
    }

    /// A key switching from `s_from` (NTT over Q_L) to `sk`.
    pub fn switching_key(&mut self, s_from: &Poly, sk: &SecretKey) -> SwitchingKey {
        let ctx = self.ctx.clone();
        let basis = ctx.key_basis();
        let parts = ctx
            .digits()
            .iter()
            .map(|digit| {
                let a = ctx.ring().sample_uniform(&mut self.prng, basis);
                let mut b = rlwe_sample(&ctx, &mut self.prng, sk, &a, basis);
                add_gadget(&ctx, &mut b, s_from, digit.clone());
                (b, a)
            })
            .collect();
        SwitchingKey {
            parts,
            fingerprint: *ctx.fingerprint(),
        }
    }
}

/// -a·s + e over `basis` (a prefix of Q, or Q_L ∪ P), NTT domain, fresh Gaussian e.
pub(crate) fn rlwe_sample(
    ctx: &RlweContext,
    prng: &mut Prng,
    sk: &SecretKey,
    a: &Poly,
    basis: &[usize],
) -> Poly {
    let ring = ctx.ring();
    let e = prng.gaussian(ring.n());
    let mut b = ring.from_small_signed(&e, basis);
    ring.ntt(&mut b, basis);
    let s = Zeroizing::new(select_limbs(&sk.poly, ctx, basis));
    let as_ = ring.mul(a, &s, basis);
    ring.sub_assign(&mut b, &as_, basis);
    b
}

/// b += P·s' on the limbs of digit `digit` (P·Q̃_j ≡ P mod q_i for q_i in the digit, 0 elsewhere).
pub(crate) fn add_gadget(
    ctx: &RlweContext,
    b: &mut Poly,
    s_from: &Poly,
    digit: std::ops::Range<usize>,
) {
    for i in digit {
        let m = *ctx.q_modulus(i);
        let p = m.shoup(ctx.p_mod_q()[i]);
        for (x, &s) in b.limb_mut(i).iter_mut().zip(s_from.limb(i)) {
            *x = m.add(*x, m.mul_shoup(s, p));
        }
    }
}

/// The limbs of a key-basis polynomial (Q_L ∪ P) that `basis` names (ring indices equal key
/// positions, since the key basis is the whole chain in order).
pub(crate) fn select_limbs(key_poly: &Poly, ctx: &RlweContext, basis: &[usize]) -> Poly {
    if basis == ctx.key_basis() {
        return key_poly.clone();
    }
    let mut out = Poly::zero(ctx.n(), basis.len());
    for (pos, &idx) in basis.iter().enumerate() {
        out.limb_mut(pos).copy_from_slice(key_poly.limb(idx));
    }
    out
}
