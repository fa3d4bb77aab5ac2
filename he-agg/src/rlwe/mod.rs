//! The RLWE layer: parameters and their security check, keys, encryption and decryption under
//! public and secret keys, and hybrid key switching with special primes.

mod ciphertext;
mod context;
mod encrypt;
mod keygen;
mod keys;
mod keyswitch;
mod params;

pub use ciphertext::{Ciphertext, Plaintext, SeededCiphertext};
pub use context::RlweContext;
pub use encrypt::{Decryptor, PkEncryptor, SkEncryptor, expand_seeded};
pub use keygen::KeyGenerator;
pub(crate) use keygen::{add_gadget, rlwe_sample, select_limbs};
pub use keys::{GaloisKey, GaloisKeys, PublicKey, RelinearizationKey, SecretKey, SwitchingKey};
pub use keyswitch::{Decomposition, KeySwitchError};
pub use params::{HE_STANDARD_128, ParamsError, RlweParams, max_log_qp_128};

#[cfg(test)]
mod tests;
