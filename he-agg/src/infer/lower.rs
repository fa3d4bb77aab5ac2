//! Lowering a [`Network`] to what CKKS evaluates: affine maps (`y = M·x + b`, M sparse),
//! quadratic activations `x·(x + c)` (c per value), and the two steps of a residual block:
//! keep the block's input, then add its shortcut map of that input to the body's output.
//!
//! Consecutive linear layers (conv, pooling, flatten, dense, and activations with a = 0) are
//! composed into one map, so they cost one level together. The a of a quadratic activation
//! a·x² + b·x + d = a·x·(x + b/a) + d is folded into every map that reads its output (the next
//! map, and a block's shortcut when a block starts there), its d into their biases, so the
//! activation costs one level; one with no map after it keeps a separate multiplication by a.

use super::error::InferError;
use super::network::{Layer, Network, Shape, body_shapes};

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

    /// Reads `a[j]·x[j] + d[j]` instead of `x[j]`: column j scaled by a[j], M·d into the bias.
    fn absorb(&mut self, a: &[f64], d: &[f64]) {
        for (row, b) in self.rows.iter_mut().zip(self.bias.iter_mut()) {
            for (j, w) in row.iter_mut() {
                *b += *w * d[*j as usize];
                *w *= a[*j as usize];
            }
        }
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

/// The c of an activation x·(x + c): one for every value, or one per value (per channel).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Shift {
    Same(f64),
    Each(Vec<f64>),
}

impl Shift {
    #[cfg(test)]
    fn at(&self, j: usize) -> f64 {
        match self {
            Shift::Same(c) => *c,
            Shift::Each(v) => v[j],
        }
    }
}

/// One step of the lowered network.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Op {
    Linear(Affine),
    /// y = x·(x + c), then times `post` when a could not be folded.
    Activation {
        c: Shift,
        post: Option<f64>,
    },
    /// Keeps the current value for the shortcut of the block that starts here.
    Save,
    /// y = current + map(kept value) (the identity when `None`, which costs no level), the
    /// kept value consumed.
    AddShortcut {
        map: Option<Affine>,
    },
}

impl Op {
    /// Levels it consumes on the main path.
    pub fn depth(&self) -> usize {
        match self {
            Op::Linear(_) => 1,
            Op::Activation { post, .. } => 1 + usize::from(post.is_some()),
            Op::Save | Op::AddShortcut { .. } => 0,
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

    /// Whether the network has residual blocks.
    pub fn has_blocks(&self) -> bool {
        self.ops.iter().any(|o| matches!(o, Op::Save))
    }

    /// The positions between ops where a refresh may cut the network (no kept value is alive),
    /// as op indices: a cut at k refreshes the value after ops[..k].
    pub fn cut_points(&self) -> Vec<usize> {
        let mut alive = 0usize;
        let mut out = Vec::new();
        for (k, op) in self.ops.iter().enumerate() {
            if alive == 0 && k > 0 {
                out.push(k);
            }
            match op {
                Op::Save => alive += 1,
                Op::AddShortcut { .. } => alive -= 1,
                _ => {}
            }
        }
        out
    }

    /// The lowered network evaluated in f64 (checks the lowering against the layer-by-layer
    /// reference).
    #[cfg(test)]
    pub fn apply(&self, x: &[f64]) -> Vec<f64> {
        let mut cur = x.to_vec();
        let mut kept = Vec::new();
        for op in &self.ops {
            cur = match op {
                Op::Linear(a) => a.apply(&cur),
                Op::Activation { c, post } => cur
                    .iter()
                    .enumerate()
                    .map(|(j, &v)| v * (v + c.at(j)) * post.unwrap_or(1.0))
                    .collect(),
                Op::Save => {
                    kept.push(cur.clone());
                    cur
                }
                Op::AddShortcut { map } => {
                    let x = kept.pop().expect("a kept value");
                    let s = map.as_ref().map_or(x.clone(), |m| m.apply(&x));
                    cur.iter().zip(&s).map(|(a, b)| a + b).collect()
                }
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
        Layer::GlobalAvgPool => {
            let Shape::Chw([ch, h, w]) = input else {
                unreachable!("validated: global pooling reads CHW")
            };
            let hw = h * w;
            let k = 1.0 / hw as f64;
            Affine {
                n_in: input.len(),
                rows: (0..ch)
                    .map(|c| (0..hw).map(|p| ((c * hw + p) as u32, k)).collect())
                    .collect(),
                bias: vec![0.0; ch],
                out_shape: output,
            }
        }
        Layer::Flatten
        | Layer::Square
        | Layer::Quadratic { .. }
        | Layer::Relu
        | Layer::ChannelQuadratic { .. }
        | Layer::Residual(_) => return None,
    })
}

/// Layers before folding: maps, activations (a·x² + b·x + d per value) and block steps.
enum Item {
    Lin(Affine),
    Act {
        a: Vec<f64>,
        b: Vec<f64>,
        d: Vec<f64>,
        /// x²: nothing to multiply by when no map follows
        square: bool,
        /// one coefficient for every value (the shift stays a scalar)
        scalar: bool,
        shape: Shape,
    },
    Save,
    /// the shortcut map of the kept value; `folded` once an activation's a went into it
    Add {
        map: Affine,
        identity: bool,
    },
}

fn identity(n: usize, shape: Shape) -> Affine {
    Affine::identity_scaled(n, 1.0, shape)
}

/// The items of `layers` (layer `base` of the network for errors) on `input`.
fn items_of(
    layers: &[Layer],
    shapes: &[Shape],
    input: Shape,
    base: Option<usize>,
    items: &mut Vec<Item>,
) -> Result<(), InferError> {
    let mut shape = input;
    for (i, layer) in layers.iter().enumerate() {
        let at = base.unwrap_or(i);
        let output = shapes[i];
        let n = shape.len();
        match layer {
            Layer::Relu => return Err(InferError::NotPolynomial { layer: at }),
            Layer::Flatten => {}
            Layer::Square => items.push(Item::Act {
                a: vec![1.0; n],
                b: vec![0.0; n],
                d: vec![0.0; n],
                square: true,
                scalar: true,
                shape,
            }),
            Layer::Quadratic { a, b } if *a == 0.0 => {
                // linear: b·x
                items.push(Item::Lin(Affine::identity_scaled(n, *b as f64, shape)))
            }
            Layer::Quadratic { a, b } => items.push(Item::Act {
                a: vec![*a as f64; n],
                b: vec![*b as f64; n],
                d: vec![0.0; n],
                square: false,
                scalar: true,
                shape,
            }),
            Layer::ChannelQuadratic { a, b, c } => {
                if let Some(k) = a.iter().position(|&v| v == 0.0) {
                    return Err(InferError::ZeroQuadratic {
                        layer: at,
                        channel: k,
                    });
                }
                let per = n / a.len();
                let each = |v: &[f32]| (0..n).map(|j| v[j / per] as f64).collect::<Vec<_>>();
                items.push(Item::Act {
                    a: each(a),
                    b: each(b),
                    d: each(c),
                    square: false,
                    scalar: false,
                    shape,
                })
            }
            Layer::Residual(r) => {
                let body = body_shapes(at, shape, &r.body)?;
                items.push(Item::Save);
                items_of(&r.body, &body, shape, Some(at), items)?;
                let (map, identity) = match &r.shortcut {
                    Some(c) => (
                        layer_affine(&Layer::Conv2d(c.clone()), shape, output)
                            .expect("a convolution is linear"),
                        false,
                    ),
                    None => (self::identity(n, shape), true),
                };
                items.push(Item::Add { map, identity });
            }
            _ => items.push(Item::Lin(
                layer_affine(layer, shape, output).expect("a linear layer"),
            )),
        }
        shape = output;
    }
    Ok(())
}

/// Lowers a validated network; a ReLU is refused (CKKS evaluates polynomials only), and so is a
/// channel quadratic with a zero x² coefficient.
pub(crate) fn lower(net: &Network) -> Result<Lowered, InferError> {
    // 1. layers to maps, activations and block steps; consecutive maps compose into one
    let mut raw = Vec::new();
    items_of(
        net.layers(),
        net.shapes(),
        Shape::Chw(net.input()),
        None,
        &mut raw,
    )?;
    let mut items: Vec<Item> = Vec::with_capacity(raw.len());
    for item in raw {
        match (items.last_mut(), item) {
            (Some(Item::Lin(prev)), Item::Lin(next)) => *prev = next.compose(prev),
            (_, item) => items.push(item),
        }
    }
    // 2. each activation's a and d go into every map that reads its output: the next map and,
    // when a block starts there, the block's shortcut
    let count = items.len();
    let partner = block_partners(&items);
    let mut ops: Vec<Op> = Vec::with_capacity(count);
    let mut pending: Vec<Option<(Vec<f64>, Vec<f64>)>> = (0..count).map(|_| None).collect();
    for k in 0..count {
        let absorbed = pending[k].take();
        match std::mem::replace(&mut items[k], Item::Save) {
            Item::Lin(mut m) => {
                if let Some((a, d)) = absorbed {
                    m.absorb(&a, &d);
                }
                ops.push(Op::Linear(m));
            }
            Item::Save => ops.push(Op::Save),
            Item::Add {
                mut map,
                mut identity,
            } => {
                if let Some((a, d)) = absorbed {
                    map.absorb(&a, &d);
                    identity = false;
                }
                ops.push(Op::AddShortcut {
                    map: (!identity).then_some(map),
                });
            }
            Item::Act {
                a,
                b,
                d,
                square,
                scalar,
                shape,
            } => {
                let shift: Vec<f64> = b.iter().zip(&a).map(|(b, a)| b / a).collect();
                let c = if scalar {
                    Shift::Same(shift[0])
                } else {
                    Shift::Each(shift)
                };
                // the maps reading this output: the next one, or past a block's start, the
                // body's first and the block's shortcut
                let readers: Vec<usize> = match items.get(k + 1) {
                    Some(Item::Lin(_)) => vec![k + 1],
                    Some(Item::Save) if matches!(items.get(k + 2), Some(Item::Lin(_))) => {
                        vec![k + 2, partner[k + 1]]
                    }
                    _ => Vec::new(),
                };
                if square {
                    // a = 1, d = 0: nothing to fold (an identity shortcut stays one)
                    ops.push(Op::Activation { c, post: None });
                } else if !readers.is_empty() {
                    for r in readers {
                        pending[r] = Some(match pending[r].take() {
                            // a reader of two activations cannot happen (maps sit between)
                            Some(_) => unreachable!("one activation per reader"),
                            None => (a.clone(), d.clone()),
                        });
                    }
                    ops.push(Op::Activation { c, post: None });
                } else if scalar {
                    // no map follows: a quadratic keeps its multiplication by a whatever its
                    // value, so the structure (levels, ciphertexts of an encrypted model)
                    // depends on the layer kinds only
                    ops.push(Op::Activation {
                        c,
                        post: Some(a[0]),
                    });
                } else {
                    // per channel: the a and d become a map of their own
                    let n = a.len();
                    let mut m = identity(n, shape);
                    m.absorb(&a, &d);
                    ops.push(Op::Activation { c, post: None });
                    ops.push(Op::Linear(m));
                }
            }
        }
    }
    let low = Lowered {
        input_len: net.input_len(),
        ops,
        output_len: net.output_len(),
    };
    check_blocks(&low)?;
    Ok(low)
}

/// For each `Save`, the index of its block's `Add` (and back).
fn block_partners(items: &[Item]) -> Vec<usize> {
    let mut partner = vec![usize::MAX; items.len()];
    let mut open = Vec::new();
    for (k, item) in items.iter().enumerate() {
        match item {
            Item::Save => open.push(k),
            Item::Add { .. } => {
                let s = open.pop().expect("blocks are balanced");
                partner[s] = k;
                partner[k] = s;
            }
            _ => {}
        }
    }
    partner
}

/// A block's body must spend at least the levels of its shortcut, which runs beside it.
fn check_blocks(low: &Lowered) -> Result<(), InferError> {
    let mut open: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    for op in &low.ops {
        match op {
            Op::Save => open.push(depth),
            Op::AddShortcut { map } => {
                let start = open.pop().expect("blocks are balanced");
                if map.is_some() && depth == start {
                    return Err(InferError::ModelMismatch(
                        "a residual block whose body costs no level cannot add a mapped shortcut",
                    ));
                }
            }
            op => depth += op.depth(),
        }
    }
    Ok(())
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
