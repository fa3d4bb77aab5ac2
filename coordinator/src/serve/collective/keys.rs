//! What the coordinator computes while serving mode (a), sans-IO: the plan compiled from the
//! keyholders' architecture (no weights), the sums of their key shares, the evaluation keys, the
//! collective public key, the sealed Shamir shares to relay and the encrypted model. Every item
//! is decoded and checked (parameters, sizes, levels, Galois elements) before it is summed, and a
//! hospital's round-1 stream is summed only once it is complete, so a bad or cut stream changes
//! nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use he_agg::ckks::{Ciphertext, CkksContext, Evaluator, GaloisKeys, PublicKey, wire};
use he_agg::infer::threshold::{CollectiveKeys, KeyShares, served_crs, served_policy};
use he_agg::infer::{Architecture, EvaluationKeys, InferencePlan, Model};
use he_agg::multiparty::sealed::SEAL_OVERHEAD;
use he_agg::multiparty::{RelinKeyShare2, wire as mpw};
use he_agg::train::HeadPlan;
use protocol::serve::collective::KeyholderRound1;
use protocol::serve::head::{HeadJob, HeadTraining};
use protocol::serve::released::{MAX_ARCHITECTURE_BYTES, MAX_CLASSES, ModelInfo};
use protocol::{Body, FederationId};

use super::saved::SavedServing;

/// Why a keyholder's message is refused (it changes nothing).
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("{0}")]
    Invalid(String),
    #[error("item {index} ({what}) is invalid: {reason}")]
    Item {
        index: u64,
        what: &'static str,
        reason: String,
    },
    #[error("the keys are not made yet")]
    NotReady,
}

fn invalid(s: impl Into<String>) -> KeysError {
    KeysError::Invalid(s.into())
}

/// Sealed Shamir shares, by sender.
pub type Sealed = Vec<(u32, Vec<u8>)>;

/// What evaluating a request needs (cheap to clone: shared).
pub struct Evaluation {
    pub ctx: Arc<CkksContext>,
    pub plan: InferencePlan,
    pub evaluator: Arc<Evaluator>,
    pub model: Arc<Model>,
}

/// What the keys are made for: a network served in mode (a), or a head trained on encrypted
/// features (issue 20).
pub enum KeyPlan {
    Served {
        plan: InferencePlan,
        /// the architecture without its input normalization (each hospital's final model
        /// normalises with its own data's statistics)
        layers: Architecture,
    },
    Head {
        plan: HeadPlan,
        /// the head's shape as the keyholders stated it
        job: HeadJob,
    },
}

/// The plan being served and its keys' generation.
pub struct Compiled {
    pub plan: KeyPlan,
    pub ctx: Arc<CkksContext>,
    pub keys: CollectiveKeys,
    pub info: ModelInfo,
}

impl Compiled {
    /// The served network's plan (none when training a head).
    pub fn served(&self) -> Option<&InferencePlan> {
        match &self.plan {
            KeyPlan::Served { plan, .. } => Some(plan),
            KeyPlan::Head { .. } => None,
        }
    }

    /// The head's plan (none when serving a network).
    pub fn head(&self) -> Option<&HeadPlan> {
        match &self.plan {
            KeyPlan::Head { plan, .. } => Some(plan),
            KeyPlan::Served { .. } => None,
        }
    }
}

/// An architecture without its input normalization.
fn layers_of(json: &str) -> Result<Architecture, KeysError> {
    let mut arch: Architecture =
        serde_json::from_str(json).map_err(|e| invalid(format!("architecture: {e}")))?;
    arch.normalization = None;
    Ok(arch)
}

/// A keyholder's round-1 stream being read.
pub struct Round1Stream {
    hospital: u32,
    header: KeyholderRound1,
    received: u64,
    public_key: Option<he_agg::multiparty::PublicKeyShare>,
    relin: Option<he_agg::multiparty::RelinKeyShare1>,
    galois: Vec<he_agg::multiparty::GaloisKeyShare>,
}

/// The serving state of the keys and the model.
pub struct ServedKeys {
    federation: FederationId,
    hospitals: u32,
    max_images: u32,
    /// head training: how the coordinator trains (told to contributors); none: mode (a)
    head: Option<HeadTraining>,
    compiled: Option<Compiled>,
    round1: Option<KeyShares>,
    /// sealed Shamir shares by recipient, then sender
    sealed: BTreeMap<u32, BTreeMap<u32, Vec<u8>>>,
    /// each keyholder's public-key share (encoded) and its signature over it, relayed to all
    key_shares: BTreeMap<u32, (Vec<u8>, Vec<u8>)>,
    round2: Option<RelinKeyShare2>,
    public_key: Option<(PublicKey, Vec<u8>)>,
    evaluator: Option<Arc<Evaluator>>,
    model: Option<Arc<Model>>,
    /// identifies the setup: the hash of the round-1 relinearization sum every keyholder got
    setup: Option<[u8; 32]>,
    /// head training: the evaluation keys the trainer takes
    head_keys: Option<Arc<EvaluationKeys>>,
    /// the encoded keys and model, kept until they are saved
    unsaved_keys: Option<(Vec<u8>, Vec<Vec<u8>>)>,
    unsaved_model: Option<Vec<Vec<u8>>>,
}

/// The identifier of a setup from the round-1 relinearization sum (as encoded on the wire).
pub fn setup_id(relin_sum: &[u8]) -> [u8; 32] {
    *blake3::hash(relin_sum).as_bytes()
}

impl ServedKeys {
    pub fn new(federation: FederationId, hospitals: u32, max_images: u32) -> Self {
        Self {
            federation,
            hospitals,
            max_images,
            head: None,
            compiled: None,
            round1: None,
            sealed: BTreeMap::new(),
            key_shares: BTreeMap::new(),
            round2: None,
            public_key: None,
            evaluator: None,
            model: None,
            setup: None,
            head_keys: None,
            unsaved_keys: None,
            unsaved_model: None,
        }
    }

    /// Keys for encrypted head training, trained as `training` says.
    pub fn for_head(federation: FederationId, hospitals: u32, training: HeadTraining) -> Self {
        Self {
            head: Some(training),
            ..Self::new(federation, hospitals, 0)
        }
    }

    /// The setup being served (or made), once the round-1 sums are complete.
    pub fn setup(&self) -> Option<[u8; 32]> {
        self.setup
    }

    /// Serves a saved state again: every key and ciphertext is decoded and checked against the
    /// plan its architecture compiles to.
    pub fn restore(
        federation: FederationId,
        max_images: u32,
        saved: &SavedServing,
    ) -> Result<Self, KeysError> {
        let mut me = Self::new(federation, saved.hospitals, max_images);
        let c = me.compile(&saved.architecture, &saved.class_names)?;
        if c.info.fingerprint != saved.fingerprint {
            return Err(invalid("the saved state is for another plan"));
        }
        let item = |what: &'static str, e: wire::WireError| KeysError::Item {
            index: 0,
            what,
            reason: e.to_string(),
        };
        let pk = wire::decode_public_key(&c.ctx, &saved.public_key)
            .map_err(|e| item("saved public key", e))?;
        let rlk = wire::decode_relinearization_key(&c.ctx, &saved.relinearization)
            .map_err(|e| item("saved relinearization key", e))?;
        let mut galois = GaloisKeys::new();
        for g in &saved.galois {
            galois.insert(
                wire::decode_galois_key(&c.ctx, g).map_err(|e| item("saved Galois key", e))?,
            );
        }
        let mut have: Vec<u64> = galois.elements().collect();
        have.sort_unstable();
        if have != c.keys.galois_elements() {
            return Err(invalid(
                "the saved Galois keys are not the plan's rotations",
            ));
        }
        let eval = c
            .ctx
            .evaluator(Some(&rlk), Some(&galois))
            .map_err(|e| invalid(e.to_string()))?;
        me.compiled = Some(c);
        me.public_key = Some((pk, saved.public_key.clone()));
        me.evaluator = Some(Arc::new(eval));
        me.store_model(&saved.model, &saved.architecture, &saved.input_preparation)?;
        me.unsaved_model = None;
        me.setup = Some(saved.setup);
        Ok(me)
    }

    /// What to save once serving starts (taken: the encoded keys and model are then dropped).
    pub fn take_unsaved(&mut self, threshold: u32) -> Option<SavedServing> {
        let c = self.compiled.as_ref()?;
        let (relinearization, galois) = self.unsaved_keys.take()?;
        let model = self.unsaved_model.take()?;
        Some(SavedServing {
            hospitals: self.hospitals,
            threshold,
            architecture: c.info.architecture.clone(),
            input_preparation: c.info.input_preparation.clone(),
            class_names: c.info.class_names.clone(),
            fingerprint: c.info.fingerprint,
            setup: self.setup?,
            public_key: self.public_key.as_ref()?.1.clone(),
            relinearization,
            galois,
            model,
        })
    }

    pub fn compiled(&self) -> Option<&Compiled> {
        self.compiled.as_ref()
    }

    /// Checks a round-1 header (compiling the plan from the first one); nothing is kept yet.
    pub fn begin_round1(
        &mut self,
        hospital: u32,
        header: KeyholderRound1,
    ) -> Result<Round1Stream, KeysError> {
        if header.architecture.len() > MAX_ARCHITECTURE_BYTES
            || header.class_names.len() > MAX_CLASSES
            || header.class_names.iter().any(|c| c.len() > 256)
        {
            return Err(invalid("the model description exceeds the limits"));
        }
        if self.compiled.is_none() {
            self.compiled = Some(self.compile(&header.architecture, &header.class_names)?);
        }
        let c = self.compiled.as_ref().expect("compiled above");
        let same = match &c.plan {
            KeyPlan::Served { layers, .. } => layers_of(&header.architecture)? == *layers,
            KeyPlan::Head { job, .. } => HeadJob::parse(&header.architecture).as_ref() == Some(job),
        };
        if !same || header.class_names != c.info.class_names {
            return Err(invalid(
                "another architecture or other classes than the first keyholder's: is this the \
                 final model?",
            ));
        }
        if header.plan != c.info.fingerprint {
            return Err(invalid(
                "round-1 shares for another plan than the architecture compiles to (another \
                 parameter policy or version?)",
            ));
        }
        let want = c.keys.galois_elements().len();
        if header.galois as usize != want {
            return Err(invalid(format!(
                "{} Galois shares announced; the plan needs {want}",
                header.galois
            )));
        }
        let others: Vec<u32> = (1..=self.hospitals).filter(|&h| h != hospital).collect();
        let mut to: Vec<u32> = header.sealed.iter().map(|(t, _)| *t).collect();
        to.sort_unstable();
        if to != others {
            return Err(invalid(format!(
                "sealed shares addressed to {to:?}; expected one for each of {others:?}"
            )));
        }
        let sealed_len = mpw::shamir_share_len(&c.ctx) + SEAL_OVERHEAD;
        if header.sealed.iter().any(|(_, b)| b.len() != sealed_len) {
            return Err(invalid(format!("a sealed share is not {sealed_len} bytes")));
        }
        Ok(Round1Stream {
            hospital,
            galois: Vec::with_capacity(want),
            header,
            received: 0,
            public_key: None,
            relin: None,
        })
    }

    /// The served plan of `architecture` (no weights), or the head's plan when training one,
    /// with its keys' generation.
    fn compile(&self, architecture: &str, class_names: &[String]) -> Result<Compiled, KeysError> {
        if let Some(training) = &self.head {
            return self.compile_head(architecture, class_names, training);
        }
        let arch: Architecture = serde_json::from_str(architecture)
            .map_err(|e| invalid(format!("architecture: {e}")))?;
        let skeleton = arch
            .skeleton()
            .map_err(|e| invalid(format!("architecture: {e}")))?;
        let plan = InferencePlan::new(&skeleton, &served_policy())
            .map_err(|e| invalid(format!("cannot compile the architecture: {e}")))?;
        if class_names.len() != plan.spec().output_len() {
            return Err(invalid(format!(
                "{} class names for {} outputs",
                class_names.len(),
                plan.spec().output_len()
            )));
        }
        let ctx = CkksContext::new(plan.spec().parameters().clone())
            .map_err(|e| invalid(format!("parameters: {e}")))?;
        let keys = CollectiveKeys::new(plan.spec(), &ctx, &served_crs(&self.federation.0))
            .map_err(|e| invalid(e.to_string()))?;
        let info = ModelInfo {
            name: "federated model (encrypted, mode a)".into(),
            architecture: architecture.to_string(),
            class_names: class_names.to_vec(),
            fingerprint: plan.spec().fingerprint(),
            max_images: self.max_images,
            input_preparation: String::new(),
        };
        Ok(Compiled {
            plan: KeyPlan::Served {
                plan,
                layers: layers_of(architecture)?,
            },
            ctx,
            keys,
            info,
        })
    }

    /// A head's plan from a keyholder's job (its shape); contributors are told the training.
    fn compile_head(
        &self,
        architecture: &str,
        class_names: &[String],
        training: &HeadTraining,
    ) -> Result<Compiled, KeysError> {
        let job = HeadJob::parse(architecture).ok_or_else(|| {
            invalid("the keyholder's shares are not for head training: start it with --head")
        })?;
        if job.classes as usize != class_names.len() {
            return Err(invalid(format!(
                "{} class names for a head of {} outputs",
                class_names.len(),
                job.classes
            )));
        }
        let plan = HeadPlan::new(job.features as usize, job.classes as usize)
            .map_err(|e| invalid(format!("cannot train this head: {e}")))?;
        let ctx = plan.context().clone();
        let keys = CollectiveKeys::for_rotations(
            &ctx,
            &plan.galois_steps(),
            &HeadPlan::crs(&self.federation.0),
        )
        .map_err(|e| invalid(e.to_string()))?;
        let told = HeadJob {
            training: Some(training.clone()),
            ..job.clone()
        };
        let info = ModelInfo {
            name: "head training on encrypted features".into(),
            architecture: told.to_architecture(),
            class_names: class_names.to_vec(),
            fingerprint: plan.fingerprint(),
            max_images: 0,
            input_preparation: String::new(),
        };
        Ok(Compiled {
            plan: KeyPlan::Head { plan, job },
            ctx,
            keys,
            info,
        })
    }

    /// Sums a complete round-1 stream and keeps its sealed shares for their recipients.
    pub fn store_round1(&mut self, stream: Round1Stream) -> Result<(), KeysError> {
        let c = self.compiled.as_ref().ok_or(KeysError::NotReady)?;
        let hospital = stream.hospital;
        let sealed = stream.header.sealed.clone();
        let signature = stream.header.signature.clone();
        let shares = stream.finish()?;
        c.keys
            .check_galois(&shares)
            .map_err(|e| invalid(e.to_string()))?;
        self.key_shares.insert(
            hospital,
            (
                mpw::encode_public_key_share(&c.ctx, &shares.public_key),
                signature,
            ),
        );
        match self.round1.as_mut() {
            None => self.round1 = Some(shares),
            Some(acc) => c
                .keys
                .aggregate1(acc, &shares)
                .map_err(|e| invalid(e.to_string()))?,
        }
        for (to, bytes) in sealed {
            self.sealed.entry(to).or_default().insert(hospital, bytes);
        }
        Ok(())
    }

    /// What a keyholder gets after round 1: the header (the sealed shares addressed to `to`,
    /// every keyholder's signature over its public-key share) and the items (the round-1
    /// relinearization aggregate, then those public-key shares in the header's order).
    pub fn round1_result(&self, to: u32) -> Result<(Body, Vec<Vec<u8>>), KeysError> {
        let (agg, sealed) = self.round1_sum(to)?;
        let mut items = vec![agg];
        let mut key_shares = Vec::with_capacity(self.key_shares.len());
        for (h, (share, signature)) in &self.key_shares {
            key_shares.push((*h, signature.clone()));
            items.push(share.clone());
        }
        Ok((Body::CollectiveRound1Result { sealed, key_shares }, items))
    }

    /// The round-1 relinearization aggregate (encoded) and the sealed shares addressed to `to`.
    fn round1_sum(&self, to: u32) -> Result<(Vec<u8>, Sealed), KeysError> {
        let (c, agg) = self
            .compiled
            .as_ref()
            .zip(self.round1.as_ref())
            .ok_or(KeysError::NotReady)?;
        let sealed = self
            .sealed
            .get(&to)
            .map(|m| m.iter().map(|(f, b)| (*f, b.clone())).collect())
            .unwrap_or_default();
        Ok((
            mpw::encode_relin_share1(&c.ctx, &agg.relinearization),
            sealed,
        ))
    }

    /// Decodes and sums a round-2 share.
    pub fn store_round2(&mut self, item: &[u8]) -> Result<(), KeysError> {
        let c = self.compiled.as_ref().ok_or(KeysError::NotReady)?;
        let share = mpw::decode_relin_share2(&c.ctx, item).map_err(|e| KeysError::Item {
            index: 0,
            what: "relinearization round-2 share",
            reason: e.to_string(),
        })?;
        match self.round2.as_mut() {
            None => self.round2 = Some(share),
            Some(acc) => c
                .keys
                .aggregate2(acc, &share)
                .map_err(|e| invalid(e.to_string()))?,
        }
        Ok(())
    }

    /// Makes the evaluation keys and the collective public key from both rounds' sums.
    pub fn make_keys(&mut self) -> Result<(), KeysError> {
        let c = self.compiled.as_ref().ok_or(KeysError::NotReady)?;
        let (Some(r1), Some(r2)) = (self.round1.take(), self.round2.take()) else {
            return Err(KeysError::NotReady);
        };
        let pk = c.keys.public_key(&r1);
        self.setup = Some(setup_id(&mpw::encode_relin_share1(
            &c.ctx,
            &r1.relinearization,
        )));
        let keys = c
            .keys
            .finalize(r1, r2)
            .map_err(|e| invalid(e.to_string()))?;
        let galois_bytes = keys
            .galois
            .elements()
            .filter_map(|g| keys.galois.get(g))
            .map(|k| wire::encode_galois_key(&c.ctx, k))
            .collect();
        let relin_bytes = keys
            .relinearization
            .as_ref()
            .map(|k| wire::encode_relinearization_key(&c.ctx, k))
            .ok_or_else(|| invalid("no relinearization key"))?;
        self.unsaved_keys = Some((relin_bytes, galois_bytes));
        let eval = c
            .ctx
            .evaluator(keys.relinearization.as_ref(), Some(&keys.galois))
            .map_err(|e| invalid(e.to_string()))?;
        let bytes = wire::encode_public_key(&c.ctx, &pk);
        self.public_key = Some((pk, bytes));
        self.evaluator = Some(Arc::new(eval));
        if self.head.is_some() {
            self.head_keys = Some(Arc::new(keys));
        }
        Ok(())
    }

    /// Head training: the collective public key and the evaluation keys, once made.
    pub fn head_keys(&self) -> Option<(&PublicKey, &Arc<EvaluationKeys>)> {
        Some((&self.public_key.as_ref()?.0, self.head_keys.as_ref()?))
    }

    /// Head training: how the coordinator trains.
    pub fn head_training(&self) -> Option<&HeadTraining> {
        self.head.as_ref()
    }

    /// The collective public key, encoded (what the model and the images are encrypted under).
    pub fn public_key_bytes(&self) -> Option<&[u8]> {
        self.public_key.as_ref().map(|(_, b)| b.as_slice())
    }

    /// Ciphertexts the encrypted model has (the layout depends on the shapes only).
    pub fn model_len(&self) -> Result<usize, KeysError> {
        let c = self.compiled.as_ref().ok_or(KeysError::NotReady)?;
        let plan = c
            .served()
            .ok_or_else(|| invalid("no model is served here"))?;
        Model::encrypted_len(plan, &c.ctx).map_err(|e| invalid(e.to_string()))
    }

    /// Decodes and checks the uploaded model (every ciphertext against the plan); requesters
    /// are then told its `architecture` (its input normalization is the uploader's).
    pub fn store_model(
        &mut self,
        items: &[Vec<u8>],
        architecture: &str,
        input_preparation: &str,
    ) -> Result<(), KeysError> {
        let c = self.compiled.as_mut().ok_or(KeysError::NotReady)?;
        let KeyPlan::Served { plan, layers } = &c.plan else {
            return Err(invalid("no model is served here"));
        };
        if architecture.len() > MAX_ARCHITECTURE_BYTES || layers_of(architecture)? != *layers {
            return Err(invalid(
                "the encrypted model's architecture is not the plan's",
            ));
        }
        if input_preparation.len() > MAX_ARCHITECTURE_BYTES
            || (!input_preparation.is_empty()
                && serde_json::from_str::<serde_json::Value>(input_preparation).is_err())
        {
            return Err(invalid("the model's input preparation is not JSON"));
        }
        let cts = items
            .iter()
            .enumerate()
            .map(|(i, b)| {
                wire::decode_ciphertext(&c.ctx, b).map_err(|e| KeysError::Item {
                    index: i as u64,
                    what: "model ciphertext",
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<Ciphertext>, _>>()?;
        let model = Model::from_ciphertexts(plan, &c.ctx, cts)
            .map_err(|e| invalid(format!("the encrypted model does not fit the plan: {e}")))?;
        c.info.architecture = architecture.to_string();
        c.info.input_preparation = input_preparation.to_string();
        self.model = Some(Arc::new(model));
        self.unsaved_model = Some(items.to_vec());
        Ok(())
    }

    /// What a request needs to be evaluated.
    pub fn serving(&self) -> Option<Evaluation> {
        let c = self.compiled.as_ref()?;
        Some(Evaluation {
            ctx: c.ctx.clone(),
            plan: c.served()?.clone(),
            evaluator: self.evaluator.clone()?,
            model: self.model.clone()?,
        })
    }
}

impl Round1Stream {
    /// Items still expected.
    pub fn remaining(&self) -> u64 {
        self.header.items() - self.received
    }

    pub fn plan(&self) -> [u8; 32] {
        self.header.plan
    }

    /// Decodes and checks the next item.
    pub fn push(&mut self, ctx: &CkksContext, item: &[u8]) -> Result<(), KeysError> {
        if self.remaining() == 0 {
            return Err(invalid(format!(
                "more items than the {} announced",
                self.header.items()
            )));
        }
        let index = self.received;
        let err = |what, e: he_agg::ckks::wire::WireError| KeysError::Item {
            index,
            what,
            reason: e.to_string(),
        };
        match index {
            0 => {
                self.public_key = Some(
                    mpw::decode_public_key_share(ctx, item)
                        .map_err(|e| err("public-key share", e))?,
                )
            }
            1 => {
                self.relin = Some(
                    mpw::decode_relin_share1(ctx, item)
                        .map_err(|e| err("relinearization round-1 share", e))?,
                )
            }
            _ => self
                .galois
                .push(mpw::decode_galois_share(ctx, item).map_err(|e| err("Galois share", e))?),
        }
        self.received += 1;
        Ok(())
    }

    fn finish(self) -> Result<KeyShares, KeysError> {
        let remaining = self.remaining();
        match (self.public_key, self.relin) {
            (Some(public_key), Some(relinearization)) if remaining == 0 => Ok(KeyShares {
                public_key,
                relinearization,
                galois: self.galois,
            }),
            _ => Err(invalid(format!(
                "the stream ended after {} of the {} items announced",
                self.received,
                self.header.items()
            ))),
        }
    }
}
