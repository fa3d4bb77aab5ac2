//! Image folders and CSV manifests: a hospital's own PNG, JPEG and DICOM files, grey or RGB, any
//! size, made into the model's input by an [`ImageDecoder`] (channels, resize policy, DICOM
//! window). A multi-frame DICOM file gives one image per frame, all with its label.
//!
//! Two layouts:
//! * a class folder: `root/<class name>/*.png|jpg|jpeg|dcm|dicom`, classes in sorted order of
//!   the subfolder names;
//! * a CSV manifest (read with polars): one row per file, with a path column (relative to the
//!   manifest's folder, or absolute), a label column (class index or class name) and optional
//!   patient, site and split (`train`/`val`/`test`) columns.
//!
//! Patients: the manifest's patient column, else a DICOM file's Patient ID; an image with
//! neither is its own group. They keep a patient's images on one side of a split.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ndarray::Array4;
use polars::prelude::*;

use crate::decode::{DecodedFile, ImageDecoder, has_image_extension};
use crate::error::{DatasetError, Result};
use crate::image_set::{ImageSet, ImageShape, Labels};

fn stack(path: &Path, pixels: Vec<Vec<u8>>, shape: ImageShape) -> Result<Array4<u8>> {
    let n = pixels.len();
    let flat: Vec<u8> = pixels.into_iter().flatten().collect();
    Array4::from_shape_vec((n, shape.height, shape.width, shape.channels), flat).map_err(|e| {
        DatasetError::BadFolder {
            path: path.into(),
            message: format!("internal: cannot stack images: {e}"),
        }
    })
}

/// Patients of the images: `given` (a manifest column), else each file's DICOM Patient ID, else
/// a group of its own (named by its file); `None` when no image has a patient.
fn patients_of(
    given: Option<Vec<String>>,
    dicom: &[Option<String>],
    files: &[String],
) -> Option<Vec<String>> {
    if given.is_some() {
        return given;
    }
    if dicom.iter().all(Option::is_none) {
        return None;
    }
    Some(
        dicom
            .iter()
            .zip(files)
            .map(|(p, f)| p.clone().unwrap_or_else(|| format!("file:{f}")))
            .collect(),
    )
}

/// Reads `root/<class>/*.{png,jpg,jpeg,dcm,dicom}`. Returns the images and the class names
/// (sorted subfolder names; the label of an image is its folder's index); DICOM files carry
/// their patients.
pub fn read_class_folder(root: &Path, decoder: &ImageDecoder) -> Result<(ImageSet, Vec<String>)> {
    decoder.check()?;
    let shape = decoder.shape;
    let mut classes = Vec::new();
    for entry in std::fs::read_dir(root).map_err(|e| DatasetError::io(root, "list folder", e))? {
        let entry = entry.map_err(|e| DatasetError::io(root, "list folder", e))?;
        if entry.path().is_dir() {
            classes.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    classes.sort();
    if classes.len() < 2 {
        return Err(DatasetError::BadFolder {
            path: root.into(),
            message: format!(
                "expected one subfolder per class (at least 2), found {}",
                classes.len()
            ),
        });
    }
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    let (mut dicom_patients, mut names) = (Vec::new(), Vec::new());
    for (k, class) in classes.iter().enumerate() {
        let dir = root.join(class);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| DatasetError::io(&dir, "list folder", e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && has_image_extension(p))
            .collect();
        files.sort();
        for f in files {
            let DecodedFile { images, patient } = decoder.load(&f)?;
            for im in images {
                pixels.push(im);
                labels.push(k as u32);
                dicom_patients.push(patient.clone());
                names.push(f.display().to_string());
            }
        }
    }
    if pixels.is_empty() {
        return Err(DatasetError::BadFolder {
            path: root.into(),
            message: "no .png/.jpg/.jpeg/.dcm images in the class subfolders".into(),
        });
    }
    let images = stack(root, pixels, shape)?;
    let patients = patients_of(None, &dicom_patients, &names);
    Ok((
        ImageSet::new(images, Labels::Class(labels), patients, None)?,
        classes,
    ))
}

/// Column names of a manifest.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestColumns {
    /// Image path column (relative to the manifest's folder, or absolute). Default `path`.
    #[serde(default = "default_path_col")]
    pub path: String,
    /// Label column: class index (integers) or class name (text). Default `label`.
    #[serde(default = "default_label_col")]
    pub label: String,
    /// Optional patient id column (for patient-level grouping).
    #[serde(default)]
    pub patient: Option<String>,
    /// Optional site (hospital) column (for partitioning by site).
    #[serde(default)]
    pub site: Option<String>,
    /// Optional split column with values `train`, `val` or `test`.
    #[serde(default)]
    pub split: Option<String>,
}

fn default_path_col() -> String {
    "path".into()
}
fn default_label_col() -> String {
    "label".into()
}

impl Default for ManifestColumns {
    fn default() -> Self {
        Self {
            path: default_path_col(),
            label: default_label_col(),
            patient: None,
            site: None,
            split: None,
        }
    }
}

/// A split named in a manifest's split column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Split {
    /// Training.
    Train,
    /// Validation.
    Val,
    /// Test.
    Test,
}

/// What a manifest gave.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// All images, in manifest order, with patient/site metadata where the columns exist.
    pub images: ImageSet,
    /// Class names; the label of an image is an index into this list.
    pub class_names: Vec<String>,
    /// The split of each image, when the manifest has a split column.
    pub splits: Option<Vec<Split>>,
}

fn string_column(df: &DataFrame, manifest: &Path, name: &str) -> Result<Vec<Option<String>>> {
    let col = df.column(name).map_err(|_| DatasetError::MissingColumn {
        path: manifest.into(),
        column: name.into(),
        present: df
            .get_column_names()
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    let col = col
        .cast(&DataType::String)
        .map_err(|e| DatasetError::BadManifest {
            path: manifest.into(),
            message: format!("column {name:?}: {e}"),
        })?;
    let ca = col.str().map_err(|e| DatasetError::BadManifest {
        path: manifest.into(),
        message: format!("column {name:?}: {e}"),
    })?;
    Ok((0..ca.len())
        .map(|i| ca.get(i).map(str::to_string))
        .collect())
}

fn required(values: Vec<Option<String>>, manifest: &Path, column: &str) -> Result<Vec<String>> {
    values
        .into_iter()
        .enumerate()
        .map(|(row, v)| match v {
            Some(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
            _ => Err(DatasetError::BadManifest {
                path: manifest.into(),
                message: format!("row {row}: column {column:?} is empty"),
            }),
        })
        .collect()
}

/// Reads a CSV manifest. `class_names`, when given, fixes the classes: integer labels must be
/// `< class_names.len()` and text labels must be one of the names. Without it, integer labels
/// give classes `0..=max` and text labels their sorted distinct values.
pub fn read_manifest(
    manifest: &Path,
    columns: &ManifestColumns,
    decoder: &ImageDecoder,
    class_names: Option<&[String]>,
) -> Result<Manifest> {
    decoder.check()?;
    let shape = decoder.shape;
    if !manifest.is_file() {
        return Err(DatasetError::io(
            manifest,
            "open manifest",
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        ));
    }
    let df = CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(None)
        .try_into_reader_with_file_path(Some(manifest.to_path_buf()))
        .and_then(|r| r.finish())
        .map_err(|e| DatasetError::BadManifest {
            path: manifest.into(),
            message: e.to_string(),
        })?;
    if df.height() == 0 {
        return Err(DatasetError::BadManifest {
            path: manifest.into(),
            message: "no rows".into(),
        });
    }
    // Check every named column before reading any image, so a typo is reported first.
    for name in [Some(&columns.path), Some(&columns.label)]
        .into_iter()
        .chain([
            columns.patient.as_ref(),
            columns.site.as_ref(),
            columns.split.as_ref(),
        ])
        .flatten()
    {
        string_column(&df, manifest, name)?;
    }
    let base = manifest.parent().unwrap_or(Path::new("."));
    let paths = required(
        string_column(&df, manifest, &columns.path)?,
        manifest,
        &columns.path,
    )?;
    let raw_labels = required(
        string_column(&df, manifest, &columns.label)?,
        manifest,
        &columns.label,
    )?;

    // Labels: all integers → indices; otherwise names.
    let as_ints: Option<Vec<i64>> = raw_labels.iter().map(|s| s.parse::<i64>().ok()).collect();
    let (labels, names) = match (as_ints, class_names) {
        (Some(ints), given) => {
            let classes = match given {
                Some(n) => n.len(),
                None => ints.iter().copied().max().unwrap_or(0).max(1) as usize + 1,
            };
            let mut out = Vec::with_capacity(ints.len());
            for (row, &v) in ints.iter().enumerate() {
                if v < 0 || v as usize >= classes {
                    return Err(DatasetError::LabelOutOfRange {
                        path: manifest.into(),
                        what: format!("column {:?}", columns.label),
                        row,
                        label: v,
                        classes,
                    });
                }
                out.push(v as u32);
            }
            let names = match given {
                Some(n) => n.to_vec(),
                None => (0..classes).map(|i| i.to_string()).collect(),
            };
            (out, names)
        }
        (None, given) => {
            let names: Vec<String> = match given {
                Some(n) => n.to_vec(),
                None => raw_labels
                    .iter()
                    .cloned()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect(),
            };
            let mut out = Vec::with_capacity(raw_labels.len());
            for (row, l) in raw_labels.iter().enumerate() {
                match names.iter().position(|n| n == l) {
                    Some(k) => out.push(k as u32),
                    None => {
                        return Err(DatasetError::BadManifest {
                            path: manifest.into(),
                            message: format!(
                                "row {row}: label {l:?} is not one of the classes [{}]",
                                names.join(", ")
                            ),
                        });
                    }
                }
            }
            (out, names)
        }
    };
    if names.len() < 2 {
        return Err(DatasetError::BadManifest {
            path: manifest.into(),
            message: format!("need at least 2 classes, found {}", names.len()),
        });
    }

    let optional = |col: &Option<String>| -> Result<Option<Vec<String>>> {
        match col {
            None => Ok(None),
            Some(c) => Ok(Some(required(
                string_column(&df, manifest, c)?,
                manifest,
                c,
            )?)),
        }
    };
    let patients = optional(&columns.patient)?;
    let sites = optional(&columns.site)?;
    let splits = match optional(&columns.split)? {
        None => None,
        Some(v) => Some(
            v.iter()
                .enumerate()
                .map(|(row, s)| match s.to_ascii_lowercase().as_str() {
                    "train" => Ok(Split::Train),
                    "val" | "valid" | "validation" => Ok(Split::Val),
                    "test" => Ok(Split::Test),
                    other => Err(DatasetError::BadManifest {
                        path: manifest.into(),
                        message: format!("row {row}: split {other:?} is not train, val or test"),
                    }),
                })
                .collect::<Result<Vec<_>>>()?,
        ),
    };

    // Resolve every path first so a missing file is reported before any decoding.
    let files: Vec<PathBuf> = paths
        .iter()
        .map(|p| {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        })
        .collect();
    for (row, f) in files.iter().enumerate() {
        if !f.is_file() {
            return Err(DatasetError::MissingImage {
                manifest: manifest.into(),
                row,
                file: f.clone(),
            });
        }
    }
    // every frame of a file takes its row's label, patient, site and split
    let mut pixels = Vec::with_capacity(files.len());
    let mut rows = Vec::with_capacity(files.len());
    let mut dicom_patients = Vec::with_capacity(files.len());
    for (row, f) in files.iter().enumerate() {
        let DecodedFile { images, patient } = decoder.load(f)?;
        for im in images {
            pixels.push(im);
            rows.push(row);
            dicom_patients.push(patient.clone());
        }
    }
    let per_row = |v: Vec<String>| -> Vec<String> { rows.iter().map(|&r| v[r].clone()).collect() };
    let file_names: Vec<String> = rows
        .iter()
        .map(|&r| files[r].display().to_string())
        .collect();
    let patients = patients_of(patients.map(per_row), &dicom_patients, &file_names);
    let sites = sites.map(per_row);
    let labels: Vec<u32> = rows.iter().map(|&r| labels[r]).collect();
    let splits = splits.map(|s| rows.iter().map(|&r| s[r]).collect());
    let images = stack(manifest, pixels, shape)?;
    Ok(Manifest {
        images: ImageSet::new(images, Labels::Class(labels), patients, sites)?,
        class_names: names,
        splits,
    })
}
