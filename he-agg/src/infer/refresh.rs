//! Requester-aided refresh (mode b): between two segments of a deep network the server sends the
//! requester its ciphertext masked, the requester — who holds the key and waits for the answer
//! anyway — decrypts it and encrypts what it read at the top level, and the server removes the
//! mask. No bootstrapping, one round trip per refresh.
//!
//! The server drops the ciphertext (c0, c1) to the plan's refresh level ℓ (modulus q) and adds a
//! mask M to c0: M's coefficients are uniform integers in [−2^(b−1), 2^(b−1)) with
//! b = ⌊log2 q⌋ − 2, and the plan's base keeps q above 2^(64 + 2)·B, B bounding the coefficients
//! of Δ·m + e (the values times the scale, and the noise). The requester decrypts
//! w = Δ·m + e + M exactly (|w| < q/2, so nothing wraps), lifts it to the top level and encrypts
//! it; the server subtracts M and holds Δ·m + e + e_fresh at the top level, the scale unchanged.
//!
//! What the requester learns of the intermediate values: per coefficient, w given m and given
//! m' differ in distribution by at most |Δm + e − Δm' − e'| / 2^b ≤ 2^−64, so one refreshed
//! ciphertext of N coefficients is within statistical distance N·2^−64 ≤ 2^−49 (N ≤ 2^15) of a
//! uniform mask, and a request of R refreshes within R·2^−49. The bound B is the plan's: values
//! below 2^10 (the output bits) at the scale. A requester who sends an image far outside the
//! training data can make a deep polynomial network's values grow past it; per coefficient the
//! distance is then |Δm + e| / 2^b, which stays below 2^−40 until the values pass 2^35, and a
//! value that large wraps the ciphertext's modulus and makes the rest of the evaluation garbage. What the server learns: a fresh
//! encryption under the requester's key, nothing. A requester may return any ciphertext it
//! likes (it could always send any image): the server's answer stays a function of what the
//! requester chose. The c1 of what the server sends is a function of its weights and of the
//! requester's own keys, as the c1 of a mode (b) result always was (no circuit privacy).

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::ckks::{Ciphertext, CkksContext, SecretKey};
use crate::multiparty::refresh::{lift_centered, sample_mask};
use crate::ring::{Poly, Prng};
use crate::rlwe::SeededCiphertext;

use super::error::InferError;
use super::kernels;
use super::spec::{InferenceSpec, RefreshPoint};

/// Statistical security of a refresh's mask, in bits above the largest message coefficient.
pub const MASK_SECURITY: u32 = 64;
/// Bits a plan's base keeps for the mask beyond the message (the mask's security and its sign).
pub const MASK_BITS: u32 = MASK_SECURITY + 1;

/// What the server keeps of one masked ciphertext: the mask over the top level (NTT domain).
pub struct Mask {
    high: Zeroizing<Poly>,
    scale: f64,
}

impl std::fmt::Debug for Mask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mask").field("scale", &self.scale).finish()
    }
}

fn point(spec: &InferenceSpec, index: usize) -> Result<RefreshPoint, InferError> {
    spec.refreshes()
        .get(index)
        .copied()
        .ok_or(InferError::RefreshIndex {
            index,
            refreshes: spec.refreshes().len(),
        })
}

/// Bits of a mask at `level`: as wide as leaves the message, its sign and the sum below q/2.
fn mask_bits(ctx: &CkksContext, level: usize) -> u32 {
    (ctx.log_q(level).floor() as u32).saturating_sub(2)
}

/// Server: the output of segment `index` (at the refresh's level or above, at its scale)
/// dropped to the refresh level and masked, for the requester; the mask, to remove later.
pub fn mask(
    ctx: &Arc<CkksContext>,
    spec: &InferenceSpec,
    index: usize,
    ct: &Ciphertext,
    prng: &mut Prng,
) -> Result<(Ciphertext, Mask), InferError> {
    let p = point(spec, index)?;
    if ct.parts.len() != 2 || ct.level() < p.level {
        return Err(InferError::ModelMismatch(
            "a segment's output below the refresh level or not relinearized",
        ));
    }
    let mut low = ct.clone();
    for part in &mut low.parts {
        part.truncate(p.level);
    }
    kernels::check_input(ctx, &low, p.level, p.scale)?;
    let rl = ctx.rlwe();
    let ring = rl.ring();
    let top = spec.input_level();
    let (lo, hi) = (rl.q_basis(p.level), rl.q_basis(top));
    let mask = Zeroizing::new(sample_mask(
        ring.moduli(),
        hi,
        ring.n(),
        mask_bits(ctx, p.level),
        prng,
    ));
    let mut m_low = Zeroizing::new(mask.slice_limbs(0..p.level));
    ring.ntt(&mut m_low, lo);
    ring.add_assign(&mut low.parts[0], &m_low, lo);
    let mut high = mask;
    ring.ntt(&mut high, hi);
    Ok((
        low,
        Mask {
            high,
            scale: p.scale,
        },
    ))
}

/// Requester: the masked ciphertext of refresh `index` decrypted and encrypted again at the
/// plan's input level with the same scale (seeded: half the bytes back). Anything but the
/// plan's level and scale is refused.
pub fn reencrypt(
    ctx: &Arc<CkksContext>,
    spec: &InferenceSpec,
    index: usize,
    sk: &SecretKey,
    masked: &Ciphertext,
) -> Result<SeededCiphertext, InferError> {
    let p = point(spec, index)?;
    kernels::check_input(ctx, masked, p.level, p.scale)?;
    let pt = lifted(
        ctx,
        &ctx.decryptor(sk)?,
        masked,
        spec.input_level(),
        p.scale,
    );
    Ok(ctx.sk_encryptor(sk)?.encrypt_seeded(&pt))
}

/// `ct` decrypted at its level and lifted exactly (centred) to `top`'s basis, as a plaintext
/// of `scale`: what a refresh encrypts again at the top.
fn lifted(
    ctx: &CkksContext,
    dec: &crate::ckks::Decryptor,
    ct: &Ciphertext,
    top: usize,
    scale: f64,
) -> crate::ckks::Plaintext {
    let rl = ctx.rlwe();
    let ring = rl.ring();
    let (lo, hi) = (rl.q_basis(ct.level()), rl.q_basis(top));
    let mut w = Zeroizing::new(dec.decrypt(ct).poly);
    ring.intt(&mut w, lo);
    crate::ckks::Plaintext {
        poly: lift_centered(ring.moduli(), &w, lo, hi, ring.n()),
        scale,
        is_ntt: false,
    }
}

/// Server: the requester's re-encryption (expanded, at the input level) with the mask removed:
/// segment `index + 1`'s input.
pub fn unmask(
    ctx: &Arc<CkksContext>,
    spec: &InferenceSpec,
    fresh: Ciphertext,
    mask: Mask,
) -> Result<Ciphertext, InferError> {
    kernels::check_input(ctx, &fresh, spec.input_level(), mask.scale)?;
    let mut out = fresh;
    let hi = ctx.rlwe().q_basis(spec.input_level());
    ctx.rlwe()
        .ring()
        .sub_assign(&mut out.parts[0], &mask.high, hi);
    Ok(out)
}

/// A requester refreshing its own values with nothing between it and the evaluation (the
/// batched packing in `evaluate-encrypted`, and tests): `ct` decrypted at its level, lifted
/// exactly and encrypted again at `top` with the same scale — what [`mask`], [`reencrypt`] and
/// [`unmask`] give, without the mask a server would need.
pub fn renew(
    ctx: &CkksContext,
    dec: &crate::ckks::Decryptor,
    enc: &mut crate::ckks::SkEncryptor,
    ct: &Ciphertext,
    top: usize,
) -> Result<Ciphertext, InferError> {
    if ct.parts.len() != 2 || ct.level() > top || top > ctx.max_level() {
        return Err(InferError::ModelMismatch(
            "a refresh of a value that is not relinearized, or to a level it is above",
        ));
    }
    Ok(enc.encrypt(&lifted(ctx, dec, ct, top, ct.scale)))
}

/// [`renew`] for many values (a batched segment's, one ciphertext per value), on every core.
pub fn renew_all(
    ctx: &CkksContext,
    sk: &SecretKey,
    values: &[Ciphertext],
    top: usize,
) -> Result<Vec<Ciphertext>, InferError> {
    use rayon::prelude::*;
    let chunks: Vec<Vec<Ciphertext>> = values
        .par_chunks(64)
        .map(|chunk| {
            let dec = ctx.decryptor(sk)?;
            let mut enc = ctx.sk_encryptor(sk)?;
            chunk
                .iter()
                .map(|v| renew(ctx, &dec, &mut enc, v, top))
                .collect()
        })
        .collect::<Result<_, InferError>>()?;
    Ok(chunks.into_iter().flatten().collect())
}
