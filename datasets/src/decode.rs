//! An image file — PNG, JPEG or DICOM — made into the network's input: decoded with bounded
//! allocations, converted to the input's channels, brought to its size by the resize policy.
//! Image folders, manifests, `client infer`, `client evaluate-encrypted` and the portal all go
//! through [`ImageDecoder`], so an image becomes the same input wherever it is read.

use std::path::Path;

use crate::dicom::{self, DecodeLimits, Window};
use crate::error::{DatasetError, Result};
use crate::image_set::ImageShape;
use crate::resize::{MAX_INPUT_SIDE, ResizePolicy, resize_hwc};

/// File name extensions read as images (case-insensitive).
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "dcm", "dicom"];

/// Whether a path names an image file by its extension.
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn is_dicom_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "dcm" | "dicom"))
}

/// What a file gave: one input per image (a multi-frame DICOM gives one per frame).
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedFile {
    /// HWC bytes in the decoder's shape, one per frame.
    pub images: Vec<Vec<u8>>,
    /// The DICOM Patient ID, when the file is DICOM and has one.
    pub patient: Option<String>,
}

/// How a trained network's inputs were made from image files — the resize policy, the DICOM
/// window and, for MedMNIST, the file size read — recorded in its network file so that
/// inference makes an image into the same input training did.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputPreparation {
    #[serde(default)]
    pub resize: ResizePolicy,
    #[serde(default)]
    pub window: Window,
    /// The MedMNIST size training read (`[dataset] size`), when it was MedMNIST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medmnist_size: Option<u32>,
}

impl InputPreparation {
    /// A decoder to `shape` that prepares images this way.
    pub fn decoder(&self, shape: ImageShape) -> ImageDecoder {
        ImageDecoder {
            resize: self.resize,
            window: self.window,
            ..ImageDecoder::new(shape)
        }
    }
}

/// How image files become network inputs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ImageDecoder {
    /// The network's input.
    pub shape: ImageShape,
    /// How another size or aspect ratio is brought to it.
    pub resize: ResizePolicy,
    /// The DICOM window.
    pub window: Window,
    /// Bounds on what one file may make the decoder allocate.
    pub limits: DecodeLimits,
}

impl ImageDecoder {
    /// A decoder to `shape` with the default policy (stretch), window (`auto`) and limits.
    pub fn new(shape: ImageShape) -> Self {
        Self {
            shape,
            resize: ResizePolicy::default(),
            window: Window::default(),
            limits: DecodeLimits::default(),
        }
    }

    /// Refuses shapes a network cannot take (channels 1 or 3, sides 1..=512) and bad windows.
    pub fn check(&self) -> Result<()> {
        let s = self.shape;
        if !(s.channels == 1 || s.channels == 3)
            || !(1..=MAX_INPUT_SIDE).contains(&s.height)
            || !(1..=MAX_INPUT_SIDE).contains(&s.width)
        {
            return Err(DatasetError::invalid(
                "image shape",
                format!(
                    "{}×{}×{}: channels must be 1 or 3 and sides 1..={MAX_INPUT_SIDE}",
                    s.channels, s.height, s.width
                ),
            ));
        }
        self.window.check()
    }

    /// Brings an HWC image of `c` channels and `h × w` pixels to the decoder's shape.
    pub fn conform(&self, bytes: &[u8], c: usize, (h, w): (usize, usize)) -> Result<Vec<u8>> {
        let converted;
        let src = match (c, self.shape.channels) {
            (a, b) if a == b => bytes,
            (1, 3) => {
                converted = bytes.iter().flat_map(|&v| [v, v, v]).collect::<Vec<u8>>();
                &converted
            }
            (3, 1) => {
                converted = bytes
                    .chunks_exact(3)
                    .map(|p| {
                        // Rec. 601 luma, as `image` converts
                        ((p[0] as u32 * 299 + p[1] as u32 * 587 + p[2] as u32 * 114 + 500) / 1000)
                            as u8
                    })
                    .collect::<Vec<u8>>();
                &converted
            }
            _ => {
                return Err(DatasetError::invalid(
                    "channels",
                    format!("cannot convert {c} channels to {}", self.shape.channels),
                ));
            }
        };
        resize_hwc(
            src,
            self.shape.channels,
            (h, w),
            (self.shape.height, self.shape.width),
            self.resize,
        )
    }

    /// Decodes a file held in memory; `name` names it in errors and, by a `.dcm`/`.dicom`
    /// extension, asks for DICOM.
    pub fn decode(&self, bytes: &[u8], name: &Path) -> Result<DecodedFile> {
        self.check()?;
        if bytes.is_empty() {
            return Err(DatasetError::BadImage {
                path: name.into(),
                message: "the file is empty (0 bytes)".into(),
            });
        }
        if dicom::is_dicom(bytes) || is_dicom_name(name) {
            let d = dicom::decode_dicom(bytes, name, self.window, &self.limits)?;
            let images = d
                .frames
                .iter()
                .map(|f| self.conform(f, 1, (d.rows, d.columns)))
                .collect::<Result<Vec<_>>>()?;
            return Ok(DecodedFile {
                images,
                patient: d.patient,
            });
        }
        let (pixels, c, h, w) = self.decode_raster(bytes, name)?;
        Ok(DecodedFile {
            images: vec![self.conform(&pixels, c, (h, w))?],
            patient: None,
        })
    }

    /// PNG or JPEG, sizes bounded before the pixels are decoded.
    fn decode_raster(&self, bytes: &[u8], name: &Path) -> Result<(Vec<u8>, usize, usize, usize)> {
        let bad = |m: String| DatasetError::BadImage {
            path: name.into(),
            message: m,
        };
        let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| bad(e.to_string()))?;
        match reader.format() {
            Some(image::ImageFormat::Png | image::ImageFormat::Jpeg) => {}
            Some(f) => {
                return Err(bad(format!(
                    "{f:?} images are not accepted (PNG, JPEG or DICOM)"
                )));
            }
            None => return Err(bad("not a PNG, JPEG or DICOM image".into())),
        }
        let side = self.limits.max_side as u32;
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(side);
        limits.max_image_height = Some(side);
        limits.max_alloc = Some(self.limits.max_pixels as u64 * 4);
        reader.limits(limits);
        let img = reader.decode().map_err(|e| bad(e.to_string()))?;
        let (w, h) = (img.width() as usize, img.height() as usize);
        Ok(if self.shape.channels == 1 || !img.color().has_color() {
            (img.to_luma8().into_raw(), 1, h, w)
        } else {
            (img.to_rgb8().into_raw(), 3, h, w)
        })
    }

    /// Reads and decodes a file ([`ImageDecoder::decode`]).
    pub fn load(&self, path: &Path) -> Result<DecodedFile> {
        let meta = std::fs::metadata(path).map_err(|e| DatasetError::io(path, "open image", e))?;
        if meta.len() > self.limits.max_file_bytes {
            return Err(DatasetError::BadImage {
                path: path.into(),
                message: format!(
                    "{} bytes is larger than the {}-byte limit",
                    meta.len(),
                    self.limits.max_file_bytes
                ),
            });
        }
        let bytes = std::fs::read(path).map_err(|e| DatasetError::io(path, "read image", e))?;
        self.decode(&bytes, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32, rgb: bool, v: u8) -> Vec<u8> {
        let mut out = Vec::new();
        let img: image::DynamicImage = if rgb {
            image::RgbImage::from_pixel(w, h, image::Rgb([v, v / 2, 255 - v])).into()
        } else {
            image::GrayImage::from_pixel(w, h, image::Luma([v])).into()
        };
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    const GREY28: ImageShape = ImageShape {
        channels: 1,
        height: 28,
        width: 28,
    };

    #[test]
    fn raster_images_convert_and_resize() {
        let d = ImageDecoder::new(GREY28);
        let f = d
            .decode(&png(40, 30, true, 100), Path::new("a.png"))
            .unwrap();
        assert_eq!(f.images.len(), 1);
        assert_eq!(f.images[0].len(), 28 * 28);
        let rgb = ImageDecoder::new(ImageShape {
            channels: 3,
            height: 10,
            width: 12,
        });
        let f = rgb
            .decode(&png(40, 30, true, 100), Path::new("a.png"))
            .unwrap();
        assert_eq!(f.images[0].len(), 10 * 12 * 3);
        assert_eq!(&f.images[0][..3], &[100, 50, 155]);
        // grey to RGB replicates
        let f = rgb
            .decode(&png(12, 10, false, 77), Path::new("g.png"))
            .unwrap();
        assert_eq!(&f.images[0][..6], &[77; 6]);
    }

    #[test]
    fn garbage_and_bombs_are_refused() {
        let d = ImageDecoder::new(GREY28);
        let e = |b: &[u8], n: &str| d.decode(b, Path::new(n)).unwrap_err().to_string();
        assert!(e(b"", "x.png").contains("empty"));
        assert!(e(b"definitely not an image", "x.png").contains("not a PNG"));
        let good = png(40, 30, false, 9);
        assert!(
            d.decode(&good[..good.len() / 2], Path::new("half.png"))
                .is_err()
        );
        // a .dcm name on a PNG asks for DICOM and says it is not one
        assert!(e(&good, "scan.dcm").contains("not a DICOM"));
        // a PNG header announcing 100 000 × 100 000 pixels is refused before decoding
        let mut huge = png(1, 1, false, 0);
        huge[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        huge[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        assert!(d.decode(&huge, Path::new("huge.png")).is_err());
        let too_big = ImageDecoder::new(ImageShape {
            channels: 1,
            height: 513,
            width: 28,
        });
        assert!(too_big.decode(&good, Path::new("a.png")).is_err());
    }
}
