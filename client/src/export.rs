//! A trained network as plain layer descriptions — `f32` weights with shapes, batch-norm folded
//! away — for encrypted inference, plus a plain `f32` reference forward pass to check an
//! encrypted evaluation against.
//!
//! Format `heal-network/1` (JSON via serde):
//!
//! ```text
//! { "format": "heal-network/1", "class_names": [...], "multiplicative_depth": 5,
//!   "network": { "input": [c, h, w],
//!                "normalization": { "mean": [...], "std": [...] },
//!                "layers": [ { "type": "conv2d", ... }, ... ] } }
//! ```
//!
//! The `network` object is exactly what `he_agg::infer::Network` deserializes (it mirrors this
//! format without depending on `client`). Inputs are `(pixel/255 − mean[c]) / std[c]` in CHW
//! order. Layers, tagged by `type`:
//! * `conv2d`: `in_channels`, `out_channels`, `kernel`, `stride`, `padding` (zeros),
//!   `weight [out, in, k, k]`, `bias [out]`;
//! * `avg-pool2d`: `kernel`, `stride` (no padding);
//! * `flatten`: CHW → vector (index `c·h·w + y·w + x`), placed before the first dense layer;
//! * `dense`: `in_features`, `out_features`, `weight [out, in]` row-major, `bias [out]`:
//!   `y = W·x + b`;
//! * `square`: x²; `quadratic`: `a`, `b`: a·x² + b·x = x·(a·x + b); `relu` (plaintext only:
//!   CKKS cannot evaluate it, and `he_agg` rejects it).
//!
//! Batch-norm `γ (x − μ)/√(σ² + ε) + β` after a conv/dense layer is folded into it:
//! `W' = W · s`, `b' = (b − μ)·s + β` with `s = γ/√(σ² + ε)` per output channel.

use std::path::Path;

use datasets::Normalizer;

use crate::error::ClientError;
use crate::model::{Activation, LayerKind, Network};
use crate::params::{manifest, to_flat};

/// Format tag.
pub const FORMAT: &str = "heal-network/1";

/// One layer of an exported network.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ExportedLayer {
    /// 2D convolution, square kernel, zero padding.
    Conv2d {
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Kernel side.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Zero padding on each side.
        padding: usize,
        /// `[out, in, k, k]` row-major.
        weight: Vec<f32>,
        /// `[out]`.
        bias: Vec<f32>,
    },
    /// Average pooling, square window, no padding.
    AvgPool2d {
        /// Window side.
        kernel: usize,
        /// Stride.
        stride: usize,
    },
    /// CHW → vector.
    Flatten,
    /// `y = W·x + b`.
    Dense {
        /// Inputs.
        in_features: usize,
        /// Outputs.
        out_features: usize,
        /// `[out, in]` row-major.
        weight: Vec<f32>,
        /// `[out]`.
        bias: Vec<f32>,
    },
    /// x².
    Square,
    /// a·x² + b·x.
    Quadratic {
        /// Coefficient of x².
        a: f32,
        /// Coefficient of x.
        b: f32,
    },
    /// max(0, x) (plaintext only).
    Relu,
}

/// Per-channel input normalisation `(pixel/255 − mean[c]) / std[c]`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Normalization {
    /// Mean per channel.
    pub mean: Vec<f32>,
    /// Standard deviation per channel.
    pub std: Vec<f32>,
}

/// The network proper: input shape, normalisation, layers.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlainNetwork {
    /// `[c, h, w]`.
    pub input: [usize; 3],
    /// Input normalisation (training-split statistics).
    pub normalization: Normalization,
    /// Layers in order.
    pub layers: Vec<ExportedLayer>,
}

/// A trained network in plain form, with what a report needs beside it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExportedNetwork {
    /// [`FORMAT`].
    pub format: String,
    /// Class names (output order).
    pub class_names: Vec<String>,
    /// Multiplicative depth with plaintext weights (see `NetworkSpec::multiplicative_depth`).
    pub multiplicative_depth: usize,
    /// The network.
    pub network: PlainNetwork,
}

/// Exports `net` (batch-norm folded with its running statistics).
pub fn export(
    net: &Network,
    normalizer: &Normalizer,
    class_names: &[String],
) -> Result<ExportedNetwork, ClientError> {
    let spec = &net.spec;
    if normalizer.mean.len() != spec.input[0] || class_names.len() != spec.classes {
        return Err(ClientError::invalid(
            "export",
            format!(
                "{} normaliser channels / {} class names for a network of {:?} → {}",
                normalizer.mean.len(),
                class_names.len(),
                spec.input,
                spec.classes
            ),
        ));
    }
    let flat = to_flat(net);
    let m = manifest(spec);
    let mut entries = m.entries.iter();
    let mut take = || -> Vec<f32> {
        let e = entries.next().expect("manifest matches the spec");
        flat[e.offset..e.offset + e.len].to_vec()
    };
    let mut layers: Vec<ExportedLayer> = Vec::new();
    let mut flattened = false;
    for l in &spec.layers {
        match &l.kind {
            LayerKind::Conv {
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
            } => {
                let weight = take();
                let bias = take();
                layers.push(ExportedLayer::Conv2d {
                    in_channels: *in_channels,
                    out_channels: *out_channels,
                    kernel: *kernel,
                    stride: *stride,
                    padding: *padding,
                    weight,
                    bias,
                });
            }
            LayerKind::AvgPool { kernel, stride } => layers.push(ExportedLayer::AvgPool2d {
                kernel: *kernel,
                stride: *stride,
            }),
            LayerKind::Dense {
                in_features,
                out_features,
            } => {
                if !flattened && l.input.len() == 3 {
                    layers.push(ExportedLayer::Flatten);
                }
                flattened = true;
                let weight = take();
                let bias = take();
                layers.push(ExportedLayer::Dense {
                    in_features: *in_features,
                    out_features: *out_features,
                    weight,
                    bias,
                });
            }
            LayerKind::BatchNorm { epsilon, .. } => {
                let (gamma, beta, mean, var) = (take(), take(), take(), take());
                let scale: Vec<f32> = gamma
                    .iter()
                    .zip(&var)
                    .map(|(g, v)| g / (v + *epsilon as f32).sqrt())
                    .collect();
                let fold = |weight: &mut [f32], bias: &mut [f32]| {
                    let per = weight.len() / bias.len();
                    for (o, b) in bias.iter_mut().enumerate() {
                        for w in &mut weight[o * per..(o + 1) * per] {
                            *w *= scale[o];
                        }
                        *b = (*b - mean[o]) * scale[o] + beta[o];
                    }
                };
                match layers.last_mut() {
                    Some(ExportedLayer::Conv2d { weight, bias, .. })
                    | Some(ExportedLayer::Dense { weight, bias, .. }) => fold(weight, bias),
                    _ => unreachable!("resolve() puts batch-norm right after conv/dense"),
                }
            }
            LayerKind::Dropout { .. } => {}
            LayerKind::Act { activation } => layers.push(match activation {
                Activation::Square => ExportedLayer::Square,
                Activation::Relu => ExportedLayer::Relu,
                Activation::Quadratic => {
                    let a = take()[0];
                    let b = take()[0];
                    ExportedLayer::Quadratic { a, b }
                }
            }),
        }
    }
    Ok(ExportedNetwork {
        format: FORMAT.into(),
        class_names: class_names.to_vec(),
        multiplicative_depth: spec.multiplicative_depth(),
        network: PlainNetwork {
            input: spec.input,
            normalization: Normalization {
                mean: normalizer.mean.clone(),
                std: normalizer.std.clone(),
            },
            layers,
        },
    })
}

/// Shape between layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Chw([usize; 3]),
    Flat(usize),
}

impl Shape {
    fn len(self) -> usize {
        match self {
            Shape::Chw([c, h, w]) => c * h * w,
            Shape::Flat(n) => n,
        }
    }
}

impl PlainNetwork {
    /// The shape after each layer, or what does not fit.
    fn shapes(&self) -> Result<Vec<Shape>, String> {
        let mut cur = Shape::Chw(self.input);
        let mut out = Vec::with_capacity(self.layers.len());
        for (i, l) in self.layers.iter().enumerate() {
            cur = match (l, cur) {
                (
                    ExportedLayer::Conv2d {
                        in_channels,
                        out_channels,
                        kernel,
                        stride,
                        padding,
                        weight,
                        bias,
                    },
                    Shape::Chw([c, h, w]),
                ) => {
                    let (hp, wp) = (h + 2 * padding, w + 2 * padding);
                    if *in_channels != c
                        || *kernel == 0
                        || *stride == 0
                        || *kernel > hp.min(wp)
                        || weight.len() != out_channels * in_channels * kernel * kernel
                        || bias.len() != *out_channels
                    {
                        return Err(format!(
                            "layer {i}: conv2d does not fit its input {c}×{h}×{w} or its weights"
                        ));
                    }
                    Shape::Chw([
                        *out_channels,
                        (hp - kernel) / stride + 1,
                        (wp - kernel) / stride + 1,
                    ])
                }
                (ExportedLayer::AvgPool2d { kernel, stride }, Shape::Chw([c, h, w])) => {
                    if *kernel == 0 || *stride == 0 || *kernel > h.min(w) {
                        return Err(format!("layer {i}: avg-pool2d does not fit {c}×{h}×{w}"));
                    }
                    Shape::Chw([c, (h - kernel) / stride + 1, (w - kernel) / stride + 1])
                }
                (ExportedLayer::Flatten, s) => Shape::Flat(s.len()),
                (
                    ExportedLayer::Dense {
                        in_features,
                        out_features,
                        weight,
                        bias,
                    },
                    s,
                ) => {
                    if *in_features != s.len()
                        || weight.len() != in_features * out_features
                        || bias.len() != *out_features
                    {
                        return Err(format!(
                            "layer {i}: dense does not fit its input or its weights"
                        ));
                    }
                    Shape::Flat(*out_features)
                }
                (
                    ExportedLayer::Square | ExportedLayer::Quadratic { .. } | ExportedLayer::Relu,
                    s,
                ) => s,
                (_, Shape::Flat(_)) => return Err(format!("layer {i}: image layer after flatten")),
            };
            out.push(cur);
        }
        Ok(out)
    }
}

impl ExportedNetwork {
    /// Writes the network as JSON.
    pub fn write_json(&self, path: &Path) -> Result<(), ClientError> {
        let f = std::fs::File::create(path).map_err(|e| ClientError::io(path, e))?;
        serde_json::to_writer(std::io::BufWriter::new(f), self).map_err(|source| {
            ClientError::Json {
                path: path.into(),
                source,
            }
        })
    }

    /// Reads a network written by [`ExportedNetwork::write_json`], checking the format tag and
    /// that every layer's weights fit the shapes flowing through it.
    pub fn read_json(path: &Path) -> Result<Self, ClientError> {
        let f = std::fs::File::open(path).map_err(|e| ClientError::io(path, e))?;
        let net: Self = serde_json::from_reader(std::io::BufReader::new(f)).map_err(|source| {
            ClientError::Json {
                path: path.into(),
                source,
            }
        })?;
        let check = if net.format != FORMAT {
            Err(format!("format {:?}, expected {FORMAT:?}", net.format))
        } else {
            net.network.shapes().map(|_| ())
        };
        check.map_err(|m| {
            ClientError::invalid("exported network", format!("{}: {m}", path.display()))
        })?;
        Ok(net)
    }

    /// Normalised input (CHW `f32`) of one image given as HWC bytes.
    pub fn normalise(&self, hwc: &[u8]) -> Vec<f32> {
        let [c, h, w] = self.network.input;
        let n = &self.network.normalization;
        let mut out = vec![0f32; c * h * w];
        for p in 0..h * w {
            for ch in 0..c {
                let v = hwc.get(p * c + ch).copied().unwrap_or(0) as f32 / 255.0;
                out[ch * h * w + p] = (v - n.mean[ch]) / n.std[ch];
            }
        }
        out
    }

    /// Plain `f32` forward pass of one normalised image (CHW) to logits: the reference an
    /// encrypted evaluation must reproduce. Panics on a network that [`read_json`] or
    /// [`export`] would not produce.
    ///
    /// [`read_json`]: ExportedNetwork::read_json
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let net = &self.network;
        let shapes = net.shapes().expect("a checked network");
        let mut cur = x.to_vec();
        let mut shape = Shape::Chw(net.input);
        for (l, &next) in net.layers.iter().zip(&shapes) {
            cur = match (l, shape, next) {
                (
                    ExportedLayer::Conv2d {
                        in_channels: ci,
                        kernel: k,
                        stride,
                        padding,
                        weight,
                        bias,
                        ..
                    },
                    Shape::Chw([_, hi, wi]),
                    Shape::Chw([co, ho, wo]),
                ) => {
                    let (ci, k) = (*ci, *k);
                    let mut y = vec![0f32; co * ho * wo];
                    for o in 0..co {
                        for oy in 0..ho {
                            for ox in 0..wo {
                                let mut acc = bias[o];
                                for i in 0..ci {
                                    for ky in 0..k {
                                        let iy = (oy * stride + ky) as i64 - *padding as i64;
                                        if iy < 0 || iy >= hi as i64 {
                                            continue;
                                        }
                                        for kx in 0..k {
                                            let ix = (ox * stride + kx) as i64 - *padding as i64;
                                            if ix < 0 || ix >= wi as i64 {
                                                continue;
                                            }
                                            acc += weight[((o * ci + i) * k + ky) * k + kx]
                                                * cur[(i * hi + iy as usize) * wi + ix as usize];
                                        }
                                    }
                                }
                                y[(o * ho + oy) * wo + ox] = acc;
                            }
                        }
                    }
                    y
                }
                (
                    ExportedLayer::AvgPool2d { kernel: k, stride },
                    Shape::Chw([c, hi, wi]),
                    Shape::Chw([_, ho, wo]),
                ) => {
                    let k = *k;
                    let mut y = vec![0f32; c * ho * wo];
                    for ch in 0..c {
                        for oy in 0..ho {
                            for ox in 0..wo {
                                let mut acc = 0.0;
                                for ky in 0..k {
                                    for kx in 0..k {
                                        acc += cur
                                            [(ch * hi + oy * stride + ky) * wi + ox * stride + kx];
                                    }
                                }
                                y[(ch * ho + oy) * wo + ox] = acc / (k * k) as f32;
                            }
                        }
                    }
                    y
                }
                (
                    ExportedLayer::Dense {
                        in_features,
                        out_features,
                        weight,
                        bias,
                    },
                    _,
                    _,
                ) => (0..*out_features)
                    .map(|o| {
                        bias[o]
                            + weight[o * in_features..(o + 1) * in_features]
                                .iter()
                                .zip(&cur)
                                .map(|(w, x)| w * x)
                                .sum::<f32>()
                    })
                    .collect(),
                (ExportedLayer::Square, _, _) => cur.iter().map(|x| x * x).collect(),
                (ExportedLayer::Quadratic { a, b }, _, _) => {
                    cur.iter().map(|x| x * (a * x + b)).collect()
                }
                (ExportedLayer::Relu, _, _) => cur.iter().map(|x| x.max(0.0)).collect(),
                (ExportedLayer::Flatten, _, _) => cur,
                _ => unreachable!("shapes() checked the layers"),
            };
            shape = next;
        }
        cur
    }

    /// The same network with every average pool that is followed (after an optional flatten)
    /// by a dense layer merged into that dense layer, whose weights then read the un-pooled
    /// input: `W'[o, (c, y, x)] = Σ_windows∋(y,x) W[o, (c, wy, wx)] / k²`. Saves the pooling
    /// step (and its level) in encrypted inference at the cost of a wider dense layer.
    pub fn fold_avg_pool(&self) -> ExportedNetwork {
        let net = &self.network;
        let Ok(shapes) = net.shapes() else {
            return self.clone();
        };
        let input_of = |i: usize| {
            if i == 0 {
                Shape::Chw(net.input)
            } else {
                shapes[i - 1]
            }
        };
        let mut out: Vec<ExportedLayer> = Vec::with_capacity(net.layers.len());
        let mut i = 0;
        while i < net.layers.len() {
            if let (
                ExportedLayer::AvgPool2d { kernel, stride },
                Shape::Chw([c, hi, wi]),
                Shape::Chw([_, ho, wo]),
            ) = (&net.layers[i], input_of(i), shapes[i])
            {
                let mut j = i + 1;
                if matches!(net.layers.get(j), Some(ExportedLayer::Flatten)) {
                    j += 1;
                }
                if let Some(ExportedLayer::Dense {
                    out_features,
                    weight,
                    bias,
                    ..
                }) = net.layers.get(j)
                {
                    let fin = c * hi * wi;
                    let fout = c * ho * wo;
                    let inv = 1.0 / (kernel * kernel) as f32;
                    let mut w2 = vec![0f32; out_features * fin];
                    for o in 0..*out_features {
                        for ch in 0..c {
                            for oy in 0..ho {
                                for ox in 0..wo {
                                    let wv = weight[o * fout + (ch * ho + oy) * wo + ox] * inv;
                                    for ky in 0..*kernel {
                                        for kx in 0..*kernel {
                                            let (y, x) = (oy * stride + ky, ox * stride + kx);
                                            w2[o * fin + (ch * hi + y) * wi + x] += wv;
                                        }
                                    }
                                }
                            }
                        }
                    }
                    out.push(ExportedLayer::Flatten);
                    out.push(ExportedLayer::Dense {
                        in_features: fin,
                        out_features: *out_features,
                        weight: w2,
                        bias: bias.clone(),
                    });
                    i = j + 1;
                    continue;
                }
            }
            out.push(net.layers[i].clone());
            i += 1;
        }
        // The depth is unchanged: it already counts a pool before a dense layer as folded.
        let mut folded = self.clone();
        folded.network.layers = out;
        folded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LayerConfig, ModelConfig};
    use crate::params::{from_flat, manifest};
    use burn::tensor::{Device, Tensor, TensorData};
    use rand::{RngExt, SeedableRng};

    fn random_net(cfg: &ModelConfig, input: [usize; 3], classes: usize) -> Network {
        let spec = cfg.resolve(input, classes).unwrap();
        let net = Network::init(&spec, &Device::flex());
        let m = manifest(&spec);
        let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(1);
        let mut flat = to_flat(&net);
        // Give batch-norm non-trivial statistics and affine parameters.
        for e in &m.entries {
            for v in &mut flat[e.offset..e.offset + e.len] {
                if e.name.ends_with("running_var") || e.name.ends_with("gamma") {
                    *v = rng.random_range(0.5..2.0);
                } else if e.name.ends_with("running_mean") || e.name.ends_with("beta") {
                    *v = rng.random_range(-0.5..0.5);
                }
            }
        }
        from_flat(net, &flat).unwrap()
    }

    #[test]
    fn folded_export_matches_burn() {
        let cfg = ModelConfig {
            layers: vec![
                LayerConfig::Conv {
                    channels: 4,
                    kernel: 3,
                    stride: 2,
                    padding: 1,
                },
                LayerConfig::BatchNorm {
                    momentum: 0.1,
                    epsilon: 1e-5,
                },
                LayerConfig::Act {
                    kind: Some(Activation::Quadratic),
                },
                LayerConfig::AvgPool {
                    kernel: 2,
                    stride: None,
                },
                LayerConfig::Dense { units: Some(6) },
                LayerConfig::BatchNorm {
                    momentum: 0.1,
                    epsilon: 1e-5,
                },
                LayerConfig::Act {
                    kind: Some(Activation::Square),
                },
                LayerConfig::Dense { units: None },
            ],
            ..ModelConfig::default()
        };
        let net = random_net(&cfg, [2, 9, 9], 3);
        let names: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
        let exp = export(&net, &Normalizer::identity(2), &names).unwrap();
        assert!(matches!(
            exp.network.layers[2],
            ExportedLayer::AvgPool2d {
                kernel: 2,
                stride: 2
            }
        ));
        assert!(matches!(exp.network.layers[3], ExportedLayer::Flatten));
        let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(2);
        let x: Vec<f32> = (0..2 * 81).map(|_| rng.random_range(-1.0..1.0)).collect();
        let burn_out = net
            .forward(Tensor::<4>::from_data(
                TensorData::new(x.clone(), [1, 2, 9, 9]),
                &Device::flex(),
            ))
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let ours = exp.forward(&x);
        for (a, b) in burn_out.iter().zip(&ours) {
            assert!(
                (a - b).abs() < 1e-4 * (1.0 + a.abs()),
                "{burn_out:?} vs {ours:?}"
            );
        }
        let folded = exp.fold_avg_pool();
        assert!(
            !folded
                .network
                .layers
                .iter()
                .any(|l| matches!(l, ExportedLayer::AvgPool2d { .. }))
        );
        for (a, b) in folded.forward(&x).iter().zip(&ours) {
            assert!((a - b).abs() < 1e-4 * (1.0 + a.abs()));
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("n.json");
        exp.write_json(&p).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(v["format"], FORMAT);
        assert_eq!(v["network"]["input"], serde_json::json!([2, 9, 9]));
        assert_eq!(v["network"]["layers"][0]["type"], "conv2d");
        assert_eq!(v["network"]["layers"][0]["in_channels"], 2);
        assert_eq!(v["network"]["layers"][2]["type"], "avg-pool2d");
        assert_eq!(v["network"]["layers"][3]["type"], "flatten");
        assert_eq!(v["network"]["layers"][1]["type"], "quadratic");
        assert_eq!(
            v["network"]["normalization"]["std"],
            serde_json::json!([1.0, 1.0])
        );
        assert_eq!(ExportedNetwork::read_json(&p).unwrap(), exp);
        std::fs::write(&p, "{\"format\": \"x\"}").unwrap();
        assert!(ExportedNetwork::read_json(&p).is_err());
    }
}
