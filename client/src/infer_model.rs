//! From a trained network to encrypted inference: the exported `heal-network/1` description
//! ([`crate::export`]) converted to the network `he_agg::infer` evaluates, and the images an
//! inference request starts from (PNG/JPEG files or bytes, or an image of a MedMNIST split),
//! normalised exactly as in training.

use std::path::Path;

use datasets::ImageShape;
use he_agg::infer::{Conv2d, Dense, Layer, Network, Shape};

use crate::error::ClientError;
use crate::export::{ExportedLayer, ExportedNetwork};

/// Largest side of an image accepted for decoding (an upload is resized to the network's input
/// anyway): bounds what a hostile file can make the decoder allocate.
pub const MAX_IMAGE_SIDE: u32 = 8192;
/// Largest decoder allocation for one image.
pub const MAX_IMAGE_ALLOC: u64 = 256 << 20;

fn invalid(message: impl Into<String>) -> ClientError {
    ClientError::invalid("network for encrypted inference", message.into())
}

/// `exp` as the network `he_agg::infer` evaluates: one layer per exported layer, the input
/// normalisation attached, every layer's output shape checked against the export's. ReLU is
/// refused: CKKS evaluates polynomials only.
pub fn to_infer_network(exp: &ExportedNetwork) -> Result<Network, ClientError> {
    let src = &exp.network;
    let mut layers = Vec::with_capacity(src.layers.len());
    for (i, l) in src.layers.iter().enumerate() {
        layers.push(match l {
            ExportedLayer::Conv2d {
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
                weight,
                bias,
            } => Layer::Conv2d(Conv2d {
                in_channels: *in_channels,
                out_channels: *out_channels,
                kernel: *kernel,
                stride: *stride,
                padding: *padding,
                weight: weight.clone(),
                bias: bias.clone(),
            }),
            ExportedLayer::AvgPool2d { kernel, stride } => Layer::AvgPool2d {
                kernel: *kernel,
                stride: *stride,
            },
            ExportedLayer::Flatten => Layer::Flatten,
            ExportedLayer::Dense {
                in_features,
                out_features,
                weight,
                bias,
            } => Layer::Dense(Dense {
                in_features: *in_features,
                out_features: *out_features,
                weight: weight.clone(),
                bias: bias.clone(),
            }),
            ExportedLayer::Square => Layer::Square,
            ExportedLayer::Quadratic { a, b } => Layer::Quadratic { a: *a, b: *b },
            ExportedLayer::Relu => {
                return Err(invalid(format!(
                    "layer {i} is a ReLU, which CKKS cannot evaluate: train with \
                     `activation = \"square\"` or `\"quadratic\"` for encrypted inference"
                )));
            }
        });
    }
    let net = Network::new(src.input, layers)
        .map_err(|e| invalid(e.to_string()))?
        .with_normalization(
            src.normalization.mean.clone(),
            src.normalization.std.clone(),
        )
        .map_err(|e| invalid(e.to_string()))?;
    // the export declares each layer's output size through its parameters: they must agree
    // with the shapes the checked network computes
    for (i, (l, shape)) in src.layers.iter().zip(net.shapes()).enumerate() {
        let ok = match (l, shape) {
            (ExportedLayer::Conv2d { out_channels, .. }, Shape::Chw([c, _, _])) => {
                c == out_channels
            }
            (ExportedLayer::Dense { out_features, .. }, Shape::Flat(n)) => n == out_features,
            (ExportedLayer::Flatten, Shape::Flat(_)) => true,
            (ExportedLayer::AvgPool2d { .. }, Shape::Chw(_)) => true,
            (ExportedLayer::Square | ExportedLayer::Quadratic { .. }, _) => true,
            _ => false,
        };
        if !ok {
            return Err(invalid(format!(
                "layer {i}: the exported layer does not produce {shape}"
            )));
        }
    }
    if net.output_len() != exp.class_names.len() {
        return Err(invalid(format!(
            "{} outputs for {} class names",
            net.output_len(),
            exp.class_names.len()
        )));
    }
    Ok(net)
}

/// Reads a `heal-network/1` file and converts it ([`to_infer_network`]).
pub fn read_infer_network(path: &Path) -> Result<(ExportedNetwork, Network), ClientError> {
    let exp = ExportedNetwork::read_json(path)?;
    let net = to_infer_network(&exp).map_err(|e| match e {
        ClientError::Invalid { what, message } => ClientError::Invalid {
            what,
            message: format!("{}: {message}", path.display()),
        },
        other => other,
    })?;
    Ok((exp, net))
}

/// The image shape a network takes (`[c, h, w]` → channels, height, width).
pub fn input_shape(net: &Network) -> ImageShape {
    let [channels, height, width] = net.input();
    ImageShape {
        channels,
        height,
        width,
    }
}

/// Decodes a PNG or JPEG image held in memory into `shape` (HWC bytes): grey↔RGB conversion and
/// a triangle-filter resize, as `datasets` does for image folders. Sizes are bounded before the
/// pixels are decoded.
pub fn decode_image(bytes: &[u8], shape: ImageShape) -> Result<Vec<u8>, ClientError> {
    use image::imageops::FilterType;
    let bad = |m: String| ClientError::invalid("image", m);
    if bytes.is_empty() {
        return Err(bad("the image is empty (0 bytes)".into()));
    }
    if !(shape.channels == 1 || shape.channels == 3) || shape.height == 0 || shape.width == 0 {
        return Err(bad(format!(
            "cannot produce {}×{}×{} images",
            shape.channels, shape.height, shape.width
        )));
    }
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| bad(e.to_string()))?;
    match reader.format() {
        Some(image::ImageFormat::Png | image::ImageFormat::Jpeg) => {}
        Some(f) => return Err(bad(format!("{f:?} images are not accepted (PNG or JPEG)"))),
        None => return Err(bad("not a PNG or JPEG image".into())),
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_IMAGE_ALLOC);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| bad(e.to_string()))?;
    let (w, h) = (shape.width as u32, shape.height as u32);
    Ok(if shape.channels == 1 {
        let g = img.to_luma8();
        if g.dimensions() == (w, h) {
            g.into_raw()
        } else {
            image::imageops::resize(&g, w, h, FilterType::Triangle).into_raw()
        }
    } else {
        let c = img.to_rgb8();
        if c.dimensions() == (w, h) {
            c.into_raw()
        } else {
            image::imageops::resize(&c, w, h, FilterType::Triangle).into_raw()
        }
    })
}

/// A PNG/JPEG file decoded into `shape` ([`decode_image`]).
pub fn load_image_file(path: &Path, shape: ImageShape) -> Result<Vec<u8>, ClientError> {
    let meta = std::fs::metadata(path).map_err(|e| ClientError::io(path, e))?;
    if meta.len() > MAX_IMAGE_ALLOC {
        return Err(ClientError::invalid(
            "image",
            format!("{}: {} bytes is too large", path.display(), meta.len()),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| ClientError::io(path, e))?;
    decode_image(&bytes, shape).map_err(|e| match e {
        ClientError::Invalid { what, message } => ClientError::Invalid {
            what,
            message: format!("{}: {message}", path.display()),
        },
        other => other,
    })
}

/// Softmax of logits (stable: shifted by the maximum).
pub fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

/// Index of the largest value (the first on ties).
pub fn argmax(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |(bi, bv), (i, &x)| {
            if x > bv { (i, x) } else { (bi, bv) }
        })
        .0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::{Normalization, PlainNetwork};

    fn exported(layers: Vec<ExportedLayer>, classes: usize) -> ExportedNetwork {
        ExportedNetwork {
            format: crate::export::FORMAT.into(),
            class_names: (0..classes).map(|c| format!("c{c}")).collect(),
            multiplicative_depth: 0,
            network: PlainNetwork {
                input: [1, 6, 6],
                normalization: Normalization {
                    mean: vec![0.5],
                    std: vec![0.25],
                },
                layers,
            },
        }
    }

    fn conv() -> ExportedLayer {
        ExportedLayer::Conv2d {
            in_channels: 1,
            out_channels: 2,
            kernel: 3,
            stride: 1,
            padding: 0,
            weight: (0..18).map(|i| i as f32 / 18.0 - 0.5).collect(),
            bias: vec![0.1, -0.2],
        }
    }

    fn dense(i: usize, o: usize) -> ExportedLayer {
        ExportedLayer::Dense {
            in_features: i,
            out_features: o,
            weight: (0..i * o)
                .map(|k| ((k * 7) % 13) as f32 / 13.0 - 0.5)
                .collect(),
            bias: vec![0.05; o],
        }
    }

    #[test]
    fn conversion_keeps_the_function() {
        let exp = exported(
            vec![
                conv(),
                ExportedLayer::Quadratic { a: 0.2, b: 0.9 },
                ExportedLayer::AvgPool2d {
                    kernel: 2,
                    stride: 2,
                },
                ExportedLayer::Flatten,
                dense(8, 4),
                ExportedLayer::Square,
                dense(4, 3),
            ],
            3,
        );
        let net = to_infer_network(&exp).unwrap();
        assert_eq!(net.output_len(), 3);
        assert_eq!(net.shapes()[0], Shape::Chw([2, 4, 4]));
        let hwc: Vec<u8> = (0..36).map(|i| (i * 7 % 256) as u8).collect();
        let x = net.normalize_hwc(&hwc).unwrap();
        assert_eq!(x, exp.normalise(&hwc));
        let (a, b) = (net.forward(&x).unwrap(), exp.forward(&x));
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn relu_and_inconsistent_exports_are_refused() {
        let relu = exported(
            vec![
                conv(),
                ExportedLayer::Relu,
                ExportedLayer::Flatten,
                dense(32, 2),
            ],
            2,
        );
        let e = to_infer_network(&relu).unwrap_err().to_string();
        assert!(e.contains("ReLU"), "{e}");
        let wrong_classes = exported(vec![ExportedLayer::Flatten, dense(36, 4)], 3);
        let e = to_infer_network(&wrong_classes).unwrap_err().to_string();
        assert!(e.contains("class names"), "{e}");
        let short = exported(vec![ExportedLayer::Flatten, dense(35, 2)], 2);
        assert!(to_infer_network(&short).is_err());
    }

    #[test]
    fn images_decode_convert_and_resize_and_garbage_is_refused() {
        let mut png = Vec::new();
        let img =
            image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8 * 5, y as u8 * 7, 100]));
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let shape = ImageShape {
            channels: 1,
            height: 28,
            width: 28,
        };
        assert_eq!(decode_image(&png, shape).unwrap().len(), 28 * 28);
        let rgb = ImageShape {
            channels: 3,
            ..shape
        };
        assert_eq!(decode_image(&png, rgb).unwrap().len(), 28 * 28 * 3);
        assert!(decode_image(b"", shape).is_err());
        assert!(decode_image(b"definitely not an image", shape).is_err());
        assert!(decode_image(&png[..png.len() / 2], shape).is_err());
        // a PNG header announcing a huge image is refused before its pixels are allocated
        let mut huge = Vec::new();
        image::GrayImage::new(1, 1)
            .write_to(
                &mut std::io::Cursor::new(&mut huge),
                image::ImageFormat::Png,
            )
            .unwrap();
        huge[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        huge[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        assert!(decode_image(&huge, shape).is_err());
    }

    #[test]
    fn softmax_and_argmax() {
        let p = softmax(&[1.0, 3.0, 2.0]);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(argmax(&p), 1);
        let big = softmax(&[1000.0, 999.0]);
        assert!(big[0].is_finite() && big[0] > big[1]);
    }
}
