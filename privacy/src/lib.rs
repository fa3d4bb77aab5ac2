//! # privacy
//!
//! Differential privacy for HEAL's federated rounds, under the `[privacy]` section of a
//! federation config:
//!
//! - [`config`]: the section, validated, and the run's [`config::Plan`] (noise multiplier given
//!   or derived from a target ε, rounds within the budget) — computed identically by every
//!   hospital, which enforces it, and by the coordinator, which reports it;
//! - [`mechanism`]: hospital-level DP — each hospital's share of distributed discrete Gaussian
//!   noise, added before encryption so the encrypted sum carries all of it;
//! - [`noise`]: Gaussian noise for DP-SGD steps (patient-level DP);
//! - [`accountant`]: Rényi-DP accounting, checked against Google's `dp_accounting`;
//! - [`sampler`]: exact integer samplers from a CSPRNG (ChaCha20 seeded by the OS).
//!
//! It knows nothing of encryption or the network: the client calls it on plain updates.

pub mod accountant;
pub mod config;
pub mod mechanism;
pub mod noise;
pub mod sampler;

pub use config::{Mode, Plan, PrivacyConfig, RunShape};
