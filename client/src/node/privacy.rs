//! This hospital's differential privacy (`[privacy]` of its site TOML): the plan it enforces
//! itself — it contributes no round past its budget whatever the coordinator asks — and, at
//! hospital level, its share of the noise on every update and the rounding of every result
//! back to the grid.

use anyhow::{Context, bail};
use privacy::mechanism::{HospitalMechanism, Noise};
use privacy::{Mode, Plan};
use tracing::info;
use training::train::NormStatistics;

use super::participant::Budget;
use super::site::SiteConfig;

pub(super) struct NodePrivacy {
    pub(super) plan: Plan,
    /// hospital level only
    mechanism: Option<HospitalMechanism>,
    /// the fewest contributions a round's sum may hold (hospital level)
    pub(super) quorum: u32,
}

impl NodePrivacy {
    /// The plan of this hospital with `examples` training examples, or `None` without DP.
    pub(super) fn new(cfg: &SiteConfig, examples: u64) -> anyhow::Result<Option<Self>> {
        let p = &cfg.privacy;
        if !p.enabled() {
            return Ok(None);
        }
        p.allows_scaffold(cfg.train.scaffold)?;
        // without a quorum from provisioning, the fewest contributions any round can have: a
        // sum is only ever decrypted by t hospitals, each refusing fewer than t contributors
        let quorum = p.quorum.unwrap_or(cfg.site.threshold);
        let rounds = p
            .rounds
            .context("[privacy] rounds is missing (coordinator provision writes it)")?;
        let plan = p
            .plan(p.run_shape(
                rounds,
                quorum,
                examples,
                cfg.train.batch_size as u64,
                cfg.train.epochs as u64,
            ))
            .context("in [privacy]")?;
        if p.mode == Mode::Hospital && p.clip + 12.0 * plan.sigma_each() > cfg.he.max_update {
            bail!(
                "[privacy] clip {} plus 12 standard deviations of this hospital's noise ({:.3}) \
                 exceed [he] max_update = {}",
                p.clip,
                12.0 * plan.sigma_each(),
                cfg.he.max_update
            );
        }
        if p.mode == Mode::Patient
            && cfg.model.trains_batch_norm()
            && cfg.train.norm_statistics != NormStatistics::Frozen
        {
            bail!(
                "[privacy] mode = \"patient\" needs per-example gradients, which batch-norm layers \
                 (and residual blocks) mix across a batch when they normalise by each batch, and \
                 their running statistics would leak unprotected: set [train] norm_statistics = \
                 \"frozen\" (they then normalise by the statistics they start with, a public \
                 backbone's, and only γ and β train), freeze them ([model.init] freeze), or remove \
                 them from [model]"
            );
        }
        info!(
            mode = ?p.mode,
            noise_multiplier = plan.noise_multiplier,
            rounds_allowed = plan.rounds_allowed,
            epsilon_at_end = plan.epsilon_after(plan.rounds_allowed),
            delta = p.delta,
            "differential privacy"
        );
        Ok(Some(Self {
            mechanism: (p.mode == Mode::Hospital).then(|| HospitalMechanism::new(&plan)),
            plan,
            quorum,
        }))
    }

    /// The rounds the plan covers, which the participant enforces.
    pub(super) fn budget(&self) -> Budget {
        Budget {
            rounds: self.plan.rounds_allowed,
            epsilon: self.plan.epsilon_after(self.plan.rounds_allowed),
            delta: self.plan.delta,
        }
    }

    /// Hospital level: a task drawing this hospital's share of the noise for an update of
    /// `len` values while it trains (the noise does not depend on the update).
    pub(super) fn draw_noise(
        &self,
        len: usize,
    ) -> Option<tokio::task::JoinHandle<Result<Noise, privacy::sampler::RngError>>> {
        let m = self.mechanism.clone()?;
        Some(tokio::task::spawn_blocking(move || m.noise(len)))
    }

    /// Hospital level: the update clipped, on the grid, with `noise` added, each value within
    /// ±`max_update` (beyond 12 σ, probability < 10^-32 per value).
    pub(super) fn privatize(
        &self,
        round: u64,
        delta: &[f32],
        noise: Noise,
        max_update: f64,
    ) -> anyhow::Result<Vec<f64>> {
        let m = self
            .mechanism
            .as_ref()
            .context("noise outside hospital-level privacy")?;
        let p = m.privatize(delta, noise)?;
        info!(
            round,
            norm = p.norm,
            clipped = p.clipped,
            "update clipped and noised for differential privacy"
        );
        Ok(p.values
            .into_iter()
            .map(|v| v.clamp(-max_update, max_update))
            .collect())
    }

    /// Hospital level: the decrypted average of `contributors` updates rounded back to the
    /// grid, which drops CKKS's approximation error and releases the mechanism's output only.
    pub(super) fn snap(&self, average: &mut [f64], contributors: u64) {
        if let Some(m) = &self.mechanism {
            let worst = m.snap(average, contributors);
            if worst > 0.25 {
                tracing::warn!(
                    worst,
                    "the decrypted sum was up to {worst:.3} grid steps off the grid: CKKS's error \
                     is too large for [privacy] granularity_bits"
                );
            }
        }
    }

    /// Hospital level: every update of a sum to switch must carry weight 1 (each hospital
    /// counts once, as the sensitivity assumes) and there must be at least the quorum.
    pub(super) fn check_sum(&self, weights: &[u64]) -> Result<(), String> {
        if self.mechanism.is_none() {
            return Ok(());
        }
        if let Some(w) = weights.iter().find(|&&w| w != 1) {
            return Err(format!(
                "an update of weight {w} in a sum under hospital-level privacy (each counts once)"
            ));
        }
        if (weights.len() as u32) < self.quorum {
            return Err(format!(
                "a sum of {} updates, below the privacy quorum of {}: it would carry less noise \
                 than the guarantee assumes",
                weights.len(),
                self.quorum
            ));
        }
        Ok(())
    }

    /// Patient level: the DP-SGD steps of one round.
    pub(super) fn dp_sgd(&self) -> Option<training::dp_sgd::DpSgd> {
        (self.plan.mode == Mode::Patient).then_some(training::dp_sgd::DpSgd {
            clip: self.plan.clip,
            noise_multiplier: self.plan.noise_multiplier,
            sample_rate: self.plan.sample_rate,
            steps: self.plan.steps_per_round,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use privacy::{PrivacyConfig, RunShape};

    fn node(mode: Mode) -> NodePrivacy {
        let cfg = PrivacyConfig {
            mode,
            target_epsilon: Some(4.0),
            budget_epsilon: Some(3.0),
            ..Default::default()
        };
        let plan = cfg
            .plan(RunShape {
                rounds: 10,
                quorum: 3,
                examples: 1000,
                batch_size: 50,
                epochs: 1,
            })
            .unwrap();
        NodePrivacy {
            mechanism: (mode == Mode::Hospital).then(|| HospitalMechanism::new(&plan)),
            plan,
            quorum: 3,
        }
    }

    #[test]
    fn a_switcher_refuses_sums_that_would_carry_less_noise() {
        let p = node(Mode::Hospital);
        assert!(p.check_sum(&[1, 1, 1]).is_ok());
        assert!(p.check_sum(&[1, 1, 1, 1]).is_ok());
        let few = p.check_sum(&[1, 1]).unwrap_err();
        assert!(few.contains("below the privacy quorum of 3"), "{few}");
        let heavy = p.check_sum(&[1, 5, 1]).unwrap_err();
        assert!(heavy.contains("weight 5"), "{heavy}");
        // patient level: weights are sample counts, the noise is in each hospital's training
        assert!(node(Mode::Patient).check_sum(&[700, 20]).is_ok());
    }

    #[test]
    fn no_round_past_the_budget() {
        let p = node(Mode::Hospital);
        // target 4 over 10 rounds, budget 3: fewer rounds allowed
        let last = p.plan.rounds_allowed;
        assert!(last > 0 && last < 10, "{last}");
        let b = p.budget();
        assert_eq!(b.rounds, last);
        assert!(b.epsilon > 0.0 && b.epsilon <= 3.0 + 1e-9, "{b:?}");
        assert!(p.dp_sgd().is_none());
        let dp = node(Mode::Patient).dp_sgd().unwrap();
        assert_eq!(dp.steps, 20);
        assert!((dp.sample_rate - 0.05).abs() < 1e-12);
    }
}
