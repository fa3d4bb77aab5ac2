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

mod config;
mod resolve;

pub use config::{
    Activation, FixedNormalization, FrontConfig, HeadInit, InitConfig, InitSpec, LayerConfig,
    ModelConfig, WeightsLayout, default_layers,
};

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
    /// A residual basic block (with its activation after the sum).
    Residual {
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Kernel side (padding kernel/2).
        kernel: usize,
        /// Stride of the first convolution and of the projection.
        stride: usize,
        /// The activation inside and after the block.
        activation: Activation,
    },
    /// Global average pooling.
    GlobalAvgPool,
    /// Max pooling (plaintext only).
    MaxPool {
        /// Window side.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Padding on every side.
        padding: usize,
    },
}

impl LayerKind {
    /// Whether a residual block needs a projection shortcut (channels or size change).
    pub fn projects(&self) -> bool {
        matches!(self, LayerKind::Residual { in_channels, out_channels, stride, .. }
            if in_channels != out_channels || *stride != 1)
    }
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
    /// Initial `[a, b, c]` of per-channel polynomial activations.
    #[serde(default = "config::default_poly")]
    pub poly_init: [f32; 3],
    /// `[min, max]` of a per-channel polynomial's a.
    #[serde(default = "config::default_poly_bounds")]
    pub poly_bounds: [f32; 2],
    /// Initialisation seed.
    pub init_seed: u64,
    /// The layers.
    pub layers: Vec<LayerSpec>,
    /// The first this many layers are not trained (`[model.init] freeze`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub frozen: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
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
                // not evaluable at all (is_he_friendly says so), like ReLU
                LayerKind::MaxPool { .. } => 0,
                LayerKind::Act { activation } => usize::from(activation.is_polynomial()),
                LayerKind::Residual { activation, .. } => {
                    2 + 2 * usize::from(activation.is_polynomial())
                }
                LayerKind::AvgPool { .. } | LayerKind::GlobalAvgPool => {
                    let next_linear = self.layers[i + 1..].iter().find_map(|n| match n.kind {
                        LayerKind::Conv { .. } | LayerKind::Dense { .. } => Some(true),
                        LayerKind::AvgPool { .. }
                        | LayerKind::GlobalAvgPool
                        | LayerKind::Dropout { .. } => None,
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
            LayerKind::Act { activation } | LayerKind::Residual { activation, .. } => {
                activation.is_polynomial()
            }
            LayerKind::MaxPool { .. } => false,
            _ => true,
        })
    }

    /// The activation used by the network's activation layers (the first one; `None` without
    /// activations), for reports.
    pub fn activation(&self) -> Option<Activation> {
        self.layers.iter().find_map(|l| match l.kind {
            LayerKind::Act { activation } | LayerKind::Residual { activation, .. } => {
                Some(activation)
            }
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
                LayerKind::Residual {
                    in_channels,
                    out_channels,
                    kernel,
                    stride,
                    activation,
                } => format!(
                    "residual {in_channels}→{out_channels} k{kernel} s{stride} {}{}",
                    activation.name(),
                    if l.kind.projects() { " proj" } else { "" }
                ),
                LayerKind::GlobalAvgPool => "global-avg-pool".into(),
                LayerKind::MaxPool {
                    kernel,
                    stride,
                    padding,
                } => format!("max-pool k{kernel} s{stride} p{padding}"),
            };
            s.push_str(&format!(
                "{i:>2}: {what:<28} {:?} → {:?}\n",
                l.input, l.output
            ));
        }
        s
    }
}

mod activation;
mod layer_params;
mod network;
mod patches;
mod tap;
pub(crate) use activation::ActParamsRef;
pub use activation::{ActParams, PolyParams, QuadParams};
pub use layer_params::{BlockParams, ConvParams, DenseParams, LayerParams};
pub(crate) use network::Activations;
pub use network::Network;
pub(crate) use tap::Site;

#[cfg(test)]
mod tests;
