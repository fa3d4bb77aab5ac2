//! Mode (a) end to end with the real binaries on 127.0.0.1: `coordinator simulate
//! --serve-inference` trains a 3-hospital BreastMNIST federation for one round, then serves the
//! final model under a key the three hospitals make collectively (`coordinator serve-inference
//! --collective`, `client hold-keys`); hospital 1 asks for two test images encrypted under that
//! key. The labels must be the plaintext network's, exactly t = 2 keyholders must have switched
//! (and logged) the request, and the coordinator must have audited it. Every wait is bounded.

use std::path::{Path, PathBuf};
use std::process::Command;

fn data_dir() -> PathBuf {
    std::env::var_os("HEAL_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets/medmnist")
        })
}

const CONFIG: &str = r#"
[federation]
name = "served"
hospitals = 3
threshold = 2
rounds = 1
min_hospitals = 3
round_timeout_s = 300

[dataset]
kind = "medmnist"
name = "breastmnist"
offline = true

[partition]
scheme = "iid"
seed = 1

[train]
epochs = 1
batch_size = 32
lr = 2e-3
schedule = "constant"

[node]
test_every = 0

[simulate]
timeout_s = 600
"#;

#[test]
fn the_federated_model_is_served_encrypted_and_each_result_is_switched_by_t_keyholders() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("served.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let out = dir.path().join("out");
    let output = Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .arg("simulate")
        .arg(&cfg)
        .arg("--out")
        .arg(&out)
        .args(["--serve-inference", "2"])
        .env("HEAL_DATA_DIR", data_dir())
        .env("HEAL_OFFLINE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "simulate failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("inference_mode_a.json")).unwrap())
            .unwrap();
    assert_eq!(summary["images"], 2);
    assert_eq!(summary["agreement"].as_f64(), Some(1.0), "{summary}");
    let diff = summary["max_logit_difference"].as_f64().unwrap();
    assert!(diff < 0.05, "logits off by {diff}");
    let logged: Vec<u64> = summary["requests_logged_per_keyholder"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(logged.len(), 3);
    assert_eq!(
        logged.iter().sum::<u64>(),
        2,
        "t = 2 keyholders switch: {logged:?}"
    );
    assert!(logged.iter().all(|&n| n <= 1), "{logged:?}");
    let log = std::fs::read_to_string(out.join("logs/serving-coordinator.log")).unwrap();
    for event in ["inference-keys", "encrypted-model", "inference-request"] {
        assert!(log.contains(event), "the coordinator did not audit {event}");
    }
    // keyholders' secrets are written for their owner only
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = out.join("hospitals/hospital-2/state/inference/threshold.key");
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} is readable by others", key.display());
    }
}
