//! The coordinator's view of the round's encryption: the aggregation preset, the plan every
//! party derives from the federation config (same scale, same level), and the validated
//! decoding of what hospitals send.

use std::sync::Arc;

use anyhow::Context;
use he_agg::aggregate::AggregationPlan;
use he_agg::ckks::{Ciphertext, CkksContext, Parameters, Preset, wire};
use he_agg::multiparty::{Crs, PublicKeySwitchShare, wire as shares};
use protocol::FederationId;

use crate::config::FederationConfig;

/// Encryption settings of a federation, as every party computes them.
#[derive(Debug)]
pub struct HeSetup {
    pub ctx: Arc<CkksContext>,
    pub plan: AggregationPlan,
    pub crs: Crs,
}

impl HeSetup {
    pub fn new(cfg: &FederationConfig, federation: FederationId) -> anyhow::Result<Self> {
        let ctx = CkksContext::new(Parameters::preset(Preset::Aggregation))
            .context("aggregation preset")?;
        let plan = AggregationPlan::new(
            &ctx,
            cfg.federation.hospitals as usize,
            cfg.threshold() as usize,
            cfg.he.max_total_weight,
            cfg.he.max_update,
            cfg.he.lambda,
            cfg.he.precision,
        )
        .context("the [he] settings do not fit the aggregation preset")?;
        Ok(Self {
            ctx,
            plan,
            crs: Crs::from_federation(&federation.0),
        })
    }

    /// An update ciphertext: well formed, of these parameters, at the plan's level and scale.
    pub fn decode_update(&self, bytes: &[u8]) -> Result<Ciphertext, String> {
        let ct = wire::decode_ciphertext(&self.ctx, bytes).map_err(|e| e.to_string())?;
        if ct.level() != self.plan.level
            || ct.degree() != 1
            || ct.scale.to_bits() != self.plan.scale.to_bits()
        {
            return Err(format!(
                "ciphertext at level {}, degree {}, scale 2^{:.2}; the round takes level {}, degree 1, scale 2^{:.2}",
                ct.level(),
                ct.degree(),
                ct.scale.log2(),
                self.plan.level,
                self.plan.scale.log2()
            ));
        }
        Ok(ct)
    }

    /// A switching share at the plan's level.
    pub fn decode_switch_share(&self, bytes: &[u8]) -> Result<PublicKeySwitchShare, String> {
        let s =
            shares::decode_public_key_switch_share(&self.ctx, bytes).map_err(|e| e.to_string())?;
        if s.level() != self.plan.level {
            return Err(format!(
                "switching share at level {}, expected {}",
                s.level(),
                self.plan.level
            ));
        }
        Ok(s)
    }
}
