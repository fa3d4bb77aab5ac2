//! Preprocessing: channel handling, resizing, and normalisation with statistics computed on the
//! training split only, producing `f32` tensors in NCHW order.

use image::imageops::FilterType;
use ndarray::Array4;

use crate::error::{DatasetError, Result};
use crate::image_set::ImageSet;
use crate::image_set::ImageShape;

/// Converts every image to `channels` (1: ITU-R 601 luma of RGB; 3: grey replicated).
pub fn convert_channels(set: &ImageSet, channels: usize) -> Result<ImageSet> {
    let c = set.channels();
    if c == channels {
        return Ok(set.clone());
    }
    let (n, h, w) = (set.len(), set.height(), set.width());
    let src = set.images();
    let out = match (c, channels) {
        (3, 1) => Array4::from_shape_fn((n, h, w, 1), |(i, y, x, _)| {
            let r = src[(i, y, x, 0)] as u32;
            let g = src[(i, y, x, 1)] as u32;
            let b = src[(i, y, x, 2)] as u32;
            // Same integer weights as `image`'s luma conversion (Rec. 601, rounded).
            ((r * 299 + g * 587 + b * 114 + 500) / 1000) as u8
        }),
        (1, 3) => Array4::from_shape_fn((n, h, w, 3), |(i, y, x, _)| src[(i, y, x, 0)]),
        _ => {
            return Err(DatasetError::invalid(
                "channels",
                format!("cannot convert {c} channels to {channels} (only 1 and 3)"),
            ));
        }
    };
    Ok(set.with_images(out))
}

/// Resizes every image to `height × width` (triangle filter); a no-op when already that size.
pub fn resize(set: &ImageSet, height: usize, width: usize) -> Result<ImageSet> {
    if height == 0 || width == 0 {
        return Err(DatasetError::invalid(
            "resize",
            format!("target size {height}×{width} must be positive"),
        ));
    }
    if set.height() == height && set.width() == width {
        return Ok(set.clone());
    }
    let (n, c) = (set.len(), set.channels());
    let mut out = Vec::with_capacity(n * height * width * c);
    for i in 0..n {
        let bytes = set.image_bytes(i).to_vec();
        let (w0, h0) = (set.width() as u32, set.height() as u32);
        let resized = if c == 1 {
            let img = image::GrayImage::from_raw(w0, h0, bytes)
                .ok_or_else(|| DatasetError::invalid("resize", "image buffer size mismatch"))?;
            image::imageops::resize(&img, width as u32, height as u32, FilterType::Triangle)
                .into_raw()
        } else {
            let img = image::RgbImage::from_raw(w0, h0, bytes)
                .ok_or_else(|| DatasetError::invalid("resize", "image buffer size mismatch"))?;
            image::imageops::resize(&img, width as u32, height as u32, FilterType::Triangle)
                .into_raw()
        };
        out.extend_from_slice(&resized);
    }
    let arr = Array4::from_shape_vec((n, height, width, c), out)
        .map_err(|e| DatasetError::invalid("resize", e.to_string()))?;
    Ok(set.with_images(arr))
}

/// Every image of `set` brought to `height × width` by `policy` (in parallel).
pub fn resize_set(
    set: &ImageSet,
    height: usize,
    width: usize,
    policy: crate::resize::ResizePolicy,
) -> Result<ImageSet> {
    use rayon::prelude::*;
    if set.height() == height && set.width() == width {
        return Ok(set.clone());
    }
    let (h0, w0, c) = (set.height(), set.width(), set.channels());
    let images: Vec<Vec<u8>> = (0..set.len())
        .into_par_iter()
        .map(|i| {
            crate::resize::resize_hwc(set.image_bytes(i), c, (h0, w0), (height, width), policy)
        })
        .collect::<Result<_>>()?;
    let arr = Array4::from_shape_vec((set.len(), height, width, c), images.concat())
        .map_err(|e| DatasetError::invalid("resize", e.to_string()))?;
    Ok(set.with_images(arr))
}

/// Channel conversion then resize to `shape`.
pub fn conform(set: &ImageSet, shape: ImageShape) -> Result<ImageSet> {
    let s = convert_channels(set, shape.channels)?;
    resize(&s, shape.height, shape.width)
}

/// Per-channel mean and standard deviation of pixel values scaled to `[0, 1]`.
///
/// Fit on the training split only ([`Normalizer::fit`]) and apply the same statistics to
/// validation and test data, so nothing about the held-out images leaks into training.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Normalizer {
    /// Mean per channel (pixel/255 units).
    pub mean: Vec<f32>,
    /// Standard deviation per channel (pixel/255 units), at least 1e-6.
    pub std: Vec<f32>,
}

impl Normalizer {
    /// Statistics of the (training) images.
    pub fn fit(train: &ImageSet) -> Result<Self> {
        if train.is_empty() {
            return Err(DatasetError::invalid(
                "normalisation",
                "cannot compute statistics of an empty training split",
            ));
        }
        let c = train.channels();
        let mut sum = vec![0f64; c];
        let mut sq = vec![0f64; c];
        let data = train.images().as_slice().unwrap_or(&[]);
        for (k, &v) in data.iter().enumerate() {
            let x = v as f64 / 255.0;
            sum[k % c] += x;
            sq[k % c] += x * x;
        }
        let count = (data.len() / c) as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / count).collect();
        let std: Vec<f32> = sq
            .iter()
            .zip(&mean)
            .map(|(s, m)| ((s / count - m * m).max(0.0).sqrt() as f32).max(1e-6))
            .collect();
        Ok(Self {
            mean: mean.into_iter().map(|m| m as f32).collect(),
            std,
        })
    }

    /// Leaves pixel/255 values unchanged (mean 0, std 1).
    pub fn identity(channels: usize) -> Self {
        Self {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    /// Normalised images `indices` (all when `None`) as `f32` in NCHW order.
    pub fn to_nchw(&self, set: &ImageSet, indices: Option<&[usize]>) -> Result<Vec<f32>> {
        let c = set.channels();
        if c != self.mean.len() {
            return Err(DatasetError::invalid(
                "normalisation",
                format!(
                    "statistics are for {} channels, images have {c}",
                    self.mean.len()
                ),
            ));
        }
        let (h, w) = (set.height(), set.width());
        let all: Vec<usize>;
        let idx = match indices {
            Some(i) => i,
            None => {
                all = (0..set.len()).collect();
                &all
            }
        };
        let per = c * h * w;
        let mut out = vec![0f32; idx.len() * per];
        let scale: Vec<f32> = self.std.iter().map(|s| 1.0 / (255.0 * s)).collect();
        let shift: Vec<f32> = self
            .mean
            .iter()
            .zip(&self.std)
            .map(|(m, s)| m / s)
            .collect();
        for (o, &i) in idx.iter().enumerate() {
            let src = set.image_bytes(i);
            let dst = &mut out[o * per..(o + 1) * per];
            for p in 0..h * w {
                for ch in 0..c {
                    dst[ch * h * w + p] = src[p * c + ch] as f32 * scale[ch] - shift[ch];
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_set::Labels;

    fn set(c: usize, vals: &[u8]) -> ImageSet {
        let n = vals.len() / (2 * 2 * c);
        ImageSet::new(
            Array4::from_shape_vec((n, 2, 2, c), vals.to_vec()).unwrap(),
            Labels::Class(vec![0; n]),
            None,
            None,
        )
        .unwrap()
    }

    #[test]
    fn statistics_and_nchw_layout() {
        // Two RGB 2×2 images; channel 0 is 0 or 255, channel 1 constant 51, channel 2 ramps.
        let mut v = Vec::new();
        for i in 0..2u8 {
            for p in 0..4u8 {
                v.extend_from_slice(&[if i == 0 { 0 } else { 255 }, 51, p * 10]);
            }
        }
        let s = set(3, &v);
        let n = Normalizer::fit(&s).unwrap();
        assert!((n.mean[0] - 0.5).abs() < 1e-6);
        assert!((n.std[0] - 0.5).abs() < 1e-6);
        assert!((n.mean[1] - 0.2).abs() < 1e-6);
        assert!(n.std[1] <= 1e-6 + 1e-9);
        let x = n.to_nchw(&s, Some(&[1])).unwrap();
        assert_eq!(x.len(), 12);
        // Image 1, channel 0 is all 255 → (1 - 0.5)/0.5 = 1.
        assert!(x[..4].iter().all(|&a| (a - 1.0).abs() < 1e-5));
        // Channel 2 plane follows pixel order.
        let plane2: Vec<f32> = x[8..].to_vec();
        assert!(plane2.windows(2).all(|w| w[1] > w[0]));
    }

    #[test]
    fn grey_rgb_round_trip() {
        let s = set(1, &[10, 20, 30, 40]);
        let rgb = convert_channels(&s, 3).unwrap();
        assert_eq!(rgb.channels(), 3);
        assert_eq!(rgb.image_bytes(0)[..3], [10, 10, 10]);
        let back = convert_channels(&rgb, 1).unwrap();
        assert_eq!(back.image_bytes(0), s.image_bytes(0));
        let big = resize(&s, 4, 4).unwrap();
        assert_eq!((big.height(), big.width()), (4, 4));
        assert!(Normalizer::fit(&s.head(0)).is_err());
    }
}
