//! Validation of an uploaded image before anything is encrypted: size limit, PNG/JPEG by
//! content (not by name or the browser's content type), and a full decode with bounded
//! dimensions into the network's input shape.

use datasets::ImageShape;

use crate::infer_model::decode_image;

/// What kind of file was accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    Png,
    Jpeg,
}

impl ImageKind {
    pub fn extension(self) -> &'static str {
        match self {
            ImageKind::Png => "png",
            ImageKind::Jpeg => "jpg",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ImageKind::Png => "image/png",
            ImageKind::Jpeg => "image/jpeg",
        }
    }

    pub fn from_extension(ext: &str) -> Option<Self> {
        match ext {
            "png" => Some(ImageKind::Png),
            "jpg" => Some(ImageKind::Jpeg),
            _ => None,
        }
    }
}

/// Why an upload was refused; the message is shown on the page as is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    #[error("No file was chosen. Choose a PNG or JPEG image, then press Diagnose.")]
    Missing,
    #[error("The file is empty.")]
    Empty,
    #[error(
        "The file is too large: {got} bytes, the limit is {limit} bytes ({} MB). Choose a smaller image.",
        limit / (1024 * 1024)
    )]
    TooLarge { got: usize, limit: usize },
    #[error(
        "This file is not a PNG or JPEG image ({0}). Only PNG and JPEG images can be diagnosed."
    )]
    NotAnImage(String),
    #[error("The image could not be read: {0}")]
    Undecodable(String),
}

/// The format from the first bytes (magic numbers).
pub fn sniff(bytes: &[u8]) -> Option<ImageKind> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(ImageKind::Png)
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some(ImageKind::Jpeg)
    } else {
        None
    }
}

fn describe(bytes: &[u8]) -> String {
    if bytes.starts_with(b"%PDF") {
        "it looks like a PDF document".into()
    } else if bytes.starts_with(b"GIF8") {
        "it looks like a GIF image".into()
    } else if bytes.starts_with(b"DICM") || bytes.get(128..132) == Some(b"DICM") {
        "it looks like a DICOM file; export the image as PNG first".into()
    } else if std::str::from_utf8(&bytes[..bytes.len().min(512)]).is_ok() {
        "it looks like text".into()
    } else {
        "unrecognised content".into()
    }
}

/// Checks an upload and decodes it into `shape` (HWC bytes).
pub fn validate(
    bytes: &[u8],
    limit: usize,
    shape: ImageShape,
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
    let hwc = decode_image(bytes, shape).map_err(|e| match e {
        crate::ClientError::Invalid { message, .. } => UploadError::Undecodable(message),
        other => UploadError::Undecodable(other.to_string()),
    })?;
    Ok((kind, hwc))
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
