//! In-memory images with their labels and optional patient/site metadata.

use ndarray::{Array2, Array4, Axis};

use crate::error::{DatasetError, Result};

/// The labels of a split.
#[derive(Clone, Debug, PartialEq)]
pub enum Labels {
    /// One class per image, `0..num_classes` (MedMNIST labels shaped `(n, 1)`).
    Class(Vec<u32>),
    /// Several binary labels per image (ChestMNIST: `(n, k)` with `k > 1`), values 0 or 1.
    MultiLabel(Array2<u8>),
}

impl Labels {
    /// Number of labelled images.
    pub fn len(&self) -> usize {
        match self {
            Labels::Class(v) => v.len(),
            Labels::MultiLabel(a) => a.nrows(),
        }
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a data set asks of a classifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// One of `num_classes` classes.
    MultiClass,
    /// One of two classes.
    BinaryClass,
    /// Ordered grades (RetinaMNIST); trained and scored as multi-class.
    OrdinalRegression,
    /// Several independent binary labels (ChestMNIST).
    MultiLabel,
}

/// One split of a data set: images as `u8` in `(n, height, width, channels)` order (NHWC), labels,
/// and for manifests the patient and site of each image.
#[derive(Clone, Debug)]
pub struct ImageSet {
    images: Array4<u8>,
    labels: Labels,
    patients: Option<Vec<String>>,
    sites: Option<Vec<String>>,
}

impl ImageSet {
    /// Builds a split. `images` is `(n, h, w, c)` with `c` 1 or 3; `labels` has `n` rows;
    /// `patients` and `sites` (if given) have `n` entries.
    pub fn new(
        images: Array4<u8>,
        labels: Labels,
        patients: Option<Vec<String>>,
        sites: Option<Vec<String>>,
    ) -> Result<Self> {
        let n = images.len_of(Axis(0));
        if labels.len() != n {
            return Err(DatasetError::invalid(
                "image set",
                format!("{n} images but {} labels", labels.len()),
            ));
        }
        let c = images.len_of(Axis(3));
        if c != 1 && c != 3 {
            return Err(DatasetError::invalid(
                "image set",
                format!("images have {c} channels; only 1 (grey) and 3 (RGB) are supported"),
            ));
        }
        for (what, v) in [("patients", &patients), ("sites", &sites)] {
            if let Some(v) = v
                && v.len() != n
            {
                return Err(DatasetError::invalid(
                    "image set",
                    format!("{n} images but {} {what}", v.len()),
                ));
            }
        }
        Ok(Self {
            images: images.as_standard_layout().into_owned(),
            labels,
            patients,
            sites,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.len_of(Axis(0))
    }

    /// Whether the split is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Image height in pixels.
    pub fn height(&self) -> usize {
        self.images.len_of(Axis(1))
    }

    /// Image width in pixels.
    pub fn width(&self) -> usize {
        self.images.len_of(Axis(2))
    }

    /// Channels per pixel: 1 (grey) or 3 (RGB).
    pub fn channels(&self) -> usize {
        self.images.len_of(Axis(3))
    }

    /// The images, `(n, h, w, c)`, standard (row-major) layout.
    pub fn images(&self) -> &Array4<u8> {
        &self.images
    }

    /// The raw pixel bytes of image `i` in HWC order.
    pub fn image_bytes(&self, i: usize) -> &[u8] {
        let per = self.height() * self.width() * self.channels();
        // Standard layout is guaranteed by `new`, so the slice exists.
        let all = self.images.as_slice().unwrap_or(&[]);
        &all[i * per..(i + 1) * per]
    }

    /// The labels.
    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    /// The class labels, or an error for multi-label data.
    pub fn class_labels(&self) -> Result<&[u32]> {
        match &self.labels {
            Labels::Class(v) => Ok(v),
            Labels::MultiLabel(_) => Err(DatasetError::MultiLabel {
                name: "this data set".into(),
                operation: "single-label classification".into(),
            }),
        }
    }

    /// Patient id of each image, if known (manifests with a patient column).
    pub fn patients(&self) -> Option<&[String]> {
        self.patients.as_deref()
    }

    /// Site (hospital) of each image, if known (manifests with a site column).
    pub fn sites(&self) -> Option<&[String]> {
        self.sites.as_deref()
    }

    /// The images at `indices`, in that order (indices may repeat). Panics on an index out of
    /// range: indices come from this crate's partitioning, never from outside.
    pub fn subset(&self, indices: &[usize]) -> ImageSet {
        let images = self.images.select(Axis(0), indices);
        let labels = match &self.labels {
            Labels::Class(v) => Labels::Class(indices.iter().map(|&i| v[i]).collect()),
            Labels::MultiLabel(a) => Labels::MultiLabel(a.select(Axis(0), indices)),
        };
        let pick = |v: &Option<Vec<String>>| {
            v.as_ref()
                .map(|v| indices.iter().map(|&i| v[i].clone()).collect())
        };
        ImageSet {
            images,
            labels,
            patients: pick(&self.patients),
            sites: pick(&self.sites),
        }
    }

    /// The first `n` images (all of them if there are fewer).
    pub fn head(&self, n: usize) -> ImageSet {
        let idx: Vec<usize> = (0..n.min(self.len())).collect();
        self.subset(&idx)
    }

    /// Images per class (`num_classes` entries); multi-label data counts positives per label.
    pub fn class_counts(&self, num_classes: usize) -> Vec<usize> {
        let mut counts = vec![0usize; num_classes];
        match &self.labels {
            Labels::Class(v) => {
                for &l in v {
                    if let Some(c) = counts.get_mut(l as usize) {
                        *c += 1;
                    }
                }
            }
            Labels::MultiLabel(a) => {
                for row in a.rows() {
                    for (k, &x) in row.iter().enumerate() {
                        if x != 0
                            && let Some(c) = counts.get_mut(k)
                        {
                            *c += 1;
                        }
                    }
                }
            }
        }
        counts
    }

    /// Replaces the images (same count) — used by preprocessing.
    pub(crate) fn with_images(&self, images: Array4<u8>) -> ImageSet {
        ImageSet {
            images,
            labels: self.labels.clone(),
            patients: self.patients.clone(),
            sites: self.sites.clone(),
        }
    }
}

/// Facts about a data set that a model needs.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DatasetInfo {
    /// Short name (`organamnist`, or the folder/manifest name).
    pub name: String,
    /// The task.
    pub task: Task,
    /// Number of classes (labels for multi-label sets).
    pub num_classes: usize,
    /// Human-readable class names, `num_classes` of them.
    pub class_names: Vec<String>,
    /// Channels per image (1 or 3).
    pub channels: usize,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
}

/// A data set with its three splits.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// What it is.
    pub info: DatasetInfo,
    /// Training split.
    pub train: ImageSet,
    /// Validation split (may be empty).
    pub val: ImageSet,
    /// Test split.
    pub test: ImageSet,
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ImageSet {
        let images = Array4::from_shape_fn((4, 2, 2, 1), |(n, y, x, _)| (n * 10 + y * 2 + x) as u8);
        ImageSet::new(
            images,
            Labels::Class(vec![0, 1, 1, 2]),
            Some(vec!["a".into(), "a".into(), "b".into(), "c".into()]),
            None,
        )
        .unwrap()
    }

    #[test]
    fn subset_keeps_rows_together() {
        let s = tiny();
        let t = s.subset(&[3, 0]);
        assert_eq!(t.len(), 2);
        assert_eq!(t.image_bytes(0), &[30, 31, 32, 33]);
        assert_eq!(t.image_bytes(1), &[0, 1, 2, 3]);
        assert_eq!(t.class_labels().unwrap(), &[2, 0]);
        assert_eq!(t.patients().unwrap(), &["c".to_string(), "a".to_string()]);
    }

    #[test]
    fn counts_and_mismatch() {
        let s = tiny();
        assert_eq!(s.class_counts(3), vec![1, 2, 1]);
        let bad = ImageSet::new(
            Array4::zeros((2, 2, 2, 1)),
            Labels::Class(vec![0]),
            None,
            None,
        );
        assert!(matches!(bad, Err(DatasetError::Invalid { .. })));
        let bad_c = ImageSet::new(
            Array4::zeros((1, 2, 2, 2)),
            Labels::Class(vec![0]),
            None,
            None,
        );
        assert!(bad_c.is_err());
    }
}
