//! The data of the round in progress, without I/O: updates folded as they are accepted, the
//! aggregate closed once for switching, switching shares folded per attempt, and the round's
//! result and record made for commit. Every consistency check of what hospitals send lives
//! here; [`super::Federation`] asks its engine whether a stream is wanted and hands the
//! decoded values over.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use he_agg::aggregate::{Aggregator, Backend, MAX_WEIGHT, RoundSwitch, Shape};
use he_agg::ckks::Ciphertext;
use he_agg::multiparty::{KeySwitchShare, ReceiveSwitch, wire};
use protocol::transcript::{self, Contribution};

use crate::he::HeSetup;
use crate::store::{RoundRecord, StoredResult};

/// Most items a single update or share stream may announce (a 100M-parameter model).
pub const MAX_ITEMS: u32 = 20_000;

/// One hospital's update, read and decoded item by item.
pub enum Update {
    Encrypted(Vec<Ciphertext>),
    Plain(Vec<Vec<f32>>),
}

impl Update {
    /// Its items (ciphertexts, or plaintext chunks).
    pub fn len(&self) -> usize {
        match self {
            Update::Encrypted(c) => c.len(),
            Update::Plain(p) => p.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why something a hospital sent cannot join the round (the text is what its audit row says).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RoundError {
    #[error("weight {0} is outside 1..=2^40")]
    Weight(u64),
    #[error("{0} items announced (1..={MAX_ITEMS})")]
    ItemCount(u32),
    #[error("{got} items where this federation's updates have {want}")]
    ItemsDiffer { got: u32, want: u32 },
    #[error("a second update from this hospital in round {0}")]
    Twice(u64),
    #[error("an update that was not announced first")]
    NotAnnounced,
    #[error(
        "weight {weight} would bring the round's total to {total}, above max_total_weight {max} the plan's headroom is proven for"
    )]
    TotalWeight { weight: u64, total: u64, max: u64 },
    #[error("{got} values where this round's updates have {want}")]
    ValuesDiffer { got: usize, want: usize },
    #[error("round {got} ended while its data arrived (now {now})")]
    RoundEnded { got: u64, now: u64 },
    #[error("the switching attempt changed while the shares arrived")]
    AttemptChanged,
    #[error("no aggregate to switch")]
    NoAggregate,
    #[error("{got} switching shares for an aggregate of {want} ciphertexts")]
    ShareCount { got: usize, want: usize },
    #[error("switching shares for {got} of {want} ciphertexts")]
    MissingShares { got: usize, want: usize },
    #[error("an encrypted update in a plaintext round, or the reverse")]
    Mode,
    #[error("aggregation: {0}")]
    Aggregation(String),
    #[error("hospital {0}'s update is not folded with a signed statement of its weight")]
    Unsigned(u32),
    #[error("a switch of {named} contributions where {folded} are folded into the sum")]
    Contributions { named: usize, folded: usize },
}

/// The round in progress.
#[derive(Default)]
pub struct Round {
    round: u64,
    /// the plan's bound on the sum of the weights (the aggregate's headroom is proven for it)
    max_total_weight: u64,
    /// hospitals whose update streams in, with its weight: one stream per hospital
    uploading: BTreeMap<u32, u64>,
    /// hospitals whose update is folded, with its weight: nothing twice
    folded: BTreeMap<u32, u64>,
    /// what each folded hospital signed of its update, shown to the switchers
    signed: BTreeMap<u32, Contribution>,
    aggs: Vec<Aggregator>,
    plain: Vec<f64>,
    /// the sum of the updates' c0 (each update is under its hospital's own secret)
    aggregate: Option<Arc<Vec<Ciphertext>>>,
    attempt: u32,
    /// this attempt's switch (the switchers as named in its request, the digests their masks
    /// are bound to, the level their shares come at), as every switcher reckons it
    switch: Option<RoundSwitch>,
    /// accumulated switching share per ciphertext (towards the consortium receiving key)
    switch_acc: Vec<Option<KeySwitchShare>>,
    started_unix_ms: u64,
    aggregate_s: f64,
    switch_started: Option<Instant>,
    bytes_up: u64,
    bytes_down: u64,
}

impl Round {
    pub fn new(round: u64, started_unix_ms: u64, max_total_weight: u64) -> Self {
        Self {
            round,
            started_unix_ms,
            max_total_weight,
            ..Default::default()
        }
    }

    pub fn number(&self) -> u64 {
        self.round
    }

    fn check_round(&self, round: u64) -> Result<(), RoundError> {
        if self.round != round {
            return Err(RoundError::RoundEnded {
                got: round,
                now: self.round,
            });
        }
        Ok(())
    }

    /// The header of `hospital`'s update of `round` (`weight`, `count` items, where the
    /// federation's updates have `items`), before its items are read: on success the hospital's
    /// slot and weight are reserved until [`Round::fold`] or [`Round::abandon`], so a second
    /// stream of the same hospital is refused before anything of it is buffered.
    pub fn announce(
        &mut self,
        hospital: u32,
        round: u64,
        weight: u64,
        count: u32,
        items: u32,
    ) -> Result<(), RoundError> {
        self.check_round(round)?;
        if weight == 0 || weight > MAX_WEIGHT {
            return Err(RoundError::Weight(weight));
        }
        if count == 0 || count > MAX_ITEMS {
            return Err(RoundError::ItemCount(count));
        }
        if count != items {
            return Err(RoundError::ItemsDiffer {
                got: count,
                want: items,
            });
        }
        if self.uploading.contains_key(&hospital) || self.folded.contains_key(&hospital) {
            return Err(RoundError::Twice(round));
        }
        let total = self
            .uploading
            .values()
            .chain(self.folded.values())
            .sum::<u64>()
            + weight;
        if total > self.max_total_weight {
            return Err(RoundError::TotalWeight {
                weight,
                total,
                max: self.max_total_weight,
            });
        }
        self.uploading.insert(hospital, weight);
        Ok(())
    }

    /// `hospital`'s announced update of `round` did not arrive whole: its slot is free again.
    pub fn abandon(&mut self, hospital: u32, round: u64) {
        if self.round == round {
            self.uploading.remove(&hospital);
        }
    }

    /// Folds `hospital`'s announced update of `round`, read whole (`bytes` on the wire); a
    /// refused update leaves the sums untouched and frees the slot.
    pub fn fold(
        &mut self,
        hospital: u32,
        round: u64,
        he: Option<(&HeSetup, &dyn Backend, usize)>,
        bytes: u64,
        update: Update,
    ) -> Result<(), RoundError> {
        self.check_round(round)?;
        let weight = self
            .uploading
            .remove(&hospital)
            .ok_or(RoundError::NotAnnounced)?;
        let count = update.len();
        match (update, he) {
            (Update::Encrypted(cts), Some((he, backend, batch))) => {
                if !self.aggs.is_empty() && self.aggs.len() != count {
                    return Err(RoundError::ItemsDiffer {
                        got: count as u32,
                        want: self.aggs.len() as u32,
                    });
                }
                if self.aggs.is_empty() {
                    // c0 alone: each update's a is expanded by the switchers from its seed
                    let shape = Shape {
                        level: he.plan.level,
                        degree: 0,
                        scale: he.plan.scale,
                    };
                    self.aggs = (0..count)
                        .map(|_| Aggregator::new(&he.ctx, backend, shape, batch))
                        .collect::<Result<_, _>>()
                        .map_err(|e| RoundError::Aggregation(e.to_string()))?;
                }
                for (agg, ct) in self.aggs.iter_mut().zip(cts) {
                    agg.push(ct, weight)
                        .map_err(|e| RoundError::Aggregation(e.to_string()))?;
                }
            }
            (Update::Plain(chunks), None) => {
                let values: Vec<f32> = chunks.concat();
                if self.plain.is_empty() {
                    self.plain = vec![0.0; values.len()];
                }
                if self.plain.len() != values.len() {
                    return Err(RoundError::ValuesDiffer {
                        got: values.len(),
                        want: self.plain.len(),
                    });
                }
                for (s, v) in self.plain.iter_mut().zip(&values) {
                    *s += weight as f64 * f64::from(*v);
                }
            }
            _ => return Err(RoundError::Mode),
        }
        self.folded.insert(hospital, weight);
        self.bytes_up += bytes;
        Ok(())
    }

    /// Keeps what hospital `signed.hospital` signed of the update just folded.
    pub fn record_contribution(&mut self, signed: Contribution) {
        self.signed.insert(signed.hospital, signed);
    }

    /// The signed statements of the updates of `weights` (hospital, weight), as folded.
    pub fn contributions(&self, weights: &[(u32, u64)]) -> Result<Vec<Contribution>, RoundError> {
        weights
            .iter()
            .map(|(h, w)| match self.signed.get(h) {
                Some(c) if c.weight == *w && self.folded.get(h) == Some(w) => Ok(c.clone()),
                _ => Err(RoundError::Unsigned(*h)),
            })
            .collect()
    }

    /// Closes the sum (once) and opens switching attempt `attempt` by `active` for the
    /// contributions of `weights`, which must be every update folded: returns what the
    /// switchers are sent, those contributions as their hospitals signed them.
    pub fn close(
        &mut self,
        round: u64,
        he: &HeSetup,
        attempt: u32,
        weights: &[(u32, u64)],
        active: &[u32],
        now: Instant,
    ) -> Result<Vec<Contribution>, RoundError> {
        self.check_round(round)?;
        // the switchers switch exactly what they are named; the sum must hold nothing else
        if weights.len() != self.folded.len() {
            return Err(RoundError::Contributions {
                named: weights.len(),
                folded: self.folded.len(),
            });
        }
        let contributions = self.contributions(weights)?;
        if self.aggregate.is_none() {
            let t = Instant::now();
            let cts = std::mem::take(&mut self.aggs)
                .into_iter()
                .map(|a| a.finish())
                .collect::<Result<Vec<Ciphertext>, _>>()
                .map_err(|e| RoundError::Aggregation(e.to_string()))?;
            self.aggregate = Some(Arc::new(cts));
            self.aggregate_s = t.elapsed().as_secs_f64();
        }
        let count = self.shares_expected()?;
        let (digests, switched) = transcript::switch_inputs(round, &contributions, count);
        self.switch = Some(RoundSwitch::new(he, digests, switched, active.to_vec()));
        self.attempt = attempt;
        self.switch_acc.clear();
        self.switch_started = Some(now);
        Ok(contributions)
    }

    /// The level of this attempt's switching shares.
    pub fn share_level(&self) -> usize {
        self.switch.as_ref().map_or(0, RoundSwitch::level)
    }

    /// How many switching shares one hospital sends for the closed aggregate.
    pub fn shares_expected(&self) -> Result<usize, RoundError> {
        self.aggregate
            .as_ref()
            .map(|a| a.len())
            .ok_or(RoundError::NoAggregate)
    }

    /// Folds one hospital's switching shares for `attempt` of `round` (`bytes` on the wire).
    pub fn fold_shares(
        &mut self,
        round: u64,
        he: &HeSetup,
        attempt: u32,
        bytes: u64,
        shares: Vec<KeySwitchShare>,
    ) -> Result<(), RoundError> {
        self.check_round(round)?;
        if self.attempt != attempt {
            return Err(RoundError::AttemptChanged);
        }
        let want = self.shares_expected()?;
        if shares.len() != want {
            return Err(RoundError::ShareCount {
                got: shares.len(),
                want,
            });
        }
        let proto = combiner(he)?;
        let share_level = self.share_level();
        if self.switch_acc.is_empty() {
            self.switch_acc = vec![None; want];
        }
        // check every share before adding any: a refused stream leaves the sums untouched
        if let Some(s) = shares.iter().find(|s| s.level() != share_level) {
            return Err(RoundError::Aggregation(format!(
                "a switching share at level {}, where this round's are at {}",
                s.level(),
                share_level
            )));
        }
        for (slot, share) in self.switch_acc.iter_mut().zip(shares) {
            match slot {
                None => *slot = Some(share),
                Some(a) => proto
                    .aggregate(a, &share)
                    .map_err(|e| RoundError::Aggregation(e.to_string()))?,
            }
        }
        self.bytes_up += bytes;
        Ok(())
    }

    pub fn add_bytes_down(&mut self, bytes: u64) {
        self.bytes_down += bytes;
    }

    /// The round's result (the switched aggregate, or the plain sum) and its record, to commit
    /// at `now` (the wall clock's `committed_unix_ms`).
    pub fn result(
        &mut self,
        round: u64,
        he: Option<&HeSetup>,
        weights: &[(u32, u64)],
        switchers: &[u32],
        receivers: &[u32],
        (now, committed_unix_ms): (Instant, u64),
    ) -> Result<(StoredResult, RoundRecord), RoundError> {
        self.check_round(round)?;
        let total_weight: u64 = weights.iter().map(|w| w.1).sum();
        let items = match he {
            Some(he) => {
                let aggregate = self.aggregate.clone().ok_or(RoundError::NoAggregate)?;
                let proto = combiner(he)?;
                let switch = self.switch.as_ref().ok_or(RoundError::NoAggregate)?;
                let acc = std::mem::take(&mut self.switch_acc);
                let complete = acc.iter().filter(|s| s.is_some()).count();
                if acc.len() != aggregate.len() || complete != acc.len() {
                    return Err(RoundError::MissingShares {
                        got: complete,
                        want: aggregate.len(),
                    });
                }
                let mut items = Vec::with_capacity(acc.len());
                let shares = acc.into_iter().flatten();
                for (k, (ct, share)) in aggregate.iter().zip(shares).enumerate() {
                    // each switcher masked its share with an a_i the receivers expand
                    let switched = switch
                        .finalize(he, &proto, k, ct, share)
                        .map_err(|e| RoundError::Aggregation(e.to_string()))?;
                    items.push(wire::encode_switched_result(&he.ctx, &switched));
                }
                items
            }
            None => protocol::plain::encode_f64s(&self.plain),
        };
        // the result goes to each receiver after the commit: counted with the round it ends
        let result_bytes: usize = items.iter().map(Vec::len).sum();
        self.bytes_down += (result_bytes * receivers.len()) as u64;
        let result = StoredResult {
            round,
            total_weight,
            participants: weights.iter().map(|w| w.0).collect(),
            items,
        };
        let record = RoundRecord {
            round,
            participants: weights.to_vec(),
            total_weight,
            switchers: switchers.to_vec(),
            receivers: receivers.to_vec(),
            started_unix_ms: self.started_unix_ms,
            committed_unix_ms,
            aggregate_s: self.aggregate_s,
            switch_s: self
                .switch_started
                .map(|t| now.saturating_duration_since(t).as_secs_f64())
                .unwrap_or(0.0),
            bytes_up: self.bytes_up,
            bytes_down: self.bytes_down,
        };
        Ok((result, record))
    }
}

/// Sums and finishes switching shares.
fn combiner(he: &HeSetup) -> Result<ReceiveSwitch, RoundError> {
    RoundSwitch::combiner(he).map_err(|e| RoundError::Aggregation(e.to_string()))
}

#[cfg(test)]
#[path = "round_tests.rs"]
mod tests;
