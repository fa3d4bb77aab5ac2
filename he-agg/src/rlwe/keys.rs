//! Key material: the secret key, the public key, switching keys (relinearization, rotations).
//! Secrets are wiped on drop and never printed.

use std::collections::HashMap;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::ring::Poly;

/// A ternary secret key, held in the NTT domain over the whole chain Q ∪ P.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey {
    pub(crate) poly: Poly,
    pub(crate) fingerprint: [u8; 32],
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl SecretKey {
    /// The secret in the NTT domain over Q_L ∪ P. Handle with care: this is the key.
    pub fn poly(&self) -> &Poly {
        &self.poly
    }

    /// Wraps a secret (NTT domain over Q_L ∪ P) made by a protocol, e.g. a sum of shares.
    pub fn from_poly(poly: Poly, fingerprint: [u8; 32]) -> Self {
        Self { poly, fingerprint }
    }

    pub fn fingerprint(&self) -> &[u8; 32] {
        &self.fingerprint
    }
}

/// An encryption of zero (b, a) = (-a·s + e, a) over the ciphertext moduli Q_L, NTT domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub(crate) b: Poly,
    pub(crate) a: Poly,
    pub(crate) fingerprint: [u8; 32],
}

impl PublicKey {
    pub fn new(b: Poly, a: Poly, fingerprint: [u8; 32]) -> Self {
        Self { b, a, fingerprint }
    }
    pub fn b(&self) -> &Poly {
        &self.b
    }
    pub fn a(&self) -> &Poly {
        &self.a
    }
    pub fn fingerprint(&self) -> &[u8; 32] {
        &self.fingerprint
    }
}

/// A hybrid key-switching key from s' to s: for each digit j, (b_j, a_j) over Q_L ∪ P with
/// b_j = -a_j·s + e_j + P·Q̃_j·s', Q̃_j being the CRT idempotent of digit j.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwitchingKey {
    pub(crate) parts: Vec<(Poly, Poly)>,
    pub(crate) fingerprint: [u8; 32],
}

impl SwitchingKey {
    pub fn new(parts: Vec<(Poly, Poly)>, fingerprint: [u8; 32]) -> Self {
        Self { parts, fingerprint }
    }
    pub fn parts(&self) -> &[(Poly, Poly)] {
        &self.parts
    }
    pub fn fingerprint(&self) -> &[u8; 32] {
        &self.fingerprint
    }
}

/// Switches s² back to s after a multiplication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelinearizationKey(pub SwitchingKey);

/// Switches σ_g(s) back to s after the automorphism X ↦ X^g.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GaloisKey {
    pub galois_element: u64,
    pub key: SwitchingKey,
}

/// Galois keys by Galois element. Each key is shared, so a clone (an evaluator made for a
/// request from a requester's kept keys) costs a count per key, not a copy of hundreds of
/// megabytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GaloisKeys {
    keys: HashMap<u64, std::sync::Arc<GaloisKey>>,
}

impl GaloisKeys {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn insert(&mut self, key: GaloisKey) {
        self.keys
            .insert(key.galois_element, std::sync::Arc::new(key));
    }
    pub fn get(&self, galois_element: u64) -> Option<&GaloisKey> {
        self.keys.get(&galois_element).map(|k| &**k)
    }
    pub fn elements(&self) -> impl Iterator<Item = u64> + '_ {
        self.keys.keys().copied()
    }
    pub fn len(&self) -> usize {
        self.keys.len()
    }
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}
