//! The `[he]` settings of a federation: written once by the coordinator's config, copied into
//! every hospital's site TOML, and turned into the same [`AggregationPlan`] at every party.

use crate::ckks::CkksContext;
use crate::multiparty::MultipartyError;

use super::plan::AggregationPlan;

/// `[he]`: how updates are encrypted.
///
/// ```toml
/// [he]
/// plaintext = false        # run the same pipeline without encryption (for comparison)
/// lambda = 40              # statistical security of the flooding noise, bits (≥ 30)
/// precision = 1e-6         # absolute precision asked of the weighted average of updates
/// max_update = 64.0        # updates are clipped to ±this before encryption
/// max_total_weight = 1e7   # largest total sample count of a round
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct HeSettings {
    /// Run the same pipeline without encryption (for comparison).
    #[cfg_attr(feature = "serde", serde(default))]
    pub plaintext: bool,
    /// Statistical security of the flooding noise, in bits (≥ 30).
    #[cfg_attr(feature = "serde", serde(default = "default_lambda"))]
    pub lambda: u32,
    /// Absolute precision asked of the weighted average of updates.
    #[cfg_attr(feature = "serde", serde(default = "default_precision"))]
    pub precision: f64,
    /// Updates (weight changes) are clipped to ±this before encryption.
    #[cfg_attr(feature = "serde", serde(default = "default_max_update"))]
    pub max_update: f64,
    /// Largest total sample count of a round.
    #[cfg_attr(feature = "serde", serde(default = "default_max_total_weight"))]
    pub max_total_weight: f64,
}

fn default_lambda() -> u32 {
    40
}
fn default_precision() -> f64 {
    1e-6
}
fn default_max_update() -> f64 {
    64.0
}
fn default_max_total_weight() -> f64 {
    1e7
}

impl Default for HeSettings {
    fn default() -> Self {
        Self {
            plaintext: false,
            lambda: default_lambda(),
            precision: default_precision(),
            max_update: default_max_update(),
            max_total_weight: default_max_total_weight(),
        }
    }
}

impl AggregationPlan {
    /// The plan every party derives from the federation's `[he]` settings: `hospitals` hold
    /// the collective key, `threshold` of them switch each sum.
    pub fn from_settings(
        ctx: &CkksContext,
        settings: &HeSettings,
        hospitals: usize,
        threshold: usize,
    ) -> Result<Self, MultipartyError> {
        Self::new(
            ctx,
            hospitals,
            threshold,
            settings.max_total_weight,
            settings.max_update,
            settings.lambda,
            settings.precision,
        )
    }
}
