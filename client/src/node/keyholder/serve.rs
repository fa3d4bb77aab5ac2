//! A keyholder serving mode (a): its evaluation keys made from the sums the server sends, and
//! each request it is asked to serve checked (the requester's signature over its key and every
//! ciphertext), evaluated with the model it holds and switched to the requester's key. It
//! switches nothing it did not compute itself from a signed request: a serving host cannot have
//! it switch a ciphertext of its own making, nor switch anything to a key of its own.

use protocol::CollectiveMsg;
use std::time::Instant;

use anyhow::{Context, bail};
use he_agg::aggregate::BackendChoice;
use he_agg::ckks::{Ciphertext, Evaluator, wire};
use he_agg::infer::{Model, Placement, Resident};
use he_agg::multiparty::wire as mpw;
use protocol::Body;
use protocol::serve::collective::{
    EvaluateRequest, MAX_COLLECTIVE_CIPHERTEXTS, MAX_COLLECTIVE_IMAGES, ServingKeys,
};

use super::deep::Pending;
use super::{Held, Keyholder, Reply};
use crate::node::trust;

/// What a keyholder evaluates requests with.
pub struct Serving {
    /// the setup the keys are of
    setup: [u8; 32],
    evaluator: Evaluator,
    model: Model,
    /// the model and the keys on a GPU (`[node] backend`), else `None`
    device: Option<Box<dyn Resident>>,
}

impl Serving {
    /// Segment `k` of the served network on one image's inputs, on the device when there is
    /// one (the same words as the CPU's).
    pub(super) fn evaluate_segment(
        &self,
        k: usize,
        inputs: &[Ciphertext],
    ) -> Result<Ciphertext, he_agg::infer::InferError> {
        match &self.device {
            Some(d) => d.evaluate_segment(k, inputs),
            None => self.model.evaluate_segment(&self.evaluator, k, inputs),
        }
    }
}

/// Most items an evaluation request may carry (the requester's key and its images).
pub fn max_request_items() -> usize {
    1 + MAX_COLLECTIVE_CIPHERTEXTS as usize
}

impl Keyholder {
    /// Whether it holds the evaluation keys of the setup it holds (a head's keyholder too: it
    /// replays every step it refreshes).
    pub fn ready(&self) -> bool {
        match &self.held {
            Held::Served { .. } => self
                .serving
                .as_ref()
                .is_some_and(|s| Some(s.setup) == self.setup),
            Held::Head { held, .. } => held
                .keys
                .as_ref()
                .is_some_and(|(s, _)| Some(*s) == self.setup),
        }
    }

    /// Most items a key-sums message may carry.
    pub fn max_key_items(&self) -> usize {
        2 + self.keys.galois_elements().len()
    }

    /// The sums the evaluation keys are made of (`items`: the round-1 and round-2
    /// relinearization sums, then the Galois sums). The round-1 sum must be the one this
    /// keyholder made (it names the setup).
    pub fn serving_keys(
        &mut self,
        header: &ServingKeys,
        items: &[Vec<u8>],
    ) -> anyhow::Result<Reply> {
        if Some(header.setup) != self.setup {
            bail!("evaluation keys of another setup than the one this keyholder holds");
        }
        if items.len() != self.max_key_items() || header.galois as usize + 2 != items.len() {
            bail!(
                "{} key sums where the plan's keys are made of {}",
                items.len(),
                self.max_key_items()
            );
        }
        if *blake3::hash(&items[0]).as_bytes() != header.setup {
            return Err(trust::Distrust(
                "the relinearization sum sent with the evaluation keys is not the one this \
                 keyholder made at setup"
                    .into(),
            )
            .into());
        }
        let t = Instant::now();
        let relin1 = mpw::decode_relin_share1(&self.ctx, &items[0]).context("relinearization")?;
        let relin2 = mpw::decode_relin_share2(&self.ctx, &items[1]).context("relinearization")?;
        let galois = items[2..]
            .iter()
            .enumerate()
            .map(|(i, b)| {
                mpw::decode_galois_share(&self.ctx, b).with_context(|| format!("Galois sum {i}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let keys = self.keys.evaluation_keys(&relin1, relin2, galois)?;
        let plan = match &mut self.held {
            Held::Served { plan, .. } => plan.clone(),
            Held::Head { held, .. } => {
                held.keys = Some((header.setup, keys));
                tracing::info!(
                    seconds = t.elapsed().as_secs_f64(),
                    "evaluation keys made; replaying the head's training steps it refreshes"
                );
                return Ok(Reply {
                    body: Body::Collective(CollectiveMsg::KeyholderReady),
                    items: vec![],
                });
            }
        };
        let evaluator = self
            .ctx
            .evaluator(keys.relinearization.as_ref(), Some(&keys.galois))?;
        // a ResNet's weights at the served parameters (N = 2^15) can exceed the host: what does
        // not fit is encoded per request
        let budget = self
            .model_memory
            .or_else(|| he_agg::alloc::available_memory().map(|b| b / 4))
            .unwrap_or(u64::MAX);
        let model = Model::plain_within(&plan, &self.ctx, budget)?;
        let (held, held_bytes) = model.held();
        if held < plan.spec().segments() {
            tracing::warn!(
                held,
                segments = plan.spec().segments(),
                held_mb = held_bytes >> 20,
                budget_mb = budget >> 20,
                "the served model's weights do not all fit the memory given them ([node] \
                 model_memory_mb, default a quarter of what is available): the other segments are \
                 encoded for each request"
            );
        }
        // the device copy is made from the weights held in memory at once: a model that does
        // not fit the budget stays on the CPU, which encodes the rest per request
        let backend = match self.backend {
            b if held == plan.spec().segments() => b,
            BackendChoice::Cuda => bail!(
                "[node] backend = \"cuda\" places the whole served model on the device, but only \
                 {held} of its {} segments fit the {} MB given them ([node] model_memory_mb)",
                plan.spec().segments(),
                budget >> 20
            ),
            _ => BackendChoice::Cpu,
        };
        let placement = Placement::select(backend, &model)
            .with_context(|| format!("[node] backend = \"{}\"", self.backend))?;
        let device = placement
            .open(&model, &keys)
            .context("placing the served model and its keys on the device")?;
        tracing::info!(
            evaluated_on = if device.is_some() {
                placement.name()
            } else {
                "CPU"
            },
            "the served model is placed"
        );
        self.serving = Some(Serving {
            setup: header.setup,
            evaluator,
            model,
            device,
        });
        tracing::info!(
            seconds = t.elapsed().as_secs_f64(),
            "evaluation keys made; serving requests"
        );
        Ok(Reply {
            body: Body::Collective(CollectiveMsg::KeyholderReady),
            items: vec![],
        })
    }

    /// A request to serve (`items`: the requester's public key, then its images): the
    /// requester's signature checked, the images evaluated here, the results switched to the
    /// requester's key. The answer carries the results and the shares.
    pub fn evaluate(&mut self, req: &EvaluateRequest, items: &[Vec<u8>]) -> anyhow::Result<Reply> {
        let sk = self.additive_share("serve", req.setup, &req.active)?;
        let Held::Served { plan, .. } = &self.held else {
            bail!("a request to serve while holding a head-training key");
        };
        let Some(serving) = self.serving.as_ref().filter(|s| s.setup == req.setup) else {
            bail!("a request before this keyholder holds the setup's evaluation keys");
        };
        let spec = plan.spec();
        let signed = &req.signed;
        let per = spec.input_ciphertexts();
        if req.requester == 0 || req.requester > self.hospitals {
            bail!(
                "a request of hospital {}, not one of 1..={}",
                req.requester,
                self.hospitals
            );
        }
        if signed.fingerprint != spec.fingerprint() || signed.ciphertexts_per_image as usize != per
        {
            bail!("a request for another plan than the model this keyholder serves");
        }
        if signed.images == 0
            || signed.images > MAX_COLLECTIVE_IMAGES
            || signed.items() as usize != items.len()
        {
            bail!(
                "{} items for a request of {} images of {per} ciphertexts",
                items.len(),
                signed.images
            );
        }
        trust::check_request(
            &self.verifier,
            &self.peers,
            self.federation,
            req.requester,
            signed,
            items,
        )?;
        let target =
            wire::decode_public_key(&self.ctx, &items[0]).context("the requester's public key")?;
        let mut images = Vec::with_capacity(items.len() - 1);
        for (i, bytes) in items[1..].iter().enumerate() {
            let ct = wire::decode_ciphertext(&self.ctx, bytes)
                .with_context(|| format!("image ciphertext {i}"))?;
            if ct.level() != spec.input_level()
                || ct.degree() != 1
                || (ct.scale / spec.input_scale() - 1.0).abs() > 1e-9
            {
                bail!(
                    "image ciphertext {i} at level {} degree {}; the plan takes level {} degree 1 \
                     at its input scale",
                    ct.level(),
                    ct.degree(),
                    spec.input_level()
                );
            }
            images.push(ct);
        }
        // the first segment (the whole network, when it fits one ring); a cut plan's later
        // segments follow each refresh ([`super::deep`])
        let t0 = Instant::now();
        let outputs: Vec<Ciphertext> = images
            .chunks(per)
            .map(|image| serving.evaluate_segment(0, image))
            .collect::<Result<_, _>>()
            .context("evaluating the request")?;
        let pending = Pending {
            request: req.request,
            attempt: req.attempt,
            requester: req.requester,
            request_id: signed.request_id,
            active: req.active.clone(),
            target,
            sk,
            outputs,
            segment: 0,
            evaluate_us: t0.elapsed().as_micros() as u64,
        };
        self.advance(pending)
    }
}
