//! A network's parameters (burn modules) and its forward pass, built from a [`NetworkSpec`].

use burn::module::{Module, Param};
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::tensor::activation::relu;
use burn::tensor::module::{avg_pool2d, conv2d};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use super::{Activation, LayerKind, NetworkSpec};

/// Convolution parameters: weight `[out, in, k, k]`, bias `[out]`.
#[derive(Module, Debug)]
pub struct ConvParams {
    /// `[out, in, k, k]`.
    pub weight: Param<Tensor<4>>,
    /// `[out]`.
    pub bias: Param<Tensor<1>>,
}

/// Dense parameters: weight stored `[in, out]` (burn's layout; exported as `[out, in]`), bias
/// `[out]`.
#[derive(Module, Debug)]
pub struct DenseParams {
    /// `[in, out]`.
    pub weight: Param<Tensor<2>>,
    /// `[out]`.
    pub bias: Param<Tensor<1>>,
}

/// Quadratic activation parameters a, b (each shape `[1]`).
#[derive(Module, Debug)]
pub struct QuadParams {
    /// Coefficient of x².
    pub a: Param<Tensor<1>>,
    /// Coefficient of x.
    pub b: Param<Tensor<1>>,
}

/// The trainable state of one layer.
#[derive(Module, Debug)]
pub enum LayerParams {
    /// Convolution.
    Conv(ConvParams),
    /// Dense.
    Dense(DenseParams),
    /// Batch norm (gamma, beta, running mean and variance).
    Norm(BatchNorm),
    /// Quadratic activation.
    Quad(QuadParams),
}

/// A network of the family: the layer plan plus one [`LayerParams`] per layer that has state
/// (in layer order).
#[derive(Module, Debug)]
pub struct Network {
    /// State of the layers that have some, in layer order.
    pub params: Vec<LayerParams>,
    /// The plan.
    #[module(skip)]
    pub spec: NetworkSpec,
}

fn uniform(rng: &mut ChaCha8Rng, n: usize, bound: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-bound..=bound)).collect()
}

pub(crate) fn param<const D: usize>(
    data: Vec<f32>,
    shape: [usize; D],
    device: &Device,
) -> Param<Tensor<D>> {
    Param::from_data(TensorData::new(data, shape), device)
}

impl Network {
    /// A freshly initialised network on `device` (Kaiming-uniform weights, as PyTorch's
    /// defaults: U(±1/√fan_in) for weights and biases), deterministic from `spec.init_seed`.
    pub fn init(spec: &NetworkSpec, device: &Device) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(spec.init_seed);
        let mut params = Vec::new();
        for l in &spec.layers {
            match &l.kind {
                LayerKind::Conv {
                    in_channels,
                    out_channels,
                    kernel,
                    ..
                } => {
                    let fan_in = in_channels * kernel * kernel;
                    let bound = 1.0 / (fan_in as f32).sqrt();
                    let w = uniform(&mut rng, out_channels * fan_in, bound);
                    let b = uniform(&mut rng, *out_channels, bound);
                    params.push(LayerParams::Conv(ConvParams {
                        weight: param(w, [*out_channels, *in_channels, *kernel, *kernel], device),
                        bias: param(b, [*out_channels], device),
                    }));
                }
                LayerKind::Dense {
                    in_features,
                    out_features,
                } => {
                    let bound = 1.0 / (*in_features as f32).sqrt();
                    let w = uniform(&mut rng, in_features * out_features, bound);
                    let b = uniform(&mut rng, *out_features, bound);
                    params.push(LayerParams::Dense(DenseParams {
                        weight: param(w, [*in_features, *out_features], device),
                        bias: param(b, [*out_features], device),
                    }));
                }
                LayerKind::BatchNorm {
                    features,
                    momentum,
                    epsilon,
                } => {
                    let bn = BatchNormConfig::new(*features)
                        .with_momentum(*momentum)
                        .with_epsilon(*epsilon)
                        .init(device);
                    params.push(LayerParams::Norm(bn));
                }
                LayerKind::Act {
                    activation: Activation::Quadratic,
                } => {
                    let [a, b] = spec.quadratic_init;
                    params.push(LayerParams::Quad(QuadParams {
                        a: param(vec![a], [1], device),
                        b: param(vec![b], [1], device),
                    }));
                }
                LayerKind::Act { .. } | LayerKind::AvgPool { .. } | LayerKind::Dropout { .. } => {}
            }
        }
        Self {
            params,
            spec: spec.clone(),
        }
    }

    /// Logits `[batch, classes]` for images `[batch, c, h, w]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward_tapped(x, &mut |_, _, out| out)
    }

    /// [`Network::forward`] with `tap` called at every layer that has parameters: the layer's
    /// index in `params`, its input and its output, which `tap`'s return replaces. DP-SGD reads
    /// each example's gradients through it.
    pub(crate) fn forward_tapped(
        &self,
        x: Tensor<4>,
        tap: &mut dyn FnMut(usize, &Activations, Activations) -> Activations,
    ) -> Tensor<2> {
        use Activations::{Img, Vec};
        let mut cur = Img(x);
        let mut slot = 0;
        let next = |slot: &mut usize| {
            let p = &self.params[*slot];
            *slot += 1;
            (*slot - 1, p)
        };
        for l in &self.spec.layers {
            cur = match (&l.kind, cur) {
                (
                    LayerKind::Conv {
                        stride, padding, ..
                    },
                    Img(x),
                ) => {
                    let (i, LayerParams::Conv(p)) = next(&mut slot) else {
                        unreachable!("params follow the spec")
                    };
                    let out = conv2d(
                        x.clone(),
                        p.weight.val(),
                        Some(p.bias.val()),
                        ConvOptions::new([*stride; 2], [*padding; 2], [1, 1], 1),
                    );
                    tap(i, &Img(x), Img(out))
                }
                (LayerKind::AvgPool { kernel, stride }, Img(x)) => Img(avg_pool2d(
                    x,
                    AvgPoolOptions::new([*kernel; 2]).with_stride([*stride; 2]),
                )),
                (LayerKind::Dense { .. }, cur) => {
                    let x = match cur {
                        Img(x) => x.flatten::<2>(1, 3),
                        Vec(x) => x,
                    };
                    let (i, LayerParams::Dense(p)) = next(&mut slot) else {
                        unreachable!("params follow the spec")
                    };
                    let out = x.clone().matmul(p.weight.val()) + p.bias.val().unsqueeze_dim(0);
                    tap(i, &Vec(x), Vec(out))
                }
                (LayerKind::BatchNorm { .. }, cur) => {
                    let (i, LayerParams::Norm(bn)) = next(&mut slot) else {
                        unreachable!("params follow the spec")
                    };
                    let out = match &cur {
                        Img(x) => Img(bn.forward(x.clone())),
                        Vec(x) => Vec(bn.forward(x.clone())),
                    };
                    tap(i, &cur, out)
                }
                (LayerKind::Act { activation }, cur) => {
                    if *activation == Activation::Quadratic {
                        let (i, LayerParams::Quad(q)) = next(&mut slot) else {
                            unreachable!("params follow the spec")
                        };
                        let quad = Some((q.a.val(), q.b.val()));
                        let out = match &cur {
                            Img(x) => Img(act(x.clone(), *activation, quad)),
                            Vec(x) => Vec(act(x.clone(), *activation, quad)),
                        };
                        tap(i, &cur, out)
                    } else {
                        match cur {
                            Img(x) => Img(act(x, *activation, None)),
                            Vec(x) => Vec(act(x, *activation, None)),
                        }
                    }
                }
                (LayerKind::Dropout { rate }, cur) => match cur {
                    Img(x) => Img(dropout(x, *rate)),
                    Vec(x) => Vec(dropout(x, *rate)),
                },
                (_, Vec(_)) => unreachable!("resolve() rejects image layers after dense"),
            };
        }
        match cur {
            Vec(x) => x,
            Img(x) => x.flatten::<2>(1, 3),
        }
    }
}

/// A layer's activations for a batch: images `[b, c, h, w]` or vectors `[b, n]`.
#[derive(Clone, Debug)]
pub(crate) enum Activations {
    Img(Tensor<4>),
    Vec(Tensor<2>),
}

/// Inverted dropout on autodiff devices (training); identity otherwise.
fn dropout<const D: usize>(x: Tensor<D>, rate: f64) -> Tensor<D> {
    if rate == 0.0 || !x.device().is_autodiff() {
        return x;
    }
    let keep = 1.0 - rate;
    let mask = x.random_like(Distribution::Bernoulli(keep));
    (x * mask).div_scalar(keep as f32)
}

fn act<const D: usize>(
    x: Tensor<D>,
    a: Activation,
    quad: Option<(Tensor<1>, Tensor<1>)>,
) -> Tensor<D> {
    match (a, quad) {
        (Activation::Relu, _) => relu(x),
        (Activation::Square, _) => x.clone() * x,
        (Activation::Quadratic, Some((qa, qb))) => {
            let qa: Tensor<D> = qa.reshape([1; D]);
            let qb: Tensor<D> = qb.reshape([1; D]);
            // x·(a·x + b): the form CKKS evaluates with one ciphertext multiplication.
            x.clone() * (x * qa + qb)
        }
        (Activation::Quadratic, None) => unreachable!("quadratic layers carry a and b"),
    }
}
