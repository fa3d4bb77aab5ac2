//! The `[model]` vocabulary as researchers write it in TOML: layers, activations, the front.

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
    /// a_k·x² + b_k·x + c_k with trainable coefficients per channel (per feature after a
    /// dense layer), a_k kept within `[model] poly_bounds` (one CKKS multiplication: a and c
    /// fold into the next maps).
    Poly,
}

impl Activation {
    /// Lower-case name as in configs.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Square => "square",
            Activation::Quadratic => "quadratic",
            Activation::Relu => "relu",
            Activation::Poly => "poly",
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
            "poly" => Ok(Self::Poly),
            other => Err(format!(
                "unknown activation {other:?} (square, quadratic, poly, relu)"
            )),
        }
    }
}

fn one() -> usize {
    1
}
fn three() -> usize {
    3
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
    /// A residual basic block (ResNet): conv(k, stride) → batch-norm → act → conv(k) →
    /// batch-norm, plus the shortcut — the identity, or a 1×1 convolution with batch-norm
    /// where the channels or the size change — then act. Padding k/2 keeps the size at
    /// stride 1. Four CKKS levels with a polynomial activation.
    Residual {
        /// Output channels.
        channels: usize,
        /// Stride of the first convolution and of the projection (default 1).
        #[serde(default = "one")]
        stride: usize,
        /// Kernel side of both convolutions (default 3).
        #[serde(default = "three")]
        kernel: usize,
        /// Activation inside and after the block (default: `[model] activation`).
        #[serde(default)]
        kind: Option<Activation>,
    },
    /// Each channel's mean over every position: `[c, h, w]` → `[c]` (0 levels before a dense
    /// layer, which absorbs it).
    GlobalAvgPool,
    /// Max pooling (square window), as torchvision's ResNets have after their stem. Plaintext
    /// only, like `relu`: CKKS cannot take a maximum, so a network with it is not exported for
    /// encrypted inference until [`crate::transfer::he_friendly`] turns it into an average.
    MaxPool {
        /// Window side.
        kernel: usize,
        /// Stride (default: the kernel).
        #[serde(default)]
        stride: Option<usize>,
        /// Padding on every side (default 0); padded positions never win.
        #[serde(default)]
        padding: usize,
    },
}

/// What `head` does with the backbone's last dense layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeadInit {
    /// A new, randomly initialised last layer (the backbone was trained for other classes).
    #[default]
    Replace,
    /// The backbone's last layer too (same classes).
    Keep,
}

/// Where a backbone's weights come from and how they are named.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WeightsLayout {
    /// HEAL's own names (`"{layer}.conv.weight"`, as `client pretrain` and `params.json` write).
    #[default]
    Heal,
    /// torchvision's ResNet-18/34 state dict (`conv1`, `bn1`, `layer1.0.conv1`, …, `fc`).
    Torchvision,
}

/// `[model.init]`: start from a pretrained backbone instead of random weights.
///
/// ```toml
/// [model.init]
/// path = "out/pretrain/backbone.safetensors"  # or a PyTorch .pt/.pth state dict
/// layout = "heal"        # "heal" or "torchvision" (ResNet-18/34 names)
/// head = "replace"       # "replace": a new last layer; "keep": the backbone's
/// freeze = 0             # the first this many [[model.layers]] are not trained
/// # layers = 9           # only the first 9 layers from the file (a backbone cut short)
/// # blake3 = "…"         # the file's digest (provisioning writes it)
/// ```
/// `init = "path"` is short for a table with only `path`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitConfig {
    /// The weights file; relative paths are relative to the config file's folder.
    pub path: std::path::PathBuf,
    /// How its tensors are named (default `heal`).
    #[serde(default)]
    pub layout: WeightsLayout,
    /// The last dense layer: `replace` (default) or `keep`.
    #[serde(default)]
    pub head: HeadInit,
    /// Layers (of `[[model.layers]]`, from the first) whose weights stay as loaded (default 0).
    #[serde(default)]
    pub freeze: usize,
    /// Only the first this many layers come from the file, the rest start from `init_seed`
    /// (default: every layer): a backbone cut short, with new layers after it. The file's
    /// deeper tensors are then left unread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<usize>,
    /// BLAKE3 of the file (hex); a file of another digest is refused. `coordinator provision`
    /// fills it in when it copies the backbone into every hospital's kit, so that every
    /// hospital starts from the same weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
}

/// `init = "path"` or `[model.init]`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum InitSpec {
    /// Only the path.
    Path(std::path::PathBuf),
    /// Every setting.
    Table(InitConfig),
}

impl InitSpec {
    /// The settings, defaults filled in.
    pub fn config(&self) -> InitConfig {
        match self {
            InitSpec::Path(path) => InitConfig {
                path: path.clone(),
                layout: WeightsLayout::default(),
                head: HeadInit::default(),
                freeze: 0,
                layers: None,
                blake3: None,
            },
            InitSpec::Table(c) => c.clone(),
        }
    }
}

fn default_activation() -> Activation {
    Activation::Square
}
fn default_quadratic() -> [f32; 2] {
    [0.125, 0.5]
}
/// Near the identity, a little curvature: a deep stack of polynomials starts as a linear
/// ResNet and grows its curvature as it trains. ReLU's least-squares quadratic under a standard
/// normal input, [0.2, 0.5, 0.2], left a 39-level ResNet at 0.18 training accuracy after 62
/// steps on OrganAMNIST, where this start reached 0.52 and ReLU 0.54 (docs/DEEP.md).
pub(crate) fn default_poly() -> [f32; 3] {
    [0.05, 1.0, 0.0]
}
pub(crate) fn default_poly_bounds() -> [f32; 2] {
    [0.01, 1.0]
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
    /// Initial `[a, b, c]` of `poly` activations (default `[0.05, 1.0, 0.0]`: near the
    /// identity, so that deep networks start trainable).
    #[serde(default = "default_poly")]
    pub poly_init: [f32; 3],
    /// `[min, max]` of a `poly` activation's a (default `[0.01, 1.0]`): a stays away from 0
    /// (encrypted plans divide by it) and cannot grow the values without bound.
    #[serde(default = "default_poly_bounds")]
    pub poly_bounds: [f32; 2],
    /// Seed of the weight initialisation (default 0).
    #[serde(default)]
    pub init_seed: u64,
    /// A fixed front before the layers (default none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub front: Option<FrontConfig>,
    /// Input statistics every hospital applies, pixel/255 units (`[model.normalization]`
    /// with `mean` and `std` per channel). Absent: each run fits its own training images'
    /// statistics, which in a federation is one input scaling per hospital.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalization: Option<FixedNormalization>,
    /// Start from a pretrained backbone (default: random weights from `init_seed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<InitSpec>,
    /// The layers, in order (default: see [`ModelConfig::default`]).
    #[serde(default = "default_layers")]
    pub layers: Vec<LayerConfig>,
}

/// Fixed input statistics (`[model.normalization]`), the same at every hospital: what a
/// federation agrees on so that one model sees one input scaling (MedMNIST's reference code
/// uses mean 0.5, std 0.5).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedNormalization {
    /// Mean per channel (pixel/255 units).
    pub mean: Vec<f32>,
    /// Standard deviation per channel (pixel/255 units), positive.
    pub std: Vec<f32>,
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
    /// Whether a layer that is trained normalises over the batch (which mixes examples'
    /// gradients): a batch norm, or a residual block (which holds some), after the frozen ones.
    pub fn trains_batch_norm(&self) -> bool {
        let frozen = self.init.as_ref().map_or(0, |i| i.config().freeze);
        self.layers.iter().skip(frozen).any(|l| {
            matches!(
                l,
                LayerConfig::BatchNorm { .. } | LayerConfig::Residual { .. }
            )
        })
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            activation: default_activation(),
            quadratic_init: default_quadratic(),
            poly_init: default_poly(),
            poly_bounds: default_poly_bounds(),
            init_seed: 0,
            front: None,
            normalization: None,
            init: None,
            layers: default_layers(),
        }
    }
}
