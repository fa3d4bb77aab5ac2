//! The Training page, read from the node's own outputs: `client run --out DIR` (`metrics.csv`,
//! through `ops::metrics_file`, the module the node writes it with),
//! or a `coordinator simulate` output directory (`metrics_per_round.csv`,
//! `metrics_per_hospital.csv`, `summary.json`, through `ops::run_report`). Audit entries are shown from `audit.jsonl` in
//! that directory when the operator exported the coordinator's log there. Every file is
//! size-bounded and validated; a bad row is an error on the page, not a guess.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use ops::run_report::{self, RunSummary};
use serde::Deserialize;

use super::Portal;
use super::auth::SignedIn;
use super::chart::{Series, line_chart};
use super::error::PortalError;
use super::pages::{Nav, esc, layout, utc};

const MAX_FILE: u64 = 16 << 20;
const MAX_AUDIT_SHOWN: usize = 200;

/// One round as shown.
#[derive(Clone, Debug, Default)]
pub struct RoundRow {
    pub round: u64,
    pub participants: Vec<u32>,
    pub hospitals: Option<u64>,
    pub val_acc: f64,
    pub val_auc: f64,
    pub test_acc: f64,
    pub test_auc: f64,
}

/// One audit entry (the coordinator's `AuditEntry`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRow {
    pub unix_ms: u64,
    pub hospital: Option<u32>,
    pub round: u64,
    pub event: String,
    pub detail: String,
}

/// What the page shows.
#[derive(Clone, Debug, Default)]
pub struct TrainingData {
    /// `node` or `simulation`.
    pub layout: &'static str,
    pub rows: Vec<RoundRow>,
    pub summary: Option<RunSummary>,
    pub audit: Option<Vec<AuditRow>>,
}

fn read_bounded(path: &Path) -> Result<Option<String>, PortalError> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() > MAX_FILE => Err(PortalError::invalid(path, "larger than 16 MiB")),
        Ok(_) => std::fs::read_to_string(path)
            .map(Some)
            .map_err(|e| PortalError::io(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PortalError::io(path, e)),
    }
}

/// Reads what `dir` holds, for hospital `me`.
pub fn load(dir: &Path, me: Option<u32>) -> Result<TrainingData, PortalError> {
    let per_round = dir.join(format!("{}.csv", run_report::PER_ROUND));
    let mut data = TrainingData::default();
    if let Some(text) = read_bounded(&per_round)? {
        // simulate's tables, read through the module it writes them with
        data.layout = "simulation";
        let mut rows: BTreeMap<u64, RoundRow> = run_report::parse_rounds(&text)
            .map_err(|e| PortalError::invalid(&per_round, e.to_string()))?
            .into_iter()
            .map(|r| {
                let row = RoundRow {
                    round: r.round,
                    hospitals: Some(r.hospitals),
                    val_acc: f64::NAN,
                    val_auc: f64::NAN,
                    test_acc: r.test_acc,
                    test_auc: r.test_auc,
                    participants: Vec::new(),
                };
                (r.round, row)
            })
            .collect();
        let per_hospital = dir.join(format!("{}.csv", run_report::PER_HOSPITAL));
        if let Some(text) = read_bounded(&per_hospital)? {
            let reports = run_report::parse_hospitals(&text)
                .map_err(|e| PortalError::invalid(&per_hospital, e.to_string()))?;
            let mut sums: BTreeMap<u64, (f64, f64, usize)> = BTreeMap::new();
            for (h, m) in reports {
                let row = rows.entry(m.round).or_insert_with(|| RoundRow {
                    round: m.round,
                    val_acc: f64::NAN,
                    val_auc: f64::NAN,
                    test_acc: f64::NAN,
                    test_auc: f64::NAN,
                    ..Default::default()
                });
                row.participants.push(h);
                let (acc, auc) = (f64::from(m.val_acc), f64::from(m.val_auc));
                if me == Some(h) {
                    row.val_acc = acc;
                    row.val_auc = auc;
                }
                if acc.is_finite() && auc.is_finite() {
                    let e = sums.entry(m.round).or_default();
                    *e = (e.0 + acc, e.1 + auc, e.2 + 1);
                }
            }
            if me.is_none() {
                for (round, (acc, auc, n)) in sums {
                    if let Some(row) = rows.get_mut(&round) {
                        row.val_acc = acc / n as f64;
                        row.val_auc = auc / n as f64;
                    }
                }
            }
        }
        data.rows = rows.into_values().collect();
        let summary = dir.join(run_report::SUMMARY);
        if let Some(text) = read_bounded(&summary)? {
            data.summary = Some(
                serde_json::from_str(&text)
                    .map_err(|e| PortalError::invalid(&summary, e.to_string()))?,
            );
        }
    } else {
        let node = dir.join("metrics.csv");
        let Some(text) = read_bounded(&node)? else {
            return Err(PortalError::invalid(
                dir,
                "neither metrics.csv (client run) nor metrics_per_round.csv (coordinator simulate) is here yet",
            ));
        };
        data.layout = "node";
        // the node's own file, read through the module it is written with
        let rows = ops::metrics_file::parse(&text)
            .map_err(|e| PortalError::invalid(&node, e.to_string()))?;
        for m in rows {
            data.rows.push(RoundRow {
                round: m.round,
                participants: me.into_iter().collect(),
                hospitals: None,
                val_acc: f64::from(m.val_acc),
                val_auc: f64::from(m.val_auc),
                test_acc: f64::from(m.test_acc),
                test_auc: f64::from(m.test_auc),
            });
        }
    }
    let audit = dir.join("audit.jsonl");
    if let Some(text) = read_bounded(&audit)? {
        let mut entries = Vec::new();
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let e: AuditRow = serde_json::from_str(line)
                .map_err(|e| PortalError::invalid(&audit, format!("line {}: {e}", i + 1)))?;
            // this hospital's entries and the federation-wide ones
            if e.hospital.is_none() || me.is_none() || e.hospital == me {
                entries.push(e);
            }
        }
        let skip = entries.len().saturating_sub(MAX_AUDIT_SHOWN);
        data.audit = Some(entries.split_off(skip));
    }
    Ok(data)
}

fn pct(v: f64) -> String {
    if v.is_finite() {
        format!("{:.1} %", v * 100.0)
    } else {
        "—".into()
    }
}

/// GET /training.
pub async fn page(State(portal): State<Arc<Portal>>, user: SignedIn) -> Response {
    let me = portal.config().hospital;
    let mut b = String::from("<h1>Training</h1>");
    let Some(dir) = portal.config().node_out.clone() else {
        b.push_str("<p>This portal was started without the node's outputs. Start it with <code>--node-out DIR</code> (the <code>--out</code> of <code>client run</code>) to follow training here.</p>");
        return layout("Training", Nav::Training, Some(&user.viewer()), &b).into_response();
    };
    let loaded = tokio::task::spawn_blocking(move || load(&dir, me)).await;
    let data = match loaded {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => {
            b.push_str(&format!(
                r#"<div class="error" role="alert"><h2>No training data to show</h2><p>{}</p></div>"#,
                esc(&e.to_string())
            ));
            return layout("Training", Nav::Training, Some(&user.viewer()), &b).into_response();
        }
        Err(_) => {
            return layout("Training", Nav::Training, Some(&user.viewer()), &b).into_response();
        }
    };
    b.push_str(&render(&data, me));
    layout("Training", Nav::Training, Some(&user.viewer()), &b).into_response()
}

/// The page's body.
pub fn render(data: &TrainingData, me: Option<u32>) -> String {
    let mut b = String::new();
    let hospitals: BTreeSet<u32> = data
        .rows
        .iter()
        .flat_map(|r| r.participants.iter().copied())
        .collect();
    b.push_str(r#"<div class="panel" id="training-summary"><ul>"#);
    b.push_str(&format!(
        "<li><strong>{}</strong> rounds completed{}</li>",
        data.rows.len(),
        data.summary
            .as_ref()
            .map(|s| format!(" of {}", s.rounds))
            .unwrap_or_default()
    ));
    if let Some(s) = &data.summary {
        b.push_str(&format!(
            "<li>Experiment <code>{}</code></li>",
            esc(&s.name)
        ));
        b.push_str(&format!(
            "<li>{} hospitals; any {} of them re-encrypt the aggregate{}</li>",
            s.hospitals,
            s.threshold,
            if s.plaintext {
                " (plaintext comparison run)"
            } else {
                ", which stays encrypted at the coordinator"
            }
        ));
        if let (Some(a), Some(u)) = (s.final_test_acc, s.final_test_auc) {
            b.push_str(&format!(
                "<li>Final test accuracy {}, AUC {:.3}</li>",
                pct(a),
                u
            ));
        }
    }
    if !hospitals.is_empty() {
        let list: Vec<String> = hospitals.iter().map(|h| format!("hospital {h}")).collect();
        b.push_str(&format!("<li>Participating: {}</li>", list.join(", ")));
    }
    if let Some(h) = me {
        b.push_str(&format!("<li>This node is hospital {h}</li>"));
    }
    b.push_str("</ul></div>");
    let who = match (me, data.layout) {
        (Some(h), _) => format!("hospital {h}"),
        (None, "simulation") => "mean over hospitals".into(),
        _ => "this node".into(),
    };
    let series = vec![
        Series {
            name: "val accuracy".into(),
            points: data
                .rows
                .iter()
                .map(|r| (r.round as f64, r.val_acc))
                .collect(),
        },
        Series {
            name: "val AUC".into(),
            points: data
                .rows
                .iter()
                .map(|r| (r.round as f64, r.val_auc))
                .collect(),
        },
        Series {
            name: "test accuracy".into(),
            points: data
                .rows
                .iter()
                .map(|r| (r.round as f64, r.test_acc))
                .collect(),
        },
        Series {
            name: "test AUC".into(),
            points: data
                .rows
                .iter()
                .map(|r| (r.round as f64, r.test_auc))
                .collect(),
        },
    ];
    b.push_str(&format!("<h2>Metrics per round</h2><p class=\"hint\">Validation metrics of {} on the global model; test metrics of the global model.</p>", esc(&who)));
    b.push_str(&line_chart(
        "metrics-chart",
        "Validation and test metrics per round",
        &series,
        0.0,
        1.0,
    ));
    b.push_str(r#"<details><summary>The same data as a table</summary><table id="rounds-table"><thead><tr><th scope="col" class="num">Round</th><th scope="col">Hospitals</th><th scope="col" class="num">Val acc</th><th scope="col" class="num">Val AUC</th><th scope="col" class="num">Test acc</th><th scope="col" class="num">Test AUC</th></tr></thead><tbody>"#);
    for r in &data.rows {
        let hs = if r.participants.is_empty() {
            r.hospitals
                .map(|n| n.to_string())
                .unwrap_or_else(|| "—".into())
        } else {
            r.participants
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        b.push_str(&format!(
            r#"<tr><td class="num">{}</td><td>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            r.round, hs, pct(r.val_acc), pct(r.val_auc), pct(r.test_acc), pct(r.test_auc)
        ));
    }
    b.push_str("</tbody></table></details>");
    b.push_str("<h2>Audit entries for this hospital</h2>");
    match &data.audit {
        None => b.push_str("<p>The coordinator's audit log is not on this node (it lives in the coordinator's state; <code>coordinator status</code> shows it). Export it as <code>audit.jsonl</code> into the node's output directory to see it here.</p>"),
        Some(a) if a.is_empty() => b.push_str("<p>No audit entries concern this hospital.</p>"),
        Some(a) => {
            b.push_str(r#"<table id="audit-table"><thead><tr><th scope="col">When</th><th scope="col" class="num">Round</th><th scope="col">Hospital</th><th scope="col">Event</th><th scope="col">Detail</th></tr></thead><tbody>"#);
            for e in a.iter().rev() {
                b.push_str(&format!(
                    r#"<tr><td>{}</td><td class="num">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
                    utc(e.unix_ms),
                    e.round,
                    e.hospital.map(|h| h.to_string()).unwrap_or_else(|| "all".into()),
                    esc(&e.event),
                    esc(&e.detail)
                ));
            }
            b.push_str("</tbody></table>");
        }
    }
    b
}
