//! The consortium's TLS kits the protocol's integration tests share: a CA, the coordinator, a
//! hospital of the roster, one of the same CA outside it, and one of another CA.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use protocol::identity::{COORDINATOR_SERVER_NAME, hospital_dns_name};
use protocol::pki::{Ca, Issued};
use protocol::tls::TlsFiles;
use protocol::{FederationId, Party};

pub const FED: FederationId = FederationId([3; 16]);

pub fn write_kit(dir: &Path, ca: &Ca, issued: &Issued) -> TlsFiles {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.cert_pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), &issued.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &issued.key_pem).unwrap();
    TlsFiles::in_dir(dir)
}

pub struct Setup {
    pub _dir: tempfile::TempDir,
    pub coordinator: TlsFiles,
    pub hospital: TlsFiles,
    pub stranger: TlsFiles,
    pub outsider: TlsFiles,
    pub roster: HashMap<String, Party>,
}

pub fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("HEAL test CA").unwrap();
    let coord = ca.issue(COORDINATOR_SERVER_NAME).unwrap();
    let h1 = ca.issue(&hospital_dns_name(1)).unwrap();
    // same CA, not in the roster
    let h9 = ca.issue(&hospital_dns_name(9)).unwrap();
    // another CA altogether
    let other = Ca::new("Another CA").unwrap();
    let foreign = other.issue(&hospital_dns_name(1)).unwrap();
    let roster = HashMap::from([(h1.fingerprint.clone(), Party::Hospital(1))]);
    Setup {
        coordinator: write_kit(&dir.path().join("coordinator"), &ca, &coord),
        hospital: write_kit(&dir.path().join("h1"), &ca, &h1),
        stranger: write_kit(&dir.path().join("h9"), &ca, &h9),
        outsider: {
            let d = dir.path().join("foreign");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("ca.pem"), other.cert_pem()).unwrap();
            std::fs::write(d.join("cert.pem"), &foreign.cert_pem).unwrap();
            std::fs::write(d.join("key.pem"), &foreign.key_pem).unwrap();
            // it trusts our CA for the server, but its own certificate is foreign
            std::fs::write(d.join("ca.pem"), ca.cert_pem()).unwrap();
            TlsFiles::in_dir(&d)
        },
        roster,
        _dir: dir,
    }
}
