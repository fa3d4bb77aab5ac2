//! Medical image data for HEAL: MedMNIST `.npz` files, MNIST's IDX files (verified against the official md5 table
//! and downloaded from the official record when missing), image folders and CSV manifests of
//! PNG, JPEG and DICOM files (CT in Hounsfield units with windowing), resizing by policy,
//! preprocessing with training-split statistics, and partitioning across simulated hospitals.
//!
//! This crate knows nothing of networks or encryption: it hands out `u8` images, labels and
//! normalised `f32` arrays.
//!
//! ```no_run
//! use datasets::{medmnist, Normalizer};
//! let data = medmnist::load("breastmnist", 28, &Default::default())?;
//! let norm = Normalizer::fit(&data.train)?;            // training split only
//! let x = norm.to_nchw(&data.test, None)?;             // f32, NCHW
//! # Ok::<(), datasets::DatasetError>(())
//! ```

pub mod decode;
pub mod dicom;
pub mod dicom_writer;
pub mod error;
pub mod folder;
pub mod image_set;
pub mod medmnist;
pub mod mnist;
pub mod partition;
pub mod preprocess;
pub mod resize;
pub mod source;
pub mod unlabelled;

pub use decode::{DecodedFile, ImageDecoder, InputPreparation};
pub use dicom::{DecodeLimits, Window, WindowPreset};
pub use error::{DatasetError, Result};
pub use folder::ManifestColumns;
pub use image_set::{Dataset, DatasetInfo, ImageSet, ImageShape, Labels, Task};
pub use partition::{Partition, PartitionConfig, Scheme};
pub use preprocess::Normalizer;
pub use resize::ResizePolicy;
pub use source::{DatasetConfig, load_dataset};
pub use unlabelled::{Unlabelled, load_unlabelled};
