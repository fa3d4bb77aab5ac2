//! The coordinator's view of the round's encryption: the aggregation preset, the plan every
//! party derives from the federation's `[he]` settings (same scale, same level) and its codec,
//! which validates what hospitals send.

use std::sync::Arc;

use anyhow::Context;
use he_agg::aggregate::{AggregationPlan, UpdateCodec};
use he_agg::ckks::{Ciphertext, CkksContext, Parameters, Preset};
use he_agg::multiparty::{Crs, KeySwitchShare, wire as shares};
use protocol::FederationId;

use crate::config::FederationConfig;

/// Encryption settings of a federation, as every party computes them.
#[derive(Debug)]
pub struct HeSetup {
    pub ctx: Arc<CkksContext>,
    pub plan: AggregationPlan,
    pub codec: UpdateCodec,
    pub crs: Crs,
}

impl HeSetup {
    pub fn new(cfg: &FederationConfig, federation: FederationId) -> anyhow::Result<Self> {
        let ctx = CkksContext::new(Parameters::preset(Preset::Aggregation))
            .context("aggregation preset")?;
        let plan = AggregationPlan::from_settings(
            &ctx,
            &cfg.he,
            cfg.federation.hospitals as usize,
            cfg.threshold() as usize,
        )
        .context("the [he] settings do not fit the aggregation preset")?;
        Ok(Self {
            codec: UpdateCodec::new(ctx.clone(), plan.clone()),
            ctx,
            plan,
            crs: Crs::from_federation(&federation.0),
        })
    }

    /// Item `index` of an update whose signed seed is `a_seed`: well formed, of these
    /// parameters, at the plan's level and scale, its a from that seed; its c0 (what is summed).
    pub fn decode_update(
        &self,
        index: usize,
        bytes: &[u8],
        a_seed: &[u8; 32],
    ) -> Result<Ciphertext, String> {
        self.codec
            .decode_item(index, bytes, a_seed)
            .map_err(|e| e.to_string())
    }

    /// A switching share at `level` (the round's [`AggregationPlan::result_level`]).
    pub fn decode_switch_share(
        &self,
        bytes: &[u8],
        level: usize,
    ) -> Result<KeySwitchShare, String> {
        let s = shares::decode_key_switch_share(&self.ctx, bytes).map_err(|e| e.to_string())?;
        if s.level() != level {
            return Err(format!(
                "switching share at level {}, expected {level}",
                s.level()
            ));
        }
        Ok(s)
    }
}
