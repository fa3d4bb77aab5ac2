//! The federation's strategy, named as Flower names its parts, though HEAL splits them across
//! parties so that no one sees a model update in the clear:
//!
//! - **configure**: what every hospital trains with each round — the federation config's
//!   `[model]` and `[train]` sections, copied into every site kit by `coordinator provision`;
//! - **aggregate**: the weighted sum of the encrypted updates (weights = sample counts), done
//!   by the coordinator on ciphertexts only (`he_agg::aggregate`), then re-encrypted to the
//!   consortium's receiving key by t hospitals;
//! - **apply**: a [`Strategy`] — [`FedAvg`], [`FedAvgM`] (server momentum) or [`FedAdam`]
//!   (Reddi et al., "Adaptive Federated Optimization", 2021), wrapped in [`Private`] under
//!   `[privacy]` — run identically by every hospital on the decrypted average update, since the
//!   coordinator cannot run it on ciphertexts.
//!
//! The optimisers act on trainable parameters; batch-norm running statistics are always plainly
//! averaged.

use serde::{Deserialize, Serialize};

/// The server optimiser of `[server] optimizer`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerOptimizer {
    /// The (learning-rate-scaled) average: with `lr = 1`, plain federated averaging.
    #[default]
    FedAvg,
    /// Server momentum.
    FedAvgM,
    /// Adam on the average update.
    FedAdam,
}

/// `[server]`: the server optimiser every hospital applies, identically, to the decrypted average.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerOptConfig {
    /// `fedavg`, `fedavgm` or `fedadam`.
    #[serde(default)]
    pub optimizer: ServerOptimizer,
    /// Server learning rate (1 with fedavg is plain averaging).
    #[serde(default = "one")]
    pub lr: f64,
    /// fedavgm momentum.
    #[serde(default = "momentum")]
    pub momentum: f64,
    /// fedadam β1, β2, τ.
    #[serde(default = "beta1")]
    pub beta1: f64,
    #[serde(default = "beta2")]
    pub beta2: f64,
    #[serde(default = "tau")]
    pub epsilon: f64,
}

fn one() -> f64 {
    1.0
}
fn momentum() -> f64 {
    0.9
}
fn beta1() -> f64 {
    0.9
}
fn beta2() -> f64 {
    0.99
}
fn tau() -> f64 {
    1e-3
}

impl Default for ServerOptConfig {
    fn default() -> Self {
        Self {
            optimizer: ServerOptimizer::FedAvg,
            lr: 1.0,
            momentum: momentum(),
            beta1: beta1(),
            beta2: beta2(),
            epsilon: tau(),
        }
    }
}

impl ServerOptConfig {
    /// Refuses settings no optimiser can run with, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(format!("[server] lr = {}: must be positive", self.lr));
        }
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            return Err(format!(
                "[server] epsilon = {}: must be positive",
                self.epsilon
            ));
        }
        for (key, v) in [
            ("momentum", self.momentum),
            ("beta1", self.beta1),
            ("beta2", self.beta2),
        ] {
            if !(0.0..1.0).contains(&v) {
                return Err(format!("[server] {key} = {v}: must be in [0, 1)"));
            }
        }
        Ok(())
    }
}

/// The server optimiser's state, kept by each hospital between rounds.
#[derive(Debug)]
pub struct Moments<'a> {
    /// fedavgm momentum, or fedadam first moment (grown to the model's length on first use).
    pub m: &'a mut Vec<f32>,
    /// fedadam second moment.
    pub v: &'a mut Vec<f32>,
}

/// What applying one round's average did beyond the optimiser's step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Batch-norm variances raised to the floor (a noised average can make them ≤ 0).
    pub raised: usize,
}

/// The **apply** part of a strategy: what every hospital runs, identically, on the decrypted
/// average update of a round. Implemented by [`FedAvg`], [`FedAvgM`] and [`FedAdam`];
/// [`Private`] wraps any of them for a run under `[privacy]`.
pub trait Strategy: Send + Sync {
    /// The name `[server] optimizer` gives it.
    fn name(&self) -> &'static str;
    /// Applies the average update `delta` (mean of local − global) to `global`; `moments` is
    /// the optimiser's state between rounds, `trainable` tells parameters from batch-norm
    /// statistics (always plainly averaged).
    fn apply(
        &self,
        global: &mut [f32],
        moments: Moments<'_>,
        delta: &[f32],
        trainable: &[bool],
    ) -> Applied;
}

/// The (learning-rate-scaled) average: with `lr = 1`, plain federated averaging.
#[derive(Clone, Copy, Debug)]
pub struct FedAvg {
    pub lr: f32,
}

/// Server momentum.
#[derive(Clone, Copy, Debug)]
pub struct FedAvgM {
    pub lr: f32,
    pub momentum: f32,
}

/// Adam on the average update (Reddi et al. 2021).
#[derive(Clone, Copy, Debug)]
pub struct FedAdam {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub epsilon: f32,
}

impl Strategy for FedAvg {
    fn name(&self) -> &'static str {
        "fedavg"
    }
    fn apply(
        &self,
        global: &mut [f32],
        _: Moments<'_>,
        delta: &[f32],
        trainable: &[bool],
    ) -> Applied {
        for i in 0..global.len() {
            let lr = if trainable[i] { self.lr } else { 1.0 };
            global[i] += lr * delta[i];
        }
        Applied::default()
    }
}

impl Strategy for FedAvgM {
    fn name(&self) -> &'static str {
        "fedavgm"
    }
    fn apply(
        &self,
        global: &mut [f32],
        moments: Moments<'_>,
        delta: &[f32],
        trainable: &[bool],
    ) -> Applied {
        let m = moments.m;
        m.resize(global.len(), 0.0);
        for i in 0..global.len() {
            if trainable[i] {
                m[i] = self.momentum * m[i] + delta[i];
                global[i] += self.lr * m[i];
            } else {
                global[i] += delta[i];
            }
        }
        Applied::default()
    }
}

impl Strategy for FedAdam {
    fn name(&self) -> &'static str {
        "fedadam"
    }
    fn apply(
        &self,
        global: &mut [f32],
        moments: Moments<'_>,
        delta: &[f32],
        trainable: &[bool],
    ) -> Applied {
        let Moments { m, v } = moments;
        let n = global.len();
        m.resize(n, 0.0);
        v.resize(n, 0.0);
        let (b1, b2) = (self.beta1, self.beta2);
        for i in 0..n {
            if trainable[i] {
                m[i] = b1 * m[i] + (1.0 - b1) * delta[i];
                v[i] = b2 * v[i] + (1.0 - b2) * delta[i] * delta[i];
                global[i] += self.lr * m[i] / (v[i].sqrt() + self.epsilon);
            } else {
                global[i] += delta[i];
            }
        }
        Applied::default()
    }
}

/// A strategy under `[privacy]`: the inner step on the noised average, then the batch-norm
/// variances the noise pushed below `floor` raised to it (the noise itself is added inside the
/// encrypted sum or by DP-SGD; this keeps the released model valid).
pub struct Private<S> {
    pub inner: S,
    /// The flat vector's layout (which entries are running variances).
    pub manifest: crate::params::ParamManifest,
    pub floor: f32,
}

impl<S: Strategy> Strategy for Private<S> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn apply(
        &self,
        global: &mut [f32],
        moments: Moments<'_>,
        delta: &[f32],
        trainable: &[bool],
    ) -> Applied {
        let mut applied = self.inner.apply(global, moments, delta, trainable);
        applied.raised += crate::params::keep_valid(&self.manifest, global, self.floor);
        applied
    }
}

impl Strategy for Box<dyn Strategy> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn apply(
        &self,
        global: &mut [f32],
        moments: Moments<'_>,
        delta: &[f32],
        trainable: &[bool],
    ) -> Applied {
        (**self).apply(global, moments, delta, trainable)
    }
}

impl ServerOptConfig {
    /// The strategy `[server]` names.
    pub fn strategy(&self) -> Box<dyn Strategy> {
        let lr = self.lr as f32;
        match self.optimizer {
            ServerOptimizer::FedAvg => Box::new(FedAvg { lr }),
            ServerOptimizer::FedAvgM => Box::new(FedAvgM {
                lr,
                momentum: self.momentum as f32,
            }),
            ServerOptimizer::FedAdam => Box::new(FedAdam {
                lr,
                beta1: self.beta1 as f32,
                beta2: self.beta2 as f32,
                epsilon: self.epsilon as f32,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(optimizer: ServerOptimizer) -> ServerOptConfig {
        ServerOptConfig {
            optimizer,
            ..Default::default()
        }
    }

    fn run(c: &ServerOptConfig, global: &mut [f32], m: &mut Vec<f32>, delta: &[f32], t: &[bool]) {
        let mut v = Vec::new();
        c.strategy()
            .apply(global, Moments { m, v: &mut v }, delta, t);
    }

    #[test]
    fn fedavg_with_unit_rate_is_the_average_model() {
        let mut g = vec![1.0, 2.0, 3.0];
        let c = cfg(ServerOptimizer::FedAvg);
        run(
            &c,
            &mut g,
            &mut Vec::new(),
            &[0.5, -1.0, 0.25],
            &[true, true, false],
        );
        assert_eq!(g, vec![1.5, 1.0, 3.25]);
    }

    #[test]
    fn momentum_accumulates_and_statistics_are_averaged() {
        let (mut g, mut m) = (vec![0.0, 0.0], Vec::new());
        let c = ServerOptConfig {
            momentum: 0.5,
            ..cfg(ServerOptimizer::FedAvgM)
        };
        run(&c, &mut g, &mut m, &[1.0, 1.0], &[true, false]);
        run(&c, &mut g, &mut m, &[1.0, 1.0], &[true, false]);
        // m: 1, then 1.5; statistics move by the plain average each time
        assert_eq!(g, vec![2.5, 2.0]);
    }

    #[test]
    fn fedadam_moves_by_about_the_learning_rate() {
        let (mut g, mut m, mut v) = (vec![0.0], Vec::new(), Vec::new());
        let c = ServerOptConfig {
            lr: 0.01,
            epsilon: 1e-8,
            ..cfg(ServerOptimizer::FedAdam)
        };
        c.strategy().apply(
            &mut g,
            Moments {
                m: &mut m,
                v: &mut v,
            },
            &[0.3],
            &[true],
        );
        // m = 0.03, v = 0.0009: step = 0.01 · 0.03 / 0.03
        assert!((g[0] - 0.01).abs() < 1e-5, "{}", g[0]);
    }

    #[test]
    fn config_names_the_optimizer_and_refuses_bad_values() {
        let c: ServerOptConfig = toml::from_str("optimizer = \"fedadam\"\nlr = 0.01").unwrap();
        assert_eq!(c.optimizer, ServerOptimizer::FedAdam);
        assert!(c.validate().is_ok());
        let e = toml::from_str::<ServerOptConfig>("optimizer = \"fedprox\"").unwrap_err();
        assert!(e.to_string().contains("fedavgm"), "{e}");
        let bad = ServerOptConfig {
            momentum: 1.0,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("momentum"));
    }

    #[test]
    fn each_optimizer_is_a_strategy_named_as_configured() {
        for (o, name) in [
            (ServerOptimizer::FedAvg, "fedavg"),
            (ServerOptimizer::FedAvgM, "fedavgm"),
            (ServerOptimizer::FedAdam, "fedadam"),
        ] {
            assert_eq!(cfg(o).strategy().name(), name);
        }
    }

    #[test]
    fn the_private_wrapper_steps_then_raises_variances_the_noise_pushed_below_the_floor() {
        use crate::params::{ParamEntry, ParamManifest};
        let manifest = ParamManifest {
            entries: vec![
                ParamEntry {
                    name: "0.conv.weight".into(),
                    shape: vec![2],
                    offset: 0,
                    len: 2,
                    trainable: true,
                },
                ParamEntry {
                    name: "1.bn.running_var".into(),
                    shape: vec![2],
                    offset: 2,
                    len: 2,
                    trainable: false,
                },
            ],
            total: 4,
            format: "heal-params/1".into(),
        };
        let s = Private {
            inner: FedAvg { lr: 1.0 },
            manifest,
            floor: 1e-3,
        };
        let mut g = vec![0.0, 0.0, 1.0, 1.0];
        let (mut m, mut v) = (Vec::new(), Vec::new());
        let moments = Moments {
            m: &mut m,
            v: &mut v,
        };
        let applied = s.apply(
            &mut g,
            moments,
            &[0.5, -0.5, -2.0, 0.5],
            &[true, true, false, false],
        );
        assert_eq!(applied.raised, 1);
        assert_eq!(g, vec![0.5, -0.5, 1e-3, 1.5]);
    }
}
