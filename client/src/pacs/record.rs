//! The node's record of what it did with each series (redb, one ACID write per change): a
//! series is diagnosed once, one that failed for good is not fetched again, and a report that
//! was being stored when the node stopped is looked for in the PACS before anything is redone.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::error::PacsError;

/// Series Instance UID → [`Entry`] (JSON).
const SERIES: TableDefinition<&str, &[u8]> = TableDefinition::new("series");

/// Where a series stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// Its report was made and sent by STOW-RS; not yet known to be stored.
    Storing {
        report: String,
        summary: String,
        images: u32,
    },
    /// Its report is in the PACS.
    Diagnosed {
        report: String,
        summary: String,
        images: u32,
    },
    /// It cannot be diagnosed as it is (undecodable, too large, no images): not fetched again.
    Refused { reason: String },
}

/// One series' entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub study: String,
    #[serde(flatten)]
    pub state: State,
    /// Seconds since the Unix epoch of the last change.
    pub at: u64,
}

/// How many series are in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub diagnosed: usize,
    pub refused: usize,
    pub storing: usize,
}

/// The record file.
pub struct Record {
    db: Database,
    path: String,
}

impl Record {
    /// Opens (or creates) the record at `path`, its integrity checked.
    pub fn open(path: &Path) -> Result<Self, PacsError> {
        let shown = path.display().to_string();
        let err = |e: &dyn std::fmt::Display| PacsError::Record {
            path: shown.clone(),
            detail: e.to_string(),
        };
        let mut builder = Database::builder();
        builder.set_check_integrity_on_open(true);
        let db = builder.create(path).map_err(|e| err(&e))?;
        let txn = db.begin_write().map_err(|e| err(&e))?;
        txn.open_table(SERIES).map_err(|e| err(&e))?;
        txn.commit().map_err(|e| err(&e))?;
        Ok(Self { db, path: shown })
    }

    fn err(&self, e: impl std::fmt::Display) -> PacsError {
        PacsError::Record {
            path: self.path.clone(),
            detail: e.to_string(),
        }
    }

    pub fn get(&self, series: &str) -> Result<Option<Entry>, PacsError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(SERIES).map_err(|e| self.err(e))?;
        let Some(v) = t.get(series).map_err(|e| self.err(e))? else {
            return Ok(None);
        };
        serde_json::from_slice(v.value())
            .map(Some)
            .map_err(|e| self.err(format!("the entry of series {series}: {e}")))
    }

    /// Records `state` for `series` of `study`, durably, before returning.
    pub fn set(&self, series: &str, study: &str, state: State) -> Result<(), PacsError> {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let entry = Entry {
            study: study.to_string(),
            state,
            at,
        };
        let bytes = serde_json::to_vec(&entry).map_err(|e| self.err(e))?;
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        txn.open_table(SERIES)
            .map_err(|e| self.err(e))?
            .insert(series, bytes.as_slice())
            .map_err(|e| self.err(e))?;
        txn.commit().map_err(|e| self.err(e))
    }

    /// Every entry, by series UID.
    pub fn entries(&self) -> Result<Vec<(String, Entry)>, PacsError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(SERIES).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let entry = serde_json::from_slice(v.value()).map_err(|e| self.err(e))?;
            out.push((k.value().to_string(), entry));
        }
        Ok(out)
    }

    pub fn counts(&self) -> Result<Counts, PacsError> {
        let mut c = Counts::default();
        for (_, e) in self.entries()? {
            match e.state {
                State::Diagnosed { .. } => c.diagnosed += 1,
                State::Refused { .. } => c.refused += 1,
                State::Storing { .. } => c.storing += 1,
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_recorded_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pacs.redb");
        {
            let r = Record::open(&path).unwrap();
            let storing = State::Storing {
                report: "2.25.9".into(),
                summary: "a in 1 of 1 images".into(),
                images: 1,
            };
            r.set("1.2.3", "1.2", storing).unwrap();
            r.set(
                "1.2.4",
                "1.2",
                State::Refused {
                    reason: "no pixels".into(),
                },
            )
            .unwrap();
            r.set(
                "1.2.3",
                "1.2",
                State::Diagnosed {
                    report: "2.25.9".into(),
                    summary: "a in 1 of 1 images".into(),
                    images: 1,
                },
            )
            .unwrap();
        }
        let r = Record::open(&path).unwrap();
        assert!(matches!(
            r.get("1.2.3").unwrap().unwrap().state,
            State::Diagnosed { images: 1, .. }
        ));
        assert_eq!(
            r.counts().unwrap(),
            Counts {
                diagnosed: 1,
                refused: 1,
                storing: 0
            }
        );
        assert!(r.get("9.9").unwrap().is_none());
    }

    #[test]
    fn a_damaged_record_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pacs.redb");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let err = Record::open(&path).err().unwrap();
        assert!(err.to_string().contains("pacs.redb"), "{err}");
        assert!(err.is_fatal());
    }
}
