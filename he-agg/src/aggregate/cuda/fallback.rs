//! The GPU accumulator with its way out: every fold waits for the device and brings the sum
//! back (one ciphertext-sized copy per batch), so when the device fails the accumulator still
//! holds the last good sum on the host and the failing batch is still borrowed: it is folded on
//! the CPU from there and the round goes on, with a warning, never with a wrong word.
//!
//! The device side is behind [`DeviceSum`] so the fallback is tested on machines without a GPU.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::aggregate::backend::Accumulator;
use crate::aggregate::cpu::cpu_accumulator_from;
use crate::aggregate::{AggregateError, Shape};
use crate::ckks::{Ciphertext, CkksContext};
use crate::ring::Poly;

use super::error::CudaError;

/// One input of a batch: its words as consecutive segments (a ciphertext's components).
pub type Input<'a> = (Vec<&'a [u64]>, u64);

/// A running sum that lives on a device.
pub trait DeviceSum: Send {
    /// Adds Σ w·x over `inputs` and waits until the device is done (so a failure is reported
    /// while the caller still holds the batch).
    fn fold(&mut self, inputs: &[Input<'_>]) -> Result<(), CudaError>;

    /// Copies the sum, fully reduced, into `out` (component-major, then limb-major).
    fn read(&mut self, out: &mut [u64]) -> Result<(), CudaError>;
}

/// An [`Accumulator`] on a device, falling back to the CPU backend on the first failure.
pub struct FallbackAccumulator {
    ctx: Arc<CkksContext>,
    shape: Shape,
    device: Option<Box<dyn DeviceSum>>,
    /// The sum after the last fold the device completed.
    snapshot: Vec<u64>,
    cpu: Option<Box<dyn Accumulator>>,
    /// Shared with the backend: after a failure, new accumulators go to the CPU directly.
    failed: Arc<AtomicBool>,
}

impl FallbackAccumulator {
    pub fn new(
        ctx: &Arc<CkksContext>,
        shape: Shape,
        device: Box<dyn DeviceSum>,
        failed: Arc<AtomicBool>,
    ) -> Self {
        let words = (shape.degree + 1) * shape.level * ctx.n();
        Self {
            ctx: ctx.clone(),
            shape,
            device: Some(device),
            snapshot: vec![0; words],
            cpu: None,
            failed,
        }
    }

    /// True once this sum has moved to the CPU.
    pub fn on_cpu(&self) -> bool {
        self.cpu.is_some()
    }

    fn move_to_cpu(&mut self, error: &CudaError) -> &mut Box<dyn Accumulator> {
        tracing::warn!(%error, "the CUDA device failed: this aggregate continues on the CPU");
        self.failed.store(true, Ordering::Relaxed);
        self.device = None;
        let words = std::mem::take(&mut self.snapshot);
        self.cpu
            .insert(cpu_accumulator_from(&self.ctx, self.shape, words))
    }
}

impl Accumulator for FallbackAccumulator {
    fn fold(&mut self, batch: &[(&Ciphertext, u64)]) -> Result<(), AggregateError> {
        if let Some(cpu) = self.cpu.as_mut() {
            return cpu.fold(batch);
        }
        let inputs: Vec<Input<'_>> = batch
            .iter()
            .map(|(ct, w)| (ct.parts.iter().map(Poly::data).collect(), *w))
            .collect();
        // the sum comes back into a fresh buffer, so a read that fails half-way cannot tear
        // the snapshot: it still holds the sum before this batch
        let mut next = vec![0; self.snapshot.len()];
        let result = match self.device.as_mut() {
            Some(device) => device.fold(&inputs).and_then(|()| device.read(&mut next)),
            None => Err(CudaError::NoDevice),
        };
        match result {
            Ok(()) => {
                self.snapshot = next;
                Ok(())
            }
            Err(e) => self.move_to_cpu(&e).fold(batch),
        }
    }

    fn finish(self: Box<Self>) -> Result<Vec<Poly>, AggregateError> {
        if let Some(cpu) = self.cpu {
            return cpu.finish();
        }
        let part_words = self.shape.level * self.ctx.n();
        Ok(self
            .snapshot
            .chunks(part_words)
            .map(|p| Poly::from_data(self.ctx.n(), p.to_vec()))
            .collect())
    }
}
