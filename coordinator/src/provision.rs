//! `coordinator provision`: a consortium CA, a certificate and key for the coordinator and for
//! each hospital, the federation id, and a kit per hospital (its certificate, key, the CA, its
//! site TOML). Private keys are written with mode 0600. Hospitals make their CKKS key shares
//! themselves on first start; no kit holds anything of another party's.
//!
//! ```text
//! OUT/ca/{ca.pem, ca-key.pem}                      the CA (keep the key offline)
//! OUT/coordinator/{ca.pem, cert.pem, key.pem, federation.toml, roster.toml}
//! OUT/hospital-<i>/{ca.pem, cert.pem, key.pem, site.toml[, backbone.safetensors]}
//! ```
//!
//! A `[model.init]` backbone is copied into every kit and named there with its BLAKE3.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use protocol::identity::{COORDINATOR_SERVER_NAME, hospital_dns_name};
use protocol::pki::Ca;
use protocol::{FederationId, Party};
use serde::{Deserialize, Serialize};

use crate::config::FederationConfig;

/// The coordinator's record of the consortium's certificates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Roster {
    /// Hex federation id.
    pub federation: String,
    pub hospital: Vec<RosterEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RosterEntry {
    pub index: u32,
    pub name: String,
    /// BLAKE3 of the hospital certificate's DER.
    pub fingerprint: String,
}

impl Roster {
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn federation_id(&self) -> anyhow::Result<FederationId> {
        FederationId::from_hex(&self.federation).context("roster: federation is not 32 hex digits")
    }

    /// Certificate fingerprint → party.
    pub fn parties(&self) -> HashMap<String, Party> {
        self.hospital
            .iter()
            .map(|h| (h.fingerprint.clone(), Party::Hospital(h.index)))
            .collect()
    }
}

/// Writes a file readable by its owner only, whole or not at all.
pub fn write_secret(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    ops::durable_file::write_private(path, contents)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn write(path: &Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))
}

/// What provisioning made.
#[derive(Debug, Clone)]
pub struct Provisioned {
    pub federation: FederationId,
    pub coordinator_dir: PathBuf,
    pub hospital_dirs: Vec<PathBuf>,
}

/// Provisions `cfg` (whose text is `config_text`) into `out`, which must not exist or be empty.
pub fn provision(
    cfg: &FederationConfig,
    config_text: &str,
    out: &Path,
) -> anyhow::Result<Provisioned> {
    if out.exists()
        && std::fs::read_dir(out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!(
            "{} exists and is not empty: provisioning never overwrites keys",
            out.display()
        );
    }
    let mut id = [0u8; 16];
    getrandom::fill(&mut id)
        .map_err(|e| anyhow::anyhow!("operating system random generator: {e}"))?;
    let federation = FederationId(id);
    let name = &cfg.federation.name;

    let ca = Ca::new(&format!("HEAL consortium CA ({name})"))?;
    let ca_dir = out.join("ca");
    std::fs::create_dir_all(&ca_dir)
        .with_context(|| format!("cannot create {}", ca_dir.display()))?;
    write(&ca_dir.join("ca.pem"), ca.cert_pem())?;
    write_secret(&ca_dir.join("ca-key.pem"), ca.key_pem().as_bytes())?;

    let coordinator_dir = out.join("coordinator");
    std::fs::create_dir_all(&coordinator_dir)?;
    let coord = ca.issue(COORDINATOR_SERVER_NAME)?;
    write(&coordinator_dir.join("ca.pem"), ca.cert_pem())?;
    write(&coordinator_dir.join("cert.pem"), &coord.cert_pem)?;
    write_secret(&coordinator_dir.join("key.pem"), coord.key_pem.as_bytes())?;
    write(&coordinator_dir.join("federation.toml"), config_text)?;

    let mut roster = Roster {
        federation: federation.to_hex(),
        hospital: Vec::new(),
    };
    let mut hospital_dirs = Vec::new();
    for index in 1..=cfg.federation.hospitals {
        let hname = format!("hospital-{index}");
        let dir = out.join(&hname);
        std::fs::create_dir_all(&dir)?;
        let cert = ca.issue(&hospital_dns_name(index))?;
        write(&dir.join("ca.pem"), ca.cert_pem())?;
        write(&dir.join("cert.pem"), &cert.cert_pem)?;
        write_secret(&dir.join("key.pem"), cert.key_pem.as_bytes())?;
        let backbone = kit_backbone(cfg, &dir)?;
        write(
            &dir.join("site.toml"),
            &site_toml(cfg, federation, index, backbone)?,
        )?;
        roster.hospital.push(RosterEntry {
            index,
            name: hname,
            fingerprint: cert.fingerprint,
        });
        hospital_dirs.push(dir);
    }
    write(
        &coordinator_dir.join("roster.toml"),
        &toml::to_string(&roster)?,
    )?;
    Ok(Provisioned {
        federation,
        coordinator_dir,
        hospital_dirs,
    })
}

/// `[model.init]`'s backbone copied into a hospital's kit (`backbone.<ext>`): the table to
/// write in its place, naming the copy and its BLAKE3, which the node checks before it loads
/// it (every hospital must start from the same weights). `None` without `[model.init]`.
fn kit_backbone(cfg: &FederationConfig, kit: &Path) -> anyhow::Result<Option<toml::Table>> {
    let Some(init) = cfg
        .site_sections
        .get("model")
        .and_then(|m| m.as_table())
        .and_then(|m| m.get("init"))
    else {
        return Ok(None);
    };
    let mut table = match init {
        toml::Value::String(p) => {
            let mut t = toml::Table::new();
            t.insert("path".into(), p.clone().into());
            t
        }
        toml::Value::Table(t) => t.clone(),
        _ => bail!("[model] init must be a path or a table with `path`"),
    };
    let path = table
        .get("path")
        .and_then(|p| p.as_str())
        .context("[model.init] has no `path`")?;
    let source = if Path::new(path).is_absolute() {
        PathBuf::from(path)
    } else {
        cfg.config_dir.join(path)
    };
    let bytes = std::fs::read(&source).with_context(|| {
        format!(
            "[model.init]: cannot read the backbone {} (relative paths start at the config's folder)",
            source.display()
        )
    })?;
    let digest = blake3::hash(&bytes).to_hex().to_string();
    if let Some(want) = table.get("blake3").and_then(|b| b.as_str())
        && !want.eq_ignore_ascii_case(&digest)
    {
        bail!(
            "[model.init]: {} has BLAKE3 {digest}, the config says {want}",
            source.display()
        );
    }
    let ext = source
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("safetensors");
    let name = format!("backbone.{ext}");
    write_public(&kit.join(&name), &bytes)?;
    table.insert("path".into(), name.into());
    table.insert("blake3".into(), digest.into());
    Ok(Some(table))
}

fn write_public(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))
}

/// A hospital's site TOML: its identity, where the coordinator is, and the shared sections
/// (`[model.init]` replaced by the kit's copy of the backbone).
fn site_toml(
    cfg: &FederationConfig,
    federation: FederationId,
    index: u32,
    backbone: Option<toml::Table>,
) -> anyhow::Result<String> {
    let site = protocol::site::SiteSection {
        index,
        federation: federation.to_hex(),
        name: cfg.federation.name.clone(),
        coordinator: cfg.federation.coordinator_address.clone(),
        hospitals: cfg.federation.hospitals,
        threshold: cfg.threshold(),
        kit: None,
        inference: cfg.federation.inference,
        collective_key: None,
        rounds: Some(cfg.federation.rounds),
    };
    let mut doc = toml::Table::new();
    doc.insert("site".into(), toml::Value::try_from(&site)?);
    doc.insert("he".into(), toml::Value::try_from(&cfg.he)?);
    for (k, v) in &cfg.site_sections {
        doc.insert(k.clone(), v.clone());
    }
    if let Some(b) = backbone
        && let Some(model) = doc.get_mut("model").and_then(|m| m.as_table_mut())
    {
        model.insert("init".into(), b.into());
    }
    if cfg.privacy.enabled() {
        // with quorum and rounds filled in: every hospital plans the same run
        doc.insert("privacy".into(), toml::Value::try_from(&cfg.privacy)?);
    }
    Ok(format!(
        "# Hospital {index} of federation \"{}\" ({}), written by `coordinator provision`.\n\
         # Run the node with: client run --site site.toml\n\n{}",
        cfg.federation.name,
        federation,
        toml::to_string(&doc)?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::UNIT_CONFIG as CFG;

    #[test]
    fn kits_hold_only_their_own_secrets_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("fed");
        let cfg = FederationConfig::from_toml(CFG).unwrap();
        let p = provision(&cfg, CFG, &out).unwrap();
        assert_eq!(p.hospital_dirs.len(), 3);
        let roster = Roster::read(&p.coordinator_dir.join("roster.toml")).unwrap();
        assert_eq!(roster.federation_id().unwrap(), p.federation);
        assert_eq!(roster.parties().len(), 3);
        for (i, d) in p.hospital_dirs.iter().enumerate() {
            let site = std::fs::read_to_string(d.join("site.toml")).unwrap();
            // the node reads [site] with the same type the kit was written from
            let doc: toml::Table = toml::from_str(&site).unwrap();
            let s: protocol::site::SiteSection = doc["site"].clone().try_into().unwrap();
            assert_eq!((s.index, s.hospitals), (i as u32 + 1, 3));
            assert_eq!(s.federation, p.federation.to_hex());
            assert_eq!(s.threshold, cfg.threshold());
            assert!(doc.contains_key("dataset") && doc.contains_key("he"));
            assert!(!d.join("ca-key.pem").exists());
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(d.join("key.pem"))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o777;
                assert_eq!(mode, 0o600);
            }
        }
        // never over an existing consortium
        assert!(provision(&cfg, CFG, &out).is_err());
    }

    #[test]
    fn a_backbone_is_copied_into_every_kit_with_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("cfg")).unwrap();
        std::fs::write(dir.path().join("cfg/b.safetensors"), b"weights").unwrap();
        let text = format!(
            "{CFG}[model]\nactivation = \"poly\"\n[model.init]\npath = \"b.safetensors\"\nfreeze = 3\n"
        );
        let mut cfg = FederationConfig::from_toml(&text).unwrap();
        cfg.config_dir = dir.path().join("cfg");
        let p = provision(&cfg, &text, &dir.path().join("fed")).unwrap();
        let digest = blake3::hash(b"weights").to_hex().to_string();
        for d in &p.hospital_dirs {
            assert_eq!(
                std::fs::read(d.join("backbone.safetensors")).unwrap(),
                b"weights"
            );
            let doc: toml::Table =
                toml::from_str(&std::fs::read_to_string(d.join("site.toml")).unwrap()).unwrap();
            let init = doc["model"]["init"].as_table().unwrap();
            assert_eq!(init["path"].as_str(), Some("backbone.safetensors"));
            assert_eq!(init["blake3"].as_str(), Some(digest.as_str()));
            assert_eq!(init["freeze"].as_integer(), Some(3));
            // the rounds a schedule over the federation spans
            let rounds = i64::try_from(cfg.federation.rounds).unwrap();
            assert_eq!(doc["site"]["rounds"].as_integer(), Some(rounds));
        }
        // a config that names another digest, or a file that is not there: refused
        let wrong = text.replace("freeze = 3", "blake3 = \"00\"");
        let mut cfg = FederationConfig::from_toml(&wrong).unwrap();
        cfg.config_dir = dir.path().join("cfg");
        let e = provision(&cfg, &wrong, &dir.path().join("fed2")).unwrap_err();
        assert!(e.to_string().contains("BLAKE3"), "{e}");
        cfg.config_dir = dir.path().to_path_buf();
        let e = provision(&cfg, &wrong, &dir.path().join("fed3")).unwrap_err();
        assert!(
            format!("{e:#}").contains("cannot read the backbone"),
            "{e:#}"
        );
    }
}
