//! What a training run is told (`[train]`: optimiser, schedule, clipping, augmentation, FedProx)
//! and what it reports (per epoch and in all).

use burn::grad_clipping::GradientClippingConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, AdamWConfig, ModuleOptimizer, SgdConfig};

use crate::error::TrainError;

/// Optimiser.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// SGD with momentum (`momentum`, `nesterov`); `weight_decay` is L2 added to the gradient.
    Sgd,
    /// Adam (`beta1`, `beta2`, `eps`); `weight_decay` is L2 added to the gradient.
    #[default]
    Adam,
    /// AdamW: Adam with decoupled `weight_decay`.
    Adamw,
}

/// Learning-rate schedule over epochs (after warm-up).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// `lr` throughout.
    Constant,
    /// `lr · gamma^⌊epoch / step_epochs⌋`.
    Step,
    /// Cosine from `lr` to `min_lr` over the epochs (per batch).
    #[default]
    Cosine,
}

/// What batch norms normalise with while training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NormStatistics {
    /// Each batch's own mean and variance; the running statistics follow them (default).
    #[default]
    Batch,
    /// The running statistics as the network starts (a pretrained backbone's), left unchanged;
    /// γ and β still train. Under label skew a hospital's batches hold one class, and
    /// normalising by their own statistics removes what tells the classes apart (Hsieh et al.,
    /// "The Non-IID Data Quagmire", 2020): fine-tuning a backbone federated wants its own.
    Frozen,
}

/// What a schedule spans in a federation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleSpan {
    /// Each round's local epochs, from `lr` again every round (default).
    #[default]
    Round,
    /// The whole run: round r trains with the rate the schedule gives at the start of its
    /// epochs in a run of rounds × epochs (constant within the round), as a centralised run
    /// of that many epochs would. A federation that ends on a small rate ends on a settled
    /// model instead of the last round's noise.
    Federation,
}

fn d_epochs() -> usize {
    10
}
fn d_batch() -> usize {
    128
}
fn d_lr() -> f64 {
    1e-3
}
fn d_momentum() -> f64 {
    0.9
}
fn d_beta1() -> f64 {
    0.9
}
fn d_beta2() -> f64 {
    0.999
}
fn d_eps() -> f64 {
    1e-8
}
fn d_step() -> usize {
    10
}
fn d_gamma() -> f64 {
    0.1
}
fn d_range_bound() -> f64 {
    8.0
}

/// The `[train]` table. Every key is optional.
///
/// ```toml
/// [train]
/// epochs = 10            # passes over the training data
/// batch_size = 128
/// optimizer = "adam"     # "sgd", "adam", "adamw"
/// lr = 1e-3              # peak learning rate
/// momentum = 0.9         # sgd only
/// nesterov = false       # sgd only
/// beta1 = 0.9            # adam/adamw
/// beta2 = 0.999          # adam/adamw
/// eps = 1e-8             # adam/adamw
/// weight_decay = 0.0     # L2 (sgd, adam) or decoupled (adamw)
/// schedule = "cosine"    # "constant", "step", "cosine"
/// warmup_epochs = 0      # linear warm-up from lr/10 over these epochs
/// step_epochs = 10       # step schedule: decay every this many epochs
/// gamma = 0.1            # step schedule: decay factor
/// min_lr = 0.0           # cosine schedule: final learning rate
/// grad_clip = 5.0        # clip each parameter tensor's gradient L2 norm (omit: none)
/// fedprox_mu = 0.0       # FedProx: mu/2·‖w − w_global‖² (needs a global model)
/// scaffold = false       # federated: SCAFFOLD's control variates correct every local step
/// shift = 0              # augmentation: random shift of up to this many pixels
/// hflip = false          # augmentation: random left-right mirror
/// rotate = 0.0           # augmentation: random rotation of up to ± this many degrees
/// scale = 0.0            # augmentation: random zoom by a factor in [1 − scale, 1 + scale]
/// brightness = 0.0       # augmentation: random offset of up to ± this (normalised units)
/// contrast = 0.0         # augmentation: random gain in [1 − contrast, 1 + contrast]
/// label_smoothing = 0.0  # cross-entropy against (1 − ε)·one-hot + ε/classes
/// range_penalty = 0.0    # λ: adds λ·mean(relu(|x| − range_bound)²) over every polynomial
/// range_bound = 8.0      #   activation's and residual block's output (keeps values in range)
/// schedule_span = "round"  # federated: "federation" runs the schedule over all rounds
/// norm_statistics = "batch"  # "frozen": batch norms use the running statistics the
///                        #   network starts with (a pretrained backbone's) and keep them
/// seed = 0               # shuffling and augmentation
/// ```
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Passes over the training data (default 10).
    #[serde(default = "d_epochs")]
    pub epochs: usize,
    /// Images per batch (default 128).
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// `sgd`, `adam` (default) or `adamw`.
    #[serde(default)]
    pub optimizer: OptimizerKind,
    /// Peak learning rate (default 1e-3).
    #[serde(default = "d_lr")]
    pub lr: f64,
    /// SGD momentum (default 0.9).
    #[serde(default = "d_momentum")]
    pub momentum: f64,
    /// SGD Nesterov momentum (default false).
    #[serde(default)]
    pub nesterov: bool,
    /// Adam β₁ (default 0.9).
    #[serde(default = "d_beta1")]
    pub beta1: f64,
    /// Adam β₂ (default 0.999).
    #[serde(default = "d_beta2")]
    pub beta2: f64,
    /// Adam ε (default 1e-8).
    #[serde(default = "d_eps")]
    pub eps: f64,
    /// Weight decay (default 0).
    #[serde(default)]
    pub weight_decay: f64,
    /// `constant`, `step` or `cosine` (default).
    #[serde(default)]
    pub schedule: Schedule,
    /// Linear warm-up epochs (default 0).
    #[serde(default)]
    pub warmup_epochs: usize,
    /// Step schedule period in epochs (default 10).
    #[serde(default = "d_step")]
    pub step_epochs: usize,
    /// Step schedule factor (default 0.1).
    #[serde(default = "d_gamma")]
    pub gamma: f64,
    /// Cosine floor (default 0).
    #[serde(default)]
    pub min_lr: f64,
    /// Maximum L2 norm of each parameter tensor's gradient, as burn's optimisers clip it
    /// (default: none).
    #[serde(default)]
    pub grad_clip: Option<f64>,
    /// FedProx proximal coefficient μ (default 0: off).
    #[serde(default)]
    pub fedprox_mu: f64,
    /// SCAFFOLD (Karimireddy et al., 2020; default false): a federated hospital adds c − cᵢ
    /// (the federation's mean gradient less its own) to every local step's gradient and sends
    /// the change of its cᵢ beside its model update, so that hospitals whose data pull
    /// elsewhere (label skew) drift less. Needs the control variates (a federated run).
    #[serde(default)]
    pub scaffold: bool,
    /// Random shift augmentation in pixels (default 0).
    #[serde(default)]
    pub shift: usize,
    /// Random horizontal flip (default false).
    #[serde(default)]
    pub hflip: bool,
    /// Random rotation of up to ± this many degrees (default 0).
    #[serde(default)]
    pub rotate: f64,
    /// Random zoom by a factor in `[1 − scale, 1 + scale]` (default 0).
    #[serde(default)]
    pub scale: f64,
    /// Random brightness offset of up to ± this, in normalised units (default 0).
    #[serde(default)]
    pub brightness: f64,
    /// Random contrast gain in `[1 − contrast, 1 + contrast]` (default 0).
    #[serde(default)]
    pub contrast: f64,
    /// Label smoothing ε (default 0).
    #[serde(default)]
    pub label_smoothing: f64,
    /// Weight λ of the range penalty (default 0: off). Encrypted evaluation refreshes values
    /// with a mask sized for |x| < 2^10 and wraps its modulus past 2^35: a deep polynomial
    /// network that lets some inputs' values grow is kept in range by training with it.
    #[serde(default)]
    pub range_penalty: f64,
    /// Values above this (in absolute value) are penalised (default 8).
    #[serde(default = "d_range_bound")]
    pub range_bound: f64,
    /// `round` (default) or `federation`: what `schedule` spans in a federated run.
    #[serde(default)]
    pub schedule_span: ScheduleSpan,
    /// `batch` (default) or `frozen`: what batch norms normalise with while training.
    #[serde(default)]
    pub norm_statistics: NormStatistics,
    /// Seed of shuffling and augmentation (default 0).
    #[serde(default)]
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        // An empty table takes every default; this cannot fail.
        toml::from_str("").unwrap_or_else(|_| unreachable!("all keys have defaults"))
    }
}

impl TrainConfig {
    pub(crate) fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::invalid("[train]", m));
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("lr must be positive, got {}", self.lr));
        }
        if self.weight_decay < 0.0 || self.fedprox_mu < 0.0 || self.min_lr < 0.0 {
            return bad("weight_decay, fedprox_mu and min_lr must be ≥ 0".into());
        }
        if !(0.0..=180.0).contains(&self.rotate) || !(0.0..1.0).contains(&self.scale) {
            return bad("rotate must be in [0, 180] degrees and scale in [0, 1)".into());
        }
        if self.brightness < 0.0 || !(0.0..1.0).contains(&self.contrast) {
            return bad("brightness must be ≥ 0 and contrast in [0, 1)".into());
        }
        if !(self.range_penalty >= 0.0 && self.range_penalty.is_finite() && self.range_bound > 0.0)
        {
            return bad(format!(
                "range_penalty {} must be ≥ 0 and range_bound {} positive",
                self.range_penalty, self.range_bound
            ));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad("label_smoothing must be in [0, 1)".into());
        }
        if self.schedule == Schedule::Step && self.step_epochs == 0 {
            return bad("step_epochs must be at least 1".into());
        }
        if let Some(c) = self.grad_clip
            && c <= 0.0
        {
            return bad("grad_clip must be positive".into());
        }
        Ok(())
    }

    /// What round `round` (1-based) of `rounds` trains with: itself, or with
    /// `schedule_span = "federation"` a constant rate, the schedule's at the round's first
    /// epoch of a run of `rounds × epochs` (warm-up included). Without `rounds` (a kit that does
    /// not say) the schedule stays within the round.
    pub fn for_round(&self, round: u64, rounds: Option<u64>) -> TrainConfig {
        let (ScheduleSpan::Federation, Some(rounds)) = (self.schedule_span, rounds) else {
            return self.clone();
        };
        let run = TrainConfig {
            epochs: self.epochs.saturating_mul(rounds.max(1) as usize),
            ..self.clone()
        };
        let first = round.saturating_sub(1).min(rounds) as f64 * self.epochs as f64;
        TrainConfig {
            lr: run.lr_at(first),
            schedule: Schedule::Constant,
            warmup_epochs: 0,
            ..self.clone()
        }
    }

    /// Learning rate at fractional epoch `t` (0 ≤ t < epochs).
    pub fn lr_at(&self, t: f64) -> f64 {
        let w = self.warmup_epochs as f64;
        if t < w {
            return self.lr * (0.1 + 0.9 * t / w);
        }
        let total = (self.epochs as f64 - w).max(1e-9);
        let u = ((t - w) / total).clamp(0.0, 1.0);
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Step => {
                self.lr
                    * self
                        .gamma
                        .powi(((t - w) / self.step_epochs as f64).floor() as i32)
            }
            Schedule::Cosine => {
                self.min_lr
                    + 0.5 * (self.lr - self.min_lr) * (1.0 + (std::f64::consts::PI * u).cos())
            }
        }
    }

    /// The augmentation its keys describe.
    pub(crate) fn augment(&self) -> crate::data::Augment {
        crate::data::Augment {
            shift: self.shift,
            hflip: self.hflip,
            rotate: self.rotate,
            scale: self.scale,
            brightness: self.brightness,
            contrast: self.contrast,
        }
    }

    pub(crate) fn optimizer(&self) -> ModuleOptimizer {
        let clip = self
            .grad_clip
            .map(|c| GradientClippingConfig::Norm(c as f32));
        let wd =
            (self.weight_decay > 0.0).then(|| WeightDecayConfig::new(self.weight_decay as f32));
        match self.optimizer {
            OptimizerKind::Sgd => SgdConfig::new()
                .with_momentum((self.momentum > 0.0).then(|| {
                    MomentumConfig::new()
                        .with_momentum(self.momentum)
                        .with_dampening(0.0)
                        .with_nesterov(self.nesterov)
                }))
                .with_weight_decay(wd)
                .with_gradient_clipping(clip)
                .init(),
            OptimizerKind::Adam => AdamConfig::new()
                .with_beta_1(self.beta1 as f32)
                .with_beta_2(self.beta2 as f32)
                .with_epsilon(self.eps as f32)
                .with_weight_decay(wd)
                .with_grad_clipping(clip)
                .init(),
            OptimizerKind::Adamw => AdamWConfig::new()
                .with_beta_1(self.beta1 as f32)
                .with_beta_2(self.beta2 as f32)
                .with_epsilon(self.eps as f32)
                .with_weight_decay(self.weight_decay as f32)
                .with_grad_clipping(clip)
                .init(),
        }
    }
}

fn d_temperature() -> f64 {
    4.0
}
fn d_alpha() -> f64 {
    0.9
}

/// `[distill]`: how a student learns from a teacher (Hinton et al. 2015): the loss is
/// `(1 − alpha)·CE(labels) + alpha·T²·CE(teacher's softmax at T, student's at T)`.
///
/// ```toml
/// [distill]
/// temperature = 4.0   # T: softens both distributions
/// alpha = 0.9         # weight of the teacher's targets against the labels
/// ```
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Distill {
    /// Temperature T (default 4).
    #[serde(default = "d_temperature")]
    pub temperature: f64,
    /// Weight of the teacher's targets, in [0, 1] (default 0.9).
    #[serde(default = "d_alpha")]
    pub alpha: f64,
}

impl Default for Distill {
    fn default() -> Self {
        Self {
            temperature: d_temperature(),
            alpha: d_alpha(),
        }
    }
}

impl Distill {
    pub(crate) fn validate(&self) -> Result<(), TrainError> {
        let fine = self.temperature > 0.0
            && self.temperature.is_finite()
            && (0.0..=1.0).contains(&self.alpha);
        if !fine {
            return Err(TrainError::invalid(
                "[distill]",
                format!(
                    "temperature {} must be positive and alpha {} in [0, 1]",
                    self.temperature, self.alpha
                ),
            ));
        }
        Ok(())
    }
}

/// One epoch's numbers.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochStats {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss (cross-entropy, plus the proximal term when FedProx is on).
    pub train_loss: f64,
    /// Training accuracy on the (augmented) batches.
    pub train_acc: f64,
    /// Learning rate at the end of the epoch.
    pub lr: f64,
    /// Seconds spent training (excluding validation).
    pub train_seconds: f64,
    /// Training throughput.
    pub images_per_s: f64,
    /// Validation accuracy, if a validation set was given.
    pub val_acc: Option<f64>,
    /// Validation macro AUC.
    pub val_auc: Option<f64>,
    /// Validation loss.
    pub val_loss: Option<f64>,
}

/// What [`train`] did.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainReport {
    /// Per epoch.
    pub epochs: Vec<EpochStats>,
    /// Seconds spent training (excluding validation), all epochs.
    pub train_seconds: f64,
    /// Images processed per second of training.
    pub images_per_s: f64,
    /// The epoch whose weights were returned (the last, or the best on validation).
    pub returned_epoch: usize,
    /// With a SCAFFOLD correction: the mean over the run's steps of the loss's gradient without
    /// it (the flat vector's length; 0 where nothing trains), the hospital's next cᵢ.
    #[serde(skip)]
    pub mean_gradient: Option<Vec<f32>>,
}
