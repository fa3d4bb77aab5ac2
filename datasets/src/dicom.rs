//! DICOM images (dicom-rs: `dicom-object` parses, `dicom-pixeldata` decodes), as 8-bit grey
//! frames ready for the network.
//!
//! Pixel values go through the modality LUT (Rescale Slope/Intercept: Hounsfield units for CT),
//! then a window ([`Window`]: a preset, an explicit centre/width, or `auto`), mapped to 0..255 by
//! the DICOM linear VOI function (PS3.3 C.11.2.1.2). MONOCHROME1 is inverted so that high values
//! are always bright; other photometric interpretations (RGB, YBR, palettes) are refused. 8-, 12-
//! and 16-bit samples, signed and unsigned; one image per frame of a multi-frame object.
//! Uncompressed and deflated syntaxes, JPEG baseline/extended/lossless, RLE and JPEG 2000 decode;
//! any other syntax is refused with its name.
//!
//! **Attributes read**: the transfer syntax (file meta), Rows, Columns, Number of Frames, Samples
//! per Pixel, Photometric Interpretation, Bits Allocated/Stored, High Bit, Pixel Representation,
//! Rescale Slope/Intercept, Window Center/Width (for `auto`), Pixel Data, and Patient ID (only to
//! keep a patient's images on one side of a split). No other attribute — names, dates,
//! accession numbers — is extracted, and nothing read from a file is logged.

use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder, VoiLutOption};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use crate::error::{DatasetError, Result};

/// A named window preset, in Hounsfield units (centre / width).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WindowPreset {
    /// The file's own first Window Center/Width when it has one, else the frame's min–max.
    Auto,
    /// Abdomen soft tissue: L 40 / W 400.
    Abdomen,
    /// Kidney: L 50 / W 350 (narrower than abdomen, centred on enhanced parenchyma).
    Kidney,
    /// Lung: L −600 / W 1500.
    Lung,
    /// Bone: L 400 / W 1800.
    Bone,
}

/// An explicit window: centre and width in the modality's units (HU for CT).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplicitWindow {
    pub center: f64,
    pub width: f64,
}

/// `window = "abdomen"` (a preset or `"auto"`) or `window = { center = 40, width = 400 }`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Window {
    Preset(WindowPreset),
    Explicit(ExplicitWindow),
}

impl Default for Window {
    fn default() -> Self {
        Window::Preset(WindowPreset::Auto)
    }
}

impl Window {
    /// Centre and width, unless the window comes from the file (`auto`).
    pub fn center_width(&self) -> Option<(f64, f64)> {
        match *self {
            Window::Preset(p) => match p {
                WindowPreset::Auto => None,
                WindowPreset::Abdomen => Some((40.0, 400.0)),
                WindowPreset::Kidney => Some((50.0, 350.0)),
                WindowPreset::Lung => Some((-600.0, 1500.0)),
                WindowPreset::Bone => Some((400.0, 1800.0)),
            },
            Window::Explicit(w) => Some((w.center, w.width)),
        }
    }

    /// Refuses a width below 1 or values that are not finite.
    pub fn check(&self) -> Result<()> {
        if let Some((c, w)) = self.center_width()
            && !(c.is_finite() && w.is_finite() && w >= 1.0)
        {
            return Err(DatasetError::invalid(
                "[dataset] window",
                format!("centre {c} / width {w}: the width must be at least 1, both finite"),
            ));
        }
        Ok(())
    }
}

/// Bounds on what one file may make the decoder allocate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest side (rows or columns) of a frame.
    pub max_side: usize,
    /// Largest number of pixels of a file, all frames together.
    pub max_pixels: usize,
    /// Largest file size in bytes.
    pub max_file_bytes: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_side: 8192,
            max_pixels: 1 << 26,
            max_file_bytes: 1 << 30,
        }
    }
}

/// The frames of a DICOM file as 8-bit grey images, with the patient they belong to.
#[derive(Clone, Debug, PartialEq)]
pub struct DicomImage {
    pub rows: usize,
    pub columns: usize,
    /// One `rows × columns` grey image per frame.
    pub frames: Vec<Vec<u8>>,
    /// Patient ID (0010,0020), trimmed; `None` when absent or empty.
    pub patient: Option<String>,
}

/// Whether `bytes` start like a DICOM Part 10 file (128-byte preamble, then `DICM`).
pub fn is_dicom(bytes: &[u8]) -> bool {
    bytes.len() >= 132 && &bytes[128..132] == b"DICM"
}

fn bad(path: &Path, message: impl Into<String>) -> DatasetError {
    DatasetError::BadDicom {
        path: path.into(),
        message: message.into(),
    }
}

fn int_attr(
    obj: &DefaultDicomObject,
    path: &Path,
    tag: dicom_core::Tag,
    name: &str,
) -> Result<Option<i64>> {
    match obj.element_opt(tag) {
        Ok(Some(e)) => e
            .to_int::<i64>()
            .map(Some)
            .map_err(|_| bad(path, format!("{name} is not an integer"))),
        Ok(None) => Ok(None),
        Err(_) => Err(bad(path, format!("{name} cannot be read"))),
    }
}

fn str_attr(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<String> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .map(|s| {
            s.trim_matches(|c: char| c.is_whitespace() || c == '\0')
                .to_string()
        })
        .filter(|s| !s.is_empty())
}

/// Maps `v` through the DICOM linear window (centre `c`, width `w`) to 0..=255.
pub fn window_to_u8(v: f64, c: f64, w: f64) -> u8 {
    let (lo, hi) = (c - 0.5 - (w - 1.0) / 2.0, c - 0.5 + (w - 1.0) / 2.0);
    if v <= lo {
        0
    } else if v > hi {
        255
    } else {
        (((v - (c - 0.5)) / (w - 1.0).max(1e-9) + 0.5) * 255.0)
            .round()
            .clamp(0.0, 255.0) as u8
    }
}

/// Decodes a DICOM Part 10 file held in `bytes`; `path` names it in errors.
pub fn decode_dicom(
    bytes: &[u8],
    path: &Path,
    window: Window,
    limits: &DecodeLimits,
) -> Result<DicomImage> {
    window.check()?;
    if !is_dicom(bytes) {
        return Err(bad(
            path,
            "not a DICOM Part 10 file (no \"DICM\" marker after the 128-byte preamble)",
        ));
    }
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(bad(
            path,
            format!(
                "{} bytes is larger than the {}-byte limit",
                bytes.len(),
                limits.max_file_bytes
            ),
        ));
    }
    let obj = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Always)
        .from_reader(bytes)
        .map_err(|e| {
            bad(
                path,
                format!("cannot be parsed (truncated or malformed?): {e}"),
            )
        })?;
    let uid = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches(['\0', ' '])
        .to_string();
    let ts = TransferSyntaxRegistry
        .get(&uid)
        .ok_or_else(|| bad(path, format!("unknown transfer syntax {uid}")))?;
    if !ts.can_decode_all() {
        return Err(bad(
            path,
            format!(
                "transfer syntax {} ({uid}) is not supported: HEAL decodes uncompressed, \
                 deflated, JPEG baseline/extended/lossless, RLE and JPEG 2000 pixel data",
                ts.name()
            ),
        ));
    }
    let photometric = str_attr(&obj, tags::PHOTOMETRIC_INTERPRETATION)
        .ok_or_else(|| bad(path, "Photometric Interpretation is missing"))?;
    let invert = match photometric.as_str() {
        "MONOCHROME1" => true,
        "MONOCHROME2" => false,
        other => {
            return Err(bad(
                path,
                format!("photometric interpretation {other} is not grayscale (MONOCHROME1/2)"),
            ));
        }
    };
    let samples = int_attr(&obj, path, tags::SAMPLES_PER_PIXEL, "Samples per Pixel")?.unwrap_or(1);
    if samples != 1 {
        return Err(bad(
            path,
            format!("{samples} samples per pixel; grayscale has 1"),
        ));
    }
    let dim = |tag, name: &str| -> Result<usize> {
        let v = int_attr(&obj, path, tag, name)?
            .ok_or_else(|| bad(path, format!("{name} is missing")))?;
        if v < 1 || v as usize > limits.max_side {
            return Err(bad(
                path,
                format!("{name} = {v} is outside 1..={}", limits.max_side),
            ));
        }
        Ok(v as usize)
    };
    let (rows, columns) = (dim(tags::ROWS, "Rows")?, dim(tags::COLUMNS, "Columns")?);
    let frames = int_attr(&obj, path, tags::NUMBER_OF_FRAMES, "Number of Frames")?.unwrap_or(1);
    if frames < 1 {
        return Err(bad(path, format!("Number of Frames = {frames}")));
    }
    let frames = frames as usize;
    let pixels = rows
        .checked_mul(columns)
        .and_then(|p| p.checked_mul(frames))
        .filter(|&p| p <= limits.max_pixels)
        .ok_or_else(|| {
            bad(
                path,
                format!(
                    "{frames} frames of {rows}×{columns} exceed the limit of {} pixels per file",
                    limits.max_pixels
                ),
            )
        })?;
    let allocated = int_attr(&obj, path, tags::BITS_ALLOCATED, "Bits Allocated")?
        .ok_or_else(|| bad(path, "Bits Allocated is missing"))?;
    if allocated != 8 && allocated != 16 {
        return Err(bad(
            path,
            format!("{allocated} bits allocated per sample; 8 and 16 are supported"),
        ));
    }
    let stored = int_attr(&obj, path, tags::BITS_STORED, "Bits Stored")?.unwrap_or(allocated);
    if !(1..=allocated).contains(&stored) {
        return Err(bad(
            path,
            format!("{stored} bits stored in {allocated} allocated"),
        ));
    }
    if obj.element_opt(tags::PIXEL_DATA).ok().flatten().is_none() {
        return Err(bad(path, "the file has no Pixel Data"));
    }
    let decoded = obj.decode_pixel_data().map_err(|e| {
        bad(
            path,
            format!("{} pixel data cannot be decoded: {e}", ts.name()),
        )
    })?;
    let need = pixels * (allocated as usize / 8);
    if decoded.data().len() < need || decoded.number_of_frames() as usize != frames {
        return Err(bad(
            path,
            format!(
                "pixel data holds {} bytes in {} frames; {frames} frames of {rows}×{columns} at \
                 {allocated} bits need {need}",
                decoded.data().len(),
                decoded.number_of_frames()
            ),
        ));
    }
    let file_window = decoded
        .window()
        .ok()
        .flatten()
        .and_then(|w| w.first().copied())
        .filter(|w| w.width >= 1.0 && w.width.is_finite() && w.center.is_finite())
        .map(|w| (w.center, w.width));
    let options = ConvertOptions::new()
        .with_modality_lut(ModalityLutOption::Default)
        .with_voi_lut(VoiLutOption::Identity);
    let mut out = Vec::with_capacity(frames);
    for f in 0..frames {
        let values: Vec<f32> = decoded
            .to_vec_frame_with_options(f as u32, &options)
            .map_err(|e| bad(path, format!("frame {f} cannot be converted: {e}")))?;
        if values.len() != rows * columns {
            return Err(bad(
                path,
                format!(
                    "frame {f} has {} values, {rows}×{columns} expected",
                    values.len()
                ),
            ));
        }
        let (c, w) = match window.center_width().or(file_window) {
            Some(cw) => cw,
            None => {
                let (lo, hi) = values
                    .iter()
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                        (a.min(v), b.max(v))
                    });
                let (lo, hi) = (lo as f64, hi as f64);
                ((lo + hi + 1.0) / 2.0, (hi - lo + 1.0).max(1.0))
            }
        };
        out.push(
            values
                .iter()
                .map(|&v| {
                    let g = window_to_u8(v as f64, c, w);
                    if invert { 255 - g } else { g }
                })
                .collect(),
        );
    }
    Ok(DicomImage {
        rows,
        columns,
        frames: out,
        patient: str_attr(&obj, tags::PATIENT_ID),
    })
}

/// Reads and decodes a DICOM file ([`decode_dicom`]).
pub fn load_dicom(path: &Path, window: Window, limits: &DecodeLimits) -> Result<DicomImage> {
    let meta = std::fs::metadata(path).map_err(|e| DatasetError::io(path, "open DICOM file", e))?;
    if meta.len() > limits.max_file_bytes {
        return Err(bad(
            path,
            format!(
                "{} bytes is larger than the {}-byte limit",
                meta.len(),
                limits.max_file_bytes
            ),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| DatasetError::io(path, "read DICOM file", e))?;
    decode_dicom(&bytes, path, window, limits)
}
