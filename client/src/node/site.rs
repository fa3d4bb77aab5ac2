//! The site TOML a hospital node runs from (written by `coordinator provision`): who it is,
//! where the coordinator is, and the federation's shared sections, all validated strictly.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use datasets::{DatasetConfig, PartitionConfig};
use he_agg::aggregate::HeSettings;
use protocol::FederationId;
use serde::{Deserialize, Serialize};
use training::model::ModelConfig;
use training::train::TrainConfig;

pub use protocol::site::SiteSection;

pub use training::strategy::ServerOptConfig;

/// `[node]`: local settings of this hospital's node (optional).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    /// Evaluate the global model on the official test split every this many rounds (0: never).
    #[serde(default = "one_u")]
    pub test_every: u64,
    /// Keep trying to reach the coordinator for this many seconds.
    #[serde(default = "reconnect")]
    pub reconnect_s: u64,
    /// This share of the hospital's training images is never trained on: the membership-
    /// inference check's non-members (0, the default: its validation images are).
    #[serde(default)]
    pub membership_holdout: f64,
    /// Where `GET /metrics` answers for Prometheus (default 127.0.0.1:9465, loopback only; port
    /// 0: any free one, written to `metrics-address` in the output directory), or "off".
    #[serde(default = "default_metrics")]
    pub metrics: String,
    /// Seconds `/metrics` keeps answering after the federation finished, so that Prometheus
    /// scrapes this hospital's final figures before the node ends (at most 3,600; default 0).
    #[serde(default)]
    pub metrics_linger_s: u64,
    /// Mode (a) keyholders: the memory (MB) the served model's encoded weights are held in.
    /// Segments beyond it are encoded again for each request (slower, but a ResNet's weights at
    /// N = 2^15 exceed many hosts' memory). Default: a quarter of `MemAvailable` once the evaluation
    /// keys are made.
    #[serde(default)]
    pub model_memory_mb: Option<u64>,
    /// Mode (a) keyholders: where requests are evaluated: "auto" (a CUDA GPU when one loads,
    /// the model and the collective evaluation keys resident on it; the default), "cpu", or
    /// "cuda" (a GPU or an error when the keys are made).
    #[serde(default)]
    pub backend: he_agg::aggregate::BackendChoice,
    /// Where this hospital trains its local epochs: "cpu" (the default), "cuda[:N]" (builds
    /// with `--features cuda`) or "wgpu[:N]" (a GPU through Vulkan; builds with `--features
    /// wgpu`). A device that does not load stops the node at its first round with the reason.
    #[serde(default = "cpu")]
    pub train_device: String,
}

fn cpu() -> String {
    "cpu".into()
}

fn default_metrics() -> String {
    "127.0.0.1:9465".into()
}

impl NodeSettings {
    /// The section's values checked: the metrics address parses, the linger is bounded.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.metrics_linger_s > ops::prometheus::MAX_LINGER_S {
            bail!(
                "[node] metrics_linger_s = {} is more than {} s",
                self.metrics_linger_s,
                ops::prometheus::MAX_LINGER_S
            );
        }
        training::train::check_device_name(&self.train_device)
            .map_err(|e| anyhow::anyhow!("[node] train_device: {e}"))?;
        self.metrics_addr().map(|_| ())
    }

    /// How long `/metrics` stays up once the federation finished (none when metrics are off).
    pub fn linger(&self) -> Duration {
        ops::prometheus::linger(&self.metrics, self.metrics_linger_s)
    }

    /// The metrics address, `None` when "off".
    pub fn metrics_addr(&self) -> anyhow::Result<Option<std::net::SocketAddr>> {
        if self.metrics == "off" {
            return Ok(None);
        }
        self.metrics.parse().map(Some).map_err(|_| {
            anyhow::anyhow!(
                "[node] metrics = {:?} is neither an address such as \"127.0.0.1:9465\" nor \"off\"",
                self.metrics
            )
        })
    }
}

fn one_u() -> u64 {
    1
}
fn reconnect() -> u64 {
    600
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            test_every: 1,
            reconnect_s: reconnect(),
            membership_holdout: 0.0,
            metrics: default_metrics(),
            metrics_linger_s: 0,
            model_memory_mb: None,
            backend: Default::default(),
            train_device: cpu(),
        }
    }
}

/// A parsed site TOML.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    pub site: SiteSection,
    pub he: HeSettings,
    pub dataset: DatasetConfig,
    #[serde(default)]
    pub partition: Option<toml::Table>,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub train: TrainConfig,
    #[serde(default)]
    pub server: ServerOptConfig,
    #[serde(default)]
    pub node: NodeSettings,
    /// `[privacy]` (default: off).
    #[serde(default)]
    pub privacy: privacy::PrivacyConfig,
    /// `[pacs]`: the hospital's PACS over DICOMweb, for `client pacs` (default: none).
    #[serde(default)]
    pub pacs: Option<client::pacs::PacsConfig>,
}

impl SiteConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let cfg: SiteConfig =
            toml::from_str(&text).with_context(|| format!("in {}", path.display()))?;
        cfg.validate()
            .with_context(|| format!("in {}", path.display()))?;
        Ok(cfg)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let s = &self.site;
        if s.index == 0 || s.index > s.hospitals {
            bail!("[site] index {} is not in 1..={}", s.index, s.hospitals);
        }
        if s.threshold == 0 || s.threshold > s.hospitals {
            bail!(
                "[site] threshold {} is not in 1..={}",
                s.threshold,
                s.hospitals
            );
        }
        // this hospital's own check of what its switches rely on, whatever the coordinator says:
        // two disjoint sets of t switchers could switch two sums of one round
        if !self.he.plaintext && 2 * s.threshold <= s.hospitals {
            bail!(
                "[site] threshold {} of {} hospitals: the threshold must exceed half the \
                 hospitals, or two disjoint sets of switchers could each switch a different sum \
                 of one round (their difference is one hospital's update)",
                s.threshold,
                s.hospitals
            );
        }
        self.federation_id()?;
        self.node.check()?;
        let h = self.node.membership_holdout;
        if !(0.0..=0.5).contains(&h) {
            bail!("[node] membership_holdout = {h} is not a share in [0, 0.5]");
        }
        self.server.validate().map_err(anyhow::Error::msg)?;
        self.privacy.validate()?;
        self.partition_config()?;
        if let Some(pacs) = &self.pacs {
            pacs.check()?;
        }
        Ok(())
    }

    /// Whether this site simulates a share of a common data set (`[partition]` present) or
    /// trains on all of its own data (a real deployment).
    pub fn simulated_share(&self) -> bool {
        self.partition.is_some()
    }

    pub fn federation_id(&self) -> anyhow::Result<FederationId> {
        FederationId::from_hex(&self.site.federation)
            .context("[site] federation is not 32 hex digits")
    }

    /// The partition of a common data set among the hospitals, when simulating.
    pub fn partition_config(&self) -> anyhow::Result<PartitionConfig> {
        let mut table = self.partition.clone().unwrap_or_default();
        table
            .entry("hospitals")
            .or_insert((self.site.hospitals as i64).into());
        let cfg: PartitionConfig = toml::Value::Table(table)
            .try_into()
            .context("in [partition]")?;
        if cfg.hospitals != self.site.hospitals as usize {
            bail!(
                "[partition] hospitals = {} but the federation has {}",
                cfg.hospitals,
                self.site.hospitals
            );
        }
        Ok(cfg)
    }

    /// The kit directory: `[site] kit`, else the site TOML's folder.
    pub fn kit_dir(&self, site_path: &Path) -> PathBuf {
        let base = site_path.parent().unwrap_or(Path::new("."));
        match &self.site.kit {
            Some(k) if k.is_absolute() => k.clone(),
            Some(k) => base.join(k),
            None => base.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SITE: &str = r#"
[site]
index = 2
federation = "0123456789abcdef0123456789abcdef"
name = "t"
coordinator = "127.0.0.1:7443"
hospitals = 3
threshold = 2

[he]
plaintext = false
lambda = 40
precision = 1e-6
max_update = 64.0
max_total_weight = 1e7

[dataset]
kind = "medmnist"
name = "breastmnist"

[partition]
scheme = "dirichlet"
alpha = 0.5
seed = 7
"#;

    fn parse(text: &str) -> anyhow::Result<SiteConfig> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("site.toml");
        std::fs::write(&p, text)?;
        SiteConfig::load(&p)
    }

    #[test]
    fn patient_dp_takes_batch_norms_only_on_fixed_statistics() {
        use crate::node::privacy::NodePrivacy;
        let dp = "[privacy]\nmode = \"patient\"\ntarget_epsilon = 8.0\nclip = 1.0\nrounds = 5\n\
                  batch_size = 256\nepochs = 1\nlr = 0.5\n";
        let c = parse(&format!("{SITE}\n{dp}")).unwrap();
        assert!(
            c.model.trains_batch_norm(),
            "the default [model] has batch norms"
        );
        let e = NodePrivacy::new(&c, 1000).err().unwrap();
        assert!(
            format!("{e:#}").contains("norm_statistics = \"frozen\""),
            "{e:#}"
        );
        let c = parse(&format!(
            "{SITE}\n{dp}\n[train]\nnorm_statistics = \"frozen\""
        ))
        .unwrap();
        assert!(NodePrivacy::new(&c, 1000).unwrap().is_some());
    }

    #[test]
    fn a_provisioned_site_parses_with_its_partition() {
        let c = parse(SITE).unwrap();
        assert_eq!(c.site.index, 2);
        assert!(c.simulated_share());
        assert_eq!(c.partition_config().unwrap().hospitals, 3);
        assert_eq!(
            c.server.optimizer,
            training::strategy::ServerOptimizer::FedAvg
        );
        assert_eq!(
            c.kit_dir(Path::new("/kits/h2/site.toml")),
            PathBuf::from("/kits/h2")
        );
    }

    #[test]
    fn the_metrics_linger_is_read_and_bounded() {
        let c = parse(&format!("{SITE}\n[node]\nmetrics_linger_s = 5")).unwrap();
        assert_eq!(c.node.linger(), Duration::from_secs(5));
        assert_eq!(parse(SITE).unwrap().node.linger(), Duration::ZERO);
        let off = parse(&format!(
            "{SITE}\n[node]\nmetrics_linger_s = 5\nmetrics = \"off\""
        ))
        .unwrap();
        assert_eq!(off.node.linger(), Duration::ZERO);
        let e = parse(&format!("{SITE}\n[node]\nmetrics_linger_s = 3601")).unwrap_err();
        assert!(format!("{e:#}").contains("more than 3600 s"), "{e:#}");
    }

    #[test]
    fn the_keyholders_backend_is_read_and_checked() {
        use he_agg::aggregate::BackendChoice;
        assert_eq!(parse(SITE).unwrap().node.backend, BackendChoice::Auto);
        let c = parse(&format!("{SITE}\n[node]\nbackend = \"cpu\"")).unwrap();
        assert_eq!(c.node.backend, BackendChoice::Cpu);
        let e = parse(&format!("{SITE}\n[node]\nbackend = \"gpu\"")).unwrap_err();
        assert!(format!("{e:#}").contains("gpu"), "{e:#}");
    }

    #[test]
    fn the_training_device_is_read_and_checked_before_a_round() {
        assert_eq!(parse(SITE).unwrap().node.train_device, "cpu");
        let e = parse(&format!("{SITE}\n[node]\ntrain_device = \"tpu\"")).unwrap_err();
        assert!(format!("{e:#}").contains("[node] train_device"), "{e:#}");
        // a GPU name loads only where its backend is built in, else the site names the feature
        let wgpu = parse(&format!("{SITE}\n[node]\ntrain_device = \"wgpu:0\""));
        match cfg!(feature = "wgpu") {
            true => assert_eq!(wgpu.unwrap().node.train_device, "wgpu:0"),
            false => assert!(format!("{:#}", wgpu.unwrap_err()).contains("--features wgpu")),
        }
    }

    #[test]
    fn bad_sites_are_refused_with_the_reason() {
        let err = |t: &str| format!("{:#}", parse(t).unwrap_err());
        assert!(err(&SITE.replace("index = 2", "index = 4")).contains("index 4"));
        assert!(
            err(&SITE.replace(
                "hospitals = 3\nthreshold = 2",
                "hospitals = 4\nthreshold = 2"
            ))
            .contains("must exceed half the hospitals")
        );
        assert!(
            err(&SITE.replace("threshold = 2", "threshold = 2\ncolour = 1"))
                .contains("unknown field")
        );
        assert!(err(&format!("{SITE}\n[server]\noptimizer = \"sgd\"")).contains("optimizer"));
        assert!(
            err(&SITE.replace("0123456789abcdef0123456789abcdef", "xyz")).contains("federation")
        );
        assert!(
            err(&SITE.replace("alpha = 0.5", "alpha = 0.5\nhospitals = 5"))
                .contains("hospitals = 5")
        );
    }
}
