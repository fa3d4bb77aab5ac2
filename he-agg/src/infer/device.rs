//! Encrypted inference on a GPU: a [`Model`] (mode b: weights as plaintexts; mode a: weights
//! encrypted) or a [`BatchedModel`] (one image per slot) and the evaluation keys uploaded once,
//! then every image or batch evaluated with all its intermediates in device memory — the same
//! evaluations as the CPU's ([`super::evaluate`], [`super::batched_eval`]), through
//! [`crate::gpu::Engine`], equal word for word.

use std::collections::HashMap;
use std::sync::Arc;

use crate::ckks::{Ciphertext, CkksContext, Plaintext};
use crate::gpu::{
    DevCiphertext, DevGroupWeights, DevPlaintext, DevSwitchingKey, Engine, Exec, GpuError,
};

use super::backend::{Backend, BatchedBackend, first};
use super::batched::BatchedModel;
use super::batched_eval;
use super::batched_ops::{BatchedOp, Group};
use super::batched_spec::BatchedSpec;
use super::error::InferError;
use super::evaluate;
use super::model::{Model, ModelStage, check_request, check_segment_inputs, segment_of};
use super::spec::{EvaluationKeys, InferenceSpec};

type DevStage<B> = ModelStage<DevPlaintext<B>, DevCiphertext<B>>;

/// An engine with a parameter set's evaluation keys on its device: the [`Backend`] both
/// packings run on.
pub(crate) struct Device<E: Exec> {
    engine: Engine<E>,
    ctx: Arc<CkksContext>,
    rlk: Option<DevSwitchingKey<E::Buf>>,
    /// By Galois element.
    galois: HashMap<u64, DevSwitchingKey<E::Buf>>,
}

impl<E: Exec> Device<E> {
    /// Uploads the relinearization key and the Galois keys of `steps` (refusing an engine of
    /// other parameters, and keys that lack a step).
    pub(crate) fn new(
        engine: Engine<E>,
        ctx: &Arc<CkksContext>,
        keys: &EvaluationKeys,
        steps: &[i64],
    ) -> Result<Self, InferError> {
        if engine.rlwe().fingerprint() != ctx.rlwe().fingerprint() {
            return Err(InferError::ContextMismatch);
        }
        let rlk = keys
            .relinearization
            .as_ref()
            .map(|r| engine.upload_key(&r.0))
            .transpose()?;
        let mut galois = HashMap::new();
        for &step in steps {
            let g = ctx.rlwe().galois_element_for_rotation(step);
            if g == 1 || galois.contains_key(&g) {
                continue;
            }
            let key = keys
                .galois
                .get(g)
                .ok_or(crate::ckks::CkksError::MissingGaloisKey(g))?;
            galois.insert(g, engine.upload_key(&key.key)?);
        }
        Ok(Self {
            engine,
            ctx: ctx.clone(),
            rlk,
            galois,
        })
    }

    /// Checked ciphertexts to the device.
    fn upload_all(&self, inputs: &[Ciphertext]) -> Result<Vec<DevCiphertext<E::Buf>>, InferError> {
        Ok(inputs
            .iter()
            .map(|x| self.engine.upload_ct(x))
            .collect::<Result<_, _>>()?)
    }

    pub(crate) fn engine(&self) -> &Engine<E> {
        &self.engine
    }

    pub(crate) fn key(&self, g: u64) -> Result<&DevSwitchingKey<E::Buf>, InferError> {
        Ok(self.galois.get(&g).ok_or(GpuError::MissingKey(g))?)
    }

    pub(crate) fn rlk(&self) -> Result<&DevSwitchingKey<E::Buf>, InferError> {
        self.rlk.as_ref().ok_or(InferError::Ckks(
            crate::ckks::CkksError::MissingRelinearizationKey,
        ))
    }
}

/// A model and its evaluation keys resident on a device.
pub struct DeviceModel<E: Exec> {
    dev: Device<E>,
    spec: Arc<InferenceSpec>,
    stages: Vec<DevStage<E::Buf>>,
    cuts: Vec<usize>,
}

impl<E> DeviceModel<E>
where
    E: Exec + Sync,
    E::Buf: Send + Sync,
{
    /// Uploads `model`'s operands and the keys of its plan's rotations (and the
    /// relinearization key) to `engine`'s device. Refuses an engine or keys of other
    /// parameters, and keys that lack a rotation of the plan.
    pub fn new(
        model: &Model,
        engine: Engine<E>,
        keys: &EvaluationKeys,
    ) -> Result<Self, InferError> {
        let spec = Arc::new(model.spec().clone());
        let dev = Device::new(engine, model.context(), keys, spec.galois_steps())?;
        let engine = &dev.engine;
        let mut up_plain = |p: &Plaintext| engine.upload_plain(p);
        let mut up_cipher = |c: &Ciphertext| engine.upload_ct(c);
        let stages = model
            .stages()?
            .iter()
            .map(|s| s.try_map(&mut up_plain, &mut up_cipher))
            .collect::<Result<Vec<_>, GpuError>>()?;
        Ok(Self {
            dev,
            spec,
            stages,
            cuts: model.cuts().to_vec(),
        })
    }

    pub fn engine(&self) -> &Engine<E> {
        &self.dev.engine
    }

    pub fn spec(&self) -> &InferenceSpec {
        &self.spec
    }

    /// An image's ciphertexts to the device, checked as [`Model::evaluate`] checks them.
    pub fn upload_inputs(
        &self,
        inputs: &[Ciphertext],
    ) -> Result<Vec<DevCiphertext<E::Buf>>, InferError> {
        check_request(&self.dev.ctx, &self.spec, inputs)?;
        self.dev.upload_all(inputs)
    }

    /// Evaluates the network on an image already on the device; the result stays there. A plan
    /// cut into segments is refused: see [`DeviceModel::evaluate_segment`].
    pub fn evaluate_resident(
        &self,
        inputs: Vec<DevCiphertext<E::Buf>>,
    ) -> Result<DevCiphertext<E::Buf>, InferError> {
        if self.spec.segments() > 1 {
            return Err(InferError::NeedsRefresh {
                segments: self.spec.segments(),
            });
        }
        let want = (self.spec.input_level(), self.spec.input_ciphertexts());
        if inputs.len() != want.1 || inputs.iter().any(|x| x.level != want.0 || x.parts != 2) {
            return Err(InferError::ModelMismatch(
                "the device inputs do not have the plan's number, level or degree",
            ));
        }
        evaluate::run(&self.dev, &self.stages, inputs, self.spec.step_primes())
    }

    /// Evaluates the network on one encrypted image (as [`Model::evaluate`]): upload, evaluate
    /// on the device, download the result.
    pub fn evaluate(&self, inputs: &[Ciphertext]) -> Result<Ciphertext, InferError> {
        let dev = self.upload_inputs(inputs)?;
        let out = self.evaluate_resident(dev)?;
        Ok(self.dev.engine.download_ct(&out)?)
    }

    /// Segment `k` on the device (as [`Model::evaluate_segment`]): its inputs uploaded, its
    /// output downloaded, at the refresh's level when a refresh follows.
    pub fn evaluate_segment(
        &self,
        k: usize,
        inputs: &[Ciphertext],
    ) -> Result<Ciphertext, InferError> {
        check_segment_inputs(&self.dev.ctx, &self.spec, k, inputs)?;
        let dev = self.dev.upload_all(inputs)?;
        let stages = segment_of(&self.stages, &self.cuts, k)?;
        let out = evaluate::run(&self.dev, stages, dev, self.spec.step_primes())?;
        let mut out = self.dev.engine.download_ct(&out)?;
        if let Some(p) = self.spec.refreshes().get(k) {
            for part in &mut out.parts {
                part.truncate(p.level);
            }
        }
        Ok(out)
    }
}

/// A batched model (one image per slot, mode b) resident on a device with its
/// relinearization key.
pub struct DeviceBatchedModel<E: Exec> {
    dev: Device<E>,
    ops: Vec<BatchedOp<DevGroupWeights<E::Buf>>>,
    spec: BatchedSpec,
}

impl<E> DeviceBatchedModel<E>
where
    E: Exec + Sync,
    E::Buf: Send + Sync,
{
    /// Uploads every group's weights and the relinearization key (batched evaluation needs no
    /// Galois key).
    pub fn new(
        model: &BatchedModel,
        engine: Engine<E>,
        keys: &EvaluationKeys,
    ) -> Result<Self, InferError> {
        if model.spec().needs_relinearization() && keys.relinearization.is_none() {
            return Err(InferError::Ckks(
                crate::ckks::CkksError::MissingRelinearizationKey,
            ));
        }
        let [ops] = model.segments() else {
            return Err(InferError::Unsupported(
                "a batched model cut into segments on the device (refreshes between them)",
            ));
        };
        let dev = Device::new(engine, model.context(), keys, &[])?;
        let engine = &dev.engine;
        let mut up = |g: &Group| engine.upload_group(g.rows.len(), &g.cols, &g.weights);
        let ops = ops
            .iter()
            .map(|op| op.try_map(&mut up))
            .collect::<Result<Vec<_>, GpuError>>()?;
        Ok(Self {
            dev,
            ops,
            spec: model.spec().clone(),
        })
    }

    pub fn engine(&self) -> &Engine<E> {
        &self.dev.engine
    }

    pub fn spec(&self) -> &BatchedSpec {
        &self.spec
    }

    /// A batch's ciphertexts to the device, checked as [`BatchedModel::evaluate`] checks them.
    pub fn upload_inputs(
        &self,
        inputs: &[Ciphertext],
    ) -> Result<Vec<DevCiphertext<E::Buf>>, InferError> {
        self.spec.check_inputs(&self.dev.ctx, inputs)?;
        self.dev.upload_all(inputs)
    }

    /// Evaluates a batch already on the device; the logits' ciphertexts stay there.
    pub fn evaluate_resident(
        &self,
        inputs: &[DevCiphertext<E::Buf>],
    ) -> Result<Vec<DevCiphertext<E::Buf>>, InferError> {
        let spec = &self.spec;
        if inputs.len() != spec.input_len()
            || inputs
                .iter()
                .any(|x| x.level != spec.input_level() || x.parts != 2)
        {
            return Err(InferError::ModelMismatch(
                "the device inputs do not have the batch's number, level or degree",
            ));
        }
        batched_eval::run(&self.dev, &self.ops, inputs)
    }

    /// Evaluates a batch (as [`BatchedModel::evaluate`]): upload, evaluate, download.
    pub fn evaluate(&self, inputs: &[Ciphertext]) -> Result<Vec<Ciphertext>, InferError> {
        let dev = self.upload_inputs(inputs)?;
        self.evaluate_resident(&dev)?
            .iter()
            .map(|c| Ok(self.dev.engine.download_ct(c)?))
            .collect()
    }
}

impl<E> BatchedBackend for Device<E>
where
    E: Exec + Sync,
    E::Buf: Send + Sync,
{
    type Weights = DevGroupWeights<E::Buf>;

    fn products(
        &self,
        groups: &[Group<Self::Weights>],
        xs: &[Self::Ct],
        n_out: usize,
        acc: Option<Vec<Self::Ct>>,
        scale: f64,
    ) -> Result<Vec<Self::Ct>, InferError> {
        let x0 = xs
            .first()
            .ok_or(InferError::ModelMismatch("a map over no inputs"))?;
        let accumulate = acc.is_some();
        let mut out = match acc {
            Some(a) => a,
            None => (0..n_out)
                .map(|_| self.engine.zero_ct(x0.level, x0.parts, scale))
                .collect::<Result<_, _>>()?,
        };
        if out.len() != n_out {
            return Err(InferError::ModelMismatch("accumulators of another shape"));
        }
        let ins: Vec<&Self::Ct> = xs.iter().collect();
        let mut slots: Vec<Option<&mut Self::Ct>> = out.iter_mut().map(Some).collect();
        for g in groups {
            let mut rows: Vec<&mut Self::Ct> = g
                .rows
                .iter()
                .map(|&r| {
                    slots
                        .get_mut(r as usize)
                        .and_then(Option::take)
                        .ok_or(InferError::ModelMismatch("a row in two groups"))
                })
                .collect::<Result<_, _>>()?;
            self.engine
                .group_product(&mut rows, &ins, &g.weights, accumulate)?;
        }
        for o in &mut out {
            o.scale = scale;
        }
        Ok(out)
    }

    fn scale(&self, x: &Self::Ct) -> f64 {
        x.scale
    }
}

impl<E> Backend for Device<E>
where
    E: Exec + Sync,
    E::Buf: Send + Sync,
{
    type Ct = DevCiphertext<E::Buf>;
    type Pt = DevPlaintext<E::Buf>;

    fn parallel(&self) -> bool {
        // one stream: launches go out in order from one thread
        false
    }
    fn copy(&self, x: &Self::Ct) -> Result<Self::Ct, InferError> {
        Ok(self.engine.copy(x)?)
    }
    fn rotate_hoisted(&self, x: &Self::Ct, steps: &[i64]) -> Result<Vec<Self::Ct>, InferError> {
        let rlwe = self.ctx.rlwe();
        let elements: Vec<u64> = steps
            .iter()
            .map(|&k| rlwe.galois_element_for_rotation(k))
            .collect();
        let keys = elements
            .iter()
            .filter(|&&g| g != 1)
            .map(|&g| Ok((g, self.key(g)?)))
            .collect::<Result<Vec<_>, InferError>>()?;
        let mut rotated = self.engine.apply_galois_hoisted(x, &keys)?.into_iter();
        elements
            .iter()
            .map(|&g| match g {
                1 => self.copy(x),
                _ => rotated
                    .next()
                    .ok_or(InferError::ModelMismatch("a hoisted rotation is missing")),
            })
            .collect()
    }
    fn rotate(&self, x: &Self::Ct, step: i64) -> Result<Self::Ct, InferError> {
        match self.ctx.rlwe().galois_element_for_rotation(step) {
            1 => self.copy(x),
            g => Ok(self.engine.apply_galois(x, g, self.key(g)?)?),
        }
    }
    fn rotate_sum(&self, xs: &[Self::Ct], steps: &[i64]) -> Result<Self::Ct, InferError> {
        if xs.len() != steps.len() {
            return Err(InferError::ModelMismatch("rotations of a sum"));
        }
        let rlwe = self.ctx.rlwe();
        let terms = xs
            .iter()
            .zip(steps)
            .map(|(x, &k)| match rlwe.galois_element_for_rotation(k) {
                1 => Ok((x, 1, None)),
                g => Ok((x, g, Some(self.key(g)?))),
            })
            .collect::<Result<Vec<_>, InferError>>()?;
        Ok(self.engine.apply_galois_sum(&terms)?)
    }
    fn dot_plain(&self, xs: &[&Self::Ct], ws: &[&Self::Pt]) -> Result<Self::Ct, InferError> {
        first(xs, ws)?;
        Ok(self.engine.dot_plain(xs, ws)?)
    }
    fn dot_cipher(&self, xs: &[&Self::Ct], ws: &[&Self::Ct]) -> Result<Self::Ct, InferError> {
        first(xs, ws)?;
        Ok(self.engine.dot_cipher(xs, ws)?)
    }
    fn rescale(&self, x: Self::Ct) -> Result<Self::Ct, InferError> {
        Ok(self.engine.rescale(x)?)
    }
    fn relinearize(&self, x: Self::Ct) -> Result<Self::Ct, InferError> {
        if x.parts == 2 {
            return Ok(x);
        }
        Ok(self.engine.relinearize(x, self.rlk()?)?)
    }
    fn add_assign(&self, y: &mut Self::Ct, x: &Self::Ct) -> Result<(), InferError> {
        Ok(self.engine.add_assign(y, x)?)
    }
    fn add_plain(&self, y: &mut Self::Ct, p: &Self::Pt) -> Result<(), InferError> {
        Ok(self.engine.add_plain_assign(y, p)?)
    }
    fn add_real_const(&self, y: &mut Self::Ct, c: f64) -> Result<(), InferError> {
        Ok(self.engine.add_real_const(y, c)?)
    }
    fn mul(&self, a: &Self::Ct, b: &Self::Ct) -> Result<Self::Ct, InferError> {
        Ok(self.engine.mul(a, b)?)
    }
    fn mul_const(&self, y: Self::Ct, c: f64, scale: f64) -> Result<Self::Ct, InferError> {
        Ok(self.engine.mul_const(y, c, scale)?)
    }
    fn step_modulus(&self, x: &Self::Ct, k: usize) -> f64 {
        super::model::step_modulus(&self.ctx, x.level, k)
    }
    fn drop_to(&self, x: Self::Ct, level: usize) -> Result<Self::Ct, InferError> {
        if x.level == level {
            return Ok(x);
        }
        // residual blocks in the batched packing (the only caller) stay on the CPU for now
        Err(InferError::Unsupported(
            "dropping a ciphertext's levels on the device (batched residual blocks)",
        ))
    }
}
