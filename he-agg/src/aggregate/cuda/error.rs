//! What can go wrong with a GPU. Driver and compiler errors are kept as text so this type (and
//! everything that reports it) exists in builds without the `cuda` feature.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CudaError {
    #[error("this build has no CUDA support (build he-agg with the `cuda` feature)")]
    NotBuilt,
    #[error(
        "the CUDA driver library (libcuda.so) could not be loaded: no NVIDIA driver on this machine"
    )]
    NoDriver,
    #[error(
        "the NVRTC library (libnvrtc.so) could not be loaded: install the CUDA runtime compiler or add its directory to LD_LIBRARY_PATH"
    )]
    NoNvrtc,
    #[error("no CUDA device")]
    NoDevice,
    #[error("CUDA driver: {0}")]
    Driver(String),
    #[error("NVRTC could not compile the kernels for {arch}: {log}")]
    Compile { arch: String, log: String },
    #[error("the CUDA bindings panicked: {0}")]
    Panicked(String),
}

#[cfg(feature = "cuda")]
impl From<cudarc::driver::DriverError> for CudaError {
    fn from(e: cudarc::driver::DriverError) -> Self {
        Self::Driver(e.to_string())
    }
}
