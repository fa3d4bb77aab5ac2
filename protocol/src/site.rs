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
    /// The inference mode this hospital's requesters accept (`client infer`, the portal): a
    /// server that answers in the other is refused, so it cannot have an image encrypted to a
    /// key of its own.
    #[serde(default)]
    pub inference: InferenceMode,
    /// Mode (a): BLAKE3 (hex) of the collective public key images may be encrypted under (the
    /// keyholders log it when they encrypt the model); absent: any the server presents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collective_key: Option<String>,
    /// Rounds the federation plans (`[federation] rounds`): a learning-rate schedule that spans
    /// the run (`[train] schedule_span = "federation"`) needs them. Absent in older kits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rounds: Option<u64>,
}

/// How a consortium serves its model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InferenceMode {
    /// Mode (b): the model released to the inference server; each image encrypted under a key
    /// made by its requester for the request.
    #[default]
    Released,
    /// Mode (a): the model stays with the hospitals; images are encrypted under their
    /// collective key and t keyholder hospitals evaluate each signed request and switch its
    /// result to its requester.
    Collective,
}

impl std::fmt::Display for InferenceMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InferenceMode::Released => "released (mode b)",
            InferenceMode::Collective => "collective (mode a)",
        })
    }
}
