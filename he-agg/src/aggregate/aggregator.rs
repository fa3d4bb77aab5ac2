//! The streaming aggregator: validates every ciphertext against the round's shape, batches a few
//! (a batch is folded in one pass over the accumulator, which keeps memory traffic near one read
//! per input word) and hands them to the backend.

use std::sync::Arc;

use crate::ckks::{Ciphertext, CkksContext};

use super::backend::{Accumulator, Backend};
use super::error::AggregateError;
use super::shape::Shape;

/// Largest weight: sample counts and fixed-point factors stay far below it.
pub const MAX_WEIGHT: u64 = 1 << 40;
/// A good batch: the accumulator is read and written once per 32 inputs.
pub const DEFAULT_BATCH: usize = 32;

/// A running weighted sum over one round. Memory: one accumulator plus at most `batch`
/// ciphertexts, however many are folded.
pub struct Aggregator {
    ctx: Arc<CkksContext>,
    shape: Shape,
    backend_name: String,
    acc: Box<dyn Accumulator>,
    pending: Vec<(Ciphertext, u64)>,
    batch: usize,
    count: u64,
    total_weight: u128,
}

impl std::fmt::Debug for Aggregator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aggregator")
            .field("backend", &self.backend_name)
            .field("shape", &self.shape)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl Aggregator {
    /// An empty aggregate of ciphertexts of `shape`, folded `batch` at a time (≥ 1).
    pub fn new(
        ctx: &Arc<CkksContext>,
        backend: &dyn Backend,
        shape: Shape,
        batch: usize,
    ) -> Result<Self, AggregateError> {
        if shape.level == 0 || shape.level > ctx.max_level() || shape.degree > 2 {
            return Err(AggregateError::BadShape {
                level: shape.level,
                degree: shape.degree,
                max: ctx.max_level(),
            });
        }
        Ok(Self {
            ctx: ctx.clone(),
            shape,
            backend_name: backend.name().to_string(),
            acc: backend.accumulator(ctx, shape)?,
            pending: Vec::with_capacity(batch.max(1)),
            batch: batch.max(1),
            count: 0,
            total_weight: 0,
        })
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    fn check(&self, ct: &Ciphertext) -> Result<(), AggregateError> {
        let s = self.shape;
        let shape_ok = ct.level() == s.level
            && ct.degree() == s.degree
            && ct.scale.to_bits() == s.scale.to_bits()
            && ct
                .parts
                .iter()
                .all(|p| p.n() == self.ctx.n() && p.limbs() == s.level);
        if !shape_ok {
            return Err(AggregateError::Shape {
                got: ct.level(),
                got_degree: ct.degree(),
                got_scale: ct.scale.log2(),
                want: s.level,
                want_degree: s.degree,
                want_scale: s.scale.log2(),
            });
        }
        Ok(())
    }

    /// Adds weight·ct to the sum (refusing a ciphertext of another shape or a bad weight).
    pub fn push(&mut self, ct: Ciphertext, weight: u64) -> Result<(), AggregateError> {
        if weight == 0 || weight > MAX_WEIGHT {
            return Err(AggregateError::Weight(weight));
        }
        self.check(&ct)?;
        self.pending.push((ct, weight));
        self.count += 1;
        self.total_weight += u128::from(weight);
        if self.pending.len() >= self.batch {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), AggregateError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch: Vec<(&Ciphertext, u64)> = self.pending.iter().map(|(c, w)| (c, *w)).collect();
        self.acc.fold(&batch)?;
        self.pending.clear();
        Ok(())
    }

    /// How many ciphertexts and how much weight have been added.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn total_weight(&self) -> u128 {
        self.total_weight
    }

    /// The weighted sum (same scale as the inputs: it decrypts to Σ w·m).
    pub fn finish(mut self) -> Result<Ciphertext, AggregateError> {
        if self.count == 0 {
            return Err(AggregateError::Empty);
        }
        self.flush()?;
        let parts = self.acc.finish()?;
        Ok(Ciphertext {
            parts,
            scale: self.shape.scale,
        })
    }
}
