//! The MedMNIST catalogue: every data set's task, channels, class names, split sizes and the md5
//! sums of the official files at each size.

use crate::error::{DatasetError, Result};
use crate::image_set::Task;

/// The official MedMNIST record (v3.0, the files the `medmnist` 3.0.2 package downloads).
pub const RECORD_URL: &str = "https://zenodo.org/records/10519652/files";

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

/// Number of images per split the catalogue lists (train, val, test).
pub fn expected_counts(name: &str) -> Result<[usize; 3]> {
    Ok(catalog_entry(name)?.samples)
}
