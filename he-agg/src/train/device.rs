//! A head-training step on a GPU (issue 43): the evaluation keys and the contribution's chunks
//! uploaded once, the state uploaded after each refresh, and every product, key switch, rotation
//! and rescale of [`HeadTrainer::step`] run in device memory. The refreshed state comes back to
//! the host (the keyholders refresh it there), so only the state crosses the bus per step. The
//! result equals the CPU trainer's word for word (`device_tests.rs`, through the kernels'
//! reference executor), so every party replaying a run reaches the same state wherever it runs.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use crate::aggregate::BackendChoice;
use crate::ckks::{Ciphertext, CkksContext, Plaintext};
use crate::gpu::{DevCiphertext, DevPlaintext, Engine, Exec, HostExec, NttTables};
use crate::infer::{Device, EvaluationKeys};

use super::chunk::EncryptedChunk;
use super::layout::HeadLayout;
use super::params::HeadScales;
use super::{HeadPlan, HeadTrainError};

fn on_device(e: impl std::fmt::Display) -> HeadTrainError {
    HeadTrainError::Device(e.to_string())
}

/// A run's steps computed away from the CPU trainer (its chunks resident).
pub trait StepDevice: Send {
    /// Where the steps run, for the log.
    fn name(&self) -> &str;

    /// The step of [`HeadTrainer::step`](super::HeadTrainer::step) on the chunks numbered
    /// `batch`, from `weights` (and their `velocity` after the first step with momentum).
    fn step(
        &self,
        weights: &[Ciphertext],
        velocity: Option<&[Ciphertext]>,
        batch: &[usize],
    ) -> Result<Vec<Ciphertext>, HeadTrainError>;
}

struct DevChunk<B> {
    features: Vec<DevCiphertext<B>>,
    labels: DevCiphertext<B>,
    count: usize,
}

/// A chunk's ones (the bias's input) at the top and at the labels' level, by example count:
/// encoded once, not per step (a run's chunks are full but the last).
type Ones<B> = HashMap<usize, (DevPlaintext<B>, DevPlaintext<B>)>;

/// The trainer on an executor: keys and chunks resident.
pub struct DeviceHeadTrainer<E: Exec> {
    name: String,
    dev: Device<E>,
    ctx: Arc<CkksContext>,
    layout: HeadLayout,
    scales: HeadScales,
    lr: f64,
    momentum: f64,
    chunks: Vec<DevChunk<E::Buf>>,
    ones: Ones<E::Buf>,
}

impl<E: Exec> DeviceHeadTrainer<E> {
    /// Uploads the relinearization key, the Galois keys of the layout's rotations and every
    /// chunk (checked as the CPU trainer checks them).
    pub fn new(
        name: String,
        engine: Engine<E>,
        plan: &HeadPlan,
        keys: &EvaluationKeys,
        (lr, momentum): (f64, f64),
        chunks: &[EncryptedChunk],
    ) -> Result<Self, HeadTrainError> {
        let (ctx, layout, scales) = (plan.context(), plan.layout(), plan.scales());
        let dev = Device::new(engine, ctx, keys, &layout.rotations()).map_err(on_device)?;
        dev.rlk().map_err(on_device)?;
        let e = dev.engine();
        let chunks = chunks
            .iter()
            .map(|c| {
                c.check(layout, scales)?;
                let features = c
                    .features
                    .iter()
                    .map(|x| e.upload_ct(x))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(on_device)?;
                Ok(DevChunk {
                    features,
                    labels: e.upload_ct(&c.labels).map_err(on_device)?,
                    count: c.count,
                })
            })
            .collect::<Result<Vec<_>, HeadTrainError>>()?;
        let mut ones = Ones::new();
        for c in &chunks {
            if let Entry::Vacant(slot) = ones.entry(c.count) {
                let v = layout.pack_ones(c.count);
                let at = |level| -> Result<_, HeadTrainError> {
                    let pt: Plaintext = ctx.encode_reals(&v, level, scales.data)?;
                    e.upload_plain(&pt).map_err(on_device)
                };
                slot.insert((at(scales.top)?, at(scales.label_level)?));
            }
        }
        Ok(Self {
            name,
            ctx: ctx.clone(),
            dev,
            layout: layout.clone(),
            scales: scales.clone(),
            lr,
            momentum,
            chunks,
            ones,
        })
    }

    fn engine(&self) -> &Engine<E> {
        self.dev.engine()
    }

    fn plain(
        &self,
        values: &[f64],
        level: usize,
        scale: f64,
    ) -> Result<DevPlaintext<E::Buf>, HeadTrainError> {
        let pt: Plaintext = self.ctx.encode_reals(values, level, scale)?;
        self.engine().upload_plain(&pt).map_err(on_device)
    }

    fn upload(&self, cts: &[Ciphertext]) -> Result<Vec<DevCiphertext<E::Buf>>, HeadTrainError> {
        cts.iter()
            .map(|c| self.engine().upload_ct(c).map_err(on_device))
            .collect()
    }

    fn rescale2(&self, ct: DevCiphertext<E::Buf>) -> Result<DevCiphertext<E::Buf>, HeadTrainError> {
        let e = self.engine();
        e.rescale(e.rescale(ct).map_err(on_device)?)
            .map_err(on_device)
    }

    /// y + rot(y, k) for each k in turn.
    fn rotate_sum(
        &self,
        mut y: DevCiphertext<E::Buf>,
        steps: &[i64],
    ) -> Result<DevCiphertext<E::Buf>, HeadTrainError> {
        let e = self.engine();
        for &k in steps {
            let g = self.ctx.rlwe().galois_element_for_rotation(k);
            let r = if g == 1 {
                e.copy(&y)
            } else {
                e.apply_galois(&y, g, self.dev.key(g).map_err(on_device)?)
            }
            .map_err(on_device)?;
            e.add_assign(&mut y, &r).map_err(on_device)?;
        }
        Ok(y)
    }

    fn step_inner(
        &self,
        weights: &[Ciphertext],
        velocity: Option<&[Ciphertext]>,
        batch: &[usize],
    ) -> Result<Vec<Ciphertext>, HeadTrainError> {
        let (l, s, e) = (&self.layout, &self.scales, self.engine());
        let groups = l.groups();
        let chunks = batch
            .iter()
            .map(|&i| {
                self.chunks.get(i).ok_or_else(|| {
                    HeadTrainError::Shape(format!("chunk {i} of {}", self.chunks.len()))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if chunks.is_empty() || weights.len() != groups + 1 {
            return Err(HeadTrainError::Shape(format!(
                "a step of {} chunks from {} weight ciphertexts (the head has {groups} groups \
                 and a bias)",
                chunks.len(),
                weights.len()
            )));
        }
        let examples: usize = chunks.iter().map(|c| c.count).sum();
        let w = self.upload(weights)?;
        let rlk = self.dev.rlk().map_err(on_device)?;
        let mut acc: Vec<Option<DevCiphertext<E::Buf>>> = (0..=groups).map(|_| None).collect();
        for chunk in chunks {
            let (ones_top, ones_low) = &self.ones[&chunk.count];
            // logits: Σ_J W_J ⊗ X_J in one launch, then b ⊙ 1 (sums mod q: the CPU's order
            // gives the same words)
            let ws: Vec<_> = w[..groups].iter().collect();
            let xs: Vec<_> = chunk.features.iter().collect();
            let mut z = e.dot_cipher(&ws, &xs).map_err(on_device)?;
            let bias = e.dot_plain(&[&w[groups]], &[ones_top]).map_err(on_device)?;
            e.add_assign(&mut z, &bias).map_err(on_device)?;
            let z = self.rescale2(e.relinearize(z, rlk).map_err(on_device)?)?;
            let z = self.rotate_sum(z, &l.feature_sum_steps())?;
            let r = e.sub(&z, &chunk.labels).map_err(on_device)?;
            for (g, a) in acc.iter_mut().enumerate() {
                let t = if g < groups {
                    // the features two levels down, where the residual meets them
                    e.mul(
                        &r,
                        &e.drop_to(&chunk.features[g], s.label_level)
                            .map_err(on_device)?,
                    )
                } else {
                    e.dot_plain(&[&r], &[ones_low])
                }
                .map_err(on_device)?;
                match a {
                    None => *a = Some(t),
                    Some(a) => e.add_assign(a, &t).map_err(on_device)?,
                }
            }
        }
        let mask = self.plain(
            &l.pack_gradient_mask(self.lr / examples as f64),
            s.top - 4,
            s.mask,
        )?;
        let v = velocity.map(|v| self.upload(v)).transpose()?;
        let mut updates = Vec::with_capacity(acc.len());
        for (k, t) in acc.into_iter().enumerate() {
            let t = t.ok_or_else(|| HeadTrainError::Shape("an empty batch".into()))?;
            let t = self.rescale2(e.relinearize(t, rlk).map_err(on_device)?)?;
            let t = self.rotate_sum(t, &l.sample_sum_steps())?;
            let gr = self.rescale2(e.dot_plain(&[&t], &[&mask]).map_err(on_device)?)?;
            let mut gr = self.rotate_sum(gr, &l.sample_spread_steps())?;
            if let Some(v) = v.as_ref().map(|v| &v[k]) {
                // μ·v, rescaled by the two top primes back to the weights' scale
                let mv = e
                    .mul_const(e.copy(v).map_err(on_device)?, self.momentum, s.data)
                    .map_err(on_device)?;
                let mv = self.rescale2(mv)?;
                e.add_assign(&mut gr, &mv).map_err(on_device)?;
            }
            updates.push(gr);
        }
        let mut state = Vec::with_capacity(2 * updates.len());
        for (w, u) in w.iter().zip(&updates) {
            let mut out = e.sub(w, u).map_err(on_device)?;
            out.scale = s.weight;
            state.push(e.download_ct(&out).map_err(on_device)?);
        }
        if self.momentum > 0.0 {
            for u in &updates {
                let mut u = e.download_ct(u).map_err(on_device)?;
                u.scale = s.weight;
                state.push(u);
            }
        }
        Ok(state)
    }
}

impl<E> StepDevice for DeviceHeadTrainer<E>
where
    E: Exec + Send,
    E::Buf: Send,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn step(
        &self,
        weights: &[Ciphertext],
        velocity: Option<&[Ciphertext]>,
        batch: &[usize],
    ) -> Result<Vec<Ciphertext>, HeadTrainError> {
        self.step_inner(weights, velocity, batch)
    }
}

/// What a run needs to put its steps on a device.
pub struct DeviceRun<'a> {
    pub plan: &'a HeadPlan,
    pub keys: &'a EvaluationKeys,
    pub lr: f64,
    pub momentum: f64,
    pub chunks: &'a [EncryptedChunk],
}

/// The device `choice` asks for, with the run's keys and chunks on it: `None` on the CPU (and
/// with `auto` where no device loads or it cannot take them, said in the log); `cuda` without
/// a usable device is an error.
pub fn open_device(
    choice: BackendChoice,
    run: &DeviceRun<'_>,
) -> Result<Option<Box<dyn StepDevice>>, HeadTrainError> {
    match choice {
        BackendChoice::Cpu => Ok(None),
        BackendChoice::Cuda => cuda(run).map(Some),
        BackendChoice::Auto => match cuda(run) {
            Ok(d) => Ok(Some(d)),
            Err(reason) => {
                tracing::info!(%reason, "no usable CUDA device: head training on the CPU");
                Ok(None)
            }
        },
    }
}

/// The device path on the CPU, through the GPU kernels' reference executor (the same launches
/// and arithmetic as a device): how machines without a GPU test it.
pub fn host_reference(run: &DeviceRun<'_>) -> Result<Box<dyn StepDevice>, HeadTrainError> {
    let rlwe = run.plan.context().rlwe().clone();
    let exec = HostExec::new(Arc::new(NttTables::new(rlwe.ring())));
    open_on(
        "reference executor (CPU)".into(),
        Engine::new(exec, rlwe),
        run,
    )
}

fn open_on<E>(
    name: String,
    engine: Engine<E>,
    run: &DeviceRun<'_>,
) -> Result<Box<dyn StepDevice>, HeadTrainError>
where
    E: Exec + Send + 'static,
    E::Buf: Send,
{
    Ok(Box::new(DeviceHeadTrainer::new(
        name,
        engine,
        run.plan,
        run.keys,
        (run.lr, run.momentum),
        run.chunks,
    )?))
}

#[cfg(feature = "cuda")]
fn cuda(run: &DeviceRun<'_>) -> Result<Box<dyn StepDevice>, HeadTrainError> {
    use crate::gpu::CudaExec;
    let rlwe = run.plan.context().rlwe().clone();
    let tables = NttTables::new(rlwe.ring());
    let exec = CudaExec::open(0, &tables, false).map_err(on_device)?;
    let name = format!("GPU (CUDA) {}", exec.name());
    tracing::info!(device = %name, "head training on the GPU");
    open_on(name, Engine::new(exec, rlwe), run)
}

#[cfg(not(feature = "cuda"))]
fn cuda(_run: &DeviceRun<'_>) -> Result<Box<dyn StepDevice>, HeadTrainError> {
    Err(on_device(crate::aggregate::CudaError::NotBuilt))
}
