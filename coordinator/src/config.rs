//! The federation TOML: what the coordinator reads itself (`[federation]`, `[he]`,
//! `[coordinator]`) and the
//! sections it passes on to every hospital's site TOML unread (`[dataset]`, `[partition]`,
//! `[model]`, `[train]`, `[server]`, `[node]`): the hospital node validates those, strictly, at
//! start.
//! Unknown keys and unknown sections are errors. Every key is documented in
//! `configs/federation-example.toml`.

use std::path::Path;

use anyhow::{Context, bail};
use he_agg::aggregate::HeSettings;
use serde::{Deserialize, Serialize};

/// `[federation]`: the consortium's shape and the rounds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationSection {
    /// A name for logs and output directories.
    pub name: String,
    /// Number of hospitals N.
    pub hospitals: u32,
    /// Hospitals needed to re-encrypt an aggregate (t of N). Default: ⌊N/2⌋ + 1.
    #[serde(default)]
    pub threshold: Option<u32>,
    /// Training rounds.
    pub rounds: u64,
    /// Least number of updates a round aggregates (quorum). Default: N.
    #[serde(default)]
    pub min_hospitals: Option<u32>,
    /// Seconds a round waits for updates beyond the quorum before aggregating what it has.
    #[serde(default = "default_round_timeout")]
    pub round_timeout_s: u64,
    /// Address hospitals connect to (written into their site TOML).
    #[serde(default = "default_address")]
    pub coordinator_address: String,
    /// Address the coordinator listens on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// How the final model is served, written into every site TOML as the one mode its
    /// requesters accept: "released" (mode b, default) or "collective" (mode a).
    #[serde(default)]
    pub inference: protocol::site::InferenceMode,
}

fn default_round_timeout() -> u64 {
    600
}
fn default_address() -> String {
    "127.0.0.1:7443".into()
}
fn default_listen() -> String {
    "0.0.0.0:7443".into()
}

/// `[coordinator]`: how the coordinator itself runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorSection {
    /// Where ciphertexts are added: "auto" (a CUDA GPU when one loads, else the CPU), "cpu" or
    /// "cuda" (a GPU or an error). `coordinator run --backend` overrides it.
    #[serde(default)]
    pub backend: he_agg::aggregate::BackendChoice,
}

/// The sections passed to hospitals as they are.
pub const SITE_SECTIONS: [&str; 6] = ["dataset", "partition", "model", "train", "server", "node"];

/// A parsed federation TOML.
#[derive(Clone, Debug, PartialEq)]
pub struct FederationConfig {
    pub federation: FederationSection,
    pub he: HeSettings,
    /// `[coordinator]`.
    pub coordinator: CoordinatorSection,
    /// The hospital sections, as written.
    pub site_sections: toml::Table,
    /// `[simulate]`, read by `coordinator simulate` only.
    pub simulate: SimulateSection,
}

/// `[simulate]`: how `coordinator simulate` runs the consortium on one machine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulateSection {
    /// Compute threads per hospital process (the machine's cores are shared by all of them).
    #[serde(default = "one")]
    pub threads_per_hospital: usize,
    /// Give up after this many seconds in all.
    #[serde(default = "default_simulate_timeout")]
    pub timeout_s: u64,
}

fn one() -> usize {
    1
}
fn default_simulate_timeout() -> u64 {
    6 * 3600
}

impl Default for SimulateSection {
    fn default() -> Self {
        Self {
            threads_per_hospital: 1,
            timeout_s: default_simulate_timeout(),
        }
    }
}

impl FederationConfig {
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        let mut table: toml::Table = toml::from_str(text).context("not valid TOML")?;
        let federation: FederationSection = table
            .remove("federation")
            .context("missing [federation] section")?
            .try_into()
            .context("in [federation]")?;
        let he: HeSettings = match table.remove("he") {
            Some(v) => v.try_into().context("in [he]")?,
            None => HeSettings::default(),
        };
        let coordinator: CoordinatorSection = match table.remove("coordinator") {
            Some(v) => v.try_into().context("in [coordinator]")?,
            None => CoordinatorSection::default(),
        };
        let simulate: SimulateSection = match table.remove("simulate") {
            Some(v) => v.try_into().context("in [simulate]")?,
            None => SimulateSection::default(),
        };
        let mut site_sections = toml::Table::new();
        for (key, value) in table {
            if !SITE_SECTIONS.contains(&key.as_str()) {
                bail!(
                    "unknown section [{key}]: a federation config has [federation], [he], [coordinator], [simulate] and {}",
                    SITE_SECTIONS.map(|s| format!("[{s}]")).join(", ")
                );
            }
            if !value.is_table() {
                bail!("[{key}] must be a table");
            }
            site_sections.insert(key, value);
        }
        if !site_sections.contains_key("dataset") {
            bail!("missing [dataset] section");
        }
        let cfg = Self {
            federation,
            he,
            coordinator,
            site_sections,
            simulate,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let f = &self.federation;
        if f.hospitals == 0 || f.hospitals > 1000 {
            bail!(
                "[federation] hospitals = {} must be in 1..=1000",
                f.hospitals
            );
        }
        let t = self.threshold();
        if t == 0 || t > f.hospitals {
            bail!(
                "[federation] threshold = {t} must be in 1..={}",
                f.hospitals
            );
        }
        let q = self.min_hospitals();
        if q == 0 || q > f.hospitals {
            bail!(
                "[federation] min_hospitals = {q} must be in 1..={}",
                f.hospitals
            );
        }
        if q < t && !self.he.plaintext {
            bail!(
                "[federation] min_hospitals = {q} is below the threshold {t}: a round could not be re-encrypted"
            );
        }
        if f.rounds == 0 {
            bail!("[federation] rounds must be at least 1");
        }
        if !(self.he.precision > 0.0 && self.he.max_update > 0.0 && self.he.max_total_weight >= 1.0)
        {
            bail!("[he] precision and max_update must be positive, max_total_weight at least 1");
        }
        if self.he.lambda < he_agg::multiparty::flooding::MIN_STATISTICAL_SECURITY {
            bail!(
                "[he] lambda = {} is below the 30-bit minimum",
                self.he.lambda
            );
        }
        if self.simulate.threads_per_hospital == 0 {
            bail!("[simulate] threads_per_hospital must be at least 1");
        }
        Ok(())
    }

    pub fn threshold(&self) -> u32 {
        self.federation
            .threshold
            .unwrap_or(self.federation.hospitals / 2 + 1)
    }

    pub fn min_hospitals(&self) -> u32 {
        self.federation
            .min_hospitals
            .unwrap_or(self.federation.hospitals)
    }
}

/// The smallest federation config (3 hospitals, 1 round, BreastMNIST), for unit tests.
#[cfg(test)]
pub(crate) const UNIT_CONFIG: &str = r#"
[federation]
name = "unit"
hospitals = 3
rounds = 1
[dataset]
kind = "medmnist"
name = "breastmnist"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
[federation]
name = "t"
hospitals = 5
rounds = 3
[dataset]
kind = "medmnist"
name = "breastmnist"
[model]
activation = "square"
"#;

    #[test]
    fn parses_and_defaults() {
        let c = FederationConfig::from_toml(OK).unwrap();
        assert_eq!(c.threshold(), 3);
        assert_eq!(c.min_hospitals(), 5);
        assert!(!c.he.plaintext);
        assert!(c.site_sections.contains_key("model"));
        assert_eq!(
            c.coordinator.backend,
            he_agg::aggregate::BackendChoice::Auto
        );
    }

    #[test]
    fn the_backend_key_is_read_and_checked() {
        let c = FederationConfig::from_toml(&format!("{OK}\n[coordinator]\nbackend = \"cpu\""))
            .unwrap();
        assert_eq!(c.coordinator.backend, he_agg::aggregate::BackendChoice::Cpu);
        assert!(!c.site_sections.contains_key("coordinator"));
        let e = FederationConfig::from_toml(&format!("{OK}\n[coordinator]\nbackend = \"gpu\""))
            .unwrap_err();
        assert!(format!("{e:#}").contains("in [coordinator]"), "{e:#}");
        let e =
            FederationConfig::from_toml(&format!("{OK}\n[coordinator]\ngpu = true")).unwrap_err();
        assert!(format!("{e:#}").contains("unknown field `gpu`"), "{e:#}");
    }

    #[test]
    fn unknown_keys_and_sections_are_errors() {
        let e = FederationConfig::from_toml(&OK.replace("rounds = 3", "rounds = 3\nround = 4"))
            .unwrap_err();
        assert!(format!("{e:#}").contains("unknown field `round`"), "{e:#}");
        let e = FederationConfig::from_toml(&format!("{OK}\n[extra]\na = 1")).unwrap_err();
        assert!(
            format!("{e:#}").contains("unknown section [extra]"),
            "{e:#}"
        );
        let e = FederationConfig::from_toml(
            &OK.replace("hospitals = 5", "hospitals = 5\nthreshold = 6"),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("threshold"), "{e:#}");
        let e = FederationConfig::from_toml(&OK.replace("[dataset]", "[datasets]")).unwrap_err();
        assert!(
            format!("{e:#}").contains("unknown section [datasets]"),
            "{e:#}"
        );
        let e = FederationConfig::from_toml(&format!("{OK}\n[he]\nlambda = 20")).unwrap_err();
        assert!(format!("{e:#}").contains("30-bit"), "{e:#}");
    }
}

#[cfg(test)]
mod shipped_configs {
    use super::*;

    /// Every federation config in `configs/` parses (the built-in default included).
    #[test]
    fn shipped_federation_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir)
            .unwrap()
            .chain(std::fs::read_dir(dir.join("deployment")).unwrap())
        {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if path.extension().is_some_and(|e| e == "toml") && text.contains("[federation]") {
                FederationConfig::from_file(&path)
                    .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                n += 1;
            }
        }
        assert!(n >= 4, "found {n} federation configs");
        FederationConfig::from_toml(crate::simulate::DEFAULT_CONFIG).unwrap();
    }
}
