//! The requester: compiles the server's plan from its architecture (no weights), encrypts
//! images in the plan's layout and decrypts the results. The secret key never leaves this
//! struct.
//!
//! - Mode (b): keys under its own secret — a relinearization key if the plan multiplies
//!   ciphertexts and Galois keys for exactly the plan's rotations — travel with the images,
//!   which are encrypted under that secret.
//! - Mode (a) ([`Requester::for_collective`]): the images are encrypted under the consortium's
//!   collective public key; only this requester's public key travels, and the keyholders
//!   switch the results to it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use he_agg::ckks::{CkksContext, GaloisKeys, PublicKey, SecretKey, wire};
use he_agg::infer::threshold::served_policy;
use he_agg::infer::{
    Architecture, EvaluationKeys, InferencePlan, InferenceSpec, Network, ParamPolicy,
};
use protocol::serve::collective::CollectiveRequest;
use protocol::serve::released::{InferKeys, InferRequest, KeysId, keys_id};

use super::error::InferenceError;

/// Keys and plan of one requester.
pub struct Requester {
    spec: InferenceSpec,
    ctx: Arc<CkksContext>,
    sk: SecretKey,
    keys: EvaluationKeys,
    /// Mode (a): the collective key images are encrypted under, and this requester's public key
    /// (what the results are switched to).
    collective: Option<(PublicKey, PublicKey)>,
    /// What the skeleton (or the real network) normalises with and its shapes.
    network: Network,
    /// Time spent compiling the plan and generating the keys.
    pub setup: Duration,
    /// The hash of the encoded keys, computed once: every request names it, and encoding the
    /// keys (over 100 MB) per request cost more than a GPU's whole evaluation.
    keys_id: std::sync::OnceLock<KeysId>,
}

impl std::fmt::Debug for Requester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requester")
            .field("fingerprint", &super::error::short_hex(&self.fingerprint()))
            .finish_non_exhaustive()
    }
}

impl Requester {
    /// From the server's architecture: the plan of a skeleton network (placeholder weights),
    /// which a server with the real weights compiles identically (compare fingerprints).
    pub fn for_architecture(arch: &Architecture) -> Result<Self, InferenceError> {
        let t = Instant::now();
        let skeleton = arch.skeleton()?;
        let plan = InferencePlan::new(&skeleton, &ParamPolicy::default())?;
        Self::from_plan(&plan, skeleton, t)
    }

    /// Mode (a): the plan every party of a served deployment compiles, images encrypted under
    /// the collective public key `collective` (encoded, as the server sent it), and a key pair
    /// of this requester's own for the results.
    pub fn for_collective(arch: &Architecture, collective: &[u8]) -> Result<Self, InferenceError> {
        let t = Instant::now();
        let skeleton = arch.skeleton()?;
        let plan = InferencePlan::new(&skeleton, &served_policy())?;
        let spec = plan.spec().clone();
        let ctx = CkksContext::new(spec.parameters().clone())?;
        let pk =
            wire::decode_public_key(&ctx, collective).map_err(|source| InferenceError::Wire {
                what: "the collective public key",
                source,
            })?;
        let mut kg = ctx
            .key_generator()
            .map_err(|e| InferenceError::Rng(e.to_string()))?;
        let sk = kg.secret_key();
        let own = kg.public_key(&sk);
        Ok(Self {
            spec,
            ctx,
            sk,
            keys: EvaluationKeys {
                relinearization: None,
                galois: GaloisKeys::new(),
            },
            collective: Some((pk, own)),
            network: skeleton,
            setup: t.elapsed(),
            keys_id: Default::default(),
        })
    }

    /// Whether this requester encrypts under a collective key (mode a).
    pub fn is_collective(&self) -> bool {
        self.collective.is_some()
    }

    fn from_plan(
        plan: &InferencePlan,
        network: Network,
        started: Instant,
    ) -> Result<Self, InferenceError> {
        let spec = plan.spec().clone();
        let ctx = CkksContext::new(spec.parameters().clone())?;
        let mut kg = ctx
            .key_generator()
            .map_err(|e| InferenceError::Rng(e.to_string()))?;
        let sk = kg.secret_key();
        let keys = spec.generate_keys(&mut kg, &sk);
        Ok(Self {
            spec,
            ctx,
            sk,
            keys,
            collective: None,
            network,
            setup: started.elapsed(),
            keys_id: Default::default(),
        })
    }

    pub fn spec(&self) -> &InferenceSpec {
        &self.spec
    }
    pub fn context(&self) -> &Arc<CkksContext> {
        &self.ctx
    }
    pub fn fingerprint(&self) -> [u8; 32] {
        self.spec.fingerprint()
    }
    /// The evaluation keys (for an in-process evaluation).
    pub fn evaluation_keys(&self) -> &EvaluationKeys {
        &self.keys
    }

    /// Checks the server's fingerprint against the plan compiled here.
    pub fn check_fingerprint(&self, server: &[u8; 32]) -> Result<(), InferenceError> {
        let local = self.fingerprint();
        if &local != server {
            return Err(InferenceError::FingerprintMismatch {
                local: super::error::short_hex(&local),
                server: super::error::short_hex(server),
            });
        }
        Ok(())
    }

    /// Normalised CHW input of an image given as HWC bytes in the network's input shape.
    pub fn normalize(&self, hwc: &[u8]) -> Result<Vec<f32>, InferenceError> {
        Ok(self.network.normalize_hwc(hwc)?)
    }

    /// The shape `[c, h, w]` of the images the network reads.
    pub fn input(&self) -> [usize; 3] {
        self.network.image_input()
    }

    /// The key items of a request, in protocol order. Mode (b): the relinearization key (if the
    /// plan needs one), then one Galois key per planned rotation. Mode (a): this requester's
    /// public key.
    pub fn key_items(&self) -> Vec<Vec<u8>> {
        if let Some((_, own)) = &self.collective {
            return vec![wire::encode_public_key(&self.ctx, own)];
        }
        let mut items = Vec::with_capacity(1 + self.spec.galois_steps().len());
        if let Some(rlk) = &self.keys.relinearization {
            items.push(wire::encode_relinearization_key(&self.ctx, rlk));
        }
        let rl = self.ctx.rlwe();
        for &step in self.spec.galois_steps() {
            let g = rl.galois_element_for_rotation(step);
            if let Some(key) = self.keys.galois.get(g) {
                items.push(wire::encode_galois_key(&self.ctx, key));
            }
        }
        items
    }

    /// The id of this requester's evaluation keys (mode b).
    pub fn keys_id(&self) -> KeysId {
        *self.keys_id.get_or_init(|| {
            let items = self.key_items();
            keys_id(items.iter().map(Vec::as_slice))
        })
    }

    /// The header of the stream of this requester's evaluation keys (mode b).
    pub fn keys_header(&self) -> InferKeys {
        InferKeys {
            keys: self.keys_id(),
            fingerprint: self.fingerprint(),
            relinearization: self.keys.relinearization.is_some(),
            galois_keys: self.spec.galois_steps().len() as u32,
        }
    }

    /// The header of a request for `images` images (mode b; the keys were sent before).
    pub fn header(&self, request_id: u64, images: u32) -> InferRequest {
        InferRequest {
            request_id,
            fingerprint: self.fingerprint(),
            keys: self.keys_id(),
            images,
            ciphertexts_per_image: self.spec.input_ciphertexts() as u32,
        }
    }

    /// The header of a mode (a) request for `images` (each its ciphertexts), signed by this
    /// hospital (`me` of `federation`) over its public key and every ciphertext: the keyholders
    /// evaluate only what it signed and switch the results only to that key.
    pub fn collective_header(
        &self,
        request_id: u64,
        images: &[Vec<Vec<u8>>],
        (federation, me, signer): (protocol::FederationId, u32, &protocol::transcript::Signer),
    ) -> CollectiveRequest {
        let mut header = CollectiveRequest {
            request_id,
            fingerprint: self.fingerprint(),
            images: images.len() as u32,
            ciphertexts_per_image: self.spec.input_ciphertexts() as u32,
            signature: Vec::new(),
        };
        let keys = self.key_items();
        let items = keys
            .iter()
            .chain(images.iter().flatten())
            .map(Vec::as_slice);
        header.signature = signer.sign(&header.statement(federation, me, items));
        header
    }

    /// One normalised image encoded in the plan's layout and encrypted, one item per input
    /// ciphertext ([`InferenceSpec::input_ciphertexts`]): mode (b) under the secret key (seeded
    /// ciphertexts: half the bytes of full ones), mode (a) under the collective public key.
    pub fn encrypt(&self, input: &[f32]) -> Result<Vec<Vec<u8>>, InferenceError> {
        let pts = self.spec.encode_input(&self.ctx, input)?;
        if let Some((pk, _)) = &self.collective {
            let mut enc = self.ctx.pk_encryptor(pk)?;
            return Ok(pts
                .iter()
                .map(|pt| wire::encode_ciphertext(&self.ctx, &enc.encrypt(pt)))
                .collect());
        }
        let mut enc = self.ctx.sk_encryptor(&self.sk)?;
        Ok(pts
            .iter()
            .map(|pt| wire::encode_seeded_ciphertext(&self.ctx, &enc.encrypt_seeded(pt)))
            .collect())
    }

    /// Mode (b), a deep model: refresh `index` of the plan ([`InferenceSpec::refreshes`]) —
    /// the server's masked ciphertext decrypted and encrypted again at the plan's input level
    /// (seeded). What is decrypted is masked: the values stay hidden from this requester too.
    pub fn refresh(&self, index: usize, masked: &[u8]) -> Result<Vec<u8>, InferenceError> {
        if self.collective.is_some() {
            return Err(InferenceError::BadAnswer(
                "a refresh request in mode (a), where the keyholders refresh".into(),
            ));
        }
        let ct =
            wire::decode_ciphertext(&self.ctx, masked).map_err(|source| InferenceError::Wire {
                what: "a ciphertext to refresh",
                source,
            })?;
        let fresh = he_agg::infer::refresh::reencrypt(&self.ctx, &self.spec, index, &self.sk, &ct)?;
        Ok(wire::encode_seeded_ciphertext(&self.ctx, &fresh))
    }

    /// The logits in an encrypted result (validated: parameters, sizes, residues).
    pub fn decrypt(&self, bytes: &[u8]) -> Result<Vec<f64>, InferenceError> {
        let ct =
            wire::decode_ciphertext(&self.ctx, bytes).map_err(|source| InferenceError::Wire {
                what: "the encrypted result",
                source,
            })?;
        let pt = self.ctx.decryptor(&self.sk)?.decrypt(&ct);
        let logits = self.spec.decode_output(&self.ctx, &pt)?;
        if logits.iter().any(|v| !v.is_finite()) {
            return Err(InferenceError::BadAnswer(
                "the decrypted logits are not finite".into(),
            ));
        }
        Ok(logits)
    }
}
