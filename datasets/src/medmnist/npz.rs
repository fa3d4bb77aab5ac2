//! The strict reader of MedMNIST-layout `.npz` archives: every array looked up by name and
//! checked for dtype, shape and label range.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use ndarray::{Array2, Array4, ArrayD, IxDyn, OwnedRepr};
use ndarray_npy::{NpzReader, ReadNpyError, ReadNpzError};

use super::CatalogEntry;
use crate::error::{DatasetError, Result};
use crate::image_set::{Dataset, DatasetInfo, ImageSet, Labels, Task};

/// What an `.npz` file must hold.
#[derive(Clone, Debug)]
pub struct NpzSpec {
    /// Data set name (for [`DatasetInfo`]).
    pub name: String,
    /// Task.
    pub task: Task,
    /// Channels every image must have.
    pub channels: usize,
    /// Image side length, if fixed (`None`: any square size).
    pub size: Option<usize>,
    /// Class names (their count is the number of classes).
    pub classes: Vec<String>,
}

impl NpzSpec {
    /// The expectations the catalogue sets for `entry` at `size`.
    pub fn from_entry(entry: &CatalogEntry, size: u32) -> Self {
        Self {
            name: entry.name.into(),
            task: entry.task,
            channels: entry.channels,
            size: Some(size as usize),
            classes: entry.classes.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// Reads a MedMNIST-layout `.npz` archive, checking every array's presence, dtype, shape and
/// label range against `spec`.
pub fn read_npz(path: &Path, spec: &NpzSpec) -> Result<Dataset> {
    let f = File::open(path).map_err(|e| DatasetError::io(path, "open", e))?;
    let meta = f
        .metadata()
        .map_err(|e| DatasetError::io(path, "stat", e))?;
    if meta.len() == 0 {
        return Err(DatasetError::CorruptArchive {
            path: path.into(),
            message: "the file is empty (0 bytes)".into(),
        });
    }
    let mut npz = NpzReader::new(BufReader::new(f)).map_err(|e| DatasetError::CorruptArchive {
        path: path.into(),
        message: e.to_string(),
    })?;
    let names = npz.names().map_err(|e| DatasetError::CorruptArchive {
        path: path.into(),
        message: e.to_string(),
    })?;
    let mut splits = Vec::with_capacity(3);
    let mut size = spec.size;
    for split in ["train", "val", "test"] {
        let set = read_split(&mut npz, &names, path, spec, split, &mut size)?;
        splits.push(set);
    }
    let (train, val, test) = {
        let mut it = splits.into_iter();
        match (it.next(), it.next(), it.next()) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => unreachable!("three splits were read"),
        }
    };
    let side = size.unwrap_or(0);
    Ok(Dataset {
        info: DatasetInfo {
            name: spec.name.clone(),
            task: spec.task,
            num_classes: spec.classes.len(),
            class_names: spec.classes.clone(),
            channels: spec.channels,
            height: side,
            width: side,
        },
        train,
        val,
        test,
    })
}

fn read_split(
    npz: &mut NpzReader<BufReader<File>>,
    names: &[String],
    path: &Path,
    spec: &NpzSpec,
    split: &str,
    size: &mut Option<usize>,
) -> Result<ImageSet> {
    let img_name = format!("{split}_images");
    let lab_name = format!("{split}_labels");
    let images = read_array::<u8>(npz, names, path, &img_name, "uint8")?;
    let shape = images.shape().to_vec();
    let shape_err = |expected: String| DatasetError::WrongShape {
        path: path.into(),
        array: img_name.clone(),
        expected,
        found: shape.clone(),
    };
    let want = match spec.channels {
        1 => "(n, s, s) or (n, s, s, 1)".to_string(),
        c => format!("(n, s, s, {c})"),
    };
    let (n, h, w, c) = match shape.as_slice() {
        [n, h, w] => (*n, *h, *w, 1),
        [n, h, w, c] => (*n, *h, *w, *c),
        _ => return Err(shape_err(want)),
    };
    if c != spec.channels || h != w || h == 0 {
        return Err(shape_err(want));
    }
    match size {
        Some(s) if *s != h => {
            return Err(shape_err(format!("images of {s}×{s} pixels: {want}")));
        }
        None => *size = Some(h),
        _ => {}
    }
    let images: Array4<u8> = images
        .into_shape_with_order(IxDyn(&[n, h, w, c]))
        .and_then(|a| a.into_dimensionality())
        .map_err(|e| shape_err(e.to_string()))?;

    let labels = read_labels(npz, names, path, &lab_name)?;
    let k = labels.ncols();
    if labels.nrows() != n {
        return Err(DatasetError::WrongShape {
            path: path.into(),
            array: lab_name,
            expected: format!("({n}, k): one row per image of {img_name}"),
            found: vec![labels.nrows(), k],
        });
    }
    let classes = spec.classes.len();
    let labels = if spec.task == Task::MultiLabel {
        if k != classes {
            return Err(DatasetError::WrongShape {
                path: path.into(),
                array: lab_name,
                expected: format!("(n, {classes})"),
                found: vec![n, k],
            });
        }
        let mut out = Array2::<u8>::zeros((n, k));
        for ((row, col), &v) in labels.indexed_iter() {
            if !(0..=1).contains(&v) {
                return Err(DatasetError::LabelOutOfRange {
                    path: path.into(),
                    what: lab_name,
                    row,
                    label: v,
                    classes: 2,
                });
            }
            out[(row, col)] = v as u8;
        }
        Labels::MultiLabel(out)
    } else {
        if k != 1 {
            return Err(DatasetError::WrongShape {
                path: path.into(),
                array: lab_name,
                expected: "(n, 1) or (n,)".into(),
                found: vec![n, k],
            });
        }
        let mut out = Vec::with_capacity(n);
        for (row, &v) in labels.column(0).iter().enumerate() {
            if v < 0 || v as usize >= classes {
                return Err(DatasetError::LabelOutOfRange {
                    path: path.into(),
                    what: lab_name,
                    row,
                    label: v,
                    classes,
                });
            }
            out.push(v as u32);
        }
        Labels::Class(out)
    };
    ImageSet::new(images, labels, None, None)
}

/// Labels as `(n, k)` i64, accepting uint8 (MedMNIST) and the common integer dtypes.
fn read_labels(
    npz: &mut NpzReader<BufReader<File>>,
    names: &[String],
    path: &Path,
    name: &str,
) -> Result<Array2<i64>> {
    let arr: ArrayD<i64> = match read_array::<u8>(npz, names, path, name, "an integer type") {
        Ok(a) => a.mapv(i64::from),
        Err(DatasetError::WrongDtype { .. }) => {
            match read_array::<i64>(npz, names, path, name, "an integer type") {
                Ok(a) => a,
                Err(DatasetError::WrongDtype { .. }) => read_array::<i32>(
                    npz,
                    names,
                    path,
                    name,
                    "an integer type (uint8, int32, int64)",
                )?
                .mapv(i64::from),
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    let shape = arr.shape().to_vec();
    match shape.as_slice() {
        [n] => arr
            .into_shape_with_order((*n, 1))
            .map_err(|e| DatasetError::CorruptArray {
                path: path.into(),
                array: name.into(),
                message: e.to_string(),
            }),
        [_, _] => arr
            .into_dimensionality()
            .map_err(|e| DatasetError::CorruptArray {
                path: path.into(),
                array: name.into(),
                message: e.to_string(),
            }),
        _ => Err(DatasetError::WrongShape {
            path: path.into(),
            array: name.into(),
            expected: "(n, 1), (n,) or (n, k)".into(),
            found: shape,
        }),
    }
}

fn read_array<T>(
    npz: &mut NpzReader<BufReader<File>>,
    names: &[String],
    path: &Path,
    name: &str,
    expected_dtype: &str,
) -> Result<ArrayD<T>>
where
    T: ndarray_npy::ReadableElement + Clone,
{
    if !names.iter().any(|n| n == name) {
        return Err(DatasetError::MissingArray {
            path: path.into(),
            array: name.into(),
            present: names.join(", "),
        });
    }
    npz.by_name::<OwnedRepr<T>, IxDyn>(name)
        .map_err(|e| match e {
            ReadNpzError::Npy(ReadNpyError::WrongDescriptor(d)) => DatasetError::WrongDtype {
                path: path.into(),
                array: name.into(),
                expected: expected_dtype.into(),
                found: d.to_string(),
            },
            ReadNpzError::Npy(ReadNpyError::MissingData) => DatasetError::CorruptArray {
                path: path.into(),
                array: name.into(),
                message: "the data is shorter than its header says (truncated)".into(),
            },
            other => DatasetError::CorruptArray {
                path: path.into(),
                array: name.into(),
                message: other.to_string(),
            },
        })
        .map(|a| a.as_standard_layout().into_owned())
}
