//! What operators and people read of a HEAL process, none of which travels between parties
//! (moved out of `protocol`, which holds only the wire):
//!
//! - [`durable_file`]: files written whole or not at all (temp, mode, fsync, rename, dir fsync);
//! - [`checked_file`]: state files framed with their hash, so damage is refused, not decoded;
//! - [`logging`]: every binary's log format (`HEAL_LOG_FORMAT=text|json`, `RUST_LOG`);
//! - [`prometheus`]: the text exposition format and the `/metrics` endpoint;
//! - [`metrics_file`] and [`run_report`]: the files a node and `coordinator simulate` write and
//!   the portal reads.

pub mod checked_file;
pub mod durable_file;
pub mod logging;
pub mod metrics_file;
pub mod prometheus;
pub mod run_report;
