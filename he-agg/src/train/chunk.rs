//! A contributing site's examples as the trainer takes them: up to [`HeadLayout::samples`]
//! feature vectors and labels, encrypted under the collective key, checked on both sides.

use crate::ckks::{Ciphertext, CkksContext, PkEncryptor};

use super::HeadTrainError;
use super::layout::HeadLayout;
use super::params::HeadScales;

/// Features must lie in [−1, 1] (a site L2-normalises its feature vectors, which needs no shared
/// statistics): it bounds every logit and gradient the chain must hold.
pub const MAX_ABS_FEATURE: f64 = 1.0;

/// One chunk: a ciphertext per feature group, the labels, and how many examples it holds.
#[derive(Debug, Clone)]
pub struct EncryptedChunk {
    pub features: Vec<Ciphertext>,
    pub labels: Ciphertext,
    pub count: usize,
}

/// Encrypts `xs` (each of `layout.features()` values in [−1, 1]) and `ys` (each below
/// `layout.classes()`) as one chunk; refuses anything else with the example's index.
pub fn encrypt_chunk(
    ctx: &CkksContext,
    enc: &mut PkEncryptor,
    layout: &HeadLayout,
    xs: &[&[f64]],
    ys: &[u32],
) -> Result<EncryptedChunk, HeadTrainError> {
    if xs.is_empty() || xs.len() > layout.samples() || xs.len() != ys.len() {
        return Err(HeadTrainError::Shape(format!(
            "a chunk holds 1..={} examples with one label each (got {} feature vectors, {} labels)",
            layout.samples(),
            xs.len(),
            ys.len()
        )));
    }
    for (index, (x, &y)) in xs.iter().zip(ys).enumerate() {
        if x.len() != layout.features() {
            return Err(HeadTrainError::Example {
                index,
                reason: format!(
                    "{} features where the head takes {}",
                    x.len(),
                    layout.features()
                ),
            });
        }
        if let Some(j) = x
            .iter()
            .position(|v| v.is_nan() || v.abs() > MAX_ABS_FEATURE)
        {
            return Err(HeadTrainError::Example {
                index,
                reason: format!("feature {j} is {}, outside [−1, 1] (normalise first)", x[j]),
            });
        }
        if y as usize >= layout.classes() {
            return Err(HeadTrainError::Example {
                index,
                reason: format!("label {y} is not below {} classes", layout.classes()),
            });
        }
    }
    let scales = HeadScales::new(ctx)?;
    let features = (0..layout.groups())
        .map(|g| {
            let pt = ctx.encode_reals(&layout.pack_features(xs, g), scales.top, scales.data)?;
            Ok(enc.encrypt(&pt))
        })
        .collect::<Result<Vec<_>, HeadTrainError>>()?;
    let pt = ctx.encode_reals(&layout.pack_labels(ys), scales.label_level, scales.label)?;
    Ok(EncryptedChunk {
        features,
        labels: enc.encrypt(&pt),
        count: xs.len(),
    })
}

impl EncryptedChunk {
    /// What the trainer checks of a chunk it received: shape, levels, scales.
    pub fn check(&self, layout: &HeadLayout, scales: &HeadScales) -> Result<(), HeadTrainError> {
        if self.features.len() != layout.groups() {
            return Err(HeadTrainError::Shape(format!(
                "a chunk of {} feature ciphertexts where the head has {} groups",
                self.features.len(),
                layout.groups()
            )));
        }
        if self.count == 0 || self.count > layout.samples() {
            return Err(HeadTrainError::Shape(format!(
                "a chunk of {} examples (1..={})",
                self.count,
                layout.samples()
            )));
        }
        for ct in &self.features {
            check_ct(ct, "a feature ciphertext", scales.top, scales.data)?;
        }
        check_ct(&self.labels, "the labels", scales.label_level, scales.label)
    }
}

pub(super) fn check_ct(
    ct: &Ciphertext,
    what: &'static str,
    level: usize,
    scale: f64,
) -> Result<(), HeadTrainError> {
    if ct.level() != level {
        return Err(HeadTrainError::Level {
            what,
            got: ct.level(),
            want: level,
        });
    }
    if ct.degree() != 1 {
        return Err(HeadTrainError::Shape(format!(
            "{what} of degree {}",
            ct.degree()
        )));
    }
    if (ct.scale - scale).abs() > 1e-9 * scale {
        return Err(HeadTrainError::Scale {
            what,
            got: ct.scale.log2(),
            want: scale.log2(),
        });
    }
    Ok(())
}
