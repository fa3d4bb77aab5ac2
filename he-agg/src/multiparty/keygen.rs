//! Collective key generation: each party turns its secret share into a public share; the sum of
//! the shares is a key for s = Σ s_i.

use std::sync::Arc;

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::ckks::CkksContext;
use crate::ring::{Poly, Prng};
use crate::rlwe::{
    GaloisKey, PublicKey, RelinearizationKey, SecretKey, SwitchingKey, add_gadget, rlwe_sample,
    select_limbs,
};

use super::crs::Crs;
use super::error::MultipartyError;

fn check_secret(ctx: &CkksContext, sk: &SecretKey) -> Result<(), MultipartyError> {
    if sk.fingerprint() != ctx.fingerprint() {
        return Err(MultipartyError::Foreign { what: "secret key" });
    }
    Ok(())
}

/// A small Gaussian polynomial over `basis`, NTT domain.
fn gaussian(ctx: &CkksContext, prng: &mut Prng, basis: &[usize]) -> Poly {
    let ring = ctx.rlwe().ring();
    let e = Zeroizing::new(prng.gaussian(ring.n()));
    let mut p = ring.from_small_signed(&e, basis);
    ring.ntt(&mut p, basis);
    p
}

/// Sums shares polynomial by polynomial, refusing mismatched shapes.
fn add_polys(
    ctx: &CkksContext,
    acc: &mut [Poly],
    other: &[Poly],
    basis: &[usize],
) -> Result<(), MultipartyError> {
    if acc.len() != other.len()
        || acc
            .iter()
            .zip(other)
            .any(|(a, b)| a.limbs() != b.limbs() || a.n() != b.n())
    {
        return Err(MultipartyError::Shape("share"));
    }
    for (a, b) in acc.iter_mut().zip(other) {
        ctx.rlwe().ring().add_assign(a, b, basis);
    }
    Ok(())
}

// ----- public key -----

/// Collective public key generation (one round): share p_i = −a·s_i + e_i; pk = (Σ p_i, a).
#[derive(Debug, Clone)]
pub struct PublicKeyGen {
    ctx: Arc<CkksContext>,
    a: Poly,
}

/// One party's public-key share (over Q_L, NTT domain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeyShare {
    pub(crate) p: Poly,
}

impl PublicKeyGen {
    pub fn new(ctx: &Arc<CkksContext>, crs: &Crs) -> Self {
        Self {
            ctx: ctx.clone(),
            a: crs.public_key_a(ctx),
        }
    }

    pub fn share(
        &self,
        sk: &SecretKey,
        prng: &mut Prng,
    ) -> Result<PublicKeyShare, MultipartyError> {
        check_secret(&self.ctx, sk)?;
        let rl = self.ctx.rlwe();
        Ok(PublicKeyShare {
            p: rlwe_sample(rl, prng, sk, &self.a, rl.q_basis(rl.max_level())),
        })
    }

    /// acc += share.
    pub fn aggregate(
        &self,
        acc: &mut PublicKeyShare,
        share: &PublicKeyShare,
    ) -> Result<(), MultipartyError> {
        let rl = self.ctx.rlwe();
        add_polys(
            &self.ctx,
            std::slice::from_mut(&mut acc.p),
            std::slice::from_ref(&share.p),
            rl.q_basis(rl.max_level()),
        )
    }

    pub fn finalize(&self, aggregate: PublicKeyShare) -> PublicKey {
        PublicKey::new(aggregate.p, self.a.clone(), *self.ctx.fingerprint())
    }
}

// ----- relinearization key -----

/// Collective relinearization key generation (two rounds, Mouchet et al. 2021):
/// round 1: h0_i = −u_i·a + P·Q̃·s_i + e, h1_i = s_i·a + e (per digit, with an ephemeral u_i);
/// round 2: h0'_i = s_i·h0 + e, h1'_i = (u_i − s_i)·h1 + e on the round-1 sums h0, h1;
/// key: (Σ h0'_i + Σ h1'_i, h1), which decrypts to P·Q̃·s² under s.
#[derive(Debug, Clone)]
pub struct RelinKeyGen {
    ctx: Arc<CkksContext>,
    a: Vec<Poly>,
}

/// A party's round-1 secret, kept between the rounds and wiped on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct RelinKeyEphemeral {
    u: Poly,
}

impl std::fmt::Debug for RelinKeyEphemeral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelinKeyEphemeral(<redacted>)")
    }
}

/// Round-1 share: (h0_j, h1_j) per digit, over Q_L ∪ P.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelinKeyShare1 {
    pub(crate) h0: Vec<Poly>,
    pub(crate) h1: Vec<Poly>,
}

/// Round-2 share: (h0'_j, h1'_j) per digit, over Q_L ∪ P.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelinKeyShare2 {
    pub(crate) h0: Vec<Poly>,
    pub(crate) h1: Vec<Poly>,
}

impl RelinKeyShare1 {
    /// A share from its digit pairs (as a relay would present one: what it holds is only what
    /// its parties signed, so a receiver checks it before making round 2 on it).
    pub fn from_parts(h0: Vec<Poly>, h1: Vec<Poly>) -> Self {
        Self { h0, h1 }
    }

    /// The digit pairs (h0_j, h1_j).
    pub fn parts(&self) -> (&[Poly], &[Poly]) {
        (&self.h0, &self.h1)
    }
}

impl RelinKeyShare2 {
    /// The digit pairs (h0'_j, h1'_j).
    pub fn parts(&self) -> (&[Poly], &[Poly]) {
        (&self.h0, &self.h1)
    }
}

impl RelinKeyGen {
    pub fn new(ctx: &Arc<CkksContext>, crs: &Crs) -> Result<Self, MultipartyError> {
        if ctx.rlwe().num_p() == 0 {
            return Err(MultipartyError::Ckks(crate::ckks::CkksError::KeySwitch(
                crate::rlwe::KeySwitchError::NoSpecialPrimes,
            )));
        }
        let a = (0..ctx.rlwe().digits().len())
            .map(|j| crs.switching_key_a(ctx, "relinearization", j))
            .collect();
        Ok(Self {
            ctx: ctx.clone(),
            a,
        })
    }

    fn basis(&self) -> &[usize] {
        self.ctx.rlwe().key_basis()
    }

    pub fn round1(
        &self,
        sk: &SecretKey,
        prng: &mut Prng,
    ) -> Result<(RelinKeyEphemeral, RelinKeyShare1), MultipartyError> {
        check_secret(&self.ctx, sk)?;
        let rl = self.ctx.rlwe();
        let ring = rl.ring();
        let basis = self.basis();
        let mut coeffs = Zeroizing::new(prng.ternary(ring.n()));
        let mut u = ring.from_small_signed(&coeffs, basis);
        coeffs.zeroize();
        ring.ntt(&mut u, basis);
        let u_key = SecretKey::from_poly(u.clone(), *self.ctx.fingerprint());
        let s = Zeroizing::new(select_limbs(sk.poly(), rl, basis));
        let mut h0 = Vec::with_capacity(self.a.len());
        let mut h1 = Vec::with_capacity(self.a.len());
        for (j, a) in self.a.iter().enumerate() {
            // −u·a + e + P·Q̃_j·s
            let mut b = rlwe_sample(rl, prng, &u_key, a, basis);
            add_gadget(rl, &mut b, &s, rl.digits()[j].clone());
            h0.push(b);
            // s·a + e
            let mut c = gaussian(&self.ctx, prng, basis);
            ring.mul_add_assign(&mut c, a, &s, basis);
            h1.push(c);
        }
        Ok((RelinKeyEphemeral { u }, RelinKeyShare1 { h0, h1 }))
    }

    pub fn aggregate1(
        &self,
        acc: &mut RelinKeyShare1,
        share: &RelinKeyShare1,
    ) -> Result<(), MultipartyError> {
        add_polys(&self.ctx, &mut acc.h0, &share.h0, self.basis())?;
        add_polys(&self.ctx, &mut acc.h1, &share.h1, self.basis())
    }

    pub fn round2(
        &self,
        eph: &RelinKeyEphemeral,
        sk: &SecretKey,
        round1: &RelinKeyShare1,
        prng: &mut Prng,
    ) -> Result<RelinKeyShare2, MultipartyError> {
        check_secret(&self.ctx, sk)?;
        let digits = self.a.len();
        if round1.h0.len() != digits || round1.h1.len() != digits {
            return Err(MultipartyError::Shape("relinearization round 1"));
        }
        let rl = self.ctx.rlwe();
        let ring = rl.ring();
        let basis = self.basis();
        let s = Zeroizing::new(select_limbs(sk.poly(), rl, basis));
        let u_minus_s = Zeroizing::new(ring.sub(&eph.u, &s, basis));
        let mut h0 = Vec::with_capacity(digits);
        let mut h1 = Vec::with_capacity(digits);
        for j in 0..digits {
            let mut x = gaussian(&self.ctx, prng, basis);
            ring.mul_add_assign(&mut x, &round1.h0[j], &s, basis);
            h0.push(x);
            let mut y = gaussian(&self.ctx, prng, basis);
            ring.mul_add_assign(&mut y, &round1.h1[j], &u_minus_s, basis);
            h1.push(y);
        }
        Ok(RelinKeyShare2 { h0, h1 })
    }

    pub fn aggregate2(
        &self,
        acc: &mut RelinKeyShare2,
        share: &RelinKeyShare2,
    ) -> Result<(), MultipartyError> {
        add_polys(&self.ctx, &mut acc.h0, &share.h0, self.basis())?;
        add_polys(&self.ctx, &mut acc.h1, &share.h1, self.basis())
    }

    pub fn finalize(
        &self,
        round1: &RelinKeyShare1,
        round2: RelinKeyShare2,
    ) -> Result<RelinearizationKey, MultipartyError> {
        let digits = self.a.len();
        if round1.h1.len() != digits || round2.h0.len() != digits || round2.h1.len() != digits {
            return Err(MultipartyError::Shape("relinearization key"));
        }
        let ring = self.ctx.rlwe().ring();
        let parts = round2
            .h0
            .into_iter()
            .zip(round2.h1)
            .zip(&round1.h1)
            .map(|((mut b, b2), a)| {
                ring.add_assign(&mut b, &b2, self.basis());
                (b, a.clone())
            })
            .collect();
        Ok(RelinearizationKey(SwitchingKey::new(
            parts,
            *self.ctx.fingerprint(),
        )))
    }
}

// ----- Galois keys -----

/// Collective Galois key generation for one Galois element (one round):
/// share h_i = −a·s_i + e + P·Q̃·σ_g(s_i) per digit; key (Σ h_i, a).
#[derive(Debug, Clone)]
pub struct GaloisKeyGen {
    ctx: Arc<CkksContext>,
    crs: Crs,
}

/// One party's share of a Galois key: per digit, over Q_L ∪ P.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GaloisKeyShare {
    pub(crate) galois_element: u64,
    pub(crate) h: Vec<Poly>,
}

impl GaloisKeyShare {
    pub fn galois_element(&self) -> u64 {
        self.galois_element
    }
}

impl GaloisKeyGen {
    pub fn new(ctx: &Arc<CkksContext>, crs: &Crs) -> Result<Self, MultipartyError> {
        if ctx.rlwe().num_p() == 0 {
            return Err(MultipartyError::Ckks(crate::ckks::CkksError::KeySwitch(
                crate::rlwe::KeySwitchError::NoSpecialPrimes,
            )));
        }
        Ok(Self {
            ctx: ctx.clone(),
            crs: crs.clone(),
        })
    }

    fn a(&self, g: u64, digit: usize) -> Poly {
        self.crs
            .switching_key_a(&self.ctx, &format!("galois {g}"), digit)
    }

    pub fn share(
        &self,
        sk: &SecretKey,
        galois_element: u64,
        prng: &mut Prng,
    ) -> Result<GaloisKeyShare, MultipartyError> {
        check_secret(&self.ctx, sk)?;
        let two_n = 2 * self.ctx.n() as u64;
        if galois_element.is_multiple_of(2) || galois_element <= 1 || galois_element >= two_n {
            return Err(MultipartyError::Ckks(
                crate::ckks::CkksError::MissingGaloisKey(galois_element),
            ));
        }
        let rl = self.ctx.rlwe();
        let basis = rl.key_basis();
        let q = rl.q_basis(rl.max_level());
        let s = Zeroizing::new(select_limbs(sk.poly(), rl, q));
        let sg = Zeroizing::new(rl.ring().automorphism_ntt(&s, galois_element, q));
        let h = (0..rl.digits().len())
            .map(|j| {
                let mut b = rlwe_sample(rl, prng, sk, &self.a(galois_element, j), basis);
                add_gadget(rl, &mut b, &sg, rl.digits()[j].clone());
                b
            })
            .collect();
        Ok(GaloisKeyShare { galois_element, h })
    }

    pub fn aggregate(
        &self,
        acc: &mut GaloisKeyShare,
        share: &GaloisKeyShare,
    ) -> Result<(), MultipartyError> {
        if acc.galois_element != share.galois_element {
            return Err(MultipartyError::Shape("Galois element"));
        }
        add_polys(&self.ctx, &mut acc.h, &share.h, self.ctx.rlwe().key_basis())
    }

    pub fn finalize(&self, aggregate: GaloisKeyShare) -> Result<GaloisKey, MultipartyError> {
        let g = aggregate.galois_element;
        if aggregate.h.len() != self.ctx.rlwe().digits().len() {
            return Err(MultipartyError::Shape("Galois key"));
        }
        let parts = aggregate
            .h
            .into_iter()
            .enumerate()
            .map(|(j, b)| (b, self.a(g, j)))
            .collect();
        Ok(GaloisKey {
            galois_element: g,
            key: SwitchingKey::new(parts, *self.ctx.fingerprint()),
        })
    }
}
