//! Choosing where to aggregate: `auto` takes the first CUDA device when one loads (and says so
//! in the log), the CPU otherwise; `cuda` insists on a device; `cpu` never looks for one.

use std::fmt;
use std::str::FromStr;

use super::backend::Backend;
use super::cpu::CpuBackend;
use super::cuda::CudaError;

/// The `--backend` / `[coordinator] backend` setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum BackendChoice {
    #[default]
    Auto,
    Cpu,
    Cuda,
}

impl FromStr for BackendChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            other => Err(format!("backend {other:?} is not one of auto, cpu, cuda")),
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
        })
    }
}

/// The backend `choice` asks for. Only an explicit `cuda` without a usable device is an error.
pub fn select_backend(choice: BackendChoice) -> Result<Box<dyn Backend>, CudaError> {
    match choice {
        BackendChoice::Cpu => {
            tracing::info!("aggregating on the CPU (--backend cpu)");
            Ok(Box::new(CpuBackend))
        }
        BackendChoice::Cuda => {
            let b = open_cuda()?;
            Ok(b)
        }
        BackendChoice::Auto => match open_cuda() {
            Ok(b) => Ok(b),
            Err(reason) => {
                tracing::info!(%reason, "no usable CUDA device: aggregating on the CPU");
                Ok(Box::new(CpuBackend))
            }
        },
    }
}

#[cfg(feature = "cuda")]
fn open_cuda() -> Result<Box<dyn Backend>, CudaError> {
    let b = super::cuda::CudaBackend::new(0)?;
    let (major, minor) = b.device().capability();
    tracing::info!(
        device = b.device().name(),
        compute_capability = format!("{major}.{minor}"),
        "aggregating on the GPU (CUDA)"
    );
    Ok(Box::new(b))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda() -> Result<Box<dyn Backend>, CudaError> {
    Err(CudaError::NotBuilt)
}
