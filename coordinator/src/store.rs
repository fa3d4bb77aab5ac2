//! The coordinator's crash-safe state, in redb (ACID, copy-on-write): the federation, the
//! hospitals' public key material, the collective public key, the relayed (sealed) Shamir shares,
//! the consortium receiving key's public half, the committed rounds with the switched result of
//! the latest one, the metrics, and
//! an append-only audit log. A round is committed in one transaction with its results, so a
//! restart resumes after the last committed round: nothing lost, nothing twice.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use protocol::FederationId;
use protocol::message::{Phase, RoundMetrics};
use protocol::transcript::SealedShare;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const PARTIES: TableDefinition<u32, &[u8]> = TableDefinition::new("parties");
const SHAMIR: TableDefinition<(u32, u32), &[u8]> = TableDefinition::new("shamir");
const ROUNDS: TableDefinition<u64, &[u8]> = TableDefinition::new("rounds");
/// The latest round's result, under [`LATEST`], as stores before `recent_results` kept it
/// (read, never written).
const RESULTS: TableDefinition<u32, &[u8]> = TableDefinition::new("results");
const LATEST: u32 = 0;
/// The results of the last `[federation] keep_results` committed rounds, by round (one result
/// serves every hospital; a hospital catching up applies each in turn).
const RECENT: TableDefinition<u64, &[u8]> = TableDefinition::new("recent_results");
const METRICS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("metrics");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("state store: {0}")]
    Db(String),
    #[error("state store holds federation {stored}, not {given}")]
    OtherFederation { stored: String, given: String },
    #[error("state store record {0} is corrupt")]
    Corrupt(&'static str),
    #[error(
        "state store {path} is damaged ({why}): a page fails its checksum, so the file was changed outside HEAL. It was left as it was; restore it from a backup (or move it away to start the federation afresh)"
    )]
    Damaged { path: String, why: String },
    #[error(
        "the state store was written by an older HEAL (schema {found}, this one reads {want}): its setup holds no signed key material; provision a new federation (or move state.redb away to start this one afresh)"
    )]
    Schema { found: u32, want: u32 },
}

/// Version of the records' layout; 2: parties carry their certificate and signed key shares,
/// sealed shares their dealer's signature.
pub const SCHEMA: u32 = 2;

fn db_err<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Db(e.to_string())
}

/// A round and the (hospital, weight) pairs of the sum its switch began over.
pub type SwitchSet = (u64, Vec<(u32, u64)>);

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("state records always serialize")
}

fn dec<T: DeserializeOwned>(b: &[u8], what: &'static str) -> Result<T, StoreError> {
    postcard::from_bytes(b).map_err(|_| StoreError::Corrupt(what))
}

/// What the coordinator knows of one hospital.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PartyRecord {
    pub public_key_share: Option<Vec<u8>>,
    pub exchange_key: Option<[u8; 32]>,
    /// Its certificate (DER) and its signature over its key shares, relayed to every hospital.
    pub certificate: Vec<u8>,
    pub key_signature: Vec<u8>,
    /// Sent its sealed Shamir shares.
    pub dealt: bool,
    pub setup_done: bool,
}

/// A committed round.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    pub round: u64,
    /// (hospital, weight) of every update aggregated.
    pub participants: Vec<(u32, u64)>,
    pub total_weight: u64,
    /// Hospitals whose switching shares re-encrypted the aggregate.
    pub switchers: Vec<u32>,
    /// Hospitals that received the new model.
    pub receivers: Vec<u32>,
    pub started_unix_ms: u64,
    pub committed_unix_ms: u64,
    pub aggregate_s: f64,
    pub switch_s: f64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

/// The result of the latest committed round (the aggregate switched to the consortium receiving
/// key, or the plaintext sum), kept until the next commit so a reconnecting hospital can still
/// fetch it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredResult {
    pub round: u64,
    pub total_weight: u64,
    pub participants: Vec<u32>,
    pub items: Vec<Vec<u8>>,
}

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub unix_ms: u64,
    pub hospital: Option<u32>,
    pub round: u64,
    pub event: String,
    pub detail: String,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub struct Store {
    db: Database,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    /// Opens (or creates) the store for `federation`; a store of another federation is refused,
    /// and so is one whose pages fail their checksums ([`StoreError::Damaged`]).
    pub fn open(path: &Path, federation: FederationId) -> Result<Self, StoreError> {
        let db = Self::open_verified(path)?;
        let store = Self { db };
        let txn = store.db.begin_write().map_err(db_err)?;
        {
            let mut meta = txn.open_table(META).map_err(db_err)?;
            let stored = meta
                .get("federation")
                .map_err(db_err)?
                .map(|v| v.value().to_vec());
            match stored {
                Some(b) if b != federation.0 => {
                    return Err(StoreError::OtherFederation {
                        stored: b.iter().map(|x| format!("{x:02x}")).collect(),
                        given: federation.to_hex(),
                    });
                }
                Some(_) => {
                    let found = meta
                        .get("schema")
                        .map_err(db_err)?
                        .and_then(|v| <[u8; 4]>::try_from(v.value()).ok())
                        .map_or(1, u32::from_le_bytes);
                    if found != SCHEMA {
                        return Err(StoreError::Schema {
                            found,
                            want: SCHEMA,
                        });
                    }
                }
                None => {
                    meta.insert("federation", federation.0.as_slice())
                        .map_err(db_err)?;
                    meta.insert("schema", SCHEMA.to_le_bytes().as_slice())
                        .map_err(db_err)?;
                    meta.insert("phase", enc(&Phase::Setup).as_slice())
                        .map_err(db_err)?;
                }
            }
            // create every table, so readers never meet a missing one
            txn.open_table(PARTIES).map_err(db_err)?;
            txn.open_table(SHAMIR).map_err(db_err)?;
            txn.open_table(ROUNDS).map_err(db_err)?;
            txn.open_table(RESULTS).map_err(db_err)?;
            txn.open_table(RECENT).map_err(db_err)?;
            txn.open_table(METRICS).map_err(db_err)?;
            txn.open_table(AUDIT).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        Ok(store)
    }

    /// Every page of the committed trees is checked against its checksum as the file opens
    /// (a full read of the file at each start): a flipped bit is refused, never read as a record. redb
    /// commits in two phases, so a crash cannot leave the newest transaction half-written; one
    /// that fails its checksum was changed outside HEAL, and is refused as it is.
    fn open_verified(path: &Path) -> Result<Database, StoreError> {
        Self::verified(path, true)
    }

    /// [`Self::open_verified`]; `create`: make the file when it does not exist.
    fn verified(path: &Path, create: bool) -> Result<Database, StoreError> {
        let mut builder = Database::builder();
        builder.set_check_integrity_on_open(true);
        let db = if create {
            builder.create(path)
        } else {
            builder.open(path)
        };
        db.map_err(|e| match e {
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(why)) => {
                StoreError::Damaged {
                    path: path.display().to_string(),
                    why,
                }
            }
            other => db_err(other),
        })
    }

    /// Opens an existing store for `coordinator status` (any federation), checked as
    /// [`Store::open`] checks it: a damaged file is reported, never read as records.
    pub fn open_existing(path: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            db: Self::verified(path, false)?,
        })
    }

    /// Mode (a): the hash of the served state file that is current (set once it is written
    /// and synced, so a crash mid-write leaves the previous one, or none, current).
    pub fn served_state(&self) -> Result<Option<[u8; 32]>, StoreError> {
        Ok(self
            .get_meta("served-state")?
            .and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok()))
    }

    pub fn set_served_state(&self, hash: &[u8; 32]) -> Result<(), StoreError> {
        self.put_meta("served-state", hash)
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(META).map_err(db_err)?;
        Ok(t.get(key).map_err(db_err)?.map(|v| v.value().to_vec()))
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        txn.open_table(META)
            .map_err(db_err)?
            .insert(key, value)
            .map_err(db_err)?;
        txn.commit().map_err(db_err)
    }

    /// The sum whose switch a round began: the round and its (hospital, weight) pairs, stored before the first switch
    /// request leaves: switchers that switched it refuse any other sum of that round, so a
    /// restarted coordinator must redo the round over exactly these hospitals.
    pub fn switch_set(&self) -> Result<Option<SwitchSet>, StoreError> {
        self.get_meta("switch-set")?
            .map(|v| dec(&v, "switch-set"))
            .transpose()
    }

    pub fn set_switch_set(&self, round: u64, sum: &[(u32, u64)]) -> Result<(), StoreError> {
        self.put_meta("switch-set", &enc(&(round, sum)))
    }

    pub fn federation(&self) -> Result<Option<FederationId>, StoreError> {
        Ok(self
            .get_meta("federation")?
            .and_then(|b| b.try_into().ok())
            .map(FederationId))
    }

    pub fn phase(&self) -> Result<Phase, StoreError> {
        match self.get_meta("phase")? {
            Some(b) => dec(&b, "phase"),
            None => Ok(Phase::Setup),
        }
    }

    pub fn set_phase(&self, phase: Phase) -> Result<(), StoreError> {
        self.put_meta("phase", &enc(&phase))
    }

    /// Items of every update (ciphertexts, or plaintext chunks), once a majority of the
    /// hospitals announced the same model size.
    pub fn model_items(&self) -> Result<Option<u32>, StoreError> {
        Ok(self
            .get_meta("model_items")?
            .and_then(|b| <[u8; 4]>::try_from(b.as_slice()).ok())
            .map(u32::from_le_bytes))
    }

    pub fn set_model_items(&self, items: u32) -> Result<(), StoreError> {
        self.put_meta("model_items", &items.to_le_bytes())
    }

    pub fn collective_public_key(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_meta("collective_public_key")
    }

    pub fn set_collective_public_key(&self, bytes: &[u8]) -> Result<(), StoreError> {
        self.put_meta("collective_public_key", bytes)
    }

    /// The public half of the consortium receiving key, as the hospitals reported it.
    pub fn receive_key(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_meta("receive_key")
    }

    pub fn set_receive_key(&self, bytes: &[u8]) -> Result<(), StoreError> {
        self.put_meta("receive_key", bytes)
    }

    pub fn party(&self, index: u32) -> Result<PartyRecord, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(PARTIES).map_err(db_err)?;
        match t.get(index).map_err(db_err)? {
            Some(v) => dec(v.value(), "party"),
            None => Ok(PartyRecord::default()),
        }
    }

    pub fn parties(&self) -> Result<Vec<(u32, PartyRecord)>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(PARTIES).map_err(db_err)?;
        t.iter()
            .map_err(db_err)?
            .map(|r| {
                let (k, v) = r.map_err(db_err)?;
                Ok((k.value(), dec(v.value(), "party")?))
            })
            .collect()
    }

    pub fn put_party(&self, index: u32, rec: &PartyRecord) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        txn.open_table(PARTIES)
            .map_err(db_err)?
            .insert(index, enc(rec).as_slice())
            .map_err(db_err)?;
        txn.commit().map_err(db_err)
    }

    /// Stores the sealed shares `from` dealt, and marks it as having dealt, in one transaction.
    pub fn put_shamir(&self, from: u32, sealed: &[SealedShare]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = txn.open_table(SHAMIR).map_err(db_err)?;
            for s in sealed {
                let value = enc(&(&s.sealed, &s.signature));
                t.insert((from, s.peer), value.as_slice()).map_err(db_err)?;
            }
            let mut p = txn.open_table(PARTIES).map_err(db_err)?;
            let mut rec: PartyRecord = match p.get(from).map_err(db_err)? {
                Some(v) => dec(v.value(), "party")?,
                None => PartyRecord::default(),
            };
            rec.dealt = true;
            p.insert(from, enc(&rec).as_slice()).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    /// The sealed shares addressed to `to`, by dealer (`peer`), with the dealers' signatures.
    pub fn shamir_for(&self, to: u32) -> Result<Vec<SealedShare>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(SHAMIR).map_err(db_err)?;
        let mut out = Vec::new();
        for r in t.iter().map_err(db_err)? {
            let (k, v) = r.map_err(db_err)?;
            let (from, dest) = k.value();
            if dest == to {
                let (sealed, signature) = dec(v.value(), "sealed share")?;
                out.push(SealedShare {
                    peer: from,
                    sealed,
                    signature,
                });
            }
        }
        Ok(out)
    }

    /// Commits a round: its record, its result (the results of rounds `keep` or more before it
    /// dropped), the phase, and an audit entry, atomically.
    pub fn commit_round(
        &self,
        rec: &RoundRecord,
        result: &StoredResult,
        phase: Phase,
        keep: u64,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            txn.open_table(ROUNDS)
                .map_err(db_err)?
                .insert(rec.round, enc(rec).as_slice())
                .map_err(db_err)?;
            let mut recent = txn.open_table(RECENT).map_err(db_err)?;
            recent
                .insert(result.round, enc(result).as_slice())
                .map_err(db_err)?;
            let oldest = result.round.saturating_sub(keep.max(1) - 1);
            while recent
                .first()
                .map_err(db_err)?
                .is_some_and(|(k, _)| k.value() < oldest)
            {
                recent.pop_first().map_err(db_err)?;
            }
            drop(recent);
            // the single result of older stores, superseded
            txn.open_table(RESULTS)
                .map_err(db_err)?
                .remove(LATEST)
                .map_err(db_err)?;
            txn.open_table(META)
                .map_err(db_err)?
                .insert("phase", enc(&phase).as_slice())
                .map_err(db_err)?;
            let mut audit = txn.open_table(AUDIT).map_err(db_err)?;
            let seq = audit
                .last()
                .map_err(db_err)?
                .map(|(k, _)| k.value() + 1)
                .unwrap_or(0);
            let entry = AuditEntry {
                unix_ms: now_ms(),
                hospital: None,
                round: rec.round,
                event: "round-committed".into(),
                detail: format!(
                    "updates from {:?}, re-encrypted by {:?}, sent to {:?}",
                    rec.participants.iter().map(|p| p.0).collect::<Vec<_>>(),
                    rec.switchers,
                    rec.receivers
                ),
            };
            audit.insert(seq, enc(&entry).as_slice()).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    pub fn rounds(&self) -> Result<Vec<RoundRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(ROUNDS).map_err(db_err)?;
        t.iter()
            .map_err(db_err)?
            .map(|r| dec(r.map_err(db_err)?.1.value(), "round"))
            .collect()
    }

    pub fn latest_result(&self) -> Result<Option<StoredResult>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let recent = txn.open_table(RECENT).map_err(db_err)?;
        if let Some((_, v)) = recent.last().map_err(db_err)? {
            return dec(v.value(), "result").map(Some);
        }
        let t = txn.open_table(RESULTS).map_err(db_err)?;
        t.get(LATEST)
            .map_err(db_err)?
            .map(|v| dec(v.value(), "result"))
            .transpose()
    }

    /// The results of every committed round after `after`, in order; None when the first of
    /// them is no longer kept (or the later ones have a gap).
    pub fn results_after(&self, after: u64) -> Result<Option<Vec<StoredResult>>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let recent = txn.open_table(RECENT).map_err(db_err)?;
        let mut out: Vec<StoredResult> = Vec::new();
        for r in recent.range(after + 1..).map_err(db_err)? {
            let (k, v) = r.map_err(db_err)?;
            if k.value() != after + 1 + out.len() as u64 {
                return Ok(None);
            }
            let res: StoredResult = dec(v.value(), "result")?;
            if res.round != k.value() {
                return Err(StoreError::Corrupt("result"));
            }
            out.push(res);
        }
        if out.is_empty() {
            // an older store's single result
            return Ok(self
                .latest_result()?
                .filter(|r| r.round == after + 1)
                .map(|r| vec![r]));
        }
        Ok(Some(out))
    }

    pub fn put_metrics(&self, hospital: u32, m: &RoundMetrics) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        txn.open_table(METRICS)
            .map_err(db_err)?
            .insert((m.round, hospital), enc(m).as_slice())
            .map_err(db_err)?;
        txn.commit().map_err(db_err)
    }

    pub fn metrics(&self) -> Result<Vec<(u32, RoundMetrics)>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(METRICS).map_err(db_err)?;
        t.iter()
            .map_err(db_err)?
            .map(|r| {
                let (k, v) = r.map_err(db_err)?;
                Ok((k.value().1, dec(v.value(), "metrics")?))
            })
            .collect()
    }

    /// Appends to the audit log.
    pub fn audit(
        &self,
        hospital: Option<u32>,
        round: u64,
        event: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = txn.open_table(AUDIT).map_err(db_err)?;
            let seq = t
                .last()
                .map_err(db_err)?
                .map(|(k, _)| k.value() + 1)
                .unwrap_or(0);
            let e = AuditEntry {
                unix_ms: now_ms(),
                hospital,
                round,
                event: event.into(),
                detail: detail.into(),
            };
            t.insert(seq, enc(&e).as_slice()).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    pub fn audit_log(&self) -> Result<Vec<AuditEntry>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(AUDIT).map_err(db_err)?;
        t.iter()
            .map_err(db_err)?
            .map(|r| dec(r.map_err(db_err)?.1.value(), "audit"))
            .collect()
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
