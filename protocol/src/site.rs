//! The identity part of a hospital's site TOML (`[site]`): written by `coordinator provision`
//! and read by the node, one type for both so the kit and its reader cannot drift apart.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[site]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSection {
    /// This hospital's index (1-based; its certificate says the same).
    pub index: u32,
    /// Federation id (hex).
    pub federation: String,
    /// Federation name.
    pub name: String,
    /// Coordinator address (host:port).
    pub coordinator: String,
    /// Hospitals in the consortium.
    pub hospitals: u32,
    /// Hospitals needed to re-encrypt (t).
    pub threshold: u32,
    /// Directory of the kit (ca.pem, cert.pem, key.pem); default: the site TOML's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kit: Option<PathBuf>,
}
