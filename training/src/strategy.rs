//! The federation's strategy, named as Flower names its parts, though HEAL splits them across
//! parties so that no one sees a model update in the clear:
//!
//! - **configure**: what every hospital trains with each round — the federation config's
//!   `[model]` and `[train]` sections, copied into every site kit by `coordinator provision`;
//! - **aggregate**: the weighted sum of the encrypted updates (weights = sample counts), done
//!   by the coordinator on ciphertexts only (`he_agg::aggregate`), then re-encrypted to the
//!   consortium's receiving key by t hospitals;
//! - **apply**: the server optimiser below — FedAvg, FedAvgM (server momentum) or FedAdam
//!   (Reddi et al., "Adaptive Federated Optimization", 2021) — run identically by every hospital
//!   on the decrypted average update, since the coordinator cannot run it on ciphertexts.
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

/// Applies the average update `delta` (mean of local − global) to `global`.
pub fn apply(
    cfg: &ServerOptConfig,
    global: &mut [f32],
    moments: Moments<'_>,
    delta: &[f32],
    trainable: &[bool],
) {
    let n = global.len();
    debug_assert_eq!(delta.len(), n);
    let Moments { m, v } = moments;
    match cfg.optimizer {
        ServerOptimizer::FedAvgM => {
            m.resize(n, 0.0);
            for i in 0..n {
                if trainable[i] {
                    m[i] = cfg.momentum as f32 * m[i] + delta[i];
                    global[i] += cfg.lr as f32 * m[i];
                } else {
                    global[i] += delta[i];
                }
            }
        }
        ServerOptimizer::FedAdam => {
            m.resize(n, 0.0);
            v.resize(n, 0.0);
            let (b1, b2, eps, lr) = (
                cfg.beta1 as f32,
                cfg.beta2 as f32,
                cfg.epsilon as f32,
                cfg.lr as f32,
            );
            for i in 0..n {
                if trainable[i] {
                    m[i] = b1 * m[i] + (1.0 - b1) * delta[i];
                    v[i] = b2 * v[i] + (1.0 - b2) * delta[i] * delta[i];
                    global[i] += lr * m[i] / (v[i].sqrt() + eps);
                } else {
                    global[i] += delta[i];
                }
            }
        }
        ServerOptimizer::FedAvg => {
            for i in 0..n {
                let lr = if trainable[i] { cfg.lr as f32 } else { 1.0 };
                global[i] += lr * delta[i];
            }
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
        apply(c, global, Moments { m, v: &mut v }, delta, t);
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
        apply(
            &c,
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
}
