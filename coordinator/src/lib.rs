//! The consortium server of HEAL: provisioning, the federation state machine (sans-IO) and its network
//! shell, crash-safe state, and `simulate` for a whole consortium on one machine.

pub mod config;
pub mod crash_point;
pub mod federation;
pub mod he;
pub mod privacy_report;
pub mod progress;
pub mod provision;
pub mod refusal_log;
pub mod serve;
pub mod server;
pub mod simulate;
pub mod status;
pub mod store;
pub mod timer;
