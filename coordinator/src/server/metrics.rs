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
            );
        }
        e.text().to_string()
    }
}
