//! # he-agg
//!
//! HEAL's homomorphic-encryption engine: full-RNS CKKS on tfhe-ntt, in a strict chain of layers
//! (each uses only those above it in this list):
//!
//! - [`ring`]: RNS polynomials, NTTs, automorphisms, basis extension, sampling;
//! - [`rlwe`]: parameters and their 128-bit security check, keys, encryption, key switching;
//! - [`ckks`]: encoding by the canonical embedding, the evaluator, presets, the wire format;
//! - [`multiparty`]: collective keys, t-of-N threshold, (public-)key switching with flooding;
//! - [`aggregate`]: streaming weighted sums of ciphertexts on a pluggable backend;
//! - [`train`]: gradient descent of a classifier's head on encrypted features, refreshed
//!   collectively between steps;
//! - [`gpu`]: CKKS resident on a GPU (key switching, hoisted rotations, rescaling), equal to
//!   the CPU path word for word.

pub mod aggregate;
pub mod alloc;
pub mod ckks;
pub mod gpu;
pub mod infer;
pub mod multiparty;
pub mod ring;
pub mod rlwe;
pub mod simd;
pub mod train;
