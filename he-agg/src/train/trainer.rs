//! One step of mini-batch gradient descent of a head on encrypted chunks, and the same step in
//! plaintext (the reference the tests and the benchmark compare with).

use std::sync::Arc;

use crate::ckks::{Ciphertext, CkksContext, Evaluator, GaloisKeys, Plaintext, RelinearizationKey};

use super::HeadTrainError;
use super::chunk::{EncryptedChunk, check_ct};
use super::layout::HeadLayout;
use super::params::HeadScales;

/// The trainer's side: the encrypted weights (one ciphertext per feature group, then the bias),
/// with momentum their velocity too, and the evaluation keys. It never holds a secret.
pub struct HeadTrainer {
    ctx: Arc<CkksContext>,
    eval: Evaluator,
    layout: HeadLayout,
    scales: HeadScales,
    lr: f64,
    momentum: f64,
    weights: Vec<Ciphertext>,
    /// None before the first step (a zero velocity), and without momentum.
    velocity: Option<Vec<Ciphertext>>,
}

impl HeadTrainer {
    /// `weights`: the initial head ([`HeadTrainer::pack_head`]), encrypted at the top level and
    /// the weights' scale. With `momentum` μ > 0 a step is v ← μ·v + lr·g, w ← w − v (heavy
    /// ball), and the velocity is refreshed with the weights.
    pub fn new(
        ctx: &Arc<CkksContext>,
        rlk: &RelinearizationKey,
        gks: &GaloisKeys,
        layout: HeadLayout,
        lr: f64,
        momentum: f64,
        weights: Vec<Ciphertext>,
    ) -> Result<Self, HeadTrainError> {
        Self::check_settings(lr, momentum)?;
        if layout.slots() != ctx.slots() {
            return Err(HeadTrainError::Config(format!(
                "a layout of {} slots for parameters with {}",
                layout.slots(),
                ctx.slots()
            )));
        }
        let scales = HeadScales::new(ctx)?;
        let mut t = Self {
            eval: ctx.evaluator(Some(rlk), Some(gks))?,
            ctx: ctx.clone(),
            layout,
            scales,
            lr,
            momentum,
            weights: Vec::new(),
            velocity: None,
        };
        t.set_state(weights)?;
        Ok(t)
    }

    /// Refuses a learning rate or momentum the trainer cannot take.
    pub fn check_settings(lr: f64, momentum: f64) -> Result<(), HeadTrainError> {
        if !(lr.is_finite() && lr > 0.0 && lr <= 16.0) {
            return Err(HeadTrainError::Config(format!(
                "learning rate {lr}: it must be finite, positive and at most 16 (the refresh's \
                 masks are sized for weights up to 16)"
            )));
        }
        if !(0.0..1.0).contains(&momentum) {
            return Err(HeadTrainError::Config(format!(
                "momentum {momentum}: it must be in [0, 1)"
            )));
        }
        Ok(())
    }

    pub fn layout(&self) -> &HeadLayout {
        &self.layout
    }
    pub fn scales(&self) -> &HeadScales {
        &self.scales
    }
    pub fn weights(&self) -> &[Ciphertext] {
        &self.weights
    }
    /// The weights' velocity (with momentum, after the first step).
    pub fn velocity(&self) -> Option<&[Ciphertext]> {
        self.velocity.as_deref()
    }
    pub fn lr(&self) -> f64 {
        self.lr
    }
    pub fn momentum(&self) -> f64 {
        self.momentum
    }

    /// The slots of a head's ciphertexts: one vector per feature group, then the bias.
    pub fn pack_head(layout: &HeadLayout, w: &[f64], b: &[f64]) -> Vec<Vec<f64>> {
        let mut v: Vec<Vec<f64>> = (0..layout.groups())
            .map(|g| layout.pack_weights(w, g))
            .collect();
        v.push(layout.pack_bias(b));
        v
    }

    /// The state after a refresh (or the initial weights): the weights, then with momentum and
    /// after the first step their velocity, at the top level and the weights' scale.
    pub fn set_state(&mut self, mut state: Vec<Ciphertext>) -> Result<(), HeadTrainError> {
        let per = self.layout.groups() + 1;
        let with_velocity = self.momentum > 0.0 && !self.weights.is_empty();
        let want = if with_velocity { 2 * per } else { per };
        if state.len() != want {
            return Err(HeadTrainError::Shape(format!(
                "{} ciphertexts where the head has {} groups and a bias{}",
                state.len(),
                self.layout.groups(),
                if with_velocity {
                    ", and their velocity"
                } else {
                    ""
                }
            )));
        }
        for ct in &state {
            check_ct(
                ct,
                "a weight ciphertext",
                self.scales.top,
                self.scales.weight,
            )?;
        }
        let velocity = with_velocity.then(|| state.split_off(per));
        self.weights = state;
        self.velocity = velocity;
        Ok(())
    }

    fn plain(&self, values: &[f64], level: usize, scale: f64) -> Result<Plaintext, HeadTrainError> {
        Ok(self.ctx.encode_reals(values, level, scale)?)
    }

    /// One step on a mini-batch: returns the updated state (weights, then with momentum their
    /// velocity) at the refresh level, for the keyholders to refresh and
    /// [`HeadTrainer::set_state`] to take back.
    pub fn step(&self, batch: &[&EncryptedChunk]) -> Result<Vec<Ciphertext>, HeadTrainError> {
        let (l, s) = (&self.layout, &self.scales);
        if batch.is_empty() {
            return Err(HeadTrainError::Shape("an empty batch".into()));
        }
        for chunk in batch {
            chunk.check(l, s)?;
        }
        let examples: usize = batch.iter().map(|c| c.count).sum();
        let groups = l.groups();
        let ev = &self.eval;
        // gradient accumulators: one per group and the bias, degree 2 until the batch is done
        let mut acc: Vec<Option<Ciphertext>> = vec![None; groups + 1];
        for chunk in batch {
            let ones_top = self.plain(&l.pack_ones(chunk.count), s.top, s.data)?;
            let ones_low = self.plain(&l.pack_ones(chunk.count), s.label_level, s.data)?;
            // logits: Σ_J W_J ⊙ X_J + b ⊙ 1, summed over the feature blocks
            let mut z = ev.mul_plain(&self.weights[groups], &ones_top)?;
            for (w, x) in self.weights[..groups].iter().zip(&chunk.features) {
                let prod = ev.mul(w, x)?;
                ev.add_assign(&mut z, &prod)?;
            }
            let mut z = ev.relinearize(&z)?;
            ev.rescale_assign(&mut z)?;
            ev.rescale_assign(&mut z)?;
            let z = self.rotate_sum(z, &l.feature_sum_steps())?;
            // residual, then its products with the examples' features (and the bias's 1)
            let r = ev.sub(&z, &chunk.labels)?;
            for (g, a) in acc.iter_mut().enumerate() {
                let t = if g < groups {
                    ev.mul(&r, &ev.drop_levels(&chunk.features[g], 2)?)?
                } else {
                    ev.mul_plain(&r, &ones_low)?
                };
                match a {
                    None => *a = Some(t),
                    Some(a) => ev.add_assign(a, &t)?,
                }
            }
        }
        let mask = self.plain(
            &l.pack_gradient_mask(self.lr / examples as f64),
            s.top - 4,
            s.mask,
        )?;
        let updates: Vec<Ciphertext> = acc
            .into_iter()
            .enumerate()
            .map(|(k, t)| {
                let t = t.expect("a non-empty batch fills every accumulator");
                let mut t = if t.degree() == 2 {
                    ev.relinearize(&t)?
                } else {
                    t
                };
                ev.rescale_assign(&mut t)?;
                ev.rescale_assign(&mut t)?;
                let t = self.rotate_sum(t, &l.sample_sum_steps())?;
                let mut g = ev.mul_plain(&t, &mask)?;
                ev.rescale_assign(&mut g)?;
                ev.rescale_assign(&mut g)?;
                let g = self.rotate_sum(g, &l.sample_spread_steps())?;
                let Some(v) = self.velocity.as_ref().map(|v| &v[k]) else {
                    return Ok(g);
                };
                // μ·v, rescaled by the two top primes (the data scale) back to the weights' scale
                let mut mv = ev.mul_const(v, self.momentum, s.data)?;
                ev.rescale_assign(&mut mv)?;
                ev.rescale_assign(&mut mv)?;
                mv.scale = g.scale;
                Ok(ev.add(&mv, &g)?)
            })
            .collect::<Result<_, HeadTrainError>>()?;
        let drop = s.top - s.refresh_level;
        let mut state = Vec::with_capacity(2 * updates.len());
        for (w, u) in self.weights.iter().zip(&updates) {
            let mut out = ev.sub(&ev.drop_levels(w, drop)?, u)?;
            // the exact scale, so the refreshed weights meet the next step's data
            out.scale = s.weight;
            state.push(out);
        }
        if self.momentum > 0.0 {
            for mut u in updates {
                u.scale = s.weight;
                state.push(u);
            }
        }
        Ok(state)
    }

    /// y + rot(y, k) for each k in turn.
    fn rotate_sum(&self, mut y: Ciphertext, steps: &[i64]) -> Result<Ciphertext, HeadTrainError> {
        for &k in steps {
            let r = self.eval.rotate(&y, k)?;
            self.eval.add_assign(&mut y, &r)?;
        }
        Ok(y)
    }
}

/// A head in plaintext: row-major `classes × features` weights, bias, and their velocity.
#[derive(Debug, Clone, PartialEq)]
pub struct PlainHead {
    pub w: Vec<f64>,
    pub b: Vec<f64>,
    vw: Vec<f64>,
    vb: Vec<f64>,
}

impl PlainHead {
    pub fn zeros(features: usize, classes: usize) -> Self {
        Self {
            w: vec![0.0; classes * features],
            b: vec![0.0; classes],
            vw: vec![0.0; classes * features],
            vb: vec![0.0; classes],
        }
    }

    /// The same step as [`HeadTrainer::step`], in plaintext.
    pub fn step(&mut self, xs: &[&[f64]], ys: &[u32], lr: f64, momentum: f64) {
        let classes = self.b.len();
        let features = self.w.len() / classes;
        let mut gw = vec![0.0; self.w.len()];
        let mut gb = vec![0.0; classes];
        for (x, &y) in xs.iter().zip(ys) {
            for c in 0..classes {
                let z: f64 = self.b[c]
                    + (0..features)
                        .map(|j| self.w[c * features + j] * x[j])
                        .sum::<f64>();
                let r = z - if c == y as usize { 1.0 } else { 0.0 };
                gb[c] += r;
                for j in 0..features {
                    gw[c * features + j] += r * x[j];
                }
            }
        }
        let k = lr / xs.len() as f64;
        for ((w, v), g) in self.w.iter_mut().zip(&mut self.vw).zip(&gw) {
            *v = momentum * *v + k * g;
            *w -= *v;
        }
        for ((b, v), g) in self.b.iter_mut().zip(&mut self.vb).zip(&gb) {
            *v = momentum * *v + k * g;
            *b -= *v;
        }
    }
}
