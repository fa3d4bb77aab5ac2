//! Encrypted head training at the coordinator (issue 20): a contributor's checked chunks, the
//! public schedule of mini-batches, the trainer (which never holds a secret) and the refresh of
//! its state after every step by t keyholders. The engine treats each refresh as a request (so
//! a keyholder that leaves is replaced by another, as for a served result); this holds the data.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use he_agg::ckks::{Ciphertext, CkksContext, PublicKey, wire};
use he_agg::infer::EvaluationKeys;
use he_agg::multiparty::{Refresh, RefreshShare, wire as mpw};
use he_agg::train::{EncryptedChunk, HeadPlan, HeadTrainer, schedule};
use protocol::FederationId;
use protocol::serve::head::{HeadContribution, HeadTraining, MAX_HEAD_EXAMPLES};

use super::error::KeysError;

fn invalid(s: impl Into<String>) -> KeysError {
    KeysError::Invalid(s.into())
}

/// Checks a contribution's header against the plan before its items are read.
pub fn check_contribution(h: &HeadContribution, plan: &HeadPlan) -> Result<(), String> {
    if h.fingerprint != plan.fingerprint() {
        return Err(
            "the examples were encrypted for another head plan: fetch the job again".into(),
        );
    }
    let per = plan.layout().groups() + 1;
    if h.ciphertexts_per_chunk as usize != per {
        return Err(format!(
            "{} ciphertexts per chunk; this head's chunks have {per}",
            h.ciphertexts_per_chunk
        ));
    }
    let samples = plan.layout().samples() as u64;
    let most = MAX_HEAD_EXAMPLES.div_ceil(samples);
    if h.chunks == 0 || u64::from(h.chunks) > most || h.counts.len() != h.chunks as usize {
        return Err(format!(
            "{} chunks with {} counts; a contribution holds 1 to {most} chunks",
            h.chunks,
            h.counts.len()
        ));
    }
    if h.counts.iter().any(|&c| c == 0 || u64::from(c) > samples)
        || h.counts.iter().map(|&c| u64::from(c)).sum::<u64>() != h.examples
    {
        return Err(format!(
            "chunk counts must be 1 to {samples} each and sum to the {} examples announced",
            h.examples
        ));
    }
    // every chunk but the last full: the memory a contribution takes follows its examples
    if let Some(i) = h.counts[..h.counts.len() - 1]
        .iter()
        .position(|&c| u64::from(c) != samples)
    {
        return Err(format!(
            "chunk {i} holds {} examples; every chunk but the last holds {samples}",
            h.counts[i]
        ));
    }
    Ok(())
}

/// Decodes and checks a contribution's chunks (`items` without the contributor's key).
pub fn decode_chunks(
    plan: &HeadPlan,
    h: &HeadContribution,
    items: &[Vec<u8>],
) -> Result<Vec<EncryptedChunk>, KeysError> {
    let ctx = plan.context();
    let per = h.ciphertexts_per_chunk as usize;
    if items.len() != per * h.chunks as usize {
        return Err(invalid(format!(
            "{} ciphertexts for {} chunks of {per}",
            items.len(),
            h.chunks
        )));
    }
    items
        .chunks(per)
        .zip(&h.counts)
        .enumerate()
        .map(|(i, (cts, &count))| {
            let mut cts = cts
                .iter()
                .map(|b| {
                    wire::decode_ciphertext(ctx, b).map_err(|e| KeysError::Item {
                        index: i as u64,
                        what: "chunk ciphertext",
                        reason: e.to_string(),
                    })
                })
                .collect::<Result<Vec<Ciphertext>, _>>()?;
            let labels = cts.pop().expect("per ≥ 1");
            let chunk = EncryptedChunk {
                features: cts,
                labels,
                count: count as usize,
            };
            chunk
                .check(plan.layout(), plan.scales())
                .map_err(|e| invalid(format!("chunk {i}: {e}")))?;
            Ok(chunk)
        })
        .collect()
}

/// Figures of a run, for the log and the audit.
#[derive(Clone, Debug, Default)]
pub struct RunFigures {
    pub step: Duration,
    pub refresh: Duration,
    pub refreshes: u64,
    pub share_bytes: u64,
}

/// One contribution being trained on.
pub struct HeadRun {
    pub contributor: u32,
    pub request_id: u64,
    /// the contributor's public key (encoded): the trained head is switched to it
    pub receiver_key: Vec<u8>,
    plan: HeadPlan,
    trainer: HeadTrainer,
    chunks: Vec<EncryptedChunk>,
    batches: Vec<Vec<usize>>,
    /// steps whose refresh is done
    done: usize,
    /// the state after the current step, at the refresh level
    pending: Vec<Ciphertext>,
    pending_encoded: Vec<Vec<u8>>,
    refresh: Refresh,
    /// the attempt whose shares are summed, and the sums
    sum: Option<(u32, Vec<RefreshShare>)>,
    pub figures: RunFigures,
}

impl HeadRun {
    /// A run from zero weights on `chunks`, as `training` says; refreshed by `threshold` of
    /// `hospitals` keyholders.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        plan: HeadPlan,
        keys: (&he_agg::ckks::PublicKey, &EvaluationKeys),
        training: &HeadTraining,
        federation: &[u8],
        hospitals: u32,
        threshold: u32,
        contributor: u32,
        request_id: u64,
        receiver_key: Vec<u8>,
        chunks: Vec<EncryptedChunk>,
    ) -> Result<Self, KeysError> {
        let err = |e: he_agg::train::HeadTrainError| invalid(e.to_string());
        let ctx = plan.context().clone();
        let (pk, eval) = keys;
        let rlk = eval
            .relinearization
            .as_ref()
            .ok_or_else(|| invalid("no relinearization key"))?;
        let layout = plan.layout();
        let (d, c) = (layout.features(), layout.classes());
        let mut enc = ctx.pk_encryptor(pk).map_err(|e| invalid(e.to_string()))?;
        let initial = HeadTrainer::pack_head(layout, &vec![0.0; c * d], &vec![0.0; c])
            .iter()
            .map(|v| {
                let pt = ctx
                    .encode_reals(v, plan.scales().top, plan.scales().weight)
                    .map_err(|e| invalid(e.to_string()))?;
                Ok(enc.encrypt(&pt))
            })
            .collect::<Result<Vec<_>, KeysError>>()?;
        let trainer = HeadTrainer::new(
            &ctx,
            rlk,
            &eval.galois,
            layout.clone(),
            training.lr,
            training.momentum,
            initial,
        )
        .map_err(err)?;
        let refresh = plan
            .refresh(federation, hospitals as usize, threshold as usize)
            .map_err(err)?;
        let batches = schedule(
            chunks.len(),
            training.epochs as usize,
            training.batch_chunks as usize,
        );
        Ok(Self {
            contributor,
            request_id,
            receiver_key,
            plan,
            trainer,
            chunks,
            batches,
            done: 0,
            pending: Vec::new(),
            pending_encoded: Vec::new(),
            refresh,
            sum: None,
            figures: RunFigures::default(),
        })
    }

    pub fn context(&self) -> &Arc<CkksContext> {
        self.plan.context()
    }

    pub fn plan(&self) -> &HeadPlan {
        &self.plan
    }

    /// Steps of the whole run, and those refreshed so far.
    pub fn steps(&self) -> (usize, usize) {
        (self.batches.len(), self.done)
    }

    pub fn finished(&self) -> bool {
        self.done == self.batches.len()
    }

    /// Runs the next step; its state waits for the refresh.
    pub fn compute_step(&mut self) -> Result<(), KeysError> {
        let t = std::time::Instant::now();
        let batch: Vec<&EncryptedChunk> = self.batches[self.done]
            .iter()
            .map(|&i| &self.chunks[i])
            .collect();
        self.pending = self
            .trainer
            .step(&batch)
            .map_err(|e| invalid(e.to_string()))?;
        let ctx = self.plan.context();
        self.pending_encoded = self
            .pending
            .iter()
            .map(|c| wire::encode_ciphertext(ctx, c))
            .collect();
        self.sum = None;
        self.figures.step += t.elapsed();
        Ok(())
    }

    /// The state to refresh, encoded as keyholders get it.
    pub fn pending(&self) -> &[Vec<u8>] {
        &self.pending_encoded
    }

    /// Decodes one keyholder's refresh shares (one per state ciphertext) and adds them to the
    /// sum of `attempt` (a new attempt starts a new sum: its shares are for another set).
    pub fn fold(&mut self, attempt: u32, items: &[Vec<u8>]) -> Result<(), KeysError> {
        let t = std::time::Instant::now();
        if items.len() != self.pending.len() {
            return Err(invalid(format!(
                "{} refresh shares for {} ciphertexts",
                items.len(),
                self.pending.len()
            )));
        }
        let ctx = self.plan.context();
        let level = self.plan.scales().refresh_level;
        let shares = items
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let s = mpw::decode_refresh_share(ctx, b).map_err(|e| KeysError::Item {
                    index: i as u64,
                    what: "refresh share",
                    reason: e.to_string(),
                })?;
                if s.level() != level {
                    return Err(invalid(format!(
                        "refresh share {i} at level {}, the state is at {level}",
                        s.level()
                    )));
                }
                Ok(s)
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.figures.share_bytes += items.iter().map(|b| b.len() as u64).sum::<u64>();
        match self.sum.as_mut() {
            Some((a, sum)) if *a == attempt => {
                for (acc, s) in sum.iter_mut().zip(&shares) {
                    self.refresh
                        .aggregate(acc, s)
                        .map_err(|e| invalid(e.to_string()))?;
                }
            }
            _ => self.sum = Some((attempt, shares)),
        }
        self.figures.refresh += t.elapsed();
        Ok(())
    }

    /// Finishes the refresh of the current step with the summed shares: the trainer takes the
    /// refreshed state back.
    pub fn finish_refresh(&mut self) -> Result<(), KeysError> {
        let t = std::time::Instant::now();
        let (_, sum) = self
            .sum
            .take()
            .ok_or_else(|| invalid("no refresh shares were folded"))?;
        let refreshed = self
            .pending
            .iter()
            .zip(&sum)
            .map(|(ct, s)| self.refresh.finalize(ct, s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(e.to_string()))?;
        self.trainer
            .set_state(refreshed)
            .map_err(|e| invalid(e.to_string()))?;
        self.figures.refreshes += self.pending.len() as u64;
        self.pending.clear();
        self.pending_encoded.clear();
        self.done += 1;
        self.figures.refresh += t.elapsed();
        Ok(())
    }

    /// The trained head (weights per feature group, then the bias), for the final switch.
    pub fn weights(&self) -> Vec<Ciphertext> {
        self.trainer.weights().to_vec()
    }
}

/// Which engine request is the head's, and what it is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadRequest {
    /// the refresh of step `step` (0-based)
    Refresh { step: usize },
    /// the switch of the trained head to the contributor's key
    Deliver,
}

/// The engine's request ids of the head's run.
pub type HeadRequests = BTreeMap<u64, HeadRequest>;

/// A head run's progress.
#[derive(Default)]
pub struct HeadState {
    /// the run (out while a step is computed)
    pub run: Option<Box<HeadRun>>,
    /// the contributor's connection (the shell's number for it)
    pub conn: Option<u64>,
    /// which engine requests are the run's refreshes or its delivery
    pub requests: HeadRequests,
    /// a run is being read, set up or trained (no second contribution meanwhile)
    pub busy: bool,
}

/// What setting a run up from a contribution takes (decoding its chunks: gigabytes).
pub struct RunJob {
    pub(super) plan: HeadPlan,
    pub(super) keys: (PublicKey, Arc<EvaluationKeys>),
    pub(super) training: HeadTraining,
    pub(super) federation: FederationId,
    pub(super) hospitals: u32,
    pub(super) threshold: u32,
    pub(super) contributor: u32,
    pub(super) header: HeadContribution,
    pub(super) items: Vec<Vec<u8>>,
}

impl RunJob {
    /// The run, or why the contribution cannot be trained on.
    pub fn build(mut self) -> Result<Box<HeadRun>, String> {
        if self.items.is_empty() {
            return Err("no contributor key".into());
        }
        let receiver = self.items.remove(0);
        he_agg::ckks::wire::decode_public_key(self.plan.context(), &receiver)
            .map_err(|e| format!("the contributor's public key: {e}"))?;
        let chunks =
            decode_chunks(&self.plan, &self.header, &self.items).map_err(|e| e.to_string())?;
        drop(self.items);
        HeadRun::new(
            self.plan,
            (&self.keys.0, &self.keys.1),
            &self.training,
            &self.federation.0,
            self.hospitals,
            self.threshold,
            self.contributor,
            self.header.request_id,
            receiver,
            chunks,
        )
        .map(Box::new)
        .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use he_agg::ckks::Parameters;
    use he_agg::train::encrypt_chunk;

    /// N = 2^11, insecure (speed): the head-training chain of the he-agg tests.
    fn plan() -> HeadPlan {
        let q = [60, 60, 60, 60, 40, 40, 40, 40, 40, 40];
        let ctx =
            CkksContext::new(Parameters::insecure_for_tests(11, &q, &[61, 61], 5, 40.0).unwrap())
                .unwrap();
        HeadPlan::with_context(ctx, 10, 3).unwrap()
    }

    fn header(plan: &HeadPlan, counts: Vec<u32>) -> HeadContribution {
        HeadContribution {
            request_id: 1,
            fingerprint: plan.fingerprint(),
            examples: counts.iter().map(|&c| u64::from(c)).sum(),
            chunks: counts.len() as u32,
            ciphertexts_per_chunk: (plan.layout().groups() + 1) as u32,
            counts,
        }
    }

    #[test]
    fn contributions_of_another_shape_are_refused_before_their_items_are_read() {
        let p = plan();
        let s = p.layout().samples() as u32;
        assert!(check_contribution(&header(&p, vec![s, 3]), &p).is_ok());
        let mut h = header(&p, vec![s]);
        h.fingerprint = HeadPlan::with_context(p.context().clone(), 12, 3)
            .unwrap()
            .fingerprint();
        assert!(
            check_contribution(&h, &p)
                .unwrap_err()
                .contains("another head plan")
        );
        let mut h = header(&p, vec![s]);
        h.ciphertexts_per_chunk += 1;
        assert!(
            check_contribution(&h, &p)
                .unwrap_err()
                .contains("per chunk")
        );
        let e = check_contribution(&header(&p, vec![s + 1]), &p).unwrap_err();
        assert!(e.contains(&format!("1 to {s} each")), "{e}");
        let e = check_contribution(&header(&p, vec![1, 1, 1]), &p).unwrap_err();
        assert!(e.contains("every chunk but the last"), "{e}");
        let mut h = header(&p, vec![s, 2]);
        h.examples += 1;
        assert!(check_contribution(&h, &p).unwrap_err().contains("sum to"));
        let mut h = header(&p, vec![2]);
        h.counts.clear();
        assert!(check_contribution(&h, &p).is_err());
        let e = check_contribution(&header(&p, vec![]), &p).unwrap_err();
        assert!(e.contains("0 chunks"), "{e}");
    }

    #[test]
    fn chunks_are_decoded_and_checked_and_garbage_or_other_levels_refused() {
        let p = plan();
        let ctx = p.context().clone();
        let mut kg = ctx.key_generator().unwrap();
        let sk = kg.secret_key();
        let pk = kg.public_key(&sk);
        let mut enc = ctx.pk_encryptor(&pk).unwrap();
        let xs: Vec<Vec<f64>> = (0..5).map(|i| vec![0.1 * i as f64; 10]).collect();
        let refs: Vec<&[f64]> = xs.iter().map(Vec::as_slice).collect();
        let chunk = encrypt_chunk(&ctx, &mut enc, p.layout(), &refs, &[0, 1, 2, 0, 1]).unwrap();
        let mut items: Vec<Vec<u8>> = chunk
            .features
            .iter()
            .map(|c| wire::encode_ciphertext(&ctx, c))
            .collect();
        items.push(wire::encode_ciphertext(&ctx, &chunk.labels));
        let h = header(&p, vec![5]);
        let got = decode_chunks(&p, &h, &items).unwrap();
        assert_eq!((got.len(), got[0].count), (1, 5));

        // labels where features belong: another level, refused with the chunk's index
        let mut swapped = items.clone();
        swapped.swap(0, items.len() - 1);
        let e = decode_chunks(&p, &h, &swapped).unwrap_err().to_string();
        assert!(e.contains("chunk 0") && e.contains("level"), "{e}");
        let mut bad = items.clone();
        bad[0] = vec![7; 100];
        assert!(decode_chunks(&p, &h, &bad).is_err());
        assert!(decode_chunks(&p, &h, &items[1..]).is_err());
    }
}
