//! The library's error type.

use std::path::PathBuf;

/// Everything the training half of the client can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A config file that cannot be read or parsed (unknown keys included).
    #[error("{path}: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong (the TOML parser's message, with line and column).
        message: String,
    },
    /// A weights file that cannot be read or does not fit the network (names, shapes, dtypes).
    #[error("weights {path}: {message}")]
    Weights {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A data problem (files, md5, shapes, labels, manifests, partitions).
    #[error(transparent)]
    Dataset(#[from] datasets::DatasetError),
    /// A network description that does not fit together.
    #[error("model: {0}")]
    Model(String),
    /// A flat parameter vector of the wrong length.
    #[error("flat parameter vector has {found} values, the network needs {expected}")]
    ParamLength {
        /// Values the network has.
        expected: usize,
        /// Values given.
        found: usize,
    },
    /// A flat parameter vector with NaN or infinity.
    #[error("flat parameter vector: value {index} ({name}) is not finite")]
    NonFinite {
        /// Index in the vector.
        index: usize,
        /// The manifest entry it falls in.
        name: String,
    },
    /// Training diverged (NaN/infinite loss), typically squares blowing up: lower the learning
    /// rate, keep batch-norm before activations, or clip gradients.
    #[error("training diverged at epoch {epoch}, batch {batch}: loss is {loss}")]
    Diverged {
        /// Epoch (1-based).
        epoch: usize,
        /// Batch within the epoch (0-based).
        batch: usize,
        /// The loss value.
        loss: f32,
    },
    /// Invalid training or evaluation settings or inputs.
    #[error("invalid {what}: {message}")]
    Invalid {
        /// The setting.
        what: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The requested compute device is not available in this build or on this machine.
    #[error("device {0:?} is not available: {1}")]
    Device(String, String),
    /// File I/O.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Writing a table.
    #[error("{context}: {source}")]
    Table {
        /// What was being written.
        context: String,
        /// The polars error.
        #[source]
        source: polars::error::PolarsError,
    },
    /// A network file (`heal-network/1`) that cannot be read or does not fit together.
    #[error(transparent)]
    NetworkFile(#[from] he_agg::infer::NetworkFileError),
    /// JSON encoding.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: serde_json::Error,
    },
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(what: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            what,
            message: message.into(),
        }
    }
}
