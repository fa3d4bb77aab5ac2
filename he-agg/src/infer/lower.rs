//! Lowering a [`Network`] to what CKKS evaluates: affine maps (`y = M·x + b`, M sparse) and
//! quadratic activations `x·(x + c)`.
//!
//! Consecutive linear layers (conv, pooling, flatten, dense, and activations with a = 0) are
//! composed into one map, so they cost one level together. The a of a quadratic activation
//! a·x² + b·x = a·x·(x + b/a) is folded into the next map's weights, so the activation costs one
//! level; a quadratic with no map after it keeps a separate multiplication by a.

use super::error::InferError;
use super::network::{Layer, Network, Shape};

/// `y = M·x + b`; M is kept sparse with its structural entries (zero weights included, so the
/// layout derived from it depends on the geometry only, never on the weights' values).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Affine {
    pub n_in: usize,
    /// one row per output: (input index, weight), input indices increasing
    pub rows: Vec<Vec<(u32, f64)>>,
    pub bias: Vec<f64>,
    /// the shape of the output (spatial when the map ends in a conv or pooling layer)
    pub out_shape: Shape,
}

impl Affine {
    pub fn n_out(&self) -> usize {
        self.rows.len()
    }

    fn identity_scaled(n: usize, k: f64, shape: Shape) -> Self {
        Affine {
            n_in: n,
            rows: (0..n).map(|i| vec![(i as u32, k)]).collect(),
            bias: vec![0.0; n],
            out_shape: shape,
        }
    }

    /// `self ∘ first`: applies `first`, then `self`.
    fn compose(&self, first: &Affine) -> Affine {
        debug_assert_eq!(self.n_in, first.n_out());
        let mut acc = vec![0f64; first.n_in];
        let mut seen = vec![false; first.n_in];
        let mut touched: Vec<u32> = Vec::new();
        let rows = self
            .rows
            .iter()
            .map(|row| {
                for &(j, w) in row {
                    for &(i, v) in &first.rows[j as usize] {
                        if !seen[i as usize] {
                            seen[i as usize] = true;
                            touched.push(i);
                        }
                        acc[i as usize] += w * v;
                    }
                }
                touched.sort_unstable();
                let out = touched
                    .iter()
                    .map(|&i| {
                        let v = acc[i as usize];
                        acc[i as usize] = 0.0;
                        seen[i as usize] = false;
                        (i, v)
                    })
                    .collect();
                touched.clear();
                out
            })
            .collect();
        let bias = self
            .rows
            .iter()
            .zip(&self.bias)
            .map(|(row, b)| {
                b + row
                    .iter()
                    .map(|&(j, w)| w * first.bias[j as usize])
                    .sum::<f64>()
            })
            .collect();
        Affine {
            n_in: first.n_in,
            rows,
            bias,
            out_shape: self.out_shape,
        }
    }

    fn scale_weights(&mut self, k: f64) {
        self.rows.iter_mut().flatten().for_each(|(_, w)| *w *= k);
    }

    /// M·x + b in f64.
    #[cfg(test)]
    pub fn apply(&self, x: &[f64]) -> Vec<f64> {
        self.rows
            .iter()
            .zip(&self.bias)
            .map(|(row, b)| b + row.iter().map(|&(j, w)| w * x[j as usize]).sum::<f64>())
            .collect()
    }
}

/// One step of the lowered network.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Op {
    Linear(Affine),
    /// y = x·(x + c), then times `post` when a could not be folded.
    Activation {
        c: f64,
        post: Option<f64>,
    },
}

impl Op {
    /// Levels it consumes.
    pub fn depth(&self) -> usize {
        match self {
            Op::Linear(_) => 1,
            Op::Activation { post, .. } => 1 + usize::from(post.is_some()),
        }
    }
}

/// The lowered network.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Lowered {
    pub input_len: usize,
    pub ops: Vec<Op>,
    pub output_len: usize,
}

impl Lowered {
    pub fn depth(&self) -> usize {
        self.ops.iter().map(Op::depth).sum()
    }

    /// The lowered network evaluated in f64 (checks the lowering against the layer-by-layer
    /// reference).
    #[cfg(test)]
    pub fn apply(&self, x: &[f64]) -> Vec<f64> {
        let mut cur = x.to_vec();
        for op in &self.ops {
            cur = match op {
                Op::Linear(a) => a.apply(&cur),
                Op::Activation { c, post } => cur
                    .iter()
                    .map(|&v| v * (v + c) * post.unwrap_or(1.0))
                    .collect(),
            };
        }
        cur
    }
}

fn layer_affine(layer: &Layer, input: Shape, output: Shape) -> Option<Affine> {
    Some(match layer {
        Layer::Conv2d(c) => {
            let (Shape::Chw([ci, hi, wi]), Shape::Chw([co, ho, wo])) = (input, output) else {
                unreachable!("validated: conv maps CHW to CHW")
            };
            let k = c.kernel;
            let mut rows = Vec::with_capacity(co * ho * wo);
            for o in 0..co {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut row = Vec::with_capacity(ci * k * k);
                        for i in 0..ci {
                            for ky in 0..k {
                                let iy = (oy * c.stride + ky) as i64 - c.padding as i64;
                                if iy < 0 || iy >= hi as i64 {
                                    continue;
                                }
                                for kx in 0..k {
                                    let ix = (ox * c.stride + kx) as i64 - c.padding as i64;
                                    if ix < 0 || ix >= wi as i64 {
                                        continue;
                                    }
                                    let col = (i * hi + iy as usize) * wi + ix as usize;
                                    let w = c.weight[((o * ci + i) * k + ky) * k + kx];
                                    row.push((col as u32, w as f64));
                                }
                            }
                        }
                        rows.push(row);
                    }
                }
            }
            let bias = (0..co * ho * wo)
                .map(|j| c.bias[j / (ho * wo)] as f64)
                .collect();
            Affine {
                n_in: input.len(),
                rows,
                bias,
                out_shape: output,
            }
        }
        Layer::AvgPool2d { kernel, stride } => {
            let (Shape::Chw([ch, hi, wi]), Shape::Chw([_, ho, wo])) = (input, output) else {
                unreachable!("validated: pooling maps CHW to CHW")
            };
            let w = 1.0 / (kernel * kernel) as f64;
            let mut rows = Vec::with_capacity(ch * ho * wo);
            for c in 0..ch {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut row = Vec::with_capacity(kernel * kernel);
                        for ky in 0..*kernel {
                            for kx in 0..*kernel {
                                let col = (c * hi + oy * stride + ky) * wi + ox * stride + kx;
                                row.push((col as u32, w));
                            }
                        }
                        rows.push(row);
                    }
                }
            }
            Affine {
                n_in: input.len(),
                bias: vec![0.0; rows.len()],
                rows,
                out_shape: output,
            }
        }
        Layer::Dense(d) => Affine {
            n_in: d.in_features,
            rows: (0..d.out_features)
                .map(|o| {
                    (0..d.in_features)
                        .map(|i| (i as u32, d.weight[o * d.in_features + i] as f64))
                        .collect()
                })
                .collect(),
            bias: d.bias.iter().map(|&b| b as f64).collect(),
            out_shape: output,
        },
        Layer::Flatten | Layer::Square | Layer::Quadratic { .. } | Layer::Relu => return None,
    })
}

/// Lowers a validated network; a ReLU is refused (CKKS evaluates polynomials only).
pub(crate) fn lower(net: &Network) -> Result<Lowered, InferError> {
    if let Some(layer) = net.layers().iter().position(|l| matches!(l, Layer::Relu)) {
        return Err(InferError::NotPolynomial { layer });
    }
    // 1. layers to maps and (a, b) activations; flatten changes no index, so it vanishes
    enum Item {
        Lin(Affine),
        /// a, b, and whether it is a plain square (its structure never depends on values)
        Act(f64, f64, bool),
    }
    let mut items: Vec<Item> = Vec::new();
    for (i, layer) in net.layers().iter().enumerate() {
        let (input, output) = (net.input_shape(i), net.shapes()[i]);
        let item = match layer {
            Layer::Flatten | Layer::Relu => continue,
            Layer::Square => Item::Act(1.0, 0.0, true),
            Layer::Quadratic { a, b } if *a == 0.0 => {
                // linear: b·x
                Item::Lin(Affine::identity_scaled(input.len(), *b as f64, input))
            }
            Layer::Quadratic { a, b } => Item::Act(*a as f64, *b as f64, false),
            _ => Item::Lin(layer_affine(layer, input, output).expect("a linear layer")),
        };
        // 2. consecutive maps compose into one
        match (items.last_mut(), item) {
            (Some(Item::Lin(prev)), Item::Lin(next)) => *prev = next.compose(prev),
            (_, item) => items.push(item),
        }
    }
    // 3. fold each activation's a into a neighbouring map
    let mut ops: Vec<Op> = Vec::with_capacity(items.len());
    let mut pending_next: Option<f64> = None;
    let count = items.len();
    let mut items: Vec<Option<Item>> = items.into_iter().map(Some).collect();
    for k in 0..count {
        match items[k].take().expect("each item is taken once") {
            Item::Lin(mut a) => {
                if let Some(s) = pending_next.take() {
                    a.scale_weights(s);
                }
                ops.push(Op::Linear(a));
            }
            Item::Act(a, b, square) => {
                let c = b / a;
                if matches!(items.get(k + 1), Some(Some(Item::Lin(_)))) {
                    // a·x·(x + c): the next map's weights take the a
                    pending_next = Some(pending_next.unwrap_or(1.0) * a);
                    ops.push(Op::Activation { c, post: None });
                } else {
                    // no map follows: a square needs nothing more; a quadratic keeps its
                    // multiplication by a whatever its value, so the structure (levels,
                    // ciphertexts of an encrypted model) depends on the layer kinds only
                    ops.push(Op::Activation {
                        c,
                        post: (!square).then_some(a),
                    });
                }
            }
        }
    }
    Ok(Lowered {
        input_len: net.input_len(),
        ops,
        output_len: net.output_len(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::network::{Conv2d, Dense};
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn net(layers: Vec<Layer>, input: [usize; 3]) -> Network {
        Network::new(input, layers).unwrap()
    }

    fn check_against_reference(n: &Network, expect_depth: usize, expect_ops: usize) {
        let low = lower(n).unwrap();
        assert_eq!(low.depth(), expect_depth);
        assert_eq!(low.ops.len(), expect_ops);
        let mut s = 7u64;
        let x: Vec<f32> = (0..n.input_len()).map(|_| lcg(&mut s)).collect();
        let want = n.forward(&x).unwrap();
        let got = low.apply(&x.iter().map(|&v| v as f64).collect::<Vec<_>>());
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - *w as f64).abs() <= 1e-4 * (1.0 + w.abs() as f64),
                "{g} vs {w}"
            );
        }
    }

    fn conv(ci: usize, co: usize, k: usize, s: usize, p: usize, seed: &mut u64) -> Layer {
        Layer::Conv2d(Conv2d {
            in_channels: ci,
            out_channels: co,
            kernel: k,
            stride: s,
            padding: p,
            weight: (0..co * ci * k * k).map(|_| lcg(seed) * 0.3).collect(),
            bias: (0..co).map(|_| lcg(seed) * 0.1).collect(),
        })
    }

    fn dense(i: usize, o: usize, seed: &mut u64) -> Layer {
        Layer::Dense(Dense {
            in_features: i,
            out_features: o,
            weight: (0..i * o).map(|_| lcg(seed) * 0.2).collect(),
            bias: (0..o).map(|_| lcg(seed) * 0.1).collect(),
        })
    }

    #[test]
    fn folding_preserves_the_function() {
        let s = &mut 1u64;
        // conv → quadratic → pool → flatten → dense → square → dense: pool composes into the
        // dense layer; the first activation's a goes into it
        let n = net(
            vec![
                conv(2, 3, 3, 1, 1, s),
                Layer::Quadratic { a: -0.4, b: 0.7 },
                Layer::AvgPool2d {
                    kernel: 2,
                    stride: 2,
                },
                Layer::Flatten,
                dense(3 * 3 * 3, 5, s),
                Layer::Square,
                dense(5, 4, s),
            ],
            [2, 6, 6],
        );
        check_against_reference(&n, 5, 5);
        // a trailing quadratic keeps its multiplication by a
        let n = net(
            vec![
                Layer::Flatten,
                dense(8, 3, s),
                Layer::Quadratic { a: -2.5, b: 1.0 },
            ],
            [2, 2, 2],
        );
        check_against_reference(&n, 3, 2);
        // a = 0 makes the activation linear: it merges with both neighbours
        let n = net(
            vec![
                dense_on(8, 4, s),
                Layer::Quadratic { a: 0.0, b: 3.0 },
                dense(4, 2, s),
            ],
            [8, 1, 1],
        );
        check_against_reference(&n, 1, 1);
        // an activation on the raw input with nothing to fold into keeps its multiplication,
        // unless it is a square
        let n = net(vec![Layer::Quadratic { a: 0.5, b: -1.0 }], [1, 2, 2]);
        check_against_reference(&n, 2, 1);
        let n = net(
            vec![Layer::Square, Layer::Quadratic { a: -1.0, b: 0.5 }],
            [1, 2, 2],
        );
        check_against_reference(&n, 3, 2);
        let n = net(vec![Layer::Square, Layer::Square], [1, 2, 2]);
        check_against_reference(&n, 2, 2);
    }

    fn dense_on(i: usize, o: usize, s: &mut u64) -> Layer {
        dense(i, o, s)
    }

    #[test]
    fn structural_entries_survive_zero_weights() {
        let mut layer = conv(1, 1, 3, 1, 0, &mut 3);
        if let Layer::Conv2d(c) = &mut layer {
            c.weight.iter_mut().for_each(|w| *w = 0.0);
        }
        let low = lower(&net(vec![layer], [1, 4, 4])).unwrap();
        let Op::Linear(a) = &low.ops[0] else { panic!() };
        assert!(a.rows.iter().all(|r| r.len() == 9));
    }
}
