//! Encrypted head training at the coordinator (issue 20): a contributor's checked chunks, the
//! public schedule of mini-batches, the trainer (which never holds a secret) and the refresh of
//! its state after every step by t keyholders. The engine treats each refresh as a request (so
//! a keyholder that leaves is replaced by another, as for a served result); this holds the data.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use he_agg::ckks::{CkksContext, PublicKey, wire};
use he_agg::infer::EvaluationKeys;
use he_agg::multiparty::{RefreshShare, wire as mpw};
use he_agg::train::{HeadPlan, RunSettings, decode_chunks, state_digest};
use protocol::serve::head::{HeadContribution, HeadRefreshRelay, HeadTraining};
use protocol::transcript::digest;
use protocol::{Body, FederationId, HeadMsg};

use super::error::KeysError;

fn invalid(s: impl Into<String>) -> KeysError {
    KeysError::Invalid(s.into())
}

/// Checks a contribution's header against the plan and the training this server announced
/// before its items are read.
pub fn check_contribution(
    h: &HeadContribution,
    plan: &HeadPlan,
    training: &HeadTraining,
) -> Result<(), String> {
    h.check(
        plan.fingerprint(),
        plan.layout().groups(),
        plan.layout().samples(),
    )?;
    if &h.training != training {
        return Err(format!(
            "the contribution asks for training {:?}; this server trains as it announced: \
             {training:?} (fetch the job again)",
            h.training
        ));
    }
    if h.signature.is_empty() || h.signature.len() > protocol::transcript::MAX_SIGNATURE {
        return Err(
            "the contribution is not signed: keyholders train only on what a hospital \
                    of the consortium signed (update the client)"
                .into(),
        );
    }
    Ok(())
}

/// Figures of a run, for the log and the audit.
#[derive(Clone, Debug, Default)]
pub struct RunFigures {
    pub step: Duration,
    pub refresh: Duration,
    pub refreshes: u64,
    pub share_bytes: u64,
}

/// One keyholder's signed shares of the current attempt, as relayed.
struct Signed {
    hospital: u32,
    signature: Vec<u8>,
    items: Vec<Vec<u8>>,
}

/// One contribution being trained on: the coordinator replays the run as every keyholder does,
/// gathers the t signed shares of each step and relays them to every keyholder of the run.
pub struct HeadRun {
    pub contributor: u32,
    pub request_id: u64,
    run: he_agg::train::HeadRun,
    /// digest of the state waiting for its refresh
    state: [u8; 32],
    /// the attempt whose shares are summed, and the sums
    sum: Option<(u32, Vec<RefreshShare>)>,
    /// the shares of that attempt as signed
    signed: Vec<Signed>,
    pub figures: RunFigures,
}

impl HeadRun {
    pub fn context(&self) -> &Arc<CkksContext> {
        self.run.context()
    }

    pub fn plan(&self) -> &HeadPlan {
        self.run.plan()
    }

    /// Steps of the whole run, and those refreshed so far.
    pub fn steps(&self) -> (usize, usize) {
        self.run.steps()
    }

    pub fn finished(&self) -> bool {
        self.run.finished()
    }

    /// Runs the next step; its state waits for the refresh.
    pub fn compute_step(&mut self) -> Result<(), KeysError> {
        let t = std::time::Instant::now();
        self.run
            .compute_step()
            .map_err(|e| invalid(e.to_string()))?;
        self.state = state_digest(self.run.context(), self.run.pending());
        self.sum = None;
        self.signed.clear();
        self.figures.step += t.elapsed();
        Ok(())
    }

    /// Ciphertexts of the state waiting for its refresh, and its digest.
    pub fn pending(&self) -> (usize, [u8; 32]) {
        (self.run.pending().len(), self.state)
    }

    /// Decodes one keyholder's signed refresh shares (one per state ciphertext) and adds them
    /// to the sum of `attempt` (a new attempt starts a new sum: its shares are for another
    /// set). The keyholders check the signature when the shares are relayed.
    pub fn fold(
        &mut self,
        attempt: u32,
        hospital: u32,
        signature: Vec<u8>,
        items: Vec<Vec<u8>>,
    ) -> Result<(), KeysError> {
        let t = std::time::Instant::now();
        let count = self.run.pending().len();
        if items.len() != count {
            return Err(invalid(format!(
                "{} refresh shares for {count} ciphertexts",
                items.len()
            )));
        }
        let ctx = self.run.context();
        let level = self.run.plan().scales().refresh_level;
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
                    self.run
                        .refresh()
                        .aggregate(acc, s)
                        .map_err(|e| invalid(e.to_string()))?;
                }
            }
            _ => {
                self.sum = Some((attempt, shares));
                self.signed.clear();
            }
        }
        self.signed.push(Signed {
            hospital,
            signature,
            items,
        });
        self.figures.refresh += t.elapsed();
        Ok(())
    }

    /// The relay of the summed shares to the run's keyholders, in ascending order of hospital
    /// (once: the shares move into it).
    pub fn relay(&mut self) -> Result<(Body, Vec<Vec<u8>>), KeysError> {
        let (attempt, _) = self
            .sum
            .as_ref()
            .ok_or_else(|| invalid("no refresh shares were folded"))?;
        let attempt = *attempt;
        // the shares leave with the relay: finishing the refresh needs only their sum
        let mut signed = std::mem::take(&mut self.signed);
        signed.sort_by_key(|s| s.hospital);
        let count = self.run.pending().len() as u32;
        let mut from = Vec::with_capacity(signed.len());
        let mut items = Vec::with_capacity(signed.len() * count as usize);
        for s in signed {
            from.push((s.hospital, s.signature));
            items.extend(s.items);
        }
        let (_, done) = self.run.steps();
        let body = Body::Head(HeadMsg::HeadRefreshRelay(HeadRefreshRelay {
            request_id: self.request_id,
            step: done as u64 + 1,
            attempt,
            count,
            from,
        }));
        Ok((body, items))
    }

    /// Finishes the refresh of the current step with the summed shares.
    pub fn finish_refresh(&mut self) -> Result<(), KeysError> {
        let t = std::time::Instant::now();
        let (_, sum) = self
            .sum
            .take()
            .ok_or_else(|| invalid("no refresh shares were folded"))?;
        let count = sum.len() as u64;
        self.run
            .finish_refresh(&sum)
            .map_err(|e| invalid(e.to_string()))?;
        self.signed.clear();
        self.figures.refreshes += count;
        self.figures.refresh += t.elapsed();
        Ok(())
    }

    /// The trained head (weights per feature group, then the bias), for the final switch.
    pub fn weights(&self) -> Vec<he_agg::ckks::Ciphertext> {
        self.run.weights().to_vec()
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
    /// the keyholders the run was started at: each replays it and is relayed every step
    pub keyholders: Vec<u32>,
}

/// What setting a run up from a contribution takes (decoding its chunks: gigabytes).
pub struct RunJob {
    pub(super) plan: HeadPlan,
    pub(super) keys: (PublicKey, Arc<EvaluationKeys>),
    pub(super) federation: FederationId,
    pub(super) hospitals: u32,
    pub(super) threshold: u32,
    pub(super) contributor: u32,
    pub(super) header: HeadContribution,
    /// the contributor's key, then the chunks (shared with the relay to the keyholders)
    pub(super) items: Arc<Vec<Vec<u8>>>,
}

impl RunJob {
    /// The run with its steps where `backend` says, or why the contribution cannot be
    /// trained on.
    pub fn build(self, backend: he_agg::aggregate::BackendChoice) -> Result<Box<HeadRun>, String> {
        let Some((receiver, chunks)) = self.items.split_first() else {
            return Err("no contributor key".into());
        };
        wire::decode_public_key(self.plan.context(), receiver)
            .map_err(|e| format!("the contributor's public key: {e}"))?;
        let chunks =
            decode_chunks(&self.plan, &self.header.counts, chunks).map_err(|e| e.to_string())?;
        // the zero initial state's randomness: public, derived as every keyholder derives it
        let statement = self.header.statement(
            self.federation,
            self.contributor,
            self.items.iter().map(Vec::as_slice),
        );
        let seed = digest(&statement.message());
        let t = &self.header.training;
        let settings = RunSettings {
            epochs: t.epochs as usize,
            batch_chunks: t.batch_chunks as usize,
            lr: t.lr,
            momentum: t.momentum,
        };
        let mut run = he_agg::train::HeadRun::new(
            self.plan,
            &self.keys.0,
            &self.keys.1,
            settings,
            &seed,
            &self.federation.0,
            (self.hospitals as usize, self.threshold as usize),
            chunks,
        )
        .map_err(|e| e.to_string())?;
        let placed = run
            .place(backend, &self.keys.1)
            .map_err(|e| format!("--backend {backend}: {e}"))?;
        tracing::info!(trained_on = placed, "head training run placed");
        Ok(Box::new(HeadRun {
            contributor: self.contributor,
            request_id: self.header.request_id,
            run,
            state: [0; 32],
            sum: None,
            signed: Vec::new(),
            figures: RunFigures::default(),
        }))
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
            training: training(),
            signature: vec![1; 64],
        }
    }

    fn training() -> HeadTraining {
        HeadTraining {
            epochs: 2,
            batch_chunks: 1,
            lr: 1.0,
            momentum: 0.5,
        }
    }

    #[test]
    fn contributions_of_another_shape_are_refused_before_their_items_are_read() {
        let p = plan();
        let s = p.layout().samples() as u32;
        assert!(check_contribution(&header(&p, vec![s, 3]), &p, &training()).is_ok());
        let mut h = header(&p, vec![s]);
        h.fingerprint = HeadPlan::with_context(p.context().clone(), 12, 3)
            .unwrap()
            .fingerprint();
        assert!(
            check_contribution(&h, &p, &training())
                .unwrap_err()
                .contains("another head plan")
        );
        let mut h = header(&p, vec![s]);
        h.ciphertexts_per_chunk += 1;
        assert!(
            check_contribution(&h, &p, &training())
                .unwrap_err()
                .contains("per chunk")
        );
        let e = check_contribution(&header(&p, vec![s + 1]), &p, &training()).unwrap_err();
        assert!(e.contains(&format!("1 to {s} each")), "{e}");
        let e = check_contribution(&header(&p, vec![1, 1, 1]), &p, &training()).unwrap_err();
        assert!(e.contains("every chunk but the last"), "{e}");
        let mut h = header(&p, vec![s, 2]);
        h.examples += 1;
        assert!(
            check_contribution(&h, &p, &training())
                .unwrap_err()
                .contains("sum to")
        );
        let mut h = header(&p, vec![2]);
        h.counts.clear();
        assert!(check_contribution(&h, &p, &training()).is_err());
        let e = check_contribution(&header(&p, vec![]), &p, &training()).unwrap_err();
        assert!(e.contains("0 chunks"), "{e}");
        // every keyholder trains as the contributor signed: it must be what the server said
        let mut h = header(&p, vec![s]);
        h.training.lr = 2.0;
        let e = check_contribution(&h, &p, &training()).unwrap_err();
        assert!(e.contains("trains as it announced"), "{e}");
        let mut h = header(&p, vec![s]);
        h.signature.clear();
        let e = check_contribution(&h, &p, &training()).unwrap_err();
        assert!(e.contains("not signed"), "{e}");
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
        let got = decode_chunks(&p, &h.counts, &items).unwrap();
        assert_eq!((got.len(), got[0].count), (1, 5));

        // labels where features belong: another level, refused with the chunk's index
        let mut swapped = items.clone();
        swapped.swap(0, items.len() - 1);
        let e = decode_chunks(&p, &h.counts, &swapped)
            .unwrap_err()
            .to_string();
        assert!(e.contains("chunk 0") && e.contains("level"), "{e}");
        let mut bad = items.clone();
        bad[0] = vec![7; 100];
        assert!(decode_chunks(&p, &h.counts, &bad).is_err());
        assert!(decode_chunks(&p, &h.counts, &items[1..]).is_err());
    }
}
