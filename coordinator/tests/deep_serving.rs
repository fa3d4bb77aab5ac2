//! Mode (a) at any depth, with the real binaries on 127.0.0.1: `coordinator simulate
//! --serve-inference` on `configs/resnet-mini-collective.toml` trains a 2-hospital BreastMNIST federation of a small residual network
//! for one round, then serves its final model under the hospitals' collective key. The network
//! is deeper than one ring holds under mode (a)'s parameters, so it is cut into segments and,
//! between two, the two switching keyholders refresh their outputs collectively (signed shares
//! relayed by the coordinator, each keyholder combining them itself). The labels must be the
//! plaintext network's, and each switching keyholder must have logged every refresh. The
//! keyholders are given no memory for the encoded model (`[node] model_memory_mb = 0`), as a
//! host a ResNet's weights do not fit: every segment is encoded for the request that uses it.
//! Every wait is bounded.

use he_agg::infer::threshold::served_policy;
use he_agg::infer::{InferencePlan, NetworkFile};

mod common;
use common::simulate_command;

/// The shipped configuration (2 hospitals, t = 2, one round of a small residual network).
fn config() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../configs/resnet-mini-collective.toml"
    );
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn keyholders_refresh_a_deep_served_model_between_its_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("deep-served.toml");
    let text = config();
    assert!(
        text.contains("[node]\ntest_every = 0\n"),
        "the shipped [node] section changed"
    );
    let text = text.replace(
        "[node]\ntest_every = 0\n",
        "[node]\ntest_every = 0\nmodel_memory_mb = 0\n",
    );
    std::fs::write(&cfg, text).unwrap();
    let out = dir.path().join("out");
    let output = simulate_command(&cfg, &out)
        .args(["--serve-inference", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "simulate failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // the served plan is cut: refreshes between its segments
    let net = NetworkFile::read_json(&out.join("hospitals/hospital-1/network.json"))
        .unwrap()
        .network;
    let plan = InferencePlan::new(&net, &served_policy()).unwrap();
    let refreshes = plan.spec().refreshes().len();
    assert!(
        refreshes >= 1,
        "a plan of one segment does not test refreshes"
    );

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("inference_mode_a.json")).unwrap())
            .unwrap();
    eprintln!("{summary:#}");
    assert_eq!(summary["images"], 2);
    assert_eq!(summary["agreement"].as_f64(), Some(1.0), "{summary}");
    let diff = summary["max_logit_difference"].as_f64().unwrap();
    assert!(diff < 0.05, "logits off by {diff}");
    let count = |key: &str| -> Vec<u64> {
        summary[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect()
    };
    let switched = count("requests_logged_per_keyholder");
    let refreshed = count("refreshes_logged_per_keyholder");
    // the two keyholders that switched are the ones that refreshed, each every refresh once
    for (s, r) in switched.iter().zip(&refreshed) {
        assert_eq!(*r, *s * refreshes as u64, "{switched:?} {refreshed:?}");
    }
    assert_eq!(switched.iter().sum::<u64>(), 2, "{switched:?}");
    // each keyholder said that it holds none of the model encoded
    for i in 1..=2 {
        let log = std::fs::read_to_string(out.join(format!("logs/keyholder-{i}.log"))).unwrap();
        let log = without_colours(&log);
        assert!(
            log.contains("do not all fit the memory given them") && log.contains("held=0"),
            "keyholder {i} did not report its model's memory:\n{log}"
        );
    }
}

/// The log's text without its terminal colour codes (ESC [ … m).
fn without_colours(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
