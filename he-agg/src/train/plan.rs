//! What every party of a head-training deployment agrees on before any key exists: the
//! parameters, the head's shape (hence the slot layout and its rotations), the common reference
//! string of its keys and the flooding of every share. Keyholders, the coordinator and the
//! contributing sites compare [`HeadPlan::fingerprint`]s, as mode (a)'s parties compare plans.

use std::sync::Arc;

use crate::ckks::CkksContext;
use crate::multiparty::flooding::{DEFAULT_STATISTICAL_SECURITY, fresh_noise_bound};
use crate::multiparty::{Crs, Flooding, PublicKeySwitch, Refresh};

use super::HeadTrainError;
use super::layout::HeadLayout;
use super::params::{HeadScales, head_training_parameters};

/// Largest weight (or velocity) magnitude the refresh's masks are sized for.
pub const MAX_ABS_WEIGHT: f64 = 16.0;

/// The flooding of the final switch of a trained head to a receiver's key: 2^30 over 2^10 times
/// a fresh encryption's noise (the head's noise after a refresh is a fresh encryption's plus the
/// refresh's flooding, which sits 2^30 over it).
const SWITCH_LAMBDA: u32 = 30;
const SWITCH_NOISE_FACTOR: f64 = 1024.0;

/// A head of `features` inputs and `classes` outputs under the head-training parameters.
#[derive(Debug, Clone)]
pub struct HeadPlan {
    ctx: Arc<CkksContext>,
    layout: HeadLayout,
    scales: HeadScales,
}

impl HeadPlan {
    pub fn new(features: usize, classes: usize) -> Result<Self, HeadTrainError> {
        let ctx = CkksContext::new(head_training_parameters()?)?;
        Self::with_context(ctx, features, classes)
    }

    /// Under other parameters (tests use small, insecure rings).
    pub fn with_context(
        ctx: Arc<CkksContext>,
        features: usize,
        classes: usize,
    ) -> Result<Self, HeadTrainError> {
        let layout = HeadLayout::new(ctx.slots(), features, classes)?;
        let scales = HeadScales::new(&ctx)?;
        Ok(Self {
            ctx,
            layout,
            scales,
        })
    }

    pub fn context(&self) -> &Arc<CkksContext> {
        &self.ctx
    }
    pub fn layout(&self) -> &HeadLayout {
        &self.layout
    }
    pub fn scales(&self) -> &HeadScales {
        &self.scales
    }

    /// The rotations whose Galois keys a step needs.
    pub fn galois_steps(&self) -> Vec<i64> {
        self.layout.rotations()
    }

    /// Ciphertexts of the head's state: one per feature group and the bias, twice with
    /// momentum's velocity.
    pub fn state_len(&self, with_velocity: bool) -> usize {
        (self.layout.groups() + 1) * if with_velocity { 2 } else { 1 }
    }

    /// Binds the parameters and the head's shape.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(b"HEAL head training plan v1");
        h.update(self.ctx.fingerprint());
        for v in [self.layout.features(), self.layout.classes()] {
            h.update(&(v as u64).to_le_bytes());
        }
        *h.finalize().as_bytes()
    }

    /// The common reference string of a federation's head-training keys (apart from its
    /// training and inference keys').
    pub fn crs(federation: &[u8]) -> Crs {
        let mut label = b"HEAL head training keys v1 ".to_vec();
        label.extend_from_slice(federation);
        Crs::from_federation(&label)
    }

    /// The collective refresh by `parties` keyholders of a federation (flooding 2^λ over a
    /// fresh encryption's noise under `hospitals` key shares).
    pub fn refresh(
        &self,
        federation: &[u8],
        hospitals: usize,
        parties: usize,
    ) -> Result<Refresh, HeadTrainError> {
        let flooding = Flooding::new(
            DEFAULT_STATISTICAL_SECURITY,
            fresh_noise_bound(&self.ctx, hospitals),
        )?;
        let r = Refresh::new(
            &self.ctx,
            &Self::crs(federation),
            flooding,
            parties,
            MAX_ABS_WEIGHT,
        )?;
        // refused here, with the numbers, rather than at the first step
        r.room(self.scales.refresh_level, self.scales.weight)?;
        Ok(r)
    }

    /// The switch of the trained head to a receiver's key by `parties` keyholders.
    pub fn head_switch(
        &self,
        hospitals: usize,
        parties: usize,
    ) -> Result<PublicKeySwitch, HeadTrainError> {
        let flooding = Flooding::new(
            SWITCH_LAMBDA,
            fresh_noise_bound(&self.ctx, hospitals) * SWITCH_NOISE_FACTOR,
        )?;
        Ok(PublicKeySwitch::new(&self.ctx, flooding, parties))
    }
}

/// The mini-batches of a run: per epoch, a shuffle of the chunk indices (public, from a fixed
/// seed per epoch, so a contributor can replay the same steps in plaintext), cut into batches of
/// `batch_chunks`.
pub fn schedule(chunks: usize, epochs: usize, batch_chunks: usize) -> Vec<Vec<usize>> {
    let mut batches = Vec::new();
    for epoch in 0..epochs {
        let mut ids: Vec<usize> = (0..chunks).collect();
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&(epoch as u64).to_le_bytes());
        let mut p =
            crate::ring::Prng::from_seed(&blake3::derive_key("HEAL head schedule v1", &seed));
        for i in (1..ids.len()).rev() {
            ids.swap(i, (p.next_u64() % (i as u64 + 1)) as usize);
        }
        batches.extend(ids.chunks(batch_chunks.max(1)).map(|c| c.to_vec()));
    }
    batches
}
