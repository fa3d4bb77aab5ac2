//! The coordinator's `/metrics` for Prometheus: the run's progress as `summary.json` states it
//! (`crate::progress`, read from the store per scrape) and the live state of the links.

use std::sync::atomic::Ordering;

use ops::prometheus::{Exposition, Kind};

use super::{Server, lock};
use crate::progress;

impl Server {
    /// One scrape's text.
    pub(super) fn metrics_text(&self) -> String {
        let mut e = Exposition::default();
        let (rounds, metrics) = match (self.store.rounds(), self.store.metrics()) {
            (Ok(r), Ok(m)) => (r, m),
            (Err(err), _) | (_, Err(err)) => {
                tracing::warn!("metrics: the state store could not be read: {err}");
                e.one(
                    Kind::Gauge,
                    "heal_state_readable",
                    "Whether the state store could be read.",
                    0.0,
                );
                return e.text().to_string();
            }
        };
        let per_round = progress::per_round(&self.cfg, &metrics, &rounds);
        let s = progress::summary(&self.cfg, &per_round, &rounds, 0.0);
        let nan = |v: Option<f64>| v.unwrap_or(f64::NAN);
        let phases = [
            ("train", s.time_split_s.train),
            ("encrypt", s.time_split_s.encrypt),
            ("upload", s.time_split_s.upload),
            ("aggregate", s.time_split_s.aggregate),
            ("switch", s.time_split_s.switch),
            ("decrypt", s.time_split_s.decrypt),
        ];
        let phases: Vec<([(&str, &str); 1], f64)> =
            phases.iter().map(|(p, v)| ([("phase", *p)], *v)).collect();
        let phases: Vec<(&[(&str, &str)], f64)> =
            phases.iter().map(|(l, v)| (&l[..], *v)).collect();
        e.one(
            Kind::Gauge,
            "heal_state_readable",
            "Whether the state store could be read.",
            1.0,
        )
        .one(
            Kind::Gauge,
            "heal_rounds_committed",
            "Rounds committed (summary.json: rounds).",
            s.rounds as f64,
        )
        .one(
            Kind::Gauge,
            "heal_rounds_planned",
            "Rounds the run makes: the configured ones, fewer when the privacy budget ends it.",
            self.cfg.rounds() as f64,
        )
        .one(
            Kind::Gauge,
            "heal_finished",
            "1 once every round is committed.",
            f64::from(u8::from(
                self.finished.load(Ordering::Relaxed) || lock(&self.federation_state).is_finished(),
            )),
        )
        .one(
            Kind::Gauge,
            "heal_hospitals",
            "Hospitals in the consortium.",
            f64::from(self.cfg.federation.hospitals),
        )
        .one(
            Kind::Gauge,
            "heal_hospitals_connected",
            "Hospitals connected now.",
            lock(&self.links).len() as f64,
        )
        .one(
            Kind::Gauge,
            "heal_round_participants",
            "Hospitals whose updates the last committed round summed.",
            rounds.last().map_or(0.0, |r| r.participants.len() as f64),
        )
        .one(
            Kind::Counter,
            "heal_bytes_up_total",
            "Bytes the hospitals sent in committed rounds (summary.json: bytes_up).",
            s.bytes_up as f64,
        )
        .one(
            Kind::Counter,
            "heal_bytes_down_total",
            "Bytes sent to the hospitals for committed rounds: switch requests and each receiver's result (summary.json: bytes_down).",
            s.bytes_down as f64,
        )
        .one(
            Kind::Gauge,
            "heal_round_seconds_mean",
            "Mean duration of a committed round (summary.json: mean_round_s).",
            s.mean_round_s,
        )
        .family(
            Kind::Counter,
            "heal_phase_seconds_total",
            "Seconds per phase over the committed rounds, each round's mean over the hospitals \
                 that reported (summary.json: time_split_s).",
            &phases,
        )
        .one(
            Kind::Gauge,
            "heal_test_auc",
            "Test AUC of the last committed round's model, mean over the hospitals (NaN when \
                 that round was not tested).",
            nan(s.final_test_auc),
        )
        .one(
            Kind::Gauge,
            "heal_test_accuracy",
            "Test accuracy of the last committed round's model, mean over the hospitals.",
            nan(s.final_test_acc),
        )
        .one(
            Kind::Counter,
            "heal_refusals_total",
            "Connections and messages refused since this coordinator started.",
            self.refused_total.load(Ordering::Relaxed) as f64,
        );
        self.liveness(&mut e, &rounds);
        if self.cfg.privacy.enabled() {
            e.one(
                Kind::Gauge,
                "heal_privacy_epsilon",
                "Differential privacy spent after the last committed round (ε at heal_privacy_delta).",
                nan(s.epsilon),
            )
            .one(
                Kind::Gauge,
                "heal_privacy_delta",
                "δ of the differential-privacy guarantee.",
                self.cfg.privacy.delta,
            )
            .one(
                Kind::Gauge,
                "heal_privacy_epsilon_budget",
                "The ε the run may spend ([privacy] budget_epsilon, else target_epsilon; +Inf \
                 without either).",
                crate::privacy_report::budget(&self.cfg),
            );
        }
        e.text().to_string()
    }

    /// What the alert rules of `packaging/prometheus/heal-alerts.yml` watch besides the totals:
    /// the last committed round each hospital's update was in, and how long the round under way
    /// has been open against its deadline.
    fn liveness(&self, e: &mut Exposition, rounds: &[crate::store::RoundRecord]) {
        let mut last = vec![0u64; self.cfg.federation.hospitals as usize];
        for r in rounds {
            for &(h, _) in &r.participants {
                if let Some(slot) = (h as usize).checked_sub(1).and_then(|i| last.get_mut(i)) {
                    *slot = (*slot).max(r.round);
                }
            }
        }
        let names: Vec<String> = (1..=last.len()).map(|h| h.to_string()).collect();
        let labels: Vec<[(&str, &str); 1]> =
            names.iter().map(|n| [("hospital", n.as_str())]).collect();
        let samples: Vec<(&[(&str, &str)], f64)> = labels
            .iter()
            .zip(&last)
            .map(|(l, &r)| (&l[..], r as f64))
            .collect();
        let committed = rounds.last().map_or(0, |r| r.round);
        let finished = self.finished.load(Ordering::Relaxed);
        let open = match *lock(&self.round_opened) {
            Some((round, at)) if round > committed && !finished => at.elapsed().as_secs_f64(),
            _ => 0.0,
        };
        e.family(
            Kind::Gauge,
            "heal_hospital_last_round",
            "The last committed round whose sum held this hospital's update (0: none yet).",
            &samples,
        )
        .one(
            Kind::Gauge,
            "heal_round_open_seconds",
            "Seconds since the round under way was announced (0 when none is open).",
            open,
        )
        .one(
            Kind::Gauge,
            "heal_round_deadline_seconds",
            "A round's deadline ([federation] round_timeout_s).",
            self.cfg.federation.round_timeout_s as f64,
        );
    }
}
