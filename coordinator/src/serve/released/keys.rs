//! A requester's evaluation keys, sent once and kept: [`ServedModel::begin_keys`] checks a key
//! header against the plan before anything is allocated, [`PendingKeys::push`] decodes and checks
//! each key as it arrives and hashes it, and [`PendingKeys::finish`] refuses a short stream or a
//! set whose hash is not the id it announced. [`KeyCache`] keeps checked sets per requester,
//! bounded in bytes and in sets, least recently used first out.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use he_agg::ckks::{GaloisKeys, RelinearizationKey, wire};
use he_agg::infer::{EvaluationKeys, InferError, Placement, Resident};
use protocol::Party;
use protocol::serve::released::{InferKeys, KeysId, MAX_GALOIS_KEYS};

use super::model::ServedModel;
use super::refusal::{Refusal, hex};

/// A checked set of evaluation keys.
pub struct KeySet {
    pub id: KeysId,
    pub keys: EvaluationKeys,
    /// Encoded bytes (what the cache bounds).
    pub bytes: u64,
    /// Time spent decoding and checking them.
    pub validate: Duration,
    /// Where these keys are evaluated, once decided: `Some(None)` on the CPU (the placement's,
    /// or `auto`'s fallback when the device could not take them), `Some(Some(_))` the model and
    /// these keys on the device (dropped with the set when the cache lets it go).
    resident: Mutex<Option<Option<Arc<dyn Resident>>>>,
}

impl KeySet {
    /// The model and these keys resident where `model` is placed: uploaded when the keys
    /// arrive (or by the first request that needs them), then kept. `None`: the CPU.
    pub fn resident(&self, model: &ServedModel) -> Result<Option<Arc<dyn Resident>>, InferError> {
        if matches!(model.placement(), Placement::Cpu) {
            return Ok(None);
        }
        // held while uploading, so that concurrent first requests upload once
        let mut slot = self.resident.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(decided) = slot.as_ref() {
            return Ok(decided.clone());
        }
        let t = Instant::now();
        let placed: Option<Arc<dyn Resident>> = model
            .placement()
            .open(model.model(), &self.keys)?
            .map(Arc::from);
        if placed.is_some() {
            tracing::info!(
                device = model.placement().name(),
                seconds = t.elapsed().as_secs_f64(),
                "a requester's keys and the model uploaded"
            );
        }
        *slot = Some(placed.clone());
        Ok(placed)
    }
}

/// A key stream whose header was accepted.
pub struct PendingKeys {
    model: Arc<ServedModel>,
    header: InferKeys,
    planned: BTreeSet<u64>,
    rlk: Option<RelinearizationKey>,
    galois: GaloisKeys,
    received: u64,
    bytes: u64,
    hasher: blake3::Hasher,
    validate: Duration,
}

impl ServedModel {
    /// Checks a key header against the plan; nothing is allocated for a refused one.
    pub fn begin_keys(self: &Arc<Self>, header: &InferKeys) -> Result<PendingKeys, Refusal> {
        let spec = self.plan().spec();
        let want = spec.fingerprint();
        if header.fingerprint != want {
            return Err(Refusal::Fingerprint {
                got: hex(&header.fingerprint),
                want: hex(&want),
            });
        }
        if header.relinearization != spec.needs_relinearization() {
            return Err(Refusal::Relinearization {
                sent: header.relinearization,
                needed: spec.needs_relinearization(),
            });
        }
        let steps = spec.galois_steps();
        if header.galois_keys > MAX_GALOIS_KEYS || header.galois_keys as usize != steps.len() {
            return Err(Refusal::GaloisCount {
                got: header.galois_keys,
                want: steps.len(),
            });
        }
        let rl = self.context().rlwe();
        let planned = steps
            .iter()
            .map(|&s| rl.galois_element_for_rotation(s))
            .collect();
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"HEAL evaluation keys v1");
        Ok(PendingKeys {
            model: self.clone(),
            header: header.clone(),
            planned,
            rlk: None,
            galois: GaloisKeys::new(),
            received: 0,
            bytes: 0,
            hasher,
            validate: Duration::ZERO,
        })
    }
}

impl PendingKeys {
    /// Items still expected.
    pub fn remaining(&self) -> u64 {
        self.header.items() - self.received
    }

    /// Decodes and checks the next key.
    pub fn push(&mut self, item: &[u8]) -> Result<(), Refusal> {
        let announced = self.header.items();
        if self.received >= announced {
            return Err(Refusal::TooManyItems { announced });
        }
        let t = Instant::now();
        let index = self.received;
        let ctx = self.model.context().clone();
        let item_err = |what, source| Refusal::Item {
            index,
            what,
            source,
        };
        if index < u64::from(self.header.relinearization) {
            let rlk = wire::decode_relinearization_key(&ctx, item)
                .map_err(|e| item_err("relinearization key", e))?;
            self.rlk = Some(rlk);
        } else {
            let key = wire::decode_galois_key(&ctx, item).map_err(|e| item_err("Galois key", e))?;
            let element = key.galois_element;
            if !self.planned.contains(&element) {
                return Err(Refusal::UnplannedGaloisKey { index, element });
            }
            if self.galois.get(element).is_some() {
                return Err(Refusal::DuplicateGaloisKey { index, element });
            }
            self.galois.insert(key);
        }
        self.hasher.update(&(item.len() as u64).to_le_bytes());
        self.hasher.update(item);
        self.bytes += item.len() as u64;
        self.received += 1;
        self.validate += t.elapsed();
        Ok(())
    }

    /// The key set once every announced key has arrived and its id is the one announced.
    pub fn finish(self) -> Result<KeySet, Refusal> {
        let announced = self.header.items();
        if self.received != announced {
            return Err(Refusal::MissingItems {
                got: self.received,
                announced,
            });
        }
        let id = *self.hasher.finalize().as_bytes();
        if id != self.header.keys {
            return Err(Refusal::KeysId {
                got: hex(&id),
                announced: hex(&self.header.keys),
            });
        }
        Ok(KeySet {
            id,
            keys: EvaluationKeys {
                relinearization: self.rlk,
                galois: self.galois,
            },
            bytes: self.bytes,
            validate: self.validate,
            resident: Mutex::new(None),
        })
    }
}

/// Checked key sets by requester and id, bounded; least recently used first out.
pub struct KeyCache {
    max_bytes: u64,
    max_sets: usize,
    sets: HashMap<(Party, KeysId), (Arc<KeySet>, u64)>,
    bytes: u64,
    tick: u64,
}

impl KeyCache {
    /// At most `max_bytes` of encoded keys and `max_sets` sets.
    pub fn new(max_bytes: u64, max_sets: usize) -> Self {
        Self {
            max_bytes,
            max_sets: max_sets.max(1),
            sets: HashMap::new(),
            bytes: 0,
            tick: 0,
        }
    }

    /// Keeps `set` for `who`, evicting the least recently used sets to stay in bounds. A set
    /// larger than the whole budget is still kept alone (a requester must be served).
    pub fn insert(&mut self, who: Party, set: KeySet) -> Arc<KeySet> {
        let set = Arc::new(set);
        self.tick += 1;
        if let Some((old, _)) = self.sets.remove(&(who, set.id)) {
            self.bytes -= old.bytes;
        }
        while !self.sets.is_empty()
            && (self.bytes + set.bytes > self.max_bytes || self.sets.len() >= self.max_sets)
        {
            let oldest = self
                .sets
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| *k)
                .expect("not empty");
            if let Some((old, _)) = self.sets.remove(&oldest) {
                self.bytes -= old.bytes;
            }
        }
        self.bytes += set.bytes;
        self.sets.insert((who, set.id), (set.clone(), self.tick));
        set
    }

    /// The set `who` sent under `id`, if still kept.
    pub fn get(&mut self, who: Party, id: &KeysId) -> Option<Arc<KeySet>> {
        self.tick += 1;
        let tick = self.tick;
        self.sets.get_mut(&(who, *id)).map(|(set, t)| {
            *t = tick;
            set.clone()
        })
    }

    /// Sets kept.
    pub fn len(&self) -> usize {
        self.sets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// Encoded bytes kept.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}
