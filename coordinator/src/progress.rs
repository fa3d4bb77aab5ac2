//! A run's progress as every report reads it — `simulate`'s tables and `summary.json`, the
//! Prometheus endpoint, `status --json` — so they agree: per-round means over the hospitals
//! that reported, and the run's summary.

use ops::run_report::{RoundRow, RunSummary, TimeSplit};
use protocol::message::RoundMetrics;

use crate::config::FederationConfig;
use crate::store::RoundRecord;

fn mean(v: &[&RoundMetrics], f: impl Fn(&RoundMetrics) -> f32) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().map(|m| f(m) as f64).sum::<f64>() / v.len() as f64
    }
}

/// Per-round means over the hospitals that reported.
pub fn per_round(
    cfg: &FederationConfig,
    metrics: &[(u32, RoundMetrics)],
    rounds: &[RoundRecord],
) -> Vec<RoundRow> {
    rounds
        .iter()
        .map(|r| {
            let ms: Vec<&RoundMetrics> = metrics
                .iter()
                .filter(|(_, m)| m.round == r.round)
                .map(|(_, m)| m)
                .collect();
            RoundRow {
                round: r.round,
                hospitals: ms.len() as u64,
                test_acc: mean(&ms, |m| m.test_acc),
                test_auc: mean(&ms, |m| m.test_auc),
                val_loss: mean(&ms, |m| m.val_loss),
                train_loss: mean(&ms, |m| m.train_loss),
                train_s: mean(&ms, |m| m.train_s),
                encrypt_s: mean(&ms, |m| m.encrypt_s),
                upload_s: mean(&ms, |m| m.upload_s),
                switch_s: mean(&ms, |m| m.switch_s),
                decrypt_s: mean(&ms, |m| m.decrypt_s),
                aggregate_s: r.aggregate_s,
                coordinator_switch_s: r.switch_s,
                round_s: r.committed_unix_ms.saturating_sub(r.started_unix_ms) as f64 / 1e3,
                bytes_up: r.bytes_up,
                bytes_down: r.bytes_down,
                epsilon: crate::privacy_report::epsilon_after(cfg, r.round, metrics),
            }
        })
        .collect()
}

/// The run's summary after the committed `rounds` (`wall_s`: the run's own clock, 0 where
/// there is none; `mia_auc` is left for `simulate` to fill in).
pub fn summary(
    cfg: &FederationConfig,
    per_round: &[RoundRow],
    rounds: &[RoundRecord],
    wall_s: f64,
) -> RunSummary {
    let last = per_round.last().cloned().unwrap_or_default();
    let sum = |f: fn(&RoundRow) -> f64| per_round.iter().map(f).sum::<f64>();
    RunSummary {
        name: cfg.federation.name.clone(),
        rounds: rounds.len() as u64,
        hospitals: cfg.federation.hospitals,
        threshold: cfg.threshold(),
        plaintext: cfg.he.plaintext,
        final_test_auc: finite(last.test_auc),
        final_test_acc: finite(last.test_acc),
        wall_s,
        bytes_up: rounds.iter().map(|r| r.bytes_up).sum(),
        bytes_down: rounds.iter().map(|r| r.bytes_down).sum(),
        mean_round_s: if per_round.is_empty() {
            0.0
        } else {
            sum(|r| r.round_s) / per_round.len() as f64
        },
        time_split_s: TimeSplit {
            train: sum(|r| r.train_s),
            encrypt: sum(|r| r.encrypt_s),
            upload: sum(|r| r.upload_s),
            aggregate: sum(|r| r.aggregate_s),
            switch: sum(|r| r.switch_s),
            decrypt: sum(|r| r.decrypt_s),
        },
        epsilon: finite(last.epsilon),
        delta: cfg.privacy.enabled().then_some(cfg.privacy.delta),
        mia_auc: None,
    }
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}
