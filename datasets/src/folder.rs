//! Image folders and CSV manifests: a hospital's own PNG/JPEG files, grey or RGB, any size,
//! converted to the model's channels and resized to its input.
//!
//! Two layouts:
//! * a class folder: `root/<class name>/*.png|jpg|jpeg`, classes in sorted order of the
//!   subfolder names;
//! * a CSV manifest (read with polars): one row per image, with a path column (relative to the
//!   manifest's folder, or absolute), a label column (class index or class name) and optional
//!   patient, site and split (`train`/`val`/`test`) columns.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use ndarray::Array4;
use polars::prelude::*;

use crate::error::{DatasetError, Result};
use crate::image_set::{ImageSet, Labels};

/// The shape every image is converted to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageShape {
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
}

impl ImageShape {
    fn check(&self) -> Result<()> {
        if !(self.channels == 1 || self.channels == 3) || self.height == 0 || self.width == 0 {
            return Err(DatasetError::invalid(
                "image shape",
                format!(
                    "{}×{}×{}: channels must be 1 or 3 and sides positive",
                    self.channels, self.height, self.width
                ),
            ));
        }
        Ok(())
    }
}

const EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];

/// Decodes one PNG/JPEG file into `shape` (HWC bytes): grey↔RGB conversion (luma for RGB→grey)
/// and a triangle-filter resize when the size differs.
pub fn load_image(path: &Path, shape: ImageShape) -> Result<Vec<u8>> {
    shape.check()?;
    let bytes = std::fs::read(path).map_err(|e| DatasetError::io(path, "read image", e))?;
    if bytes.is_empty() {
        return Err(DatasetError::BadImage {
            path: path.into(),
            message: "the file is empty (0 bytes)".into(),
        });
    }
    let img = image::load_from_memory(&bytes).map_err(|e| DatasetError::BadImage {
        path: path.into(),
        message: e.to_string(),
    })?;
    let (w, h) = (shape.width as u32, shape.height as u32);
    Ok(if shape.channels == 1 {
        let g = img.to_luma8();
        let g = if g.dimensions() == (w, h) {
            g
        } else {
            image::imageops::resize(&g, w, h, FilterType::Triangle)
        };
        g.into_raw()
    } else {
        let c = img.to_rgb8();
        let c = if c.dimensions() == (w, h) {
            c
        } else {
            image::imageops::resize(&c, w, h, FilterType::Triangle)
        };
        c.into_raw()
    })
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

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

/// Reads `root/<class>/*.{png,jpg,jpeg}`. Returns the images and the class names (sorted
/// subfolder names; the label of an image is its folder's index).
pub fn read_class_folder(root: &Path, shape: ImageShape) -> Result<(ImageSet, Vec<String>)> {
    shape.check()?;
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
    for (k, class) in classes.iter().enumerate() {
        let dir = root.join(class);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| DatasetError::io(&dir, "list folder", e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_image(p))
            .collect();
        files.sort();
        for f in files {
            pixels.push(load_image(&f, shape)?);
            labels.push(k as u32);
        }
    }
    if pixels.is_empty() {
        return Err(DatasetError::BadFolder {
            path: root.into(),
            message: "no .png/.jpg/.jpeg images in the class subfolders".into(),
        });
    }
    let images = stack(root, pixels, shape)?;
    Ok((
        ImageSet::new(images, Labels::Class(labels), None, None)?,
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
    shape: ImageShape,
    class_names: Option<&[String]>,
) -> Result<Manifest> {
    shape.check()?;
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
    let mut pixels = Vec::with_capacity(files.len());
    for f in &files {
        pixels.push(load_image(f, shape)?);
    }
    let images = stack(manifest, pixels, shape)?;
    Ok(Manifest {
        images: ImageSet::new(images, Labels::Class(labels), patients, sites)?,
        class_names: names,
        splits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(path: &Path, w: u32, h: u32, rgb: bool, v: u8) {
        if rgb {
            image::RgbImage::from_pixel(w, h, image::Rgb([v, v / 2, 255 - v]))
                .save(path)
                .unwrap();
        } else {
            image::GrayImage::from_pixel(w, h, image::Luma([v]))
                .save(path)
                .unwrap();
        }
    }

    #[test]
    fn converts_channels_and_resizes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.png");
        write_png(&p, 40, 30, true, 100);
        let grey = load_image(
            &p,
            ImageShape {
                channels: 1,
                height: 28,
                width: 28,
            },
        )
        .unwrap();
        assert_eq!(grey.len(), 28 * 28);
        let rgb = load_image(
            &p,
            ImageShape {
                channels: 3,
                height: 10,
                width: 12,
            },
        )
        .unwrap();
        assert_eq!(rgb.len(), 10 * 12 * 3);
        assert_eq!(&rgb[..3], &[100, 50, 155]);
    }
}
