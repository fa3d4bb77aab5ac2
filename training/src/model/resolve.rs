//! A `[model]` config resolved for an input shape and a number of classes: every layer's
//! shapes, checked.

use datasets::{ImageSet, Normalizer};
use he_agg::infer::scatter::ScatterFront;

use super::config::{Activation, FrontConfig, LayerConfig, ModelConfig};
use super::{LayerKind, LayerSpec, NetworkSpec};
use crate::error::TrainError;

impl ModelConfig {
    /// Every `act` layer becomes `activation` (the `--activation` override).
    pub fn with_activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        for l in &mut self.layers {
            if let LayerConfig::Act { kind } = l {
                *kind = None;
            }
        }
        self
    }

    /// Resolves shapes for an input `[c, h, w]` and `classes` outputs, checking that the layers
    /// fit together.
    /// The input statistics of a run over `train` (its training images): none with a front
    /// (it normalises each image itself), the configured ones, or `train`'s own.
    pub fn normalizer(&self, train: &ImageSet) -> Result<Normalizer, TrainError> {
        let c = train.channels();
        match (&self.front, &self.normalization) {
            (Some(_), Some(_)) => Err(TrainError::Model(
                "[model.front] normalises each image itself: remove [model.normalization]".into(),
            )),
            (Some(_), None) => Ok(Normalizer::identity(c)),
            (None, None) => Ok(Normalizer::fit(train)?),
            (None, Some(n)) => {
                if n.mean.len() != c || n.std.len() != c {
                    return Err(TrainError::Model(format!(
                        "[model.normalization] has {} means and {} standard deviations; the \
                         images have {c} channel(s): give one of each per channel",
                        n.mean.len(),
                        n.std.len()
                    )));
                }
                if !n.mean.iter().all(|m| m.is_finite())
                    || !n.std.iter().all(|s| s.is_finite() && *s >= 1e-6)
                {
                    return Err(TrainError::Model(format!(
                        "[model.normalization] mean {:?}, std {:?}: means must be finite and \
                         standard deviations at least 1e-6 (pixel/255 units)",
                        n.mean, n.std
                    )));
                }
                Ok(Normalizer {
                    mean: n.mean.clone(),
                    std: n.std.clone(),
                })
            }
        }
    }

    pub fn resolve(&self, input: [usize; 3], classes: usize) -> Result<NetworkSpec, TrainError> {
        let bad = |i: usize, m: String| TrainError::Model(format!("layer {i}: {m}"));
        if input.contains(&0) || classes < 2 {
            return Err(TrainError::Model(format!(
                "input {input:?} and {classes} classes: sides must be positive, classes ≥ 2"
            )));
        }
        if self.layers.is_empty() {
            return Err(TrainError::Model("the network has no layers".into()));
        }
        let [lo, hi] = self.poly_bounds;
        if !(lo.is_finite()
            && hi.is_finite()
            && lo > 0.0
            && lo <= hi
            && self.poly_init.iter().all(|v| v.is_finite()))
        {
            return Err(TrainError::Model(format!(
                "poly_bounds {:?} must satisfy 0 < min ≤ max (finite), poly_init {:?} finite",
                self.poly_bounds, self.poly_init
            )));
        }
        let front = self.front.map(|f| f.resolve(input)).transpose()?;
        let input = front.map_or(input, |f| f.output());
        let mut shape: Vec<usize> = input.to_vec();
        let mut out = Vec::with_capacity(self.layers.len());
        let n = self.layers.len();
        for (i, l) in self.layers.iter().enumerate() {
            let last = i + 1 == n;
            let patch;
            let l = match l {
                LayerConfig::Patch { channels, size } => {
                    patch = LayerConfig::Conv {
                        channels: *channels,
                        kernel: *size,
                        stride: *size,
                        padding: 0,
                    };
                    &patch
                }
                other => other,
            };
            let kind = match l {
                LayerConfig::Conv {
                    channels,
                    kernel,
                    stride,
                    padding,
                } => {
                    if shape.len() != 3 {
                        return Err(bad(i, "conv after dense: input is not an image".into()));
                    }
                    if *channels == 0 || *kernel == 0 || *stride == 0 {
                        return Err(bad(
                            i,
                            "channels, kernel and stride must be positive".into(),
                        ));
                    }
                    let (h, w) = (shape[1] + 2 * padding, shape[2] + 2 * padding);
                    if *kernel > h || *kernel > w {
                        return Err(bad(
                            i,
                            format!("kernel {kernel} larger than the padded input {h}×{w}"),
                        ));
                    }
                    let k = LayerKind::Conv {
                        in_channels: shape[0],
                        out_channels: *channels,
                        kernel: *kernel,
                        stride: *stride,
                        padding: *padding,
                    };
                    shape = vec![
                        *channels,
                        (h - kernel) / stride + 1,
                        (w - kernel) / stride + 1,
                    ];
                    k
                }
                LayerConfig::AvgPool { kernel, stride } => {
                    if shape.len() != 3 {
                        return Err(bad(i, "avg-pool after dense: input is not an image".into()));
                    }
                    let s = stride.unwrap_or(*kernel);
                    if *kernel == 0 || s == 0 || *kernel > shape[1] || *kernel > shape[2] {
                        return Err(bad(
                            i,
                            format!("pool kernel {kernel}/stride {s} does not fit {shape:?}"),
                        ));
                    }
                    shape = vec![
                        shape[0],
                        (shape[1] - kernel) / s + 1,
                        (shape[2] - kernel) / s + 1,
                    ];
                    LayerKind::AvgPool {
                        kernel: *kernel,
                        stride: s,
                    }
                }
                LayerConfig::Dense { units } => {
                    let in_features: usize = shape.iter().product();
                    let out_features = match (units, last) {
                        (Some(u), false) => *u,
                        (Some(u), true) if *u == classes => *u,
                        (Some(u), true) => {
                            return Err(bad(
                                i,
                                format!(
                                    "the last dense layer has {u} units but there are {classes} classes (omit `units`)"
                                ),
                            ));
                        }
                        (None, true) => classes,
                        (None, false) => {
                            return Err(bad(
                                i,
                                "only the last dense layer may omit `units`".into(),
                            ));
                        }
                    };
                    if out_features == 0 {
                        return Err(bad(i, "units must be positive".into()));
                    }
                    shape = vec![out_features];
                    LayerKind::Dense {
                        in_features,
                        out_features,
                    }
                }
                LayerConfig::BatchNorm { momentum, epsilon } => {
                    match out.last() {
                        Some(LayerSpec {
                            kind: LayerKind::Conv { .. } | LayerKind::Dense { .. },
                            ..
                        }) => {}
                        _ => {
                            return Err(bad(
                                i,
                                "batch-norm must directly follow a conv or dense layer (it is folded into it for inference)".into(),
                            ));
                        }
                    }
                    if !(0.0..=1.0).contains(momentum) || *epsilon <= 0.0 {
                        return Err(bad(i, "momentum in [0, 1] and epsilon > 0 required".into()));
                    }
                    LayerKind::BatchNorm {
                        features: shape[0],
                        momentum: *momentum,
                        epsilon: *epsilon,
                    }
                }
                LayerConfig::Act { kind } => LayerKind::Act {
                    activation: kind.unwrap_or(self.activation),
                },
                LayerConfig::Residual {
                    channels,
                    stride,
                    kernel,
                    kind,
                } => {
                    if shape.len() != 3 {
                        return Err(bad(i, "residual after dense: input is not an image".into()));
                    }
                    if *channels == 0 || *kernel == 0 || *stride == 0 || kernel % 2 == 0 {
                        return Err(bad(
                            i,
                            format!(
                                "channels {channels}, stride {stride} must be positive and kernel {kernel} odd"
                            ),
                        ));
                    }
                    let side = |x: usize| (x + 2 * (kernel / 2) - kernel) / stride + 1;
                    let k = LayerKind::Residual {
                        in_channels: shape[0],
                        out_channels: *channels,
                        kernel: *kernel,
                        stride: *stride,
                        activation: kind.unwrap_or(self.activation),
                    };
                    shape = vec![*channels, side(shape[1]), side(shape[2])];
                    k
                }
                LayerConfig::GlobalAvgPool => {
                    if shape.len() != 3 {
                        return Err(bad(
                            i,
                            "global-avg-pool after dense: input is not an image".into(),
                        ));
                    }
                    shape = vec![shape[0]];
                    LayerKind::GlobalAvgPool
                }
                LayerConfig::MaxPool {
                    kernel,
                    stride,
                    padding,
                } => {
                    if shape.len() != 3 {
                        return Err(bad(i, "max-pool after dense: input is not an image".into()));
                    }
                    let s = stride.unwrap_or(*kernel);
                    let (h, w) = (shape[1] + 2 * padding, shape[2] + 2 * padding);
                    // torch's rule: a window may not start in the padding only
                    if *kernel == 0 || s == 0 || *kernel > h || *kernel > w || 2 * padding > *kernel
                    {
                        return Err(bad(
                            i,
                            format!(
                                "max-pool kernel {kernel}/stride {s}/padding {padding} does not \
                                 fit {shape:?} (padding at most half the kernel)"
                            ),
                        ));
                    }
                    shape = vec![shape[0], (h - kernel) / s + 1, (w - kernel) / s + 1];
                    LayerKind::MaxPool {
                        kernel: *kernel,
                        stride: s,
                        padding: *padding,
                    }
                }
                LayerConfig::Patch { .. } => unreachable!("patch layers are resolved as convs"),
                LayerConfig::Dropout { rate } => {
                    if !(0.0..1.0).contains(rate) {
                        return Err(bad(i, format!("dropout rate {rate} is not in [0, 1)")));
                    }
                    LayerKind::Dropout { rate: *rate }
                }
            };
            let input_shape = match out.last() {
                Some(LayerSpec { output, .. }) => output.clone(),
                None => input.to_vec(),
            };
            out.push(LayerSpec {
                kind,
                input: input_shape,
                output: shape.clone(),
            });
        }
        match out.last() {
            Some(LayerSpec {
                kind: LayerKind::Dense { .. },
                ..
            }) => {}
            _ => {
                return Err(TrainError::Model(
                    "the last layer must be `dense` (one output per class)".into(),
                ));
            }
        }
        Ok(NetworkSpec {
            input,
            front,
            classes,
            quadratic_init: self.quadratic_init,
            poly_init: self.poly_init,
            poly_bounds: self.poly_bounds,
            init_seed: self.init_seed,
            frozen: self.init.as_ref().map_or(0, |i| i.config().freeze),
            layers: out,
        })
    }
}

impl FrontConfig {
    /// The front for images of shape `image`, checked.
    pub fn resolve(self, image: [usize; 3]) -> Result<ScatterFront, TrainError> {
        let FrontConfig::Scatter {
            scales,
            angles,
            groups,
        } = self;
        let f = ScatterFront {
            image,
            scales,
            angles,
            groups,
        };
        f.check()
            .map_err(|e| TrainError::Model(format!("[model.front]: {e}")))?;
        Ok(f)
    }
}
