//! The throughput packing: one image per slot. Input feature j of up to N/2 images travels in
//! ciphertext j (slot i = image i), so every map is a sparse matrix of scalars applied to vectors
//! of ciphertexts — no rotation at all, no Galois key — and activations are slot-wise products.
//! A residual network keeps each block's input (one ciphertext per value) beside its body, and
//! one deeper than the ring holds is cut into segments whose values the requester refreshes.
//!
//! Maps run as one modular matrix product over all ciphertext limbs (lazy 128-bit sums, one
//! reduction per coefficient); weights are integers round(w·q) for the prime q the map's
//! rescale removes, so the scale comes back exactly. Activations leave their products
//! unrelinearized when a map follows (the map is linear in every ciphertext part), so only the
//! map's outputs are relinearized: 128 relinearizations instead of 2304 in the default network.

use std::sync::Arc;

use rayon::prelude::*;

use crate::ckks::{Ciphertext, CkksContext, Evaluator};
use crate::ring::Poly;

use super::backend::{BatchedBackend, CpuBackend};
use super::batched_build::build_segments;
use super::batched_ops::{BatchedOp, Group, HostWeights};
use super::batched_spec::BatchedSpec;
use super::error::InferError;
use super::kernels;
use super::lower::lower;
use super::network::Network;

/// A network ready for batched evaluation with weights in the clear (mode b).
#[derive(Clone, Debug)]
pub struct BatchedModel {
    spec: BatchedSpec,
    ctx: Arc<CkksContext>,
    /// each segment's operations (one segment unless the network is cut)
    segments: Vec<Vec<BatchedOp>>,
    /// an upper estimate of the bytes a batch's values take at once
    peak_bytes: usize,
}

impl BatchedModel {
    /// The batched model of `net` for the parameters of `ctx`, planned with `policy` (which
    /// says whether and where a deep network is cut).
    pub fn with_policy(
        net: &Network,
        ctx: &Arc<CkksContext>,
        policy: &super::ParamPolicy,
    ) -> Result<Self, InferError> {
        let spec = BatchedSpec::new(net, policy)?;
        if ctx.params() != spec.parameters() {
            return Err(InferError::ContextMismatch);
        }
        Self::from_spec(net, ctx, spec)
    }

    /// An uncut batched model at the parameters of `ctx` (refused when they lack levels).
    pub fn new(net: &Network, ctx: &Arc<CkksContext>) -> Result<Self, InferError> {
        let spec = BatchedSpec::with_parameters(net, ctx.params().clone())?;
        Self::from_spec(net, ctx, spec)
    }

    fn from_spec(
        net: &Network,
        ctx: &Arc<CkksContext>,
        spec: BatchedSpec,
    ) -> Result<Self, InferError> {
        let low = lower(net)?;
        let (segments, peak_bytes) = build_segments(ctx, &spec, &low)?;
        Ok(Self {
            spec,
            ctx: ctx.clone(),
            segments,
            peak_bytes,
        })
    }

    /// An upper estimate of the memory a batch's ciphertexts take at once while it is
    /// evaluated (whatever the number of images in it: one ciphertext per value): a deep
    /// network's batch holds thousands of them.
    pub fn peak_bytes(&self) -> usize {
        self.peak_bytes
    }

    pub fn spec(&self) -> &BatchedSpec {
        &self.spec
    }

    /// Refuses inputs of the wrong number, level, degree or scale.
    pub(crate) fn check_inputs(&self, inputs: &[Ciphertext]) -> Result<(), InferError> {
        self.spec.check_inputs(&self.ctx, inputs)
    }

    pub(crate) fn segments(&self) -> &[Vec<BatchedOp>] {
        &self.segments
    }

    pub(crate) fn context(&self) -> &Arc<CkksContext> {
        &self.ctx
    }

    /// Evaluates a batch: one ciphertext per input value in, one per logit out.
    pub fn evaluate(
        &self,
        eval: &Evaluator,
        inputs: &[Ciphertext],
    ) -> Result<Vec<Ciphertext>, InferError> {
        if self.segments().len() > 1 {
            return Err(InferError::NeedsRefresh {
                segments: self.segments().len(),
            });
        }
        self.evaluate_segment(eval, 0, inputs)
    }

    /// Evaluates segment `k` on its inputs (the batch's ciphertexts for the first; the
    /// refreshed values of the one before, one ciphertext per value at the top level, for the
    /// others). Every segment but the last leaves its values at the refresh level.
    pub fn evaluate_segment(
        &self,
        eval: &Evaluator,
        k: usize,
        inputs: &[Ciphertext],
    ) -> Result<Vec<Ciphertext>, InferError> {
        let backend = CpuBackend::for_model(eval, self.spec.parameters(), &self.ctx)?;
        let ops = self.segments.get(k).ok_or(InferError::RefreshIndex {
            index: k,
            refreshes: self.segments.len() - 1,
        })?;
        if k == 0 {
            self.check_inputs(inputs)?;
        } else if inputs.is_empty()
            || inputs
                .iter()
                .any(|x| x.level() != self.spec.input_level() || x.degree() != 1)
        {
            return Err(InferError::ModelMismatch(
                "a refreshed segment's values must be degree 1 at the top level",
            ));
        }
        let out = super::batched_eval::run(&backend, ops, inputs)?;
        if k + 1 == self.segments.len() {
            return Ok(out);
        }
        let r = self.spec.refresh_level();
        out.into_par_iter()
            .map(|mut ct| {
                if ct.level() < r {
                    return Err(InferError::ModelMismatch(
                        "a segment ended below its refresh level",
                    ));
                }
                for part in &mut ct.parts {
                    part.truncate(r);
                }
                Ok(ct)
            })
            .collect()
    }

    /// Evaluates every segment, `refresh(k, values)` turning segment k's values into segment
    /// k + 1's inputs (the requester's refresh; a local decryption in `evaluate-encrypted`).
    /// The batch's inputs are taken, and freed once the first segment has read them.
    pub fn evaluate_refreshed(
        &self,
        eval: &Evaluator,
        inputs: Vec<Ciphertext>,
        mut refresh: impl FnMut(usize, Vec<Ciphertext>) -> Result<Vec<Ciphertext>, InferError>,
    ) -> Result<Vec<Ciphertext>, InferError> {
        let mut out = self.evaluate_segment(eval, 0, &inputs)?;
        drop(inputs);
        for k in 1..self.segments.len() {
            let next = refresh(k - 1, out)?;
            out = self.evaluate_segment(eval, k, &next)?;
        }
        Ok(out)
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
