//! The activations a network applies (polynomial ones with their trainable coefficients) and
//! dropout: what every forward pass shares.

use burn::module::{Module, Param};
use burn::tensor::activation::relu;
use burn::tensor::{Distribution, Tensor};

use super::Activation;

/// Quadratic activation parameters a, b (each shape `[1]`).
#[derive(Module, Debug)]
pub struct QuadParams {
    /// Coefficient of x².
    pub a: Param<Tensor<1>>,
    /// Coefficient of x.
    pub b: Param<Tensor<1>>,
}

/// Per-channel polynomial activation parameters a, b, c (each `[channels]`).
#[derive(Module, Debug)]
pub struct PolyParams {
    /// Coefficients of x² (clamped to `poly_bounds` in the forward pass).
    pub a: Param<Tensor<1>>,
    /// Coefficients of x.
    pub b: Param<Tensor<1>>,
    /// Constant terms.
    pub c: Param<Tensor<1>>,
}

/// An activation's parameters, where it has some.
#[derive(Module, Debug)]
pub enum ActParams {
    /// Quadratic a·x² + b·x.
    Quad(QuadParams),
    /// Per-channel a·x² + b·x + c.
    Poly(PolyParams),
}

/// A layer's activations for a batch: images `[b, c, h, w]` or vectors `[b, n]`.
#[derive(Clone, Debug)]
pub(crate) enum Activations {
    Img(Tensor<4>),
    Vec(Tensor<2>),
}

/// Inverted dropout on autodiff devices (training); identity otherwise.
pub(crate) fn dropout<const D: usize>(x: Tensor<D>, rate: f64) -> Tensor<D> {
    if rate == 0.0 || !x.device().is_autodiff() {
        return x;
    }
    let keep = 1.0 - rate;
    let mask = x.random_like(Distribution::Bernoulli(keep));
    (x * mask).div_scalar(keep as f32)
}

/// Borrowed activation parameters (a standalone layer's or a block's).
#[derive(Clone, Copy)]
pub(crate) enum ActParamsRef<'a> {
    Quad(&'a QuadParams),
    Poly(&'a PolyParams),
}

impl<'a> From<&'a ActParams> for ActParamsRef<'a> {
    fn from(p: &'a ActParams) -> Self {
        match p {
            ActParams::Quad(q) => ActParamsRef::Quad(q),
            ActParams::Poly(q) => ActParamsRef::Poly(q),
        }
    }
}

pub(crate) fn apply_act(
    x: Activations,
    a: Activation,
    params: Option<ActParamsRef<'_>>,
    bounds: [f32; 2],
) -> Activations {
    match x {
        Activations::Img(x) => Activations::Img(act(x, a, params, bounds)),
        Activations::Vec(x) => Activations::Vec(act(x, a, params, bounds)),
    }
}

fn act<const D: usize>(
    x: Tensor<D>,
    a: Activation,
    params: Option<ActParamsRef<'_>>,
    bounds: [f32; 2],
) -> Tensor<D> {
    match (a, params) {
        (Activation::Relu, _) => relu(x),
        (Activation::Square, _) => x.clone() * x,
        (Activation::Quadratic, Some(ActParamsRef::Quad(q))) => {
            let qa: Tensor<D> = q.a.val().reshape([1; D]);
            let qb: Tensor<D> = q.b.val().reshape([1; D]);
            // x·(a·x + b): the form CKKS evaluates with one ciphertext multiplication.
            x.clone() * (x * qa + qb)
        }
        (Activation::Poly, Some(ActParamsRef::Poly(p))) => {
            // per channel (dimension 1): [1, c, 1, 1] on images, [1, c] on vectors
            let mut shape = [1usize; D];
            shape[1] = p.a.val().dims()[0];
            let pa: Tensor<D> = p.a.val().clamp(bounds[0], bounds[1]).reshape(shape);
            let pb: Tensor<D> = p.b.val().reshape(shape);
            let pc: Tensor<D> = p.c.val().reshape(shape);
            x.clone() * (x * pa + pb) + pc
        }
        _ => unreachable!("polynomial activations carry their coefficients"),
    }
}
