//! Where a served model is evaluated (`coordinator serve-inference --backend auto|cpu|cuda`,
//! `[node] backend` of a mode (a) keyholder): the CPU evaluator, or a GPU with the model's
//! weights and one set of evaluation keys resident on it ([`Placement::open`], once per key
//! set). The device evaluates every segment of a deep model; what happens between segments
//! (masks, refreshes) stays with the caller. Results equal the CPU evaluator's word for word
//! ([`super::device`]), so a requester cannot tell where its image was evaluated.

use crate::aggregate::{BackendChoice, CudaError};
use crate::ckks::Ciphertext;
use crate::gpu::{Engine, Exec, HostExec, NttTables};

use super::device::DeviceModel;
use super::error::InferError;
use super::model::Model;
use super::spec::EvaluationKeys;

/// A model and one requester's keys, resident where they are evaluated.
pub trait Resident: Send + Sync {
    /// Segment `k` of the network on one image's inputs (as `Model::evaluate_segment`).
    fn evaluate_segment(&self, k: usize, inputs: &[Ciphertext]) -> Result<Ciphertext, InferError>;
}

impl<E> Resident for DeviceModel<E>
where
    E: Exec + Send + Sync,
    E::Buf: Send + Sync,
{
    fn evaluate_segment(&self, k: usize, inputs: &[Ciphertext]) -> Result<Ciphertext, InferError> {
        DeviceModel::evaluate_segment(self, k, inputs)
    }
}

type Open = dyn Fn(&Model, &EvaluationKeys) -> Result<Box<dyn Resident>, InferError> + Send + Sync;

/// Where requests are evaluated.
pub enum Placement {
    Cpu,
    /// A device (`name`): `open` uploads the model and one key set to it. With `fallback`
    /// (`auto`), a key set the device cannot take (its memory full, a driver error) is
    /// evaluated on the CPU instead, with a warning.
    Device {
        name: String,
        open: Box<Open>,
        fallback: bool,
    },
}

impl std::fmt::Debug for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Placement {
    /// What `choice` asks for, for `model`'s parameters: `auto` takes the first CUDA device when
    /// one loads (and says so in the log), the CPU otherwise; `cuda` is an error without one.
    pub fn select(choice: BackendChoice, model: &Model) -> Result<Self, CudaError> {
        match choice {
            BackendChoice::Cpu => Ok(Self::Cpu),
            BackendChoice::Cuda => cuda(model, false),
            BackendChoice::Auto => match cuda(model, true) {
                Ok(p) => Ok(p),
                Err(reason) => {
                    tracing::info!(%reason, "no usable CUDA device: evaluating on the CPU");
                    Ok(Self::Cpu)
                }
            },
        }
    }

    /// The device path on the CPU, through the GPU kernels' reference executor (the same
    /// launches and arithmetic as a device; tests check that serving through it equals the CPU
    /// evaluator byte for byte on machines without a GPU).
    pub fn host_reference() -> Self {
        Self::Device {
            name: "reference executor (CPU)".into(),
            fallback: false,
            open: Box::new(|model, keys| {
                let rlwe = model.context().rlwe().clone();
                let exec = HostExec::new(std::sync::Arc::new(NttTables::new(rlwe.ring())));
                Ok(Box::new(DeviceModel::new(
                    model,
                    Engine::new(exec, rlwe),
                    keys,
                )?))
            }),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Self::Cpu => "CPU",
            Self::Device { name, .. } => name,
        }
    }

    /// `model` and `keys` uploaded to the device (`None` on the CPU: nothing to upload).
    pub fn open(
        &self,
        model: &Model,
        keys: &EvaluationKeys,
    ) -> Result<Option<Box<dyn Resident>>, InferError> {
        match self {
            Self::Cpu => Ok(None),
            Self::Device {
                open,
                fallback,
                name,
            } => match open(model, keys) {
                Ok(r) => Ok(Some(r)),
                Err(e) if *fallback => {
                    tracing::warn!(
                        device = %name,
                        error = %e,
                        "the device cannot take these keys: they are evaluated on the CPU"
                    );
                    Ok(None)
                }
                Err(e) => Err(e),
            },
        }
    }
}

#[cfg(feature = "cuda")]
fn cuda(model: &Model, fallback: bool) -> Result<Placement, CudaError> {
    use crate::gpu::CudaExec;
    let tables = NttTables::new(model.context().rlwe().ring());
    // opened once here so that a missing or unusable device is known at start
    let probe = CudaExec::open(0, &tables, false)?;
    let name = probe.name().to_string();
    drop(probe);
    tracing::info!(device = %name, "evaluating on the GPU (CUDA)");
    Ok(Placement::Device {
        name: format!("GPU (CUDA) {name}"),
        fallback,
        open: Box::new(|model, keys| {
            let rlwe = model.context().rlwe().clone();
            let tables = NttTables::new(rlwe.ring());
            let exec = CudaExec::open(0, &tables, false).map_err(crate::gpu::GpuError::from)?;
            Ok(Box::new(DeviceModel::new(
                model,
                Engine::new(exec, rlwe),
                keys,
            )?))
        }),
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda(_model: &Model, _fallback: bool) -> Result<Placement, CudaError> {
    Err(CudaError::NotBuilt)
}
