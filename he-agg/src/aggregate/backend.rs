//! The interface an aggregation backend implements. It only ever adds ciphertexts: everything
//! else (validation, bookkeeping) is the [`super::Aggregator`]'s.

use std::sync::Arc;

use crate::ckks::{Ciphertext, CkksContext};
use crate::ring::Poly;

use super::error::AggregateError;
use super::shape::Shape;

/// A place where weighted sums of ciphertexts are computed (CPU cores, a GPU).
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// A short name for logs ("cpu", "cuda").
    fn name(&self) -> &str;

    /// A zero accumulator for ciphertexts of `shape`.
    fn accumulator(
        &self,
        ctx: &Arc<CkksContext>,
        shape: Shape,
    ) -> Result<Box<dyn Accumulator>, AggregateError>;
}

/// A running sum Σ w_j·ct_j. The inputs are validated before they reach it.
pub trait Accumulator: Send {
    /// Adds Σ w·ct over the batch. Weights are below 2^62.
    fn fold(&mut self, batch: &[(&Ciphertext, u64)]) -> Result<(), AggregateError>;

    /// The sum, fully reduced: one polynomial per ciphertext component, NTT domain.
    fn finish(self: Box<Self>) -> Result<Vec<Poly>, AggregateError>;
}
