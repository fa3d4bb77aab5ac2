//! `/metrics` for Prometheus: the text exposition format (version 0.0.4) and the small HTTP
//! endpoint that serves it, shared by the coordinator and the hospital nodes. The endpoint
//! answers `GET /metrics` only, from a snapshot made per scrape, and is meant for a loopback or
//! management address (the config says which; nothing on it is secret, and nothing it takes in
//! reaches the federation).

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// The longest a `/metrics` endpoint may keep answering after its run finished
/// (`metrics_linger_s` in `[coordinator]` and `[node]`): an hour.
pub const MAX_LINGER_S: u64 = 3600;

/// How long `/metrics` keeps answering after a run finished: `linger_s`, none when the
/// endpoint is `"off"`.
pub fn linger(metrics: &str, linger_s: u64) -> std::time::Duration {
    match metrics {
        "off" => std::time::Duration::ZERO,
        _ => std::time::Duration::from_secs(linger_s),
    }
}

/// Waits `linger` (from [`linger`]) so the endpoint answers a few more scrapes, saying so;
/// `section` names the config key (`[coordinator]`, `[node]`).
pub async fn hold(linger: std::time::Duration, section: &str) {
    if !linger.is_zero() {
        tracing::info!(
            "/metrics answers for {} s more ({section} metrics_linger_s)",
            linger.as_secs()
        );
        tokio::time::sleep(linger).await;
    }
}

/// A metric family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// A scrape's text, family by family.
#[derive(Default)]
pub struct Exposition(String);

fn value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Exposition {
    /// One family of one unlabelled sample.
    pub fn one(&mut self, kind: Kind, name: &str, help: &str, v: f64) -> &mut Self {
        self.family(kind, name, help, &[(&[], v)])
    }

    /// One family with a sample per label set.
    pub fn family(
        &mut self,
        kind: Kind,
        name: &str,
        help: &str,
        samples: &[(&[(&str, &str)], f64)],
    ) -> &mut Self {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.0, "# HELP {name} {}", help.replace('\n', " "));
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            let labels = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect::<Vec<_>>()
                .join(",");
            let labels = if labels.is_empty() {
                String::new()
            } else {
                format!("{{{labels}}}")
            };
            let _ = writeln!(self.0, "{name}{labels} {}", value(*v));
        }
        self
    }

    pub fn text(&self) -> &str {
        &self.0
    }
}

/// What a scrape reads: called once per `GET /metrics`.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Binds `addr` (refused with the reason, e.g. an address in use) and serves `render` on
/// `GET /metrics` until the process ends; returns the bound address (port 0 picks one).
pub async fn serve(addr: SocketAddr, render: Render) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let render = render.clone();
            async move {
                let body = tokio::task::spawn_blocking(move || render())
                    .await
                    .unwrap_or_else(|e| format!("# the snapshot failed: {e}\n"));
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    body,
                )
                    .into_response()
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("metrics endpoint stopped: {e}");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format() {
        let mut e = Exposition::default();
        e.one(Kind::Counter, "heal_bytes_up_total", "Bytes\nup.", 1.5e9)
            .family(
                Kind::Gauge,
                "heal_phase_seconds",
                "Seconds per phase.",
                &[(&[("phase", "a\"b")], f64::NAN), (&[("phase", "x")], 2.0)],
            );
        assert_eq!(
            e.text(),
            "# HELP heal_bytes_up_total Bytes up.\n# TYPE heal_bytes_up_total counter\n\
             heal_bytes_up_total 1500000000\n# HELP heal_phase_seconds Seconds per phase.\n\
             # TYPE heal_phase_seconds gauge\nheal_phase_seconds{phase=\"a\\\"b\"} NaN\n\
             heal_phase_seconds{phase=\"x\"} 2\n"
        );
    }

    #[tokio::test]
    async fn serves_get_metrics_only() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = serve(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(|| "heal_up 1\n".to_string()),
        )
        .await
        .unwrap();
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let ok = tokio::time::timeout(std::time::Duration::from_secs(10), get("/metrics"))
            .await
            .unwrap();
        assert!(
            ok.starts_with("HTTP/1.1 200") && ok.ends_with("heal_up 1\n"),
            "{ok}"
        );
        assert!(ok.contains("text/plain; version=0.0.4"));
        let other = tokio::time::timeout(std::time::Duration::from_secs(10), get("/other"))
            .await
            .unwrap();
        assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    }
}
