//! How a plan's values become a model's operands: plaintexts (mode b), ciphertexts under the
//! image's key (mode a), a count of what an encrypted model would hold, or an exported encrypted
//! model's ciphertexts taken back in order with each one's shape checked.

use std::sync::Arc;

use crate::ckks::{Ciphertext, CkksContext, Complex, Plaintext};

use super::error::InferError;
use super::kernels;
use super::operand::{Operand, Scalar};

pub(crate) type HostOperand = Operand<Plaintext, Ciphertext>;
pub(crate) type HostScalar = Scalar<Ciphertext>;

/// How a model's values become operands.
pub(crate) trait Encoder {
    /// Whether every bias and constant is materialised, zero or not: encrypted models have one
    /// structure per architecture, whatever the weights' values.
    fn complete(&self) -> bool {
        true
    }
    fn operand(
        &mut self,
        ctx: &CkksContext,
        v: &[f64],
        level: usize,
        scale: f64,
    ) -> Result<HostOperand, InferError>;
    fn scalar(
        &mut self,
        ctx: &CkksContext,
        v: f64,
        level: usize,
        scale: f64,
    ) -> Result<HostScalar, InferError>;
    /// Many operands at one level and scale (a map's diagonals), in order.
    fn operands(
        &mut self,
        ctx: &CkksContext,
        vs: &[&[f64]],
        level: usize,
        scale: f64,
    ) -> Result<Vec<HostOperand>, InferError> {
        vs.iter()
            .map(|v| self.operand(ctx, v, level, scale))
            .collect()
    }
}

pub(crate) struct PlainEncoder;

impl Encoder for PlainEncoder {
    fn complete(&self) -> bool {
        false
    }
    fn operand(
        &mut self,
        ctx: &CkksContext,
        v: &[f64],
        level: usize,
        scale: f64,
    ) -> Result<HostOperand, InferError> {
        Ok(Operand::Plain(ctx.encode_reals(v, level, scale)?))
    }
    fn scalar(
        &mut self,
        _: &CkksContext,
        v: f64,
        _: usize,
        _: f64,
    ) -> Result<HostScalar, InferError> {
        Ok(Scalar::Plain(v))
    }
    /// On every thread: a ResNet's 8,517 diagonals take seconds to encode, and a keyholder
    /// short of memory encodes a segment's for each request.
    fn operands(
        &mut self,
        ctx: &CkksContext,
        vs: &[&[f64]],
        level: usize,
        scale: f64,
    ) -> Result<Vec<HostOperand>, InferError> {
        use rayon::prelude::*;
        vs.par_iter()
            .map(|v| Ok(Operand::Plain(ctx.encode_reals(v, level, scale)?)))
            .collect()
    }
}

pub(crate) struct CipherEncoder<'a>(pub(crate) &'a mut dyn FnMut(&Plaintext) -> Ciphertext);

impl Encoder for CipherEncoder<'_> {
    fn operand(
        &mut self,
        ctx: &CkksContext,
        v: &[f64],
        level: usize,
        scale: f64,
    ) -> Result<HostOperand, InferError> {
        let c: Vec<Complex> = v.iter().map(|&x| Complex::new(x, 0.0)).collect();
        Ok(Operand::Cipher((self.0)(
            &ctx.encode_coeffs(&c, level, scale)?,
        )))
    }
    fn scalar(
        &mut self,
        ctx: &CkksContext,
        v: f64,
        level: usize,
        scale: f64,
    ) -> Result<HostScalar, InferError> {
        let c = vec![Complex::new(v, 0.0); ctx.slots()];
        Ok(Scalar::Cipher((self.0)(
            &ctx.encode_coeffs(&c, level, scale)?,
        )))
    }
}

/// Counts what an encrypted model would encrypt (plaintexts stand in for the ciphertexts).
pub(crate) struct CountEncoder(pub(crate) usize);

impl Encoder for CountEncoder {
    fn operand(
        &mut self,
        ctx: &CkksContext,
        v: &[f64],
        level: usize,
        scale: f64,
    ) -> Result<HostOperand, InferError> {
        self.0 += 1;
        PlainEncoder.operand(ctx, v, level, scale)
    }
    fn scalar(
        &mut self,
        ctx: &CkksContext,
        v: f64,
        level: usize,
        scale: f64,
    ) -> Result<HostScalar, InferError> {
        self.0 += 1;
        PlainEncoder.scalar(ctx, v, level, scale)
    }
}

/// Takes the ciphertexts of an exported encrypted model in order, checking each one's shape.
pub(crate) struct ImportEncoder(
    pub(crate) std::vec::IntoIter<Ciphertext>,
    pub(crate) Arc<CkksContext>,
);

impl ImportEncoder {
    fn next(&mut self, level: usize, scale: f64) -> Result<Ciphertext, InferError> {
        let ct = self
            .0
            .next()
            .ok_or(InferError::ModelMismatch("too few ciphertexts"))?;
        if kernels::check_input(&self.1, &ct, level, scale).is_err() {
            return Err(InferError::ModelMismatch(
                "a ciphertext has the wrong level, degree, size or scale",
            ));
        }
        Ok(ct)
    }
}

impl Encoder for ImportEncoder {
    fn operand(
        &mut self,
        _: &CkksContext,
        _: &[f64],
        level: usize,
        scale: f64,
    ) -> Result<HostOperand, InferError> {
        Ok(Operand::Cipher(self.next(level, scale)?))
    }
    fn scalar(
        &mut self,
        _: &CkksContext,
        _: f64,
        level: usize,
        scale: f64,
    ) -> Result<HostScalar, InferError> {
        Ok(Scalar::Cipher(self.next(level, scale)?))
    }
}
