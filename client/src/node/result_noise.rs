//! The calibrated bound of a served result's noise (`he_agg::infer::calibrate`: the keyholder's
//! own evaluation, with plaintext weights), which its switching flooding sits 2^λ above.
//! Measuring takes seconds to a minute (the collective key generation of every hospital, the
//! images evaluated twice), so the figure is kept
//! in the inference state directory under a key of everything it depends on — the plan's
//! fingerprint, the network's weights and the number of hospitals — and measured again when any
//! of them changes. It holds nothing secret: every keyholder measures its own (none takes the
//! server's or another's word for it).

use std::path::Path;

use anyhow::Context;
use he_agg::infer::calibrate::{Weights, calibrate_result_noise};
use he_agg::infer::{InferencePlan, Network};
use tracing::info;

const FILE: &str = "result-noise.bin";

/// The bound for `plan` compiled from `net` in a consortium of `hospitals`: read from `dir`
/// when it was measured for exactly these, measured (and stored) otherwise.
pub fn bound(
    dir: &Path,
    plan: &std::sync::Arc<InferencePlan>,
    net: &Network,
    hospitals: u32,
) -> anyhow::Result<f64> {
    let key = cache_key(plan, net, hospitals)?;
    let path = dir.join(FILE);
    if let Ok(bytes) = std::fs::read(&path)
        && let Some(bound) = parse(&bytes, &key)
    {
        return Ok(bound);
    }
    let t0 = std::time::Instant::now();
    let cal = calibrate_result_noise(plan, net, hospitals as usize, Weights::Plain)
        .context("measuring the noise of served results")?;
    // calibration's keys and segments (gigabytes at a ResNet's N = 2^15) go back to the system
    // before the served model's memory budget reads what is available
    he_agg::alloc::release_freed();
    info!(
        noise_log2 = format!("{:.1}", cal.measured.log2()),
        bound_log2 = format!("{:.1}", cal.bound.log2()),
        seconds = format!("{:.1}", t0.elapsed().as_secs_f64()),
        "calibrated the noise of served results (flooding sits 2^λ above the bound)"
    );
    if cal.extremes_replaced > 0 {
        tracing::warn!(
            replaced = cal.extremes_replaced,
            "the model's values leave their range on extreme images (random or saturated \
             pixels): the noise was measured on images near its mean instead, and a request of \
             such an image gets a result with more noise than its flooding is sized for \
             (docs/SECURITY.md, served mode (a) of deep networks)"
        );
    }
    let mut bytes = key.to_vec();
    bytes.extend_from_slice(&cal.bound.to_le_bytes());
    ops::durable_file::write_private(&path, &bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(cal.bound)
}

fn cache_key(plan: &InferencePlan, net: &Network, hospitals: u32) -> anyhow::Result<[u8; 32]> {
    let mut h = blake3::Hasher::new();
    h.update(b"HEAL result noise v3: plaintext weights, extremes in range");
    h.update(&plan.spec().fingerprint());
    h.update(&serde_json::to_vec(net)?);
    h.update(&hospitals.to_le_bytes());
    Ok(*h.finalize().as_bytes())
}

/// The stored bound if the file is for `key` and holds a usable figure.
fn parse(bytes: &[u8], key: &[u8; 32]) -> Option<f64> {
    let (k, v) = bytes.split_at_checked(32)?;
    let bound = f64::from_le_bytes(v.try_into().ok()?);
    (k == key && bound.is_finite() && bound >= 1.0).then_some(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_bound_is_used_only_for_its_key_and_only_when_usable() {
        let key = [7u8; 32];
        let mut bytes = key.to_vec();
        bytes.extend_from_slice(&2f64.powi(30).to_le_bytes());
        assert_eq!(parse(&bytes, &key), Some(2f64.powi(30)));
        assert_eq!(parse(&bytes, &[8u8; 32]), None);
        assert_eq!(parse(&bytes[..39], &key), None);
        for bad in [f64::NAN, f64::INFINITY, 0.5, -1.0] {
            let mut b = key.to_vec();
            b.extend_from_slice(&bad.to_le_bytes());
            assert_eq!(parse(&b, &key), None, "{bad}");
        }
    }
}
