//! `heal-network/1`: the one file format of a trained network — what `client baseline` and a
//! hospital node export, and what `client infer`, `client evaluate-encrypted`, the portal, the
//! keyholders and the inference servers read.
//!
//! ```text
//! { "format": "heal-network/1", "class_names": [...], "multiplicative_depth": 5,
//!   "network": { "input": [c, h, w],
//!                "normalization": { "mean": [...], "std": [...] },
//!                "layers": [ { "type": "conv2d", ... }, ... ] } }
//! ```
//!
//! The `network` object is a [`Network`] (validated when read): inputs are
//! `(pixel/255 − mean[c]) / std[c]` in CHW order; layers, tagged by `type`: `conv2d`
//! (`in_channels`, `out_channels`, `kernel`, `stride`, `padding`, `weight [out, in, k, k]`,
//! `bias [out]`), `avg-pool2d` (`kernel`, `stride`), `flatten`, `dense` (`in_features`,
//! `out_features`, `weight [out, in]`, `bias [out]`), `square`, `quadratic` (`a`, `b`: a·x² + b·x)
//! and `relu` (plaintext baselines only: encrypted plans refuse it). Batch-norm is folded into
//! the conv or dense layer before it when exporting. An optional `"front"`
//! (`{ "image": [c, h, w], "scales", "angles", "groups" }`, [`super::scatter`]) is computed in
//! the clear after the normalisation: `input` is then its output, and the images are `image`.

use std::path::{Path, PathBuf};

use super::error::NetworkError;
use super::network::Network;

/// The format tag.
pub const NETWORK_FORMAT: &str = "heal-network/1";

/// Largest network file read (the default OrganAMNIST network is ~4 MB of JSON).
pub const MAX_NETWORK_FILE_BYTES: u64 = 1 << 30;

/// A trained network with what a report and a requester need beside it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkFile {
    /// [`NETWORK_FORMAT`].
    pub format: String,
    /// Class names, in output order.
    pub class_names: Vec<String>,
    /// Multiplicative depth of encrypted inference with plaintext weights, as the trainer
    /// counted it (for reports; plans count their own).
    pub multiplicative_depth: usize,
    /// The network.
    pub network: Network,
    /// How the trainer made image files into inputs (resize policy, DICOM window …), so that
    /// inference makes them the same way. Opaque here: `datasets` owns its meaning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_preparation: Option<serde_json::Value>,
}

/// Why a network file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NetworkFileError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {bytes} bytes is larger than the {MAX_NETWORK_FILE_BYTES}-byte limit", path.display())]
    TooLarge { path: PathBuf, bytes: u64 },
    #[error("{}: not a network description: {message}", path.display())]
    Json { path: PathBuf, message: String },
    #[error("{}: format {found:?}, expected {NETWORK_FORMAT:?}", path.display())]
    Format { path: PathBuf, found: String },
    #[error("{}: {classes} class names for a network with {outputs} outputs", path.display())]
    Classes {
        path: PathBuf,
        classes: usize,
        outputs: usize,
    },
}

impl NetworkFile {
    /// A file for `network` whose outputs are `class_names`.
    pub fn new(
        network: Network,
        class_names: Vec<String>,
        multiplicative_depth: usize,
    ) -> Result<Self, NetworkError> {
        if class_names.len() != network.output_len() {
            return Err(NetworkError::ShapeMismatch {
                layer: network.layers().len().saturating_sub(1),
                expected: format!("{} outputs (one per class name)", class_names.len()),
                found: format!("{} outputs", network.output_len()),
            });
        }
        Ok(Self {
            format: NETWORK_FORMAT.into(),
            class_names,
            multiplicative_depth,
            network,
            input_preparation: None,
        })
    }

    /// Parses and checks a description (format tag, every layer's shapes and weights, one class
    /// name per output); `path` names it in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Self, NetworkFileError> {
        let file: Self = serde_json::from_str(text).map_err(|e| NetworkFileError::Json {
            path: path.into(),
            message: e.to_string(),
        })?;
        file.check(path)?;
        Ok(file)
    }

    fn check(&self, path: &Path) -> Result<(), NetworkFileError> {
        if self.format != NETWORK_FORMAT {
            return Err(NetworkFileError::Format {
                path: path.into(),
                found: self.format.clone(),
            });
        }
        if self.class_names.len() != self.network.output_len() {
            return Err(NetworkFileError::Classes {
                path: path.into(),
                classes: self.class_names.len(),
                outputs: self.network.output_len(),
            });
        }
        Ok(())
    }

    /// Reads and checks a file written by [`NetworkFile::write_json`].
    pub fn read_json(path: &Path) -> Result<Self, NetworkFileError> {
        let io = |source| NetworkFileError::Io {
            path: path.into(),
            source,
        };
        let bytes = std::fs::metadata(path).map_err(io)?.len();
        if bytes > MAX_NETWORK_FILE_BYTES {
            return Err(NetworkFileError::TooLarge {
                path: path.into(),
                bytes,
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Self::from_json(&text, path)
    }

    /// The description as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| unreachable!("plain data serializes"))
    }

    /// Writes the description as JSON.
    pub fn write_json(&self, path: &Path) -> Result<(), NetworkFileError> {
        std::fs::write(path, self.to_json()).map_err(|source| NetworkFileError::Io {
            path: path.into(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing;
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let net = testing::tiny_network();
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let file = NetworkFile::new(net.clone(), names.clone(), 3).unwrap();
        assert!(NetworkFile::new(net.clone(), names[..2].to_vec(), 3).is_err());
        let dir = std::env::temp_dir().join(format!("heal-netfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("n.json");
        file.write_json(&path).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["format"], NETWORK_FORMAT);
        assert_eq!(v["network"]["layers"][0]["type"], "conv2d");
        assert_eq!(NetworkFile::read_json(&path).unwrap(), file);
        let text = file.to_json();
        let refuse = |t: String| NetworkFile::from_json(&t, &path).unwrap_err().to_string();
        assert!(refuse(text.replace(NETWORK_FORMAT, "heal-network/0")).contains("format"));
        assert!(refuse(text.replace("\"c\"]", "\"c\",\"d\"]")).contains("class names"));
        assert!(refuse(text.replace("\"in_features\":32", "\"in_features\":31")).contains("layer"));
        assert!(refuse("{\"format\": \"x\"}".into()).contains("not a network"));
        std::fs::write(&path, "").unwrap();
        assert!(NetworkFile::read_json(&path).is_err());
        assert!(NetworkFile::read_json(&dir.join("missing.json")).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
