//! A network (its layer plan and the parameters of `layer_params`) and its forward pass, built from
//! a [`NetworkSpec`].

use burn::module::{Module, Param};
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::tensor::module::{avg_pool2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, MaxPoolOptions};
use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

pub(crate) use super::activation::Activations;
use super::activation::{ActParams, PolyParams, QuadParams};
use super::activation::{ActParamsRef, apply_act, dropout};
use super::layer_params::{BlockParams, ConvParams, DenseParams, LayerParams};
use super::tap::{self, Site, Tap};
use super::{Activation, LayerKind, NetworkSpec};

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

fn conv_init(rng: &mut ChaCha8Rng, ci: usize, co: usize, k: usize, device: &Device) -> ConvParams {
    let fan_in = ci * k * k;
    let bound = 1.0 / (fan_in as f32).sqrt();
    let w = uniform(rng, co * fan_in, bound);
    let b = uniform(rng, co, bound);
    ConvParams {
        weight: param(w, [co, ci, k, k], device),
        bias: param(b, [co], device),
    }
}

fn norm_init(features: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(features)
        .with_momentum(0.1)
        .with_epsilon(1e-5)
        .init(device)
}

/// The parameters of an activation over `channels`, if it has any.
fn act_init(
    spec: &NetworkSpec,
    a: Activation,
    channels: usize,
    device: &Device,
) -> Option<ActParams> {
    match a {
        Activation::Quadratic => {
            let [qa, qb] = spec.quadratic_init;
            Some(ActParams::Quad(QuadParams {
                a: param(vec![qa], [1], device),
                b: param(vec![qb], [1], device),
            }))
        }
        Activation::Poly => {
            let [pa, pb, pc] = spec.poly_init;
            Some(ActParams::Poly(PolyParams {
                a: param(vec![pa; channels], [channels], device),
                b: param(vec![pb; channels], [channels], device),
                c: param(vec![pc; channels], [channels], device),
            }))
        }
        Activation::Square | Activation::Relu => None,
    }
}

/// Whether a layer holds a [`LayerParams`].
pub(crate) fn has_params(kind: &LayerKind) -> bool {
    match kind {
        LayerKind::Conv { .. }
        | LayerKind::Dense { .. }
        | LayerKind::BatchNorm { .. }
        | LayerKind::Residual { .. } => true,
        LayerKind::Act { activation } => {
            matches!(activation, Activation::Quadratic | Activation::Poly)
        }
        _ => false,
    }
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
                LayerKind::Act { activation } => {
                    match act_init(spec, *activation, l.input[0], device) {
                        Some(ActParams::Quad(q)) => params.push(LayerParams::Quad(q)),
                        Some(ActParams::Poly(p)) => params.push(LayerParams::Poly(p)),
                        None => {}
                    }
                }
                LayerKind::Residual {
                    in_channels,
                    out_channels,
                    kernel,
                    activation,
                    ..
                } => {
                    let (ci, co) = (*in_channels, *out_channels);
                    let conv1 = conv_init(&mut rng, ci, co, *kernel, device);
                    let conv2 = conv_init(&mut rng, co, co, *kernel, device);
                    let proj = l
                        .kind
                        .projects()
                        .then(|| conv_init(&mut rng, ci, co, 1, device));
                    let mut bn2 = norm_init(co, device);
                    bn2.gamma = param(vec![0.0; co], [co], device);
                    params.push(LayerParams::Block(BlockParams {
                        conv1,
                        bn1: norm_init(co, device),
                        act1: act_init(spec, *activation, co, device),
                        conv2,
                        bn2,
                        proj_bn: proj.as_ref().map(|_| norm_init(co, device)),
                        proj,
                        bn3: norm_init(co, device),
                        act2: act_init(spec, *activation, co, device),
                    }));
                }
                LayerKind::AvgPool { .. }
                | LayerKind::MaxPool { .. }
                | LayerKind::Dropout { .. }
                | LayerKind::GlobalAvgPool => {}
            }
        }
        Self {
            params,
            spec: spec.clone(),
        }
    }

    /// The network with the parameters of its first `spec.frozen` layers taken out of
    /// training (no gradients, so no optimiser step; batch-norm running statistics still
    /// follow the new data, which is what adapting a backbone to a new site wants).
    pub fn freeze_front(mut self) -> Self {
        let frozen = self.spec.frozen;
        if frozen == 0 {
            return self;
        }
        let stateful: Vec<bool> = (self.spec.layers.iter().enumerate())
            .filter(|(_, l)| has_params(&l.kind))
            .map(|(i, _)| i < frozen)
            .collect();
        self.params = std::mem::take(&mut self.params)
            .into_iter()
            .zip(stateful)
            .map(|(p, f)| if f { p.no_grad() } else { p })
            .collect();
        self
    }

    /// The network with every batch norm normalising by its running statistics, also while
    /// training, and leaving them unchanged (`[train] norm_statistics = "frozen"`); γ and β
    /// keep their gradients.
    pub fn freeze_norm_statistics(mut self) -> Self {
        fn fixed(mut bn: BatchNorm) -> BatchNorm {
            bn.training = Param::from_bool(false);
            bn
        }
        self.params = std::mem::take(&mut self.params)
            .into_iter()
            .map(|p| match p {
                LayerParams::Norm(bn) => LayerParams::Norm(fixed(bn)),
                LayerParams::Block(b) => LayerParams::Block(BlockParams {
                    bn1: fixed(b.bn1),
                    bn2: fixed(b.bn2),
                    proj_bn: b.proj_bn.map(fixed),
                    bn3: fixed(b.bn3),
                    ..b
                }),
                other => other,
            })
            .collect();
        self
    }

    /// Logits `[batch, classes]` for images `[batch, c, h, w]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward_tapped(x, &mut |_, _, out| out)
    }

    /// [`Network::forward`] with `tap` called at every operation that has parameters (a
    /// residual block's convolutions, batch norms and activations one by one): the operation,
    /// its input and its output, which `tap`'s return replaces. DP-SGD reads each example's
    /// gradients through it.
    pub(crate) fn forward_tapped(&self, x: Tensor<4>, tap: &mut Tap<'_>) -> Tensor<2> {
        match self.forward_until(x, self.spec.layers.len(), tap, &mut |_, _| {}) {
            Activations::Vec(x) => x,
            Activations::Img(x) => x.flatten::<2>(1, 3),
        }
    }

    /// Logits, and the mean over the outputs of every polynomial activation and residual
    /// block of how far values pass `bound`, squared: `mean(relu(|x| − bound)²)` summed over
    /// those layers (the training's range penalty, `[train] range_penalty`).
    pub(crate) fn forward_with_range(
        &self,
        x: Tensor<4>,
        bound: f32,
    ) -> (Tensor<2>, Option<Tensor<1>>) {
        let mut sum: Option<Tensor<1>> = None;
        let out = self.forward_until(
            x,
            self.spec.layers.len(),
            &mut |_, _, o| o,
            &mut |i, cur| {
                let watched = match &self.spec.layers[i].kind {
                    LayerKind::Act { activation } | LayerKind::Residual { activation, .. } => {
                        activation.is_polynomial()
                    }
                    _ => false,
                };
                if !watched {
                    return;
                }
                let excess = |t: Tensor<1>| (t.abs() - bound).clamp_min(0.0).powi_scalar(2).mean();
                let p = match cur {
                    Activations::Img(t) => excess(t.clone().flatten::<1>(0, 3)),
                    Activations::Vec(t) => excess(t.clone().flatten::<1>(0, 1)),
                };
                sum = Some(match sum.take() {
                    Some(s) => s + p,
                    None => p,
                });
            },
        );
        let logits = match out {
            Activations::Vec(x) => x,
            Activations::Img(x) => x.flatten::<2>(1, 3),
        };
        (logits, sum)
    }

    /// The output of the first `until` layers: a frozen backbone's features.
    pub(crate) fn forward_until(
        &self,
        x: Tensor<4>,
        until: usize,
        tap: &mut Tap<'_>,
        probe: &mut dyn FnMut(usize, &Activations),
    ) -> Activations {
        use Activations::{Img, Vec};
        let bounds = self.spec.poly_bounds;
        let mut cur = Img(x);
        let mut slot = 0;
        let next = |slot: &mut usize| {
            let p = &self.params[*slot];
            *slot += 1;
            p
        };
        for (li, l) in self.spec.layers[..until.min(self.spec.layers.len())]
            .iter()
            .enumerate()
        {
            cur = match (&l.kind, cur) {
                (
                    LayerKind::Conv {
                        kernel,
                        stride,
                        padding,
                        ..
                    },
                    Img(x),
                ) => {
                    let LayerParams::Conv(p) = next(&mut slot) else {
                        unreachable!("params follow the spec")
                    };
                    Img(tap::conv(tap, p, x, [*kernel, *stride, *padding], li == 0))
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
                    let LayerParams::Dense(p) = next(&mut slot) else {
                        unreachable!("params follow the spec")
                    };
                    let out = x.clone().matmul(p.weight.val()) + p.bias.val().unsqueeze_dim(0);
                    tap(Site::Dense(p), &Vec(x), Vec(out))
                }
                (LayerKind::BatchNorm { .. }, cur) => {
                    let LayerParams::Norm(bn) = next(&mut slot) else {
                        unreachable!("params follow the spec")
                    };
                    tap::norm(tap, bn, cur)
                }
                (LayerKind::Act { activation }, cur) => match activation {
                    Activation::Quadratic | Activation::Poly => {
                        let p = next(&mut slot);
                        tap::act(tap, cur, *activation, act_of(p), bounds)
                    }
                    _ => apply_act(cur, *activation, None, bounds),
                },
                (
                    LayerKind::Residual {
                        stride,
                        kernel,
                        activation,
                        ..
                    },
                    Img(x),
                ) => {
                    let LayerParams::Block(b) = next(&mut slot) else {
                        unreachable!("params follow the spec")
                    };
                    let (k, pad) = (*kernel, kernel / 2);
                    let h = tap::conv(tap, &b.conv1, x.clone(), [k, *stride, pad], false);
                    let h = Img(tap::norm_image(tap, &b.bn1, h));
                    let act1 = b.act1.as_ref().map(Into::into);
                    let Img(h) = tap::act(tap, h, *activation, act1, bounds) else {
                        unreachable!("an image stays an image")
                    };
                    let h = tap::conv(tap, &b.conv2, h, [k, 1, pad], false);
                    let h = tap::norm_image(tap, &b.bn2, h);
                    let short = match (&b.proj, &b.proj_bn) {
                        (Some(p), Some(bn)) => {
                            let s = tap::conv(tap, p, x, [1, *stride, 0], false);
                            tap::norm_image(tap, bn, s)
                        }
                        _ => x,
                    };
                    let sum = tap::norm(tap, &b.bn3, Img(h + short));
                    let act2 = b.act2.as_ref().map(Into::into);
                    tap::act(tap, sum, *activation, act2, bounds)
                }
                (
                    LayerKind::MaxPool {
                        kernel,
                        stride,
                        padding,
                    },
                    Img(x),
                ) => Img(max_pool2d(
                    x,
                    MaxPoolOptions {
                        kernel_size: [*kernel; 2],
                        stride: [*stride; 2],
                        padding: [(*padding, *padding); 2],
                        dilation: [1, 1],
                        ceil_mode: false,
                    },
                )),
                (LayerKind::GlobalAvgPool, Img(x)) => {
                    let [b, c, _, _] = x.dims();
                    Vec(x.mean_dim(3).mean_dim(2).reshape([b, c]))
                }
                (LayerKind::Dropout { rate }, cur) => match cur {
                    Img(x) => Img(dropout(x, *rate)),
                    Vec(x) => Vec(dropout(x, *rate)),
                },
                (_, Vec(_)) => unreachable!("resolve() rejects image layers after dense"),
            };
            probe(li, &cur);
        }
        cur
    }

    /// The device its parameters live on, without autodiff: where it is evaluated.
    pub(crate) fn plain_device(&self) -> Device {
        self.devices()
            .into_iter()
            .next()
            .unwrap_or_else(Device::flex)
            .without_autodiff()
    }

    /// `data` through the first `until` layers, in evaluation mode (running statistics, so no
    /// image's features depend on another's): a frozen backbone's features, or what a
    /// pretrained one has learnt to see. Vectors come back as `[n, 1, 1]` images.
    pub(crate) fn features_until(
        &self,
        data: &crate::data::Tensors,
        until: usize,
    ) -> Result<crate::data::Tensors, crate::error::TrainError> {
        let eval = self.clone().valid();
        let device = eval.plain_device();
        let [c, h, w] = data.shape;
        let (mut x, mut shape) = (std::vec::Vec::new(), [0usize; 3]);
        let all: std::vec::Vec<usize> = (0..data.len()).collect();
        for chunk in all.chunks(256) {
            let (xb, _) = data.batch(chunk, None);
            let t = Tensor::<4>::from_data(TensorData::new(xb, [chunk.len(), c, h, w]), &device);
            let (dims, t) = match eval.forward_until(t, until, &mut |_, _, o| o, &mut |_, _| {}) {
                Activations::Img(t) => {
                    let [_, c, h, w] = t.dims();
                    ([c, h, w], t.flatten::<1>(0, 3))
                }
                Activations::Vec(t) => ([t.dims()[1], 1, 1], t.flatten::<1>(0, 1)),
            };
            shape = dims;
            x.extend(
                t.into_data()
                    .convert::<f32>()
                    .try_to_vec::<f32>()
                    .unwrap_or_default(),
            );
        }
        crate::data::Tensors::from_parts(x, data.y.clone(), shape)
    }

    /// Splits off the layers after the first `at`: (the front's parameters, the rest as a
    /// network of its own whose input is the front's output, `[n]` read as `[n, 1, 1]`).
    pub(crate) fn split_at(self, at: usize) -> (std::vec::Vec<LayerParams>, Network) {
        let stateful = self.spec.layers[..at]
            .iter()
            .filter(|l| has_params(&l.kind))
            .count();
        let Network { mut params, spec } = self;
        let tail_params = params.split_off(stateful);
        let out = &spec.layers[at.saturating_sub(1)].output;
        let input = if at == 0 {
            spec.input
        } else if out.len() == 3 {
            [out[0], out[1], out[2]]
        } else {
            [out[0], 1, 1]
        };
        let tail = NetworkSpec {
            input,
            front: None,
            layers: spec.layers[at..].to_vec(),
            frozen: 0,
            ..spec
        };
        (
            params,
            Network {
                params: tail_params,
                spec: tail,
            },
        )
    }

    /// The network again from [`Network::split_at`]'s halves.
    pub(crate) fn join(
        front: std::vec::Vec<LayerParams>,
        tail: Network,
        spec: NetworkSpec,
    ) -> Network {
        let mut params = front;
        params.extend(tail.params);
        Network { params, spec }
    }
}

/// A layer's activation parameters, where it is an activation with some.
fn act_of(p: &LayerParams) -> Option<ActParamsRef<'_>> {
    match p {
        LayerParams::Quad(q) => Some(ActParamsRef::Quad(q)),
        LayerParams::Poly(q) => Some(ActParamsRef::Poly(q)),
        _ => None,
    }
}
