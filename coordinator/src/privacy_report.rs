//! The run's differential-privacy guarantee as the coordinator reports it (each hospital
//! enforces its own; see the `privacy` crate): one line at start, ε after every round.

use privacy::Mode;
use protocol::message::RoundMetrics;

use crate::config::FederationConfig;

/// What `simulate` and `status` print about `[privacy]`, if it is on.
pub fn describe(cfg: &FederationConfig) -> anyhow::Result<Option<String>> {
    let p = &cfg.privacy;
    if !p.enabled() {
        return Ok(None);
    }
    let plan = cfg.privacy_plan()?;
    let rounds = cfg.rounds();
    Ok(Some(match p.mode {
        Mode::Hospital => format!(
            "differential privacy per hospital: updates clipped to L2 {} and summed with discrete \
             Gaussian noise σ = {:.3} (multiplier {:.3}; {:.4} from each of ≥ {} hospitals); \
             ε = {:.3} at δ = {:e} after {rounds} rounds{}",
            p.clip,
            plan.noise_multiplier * p.clip,
            plan.noise_multiplier,
            plan.sigma_each(),
            p.quorum.unwrap_or(cfg.min_hospitals()),
            plan.epsilon_after(rounds),
            p.delta,
            if rounds < cfg.federation.rounds {
                format!(
                    " (budget {:.3}: {} rounds configured)",
                    budget(cfg),
                    cfg.federation.rounds
                )
            } else {
                String::new()
            }
        ),
        Mode::Patient => format!(
            "differential privacy per patient: DP-SGD at each hospital (per-example clip {}, \
             {}; Poisson-sampled batches), δ = {:e}; ε per hospital after each round in \
             metrics_per_round.csv",
            p.clip,
            match (p.noise_multiplier, p.target_epsilon) {
                (Some(z), _) => format!("noise multiplier {z}"),
                (None, Some(e)) => format!("each hospital's multiplier set for ε = {e}"),
                _ => String::new(),
            },
            p.delta
        ),
        Mode::Off => return Ok(None),
    }))
}

/// The ε a run may spend: `budget_epsilon`, else `target_epsilon` (∞ without either).
pub(crate) fn budget(cfg: &FederationConfig) -> f64 {
    cfg.privacy
        .budget_epsilon
        .or(cfg.privacy.target_epsilon)
        .unwrap_or(f64::INFINITY)
}

/// ε after round `round` (`NaN` without `[privacy]`): hospital mode from the plan; patient mode
/// the largest over the hospitals that reported, each from its training set's size.
pub fn epsilon_after(cfg: &FederationConfig, round: u64, metrics: &[(u32, RoundMetrics)]) -> f64 {
    match cfg.privacy.mode {
        Mode::Off => f64::NAN,
        Mode::Hospital => cfg
            .privacy_plan()
            .map(|p| p.epsilon_after(round))
            .unwrap_or(f64::NAN),
        Mode::Patient => {
            // one plan per training-set size (a target ε is met by a search per size)
            let mut sizes: Vec<u64> = metrics
                .iter()
                .filter(|(_, m)| m.round == round && m.samples > 0)
                .map(|(_, m)| m.samples)
                .collect();
            sizes.sort_unstable();
            sizes.dedup();
            sizes
                .into_iter()
                .filter_map(|n| cfg.patient_plan(n).ok())
                .map(|p| p.epsilon_after(round))
                .fold(f64::NAN, f64::max)
        }
    }
}
