//! Sans-IO handling of one inference request: [`ServedModel::begin`] checks the header against
//! the plan (fingerprint, image and ciphertext counts) before anything is allocated, with the
//! requester's keys already checked and kept ([`super::keys`]); [`PendingRequest::push`]
//! decodes and checks each ciphertext as it arrives (the wire decoders check parameters, exact
//! sizes, levels and residues; here the level and scale); [`PendingRequest::finish`] refuses a
//! short stream; [`ReadyRequest::evaluate`] runs the network — or, for a deep model cut into
//! segments, its next segment — and gives either the encoded results or a [`Refreshing`]: the
//! segment's outputs masked for the requester ([`he_agg::infer::refresh`]), whose answer
//! [`Refreshing::begin`] checks item by item as a request's images are checked, giving the
//! next segment's [`ReadyRequest`]. A request holds at most its images' masks between two
//! segments. A refusal says what was wrong, for the log and for the requester.

use std::sync::Arc;
use std::time::{Duration, Instant};

use he_agg::ckks::{Ciphertext, wire};
use he_agg::infer::InferError;
use he_agg::infer::refresh::{self, Mask};
use he_agg::ring::Prng;
use he_agg::rlwe::expand_seeded;
use protocol::serve::released::{InferRequest, RefreshHeader};

use super::keys::KeySet;
use super::model::ServedModel;
use super::refusal::{Refusal, hex};

/// A request whose header was accepted, collecting its ciphertexts.
pub struct PendingRequest {
    model: Arc<ServedModel>,
    header: InferRequest,
    keys: Arc<KeySet>,
    /// every image's ciphertexts, image after image
    cts: Vec<Ciphertext>,
    received: u64,
    validate: Duration,
}

/// A complete, valid request, or one whose segments so far are evaluated and refreshed.
pub struct ReadyRequest {
    model: Arc<ServedModel>,
    header: InferRequest,
    keys: Arc<KeySet>,
    /// the inputs of segment `segment`: every image's ciphertexts, image after image (one per
    /// image after a refresh)
    cts: Vec<Ciphertext>,
    segment: usize,
    /// with the evaluation so far
    evaluate: Duration,
    validate: Duration,
}

/// What comes after evaluating a segment: the results, or a refresh round trip.
pub enum Step {
    Done(Response),
    Refresh(Refreshing),
}

/// A request whose segment's outputs are masked for its requester, waiting for the answer.
pub struct Refreshing {
    /// What to send: the header, then `ciphertexts`, one per image.
    pub header: RefreshHeader,
    pub ciphertexts: Vec<Vec<u8>>,
    model: Arc<ServedModel>,
    request: InferRequest,
    keys: Arc<KeySet>,
    masks: Vec<Mask>,
    segment: usize,
    evaluate: Duration,
    validate: Duration,
}

/// The requester's refreshed ciphertexts, checked as they arrive.
pub struct PendingRefresh {
    from: Refreshing,
    cts: Vec<Ciphertext>,
}

/// Encoded results, one ciphertext per image.
#[derive(Debug)]
pub struct Response {
    pub request_id: u64,
    pub ciphertexts: Vec<Vec<u8>>,
    pub evaluate: Duration,
    pub validate: Duration,
}

impl ServedModel {
    /// Checks a request header against the plan; nothing is allocated for a refused one.
    /// `keys` are the requester's checked keys the header names (looked up by the caller).
    pub fn begin(
        self: &Arc<Self>,
        header: &InferRequest,
        keys: Arc<KeySet>,
    ) -> Result<PendingRequest, Refusal> {
        let spec = self.plan().spec();
        let want = spec.fingerprint();
        if header.fingerprint != want {
            return Err(Refusal::Fingerprint {
                got: hex(&header.fingerprint),
                want: hex(&want),
            });
        }
        let max = self.info().max_images;
        if header.images == 0 || header.images > max {
            return Err(Refusal::ImageCount {
                got: header.images,
                max,
            });
        }
        if header.ciphertexts_per_image as usize != spec.input_ciphertexts() {
            return Err(Refusal::CiphertextsPerImage {
                got: header.ciphertexts_per_image,
                want: spec.input_ciphertexts(),
            });
        }
        if keys.id != header.keys {
            return Err(Refusal::UnknownKeys {
                id: hex(&header.keys),
            });
        }
        Ok(PendingRequest {
            model: self.clone(),
            header: header.clone(),
            keys,
            cts: Vec::with_capacity(header.items() as usize),
            received: 0,
            validate: Duration::ZERO,
        })
    }
}

impl PendingRequest {
    pub fn header(&self) -> &InferRequest {
        &self.header
    }

    /// Items still expected.
    pub fn remaining(&self) -> u64 {
        self.header.items() - self.received
    }

    /// Decodes and checks the next ciphertext.
    pub fn push(&mut self, item: &[u8]) -> Result<(), Refusal> {
        let announced = self.header.items();
        if self.received >= announced {
            return Err(Refusal::TooManyItems { announced });
        }
        let t = Instant::now();
        let index = self.received;
        let image = (index / u64::from(self.header.ciphertexts_per_image)) as usize;
        let ctx = self.model.context().clone();
        let seeded =
            wire::decode_seeded_ciphertext(&ctx, item).map_err(|source| Refusal::Item {
                index,
                what: "encrypted image",
                source,
            })?;
        let spec = self.model.plan().spec();
        if seeded.level() != spec.input_level() {
            return Err(Refusal::InputLevel {
                image,
                expected: spec.input_level(),
                found: seeded.level(),
            });
        }
        if (seeded.scale / spec.input_scale() - 1.0).abs() > 1e-9 {
            return Err(Refusal::InputScale {
                image,
                expected: spec.input_scale().log2(),
                found: seeded.scale.log2(),
            });
        }
        self.cts.push(expand_seeded(ctx.rlwe(), &seeded));
        self.received += 1;
        self.validate += t.elapsed();
        Ok(())
    }

    /// The request once every announced item has arrived.
    pub fn finish(self) -> Result<ReadyRequest, Refusal> {
        let announced = self.header.items();
        if self.received != announced {
            return Err(Refusal::MissingItems {
                got: self.received,
                announced,
            });
        }
        Ok(ReadyRequest {
            model: self.model,
            header: self.header,
            keys: self.keys,
            cts: self.cts,
            segment: 0,
            evaluate: Duration::ZERO,
            validate: self.validate,
        })
    }
}

impl ReadyRequest {
    pub fn images(&self) -> usize {
        self.header.images as usize
    }

    /// Evaluates every image's next segment (CPU-bound: run it off the async runtime): the
    /// results after the last one, else the outputs masked for a refresh.
    pub fn evaluate(self) -> Result<Step, Refusal> {
        let t = Instant::now();
        let ctx = self.model.context();
        let spec = self.model.plan().spec();
        let per = self.cts.len() / self.images().max(1);
        let images = self.cts.chunks(per.max(1));
        let outs = match self
            .keys
            .resident(&self.model)
            .map_err(Refusal::Evaluation)?
        {
            Some(device) => images
                .map(|image| device.evaluate_segment(self.segment, image))
                .collect::<Result<Vec<_>, InferError>>(),
            None => {
                let keys = &self.keys.keys;
                let eval = ctx
                    .evaluator(keys.relinearization.as_ref(), Some(&keys.galois))
                    .map_err(|e| Refusal::Evaluation(InferError::Ckks(e)))?;
                images
                    .map(|image| {
                        self.model
                            .model()
                            .evaluate_segment(&eval, self.segment, image)
                    })
                    .collect()
            }
        }
        .map_err(Refusal::Evaluation)?;
        if self.segment + 1 == spec.segments() {
            return Ok(Step::Done(Response {
                request_id: self.header.request_id,
                ciphertexts: outs
                    .iter()
                    .map(|c| wire::encode_ciphertext(ctx, c))
                    .collect(),
                evaluate: self.evaluate + t.elapsed(),
                validate: self.validate,
            }));
        }
        let mut prng = Prng::from_os().map_err(|e| Refusal::Evaluation(InferError::Rng(e)))?;
        let (mut ciphertexts, mut masks) = (Vec::new(), Vec::new());
        for out in &outs {
            let (masked, mask) = refresh::mask(ctx, spec, self.segment, out, &mut prng)
                .map_err(Refusal::Evaluation)?;
            ciphertexts.push(wire::encode_ciphertext(ctx, &masked));
            masks.push(mask);
        }
        Ok(Step::Refresh(Refreshing {
            header: RefreshHeader {
                request_id: self.header.request_id,
                index: self.segment as u32,
                count: outs.len() as u32,
            },
            ciphertexts,
            model: self.model,
            request: self.header,
            keys: self.keys,
            masks,
            segment: self.segment,
            evaluate: self.evaluate + t.elapsed(),
            validate: self.validate,
        }))
    }
}

impl Refreshing {
    /// Checks the requester's answer header against what was sent.
    pub fn begin(self, answer: &RefreshHeader) -> Result<PendingRefresh, Refusal> {
        if *answer != self.header {
            return Err(Refusal::RefreshHeader {
                got_request: answer.request_id,
                got_index: answer.index,
                got_count: answer.count,
                request: self.header.request_id,
                index: self.header.index,
                count: self.header.count,
            });
        }
        let cts = Vec::with_capacity(self.masks.len());
        Ok(PendingRefresh { from: self, cts })
    }
}

impl PendingRefresh {
    /// Items still expected.
    pub fn remaining(&self) -> u64 {
        (self.from.masks.len() - self.cts.len()) as u64
    }

    /// Decodes and checks the next refreshed ciphertext (seeded, at the plan's input level and
    /// the refresh's scale).
    pub fn push(&mut self, item: &[u8]) -> Result<(), Refusal> {
        let announced = self.from.masks.len() as u64;
        let image = self.cts.len();
        if image >= self.from.masks.len() {
            return Err(Refusal::TooManyItems { announced });
        }
        let t = Instant::now();
        let ctx = self.from.model.context().clone();
        let spec = self.from.model.plan().spec();
        let seeded =
            wire::decode_seeded_ciphertext(&ctx, item).map_err(|source| Refusal::Item {
                index: image as u64,
                what: "refreshed ciphertext",
                source,
            })?;
        let want_scale = spec.refreshes()[self.from.segment].scale;
        if seeded.level() != spec.input_level() || (seeded.scale / want_scale - 1.0).abs() > 1e-9 {
            return Err(Refusal::RefreshedShape {
                image,
                expected: spec.input_level(),
                found: seeded.level(),
                scale: seeded.scale.log2(),
                want_scale: want_scale.log2(),
            });
        }
        self.cts.push(expand_seeded(ctx.rlwe(), &seeded));
        self.from.validate += t.elapsed();
        Ok(())
    }

    /// The next segment's request once every image's ciphertext has arrived: the masks
    /// removed.
    pub fn finish(self) -> Result<ReadyRequest, Refusal> {
        let announced = self.from.masks.len() as u64;
        if self.cts.len() as u64 != announced {
            return Err(Refusal::MissingItems {
                got: self.cts.len() as u64,
                announced,
            });
        }
        let r = self.from;
        let ctx = r.model.context().clone();
        let spec = r.model.plan().spec();
        let cts = self
            .cts
            .into_iter()
            .zip(r.masks)
            .map(|(ct, mask)| refresh::unmask(&ctx, spec, ct, mask).map_err(Refusal::Evaluation))
            .collect::<Result<Vec<_>, Refusal>>()?;
        Ok(ReadyRequest {
            model: r.model,
            header: r.request,
            keys: r.keys,
            cts,
            segment: r.segment + 1,
            evaluate: r.evaluate,
            validate: r.validate,
        })
    }
}
