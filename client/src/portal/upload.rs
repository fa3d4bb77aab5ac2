//! Validation of an uploaded image before anything is encrypted: size limit, PNG, JPEG or
//! DICOM by content (not by name or the browser's content type), and a full decode with bounded
//! dimensions into the network's input, prepared as in training ([`datasets::ImageDecoder`]).

use std::path::Path;

use datasets::ImageDecoder;

/// What kind of file was accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    Png,
    Jpeg,
    Dicom,
}

impl ImageKind {
    pub fn extension(self) -> &'static str {
        match self {
            ImageKind::Png => "png",
            ImageKind::Jpeg => "jpg",
            ImageKind::Dicom => "dcm",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ImageKind::Png => "image/png",
            ImageKind::Jpeg => "image/jpeg",
            ImageKind::Dicom => "application/dicom",
        }
    }

    /// The extension of the picture a browser shows: a DICOM upload is shown as the PNG of the
    /// network's input (windowed and resized) stored beside it.
    pub fn preview_extension(self) -> &'static str {
        match self {
            ImageKind::Dicom => "png",
            k => k.extension(),
        }
    }

    pub fn from_extension(ext: &str) -> Option<Self> {
        match ext {
            "png" => Some(ImageKind::Png),
            "jpg" => Some(ImageKind::Jpeg),
            "dcm" => Some(ImageKind::Dicom),
            _ => None,
        }
    }
}

/// Why an upload was refused; the message is shown on the page as is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    #[error("No file was chosen. Choose a PNG, JPEG or DICOM image, then press Diagnose.")]
    Missing,
    #[error("The file is empty.")]
    Empty,
    #[error(
        "The file is too large: {got} bytes, the limit is {limit} bytes ({} MB). Choose a smaller image.",
        limit / (1024 * 1024)
    )]
    TooLarge { got: usize, limit: usize },
    #[error(
        "This file is not a PNG, JPEG or DICOM image ({0}). Only PNG, JPEG and DICOM images can \
         be diagnosed."
    )]
    NotAnImage(String),
    #[error("The image could not be read: {0}")]
    Undecodable(String),
    #[error(
        "This DICOM file holds {0} frames; the portal diagnoses one image at a time. Upload a \
         single frame (or use `client infer`, which diagnoses every frame)."
    )]
    MultiFrame(usize),
}

/// The format from the first bytes (magic numbers).
pub fn sniff(bytes: &[u8]) -> Option<ImageKind> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(ImageKind::Png)
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some(ImageKind::Jpeg)
    } else if datasets::dicom::is_dicom(bytes) {
        Some(ImageKind::Dicom)
    } else {
        None
    }
}

fn describe(bytes: &[u8]) -> String {
    if bytes.starts_with(b"%PDF") {
        "it looks like a PDF document".into()
    } else if bytes.starts_with(b"GIF8") {
        "it looks like a GIF image".into()
    } else if bytes.starts_with(b"DICM") {
        "it looks like a DICOM data set without its 128-byte preamble".into()
    } else if std::str::from_utf8(&bytes[..bytes.len().min(512)]).is_ok() {
        "it looks like text".into()
    } else {
        "unrecognised content".into()
    }
}

/// Checks an upload and makes it into the network's input (HWC bytes).
pub fn validate(
    bytes: &[u8],
    limit: usize,
    decoder: &ImageDecoder,
) -> Result<(ImageKind, Vec<u8>), UploadError> {
    if bytes.is_empty() {
        return Err(UploadError::Empty);
    }
    if bytes.len() > limit {
        return Err(UploadError::TooLarge {
            got: bytes.len(),
            limit,
        });
    }
    let kind = sniff(bytes).ok_or_else(|| UploadError::NotAnImage(describe(bytes)))?;
    let name = Path::new("upload").with_extension(kind.extension());
    let mut file = decoder.decode(bytes, &name).map_err(|e| {
        // the message names the stored file name, not the user's: keep only the reason
        let text = e.to_string();
        let reason = text
            .split_once(": ")
            .map_or(text.as_str(), |(_, r)| r)
            .to_string();
        UploadError::Undecodable(reason)
    })?;
    if file.images.len() != 1 {
        return Err(UploadError::MultiFrame(file.images.len()));
    }
    Ok((kind, file.images.remove(0)))
}

/// A PNG of an input image (HWC bytes of `shape`), the preview a DICOM upload is shown as.
pub fn preview_png(hwc: &[u8], shape: datasets::ImageShape) -> Result<Vec<u8>, String> {
    let (w, h) = (shape.width as u32, shape.height as u32);
    let img: image::DynamicImage = if shape.channels == 1 {
        image::GrayImage::from_raw(w, h, hwc.to_vec())
            .ok_or("preview size mismatch")?
            .into()
    } else {
        image::RgbImage::from_raw(w, h, hwc.to_vec())
            .ok_or("preview size mismatch")?
            .into()
    };
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| e.to_string())?;
    Ok(out.into_inner())
}

/// A file name fit to show and store: the last path component, printable, at most 100 chars.
pub fn clean_file_name(name: Option<&str>) -> String {
    let base = name.unwrap_or("").rsplit(['/', '\\']).next().unwrap_or("");
    let s: String = base.chars().filter(|c| !c.is_control()).take(100).collect();
    if s.trim().is_empty() {
        "upload".into()
    } else {
        s
    }
}
