//! Encryption under a public key or a secret key (optionally seeded), and decryption.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::ciphertext::{Ciphertext, Plaintext, SeededCiphertext};
use super::context::RlweContext;
use super::keygen::select_limbs;
use super::keys::{PublicKey, SecretKey};
use crate::ring::limbwise::{self, ShoupLimb};
use crate::ring::{Poly, Prng, Ring, RngError, Seed, for_each_limb_pair_heavy};

/// Encrypts plaintexts under a public key: (u·b + e_0 + m, u·a + e_1) with u ternary.
pub struct PkEncryptor {
    ctx: Arc<RlweContext>,
    /// The key's limbs over Q with the Shoup quotient of every coefficient: the products by u
    /// then cost what a product by a constant costs (and run in vector lanes).
    b: Vec<ShoupLimb>,
    a: Vec<ShoupLimb>,
    prng: Prng,
}

impl std::fmt::Debug for PkEncryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PkEncryptor")
            .field("limbs", &self.b.len())
            .finish()
    }
}

impl PkEncryptor {
    pub fn new(ctx: &Arc<RlweContext>, pk: &PublicKey) -> Result<Self, RngError> {
        Ok(Self::with_prng(ctx, pk, Prng::from_os()?))
    }

    /// An encryptor whose randomness is the stream of a public `seed`: for a public plaintext
    /// that several parties must encrypt to the same ciphertext (a head's zero initial state),
    /// never for a secret one.
    pub fn seeded_for_public(ctx: &Arc<RlweContext>, pk: &PublicKey, seed: &Seed) -> Self {
        Self::with_prng(ctx, pk, Prng::from_seed(seed))
    }

    fn with_prng(ctx: &Arc<RlweContext>, pk: &PublicKey, prng: Prng) -> Self {
        let ring = ctx.ring();
        let basis = ctx.q_basis(ctx.max_level());
        let prepare = |p: &Poly| -> Vec<ShoupLimb> {
            basis
                .iter()
                .enumerate()
                .map(|(i, &idx)| ShoupLimb::new(p.limb(i), ring.modulus(idx)))
                .collect()
        };
        Self {
            ctx: ctx.clone(),
            b: prepare(&pk.b),
            a: prepare(&pk.a),
            prng,
        }
    }

    /// Encrypts `pt` at its own level. A coefficient-form plaintext is fused with e_0 before a
    /// single NTT, which saves one transform per limb.
    pub fn encrypt(&mut self, pt: &Plaintext) -> Ciphertext {
        let ctx = &self.ctx;
        let ring = ctx.ring();
        let level = pt.level();
        let basis = ctx.q_basis(level);
        let n = ring.n();
        // u, e_0, e_1 with the ciphertext reveal the message: wiped after use
        let u = Zeroizing::new(self.prng.ternary(n));
        let e0 = Zeroizing::new(self.prng.gaussian(n));
        let e1 = Zeroizing::new(self.prng.gaussian(n));
        let mut u = Zeroizing::new(ring.from_small_signed(&u, basis));
        ring.ntt(&mut u, basis);
        let mut c0 = ring.from_small_signed(&e0, basis);
        if !pt.is_ntt {
            ring.add_assign(&mut c0, &pt.poly, basis);
        }
        ring.ntt(&mut c0, basis);
        if pt.is_ntt {
            ring.add_assign(&mut c0, &pt.poly, basis);
        }
        let mut c1 = ring.from_small_signed(&e1, basis);
        ring.ntt(&mut c1, basis);
        // the key's limbs beyond `level` are simply not read
        let (b, a) = (&self.b, &self.a);
        for_each_limb_pair_heavy(c0.data_mut(), c1.data_mut(), n, |i, l0, l1| {
            let m = ring.modulus(basis[i]);
            limbwise::mul_add_assign(l0, u.limb(i), &b[i], m);
            limbwise::mul_add_assign(l1, u.limb(i), &a[i], m);
        });
        Ciphertext {
            parts: vec![c0, c1],
            scale: pt.scale,
        }
    }
}

/// Encrypts under the secret key: (-a·s + e + m, a), with a expanded from a fresh seed so the
/// ciphertext can travel as (c_0, seed).
#[derive(Debug)]
pub struct SkEncryptor {
    ctx: Arc<RlweContext>,
    sk: SecretKey,
    prng: Prng,
}

impl SkEncryptor {
    pub fn new(ctx: &Arc<RlweContext>, sk: &SecretKey) -> Result<Self, RngError> {
        Ok(Self {
            ctx: ctx.clone(),
            sk: sk.clone(),
            prng: Prng::from_os()?,
        })
    }

    pub fn encrypt_seeded(&mut self, pt: &Plaintext) -> SeededCiphertext {
        let seed = self.prng.seed();
        self.encrypt_seeded_with(pt, seed, Ring::expand_uniform)
    }

    /// A seeded encryption whose a is expanded from the caller's `seed` by AES-128-CTR
    /// ([`Ring::expand_uniform_aes`]): an item of a round's update, whose seeds derive from one
    /// the hospital signs. A seed must never serve two plaintexts (their difference would show).
    pub fn encrypt_seeded_aes(&mut self, pt: &Plaintext, seed: Seed) -> SeededCiphertext {
        self.encrypt_seeded_with(pt, seed, Ring::expand_uniform_aes)
    }

    fn encrypt_seeded_with(
        &mut self,
        pt: &Plaintext,
        seed: Seed,
        expand: fn(&Ring, &Seed, &[usize]) -> Poly,
    ) -> SeededCiphertext {
        let ctx = &self.ctx;
        let ring = ctx.ring();
        let basis = ctx.q_basis(pt.level());
        let a = expand(ring, &seed, basis);
        let e = Zeroizing::new(self.prng.gaussian(ring.n()));
        let mut c0 = ring.from_small_signed(&e, basis);
        if !pt.is_ntt {
            ring.add_assign(&mut c0, &pt.poly, basis);
        }
        ring.ntt(&mut c0, basis);
        if pt.is_ntt {
            ring.add_assign(&mut c0, &pt.poly, basis);
        }
        let s = Zeroizing::new(select_limbs(&self.sk.poly, ctx, basis));
        let as_ = ring.mul(&a, &s, basis);
        ring.sub_assign(&mut c0, &as_, basis);
        SeededCiphertext {
            c0,
            seed,
            scale: pt.scale,
        }
    }

    pub fn encrypt(&mut self, pt: &Plaintext) -> Ciphertext {
        let seeded = self.encrypt_seeded(pt);
        expand_seeded(&self.ctx, &seeded)
    }
}

/// The full ciphertext of a seeded one.
pub fn expand_seeded(ctx: &RlweContext, ct: &SeededCiphertext) -> Ciphertext {
    let basis = ctx.q_basis(ct.level());
    let a = ctx.ring().expand_uniform(&ct.seed, basis);
    Ciphertext {
        parts: vec![ct.c0.clone(), a],
        scale: ct.scale,
    }
}

/// Decrypts with the secret key.
#[derive(Debug, Clone)]
pub struct Decryptor {
    ctx: Arc<RlweContext>,
    sk: SecretKey,
}

impl Decryptor {
    pub fn new(ctx: &Arc<RlweContext>, sk: &SecretKey) -> Self {
        Self {
            ctx: ctx.clone(),
            sk: sk.clone(),
        }
    }

    /// Σ c_i·s^i, in the NTT domain (decoding takes it from there).
    pub fn decrypt(&self, ct: &Ciphertext) -> Plaintext {
        let ctx = &self.ctx;
        let ring = ctx.ring();
        let basis = ctx.q_basis(ct.level());
        let s = Zeroizing::new(select_limbs(&self.sk.poly, ctx, basis));
        // Horner: ((c_d·s + c_{d-1})·s + …) + c_0, the last step fused into one pass
        let d = ct.degree();
        let poly = if d == 1 {
            ring.mul_add(&ct.parts[0], &ct.parts[1], &s, basis)
        } else {
            let mut acc: Poly = ct.parts[d].clone();
            for part in ct.parts[1..d].iter().rev() {
                ring.mul_assign(&mut acc, &s, basis);
                ring.add_assign(&mut acc, part, basis);
            }
            ring.mul_add(&ct.parts[0], &acc, &s, basis)
        };
        Plaintext {
            poly,
            scale: ct.scale,
            is_ntt: true,
        }
    }
}
