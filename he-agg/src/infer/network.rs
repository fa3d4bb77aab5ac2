//! The network description `infer` evaluates, and the one format a trained network is exported
//! in (`heal-network/1`, [`super::NetworkFile`]): layers with `f32` weights and shapes, checked
//! when built. CHW input normalised by `(pixel/255 − mean)/std`, conv weights `[out, in, k, k]`,
//! dense weights `[out, in]`, flatten in CHW order, batch-norm already folded.

use super::error::NetworkError;
use super::scatter::{Scatter, ScatterFront};

/// Largest number of values one activation map or weight tensor may hold (bounds what a
/// description read from outside can make us allocate).
pub const MAX_TENSOR: usize = 1 << 26;

/// The shape of the values between two layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Channels × height × width, CHW order.
    Chw([usize; 3]),
    /// A vector.
    Flat(usize),
}

impl Shape {
    /// Number of values.
    pub fn len(&self) -> usize {
        match *self {
            Shape::Chw([c, h, w]) => c * h * w,
            Shape::Flat(n) => n,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shape::Chw([c, h, w]) => write!(f, "{c}×{h}×{w}"),
            Shape::Flat(n) => write!(f, "{n} features"),
        }
    }
}

/// 2-D convolution with a square kernel, a stride and zero padding on every side.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Conv2d {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    /// `[out, in, k, k]`, row-major.
    pub weight: Vec<f32>,
    /// `[out]`.
    pub bias: Vec<f32>,
}

/// `y = W·x + b`.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Dense {
    pub in_features: usize,
    pub out_features: usize,
    /// `[out, in]`, row-major.
    pub weight: Vec<f32>,
    /// `[out]`.
    pub bias: Vec<f32>,
}

/// One layer. CKKS evaluates polynomials only: [`Layer::Relu`] is kept for plaintext baselines
/// and refused by every encrypted plan.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(tag = "type", rename_all = "kebab-case")
)]
pub enum Layer {
    Conv2d(Conv2d),
    /// Average over square windows, no padding.
    AvgPool2d {
        kernel: usize,
        stride: usize,
    },
    /// CHW → vector (index `c·h·w + y·w + x`); implied before a dense layer on a CHW input.
    Flatten,
    Dense(Dense),
    /// x².
    Square,
    /// a·x² + b·x.
    Quadratic {
        a: f32,
        b: f32,
    },
    /// max(0, x): plaintext only (the reference forward pass evaluates it; encrypted plans
    /// refuse it).
    Relu,
    /// Per channel k (per feature on a flat input): a_k·x² + b_k·x + c_k, a trainable
    /// polynomial activation. Encrypted plans need every a_k ≠ 0 (it is evaluated as
    /// a_k·x·(x + b_k/a_k) + c_k, one level, with a_k and c_k folded into the next maps).
    ChannelQuadratic {
        a: Vec<f32>,
        b: Vec<f32>,
        c: Vec<f32>,
    },
    /// The sum of a residual block: y = body(x) + shortcut(x) (ResNet's basic block; the
    /// activation after the sum is the next layer).
    Residual(Residual),
    /// CHW → C: each channel's mean over every position.
    GlobalAvgPool,
}

/// A residual block: a main branch and a shortcut of the same input, summed.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct Residual {
    /// The main branch: convolutions, pooling and activations, ending in the block's output
    /// shape (no dense layer, no nested block).
    pub body: Vec<Layer>,
    /// A convolution of the block's input (a 1×1 projection where channels or size change);
    /// the identity when absent.
    #[cfg_attr(feature = "serde", serde(default))]
    pub shortcut: Option<Conv2d>,
}

/// Per-channel input normalisation `(pixel/255 − mean[c]) / std[c]`, applied by the requester
/// before encryption.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// A validated network: every layer's weights match the shapes flowing through it.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "RawNetwork", into = "RawNetwork")
)]
pub struct Network {
    input: [usize; 3],
    normalization: Option<Normalization>,
    /// Features computed in the clear before encryption; `input` is then its output.
    front: Option<Scatter>,
    layers: Vec<Layer>,
    /// output shape of each layer
    shapes: Vec<Shape>,
}

/// The serialized form: deserializing goes through [`Network::new`], so it is validated too.
#[cfg(feature = "serde")]
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    input: [usize; 3],
    #[serde(default)]
    normalization: Option<Normalization>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    front: Option<ScatterFront>,
    layers: Vec<Layer>,
}

#[cfg(feature = "serde")]
impl TryFrom<RawNetwork> for Network {
    type Error = NetworkError;
    fn try_from(raw: RawNetwork) -> Result<Self, NetworkError> {
        let mut net = Network::new(raw.input, raw.layers)?;
        if let Some(f) = raw.front {
            net = net.with_front(f)?;
        }
        match raw.normalization {
            Some(n) => net.with_normalization(n.mean, n.std),
            None => Ok(net),
        }
    }
}

#[cfg(feature = "serde")]
impl From<Network> for RawNetwork {
    fn from(n: Network) -> Self {
        RawNetwork {
            input: n.input,
            normalization: n.normalization,
            front: n.front.map(|f| *f.front()),
            layers: n.layers,
        }
    }
}

fn checked_len(layer: usize, what: &'static str, dims: &[usize]) -> Result<usize, NetworkError> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_TENSOR)
        .ok_or(NetworkError::TooLarge {
            layer,
            what,
            value: dims.iter().fold(1usize, |a, &d| a.saturating_mul(d)),
        })
}

fn check_finite(layer: usize, what: &'static str, v: &[f32]) -> Result<(), NetworkError> {
    if v.iter().all(|x| x.is_finite()) {
        Ok(())
    } else {
        Err(NetworkError::NotFinite { layer, what })
    }
}

fn check_len(
    layer: usize,
    what: &'static str,
    v: &[f32],
    expected: usize,
) -> Result<(), NetworkError> {
    if v.len() != expected {
        return Err(NetworkError::WeightLen {
            layer,
            what,
            expected,
            found: v.len(),
        });
    }
    check_finite(layer, what, v)
}

fn nonzero(layer: usize, what: &'static str, v: usize) -> Result<(), NetworkError> {
    if v == 0 {
        Err(NetworkError::Zero { layer, what })
    } else {
        Ok(())
    }
}

/// The output shape of `layer` (number `i`) on `input`, or why the layer does not fit.
pub(crate) fn layer_output(i: usize, layer: &Layer, input: Shape) -> Result<Shape, NetworkError> {
    output_shape(i, layer, input)
}

fn output_shape(i: usize, layer: &Layer, input: Shape) -> Result<Shape, NetworkError> {
    let mismatch = |expected: String| NetworkError::ShapeMismatch {
        layer: i,
        expected,
        found: input.to_string(),
    };
    Ok(match layer {
        Layer::Conv2d(c) => {
            let Shape::Chw([ci, h, w]) = input else {
                return Err(NetworkError::NeedsSpatial {
                    layer: i,
                    what: "conv2d",
                });
            };
            nonzero(i, "in_channels", c.in_channels)?;
            nonzero(i, "out_channels", c.out_channels)?;
            nonzero(i, "kernel", c.kernel)?;
            nonzero(i, "stride", c.stride)?;
            if c.in_channels != ci {
                return Err(mismatch(format!("{} channels", c.in_channels)));
            }
            let wlen = checked_len(
                i,
                "weight",
                &[c.out_channels, c.in_channels, c.kernel, c.kernel],
            )?;
            check_len(i, "weight", &c.weight, wlen)?;
            check_len(i, "bias", &c.bias, c.out_channels)?;
            let side = |x: usize| -> Result<usize, NetworkError> {
                let padded = x
                    .checked_add(c.padding.saturating_mul(2))
                    .filter(|&p| p <= MAX_TENSOR)
                    .ok_or(NetworkError::TooLarge {
                        layer: i,
                        what: "padding",
                        value: c.padding,
                    })?;
                if c.kernel > padded {
                    return Err(NetworkError::KernelTooLarge {
                        layer: i,
                        kernel: c.kernel,
                        padded,
                    });
                }
                Ok((padded - c.kernel) / c.stride + 1)
            };
            let (ho, wo) = (side(h)?, side(w)?);
            checked_len(i, "output", &[c.out_channels, ho, wo])?;
            Shape::Chw([c.out_channels, ho, wo])
        }
        Layer::AvgPool2d { kernel, stride } => {
            let Shape::Chw([ch, h, w]) = input else {
                return Err(NetworkError::NeedsSpatial {
                    layer: i,
                    what: "avg-pool2d",
                });
            };
            nonzero(i, "kernel", *kernel)?;
            nonzero(i, "stride", *stride)?;
            if *kernel > h.min(w) {
                return Err(NetworkError::KernelTooLarge {
                    layer: i,
                    kernel: *kernel,
                    padded: h.min(w),
                });
            }
            Shape::Chw([ch, (h - kernel) / stride + 1, (w - kernel) / stride + 1])
        }
        Layer::Flatten => Shape::Flat(input.len()),
        Layer::Dense(d) => {
            nonzero(i, "in_features", d.in_features)?;
            nonzero(i, "out_features", d.out_features)?;
            if d.in_features != input.len() {
                return Err(mismatch(format!("{} features", d.in_features)));
            }
            let wlen = checked_len(i, "weight", &[d.out_features, d.in_features])?;
            check_len(i, "weight", &d.weight, wlen)?;
            check_len(i, "bias", &d.bias, d.out_features)?;
            Shape::Flat(d.out_features)
        }
        Layer::Square | Layer::Relu => input,
        Layer::Quadratic { a, b } => {
            check_finite(i, "quadratic coefficient", &[*a, *b])?;
            input
        }
        Layer::ChannelQuadratic { a, b, c } => {
            let channels = match input {
                Shape::Chw([ch, _, _]) => ch,
                Shape::Flat(n) => n,
            };
            check_len(i, "x² coefficients", a, channels)?;
            check_len(i, "x coefficients", b, channels)?;
            check_len(i, "constant terms", c, channels)?;
            input
        }
        Layer::GlobalAvgPool => {
            let Shape::Chw([ch, _, _]) = input else {
                return Err(NetworkError::NeedsSpatial {
                    layer: i,
                    what: "global-avg-pool",
                });
            };
            Shape::Flat(ch)
        }
        Layer::Residual(r) => {
            if !matches!(input, Shape::Chw(_)) {
                return Err(NetworkError::NeedsSpatial {
                    layer: i,
                    what: "residual",
                });
            }
            let out = *body_shapes(i, input, &r.body)?
                .last()
                .ok_or(NetworkError::EmptyBlock { layer: i })?;
            let short = match &r.shortcut {
                Some(conv) => output_shape(i, &Layer::Conv2d(conv.clone()), input)?,
                None => input,
            };
            if short != out {
                return Err(NetworkError::BlockShapes {
                    layer: i,
                    body: out.to_string(),
                    shortcut: short.to_string(),
                });
            }
            out
        }
    })
}

/// The output shape of every layer of a residual block's body on `input` (block `i`): spatial
/// layers only, no nested block.
pub(crate) fn body_shapes(
    i: usize,
    input: Shape,
    body: &[Layer],
) -> Result<Vec<Shape>, NetworkError> {
    let mut shape = input;
    body.iter()
        .map(|l| {
            if matches!(
                l,
                Layer::Residual(_) | Layer::Dense(_) | Layer::Flatten | Layer::GlobalAvgPool
            ) {
                return Err(NetworkError::BlockLayer { layer: i });
            }
            shape = output_shape(i, l, shape)?;
            Ok(shape)
        })
        .collect()
}

impl Network {
    /// A network on inputs of shape `[c, h, w]`, checked layer by layer.
    pub fn new(input: [usize; 3], layers: Vec<Layer>) -> Result<Self, NetworkError> {
        if input.contains(&0) {
            return Err(NetworkError::EmptyInput(input));
        }
        checked_len(0, "input", &input)?;
        if layers.is_empty() {
            return Err(NetworkError::NoLayers);
        }
        let mut shape = Shape::Chw(input);
        let mut shapes = Vec::with_capacity(layers.len());
        for (i, layer) in layers.iter().enumerate() {
            shape = output_shape(i, layer, shape)?;
            shapes.push(shape);
        }
        Ok(Self {
            input,
            normalization: None,
            front: None,
            layers,
            shapes,
        })
    }

    /// Puts a scattering front before the layers: images of `front.image` are made into the
    /// layers' input by it. Its output must be the network's input; attach it before the
    /// normalisation, which then has the image's channels.
    pub fn with_front(mut self, front: ScatterFront) -> Result<Self, NetworkError> {
        if front.output() != self.input {
            return Err(NetworkError::ShapeMismatch {
                layer: 0,
                expected: format!("{:?} (the front's output)", front.output()),
                found: format!("{:?}", self.input),
            });
        }
        if let Some(n) = &self.normalization {
            // it was checked against the layers' channels, not the image's
            return Err(NetworkError::NormalizationLen {
                channels: front.image[0],
                mean: n.mean.len(),
                std: n.std.len(),
            });
        }
        self.front = Some(Scatter::new(front)?);
        Ok(self)
    }

    /// The scattering front, if any.
    pub fn front(&self) -> Option<&ScatterFront> {
        self.front.as_ref().map(Scatter::front)
    }

    /// The shape `[c, h, w]` of the images the network reads: the front's image, else the
    /// layers' input.
    pub fn image_input(&self) -> [usize; 3] {
        self.front().map_or(self.input, |f| f.image)
    }

    /// Attaches the input normalisation (one mean and one positive deviation per channel).
    pub fn with_normalization(
        mut self,
        mean: Vec<f32>,
        std: Vec<f32>,
    ) -> Result<Self, NetworkError> {
        let channels = self.image_input()[0];
        if mean.len() != channels || std.len() != channels {
            return Err(NetworkError::NormalizationLen {
                channels,
                mean: mean.len(),
                std: std.len(),
            });
        }
        check_finite(0, "normalisation mean", &mean)?;
        if let Some(c) = std.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(NetworkError::BadStd(c));
        }
        self.normalization = Some(Normalization { mean, std });
        Ok(self)
    }

    /// Input shape `[c, h, w]` of the layers (what is encrypted).
    pub fn input(&self) -> [usize; 3] {
        self.input
    }
    /// Number of input values (c·h·w).
    pub fn input_len(&self) -> usize {
        self.input.iter().product()
    }
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }
    /// The output shape of every layer.
    pub fn shapes(&self) -> &[Shape] {
        &self.shapes
    }
    /// Number of outputs (logits).
    pub fn output_len(&self) -> usize {
        self.shapes.last().map_or(0, Shape::len)
    }
    pub fn normalization(&self) -> Option<&Normalization> {
        self.normalization.as_ref()
    }

    /// The input shape of layer `i`.
    pub fn input_shape(&self, i: usize) -> Shape {
        if i == 0 {
            Shape::Chw(self.input)
        } else {
            self.shapes[i - 1]
        }
    }

    /// The layers' input for an image given as HWC bytes (as `client` does it): normalised CHW
    /// values (pixel/255 without a normalisation), through the front if there is one.
    pub fn normalize_hwc(&self, hwc: &[u8]) -> Result<Vec<f32>, NetworkError> {
        let [c, h, w] = self.image_input();
        if hwc.len() != c * h * w {
            return Err(NetworkError::InputLen {
                expected: c * h * w,
                found: hwc.len(),
            });
        }
        let mut out = vec![0f32; c * h * w];
        for p in 0..h * w {
            for ch in 0..c {
                let v = hwc[p * c + ch] as f32 / 255.0;
                out[ch * h * w + p] = match &self.normalization {
                    Some(n) => (v - n.mean[ch]) / n.std[ch],
                    None => v,
                };
            }
        }
        match &self.front {
            Some(f) => f.apply(&out),
            None => Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(ci: usize, co: usize, k: usize, s: usize, p: usize) -> Layer {
        Layer::Conv2d(Conv2d {
            in_channels: ci,
            out_channels: co,
            kernel: k,
            stride: s,
            padding: p,
            weight: vec![0.1; co * ci * k * k],
            bias: vec![0.0; co],
        })
    }

    fn dense(i: usize, o: usize) -> Layer {
        Layer::Dense(Dense {
            in_features: i,
            out_features: o,
            weight: vec![0.1; i * o],
            bias: vec![0.0; o],
        })
    }

    #[test]
    fn default_architecture_shapes() {
        let net = Network::new(
            [1, 28, 28],
            vec![
                conv(1, 16, 5, 2, 0),
                Layer::Square,
                dense(2304, 128),
                Layer::Square,
                dense(128, 11),
            ],
        )
        .unwrap();
        assert_eq!(net.shapes()[0], Shape::Chw([16, 12, 12]));
        assert_eq!(net.output_len(), 11);
        let padded = Network::new(
            [3, 8, 8],
            vec![
                conv(3, 2, 3, 1, 1),
                Layer::AvgPool2d {
                    kernel: 2,
                    stride: 2,
                },
            ],
        )
        .unwrap();
        assert_eq!(padded.shapes()[1], Shape::Chw([2, 4, 4]));
    }

    #[test]
    fn malformed_descriptions_are_refused() {
        let err = |layers: Vec<Layer>| Network::new([1, 28, 28], layers).unwrap_err();
        assert!(matches!(err(vec![]), NetworkError::NoLayers));
        assert!(matches!(
            Network::new([1, 0, 28], vec![Layer::Square]).unwrap_err(),
            NetworkError::EmptyInput(_)
        ));
        assert!(matches!(
            err(vec![conv(3, 4, 3, 1, 0)]),
            NetworkError::ShapeMismatch { layer: 0, .. }
        ));
        assert!(matches!(
            err(vec![conv(1, 16, 5, 2, 0), dense(2000, 10)]),
            NetworkError::ShapeMismatch { layer: 1, .. }
        ));
        let mut short = conv(1, 4, 3, 1, 0);
        if let Layer::Conv2d(c) = &mut short {
            c.weight.pop();
        }
        assert!(matches!(
            err(vec![short]),
            NetworkError::WeightLen {
                what: "weight",
                expected: 36,
                found: 35,
                ..
            }
        ));
        let mut nan = dense(784, 2);
        if let Layer::Dense(d) = &mut nan {
            d.bias[1] = f32::NAN;
        }
        assert!(matches!(
            err(vec![Layer::Flatten, nan]),
            NetworkError::NotFinite { layer: 1, .. }
        ));
        assert!(matches!(
            err(vec![conv(1, 1, 29, 1, 0)]),
            NetworkError::KernelTooLarge { .. }
        ));
        assert!(matches!(
            err(vec![conv(1, 1, 3, 0, 0)]),
            NetworkError::Zero { what: "stride", .. }
        ));
        assert!(matches!(
            err(vec![Layer::Flatten, conv(1, 1, 3, 1, 0)]),
            NetworkError::NeedsSpatial { layer: 1, .. }
        ));
        assert!(matches!(
            err(vec![Layer::Quadratic {
                a: f32::INFINITY,
                b: 0.0
            }]),
            NetworkError::NotFinite { .. }
        ));
        // absurd sizes are refused before anything is allocated for them
        let huge = Layer::Conv2d(Conv2d {
            in_channels: 1,
            out_channels: usize::MAX / 2,
            kernel: 1,
            stride: 1,
            padding: 0,
            weight: vec![],
            bias: vec![],
        });
        assert!(matches!(err(vec![huge]), NetworkError::TooLarge { .. }));
        let net = Network::new([2, 4, 4], vec![Layer::Square]).unwrap();
        assert!(matches!(
            net.clone().with_normalization(vec![0.5], vec![0.2, 0.2]),
            Err(NetworkError::NormalizationLen { .. })
        ));
        assert!(matches!(
            net.with_normalization(vec![0.5, 0.5], vec![0.2, 0.0]),
            Err(NetworkError::BadStd(1))
        ));
    }

    #[test]
    fn normalisation_matches_client_semantics() {
        let net = Network::new([2, 1, 2], vec![Layer::Square])
            .unwrap()
            .with_normalization(vec![0.5, 0.0], vec![0.5, 1.0])
            .unwrap();
        // HWC bytes: pixel 0 = (255, 0), pixel 1 = (0, 255)
        let x = net.normalize_hwc(&[255, 0, 0, 255]).unwrap();
        assert_eq!(x, vec![1.0, -1.0, 0.0, 1.0]);
        assert!(net.normalize_hwc(&[1, 2, 3]).is_err());
    }

    #[cfg(feature = "serde")]
    #[test]
    fn json_round_trip_validates() {
        let net = Network::new(
            [1, 4, 4],
            vec![conv(1, 2, 3, 1, 0), Layer::Square, dense(8, 3)],
        )
        .unwrap()
        .with_normalization(vec![0.5], vec![0.25])
        .unwrap();
        let text = serde_json::to_string(&net).unwrap();
        assert!(text.contains("\"type\":\"conv2d\""));
        assert_eq!(serde_json::from_str::<Network>(&text).unwrap(), net);
        // a description whose dense layer disagrees with the shapes is refused on reading
        let bad = text.replace("\"in_features\":8", "\"in_features\":9");
        let err = serde_json::from_str::<Network>(&bad).unwrap_err();
        assert!(err.to_string().contains("layer 2"), "{err}");
        assert!(serde_json::from_str::<Network>(&text.replace("input", "inputs")).is_err());
    }

    #[cfg(feature = "serde")]
    #[test]
    fn a_scattering_front_makes_images_into_the_layers_input() {
        let front = ScatterFront {
            image: [1, 28, 28],
            scales: 2,
            angles: 8,
            groups: 9,
        };
        let net = Network::new([81, 7, 7], vec![Layer::Flatten, dense(81 * 49, 3)])
            .unwrap()
            .with_front(front)
            .unwrap()
            .with_normalization(vec![0.0], vec![1.0])
            .unwrap();
        assert_eq!((net.input(), net.image_input()), ([81, 7, 7], [1, 28, 28]));
        let hwc: Vec<u8> = (0..784).map(|i| (i * 7 % 256) as u8).collect();
        let x = net.normalize_hwc(&hwc).unwrap();
        let pixels: Vec<f32> = hwc.iter().map(|&b| f32::from(b) / 255.0).collect();
        assert_eq!(x, Scatter::new(front).unwrap().apply(&pixels).unwrap());
        assert!(net.forward(&x).is_ok());
        // the front travels with the network and its architecture
        let text = serde_json::to_string(&net).unwrap();
        assert!(text.contains("\"front\":{\"image\":[1,28,28]"), "{text}");
        assert_eq!(serde_json::from_str::<Network>(&text).unwrap(), net);
        let skeleton = net.architecture().skeleton().unwrap();
        assert_eq!(skeleton.front(), Some(&front));
        // a front whose output is not the layers' input, or one put after the normalisation
        let wrong = ScatterFront {
            angles: 4,
            groups: 1,
            ..front
        };
        assert!(matches!(
            Network::new([81, 7, 7], vec![Layer::Square])
                .unwrap()
                .with_front(wrong),
            Err(NetworkError::ShapeMismatch { .. })
        ));
        let normalised_first = Network::new([81, 7, 7], vec![Layer::Square])
            .unwrap()
            .with_normalization(vec![0.0; 81], vec![1.0; 81])
            .unwrap();
        assert!(normalised_first.with_front(front).is_err());
        // the layers' input alone is no longer an image this network reads
        assert!(net.normalize_hwc(&vec![0; 81 * 49]).is_err());
    }
}
