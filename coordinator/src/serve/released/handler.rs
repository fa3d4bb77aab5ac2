//! Sans-IO handling of one inference request: [`ServedModel::begin`] checks the header against
//! the plan (fingerprint, image and ciphertext counts) before anything is allocated, with the
//! requester's keys already checked and kept ([`super::keys`]); [`PendingRequest::push`]
//! decodes and checks each ciphertext as it arrives (the wire decoders check parameters, exact
//! sizes, levels and residues; here the level and scale); [`PendingRequest::finish`] refuses a
//! short stream; [`ReadyRequest::evaluate`] runs the network and encodes the results. A refusal
//! says what was wrong, for the log and for the requester.

use std::sync::Arc;
use std::time::{Duration, Instant};

use he_agg::ckks::{Ciphertext, wire};
use he_agg::infer::InferError;
use he_agg::rlwe::expand_seeded;
use protocol::serve::released::InferRequest;

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

/// A complete, valid request.
pub struct ReadyRequest {
    model: Arc<ServedModel>,
    header: InferRequest,
    keys: Arc<KeySet>,
    cts: Vec<Ciphertext>,
    validate: Duration,
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
            validate: self.validate,
        })
    }
}

impl ReadyRequest {
    pub fn images(&self) -> usize {
        self.header.images as usize
    }

    /// Evaluates every image (CPU-bound: run it off the async runtime).
    pub fn evaluate(self) -> Result<Response, Refusal> {
        let t = Instant::now();
        let ctx = self.model.context();
        let eval = ctx
            .evaluator(self.keys.rlk.as_ref(), Some(&self.keys.galois))
            .map_err(|e| Refusal::Evaluation(InferError::Ckks(e)))?;
        let per = self.header.ciphertexts_per_image as usize;
        let ciphertexts = self
            .cts
            .chunks(per)
            .map(|image| {
                let out = self
                    .model
                    .model()
                    .evaluate(&eval, image)
                    .map_err(Refusal::Evaluation)?;
                Ok(wire::encode_ciphertext(ctx, &out))
            })
            .collect::<Result<Vec<_>, Refusal>>()?;
        Ok(Response {
            request_id: self.header.request_id,
            ciphertexts,
            evaluate: t.elapsed(),
            validate: self.validate,
        })
    }
}
