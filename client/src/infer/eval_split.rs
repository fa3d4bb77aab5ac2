//! The images `client evaluate-encrypted` runs on: a split of a MedMNIST set by name, or the
//! split of any data set a config's `[dataset]` section describes (folder, manifest, DICOM,
//! MedMNIST of any size), each image made into the network's input as training made it.

use std::path::{Path, PathBuf};

use datasets::medmnist::MedMnistOptions;
use datasets::{DatasetConfig, ImageSet, InputPreparation};
use he_agg::infer::Network;

use super::error::InferenceError;
use training::export::input_shape;

/// Where the evaluated images come from.
#[derive(Clone, Debug, PartialEq)]
pub enum EvalData {
    /// A MedMNIST set by name, read at the size training read, or `mnist` (MNIST's IDX files).
    MedMnist(String),
    /// The `[dataset]` section of a config file (a `client baseline` or federation config).
    Config(PathBuf),
}

/// The `[dataset]` section of a config file; relative paths in it are relative to its folder.
pub fn dataset_of_config(path: &Path) -> Result<DatasetConfig, InferenceError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| InferenceError::Usage(format!("{}: {e}", path.display())))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| InferenceError::Usage(format!("{}: {e}", path.display())))?;
    let section = table.get("dataset").cloned().ok_or_else(|| {
        InferenceError::Usage(format!("{}: no [dataset] section", path.display()))
    })?;
    section
        .try_into()
        .map_err(|e| InferenceError::Usage(format!("{}: [dataset]: {e}", path.display())))
}

fn pick<'a>(ds: &'a datasets::Dataset, split: &str) -> Result<&'a ImageSet, InferenceError> {
    match split {
        "train" => Ok(&ds.train),
        "val" => Ok(&ds.val),
        "test" => Ok(&ds.test),
        other => Err(InferenceError::Usage(format!(
            "split {other:?}: train, val or test"
        ))),
    }
}

/// The images of one split, ready for the network.
pub struct SplitImages {
    /// HWC bytes in the network's input shape.
    pub pixels: Vec<Vec<u8>>,
    pub labels: Vec<u32>,
    /// The data set's name, for the report.
    pub dataset: String,
}

/// The split's images, labels and data set name; at most `limit` images.
#[allow(clippy::too_many_arguments)]
pub fn load_split(
    data: &EvalData,
    split: &str,
    limit: Option<usize>,
    net: &Network,
    prep: &InputPreparation,
    data_dir: Option<&Path>,
    progress: bool,
) -> Result<SplitImages, InferenceError> {
    let shape = input_shape(net);
    let (ds, name) = match data {
        EvalData::MedMnist(name) => {
            let size = prep.medmnist_size.unwrap_or(match shape.height {
                s @ (28 | 64 | 128 | 224) => s as u32,
                _ => 28,
            });
            let mo = MedMnistOptions {
                data_dir: data_dir.map(Path::to_path_buf),
                progress,
                ..Default::default()
            };
            (
                datasets::mnist::load_by_name(name, size, &mo)?,
                name.clone(),
            )
        }
        EvalData::Config(path) => {
            let cfg = dataset_of_config(path)?;
            let base = path.parent().unwrap_or(Path::new("."));
            (datasets::load_dataset(&cfg, base, progress)?, cfg.name())
        }
    };
    let set = pick(&ds, split)?;
    let n = limit.unwrap_or(set.len()).min(set.len());
    let labels = set.class_labels()?[..n].to_vec();
    let decoder = prep.decoder(shape);
    let same =
        (set.channels(), set.height(), set.width()) == (shape.channels, shape.height, shape.width);
    let pixels = (0..n)
        .map(|i| {
            if same {
                Ok(set.image_bytes(i).to_vec())
            } else {
                decoder.conform(
                    set.image_bytes(i),
                    set.channels(),
                    (set.height(), set.width()),
                )
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    if labels.iter().any(|&l| l as usize >= net.output_len()) {
        return Err(InferenceError::Usage(format!(
            "{name} has labels beyond the network's {} classes",
            net.output_len()
        )));
    }
    Ok(SplitImages {
        pixels,
        labels,
        dataset: name,
    })
}
