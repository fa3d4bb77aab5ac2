//! Each user's diagnoses on the node: `users/<name>/history.jsonl` (one JSON object a line,
//! appended) and the uploaded images beside it in `users/<name>/uploads/<id>.<png|jpg>`.
//! Lines are validated on read; a bad line is skipped and logged, never shown.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::error::{PortalError, create_private_dir};
use super::upload::ImageKind;
use crate::infer::InferOutcome;

const MAX_HISTORY_FILE: u64 = 64 << 20;
const MAX_CLASSES: usize = 1000;

/// One diagnosis as stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Diagnosis {
    /// 32 hex digits, also the upload's file stem.
    pub id: String,
    pub unix_ms: u64,
    pub file_name: String,
    /// `png` or `jpg`.
    pub image_ext: String,
    /// `local` (evaluated on this node) or `remote` (the inference server).
    pub mode: String,
    /// The inference mode the server answered in (released: mode b; collective: mode a);
    /// history written before it was recorded was all mode (b).
    #[serde(default)]
    pub inference: protocol::site::InferenceMode,
    pub model: String,
    pub classes: Vec<String>,
    pub probabilities: Vec<f64>,
    pub label: usize,
    pub class: String,
    /// The plaintext network's label, when the weights are on this node.
    pub plaintext_label: Option<usize>,
    pub ring_degree: usize,
    pub timings: StoredTimings,
    /// Keys and encrypted image that left the node (0 when evaluated here).
    pub bytes_left: u64,
    pub keys_bytes: u64,
    pub image_bytes: u64,
    pub result_bytes: u64,
}

/// Seconds per step.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StoredTimings {
    pub setup_s: f64,
    pub encrypt_s: f64,
    pub send_s: f64,
    pub evaluate_s: f64,
    pub decrypt_s: f64,
    pub total_s: f64,
}

/// Whether `id` is shaped like a diagnosis id (so it can name a file safely).
pub fn valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Diagnosis {
    /// From a one-image outcome.
    pub fn from_outcome(
        id: String,
        file_name: String,
        kind: ImageKind,
        outcome: &InferOutcome,
        unix_ms: u64,
    ) -> Option<Self> {
        let r = outcome.images.first()?;
        let remote = outcome.mode == "remote";
        let t = &outcome.timings;
        let b = &outcome.bytes;
        Some(Self {
            id,
            unix_ms,
            file_name,
            image_ext: kind.extension().into(),
            mode: outcome.mode.clone(),
            inference: outcome.inference,
            model: outcome.model.clone(),
            classes: outcome.classes.clone(),
            probabilities: r.probabilities.clone(),
            label: r.label,
            class: r.class.clone(),
            plaintext_label: r.plaintext_label,
            ring_degree: outcome.ring_degree,
            timings: StoredTimings {
                setup_s: t.setup_s,
                encrypt_s: t.encrypt_s,
                send_s: t.send_s,
                evaluate_s: t.evaluate_s,
                decrypt_s: t.decrypt_s,
                total_s: t.total_s,
            },
            bytes_left: if remote {
                b.keys_sent + b.images_sent
            } else {
                0
            },
            keys_bytes: b.keys_sent,
            image_bytes: b.images_sent,
            result_bytes: b.results_received,
        })
    }

    /// What a stored line must satisfy before it is shown.
    pub fn validate(&self) -> Result<(), String> {
        if !valid_id(&self.id) {
            return Err("bad id".into());
        }
        if ImageKind::from_extension(&self.image_ext).is_none() {
            return Err(format!("bad image extension {:?}", self.image_ext));
        }
        if !matches!(self.mode.as_str(), "local" | "remote") {
            return Err(format!("bad mode {:?}", self.mode));
        }
        let n = self.classes.len();
        if n == 0 || n > MAX_CLASSES || self.probabilities.len() != n || self.label >= n {
            return Err("classes, probabilities and label disagree".into());
        }
        if self
            .probabilities
            .iter()
            .any(|p| !p.is_finite() || !(0.0..=1.0).contains(p))
        {
            return Err("a probability outside [0, 1]".into());
        }
        if self.plaintext_label.is_some_and(|l| l >= n) {
            return Err("plaintext label out of range".into());
        }
        if self.file_name.chars().count() > 100 || self.file_name.chars().any(char::is_control) {
            return Err("bad file name".into());
        }
        Ok(())
    }
}

/// Where one user's history lives.
#[derive(Clone, Debug)]
pub struct UserFiles {
    dir: PathBuf,
}

impl UserFiles {
    /// `name` must already be validated (`users::validate_name`).
    pub fn new(portal_dir: &Path, name: &str) -> Self {
        Self {
            dir: portal_dir.join("users").join(name),
        }
    }

    fn history(&self) -> PathBuf {
        self.dir.join("history.jsonl")
    }

    pub fn uploads(&self) -> PathBuf {
        self.dir.join("uploads")
    }

    /// The stored upload of diagnosis `id`.
    pub fn upload_path(&self, id: &str, kind: ImageKind) -> PathBuf {
        self.uploads().join(format!("{id}.{}", kind.extension()))
    }

    /// Stores an uploaded image (before it is diagnosed, so remote mode can read it).
    pub fn save_upload(
        &self,
        id: &str,
        kind: ImageKind,
        bytes: &[u8],
    ) -> Result<PathBuf, PortalError> {
        create_private_dir(&self.uploads())?;
        let path = self.upload_path(id, kind);
        super::error::write_private(&path, bytes)?;
        Ok(path)
    }

    /// Appends one diagnosis.
    pub fn append(&self, d: &Diagnosis) -> Result<(), PortalError> {
        create_private_dir(&self.dir)?;
        let path = self.history();
        let mut line =
            serde_json::to_string(d).map_err(|e| PortalError::invalid(&path, e.to_string()))?;
        line.push('\n');
        let mut opts = std::fs::OpenOptions::new();
        opts.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut f = opts.open(&path).map_err(|e| PortalError::io(&path, e))?;
        // one write of the whole line, so a concurrent reader sees whole lines
        f.write_all(line.as_bytes())
            .map_err(|e| PortalError::io(&path, e))
    }

    /// The valid diagnoses, newest first.
    pub fn read(&self) -> Result<Vec<Diagnosis>, PortalError> {
        let path = self.history();
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(PortalError::io(&path, e)),
        };
        if meta.len() > MAX_HISTORY_FILE {
            return Err(PortalError::invalid(&path, "larger than 64 MiB"));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| PortalError::io(&path, e))?;
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Diagnosis>(line)
                .map_err(|e| e.to_string())
                .and_then(|d| d.validate().map(|()| d))
            {
                Ok(d) => out.push(d),
                Err(e) => {
                    warn!(file = %path.display(), line = i + 1, reason = %e, "history line skipped")
                }
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Diagnosis `id` of this user.
    pub fn find(&self, id: &str) -> Result<Option<Diagnosis>, PortalError> {
        if !valid_id(id) {
            return Ok(None);
        }
        Ok(self.read()?.into_iter().find(|d| d.id == id))
    }
}
