//! Mode (b) encrypted inference: a named server holds the consortium's released model in the
//! clear and evaluates it on images encrypted under each requester's own key.
//!
//! - [`model`]: the served model (a `heal-network/1` export or a bare `he_agg::infer::Network`
//!   JSON), compiled once into its plan, with what requesters are told about it;
//! - [`keys`]: a requester's evaluation keys, checked once and kept (bounded, per requester and
//!   key id), so requests carry images only;
//! - [`handler`]: sans-IO request handling: a request header is checked against the plan before
//!   anything is allocated, every item is decoded and checked as it arrives, and only a complete,
//!   valid request is evaluated;
//! - [`shell`]: the thin tokio shell over the federation's QUIC/mTLS links
//!   (`coordinator serve-inference`).

pub mod handler;
pub mod keys;
pub mod model;
pub mod refusal;
pub mod shell;

pub use handler::{PendingRequest, ReadyRequest, Response};
pub use keys::{KeyCache, KeySet, PendingKeys};
pub use model::{ModelError, ServedModel};
pub use refusal::Refusal;
pub use shell::{InferenceServer, ServeOptions};

#[cfg(test)]
mod device_tests;
#[cfg(test)]
pub(crate) mod tests;
