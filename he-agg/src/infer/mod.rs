//! Encrypted inference: HE-friendly networks (convolution, average pooling, dense, square and
//! quadratic activations, bias) evaluated on CKKS ciphertexts.
//!
//! - [`Network`]: the validated description (f32 weights and shapes), with a plain `f32`
//!   reference forward pass; [`NetworkFile`] is the one file format of a trained network
//!   (`heal-network/1`), and [`testing`] holds small fixed networks for tests.
//! - [`InferencePlan`]: one image per ciphertext, for latency. The requester sends the image in
//!   im2col layout, so the first convolution is a product with taps + channels − 1 diagonals;
//!   every later map is a hybrid diagonal product; all run baby-step/giant-step with hoisted
//!   baby rotations. Consecutive linear layers compose into one map and a quadratic's a folds
//!   into the next map, so the default network has depth 5. Parameters come from the depth
//!   ([`choose_parameters`], 128-bit checked); [`InferenceSpec`] is the requester's share
//!   (input layout, levels, the exact Galois steps to make keys for, output slots).
//! - [`Model`]: a plan ready to evaluate, with its weights in the clear (mode b: image under the
//!   requester's key) or encrypted under the image's key (mode a: ciphertext × ciphertext); an
//!   encrypted model exports to ciphertexts and is rebuilt at a server that holds no weights.
//! - [`threshold`]: mode (a) with a consortium: the evaluation keys of a plan made collectively
//!   by every hospital (its own secret share never leaves it), and the flooding of the
//!   threshold switch of each result to the requester's key.
//! - [`BatchedModel`]: one image per slot (N/2 images per ciphertext), for throughput: maps are
//!   modular matrix products over whole ciphertexts (AVX-512 IFMA where the CPU has it), no
//!   rotation, relinearization deferred past the next map.
//!
//! Mode (b), requester and server:
//!
//! ```no_run
//! # use he_agg::infer::*;
//! # use he_agg::ckks::CkksContext;
//! # fn demo(net: &Network, image: &[f32]) -> Result<(), Box<dyn std::error::Error>> {
//! let plan = InferencePlan::new(net, &ParamPolicy::default())?;
//! let ctx = CkksContext::new(plan.spec().parameters().clone())?;
//! // requester: keys for exactly the planned rotations, the image encrypted
//! let mut kg = ctx.key_generator()?;
//! let sk = kg.secret_key();
//! let keys = plan.spec().generate_keys(&mut kg, &sk);
//! let mut enc = ctx.sk_encryptor(&sk)?;
//! let request: Vec<_> = plan.spec().encode_input(&ctx, image)?.iter().map(|pt| enc.encrypt(pt)).collect();
//! // server
//! let eval = ctx.evaluator(keys.relinearization.as_ref(), Some(&keys.galois))?;
//! let response = Model::plain(&plan, &ctx)?.evaluate(&eval, &request)?;
//! // requester
//! let logits = plan.spec().decode_output(&ctx, &ctx.decryptor(&sk)?.decrypt(&response))?;
//! # Ok(()) }
//! ```

mod architecture;
mod backend;
mod batched;
mod batched_build;
mod batched_eval;
mod batched_ops;
#[cfg(test)]
mod batched_residual_tests;
mod batched_spec;
pub mod calibrate;
mod device;
#[cfg(test)]
mod device_tests;
mod diagonals;
mod encoders;
mod error;
mod evaluate;
#[cfg(feature = "serde")]
mod file;
mod float_mac;
mod ifma;
mod kernels;
mod layout;
mod lower;
mod model;
mod multiplex;
mod network;
mod operand;
mod params;
mod placement;
mod plan;
mod reference;
pub mod refresh;
#[cfg(test)]
mod residual_tests;
pub mod scatter;
mod segments;
mod spec;
mod stages;
pub mod testing;
#[cfg(test)]
mod tests;
pub mod threshold;
mod trace;
mod wide_mac;

pub use architecture::{ArchLayer, Architecture, MAX_LAYERS, MAX_SKELETON_WEIGHTS};
pub use batched::BatchedModel;
pub use batched_spec::BatchedSpec;
pub(crate) use device::Device;
pub use device::{DeviceBatchedModel, DeviceModel};
pub use error::{InferError, NetworkError};
#[cfg(feature = "serde")]
pub use file::{MAX_NETWORK_FILE_BYTES, NETWORK_FORMAT, NetworkFile, NetworkFileError};
pub use model::Model;
pub use network::{Conv2d, Dense, Layer, MAX_TENSOR, Network, Normalization, Residual, Shape};
pub use params::{FAST_PRIME_BITS, MAX_PRIME_BITS, ParamPolicy, choose_parameters, max_depth};
pub use placement::{Placement, Resident};
pub use plan::{InferencePlan, MAX_INPUT_CIPHERTEXTS};
pub use spec::{EvaluationKeys, InferenceSpec, RefreshPoint};
pub use stages::StageInfo;
