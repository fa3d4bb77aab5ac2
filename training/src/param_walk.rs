//! Every trained tensor of a network in the flat vector's order ([`crate::params`]), with its
//! offset there: what a loss term over the whole network is made from (FedProx's proximal
//! term, SCAFFOLD's correction) and what a step's gradients are read back into. One walk
//! mirroring the flat vector's, so that no layer kind is missed (the proximal term once skipped
//! residual blocks and per-channel activations).

use burn::module::Param;
use burn::nn::BatchNorm;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};

use crate::model::{ActParams, ConvParams, LayerParams, Network};

/// One trained tensor. A dense weight is `[in, out]` in the network and `[out, in]` in the
/// flat vector.
enum Trained<'a> {
    T1(&'a Param<Tensor<1>>),
    Dense(&'a Param<Tensor<2>>),
    T4(&'a Param<Tensor<4>>),
}

type Visit<'f> = dyn FnMut(Trained<'_>, usize) + 'f;

fn t1(p: &Param<Tensor<1>>, at: &mut usize, f: &mut Visit<'_>) {
    f(Trained::T1(p), *at);
    *at += p.val().dims()[0];
}

fn conv(c: &ConvParams, at: &mut usize, f: &mut Visit<'_>) {
    f(Trained::T4(&c.weight), *at);
    *at += c.weight.val().dims().iter().product::<usize>();
    t1(&c.bias, at, f);
}

fn norm(n: &BatchNorm, at: &mut usize, f: &mut Visit<'_>) {
    let c = n.gamma.val().dims()[0];
    f(Trained::T1(&n.gamma), *at);
    f(Trained::T1(&n.beta), *at + c);
    *at += 4 * c; // gamma, beta, running mean, running variance
}

fn act(a: &ActParams, at: &mut usize, f: &mut Visit<'_>) {
    match a {
        ActParams::Quad(q) => [&q.a, &q.b].into_iter().for_each(|p| t1(p, at, f)),
        ActParams::Poly(p) => [&p.a, &p.b, &p.c].into_iter().for_each(|p| t1(p, at, f)),
    }
}

/// Calls `f(tensor, offset)` for every trained tensor, in the flat vector's order (batch
/// norms' running statistics, which take no gradient, are stepped over).
fn for_each_trained(net: &Network, mut f: impl FnMut(Trained<'_>, usize)) {
    let f: &mut Visit<'_> = &mut f;
    let mut at = 0usize;
    for p in &net.params {
        let at = &mut at;
        match p {
            LayerParams::Conv(c) => conv(c, at, f),
            LayerParams::Dense(d) => {
                f(Trained::Dense(&d.weight), *at);
                *at += d.weight.val().dims().iter().product::<usize>();
                t1(&d.bias, at, f);
            }
            LayerParams::Norm(n) => norm(n, at, f),
            LayerParams::Quad(q) => [&q.a, &q.b].into_iter().for_each(|p| t1(p, at, f)),
            LayerParams::Poly(q) => [&q.a, &q.b, &q.c].into_iter().for_each(|p| t1(p, at, f)),
            LayerParams::Block(b) => {
                conv(&b.conv1, at, f);
                norm(&b.bn1, at, f);
                b.act1.iter().for_each(|a| act(a, at, f));
                conv(&b.conv2, at, f);
                norm(&b.bn2, at, f);
                b.proj.iter().for_each(|c| conv(c, at, f));
                b.proj_bn.iter().for_each(|n| norm(n, at, f));
                norm(&b.bn3, at, f);
                b.act2.iter().for_each(|a| act(a, at, f));
            }
        }
    }
}

/// A loss term of a trained tensor `w` against the constant `v` of its shape.
#[derive(Clone, Copy)]
enum Term {
    /// ‖w − v‖²
    SquaredDistance,
    /// ⟨w, v⟩
    Dot,
}

fn term<const D: usize>(op: Term, w: Tensor<D>, v: Tensor<D>) -> Tensor<1> {
    match op {
        Term::SquaredDistance => (w - v).powi_scalar(2).sum(),
        Term::Dot => (w * v).sum(),
    }
}

fn constant<const D: usize>(flat: &[f32], shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::<D>::from_data(TensorData::new(flat.to_vec(), shape), device)
}

/// Σ `op`(w, `flat`'s values at w's place) over every trained tensor (`flat`: constants, no
/// gradient flows into them). `None` for a network with nothing trained.
fn sum_over_trained(net: &Network, flat: &[f32], op: Term) -> Option<Tensor<1>> {
    let mut acc: Option<Tensor<1>> = None;
    for_each_trained(net, |t, at| {
        let next = match t {
            Trained::T1(p) => {
                let w = p.val();
                let [n] = w.dims();
                let v = constant(&flat[at..at + n], [n], &w.device());
                term(op, w, v)
            }
            Trained::T4(p) => {
                let w = p.val();
                let dims = w.dims();
                let n = dims.iter().product::<usize>();
                let v = constant(&flat[at..at + n], dims, &w.device());
                term(op, w, v)
            }
            Trained::Dense(p) => {
                let w = p.val();
                let [inp, out] = w.dims();
                let v = constant(&flat[at..at + inp * out], [out, inp], &w.device()).transpose();
                term(op, w, v)
            }
        };
        acc = Some(match acc.take() {
            Some(a) => a + next,
            None => next,
        });
    });
    acc
}

/// FedProx's Σ ‖w − w_global‖² over every trained tensor (`anchor`: the global model's flat
/// vector). `None` for a network with nothing trained.
pub(crate) fn squared_distance(net: &Network, anchor: &[f32]) -> Option<Tensor<1>> {
    sum_over_trained(net, anchor, Term::SquaredDistance)
}

/// Σ ⟨w, k⟩ over every trained tensor (`k` a flat vector of the network's length): its
/// gradient is `k` itself, so adding it to a loss adds `k` to every step's gradient (SCAFFOLD's
/// correction c − cᵢ). `None` for a network with nothing trained.
pub(crate) fn dot(net: &Network, k: &[f32]) -> Option<Tensor<1>> {
    sum_over_trained(net, k, Term::Dot)
}

/// Adds `weight` × (each trained tensor's gradient in `grads` − `less`'s values at its place,
/// when given), scaled per tensor to an L2 norm of at most `clip` when given (as the optimiser
/// clips each tensor's gradient), into `acc` (the network's flat length); running statistics
/// and tensors that took no gradient (frozen ones) add nothing.
pub(crate) fn add_gradients(
    net: &Network,
    grads: &GradientsParams,
    acc: &mut [f64],
    weight: f64,
    less: Option<&[f32]>,
    clip: Option<f64>,
) {
    let put = |acc: &mut [f64], at: usize, v: Option<Vec<f32>>| {
        let Some(v) = v else { return };
        let less = less.and_then(|l| l.get(at..at + v.len()));
        let g: Vec<f64> = (v.iter().enumerate())
            .map(|(i, &g)| g as f64 - less.map_or(0.0, |l| l[i] as f64))
            .collect();
        let norm = g.iter().map(|x| x * x).sum::<f64>().sqrt();
        let scale = match clip {
            Some(c) if norm > c => c / norm,
            _ => 1.0,
        };
        if let Some(dst) = acc.get_mut(at..at + v.len()) {
            dst.iter_mut()
                .zip(&g)
                .for_each(|(a, g)| *a += weight * scale * g);
        }
    };
    fn read<const D: usize>(g: Option<Tensor<D>>, dense: bool) -> Option<Vec<f32>> {
        // a dense weight is [in, out] in the network, [out, in] in the flat vector
        let g = if dense { g?.transpose() } else { g? };
        g.into_data().convert::<f32>().try_to_vec::<f32>().ok()
    }
    for_each_trained(net, |t, at| match t {
        Trained::T1(p) => put(acc, at, read(grads.get::<1>(p.id), false)),
        Trained::T4(p) => put(acc, at, read(grads.get::<4>(p.id), false)),
        Trained::Dense(p) => put(acc, at, read(grads.get::<2>(p.id), true)),
    });
}

#[cfg(test)]
mod tests;
