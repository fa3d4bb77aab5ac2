//! What the coordinator computes while serving mode (a), sans-IO: the plan compiled from the
//! keyholders' architecture (no weights), the sums of their key shares, the collective public
//! key, what is relayed to every keyholder (each one's signed record with its public-key and
//! relinearization shares, the sealed Shamir shares addressed to it) and the sums its
//! evaluation keys are made of. The server holds no model and evaluates nothing: the keyholders
//! do. Every item is decoded and checked (parameters, sizes, levels, Galois elements, the
//! Galois shares' signed digest) before it is summed, and a hospital's round-1 stream is summed
//! only once it is complete, so a bad or cut stream changes nothing. Head training (the
//! coordinator computes the steps) makes the evaluation keys themselves.

use protocol::CollectiveMsg;
use std::collections::BTreeMap;
use std::sync::Arc;

use he_agg::ckks::{CkksContext, PublicKey, wire};
use he_agg::infer::threshold::{CollectiveKeys, KeyShares, served_crs, served_policy};
use he_agg::infer::{Architecture, EvaluationKeys, InferencePlan};
use he_agg::multiparty::sealed::SEAL_OVERHEAD;
use he_agg::multiparty::{RelinKeyShare2, wire as mpw};
use he_agg::train::HeadPlan;
use protocol::serve::collective::{KeyholderRound1, KeyholderShares, ServingKeys};
use protocol::serve::head::{HeadJob, HeadTraining};
use protocol::serve::released::{ModelInfo, check_input_preparation, check_model_description};
use protocol::{Body, FederationId};

pub use super::round1::Round1Stream;
use super::saved::{FORMAT, SavedServing};

pub use super::error::KeysError;

fn invalid(s: impl Into<String>) -> KeysError {
    KeysError::Invalid(s.into())
}

/// Sealed Shamir shares, by sender.
pub type Sealed = Vec<(u32, Vec<u8>)>;

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

/// What every keyholder is relayed of one keyholder's round 1: its signed record, its
/// public-key and relinearization shares (encoded, as it sent them).
struct Relayed {
    record: KeyholderShares,
    public_key: Vec<u8>,
    relinearization: Vec<u8>,
}

/// The serving state of the keys.
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
    /// each keyholder's round 1 as every keyholder is relayed it
    relayed: BTreeMap<u32, Relayed>,
    /// the lowest-numbered keyholder's input preparation (told to requesters)
    input_preparation: Option<(u32, String)>,
    round2: Option<RelinKeyShare2>,
    public_key: Option<(PublicKey, Vec<u8>)>,
    /// identifies the setup: the hash of the round-1 relinearization sum
    setup: Option<[u8; 32]>,
    /// mode (a): the sums keyholders make their evaluation keys of, encoded as they are sent
    keyholder_keys: Option<Vec<Vec<u8>>>,
    /// head training: the evaluation keys the trainer takes
    head_keys: Option<Arc<EvaluationKeys>>,
    /// the served state is saved once, when serving starts
    saved: bool,
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
            relayed: BTreeMap::new(),
            input_preparation: None,
            round2: None,
            public_key: None,
            setup: None,
            keyholder_keys: None,
            head_keys: None,
            saved: false,
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

    /// Serves a saved state again: every key sum is decoded and checked against the plan its
    /// architecture compiles to, and the relinearization sum against the setup it names.
    pub fn restore(
        federation: FederationId,
        max_images: u32,
        saved: &SavedServing,
    ) -> Result<Self, KeysError> {
        let mut me = Self::new(federation, saved.hospitals, max_images);
        let mut c = me.compile(&saved.architecture, &saved.class_names)?;
        if c.info.fingerprint != saved.fingerprint {
            return Err(invalid("the saved state is for another plan"));
        }
        c.info
            .set_input_preparation(saved.input_preparation.clone())
            .map_err(invalid)?;
        let pk =
            wire::decode_public_key(&c.ctx, &saved.public_key).map_err(|e| KeysError::Item {
                index: 0,
                what: "saved public key",
                reason: e.to_string(),
            })?;
        check_keyholder_keys(&c, &saved.keys)?;
        if setup_id(&saved.keys[0]) != saved.setup {
            return Err(invalid("the saved relinearization sum is not the setup's"));
        }
        me.compiled = Some(c);
        me.public_key = Some((pk, saved.public_key.clone()));
        me.keyholder_keys = Some(saved.keys.clone());
        me.setup = Some(saved.setup);
        me.saved = true;
        Ok(me)
    }

    /// What to save once serving starts (once).
    pub fn take_unsaved(&mut self, threshold: u32) -> Option<SavedServing> {
        // a restarted head training makes a new key: nothing of it is saved
        if self.saved || self.head.is_some() {
            return None;
        }
        let c = self.compiled.as_ref()?;
        let saved = SavedServing {
            format: FORMAT,
            hospitals: self.hospitals,
            threshold,
            architecture: c.info.architecture.clone(),
            input_preparation: c.info.input_preparation.clone(),
            class_names: c.info.class_names.clone(),
            fingerprint: c.info.fingerprint,
            setup: self.setup?,
            public_key: self.public_key.as_ref()?.1.clone(),
            keys: self.keyholder_keys.clone()?,
        };
        self.saved = true;
        Some(saved)
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
        check_model_description(&header.architecture, &header.class_names)
            .map_err(KeysError::Invalid)?;
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
        check_input_preparation(&header.input_preparation).map_err(invalid)?;
        if let Some(other) = self
            .relayed
            .values()
            .find(|r| r.record.model != header.model)
        {
            return Err(invalid(format!(
                "a final model other than hospital {}'s: every keyholder evaluates requests \
                 itself, so all must hold the federation's final model (is this hospital's \
                 network.json from the last round?)",
                other.record.hospital
            )));
        }
        Ok(Round1Stream::new(hospital, header, want))
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
        let info = ModelInfo::new(
            "federated model (mode a: evaluated by its keyholders)",
            architecture.to_string(),
            class_names.to_vec(),
            plan.spec().fingerprint(),
            self.max_images,
        )
        .map_err(invalid)?;
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
        let info = ModelInfo::new(
            "head training on encrypted features",
            told.to_architecture(),
            class_names.to_vec(),
            plan.fingerprint(),
            0,
        )
        .map_err(invalid)?;
        Ok(Compiled {
            plan: KeyPlan::Head { plan, job },
            ctx,
            keys,
            info,
        })
    }

    /// Sums a complete round-1 stream and keeps its sealed shares for their recipients and its
    /// record for every keyholder.
    pub fn store_round1(&mut self, stream: Round1Stream) -> Result<(), KeysError> {
        let c = self.compiled.as_mut().ok_or(KeysError::NotReady)?;
        let hospital = stream.hospital;
        let sealed = stream.header.sealed.clone();
        let (architecture, prep) = (
            stream.header.architecture.clone(),
            stream.header.input_preparation.clone(),
        );
        let done = stream.finish()?;
        c.keys
            .check_galois(&done.shares)
            .map_err(|e| invalid(e.to_string()))?;
        match self.round1.as_mut() {
            None => self.round1 = Some(done.shares),
            Some(acc) => c
                .keys
                .aggregate1(acc, &done.shares)
                .map_err(|e| invalid(e.to_string()))?,
        }
        // requesters are told the lowest-numbered keyholder's architecture (its normalization)
        // and input preparation
        if self
            .input_preparation
            .as_ref()
            .is_none_or(|(h, _)| hospital < *h)
        {
            self.input_preparation = Some((hospital, prep.clone()));
            if c.served().is_some() {
                c.info.architecture = architecture;
                c.info.set_input_preparation(prep).map_err(invalid)?;
            }
        }
        self.relayed.insert(
            hospital,
            Relayed {
                record: done.record,
                public_key: done.public_key,
                relinearization: done.relinearization,
            },
        );
        for (to, bytes) in sealed {
            self.sealed.entry(to).or_default().insert(hospital, bytes);
        }
        Ok(())
    }

    /// What a keyholder gets after round 1: the header (the sealed shares addressed to `to`,
    /// every keyholder's signed record) and the items (each keyholder's public-key share and
    /// relinearization round-1 share, in the records' order): it makes the sums itself.
    pub fn round1_result(&self, to: u32) -> Result<(Body, Vec<Vec<u8>>), KeysError> {
        if self.round1.is_none() {
            return Err(KeysError::NotReady);
        }
        let sealed = self
            .sealed
            .get(&to)
            .map(|m| m.iter().map(|(f, b)| (*f, b.clone())).collect())
            .unwrap_or_default();
        let mut items = Vec::with_capacity(2 * self.relayed.len());
        let mut key_shares = Vec::with_capacity(self.relayed.len());
        for r in self.relayed.values() {
            key_shares.push(r.record.clone());
            items.push(r.public_key.clone());
            items.push(r.relinearization.clone());
        }
        Ok((
            Body::Collective(CollectiveMsg::CollectiveRound1Result { sealed, key_shares }),
            items,
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

    /// Makes the collective public key and, serving a model, the sums keyholders make their
    /// evaluation keys of (head training: the evaluation keys) from both rounds' sums.
    pub fn make_keys(&mut self) -> Result<(), KeysError> {
        let c = self.compiled.as_ref().ok_or(KeysError::NotReady)?;
        let (Some(r1), Some(r2)) = (self.round1.take(), self.round2.take()) else {
            return Err(KeysError::NotReady);
        };
        let pk = c.keys.public_key(&r1);
        let relin1 = mpw::encode_relin_share1(&c.ctx, &r1.relinearization);
        self.setup = Some(setup_id(&relin1));
        let bytes = wire::encode_public_key(&c.ctx, &pk);
        self.public_key = Some((pk, bytes));
        let mut items = vec![relin1, mpw::encode_relin_share2(&c.ctx, &r2)];
        items.extend(
            r1.galois
                .iter()
                .map(|g| mpw::encode_galois_share(&c.ctx, g)),
        );
        // head training: the keyholders replay every step too, with the same keys
        self.keyholder_keys = Some(items);
        if self.head.is_some() {
            let keys = c
                .keys
                .finalize(r1, r2)
                .map_err(|e| invalid(e.to_string()))?;
            self.head_keys = Some(Arc::new(keys));
        }
        Ok(())
    }

    /// The message that gives a keyholder the sums of its evaluation keys.
    pub fn keyholder_keys(&self) -> Option<(Body, Vec<Vec<u8>>)> {
        let items = self.keyholder_keys.clone()?;
        Some((
            Body::Collective(CollectiveMsg::ServingKeys(ServingKeys {
                setup: self.setup?,
                galois: items.len().saturating_sub(2) as u32,
            })),
            items,
        ))
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

    /// The served plan and its context (mode a), to check requests against.
    pub fn served(&self) -> Option<(Arc<CkksContext>, InferencePlan)> {
        let c = self.compiled.as_ref()?;
        Some((c.ctx.clone(), c.served()?.clone()))
    }
}

/// Saved key sums: the two relinearization sums, then one Galois sum per planned rotation.
fn check_keyholder_keys(c: &Compiled, items: &[Vec<u8>]) -> Result<(), KeysError> {
    let item = |index: usize, what: &'static str, e: wire::WireError| KeysError::Item {
        index: index as u64,
        what,
        reason: e.to_string(),
    };
    let want = c.keys.galois_elements().len();
    if items.len() != 2 + want {
        return Err(invalid(format!(
            "{} saved key sums; the plan's keys are made of {}",
            items.len(),
            2 + want
        )));
    }
    mpw::decode_relin_share1(&c.ctx, &items[0]).map_err(|e| item(0, "relinearization sum", e))?;
    mpw::decode_relin_share2(&c.ctx, &items[1]).map_err(|e| item(1, "relinearization sum", e))?;
    let galois = items[2..]
        .iter()
        .enumerate()
        .map(|(i, b)| mpw::decode_galois_share(&c.ctx, b).map_err(|e| item(i + 2, "Galois sum", e)))
        .collect::<Result<Vec<_>, _>>()?;
    c.keys
        .check_elements(&galois)
        .map_err(|e| invalid(e.to_string()))
}
