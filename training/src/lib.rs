//! HEAL's training library, used by the hospital node, the requester and the portal: an
//! HE-friendly CNN family on burn, local training, the model as one flat `f32` vector (what
//! gets encrypted and aggregated), the server step applied to the average, evaluation metrics,
//! export of a trained network for encrypted inference, and the centralised baseline.
//!
//! Typical use by the federation layer:
//!
//! ```no_run
//! use burn::tensor::Device;
//! use training::{data::Tensors, model::ModelConfig, model::Network, params, train};
//! # fn demo(train_data: &Tensors, global: &[f32]) -> Result<(), training::TrainError> {
//! let spec = ModelConfig::default().resolve(train_data.shape, 11)?;
//! let device = Device::flex().autodiff();
//! let net = params::network_from_flat(&spec, global, &device)?;      // start from the global model
//! let cfg = train::TrainConfig { epochs: 1, fedprox_mu: 0.01, ..Default::default() };
//! let opts = train::TrainOptions { global: Some(global), ..Default::default() };
//! let (net, _report) = train::train(net, train_data, &cfg, &opts)?;
//! let update: Vec<f32> = params::to_flat(&net);                       // encrypt and send this
//! # Ok(()) }
//! ```

pub mod baseline;
mod batch_readout;
pub mod data;
pub mod device;
pub mod dp_sgd;
pub mod error;
pub mod export;
pub mod front;
pub mod membership;
pub mod metrics;
pub mod model;
mod param_walk;
pub mod params;
pub mod strategy;
pub mod train;
pub mod train_config;
pub mod transfer;

pub use error::TrainError;
