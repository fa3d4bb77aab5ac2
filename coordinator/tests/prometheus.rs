//! The operations artefacts of `packaging/` checked by the real tools (Debian's `prometheus`
//! package, installed by `.ci/run`): `promtool` checks the alert rules and runs their unit tests,
//! then a real Prometheus scrapes a short `coordinator simulate`'s coordinator and hospital 1
//! every half second with the rules loaded (`metrics_linger_s` in `[coordinator]` and `[node]`
//! keeps their final figures up). Its stored series must be the run's own figures
//! (`summary.json`, `metrics_per_round.csv`, `metrics_per_hospital.csv`), every rule must
//! evaluate without error, and every query of the Grafana dashboard must be valid PromQL that
//! finds data. Skipped, saying why, only where Prometheus is not installed
//! (`HEAL_REQUIRE_PROMETHEUS=1` makes that a failure). Every wait is bounded; the Prometheus and
//! simulate processes are killed on every exit path.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::simulate_command;

fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("packaging")
}

/// `promtool` and `prometheus`, or why the test cannot run.
fn tools() -> Option<(PathBuf, PathBuf)> {
    let find = |name: &str| {
        std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|f| f.is_file())
        })
    };
    match (find("promtool"), find("prometheus")) {
        (Some(t), Some(p)) => Some((t, p)),
        _ => {
            assert!(
                std::env::var_os("HEAL_REQUIRE_PROMETHEUS").is_none(),
                "HEAL_REQUIRE_PROMETHEUS is set but prometheus/promtool are not on PATH \
                 (Debian: apt-get install prometheus)"
            );
            eprintln!(
                "skipped: prometheus and promtool are not installed (apt-get install prometheus)"
            );
            None
        }
    }
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` on `addr`: the body of a 200 answer.
fn get(addr: &str, path: &str) -> Option<String> {
    let (head, body) = common::http_get(addr, path)?;
    head.starts_with("HTTP/1.1 200").then_some(body)
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant query's result vector.
fn query(addr: &str, q: &str) -> Vec<serde_json::Value> {
    let body = get(addr, &format!("/api/v1/query?query={}", encode(q)))
        .unwrap_or_else(|| panic!("query refused: {q}"));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "success", "{q}: {body}");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// The samples Prometheus stored for a range selector (`q` ends in `[window]`).
fn stored(addr: &str, q: &str) -> serde_json::Value {
    let body = get(addr, &format!("/api/v1/query?query={}", encode(q)))
        .unwrap_or_else(|| panic!("query refused: {q}"));
    serde_json::from_str(&body).unwrap()
}

fn value(sample: &serde_json::Value) -> f64 {
    sample["value"][1].as_str().unwrap().parse().unwrap()
}

/// The single sample of `q`'s result.
fn one(addr: &str, q: &str) -> f64 {
    let r = query(addr, q);
    assert_eq!(r.len(), 1, "{q}: {r:?}");
    value(&r[0])
}

fn promtool(tool: &Path, args: &[&str]) {
    let out = Command::new(tool)
        .args(args)
        .current_dir(packaging().join("prometheus"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_real_prometheus_stores_the_runs_figures_and_evaluates_the_rules_and_dashboard() {
    let Some((promtool_bin, prometheus_bin)) = tools() else {
        return;
    };
    promtool(&promtool_bin, &["check", "rules", "heal-alerts.yml"]);
    promtool(&promtool_bin, &["test", "rules", "heal-alerts.test.yml"]);

    let dir = tempfile::tempdir().unwrap();
    let targets = dir.path().join("targets.json");
    let prom_cfg = dir.path().join("prometheus.yml");
    std::fs::write(&targets, "[]").unwrap();
    std::fs::write(
        &prom_cfg,
        format!(
            "global:\n  scrape_interval: 500ms\n  evaluation_interval: 500ms\nrule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: heal\n    file_sd_configs:\n      - files: [{}]\n        \
             refresh_interval: 1s\n    relabel_configs:\n      - source_labels: [kind]\n        \
             target_label: job\n",
            packaging().join("prometheus/heal-alerts.yml").display(),
            targets.display()
        ),
    )
    .unwrap();
    promtool(
        &promtool_bin,
        &["check", "config", prom_cfg.to_str().unwrap()],
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let prom = format!("127.0.0.1:{port}");
    let _prometheus = Killed(
        Command::new(&prometheus_bin)
            .arg(format!("--config.file={}", prom_cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={prom}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let t0 = Instant::now();
    while get(&prom, "/-/ready").is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "prometheus not ready"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let cfg = dir.path().join("fed.toml");
    std::fs::write(
        &cfg,
        format!(
            "[federation]\nname = \"scraped\"\nhospitals = 3\nthreshold = 2\nrounds = 8\n\
             min_hospitals = 3\nround_timeout_s = 120\n\n[he]\nplaintext = true\n\n\
             [coordinator]\nmetrics_linger_s = 8\n\n[simulate]\ntimeout_s = 300\n{}",
            common::breastmnist_sections(4).replace("[node]\n", "[node]\nmetrics_linger_s = 8\n")
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let mut child = Killed(
        simulate_command(&cfg, &out)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr = common::printed_metrics_address(&mut child.0);
    // the coordinator's and hospital 1's addresses once known, as file_sd targets (Prometheus
    // picks them up within its 5 s discovery interval; both linger 8 s after the run)
    let node_addr = out.join("hospitals/hospital-1/metrics-address");
    let mut written = (false, false);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(400),
            "simulate did not end"
        );
        let c = addr.lock().unwrap().clone();
        let n = std::fs::read_to_string(&node_addr).ok();
        if (c.is_some(), n.is_some()) != written {
            written = (c.is_some(), n.is_some());
            let target = |a: &str, kind: &str| {
                format!(
                    r#"{{"targets":["{}"],"labels":{{"kind":"{kind}"}}}}"#,
                    a.trim()
                )
            };
            let list: Vec<String> = [(c, "heal-coordinator"), (n, "heal-node")]
                .iter()
                .filter_map(|(a, k)| a.as_deref().map(|a| target(a, k)))
                .collect();
            let tmp = targets.with_extension("tmp");
            std::fs::write(&tmp, format!("[{}]", list.join(","))).unwrap();
            std::fs::rename(&tmp, &targets).unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success());
    let (summary, rows) = common::run_tables(&out);
    assert_eq!(summary.rounds, 8);

    // what Prometheus stored: every sample of the totals is the sum of the rounds committed at
    // that instant, and the last committed round's are summary.json's
    let c = r#"{job="heal-coordinator"}"#;
    let window = "[1h]";
    assert_eq!(
        one(
            &prom,
            &format!("last_over_time(heal_rounds_committed{c}{window})")
        ),
        8.0
    );
    assert_eq!(
        one(
            &prom,
            &format!("last_over_time(heal_rounds_planned{c}{window})")
        ),
        8.0
    );
    assert_eq!(
        one(&prom, &format!("last_over_time(heal_hospitals{c}{window})")),
        3.0
    );
    assert_eq!(
        one(
            &prom,
            &format!("last_over_time(heal_bytes_up_total{c}{window})")
        ),
        summary.bytes_up as f64
    );
    assert_eq!(
        one(
            &prom,
            &format!("last_over_time(heal_bytes_down_total{c}{window})")
        ),
        summary.bytes_down as f64
    );
    assert_eq!(
        one(
            &prom,
            &format!("last_over_time(heal_round_deadline_seconds{c}{window})")
        ),
        120.0
    );
    for h in 1..=3 {
        assert_eq!(
            one(
                &prom,
                &format!(
                    "last_over_time(heal_hospital_last_round{{job=\"heal-coordinator\",hospital=\"{h}\"}}{window})"
                )
            ),
            8.0,
            "hospital {h}"
        );
    }
    // the figures the hospitals report after the last commit: summary.json's too
    let close = |q: &str, want: f64| {
        let got = one(&prom, q);
        assert!(
            (got - want).abs() <= 1e-9 * want.abs().max(1.0),
            "{q}: {got} vs {want}"
        );
    };
    close(
        &format!("last_over_time(heal_round_seconds_mean{c}{window})"),
        summary.mean_round_s,
    );
    for (phase, want) in [
        ("train", summary.time_split_s.train),
        ("upload", summary.time_split_s.upload),
        ("aggregate", summary.time_split_s.aggregate),
    ] {
        close(
            &format!(
                "last_over_time(heal_phase_seconds_total{{job=\"heal-coordinator\",phase=\"{phase}\"}}{window})"
            ),
            want,
        );
    }
    assert_eq!(
        one(&prom, &format!("last_over_time(heal_finished{c}{window})")),
        1.0
    );
    assert_eq!(
        one(
            &prom,
            &format!("last_over_time(heal_round_open_seconds{c}{window})")
        ),
        0.0
    );
    // each stored sample pair (bytes, rounds) at one instant: the first k rounds' bytes
    let bytes = stored(&prom, &format!("heal_bytes_up_total{c}{window}"));
    let committed = stored(&prom, &format!("heal_rounds_committed{c}{window}"));
    let (bv, kv) = (
        bytes["data"]["result"][0]["values"].as_array().unwrap(),
        committed["data"]["result"][0]["values"].as_array().unwrap(),
    );
    assert!(bv.len() >= 5, "{} samples of the coordinator", bv.len());
    let mut checked = 0;
    for (b, k) in bv.iter().zip(kv) {
        assert_eq!(b[0], k[0], "one scrape, one timestamp");
        let k: usize = k[1].as_str().unwrap().parse::<f64>().unwrap() as usize;
        let up: u64 = rows[..k].iter().map(|r| r.bytes_up).sum();
        assert_eq!(
            b[1].as_str().unwrap().parse::<f64>().unwrap(),
            up as f64,
            "after {k} rounds"
        );
        checked += usize::from(k > 0);
    }
    assert!(checked >= 1, "no sample after a committed round");
    // hospital 1's own endpoint: the rounds it reported and their bytes
    let mine: u64 = ops::run_report::parse_hospitals(
        &std::fs::read_to_string(out.join("metrics_per_hospital.csv")).unwrap(),
    )
    .unwrap()
    .into_iter()
    .filter(|(h, _)| *h == 1)
    .map(|(_, m)| m.bytes_up)
    .sum();
    let n = r#"{job="heal-node"}"#;
    assert_eq!(
        one(
            &prom,
            &format!("last_over_time(heal_node_rounds_reported_total{n}{window})")
        ),
        8.0
    );
    assert_eq!(
        one(
            &prom,
            &format!("last_over_time(heal_node_bytes_up_total{n}{window})")
        ),
        mine as f64
    );
    // every rule evaluated without error on the real series
    let rules: serde_json::Value =
        serde_json::from_str(&get(&prom, "/api/v1/rules").unwrap()).unwrap();
    let mut names = Vec::new();
    for g in rules["data"]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            assert_eq!(r["health"], "ok", "{r}");
            names.push(r["name"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(names.len(), 8, "{names:?}");

    // the dashboard: every panel's query is valid PromQL, and the coordinator's find data
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(packaging().join("grafana/heal-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = 0;
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let e = t["expr"]
                .as_str()
                .unwrap()
                .replace("$coordinator", ".*")
                .replace("$node", ".*");
            // the run has ended: look back over it
            let found = query(&prom, &format!("max_over_time(({e})[1h:1s])"));
            let optional = e.contains("privacy")
                || e.contains("node_val_auc")
                || e.contains("test_auc")
                || e.contains("accuracy");
            if !optional {
                assert!(!found.is_empty(), "no data for the dashboard's {e}");
            }
            exprs += 1;
        }
    }
    assert!(exprs >= 20, "{exprs} queries in the dashboard");
}
