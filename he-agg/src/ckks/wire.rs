//! The wire format of ciphertexts and keys.
//!
//! Every object starts with a 40-byte header: `b"HEAL"`, the format version (u16 LE), the object
//! kind (u8), a reserved zero byte, and the 32-byte fingerprint of the parameters it was made
//! with. Polynomials follow limb by limb, each residue bit-packed to the width of its modulus
//! (a 40-bit prime costs 40 bits, not 64). Seeded ciphertexts carry their uniform component as a
//! 32-byte seed.
//!
//! Decoding trusts nothing: it checks the magic, version, kind, fingerprint, level, degree,
//! scale and every residue against its modulus, and compares the exact size the header implies
//! with the input length before allocating anything. It returns a [`WireError`] and never panics.

use zeroize::Zeroizing;

use crate::ring::{Poly, Seed};
use crate::rlwe::{
    Ciphertext, GaloisKey, GaloisKeys, PublicKey, RelinearizationKey, SecretKey, SeededCiphertext,
    SwitchingKey,
};

use super::context::CkksContext;

pub const MAGIC: [u8; 4] = *b"HEAL";
pub const VERSION: u16 = 1;
pub const HEADER_LEN: usize = 40;
/// Galois keys in one set at most (far above any network's need; bounds the decoder).
pub const MAX_GALOIS_KEYS: usize = 4096;

/// What a serialized object is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Ciphertext = 1,
    SeededCiphertext = 2,
    PublicKey = 3,
    RelinearizationKey = 4,
    GaloisKey = 5,
    GaloisKeys = 6,
    SecretKey = 7,
    // messages of the multiparty protocols (he_agg::multiparty::wire)
    PublicKeyShare = 8,
    RelinKeyShareRound1 = 9,
    RelinKeyShareRound2 = 10,
    GaloisKeyShare = 11,
    KeySwitchShare = 12,
    PublicKeySwitchShare = 13,
    ShamirShare = 14,
    ThresholdSecret = 15,
    RefreshShare = 16,
    SwitchInput = 17,
    SwitchedResult = 18,
    /// a round's update ciphertext: a seeded ciphertext whose a is AES-expanded
    SeededUpdate = 19,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Kind::Ciphertext,
            2 => Kind::SeededCiphertext,
            3 => Kind::PublicKey,
            4 => Kind::RelinearizationKey,
            5 => Kind::GaloisKey,
            6 => Kind::GaloisKeys,
            7 => Kind::SecretKey,
            8 => Kind::PublicKeyShare,
            9 => Kind::RelinKeyShareRound1,
            10 => Kind::RelinKeyShareRound2,
            11 => Kind::GaloisKeyShare,
            12 => Kind::KeySwitchShare,
            13 => Kind::PublicKeySwitchShare,
            14 => Kind::ShamirShare,
            15 => Kind::ThresholdSecret,
            16 => Kind::RefreshShare,
            17 => Kind::SwitchInput,
            18 => Kind::SwitchedResult,
            19 => Kind::SeededUpdate,
            _ => return None,
        })
    }
}

/// Why bytes are not a valid object for these parameters.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WireError {
    #[error("input of {got} bytes is shorter than the {need}-byte header")]
    Truncated { need: usize, got: usize },
    #[error("not a HEAL object (bad magic bytes)")]
    Magic,
    #[error("unsupported format version {0} (this build reads version {VERSION})")]
    Version(u16),
    #[error("unknown object kind {0}")]
    UnknownKind(u8),
    #[error("expected a {expected:?}, found a {found:?}")]
    WrongKind { expected: Kind, found: Kind },
    #[error("reserved header byte is {0}, not 0")]
    Reserved(u8),
    #[error("made for other parameters (fingerprint mismatch)")]
    Fingerprint,
    #[error("level {level} is outside 1..={max}")]
    Level { level: usize, max: usize },
    #[error("ciphertext degree {0} is not 1 or 2")]
    Degree(usize),
    #[error("scale {0} is not a finite number ≥ 1")]
    Scale(f64),
    #[error("the header implies {expected} bytes but the input has {got}")]
    Length { expected: usize, got: usize },
    #[error("residue at polynomial {poly}, limb {limb}, index {index} is not below its modulus")]
    Residue {
        poly: usize,
        limb: usize,
        index: usize,
    },
    #[error("Galois element {0} is not an odd number below 2N, other than 1")]
    GaloisElement(u64),
    #[error("{got} key-switching digits where the parameters have {want}")]
    Digits { got: usize, want: usize },
    #[error("{0} Galois keys exceed the limit of {MAX_GALOIS_KEYS}")]
    TooManyKeys(usize),
    #[error("Galois element {0} appears twice")]
    DuplicateGaloisElement(u64),
    #[error("party index {0} is outside 1..=65535 (or out of order)")]
    PartyIndex(u32),
    #[error("threshold {threshold} of {dealers} dealers")]
    Threshold { threshold: u32, dealers: u32 },
    #[error(
        "a {0} in the format of HEAL before 24 November 2026 (one summed share; this version keeps each dealer's): start the federation afresh"
    )]
    OldFormat(&'static str),
    #[error("{got} seeds where 1..={max} are allowed")]
    Seeds { got: usize, max: usize },
}

// ----- sizes -----

pub(crate) fn limb_bytes(ctx: &CkksContext, ring_index: usize) -> usize {
    ctx.n() * ctx.rlwe().ring().modulus(ring_index).bits() as usize / 8
}

pub(crate) fn poly_bytes(ctx: &CkksContext, basis: &[usize]) -> usize {
    basis.iter().map(|&i| limb_bytes(ctx, i)).sum()
}

/// The encoded size of a ciphertext of `degree` (1 or 2) at `level`.
pub fn ciphertext_len(ctx: &CkksContext, level: usize, degree: usize) -> usize {
    HEADER_LEN + 10 + (degree + 1) * poly_bytes(ctx, ctx.rlwe().q_basis(level))
}

/// The encoded size of a seeded ciphertext at `level`.
pub fn seeded_ciphertext_len(ctx: &CkksContext, level: usize) -> usize {
    HEADER_LEN + 9 + 32 + poly_bytes(ctx, ctx.rlwe().q_basis(level))
}

fn switching_key_body_len(ctx: &CkksContext) -> usize {
    1 + 2 * ctx.rlwe().digits().len() * poly_bytes(ctx, ctx.rlwe().key_basis())
}

// ----- writing -----

pub(crate) fn header(ctx: &CkksContext, kind: Kind, body: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.push(kind as u8);
    out.push(0);
    out.extend_from_slice(ctx.fingerprint());
    out
}

/// Appends the residues of `p` over `basis`, each packed to the bit width of its modulus.
pub(crate) fn put_poly(ctx: &CkksContext, out: &mut Vec<u8>, p: &Poly, basis: &[usize]) {
    for (pos, &idx) in basis.iter().enumerate() {
        let bits = ctx.rlwe().ring().modulus(idx).bits();
        let (mut acc, mut filled) = (0u128, 0u32);
        for &x in p.limb(pos) {
            acc |= (x as u128) << filled;
            filled += bits;
            while filled >= 64 {
                out.extend_from_slice(&(acc as u64).to_le_bytes());
                acc >>= 64;
                filled -= 64;
            }
        }
        // N·bits is a multiple of 8: the tail is whole bytes
        out.extend_from_slice(&acc.to_le_bytes()[..(filled / 8) as usize]);
    }
}

pub fn encode_ciphertext(ctx: &CkksContext, ct: &Ciphertext) -> Vec<u8> {
    let mut out = header(
        ctx,
        Kind::Ciphertext,
        ciphertext_len(ctx, ct.level(), ct.degree()),
    );
    out.push(ct.level() as u8);
    out.push(ct.degree() as u8);
    out.extend_from_slice(&ct.scale.to_le_bytes());
    for p in &ct.parts {
        put_poly(ctx, &mut out, p, ctx.rlwe().q_basis(ct.level()));
    }
    out
}

pub fn encode_seeded_ciphertext(ctx: &CkksContext, ct: &SeededCiphertext) -> Vec<u8> {
    encode_seeded_as(ctx, ct, Kind::SeededCiphertext)
}

/// A round's update ciphertext ([`crate::rlwe::SkEncryptor::encrypt_seeded_aes`]): laid out as
/// a seeded ciphertext, of its own kind because its a is expanded with AES-128-CTR
/// ([`crate::ring::Ring::expand_uniform_aes`]), not ChaCha20.
pub fn encode_seeded_update(ctx: &CkksContext, ct: &SeededCiphertext) -> Vec<u8> {
    encode_seeded_as(ctx, ct, Kind::SeededUpdate)
}

fn encode_seeded_as(ctx: &CkksContext, ct: &SeededCiphertext, kind: Kind) -> Vec<u8> {
    let mut out = header(ctx, kind, seeded_ciphertext_len(ctx, ct.level()));
    out.push(ct.level() as u8);
    out.extend_from_slice(&ct.scale.to_le_bytes());
    out.extend_from_slice(&ct.seed);
    put_poly(ctx, &mut out, &ct.c0, ctx.rlwe().q_basis(ct.level()));
    out
}

pub fn encode_public_key(ctx: &CkksContext, pk: &PublicKey) -> Vec<u8> {
    let basis = ctx.rlwe().q_basis(ctx.max_level());
    let mut out = header(ctx, Kind::PublicKey, 2 * poly_bytes(ctx, basis));
    put_poly(ctx, &mut out, pk.b(), basis);
    put_poly(ctx, &mut out, pk.a(), basis);
    out
}

fn put_switching_key(ctx: &CkksContext, out: &mut Vec<u8>, key: &SwitchingKey) {
    out.push(key.parts().len() as u8);
    for (b, a) in key.parts() {
        put_poly(ctx, out, b, ctx.rlwe().key_basis());
        put_poly(ctx, out, a, ctx.rlwe().key_basis());
    }
}

pub fn encode_relinearization_key(ctx: &CkksContext, rlk: &RelinearizationKey) -> Vec<u8> {
    let mut out = header(ctx, Kind::RelinearizationKey, switching_key_body_len(ctx));
    put_switching_key(ctx, &mut out, &rlk.0);
    out
}

pub fn encode_galois_key(ctx: &CkksContext, gk: &GaloisKey) -> Vec<u8> {
    let mut out = header(ctx, Kind::GaloisKey, 8 + switching_key_body_len(ctx));
    out.extend_from_slice(&gk.galois_element.to_le_bytes());
    put_switching_key(ctx, &mut out, &gk.key);
    out
}

pub fn encode_galois_keys(ctx: &CkksContext, keys: &GaloisKeys) -> Vec<u8> {
    let mut elements: Vec<u64> = keys.elements().collect();
    elements.sort_unstable();
    let mut out = header(
        ctx,
        Kind::GaloisKeys,
        2 + elements.len() * (8 + switching_key_body_len(ctx)),
    );
    out.extend_from_slice(&(elements.len() as u16).to_le_bytes());
    for g in elements {
        let key = keys.get(g).expect("element listed by the set");
        out.extend_from_slice(&g.to_le_bytes());
        put_switching_key(ctx, &mut out, &key.key);
    }
    out
}

/// The secret key, for storing on the party's own disk (mode 0600). The buffer is wiped on drop.
pub fn encode_secret_key(ctx: &CkksContext, sk: &SecretKey) -> Zeroizing<Vec<u8>> {
    let basis = ctx.rlwe().key_basis();
    let mut out = Zeroizing::new(header(ctx, Kind::SecretKey, poly_bytes(ctx, basis)));
    put_poly(ctx, &mut out, sk.poly(), basis);
    out
}

// ----- reading -----

pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Checks the header and returns a reader over the body.
    pub(crate) fn open(
        ctx: &CkksContext,
        bytes: &'a [u8],
        expected: Kind,
    ) -> Result<Self, WireError> {
        if bytes.len() < HEADER_LEN {
            return Err(WireError::Truncated {
                need: HEADER_LEN,
                got: bytes.len(),
            });
        }
        if bytes[..4] != MAGIC {
            return Err(WireError::Magic);
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != VERSION {
            return Err(WireError::Version(version));
        }
        let found = Kind::from_u8(bytes[6]).ok_or(WireError::UnknownKind(bytes[6]))?;
        if found != expected {
            return Err(WireError::WrongKind { expected, found });
        }
        if bytes[7] != 0 {
            return Err(WireError::Reserved(bytes[7]));
        }
        if bytes[8..40] != ctx.fingerprint()[..] {
            return Err(WireError::Fingerprint);
        }
        Ok(Self {
            bytes,
            pos: HEADER_LEN,
        })
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// Fails unless exactly `n` bytes remain (called once the header fixes the size).
    pub(crate) fn expect_remaining(&self, n: usize) -> Result<(), WireError> {
        if self.remaining() != n {
            return Err(WireError::Length {
                expected: self.pos + n,
                got: self.bytes.len(),
            });
        }
        Ok(())
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.remaining() < n {
            return Err(WireError::Length {
                expected: self.pos + n,
                got: self.bytes.len(),
            });
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, WireError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    pub(crate) fn scale(&mut self) -> Result<f64, WireError> {
        let s = f64::from_bits(self.u64()?);
        if !(s.is_finite() && s >= 1.0) {
            return Err(WireError::Scale(s));
        }
        Ok(s)
    }

    pub(crate) fn level(&mut self, ctx: &CkksContext) -> Result<usize, WireError> {
        let level = self.u8()? as usize;
        if level == 0 || level > ctx.max_level() {
            return Err(WireError::Level {
                level,
                max: ctx.max_level(),
            });
        }
        Ok(level)
    }

    /// Reads a polynomial over `basis`; the caller has already checked the length.
    pub(crate) fn poly(
        &mut self,
        ctx: &CkksContext,
        basis: &[usize],
        poly_index: usize,
    ) -> Result<Poly, WireError> {
        let n = ctx.n();
        let mut p = Poly::zero(n, basis.len());
        for (pos, &idx) in basis.iter().enumerate() {
            let m = ctx.rlwe().ring().modulus(idx);
            let bits = m.bits();
            let mask = (1u64 << bits) - 1;
            let src = self.take(limb_bytes(ctx, idx))?;
            let limb = p.limb_mut(pos);
            // residue k starts at bit k·bits: one unaligned 16-byte load and a shift each (a
            // residue spans at most 9 bytes), while 16 bytes remain; the tail byte by byte
            let bits_usize = bits as usize;
            let fast = if src.len() >= 16 {
                ((src.len() - 16) * 8 / bits_usize + 1).min(n)
            } else {
                0
            };
            let q = m.value();
            let mut over = 0u64;
            for (k, out) in limb[..fast].iter_mut().enumerate() {
                let at = k * bits_usize;
                let word: [u8; 16] = src[at / 8..at / 8 + 16]
                    .try_into()
                    .expect("16 bytes by the bound on fast");
                let x = (u128::from_le_bytes(word) >> (at % 8)) as u64 & mask;
                over |= u64::from(x >= q);
                *out = x;
            }
            for (k, out) in limb.iter_mut().enumerate().skip(fast) {
                let at = k * bits_usize;
                let mut acc = 0u128;
                for (j, &b) in src[at / 8..].iter().take(9).enumerate() {
                    acc |= u128::from(b) << (8 * j);
                }
                let x = (acc >> (at % 8)) as u64 & mask;
                over |= u64::from(x >= q);
                *out = x;
            }
            if over != 0 {
                let index = limb.iter().position(|&x| x >= q).unwrap_or(0);
                return Err(WireError::Residue {
                    poly: poly_index,
                    limb: pos,
                    index,
                });
            }
        }
        Ok(p)
    }

    fn switching_key(&mut self, ctx: &CkksContext) -> Result<SwitchingKey, WireError> {
        let want = ctx.rlwe().digits().len();
        let got = self.u8()? as usize;
        if got != want {
            return Err(WireError::Digits { got, want });
        }
        let basis = ctx.rlwe().key_basis();
        let parts = (0..want)
            .map(|j| {
                Ok((
                    self.poly(ctx, basis, 2 * j)?,
                    self.poly(ctx, basis, 2 * j + 1)?,
                ))
            })
            .collect::<Result<Vec<_>, WireError>>()?;
        Ok(SwitchingKey::new(parts, *ctx.fingerprint()))
    }

    pub(crate) fn galois_element(&mut self, ctx: &CkksContext) -> Result<u64, WireError> {
        let g = self.u64()?;
        if g % 2 == 0 || g == 1 || g >= 2 * ctx.n() as u64 {
            return Err(WireError::GaloisElement(g));
        }
        Ok(g)
    }
}

pub fn decode_ciphertext(ctx: &CkksContext, bytes: &[u8]) -> Result<Ciphertext, WireError> {
    let mut r = Reader::open(ctx, bytes, Kind::Ciphertext)?;
    let level = r.level(ctx)?;
    let degree = r.u8()? as usize;
    if !(1..=2).contains(&degree) {
        return Err(WireError::Degree(degree));
    }
    let scale = r.scale()?;
    let basis = ctx.rlwe().q_basis(level);
    r.expect_remaining((degree + 1) * poly_bytes(ctx, basis))?;
    let parts = (0..=degree)
        .map(|i| r.poly(ctx, basis, i))
        .collect::<Result<_, _>>()?;
    Ok(Ciphertext { parts, scale })
}

pub fn decode_seeded_ciphertext(
    ctx: &CkksContext,
    bytes: &[u8],
) -> Result<SeededCiphertext, WireError> {
    decode_seeded_as(ctx, bytes, Kind::SeededCiphertext)
}

/// See [`encode_seeded_update`].
pub fn decode_seeded_update(
    ctx: &CkksContext,
    bytes: &[u8],
) -> Result<SeededCiphertext, WireError> {
    decode_seeded_as(ctx, bytes, Kind::SeededUpdate)
}

fn decode_seeded_as(
    ctx: &CkksContext,
    bytes: &[u8],
    kind: Kind,
) -> Result<SeededCiphertext, WireError> {
    let mut r = Reader::open(ctx, bytes, kind)?;
    let level = r.level(ctx)?;
    let scale = r.scale()?;
    let seed: Seed = r.take(32)?.try_into().expect("32 bytes");
    let basis = ctx.rlwe().q_basis(level);
    r.expect_remaining(poly_bytes(ctx, basis))?;
    let c0 = r.poly(ctx, basis, 0)?;
    Ok(SeededCiphertext { c0, seed, scale })
}

pub fn decode_public_key(ctx: &CkksContext, bytes: &[u8]) -> Result<PublicKey, WireError> {
    let mut r = Reader::open(ctx, bytes, Kind::PublicKey)?;
    let basis = ctx.rlwe().q_basis(ctx.max_level());
    r.expect_remaining(2 * poly_bytes(ctx, basis))?;
    let b = r.poly(ctx, basis, 0)?;
    let a = r.poly(ctx, basis, 1)?;
    Ok(PublicKey::new(b, a, *ctx.fingerprint()))
}

pub fn decode_relinearization_key(
    ctx: &CkksContext,
    bytes: &[u8],
) -> Result<RelinearizationKey, WireError> {
    let mut r = Reader::open(ctx, bytes, Kind::RelinearizationKey)?;
    r.expect_remaining(switching_key_body_len(ctx))?;
    Ok(RelinearizationKey(r.switching_key(ctx)?))
}

pub fn decode_galois_key(ctx: &CkksContext, bytes: &[u8]) -> Result<GaloisKey, WireError> {
    let mut r = Reader::open(ctx, bytes, Kind::GaloisKey)?;
    r.expect_remaining(8 + switching_key_body_len(ctx))?;
    let galois_element = r.galois_element(ctx)?;
    Ok(GaloisKey {
        galois_element,
        key: r.switching_key(ctx)?,
    })
}

pub fn decode_galois_keys(ctx: &CkksContext, bytes: &[u8]) -> Result<GaloisKeys, WireError> {
    let mut r = Reader::open(ctx, bytes, Kind::GaloisKeys)?;
    let count = r.u16()? as usize;
    if count > MAX_GALOIS_KEYS {
        return Err(WireError::TooManyKeys(count));
    }
    r.expect_remaining(count * (8 + switching_key_body_len(ctx)))?;
    let mut keys = GaloisKeys::new();
    for _ in 0..count {
        let g = r.galois_element(ctx)?;
        if keys.get(g).is_some() {
            return Err(WireError::DuplicateGaloisElement(g));
        }
        keys.insert(GaloisKey {
            galois_element: g,
            key: r.switching_key(ctx)?,
        });
    }
    Ok(keys)
}

pub fn decode_secret_key(ctx: &CkksContext, bytes: &[u8]) -> Result<SecretKey, WireError> {
    let mut r = Reader::open(ctx, bytes, Kind::SecretKey)?;
    let basis = ctx.rlwe().key_basis();
    r.expect_remaining(poly_bytes(ctx, basis))?;
    Ok(SecretKey::from_poly(
        r.poly(ctx, basis, 0)?,
        *ctx.fingerprint(),
    ))
}

#[cfg(test)]
mod tests;
