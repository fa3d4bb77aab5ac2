//! Common reference polynomials: uniform polynomials every party expands from one public seed,
//! so a protocol's "a" is agreed on without a message.

use crate::ckks::CkksContext;
use crate::ring::{Poly, Seed};

/// The public seed of a consortium's common reference polynomials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crs {
    seed: Seed,
}

impl Crs {
    /// The CRS of a federation, derived from its identifier (anyone can recompute it).
    pub fn from_federation(federation_id: &[u8]) -> Self {
        Self {
            seed: blake3::derive_key("HEAL common reference string v1", federation_id),
        }
    }

    pub fn from_seed(seed: Seed) -> Self {
        Self { seed }
    }

    pub fn seed(&self) -> &Seed {
        &self.seed
    }

    /// A sub-seed per use, so no two protocols share a polynomial.
    fn derive(&self, label: &str, index: u64) -> Seed {
        let mut h = blake3::Hasher::new_keyed(&self.seed);
        h.update(label.as_bytes());
        h.update(&index.to_le_bytes());
        *h.finalize().as_bytes()
    }

    /// The "a" of the collective public key, over Q_L (NTT domain).
    pub fn public_key_a(&self, ctx: &CkksContext) -> Poly {
        let rl = ctx.rlwe();
        rl.ring()
            .expand_uniform(&self.derive("public key", 0), rl.q_basis(rl.max_level()))
    }

    /// The "a" of the collective refresh of the ciphertext whose digest is `ciphertext`, over
    /// Q_L (NTT domain): one per input, never shared by two (see [`super::refresh`]).
    pub fn refresh_a(&self, ctx: &CkksContext, ciphertext: &[u8; 32]) -> Poly {
        let rl = ctx.rlwe();
        let mut h = blake3::Hasher::new_keyed(&self.seed);
        h.update(b"refresh");
        h.update(ciphertext);
        rl.ring()
            .expand_uniform(h.finalize().as_bytes(), rl.q_basis(rl.max_level()))
    }

    /// The seed of switcher `switcher`'s a_i ([`super::receive_switch`]) for the input digest
    /// `input` (a round's: `protocol::transcript::switch_digest` of the signed updates switched;
    /// a ciphertext's: BLAKE3 of its switch input's bytes), in the active set `active` (any
    /// order; it is sorted here).
    pub fn receive_switch_seed(&self, input: &[u8; 32], switcher: u32, active: &[u32]) -> Seed {
        let mut set = active.to_vec();
        set.sort_unstable();
        let mut h = blake3::Hasher::new_keyed(self.seed());
        h.update(b"receive switch");
        h.update(input);
        h.update(&switcher.to_le_bytes());
        h.update(&(set.len() as u64).to_le_bytes());
        for id in set {
            h.update(&id.to_le_bytes());
        }
        *h.finalize().as_bytes()
    }

    /// The "a" of digit `digit` of a switching key named `label`, over Q_L ∪ P (NTT domain).
    pub fn switching_key_a(&self, ctx: &CkksContext, label: &str, digit: usize) -> Poly {
        let rl = ctx.rlwe();
        rl.ring()
            .expand_uniform(&self.derive(label, digit as u64), rl.key_basis())
    }
}
