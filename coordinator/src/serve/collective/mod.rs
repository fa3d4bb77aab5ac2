//! Mode (a) serving after training, sans-IO: the model stays encrypted at the coordinator under a
//! key the hospitals make collectively, and every result is switched to its requester's key by t
//! hospitals, each of which logs the request.
//!
//! [`ServingEngine`] holds the protocol's decisions (as [`crate::engine::Engine`] does for the
//! rounds); the cryptography is `he_agg::infer::threshold`, summed and checked in [`keys`] and
//! [`requests`]; [`shell`] is the tokio server (`coordinator serve-inference --collective`) and
//! `client hold-keys` the hospital's side.
//!
//! Setup, with every hospital connected (the keys need all N secret shares):
//! 1. each hospital compiles the plan of its final model and sends its round-1 key shares (public
//!    key, relinearization round 1, the plan's Galois keys) with the plan's fingerprint, and
//!    sealed Shamir shares of its inference secret for every other hospital; all fingerprints
//!    must agree;
//! 2. once all N have, each receives the round-1 aggregate and the sealed shares addressed to it,
//!    and sends its relinearization round-2 share;
//! 3. once all N have, the keys are complete; the lowest-numbered hospital encrypts the final
//!    model under the collective public key and uploads it; every hospital reports its
//!    threshold secret formed.
//!
//! Serving: a request (images encrypted under the collective key, the requester's public key) is
//! evaluated, then t connected hospitals are asked for switching shares; one that leaves before
//! answering is replaced (a new attempt); with fewer than t connected the request waits until
//! its deadline and is then refused.
//!
//! Head training (`coordinator train-head`, issue 20) is served the same way with a head's plan
//! ([`keys::KeyPlan::Head`]): the coordinator encrypts the zero head itself instead of asking
//! for a model; a contributor's encrypted examples start a run ([`head`]); after every step the
//! state's refresh is a request answered by t keyholders (replaced as above when one leaves),
//! and the trained head is switched to the contributor's key as a result is.

mod engine;
pub mod head;
pub mod keys;
pub mod requests;
pub mod saved;
pub mod shell;

pub use engine::{ServingAction, ServingConfig, ServingEngine, ServingEvent, SetupStep};
pub use shell::{CollectiveOptions, CollectiveServer};

#[cfg(test)]
mod refusals;
#[cfg(test)]
mod tests;
