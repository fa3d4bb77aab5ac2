//! Multiparty CKKS (Mouchet et al. 2021, 2022; Lattigo's `multiparty`): every party holds its own
//! secret share s_i, generated on its own machine; the consortium's secret s = Σ s_i exists nowhere.
//!
//! - [`crs`]: common reference polynomials expanded from a public seed;
//! - [`keygen`]: the collective public key (one round), relinearization key (two rounds) and
//!   Galois keys (one round per element);
//! - [`threshold`]: t-of-N Shamir sharing of the s_i, so any t parties can act for all N, with
//!   [`sealed`] end-to-end encryption of the pairwise share messages (X25519 + ChaCha20-Poly1305);
//! - [`keyswitch`]: collective key switching and public-key switching (PCKS) to a target public
//!   key, every share carrying flooding noise ([`flooding`]) so that nothing a party sends reveals
//!   its secret (IND-CPA-D);
//! - [`receive_switch`]: a round's aggregate switched to the consortium receiving key, which
//!   every hospital holds: one flooded polynomial per share, the result's c1 expanded from seeds;
//! - [`refresh`]: collective refresh (interactive bootstrapping) of a ciphertext from a low
//!   level back to the top level, masked and flooded;
//! - [`group_key`]: the consortium receiving key every hospital derives from all hospitals'
//!   sealed contributions (aggregates are switched to it once per round);
//! - [`wire`]: the share messages, serialized and validated like ciphertexts.
//!
//! These are protocols with explicit messages and no networking: the coordinator relays and sums
//! shares, parties compute them.

pub mod crs;
mod error;
pub mod flooding;
pub mod group_key;
pub mod keygen;
pub mod keyswitch;
pub mod receive_switch;
pub mod refresh;
pub mod sealed;
pub mod threshold;
pub mod wire;

pub use crs::Crs;
pub use error::MultipartyError;
pub use flooding::Flooding;
pub use keygen::{
    GaloisKeyGen, GaloisKeyShare, PublicKeyGen, PublicKeyShare, RelinKeyEphemeral, RelinKeyGen,
    RelinKeyShare1, RelinKeyShare2,
};
pub use keyswitch::{
    KeySwitch, KeySwitchShare, PublicKeySwitch, PublicKeySwitchMask, PublicKeySwitchShare,
    SwitchInput,
};
pub use receive_switch::{FloodMask, ReceiveSwitch, SwitchedResult, UpdateSum};
pub use refresh::{Refresh, RefreshRoom, RefreshShare};
pub use threshold::{ShamirShare, ThresholdSecret, lagrange_share};

/// s = Σ s_i of parties whose shares are all in one place: never in a deployment, only in tests
/// and in a calibration's throwaway parties ([`crate::infer::calibrate`]).
pub(crate) fn sum_of_secrets(
    ctx: &crate::ckks::CkksContext,
    secrets: &[crate::rlwe::SecretKey],
) -> crate::rlwe::SecretKey {
    let rl = ctx.rlwe();
    let mut s = crate::ring::Poly::zero(ctx.n(), rl.key_basis().len());
    for sk in secrets {
        rl.ring().add_assign(&mut s, sk.poly(), rl.key_basis());
    }
    crate::rlwe::SecretKey::from_poly(s, *ctx.fingerprint())
}

#[cfg(test)]
mod tests;
