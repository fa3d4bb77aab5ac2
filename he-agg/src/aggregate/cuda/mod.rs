//! The CUDA aggregation backend: the fused weighted modular sum of many ciphertexts on a GPU,
//! bit-identical to [`super::CpuBackend`], falling back to it when the device fails.
//!
//! - [`kernels`]: the CUDA C source, compiled by NVRTC at run time for the device found;
//! - [`reference`]: the kernel's arithmetic in Rust, tested against the CPU backend anywhere;
//! - `device` (feature `cuda`): the device, its streams and pinned staging buffers;
//! - [`fallback`]: the accumulator that finishes on the CPU when the device fails.

mod error;
pub mod fallback;
pub mod kernels;
pub mod reference;

#[cfg(feature = "cuda")]
pub mod device;

pub use error::CudaError;

#[cfg(feature = "cuda")]
pub use backend::CudaBackend;

#[cfg(feature = "cuda")]
mod backend {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use crate::aggregate::backend::{Accumulator, Backend};
    use crate::aggregate::cpu::CpuBackend;
    use crate::aggregate::{AggregateError, Shape};
    use crate::ckks::CkksContext;

    use super::device::Device;
    use super::error::CudaError;
    use super::fallback::FallbackAccumulator;

    /// Aggregation on one CUDA device. After a device failure every sum (the running ones
    /// from their last good state) continues on the CPU backend.
    #[derive(Debug)]
    pub struct CudaBackend {
        device: Arc<Device>,
        failed: Arc<AtomicBool>,
    }

    impl CudaBackend {
        /// Opens device `ordinal` (0 for the first GPU).
        pub fn new(ordinal: usize) -> Result<Self, CudaError> {
            Ok(Self {
                device: Device::open(ordinal)?,
                failed: Arc::new(AtomicBool::new(false)),
            })
        }

        /// Aggregation on a device already opened (the benchmark shares one).
        pub fn from_device(device: Arc<Device>) -> Self {
            Self {
                device,
                failed: Arc::new(AtomicBool::new(false)),
            }
        }

        pub fn device(&self) -> &Arc<Device> {
            &self.device
        }

        /// True once the device failed and the backend works on the CPU.
        pub fn has_failed(&self) -> bool {
            self.failed.load(Ordering::Relaxed)
        }
    }

    impl Backend for CudaBackend {
        fn name(&self) -> &str {
            "cuda"
        }

        fn accumulator(
            &self,
            ctx: &Arc<CkksContext>,
            shape: Shape,
        ) -> Result<Box<dyn Accumulator>, AggregateError> {
            if self.has_failed() {
                return CpuBackend.accumulator(ctx, shape);
            }
            let moduli: Vec<u64> = (0..shape.level)
                .map(|i| ctx.rlwe().q_modulus(i).value())
                .collect();
            let words = (shape.degree + 1) * shape.level * ctx.n();
            match self.device.new_sum(&moduli, ctx.n(), words) {
                Ok(sum) => Ok(Box::new(FallbackAccumulator::new(
                    ctx,
                    shape,
                    Box::new(sum),
                    self.failed.clone(),
                ))),
                Err(error) => {
                    tracing::warn!(%error, "the CUDA device failed: aggregating on the CPU");
                    self.failed.store(true, Ordering::Relaxed);
                    CpuBackend.accumulator(ctx, shape)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
