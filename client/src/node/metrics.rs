//! The hospital node's `/metrics` for Prometheus (`[node] metrics`): whether it is connected,
//! the round of the model it holds, what it reported of its last round (the figures of its
//! `metrics.csv`), bytes sent and received over the run, and ε spent under `[privacy]`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use ops::prometheus::{Exposition, Kind};
use protocol::message::RoundMetrics;
use tracing::{info, warn};

#[derive(Default)]
struct Figures {
    connected: bool,
    connections: u64,
    /// the round of the model held, as of the last report
    round: u64,
    reports: u64,
    bytes_up: u64,
    bytes_down: u64,
    last: Option<RoundMetrics>,
    epsilon: Option<f64>,
}

/// What the node's endpoint shows; updated as the node works.
#[derive(Default)]
pub(super) struct NodeMetrics {
    figures: Mutex<Figures>,
    /// δ under `[privacy]`
    delta: Option<f64>,
}

impl NodeMetrics {
    pub(super) fn new(delta: Option<f64>) -> Arc<Self> {
        Arc::new(Self {
            figures: Mutex::default(),
            delta,
        })
    }

    fn with(&self, f: impl FnOnce(&mut Figures)) {
        f(&mut self.figures.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub(super) fn connected(&self, yes: bool) {
        self.with(|g| {
            g.connections += u64::from(yes && !g.connected);
            g.connected = yes;
        });
    }

    /// A round's report, as sent to the coordinator, and ε after it.
    pub(super) fn reported(&self, m: &RoundMetrics, epsilon: Option<f64>) {
        self.with(|g| {
            g.round = g.round.max(m.round);
            g.reports += 1;
            g.bytes_up += m.bytes_up;
            g.bytes_down += m.bytes_down;
            g.last = Some(m.clone());
            g.epsilon = epsilon;
        });
    }

    fn text(&self) -> String {
        let g = self.figures.lock().unwrap_or_else(|e| e.into_inner());
        let last = |f: fn(&RoundMetrics) -> f64| g.last.as_ref().map_or(f64::NAN, f);
        let mut e = Exposition::default();
        e.one(
            Kind::Gauge,
            "heal_node_connected",
            "1 while connected to the coordinator.",
            f64::from(u8::from(g.connected)),
        )
        .one(
            Kind::Counter,
            "heal_node_connections_total",
            "Connections made to the coordinator.",
            g.connections as f64,
        )
        .one(
            Kind::Gauge,
            "heal_node_round",
            "Round of the global model this hospital holds (as of its last report).",
            g.round as f64,
        )
        .one(
            Kind::Counter,
            "heal_node_rounds_reported_total",
            "Rounds this hospital trained, applied and reported.",
            g.reports as f64,
        )
        .one(
            Kind::Counter,
            "heal_node_bytes_up_total",
            "Bytes of updates this hospital sent (metrics.csv: bytes_up summed).",
            g.bytes_up as f64,
        )
        .one(
            Kind::Counter,
            "heal_node_bytes_down_total",
            "Bytes of results this hospital received (metrics.csv: bytes_down summed).",
            g.bytes_down as f64,
        )
        .family(
            Kind::Gauge,
            "heal_node_phase_seconds",
            "Seconds per phase of the last reported round.",
            &[
                (&[("phase", "train")], last(|m| f64::from(m.train_s))),
                (&[("phase", "encrypt")], last(|m| f64::from(m.encrypt_s))),
                (&[("phase", "upload")], last(|m| f64::from(m.upload_s))),
                (&[("phase", "switch")], last(|m| f64::from(m.switch_s))),
                (&[("phase", "decrypt")], last(|m| f64::from(m.decrypt_s))),
            ],
        )
        .one(
            Kind::Gauge,
            "heal_node_val_auc",
            "Validation AUC of the last reported round's model on this hospital's images.",
            last(|m| f64::from(m.val_auc)),
        )
        .one(
            Kind::Gauge,
            "heal_node_test_auc",
            "Test AUC of the last reported round's model (NaN when that round was not tested).",
            last(|m| f64::from(m.test_auc)),
        );
        if let Some(delta) = self.delta {
            e.one(
                Kind::Gauge,
                "heal_node_privacy_epsilon",
                "Differential privacy this hospital has spent (ε at heal_node_privacy_delta).",
                g.epsilon.unwrap_or(0.0),
            )
            .one(
                Kind::Gauge,
                "heal_node_privacy_delta",
                "δ of this hospital's guarantee.",
                delta,
            );
        }
        e.text().to_string()
    }

    /// Serves the endpoint on `addr` (port 0: any free one) and writes the bound address to
    /// `metrics-address` in `out` for scripts; a failure is a warning, never fatal.
    pub(super) async fn serve(self: &Arc<Self>, addr: SocketAddr, out: &Path) {
        let me = self.clone();
        match ops::prometheus::serve(addr, Arc::new(move || me.text())).await {
            Ok(bound) => {
                info!(address = %bound, "metrics for Prometheus at http://{bound}/metrics");
                let file = out.join("metrics-address");
                if let Err(e) = std::fs::write(&file, format!("{bound}\n")) {
                    warn!("cannot write {}: {e}", file.display());
                }
            }
            Err(e) => warn!("metrics endpoint not started on {addr}: {e} ([node] metrics)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_add_up_and_connections_count_once() {
        let m = NodeMetrics::new(Some(1e-5));
        m.connected(true);
        m.connected(true);
        let r = |round, up| RoundMetrics {
            round,
            bytes_up: up,
            bytes_down: 10,
            ..Default::default()
        };
        m.reported(&r(1, 100), Some(1.5));
        m.reported(&r(2, 50), Some(2.5));
        m.connected(false);
        let t = m.text();
        for want in [
            "heal_node_connected 0\n",
            "heal_node_connections_total 1\n",
            "heal_node_round 2\n",
            "heal_node_bytes_up_total 150\n",
            "heal_node_bytes_down_total 20\n",
            "heal_node_privacy_epsilon 2.5\n",
        ] {
            assert!(t.contains(want), "{want} in\n{t}");
        }
        assert!(!NodeMetrics::new(None).text().contains("privacy"));
    }
}
