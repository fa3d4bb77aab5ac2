//! The coordinator's `/metrics` scraped while `coordinator simulate` runs (real binaries,
//! plaintext pipeline): every scrape's totals are those of the rounds committed so far in the
//! run's own tables (a hospital's own endpoint: those of the rounds it reported), and once every
//! hospital has reported and hung up, the coordinator's figures are
//! `summary.json`'s; with `HEAL_LOG_FORMAT=json` every process logs JSON lines. Every wait is
//! bounded.

use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;
use common::simulate_command;
use ops::run_report::parse_hospitals;

/// `GET /metrics` at `addr`, the body's samples by name (labels kept in the name).
fn scrape(addr: &str) -> Option<Vec<(String, f64)>> {
    let (head, body) = common::http_get(addr, "/metrics")?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    Some(
        body.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect(),
    )
}

fn get(samples: &[(String, f64)], name: &str) -> f64 {
    samples
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("{name} missing from {samples:?}"))
}

#[test]
fn metrics_during_a_run_match_its_tables_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fed.toml");
    std::fs::write(
        &cfg,
        format!(
            "[federation]\nname = \"watched\"\nhospitals = 3\nthreshold = 2\nrounds = 6\n\
             min_hospitals = 3\nround_timeout_s = 120\n\n[he]\nplaintext = true\n\n\
             [simulate]\ntimeout_s = 300\n{}",
            // the test split every other round: rounds 2 and 4 are evaluated beside the next
            // round's training, the last one waited for at once
            common::breastmnist_sections(4).replace("test_every = 0", "test_every = 2")
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let mut child = simulate_command(&cfg, &out)
        .env("HEAL_LOG_FORMAT", "json")
        // each evaluation still runs when the next round starts
        .env("HEAL_EVALUATION_DELAY_MS", "400")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // the address simulate prints, then scrapes until it exits
    let addr = common::printed_metrics_address(&mut child);
    let t0 = Instant::now();
    let (mut scrapes, mut node_scrapes) = (Vec::new(), Vec::new());
    let node_addr = out.join("hospitals/hospital-1/metrics-address");
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "simulate did not end"
        );
        let a = addr.lock().unwrap().clone();
        if let Some(samples) = a.as_deref().and_then(scrape) {
            scrapes.push(samples);
        }
        let a = std::fs::read_to_string(&node_addr).ok();
        if let Some(samples) = a.as_deref().map(str::trim).and_then(scrape) {
            node_scrapes.push(samples);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success());
    let (summary, rows) = common::run_tables(&out);
    assert_eq!(summary.rounds, 6);
    let mut during = 0;
    for s in &scrapes {
        let k = get(s, "heal_rounds_committed") as usize;
        assert_eq!(get(s, "heal_rounds_planned"), 6.0);
        assert_eq!(get(s, "heal_hospitals"), 3.0);
        // the totals of exactly the rounds committed so far
        let up: u64 = rows[..k].iter().map(|r| r.bytes_up).sum();
        let down: u64 = rows[..k].iter().map(|r| r.bytes_down).sum();
        assert_eq!(get(s, "heal_bytes_up_total"), up as f64, "after {k} rounds");
        assert_eq!(
            get(s, "heal_bytes_down_total"),
            down as f64,
            "after {k} rounds"
        );
        if k >= 1 {
            during += 1;
            assert_eq!(get(s, "heal_round_participants"), 3.0);
            // every hospital's update was in every sum
            for h in 1..=3 {
                let name = format!("heal_hospital_last_round{{hospital=\"{h}\"}}");
                assert_eq!(get(s, &name), k as f64, "{name}");
            }
        }
        assert_eq!(get(s, "heal_round_deadline_seconds"), 120.0);
        let open = get(s, "heal_round_open_seconds");
        assert!((0.0..120.0).contains(&open), "{open}");
        if get(s, "heal_finished") == 1.0 {
            assert_eq!(open, 0.0);
        }
        if k == 6 {
            assert_eq!(get(s, "heal_bytes_up_total"), summary.bytes_up as f64);
        }
        // the hospitals report a round's figures after its commit: all are in once every
        // hospital has hung up after the last round
        if get(s, "heal_finished") == 1.0 && get(s, "heal_hospitals_connected") == 0.0 {
            let train = get(s, "heal_phase_seconds_total{phase=\"train\"}");
            assert!((train - summary.time_split_s.train).abs() < 1e-9);
            assert!((get(s, "heal_round_seconds_mean") - summary.mean_round_s).abs() < 1e-9);
            let auc = get(s, "heal_test_auc");
            assert!(
                summary
                    .final_test_auc
                    .is_none_or(|a| (a - auc).abs() < 1e-9)
            );
        }
    }
    assert!(
        during >= 1,
        "{} scrapes, none after a committed round",
        scrapes.len()
    );
    // hospital 1's own endpoint: its bytes are those of the rounds it reported
    let mine: Vec<_> =
        parse_hospitals(&std::fs::read_to_string(out.join("metrics_per_hospital.csv")).unwrap())
            .unwrap()
            .into_iter()
            .filter(|(h, _)| *h == 1)
            .map(|(_, m)| m)
            .collect();
    let mut reported = 0;
    for s in &node_scrapes {
        let k = get(s, "heal_node_rounds_reported_total") as usize;
        let up: u64 = mine[..k].iter().map(|m| m.bytes_up).sum();
        assert_eq!(
            get(s, "heal_node_bytes_up_total"),
            up as f64,
            "after {k} reports"
        );
        if k >= 1 {
            reported += 1;
            assert_eq!(get(s, "heal_node_round"), mine[k - 1].round as f64);
        }
    }
    assert!(
        reported >= 1,
        "{} node scrapes, none after a report",
        node_scrapes.len()
    );
    // every hospital reported every round once, in order, each evaluated on its validation
    // images and on the test split exactly in the test rounds, though a round's evaluation
    // runs beside the next round's training (client/src/node/evaluation.rs)
    let rows =
        parse_hospitals(&std::fs::read_to_string(out.join("metrics_per_hospital.csv")).unwrap())
            .unwrap();
    for h in 1..=3 {
        let mine: Vec<_> = rows
            .iter()
            .filter(|(i, _)| *i == h)
            .map(|(_, m)| m)
            .collect();
        let rounds: Vec<u64> = mine.iter().map(|m| m.round).collect();
        assert_eq!(rounds, (1..=6).collect::<Vec<_>>(), "hospital {h}");
        for m in mine {
            assert!(m.val_auc.is_finite(), "hospital {h} round {}", m.round);
            assert_eq!(
                m.test_auc.is_finite(),
                m.round % 2 == 0,
                "hospital {h} round {}: test AUC {}",
                m.round,
                m.test_auc
            );
        }
    }
    let lines = std::fs::read_to_string(out.join("hospitals/hospital-2/metrics.csv")).unwrap();
    assert_eq!(lines.lines().count(), 1 + 6, "{lines}");
    // HEAL_LOG_FORMAT=json: every process logged one JSON object per line
    for log in ["coordinator.log", "hospital-1.log"] {
        let text = std::fs::read_to_string(out.join("logs").join(log)).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        assert!(lines.len() > 5, "{log}: {} lines", lines.len());
        for l in lines {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{log}: {e}: {l}"));
            assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
        }
    }
}
