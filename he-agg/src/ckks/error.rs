//! Errors of the CKKS layer.

use crate::ring::RngError;
use crate::rlwe::{KeySwitchError, ParamsError};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CkksError {
    #[error(transparent)]
    Params(#[from] ParamsError),
    #[error("{got} values do not fit in {slots} slots")]
    TooManyValues { got: usize, slots: usize },
    #[error("value at index {index} is not a finite number")]
    NotFinite { index: usize },
    #[error(
        "an encoded coefficient of 2^{bits:.1} does not fit modulo Q at level {level} \
         (2^{log_q:.1}): lower the scale or the values"
    )]
    Overflow { bits: f64, level: usize, log_q: f64 },
    #[error("level {level} is outside 1..={max}")]
    Level { level: usize, max: usize },
    #[error("scale must be a finite number above 1, got {0}")]
    BadScale(f64),
    #[error(
        "operands have different scales (2^{a:.4} and 2^{b:.4}); rescale or re-encode one of \
         them first"
    )]
    ScaleMismatch { a: f64, b: f64 },
    #[error("cannot rescale a ciphertext at level 1: no modulus left to divide by")]
    LastLevel,
    #[error("cannot drop {drop} levels from a ciphertext at level {level}")]
    DropTooFar { drop: usize, level: usize },
    #[error("this operation needs a relinearization key, and the evaluator has none")]
    MissingRelinearizationKey,
    #[error("no Galois key for element {0} (rotation or conjugation not generated)")]
    MissingGaloisKey(u64),
    #[error(
        "{ciphertexts} ciphertexts and {steps} rotation steps to sum: one step each, and one at least"
    )]
    RotationCount { ciphertexts: usize, steps: usize },
    #[error("a ciphertext at level {a} meets one at level {b}: drop one to the other first")]
    LevelMismatch { a: usize, b: usize },
    #[error("ciphertext of degree {got} where degree {want} is needed")]
    Degree { got: usize, want: usize },
    #[error("a {what} made for other parameters")]
    ForeignKey { what: &'static str },
    #[error(transparent)]
    KeySwitch(#[from] KeySwitchError),
    #[error(transparent)]
    Rng(#[from] RngError),
}
