//! Collective refresh (Mouchet et al. 2021, §IV-C; Lattigo's `mpckks.RefreshProtocol`): the
//! parties turn a ciphertext at a low level back into one at the top level without anyone
//! decrypting it — an interactive bootstrapping, one round, no bootstrapping keys.
//!
//! For a ciphertext (c0, c1) at level ℓ (modulus q) and a common polynomial a over Q_L, party i
//! draws a mask M_i with `mask_bits` uniform bits per coefficient and sends
//!
//! - h0_i = s_i·c1 + M_i + e0_i over q (e0_i flooding, as on every decryption share), and
//! - h1_i = −s_i·a − M_i + e1_i over Q_L (e1_i Gaussian: an RLWE sample hiding s_i).
//!
//! c0 + Σ h0_i = m + Σ M_i + e mod q is lifted exactly to Q_L (its centred value fits below q/2 by
//! the headroom check) and (lift + Σ h1_i, a) decrypts to m + e at level L with the input's scale.
//! The masks are `MASK_SECURITY` bits wider than the message, so the lift reveals nothing of m
//! statistically; the flooding hides the secret-dependent noise (IND-CPA-D).
//!
//! As with every decryption share, a party must refresh only a ciphertext it can attribute to
//! the agreed computation: a c1 chosen by an adversary (a large constant, say) would make
//! s_i·c1 stand out of the masks and the flooding — and unlike a public-key switch share, h0
//! reaches whoever combines the shares, so the combiner alone would read s_i. Head training over
//! the network (`coordinator train-head`) therefore has each keyholder replay the run itself
//! ([`crate::train::HeadRun`]) on the contribution its contributor signed and finish every
//! refresh with the shares each keyholder signed, and refresh only the state it reached:
//! whoever picks a refreshed state's c0 steers the c1 of the next step's products.
//!
//! `a` must never serve two different ciphertexts (two outputs with one `a` would give m1 − m2):
//! every party derives it from the CRS and a digest of the ciphertext itself, so it is agreed on
//! without a message and cannot be reused across inputs.

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::ckks::{Ciphertext, CkksContext};
use crate::ring::{Modulus, Poly, Prng};
use crate::rlwe::{SecretKey, rlwe_sample, select_limbs};

use super::crs::Crs;
use super::error::MultipartyError;
use super::flooding::{FLOOD_TAIL, Flooding};
use super::keyswitch::{check_ct, check_key, flood_poly};

/// Statistical security of the masks, in bits above the message (Lattigo's 128).
pub const MASK_SECURITY: u32 = 128;
/// Widest mask the sampler draws (four 64-bit words per coefficient).
const MAX_MASK_BITS: u32 = 256;

/// One party's refresh share: h0 over the input's level, h1 over the top level (NTT domain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshShare {
    pub(crate) h0: Poly,
    pub(crate) h1: Poly,
}

impl RefreshShare {
    /// The level of the ciphertext this share refreshes.
    pub fn level(&self) -> usize {
        self.h0.limbs()
    }
}

/// The collective refresh of ciphertexts whose slots are at most `max_abs_value` in magnitude.
#[derive(Debug, Clone)]
pub struct Refresh {
    ctx: Arc<CkksContext>,
    crs: Crs,
    flooding: Flooding,
    parties: usize,
    max_abs_value: f64,
}

/// What a refresh at a level needs and leaves.
#[derive(Debug, Clone, PartialEq)]
pub struct RefreshRoom {
    /// Bits of each party's mask.
    pub mask_bits: u32,
    /// log2 of the largest coefficient c0 + Σ h0_i can hold (message, masks, flooding).
    pub used_bits: f64,
    /// log2 of q/2 at the level.
    pub room_bits: f64,
    /// Expected standard deviation the refresh adds to each slot, in slot units.
    pub slot_error: f64,
}

impl Refresh {
    pub fn new(
        ctx: &Arc<CkksContext>,
        crs: &Crs,
        flooding: Flooding,
        parties: usize,
        max_abs_value: f64,
    ) -> Result<Self, MultipartyError> {
        if parties == 0 {
            return Err(MultipartyError::TooFewParties {
                got: 0,
                threshold: 1,
            });
        }
        if !(max_abs_value.is_finite() && max_abs_value > 0.0) {
            return Err(MultipartyError::ValueBound(max_abs_value));
        }
        Ok(Self {
            ctx: ctx.clone(),
            crs: crs.clone(),
            flooding,
            parties,
            max_abs_value,
        })
    }

    /// The room a refresh of a ciphertext at `level` and `scale` needs, or why it does not fit.
    pub fn room(&self, level: usize, scale: f64) -> Result<RefreshRoom, MultipartyError> {
        let message = self.max_abs_value * scale;
        if !(message.is_finite() && message >= 1.0) {
            return Err(MultipartyError::ValueBound(self.max_abs_value));
        }
        let mask_bits = MASK_SECURITY + message.log2().ceil() as u32;
        let room_bits = self.ctx.log_q(level) - 1.0;
        let parties = self.parties as f64;
        // centred masks: |Σ M_i| < parties · 2^(mask_bits − 1)
        let masks = parties * 2f64.powi(mask_bits as i32 - 1);
        let flood = FLOOD_TAIL * self.flooding.sigma() * parties.sqrt();
        let used_bits = (masks + message + flood).log2();
        if mask_bits > MAX_MASK_BITS || used_bits >= room_bits {
            return Err(MultipartyError::RefreshRoom {
                level,
                mask_bits,
                used_bits,
                room_bits,
            });
        }
        let slot_error = self.flooding.sigma() * (parties * self.ctx.n() as f64).sqrt() / scale;
        Ok(RefreshRoom {
            mask_bits,
            used_bits,
            room_bits,
            slot_error,
        })
    }

    /// The lowest level from which a ciphertext at `scale` can be refreshed.
    pub fn min_level(&self, scale: f64) -> Result<usize, MultipartyError> {
        let top = self.ctx.max_level();
        (1..=top)
            .find(|&l| self.room(l, scale).is_ok())
            .ok_or_else(|| self.room(top, scale).unwrap_err())
    }

    /// The common polynomial of the refresh of `ct`, over Q_L.
    fn crp(&self, ct: &Ciphertext) -> Poly {
        self.crs.refresh_a(&self.ctx, &digest(ct))
    }

    /// Party i's share for `ct`, with `sk` its (additive) share of the key `ct` is under.
    pub fn share(
        &self,
        sk: &SecretKey,
        ct: &Ciphertext,
        prng: &mut Prng,
    ) -> Result<RefreshShare, MultipartyError> {
        check_key(&self.ctx, sk.fingerprint(), "secret key")?;
        check_ct(&self.ctx, ct)?;
        let level = ct.level();
        let room = self.room(level, ct.scale)?;
        let rl = self.ctx.rlwe();
        let ring = rl.ring();
        let top = self.ctx.max_level();
        let (low, high) = (rl.q_basis(level), rl.q_basis(top));
        let mask = Zeroizing::new(sample_mask(
            ring.moduli(),
            high,
            ring.n(),
            room.mask_bits,
            prng,
        ));
        let mut m_low = Zeroizing::new(Poly::zero(ring.n(), level));
        for i in 0..level {
            m_low.limb_mut(i).copy_from_slice(mask.limb(i));
        }
        ring.ntt(&mut m_low, low);
        let mut m_high = mask;
        ring.ntt(&mut m_high, high);

        let s = Zeroizing::new(select_limbs(sk.poly(), rl, low));
        let mut h0 = flood_poly(&self.ctx, &self.flooding, prng, level);
        ring.mul_add_assign(&mut h0, &ct.parts[1], &s, low);
        ring.add_assign(&mut h0, &m_low, low);

        let mut h1 = rlwe_sample(rl, prng, sk, &self.crp(ct), high);
        ring.sub_assign(&mut h1, &m_high, high);
        Ok(RefreshShare { h0, h1 })
    }

    /// acc += share.
    pub fn aggregate(
        &self,
        acc: &mut RefreshShare,
        share: &RefreshShare,
    ) -> Result<(), MultipartyError> {
        self.check_share(share, acc.level())?;
        self.check_share(acc, share.level())?;
        let rl = self.ctx.rlwe();
        let ring = rl.ring();
        let level = acc.level();
        ring.add_assign(&mut acc.h0, &share.h0, rl.q_basis(level));
        ring.add_assign(&mut acc.h1, &share.h1, rl.q_basis(self.ctx.max_level()));
        Ok(())
    }

    fn check_share(&self, s: &RefreshShare, level: usize) -> Result<(), MultipartyError> {
        let n = self.ctx.n();
        if s.h0.limbs() != level
            || s.h0.n() != n
            || s.h1.n() != n
            || s.h1.limbs() != self.ctx.max_level()
        {
            return Err(MultipartyError::Shape("refresh share"));
        }
        Ok(())
    }

    /// The refreshed ciphertext: `ct` at the top level, same scale, from the sum of every
    /// party's share. Refused when the masked sum c0 + Σ h0_i reaches beyond what the masks,
    /// the values' bound and the flooding can make: a ciphertext whose noise or values were
    /// crafted past the bound would otherwise carry them, unmasked in the high bits, into the
    /// refreshed state (what the sum itself showed the combiner is not undone).
    pub fn finalize(
        &self,
        ct: &Ciphertext,
        aggregate: &RefreshShare,
    ) -> Result<Ciphertext, MultipartyError> {
        check_ct(&self.ctx, ct)?;
        let level = ct.level();
        self.check_share(aggregate, level)?;
        let rl = self.ctx.rlwe();
        let ring = rl.ring();
        let top = self.ctx.max_level();
        let (low, high) = (rl.q_basis(level), rl.q_basis(top));
        let mut masked = ring.add(&ct.parts[0], &aggregate.h0, low);
        ring.intt(&mut masked, low);
        let room = self.room(level, ct.scale)?;
        let found = largest_centered(ring.moduli(), &masked, low, ring.n());
        // log2 of the largest |x|, against the room's bound (a bit of slack for the float sums)
        let found_bits = self.ctx.log_q(level) + found.log2();
        if found_bits > room.used_bits + 1.0 {
            return Err(MultipartyError::RefreshRange {
                found_bits,
                bound_bits: room.used_bits,
            });
        }
        let mut c0 = lift_centered(ring.moduli(), &masked, low, high, ring.n());
        ring.ntt(&mut c0, high);
        ring.add_assign(&mut c0, &aggregate.h1, high);
        Ok(Ciphertext {
            parts: vec![c0, self.crp(ct)],
            scale: ct.scale,
        })
    }
}

/// A digest of a ciphertext's level, scale and residues: the refresh's `a` is bound to it.
fn digest(ct: &Ciphertext) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&(ct.level() as u64).to_le_bytes());
    h.update(&ct.scale.to_bits().to_le_bytes());
    let mut bytes = Vec::new();
    for p in &ct.parts {
        bytes.clear();
        bytes.extend(p.data().iter().flat_map(|w| w.to_le_bytes()));
        h.update(&bytes);
    }
    *h.finalize().as_bytes()
}

/// A mask of `bits` uniform bits per coefficient, centred (−2^(bits−1) ≤ M < 2^(bits−1)), as
/// residues over `basis` in the coefficient domain.
pub(crate) fn sample_mask(
    moduli: &[Modulus],
    basis: &[usize],
    n: usize,
    bits: u32,
    prng: &mut Prng,
) -> Poly {
    let words = bits.div_ceil(64) as usize;
    let top_bits = bits - 64 * (words as u32 - 1);
    let top_mask = if top_bits == 64 {
        u64::MAX
    } else {
        (1u64 << top_bits) - 1
    };
    let offsets: Vec<u64> = basis
        .iter()
        .map(|&idx| pow2_mod(bits - 1, moduli[idx].value() as u128))
        .collect();
    let mut out = Poly::zero(n, basis.len());
    let mut w = Zeroizing::new(vec![0u64; words]);
    for j in 0..n {
        for x in w.iter_mut() {
            *x = prng.next_u64();
        }
        w[words - 1] &= top_mask;
        for (pos, &idx) in basis.iter().enumerate() {
            let m = &moduli[idx];
            // Horner from the most significant word, then subtract 2^(bits−1) mod q
            let mut r = 0u64;
            for &x in w.iter().rev() {
                r = m.reduce_u128(((r as u128) << 64) | x as u128);
            }
            out.limb_mut(pos)[j] = m.sub(r, offsets[pos]);
        }
    }
    out
}

fn pow2_mod(e: u32, q: u128) -> u64 {
    let mut r = 1u128 % q;
    for _ in 0..e {
        r = (r << 1) % q;
    }
    r as u64
}

/// [(q/q_i)^−1]_{q_i} for every prime q_i of `low` (q their product).
fn punctured_inverses(moduli: &[Modulus], low: &[usize]) -> Vec<u64> {
    (0..low.len())
        .map(|i| {
            let m = &moduli[low[i]];
            let punctured = (0..low.len())
                .filter(|&j| j != i)
                .fold(1u64, |acc, j| m.mul(acc, m.reduce(moduli[low[j]].value())));
            m.inv(punctured).expect("distinct primes are invertible")
        })
        .collect()
}

/// max |x|/q over the coefficients of x (residues over `low`, coefficient domain, centred):
/// the fractional part of Σ y_i/q_i (y_i = [x_i·(q/q_i)^−1]_{q_i}, as [`lift_centered`]
/// computes it) in 128-bit fixed point, exact to about k·2^−128 (a double's 2^−52 could not
/// tell a mask 2^90 below q from zero).
fn largest_centered(moduli: &[Modulus], x: &Poly, low: &[usize], n: usize) -> f64 {
    let inv = punctured_inverses(moduli, low);
    let mut largest = 0u128;
    for c in 0..n {
        let mut frac = 0u128;
        for (i, &idx) in low.iter().enumerate() {
            let m = &moduli[idx];
            let q = u128::from(m.value());
            let y = u128::from(m.mul(x.limb(i)[c], inv[i]));
            // y/q to 128 fractional bits, by two 64-bit steps of long division (y < q < 2^62)
            let high = (y << 64) / q;
            let low_bits = (((y << 64) % q) << 64) / q;
            frac = frac.wrapping_add((high << 64) | low_bits);
        }
        largest = largest.max((frac as i128).unsigned_abs());
    }
    largest as f64 / 2f64.powi(128)
}

/// Exact lift of x (residues over `low`, coefficient domain, |x| < q/2) to the centred integer
/// and its residues over `high` ⊇ `low`: x = Σ y_i·(q/q_i) − v·q with y_i = [x_i·(q/q_i)^−1]_{q_i}
/// and v = round(Σ y_i/q_i) (Halevi–Polyakov–Shoup; exact while |x|/q stays off ½).
pub(crate) fn lift_centered(
    moduli: &[Modulus],
    x: &Poly,
    low: &[usize],
    high: &[usize],
    n: usize,
) -> Poly {
    let mut out = Poly::zero(n, high.len());
    let k = low.len();
    for (pos, _) in low.iter().enumerate() {
        out.limb_mut(pos).copy_from_slice(x.limb(pos));
    }
    if high.len() == k {
        return out;
    }
    let inv = punctured_inverses(moduli, low);
    let targets = &high[k..];
    // [q/q_i]_p and [q]_p for every target p
    let punctured_mod: Vec<Vec<u64>> = targets
        .iter()
        .map(|&t| {
            let p = &moduli[t];
            (0..k)
                .map(|i| {
                    (0..k)
                        .filter(|&j| j != i)
                        .fold(1u64, |acc, j| p.mul(acc, p.reduce(moduli[low[j]].value())))
                })
                .collect()
        })
        .collect();
    let q_mod: Vec<u64> = targets
        .iter()
        .map(|&t| {
            let p = &moduli[t];
            (0..k).fold(1u64, |acc, j| p.mul(acc, p.reduce(moduli[low[j]].value())))
        })
        .collect();
    let mut y = vec![0u64; k];
    for c in 0..n {
        let mut frac = 0f64;
        for i in 0..k {
            let m = &moduli[low[i]];
            y[i] = m.mul(x.limb(i)[c], inv[i]);
            frac += y[i] as f64 / m.value() as f64;
        }
        let v = frac.round() as u64;
        for (t, &idx) in targets.iter().enumerate() {
            let p = &moduli[idx];
            let mut acc = 0u64;
            for i in 0..k {
                acc = p.add(acc, p.mul(p.reduce(y[i]), punctured_mod[t][i]));
            }
            out.limb_mut(k + t)[c] = p.sub(acc, p.mul(p.reduce(v), q_mod[t]));
        }
    }
    out
}
