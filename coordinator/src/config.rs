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
    /// Committed rounds whose results the coordinator keeps, so that a hospital cut off for up
    /// to this many rounds catches up by applying each in turn (one result is about one
    /// update's size: 4.5 MB for the small federations, 32 × that on disk at most).
    #[serde(default = "default_keep_results")]
    pub keep_results: u64,
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
fn default_keep_results() -> u64 {
    32
}
fn default_address() -> String {
    "127.0.0.1:7443".into()
}
fn default_listen() -> String {
    "0.0.0.0:7443".into()
}

/// `[coordinator]`: how the coordinator itself runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorSection {
    /// Where ciphertexts are added: "auto" (a CUDA GPU when one loads, else the CPU), "cpu" or
    /// "cuda" (a GPU or an error). `coordinator run --backend` overrides it.
    #[serde(default)]
    pub backend: he_agg::aggregate::BackendChoice,
    /// Where `GET /metrics` answers for Prometheus (default 127.0.0.1:9464, loopback only),
    /// or "off".
    #[serde(default = "default_metrics")]
    pub metrics: String,
    /// Seconds `/metrics` keeps answering after the federation finished, so that Prometheus
    /// scrapes the run's final figures (and its alert rules see `heal_finished` = 1 before the
    /// process ends) instead of the last ones its interval happened to catch. At most 3,600.
    #[serde(default)]
    pub metrics_linger_s: u64,
}

fn default_metrics() -> String {
    "127.0.0.1:9464".into()
}

impl Default for CoordinatorSection {
    fn default() -> Self {
        Self {
            backend: Default::default(),
            metrics: default_metrics(),
            metrics_linger_s: 0,
        }
    }
}

impl CoordinatorSection {
    /// The section's values checked: the metrics address parses, the linger is bounded.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.metrics_linger_s > ops::prometheus::MAX_LINGER_S {
            anyhow::bail!(
                "[coordinator] metrics_linger_s = {} is more than {} s",
                self.metrics_linger_s,
                ops::prometheus::MAX_LINGER_S
            );
        }
        self.metrics_addr().map(|_| ())
    }

    /// How long `/metrics` stays up once the federation finished.
    pub fn linger(&self) -> std::time::Duration {
        ops::prometheus::linger(&self.metrics, self.metrics_linger_s)
    }

    /// The metrics address, `None` when "off".
    pub fn metrics_addr(&self) -> anyhow::Result<Option<std::net::SocketAddr>> {
        if self.metrics == "off" {
            return Ok(None);
        }
        self.metrics.parse().map(Some).with_context(|| {
            format!(
                "[coordinator] metrics = {:?} is neither an address such as \"127.0.0.1:9464\" nor \"off\"",
                self.metrics
            )
        })
    }
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
    /// `[privacy]`, with `quorum` and `rounds` filled in: written so into every site TOML.
    pub privacy: privacy::PrivacyConfig,
    /// The config file's folder: relative paths in it (`[model.init]`'s backbone) start here.
    pub config_dir: std::path::PathBuf,
}

/// `[simulate]`: how `coordinator simulate` runs the consortium on one machine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulateSection {
    /// Compute threads per hospital process, for training and encryption alike (the machine's
    /// cores are shared by all of them).
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

/// The folder of a config file (`.` for a bare file name).
pub fn config_dir(path: &Path) -> std::path::PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| std::path::PathBuf::from("."))
}

impl FederationConfig {
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut cfg = Self::from_toml(&text).with_context(|| format!("in {}", path.display()))?;
        cfg.config_dir = config_dir(path);
        Ok(cfg)
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
        let mut privacy: privacy::PrivacyConfig = match table.remove("privacy") {
            Some(v) => v.try_into().context("in [privacy]")?,
            None => privacy::PrivacyConfig::default(),
        };
        let quorum = federation.min_hospitals.unwrap_or(federation.hospitals);
        privacy.quorum.get_or_insert(quorum);
        privacy.rounds.get_or_insert(federation.rounds);
        let mut site_sections = toml::Table::new();
        for (key, value) in table {
            if !SITE_SECTIONS.contains(&key.as_str()) {
                bail!(
                    "unknown section [{key}]: a federation config has [federation], [he], [coordinator], [simulate], [privacy] and {}",
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
            privacy,
            config_dir: std::path::PathBuf::from("."),
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
        if !self.he.plaintext && 2 * t <= f.hospitals {
            bail!(
                "[federation] threshold = {t} of {} hospitals: two disjoint sets of {t} could each \
                 switch a different sum of one round, and their difference is one hospital's \
                 update; the threshold must exceed half the hospitals (here at least {})",
                f.hospitals,
                f.hospitals / 2 + 1
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
        if !(1..=10_000).contains(&f.keep_results) {
            bail!(
                "[federation] keep_results = {} must be in 1..=10000",
                f.keep_results
            );
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
        self.coordinator.check()?;
        if self.simulate.threads_per_hospital == 0 {
            bail!("[simulate] threads_per_hospital must be at least 1");
        }
        if let Some(q) = self.privacy.quorum
            && self.privacy.mode == privacy::Mode::Hospital
            && q < self.min_hospitals()
        {
            // a quorum above min_hospitals only adds noise; below it a round could sum less
            // noise than the guarantee assumes
            bail!(
                "[privacy] quorum = {q} is below [federation] min_hospitals = {}",
                self.min_hospitals()
            );
        }
        let scaffold = (self.site_sections.get("train"))
            .and_then(|t| t.get("scaffold"))
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        self.privacy.allows_scaffold(scaffold)?;
        let plan = self.privacy_plan()?;
        if self.privacy.mode == privacy::Mode::Hospital
            && self.privacy.clip + 12.0 * plan.sigma_each() > self.he.max_update
        {
            bail!(
                "[privacy] clip {} plus 12 standard deviations of a hospital's noise ({:.3}) exceed \
                 [he] max_update = {}: raise max_update or lower clip",
                self.privacy.clip,
                12.0 * plan.sigma_each(),
                self.he.max_update
            );
        }
        Ok(())
    }

    /// The run's privacy plan as the coordinator reports it (patient mode: with the batch size
    /// and epochs of `[train]`, examples unknown here: see [`FederationConfig::patient_plan`]).
    pub fn privacy_plan(&self) -> anyhow::Result<privacy::Plan> {
        self.patient_plan(1)
    }

    /// The plan of a hospital with `examples` training examples (patient mode; the others do
    /// not depend on it).
    pub fn patient_plan(&self, examples: u64) -> anyhow::Result<privacy::Plan> {
        let train = self.site_sections.get("train").and_then(|t| t.as_table());
        let int = |k: &str, d: i64| {
            train
                .and_then(|t| t.get(k))
                .and_then(|v| v.as_integer())
                .unwrap_or(d)
                .max(1) as u64
        };
        let batch = self.privacy.batch_size.unwrap_or(int("batch_size", 128));
        Ok(self.privacy.plan(self.privacy.run_shape(
            self.privacy.rounds.unwrap_or(self.federation.rounds),
            self.privacy.quorum.unwrap_or(self.min_hospitals()),
            examples.max(batch),
            int("batch_size", 128),
            int("epochs", 10),
        ))?)
    }

    /// Rounds the run makes: the configured ones, fewer if the privacy budget ends sooner
    /// (hospital mode; in patient mode each hospital stops at its own budget).
    pub fn rounds(&self) -> u64 {
        match self.privacy.mode {
            privacy::Mode::Hospital => self
                .privacy_plan()
                .map(|p| p.rounds_allowed.min(self.federation.rounds))
                .unwrap_or(self.federation.rounds),
            _ => self.federation.rounds,
        }
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
    fn metrics_linger_is_read_and_bounded() {
        let c = FederationConfig::from_toml(&format!("{OK}\n[coordinator]\nmetrics_linger_s = 30"))
            .unwrap();
        assert_eq!(c.coordinator.metrics_linger_s, 30);
        assert_eq!(
            FederationConfig::from_toml(OK)
                .unwrap()
                .coordinator
                .metrics_linger_s,
            0
        );
        let e =
            FederationConfig::from_toml(&format!("{OK}\n[coordinator]\nmetrics_linger_s = 3601"))
                .unwrap_err();
        assert!(format!("{e:#}").contains("more than 3600 s"), "{e:#}");
    }

    #[test]
    fn scaffold_is_refused_under_privacy_whose_noise_would_not_cover_its_variates() {
        let scaffold = format!("{OK}\n[train]\nscaffold = true\nbatch_size = 16");
        FederationConfig::from_toml(&scaffold).unwrap();
        let e = FederationConfig::from_toml(&format!(
            "{scaffold}\n[privacy]\nmode = \"hospital\"\ntarget_epsilon = 8.0"
        ))
        .unwrap_err();
        assert!(format!("{e:#}").contains("[train] scaffold"), "{e:#}");
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
        // t ≤ N/2: two disjoint switcher sets could switch two sums of one round
        let e = FederationConfig::from_toml(&OK.replace(
            "hospitals = 5",
            "hospitals = 5\nthreshold = 2\nmin_hospitals = 2",
        ))
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("must exceed half the hospitals (here at least 3)"),
            "{e:#}"
        );
        // a plaintext federation switches nothing
        FederationConfig::from_toml(&format!(
            "{}\n[he]\nplaintext = true",
            OK.replace(
                "hospitals = 5",
                "hospitals = 5\nthreshold = 2\nmin_hospitals = 2"
            )
        ))
        .unwrap();
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
            .chain(std::fs::read_dir(dir.join("transfer")).unwrap())
            .chain(std::fs::read_dir(dir.join("mnist")).unwrap())
        {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if path.extension().is_some_and(|e| e == "toml") && text.contains("[federation]") {
                FederationConfig::from_file(&path)
                    .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                n += 1;
            }
        }
        assert!(n >= 6, "found {n} federation configs");
        FederationConfig::from_toml(crate::simulate::DEFAULT_CONFIG).unwrap();
    }

    #[test]
    fn privacy_is_validated_planned_and_passed_to_the_sites() {
        let base = "[federation]\nname = \"p\"\nhospitals = 5\nrounds = 20\nmin_hospitals = 4\n[dataset]\nkind = \"medmnist\"\nname = \"breastmnist\"\n";
        let cfg = FederationConfig::from_toml(&format!(
            "{base}[privacy]\nmode = \"hospital\"\ntarget_epsilon = 8.0\n"
        ))
        .unwrap();
        // the quorum and the rounds are filled in for the sites
        assert_eq!(cfg.privacy.quorum, Some(4));
        assert_eq!(cfg.privacy.rounds, Some(20));
        assert_eq!(cfg.rounds(), 20);
        let plan = cfg.privacy_plan().unwrap();
        assert!((plan.epsilon_after(20) - 8.0).abs() < 0.01);
        // a budget below the target's ε ends the run sooner
        let cfg = FederationConfig::from_toml(&format!(
            "{base}[privacy]\nmode = \"hospital\"\ntarget_epsilon = 8.0\nbudget_epsilon = 4.0\n"
        ))
        .unwrap();
        assert!(cfg.rounds() < 20 && cfg.rounds() > 0, "{}", cfg.rounds());
        for bad in [
            "[privacy]\nmode = \"hospital\"\n",
            "[privacy]\nmode = \"hospital\"\nnoise_multiplier = 1.0\nquorum = 2\n",
            "[privacy]\nmode = \"hospital\"\nnoise_multiplier = 1.0\nclip = 10.0\n",
            "[privacy]\nmode = \"nobody\"\n",
            "[privacy]\nmode = \"hospital\"\nnoise_multiplier = 1.0\nepsilon = 2\n",
        ] {
            assert!(
                FederationConfig::from_toml(&format!("{base}{bad}")).is_err(),
                "{bad}"
            );
        }
        // without [privacy]: off, the configured rounds
        let off = FederationConfig::from_toml(base).unwrap();
        assert!(!off.privacy.enabled());
        assert_eq!(off.rounds(), 20);
    }
}
