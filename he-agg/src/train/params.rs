//! The parameters and the scales of encrypted head training.
//!
//! A step takes three products, each followed by two rescales (a scale of ≈ 2^84 keeps the
//! refresh's flooding error near 2^-23 per weight): W ⊙ X (the logits), R ⊙ X (the gradient) and
//! the learning-rate mask. The weights then sit six primes lower, where the collective refresh
//! takes them back to the top; that level must hold 128-bit masks over the weights.

use crate::ckks::{CkksContext, CkksError, Parameters};

use super::HeadTrainError;

/// Primes a step consumes.
pub const STEP_PRIMES: usize = 6;

/// N = 2^15, Q = 60 + 10 × 42 bits, P = 4 × 61 bits, three digits (the widest 186 bits):
/// log QP = 724 ≤ 881, 128-bit secure by the HE standard. The weights are refreshed from 5 primes
/// (228 bits hold 128-bit masks over weights up to 16 at a scale of 2^84 for up to 2^10
/// refreshing parties).
pub fn head_training_parameters() -> Result<Parameters, CkksError> {
    let mut q = vec![60u32];
    q.extend([42u32; 10]);
    Parameters::new(15, &q, &[61, 61, 61, 61], 3, 84.0)
}

/// Levels (limb counts) and exact scales of a step under a parameter set.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadScales {
    /// The weights' and the data's level.
    pub top: usize,
    /// The level the weights are refreshed from.
    pub refresh_level: usize,
    /// The weights' scale (kept exactly through every step).
    pub weight: f64,
    /// The features' scale: the product of the two top primes, so the logits come out at the
    /// weights' scale.
    pub data: f64,
    /// The labels' level (the logits').
    pub label_level: usize,
    /// The labels' scale (the logits').
    pub label: f64,
    /// The summed gradient's scale before the learning-rate mask.
    pub gradient: f64,
    /// The mask's scale, chosen so that the update comes out at the weights' scale.
    pub mask: f64,
}

impl HeadScales {
    pub fn new(ctx: &CkksContext) -> Result<Self, HeadTrainError> {
        let q = ctx.params().rlwe().q();
        let top = ctx.max_level();
        if top <= STEP_PRIMES {
            return Err(HeadTrainError::Config(format!(
                "head training takes {STEP_PRIMES} primes per step and a refresh level below them; \
                 these parameters have {top}"
            )));
        }
        let p = |count: usize| q[count - 1] as f64;
        let data = p(top) * p(top - 1);
        let weight = data;
        let label = weight * data / (p(top) * p(top - 1));
        let gradient = label * data / (p(top - 2) * p(top - 3));
        let mask = weight * p(top - 4) * p(top - 5) / gradient;
        Ok(Self {
            top,
            refresh_level: top - STEP_PRIMES,
            weight,
            data,
            label_level: top - 2,
            label,
            gradient,
            mask,
        })
    }
}
