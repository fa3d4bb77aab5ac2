//! What a requester needs of the batched packing (one image per slot): parameters, levels,
//! where a deep network is cut into segments (each refreshed by the requester, value by value,
//! as the latency plan's single ciphertext is), and how images are encoded into and logits
//! decoded from one ciphertext per input value.

use rayon::prelude::*;

use crate::ckks::{Ciphertext, CkksContext, Complex, Parameters, Plaintext};

use super::error::InferError;
use super::kernels;
use super::lower::{Op, lower};
use super::network::Network;
use super::params::ParamPolicy;
use super::segments::choose_levels;

/// What a requester needs for batched inference (no weights).
#[derive(Clone, Debug, PartialEq)]
pub struct BatchedSpec {
    params: Parameters,
    input_len: usize,
    output_len: usize,
    depth: usize,
    relinearize: bool,
    input_level: usize,
    /// the lowered network's op indices where a segment after the first starts
    cuts: Vec<usize>,
    /// the level a segment's outputs are dropped to before their refresh
    refresh_level: usize,
}

impl BatchedSpec {
    /// Parameters chosen from the network's depth (any ring size holds a batch); a network
    /// deeper than the ring holds is cut into segments, as the latency plan is.
    pub fn new(net: &Network, policy: &ParamPolicy) -> Result<Self, InferError> {
        if policy.step_primes != 1 {
            // a batch is decrypted by its requester (mode b): one prime per rescale suffices
            return Err(InferError::Policy(
                "the batched packing rescales by one prime (step_primes = 1)",
            ));
        }
        let low = lower(net)?;
        // a batch's maps run limb by limb over thousands of ciphertexts: by default every limb
        // on the fast (IFMA, double-precision) kernels
        let policy = ParamPolicy {
            refresh_prime_bits: policy.refresh_prime_bits.min(policy.batched_prime_bits),
            ..*policy
        };
        let levels = choose_levels(&low, 1, &policy)?;
        Ok(Self {
            params: levels.params,
            input_len: low.input_len,
            output_len: low.output_len,
            depth: low.depth(),
            relinearize: low.ops.iter().any(|o| matches!(o, Op::Activation { .. })),
            input_level: levels.input_level,
            cuts: levels.cuts,
            refresh_level: levels.refresh_level,
        })
    }

    /// For given parameters, uncut (refused when they lack levels).
    pub fn with_parameters(net: &Network, params: Parameters) -> Result<Self, InferError> {
        let low = lower(net)?;
        if low.depth() + 1 > params.max_level() {
            return Err(InferError::TooFewLevels {
                levels: params.max_level() - 1,
                depth: low.depth(),
            });
        }
        let input_level = low.depth() + 1;
        Ok(Self {
            params,
            input_len: low.input_len,
            output_len: low.output_len,
            depth: low.depth(),
            relinearize: low.ops.iter().any(|o| matches!(o, Op::Activation { .. })),
            input_level,
            cuts: Vec::new(),
            refresh_level: 1,
        })
    }

    /// Segments the network is cut into (1: evaluated whole).
    pub fn segments(&self) -> usize {
        self.cuts.len() + 1
    }

    /// The level each segment but the last leaves its values at, for their refresh.
    pub fn refresh_level(&self) -> usize {
        self.refresh_level
    }

    pub(crate) fn cuts(&self) -> &[usize] {
        &self.cuts
    }

    pub fn parameters(&self) -> &Parameters {
        &self.params
    }
    /// Images per batch (one per slot).
    pub fn batch_size(&self) -> usize {
        self.params.slots()
    }
    /// Ciphertexts per batch request (one per input value).
    pub fn input_len(&self) -> usize {
        self.input_len
    }
    /// Ciphertexts per batch response (one per logit).
    pub fn output_len(&self) -> usize {
        self.output_len
    }
    pub fn input_level(&self) -> usize {
        self.input_level
    }
    pub fn input_scale(&self) -> f64 {
        self.params.default_scale()
    }
    pub fn depth(&self) -> usize {
        self.depth
    }
    /// Batched evaluation needs no Galois key; a relinearization key when there are
    /// activations.
    pub fn needs_relinearization(&self) -> bool {
        self.relinearize
    }

    /// Refuses a batch's ciphertexts of the wrong number, level, degree or scale.
    pub(crate) fn check_inputs(
        &self,
        ctx: &CkksContext,
        inputs: &[Ciphertext],
    ) -> Result<(), InferError> {
        if inputs.len() != self.input_len {
            return Err(InferError::BatchInputs {
                expected: self.input_len,
                found: inputs.len(),
            });
        }
        for ct in inputs {
            kernels::check_input(ctx, ct, self.input_level(), self.input_scale())?;
        }
        Ok(())
    }

    fn check_ctx(&self, ctx: &CkksContext) -> Result<(), InferError> {
        if ctx.params() != &self.params {
            return Err(InferError::ContextMismatch);
        }
        Ok(())
    }

    /// One plaintext per input value, slot i holding image i's value (coefficient form, ready
    /// for encryption).
    pub fn encode_inputs(
        &self,
        ctx: &CkksContext,
        images: &[&[f32]],
    ) -> Result<Vec<Plaintext>, InferError> {
        self.check_ctx(ctx)?;
        if images.is_empty() {
            return Err(InferError::EmptyBatch);
        }
        if images.len() > self.batch_size() {
            return Err(InferError::BatchTooLarge {
                images: images.len(),
                slots: self.batch_size(),
            });
        }
        if let Some(bad) = images.iter().find(|im| im.len() != self.input_len) {
            return Err(InferError::Network(super::error::NetworkError::InputLen {
                expected: self.input_len,
                found: bad.len(),
            }));
        }
        (0..self.input_len)
            .into_par_iter()
            .map(|j| {
                let v: Vec<Complex> = images
                    .iter()
                    .map(|im| Complex::new(im[j] as f64, 0.0))
                    .collect();
                Ok(ctx.encode_coeffs(&v, self.input_level(), self.input_scale())?)
            })
            .collect()
    }

    /// Logits per image from the decrypted outputs (one plaintext per logit).
    pub fn decode_outputs(
        &self,
        ctx: &CkksContext,
        outputs: &[Plaintext],
        images: usize,
    ) -> Result<Vec<Vec<f64>>, InferError> {
        self.check_ctx(ctx)?;
        if outputs.len() != self.output_len {
            return Err(InferError::BatchInputs {
                expected: self.output_len,
                found: outputs.len(),
            });
        }
        if images > self.batch_size() {
            return Err(InferError::BatchTooLarge {
                images,
                slots: self.batch_size(),
            });
        }
        let cols = outputs
            .par_iter()
            .map(|pt| ctx.decode_reals(pt))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((0..images)
            .map(|i| cols.iter().map(|c| c[i]).collect())
            .collect())
    }
}
