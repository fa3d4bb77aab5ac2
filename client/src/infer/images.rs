//! The images `client infer` takes: PNG/JPEG files, or `dataset:split:index` for an image of a
//! MedMNIST split (e.g. `organamnist:test:123`), decoded into the network's input shape.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use datasets::ImageShape;
use datasets::medmnist::{self, MedMnistOptions};

use super::error::InferenceError;
use crate::infer_model::load_image_file;

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

/// An image decoded into the network's input shape (HWC bytes), with its label when known.
#[derive(Clone, Debug)]
pub struct LoadedImage {
    pub name: String,
    pub hwc: Vec<u8>,
    pub label: Option<usize>,
}

/// Loads every argument into `shape`; data sets are read once each (`data_dir`: else
/// `$HEAL_DATA_DIR`, else the cache; downloads only when allowed).
pub fn load_images(
    args: &[ImageArg],
    shape: ImageShape,
    data_dir: Option<&Path>,
) -> Result<Vec<LoadedImage>, InferenceError> {
    let mut sets: HashMap<String, datasets::Dataset> = HashMap::new();
    let mut out = Vec::with_capacity(args.len());
    for a in args {
        let name = a.name();
        match a {
            ImageArg::File(p) => out.push(LoadedImage {
                hwc: load_image_file(p, shape)?,
                name,
                label: None,
            }),
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
                    let size = shape.height as u32;
                    sets.insert(dataset.clone(), medmnist::load(dataset, size, &opts)?);
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
                if (set.channels(), set.height(), set.width())
                    != (shape.channels, shape.height, shape.width)
                {
                    return Err(InferenceError::Image {
                        source_name: name,
                        message: format!(
                            "{}×{}×{} images, the network takes {}×{}×{}",
                            set.channels(),
                            set.height(),
                            set.width(),
                            shape.channels,
                            shape.height,
                            shape.width
                        ),
                    });
                }
                let label = set
                    .class_labels()
                    .ok()
                    .and_then(|l| l.get(*index))
                    .map(|&l| l as usize);
                out.push(LoadedImage {
                    hwc: set.image_bytes(*index).to_vec(),
                    name,
                    label,
                });
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
}
