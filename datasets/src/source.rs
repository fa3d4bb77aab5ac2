//! Where a data set comes from (`[dataset]` in a TOML config) and loading it into three splits.

use std::path::{Path, PathBuf};

use crate::decode::{ImageDecoder, InputPreparation};
use crate::dicom::{DecodeLimits, Window};
use crate::error::{DatasetError, Result};
use crate::folder::{self, ManifestColumns, Split};
use crate::image_set::{Dataset, DatasetInfo, ImageSet, ImageShape, Task};
use crate::medmnist::{self, MedMnistOptions};
use crate::mnist;
use crate::partition::split_by_group;
use crate::preprocess::resize_set;
use crate::resize::{MAX_INPUT_SIDE, ResizePolicy};

/// The `[dataset]` table. `kind` selects the source; unknown keys are rejected.
///
/// ```toml
/// [dataset]
/// kind = "medmnist"        # "medmnist", "folder", "manifest", "mnist" or "unlabelled"
/// name = "organamnist"     # any 2D MedMNIST set
/// size = 28                # 28, 64, 128 or 224: the file read
/// # height = 256           # the network's input (default: size); images are resized to it
/// # width = 256
/// # resize = "stretch"     # "stretch", "crop" or "pad" (see `resize`)
/// # data_dir = "/data/medmnist"  # default: $HEAL_DATA_DIR, else ~/.cache/heal/medmnist
/// offline = false          # true: never download (also HEAL_OFFLINE=1)
/// verify_md5 = true        # check the file against the official md5 table
/// ```
///
/// Folders, manifests and unlabelled archives read PNG, JPEG and DICOM; they take `resize`, a
/// DICOM `window`
/// (`"auto"`, `"abdomen"`, `"kidney"`, `"lung"`, `"bone"` or `{ center = 40, width = 400 }`) and
/// `max_pixels` (per file, all frames: larger files are refused before decoding).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DatasetConfig {
    /// An official MedMNIST `.npz` file (official train/val/test splits).
    Medmnist {
        /// Data set name, e.g. `organamnist`, `bloodmnist`, `breastmnist`.
        name: String,
        /// Image size of the file read: 28 (default), 64, 128 or 224.
        #[serde(default = "default_size")]
        size: u32,
        /// Network input height (default: `size`); images are resized to it.
        #[serde(default)]
        height: Option<usize>,
        /// Network input width (default: `size`).
        #[serde(default)]
        width: Option<usize>,
        /// How images are brought to `height × width` (default `stretch`).
        #[serde(default)]
        resize: ResizePolicy,
        /// Data directory. Relative paths are relative to the config file's folder. Default:
        /// `$HEAL_DATA_DIR`, else the per-user cache directory.
        #[serde(default)]
        data_dir: Option<PathBuf>,
        /// Never download a missing file (also `HEAL_OFFLINE=1`).
        #[serde(default)]
        offline: bool,
        /// Check the md5 against the official table (default true).
        #[serde(default = "yes")]
        verify_md5: bool,
    },
    /// A folder with one subfolder of PNG/JPEG/DICOM images per class.
    Folder {
        /// The folder (relative to the config file's folder unless absolute).
        root: PathBuf,
        /// Target channels (1 or 3), height and width (up to 512); images are converted and
        /// resized.
        channels: usize,
        /// Target height.
        height: usize,
        /// Target width.
        width: usize,
        /// How images are brought to `height × width` (default `stretch`).
        #[serde(default)]
        resize: ResizePolicy,
        /// DICOM window (default `auto`: the file's own, else min–max).
        #[serde(default)]
        window: Window,
        /// Most pixels one file may hold, all frames together (default 2^26).
        #[serde(default = "default_max_pixels")]
        max_pixels: usize,
        /// Share of images held out for validation (default 0.1).
        #[serde(default = "default_val")]
        val_fraction: f64,
        /// Share of images held out for testing (default 0.2).
        #[serde(default = "default_test")]
        test_fraction: f64,
        /// Seed of the split.
        #[serde(default)]
        seed: u64,
    },
    /// A CSV manifest (path, label, optional patient/site/split columns).
    Manifest {
        /// The CSV file (relative to the config file's folder unless absolute).
        path: PathBuf,
        /// Column names (`[dataset.columns]`).
        #[serde(default)]
        columns: ManifestColumns,
        /// Class names in label order (default: from the labels).
        #[serde(default)]
        class_names: Option<Vec<String>>,
        /// Target channels (1 or 3).
        channels: usize,
        /// Target height (up to 512).
        height: usize,
        /// Target width (up to 512).
        width: usize,
        /// How images are brought to `height × width` (default `stretch`).
        #[serde(default)]
        resize: ResizePolicy,
        /// DICOM window (default `auto`: the file's own, else min–max).
        #[serde(default)]
        window: Window,
        /// Most pixels one file may hold, all frames together (default 2^26).
        #[serde(default = "default_max_pixels")]
        max_pixels: usize,
        /// Without a split column: share held out for validation (default 0.1), by patient
        /// (the patient column, else DICOM Patient IDs) when known.
        #[serde(default = "default_val")]
        val_fraction: f64,
        /// Without a split column: share held out for testing (default 0.2).
        #[serde(default = "default_test")]
        test_fraction: f64,
        /// Seed of the split.
        #[serde(default)]
        seed: u64,
    },
    /// MNIST's four original IDX files in a folder (never downloaded; `mnist` module).
    Mnist {
        /// The folder. Default: `$HEAL_MNIST_DIR`, else `mnist` beside `$HEAL_DATA_DIR`, else
        /// the per-user cache directory's `heal/mnist`.
        #[serde(default)]
        data_dir: Option<PathBuf>,
        /// The last `val` of the 60,000 training images are the validation split (default 5,000).
        #[serde(default = "default_mnist_val")]
        val: usize,
        /// Check the files against the authors' md5 sums (default true).
        #[serde(default = "yes")]
        verify_md5: bool,
    },
    /// Images without labels anywhere below a folder ([`crate::unlabelled`]); only
    /// self-supervised pretraining reads them.
    Unlabelled {
        /// The folder (relative to the config file's folder unless absolute).
        root: PathBuf,
        /// Target channels (1 or 3).
        channels: usize,
        /// Target height (up to 512).
        height: usize,
        /// Target width (up to 512).
        width: usize,
        /// How images are brought to `height × width` (default `stretch`).
        #[serde(default)]
        resize: ResizePolicy,
        /// DICOM window (default `auto`: the file's own, else min–max).
        #[serde(default)]
        window: Window,
        /// Most pixels one file may hold, all frames together (default 2^26).
        #[serde(default = "default_max_pixels")]
        max_pixels: usize,
        /// Images read at most, from files in an order shuffled by `seed` (default 50,000).
        #[serde(default = "default_max_images")]
        max_images: usize,
        /// Seed of that order.
        #[serde(default)]
        seed: u64,
        /// Skip files that do not decode (counted and logged) instead of stopping (default
        /// false).
        #[serde(default)]
        skip_unreadable: bool,
    },
}

fn default_max_images() -> usize {
    50_000
}

fn default_mnist_val() -> usize {
    5000
}
fn default_size() -> u32 {
    28
}
fn default_max_pixels() -> usize {
    DecodeLimits::default().max_pixels
}
fn yes() -> bool {
    true
}
fn default_val() -> f64 {
    0.1
}
fn default_test() -> f64 {
    0.2
}

impl DatasetConfig {
    /// A MedMNIST source with defaults (28 px, md5 checked, downloads allowed).
    pub fn medmnist(name: &str) -> Self {
        Self::Medmnist {
            name: name.into(),
            size: 28,
            height: None,
            width: None,
            resize: ResizePolicy::Stretch,
            data_dir: None,
            offline: false,
            verify_md5: true,
        }
    }

    /// Short name of the data set.
    pub fn name(&self) -> String {
        match self {
            Self::Medmnist { name, .. } => name.to_ascii_lowercase(),
            Self::Folder { root, .. } => stem(root),
            Self::Manifest { path, .. } => stem(path),
            Self::Mnist { .. } => "mnist".into(),
            Self::Unlabelled { root, .. } => stem(root),
        }
    }

    /// Whether the set has labels (all kinds but `unlabelled`).
    pub fn is_labelled(&self) -> bool {
        !matches!(self, Self::Unlabelled { .. })
    }
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dataset".into())
}

/// `p`, relative to `base` unless absolute.
pub(crate) fn rel(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Loads the data set `cfg` describes; relative paths are resolved against `base_dir` (the
/// config file's folder).
pub fn load_dataset(cfg: &DatasetConfig, base_dir: &Path, progress: bool) -> Result<Dataset> {
    match cfg {
        DatasetConfig::Medmnist {
            name,
            size,
            height,
            width,
            resize,
            data_dir,
            offline,
            verify_md5,
        } => {
            let mut data = medmnist::load(
                name,
                *size,
                &MedMnistOptions {
                    data_dir: data_dir.as_ref().map(|d| rel(base_dir, d)),
                    offline: *offline || medmnist::offline_from_env(),
                    verify_md5: *verify_md5,
                    progress,
                    ..MedMnistOptions::default()
                },
            )?;
            let (h, w) = (
                height.unwrap_or(*size as usize),
                width.unwrap_or(*size as usize),
            );
            if (h, w) != (data.info.height, data.info.width) {
                check_side(h, w)?;
                for set in [&mut data.train, &mut data.val, &mut data.test] {
                    *set = resize_set(set, h, w, *resize)?;
                }
                data.info.height = h;
                data.info.width = w;
            }
            Ok(data)
        }
        DatasetConfig::Folder {
            root,
            channels,
            height,
            width,
            resize,
            window,
            max_pixels,
            val_fraction,
            test_fraction,
            seed,
        } => {
            let decoder = decoder(*channels, *height, *width, *resize, *window, *max_pixels)?;
            let (all, classes) = folder::read_class_folder(&rel(base_dir, root), &decoder)?;
            let [tr, va, te] = split_by_group(
                all.len(),
                all.patients(),
                *val_fraction,
                *test_fraction,
                *seed,
            )?;
            Ok(assemble(
                cfg.name(),
                classes,
                decoder.shape,
                &all,
                [tr, va, te],
            ))
        }
        DatasetConfig::Manifest {
            path,
            columns,
            class_names,
            channels,
            height,
            width,
            resize,
            window,
            max_pixels,
            val_fraction,
            test_fraction,
            seed,
        } => {
            let decoder = decoder(*channels, *height, *width, *resize, *window, *max_pixels)?;
            let shape = decoder.shape;
            let m = folder::read_manifest(
                &rel(base_dir, path),
                columns,
                &decoder,
                class_names.as_deref(),
            )?;
            let parts = match &m.splits {
                Some(s) => {
                    let pick = |want: Split| {
                        s.iter()
                            .enumerate()
                            .filter(|(_, x)| **x == want)
                            .map(|(i, _)| i)
                            .collect::<Vec<_>>()
                    };
                    [pick(Split::Train), pick(Split::Val), pick(Split::Test)]
                }
                None => split_by_group(
                    m.images.len(),
                    m.images.patients(),
                    *val_fraction,
                    *test_fraction,
                    *seed,
                )?,
            };
            if parts[0].is_empty() {
                return Err(DatasetError::BadManifest {
                    path: rel(base_dir, path),
                    message: "no training images".into(),
                });
            }
            Ok(assemble(cfg.name(), m.class_names, shape, &m.images, parts))
        }
        DatasetConfig::Mnist {
            data_dir,
            val,
            verify_md5,
        } => {
            let dir = mnist::resolve_dir(data_dir.as_ref().map(|d| rel(base_dir, d)).as_deref());
            mnist::load(&dir, *val, *verify_md5)
        }
        DatasetConfig::Unlabelled { root, .. } => Err(DatasetError::invalid(
            "[dataset] kind",
            format!(
                "\"unlabelled\" ({}) has no labels to train or test on: it serves only \
                 `client pretrain` with [pretrain] method = \"contrastive\"",
                rel(base_dir, root).display()
            ),
        )),
    }
}

fn check_side(height: usize, width: usize) -> Result<()> {
    if !(1..=MAX_INPUT_SIDE).contains(&height) || !(1..=MAX_INPUT_SIDE).contains(&width) {
        return Err(DatasetError::invalid(
            "[dataset] height/width",
            format!("{height}×{width}: each side must be 1..={MAX_INPUT_SIDE}"),
        ));
    }
    Ok(())
}

fn decoder(
    channels: usize,
    height: usize,
    width: usize,
    resize: ResizePolicy,
    window: Window,
    max_pixels: usize,
) -> Result<ImageDecoder> {
    check_side(height, width)?;
    let mut d = ImageDecoder::new(ImageShape {
        channels,
        height,
        width,
    });
    d.resize = resize;
    d.window = window;
    d.limits.max_pixels = max_pixels;
    d.check()?;
    Ok(d)
}

impl DatasetConfig {
    /// How this data set makes files into inputs, for the trained network's file.
    pub fn preparation(&self) -> InputPreparation {
        match self {
            DatasetConfig::Medmnist { size, resize, .. } => InputPreparation {
                resize: *resize,
                window: Window::default(),
                medmnist_size: Some(*size),
            },
            DatasetConfig::Folder { resize, window, .. }
            | DatasetConfig::Manifest { resize, window, .. }
            | DatasetConfig::Unlabelled { resize, window, .. } => InputPreparation {
                resize: *resize,
                window: *window,
                medmnist_size: None,
            },
            DatasetConfig::Mnist { .. } => InputPreparation {
                resize: ResizePolicy::Stretch,
                window: Window::default(),
                medmnist_size: None,
            },
        }
    }

    /// The decoder that makes a file into this data set's input (what `client infer` and the
    /// portal use for files given by hand): the configured channels, size, resize policy and
    /// window; MedMNIST sets take their stored channels.
    pub fn decoder(&self, channels: usize) -> Result<ImageDecoder> {
        match self {
            DatasetConfig::Medmnist {
                size,
                height,
                width,
                resize,
                ..
            } => {
                let h = height.unwrap_or(*size as usize);
                let w = width.unwrap_or(*size as usize);
                decoder(
                    channels,
                    h,
                    w,
                    *resize,
                    Window::default(),
                    default_max_pixels(),
                )
            }
            DatasetConfig::Folder {
                channels,
                height,
                width,
                resize,
                window,
                max_pixels,
                ..
            }
            | DatasetConfig::Manifest {
                channels,
                height,
                width,
                resize,
                window,
                max_pixels,
                ..
            }
            | DatasetConfig::Unlabelled {
                channels,
                height,
                width,
                resize,
                window,
                max_pixels,
                ..
            } => decoder(*channels, *height, *width, *resize, *window, *max_pixels),
            // a digit given by hand: grey, 28×28
            DatasetConfig::Mnist { .. } => decoder(
                1,
                28,
                28,
                ResizePolicy::Stretch,
                Window::default(),
                default_max_pixels(),
            ),
        }
    }
}

fn assemble(
    name: String,
    classes: Vec<String>,
    shape: ImageShape,
    all: &ImageSet,
    [tr, va, te]: [Vec<usize>; 3],
) -> Dataset {
    let task = if classes.len() == 2 {
        Task::BinaryClass
    } else {
        Task::MultiClass
    };
    Dataset {
        info: DatasetInfo {
            name,
            task,
            num_classes: classes.len(),
            class_names: classes,
            channels: shape.channels,
            height: shape.height,
            width: shape.width,
        },
        train: all.subset(&tr),
        val: all.subset(&va),
        test: all.subset(&te),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Wrap {
        dataset: DatasetConfig,
    }

    #[test]
    fn parses_and_rejects_unknown_keys() {
        let ok: Wrap = toml::from_str(
            "[dataset]\nkind = \"medmnist\"\nname = \"breastmnist\"\noffline = true\n",
        )
        .unwrap();
        assert_eq!(
            ok.dataset,
            DatasetConfig::Medmnist {
                name: "breastmnist".into(),
                size: 28,
                height: None,
                width: None,
                resize: ResizePolicy::Stretch,
                data_dir: None,
                offline: true,
                verify_md5: true
            }
        );
        let bad = toml::from_str::<Wrap>(
            "[dataset]\nkind = \"medmnist\"\nname = \"breastmnist\"\nofline = true\n",
        );
        let msg = bad.unwrap_err().to_string();
        assert!(msg.contains("ofline"), "{msg}");
        let m: Wrap = toml::from_str(
            "[dataset]\nkind = \"manifest\"\npath = \"m.csv\"\nchannels = 1\nheight = 28\nwidth = 28\n[dataset.columns]\npatient = \"pid\"\n",
        )
        .unwrap();
        match m.dataset {
            DatasetConfig::Manifest { columns, .. } => {
                assert_eq!(columns.patient.as_deref(), Some("pid"));
                assert_eq!(columns.path, "path");
            }
            other => panic!("{other:?}"),
        }
    }
}
