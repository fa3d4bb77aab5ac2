//! Share messages on the wire, in the format of [`crate::ckks::wire`] (40-byte header with kind
//! and parameter fingerprint, residues bit-packed to their modulus width) and validated the same
//! way: exact sizes before allocating, every residue below its modulus, typed errors.

use zeroize::Zeroizing;

use crate::ckks::wire::{Kind, Reader, WireError, header, poly_bytes, put_poly};
use crate::ckks::{Ciphertext, CkksContext};
use crate::ring::Poly;

use super::keygen::{GaloisKeyShare, PublicKeyShare, RelinKeyShare1, RelinKeyShare2};
use super::keyswitch::{KeySwitchShare, PublicKeySwitchShare, SwitchInput};
use super::receive_switch::{MAX_SWITCHERS, SwitchedResult};
use super::refresh::RefreshShare;
use super::threshold::{MAX_PARTY_INDEX, ShamirShare, ThresholdSecret};

fn digits(ctx: &CkksContext) -> usize {
    ctx.rlwe().digits().len()
}

fn key_poly_bytes(ctx: &CkksContext) -> usize {
    poly_bytes(ctx, ctx.rlwe().key_basis())
}

pub fn encode_public_key_share(ctx: &CkksContext, s: &PublicKeyShare) -> Vec<u8> {
    let basis = ctx.rlwe().q_basis(ctx.max_level());
    let mut out = header(ctx, Kind::PublicKeyShare, poly_bytes(ctx, basis));
    put_poly(ctx, &mut out, &s.p, basis);
    out
}

pub fn decode_public_key_share(
    ctx: &CkksContext,
    bytes: &[u8],
) -> Result<PublicKeyShare, WireError> {
    let mut r = Reader::open(ctx, bytes, Kind::PublicKeyShare)?;
    let basis = ctx.rlwe().q_basis(ctx.max_level());
    r.expect_remaining(poly_bytes(ctx, basis))?;
    Ok(PublicKeyShare {
        p: r.poly(ctx, basis, 0)?,
    })
}

fn encode_digit_pairs(
    ctx: &CkksContext,
    kind: Kind,
    h0: &[crate::ring::Poly],
    h1: &[crate::ring::Poly],
) -> Vec<u8> {
    let basis = ctx.rlwe().key_basis();
    let mut out = header(ctx, kind, 1 + 2 * h0.len() * key_poly_bytes(ctx));
    out.push(h0.len() as u8);
    for (a, b) in h0.iter().zip(h1) {
        put_poly(ctx, &mut out, a, basis);
        put_poly(ctx, &mut out, b, basis);
    }
    out
}

type DigitPairs = (Vec<crate::ring::Poly>, Vec<crate::ring::Poly>);

fn decode_digit_pairs(
    ctx: &CkksContext,
    bytes: &[u8],
    kind: Kind,
) -> Result<DigitPairs, WireError> {
    let mut r = Reader::open(ctx, bytes, kind)?;
    let want = digits(ctx);
    let got = r.u8()? as usize;
    if got != want {
        return Err(WireError::Digits { got, want });
    }
    r.expect_remaining(2 * want * key_poly_bytes(ctx))?;
    let basis = ctx.rlwe().key_basis();
    let (mut h0, mut h1) = (Vec::with_capacity(want), Vec::with_capacity(want));
    for j in 0..want {
        h0.push(r.poly(ctx, basis, 2 * j)?);
        h1.push(r.poly(ctx, basis, 2 * j + 1)?);
    }
    Ok((h0, h1))
}

pub fn encode_relin_share1(ctx: &CkksContext, s: &RelinKeyShare1) -> Vec<u8> {
    encode_digit_pairs(ctx, Kind::RelinKeyShareRound1, &s.h0, &s.h1)
}

pub fn decode_relin_share1(ctx: &CkksContext, bytes: &[u8]) -> Result<RelinKeyShare1, WireError> {
    let (h0, h1) = decode_digit_pairs(ctx, bytes, Kind::RelinKeyShareRound1)?;
    Ok(RelinKeyShare1 { h0, h1 })
}

pub fn encode_relin_share2(ctx: &CkksContext, s: &RelinKeyShare2) -> Vec<u8> {
    encode_digit_pairs(ctx, Kind::RelinKeyShareRound2, &s.h0, &s.h1)
}

pub fn decode_relin_share2(ctx: &CkksContext, bytes: &[u8]) -> Result<RelinKeyShare2, WireError> {
    let (h0, h1) = decode_digit_pairs(ctx, bytes, Kind::RelinKeyShareRound2)?;
    Ok(RelinKeyShare2 { h0, h1 })
}

pub fn encode_galois_share(ctx: &CkksContext, s: &GaloisKeyShare) -> Vec<u8> {
    let basis = ctx.rlwe().key_basis();
    let mut out = header(
        ctx,
        Kind::GaloisKeyShare,
        9 + s.h.len() * key_poly_bytes(ctx),
    );
    out.extend_from_slice(&s.galois_element.to_le_bytes());
    out.push(s.h.len() as u8);
    for p in &s.h {
        put_poly(ctx, &mut out, p, basis);
    }
    out
}

pub fn decode_galois_share(ctx: &CkksContext, bytes: &[u8]) -> Result<GaloisKeyShare, WireError> {
    let mut r = Reader::open(ctx, bytes, Kind::GaloisKeyShare)?;
    let galois_element = r.galois_element(ctx)?;
    let want = digits(ctx);
    let got = r.u8()? as usize;
    if got != want {
        return Err(WireError::Digits { got, want });
    }
    r.expect_remaining(want * key_poly_bytes(ctx))?;
    let basis = ctx.rlwe().key_basis();
    let h = (0..want)
        .map(|j| r.poly(ctx, basis, j))
        .collect::<Result<_, _>>()?;
    Ok(GaloisKeyShare { galois_element, h })
}

pub fn encode_key_switch_share(ctx: &CkksContext, s: &KeySwitchShare) -> Vec<u8> {
    let basis = ctx.rlwe().q_basis(s.level());
    let mut out = header(ctx, Kind::KeySwitchShare, 1 + poly_bytes(ctx, basis));
    out.push(s.level() as u8);
    put_poly(ctx, &mut out, &s.h, basis);
    out
}

pub fn decode_key_switch_share(
    ctx: &CkksContext,
    bytes: &[u8],
) -> Result<KeySwitchShare, WireError> {
    let mut r = Reader::open(ctx, bytes, Kind::KeySwitchShare)?;
    let level = r.level(ctx)?;
    let basis = ctx.rlwe().q_basis(level);
    r.expect_remaining(poly_bytes(ctx, basis))?;
    Ok(KeySwitchShare {
        h: r.poly(ctx, basis, 0)?,
    })
}

/// The encoded size of a public-key-switch share at `level`.
pub fn public_key_switch_share_len(ctx: &CkksContext, level: usize) -> usize {
    crate::ckks::wire::HEADER_LEN + 1 + 2 * poly_bytes(ctx, ctx.rlwe().q_basis(level))
}

pub fn encode_public_key_switch_share(ctx: &CkksContext, s: &PublicKeySwitchShare) -> Vec<u8> {
    let basis = ctx.rlwe().q_basis(s.level());
    let mut out = header(
        ctx,
        Kind::PublicKeySwitchShare,
        1 + 2 * poly_bytes(ctx, basis),
    );
    out.push(s.level() as u8);
    put_poly(ctx, &mut out, &s.h0, basis);
    put_poly(ctx, &mut out, &s.h1, basis);
    out
}

pub fn decode_public_key_switch_share(
    ctx: &CkksContext,
    bytes: &[u8],
) -> Result<PublicKeySwitchShare, WireError> {
    let mut r = Reader::open(ctx, bytes, Kind::PublicKeySwitchShare)?;
    let level = r.level(ctx)?;
    let basis = ctx.rlwe().q_basis(level);
    r.expect_remaining(2 * poly_bytes(ctx, basis))?;
    let h0 = r.poly(ctx, basis, 0)?;
    let h1 = r.poly(ctx, basis, 1)?;
    Ok(PublicKeySwitchShare { h0, h1 })
}

/// The encoded size of a [`SwitchInput`] at `level`.
pub fn switch_input_len(ctx: &CkksContext, level: usize) -> usize {
    crate::ckks::wire::HEADER_LEN + 1 + 8 + poly_bytes(ctx, ctx.rlwe().q_basis(level))
}

/// A switch input: level, scale, c1.
pub fn encode_switch_input(ctx: &CkksContext, s: &SwitchInput) -> Vec<u8> {
    encode_c1(ctx, &s.c1, s.scale)
}

/// The switch input of `ct` written straight from its c₁ (no copy of the polynomial); `None`
/// unless `ct` has degree 1.
pub fn encode_switch_input_of(ctx: &CkksContext, ct: &Ciphertext) -> Option<Vec<u8>> {
    (ct.degree() == 1).then(|| encode_c1(ctx, &ct.parts[1], ct.scale))
}

fn encode_c1(ctx: &CkksContext, c1: &Poly, scale: f64) -> Vec<u8> {
    let level = c1.limbs();
    let basis = ctx.rlwe().q_basis(level);
    let mut out = header(ctx, Kind::SwitchInput, 1 + 8 + poly_bytes(ctx, basis));
    out.push(level as u8);
    out.extend_from_slice(&scale.to_le_bytes());
    put_poly(ctx, &mut out, c1, basis);
    out
}

pub fn decode_switch_input(ctx: &CkksContext, bytes: &[u8]) -> Result<SwitchInput, WireError> {
    let mut r = Reader::open(ctx, bytes, Kind::SwitchInput)?;
    let level = r.level(ctx)?;
    let scale = r.scale()?;
    let basis = ctx.rlwe().q_basis(level);
    r.expect_remaining(poly_bytes(ctx, basis))?;
    Ok(SwitchInput {
        c1: r.poly(ctx, basis, 1)?,
        scale,
    })
}

/// A refresh share: h0 over the refreshed ciphertext's level, h1 over the top level.
/// The encoded size of a [`SwitchedResult`] at `level` with `switchers` seeds.
pub fn switched_result_len(ctx: &CkksContext, level: usize, switchers: usize) -> usize {
    crate::ckks::wire::HEADER_LEN
        + 1
        + 8
        + 2
        + 32 * switchers
        + poly_bytes(ctx, ctx.rlwe().q_basis(level))
}

/// A switched result: level, scale, seed count, the seeds, c0.
pub fn encode_switched_result(ctx: &CkksContext, r: &SwitchedResult) -> Vec<u8> {
    let basis = ctx.rlwe().q_basis(r.level());
    let mut out = header(
        ctx,
        Kind::SwitchedResult,
        1 + 8 + 2 + 32 * r.a_seeds.len() + poly_bytes(ctx, basis),
    );
    out.push(r.level() as u8);
    out.extend_from_slice(&r.scale.to_le_bytes());
    out.extend_from_slice(&(r.a_seeds.len() as u16).to_le_bytes());
    for seed in &r.a_seeds {
        out.extend_from_slice(seed);
    }
    put_poly(ctx, &mut out, &r.c0, basis);
    out
}

pub fn decode_switched_result(
    ctx: &CkksContext,
    bytes: &[u8],
) -> Result<SwitchedResult, WireError> {
    let mut r = Reader::open(ctx, bytes, Kind::SwitchedResult)?;
    let level = r.level(ctx)?;
    let scale = r.scale()?;
    let count = r.u16()? as usize;
    if count == 0 || count > MAX_SWITCHERS {
        return Err(WireError::Seeds {
            got: count,
            max: MAX_SWITCHERS,
        });
    }
    let basis = ctx.rlwe().q_basis(level);
    r.expect_remaining(32 * count + poly_bytes(ctx, basis))?;
    let a_seeds = (0..count)
        .map(|_| r.take(32).map(|b| b.try_into().expect("32 bytes")))
        .collect::<Result<_, _>>()?;
    Ok(SwitchedResult {
        c0: r.poly(ctx, basis, 0)?,
        a_seeds,
        scale,
    })
}

pub fn encode_refresh_share(ctx: &CkksContext, s: &RefreshShare) -> Vec<u8> {
    let low = ctx.rlwe().q_basis(s.level());
    let high = ctx.rlwe().q_basis(ctx.max_level());
    let mut out = header(
        ctx,
        Kind::RefreshShare,
        1 + poly_bytes(ctx, low) + poly_bytes(ctx, high),
    );
    out.push(s.level() as u8);
    put_poly(ctx, &mut out, &s.h0, low);
    put_poly(ctx, &mut out, &s.h1, high);
    out
}

pub fn decode_refresh_share(ctx: &CkksContext, bytes: &[u8]) -> Result<RefreshShare, WireError> {
    let mut r = Reader::open(ctx, bytes, Kind::RefreshShare)?;
    let level = r.level(ctx)?;
    let low = ctx.rlwe().q_basis(level);
    let high = ctx.rlwe().q_basis(ctx.max_level());
    r.expect_remaining(poly_bytes(ctx, low) + poly_bytes(ctx, high))?;
    let h0 = r.poly(ctx, low, 0)?;
    let h1 = r.poly(ctx, high, 1)?;
    Ok(RefreshShare { h0, h1 })
}

/// The encoded size of a Shamir share (before sealing).
pub fn shamir_share_len(ctx: &CkksContext) -> usize {
    crate::ckks::wire::HEADER_LEN + 8 + key_poly_bytes(ctx)
}

/// A Shamir share in the clear — only ever to be sealed for its receiver (see
/// [`super::sealed`]). The buffer is wiped on drop.
pub fn encode_shamir_share(ctx: &CkksContext, s: &ShamirShare) -> Zeroizing<Vec<u8>> {
    let basis = ctx.rlwe().key_basis();
    let mut out = Zeroizing::new(header(ctx, Kind::ShamirShare, 8 + key_poly_bytes(ctx)));
    out.extend_from_slice(&s.from.to_le_bytes());
    out.extend_from_slice(&s.to.to_le_bytes());
    put_poly(ctx, &mut out, &s.poly, basis);
    out
}

pub fn decode_shamir_share(ctx: &CkksContext, bytes: &[u8]) -> Result<ShamirShare, WireError> {
    let mut r = Reader::open(ctx, bytes, Kind::ShamirShare)?;
    let take_index = |r: &mut Reader| -> Result<u32, WireError> {
        let b = r.take(4)?;
        let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if v == 0 || v > MAX_PARTY_INDEX {
            return Err(WireError::PartyIndex(v));
        }
        Ok(v)
    };
    let from = take_index(&mut r)?;
    let to = take_index(&mut r)?;
    r.expect_remaining(key_poly_bytes(ctx))?;
    let poly = r.poly(ctx, ctx.rlwe().key_basis(), 0)?;
    Ok(ShamirShare { from, to, poly })
}

/// A party's threshold secret, for its own disk (mode 0600): its index, the threshold, and what
/// each dealer dealt it (the sum is made again when read). The buffer is wiped on drop.
pub fn encode_threshold_secret(ctx: &CkksContext, s: &ThresholdSecret) -> Zeroizing<Vec<u8>> {
    let basis = ctx.rlwe().key_basis();
    let len = 12 + s.dealers.len() * (4 + key_poly_bytes(ctx));
    let mut out = Zeroizing::new(header(ctx, Kind::ThresholdSecret, len));
    out.extend_from_slice(&s.index.to_le_bytes());
    out.extend_from_slice(&(s.threshold as u32).to_le_bytes());
    out.extend_from_slice(&(s.dealers.len() as u32).to_le_bytes());
    for (dealer, poly) in s.dealers.iter().zip(&s.dealt) {
        out.extend_from_slice(&dealer.to_le_bytes());
        put_poly(ctx, &mut out, poly, basis);
    }
    out
}

pub fn decode_threshold_secret(
    ctx: &CkksContext,
    bytes: &[u8],
) -> Result<ThresholdSecret, WireError> {
    let mut r = Reader::open(ctx, bytes, Kind::ThresholdSecret)?;
    // the earlier layout (index, threshold, the summed share) has a length no dealer list has
    if r.remaining() == 8 + key_poly_bytes(ctx) {
        return Err(WireError::OldFormat("threshold secret"));
    }
    let b = r.take(12)?;
    let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let (index, threshold, count) = (word(0), word(4), word(8));
    if index == 0 || index > MAX_PARTY_INDEX {
        return Err(WireError::PartyIndex(index));
    }
    if threshold == 0 || threshold > count {
        return Err(WireError::Threshold {
            threshold,
            dealers: count,
        });
    }
    // the length is known before anything is allocated (count ≤ 65535 dealers)
    if count > MAX_PARTY_INDEX {
        return Err(WireError::PartyIndex(count));
    }
    r.expect_remaining(count as usize * (4 + key_poly_bytes(ctx)))?;
    let (mut dealers, mut dealt) = (Vec::new(), Vec::new());
    for _ in 0..count {
        let b = r.take(4)?;
        let dealer = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        // ascending: one share per dealer, one encoding per secret
        if dealer == 0 || dealer > MAX_PARTY_INDEX || dealers.last().is_some_and(|&d| d >= dealer) {
            return Err(WireError::PartyIndex(dealer));
        }
        dealers.push(dealer);
        dealt.push(r.poly(ctx, ctx.rlwe().key_basis(), dealt.len())?);
    }
    Ok(ThresholdSecret::from_dealt(
        ctx,
        index,
        threshold as usize,
        dealers,
        dealt,
    ))
}
