//! Collective key switching (CKS) between two shared secrets, and public-key switching (PCKS)
//! of a ciphertext under the collective key to any public key: the aggregate reaches a hospital,
//! or an inference result its requester, without anyone decrypting it. Every share carries
//! flooding noise.

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::ckks::{Ciphertext, CkksContext};
use crate::ring::{Poly, Prng, Seed, expand};
use crate::rlwe::{PublicKey, SecretKey, select_limbs};

use super::error::MultipartyError;
use super::flooding::Flooding;

/// A polynomial of flooding noise over Q_level, NTT domain.
pub(super) fn flood_poly(
    ctx: &CkksContext,
    flooding: &Flooding,
    prng: &mut Prng,
    level: usize,
) -> Poly {
    let e = Zeroizing::new(flooding.sample(prng, ctx.n()));
    small_poly_ntt(ctx, &e, level)
}

/// Signed coefficients (any size) over Q_level, NTT domain.
fn small_poly_ntt(ctx: &CkksContext, e: &[i128], level: usize) -> Poly {
    let rl = ctx.rlwe();
    let ring = rl.ring();
    let basis = rl.q_basis(level);
    let mut p = Poly::zero(ring.n(), level);
    for (i, &idx) in basis.iter().enumerate() {
        let m = ring.modulus(idx);
        for (o, &x) in p.limb_mut(i).iter_mut().zip(e.iter()) {
            *o = m.reduce_i128(x);
        }
    }
    ring.ntt(&mut p, basis);
    p
}

/// The seeds of one public-key-switch mask, drawn from `prng` in this order: u (ternary), e0
/// (flooding), e1 (Gaussian). Each is expanded as [`crate::ring::expand`] lays out, so a GPU
/// given the same seeds makes the same mask.
pub(crate) fn mask_seeds(prng: &mut Prng) -> [Zeroizing<Seed>; 3] {
    [(); 3].map(|_| Zeroizing::new(prng.seed()))
}

pub(super) fn check_ct(ctx: &CkksContext, ct: &Ciphertext) -> Result<(), MultipartyError> {
    let level = ct.level();
    if level == 0 || level > ctx.max_level() {
        return Err(MultipartyError::Shape("ciphertext level"));
    }
    if ct.degree() != 1 {
        return Err(MultipartyError::Degree(ct.degree()));
    }
    if ct
        .parts
        .iter()
        .any(|p| p.n() != ctx.n() || p.limbs() != level)
    {
        return Err(MultipartyError::Shape("ciphertext"));
    }
    Ok(())
}

pub(super) fn check_key(
    ctx: &CkksContext,
    fp: &[u8; 32],
    what: &'static str,
) -> Result<(), MultipartyError> {
    if fp != ctx.fingerprint() {
        return Err(MultipartyError::Foreign { what });
    }
    Ok(())
}

/// `ct`'s c0 and scale at `level`: its own, or one lower (c0 divided by the last modulus,
/// rounding, and the scale by that modulus) for shares that were rescaled; `None` otherwise.
pub(super) fn c0_at(ctx: &CkksContext, ct: &Ciphertext, level: usize) -> Option<(Poly, f64)> {
    let rl = ctx.rlwe();
    let top = ct.level();
    if level == top {
        Some((ct.parts[0].clone(), ct.scale))
    } else if level + 1 == top {
        let mut c0 = ct.parts[0].clone();
        rl.ring()
            .div_round_by_last(&mut c0, rl.q_basis(top), rl.rescale_consts(top));
        Some((c0, ct.scale / rl.q_modulus(top - 1).value() as f64))
    } else {
        None
    }
}

/// Public-key switching: party i sends h0_i = s_i·c1 + u_i·b' + e0_i (e0_i flooding) and
/// h1_i = u_i·a' + e1_i; the result (c0 + Σ h0_i, Σ h1_i) decrypts under the target key.
#[derive(Debug, Clone)]
pub struct PublicKeySwitch {
    ctx: Arc<CkksContext>,
    flooding: Flooding,
    parties: usize,
}

/// One party's PCKS share, over Q_level (NTT domain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeySwitchShare {
    pub(crate) h0: Poly,
    pub(crate) h1: Poly,
}

impl PublicKeySwitchShare {
    pub fn level(&self) -> usize {
        self.h0.limbs()
    }

    /// Divides h0 and h1 by the last modulus of their level, rounding: the share one level
    /// lower, as [`PublicKeySwitch::finalize`] combines it with a c0 it rescales the same way.
    /// Each coefficient moves by at most 1/2 at the new scale (h1's then by s'·(1/2) in the
    /// decryption); a function of the share alone, it reveals nothing the share does not.
    pub fn rescale(&mut self, ctx: &CkksContext) -> Result<(), MultipartyError> {
        let level = self.level();
        if level < 2 || self.h1.limbs() != level {
            return Err(MultipartyError::Shape("public-key-switch share to rescale"));
        }
        let rl = ctx.rlwe();
        let (consts, basis) = (rl.rescale_consts(level), rl.q_basis(level));
        rl.ring().div_round_by_last(&mut self.h0, basis, consts);
        rl.ring().div_round_by_last(&mut self.h1, basis, consts);
        Ok(())
    }
}

/// What a public-key switch reads of a ciphertext: c1 (NTT domain) and the scale. Switching
/// parties need only this — a share is s_i·c1 plus a mask, and c0 is added by whoever combines
/// the shares — so a switch request carries half a ciphertext.
#[derive(Debug, Clone, PartialEq)]
pub struct SwitchInput {
    pub(crate) c1: Poly,
    pub scale: f64,
}

impl SwitchInput {
    /// The c1 and scale of a degree-1 ciphertext.
    pub fn of(ct: &Ciphertext) -> Result<Self, MultipartyError> {
        if ct.degree() != 1 {
            return Err(MultipartyError::Degree(ct.degree()));
        }
        Ok(Self {
            c1: ct.parts[1].clone(),
            scale: ct.scale,
        })
    }

    pub fn level(&self) -> usize {
        self.c1.limbs()
    }

    pub fn c1(&self) -> &Poly {
        &self.c1
    }

    pub(super) fn check(&self, ctx: &CkksContext) -> Result<(), MultipartyError> {
        let level = self.level();
        if level == 0 || level > ctx.max_level() || self.c1.n() != ctx.n() {
            return Err(MultipartyError::Shape("switch input"));
        }
        Ok(())
    }
}

/// The ciphertext-independent part of one PCKS share (see [`PublicKeySwitch::mask`]). Secret
/// while held (with the share it completes it would reveal s_i·c1), so wiped on drop.
#[derive(Debug)]
pub struct PublicKeySwitchMask {
    h0: Zeroizing<Poly>,
    h1: Zeroizing<Poly>,
    /// σ of the flooding it carries
    sigma: f64,
}

impl PublicKeySwitchMask {
    pub fn level(&self) -> usize {
        self.h0.limbs()
    }
}

impl PublicKeySwitch {
    /// `parties`: how many shares will be summed (the active set), for the headroom check.
    pub fn new(ctx: &Arc<CkksContext>, flooding: Flooding, parties: usize) -> Self {
        Self {
            ctx: ctx.clone(),
            flooding,
            parties,
        }
    }

    pub fn flooding(&self) -> &Flooding {
        &self.flooding
    }

    pub(crate) fn ctx(&self) -> &Arc<CkksContext> {
        &self.ctx
    }

    /// What a share of a ciphertext at `level` and `scale` needs (the device's shares are
    /// checked by the same code): keys of these parameters, a level that exists, and room for
    /// every party's flooding.
    pub(crate) fn check_share(
        &self,
        sk: &SecretKey,
        target: &[u8; 32],
        level: usize,
        scale: f64,
    ) -> Result<(), MultipartyError> {
        check_key(&self.ctx, sk.fingerprint(), "secret key")?;
        check_key(&self.ctx, target, "target public key")?;
        if level == 0 || level > self.ctx.max_level() {
            return Err(MultipartyError::Shape("ciphertext level"));
        }
        self.flooding
            .check_headroom(&self.ctx, level, scale, 1.0, self.parties)?;
        Ok(())
    }

    /// This party's share for switching `ct` to `target`. `sk` is the party's additive share of
    /// the collective secret (its own s_i, or λ·P(α_i) in a threshold set). Refuses a
    /// ciphertext whose level cannot hold the flooding of all parties' shares at its scale.
    pub fn share(
        &self,
        sk: &SecretKey,
        target: &PublicKey,
        ct: &Ciphertext,
        prng: &mut Prng,
    ) -> Result<PublicKeySwitchShare, MultipartyError> {
        check_ct(&self.ctx, ct)?;
        let mask = self.mask(target, ct.level(), prng)?;
        self.share_with_mask(sk, ct, mask)
    }

    /// [`Self::share`] from a [`SwitchInput`] (what a switch request carries).
    pub fn share_input(
        &self,
        sk: &SecretKey,
        target: &PublicKey,
        input: &SwitchInput,
        prng: &mut Prng,
    ) -> Result<PublicKeySwitchShare, MultipartyError> {
        input.check(&self.ctx)?;
        let mask = self.mask(target, input.level(), prng)?;
        self.complete(sk, &input.c1, input.scale, mask)
    }

    /// [`Self::share_with_mask`] from a [`SwitchInput`].
    pub fn share_input_with_mask(
        &self,
        sk: &SecretKey,
        input: &SwitchInput,
        mask: PublicKeySwitchMask,
    ) -> Result<PublicKeySwitchShare, MultipartyError> {
        input.check(&self.ctx)?;
        self.complete(sk, &input.c1, input.scale, mask)
    }

    /// The part of a share that does not depend on the ciphertext: (u·b' + e0, u·a' + e1) with
    /// e0 the flooding noise. It can be made ahead of time (while the ciphertext is not known
    /// yet); each mask must serve exactly one share, which [`Self::share_with_mask`] ensures by
    /// taking it by value.
    pub fn mask(
        &self,
        target: &PublicKey,
        level: usize,
        prng: &mut Prng,
    ) -> Result<PublicKeySwitchMask, MultipartyError> {
        check_key(&self.ctx, target.fingerprint(), "target public key")?;
        if level == 0 || level > self.ctx.max_level() {
            return Err(MultipartyError::Shape("ciphertext level"));
        }
        let rl = self.ctx.rlwe();
        let ring = rl.ring();
        let basis = rl.q_basis(level);
        let n = ring.n();
        let [seed_u, seed_e0, seed_e1] = mask_seeds(prng);
        let u_coeffs = Zeroizing::new(expand::ternary(&seed_u, n));
        let mut u = Zeroizing::new(ring.from_small_signed(&u_coeffs, basis));
        ring.ntt(&mut u, basis);
        let e0 = Zeroizing::new(expand::flooding(&seed_e0, n, self.flooding.sigma()));
        let mut h0 = small_poly_ntt(&self.ctx, &e0, level);
        ring.mul_add_assign(&mut h0, &u, target.b(), basis);
        let e1 = Zeroizing::new(expand::gaussian(&seed_e1, n));
        let mut h1 = ring.from_small_signed(&e1, basis);
        ring.ntt(&mut h1, basis);
        ring.mul_add_assign(&mut h1, &u, target.a(), basis);
        Ok(PublicKeySwitchMask {
            h0: Zeroizing::new(h0),
            h1: Zeroizing::new(h1),
            sigma: self.flooding.sigma(),
        })
    }

    /// Completes `mask` (made by this switch's flooding, at `ct`'s level) into the share of
    /// `ct`: adds s_i·c1.
    pub fn share_with_mask(
        &self,
        sk: &SecretKey,
        ct: &Ciphertext,
        mask: PublicKeySwitchMask,
    ) -> Result<PublicKeySwitchShare, MultipartyError> {
        check_ct(&self.ctx, ct)?;
        self.complete(sk, &ct.parts[1], ct.scale, mask)
    }

    /// mask + s_i·c1, for a c1 of a checked shape.
    fn complete(
        &self,
        sk: &SecretKey,
        c1: &Poly,
        scale: f64,
        mask: PublicKeySwitchMask,
    ) -> Result<PublicKeySwitchShare, MultipartyError> {
        check_key(&self.ctx, sk.fingerprint(), "secret key")?;
        let level = c1.limbs();
        if mask.h0.limbs() != level || mask.h1.limbs() != level {
            return Err(MultipartyError::Shape("public-key-switch mask"));
        }
        // a mask made with less flooding than this switch asks for would under-protect s_i
        if mask.sigma.to_bits() != self.flooding.sigma().to_bits() {
            return Err(MultipartyError::Shape(
                "public-key-switch mask of another flooding",
            ));
        }
        // values of magnitude one at least must survive the flooding
        self.flooding
            .check_headroom(&self.ctx, level, scale, 1.0, self.parties)?;
        let rl = self.ctx.rlwe();
        let ring = rl.ring();
        let basis = rl.q_basis(level);
        let s = Zeroizing::new(select_limbs(sk.poly(), rl, basis));
        let mut share = PublicKeySwitchShare {
            h0: (*mask.h0).clone(),
            h1: (*mask.h1).clone(),
        };
        ring.mul_add_assign(&mut share.h0, c1, &s, basis);
        Ok(share)
    }

    pub fn aggregate(
        &self,
        acc: &mut PublicKeySwitchShare,
        share: &PublicKeySwitchShare,
    ) -> Result<(), MultipartyError> {
        let level = acc.level();
        if share.level() != level || acc.h1.limbs() != level || share.h1.limbs() != level {
            return Err(MultipartyError::Shape("public-key-switch share"));
        }
        let rl = self.ctx.rlwe();
        rl.ring()
            .add_assign(&mut acc.h0, &share.h0, rl.q_basis(level));
        rl.ring()
            .add_assign(&mut acc.h1, &share.h1, rl.q_basis(level));
        Ok(())
    }

    /// The ciphertext under the target key, from the sum of the shares: at `ct`'s level, or
    /// one lower when the shares were [rescaled](PublicKeySwitchShare::rescale) (c0 is then
    /// rescaled too, and the scale divided by the modulus dropped).
    pub fn finalize(
        &self,
        ct: &Ciphertext,
        aggregate: PublicKeySwitchShare,
    ) -> Result<Ciphertext, MultipartyError> {
        check_ct(&self.ctx, ct)?;
        let rl = self.ctx.rlwe();
        let (c0, scale) = c0_at(&self.ctx, ct, aggregate.level())
            .ok_or(MultipartyError::Shape("public-key-switch share"))?;
        if aggregate.h1.limbs() != aggregate.level() {
            return Err(MultipartyError::Shape("public-key-switch share"));
        }
        let c0 = rl
            .ring()
            .add(&c0, &aggregate.h0, rl.q_basis(aggregate.level()));
        Ok(Ciphertext {
            parts: vec![c0, aggregate.h1],
            scale,
        })
    }
}

/// Collective key switching from s = Σ s_i to s' = Σ s'_i: party i sends
/// h_i = (s_i − s'_i)·c1 + e_i (e_i flooding); the result (c0 + Σ h_i, c1) decrypts under s'.
#[derive(Debug, Clone)]
pub struct KeySwitch {
    ctx: Arc<CkksContext>,
    flooding: Flooding,
    parties: usize,
}

/// One party's CKS share, over Q_level (NTT domain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySwitchShare {
    pub(crate) h: Poly,
}

impl KeySwitchShare {
    pub fn level(&self) -> usize {
        self.h.limbs()
    }

    /// Adds `other` (a share of the same level) into this one.
    pub(super) fn add(
        &mut self,
        ctx: &CkksContext,
        other: &KeySwitchShare,
    ) -> Result<(), MultipartyError> {
        let level = self.level();
        if other.level() != level || level == 0 || level > ctx.max_level() {
            return Err(MultipartyError::Shape("key-switch share"));
        }
        let rl = ctx.rlwe();
        rl.ring()
            .add_assign(&mut self.h, &other.h, rl.q_basis(level));
        Ok(())
    }

    /// Divides h by the last modulus of its level, rounding: the share one level lower, as
    /// [`super::ReceiveSwitch::finalize`] combines it with a c0 it rescales the same way. Each
    /// coefficient moves by at most 1/2 at the new scale; a function of the share alone, it
    /// reveals nothing the share does not.
    pub fn rescale(&mut self, ctx: &CkksContext) -> Result<(), MultipartyError> {
        let level = self.level();
        if level < 2 {
            return Err(MultipartyError::Shape("key-switch share to rescale"));
        }
        let rl = ctx.rlwe();
        rl.ring()
            .div_round_by_last(&mut self.h, rl.q_basis(level), rl.rescale_consts(level));
        Ok(())
    }
}

impl KeySwitch {
    pub fn new(ctx: &Arc<CkksContext>, flooding: Flooding, parties: usize) -> Self {
        Self {
            ctx: ctx.clone(),
            flooding,
            parties,
        }
    }

    pub fn share(
        &self,
        sk_from: &SecretKey,
        sk_to: &SecretKey,
        ct: &Ciphertext,
        prng: &mut Prng,
    ) -> Result<KeySwitchShare, MultipartyError> {
        check_key(&self.ctx, sk_from.fingerprint(), "secret key")?;
        check_key(&self.ctx, sk_to.fingerprint(), "target secret key")?;
        check_ct(&self.ctx, ct)?;
        let level = ct.level();
        self.flooding
            .check_headroom(&self.ctx, level, ct.scale, 1.0, self.parties)?;
        let rl = self.ctx.rlwe();
        let ring = rl.ring();
        let basis = rl.q_basis(level);
        let from = Zeroizing::new(select_limbs(sk_from.poly(), rl, basis));
        let to = Zeroizing::new(select_limbs(sk_to.poly(), rl, basis));
        let diff = Zeroizing::new(ring.sub(&from, &to, basis));
        let mut h = flood_poly(&self.ctx, &self.flooding, prng, level);
        ring.mul_add_assign(&mut h, &ct.parts[1], &diff, basis);
        Ok(KeySwitchShare { h })
    }

    pub fn aggregate(
        &self,
        acc: &mut KeySwitchShare,
        share: &KeySwitchShare,
    ) -> Result<(), MultipartyError> {
        acc.add(&self.ctx, share)
    }

    pub fn finalize(
        &self,
        ct: &Ciphertext,
        aggregate: KeySwitchShare,
    ) -> Result<Ciphertext, MultipartyError> {
        check_ct(&self.ctx, ct)?;
        if aggregate.level() != ct.level() {
            return Err(MultipartyError::Shape("key-switch share"));
        }
        let rl = self.ctx.rlwe();
        let c0 = rl
            .ring()
            .add(&ct.parts[0], &aggregate.h, rl.q_basis(ct.level()));
        Ok(Ciphertext {
            parts: vec![c0, ct.parts[1].clone()],
            scale: ct.scale,
        })
    }
}
