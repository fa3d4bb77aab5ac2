//! The images `client infer` takes: PNG, JPEG or DICOM files (a multi-frame DICOM gives one
//! image per frame), or `dataset:split:index` for an image of a MedMNIST split (e.g.
//! `organamnist:test:123`), made into the network's input the way training made them
//! ([`datasets::InputPreparation`], recorded in the network file).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use datasets::medmnist::MedMnistOptions;
use datasets::{ImageDecoder, InputPreparation};

use super::error::InferenceError;

/// One image argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageArg {
    File(PathBuf),
    Split {
        dataset: String,
        split: String,
        index: usize,
    },
}

impl ImageArg {
    /// `name:split:index` with split train, val or test (and no such file), else a path.
    pub fn parse(s: &str) -> Self {
        let parts: Vec<&str> = s.split(':').collect();
        if let [dataset, split, index] = parts.as_slice()
            && matches!(*split, "train" | "val" | "test")
            && !Path::new(s).exists()
            && let Ok(index) = index.parse::<usize>()
        {
            return ImageArg::Split {
                dataset: dataset.to_ascii_lowercase(),
                split: split.to_string(),
                index,
            };
        }
        ImageArg::File(PathBuf::from(s))
    }

    pub fn name(&self) -> String {
        match self {
            ImageArg::File(p) => p.display().to_string(),
            ImageArg::Split {
                dataset,
                split,
                index,
            } => format!("{dataset}:{split}:{index}"),
        }
    }
}

/// An image made into the network's input (HWC bytes), with its label when known.
#[derive(Clone, Debug)]
pub struct LoadedImage {
    pub name: String,
    pub hwc: Vec<u8>,
    pub label: Option<usize>,
}

/// The MedMNIST size an image of a split is read at: the one training read, else the network's
/// side when MedMNIST has it, else 28 (then resized like any image).
fn medmnist_size(prep: &InputPreparation, side: usize) -> u32 {
    prep.medmnist_size.unwrap_or(match side {
        64 | 128 | 224 => side as u32,
        _ => 28,
    })
}

/// Loads every argument through `decoder` (files) or from its MedMNIST split (read once per
/// data set, at the size training read, then resized like a file); `data_dir`: else
/// `$HEAL_DATA_DIR`, else the cache; downloads only when allowed.
pub fn load_images(
    args: &[ImageArg],
    decoder: &ImageDecoder,
    prep: &InputPreparation,
    data_dir: Option<&Path>,
) -> Result<Vec<LoadedImage>, InferenceError> {
    let mut sets: HashMap<String, datasets::Dataset> = HashMap::new();
    let mut out = Vec::with_capacity(args.len());
    for a in args {
        let name = a.name();
        match a {
            ImageArg::File(p) => {
                let file = decoder.load(p)?;
                let frames = file.images.len();
                for (k, hwc) in file.images.into_iter().enumerate() {
                    out.push(LoadedImage {
                        name: if frames > 1 {
                            format!("{name} [frame {}/{frames}]", k + 1)
                        } else {
                            name.clone()
                        },
                        hwc,
                        label: None,
                    });
                }
            }
            ImageArg::Split {
                dataset,
                split,
                index,
            } => {
                if !sets.contains_key(dataset) {
                    let opts = MedMnistOptions {
                        data_dir: data_dir.map(Path::to_path_buf),
                        progress: false,
                        ..Default::default()
                    };
                    let size = medmnist_size(prep, decoder.shape.height);
                    sets.insert(
                        dataset.clone(),
                        datasets::mnist::load_by_name(dataset, size, &opts)?,
                    );
                }
                let ds = &sets[dataset];
                let set = match split.as_str() {
                    "train" => &ds.train,
                    "val" => &ds.val,
                    _ => &ds.test,
                };
                if *index >= set.len() {
                    return Err(InferenceError::Image {
                        source_name: name,
                        message: format!("the {split} split has {} images", set.len()),
                    });
                }
                let hwc = decoder.conform(
                    set.image_bytes(*index),
                    set.channels(),
                    (set.height(), set.width()),
                )?;
                let label = set
                    .class_labels()
                    .ok()
                    .and_then(|l| l.get(*index))
                    .map(|&l| l as usize);
                out.push(LoadedImage { hwc, name, label });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_parse() {
        assert_eq!(
            ImageArg::parse("organamnist:test:123"),
            ImageArg::Split {
                dataset: "organamnist".into(),
                split: "test".into(),
                index: 123
            }
        );
        assert_eq!(
            ImageArg::parse("scan.png"),
            ImageArg::File(PathBuf::from("scan.png"))
        );
        assert_eq!(
            ImageArg::parse("a:holdout:3"),
            ImageArg::File(PathBuf::from("a:holdout:3"))
        );
        assert_eq!(
            ImageArg::parse("a:test:x"),
            ImageArg::File(PathBuf::from("a:test:x"))
        );
    }

    #[test]
    fn split_images_are_read_at_the_trained_size() {
        let prep = InputPreparation::default();
        assert_eq!(medmnist_size(&prep, 28), 28);
        assert_eq!(medmnist_size(&prep, 128), 128);
        assert_eq!(medmnist_size(&prep, 256), 28);
        let trained = InputPreparation {
            medmnist_size: Some(64),
            ..prep
        };
        assert_eq!(medmnist_size(&trained, 256), 64);
    }
}
