//! `[pacs]` in a site's TOML: where the hospital's PACS answers DICOMweb, how HEAL signs in,
//! which series it diagnoses and how much it fetches. Secrets are read from files named here
//! (never written in the TOML), and every bound is checked before the first request.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dicom_core::Tag;
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_dictionary_std::StandardDataDictionary;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::error::PacsError;

/// Largest series (instances) HEAL fetches by default.
pub const DEFAULT_MAX_INSTANCES: u32 = 1_000;
/// Largest WADO-RS answer (one series) in MiB by default.
pub const DEFAULT_MAX_SERIES_MB: u64 = 512;

fn default_modalities() -> Vec<String> {
    vec!["CT".into()]
}
fn default_poll_s() -> u64 {
    60
}
fn default_retries() -> u32 {
    3
}
fn default_timeout_s() -> u64 {
    60
}
fn default_max_instances() -> u32 {
    DEFAULT_MAX_INSTANCES
}
fn default_max_series_mb() -> u64 {
    DEFAULT_MAX_SERIES_MB
}
fn default_max_series_per_poll() -> u32 {
    200
}

/// How HEAL signs in to the PACS.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthKind {
    /// No credentials (a PACS on a trusted network segment).
    #[default]
    None,
    /// HTTP basic: `username` and the password in `password_file`.
    Basic,
    /// HTTP bearer: the token in `token_file`.
    Bearer,
}

/// `[pacs]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacsConfig {
    /// The DICOMweb root, e.g. `https://pacs.hospital.org/dicom-web` (Orthanc's plugin:
    /// `http://HOST:8042/dicom-web`).
    pub url: String,
    #[serde(default)]
    pub auth: AuthKind,
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the password (its first line), readable only by the node's user.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// A file holding the bearer token (its first line).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// PEM certificates of the CAs the PACS's certificate is checked against (default: the
    /// public web roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Series of these modalities are diagnosed (each one QIDO-RS query).
    #[serde(default = "default_modalities")]
    pub modalities: Vec<String>,
    /// Body Part Examined to match (e.g. `ABDOMEN`), if any.
    #[serde(default)]
    pub body_part: Option<String>,
    /// Study Date to match, a DICOM date or range (`20260101-`, `20260101-20261231`).
    #[serde(default)]
    pub study_date: Option<String>,
    /// More QIDO-RS match keys: attribute keyword or 8 hex digits = value
    /// (`{ InstitutionName = "St Mary" }`).
    #[serde(default, rename = "match")]
    pub match_keys: BTreeMap<String, String>,
    /// Seconds between two polls.
    #[serde(default = "default_poll_s")]
    pub poll_s: u64,
    /// Attempts of each request that failed for a passing reason (refused connection, 5xx).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Seconds each request may take.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
    /// A series with more instances is not fetched (recorded as refused, with the count).
    #[serde(default = "default_max_instances")]
    pub max_instances: u32,
    /// A series whose WADO-RS answer is larger is not diagnosed.
    #[serde(default = "default_max_series_mb")]
    pub max_series_mb: u64,
    /// Series looked at per poll (the rest wait for the next poll).
    #[serde(default = "default_max_series_per_poll")]
    pub max_series_per_poll: u32,
}

/// The secret that goes with each request, read once at start.
#[derive(Clone)]
pub enum Credentials {
    None,
    Basic {
        username: String,
        password: Zeroizing<String>,
    },
    Bearer(Zeroizing<String>),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credentials::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

impl PacsConfig {
    /// A config for `url` with every other key at its default.
    pub fn for_url(url: &str) -> Self {
        toml::from_str(&format!("url = {url:?}")).expect("the defaults parse")
    }

    /// Checks every value (the secret and CA files are read when the client is made).
    pub fn check(&self) -> Result<(), PacsError> {
        let bad = |m: String| Err(PacsError::Config(m));
        let url = self.url.trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
            return bad(format!(
                "[pacs] url = {:?}: the DICOMweb root, http:// or https://",
                self.url
            ));
        }
        match self.auth {
            AuthKind::None if self.username.is_some() || self.password_file.is_some() => {
                return bad("[pacs] username/password_file given with auth = \"none\"".into());
            }
            AuthKind::Basic if self.username.is_none() || self.password_file.is_none() => {
                return bad("[pacs] auth = \"basic\" needs username and password_file".into());
            }
            AuthKind::Bearer if self.token_file.is_none() => {
                return bad("[pacs] auth = \"bearer\" needs token_file".into());
            }
            _ => {}
        }
        if self.modalities.is_empty() {
            return bad("[pacs] modalities is empty: name at least one (CT, CR, DX, …)".into());
        }
        for m in &self.modalities {
            if m.is_empty()
                || m.len() > 16
                || !m
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            {
                return bad(format!(
                    "[pacs] modalities: {m:?} is not a DICOM code string (upper-case letters, digits, _; at most 16)"
                ));
            }
            if m == "SR" {
                return bad(
                    "[pacs] modalities: SR is what HEAL writes, not what it diagnoses".into(),
                );
            }
        }
        for (key, value) in &self.match_keys {
            if attribute(key).is_none() {
                return bad(format!(
                    "[pacs] match: {key:?} is neither a DICOM attribute keyword nor 8 hex digits"
                ));
            }
            if value.is_empty() || value.len() > 64 {
                return bad(format!("[pacs] match.{key}: 1 to 64 characters"));
            }
        }
        if let Some(d) = &self.study_date
            && !is_date_range(d)
        {
            return bad(format!(
                "[pacs] study_date = {d:?}: YYYYMMDD, or a range YYYYMMDD-, -YYYYMMDD or YYYYMMDD-YYYYMMDD"
            ));
        }
        if !(1..=86_400).contains(&self.poll_s) {
            return bad(format!("[pacs] poll_s = {}: 1 to 86400", self.poll_s));
        }
        if !(1..=20).contains(&self.retries) {
            return bad(format!("[pacs] retries = {}: 1 to 20", self.retries));
        }
        if !(1..=3_600).contains(&self.timeout_s) {
            return bad(format!("[pacs] timeout_s = {}: 1 to 3600", self.timeout_s));
        }
        if !(1..=100_000).contains(&self.max_instances) {
            return bad(format!(
                "[pacs] max_instances = {}: 1 to 100000",
                self.max_instances
            ));
        }
        if !(1..=16_384).contains(&self.max_series_mb) {
            return bad(format!(
                "[pacs] max_series_mb = {}: 1 to 16384",
                self.max_series_mb
            ));
        }
        if !(1..=10_000).contains(&self.max_series_per_poll) {
            return bad(format!(
                "[pacs] max_series_per_poll = {}: 1 to 10000",
                self.max_series_per_poll
            ));
        }
        Ok(())
    }

    /// The root without a trailing slash.
    pub fn root(&self) -> &str {
        self.url.trim_end_matches('/')
    }

    /// Reads the secret files (relative to `base`).
    pub fn credentials(&self, base: &Path) -> Result<Credentials, PacsError> {
        Ok(match self.auth {
            AuthKind::None => Credentials::None,
            AuthKind::Basic => Credentials::Basic {
                username: self.username.clone().unwrap_or_default(),
                password: first_line(base, self.password_file.as_deref())?,
            },
            AuthKind::Bearer => Credentials::Bearer(first_line(base, self.token_file.as_deref())?),
        })
    }

    /// The CA file's path, relative to `base`.
    pub fn ca_path(&self, base: &Path) -> Option<PathBuf> {
        self.ca_file.as_ref().map(|p| base.join(p))
    }
}

fn first_line(base: &Path, file: Option<&Path>) -> Result<Zeroizing<String>, PacsError> {
    let Some(file) = file else {
        return Err(PacsError::Config("[pacs]: a secret file is missing".into()));
    };
    let path = base.join(file);
    let text =
        Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| {
            PacsError::Config(format!("[pacs] secret file {}: {e}", path.display()))
        })?);
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Err(PacsError::Config(format!(
            "[pacs] secret file {} is empty",
            path.display()
        )));
    }
    Ok(Zeroizing::new(line.to_string()))
}

/// The tag of a match key: an attribute keyword (`InstitutionName`) or 8 hex digits.
pub fn attribute(key: &str) -> Option<Tag> {
    if key.len() == 8 && key.bytes().all(|b| b.is_ascii_hexdigit()) {
        let g = u16::from_str_radix(&key[..4], 16).ok()?;
        let e = u16::from_str_radix(&key[4..], 16).ok()?;
        return Some(Tag(g, e));
    }
    StandardDataDictionary.by_name(key).map(|e| e.tag())
}

/// `YYYYMMDD`, `YYYYMMDD-`, `-YYYYMMDD` or `YYYYMMDD-YYYYMMDD`.
fn is_date_range(s: &str) -> bool {
    let date = |d: &str| d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit());
    match s.split_once('-') {
        None => date(s),
        Some((a, b)) => (a.is_empty() || date(a)) && (b.is_empty() || date(b)) && s.len() > 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Result<PacsConfig, String> {
        let cfg: PacsConfig = toml::from_str(&format!(
            "url = \"http://127.0.0.1:8042/dicom-web\"\n{extra}"
        ))
        .map_err(|e| e.to_string())?;
        cfg.check().map_err(|e| e.to_string())?;
        Ok(cfg)
    }

    #[test]
    fn defaults_are_ct_every_minute_with_bounds() {
        let c = parse("").unwrap();
        assert_eq!(c.modalities, ["CT"]);
        assert_eq!(
            (c.poll_s, c.retries, c.max_instances),
            (60, 3, DEFAULT_MAX_INSTANCES)
        );
        assert_eq!(c.root(), "http://127.0.0.1:8042/dicom-web");
    }

    #[test]
    fn bad_values_are_named_with_what_is_accepted() {
        for (extra, says) in [
            ("auth = \"basic\"", "needs username and password_file"),
            ("auth = \"bearer\"", "needs token_file"),
            ("modalities = []", "modalities is empty"),
            ("modalities = [\"ct scan\"]", "not a DICOM code string"),
            ("modalities = [\"SR\"]", "SR is what HEAL writes"),
            ("study_date = \"2026\"", "YYYYMMDD"),
            ("poll_s = 0", "poll_s = 0: 1 to 86400"),
            ("max_series_mb = 100000", "1 to 16384"),
            (
                "match = { NoSuchKeyword = \"x\" }",
                "neither a DICOM attribute keyword",
            ),
            ("unknown = 1", "unknown field"),
        ] {
            let err = parse(extra).unwrap_err();
            assert!(err.contains(says), "{extra}: {err}");
        }
        assert!(parse("match = { InstitutionName = \"St Mary\", \"00081030\" = \"CT*\" }").is_ok());
        assert!(parse("study_date = \"20260101-\"").is_ok());
        let mut c = PacsConfig::for_url("ftp://pacs");
        assert!(
            c.check()
                .unwrap_err()
                .to_string()
                .contains("http:// or https://")
        );
        c.url = "https://pacs.example.org/dicom-web/".into();
        assert_eq!(c.root(), "https://pacs.example.org/dicom-web");
    }

    #[test]
    fn secrets_come_from_files_and_are_not_printed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret\nignored\n").unwrap();
        let c = parse("auth = \"basic\"\nusername = \"heal\"\npassword_file = \"pw\"").unwrap();
        let creds = c.credentials(dir.path()).unwrap();
        assert!(
            matches!(&creds, Credentials::Basic { password, .. } if password.as_str() == "s3cret")
        );
        assert!(!format!("{creds:?}").contains("s3cret"));
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        let c = parse("auth = \"bearer\"\ntoken_file = \"empty\"").unwrap();
        assert!(
            c.credentials(dir.path())
                .unwrap_err()
                .to_string()
                .contains("is empty")
        );
    }
}
