//! Homomorphic aggregation of model updates: the weighted sum of many ciphertexts, folded into a
//! constant-size accumulator as they arrive, in any order, with lazy modular reduction, on a
//! pluggable [`Backend`] (the CPU backend here is the reference; the CUDA backend, feature
//! `cuda`, plugs in the same way and [`select_backend`] picks one). [`AggregationPlan`] picks the
//! encoding scale and the flooding noise for a round so that the weighted average survives
//! public-key switching with the asked precision; [`HeSettings`] are the `[he]` settings every
//! party derives it from, and [`UpdateCodec`] encrypts updates and decrypts sums the same way at
//! both ends.

mod aggregator;
mod backend;
mod codec;
mod cpu;
pub mod cuda;
mod error;
mod plan;
mod round_switch;
mod select;
mod settings;
mod setup;
mod shape;

pub use aggregator::{Aggregator, DEFAULT_BATCH, MAX_WEIGHT};
pub use backend::{Accumulator, Backend};
pub use codec::{CodecError, UpdateCodec, check_average, item_seed};
pub use cpu::CpuBackend;
#[cfg(feature = "cuda")]
pub use cuda::CudaBackend;
pub use cuda::CudaError;
pub use error::AggregateError;
pub use plan::AggregationPlan;
pub use round_switch::RoundSwitch;
pub use select::{BackendChoice, select_backend};
pub use settings::HeSettings;
pub use setup::{HeSetup, SetupError, ShareError};
pub use shape::Shape;

#[cfg(test)]
mod tests;
