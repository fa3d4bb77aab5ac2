//! A plan made ready for a context: its diagonals encoded as plaintexts (mode b, the model in
//! the clear at the server) or encrypted (mode a, the model encrypted under the same key as the
//! image), and the evaluation of one encrypted image.

use std::ops::Deref;
use std::sync::{Arc, Mutex};

use crate::ckks::{Ciphertext, CkksContext, Plaintext};

use super::encoders::{CipherEncoder, CountEncoder, Encoder, ImportEncoder, PlainEncoder};
use super::error::InferError;
use super::kernels;
pub(crate) use super::operand::{Operand, Scalar};
use super::plan::{InferencePlan, LinearStage, Stage, StageShift};
use super::spec::InferenceSpec;

/// One product of a giant step: (input ciphertext, its baby rotation, the diagonal).
#[derive(Clone, Debug)]
pub(crate) struct TermOp<P, C> {
    pub input: usize,
    pub baby: usize,
    pub weight: Operand<P, C>,
}

#[derive(Clone, Debug)]
pub(crate) struct GiantOps<P, C> {
    pub step: i64,
    pub terms: Vec<TermOp<P, C>>,
}

/// A map ready to evaluate: baby steps, the giant steps' products, folds and the bias.
#[derive(Clone, Debug)]
pub(crate) struct LinearOps<P, C> {
    pub baby_steps: Vec<i64>,
    /// per input ciphertext: the baby indices it is rotated by
    pub babies: Vec<Vec<usize>>,
    pub giants: Vec<GiantOps<P, C>>,
    pub fold_steps: Vec<i64>,
    pub bias: Option<Operand<P, C>>,
    /// rotate-and-add steps after the bias (the output replicated with its own period)
    pub replicate: Vec<i64>,
}

/// The c of an activation: a scalar, or one value per slot.
#[derive(Clone, Debug)]
pub(crate) enum Shift<P, C> {
    Scalar(Scalar<C>),
    Slots(Operand<P, C>),
}

#[derive(Clone, Debug)]
pub(crate) enum ModelStage<P, C> {
    Linear(LinearOps<P, C>),
    Activation {
        c: Option<Shift<P, C>>,
        post: Option<Scalar<C>>,
    },
    /// keeps the current ciphertext for a block's shortcut
    Save,
    /// adds the kept ciphertext, mapped first when given
    AddShortcut(Option<LinearOps<P, C>>),
}

impl<P, C> LinearOps<P, C> {
    fn try_map<P2, C2, X>(
        &self,
        fp: &mut impl FnMut(&P) -> Result<P2, X>,
        fc: &mut impl FnMut(&C) -> Result<C2, X>,
    ) -> Result<LinearOps<P2, C2>, X> {
        Ok(LinearOps {
            baby_steps: self.baby_steps.clone(),
            babies: self.babies.clone(),
            giants: self
                .giants
                .iter()
                .map(|g| {
                    Ok(GiantOps {
                        step: g.step,
                        terms: g
                            .terms
                            .iter()
                            .map(|t| {
                                Ok(TermOp {
                                    input: t.input,
                                    baby: t.baby,
                                    weight: t.weight.try_map(fp, fc)?,
                                })
                            })
                            .collect::<Result<_, X>>()?,
                    })
                })
                .collect::<Result<_, X>>()?,
            fold_steps: self.fold_steps.clone(),
            bias: self.bias.as_ref().map(|b| b.try_map(fp, fc)).transpose()?,
            replicate: self.replicate.clone(),
        })
    }

    /// Every operand, in a fixed order (weights, then the bias).
    fn operands(&self) -> impl Iterator<Item = &Operand<P, C>> {
        self.giants
            .iter()
            .flat_map(|g| g.terms.iter().map(|t| &t.weight))
            .chain(self.bias.as_ref())
    }
}

impl<P, C> ModelStage<P, C> {
    /// The same stage with every operand converted (uploaded to a device).
    pub(crate) fn try_map<P2, C2, X>(
        &self,
        fp: &mut impl FnMut(&P) -> Result<P2, X>,
        fc: &mut impl FnMut(&C) -> Result<C2, X>,
    ) -> Result<ModelStage<P2, C2>, X> {
        Ok(match self {
            ModelStage::Linear(l) => ModelStage::Linear(l.try_map(fp, fc)?),
            ModelStage::Activation { c, post } => ModelStage::Activation {
                c: match c {
                    None => None,
                    Some(Shift::Scalar(s)) => Some(Shift::Scalar(s.try_map(fc)?)),
                    Some(Shift::Slots(o)) => Some(Shift::Slots(o.try_map(fp, fc)?)),
                },
                post: post.as_ref().map(|s| s.try_map(fc)).transpose()?,
            },
            ModelStage::Save => ModelStage::Save,
            ModelStage::AddShortcut(map) => {
                ModelStage::AddShortcut(map.as_ref().map(|l| l.try_map(fp, fc)).transpose()?)
            }
        })
    }
}

/// A network ready to evaluate on encrypted images of one parameter set.
#[derive(Clone, Debug)]
pub struct Model {
    spec: Arc<InferenceSpec>,
    ctx: Arc<CkksContext>,
    stages: Vec<ModelStage<Plaintext, Ciphertext>>,
    /// where each segment after the first starts (stage indices)
    cuts: Vec<usize>,
    encrypted: bool,
    /// the segments past `stages` and how to encode them when used ([`Model::plain_within`])
    deferred: Option<Deferred>,
}

/// The product of the last `k` moduli of `level` as a float: the scale that one rescaling step
/// (k primes) at that level divides by.
pub(crate) fn step_modulus(ctx: &CkksContext, level: usize, k: usize) -> f64 {
    ctx.params().rlwe().q()[level - k..level]
        .iter()
        .map(|&q| q as f64)
        .product()
}

/// Refuses an image's ciphertexts of the wrong number, level, degree or scale for `spec`.
pub(crate) fn check_request(
    ctx: &CkksContext,
    spec: &InferenceSpec,
    inputs: &[Ciphertext],
) -> Result<(), InferError> {
    if inputs.len() != spec.input_ciphertexts() {
        return Err(InferError::InputCiphertexts {
            expected: spec.input_ciphertexts(),
            found: inputs.len(),
        });
    }
    for x in inputs {
        kernels::check_input(ctx, x, spec.input_level(), spec.input_scale())?;
    }
    Ok(())
}

impl Model {
    /// Mode (b): the weights in the clear, encoded as plaintexts. Each map's weights are encoded
    /// at the scale of the prime its rescale removes, so the activations' scale comes back
    /// exactly.
    pub fn plain(plan: &InferencePlan, ctx: &Arc<CkksContext>) -> Result<Self, InferError> {
        Self::build(plan, ctx, &mut PlainEncoder, false)
    }

    /// Mode (b) weights (or a mode (a) keyholder's) held encoded only as far as `budget` bytes
    /// allow: the first segments that fit are encoded now, each later one when it is evaluated
    /// (the last one encoded is kept for the next image of the same request). A network whose
    /// encoded weights exceed the host's memory (a ResNet at N = 2^15) is then served at the
    /// cost of encoding those segments per request. With a budget that holds every segment it
    /// is [`Model::plain`].
    pub fn plain_within(
        plan: &Arc<InferencePlan>,
        ctx: &Arc<CkksContext>,
        budget: u64,
    ) -> Result<Self, InferError> {
        check_context(plan, ctx)?;
        let spec = plan.spec();
        let mut stages = Vec::new();
        let mut held = 0u64;
        let mut resident = 0;
        while resident < spec.segments() && held < budget {
            let part = segment_of(&plan.stages, &plan.cuts, resident)?;
            let encoded = encode_stages(part, spec, ctx, &mut PlainEncoder)?;
            let bytes: u64 = encoded.iter().map(stage_bytes).sum();
            if held + bytes > budget {
                break;
            }
            held += bytes;
            stages.extend(encoded);
            resident += 1;
        }
        let deferred = (resident < spec.segments()).then(|| Deferred {
            plan: plan.clone(),
            resident,
            last: Arc::new(Mutex::new(None)),
        });
        Ok(Self {
            spec: plan.shared_spec(),
            ctx: ctx.clone(),
            stages,
            cuts: plan.cuts.clone(),
            encrypted: false,
            deferred,
        })
    }

    /// How many segments are held encoded (all but those [`Model::plain_within`] encodes when
    /// used), and their bytes.
    pub fn held(&self) -> (usize, u64) {
        let segments = self
            .deferred
            .as_ref()
            .map_or(self.spec.segments(), |d| d.resident);
        (segments, self.stages.iter().map(stage_bytes).sum())
    }

    /// Mode (a): every weight, bias and activation constant encrypted by `encrypt` (under the
    /// key the images are encrypted under: the collective public key, in a deployment). The
    /// scales follow the same schedule as [`Model::plain`].
    pub fn encrypted(
        plan: &InferencePlan,
        ctx: &Arc<CkksContext>,
        encrypt: &mut dyn FnMut(&Plaintext) -> Ciphertext,
    ) -> Result<Self, InferError> {
        Self::build(plan, ctx, &mut CipherEncoder(encrypt), true)
    }

    /// The ciphertexts of an encrypted model in a fixed order (for storage or transfer with
    /// [`crate::ckks::wire`]); empty for a plaintext model.
    pub fn ciphertexts(&self) -> Vec<&Ciphertext> {
        fn cipher(o: &Operand<Plaintext, Ciphertext>) -> Option<&Ciphertext> {
            match o {
                Operand::Cipher(c) => Some(c),
                Operand::Plain(_) => None,
            }
        }
        let mut out = Vec::new();
        for stage in &self.stages {
            match stage {
                ModelStage::Linear(l) | ModelStage::AddShortcut(Some(l)) => {
                    out.extend(l.operands().filter_map(cipher))
                }
                ModelStage::Activation { c, post } => {
                    match c {
                        Some(Shift::Scalar(Scalar::Cipher(ct))) => out.push(ct),
                        Some(Shift::Slots(o)) => out.extend(cipher(o)),
                        _ => {}
                    }
                    if let Some(Scalar::Cipher(ct)) = post {
                        out.push(ct);
                    }
                }
                ModelStage::Save | ModelStage::AddShortcut(None) => {}
            }
        }
        out
    }

    /// How many ciphertexts an encrypted model of `plan` has (a receiver bounds an upload by
    /// it before reading).
    pub fn encrypted_len(
        plan: &InferencePlan,
        ctx: &Arc<CkksContext>,
    ) -> Result<usize, InferError> {
        let mut count = CountEncoder(0);
        Self::build(plan, ctx, &mut count, true)?;
        Ok(count.0)
    }

    /// Rebuilds an encrypted model from [`Model::ciphertexts`], at a server that holds no
    /// weights: `plan` may be compiled from the same architecture with any weights (the layout
    /// depends on the layer shapes and kinds only; a quadratic with a = 0 is a linear layer).
    /// Every ciphertext's level, degree and scale is checked against the plan.
    pub fn from_ciphertexts(
        plan: &InferencePlan,
        ctx: &Arc<CkksContext>,
        ciphertexts: Vec<Ciphertext>,
    ) -> Result<Self, InferError> {
        let mut import = ImportEncoder(ciphertexts.into_iter(), ctx.clone());
        let model = Self::build(plan, ctx, &mut import, true)?;
        if import.0.next().is_some() {
            return Err(InferError::ModelMismatch("too many ciphertexts"));
        }
        Ok(model)
    }

    fn build(
        plan: &InferencePlan,
        ctx: &Arc<CkksContext>,
        enc: &mut dyn Encoder,
        encrypted: bool,
    ) -> Result<Self, InferError> {
        check_context(plan, ctx)?;
        Ok(Self {
            spec: plan.shared_spec(),
            ctx: ctx.clone(),
            stages: encode_stages(&plan.stages, plan.spec(), ctx, enc)?,
            cuts: plan.cuts.clone(),
            encrypted,
            deferred: None,
        })
    }

    pub fn spec(&self) -> &InferenceSpec {
        &self.spec
    }

    /// Whether the weights are encrypted (mode a).
    pub fn is_encrypted(&self) -> bool {
        self.encrypted
    }

    pub(crate) fn ctx(&self) -> &Arc<CkksContext> {
        &self.ctx
    }

    /// Every stage, the segments a [`Model::plain_within`] does not hold encoded now.
    pub(crate) fn stages(&self) -> Result<std::borrow::Cow<'_, [HostStage]>, InferError> {
        match &self.deferred {
            None => Ok(std::borrow::Cow::Borrowed(&self.stages)),
            Some(d) => {
                let mut all = self.stages.clone();
                for k in d.resident..self.spec.segments() {
                    all.extend_from_slice(&d.segment(&self.ctx, k)?);
                }
                Ok(std::borrow::Cow::Owned(all))
            }
        }
    }

    /// The stages of segment `k`: held, or encoded now for a segment beyond the memory a
    /// [`Model::plain_within`] was given.
    pub(crate) fn segment(&self, k: usize) -> Result<SegmentStages<'_>, InferError> {
        match &self.deferred {
            Some(d) if k >= d.resident => d.segment(&self.ctx, k),
            _ => segment_of(&self.stages, &self.cuts, k).map(SegmentStages::Held),
        }
    }

    pub(crate) fn cuts(&self) -> &[usize] {
        &self.cuts
    }

    pub(crate) fn context(&self) -> &Arc<CkksContext> {
        &self.ctx
    }
}

pub(crate) type HostStage = ModelStage<Plaintext, Ciphertext>;

/// A segment's index and its stages, encoded for use.
type EncodedSegment = (usize, Arc<[HostStage]>);

/// The segments a [`Model::plain_within`] does not hold: the plan to encode them from, and the
/// last one encoded.
#[derive(Clone, Debug)]
struct Deferred {
    plan: Arc<InferencePlan>,
    /// segments 0..resident are held in the model's stages
    resident: usize,
    last: Arc<Mutex<Option<EncodedSegment>>>,
}

impl Deferred {
    fn segment(
        &self,
        ctx: &Arc<CkksContext>,
        k: usize,
    ) -> Result<SegmentStages<'static>, InferError> {
        // one encoding at a time: a request's images ask for the same segment in turn
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((j, stages)) = last.as_ref()
            && *j == k
        {
            return Ok(SegmentStages::Encoded(stages.clone()));
        }
        // the one kept goes first: two segments of a ResNet at once are gigabytes
        *last = None;
        let part = segment_of(&self.plan.stages, &self.plan.cuts, k)?;
        let stages: Arc<[HostStage]> =
            encode_stages(part, self.plan.spec(), ctx, &mut PlainEncoder)?.into();
        *last = Some((k, stages.clone()));
        Ok(SegmentStages::Encoded(stages))
    }
}

/// A segment's stages: held by the model, or encoded for this use.
pub(crate) enum SegmentStages<'a> {
    Held(&'a [HostStage]),
    Encoded(Arc<[HostStage]>),
}

impl Deref for SegmentStages<'_> {
    type Target = [HostStage];
    fn deref(&self) -> &[HostStage] {
        match self {
            SegmentStages::Held(s) => s,
            SegmentStages::Encoded(s) => s,
        }
    }
}

/// The bytes of a stage's encoded operands.
fn stage_bytes(stage: &HostStage) -> u64 {
    fn operand(o: &Operand<Plaintext, Ciphertext>) -> u64 {
        let words = match o {
            Operand::Plain(p) => p.poly.data().len(),
            Operand::Cipher(c) => c.parts.iter().map(|p| p.data().len()).sum(),
        };
        8 * words as u64
    }
    match stage {
        ModelStage::Linear(l) | ModelStage::AddShortcut(Some(l)) => l.operands().map(operand).sum(),
        ModelStage::Activation {
            c: Some(Shift::Slots(o)),
            ..
        } => operand(o),
        _ => 0,
    }
}

pub(crate) fn check_context(plan: &InferencePlan, ctx: &CkksContext) -> Result<(), InferError> {
    if ctx.params() != plan.spec().parameters() {
        return Err(InferError::ContextMismatch);
    }
    Ok(())
}

/// `stages` of a plan of `spec` with their operands encoded by `enc`.
pub(crate) fn encode_stages(
    stages: &[Stage],
    spec: &InferenceSpec,
    ctx: &Arc<CkksContext>,
    enc: &mut dyn Encoder,
) -> Result<Vec<HostStage>, InferError> {
    let k = spec.step_primes();
    let mut out = Vec::with_capacity(stages.len());
    for stage in stages {
        out.push(match stage {
            Stage::Linear(l) => ModelStage::Linear(linear_ops(l, ctx, enc, k)?),
            Stage::AddShortcut { map } => ModelStage::AddShortcut(
                map.as_ref()
                    .map(|l| linear_ops(l, ctx, enc, k))
                    .transpose()?,
            ),
            Stage::Save => ModelStage::Save,
            Stage::Activation {
                level,
                scale,
                c,
                post,
            } => {
                let c = match c {
                    StageShift::Same(c) if *c == 0.0 && !enc.complete() => None,
                    StageShift::Same(c) => {
                        Some(Shift::Scalar(enc.scalar(ctx, *c, *level, *scale)?))
                    }
                    StageShift::Slots(v) => {
                        Some(Shift::Slots(enc.operand(ctx, v, *level, *scale)?))
                    }
                };
                let post = match post {
                    Some(a) => {
                        let q = step_modulus(ctx, level - k, k);
                        Some(enc.scalar(ctx, *a, level - k, q)?)
                    }
                    None => None,
                };
                ModelStage::Activation { c, post }
            }
        });
    }
    Ok(out)
}

/// A map's operands encoded: its diagonals at the plan's weight scale, its bias at the output's.
fn linear_ops(
    l: &LinearStage,
    ctx: &Arc<CkksContext>,
    enc: &mut dyn Encoder,
    k: usize,
) -> Result<LinearOps<Plaintext, Ciphertext>, InferError> {
    // every diagonal of the map at once (one level and scale), then dealt back to its term
    let diags: Vec<&[f64]> = l
        .bsgs
        .giants
        .iter()
        .flat_map(|g| g.terms.iter().map(|t| t.diag.as_slice()))
        .collect();
    let mut weights = enc
        .operands(ctx, &diags, l.level, l.weight_scale)?
        .into_iter();
    let mut giants = Vec::with_capacity(l.bsgs.giants.len());
    for g in &l.bsgs.giants {
        let mut terms = Vec::with_capacity(g.terms.len());
        for t in &g.terms {
            terms.push(TermOp {
                input: t.input,
                baby: t.baby,
                weight: weights
                    .next()
                    .ok_or(InferError::ModelMismatch("a diagonal without its operand"))?,
            });
        }
        giants.push(GiantOps {
            step: g.step,
            terms,
        });
    }
    let bias = match &l.bias {
        Some(b) => Some(enc.operand(ctx, b, l.level - k, l.out_scale)?),
        None if enc.complete() => {
            Some(enc.operand(ctx, &vec![0.0; ctx.slots()], l.level - k, l.out_scale)?)
        }
        None => None,
    };
    Ok(LinearOps {
        baby_steps: l.bsgs.baby_steps.clone(),
        babies: (0..l.bsgs.inputs).map(|k| l.bsgs.babies_of(k)).collect(),
        giants,
        fold_steps: l.fold_steps.clone(),
        bias,
        replicate: l.replicate.clone(),
    })
}

/// Segment `k` of `stages` cut at `cuts`.
pub(crate) fn segment_of<'a, T>(
    stages: &'a [T],
    cuts: &[usize],
    k: usize,
) -> Result<&'a [T], InferError> {
    let err = InferError::RefreshIndex {
        index: k,
        refreshes: cuts.len(),
    };
    let start = if k == 0 {
        0
    } else {
        *cuts.get(k - 1).ok_or(err)?
    };
    let end = cuts.get(k).copied().unwrap_or(stages.len());
    stages
        .get(start..end)
        .ok_or(InferError::ModelMismatch("segment bounds"))
}

/// Refuses the inputs of segment `k`: the image's ciphertexts for the first, one refreshed
/// ciphertext at the input level and the refresh's scale for the others.
pub(crate) fn check_segment_inputs(
    ctx: &CkksContext,
    spec: &InferenceSpec,
    k: usize,
    inputs: &[Ciphertext],
) -> Result<(), InferError> {
    if k == 0 {
        return check_request(ctx, spec, inputs);
    }
    let point = spec
        .refreshes()
        .get(k - 1)
        .ok_or(InferError::RefreshIndex {
            index: k,
            refreshes: spec.refreshes().len(),
        })?;
    match inputs {
        [x] => kernels::check_input(ctx, x, spec.input_level(), point.scale),
        _ => Err(InferError::InputCiphertexts {
            expected: 1,
            found: inputs.len(),
        }),
    }
}
