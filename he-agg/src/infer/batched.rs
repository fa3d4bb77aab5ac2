//! The throughput packing: one image per slot. Input feature j of up to N/2 images travels in
//! ciphertext j (slot i = image i), so every map is a sparse matrix of scalars applied to vectors
//! of ciphertexts — no rotation at all, no Galois key — and activations are slot-wise products.
//!
//! Maps run as one modular matrix product over all ciphertext limbs (lazy 128-bit sums, one
//! reduction per coefficient); weights are integers round(w·q) for the prime q the map's
//! rescale removes, so the scale comes back exactly. Activations leave their products
//! unrelinearized when a map follows (the map is linear in every ciphertext part), so only the
//! map's outputs are relinearized: 128 relinearizations instead of 2304 in the default network.

use std::collections::HashMap;
use std::sync::Arc;

use rayon::prelude::*;

use crate::ckks::{Ciphertext, CkksContext, CkksError, Complex, Parameters, Plaintext};
use crate::ring::Poly;

use super::backend::{BatchedBackend, CpuBackend};
use super::error::InferError;
use super::kernels;
use super::lower::{Affine, Op, Shift, lower};
use super::network::Network;
use super::params::{ParamPolicy, choose_parameters};

/// What a requester needs for batched inference (no weights).
#[derive(Clone, Debug, PartialEq)]
pub struct BatchedSpec {
    params: Parameters,
    input_len: usize,
    output_len: usize,
    depth: usize,
    relinearize: bool,
}

impl BatchedSpec {
    /// Parameters chosen from the network's depth (any ring size holds a batch).
    pub fn new(net: &Network, policy: &ParamPolicy) -> Result<Self, InferError> {
        if policy.step_primes != 1 {
            // a batch is decrypted by its requester (mode b): one prime per rescale suffices
            return Err(InferError::Policy(
                "the batched packing rescales by one prime (step_primes = 1)",
            ));
        }
        let low = lower(net)?;
        let params = choose_parameters(low.depth(), 1, policy)?;
        Self::with_parameters(net, params)
    }

    /// For given parameters (refused when they lack levels).
    pub fn with_parameters(net: &Network, params: Parameters) -> Result<Self, InferError> {
        let low = lower(net)?;
        if low.depth() + 1 > params.max_level() {
            return Err(InferError::TooFewLevels {
                levels: params.max_level() - 1,
                depth: low.depth(),
            });
        }
        Ok(Self {
            params,
            input_len: low.input_len,
            output_len: low.output_len,
            depth: low.depth(),
            relinearize: low.ops.iter().any(|o| matches!(o, Op::Activation { .. })),
        })
    }

    pub fn parameters(&self) -> &Parameters {
        &self.params
    }
    /// Images per batch (one per slot).
    pub fn batch_size(&self) -> usize {
        self.params.slots()
    }
    /// Ciphertexts per batch request (one per input value).
    pub fn input_len(&self) -> usize {
        self.input_len
    }
    /// Ciphertexts per batch response (one per logit).
    pub fn output_len(&self) -> usize {
        self.output_len
    }
    pub fn input_level(&self) -> usize {
        self.depth + 1
    }
    pub fn input_scale(&self) -> f64 {
        self.params.default_scale()
    }
    pub fn depth(&self) -> usize {
        self.depth
    }
    /// Batched evaluation needs no Galois key; a relinearization key when there are
    /// activations.
    pub fn needs_relinearization(&self) -> bool {
        self.relinearize
    }

    /// Refuses a batch's ciphertexts of the wrong number, level, degree or scale.
    pub(crate) fn check_inputs(
        &self,
        ctx: &CkksContext,
        inputs: &[Ciphertext],
    ) -> Result<(), InferError> {
        if inputs.len() != self.input_len {
            return Err(InferError::BatchInputs {
                expected: self.input_len,
                found: inputs.len(),
            });
        }
        for ct in inputs {
            kernels::check_input(ctx, ct, self.input_level(), self.input_scale())?;
        }
        Ok(())
    }

    fn check_ctx(&self, ctx: &CkksContext) -> Result<(), InferError> {
        if ctx.params() != &self.params {
            return Err(InferError::ContextMismatch);
        }
        Ok(())
    }

    /// One plaintext per input value, slot i holding image i's value (coefficient form, ready
    /// for encryption).
    pub fn encode_inputs(
        &self,
        ctx: &CkksContext,
        images: &[&[f32]],
    ) -> Result<Vec<Plaintext>, InferError> {
        self.check_ctx(ctx)?;
        if images.is_empty() {
            return Err(InferError::EmptyBatch);
        }
        if images.len() > self.batch_size() {
            return Err(InferError::BatchTooLarge {
                images: images.len(),
                slots: self.batch_size(),
            });
        }
        if let Some(bad) = images.iter().find(|im| im.len() != self.input_len) {
            return Err(InferError::Network(super::error::NetworkError::InputLen {
                expected: self.input_len,
                found: bad.len(),
            }));
        }
        (0..self.input_len)
            .into_par_iter()
            .map(|j| {
                let v: Vec<Complex> = images
                    .iter()
                    .map(|im| Complex::new(im[j] as f64, 0.0))
                    .collect();
                Ok(ctx.encode_coeffs(&v, self.input_level(), self.input_scale())?)
            })
            .collect()
    }

    /// Logits per image from the decrypted outputs (one plaintext per logit).
    pub fn decode_outputs(
        &self,
        ctx: &CkksContext,
        outputs: &[Plaintext],
        images: usize,
    ) -> Result<Vec<Vec<f64>>, InferError> {
        self.check_ctx(ctx)?;
        if outputs.len() != self.output_len {
            return Err(InferError::BatchInputs {
                expected: self.output_len,
                found: outputs.len(),
            });
        }
        if images > self.batch_size() {
            return Err(InferError::BatchTooLarge {
                images,
                slots: self.batch_size(),
            });
        }
        let cols = outputs
            .par_iter()
            .map(|pt| ctx.decode_reals(pt))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((0..images)
            .map(|i| cols.iter().map(|c| c[i]).collect())
            .collect())
    }
}

/// Rows of a map that read the same inputs (all rows of a dense layer; the channels of one
/// position of a convolution), with their weights modulo each prime, rows × columns (W: on
/// the host, one vector per limb; on a device, uploaded).
#[derive(Clone, Debug)]
pub(crate) struct Group<W = HostWeights> {
    pub rows: Vec<u32>,
    pub cols: Vec<u32>,
    pub weights: W,
}

/// A group's weights on the host: per limb, rows × columns words.
pub(crate) type HostWeights = Vec<Vec<u64>>;

/// Groups rows (output index, integer-weighted entries) by their column lists.
fn make_groups(ctx: &CkksContext, level: usize, rows: Vec<(u32, Vec<(u32, i64)>)>) -> Vec<Group> {
    let mut index: HashMap<Vec<u32>, usize> = HashMap::new();
    let mut raw: Vec<(Vec<u32>, Vec<u32>, Vec<i64>)> = Vec::new();
    for (row, entries) in rows {
        let cols: Vec<u32> = entries.iter().map(|&(c, _)| c).collect();
        let g = *index.entry(cols.clone()).or_insert_with(|| {
            raw.push((Vec::new(), cols, Vec::new()));
            raw.len() - 1
        });
        raw[g].0.push(row);
        raw[g].2.extend(entries.iter().map(|&(_, w)| w));
    }
    raw.into_iter()
        .map(|(rows, cols, ints)| Group {
            rows,
            cols,
            weights: (0..level)
                .map(|i| {
                    let m = ctx.rlwe().q_modulus(i);
                    ints.iter().map(|&v| m.reduce_i64(v)).collect()
                })
                .collect(),
        })
        .collect()
}

/// A map's weights as integers round(w·q) for the prime q its rescale removes.
fn integer_rows(map: &Affine, q: f64, level: usize) -> Result<Vec<Vec<(u32, i64)>>, InferError> {
    map.rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|&(j, w)| {
                    let v = (w * q).round();
                    if v.abs() >= 9.2e18 {
                        return Err(InferError::Ckks(CkksError::Overflow {
                            bits: v.abs().log2(),
                            level,
                            log_q: q.log2(),
                        }));
                    }
                    Ok((j, v as i64))
                })
                .collect()
        })
        .collect()
}

#[derive(Clone, Debug)]
pub(crate) struct BatchedLinear<W = HostWeights> {
    pub groups: Vec<Group<W>>,
    pub bias: Vec<f64>,
}

/// One chunk of a fused map → activation → map: some of the first map's rows (numbered
/// locally), and the second map's columns that read them.
#[derive(Clone, Debug)]
pub(crate) struct FusedChunk<W = HostWeights> {
    pub first: BatchedLinear<W>,
    pub second: Vec<Group<W>>,
}

#[derive(Clone, Debug)]
pub(crate) enum BatchedOp<W = HostWeights> {
    Linear(BatchedLinear<W>),
    Activation {
        c: f64,
        post: Option<f64>,
        /// leave the product unrelinearized: a map follows
        lazy: bool,
    },
    /// map, activation x·(x + c), map — streamed over chunks of the first map's rows, so
    /// the activations between the maps never exist all at once
    Fused {
        chunks: Vec<FusedChunk<W>>,
        c: f64,
        bias: Vec<f64>,
    },
}

impl<W> Group<W> {
    fn try_map<W2, X>(
        &self,
        f: &mut impl FnMut(&Group<W>) -> Result<W2, X>,
    ) -> Result<Group<W2>, X> {
        Ok(Group {
            rows: self.rows.clone(),
            cols: self.cols.clone(),
            weights: f(self)?,
        })
    }
}

impl<W> BatchedLinear<W> {
    fn try_map<W2, X>(
        &self,
        f: &mut impl FnMut(&Group<W>) -> Result<W2, X>,
    ) -> Result<BatchedLinear<W2>, X> {
        Ok(BatchedLinear {
            groups: self
                .groups
                .iter()
                .map(|g| g.try_map(f))
                .collect::<Result<_, X>>()?,
            bias: self.bias.clone(),
        })
    }
}

impl<W> BatchedOp<W> {
    /// The same operation with every group's weights converted (uploaded to a device).
    pub(crate) fn try_map<W2, X>(
        &self,
        f: &mut impl FnMut(&Group<W>) -> Result<W2, X>,
    ) -> Result<BatchedOp<W2>, X> {
        Ok(match self {
            BatchedOp::Linear(l) => BatchedOp::Linear(l.try_map(f)?),
            BatchedOp::Activation { c, post, lazy } => BatchedOp::Activation {
                c: *c,
                post: *post,
                lazy: *lazy,
            },
            BatchedOp::Fused { chunks, c, bias } => BatchedOp::Fused {
                chunks: chunks
                    .iter()
                    .map(|ch| {
                        Ok(FusedChunk {
                            first: ch.first.try_map(f)?,
                            second: ch
                                .second
                                .iter()
                                .map(|g| g.try_map(f))
                                .collect::<Result<_, X>>()?,
                        })
                    })
                    .collect::<Result<_, X>>()?,
                c: *c,
                bias: bias.clone(),
            },
        })
    }
}

/// Rows of the first map per fused chunk (whole groups): bounds the chunk's memory.
const CHUNK_ROWS: usize = 128;

/// A network ready for batched evaluation with weights in the clear (mode b).
#[derive(Clone, Debug)]
pub struct BatchedModel {
    spec: BatchedSpec,
    ctx: Arc<CkksContext>,
    ops: Vec<BatchedOp>,
}

fn fused_chunks(
    ctx: &CkksContext,
    first: Vec<Vec<(u32, i64)>>,
    first_bias: &[f64],
    first_level: usize,
    second: Vec<Vec<(u32, i64)>>,
    second_level: usize,
) -> Vec<FusedChunk> {
    let groups = make_groups(
        ctx,
        first_level,
        first
            .into_iter()
            .enumerate()
            .map(|(o, r)| (o as u32, r))
            .collect(),
    );
    let mut chunks = Vec::new();
    let mut i = 0;
    while i < groups.len() {
        let mut members = Vec::new();
        let mut rows = 0;
        while i < groups.len() && (rows == 0 || rows + groups[i].rows.len() <= CHUNK_ROWS) {
            rows += groups[i].rows.len();
            members.push(groups[i].clone());
            i += 1;
        }
        // local numbering of the chunk's rows (= the second map's columns it feeds)
        let mut local = HashMap::new();
        let mut bias = Vec::with_capacity(rows);
        for g in &mut members {
            for r in &mut g.rows {
                let l = local.len() as u32;
                local.insert(*r, l);
                bias.push(first_bias[*r as usize]);
                *r = l;
            }
        }
        let second_rows = second
            .iter()
            .enumerate()
            .map(|(o, row)| {
                (
                    o as u32,
                    row.iter()
                        .filter_map(|&(c, w)| local.get(&c).map(|&l| (l, w)))
                        .collect::<Vec<_>>(),
                )
            })
            .filter(|(_, r)| !r.is_empty())
            .collect();
        chunks.push(FusedChunk {
            first: BatchedLinear {
                groups: members,
                bias,
            },
            second: make_groups(ctx, second_level, second_rows),
        });
    }
    chunks
}

impl BatchedModel {
    /// Whether batched packing evaluates `net`: not yet its residual blocks and per-channel
    /// activations (the latency plan does).
    pub fn supports(net: &Network) -> bool {
        fn plain(layers: &[super::Layer]) -> bool {
            layers.iter().all(|l| {
                !matches!(
                    l,
                    super::Layer::Residual(_)
                        | super::Layer::ChannelQuadratic { .. }
                        | super::Layer::GlobalAvgPool
                )
            })
        }
        plain(net.layers())
    }

    pub fn new(net: &Network, ctx: &Arc<CkksContext>) -> Result<Self, InferError> {
        let spec = BatchedSpec::with_parameters(net, ctx.params().clone())?;
        let low = lower(net)?;
        let shift = |op: &Op| match op {
            Op::Activation {
                c: Shift::Same(c), ..
            } => Ok(*c),
            _ => Err(InferError::Unsupported(
                "batched packing of residual blocks and per-channel activations",
            )),
        };
        for op in &low.ops {
            if !matches!(op, Op::Linear(_)) {
                shift(op)?;
            }
        }
        let q = ctx.params().rlwe().q();
        let mut level = spec.input_level();
        let mut ops = Vec::with_capacity(low.ops.len());
        let mut k = 0;
        while k < low.ops.len() {
            match (&low.ops[k], low.ops.get(k + 1), low.ops.get(k + 2)) {
                (Op::Linear(a), Some(act @ Op::Activation { post: None, .. }), Some(Op::Linear(b))) => {
                    let c = shift(act)?;
                    let first = integer_rows(a, q[level - 1] as f64, level)?;
                    let second = integer_rows(b, q[level - 3] as f64, level - 2)?;
                    ops.push(BatchedOp::Fused {
                        chunks: fused_chunks(ctx, first, &a.bias, level, second, level - 2),
                        c,
                        bias: b.bias.clone(),
                    });
                    level -= 3;
                    k += 3;
                }
                (Op::Linear(map), _, _) => {
                    let rows = integer_rows(map, q[level - 1] as f64, level)?;
                    ops.push(BatchedOp::Linear(BatchedLinear {
                        groups: make_groups(
                            ctx,
                            level,
                            rows.into_iter()
                                .enumerate()
                                .map(|(o, r)| (o as u32, r))
                                .collect(),
                        ),
                        bias: map.bias.clone(),
                    }));
                    level -= 1;
                    k += 1;
                }
                (op @ Op::Activation { post, .. }, next, _) => {
                    ops.push(BatchedOp::Activation {
                        c: shift(op)?,
                        post: *post,
                        lazy: matches!(next, Some(Op::Linear(_))) && post.is_none(),
                    });
                    level -= op.depth();
                    k += 1;
                }
                (Op::Save | Op::AddShortcut { .. }, _, _) => {
                    unreachable!("refused above")
                }
            }
        }
        Ok(Self {
            spec,
            ctx: ctx.clone(),
            ops,
        })
    }

    pub fn spec(&self) -> &BatchedSpec {
        &self.spec
    }

    /// Refuses inputs of the wrong number, level, degree or scale.
    pub(crate) fn check_inputs(&self, inputs: &[Ciphertext]) -> Result<(), InferError> {
        self.spec.check_inputs(&self.ctx, inputs)
    }

    pub(crate) fn ctx(&self) -> &Arc<CkksContext> {
        &self.ctx
    }

    pub(crate) fn ops(&self) -> &[BatchedOp] {
        &self.ops
    }

    pub(crate) fn context(&self) -> &Arc<CkksContext> {
        &self.ctx
    }
}

impl BatchedBackend for CpuBackend<'_> {
    type Weights = HostWeights;

    fn products(
        &self,
        groups: &[Group],
        xs: &[Ciphertext],
        n_out: usize,
        acc: Option<Vec<Ciphertext>>,
        scale: f64,
    ) -> Result<Vec<Ciphertext>, InferError> {
        let x0 = xs
            .first()
            .ok_or(InferError::ModelMismatch("a map over no inputs"))?;
        let (level, parts) = (x0.level(), x0.parts.len());
        if xs
            .iter()
            .any(|x| x.level() != level || x.parts.len() != parts)
        {
            return Err(InferError::ModelMismatch(
                "ciphertexts of one map differ in level",
            ));
        }
        let n = self.ctx.n();
        let accumulate = acc.is_some();
        let mut out: Vec<Vec<Poly>> = match acc {
            Some(cts) => cts.into_iter().map(|c| c.parts).collect(),
            None => (0..n_out)
                .map(|_| (0..parts).map(|_| Poly::zero(n, level)).collect())
                .collect(),
        };
        if out.len() != n_out
            || out
                .iter()
                .any(|o| o.len() != parts || o[0].limbs() != level)
        {
            return Err(InferError::ModelMismatch("accumulators of another shape"));
        }
        // one task per (part, limb), each owning that limb of every output
        let mut tasks: Vec<Vec<Option<&mut [u64]>>> = (0..parts * level)
            .map(|_| Vec::with_capacity(n_out))
            .collect();
        for ct in out.iter_mut() {
            for (p, poly) in ct.iter_mut().enumerate() {
                for (i, limb) in poly.data_mut().chunks_mut(n).enumerate() {
                    tasks[p * level + i].push(Some(limb));
                }
            }
        }
        let ring = self.ctx.rlwe();
        tasks.into_par_iter().enumerate().try_for_each(
            |(t, mut limbs)| -> Result<(), InferError> {
                let (p, i) = (t / level, t % level);
                let inputs: Vec<&[u64]> = xs.iter().map(|x| x.parts[p].limb(i)).collect();
                for g in groups {
                    let mut outs: Vec<&mut [u64]> = g
                        .rows
                        .iter()
                        .map(|&r| {
                            limbs
                                .get_mut(r as usize)
                                .and_then(Option::take)
                                .ok_or(InferError::ModelMismatch("a row in two groups"))
                        })
                        .collect::<Result<_, _>>()?;
                    kernels::group_product(
                        ring.q_modulus(i),
                        &g.cols,
                        &g.weights[i],
                        &inputs,
                        &mut outs,
                        accumulate,
                    );
                }
                Ok(())
            },
        )?;
        Ok(out
            .into_iter()
            .map(|parts| Ciphertext { parts, scale })
            .collect())
    }

    fn scale(&self, x: &Ciphertext) -> f64 {
        x.scale
    }
}
