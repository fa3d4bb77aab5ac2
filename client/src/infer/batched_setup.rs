//! What a batched evaluation needs before its first image — parameters, context, the model —
//! and whether a batch fits this machine: batched packing holds one ciphertext per value of a
//! layer whatever the number of images, so a deep network's batch takes gigabytes (the
//! BreastMNIST ResNet-20 at N = 2^14: 20.0 GB at its peak with 60-bit primes), checked against
//! `MemAvailable` before any image is read. The fastest primes (51 bits) take more limbs: where
//! they do not fit, 60-bit ones are tried, then (unless batched packing was asked for) image by
//! image.

use std::sync::Arc;

use he_agg::ckks::CkksContext;
use he_agg::infer::{BatchedModel, BatchedSpec, MAX_PRIME_BITS, Network, ParamPolicy};

use super::Packing;
use super::error::InferenceError;

/// Peak resident memory over the model's estimate of its values at once: the allocator's
/// pages of every size the levels pass through (kept for reuse, `he_agg::alloc`), the weights,
/// the refresh's copies. Measured: 20.0 GB against an estimate of 10.7 GB (1.87×) for the
/// BreastMNIST ResNet batch (`bench_infer --network … --batched-prime-bits 60`).
const HEADROOM: f64 = 1.9;

/// A batched evaluation made ready.
pub struct BatchedSetup {
    pub spec: BatchedSpec,
    pub ctx: Arc<CkksContext>,
    pub model: BatchedModel,
}

impl BatchedSetup {
    pub fn new(net: &Network, policy: &ParamPolicy) -> Result<Self, InferenceError> {
        let spec = BatchedSpec::new(net, policy)?;
        let ctx = CkksContext::new(spec.parameters().clone())?;
        let model = BatchedModel::with_policy(net, &ctx, policy)?;
        Ok(Self { spec, ctx, model })
    }

    /// Bytes a batch needs at once: the model's estimate of its values with headroom.
    pub fn needed_bytes(&self) -> u64 {
        (self.model.peak_bytes() as f64 * HEADROOM) as u64
    }

    /// Refuses, with both figures, a batch that needs more than `available` bytes (unknown:
    /// accepted).
    pub fn fits(&self, available: Option<u64>) -> Result<(), String> {
        let need = self.needed_bytes();
        match available {
            Some(have) if need > have => Err(format!(
                "batched packing needs about {:.1} GB at once for this network ({} segments, one \
                 ciphertext per value of a layer, whatever the batch size) and this machine has \
                 {:.1} GB available",
                need as f64 / 1e9,
                self.spec.segments(),
                have as f64 / 1e9
            )),
            _ => Ok(()),
        }
    }
}

/// The batched evaluation of `net` that fits `available` bytes: on the policy's primes (the
/// fastest kernels), else on 60-bit primes (fewer limbs per ciphertext), else the reason
/// neither fits.
pub fn fitting(
    net: &Network,
    policy: &ParamPolicy,
    available: Option<u64>,
) -> Result<Result<BatchedSetup, String>, InferenceError> {
    let first = BatchedSetup::new(net, policy)?;
    let Err(why) = first.fits(available) else {
        return Ok(Ok(first));
    };
    if policy.batched_prime_bits >= MAX_PRIME_BITS || first.spec.segments() == 1 {
        return Ok(Err(why));
    }
    drop(first);
    let wide = ParamPolicy {
        batched_prime_bits: MAX_PRIME_BITS,
        ..*policy
    };
    let second = BatchedSetup::new(net, &wide)?;
    Ok(second.fits(available).map(|()| {
        tracing::info!(
            "{why}: the batch runs on 60-bit primes instead (about {:.1} GB)",
            second.needed_bytes() as f64 / 1e9
        );
        second
    }))
}

/// The packing an evaluation uses after the memory check: `Auto` falls back to per image when a
/// batch does not fit, a forced `Batched` is refused with the figures.
pub fn choose(
    requested: Packing,
    net: &Network,
    policy: &ParamPolicy,
    available: Option<u64>,
) -> Result<Option<BatchedSetup>, InferenceError> {
    match fitting(net, policy, available)? {
        Ok(setup) => Ok(Some(setup)),
        Err(why) if requested == Packing::Auto => {
            tracing::warn!("{why}: evaluating image after image instead");
            Ok(None)
        }
        Err(why) => Err(InferenceError::Usage(format!(
            "{why}; use --packing per-image"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use he_agg::infer::testing;

    #[test]
    fn a_batch_larger_than_memory_falls_back_or_is_refused_with_figures() {
        let net = testing::tiny_network();
        let policy = ParamPolicy::default();
        let setup = BatchedSetup::new(&net, &policy).unwrap();
        let need = setup.needed_bytes();
        assert!(need > 0);
        assert!(setup.fits(Some(need)).is_ok());
        assert!(setup.fits(None).is_ok());
        let msg = setup.fits(Some(need - 1)).unwrap_err();
        assert!(msg.contains("GB available"), "{msg}");
        drop(setup);
        let fallback = choose(Packing::Auto, &net, &policy, Some(need - 1)).unwrap();
        assert!(fallback.is_none());
        let err = choose(Packing::Batched, &net, &policy, Some(1))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("per-image") && err.contains("GB"), "{err}");
        assert!(
            choose(Packing::Batched, &net, &policy, Some(need))
                .unwrap()
                .is_some()
        );
    }
}
