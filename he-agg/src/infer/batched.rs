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

use crate::ckks::{Ciphertext, CkksContext};
use crate::ring::Poly;

use super::backend::{BatchedBackend, CpuBackend};
use super::batched_ops::{
    BatchedLinear, BatchedOp, CHUNK_ROWS, FusedChunk, Group, HostWeights, integer_rows, make_groups,
};
use super::batched_spec::BatchedSpec;
use super::error::InferError;
use super::kernels;
use super::lower::{Op, Shift, lower};
use super::network::Network;

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
                (
                    Op::Linear(a),
                    Some(act @ Op::Activation { post: None, .. }),
                    Some(Op::Linear(b)),
                ) => {
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
