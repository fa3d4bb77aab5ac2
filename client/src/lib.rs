//! The hospital node of HEAL — the training half: an HE-friendly CNN family on burn, local
//! training, the model as one flat `f32` vector (what gets encrypted and aggregated),
//! evaluation metrics, export of a trained network for encrypted inference, the requester's
//! side of encrypted inference (`infer`), and the centralised baseline.
//!
//! Typical use by the federation layer:
//!
//! ```no_run
//! use burn::tensor::Device;
//! use client::{data::Tensors, model::ModelConfig, model::Network, params, train};
//! # fn demo(train_data: &Tensors, global: &[f32]) -> Result<(), client::ClientError> {
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
pub mod data;
pub mod error;
pub mod export;
pub mod infer;
pub mod metrics;
pub mod model;
pub mod params;
pub mod portal;
pub mod strategy;
pub mod train;

pub use error::ClientError;
