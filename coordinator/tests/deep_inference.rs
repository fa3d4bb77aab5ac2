//! A deep model served in mode (b) with the real binaries on 127.0.0.1: `coordinator
//! serve-inference --model` on a residual network too deep for one ring, and `client infer`
//! asking for a BreastMNIST test image. The server evaluates segment by segment and stops for
//! the requester's refreshes between them; the requester answers them without being asked to
//! (no flag). The label and logits must be the plaintext network's, the refreshes as many as
//! the plan's, and the server's log must name them. Every wait is bounded.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use he_agg::infer::testing::residual_network;
use he_agg::infer::{InferencePlan, NetworkFile, ParamPolicy};

mod common;
use common::{Procs, client_bin, coordinator_bin, data_dir, free_port};

fn log(root: &Path, name: &str) -> std::fs::File {
    std::fs::File::create(root.join(name)).unwrap()
}

fn config() -> String {
    let head = "[federation]\nname = \"deep\"\nhospitals = 2\nthreshold = 2\nrounds = 1\n\
                min_hospitals = 2\nround_timeout_s = 300\n";
    format!("{head}{}", common::breastmnist_sections(1))
}

#[test]
fn a_deep_model_is_served_with_the_requesters_refreshes_between_its_segments() {
    let fed = common::provisioned(&config());
    let root = fed.root.clone();
    // 28×28 grey, 2 classes: 2 + 3 stages × 2 blocks × 4 + 1 = 27 levels
    let net = residual_network(28, 1, 4, 3, 2, 2);
    let plan = InferencePlan::new(&net, &ParamPolicy::default()).unwrap();
    let refreshes = plan.spec().refreshes().len();
    assert!(refreshes >= 2, "{refreshes} refreshes");
    let model = root.join("deep.json");
    let names = vec!["benign".to_string(), "malignant".to_string()];
    NetworkFile::new(net.clone(), names, plan.spec().depth())
        .unwrap()
        .write_json(&model)
        .unwrap();

    let addr = format!("127.0.0.1:{}", free_port());
    let _server = Procs(vec![
        Command::new(coordinator_bin())
            .args(["serve-inference", "--listen", &addr, "--model"])
            .arg(&model)
            .arg("--dir")
            .arg(&fed.coordinator_dir)
            .env("HEAL_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(log(&root, "serve.log"))
            .spawn()
            .unwrap(),
    ]);
    let site = fed.hospital_dirs[0].join("site.toml");
    let json = root.join("answer.json");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let status = Command::new(client_bin())
            .args(["infer", "--timeout-s", "300", "--server", &addr, "--site"])
            .arg(&site)
            .arg("--json")
            .arg(&json)
            .arg("breastmnist:test:3")
            .env("HEAL_DATA_DIR", data_dir())
            .stdout(Stdio::null())
            .stderr(log(&root, "infer.log"))
            .status()
            .unwrap();
        if status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never served: {}",
            std::fs::read_to_string(root.join("infer.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        v["bytes"]["refreshes"].as_u64(),
        Some(refreshes as u64),
        "{v}"
    );
    assert!(v["bytes"]["refresh_received"].as_u64().unwrap() > 0);
    assert!(v["bytes"]["refresh_sent"].as_u64().unwrap() > 0);
    // the plaintext network on the same image
    let data = datasets::medmnist::load_workspace("breastmnist").unwrap();
    let px = data.test.image_bytes(3);
    let want = net.forward(&net.normalize_hwc(px).unwrap()).unwrap();
    let got: Vec<f64> = v["images"][0]["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - *w as f64).abs() < 1e-4, "{got:?} vs {want:?}");
    }
    let label = v["images"][0]["label"].as_u64().unwrap() as usize;
    let best = (0..want.len()).fold(0, |b, i| if want[i] > want[b] { i } else { b });
    assert_eq!(label, best);
    let served = std::fs::read_to_string(root.join("serve.log")).unwrap();
    assert!(
        served.contains(&format!("\"refreshes\":{refreshes}")),
        "the server's log: {served}"
    );
}
