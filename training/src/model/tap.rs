//! The operations with parameters a forward pass calls its tap at — top-level layers and the
//! convolutions, batch norms and activations inside residual blocks alike — so that DP-SGD
//! reads every example's gradient at each of them.

use burn::nn::BatchNorm;
use burn::tensor::Tensor;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;

use super::Activation;
use super::activation::{ActParamsRef, Activations, apply_act};
use super::layer_params::{ConvParams, DenseParams};

/// One operation with parameters, as the forward pass applies it.
#[derive(Clone, Copy)]
pub(crate) enum Site<'a> {
    /// A square convolution.
    Conv {
        p: &'a ConvParams,
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    /// A dense layer (input `[b, in]`).
    Dense(&'a DenseParams),
    /// A batch norm (its input is what it normalises).
    Norm(&'a BatchNorm),
    /// A polynomial activation with trainable coefficients (clamped to `bounds` where poly).
    Act {
        p: ActParamsRef<'a>,
        bounds: [f32; 2],
    },
}

/// Called at every [`Site`] with its input and output; its return replaces the output.
pub(crate) type Tap<'t> = dyn FnMut(Site<'_>, &Activations, Activations) -> Activations + 't;

fn image(a: Activations) -> Tensor<4> {
    match a {
        Activations::Img(t) => t,
        Activations::Vec(_) => unreachable!("an image operation gives an image"),
    }
}

/// A square convolution with its bias, tapped; `input`: the network's input layer (its input
/// is data, outside the autodiff graph).
pub(crate) fn conv(
    tap: &mut Tap<'_>,
    p: &ConvParams,
    x: Tensor<4>,
    [kernel, stride, padding]: [usize; 3],
    input: bool,
) -> Tensor<4> {
    let (weight, bias) = (p.weight.val(), p.bias.val());
    let patched = input
        .then(|| super::patches::conv_input(&x, &weight, &bias, kernel, stride, padding))
        .flatten();
    let out = patched.unwrap_or_else(|| {
        conv2d(
            x.clone(),
            weight,
            Some(bias),
            ConvOptions::new([stride; 2], [padding; 2], [1, 1], 1),
        )
    });
    let site = Site::Conv {
        p,
        kernel,
        stride,
        padding,
    };
    image(tap(site, &Activations::Img(x), Activations::Img(out)))
}

/// A batch norm, tapped.
pub(crate) fn norm(tap: &mut Tap<'_>, bn: &BatchNorm, x: Activations) -> Activations {
    let out = match &x {
        Activations::Img(t) => Activations::Img(bn.forward(t.clone())),
        Activations::Vec(t) => Activations::Vec(bn.forward(t.clone())),
    };
    tap(Site::Norm(bn), &x, out)
}

/// A batch norm on an image, tapped.
pub(crate) fn norm_image(tap: &mut Tap<'_>, bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    image(norm(tap, bn, Activations::Img(x)))
}

/// An activation; tapped where it has coefficients.
pub(crate) fn act(
    tap: &mut Tap<'_>,
    x: Activations,
    activation: Activation,
    p: Option<ActParamsRef<'_>>,
    bounds: [f32; 2],
) -> Activations {
    let out = apply_act(x.clone(), activation, p, bounds);
    match p {
        Some(p) => tap(Site::Act { p, bounds }, &x, out),
        None => out,
    }
}
