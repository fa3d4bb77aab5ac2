//! Mode (a) serving after training, sans-IO: the model stays with the hospitals, images are
//! encrypted under a key the hospitals make collectively, and each request is evaluated and its
//! result switched to its requester's key by t hospitals ("keyholders"), each of which checks
//! the requester's signature and logs the request. The coordinator relays, checks and combines.
//!
//! [`Service`] is the one state machine of the protocol (sans-IO: streams in, actions out, time
//! passed in): it owns the decisions of [`ServingEngine`] (setup steps, who is ready,
//! attempts), the keys ([`keys`], a keyholder's round-1 stream in `round1`), every request's
//! switch ([`requests`]) and a head run's progress ([`head`], `service_head`); [`shell`] is its
//! tokio server, [`disk`] its audit log and saved state (a request is admitted only once
//! recorded), and [`run`] the commands (`coordinator serve-inference --collective`,
//! `coordinator train-head`); `client hold-keys` is the hospitals' side.
//!
//! Setup, with every hospital connected (the keys need all N secret shares):
//! 1. each hospital compiles the plan of its final model and sends its round-1 key shares (public
//!    key, relinearization round 1, the plan's Galois keys) with the plan's fingerprint, its
//!    model's digest and its signature over both, and sealed Shamir shares of its inference
//!    secret for every other hospital; all fingerprints and model digests must agree;
//! 2. once all N have, each receives every hospital's signed record with its public-key and
//!    relinearization shares (it checks them and makes both sums itself) and the sealed shares
//!    addressed to it, and sends its relinearization round-2 share;
//! 3. once all N have, the coordinator makes the collective public key and the sums every
//!    keyholder's evaluation keys are made of, and sends them; each keyholder makes its keys and
//!    says it is ready.
//!
//! Serving: a request (images encrypted under the collective key, the requester's public key,
//! its signature) is checked, then t ready hospitals are asked to evaluate it and switch the
//! results; their results must agree. One that leaves before answering, or whose answer does
//! not fit, is replaced (a new attempt); with fewer than t ready the request waits until its
//! deadline and is then refused. A network deeper than one ring holds is cut into segments,
//! and between two the t keyholders refresh their outputs collectively: the coordinator
//! gathers each one's signed shares and relays all of them to each ([`segments`]).
//!
//! Head training (`coordinator train-head`, issue 20) is served the same way with a head's plan
//! ([`keys::KeyPlan::Head`]): the coordinator computes the steps itself, so it makes the
//! evaluation keys; a contributor's encrypted examples start a run ([`head`]); after every step the
//! state's refresh is a request answered by t keyholders (replaced as above when one leaves),
//! and the trained head is switched to the contributor's key as a result is.

pub mod disk;
mod engine;
mod error;
pub mod head;
pub mod keys;
pub mod requests;
mod round1;
pub mod run;
pub mod saved;
mod segments;
mod service;
mod service_head;
mod service_io;
pub mod shell;

pub use engine::{ServingAction, ServingConfig, ServingEngine, ServingEvent, SetupStep};
pub use service::Service;
pub use service_io::{Action, Conn, Event, ServiceConfig};
pub use shell::CollectiveServer;

#[cfg(test)]
mod refusals;
#[cfg(test)]
mod tests;
