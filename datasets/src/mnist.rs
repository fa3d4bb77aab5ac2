//! MNIST from its original IDX files (`[dataset] kind = "mnist"`): 60,000 training and 10,000 test
//! images of handwritten digits, 28×28 grey, ten classes — what the seed on encrypted training
//! (MORE) measures itself on. The four gzip-compressed files are read from a folder (never
//! downloaded), checked against the authors' md5 sums, and parsed strictly: magic numbers, sizes,
//! counts and label range, with every length bounded before anything is allocated.
//!
//! MNIST has no official validation split; as is customary, the last `val` training images (5,000
//! by default) are the validation split and the first 55,000 the training one.
//!
//! Cite: Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, "Gradient-based learning applied to document
//! recognition", Proc. IEEE 86(11), 1998 (CC BY-SA 3.0).

use std::io::Read;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use ndarray::Array4;

use crate::error::{DatasetError, Result};
use crate::image_set::{Dataset, DatasetInfo, ImageSet, Labels, Task};

/// Environment variable naming the folder of MNIST's files.
pub const MNIST_DIR_ENV: &str = "HEAL_MNIST_DIR";

/// The four files and the md5 sums of the authors' originals.
pub const FILES: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    ),
    (
        "train-labels-idx1-ubyte.gz",
        "d53e105ee54ea40749a09fcbcd1e9432",
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        "9fb629c4189551a2d022fa330f9573f3",
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        "ec29112dd5afa0611ce80d1b7f02629c",
    ),
];

/// Most images one IDX file may announce (MNIST's training file has 60,000).
pub const MAX_IMAGES: usize = 1 << 20;
/// Largest side an IDX image may announce.
pub const MAX_SIDE: usize = 512;
/// Most bytes a compressed file may grow to: the training images are 47,040,016.
const MAX_INFLATED: u64 = 64 << 20;

/// Where MNIST's files are looked for: `configured`, else `$HEAL_MNIST_DIR`, else the `mnist`
/// folder beside the MedMNIST data directory (`$HEAL_DATA_DIR/../mnist`, how `../shared/datasets`
/// lays them out) when it exists, else the per-user cache directory's `heal/mnist`.
pub fn resolve_dir(configured: Option<&Path>) -> PathBuf {
    if let Some(p) = configured {
        return p.to_path_buf();
    }
    if let Some(v) = std::env::var_os(MNIST_DIR_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(v);
    }
    if let Some(v) = std::env::var_os(crate::medmnist::DATA_DIR_ENV).filter(|v| !v.is_empty()) {
        let beside = PathBuf::from(v).join("../mnist");
        if beside.is_dir() {
            return beside;
        }
    }
    dirs::cache_dir()
        .map(|d| d.join("heal").join("mnist"))
        .unwrap_or_else(|| PathBuf::from("mnist"))
}

/// A data set by the name a command line gives (`client infer mnist:test:3`, `--data mnist`):
/// `mnist` is MNIST (5,000 validation images; from `mnist` beside `opts.data_dir` when that
/// exists, else [`resolve_dir`]), any other name a MedMNIST set of `size`.
pub fn load_by_name(
    name: &str,
    size: u32,
    opts: &crate::medmnist::MedMnistOptions,
) -> Result<Dataset> {
    if !name.eq_ignore_ascii_case("mnist") {
        return crate::medmnist::load(name, size, opts);
    }
    let dir = opts
        .data_dir
        .as_ref()
        .map(|d| d.join("../mnist"))
        .filter(|d| d.is_dir())
        .unwrap_or_else(|| resolve_dir(None));
    load(&dir, 5000, opts.verify_md5)
}

/// Reads, checks and splits MNIST from `dir`: `val` of the 60,000 training images (the last
/// ones) become the validation split.
pub fn load(dir: &Path, val: usize, verify_md5: bool) -> Result<Dataset> {
    for (name, _) in FILES {
        if !dir.join(name).is_file() {
            return Err(DatasetError::MissingMnist {
                dir: dir.to_path_buf(),
                missing: name.into(),
            });
        }
    }
    let read = |i: usize| -> Result<Vec<u8>> {
        let (name, md5) = FILES[i];
        let path = dir.join(name);
        let raw = std::fs::read(&path).map_err(|source| DatasetError::Io {
            path: path.clone(),
            action: "read",
            source,
        })?;
        if verify_md5 {
            let found = crate::medmnist::hex(&Md5::digest(&raw));
            if found != md5 {
                return Err(DatasetError::BadIdx {
                    path,
                    message: format!(
                        "md5 {found}, the authors' file has {md5} (set verify_md5 = false for a \
                         copy of your own)"
                    ),
                });
            }
        }
        inflate(&raw).map_err(|message| DatasetError::BadIdx { path, message })
    };
    let bad = |i: usize| {
        let path = dir.join(FILES[i].0);
        move |message: String| DatasetError::BadIdx { path, message }
    };
    let (train_x, tr_shape) = parse_images(&read(0)?).map_err(bad(0))?;
    let train_y = parse_labels(&read(1)?).map_err(bad(1))?;
    let (test_x, te_shape) = parse_images(&read(2)?).map_err(bad(2))?;
    let test_y = parse_labels(&read(3)?).map_err(bad(3))?;
    if train_y.len() != tr_shape.0 || test_y.len() != te_shape.0 {
        return Err(DatasetError::invalid(
            "MNIST",
            format!(
                "{} training images with {} labels, {} test images with {} labels",
                tr_shape.0,
                train_y.len(),
                te_shape.0,
                test_y.len()
            ),
        ));
    }
    if (tr_shape.1, tr_shape.2) != (te_shape.1, te_shape.2) {
        return Err(DatasetError::invalid(
            "MNIST",
            format!(
                "training images are {}×{}, test images {}×{}",
                tr_shape.1, tr_shape.2, te_shape.1, te_shape.2
            ),
        ));
    }
    if val >= tr_shape.0 {
        return Err(DatasetError::invalid(
            "[dataset] val",
            format!(
                "{val} of {} training images leaves none to train on",
                tr_shape.0
            ),
        ));
    }
    let all = set(train_x, train_y, tr_shape)?;
    let cut = tr_shape.0 - val;
    let train = all.subset(&(0..cut).collect::<Vec<_>>());
    let val = all.subset(&(cut..tr_shape.0).collect::<Vec<_>>());
    let test = set(test_x, test_y, te_shape)?;
    Ok(Dataset {
        info: DatasetInfo {
            name: "mnist".into(),
            task: Task::MultiClass,
            num_classes: 10,
            class_names: (0..10).map(|d| d.to_string()).collect(),
            channels: 1,
            height: tr_shape.1,
            width: tr_shape.2,
        },
        train,
        val,
        test,
    })
}

fn set(pixels: Vec<u8>, labels: Vec<u32>, (n, h, w): IdxShape) -> Result<ImageSet> {
    let images = Array4::from_shape_vec((n, h, w, 1), pixels)
        .map_err(|e| DatasetError::invalid("MNIST images", e.to_string()))?;
    ImageSet::new(images, Labels::Class(labels), None, None)
}

/// A gzip stream inflated, at most [`MAX_INFLATED`] bytes.
fn inflate(raw: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(raw)
        .take(MAX_INFLATED + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("not a gzip stream: {e}"))?;
    if out.len() as u64 > MAX_INFLATED {
        return Err(format!("inflates to more than {MAX_INFLATED} bytes"));
    }
    Ok(out)
}

fn be32(b: &[u8], at: usize) -> usize {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

/// Count, rows and columns of an IDX image file.
pub type IdxShape = (usize, usize, usize);

/// An IDX image file (magic 0x00000803): the pixels and their shape.
pub fn parse_images(b: &[u8]) -> std::result::Result<(Vec<u8>, IdxShape), String> {
    if b.len() < 16 {
        return Err(format!(
            "{} bytes: shorter than the 16-byte header",
            b.len()
        ));
    }
    let (magic, n, h, w) = (be32(b, 0), be32(b, 4), be32(b, 8), be32(b, 12));
    if magic != 0x803 {
        return Err(format!("magic {magic:#010x}, images have 0x00000803"));
    }
    if n == 0 || n > MAX_IMAGES || !(1..=MAX_SIDE).contains(&h) || !(1..=MAX_SIDE).contains(&w) {
        return Err(format!(
            "{n} images of {h}×{w}: at most {MAX_IMAGES} images of sides 1..={MAX_SIDE}"
        ));
    }
    let want = n * h * w;
    if b.len() - 16 != want {
        return Err(format!(
            "{} bytes of pixels where {n} images of {h}×{w} have {want}",
            b.len() - 16
        ));
    }
    Ok((b[16..].to_vec(), (n, h, w)))
}

/// An IDX label file (magic 0x00000801), each label a digit 0–9.
pub fn parse_labels(b: &[u8]) -> std::result::Result<Vec<u32>, String> {
    if b.len() < 8 {
        return Err(format!("{} bytes: shorter than the 8-byte header", b.len()));
    }
    let (magic, n) = (be32(b, 0), be32(b, 4));
    if magic != 0x801 {
        return Err(format!("magic {magic:#010x}, labels have 0x00000801"));
    }
    if n == 0 || n > MAX_IMAGES || b.len() - 8 != n {
        return Err(format!(
            "{} label bytes where the header announces {n} (at most {MAX_IMAGES})",
            b.len() - 8
        ));
    }
    if let Some((i, &l)) = b[8..].iter().enumerate().find(|(_, l)| **l > 9) {
        return Err(format!("label {i} is {l}: digits are 0–9"));
    }
    Ok(b[8..].iter().map(|&l| u32::from(l)).collect())
}

#[cfg(test)]
mod tests;
