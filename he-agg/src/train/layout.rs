//! Where every feature, label and weight sits in the slots of a head-training ciphertext.
//!
//! A chunk holds `samples` examples. Slot s = jb·(C'·S) + c·S + i, for the feature offset jb
//! within a group of F features, the class c (C' = classes rounded up to a power of two) and the
//! sample i < S. Feature group J holds features J·F + jb:
//!
//! - data group J: `x[i][J·F + jb]` in every class block (replicated over c);
//! - weight group J: `w[c][J·F + jb]` in every sample slot (replicated over i);
//! - labels: the one-hot `y[i][c]` in every feature block (replicated over jb);
//! - the bias: `b[c]` at jb = 0, zero at every other jb.
//!
//! So Σ_J W_J ⊙ X_J summed over jb (rotations by multiples of C'·S, which cycle jb) is the logit
//! `z[i][c]` in every jb, and R ⊙ X_J summed over i (rotations by 1…S/2) is the gradient at i = 0,
//! with no repacking in between.

use super::HeadTrainError;

/// Features per group (the jb dimension) when a head has at least that many.
pub const GROUP_FEATURES: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadLayout {
    features: usize,
    classes: usize,
    /// F: features per group.
    group: usize,
    /// C': classes rounded up to a power of two.
    class_pad: usize,
    /// S: samples per chunk.
    samples: usize,
    slots: usize,
}

impl HeadLayout {
    /// The layout of a head of `features` inputs and `classes` outputs in `slots` slots.
    pub fn new(slots: usize, features: usize, classes: usize) -> Result<Self, HeadTrainError> {
        if !slots.is_power_of_two() {
            return Err(HeadTrainError::Shape(format!(
                "{slots} slots is not a power of two"
            )));
        }
        if features == 0 || classes < 2 {
            return Err(HeadTrainError::Shape(format!(
                "a head needs at least 1 feature and 2 classes (got {features} and {classes})"
            )));
        }
        let group = GROUP_FEATURES.min(features.next_power_of_two());
        let class_pad = classes.next_power_of_two();
        if group * class_pad > slots / 2 {
            return Err(HeadTrainError::Shape(format!(
                "{classes} classes do not fit {slots} slots with {group} features per group"
            )));
        }
        Ok(Self {
            features,
            classes,
            group,
            class_pad,
            samples: slots / (group * class_pad),
            slots,
        })
    }

    pub fn features(&self) -> usize {
        self.features
    }
    pub fn classes(&self) -> usize {
        self.classes
    }
    /// Examples per chunk.
    pub fn samples(&self) -> usize {
        self.samples
    }
    pub fn slots(&self) -> usize {
        self.slots
    }
    /// Feature groups (data and weight ciphertexts per chunk and per head).
    pub fn groups(&self) -> usize {
        self.features.div_ceil(self.group)
    }
    /// Distance between feature blocks (jb).
    fn jb_stride(&self) -> usize {
        self.class_pad * self.samples
    }

    fn slot(&self, jb: usize, c: usize, i: usize) -> usize {
        jb * self.jb_stride() + c * self.samples + i
    }

    /// Rotations that sum the feature blocks (every slot gets the sum over jb).
    pub fn feature_sum_steps(&self) -> Vec<i64> {
        powers(self.group)
            .map(|k| (k * self.jb_stride()) as i64)
            .collect()
    }
    /// Rotations that sum the samples into i = 0.
    pub fn sample_sum_steps(&self) -> Vec<i64> {
        powers(self.samples).map(|k| k as i64).collect()
    }
    /// Rotations that copy i = 0 to every sample.
    pub fn sample_spread_steps(&self) -> Vec<i64> {
        powers(self.samples).map(|k| -(k as i64)).collect()
    }
    /// Every rotation a trainer needs a Galois key for.
    pub fn rotations(&self) -> Vec<i64> {
        let mut r = self.feature_sum_steps();
        r.extend(self.sample_sum_steps());
        r.extend(self.sample_spread_steps());
        r
    }

    /// The data group `g` of a chunk of examples (each of `features` values).
    pub fn pack_features(&self, xs: &[&[f64]], g: usize) -> Vec<f64> {
        let mut out = vec![0.0; self.slots];
        for (i, x) in xs.iter().enumerate() {
            for jb in 0..self.group {
                let Some(&v) = x.get(g * self.group + jb) else {
                    break;
                };
                for c in 0..self.class_pad {
                    out[self.slot(jb, c, i)] = v;
                }
            }
        }
        out
    }

    /// The one-hot labels of a chunk, in every feature block.
    pub fn pack_labels(&self, ys: &[u32]) -> Vec<f64> {
        let mut out = vec![0.0; self.slots];
        for (i, &y) in ys.iter().enumerate() {
            for jb in 0..self.group {
                out[self.slot(jb, y as usize, i)] = 1.0;
            }
        }
        out
    }

    /// The bias's "feature": 1 for each of a chunk's `count` examples, at jb = 0.
    pub fn pack_ones(&self, count: usize) -> Vec<f64> {
        let mut out = vec![0.0; self.slots];
        for c in 0..self.class_pad {
            for i in 0..count.min(self.samples) {
                out[self.slot(0, c, i)] = 1.0;
            }
        }
        out
    }

    /// `value` at i = 0 of every feature block and real class, zero elsewhere: the mask that
    /// keeps the summed gradient and scales it by the learning rate.
    pub fn pack_gradient_mask(&self, value: f64) -> Vec<f64> {
        let mut out = vec![0.0; self.slots];
        for jb in 0..self.group {
            for c in 0..self.classes {
                out[self.slot(jb, c, 0)] = value;
            }
        }
        out
    }

    /// Weight group `g` of a row-major `classes × features` matrix.
    pub fn pack_weights(&self, w: &[f64], g: usize) -> Vec<f64> {
        let mut out = vec![0.0; self.slots];
        for jb in 0..self.group {
            let j = g * self.group + jb;
            if j >= self.features {
                break;
            }
            for c in 0..self.classes {
                for i in 0..self.samples {
                    out[self.slot(jb, c, i)] = w[c * self.features + j];
                }
            }
        }
        out
    }

    /// The bias ciphertext's slots.
    pub fn pack_bias(&self, b: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; self.slots];
        for (c, &v) in b.iter().enumerate().take(self.classes) {
            for i in 0..self.samples {
                out[self.slot(0, c, i)] = v;
            }
        }
        out
    }

    /// Reads weight group `g` (its sample-0 copy) into a row-major `classes × features` matrix.
    pub fn unpack_weights(&self, slots: &[f64], g: usize, w: &mut [f64]) {
        for jb in 0..self.group {
            let j = g * self.group + jb;
            if j >= self.features {
                break;
            }
            for c in 0..self.classes {
                w[c * self.features + j] = slots[self.slot(jb, c, 0)];
            }
        }
    }

    pub fn unpack_bias(&self, slots: &[f64]) -> Vec<f64> {
        (0..self.classes)
            .map(|c| slots[self.slot(0, c, 0)])
            .collect()
    }
}

/// 1, 2, 4, … below `n` (a power of two).
fn powers(n: usize) -> impl Iterator<Item = usize> {
    (0..n.trailing_zeros()).map(|k| 1usize << k)
}
