//! A network's architecture without its weights: what a requester needs to compile the server's
//! plan and so its [`InferenceSpec`](super::InferenceSpec) (input layout, levels, Galois steps):
//! the layer kinds and shapes, the input normalisation and, for a quadratic activation, only
//! whether it is linear (a = 0 changes the plan; the values of a and b do not).
//!
//! A server describes its model with [`Network::architecture`]; the requester rebuilds a
//! [`Architecture::skeleton`] network (deterministic positive weights) and compiles it. The
//! skeleton's plan equals the real one unless some real weights cancel exactly (a diagonal that
//! vanishes): both sides compare [`InferenceSpec::fingerprint`](super::InferenceSpec::fingerprint)s,
//! so a mismatch is refused, never evaluated.

use super::error::NetworkError;
use super::network::{
    Conv2d, Dense, Layer, Network, Normalization, Residual, Shape, body_shapes, layer_output,
};
use super::scatter::ScatterFront;

/// Most layers an architecture read from outside may have.
pub const MAX_LAYERS: usize = 64;
/// Most weights (all layers together) a skeleton may hold: bounds what a description read from
/// outside can make a requester allocate (64 MB of `f32`).
pub const MAX_SKELETON_WEIGHTS: usize = 1 << 24;

/// One layer, without weights.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)
)]
pub enum ArchLayer {
    Conv2d {
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    AvgPool2d {
        kernel: usize,
        stride: usize,
    },
    Flatten,
    Dense {
        in_features: usize,
        out_features: usize,
    },
    Square,
    /// a·x² + b·x; `linear` when a = 0.
    Quadratic {
        linear: bool,
    },
    /// max(0, x): plaintext only (plans refuse it).
    Relu,
    /// a_k·x² + b_k·x + c_k per channel (its size is the input's channels).
    ChannelQuadratic,
    /// A residual block: its body and, when not the identity, its shortcut (a `conv2d`).
    Residual {
        body: Vec<ArchLayer>,
        #[cfg_attr(feature = "serde", serde(default))]
        shortcut: Option<Box<ArchLayer>>,
    },
    GlobalAvgPool,
}

/// A network's shape: input, normalisation, layers.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct Architecture {
    pub input: [usize; 3],
    #[cfg_attr(feature = "serde", serde(default))]
    pub normalization: Option<Normalization>,
    /// The scattering front the requester computes before encrypting.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub front: Option<ScatterFront>,
    pub layers: Vec<ArchLayer>,
}

/// Deterministic weights in [0.5, 1.5): positive, so composed maps never cancel.
fn filler(len: usize, salt: usize) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let h = (i as u64 ^ ((salt as u64) << 40)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            0.5 + (h >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}

impl Network {
    /// The architecture of this network (no weights).
    pub fn architecture(&self) -> Architecture {
        Architecture {
            input: self.input(),
            normalization: self.normalization().cloned(),
            front: self.front().copied(),
            layers: self.layers().iter().map(arch_of).collect(),
        }
    }
}

fn arch_of(l: &Layer) -> ArchLayer {
    match l {
        Layer::Conv2d(c) => ArchLayer::Conv2d {
            in_channels: c.in_channels,
            out_channels: c.out_channels,
            kernel: c.kernel,
            stride: c.stride,
            padding: c.padding,
        },
        Layer::AvgPool2d { kernel, stride } => ArchLayer::AvgPool2d {
            kernel: *kernel,
            stride: *stride,
        },
        Layer::Flatten => ArchLayer::Flatten,
        Layer::Dense(d) => ArchLayer::Dense {
            in_features: d.in_features,
            out_features: d.out_features,
        },
        Layer::Square => ArchLayer::Square,
        Layer::Quadratic { a, .. } => ArchLayer::Quadratic { linear: *a == 0.0 },
        Layer::Relu => ArchLayer::Relu,
        Layer::ChannelQuadratic { .. } => ArchLayer::ChannelQuadratic,
        Layer::Residual(r) => ArchLayer::Residual {
            body: r.body.iter().map(arch_of).collect(),
            shortcut: r
                .shortcut
                .as_ref()
                .map(|c| Box::new(arch_of(&Layer::Conv2d(c.clone())))),
        },
        Layer::GlobalAvgPool => ArchLayer::GlobalAvgPool,
    }
}

/// Layers of an architecture, those of blocks' bodies and shortcuts included.
fn count_layers(layers: &[ArchLayer]) -> usize {
    layers
        .iter()
        .map(|l| match l {
            ArchLayer::Residual { body, shortcut } => {
                1 + count_layers(body) + usize::from(shortcut.is_some())
            }
            _ => 1,
        })
        .sum()
}

/// Weights of one layer (blocks included), with overflow checks; `None` on overflow.
fn weights_of(l: &ArchLayer) -> Option<usize> {
    match l {
        ArchLayer::Conv2d {
            in_channels,
            out_channels,
            kernel,
            ..
        } => [*in_channels, *out_channels, *kernel, *kernel]
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|w| w.checked_add(*out_channels)),
        ArchLayer::Dense {
            in_features,
            out_features,
        } => in_features
            .checked_mul(*out_features)
            .and_then(|w| w.checked_add(*out_features)),
        ArchLayer::Residual { body, shortcut } => body
            .iter()
            .chain(shortcut.as_deref())
            .try_fold(0usize, |a, l| a.checked_add(weights_of(l)?)),
        _ => Some(0),
    }
}

/// A layer with placeholder weights (`salt` varies them); a channel quadratic's size comes
/// from its input `shape`.
fn skeleton_layer(
    l: &ArchLayer,
    i: usize,
    salt: &mut usize,
    shape: Shape,
) -> Result<Layer, NetworkError> {
    *salt += 2;
    let s = *salt;
    Ok(match l {
        &ArchLayer::Conv2d {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
        } => Layer::Conv2d(Conv2d {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
            weight: filler(out_channels * in_channels * kernel * kernel, s),
            bias: filler(out_channels, s + 1),
        }),
        &ArchLayer::AvgPool2d { kernel, stride } => Layer::AvgPool2d { kernel, stride },
        ArchLayer::Flatten => Layer::Flatten,
        &ArchLayer::Dense {
            in_features,
            out_features,
        } => Layer::Dense(Dense {
            in_features,
            out_features,
            weight: filler(in_features * out_features, s),
            bias: filler(out_features, s + 1),
        }),
        ArchLayer::Square => Layer::Square,
        ArchLayer::Quadratic { linear } => Layer::Quadratic {
            a: if *linear { 0.0 } else { 1.0 },
            b: 1.0,
        },
        ArchLayer::Relu => Layer::Relu,
        ArchLayer::ChannelQuadratic => {
            let k = match shape {
                Shape::Chw([c, _, _]) => c,
                Shape::Flat(n) => n,
            };
            Layer::ChannelQuadratic {
                a: filler(k, s),
                b: filler(k, s + 1),
                c: filler(k, s + 2),
            }
        }
        ArchLayer::GlobalAvgPool => Layer::GlobalAvgPool,
        ArchLayer::Residual { body, shortcut } => {
            let mut cur = shape;
            let mut layers = Vec::with_capacity(body.len());
            for b in body {
                let layer = skeleton_layer(b, i, salt, cur)?;
                cur = body_shapes(i, cur, std::slice::from_ref(&layer))?[0];
                layers.push(layer);
            }
            let shortcut = match shortcut.as_deref() {
                None => None,
                Some(c @ ArchLayer::Conv2d { .. }) => match skeleton_layer(c, i, salt, shape)? {
                    Layer::Conv2d(c) => Some(c),
                    _ => unreachable!("a conv2d makes a conv2d"),
                },
                Some(_) => return Err(NetworkError::BlockLayer { layer: i }),
            };
            Layer::Residual(Residual {
                body: layers,
                shortcut,
            })
        }
    })
}

impl Architecture {
    /// A network of this architecture with placeholder weights, validated like any other (and
    /// refused when larger than [`MAX_LAYERS`] / [`MAX_SKELETON_WEIGHTS`]).
    pub fn skeleton(&self) -> Result<Network, NetworkError> {
        let count = count_layers(&self.layers);
        if count > MAX_LAYERS {
            return Err(NetworkError::TooLarge {
                layer: MAX_LAYERS,
                what: "number of layers",
                value: count,
            });
        }
        // sizes first, with overflow checks, before anything is allocated
        let mut total = 0usize;
        for (i, l) in self.layers.iter().enumerate() {
            total = weights_of(l)
                .and_then(|n| total.checked_add(n))
                .filter(|&t| t <= MAX_SKELETON_WEIGHTS)
                .ok_or(NetworkError::TooLarge {
                    layer: i,
                    what: "weights of the architecture",
                    value: usize::MAX,
                })?;
        }
        let mut salt = 0;
        let mut shape = Shape::Chw(self.input);
        let mut layers = Vec::with_capacity(self.layers.len());
        for (i, l) in self.layers.iter().enumerate() {
            let layer = skeleton_layer(l, i, &mut salt, shape)?;
            // the next layer's input shape (a channel quadratic's size depends on it)
            shape = layer_output(i, &layer, shape)?;
            layers.push(layer);
        }
        let mut net = Network::new(self.input, layers)?;
        if let Some(f) = self.front {
            net = net.with_front(f)?;
        }
        match &self.normalization {
            Some(n) => net.with_normalization(n.mean.clone(), n.std.clone()),
            None => Ok(net),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{InferencePlan, ParamPolicy};
    use super::*;

    /// conv → quadratic → pool → dense → square → dense, weights of either sign.
    fn small_network_for(seed: u64) -> Network {
        let mut s = seed;
        let mut next = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
                })
                .collect()
        };
        Network::new(
            [2, 6, 6],
            vec![
                Layer::Conv2d(Conv2d {
                    in_channels: 2,
                    out_channels: 3,
                    kernel: 3,
                    stride: 1,
                    padding: 1,
                    weight: next(54),
                    bias: next(3),
                }),
                Layer::Quadratic { a: 0.3, b: 0.8 },
                Layer::AvgPool2d {
                    kernel: 2,
                    stride: 2,
                },
                Layer::Flatten,
                Layer::Dense(Dense {
                    in_features: 27,
                    out_features: 12,
                    weight: next(27 * 12),
                    bias: next(12),
                }),
                Layer::Square,
                Layer::Dense(Dense {
                    in_features: 12,
                    out_features: 5,
                    weight: next(60),
                    bias: next(5),
                }),
            ],
        )
        .unwrap()
        .with_normalization(vec![0.5, 0.4], vec![0.2, 0.3])
        .unwrap()
    }

    #[test]
    fn a_skeleton_compiles_to_the_real_networks_spec() {
        for seed in [1, 2, 3] {
            let net = small_network_for(seed);
            let arch = net.architecture();
            let skel = arch.skeleton().unwrap();
            assert_eq!(skel.architecture(), arch);
            assert_ne!(skel, net, "the weights are placeholders");
            let policy = ParamPolicy::default();
            let real = InferencePlan::new(&net, &policy).unwrap();
            let fake = InferencePlan::new(&skel, &policy).unwrap();
            assert_eq!(real.spec().fingerprint(), fake.spec().fingerprint());
        }
    }

    #[test]
    fn oversized_or_malformed_architectures_are_refused() {
        let huge = Architecture {
            input: [1, 8, 8],
            normalization: None,
            front: None,
            layers: vec![
                ArchLayer::Flatten,
                ArchLayer::Dense {
                    in_features: 64,
                    out_features: usize::MAX / 2,
                },
            ],
        };
        assert!(matches!(
            huge.skeleton(),
            Err(NetworkError::TooLarge { .. })
        ));
        let many = Architecture {
            input: [1, 2, 2],
            normalization: None,
            front: None,
            layers: vec![ArchLayer::Square; MAX_LAYERS + 1],
        };
        assert!(matches!(
            many.skeleton(),
            Err(NetworkError::TooLarge { .. })
        ));
        let mismatched = Architecture {
            input: [1, 8, 8],
            normalization: None,
            front: None,
            layers: vec![
                ArchLayer::Flatten,
                ArchLayer::Dense {
                    in_features: 63,
                    out_features: 2,
                },
            ],
        };
        assert!(matches!(
            mismatched.skeleton(),
            Err(NetworkError::ShapeMismatch { .. })
        ));
    }
}
