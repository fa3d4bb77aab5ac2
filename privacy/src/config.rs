//! `[privacy]` of a federation config (copied into every site TOML): which guarantee, its
//! parameters, and the run's plan derived from them — the same on every hospital and at the
//! coordinator, so each hospital enforces its own budget and the coordinator only reports.

use serde::{Deserialize, Serialize};

use crate::accountant::{Rdp, multiplier_for};

/// Whose privacy the noise protects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// No differential privacy (encryption only).
    #[default]
    Off,
    /// Hospital-level DP: each hospital's whole update is clipped in L2 and carries its share
    /// of discrete Gaussian noise inside the encrypted sum (distributed DP).
    Hospital,
    /// Patient-level DP: DP-SGD at each hospital (per-example clipping, Poisson-sampled
    /// batches, Gaussian noise every step).
    Patient,
}

/// `[privacy]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    #[serde(default)]
    pub mode: Mode,
    /// δ of the (ε, δ) guarantee.
    #[serde(default = "default_delta")]
    pub delta: f64,
    /// L2 bound: of a hospital's update (hospital) or of one patient's gradient (patient).
    #[serde(default = "default_clip")]
    pub clip: f64,
    /// Noise standard deviation over `clip`; or give `target_epsilon` instead.
    #[serde(default)]
    pub noise_multiplier: Option<f64>,
    /// The ε the configured rounds should end at: the multiplier is chosen for it.
    #[serde(default)]
    pub target_epsilon: Option<f64>,
    /// No round is run (or contributed) whose ε would exceed this. Default: `target_epsilon`.
    #[serde(default)]
    pub budget_epsilon: Option<f64>,
    /// Hospital mode: updates are sent on a grid of clip·2^-bits.
    #[serde(default = "default_bits")]
    pub granularity_bits: u32,
    /// Hospital mode: the fewest contributions a round may sum; each hospital adds 1/quorum of
    /// the noise, so every accepted sum carries at least all of it. Default: the federation's
    /// `min_hospitals` (written into the site TOMLs by `coordinator provision`).
    #[serde(default)]
    pub quorum: Option<u32>,
    /// Patient mode: the expected size of each DP-SGD step's Poisson sample. Default: `[train]`
    /// batch_size. DP-SGD wants larger batches than plain training (the noise is per step), so
    /// the usual recipe stays in `[train]` for the same run without privacy.
    #[serde(default)]
    pub batch_size: Option<u64>,
    /// Patient mode: passes over the training images per round. Default: `[train]` epochs.
    #[serde(default)]
    pub epochs: Option<u64>,
    /// Patient mode: the learning rate of DP-SGD's steps. Default: `[train]` lr. Its noisy
    /// averages over large batches take larger steps than plain training's small batches.
    #[serde(default)]
    pub lr: Option<f64>,
    /// The rounds a target ε is spread over. Default: the federation's `rounds` (written into
    /// the site TOMLs by `coordinator provision`, so every hospital plans the same run).
    #[serde(default)]
    pub rounds: Option<u64>,
}

fn default_delta() -> f64 {
    1e-5
}
fn default_clip() -> f64 {
    1.0
}
fn default_bits() -> u32 {
    16
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Off,
            delta: default_delta(),
            clip: default_clip(),
            noise_multiplier: None,
            target_epsilon: None,
            budget_epsilon: None,
            granularity_bits: default_bits(),
            quorum: None,
            rounds: None,
            batch_size: None,
            epochs: None,
            lr: None,
        }
    }
}

/// Why a `[privacy]` section cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("[privacy] {0}")]
    Invalid(String),
    #[error(
        "[privacy] no noise multiplier up to 1000 keeps ε ≤ {target} at δ = {delta} over {rounds} \
         rounds: raise target_epsilon or lower the rounds"
    )]
    Unreachable {
        target: f64,
        delta: f64,
        rounds: u64,
    },
}

/// The smallest per-hospital variance (grid units²) of hospital mode: above it the correction τ
/// of the sum of discrete Gaussians is below 10^-3000, zero in f64.
const MIN_VARIANCE: f64 = 1024.0;

/// What the accountant needs of a run besides the section.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunShape {
    /// Rounds configured.
    pub rounds: u64,
    /// Hospital mode: the quorum. Patient mode: unused.
    pub quorum: u32,
    /// Patient mode: this hospital's training examples, batch size and epochs per round.
    pub examples: u64,
    pub batch_size: u64,
    pub epochs: u64,
}

/// The mechanism of a run, fixed before its first round.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub mode: Mode,
    pub delta: f64,
    pub clip: f64,
    pub noise_multiplier: f64,
    /// RDP of one round.
    pub per_round: Rdp,
    /// Rounds within the budget (≤ the configured rounds).
    pub rounds_allowed: u64,
    /// Hospital mode: the grid step and each hospital's noise variance in grid units².
    pub grid: f64,
    pub var_each: u64,
    /// Patient mode: Poisson sampling rate and steps per round.
    pub sample_rate: f64,
    pub steps_per_round: u64,
}

impl PrivacyConfig {
    pub fn enabled(&self) -> bool {
        self.mode != Mode::Off
    }

    /// The shape of a run of `rounds` rounds with `quorum`, for a hospital with `examples`
    /// training images and `[train]`'s batch size and epochs (which `batch_size` and `epochs`
    /// replace in patient mode).
    pub fn run_shape(
        &self,
        rounds: u64,
        quorum: u32,
        examples: u64,
        train_batch: u64,
        train_epochs: u64,
    ) -> RunShape {
        RunShape {
            rounds,
            quorum,
            examples,
            batch_size: self.batch_size.unwrap_or(train_batch),
            epochs: self.epochs.unwrap_or(train_epochs),
        }
    }

    /// Checks the values themselves (the shape of the run is checked by [`Self::plan`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if !self.enabled() {
            return Ok(());
        }
        if !(self.delta > 0.0 && self.delta < 0.1) {
            return bad(format!("delta = {} must be in (0, 0.1)", self.delta));
        }
        if !(self.clip.is_finite() && self.clip > 0.0) {
            return bad(format!("clip = {} must be positive", self.clip));
        }
        match (self.noise_multiplier, self.target_epsilon) {
            (Some(_), Some(_)) => {
                return bad("give noise_multiplier or target_epsilon, not both".into());
            }
            (None, None) => return bad("give noise_multiplier or target_epsilon".into()),
            (Some(z), None) if !(0.3..=1000.0).contains(&z) => {
                return bad(format!("noise_multiplier = {z} must be in 0.3..=1000"));
            }
            (None, Some(e)) if !(e.is_finite() && e > 0.0) => {
                return bad(format!("target_epsilon = {e} must be positive"));
            }
            _ => {}
        }
        if let Some(b) = self.budget_epsilon
            && !(b.is_finite() && b > 0.0)
        {
            return bad(format!("budget_epsilon = {b} must be positive"));
        }
        if !(8..=24).contains(&self.granularity_bits) {
            return bad(format!(
                "granularity_bits = {} must be in 8..=24",
                self.granularity_bits
            ));
        }
        if self.quorum == Some(0) {
            return bad("quorum must be at least 1".into());
        }
        if self.rounds == Some(0) {
            return bad("rounds must be at least 1".into());
        }
        if self.batch_size == Some(0) || self.epochs == Some(0) {
            return bad("batch_size and epochs must be at least 1".into());
        }
        if let Some(lr) = self.lr
            && !(lr.is_finite() && lr > 0.0)
        {
            return bad(format!("lr = {lr} must be positive"));
        }
        if self.mode == Mode::Hospital
            && (self.batch_size.is_some() || self.epochs.is_some() || self.lr.is_some())
        {
            return bad("batch_size, epochs and lr are DP-SGD's (mode = \"patient\")".into());
        }
        Ok(())
    }

    /// Refuses `[train] scaffold` under privacy: SCAFFOLD sends each hospital's control
    /// variate, a plain mean gradient of its images, beside its update, and no noise covers it.
    /// The coordinator's config check and every node ask this.
    pub fn allows_scaffold(&self, scaffold: bool) -> Result<(), ConfigError> {
        if scaffold && self.enabled() {
            return Err(ConfigError::Invalid(
                "does not cover [train] scaffold, which sends each hospital's mean gradient (its \
                 control variate) beside its update: remove one of them"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The run's mechanism: the multiplier (given, or the smallest meeting the target), one
    /// round's RDP and the rounds the budget allows.
    pub fn plan(&self, shape: RunShape) -> Result<Plan, ConfigError> {
        self.validate()?;
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if shape.rounds == 0 {
            return bad("a run of 0 rounds".into());
        }
        let grid_units = f64::from(1u32 << self.granularity_bits);
        // hospital mode: L2 sensitivity in grid units; the mechanism clips to C − γ·√d/2 so the
        // rounded update stays within C whatever the dimension d
        let delta_grid = grid_units;
        let quorum = shape.quorum.max(1);
        let (sample_rate, steps) = match self.mode {
            Mode::Patient => {
                if shape.examples == 0 || shape.batch_size == 0 {
                    return bad("patient mode needs training examples and a batch size".into());
                }
                let q = (shape.batch_size as f64 / shape.examples as f64).min(1.0);
                let steps = shape.epochs.max(1) * shape.examples.div_ceil(shape.batch_size);
                (q, steps)
            }
            _ => (1.0, 1),
        };
        let var_of = |z: f64| {
            let v = (z * delta_grid).powi(2) / f64::from(quorum);
            v.ceil().max(1.0)
        };
        let round_rdp = |z: f64| -> Rdp {
            match self.mode {
                Mode::Off => Rdp::zero(),
                Mode::Hospital => {
                    // τ·d is 0 in f64 at these variances (checked below), so d is not needed
                    Rdp::distributed_discrete_gaussian(delta_grid, var_of(z), quorum, 0)
                }
                Mode::Patient => Rdp::subsampled_gaussian(sample_rate, z).times(steps),
            }
        };
        let z = match (self.noise_multiplier, self.target_epsilon) {
            (Some(z), _) => z,
            (None, Some(target)) => {
                multiplier_for(target, self.delta, |z| round_rdp(z).times(shape.rounds)).ok_or(
                    ConfigError::Unreachable {
                        target,
                        delta: self.delta,
                        rounds: shape.rounds,
                    },
                )?
            }
            (None, None) => 0.0,
        };
        let var_each = var_of(z);
        if self.mode == Mode::Hospital && var_each < MIN_VARIANCE {
            return bad(format!(
                "each hospital's noise variance is {var_each:.0} grid units², below 2^10 (where the \
                 sum of discrete Gaussians starts to differ from one): raise granularity_bits ({})",
                self.granularity_bits
            ));
        }
        if self.mode == Mode::Hospital && var_each > crate::sampler::MAX_VARIANCE as f64 {
            return bad(format!(
                "each hospital's noise variance is {var_each:.3e} grid units², above 2^48: lower \
                 granularity_bits ({})",
                self.granularity_bits
            ));
        }
        let per_round = round_rdp(z);
        let budget = self.budget_epsilon.or(self.target_epsilon);
        let rounds_allowed = match budget {
            None => shape.rounds,
            Some(b) => (1..=shape.rounds)
                .take_while(|&r| per_round.times(r).epsilon(self.delta).0 <= b * (1.0 + 1e-9))
                .last()
                .unwrap_or(0),
        };
        Ok(Plan {
            mode: self.mode,
            delta: self.delta,
            clip: self.clip,
            noise_multiplier: z,
            per_round,
            rounds_allowed,
            grid: self.clip / grid_units,
            var_each: var_each as u64,
            sample_rate,
            steps_per_round: steps,
        })
    }
}

impl Plan {
    /// ε after `rounds` rounds.
    pub fn epsilon_after(&self, rounds: u64) -> f64 {
        self.per_round.times(rounds).epsilon(self.delta).0
    }

    /// Each hospital's noise standard deviation in the update's own units (hospital mode).
    pub fn sigma_each(&self) -> f64 {
        (self.var_each as f64).sqrt() * self.grid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> RunShape {
        RunShape {
            rounds: 20,
            quorum: 5,
            examples: 7000,
            batch_size: 64,
            epochs: 1,
        }
    }

    #[test]
    fn off_by_default_and_validated() {
        let c: PrivacyConfig = toml::from_str("").unwrap();
        assert!(!c.enabled());
        assert!(c.validate().is_ok());
        for bad in [
            "mode = \"hospital\"",
            "mode = \"hospital\"\nnoise_multiplier = 1.0\ntarget_epsilon = 8.0",
            "mode = \"hospital\"\nnoise_multiplier = 0.01",
            "mode = \"hospital\"\nnoise_multiplier = 1.0\ndelta = 0.5",
            "mode = \"hospital\"\nnoise_multiplier = 1.0\nclip = -1.0",
            "mode = \"hospital\"\nnoise_multiplier = 1.0\ngranularity_bits = 40",
            "mode = \"hospital\"\nnoise_multiplier = 1.0\nquorum = 0",
        ] {
            let c: PrivacyConfig = toml::from_str(bad).unwrap();
            assert!(c.validate().is_err(), "{bad}");
        }
        assert!(toml::from_str::<PrivacyConfig>("mode = \"everyone\"").is_err());
        assert!(toml::from_str::<PrivacyConfig>("epsilon = 3").is_err());
    }

    #[test]
    fn a_target_sets_the_multiplier_and_the_budget_the_rounds() {
        let c = PrivacyConfig {
            mode: Mode::Hospital,
            target_epsilon: Some(8.0),
            ..Default::default()
        };
        let p = c.plan(shape()).unwrap();
        assert_eq!(p.rounds_allowed, 20);
        let e = p.epsilon_after(20);
        assert!(e <= 8.0 && e > 7.9, "{e}");
        // the total noise on the sum: quorum × var_each ≈ (z·Δ)²
        let total = (5 * p.var_each) as f64;
        let want = (p.noise_multiplier * 65536.0).powi(2);
        assert!((total / want - 1.0).abs() < 1e-6);
        // a budget below the 20 rounds' ε stops earlier
        let c = PrivacyConfig {
            budget_epsilon: Some(4.0),
            ..c
        };
        let p = c.plan(shape()).unwrap();
        assert!(p.rounds_allowed < 20 && p.rounds_allowed > 0);
        assert!(p.epsilon_after(p.rounds_allowed) <= 4.0);
        assert!(p.epsilon_after(p.rounds_allowed + 1) > 4.0);
    }

    #[test]
    fn patient_mode_amplifies_by_sampling() {
        let c = PrivacyConfig {
            mode: Mode::Patient,
            noise_multiplier: Some(1.0),
            ..Default::default()
        };
        let p = c.plan(shape()).unwrap();
        assert_eq!(p.steps_per_round, 110);
        assert!((p.sample_rate - 64.0 / 7000.0).abs() < 1e-12);
        // 2,200 steps at q ≈ 0.009, z = 1: single-digit ε
        let e = p.epsilon_after(20);
        assert!(e > 0.5 && e < 10.0, "{e}");
        let hospital = PrivacyConfig {
            mode: Mode::Hospital,
            ..c
        };
        assert!(hospital.plan(shape()).unwrap().epsilon_after(20) > e);
    }
}
