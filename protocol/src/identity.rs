//! Who is who: the federation identifier and the parties of a consortium. A party's identity on
//! the network is its certificate; the coordinator maps a certificate fingerprint to a party.

use serde::{Deserialize, Serialize};

/// A consortium's identifier (16 random bytes chosen at provisioning).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FederationId(pub [u8; 16]);

impl FederationId {
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self(out))
    }
}

impl std::fmt::Display for FederationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A party of the consortium.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum Party {
    Coordinator,
    /// Hospital by index, 1-based (also its threshold evaluation point).
    Hospital(u32),
}

impl std::fmt::Display for Party {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Party::Coordinator => f.write_str("coordinator"),
            Party::Hospital(i) => write!(f, "hospital {i}"),
        }
    }
}

/// The TLS server name every hospital checks the coordinator's certificate against.
pub const COORDINATOR_SERVER_NAME: &str = "coordinator.heal";

/// The DNS name in hospital `index`'s certificate.
pub fn hospital_dns_name(index: u32) -> String {
    format!("hospital-{index}.heal")
}

/// The fingerprint that identifies a certificate (BLAKE3 of its DER), as hex.
pub fn cert_fingerprint(der: &[u8]) -> String {
    blake3::hash(der).to_hex().to_string()
}
