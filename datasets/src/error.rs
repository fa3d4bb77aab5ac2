//! The one error type of this crate. Every variant that concerns a file names it.

use std::path::PathBuf;

/// Everything that can go wrong while finding, downloading, reading, checking, preprocessing or
/// partitioning a data set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatasetError {
    /// An MNIST IDX file that is not what its name says (header, size, labels, md5).
    #[error("{path}: not MNIST's IDX file: {message}")]
    BadIdx {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the numbers found.
        message: String,
    },

    /// MNIST's files are not in the folder looked at (they are never downloaded).
    #[error(
        "{dir}: MNIST's IDX files are not here (missing {missing}); put the four files \
         train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and \
         t10k-labels-idx1-ubyte.gz there, or set [dataset] data_dir / HEAL_MNIST_DIR"
    )]
    MissingMnist {
        /// The folder looked at.
        dir: PathBuf,
        /// The first file missing.
        missing: String,
    },

    /// An I/O error on a named file or directory.
    #[error("{path}: {action}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done ("open", "read", "create directory" …).
        action: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A data set name that is not in the MedMNIST catalogue.
    #[error("unknown MedMNIST data set {name:?} (known 2D sets: {known})")]
    UnknownDataset {
        /// The name asked for.
        name: String,
        /// The names that exist, comma separated.
        known: String,
    },

    /// A MedMNIST image size that the official record does not provide.
    #[error("MedMNIST has no {size}×{size} version of {name} (sizes: 28, 64, 128, 224)")]
    UnknownSize {
        /// Data set name.
        name: String,
        /// Size asked for.
        size: u32,
    },

    /// The file's md5 does not match the official table.
    #[error("{path}: md5 mismatch: expected {expected} (official MedMNIST table), found {found}")]
    Md5Mismatch {
        /// The file.
        path: PathBuf,
        /// The official md5.
        expected: String,
        /// What the file hashes to.
        found: String,
    },

    /// The file is missing and downloading is disabled.
    #[error(
        "{path}: file not found and offline mode is set (set `data_dir`/HEAL_DATA_DIR to a folder \
         holding it, or allow the download from {url})"
    )]
    MissingOffline {
        /// Where the file was looked for.
        path: PathBuf,
        /// Where it would have been downloaded from.
        url: String,
    },

    /// The download failed.
    #[error("download of {url} to {path} failed: {message}")]
    Download {
        /// The URL.
        url: String,
        /// The destination file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },

    /// The `.npz` archive itself cannot be read (not a zip, truncated, corrupt).
    #[error("{path}: not a readable .npz archive (corrupt or truncated?): {message}")]
    CorruptArchive {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        message: String,
    },

    /// An array that must be in the archive is not.
    #[error("{path}: array {array:?} is missing (the archive holds: {present})")]
    MissingArray {
        /// The file.
        path: PathBuf,
        /// The array looked for.
        array: String,
        /// The arrays present, comma separated.
        present: String,
    },

    /// An array in the archive cannot be decoded (corrupt compressed data, truncated data …).
    #[error("{path}: array {array:?} cannot be read: {message}")]
    CorruptArray {
        /// The file.
        path: PathBuf,
        /// The array.
        array: String,
        /// The decoder's message.
        message: String,
    },

    /// An array with the wrong element type.
    #[error("{path}: array {array:?} has dtype {found}, expected {expected}")]
    WrongDtype {
        /// The file.
        path: PathBuf,
        /// The array.
        array: String,
        /// The expected dtype.
        expected: String,
        /// The dtype found (NumPy descriptor).
        found: String,
    },

    /// An array with the wrong shape.
    #[error("{path}: array {array:?} has shape {found:?}, expected {expected}")]
    WrongShape {
        /// The file.
        path: PathBuf,
        /// The array.
        array: String,
        /// What was expected, in words.
        expected: String,
        /// The shape found.
        found: Vec<usize>,
    },

    /// A label outside `0..classes`.
    #[error(
        "{path}: {what}: label {label} at row {row} is out of range (the data set has {classes} classes)"
    )]
    LabelOutOfRange {
        /// The file.
        path: PathBuf,
        /// The array or column.
        what: String,
        /// Row index.
        row: usize,
        /// The label value.
        label: i64,
        /// Number of classes.
        classes: usize,
    },

    /// An image file that cannot be decoded (or is empty).
    #[error("{path}: unreadable image: {message}")]
    BadImage {
        /// The image file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// A DICOM file that cannot be used (not DICOM, truncated, no pixel data, an unsupported
    /// transfer syntax or photometric interpretation, frames over the size limit …).
    #[error("{path}: DICOM: {message}")]
    BadDicom {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// A CSV manifest that cannot be parsed.
    #[error("{path}: bad manifest: {message}")]
    BadManifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// A CSV manifest without a required column.
    #[error("{path}: manifest has no column {column:?} (columns: {present})")]
    MissingColumn {
        /// The manifest.
        path: PathBuf,
        /// The column.
        column: String,
        /// The columns present.
        present: String,
    },

    /// A manifest row pointing at a file that does not exist.
    #[error("{manifest}: row {row} points at {file}, which does not exist")]
    MissingImage {
        /// The manifest.
        manifest: PathBuf,
        /// Row index (0-based, header excluded).
        row: usize,
        /// The resolved image path.
        file: PathBuf,
    },

    /// An image folder with nothing usable in it.
    #[error("{path}: {message}")]
    BadFolder {
        /// The folder.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// A task or operation that needs single-label classes got multi-label data (ChestMNIST).
    #[error("{name}: multi-label data sets (n, k>1 labels) are not supported by {operation}")]
    MultiLabel {
        /// Data set name.
        name: String,
        /// The operation.
        operation: String,
    },

    /// Invalid arguments or configuration (partitioning, preprocessing, splits).
    #[error("invalid {what}: {message}")]
    Invalid {
        /// The setting or argument.
        what: &'static str,
        /// What is wrong.
        message: String,
    },

    /// A polars error while building or writing a table.
    #[error("{context}: {source}")]
    Table {
        /// What was being done.
        context: String,
        /// The polars error.
        #[source]
        source: polars::error::PolarsError,
    },
}

impl DatasetError {
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        action: &'static str,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            path: path.into(),
            action,
            source,
        }
    }

    pub(crate) fn invalid(what: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            what,
            message: message.into(),
        }
    }

    pub(crate) fn table(context: impl Into<String>, source: polars::error::PolarsError) -> Self {
        Self::Table {
            context: context.into(),
            source,
        }
    }
}

/// Shorthand for this crate's results.
pub type Result<T, E = DatasetError> = std::result::Result<T, E>;
