//! `[privacy]` end to end with the real binaries (plaintext pipeline, so it is quick): the
//! hospital-level mechanism's updates travel and sum, the run stops at the ε budget, ε is
//! reported per round and in `summary.json`, DP-SGD trains, the training loss stays at the
//! hospitals, and the membership-inference check runs against held-out training images.
//! Every wait is bounded.

use std::path::Path;

mod common;
use common::simulate_command;
use ops::run_report::{RunSummary, parse_rounds};

fn run(name: &str, privacy: &str, model: &str) -> (RunSummary, tempfile::TempDir) {
    run_with(name, privacy, model, 0)
}

/// `delay_ms`: how much later each hospital's evaluations start (`HEAL_EVALUATION_DELAY_MS`).
fn run_with(
    name: &str,
    privacy: &str,
    model: &str,
    delay_ms: u64,
) -> (RunSummary, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fed.toml");
    let sections = common::breastmnist_sections(2)
        .replace("test_every = 0", "test_every = 3\nmembership_holdout = 0.2");
    std::fs::write(
        &cfg,
        format!(
            "[federation]\nname = \"{name}\"\nhospitals = 3\nthreshold = 2\nrounds = 3\n\
             min_hospitals = 3\nround_timeout_s = 120\n\n[he]\nplaintext = true\n\n\
             [simulate]\ntimeout_s = 300\n\n[privacy]\n{privacy}\n{model}\n{sections}"
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let status = simulate_command(&cfg, &out)
        .env("HEAL_EVALUATION_DELAY_MS", delay_ms.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "{name}: simulate failed");
    let summary: RunSummary =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    (summary, dir)
}

fn rounds_of(dir: &Path) -> Vec<ops::run_report::RoundRow> {
    parse_rounds(&std::fs::read_to_string(dir.join("out/metrics_per_round.csv")).unwrap()).unwrap()
}

#[test]
fn hospital_level_noise_sums_and_the_run_stops_at_the_budget() {
    // a target of 8 over the 3 rounds, a budget of 6: the hospitals stop after fewer rounds;
    // each evaluation starts 1.5 s late, so the last one still runs when the hospitals stop
    let (s, dir) = run_with(
        "dp-hospital",
        "mode = \"hospital\"\ntarget_epsilon = 8.0\nbudget_epsilon = 6.0\n",
        "",
        1500,
    );
    assert!(s.rounds >= 1 && s.rounds < 3, "{} rounds", s.rounds);
    let eps = s.epsilon.expect("ε in the summary");
    assert!(eps <= 6.0 && eps > 2.0, "ε = {eps}");
    assert_eq!(s.delta, Some(1e-5));
    let rows = rounds_of(dir.path());
    assert_eq!(rows.len() as u64, s.rounds);
    assert!(rows.windows(2).all(|w| w[1].epsilon > w[0].epsilon));
    // the run stopped before its planned last round: every hospital still reported the
    // evaluation of the round it stopped at (it ran beside what would have come next, and was
    // waited for when the coordinator said finished: client/src/node/evaluation.rs)
    for h in 1..=3 {
        let file = dir
            .path()
            .join(format!("out/hospitals/hospital-{h}/metrics.csv"));
        let text = std::fs::read_to_string(&file).unwrap();
        let last = text
            .lines()
            .last()
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .to_string();
        assert_eq!(last, s.rounds.to_string(), "hospital {h}: {text}");
        assert_eq!(
            text.lines().count() as u64,
            1 + s.rounds,
            "hospital {h}: {text}"
        );
    }
    assert!(dir.path().join("out/privacy.png").exists());
    // (the noise swamps 3 hospitals' updates: no utility is asserted)
}

#[test]
fn dp_sgd_trains_on_a_scattering_front_and_keeps_its_training_loss_at_home() {
    // the DP config's network: the scattering front (computed by each hospital) and one dense
    // layer, with DP-SGD's own learning rate
    let model = "[model.front]\ntype = \"scatter\"\n[[model.layers]]\ntype = \"dense\"\n";
    let (s, dir) = run(
        "dp-patient",
        "mode = \"patient\"\ntarget_epsilon = 4.0\nbatch_size = 128\nlr = 0.5\n",
        model,
    );
    assert_eq!(s.rounds, 3);
    // each hospital's multiplier is set for the target over the 3 rounds
    let eps = s.epsilon.unwrap();
    assert!((eps - 4.0).abs() < 0.01, "ε = {eps}");
    // the final model was tested (182 images a hospital at ε = 4: no utility is asserted)
    assert!(
        s.final_test_auc.is_some_and(f64::is_finite),
        "{:?}",
        s.final_test_auc
    );
    let rows = rounds_of(dir.path());
    assert!(
        rows.iter().all(|r| r.train_loss.is_nan()),
        "a training loss left a hospital"
    );
    // the membership check ran against held-out training images
    let mia = s.mia_auc.expect("membership-inference AUC");
    assert!((0.0..=1.0).contains(&mia));
    let doc =
        std::fs::read_to_string(dir.path().join("out/hospitals/hospital-1/mia.json")).unwrap();
    assert!(doc.contains("held-out training images"), "{doc}");
    // the exported model carries its front: requesters compute it before encrypting
    let net: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("out/hospitals/hospital-1/network.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(net["network"]["input"], serde_json::json!([81, 7, 7]));
    assert_eq!(
        net["network"]["front"]["image"],
        serde_json::json!([1, 28, 28])
    );
}
