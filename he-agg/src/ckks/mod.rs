//! The CKKS scheme (full-RNS): encoding by the canonical embedding, the evaluator with scale
//! tracking, named parameter presets and the wire format.

mod context;
mod encoder;
mod error;
mod evaluator;
mod fft;
mod params;
mod rotate;
pub mod wire;

pub use context::CkksContext;
pub(crate) use encoder::reduce_f64;
pub use error::CkksError;
pub use evaluator::Evaluator;
pub use fft::Complex;
pub use params::{Parameters, Preset};

pub use crate::rlwe::{
    Ciphertext, Decryptor, GaloisKeys, KeyGenerator, PkEncryptor, Plaintext, PublicKey,
    RelinearizationKey, SecretKey, SeededCiphertext, SkEncryptor,
};

#[cfg(test)]
mod tests;
