//! Homomorphic aggregation of model updates: the weighted sum of many ciphertexts, folded into a
//! constant-size accumulator as they arrive, in any order, with lazy modular reduction, on a
//! pluggable [`Backend`] (the CPU backend here is the reference; a CUDA backend plugs in the same
//! way). [`AggregationPlan`] picks the encoding scale and the flooding noise for a round so that
//! the weighted average survives public-key switching with the asked precision.

mod aggregator;
mod backend;
mod cpu;
mod plan;

pub use aggregator::{AggregateError, Aggregator, DEFAULT_BATCH, MAX_WEIGHT, Shape};
pub use backend::{Accumulator, Backend};
pub use cpu::CpuBackend;
pub use plan::AggregationPlan;

#[cfg(test)]
mod tests;
