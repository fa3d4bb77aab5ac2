//! A network's state as ONE flat `f32` vector — what a hospital encrypts and the coordinator
//! aggregates — with a shape manifest, and the inverse.
//!
//! # Order (stable; changing it is a breaking change of the federation format)
//!
//! Layers in network order; within a layer the entries below, each row-major (C order):
//!
//! | layer        | entries, in order                                                                 |
//! |--------------|-----------------------------------------------------------------------------------|
//! | `conv`       | `weight [out, in, k, k]`, `bias [out]`                                            |
//! | `dense`      | `weight [out, in]` (PyTorch layout; `in` is the CHW-flattened input), `bias [out]` |
//! | `batch-norm` | `gamma [c]`, `beta [c]`, `running_mean [c]`, `running_var [c]` (the last two are statistics, not trained by gradient, but averaged with the rest) |
//! | `act` quadratic | `a [1]`, `b [1]`                                                               |
//! | others       | nothing                                                                           |
//!
//! Entry names are `"{layer}.{kind}.{tensor}"`, e.g. `"0.conv.weight"`, `"3.dense.bias"`.
//! The manifest depends only on the [`NetworkSpec`], so two parties with the same config agree
//! on it without exchanging weights.

use burn::module::{Param, RunningState};
use burn::tensor::{Tensor, TensorData};

use crate::error::TrainError;
use burn::nn::BatchNorm;

use crate::model::{
    ActParams, Activation, BlockParams, ConvParams, LayerKind, LayerParams, Network, NetworkSpec,
};

/// One tensor in the flat vector.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ParamEntry {
    /// `"{layer}.{kind}.{tensor}"`.
    pub name: String,
    /// Shape (row-major).
    pub shape: Vec<usize>,
    /// Start index in the flat vector.
    pub offset: usize,
    /// Number of values (product of `shape`).
    pub len: usize,
    /// Trained by gradient (false for batch-norm running statistics).
    pub trainable: bool,
}

/// The layout of the flat vector.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ParamManifest {
    /// Format tag, `heal-params/1`.
    pub format: String,
    /// Total values.
    pub total: usize,
    /// Entries in order; offsets are contiguous.
    pub entries: Vec<ParamEntry>,
}

type Push<'a> = dyn FnMut(String, Vec<usize>, bool) + 'a;

fn conv_entries(push: &mut Push<'_>, p: &str, shape: [usize; 4]) {
    push(format!("{p}.weight"), shape.to_vec(), true);
    push(format!("{p}.bias"), vec![shape[0]], true);
}

fn norm_entries(push: &mut Push<'_>, p: &str, c: usize) {
    push(format!("{p}.gamma"), vec![c], true);
    push(format!("{p}.beta"), vec![c], true);
    push(format!("{p}.running_mean"), vec![c], false);
    push(format!("{p}.running_var"), vec![c], false);
}

/// A quadratic's `{p}.quadratic.a/b` (`[1]` each), a per-channel polynomial's
/// `{p}.poly.a/b/c` (`[channels]` each); nothing for the others.
fn act_entries(push: &mut Push<'_>, p: &str, a: Activation, channels: usize) {
    match a {
        Activation::Quadratic => {
            push(format!("{p}.quadratic.a"), vec![1], true);
            push(format!("{p}.quadratic.b"), vec![1], true);
        }
        Activation::Poly => {
            for t in ["a", "b", "c"] {
                push(format!("{p}.poly.{t}"), vec![channels], true);
            }
        }
        Activation::Square | Activation::Relu => {}
    }
}

/// The manifest of a network spec.
pub fn manifest(spec: &NetworkSpec) -> ParamManifest {
    let mut entries = Vec::new();
    let mut offset = 0;
    let mut push = |name: String, shape: Vec<usize>, trainable: bool| {
        let len = shape.iter().product();
        entries.push(ParamEntry {
            name,
            shape,
            offset,
            len,
            trainable,
        });
        offset += len;
    };
    for (i, l) in spec.layers.iter().enumerate() {
        match &l.kind {
            LayerKind::Conv {
                in_channels,
                out_channels,
                kernel,
                ..
            } => {
                push(
                    format!("{i}.conv.weight"),
                    vec![*out_channels, *in_channels, *kernel, *kernel],
                    true,
                );
                push(format!("{i}.conv.bias"), vec![*out_channels], true);
            }
            LayerKind::Dense {
                in_features,
                out_features,
            } => {
                push(
                    format!("{i}.dense.weight"),
                    vec![*out_features, *in_features],
                    true,
                );
                push(format!("{i}.dense.bias"), vec![*out_features], true);
            }
            LayerKind::BatchNorm { features, .. } => {
                norm_entries(&mut push, &format!("{i}.batch-norm"), *features)
            }
            LayerKind::Act { activation } => {
                act_entries(&mut push, &format!("{i}"), *activation, l.input[0])
            }
            LayerKind::Residual {
                in_channels,
                out_channels,
                kernel,
                activation,
                ..
            } => {
                let (ci, co, k) = (*in_channels, *out_channels, *kernel);
                let p = format!("{i}.residual");
                conv_entries(&mut push, &format!("{p}.conv1"), [co, ci, k, k]);
                norm_entries(&mut push, &format!("{p}.bn1"), co);
                act_entries(&mut push, &format!("{p}.act1"), *activation, co);
                conv_entries(&mut push, &format!("{p}.conv2"), [co, co, k, k]);
                norm_entries(&mut push, &format!("{p}.bn2"), co);
                if l.kind.projects() {
                    conv_entries(&mut push, &format!("{p}.proj"), [co, ci, 1, 1]);
                    norm_entries(&mut push, &format!("{p}.proj-bn"), co);
                }
                norm_entries(&mut push, &format!("{p}.bn3"), co);
                act_entries(&mut push, &format!("{p}.act2"), *activation, co);
            }
            LayerKind::AvgPool { .. }
            | LayerKind::MaxPool { .. }
            | LayerKind::Dropout { .. }
            | LayerKind::GlobalAvgPool => {}
        }
    }
    ParamManifest {
        format: "heal-params/1".into(),
        total: offset,
        entries,
    }
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    // Tensors of this crate are f32; `convert` is a no-op then and keeps other float dtypes
    // working.
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_default()
}

fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// Keeps a flat vector a valid network: batch-norm running variances at least `floor`. Noise
/// added for differential privacy can push a variance below zero, whose square root then makes
/// every output NaN; raising it is post-processing, which costs no privacy.
pub fn keep_valid(manifest: &ParamManifest, flat: &mut [f32], floor: f32) -> usize {
    let mut raised = 0;
    for e in manifest
        .entries
        .iter()
        .filter(|e| e.name.ends_with("running_var"))
    {
        for v in &mut flat[e.offset..e.offset + e.len] {
            // NaN too
            if v.is_nan() || *v < floor {
                *v = floor;
                raised += 1;
            }
        }
    }
    raised
}

/// The network's state as one flat vector in the documented order.
pub fn to_flat(net: &Network) -> Vec<f32> {
    let mut out = Vec::with_capacity(manifest(&net.spec).total);
    for p in &net.params {
        match p {
            LayerParams::Conv(c) => flat_conv(c, &mut out),
            LayerParams::Dense(d) => {
                let [inp, outp] = d.weight.val().dims();
                out.extend(transpose(&values(d.weight.val()), inp, outp));
                out.extend(values(d.bias.val()));
            }
            LayerParams::Norm(bn) => flat_norm(bn, &mut out),
            LayerParams::Quad(q) => flat_act(&ActParams::Quad(q.clone()), &mut out),
            LayerParams::Poly(q) => flat_act(&ActParams::Poly(q.clone()), &mut out),
            LayerParams::Block(b) => {
                flat_conv(&b.conv1, &mut out);
                flat_norm(&b.bn1, &mut out);
                b.act1.iter().for_each(|a| flat_act(a, &mut out));
                flat_conv(&b.conv2, &mut out);
                flat_norm(&b.bn2, &mut out);
                b.proj.iter().for_each(|c| flat_conv(c, &mut out));
                b.proj_bn.iter().for_each(|n| flat_norm(n, &mut out));
                flat_norm(&b.bn3, &mut out);
                b.act2.iter().for_each(|a| flat_act(a, &mut out));
            }
        }
    }
    out
}

fn flat_conv(c: &ConvParams, out: &mut Vec<f32>) {
    out.extend(values(c.weight.val()));
    out.extend(values(c.bias.val()));
}

fn flat_norm(bn: &BatchNorm, out: &mut Vec<f32>) {
    out.extend(values(bn.gamma.val()));
    out.extend(values(bn.beta.val()));
    out.extend(values(bn.running_mean.value_sync()));
    out.extend(values(bn.running_var.value_sync()));
}

fn flat_act(a: &ActParams, out: &mut Vec<f32>) {
    match a {
        ActParams::Quad(q) => {
            out.extend(values(q.a.val()));
            out.extend(values(q.b.val()));
        }
        ActParams::Poly(p) => {
            out.extend(values(p.a.val()));
            out.extend(values(p.b.val()));
            out.extend(values(p.c.val()));
        }
    }
}

fn replace<const D: usize>(
    p: Param<Tensor<D>>,
    data: Vec<f32>,
    shape: [usize; D],
) -> Param<Tensor<D>> {
    p.map(|old| {
        let device = old.device();
        let grad = old.is_require_grad();
        let t = Tensor::<D>::from_data(TensorData::new(data, shape), &device);
        if grad { t.require_grad() } else { t }
    })
}

fn running(old: &RunningState<Tensor<1>>, data: Vec<f32>) -> RunningState<Tensor<1>> {
    let device = old.value().device();
    let n = data.len();
    RunningState::new(Tensor::<1>::from_data(TensorData::new(data, [n]), &device))
}

/// Loads a flat vector into `net` (parameter ids, devices and gradient settings are kept).
/// Rejects a vector of the wrong length or with a non-finite value.
pub fn from_flat(net: Network, flat: &[f32]) -> Result<Network, TrainError> {
    let m = manifest(&net.spec);
    if flat.len() != m.total {
        return Err(TrainError::ParamLength {
            expected: m.total,
            found: flat.len(),
        });
    }
    if let Some(i) = flat.iter().position(|v| !v.is_finite()) {
        let name = m
            .entries
            .iter()
            .find(|e| i >= e.offset && i < e.offset + e.len)
            .map(|e| e.name.clone())
            .unwrap_or_default();
        return Err(TrainError::NonFinite { index: i, name });
    }
    let mut entries = m.entries.iter();
    let mut take = || -> (Vec<f32>, Vec<usize>) {
        // The manifest was built from the same spec the params follow.
        let e = entries.next().expect("manifest matches params");
        (flat[e.offset..e.offset + e.len].to_vec(), e.shape.clone())
    };
    let Network { params, spec } = net;
    let mut out = Vec::with_capacity(params.len());
    let take: &mut Take<'_> = &mut take;
    for p in params {
        out.push(match p {
            LayerParams::Conv(c) => LayerParams::Conv(load_conv(c, take)),
            LayerParams::Dense(mut d) => {
                let (w, s) = take();
                let (outp, inp) = (s[0], s[1]);
                d.weight = replace(d.weight, transpose(&w, outp, inp), [inp, outp]);
                let (b, s) = take();
                d.bias = replace(d.bias, b, [s[0]]);
                LayerParams::Dense(d)
            }
            LayerParams::Norm(bn) => LayerParams::Norm(load_norm(bn, take)),
            LayerParams::Quad(q) => match load_act(ActParams::Quad(q), take) {
                ActParams::Quad(q) => LayerParams::Quad(q),
                ActParams::Poly(_) => unreachable!("a quadratic stays one"),
            },
            LayerParams::Poly(q) => match load_act(ActParams::Poly(q), take) {
                ActParams::Poly(q) => LayerParams::Poly(q),
                ActParams::Quad(_) => unreachable!("a polynomial stays one"),
            },
            LayerParams::Block(b) => {
                let conv1 = load_conv(b.conv1, take);
                let bn1 = load_norm(b.bn1, take);
                let act1 = b.act1.map(|a| load_act(a, take));
                let conv2 = load_conv(b.conv2, take);
                let bn2 = load_norm(b.bn2, take);
                let proj = b.proj.map(|c| load_conv(c, take));
                let proj_bn = b.proj_bn.map(|n| load_norm(n, take));
                let bn3 = load_norm(b.bn3, take);
                let act2 = b.act2.map(|a| load_act(a, take));
                LayerParams::Block(BlockParams {
                    conv1,
                    bn1,
                    act1,
                    conv2,
                    bn2,
                    proj,
                    proj_bn,
                    bn3,
                    act2,
                })
            }
        });
    }
    Ok(Network { params: out, spec })
}

type Take<'a> = dyn FnMut() -> (Vec<f32>, Vec<usize>) + 'a;

fn load_conv(mut c: ConvParams, take: &mut Take<'_>) -> ConvParams {
    let (w, s) = take();
    c.weight = replace(c.weight, w, [s[0], s[1], s[2], s[3]]);
    let (b, s) = take();
    c.bias = replace(c.bias, b, [s[0]]);
    c
}

fn load_norm(mut bn: BatchNorm, take: &mut Take<'_>) -> BatchNorm {
    let (g, s) = take();
    bn.gamma = replace(bn.gamma, g, [s[0]]);
    let (b, s) = take();
    bn.beta = replace(bn.beta, b, [s[0]]);
    let (rm, _) = take();
    bn.running_mean = running(&bn.running_mean, rm);
    let (rv, _) = take();
    bn.running_var = running(&bn.running_var, rv);
    bn
}

fn load_act(a: ActParams, take: &mut Take<'_>) -> ActParams {
    match a {
        ActParams::Quad(mut q) => {
            let (a, _) = take();
            q.a = replace(q.a, a, [1]);
            let (b, _) = take();
            q.b = replace(q.b, b, [1]);
            ActParams::Quad(q)
        }
        ActParams::Poly(mut p) => {
            let (a, s) = take();
            p.a = replace(p.a, a, [s[0]]);
            let (b, s) = take();
            p.b = replace(p.b, b, [s[0]]);
            let (c, s) = take();
            p.c = replace(p.c, c, [s[0]]);
            ActParams::Poly(p)
        }
    }
}

/// A fresh network on `device` holding `flat`.
pub fn network_from_flat(
    spec: &NetworkSpec,
    flat: &[f32],
    device: &burn::tensor::Device,
) -> Result<Network, TrainError> {
    from_flat(Network::init(spec, device), flat)
}

/// Writes a flat vector as little-endian `f32` bytes.
pub fn write_flat(path: &std::path::Path, flat: &[f32]) -> Result<(), TrainError> {
    let bytes: Vec<u8> = flat.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).map_err(|e| TrainError::io(path, e))
}

/// Reads a flat vector written by [`write_flat`], checking its length against `manifest`.
pub fn read_flat(path: &std::path::Path, manifest: &ParamManifest) -> Result<Vec<f32>, TrainError> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    if bytes.len() != manifest.total * 4 {
        return Err(TrainError::ParamLength {
            expected: manifest.total,
            found: bytes.len() / 4,
        });
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Activation, ModelConfig};
    use burn::tensor::Device;

    #[test]
    fn manifest_is_contiguous_and_matches_flat() {
        let spec = ModelConfig::default()
            .with_activation(Activation::Quadratic)
            .resolve([1, 28, 28], 11)
            .unwrap();
        let m = manifest(&spec);
        let mut off = 0;
        for e in &m.entries {
            assert_eq!(e.offset, off);
            assert_eq!(e.len, e.shape.iter().product::<usize>());
            off += e.len;
        }
        assert_eq!(m.total, off);
        // conv 16·25+16, bn 4·16, quad 2, dense 2304·128+128, bn 4·128, quad 2, dense 128·11+11
        assert_eq!(
            m.total,
            16 * 25 + 16 + 64 + 2 + 2304 * 128 + 128 + 512 + 2 + 128 * 11 + 11
        );
        let net = Network::init(&spec, &Device::flex());
        assert_eq!(to_flat(&net).len(), m.total);
        assert_eq!(m.entries[0].name, "0.conv.weight");
    }

    #[test]
    fn round_trip_is_exact_and_changes_outputs() {
        let device = Device::flex();
        let spec = ModelConfig::default()
            .with_activation(Activation::Quadratic)
            .resolve([3, 28, 28], 4)
            .unwrap();
        let net = Network::init(&spec, &device);
        let flat = to_flat(&net);
        let shifted: Vec<f32> = flat
            .iter()
            .enumerate()
            .map(|(i, v)| v + (i % 7) as f32 * 1e-3)
            .collect();
        let net2 = from_flat(net, &shifted).unwrap();
        assert_eq!(to_flat(&net2), shifted);
        // A different seed gives a different vector; loading it makes the networks agree.
        let other = Network::init(
            &NetworkSpec {
                init_seed: 5,
                ..spec.clone()
            },
            &device,
        );
        let x = Tensor::<4>::ones([1, 3, 28, 28], &device);
        let before = values(other.forward(x.clone()));
        let other = from_flat(other, &shifted).unwrap();
        let after = values(other.forward(x.clone()));
        assert_ne!(before, after);
        assert_eq!(after, values(net2.forward(x)));
    }

    #[test]
    fn rejects_bad_vectors() {
        let spec = ModelConfig::default().resolve([1, 28, 28], 2).unwrap();
        let net = Network::init(&spec, &Device::flex());
        let mut flat = to_flat(&net);
        assert!(matches!(
            from_flat(net.clone(), &flat[1..]),
            Err(TrainError::ParamLength { .. })
        ));
        flat[20] = f32::NAN;
        match from_flat(net, &flat) {
            Err(TrainError::NonFinite { index, name }) => {
                assert_eq!(index, 20);
                assert_eq!(name, "0.conv.weight");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn file_round_trip() {
        let spec = ModelConfig::default().resolve([1, 28, 28], 2).unwrap();
        let flat = to_flat(&Network::init(&spec, &Device::flex()));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.f32");
        write_flat(&p, &flat).unwrap();
        assert_eq!(read_flat(&p, &manifest(&spec)).unwrap(), flat);
        std::fs::write(&p, [0u8; 5]).unwrap();
        assert!(read_flat(&p, &manifest(&spec)).is_err());
    }
}
