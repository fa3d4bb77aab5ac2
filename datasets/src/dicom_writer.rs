//! Writes grayscale images as DICOM Part 10 files with dicom-rs: what the tests of this and other
//! crates decode (CT in stored values with a rescale to Hounsfield units, 8/12/16-bit, signed or
//! not, MONOCHROME1/2, multi-frame), and synthetic CT sets for trying HEAL without patient data.

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

use crate::error::{DatasetError, Result};

/// How the file stores its samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Samples {
    U8,
    /// Unsigned 16-bit words holding `stored` significant bits (12 for most CT).
    U16 {
        stored: u16,
    },
    I16,
}

/// What the written file says about its pixels.
#[derive(Clone, Debug)]
pub struct DicomSpec<'a> {
    pub rows: u16,
    pub cols: u16,
    pub frames: u32,
    pub samples: Samples,
    pub photometric: &'a str,
    /// Rescale slope and intercept (stored value → Hounsfield units).
    pub rescale: Option<(f64, f64)>,
    /// The file's own window: centre and width.
    pub window: Option<(f64, f64)>,
    pub patient: Option<&'a str>,
    /// Modality (the SOP class stays CT image storage).
    pub modality: &'a str,
    /// Study, series and SOP instance UIDs (default: no study or series, a fixed instance).
    pub uids: Option<[&'a str; 3]>,
}

impl Default for DicomSpec<'_> {
    fn default() -> Self {
        DicomSpec {
            rows: 4,
            cols: 4,
            frames: 1,
            samples: Samples::I16,
            photometric: "MONOCHROME2",
            rescale: None,
            window: None,
            patient: Some("PAT-001"),
            modality: "CT",
            uids: None,
        }
    }
}

fn put(obj: &mut InMemDicomObject, tag: Tag, vr: VR, v: PrimitiveValue) {
    obj.put(DataElement::new(tag, vr, v));
}

/// A CT image storage file, explicit VR little endian, pixel values `values` (all frames,
/// row-major, stored values before the rescale). Values are written as given, so a test can
/// write a file whose pixel data disagrees with its header.
pub fn dicom_bytes(spec: &DicomSpec, values: &[i32]) -> Result<Vec<u8>> {
    let mut obj = InMemDicomObject::new_empty();
    let instance = spec.uids.map_or("1.2.826.0.1.3680043.2.1125.1", |u| u[2]);
    if let Some([study, series, _]) = spec.uids {
        put(&mut obj, tags::STUDY_INSTANCE_UID, VR::UI, study.into());
        put(&mut obj, tags::SERIES_INSTANCE_UID, VR::UI, series.into());
    }
    put(
        &mut obj,
        tags::SOP_CLASS_UID,
        VR::UI,
        uids::CT_IMAGE_STORAGE.into(),
    );
    put(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, instance.into());
    put(&mut obj, tags::MODALITY, VR::CS, spec.modality.into());
    put(&mut obj, tags::PATIENT_NAME, VR::PN, "Test^Patient".into());
    if let Some(p) = spec.patient {
        put(&mut obj, tags::PATIENT_ID, VR::LO, p.into());
    }
    put(&mut obj, tags::SAMPLES_PER_PIXEL, VR::US, 1u16.into());
    put(
        &mut obj,
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        spec.photometric.into(),
    );
    put(&mut obj, tags::ROWS, VR::US, spec.rows.into());
    put(&mut obj, tags::COLUMNS, VR::US, spec.cols.into());
    if spec.frames > 1 {
        put(
            &mut obj,
            tags::NUMBER_OF_FRAMES,
            VR::IS,
            spec.frames.to_string().into(),
        );
    }
    let (allocated, stored, signed) = match spec.samples {
        Samples::U8 => (8u16, 8u16, 0u16),
        Samples::U16 { stored } => (16, stored, 0),
        Samples::I16 => (16, 16, 1),
    };
    put(&mut obj, tags::BITS_ALLOCATED, VR::US, allocated.into());
    put(&mut obj, tags::BITS_STORED, VR::US, stored.into());
    put(&mut obj, tags::HIGH_BIT, VR::US, (stored - 1).into());
    put(&mut obj, tags::PIXEL_REPRESENTATION, VR::US, signed.into());
    if let Some((slope, intercept)) = spec.rescale {
        put(
            &mut obj,
            tags::RESCALE_SLOPE,
            VR::DS,
            slope.to_string().into(),
        );
        put(
            &mut obj,
            tags::RESCALE_INTERCEPT,
            VR::DS,
            intercept.to_string().into(),
        );
    }
    if let Some((c, w)) = spec.window {
        put(&mut obj, tags::WINDOW_CENTER, VR::DS, c.to_string().into());
        put(&mut obj, tags::WINDOW_WIDTH, VR::DS, w.to_string().into());
    }
    let pixels = match spec.samples {
        Samples::U8 => PrimitiveValue::U8(values.iter().map(|&v| v as u8).collect()),
        Samples::U16 { .. } => PrimitiveValue::U16(values.iter().map(|&v| v as u16).collect()),
        Samples::I16 => PrimitiveValue::I16(values.iter().map(|&v| v as i16).collect()),
    };
    let vr = if allocated == 8 { VR::OB } else { VR::OW };
    put(&mut obj, tags::PIXEL_DATA, vr, pixels);
    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .media_storage_sop_class_uid(uids::CT_IMAGE_STORAGE)
                .media_storage_sop_instance_uid(instance),
        )
        .map_err(|e| DatasetError::invalid("DICOM writer", e.to_string()))?;
    let mut out = Vec::new();
    file.write_all(&mut out)
        .map_err(|e| DatasetError::invalid("DICOM writer", e.to_string()))?;
    Ok(out)
}

/// A 16-bit signed CT slice in Hounsfield units (rescale slope 1, intercept −1024).
pub fn ct_slice(rows: u16, cols: u16, hu: &[i16], patient: Option<&str>) -> Result<Vec<u8>> {
    let stored: Vec<i32> = hu.iter().map(|&h| h as i32 + 1024).collect();
    dicom_bytes(
        &DicomSpec {
            rows,
            cols,
            rescale: Some((1.0, -1024.0)),
            patient,
            ..DicomSpec::default()
        },
        &stored,
    )
}

/// A `side`×`side` abdomen-like slice in Hounsfield units, for trying HEAL without patient data:
/// air outside an ellipse of soft tissue (40 HU) and, for `class` 1, a round region of water
/// (5 HU, a cyst), for `class` 2 one of enhancing tissue (180 HU, a tumour); where the lesion
/// sits and the noise come from `seed` (a fixed linear congruential sequence).
pub fn synthetic_hu(side: usize, class: usize, seed: u32) -> Vec<i16> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut noise = move || {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        ((state >> 16) % 41) as i16 - 20
    };
    let s = side as f32 / 256.0;
    let (cx, cy) = (
        (100.0 + (seed % 7) as f32 * 8.0) * s,
        (110.0 + (seed % 5) as f32 * 8.0) * s,
    );
    let mut hu = Vec::with_capacity(side * side);
    for y in 0..side {
        for x in 0..side {
            let (dx, dy) = (
                (x as f32 - 128.0 * s) / (110.0 * s),
                (y as f32 - 128.0 * s) / (90.0 * s),
            );
            let mut v: i16 = if dx * dx + dy * dy <= 1.0 { 40 } else { -1000 };
            let lesion = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt() < 28.0 * s;
            if lesion && class == 1 {
                v = 5;
            }
            if lesion && class == 2 {
                v = 180;
            }
            hu.push(v + noise());
        }
    }
    hu
}
