//! The consortium server of HEAL: provisioning, the round engine (sans-IO) and its network
//! shell, crash-safe state, and `simulate` for a whole consortium on one machine.

pub mod config;
pub mod engine;
pub mod provision;
pub mod store;
