//! `client pacs`: HEAL where the images are. The node polls the hospital's PACS over DICOMweb
//! for new series ([`config::PacsConfig`]: modalities, body part, study dates, any match key),
//! fetches each one, diagnoses its images under encryption in the site's pinned mode (at the
//! consortium's inference server, or on this node with released weights), and stores the result
//! back in the study as a DICOM Structured Report ([`report`]) naming the model, the mode and the
//! plan's fingerprint. A record ([`record`]) makes every series diagnosed once, none skipped
//! after a restart.
//!
//! - [`dicomweb`]: QIDO-RS, WADO-RS and STOW-RS over ureq with rustls, basic or bearer auth;
//! - [`query`]: the match keys and the DICOM JSON answers;
//! - [`poll`]: one pass, what it does with each series and with each failure.

pub mod config;
pub mod dicomweb;
pub mod error;
pub mod poll;
pub mod query;
pub mod record;
pub mod report;

use std::path::PathBuf;

pub use config::PacsConfig;
pub use dicomweb::DicomWeb;
pub use error::PacsError;
pub use poll::{PassReport, Poller};
pub use query::SeriesRef;
pub use record::Record;

use crate::infer::images::{ImageArg, load_images};
use crate::infer::local::infer_local;
use crate::infer::remote::{Target, infer_remote};
use crate::infer::{InferOutcome, InferenceError};

/// What the poller needs of a PACS ([`DicomWeb`]; tests give it others).
pub trait Pacs {
    /// The series the site's query names, at most `max_series_per_poll`.
    fn find_series(&mut self) -> Result<Vec<SeriesRef>, PacsError>;
    /// A series' instances, as Part 10 files.
    fn retrieve(&mut self, series: &SeriesRef) -> Result<Vec<Vec<u8>>, PacsError>;
    /// Stores one Part 10 file.
    fn store(&mut self, dicom: &[u8]) -> Result<(), PacsError>;
    /// Whether the PACS holds instance `sop` in `study`.
    fn has_instance(&mut self, study: &str, sop: &str) -> Result<bool, PacsError>;
}

/// Encrypted diagnosis of image files (each frame of each file one image, in order).
pub trait Diagnose {
    fn diagnose(&mut self, files: &[PathBuf]) -> Result<InferOutcome, InferenceError>;
}

impl<D: Diagnose + ?Sized> Diagnose for Box<D> {
    fn diagnose(&mut self, files: &[PathBuf]) -> Result<InferOutcome, InferenceError> {
        (**self).diagnose(files)
    }
}

/// At the inference server, in the mode the site pins ([`Target::accept`]).
pub struct AtServer {
    pub runtime: tokio::runtime::Runtime,
    pub target: Target,
}

impl Diagnose for AtServer {
    fn diagnose(&mut self, files: &[PathBuf]) -> Result<InferOutcome, InferenceError> {
        let args: Vec<ImageArg> = files.iter().cloned().map(ImageArg::File).collect();
        self.runtime.block_on(infer_remote(
            &self.target,
            &args,
            &datasets::InputPreparation::default(),
            None,
        ))
    }
}

/// On this node, with the released weights of a mode (b) model.
pub struct OnNode {
    pub network: he_agg::infer::Network,
    pub classes: Vec<String>,
    pub name: String,
    pub preparation: datasets::InputPreparation,
}

impl Diagnose for OnNode {
    fn diagnose(&mut self, files: &[PathBuf]) -> Result<InferOutcome, InferenceError> {
        let args: Vec<ImageArg> = files.iter().cloned().map(ImageArg::File).collect();
        let decoder = self
            .preparation
            .decoder(training::export::input_shape(&self.network));
        let images = load_images(&args, &decoder, &self.preparation, None)?;
        infer_local(&self.network, &self.classes, &self.name, &images)
    }
}
