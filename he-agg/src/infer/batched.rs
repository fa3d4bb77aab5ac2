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

use crate::ckks::{Ciphertext, CkksContext, CkksError, Complex, Evaluator, Parameters, Plaintext};
use crate::ring::Poly;

use super::error::InferError;
use super::kernels;
use super::lower::{Affine, Op, lower};
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
/// position of a convolution), with their weights modulo each prime, rows × columns.
#[derive(Clone, Debug)]
struct Group {
    rows: Vec<u32>,
    cols: Vec<u32>,
    weights: Vec<Vec<u64>>,
}

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
struct BatchedLinear {
    groups: Vec<Group>,
    bias: Vec<f64>,
}

/// One chunk of a fused map → activation → map: some of the first map's rows (numbered
/// locally), and the second map's columns that read them.
#[derive(Clone, Debug)]
struct FusedChunk {
    first: BatchedLinear,
    second: Vec<Group>,
}

#[derive(Clone, Debug)]
enum BatchedOp {
    Linear(BatchedLinear),
    Activation {
        c: f64,
        post: Option<f64>,
        /// leave the product unrelinearized: a map follows
        lazy: bool,
    },
    /// map, activation x·(x + c), map — streamed over chunks of the first map's rows, so
    /// the activations between the maps never exist all at once
    Fused {
        chunks: Vec<FusedChunk>,
        c: f64,
        bias: Vec<f64>,
    },
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
    pub fn new(net: &Network, ctx: &Arc<CkksContext>) -> Result<Self, InferError> {
        let spec = BatchedSpec::with_parameters(net, ctx.params().clone())?;
        let low = lower(net)?;
        let q = ctx.params().rlwe().q();
        let mut level = spec.input_level();
        let mut ops = Vec::with_capacity(low.ops.len());
        let mut k = 0;
        while k < low.ops.len() {
            match (&low.ops[k], low.ops.get(k + 1), low.ops.get(k + 2)) {
                (Op::Linear(a), Some(Op::Activation { c, post: None }), Some(Op::Linear(b))) => {
                    let first = integer_rows(a, q[level - 1] as f64, level)?;
                    let second = integer_rows(b, q[level - 3] as f64, level - 2)?;
                    ops.push(BatchedOp::Fused {
                        chunks: fused_chunks(ctx, first, &a.bias, level, second, level - 2),
                        c: *c,
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
                (op @ Op::Activation { c, post }, next, _) => {
                    ops.push(BatchedOp::Activation {
                        c: *c,
                        post: *post,
                        lazy: matches!(next, Some(Op::Linear(_))) && post.is_none(),
                    });
                    level -= op.depth();
                    k += 1;
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

    /// Evaluates a batch: one ciphertext per input value in, one per logit out.
    pub fn evaluate(
        &self,
        eval: &Evaluator,
        inputs: &[Ciphertext],
    ) -> Result<Vec<Ciphertext>, InferError> {
        if eval.context().params() != self.spec.parameters() {
            return Err(InferError::ContextMismatch);
        }
        if inputs.len() != self.spec.input_len {
            return Err(InferError::BatchInputs {
                expected: self.spec.input_len,
                found: inputs.len(),
            });
        }
        for ct in inputs {
            kernels::check_input(
                &self.ctx,
                ct,
                self.spec.input_level(),
                self.spec.input_scale(),
            )?;
        }
        let mut owned: Vec<Ciphertext>;
        let mut cur: &[Ciphertext] = inputs;
        for op in &self.ops {
            owned = match op {
                BatchedOp::Linear(l) => {
                    let out = self.products(&l.groups, cur, l.bias.len(), None)?;
                    self.finish_map(eval, out, cur[0].scale, &l.bias)?
                }
                BatchedOp::Activation { c, post, lazy } => cur
                    .par_iter()
                    .map(|x| self.activation(eval, x, *c, *post, *lazy))
                    .collect::<Result<_, _>>()?,
                BatchedOp::Fused { chunks, c, bias } => self.fused(eval, cur, chunks, *c, bias)?,
            };
            cur = &owned;
        }
        Ok(cur.to_vec())
    }

    /// The unreduced products of a map: one ciphertext's parts per output, at the inputs'
    /// level and degree; added onto `acc` when given.
    fn products(
        &self,
        groups: &[Group],
        xs: &[Ciphertext],
        n_out: usize,
        acc: Option<Vec<Vec<Poly>>>,
    ) -> Result<Vec<Vec<Poly>>, InferError> {
        let level = xs[0].level();
        let parts = xs[0].parts.len();
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
        let mut out = acc.unwrap_or_else(|| {
            (0..n_out)
                .map(|_| (0..parts).map(|_| Poly::zero(n, level)).collect())
                .collect()
        });
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
        tasks
            .into_par_iter()
            .enumerate()
            .for_each(|(t, mut limbs)| {
                let (p, i) = (t / level, t % level);
                let inputs: Vec<&[u64]> = xs.iter().map(|x| x.parts[p].limb(i)).collect();
                for g in groups {
                    let mut outs: Vec<&mut [u64]> = g
                        .rows
                        .iter()
                        .map(|&r| {
                            limbs[r as usize]
                                .take()
                                .expect("a row belongs to one group")
                        })
                        .collect();
                    kernels::group_product(
                        self.ctx.rlwe().q_modulus(i),
                        &g.cols,
                        &g.weights[i],
                        &inputs,
                        &mut outs,
                        accumulate,
                    );
                }
            });
        Ok(out)
    }

    /// Rescales, relinearizes and adds the bias to a map's products.
    fn finish_map(
        &self,
        eval: &Evaluator,
        out: Vec<Vec<Poly>>,
        in_scale: f64,
        bias: &[f64],
    ) -> Result<Vec<Ciphertext>, InferError> {
        let level = out.first().map_or(0, |p| p[0].limbs());
        let scale = in_scale * self.ctx.params().rlwe().q()[level - 1] as f64;
        out.into_par_iter()
            .zip(bias)
            .map(|(parts, &b)| {
                let mut ct = Ciphertext { parts, scale };
                eval.rescale_assign(&mut ct)?;
                if ct.degree() == 2 {
                    ct = eval.relinearize(&ct)?;
                }
                if b != 0.0 {
                    kernels::add_real_const(eval, &mut ct, b)?;
                }
                Ok(ct)
            })
            .collect()
    }

    fn fused(
        &self,
        eval: &Evaluator,
        xs: &[Ciphertext],
        chunks: &[FusedChunk],
        c: f64,
        bias: &[f64],
    ) -> Result<Vec<Ciphertext>, InferError> {
        let n = self.ctx.n();
        let level = xs[0].level();
        // the second map reads degree-2 activations two levels down
        let mut acc: Vec<Vec<Poly>> = (0..bias.len())
            .map(|_| (0..3).map(|_| Poly::zero(n, level - 2)).collect())
            .collect();
        let mut act_scale = None;
        for chunk in chunks {
            let out = self.products(&chunk.first.groups, xs, chunk.first.bias.len(), None)?;
            let mapped = self.finish_map(eval, out, xs[0].scale, &chunk.first.bias)?;
            let acts: Vec<Ciphertext> = mapped
                .into_par_iter()
                .map(|x| self.activation(eval, &x, c, None, true))
                .collect::<Result<_, _>>()?;
            act_scale = Some(acts[0].scale);
            acc = self.products(&chunk.second, &acts, bias.len(), Some(acc))?;
        }
        let scale = act_scale.ok_or(InferError::ModelMismatch("empty fused map"))?;
        self.finish_map(eval, acc, scale, bias)
    }

    fn activation(
        &self,
        eval: &Evaluator,
        x: &Ciphertext,
        c: f64,
        post: Option<f64>,
        lazy: bool,
    ) -> Result<Ciphertext, InferError> {
        let mut y = if c == 0.0 {
            eval.mul(x, x)?
        } else {
            let mut shifted = x.clone();
            kernels::add_real_const(eval, &mut shifted, c)?;
            eval.mul(x, &shifted)?
        };
        eval.rescale_assign(&mut y)?;
        if !lazy {
            y = eval.relinearize(&y)?;
        }
        if let Some(a) = post {
            let q = self.ctx.params().rlwe().q()[y.level() - 1] as f64;
            y = eval.mul_const(&y, a, q)?;
            eval.rescale_assign(&mut y)?;
        }
        Ok(y)
    }
}
