//! Switching a round's aggregate to the consortium receiving key ([`super::group_key`]), which
//! every hospital holds and the coordinator does not: collective key switching onto fresh public
//! polynomials. Switcher i of the active set S sends, per ciphertext, one polynomial
//!
//! h_i = s_i·c1 + e_i − s_recv·a_i        (s_i its additive share of s, e_i flooding)
//!
//! and c0 + Σ h_i = m + e − s_recv·Σ a_i: an encryption of the aggregate under s_recv whose c1,
//! Σ a_i, every receiver expands from |S| seeds. Against public-key switching to the receiving
//! key's public half, shares and results are half the bytes and no mask u·pk is computed.
//!
//! A round's updates are each encrypted under its hospital's own s_k (c0_k = −a_k·s_k + m_k + e_k,
//! a_k expanded from a seed the hospital signs), so only c0 travels; their weighted sum
//! Σ w_k·c0_k is switched by [`ReceiveSwitch::share_updates`], where the switcher's s_i·c1
//! becomes Σ_k a_k·(λ_i·w_k·P_k(α_i)): its additive share of the weighted key Σ w_k·s_k
//! ([`super::ThresholdSecret::weighted_shares`]). The switcher makes the c1 it switches from the
//! signed seeds itself, so nothing but what the hospitals signed can be switched.
//!
//! Every public polynomial here (the updates' a_k, the switchers' a_i) is expanded with
//! AES-128-CTR ([`crate::ring::Ring::expand_uniform_aes`]): a switcher expands one per update
//! and ciphertext, every receiver one per switcher and ciphertext.
//!
//! Each a_i is derived from a digest of what is switched (a round's signed updates, or a switch
//! input's bytes), the switcher and the whole active set
//! ([`super::Crs::receive_switch_seed`]): asked twice for the same input and set, a switcher
//! masks with the same a_i (only the flooding differs, so the difference of two answers is
//! noise); asked anything else, it masks afresh — no two answers subtract to an unmasked s_i·c1, whatever sets
//! a coordinator names to whom. A switcher that holds s_recv learns nothing it could not decrypt
//! anyway: every hospital is entitled to the aggregate.

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::ckks::{Ciphertext, CkksContext};
use crate::ring::{Poly, Prng, Seed};
use crate::rlwe::{SecretKey, select_limbs};

use super::error::MultipartyError;
use super::flooding::Flooding;
use super::keyswitch::{KeySwitchShare, SwitchInput, c0_at, check_ct, check_key, flood_poly};

/// One ciphertext of a sum of updates as a switcher sees it: the level and scale of the updates
/// and, per contribution (in the order of the weighted keys), the seed of its a_k.
#[derive(Debug, Clone, Copy)]
pub struct UpdateSum<'a> {
    pub level: usize,
    pub scale: f64,
    pub a_seeds: &'a [Seed],
}

/// Most switchers one result names (a seed each); a decoder refuses more.
pub const MAX_SWITCHERS: usize = 1024;

/// The switch of aggregates to the consortium receiving key, for `parties` switchers.
#[derive(Debug, Clone)]
pub struct ReceiveSwitch {
    ctx: Arc<CkksContext>,
    flooding: Flooding,
    parties: usize,
}

/// The flooding of one share, made ahead of the request (it does not depend on the input).
/// Secret while held (with the share it completes it would reveal s_i·c1), so wiped on drop.
#[derive(Debug)]
pub struct FloodMask {
    e: Zeroizing<Poly>,
    /// σ of the flooding it carries
    sigma: f64,
}

impl FloodMask {
    pub fn level(&self) -> usize {
        self.e.limbs()
    }
}

/// A switched aggregate as it travels: c0 + Σ h_i, the seeds of the a_i and the scale. Its c1
/// is Σ a_i ([`Self::expand`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SwitchedResult {
    pub(crate) c0: Poly,
    pub(crate) a_seeds: Vec<Seed>,
    pub scale: f64,
}

impl SwitchedResult {
    pub fn level(&self) -> usize {
        self.c0.limbs()
    }

    pub fn a_seeds(&self) -> &[Seed] {
        &self.a_seeds
    }

    /// The ciphertext under the receiving key: c1 = Σ a_i expanded from the seeds.
    pub fn expand(&self, ctx: &CkksContext) -> Result<Ciphertext, MultipartyError> {
        let level = self.level();
        if level == 0 || level > ctx.max_level() || self.c0.n() != ctx.n() {
            return Err(MultipartyError::Shape("switched result"));
        }
        if self.a_seeds.is_empty() || self.a_seeds.len() > MAX_SWITCHERS {
            return Err(MultipartyError::Shape("switched result's seeds"));
        }
        let rl = ctx.rlwe();
        let (ring, basis) = (rl.ring(), rl.q_basis(level));
        let mut c1 = ring.expand_uniform_aes(&self.a_seeds[0], basis);
        for seed in &self.a_seeds[1..] {
            ring.add_assign(&mut c1, &ring.expand_uniform_aes(seed, basis), basis);
        }
        Ok(Ciphertext {
            parts: vec![self.c0.clone(), c1],
            scale: self.scale,
        })
    }
}

impl ReceiveSwitch {
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

    /// The flooding of one share of an input at `level`, made ahead; each must serve exactly
    /// one share, which [`Self::share`] ensures by taking it by value.
    pub fn flood(&self, level: usize, prng: &mut Prng) -> Result<FloodMask, MultipartyError> {
        if level == 0 || level > self.ctx.max_level() {
            return Err(MultipartyError::Shape("ciphertext level"));
        }
        Ok(FloodMask {
            e: Zeroizing::new(flood_poly(&self.ctx, &self.flooding, prng, level)),
            sigma: self.flooding.sigma(),
        })
    }

    /// This switcher's share of `input`: s_i·c1 + e_i, divided by the last modulus when
    /// `rescale` (the round's [`crate::aggregate::AggregationPlan::result_level`] is one lower),
    /// minus s_recv·a_i with a_i expanded from `a_seed` at the share's level. `sk` is the
    /// switcher's additive share of the collective secret (λ·P(α_i) in a threshold set),
    /// `receive` the consortium receiving key. Refuses an input whose level cannot hold the
    /// flooding of all parties' shares at its scale.
    pub fn share(
        &self,
        sk: &SecretKey,
        receive: &SecretKey,
        input: &SwitchInput,
        a_seed: &Seed,
        mask: FloodMask,
        rescale: bool,
    ) -> Result<KeySwitchShare, MultipartyError> {
        check_key(&self.ctx, sk.fingerprint(), "secret key")?;
        check_key(&self.ctx, receive.fingerprint(), "receiving key")?;
        input.check(&self.ctx)?;
        let c1 = input.c1();
        let level = c1.limbs();
        self.check_mask(&mask, level, input.scale)?;
        let rl = self.ctx.rlwe();
        let basis = rl.q_basis(level);
        let s = Zeroizing::new(select_limbs(sk.poly(), rl, basis));
        let mut h = (*mask.e).clone();
        rl.ring().mul_add_assign(&mut h, c1, &s, basis);
        self.mask_to_receiver(h, receive, a_seed, rescale)
    }

    /// This switcher's share of one ciphertext of a weighted sum of updates, each under its
    /// hospital's own secret: Σ_k a_k·key_k + e_i with a_k expanded from `sum.a_seeds[k]` and
    /// `keys` this switcher's [`super::ThresholdSecret::weighted_shares`] in the same order,
    /// then rescaled and masked as [`Self::share`]. Refuses a level that cannot hold the
    /// flooding of all parties' shares at the sum's scale.
    pub fn share_updates(
        &self,
        keys: &[SecretKey],
        receive: &SecretKey,
        sum: &UpdateSum<'_>,
        a_seed: &Seed,
        mask: FloodMask,
        rescale: bool,
    ) -> Result<KeySwitchShare, MultipartyError> {
        check_key(&self.ctx, receive.fingerprint(), "receiving key")?;
        for k in keys {
            check_key(&self.ctx, k.fingerprint(), "secret key")?;
        }
        if sum.a_seeds.is_empty() || sum.a_seeds.len() > MAX_SWITCHERS {
            return Err(MultipartyError::Contributions {
                got: sum.a_seeds.len(),
                max: MAX_SWITCHERS,
            });
        }
        if keys.len() != sum.a_seeds.len() {
            return Err(MultipartyError::Shape("one weighted key per update's seed"));
        }
        let level = sum.level;
        if level == 0 || level > self.ctx.max_level() {
            return Err(MultipartyError::Shape("update level"));
        }
        self.check_mask(&mask, level, sum.scale)?;
        let rl = self.ctx.rlwe();
        let (ring, basis) = (rl.ring(), rl.q_basis(level));
        let mut h = (*mask.e).clone();
        let a: Vec<Poly> = sum
            .a_seeds
            .iter()
            .map(|seed| ring.expand_uniform_aes(seed, basis))
            .collect();
        let s: Vec<Zeroizing<Poly>> = keys
            .iter()
            .map(|k| Zeroizing::new(select_limbs(k.poly(), rl, basis)))
            .collect();
        let terms: Vec<(&Poly, &Poly)> = a.iter().zip(&s).map(|(a, s)| (a, &**s)).collect();
        ring.mul_sum_assign(&mut h, &terms, basis);
        self.mask_to_receiver(h, receive, a_seed, rescale)
    }

    /// `mask` serves an input at `level` and `scale`: made for that level and with this switch's
    /// flooding (less would under-protect s_i), and values of magnitude one at least survive
    /// the flooding of all parties' shares.
    fn check_mask(
        &self,
        mask: &FloodMask,
        level: usize,
        scale: f64,
    ) -> Result<(), MultipartyError> {
        if mask.level() != level {
            return Err(MultipartyError::Shape("flooding mask"));
        }
        if mask.sigma.to_bits() != self.flooding.sigma().to_bits() {
            return Err(MultipartyError::Shape("flooding mask of another flooding"));
        }
        self.flooding
            .check_headroom(&self.ctx, level, scale, 1.0, self.parties)?;
        Ok(())
    }

    /// s_i·c1 + e_i made a share: rescaled when asked, minus s_recv·a_i (a_i from `a_seed` at
    /// the share's level).
    fn mask_to_receiver(
        &self,
        h: Poly,
        receive: &SecretKey,
        a_seed: &Seed,
        rescale: bool,
    ) -> Result<KeySwitchShare, MultipartyError> {
        let rl = self.ctx.rlwe();
        let ring = rl.ring();
        let mut share = KeySwitchShare { h };
        if rescale {
            share.rescale(&self.ctx)?;
        }
        let out = rl.q_basis(share.level());
        let mut a = ring.expand_uniform_aes(a_seed, out);
        ring.neg_assign(&mut a, out);
        let r = Zeroizing::new(select_limbs(receive.poly(), rl, out));
        ring.mul_add_assign(&mut share.h, &a, &r, out);
        Ok(share)
    }

    /// Adds `share` into `acc` (both at one level).
    pub fn aggregate(
        &self,
        acc: &mut KeySwitchShare,
        share: &KeySwitchShare,
    ) -> Result<(), MultipartyError> {
        acc.add(&self.ctx, share)
    }

    /// The result from the sum of every switcher's share and their seeds: at `ct`'s level, or
    /// one lower when the shares were rescaled (c0 is then rescaled too, and the scale divided
    /// by the modulus dropped). Only `ct`'s c0 is read: it may be a sum of updates' c0 alone
    /// (degree 0).
    pub fn finalize(
        &self,
        ct: &Ciphertext,
        sum: KeySwitchShare,
        a_seeds: Vec<Seed>,
    ) -> Result<SwitchedResult, MultipartyError> {
        if ct.parts.len() == 1 {
            let c0 = &ct.parts[0];
            if c0.limbs() == 0 || c0.limbs() > self.ctx.max_level() || c0.n() != self.ctx.n() {
                return Err(MultipartyError::Shape("ciphertext"));
            }
        } else {
            check_ct(&self.ctx, ct)?;
        }
        if a_seeds.is_empty() || a_seeds.len() > MAX_SWITCHERS {
            return Err(MultipartyError::Shape("switched result's seeds"));
        }
        let rl = self.ctx.rlwe();
        let (mut c0, scale) =
            c0_at(&self.ctx, ct, sum.level()).ok_or(MultipartyError::Shape("key-switch share"))?;
        rl.ring()
            .add_assign(&mut c0, &sum.h, rl.q_basis(sum.level()));
        Ok(SwitchedResult { c0, a_seeds, scale })
    }
}

#[cfg(test)]
#[path = "receive_switch_tests.rs"]
mod tests;
