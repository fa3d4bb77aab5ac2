//! The HE-friendly CNN family, described in TOML and built on burn.
//!
//! A network is a list of layers applied in order to an image `(channels, height, width)`:
//!
//! | `type`       | keys                                   | what it does                         | CKKS levels |
//! |--------------|----------------------------------------|--------------------------------------|-------------|
//! | `conv`       | `channels`, `kernel`, `stride`, `padding` | 2D convolution with bias            | 1 |
//! | `patch`      | `channels`, `size`                     | patch embedding: a convolution with kernel = stride = `size`, no padding (non-overlapping patches, as vision transformers embed them) | 1 |
//! | `avg-pool`   | `kernel`, `stride`                     | average pooling                      | 0 when a conv/dense follows (folded into it), else 1 |
//! | `dense`      | `units` (omit on the last layer: classes) | fully connected, flattens CHW first | 1 |
//! | `batch-norm` | `momentum`, `epsilon`                  | batch normalisation; must directly follow a `conv` or `dense`, into which it is folded for inference | 0 |
//! | `act`        | `kind` (default: `[model] activation`) | `square` x², `quadratic` a·x²+b·x (a, b trainable), `relu` (plaintext baselines only) | 1 (0 for relu, which CKKS cannot evaluate) |
//! | `dropout`    | `rate`                                 | zeroes a share of values while training; nothing at inference | 0 |
//!
//! Before the layers, `[model.front]` may put a fixed feature map computed in the clear by
//! whoever holds the image ([`FrontConfig`]: the scattering transform); the layers then start
//! from its output.
//!
//! There is no max-pooling: CKKS cannot evaluate it. The default network
//! ([`ModelConfig::default`]) is
//! `conv(16, k=5, s=2) → batch-norm → square → dense(128) → batch-norm → square → dense(classes)`:
//! multiplicative depth 5 (conv 1 + square 1 + dense 1 + square 1 + dense 1; batch-norm folded).
//! `--activation relu` swaps every activation for ReLU to give the plaintext comparison.

use he_agg::infer::scatter::ScatterFront;

use crate::error::TrainError;

/// An activation function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// x² (one CKKS multiplication).
    Square,
    /// a·x² + b·x with trainable scalars a, b (one CKKS multiplication: x·(a·x + b)).
    Quadratic,
    /// max(0, x): plaintext baselines only.
    Relu,
}

impl Activation {
    /// Lower-case name as in configs.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Square => "square",
            Activation::Quadratic => "quadratic",
            Activation::Relu => "relu",
        }
    }

    /// Whether CKKS can evaluate it (a polynomial).
    pub fn is_polynomial(self) -> bool {
        self != Activation::Relu
    }
}

impl std::str::FromStr for Activation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "square" => Ok(Self::Square),
            "quadratic" => Ok(Self::Quadratic),
            "relu" => Ok(Self::Relu),
            other => Err(format!(
                "unknown activation {other:?} (square, quadratic, relu)"
            )),
        }
    }
}

fn one() -> usize {
    1
}
fn bn_momentum() -> f64 {
    0.1
}
fn bn_epsilon() -> f64 {
    1e-5
}

/// One layer of `[[model.layers]]`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum LayerConfig {
    /// 2D convolution (square kernel) with bias.
    Conv {
        /// Output channels.
        channels: usize,
        /// Kernel side.
        kernel: usize,
        /// Stride (default 1).
        #[serde(default = "one")]
        stride: usize,
        /// Zero padding on every side (default 0).
        #[serde(default)]
        padding: usize,
    },
    /// Patch embedding: a convolution with kernel = stride = `size` and no padding, each output
    /// position reading its own `size × size` patch. On a large image it is the cheap first
    /// layer under encryption: the image's pixels are a permutation of the first map's rows.
    Patch {
        /// Output channels.
        channels: usize,
        /// Patch side (kernel and stride).
        size: usize,
    },
    /// Average pooling (square window).
    AvgPool {
        /// Window side.
        kernel: usize,
        /// Stride (default: the kernel).
        #[serde(default)]
        stride: Option<usize>,
    },
    /// Fully connected layer with bias; a 3D input is flattened in CHW order first.
    Dense {
        /// Output units; omit on the last layer to get one per class.
        #[serde(default)]
        units: Option<usize>,
    },
    /// Batch normalisation of the preceding conv/dense output (folded into it for inference).
    BatchNorm {
        /// Running-statistics momentum (default 0.1).
        #[serde(default = "bn_momentum")]
        momentum: f64,
        /// Variance epsilon (default 1e-5).
        #[serde(default = "bn_epsilon")]
        epsilon: f64,
    },
    /// Activation; `kind` defaults to `[model] activation`.
    Act {
        /// `square`, `quadratic` or `relu`.
        #[serde(default)]
        kind: Option<Activation>,
    },
    /// Dropout while training (identity at inference, so it costs nothing encrypted).
    Dropout {
        /// Share of values zeroed, in `[0, 1)`.
        rate: f64,
    },
}

fn default_activation() -> Activation {
    Activation::Square
}
fn default_quadratic() -> [f32; 2] {
    [0.125, 0.5]
}

fn d_scales() -> usize {
    2
}
fn d_angles() -> usize {
    8
}
fn d_groups() -> usize {
    9
}

/// A fixed feature map before the layers, computed in the clear by whoever holds the image
/// (`[model.front]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum FrontConfig {
    /// The scattering transform ([`he_agg::infer::scatter`]): 1 + J·L + L²·J(J−1)/2 maps per
    /// channel, sampled every 2^J pixels, normalised per example in `groups` groups. No
    /// parameters, no multiplicative depth; the data set's normalisation is then the identity
    /// (pixel/255), so no statistics of a hospital's images are shared.
    Scatter {
        /// Scales J (default 2).
        #[serde(default = "d_scales")]
        scales: usize,
        /// Orientations L (default 8).
        #[serde(default = "d_angles")]
        angles: usize,
        /// Groups of consecutive maps normalised per example (default 9).
        #[serde(default = "d_groups")]
        groups: usize,
    },
}

/// The `[model]` table.
///
/// ```toml
/// [model]
/// activation = "square"          # default for `act` layers: square, quadratic, relu
/// quadratic_init = [0.125, 0.5]  # initial a, b of quadratic activations
/// init_seed = 0                  # weight initialisation seed
/// [[model.layers]]
/// type = "conv"
/// channels = 16
/// kernel = 5
/// stride = 2
/// [[model.layers]]
/// type = "batch-norm"
/// [[model.layers]]
/// type = "act"
/// [[model.layers]]
/// type = "dense"
/// units = 128
/// [[model.layers]]
/// type = "batch-norm"
/// [[model.layers]]
/// type = "act"
/// [[model.layers]]
/// type = "dense"                 # no units: one output per class
/// ```
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Activation of `act` layers that do not name one (default `square`).
    #[serde(default = "default_activation")]
    pub activation: Activation,
    /// Initial `[a, b]` of quadratic activations a·x² + b·x (default `[0.125, 0.5]`).
    #[serde(default = "default_quadratic")]
    pub quadratic_init: [f32; 2],
    /// Seed of the weight initialisation (default 0).
    #[serde(default)]
    pub init_seed: u64,
    /// A fixed front before the layers (default none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub front: Option<FrontConfig>,
    /// The layers, in order (default: see [`ModelConfig::default`]).
    #[serde(default = "default_layers")]
    pub layers: Vec<LayerConfig>,
}

/// `conv(16, k5, s2) → bn → act → dense(128) → bn → act → dense(classes)`.
pub fn default_layers() -> Vec<LayerConfig> {
    vec![
        LayerConfig::Conv {
            channels: 16,
            kernel: 5,
            stride: 2,
            padding: 0,
        },
        LayerConfig::BatchNorm {
            momentum: 0.1,
            epsilon: 1e-5,
        },
        LayerConfig::Act { kind: None },
        LayerConfig::Dense { units: Some(128) },
        LayerConfig::BatchNorm {
            momentum: 0.1,
            epsilon: 1e-5,
        },
        LayerConfig::Act { kind: None },
        LayerConfig::Dense { units: None },
    ]
}

impl ModelConfig {
    /// Whether a layer normalises over the batch (which mixes examples' gradients).
    pub fn has_batch_norm(&self) -> bool {
        self.layers
            .iter()
            .any(|l| matches!(l, LayerConfig::BatchNorm { .. }))
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            activation: default_activation(),
            quadratic_init: default_quadratic(),
            init_seed: 0,
            front: None,
            layers: default_layers(),
        }
    }
}

/// A layer with its shapes resolved.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LayerSpec {
    /// What it is.
    pub kind: LayerKind,
    /// Input shape: `[c, h, w]` or `[features]`.
    pub input: Vec<usize>,
    /// Output shape.
    pub output: Vec<usize>,
}

/// A resolved layer.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum LayerKind {
    /// Convolution.
    Conv {
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Kernel side.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Padding.
        padding: usize,
    },
    /// Average pooling.
    AvgPool {
        /// Window side.
        kernel: usize,
        /// Stride.
        stride: usize,
    },
    /// Dense.
    Dense {
        /// Inputs (CHW-flattened).
        in_features: usize,
        /// Outputs.
        out_features: usize,
    },
    /// Batch norm over `features` channels.
    BatchNorm {
        /// Channels (conv) or features (dense).
        features: usize,
        /// Momentum.
        momentum: f64,
        /// Epsilon.
        epsilon: f64,
    },
    /// Activation.
    Act {
        /// Which.
        activation: Activation,
    },
    /// Dropout (training only).
    Dropout {
        /// Share zeroed.
        rate: f64,
    },
}

/// A fully resolved network: input shape, classes and every layer's shapes.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NetworkSpec {
    /// `[channels, height, width]` of the layers' input: the image, or the front's output.
    pub input: [usize; 3],
    /// The front that makes images into `input`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub front: Option<ScatterFront>,
    /// Number of classes (outputs).
    pub classes: usize,
    /// Initial `[a, b]` of quadratic activations.
    pub quadratic_init: [f32; 2],
    /// Initialisation seed.
    pub init_seed: u64,
    /// The layers.
    pub layers: Vec<LayerSpec>,
}

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
            init_seed: self.init_seed,
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

impl NetworkSpec {
    /// The shape of the images the network reads.
    pub fn image_input(&self) -> [usize; 3] {
        self.front.map_or(self.input, |f| f.image)
    }

    /// Multiplicative depth of encrypted inference with plaintext weights: one level per conv,
    /// dense and polynomial activation; batch-norm folds into the layer before it; an average
    /// pool costs nothing when the next conv/dense absorbs its 1/k² (it always can), else one.
    /// ReLU counts 0 (it cannot be evaluated under CKKS at all; see [`NetworkSpec::is_he_friendly`]).
    pub fn multiplicative_depth(&self) -> usize {
        let mut depth = 0;
        for (i, l) in self.layers.iter().enumerate() {
            depth += match &l.kind {
                LayerKind::Conv { .. } | LayerKind::Dense { .. } => 1,
                LayerKind::BatchNorm { .. } | LayerKind::Dropout { .. } => 0,
                LayerKind::Act { activation } => usize::from(activation.is_polynomial()),
                LayerKind::AvgPool { .. } => {
                    let next_linear = self.layers[i + 1..].iter().find_map(|n| match n.kind {
                        LayerKind::Conv { .. } | LayerKind::Dense { .. } => Some(true),
                        LayerKind::AvgPool { .. } | LayerKind::Dropout { .. } => None,
                        _ => Some(false),
                    });
                    usize::from(next_linear != Some(true))
                }
            };
        }
        depth
    }

    /// Whether every activation is a polynomial (the network can be evaluated under CKKS).
    pub fn is_he_friendly(&self) -> bool {
        self.layers.iter().all(|l| match l.kind {
            LayerKind::Act { activation } => activation.is_polynomial(),
            _ => true,
        })
    }

    /// The activation used by the network's activation layers (the first one; `None` without
    /// activations), for reports.
    pub fn activation(&self) -> Option<Activation> {
        self.layers.iter().find_map(|l| match l.kind {
            LayerKind::Act { activation } => Some(activation),
            _ => None,
        })
    }

    /// One line per layer, e.g. `conv 1→16 k5 s2 p0 [1, 28, 28] → [16, 12, 12]`.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for (i, l) in self.layers.iter().enumerate() {
            let what = match &l.kind {
                LayerKind::Conv {
                    in_channels,
                    out_channels,
                    kernel,
                    stride,
                    padding,
                } => format!("conv {in_channels}→{out_channels} k{kernel} s{stride} p{padding}"),
                LayerKind::AvgPool { kernel, stride } => format!("avg-pool k{kernel} s{stride}"),
                LayerKind::Dense {
                    in_features,
                    out_features,
                } => format!("dense {in_features}→{out_features}"),
                LayerKind::BatchNorm { features, .. } => format!("batch-norm {features}"),
                LayerKind::Act { activation } => activation.name().to_string(),
                LayerKind::Dropout { rate } => format!("dropout {rate}"),
            };
            s.push_str(&format!(
                "{i:>2}: {what:<28} {:?} → {:?}\n",
                l.input, l.output
            ));
        }
        s
    }
}

mod network;
pub(crate) use network::Activations;
pub use network::{ConvParams, DenseParams, LayerParams, Network, QuadParams};

#[cfg(test)]
mod tests;
