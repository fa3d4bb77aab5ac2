//! MedMNIST v2/v3 (`.npz`): the official catalogue with md5 sums, data-directory resolution,
//! verified download from the official Zenodo record, and a strict reader.
//!
//! Each archive holds `train_images`, `train_labels`, `val_images`, `val_labels`, `test_images`,
//! `test_labels` (uint8). Images are `(n, s, s)` (grey) or `(n, s, s, 3)` (RGB) with `s` one of
//! 28, 64, 128, 224; labels are `(n, 1)` (one class) or `(n, k)` (ChestMNIST's 14 binary labels).
//! The order of the arrays inside the zip differs between files, so they are read by name.
//!
//! Cite: Yang et al., "MedMNIST v2", Scientific Data 10:41 (2023), and each set's source.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use md5::{Digest, Md5};
use ndarray::{Array2, Array4, ArrayD, IxDyn, OwnedRepr};
use ndarray_npy::{NpzReader, ReadNpyError, ReadNpzError};

use crate::error::{DatasetError, Result};
use crate::image_set::{Dataset, DatasetInfo, ImageSet, Labels, Task};

/// The official MedMNIST record (v3.0, the files the `medmnist` 3.0.2 package downloads).
pub const RECORD_URL: &str = "https://zenodo.org/records/10519652/files";

/// Environment variable naming the data directory.
pub const DATA_DIR_ENV: &str = "HEAL_DATA_DIR";

/// Environment variable that, set to `1`/`true`, forbids downloads (as `offline = true`).
pub const OFFLINE_ENV: &str = "HEAL_OFFLINE";

/// Image sizes the record provides, in the order of [`CatalogEntry::md5`].
pub const SIZES: [u32; 4] = [28, 64, 128, 224];

/// One 2D data set of the official MedMNIST table (`medmnist/info.py`, version 3.0.2).
#[derive(Debug, Clone, Copy)]
pub struct CatalogEntry {
    /// File stem, e.g. `organamnist`.
    pub name: &'static str,
    /// Task.
    pub task: Task,
    /// Channels (1 grey, 3 RGB).
    pub channels: usize,
    /// Class names (label names for multi-label).
    pub classes: &'static [&'static str],
    /// Images in train, val, test.
    pub samples: [usize; 3],
    /// Official md5 of the 28, 64, 128 and 224 pixel files.
    pub md5: [&'static str; 4],
}

impl CatalogEntry {
    /// File name for an image size (`organamnist.npz`, `organamnist_64.npz` …).
    pub fn file_name(&self, size: u32) -> Result<String> {
        self.size_index(size)?;
        Ok(if size == 28 {
            format!("{}.npz", self.name)
        } else {
            format!("{}_{size}.npz", self.name)
        })
    }

    /// The official md5 for an image size.
    pub fn md5_for(&self, size: u32) -> Result<&'static str> {
        Ok(self.md5[self.size_index(size)?])
    }

    /// Download URL for an image size under `base` (normally [`RECORD_URL`]).
    pub fn url(&self, base: &str, size: u32) -> Result<String> {
        Ok(format!(
            "{}/{}?download=1",
            base.trim_end_matches('/'),
            self.file_name(size)?
        ))
    }

    fn size_index(&self, size: u32) -> Result<usize> {
        SIZES
            .iter()
            .position(|&s| s == size)
            .ok_or_else(|| DatasetError::UnknownSize {
                name: self.name.into(),
                size,
            })
    }

    /// Number of classes (labels for multi-label).
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }
}

const ORGAN: &[&str] = &[
    "bladder",
    "femur-left",
    "femur-right",
    "heart",
    "kidney-left",
    "kidney-right",
    "liver",
    "lung-left",
    "lung-right",
    "pancreas",
    "spleen",
];

/// The official table of 2D MedMNIST sets (md5 sums from `medmnist/info.py` 3.0.2, Zenodo
/// record 10519652).
pub const CATALOG: &[CatalogEntry] = &[
    CatalogEntry {
        name: "pathmnist",
        task: Task::MultiClass,
        channels: 3,
        classes: &[
            "adipose",
            "background",
            "debris",
            "lymphocytes",
            "mucus",
            "smooth muscle",
            "normal colon mucosa",
            "cancer-associated stroma",
            "colorectal adenocarcinoma epithelium",
        ],
        samples: [89996, 10004, 7180],
        md5: [
            "a8b06965200029087d5bd730944a56c1",
            "55aa9c1e0525abe5a6b9d8343a507616",
            "ac42d08fb904d92c244187169d1fd1d9",
            "2c51a510bcdc9cf8ddb2af93af1eadec",
        ],
    },
    CatalogEntry {
        name: "chestmnist",
        task: Task::MultiLabel,
        channels: 1,
        classes: &[
            "atelectasis",
            "cardiomegaly",
            "effusion",
            "infiltration",
            "mass",
            "nodule",
            "pneumonia",
            "pneumothorax",
            "consolidation",
            "edema",
            "emphysema",
            "fibrosis",
            "pleural",
            "hernia",
        ],
        samples: [78468, 11219, 22433],
        md5: [
            "02c8a6516a18b556561a56cbdd36c4a8",
            "9de6cd0b934ebb5b7426cfba5efbae16",
            "db107e5590b27930b62dbaf558aebee3",
            "45bd33e6f06c3e8cdb481c74a89152aa",
        ],
    },
    CatalogEntry {
        name: "dermamnist",
        task: Task::MultiClass,
        channels: 3,
        classes: &[
            "actinic keratoses and intraepithelial carcinoma",
            "basal cell carcinoma",
            "benign keratosis-like lesions",
            "dermatofibroma",
            "melanoma",
            "melanocytic nevi",
            "vascular lesions",
        ],
        samples: [7007, 1003, 2005],
        md5: [
            "0744692d530f8e62ec473284d019b0c7",
            "b70a2f5635c6199aeaa28c31d7202e1f",
            "2defd784463fa5243564e855ed717de1",
            "8974907d8e169bef5f5b96bc506ae45d",
        ],
    },
    CatalogEntry {
        name: "octmnist",
        task: Task::MultiClass,
        channels: 1,
        classes: &[
            "choroidal neovascularization",
            "diabetic macular edema",
            "drusen",
            "normal",
        ],
        samples: [97477, 10832, 1000],
        md5: [
            "c68d92d5b585d8d81f7112f81e2d0842",
            "e229e9440236b774d9f0dfef9d07bdaf",
            "0a97e76651ace45c5d943ee3f65b63ae",
            "abc493b6d529d5de7569faaef2773ba3",
        ],
    },
    CatalogEntry {
        name: "pneumoniamnist",
        task: Task::BinaryClass,
        channels: 1,
        classes: &["normal", "pneumonia"],
        samples: [4708, 524, 624],
        md5: [
            "28209eda62fecd6e6a2d98b1501bb15f",
            "8f4eceb4ccffa70c672198ea285246c6",
            "05b46931834c231683c68f40c47b2971",
            "d6a3c71de1b945ea11211b03746c1fe1",
        ],
    },
    CatalogEntry {
        name: "retinamnist",
        task: Task::OrdinalRegression,
        channels: 3,
        classes: &["0", "1", "2", "3", "4"],
        samples: [1080, 120, 400],
        md5: [
            "bd4c0672f1bba3e3a89f0e4e876791e4",
            "afda852cc34dcda56f86ad2b2457dbcc",
            "e48e916a24454daf90583d4e6efb1a18",
            "eae7e3b6f3fcbda4ae613ebdcbe35348",
        ],
    },
    CatalogEntry {
        name: "breastmnist",
        task: Task::BinaryClass,
        channels: 1,
        classes: &["malignant", "normal, benign"],
        samples: [546, 78, 156],
        md5: [
            "750601b1f35ba3300ea97c75c52ff8f6",
            "742edef2a1fd1524b2efff4bd7ba9364",
            "363e4b3f8d712e9b5de15470a2aaadf1",
            "b56378a6eefa9fed602bb16d192d4c8b",
        ],
    },
    CatalogEntry {
        name: "bloodmnist",
        task: Task::MultiClass,
        channels: 3,
        classes: &[
            "basophil",
            "eosinophil",
            "erythroblast",
            "immature granulocytes",
            "lymphocyte",
            "monocyte",
            "neutrophil",
            "platelet",
        ],
        samples: [11959, 1712, 3421],
        md5: [
            "7053d0359d879ad8a5505303e11de1dc",
            "2b94928a2ae4916078ca51e05b6b800b",
            "adace1e0ed228fccda1f39692059dd4c",
            "b718ff6835fcbdb22ba9eacccd7b2601",
        ],
    },
    CatalogEntry {
        name: "tissuemnist",
        task: Task::MultiClass,
        channels: 1,
        classes: &[
            "Collecting Duct, Connecting Tubule",
            "Distal Convoluted Tubule",
            "Glomerular endothelial cells",
            "Interstitial endothelial cells",
            "Leukocytes",
            "Podocytes",
            "Proximal Tubule Segments",
            "Thick Ascending Limb",
        ],
        samples: [165466, 23640, 47280],
        md5: [
            "ebe78ee8b05294063de985d821c1c34b",
            "123ece2eba09d0aa5d698fda57103344",
            "61b955355d7425a89687b06cca3ce0c2",
            "b077128c4a949f0a4eb01517f9037b9c",
        ],
    },
    CatalogEntry {
        name: "organamnist",
        task: Task::MultiClass,
        channels: 1,
        classes: ORGAN,
        samples: [34561, 6491, 17778],
        md5: [
            "68e3f8846a6bd62f0c9bf841c0d9eacc",
            "2dcccc29b88e6da5a01161ef20cda288",
            "eeae80d0a227a8d099027e1b3cfd3b60",
            "50747347e05c87dd3aaf92c49f9f3170",
        ],
    },
    CatalogEntry {
        name: "organcmnist",
        task: Task::MultiClass,
        channels: 1,
        classes: ORGAN,
        samples: [12975, 2392, 8216],
        md5: [
            "b9ceb9546e10131b32923c5bbeaea2b1",
            "3ce34a8724ea6f548e6db4744d03b6a9",
            "773c1f009daa3fe5d9a2a201b2a7ed94",
            "050f5e875dc056f6768abf94ec9995d1",
        ],
    },
    CatalogEntry {
        name: "organsmnist",
        task: Task::MultiClass,
        channels: 1,
        classes: ORGAN,
        samples: [13932, 2452, 8827],
        md5: [
            "9ab87b696fb54e2a387ebe992d6ed5f1",
            "53a6d115339d874c25e309a994ff46d3",
            "ded0c5fa01a95dc4978b956f613e9b8e",
            "b354719e553fbbb2513d5533f52a4cb1",
        ],
    },
];

/// Looks a data set up in the catalogue (case-insensitive).
pub fn catalog_entry(name: &str) -> Result<&'static CatalogEntry> {
    let lower = name.to_ascii_lowercase();
    CATALOG
        .iter()
        .find(|e| e.name == lower)
        .ok_or_else(|| DatasetError::UnknownDataset {
            name: name.into(),
            known: CATALOG
                .iter()
                .map(|e| e.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Where MedMNIST files are looked for: `configured` if given, else `$HEAL_DATA_DIR`, else the
/// per-user cache directory (`~/.cache/heal/medmnist` on Linux).
pub fn resolve_data_dir(configured: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = configured {
        return Ok(p.to_path_buf());
    }
    if let Some(v) = std::env::var_os(DATA_DIR_ENV)
        && !v.is_empty()
    {
        return Ok(PathBuf::from(v));
    }
    dirs::cache_dir()
        .map(|d| d.join("heal").join("medmnist"))
        .ok_or_else(|| {
            DatasetError::invalid(
                "data directory",
                format!("no per-user cache directory is known here; set {DATA_DIR_ENV}"),
            )
        })
}

/// Whether `HEAL_OFFLINE` asks for offline mode.
pub fn offline_from_env() -> bool {
    std::env::var(OFFLINE_ENV)
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
        .unwrap_or(false)
}

/// How to find and check a MedMNIST file.
#[derive(Clone, Debug)]
pub struct MedMnistOptions {
    /// The data directory (`None`: `$HEAL_DATA_DIR`, else the cache directory).
    pub data_dir: Option<PathBuf>,
    /// Never download. `Default` and configs read `HEAL_OFFLINE=1` into it; an explicit value
    /// here is obeyed as given.
    pub offline: bool,
    /// Check the md5 against the official table before reading (default true).
    pub verify_md5: bool,
    /// Base URL of the record (tests point it at a local server).
    pub base_url: String,
    /// Show a progress bar while downloading.
    pub progress: bool,
}

impl Default for MedMnistOptions {
    fn default() -> Self {
        Self {
            data_dir: None,
            offline: offline_from_env(),
            verify_md5: true,
            base_url: RECORD_URL.into(),
            progress: true,
        }
    }
}

/// Finds (downloading if allowed) and checks the file of `name` at `size`; returns its path.
pub fn fetch(name: &str, size: u32, opts: &MedMnistOptions) -> Result<PathBuf> {
    let entry = catalog_entry(name)?;
    let dir = resolve_data_dir(opts.data_dir.as_deref())?;
    let path = dir.join(entry.file_name(size)?);
    let expected = entry.md5_for(size)?;
    let url = entry.url(&opts.base_url, size)?;
    if !path.exists() {
        if opts.offline {
            return Err(DatasetError::MissingOffline { path, url });
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| DatasetError::io(&dir, "create data directory", e))?;
        tracing::info!(%url, path = %path.display(), "downloading MedMNIST file");
        download(&url, &path, Some(expected), opts.progress)?;
        return Ok(path);
    }
    if opts.verify_md5 {
        let found = md5_file(&path)?;
        if found != expected {
            return Err(DatasetError::Md5Mismatch {
                path,
                expected: expected.into(),
                found,
            });
        }
    }
    Ok(path)
}

/// Loads a MedMNIST data set: [`fetch`] then [`read_npz`] with the catalogue's expectations.
pub fn load(name: &str, size: u32, opts: &MedMnistOptions) -> Result<Dataset> {
    let entry = catalog_entry(name)?;
    let path = fetch(name, size, opts)?;
    read_npz(&path, &NpzSpec::from_entry(entry, size))
}

/// The md5 of a file as 32 lowercase hex digits.
pub fn md5_file(path: &Path) -> Result<String> {
    let f = File::open(path).map_err(|e| DatasetError::io(path, "open", e))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r
            .read(&mut buf)
            .map_err(|e| DatasetError::io(path, "read", e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Downloads `url` to `dest` (through `dest.part`, renamed only when complete and, if
/// `expected_md5` is given, matching). Honours `HTTPS_PROXY`/`NO_PROXY`.
pub fn download(url: &str, dest: &Path, expected_md5: Option<&str>, progress: bool) -> Result<()> {
    let fail = |message: String| DatasetError::Download {
        url: url.into(),
        path: dest.to_path_buf(),
        message,
    };
    let mut builder = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_body(Some(Duration::from_secs(120)));
    // Loopback (tests, local mirrors) never goes through a proxy from the environment.
    let host = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split(['/', ':']).next())
        .unwrap_or("");
    if matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        builder = builder.proxy(None);
    }
    let config = builder.build();
    let agent = ureq::Agent::new_with_config(config);
    let resp = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
    let total = resp.body().content_length();
    let mut reader = resp.into_body().into_reader();

    let mut part = dest.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let mut out = File::create(&part).map_err(|e| DatasetError::io(&part, "create", e))?;
    let bar = if progress {
        let bar = match total {
            Some(t) => indicatif::ProgressBar::new(t),
            None => indicatif::ProgressBar::new_spinner(),
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(
            dest.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut got: u64 = 0;
    let result = (|| -> Result<()> {
        loop {
            let n = reader.read(&mut buf).map_err(|e| fail(e.to_string()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|e| DatasetError::io(&part, "write", e))?;
            got += n as u64;
            bar.set_position(got);
        }
        out.flush()
            .map_err(|e| DatasetError::io(&part, "write", e))?;
        if let Some(t) = total
            && t != got
        {
            return Err(fail(format!("got {got} of {t} bytes")));
        }
        if let Some(expected) = expected_md5 {
            let found = hex(&h.finalize());
            if found != expected {
                return Err(DatasetError::Md5Mismatch {
                    path: dest.to_path_buf(),
                    expected: expected.into(),
                    found,
                });
            }
        }
        Ok(())
    })();
    bar.finish_and_clear();
    drop(out);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    std::fs::rename(&part, dest).map_err(|e| DatasetError::io(dest, "rename into place", e))
}

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

/// Number of images per split the catalogue lists (train, val, test).
pub fn expected_counts(name: &str) -> Result<[usize; 3]> {
    Ok(catalog_entry(name)?.samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_is_consistent() {
        for e in CATALOG {
            for m in e.md5 {
                assert_eq!(m.len(), 32, "{}", e.name);
                assert!(m.bytes().all(|b| b.is_ascii_hexdigit()));
            }
            assert!(e.num_classes() >= 2);
            assert!(e.channels == 1 || e.channels == 3);
        }
        let org = catalog_entry("OrganAMNIST").unwrap();
        assert_eq!(org.file_name(28).unwrap(), "organamnist.npz");
        assert_eq!(org.file_name(224).unwrap(), "organamnist_224.npz");
        assert_eq!(
            org.url(RECORD_URL, 64).unwrap(),
            "https://zenodo.org/records/10519652/files/organamnist_64.npz?download=1"
        );
        assert!(matches!(
            org.file_name(32),
            Err(DatasetError::UnknownSize { .. })
        ));
        assert!(matches!(
            catalog_entry("mnist"),
            Err(DatasetError::UnknownDataset { .. })
        ));
    }

    #[test]
    fn explicit_data_dir_wins() {
        let p = resolve_data_dir(Some(Path::new("/some/where"))).unwrap();
        assert_eq!(p, PathBuf::from("/some/where"));
    }

    #[test]
    fn md5_of_known_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(md5_file(&p).unwrap(), "900150983cd24fb0d6963f7d28e17f72");
    }
}
