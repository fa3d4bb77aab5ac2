//! The coordinator's view of the round's encryption: [`he_agg::aggregate::HeSetup`], the one
//! type every party derives from the federation's `[he]` settings, built from the coordinator's
//! config.

use anyhow::Context;
pub use he_agg::aggregate::HeSetup;
use protocol::FederationId;

use crate::config::FederationConfig;

/// The federation's encryption, from its config.
pub fn setup(cfg: &FederationConfig, federation: FederationId) -> anyhow::Result<HeSetup> {
    HeSetup::new(
        &cfg.he,
        cfg.federation.hospitals as usize,
        cfg.threshold() as usize,
        &federation.0,
    )
    .context("the federation's encryption")
}
