//! CKKS resident on a GPU: ciphertexts, keys and every intermediate stay in device memory while
//! they are multiplied and relinearized, decomposed, key-switched, rotated (hoisted) and rescaled.
//!
//! - [`tables`]: twiddles and modulus constants from a [`crate::ring::Ring`], and the kernels'
//!   NTT in Rust, equal to tfhe-ntt word for word;
//! - [`exec`]: the primitives a device provides (batched NTT/INTT, limb maps, basis extension,
//!   the key inner product, Galois permutations, the tensor product), one launch each;
//! - [`plans`]: the job lists of each operation at each level, from the CPU path's constants;
//! - [`engine`]: the operations, written once over an executor; [`arith`]: the slot-wise ones
//!   (sums, constants, multiply-accumulates of many products);
//! - [`public_switch`]: public-key switching of many ciphertexts at once, its randomness made
//!   on the device;
//! - [`host`]: the reference executor on the CPU, with the kernels' arithmetic;
//! - [`kernels`], [`sample_kernel`]: the CUDA C source, compiled by NVRTC at run time;
//! - `cuda` (feature `cuda`): the executor on a device.
//!
//! Every operation equals the CPU evaluator word for word: on any machine through
//! [`HostExec`], and on a GPU through `CudaExec` (tests of both in `tests.rs`).

pub mod arith;
pub mod engine;
pub mod exec;
pub mod host;
pub mod kernels;
pub mod plans;
pub mod public_switch;
pub mod sample_kernel;
pub mod tables;

#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "cuda")]
mod cuda_exec;

pub use arith::{DevGroupWeights, DevPlaintext};
pub use engine::{DevCiphertext, DevDecomposition, DevSwitchingKey, Engine, GaloisTerm, GpuError};
pub use exec::{
    DotShape, Exec, ExtendJob, GroupShape, LimbJob, LimbOp, MacJob, MapJob, SampleDist,
};
pub use host::HostExec;
pub use public_switch::{DevCiphertexts, DevPublicKeySwitch, DevSwitchShare};
pub use tables::NttTables;

#[cfg(feature = "cuda")]
pub use cuda::CudaExec;

#[cfg(test)]
mod public_switch_tests;
#[cfg(test)]
mod tests;
