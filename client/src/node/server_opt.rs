//! Server optimisers, run identically at every hospital on the decrypted average update (the
//! coordinator only adds ciphertexts): FedAvg, FedAvgM (server momentum) and FedAdam (Reddi et
//! al., "Adaptive Federated Optimization", 2021). They act on trainable parameters; batch-norm
//! running statistics are always plainly averaged.

use super::site::ServerOptConfig;
use super::state::ModelState;

/// Applies the average update `delta` (mean of local − global) to `state.global`.
pub fn step(cfg: &ServerOptConfig, state: &mut ModelState, delta: &[f32], trainable: &[bool]) {
    let n = state.global.len();
    debug_assert_eq!(delta.len(), n);
    match cfg.optimizer.as_str() {
        "fedavgm" => {
            state.m.resize(n, 0.0);
            for i in 0..n {
                if trainable[i] {
                    state.m[i] = cfg.momentum as f32 * state.m[i] + delta[i];
                    state.global[i] += cfg.lr as f32 * state.m[i];
                } else {
                    state.global[i] += delta[i];
                }
            }
        }
        "fedadam" => {
            state.m.resize(n, 0.0);
            state.v.resize(n, 0.0);
            let (b1, b2, eps, lr) = (
                cfg.beta1 as f32,
                cfg.beta2 as f32,
                cfg.epsilon as f32,
                cfg.lr as f32,
            );
            for i in 0..n {
                if trainable[i] {
                    state.m[i] = b1 * state.m[i] + (1.0 - b1) * delta[i];
                    state.v[i] = b2 * state.v[i] + (1.0 - b2) * delta[i] * delta[i];
                    state.global[i] += lr * state.m[i] / (state.v[i].sqrt() + eps);
                } else {
                    state.global[i] += delta[i];
                }
            }
        }
        _ => {
            for i in 0..n {
                let lr = if trainable[i] { cfg.lr as f32 } else { 1.0 };
                state.global[i] += lr * delta[i];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(opt: &str) -> ServerOptConfig {
        ServerOptConfig {
            optimizer: opt.into(),
            ..Default::default()
        }
    }

    #[test]
    fn fedavg_with_unit_rate_is_the_average_model() {
        let mut s = ModelState {
            global: vec![1.0, 2.0, 3.0],
            ..Default::default()
        };
        step(
            &cfg("fedavg"),
            &mut s,
            &[0.5, -1.0, 0.25],
            &[true, true, false],
        );
        assert_eq!(s.global, vec![1.5, 1.0, 3.25]);
    }

    #[test]
    fn momentum_accumulates_and_statistics_are_averaged() {
        let mut s = ModelState {
            global: vec![0.0, 0.0],
            ..Default::default()
        };
        let c = ServerOptConfig {
            momentum: 0.5,
            ..cfg("fedavgm")
        };
        step(&c, &mut s, &[1.0, 1.0], &[true, false]);
        step(&c, &mut s, &[1.0, 1.0], &[true, false]);
        // m: 1, then 1.5; statistics move by the plain average each time
        assert_eq!(s.global, vec![2.5, 2.0]);
    }

    #[test]
    fn fedadam_moves_by_about_the_learning_rate() {
        let mut s = ModelState {
            global: vec![0.0],
            ..Default::default()
        };
        let c = ServerOptConfig {
            lr: 0.01,
            epsilon: 1e-8,
            ..cfg("fedadam")
        };
        step(&c, &mut s, &[0.3], &[true]);
        // m = 0.03, v = 0.0009: step = 0.01 · 0.03 / 0.03
        assert!((s.global[0] - 0.01).abs() < 1e-5, "{}", s.global[0]);
    }
}
