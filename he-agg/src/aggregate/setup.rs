//! A federation's encryption as every party derives it from the federation's `[he]` settings:
//! the aggregation preset, the plan (same scale, same level for everyone), the codec that
//! encrypts updates and validates what arrives, and the common reference string of the
//! federation. The coordinator and every hospital build it with this one constructor.

use std::sync::Arc;

use crate::ckks::{Ciphertext, CkksContext, CkksError, Parameters, Preset};
use crate::multiparty::{Crs, KeySwitchShare, MultipartyError, wire};

use super::{AggregationPlan, CodecError, HeSettings, UpdateCodec};

/// Why a federation's encryption cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("the aggregation preset: {0}")]
    Preset(#[from] CkksError),
    #[error("the [he] settings do not fit the aggregation preset: {0}")]
    Settings(#[from] MultipartyError),
}

/// Why a switching share is refused.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error(transparent)]
    Wire(#[from] crate::ckks::wire::WireError),
    #[error("switching share at level {got}, expected {want}")]
    Level { got: usize, want: usize },
}

/// The encryption of one federation.
#[derive(Debug)]
pub struct HeSetup {
    pub ctx: Arc<CkksContext>,
    pub plan: AggregationPlan,
    pub codec: UpdateCodec,
    pub crs: Crs,
}

impl HeSetup {
    /// `hospitals` hold the collective key, `threshold` of them switch each sum; `federation`
    /// is the federation's identifier (the seed of its common reference string).
    pub fn new(
        settings: &HeSettings,
        hospitals: usize,
        threshold: usize,
        federation: &[u8; 16],
    ) -> Result<Self, SetupError> {
        let ctx = CkksContext::new(Parameters::preset(Preset::Aggregation))?;
        let plan = AggregationPlan::from_settings(&ctx, settings, hospitals, threshold)?;
        Ok(Self {
            codec: UpdateCodec::new(ctx.clone(), plan.clone()),
            ctx,
            plan,
            crs: Crs::from_federation(federation),
        })
    }

    /// Item `index` of an update whose signed seed is `a_seed`: well formed, of these
    /// parameters, at the plan's level and scale, its a from that seed; its c0 (what is summed).
    pub fn decode_update(
        &self,
        index: usize,
        bytes: &[u8],
        a_seed: &[u8; 32],
    ) -> Result<Ciphertext, CodecError> {
        self.codec.decode_item(index, bytes, a_seed)
    }

    /// A switching share at `level` (the round's [`AggregationPlan::result_level`]).
    pub fn decode_switch_share(
        &self,
        bytes: &[u8],
        level: usize,
    ) -> Result<KeySwitchShare, ShareError> {
        let s = wire::decode_key_switch_share(&self.ctx, bytes)?;
        if s.level() != level {
            return Err(ShareError::Level {
                got: s.level(),
                want: level,
            });
        }
        Ok(s)
    }
}
