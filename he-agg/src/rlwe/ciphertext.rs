//! RLWE ciphertexts and plaintexts, with the CKKS scale they carry.

use crate::ring::{Poly, Seed};

/// A ciphertext (c_0, c_1[, c_2]) in the NTT domain over the first `level` ciphertext moduli;
/// it decrypts to Σ c_i·s^i ≈ Δ·m.
#[derive(Clone, Debug, PartialEq)]
pub struct Ciphertext {
    pub parts: Vec<Poly>,
    pub scale: f64,
}

impl Ciphertext {
    /// The number of ciphertext moduli it lives over.
    pub fn level(&self) -> usize {
        self.parts[0].limbs()
    }
    /// 1 for a fresh or relinearized ciphertext, 2 after a multiplication without relinearizing.
    pub fn degree(&self) -> usize {
        self.parts.len() - 1
    }
}

/// A secret-key ciphertext whose c_1 is expanded from a 32-byte seed: half the size on the wire.
#[derive(Clone, Debug, PartialEq)]
pub struct SeededCiphertext {
    pub c0: Poly,
    pub seed: Seed,
    pub scale: f64,
}

impl SeededCiphertext {
    pub fn level(&self) -> usize {
        self.c0.limbs()
    }
}

/// A plaintext polynomial over the first `level` ciphertext moduli, in the NTT domain or in
/// coefficient form.
#[derive(Clone, Debug, PartialEq)]
pub struct Plaintext {
    pub poly: Poly,
    pub scale: f64,
    pub is_ntt: bool,
}

impl Plaintext {
    pub fn level(&self) -> usize {
        self.poly.limbs()
    }
}
