//! What a requester needs of a plan (no weights): parameters, the input layout, levels, the
//! output slots, the exact Galois steps to make keys for, and where a deep network's evaluation
//! stops for its ciphertext to be refreshed.

use crate::ckks::{
    CkksContext, GaloisKeys, KeyGenerator, Parameters, Plaintext, RelinearizationKey, SecretKey,
};

use super::error::InferError;

/// What a requester needs to encrypt an image and read the result (no weights).
#[derive(Clone, Debug, PartialEq)]
pub struct InferenceSpec {
    pub(super) params: Parameters,
    pub(super) input_len: usize,
    /// per slot of every input ciphertext, one after the other: the input index it holds
    /// (`u32::MAX`: zero)
    pub(super) input_map: Vec<u32>,
    pub(super) input_level: usize,
    pub(super) output_len: usize,
    pub(super) galois_steps: Vec<i64>,
    pub(super) relinearize: bool,
    pub(super) depth: usize,
    /// Primes each rescale divides by (see [`super::ParamPolicy::step_primes`]).
    pub(super) step_primes: usize,
    /// The level of the result.
    pub(super) output_level: usize,
    /// Where the evaluation stops to have its ciphertext refreshed (between segments).
    pub(super) refreshes: Vec<RefreshPoint>,
}

/// One refresh between two segments: the ciphertext is sent down at `level` and comes back at
/// the spec's input level, with its `scale` unchanged.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RefreshPoint {
    pub level: usize,
    pub scale: f64,
}

/// The evaluation keys a plan needs, made by the requester (mode b) or collectively (mode a).
#[derive(Debug)]
pub struct EvaluationKeys {
    pub relinearization: Option<RelinearizationKey>,
    pub galois: GaloisKeys,
}

impl EvaluationKeys {
    /// Bytes on the wire when sent as the inference protocol sends them: the relinearization
    /// key, then one item per Galois key.
    pub fn wire_bytes(&self, ctx: &CkksContext) -> usize {
        let relin = self.relinearization.as_ref().map_or(0, |r| {
            crate::ckks::wire::encode_relinearization_key(ctx, r).len()
        });
        let galois: usize = self
            .galois
            .elements()
            .filter_map(|g| self.galois.get(g))
            .map(|k| crate::ckks::wire::encode_galois_key(ctx, k).len())
            .sum();
        relin + galois
    }
}

impl InferenceSpec {
    pub fn parameters(&self) -> &Parameters {
        &self.params
    }
    /// Values per image (c·h·w).
    pub fn input_len(&self) -> usize {
        self.input_len
    }
    /// Ciphertexts one image is encrypted in.
    pub fn input_ciphertexts(&self) -> usize {
        self.input_map.len() / self.params.slots()
    }
    /// Logits per image.
    pub fn output_len(&self) -> usize {
        self.output_len
    }
    /// The level the image is encrypted at: depth + the base levels (one for a result the
    /// requester decrypts itself; more when the result keeps room for a threshold switch). No
    /// modulus is sent that is never used.
    pub fn input_level(&self) -> usize {
        self.input_level
    }
    /// The level of the result: what is left under the scale primes.
    pub fn output_level(&self) -> usize {
        self.output_level
    }
    /// The refreshes between segments, in order (empty when the network fits one segment).
    pub fn refreshes(&self) -> &[RefreshPoint] {
        &self.refreshes
    }
    /// Segments the evaluation is cut into (one more than the refreshes).
    pub fn segments(&self) -> usize {
        self.refreshes.len() + 1
    }
    /// Primes each rescale divides by: levels fall by this much per multiplication.
    pub fn step_primes(&self) -> usize {
        self.step_primes
    }
    /// The scale the image is encoded at.
    pub fn input_scale(&self) -> f64 {
        self.params.default_scale()
    }
    /// Multiplicative depth of the plan.
    pub fn depth(&self) -> usize {
        self.depth
    }
    /// Left-rotation steps (in 1..slots) the evaluation uses: generate Galois keys for exactly
    /// these.
    pub fn galois_steps(&self) -> &[i64] {
        &self.galois_steps
    }
    /// Whether the evaluation multiplies ciphertexts (needs a relinearization key).
    pub fn needs_relinearization(&self) -> bool {
        self.relinearize
    }

    /// A hash of everything a requester and the server must agree on (parameters, input layout,
    /// levels, Galois steps, output size): a requester that compiled the spec from the public
    /// architecture compares it with the server's.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(b"HEAL inference spec v3");
        h.update(&self.params.rlwe().fingerprint());
        h.update(&self.params.log_scale().to_le_bytes());
        for v in [
            self.input_len,
            self.input_level,
            self.output_len,
            self.depth,
            self.step_primes,
            usize::from(self.relinearize),
            self.input_map.len(),
        ] {
            h.update(&(v as u64).to_le_bytes());
        }
        for &j in &self.input_map {
            h.update(&j.to_le_bytes());
        }
        h.update(&(self.galois_steps.len() as u64).to_le_bytes());
        for &g in &self.galois_steps {
            h.update(&g.to_le_bytes());
        }
        // refreshes are hashed only where there are some: plans without keep their fingerprint
        if !self.refreshes.is_empty() {
            h.update(b"refreshes");
            h.update(&(self.output_level as u64).to_le_bytes());
            h.update(&(self.refreshes.len() as u64).to_le_bytes());
            for r in &self.refreshes {
                h.update(&(r.level as u64).to_le_bytes());
                h.update(&r.scale.to_bits().to_le_bytes());
            }
        }
        *h.finalize().as_bytes()
    }

    /// The slot values of one normalised CHW input in the plan's layout, every input ciphertext
    /// one after the other.
    pub fn input_slots(&self, input: &[f32]) -> Result<Vec<f64>, InferError> {
        if input.len() != self.input_len {
            return Err(InferError::Network(super::error::NetworkError::InputLen {
                expected: self.input_len,
                found: input.len(),
            }));
        }
        Ok(self
            .input_map
            .iter()
            .map(|&j| {
                if j == u32::MAX {
                    0.0
                } else {
                    input[j as usize] as f64
                }
            })
            .collect())
    }

    fn check_ctx(&self, ctx: &CkksContext) -> Result<(), InferError> {
        if ctx.params() != &self.params {
            return Err(InferError::ContextMismatch);
        }
        Ok(())
    }

    /// The image encoded for encryption, one plaintext per input ciphertext (coefficient form:
    /// encryptors fuse it with the noise).
    pub fn encode_input(
        &self,
        ctx: &CkksContext,
        input: &[f32],
    ) -> Result<Vec<Plaintext>, InferError> {
        self.check_ctx(ctx)?;
        let slots = self.input_slots(input)?;
        slots
            .chunks(self.params.slots())
            .map(|chunk| {
                let v: Vec<crate::ckks::Complex> = chunk
                    .iter()
                    .map(|&x| crate::ckks::Complex::new(x, 0.0))
                    .collect();
                Ok(ctx.encode_coeffs(&v, self.input_level, self.input_scale())?)
            })
            .collect()
    }

    /// The logits of a decrypted result.
    pub fn decode_output(&self, ctx: &CkksContext, pt: &Plaintext) -> Result<Vec<f64>, InferError> {
        self.check_ctx(ctx)?;
        let mut v = ctx.decode_reals(pt)?;
        v.truncate(self.output_len);
        Ok(v)
    }

    /// The relinearization key (if needed) and exactly the Galois keys of the plan, under `sk`.
    pub fn generate_keys(&self, kg: &mut KeyGenerator, sk: &SecretKey) -> EvaluationKeys {
        EvaluationKeys {
            relinearization: self.relinearize.then(|| kg.relinearization_key(sk)),
            galois: kg.galois_keys(sk, &self.galois_steps, false),
        }
    }
}
