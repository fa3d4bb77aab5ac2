//! A folder of images without labels (`[dataset] kind = "unlabelled"`): a hospital's archive
//! before anyone has labelled it — PNG, JPEG and DICOM files anywhere below the folder, DICOM
//! files found by their `DICM` preamble whatever their names (PACS exports rarely carry an
//! extension). Only self-supervised pretraining (`client pretrain`, `method = "contrastive"`)
//! reads it; every labelled use refuses it.
//!
//! Archives are large and uneven, so the walk is bounded: at most [`MAX_DEPTH`] folders deep,
//! at most [`MAX_LISTED`] candidate files, symbolic links never followed; the files are shuffled
//! by `seed` and decoded until `max_images` images are held, so the sample is spread over the
//! whole archive rather than its first patients.

use std::io::Read;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;

use crate::decode::{ImageDecoder, has_image_extension};
use crate::dicom::is_dicom;
use crate::error::{DatasetError, Result};
use crate::image_set::{ImageSet, Labels};
use crate::source::{DatasetConfig, rel};

/// Folders below the root the walk enters at most.
pub const MAX_DEPTH: usize = 32;
/// Candidate files the walk lists at most (each costs a path in memory).
pub const MAX_LISTED: usize = 2_000_000;
/// Bytes of decoded pixels held at most (4 GiB; pretraining holds them again as 32-bit floats):
/// 5.5 million images at 28² grey, 65,536 at 256², 5,461 at 512² RGB.
pub const MAX_PIXEL_BYTES: usize = 4 << 30;

/// How an unlabelled folder is sampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sampling {
    /// Images kept at most (a multi-frame DICOM file gives one per frame).
    pub max_images: usize,
    /// Seed of the order the files are read in.
    pub seed: u64,
    /// Skip (and count) image files that do not decode instead of stopping at the first.
    pub skip_unreadable: bool,
}

/// What was read.
#[derive(Debug)]
pub struct Unlabelled {
    /// The images, every label 0 (never read).
    pub images: ImageSet,
    /// Candidate files listed below the root.
    pub files: usize,
    /// Files skipped because they did not decode (`skip_unreadable`).
    pub skipped: usize,
}

/// Whether a file without an image extension is DICOM (its first 132 bytes).
fn dicom_preamble(path: &Path) -> bool {
    let mut head = [0u8; 132];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| is_dicom(&head))
}

fn list(root: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(|e| DatasetError::io(&dir, "list folder", e))?;
        let mut here: Vec<_> = entries.filter_map(|e| e.ok()).collect();
        here.sort_by_key(|e| e.file_name());
        for entry in here {
            // file_type does not follow links: a link loop cannot hold the walk
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if kind.is_dir() {
                if depth + 1 > MAX_DEPTH {
                    return Err(DatasetError::BadFolder {
                        path,
                        message: format!("more than {MAX_DEPTH} folders below the root"),
                    });
                }
                stack.push((path, depth + 1));
            } else if kind.is_file() && (has_image_extension(&path) || dicom_preamble(&path)) {
                if found.len() == MAX_LISTED {
                    return Err(DatasetError::BadFolder {
                        path: root.into(),
                        message: format!(
                            "more than {MAX_LISTED} image files: point root at a part of the archive"
                        ),
                    });
                }
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

fn bar(progress: bool, files: usize, root: &Path) -> indicatif::ProgressBar {
    if !progress {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(files as u64);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} files, eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(format!("reading {}", root.display()));
    bar
}

/// Reads up to `sampling.max_images` images from the files below `root` (a progress bar over
/// the files when `progress`).
pub fn read_unlabelled(
    root: &Path,
    decoder: &ImageDecoder,
    sampling: Sampling,
    progress: bool,
) -> Result<Unlabelled> {
    read_capped(root, decoder, sampling, progress, MAX_PIXEL_BYTES)
}

fn read_capped(
    root: &Path,
    decoder: &ImageDecoder,
    sampling: Sampling,
    progress: bool,
    max_bytes: usize,
) -> Result<Unlabelled> {
    decoder.check()?;
    if sampling.max_images == 0 {
        return Err(DatasetError::invalid(
            "[dataset] max_images",
            "0: at least one image",
        ));
    }
    if !root.is_dir() {
        return Err(DatasetError::BadFolder {
            path: root.into(),
            message: "not a folder".into(),
        });
    }
    let mut files = list(root)?;
    let listed = files.len();
    files.shuffle(&mut ChaCha8Rng::seed_from_u64(sampling.seed));
    let shape = decoder.shape;
    let per_image = shape.channels * shape.height * shape.width;
    let mut pixels: Vec<u8> = Vec::new();
    let (mut n, mut skipped) = (0usize, 0usize);
    let bar = bar(progress, files.len(), root);
    for f in &files {
        if n == sampling.max_images {
            break;
        }
        bar.inc(1);
        match decoder.load(f) {
            Ok(d) => {
                for im in d.images.into_iter().take(sampling.max_images - n) {
                    if (n + 1) * per_image > max_bytes {
                        return Err(DatasetError::invalid(
                            "[dataset] max_images",
                            format!(
                                "{}: {n} images of {}×{}×{} already fill {:.2} GiB; set max_images to at most {n}",
                                sampling.max_images,
                                shape.channels,
                                shape.height,
                                shape.width,
                                max_bytes as f64 / f64::from(1u32 << 30)
                            ),
                        ));
                    }
                    pixels.extend_from_slice(&im);
                    n += 1;
                }
            }
            Err(e) if sampling.skip_unreadable => {
                skipped += 1;
                tracing::warn!(file = %f.display(), error = %e, "skipped: does not decode");
            }
            Err(e) => {
                return Err(DatasetError::BadFolder {
                    path: f.clone(),
                    message: format!("{e} (set skip_unreadable = true to skip such files)"),
                });
            }
        }
    }
    bar.finish_and_clear();
    if n == 0 {
        return Err(DatasetError::BadFolder {
            path: root.into(),
            message: format!(
                "no image decoded: {listed} .png/.jpg/.jpeg/.dcm or DICOM files listed, {skipped} skipped"
            ),
        });
    }
    debug_assert_eq!(pixels.len(), n * per_image);
    let images =
        ndarray::Array4::from_shape_vec((n, shape.height, shape.width, shape.channels), pixels)
            .map_err(|e| DatasetError::BadFolder {
                path: root.into(),
                message: format!("internal: cannot stack images: {e}"),
            })?;
    tracing::info!(
        root = %root.display(),
        listed,
        images = n,
        skipped,
        "unlabelled images read"
    );
    Ok(Unlabelled {
        images: ImageSet::new(images, Labels::Class(vec![0; n]), None, None)?,
        files: listed,
        skipped,
    })
}

/// Reads an `unlabelled` source; other kinds are refused (they go through
/// [`crate::load_dataset`]). A relative root is relative to `base_dir`, the config's folder.
pub fn load_unlabelled(cfg: &DatasetConfig, base_dir: &Path, progress: bool) -> Result<Unlabelled> {
    let DatasetConfig::Unlabelled {
        root,
        channels,
        max_images,
        seed,
        skip_unreadable,
        ..
    } = cfg
    else {
        return Err(DatasetError::invalid(
            "[dataset] kind",
            format!("{} has labels: read it with load_dataset", cfg.name()),
        ));
    };
    read_unlabelled(
        &rel(base_dir, root),
        &cfg.decoder(*channels)?,
        Sampling {
            max_images: *max_images,
            seed: *seed,
            skip_unreadable: *skip_unreadable,
        },
        progress,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom_writer::{ct_slice, synthetic_hu};
    use crate::image_set::ImageShape;

    fn png(v: u8) -> Vec<u8> {
        let mut out = Vec::new();
        image::DynamicImage::from(image::GrayImage::from_pixel(40, 30, image::Luma([v])))
            .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    fn decoder() -> ImageDecoder {
        ImageDecoder::new(ImageShape {
            channels: 1,
            height: 16,
            width: 16,
        })
    }

    fn sampling(max_images: usize) -> Sampling {
        Sampling {
            max_images,
            seed: 7,
            skip_unreadable: false,
        }
    }

    /// An archive as PACS exports leave them: patients/studies/series, DICOM files without
    /// extensions, PNGs beside them, files that are not images at all.
    fn archive() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for p in 0..3 {
            let series = dir.path().join(format!("patient{p}/study/series"));
            std::fs::create_dir_all(&series).unwrap();
            let hu = synthetic_hu(24, p % 2, p as u32);
            let dcm = ct_slice(24, 24, &hu, Some(&format!("P{p}"))).unwrap();
            std::fs::write(series.join("IM000001"), dcm).unwrap();
            std::fs::write(
                dir.path().join(format!("patient{p}/photo.png")),
                png(40 * p as u8),
            )
            .unwrap();
            std::fs::write(series.join("notes.txt"), b"not an image").unwrap();
            std::fs::write(series.join("DICOMDIR.bak"), [0u8; 200]).unwrap();
        }
        dir
    }

    #[test]
    fn reads_every_image_below_the_root_dicom_found_by_preamble() {
        let dir = archive();
        let got = read_unlabelled(dir.path(), &decoder(), sampling(100), false).unwrap();
        assert_eq!((got.files, got.skipped, got.images.len()), (6, 0, 6));
        assert_eq!(got.images.height(), 16);
        // the same seed reads the same sample; max_images bounds it
        let a = read_unlabelled(dir.path(), &decoder(), sampling(4), false).unwrap();
        let b = read_unlabelled(dir.path(), &decoder(), sampling(4), false).unwrap();
        assert_eq!(a.images.len(), 4);
        assert_eq!(a.images.images(), b.images.images());
    }

    #[test]
    fn a_file_that_does_not_decode_stops_the_read_or_is_skipped_when_asked() {
        let dir = archive();
        let bad = dir.path().join("patient1/broken.png");
        std::fs::write(&bad, b"\x89PNG\r\n\x1a\n truncated").unwrap();
        let err = read_unlabelled(dir.path(), &decoder(), sampling(100), false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("broken.png") && err.contains("skip_unreadable"),
            "{err}"
        );
        let skip = Sampling {
            skip_unreadable: true,
            ..sampling(100)
        };
        let got = read_unlabelled(dir.path(), &decoder(), skip, false).unwrap();
        assert_eq!((got.files, got.skipped, got.images.len()), (7, 1, 6));
    }

    #[test]
    fn held_pixels_are_bounded_with_the_count_that_fits() {
        let dir = archive();
        // 16×16 grey: 256 bytes an image, 4 fit in 1,100 bytes
        let err = read_capped(dir.path(), &decoder(), sampling(100), false, 1_100)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("4 images of 1×16×16") && err.contains("at most 4"),
            "{err}"
        );
        let got = read_capped(dir.path(), &decoder(), sampling(4), false, 1_100).unwrap();
        assert_eq!(got.images.len(), 4);
    }

    #[test]
    fn links_are_not_followed_and_depth_is_bounded() {
        let dir = archive();
        // a link back to the root would walk forever if followed
        std::os::unix::fs::symlink(dir.path(), dir.path().join("patient0/loop")).unwrap();
        std::os::unix::fs::symlink(
            dir.path().join("patient1/photo.png"),
            dir.path().join("patient2/linked.png"),
        )
        .unwrap();
        let got = read_unlabelled(dir.path(), &decoder(), sampling(100), false).unwrap();
        assert_eq!(got.files, 6);
        let mut deep = dir.path().to_path_buf();
        for k in 0..=MAX_DEPTH {
            deep = deep.join(format!("d{k}"));
        }
        std::fs::create_dir_all(&deep).unwrap();
        let err = read_unlabelled(dir.path(), &decoder(), sampling(100), false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("more than {MAX_DEPTH} folders")),
            "{err}"
        );
    }

    #[test]
    fn refuses_empty_archives_and_labelled_use() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), b"x").unwrap();
        let err = read_unlabelled(dir.path(), &decoder(), sampling(10), false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("0 .png/.jpg/.jpeg/.dcm or DICOM files listed"),
            "{err}"
        );
        let cfg: DatasetConfig = toml::from_str(&format!(
            "kind = \"unlabelled\"\nroot = {:?}\nchannels = 1\nheight = 16\nwidth = 16\n",
            archive().path()
        ))
        .unwrap();
        assert!(!cfg.is_labelled());
        let err = crate::load_dataset(&cfg, Path::new("."), false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("client pretrain") && err.contains("contrastive"),
            "{err}"
        );
        let labelled = DatasetConfig::medmnist("breastmnist");
        assert!(load_unlabelled(&labelled, Path::new("."), false).is_err());
    }
}
