//! A whole head-training run as every party replays it (issue 46, item 3): the same chunks,
//! the public schedule, a zero initial state encrypted with public randomness (a seed all
//! parties derive from the signed contribution), each step, and each refresh finished with the
//! shares the keyholders signed. Everything here is deterministic, so the coordinator and each
//! keyholder reach the same state, ciphertext for ciphertext: a keyholder refreshes only the
//! state its own replay reached, never one a coordinator chose.

use std::sync::Arc;

use crate::ckks::{Ciphertext, CkksContext, PublicKey, wire};
use crate::infer::EvaluationKeys;
use crate::multiparty::{Refresh, RefreshShare};
use crate::ring::Seed;

use super::device::{DeviceRun, StepDevice, host_reference, open_device};
use super::{EncryptedChunk, HeadPlan, HeadTrainError, HeadTrainer, schedule};
use crate::aggregate::BackendChoice;

/// Most steps a run may take: each is a refresh round trip of t keyholders.
pub const MAX_STEPS: usize = 1_000_000;

/// How a run trains (the contribution's signed training).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunSettings {
    pub epochs: usize,
    pub batch_chunks: usize,
    pub lr: f64,
    pub momentum: f64,
}

/// One run: the trainer, its chunks and schedule, the state of the step waiting for its
/// refresh.
pub struct HeadRun {
    plan: HeadPlan,
    trainer: HeadTrainer,
    chunks: Vec<EncryptedChunk>,
    batches: Vec<Vec<usize>>,
    /// steps whose refresh is done
    done: usize,
    /// the state after the current step, at the refresh level
    pending: Vec<Ciphertext>,
    refresh: Refresh,
    /// where the steps run when not on the CPU trainer
    device: Option<Box<dyn StepDevice>>,
}

impl HeadRun {
    /// A run from zero weights encrypted under `pk` with randomness from `seed` (public: every
    /// party derives it from the contribution), refreshed by `threshold` of `hospitals`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        plan: HeadPlan,
        pk: &PublicKey,
        keys: &EvaluationKeys,
        settings: RunSettings,
        seed: &Seed,
        federation: &[u8],
        (hospitals, threshold): (usize, usize),
        chunks: Vec<EncryptedChunk>,
    ) -> Result<Self, HeadTrainError> {
        HeadTrainer::check_settings(settings.lr, settings.momentum)?;
        let steps = (settings.epochs as u128)
            * (chunks.len().div_ceil(settings.batch_chunks.max(1)) as u128);
        if settings.epochs == 0 || settings.batch_chunks == 0 || steps > MAX_STEPS as u128 {
            return Err(HeadTrainError::Config(format!(
                "{} epochs of batches of {} chunks over {} chunks: {steps} steps, where a run \
                 takes 1 to {MAX_STEPS}",
                settings.epochs,
                settings.batch_chunks,
                chunks.len()
            )));
        }
        let ctx = plan.context().clone();
        let rlk = keys
            .relinearization
            .as_ref()
            .ok_or_else(|| HeadTrainError::Config("no relinearization key".into()))?;
        let layout = plan.layout();
        let (d, c) = (layout.features(), layout.classes());
        let mut enc = ctx.pk_encryptor_seeded_for_public(pk, seed)?;
        let initial = HeadTrainer::pack_head(layout, &vec![0.0; c * d], &vec![0.0; c])
            .iter()
            .map(|v| {
                let pt = ctx.encode_reals(v, plan.scales().top, plan.scales().weight)?;
                Ok(enc.encrypt(&pt))
            })
            .collect::<Result<Vec<_>, HeadTrainError>>()?;
        let trainer = HeadTrainer::new(
            &ctx,
            rlk,
            &keys.galois,
            layout.clone(),
            settings.lr,
            settings.momentum,
            initial,
        )?;
        let refresh = plan.refresh(federation, hospitals, threshold)?;
        let batches = schedule(chunks.len(), settings.epochs, settings.batch_chunks);
        Ok(Self {
            plan,
            trainer,
            chunks,
            batches,
            done: 0,
            pending: Vec::new(),
            refresh,
            device: None,
        })
    }

    /// Computes the steps where `choice` says (`keys`: the run's evaluation keys, uploaded with
    /// its chunks): a CUDA GPU with `auto` when one loads and takes them, else the CPU. Returns
    /// where they run. The states are the same word for word wherever they are computed.
    pub fn place(
        &mut self,
        choice: BackendChoice,
        keys: &EvaluationKeys,
    ) -> Result<&str, HeadTrainError> {
        self.device = open_device(choice, &self.device_run(keys))?;
        Ok(self.placed())
    }

    /// The steps through the GPU kernels' reference executor on the CPU (tests).
    pub fn place_on_host_reference(&mut self, keys: &EvaluationKeys) -> Result<(), HeadTrainError> {
        self.device = Some(host_reference(&self.device_run(keys))?);
        Ok(())
    }

    /// Where the steps run.
    pub fn placed(&self) -> &str {
        self.device.as_ref().map_or("CPU", |d| d.name())
    }

    fn device_run<'a>(&'a self, keys: &'a EvaluationKeys) -> DeviceRun<'a> {
        DeviceRun {
            plan: &self.plan,
            keys,
            lr: self.trainer.lr(),
            momentum: self.trainer.momentum(),
            chunks: &self.chunks,
        }
    }

    pub fn context(&self) -> &Arc<CkksContext> {
        self.plan.context()
    }

    pub fn plan(&self) -> &HeadPlan {
        &self.plan
    }

    /// The refresh of a step's state by the run's keyholders.
    pub fn refresh(&self) -> &Refresh {
        &self.refresh
    }

    /// Steps of the whole run, and those refreshed so far.
    pub fn steps(&self) -> (usize, usize) {
        (self.batches.len(), self.done)
    }

    pub fn finished(&self) -> bool {
        self.done == self.batches.len()
    }

    /// Runs the next step (a no-op when its state already waits for its refresh); the state
    /// then waits for the refresh.
    pub fn compute_step(&mut self) -> Result<(), HeadTrainError> {
        if !self.pending.is_empty() {
            return Ok(());
        }
        let Some(batch) = self.batches.get(self.done) else {
            return Err(HeadTrainError::Config(format!(
                "all {} steps are done",
                self.batches.len()
            )));
        };
        self.pending = match &self.device {
            Some(d) => d.step(self.trainer.weights(), self.trainer.velocity(), batch)?,
            None => {
                let batch: Vec<&EncryptedChunk> = batch.iter().map(|&i| &self.chunks[i]).collect();
                self.trainer.step(&batch)?
            }
        };
        Ok(())
    }

    /// The state waiting for its refresh (empty before a step is computed).
    pub fn pending(&self) -> &[Ciphertext] {
        &self.pending
    }

    /// Finishes the refresh of the current step with the sum of every active keyholder's
    /// shares (one per state ciphertext): the trainer takes the refreshed state back.
    pub fn finish_refresh(&mut self, sums: &[RefreshShare]) -> Result<(), HeadTrainError> {
        if self.pending.is_empty() || sums.len() != self.pending.len() {
            return Err(HeadTrainError::Shape(format!(
                "{} summed shares for a state of {} ciphertexts",
                sums.len(),
                self.pending.len()
            )));
        }
        let refreshed = self
            .pending
            .iter()
            .zip(sums)
            .map(|(ct, s)| self.refresh.finalize(ct, s))
            .collect::<Result<Vec<_>, _>>()?;
        self.trainer.set_state(refreshed)?;
        self.pending.clear();
        self.done += 1;
        Ok(())
    }

    /// The trained head (weights per feature group, then the bias).
    pub fn weights(&self) -> &[Ciphertext] {
        self.trainer.weights()
    }
}

/// BLAKE3 over the encodings of `cts` in order: how parties name a state to each other.
pub fn state_digest(ctx: &CkksContext, cts: &[Ciphertext]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for ct in cts {
        let bytes = wire::encode_ciphertext(ctx, ct);
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    *h.finalize().as_bytes()
}

/// Decodes and checks a contribution's chunks: `items` (without the contributor's key) hold
/// `counts.len()` chunks of the plan's feature groups and labels.
pub fn decode_chunks(
    plan: &HeadPlan,
    counts: &[u32],
    items: &[Vec<u8>],
) -> Result<Vec<EncryptedChunk>, HeadTrainError> {
    let ctx = plan.context();
    let per = plan.layout().groups() + 1;
    if items.len() != per * counts.len() {
        return Err(HeadTrainError::Shape(format!(
            "{} ciphertexts for {} chunks of {per}",
            items.len(),
            counts.len()
        )));
    }
    items
        .chunks(per)
        .zip(counts)
        .enumerate()
        .map(|(i, (cts, &count))| {
            let mut cts = cts
                .iter()
                .map(|b| {
                    wire::decode_ciphertext(ctx, b).map_err(|e| HeadTrainError::Example {
                        index: i,
                        reason: format!("chunk ciphertext: {e}"),
                    })
                })
                .collect::<Result<Vec<Ciphertext>, _>>()?;
            let labels = cts
                .pop()
                .ok_or_else(|| HeadTrainError::Shape("an empty chunk".into()))?;
            let chunk = EncryptedChunk {
                features: cts,
                labels,
                count: count as usize,
            };
            chunk
                .check(plan.layout(), plan.scales())
                .map_err(|e| HeadTrainError::Shape(format!("chunk {i}: {e}")))?;
            Ok(chunk)
        })
        .collect()
}
