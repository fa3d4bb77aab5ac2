//! Sans-IO handling of one inference request: [`ServedModel::begin`] checks the header against
//! the plan (fingerprint, key and image counts) before anything is allocated;
//! [`PendingRequest::push`] decodes and checks each item as it arrives (the wire decoders check
//! parameters, exact sizes, levels and residues; here the item's kind, Galois element, level and
//! scale); [`PendingRequest::finish`] refuses a short stream; [`ReadyRequest::evaluate`] runs
//! the network and encodes the results. A refusal says what was wrong, for the log and for the
//! requester.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use he_agg::ckks::{Ciphertext, GaloisKeys, RelinearizationKey, wire};
use he_agg::infer::InferError;
use he_agg::rlwe::expand_seeded;
use protocol::inference::{InferRequest, MAX_GALOIS_KEYS};

use super::model::ServedModel;

/// Why a request is refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Refusal {
    #[error(
        "the request was encrypted for another plan or parameter set (fingerprint {got}, this \
         server's plan is {want}): fetch the model information again"
    )]
    Fingerprint { got: String, want: String },
    #[error("{got} images in one request; this server takes 1 to {max}")]
    ImageCount { got: u32, max: u32 },
    #[error("{got} Galois keys announced; the plan needs exactly {want}")]
    GaloisCount { got: u32, want: usize },
    #[error("relinearization key {}; the plan {}", if *.sent { "sent" } else { "missing" }, if *.needed { "needs one" } else { "needs none" })]
    Relinearization { sent: bool, needed: bool },
    #[error("item {index} ({what}) is invalid: {source}")]
    Item {
        index: u64,
        what: &'static str,
        #[source]
        source: wire::WireError,
    },
    #[error("item {index}: a Galois key for element {element}, which the plan does not use")]
    UnplannedGaloisKey { index: u64, element: u64 },
    #[error("item {index}: a second Galois key for element {element}")]
    DuplicateGaloisKey { index: u64, element: u64 },
    #[error("image {image}: encrypted at level {found}, the plan starts at level {expected}")]
    InputLevel {
        image: usize,
        expected: usize,
        found: usize,
    },
    #[error("image {image}: encoded at scale 2^{found:.3}, the plan expects 2^{expected:.3}")]
    InputScale {
        image: usize,
        expected: f64,
        found: f64,
    },
    #[error("more items than the {announced} the header announced")]
    TooManyItems { announced: u64 },
    #[error("the stream ended after {got} of the {announced} items the header announced")]
    MissingItems { got: u64, announced: u64 },
    #[error("evaluation failed: {0}")]
    Evaluation(InferError),
    #[error("unexpected message {0:?} (this server answers inference requests only)")]
    Unexpected(&'static str),
}

/// A request whose header was accepted, collecting its items.
pub struct PendingRequest {
    model: Arc<ServedModel>,
    header: InferRequest,
    planned: BTreeSet<u64>,
    rlk: Option<RelinearizationKey>,
    galois: GaloisKeys,
    images: Vec<Ciphertext>,
    received: u64,
    validate: Duration,
}

/// A complete, valid request.
pub struct ReadyRequest {
    model: Arc<ServedModel>,
    header: InferRequest,
    rlk: Option<RelinearizationKey>,
    galois: GaloisKeys,
    images: Vec<Ciphertext>,
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

fn hex(b: &[u8]) -> String {
    b.iter()
        .take(8)
        .map(|x| format!("{x:02x}"))
        .collect::<String>()
        + "…"
}

impl ServedModel {
    /// Checks a request header against the plan; nothing is allocated for a refused one.
    pub fn begin(self: &Arc<Self>, header: &InferRequest) -> Result<PendingRequest, Refusal> {
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
        if header.relinearization != spec.needs_relinearization() {
            return Err(Refusal::Relinearization {
                sent: header.relinearization,
                needed: spec.needs_relinearization(),
            });
        }
        let steps = spec.galois_steps();
        if header.galois_keys > MAX_GALOIS_KEYS || header.galois_keys as usize != steps.len() {
            return Err(Refusal::GaloisCount {
                got: header.galois_keys,
                want: steps.len(),
            });
        }
        let rl = self.context().rlwe();
        let planned = steps
            .iter()
            .map(|&s| rl.galois_element_for_rotation(s))
            .collect();
        Ok(PendingRequest {
            model: self.clone(),
            header: header.clone(),
            planned,
            rlk: None,
            galois: GaloisKeys::new(),
            images: Vec::with_capacity(header.images as usize),
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

    /// Decodes and checks the next item.
    pub fn push(&mut self, item: &[u8]) -> Result<(), Refusal> {
        let announced = self.header.items();
        if self.received >= announced {
            return Err(Refusal::TooManyItems { announced });
        }
        let t = Instant::now();
        let index = self.received;
        let ctx = self.model.context().clone();
        let relin = u64::from(self.header.relinearization);
        let galois_end = relin + u64::from(self.header.galois_keys);
        let item_err = |what, source| Refusal::Item {
            index,
            what,
            source,
        };
        if index < relin {
            let rlk = wire::decode_relinearization_key(&ctx, item)
                .map_err(|e| item_err("relinearization key", e))?;
            self.rlk = Some(rlk);
        } else if index < galois_end {
            let key = wire::decode_galois_key(&ctx, item).map_err(|e| item_err("Galois key", e))?;
            let element = key.galois_element;
            if !self.planned.contains(&element) {
                return Err(Refusal::UnplannedGaloisKey { index, element });
            }
            if self.galois.get(element).is_some() {
                return Err(Refusal::DuplicateGaloisKey { index, element });
            }
            self.galois.insert(key);
        } else {
            let image = self.images.len();
            let seeded = wire::decode_seeded_ciphertext(&ctx, item)
                .map_err(|e| item_err("encrypted image", e))?;
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
            self.images.push(expand_seeded(ctx.rlwe(), &seeded));
        }
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
            rlk: self.rlk,
            galois: self.galois,
            images: self.images,
            validate: self.validate,
        })
    }
}

impl ReadyRequest {
    pub fn images(&self) -> usize {
        self.images.len()
    }

    /// Evaluates every image (CPU-bound: run it off the async runtime).
    pub fn evaluate(self) -> Result<Response, Refusal> {
        let t = Instant::now();
        let ctx = self.model.context();
        let eval = ctx
            .evaluator(self.rlk.as_ref(), Some(&self.galois))
            .map_err(|e| Refusal::Evaluation(InferError::Ckks(e)))?;
        let ciphertexts = self
            .images
            .iter()
            .map(|ct| {
                let out = self
                    .model
                    .model()
                    .evaluate(&eval, ct)
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
