//! Bringing an image to the network's input size, by a policy the config names:
//!
//! - `stretch`: both sides scaled to the target (the aspect ratio may change);
//! - `crop`: scaled so the image covers the target, then the centre cut out (nothing is
//!   distorted, the borders are lost);
//! - `pad`: scaled so the image fits inside the target, then centred on black (nothing is lost
//!   or distorted).
//!
//! Scaling uses a triangle (bilinear) filter, the same everywhere a network's input is made:
//! training, evaluation, `client infer` and the portal.

use image::imageops::FilterType;

use crate::error::{DatasetError, Result};

/// How an image of another size or aspect ratio becomes the network's input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResizePolicy {
    /// Scale both sides to the target.
    #[default]
    Stretch,
    /// Scale to cover the target, cut out the centre.
    Crop,
    /// Scale to fit inside the target, pad the rest with zeros.
    Pad,
}

impl ResizePolicy {
    /// The name used in configs.
    pub fn name(self) -> &'static str {
        match self {
            ResizePolicy::Stretch => "stretch",
            ResizePolicy::Crop => "crop",
            ResizePolicy::Pad => "pad",
        }
    }
}

/// Largest side of a network input (`[dataset] height/width`).
pub const MAX_INPUT_SIDE: usize = 512;

fn scaled(bytes: &[u8], c: usize, (w0, h0): (u32, u32), (w, h): (u32, u32)) -> Result<Vec<u8>> {
    if (w0, h0) == (w, h) {
        return Ok(bytes.to_vec());
    }
    let bad = || DatasetError::invalid("resize", "image buffer size mismatch");
    Ok(if c == 1 {
        let img = image::GrayImage::from_raw(w0, h0, bytes.to_vec()).ok_or_else(bad)?;
        image::imageops::resize(&img, w, h, FilterType::Triangle).into_raw()
    } else {
        let img = image::RgbImage::from_raw(w0, h0, bytes.to_vec()).ok_or_else(bad)?;
        image::imageops::resize(&img, w, h, FilterType::Triangle).into_raw()
    })
}

/// `bytes` (HWC, `c` channels, `h0 × w0`) resized to `h × w` by `policy`.
pub fn resize_hwc(
    bytes: &[u8],
    c: usize,
    (h0, w0): (usize, usize),
    (h, w): (usize, usize),
    policy: ResizePolicy,
) -> Result<Vec<u8>> {
    if !(c == 1 || c == 3) || [h0, w0, h, w].contains(&0) || bytes.len() != h0 * w0 * c {
        return Err(DatasetError::invalid(
            "resize",
            format!(
                "{} bytes for a {h0}×{w0}×{c} image resized to {h}×{w}",
                bytes.len()
            ),
        ));
    }
    let (h0u, w0u, hu, wu) = (h0 as u32, w0 as u32, h as u32, w as u32);
    if policy == ResizePolicy::Stretch || h0 * w == w0 * h {
        return scaled(bytes, c, (w0u, h0u), (wu, hu));
    }
    // the scale factor that covers (crop) or fits (pad) the target
    let (sy, sx) = (h as f64 / h0 as f64, w as f64 / w0 as f64);
    let s = match policy {
        ResizePolicy::Crop => sy.max(sx),
        _ => sy.min(sx),
    };
    let side = |x: usize, target: usize| -> u32 {
        let v = (x as f64 * s).round() as usize;
        (match policy {
            ResizePolicy::Crop => v.max(target),
            _ => v.clamp(1, target),
        }) as u32
    };
    let (hs, ws) = (side(h0, h), side(w0, w));
    let mid = scaled(bytes, c, (w0u, h0u), (ws, hs))?;
    let (hs, ws) = (hs as usize, ws as usize);
    let mut out = vec![0u8; h * w * c];
    match policy {
        ResizePolicy::Crop => {
            let (y0, x0) = ((hs - h) / 2, (ws - w) / 2);
            for y in 0..h {
                let src = ((y + y0) * ws + x0) * c;
                out[y * w * c..(y + 1) * w * c].copy_from_slice(&mid[src..src + w * c]);
            }
        }
        _ => {
            let (y0, x0) = ((h - hs) / 2, (w - ws) / 2);
            for y in 0..hs {
                let dst = ((y + y0) * w + x0) * c;
                out[dst..dst + ws * c].copy_from_slice(&mid[y * ws * c..(y + 1) * ws * c]);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(h: usize, w: usize) -> Vec<u8> {
        (0..h * w).map(|i| (i % 251) as u8 + 1).collect()
    }

    #[test]
    fn same_aspect_is_a_plain_scale_for_every_policy() {
        let img = ramp(8, 8);
        let s = resize_hwc(&img, 1, (8, 8), (16, 16), ResizePolicy::Stretch).unwrap();
        for p in [ResizePolicy::Crop, ResizePolicy::Pad] {
            assert_eq!(resize_hwc(&img, 1, (8, 8), (16, 16), p).unwrap(), s);
        }
        assert_eq!(
            resize_hwc(&img, 1, (8, 8), (8, 8), ResizePolicy::Pad).unwrap(),
            img
        );
    }

    #[test]
    fn crop_keeps_the_centre_and_pad_keeps_everything() {
        // a 4×8 image: left half 10, right half 200; a 1-pixel white column in the middle
        let (h0, w0) = (4, 8);
        let mut img = vec![0u8; h0 * w0];
        for y in 0..h0 {
            for x in 0..w0 {
                img[y * w0 + x] = if x < 4 { 10 } else { 200 };
            }
        }
        // crop to 4×4: scale 1 (covers), centre columns 2..6
        let c = resize_hwc(&img, 1, (h0, w0), (4, 4), ResizePolicy::Crop).unwrap();
        assert_eq!(&c[..4], &[10, 10, 200, 200]);
        // pad to 8×8: scale 1 (fits), rows 2..6 hold the image, the rest is black
        let p = resize_hwc(&img, 1, (h0, w0), (8, 8), ResizePolicy::Pad).unwrap();
        assert!(p[..16].iter().all(|&v| v == 0) && p[48..].iter().all(|&v| v == 0));
        assert_eq!(&p[16..24], &img[..8]);
        // stretch to 8×8 changes the aspect: every row holds both halves
        let s = resize_hwc(&img, 1, (h0, w0), (8, 8), ResizePolicy::Stretch).unwrap();
        assert!(s.iter().all(|&v| v > 0));
        // RGB works the same way
        let rgb: Vec<u8> = img.iter().flat_map(|&v| [v, v, v]).collect();
        let c3 = resize_hwc(&rgb, 3, (h0, w0), (4, 4), ResizePolicy::Crop).unwrap();
        assert_eq!(c3.len(), 48);
        assert_eq!(&c3[..6], &[10, 10, 10, 10, 10, 10]);
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(resize_hwc(&[1, 2, 3], 1, (2, 2), (4, 4), ResizePolicy::Stretch).is_err());
        assert!(resize_hwc(&[1; 4], 2, (1, 2), (4, 4), ResizePolicy::Stretch).is_err());
        assert!(resize_hwc(&[1; 4], 1, (2, 2), (0, 4), ResizePolicy::Pad).is_err());
    }
}
