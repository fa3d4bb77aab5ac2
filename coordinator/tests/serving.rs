//! Mode (a) end to end with the real binaries on 127.0.0.1: `coordinator simulate
//! --serve-inference` trains a 3-hospital BreastMNIST federation for one round, then serves the
//! final model under a key the three hospitals make collectively (`coordinator serve-inference
//! --collective`, `client hold-keys`); hospital 1 asks for two test images encrypted under that
//! key. The labels must be the plaintext network's, exactly t = 2 keyholders must have switched
//! (and logged) the request, and the coordinator must have audited it. A keyholder hung
//! (SIGSTOP) is left out of the request it stalls, which two others answer. A serving
//! coordinator killed with SIGKILL and restarted serves the saved setup again, with no new key.
//! Every wait is bounded.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coordinator::config::FederationConfig;
use coordinator::provision::provision;

mod common;
use common::{Procs, client_bin, coordinator_bin, data_dir, free_port, simulate_command};
#[path = "../../client/tests/support/orthanc.rs"]
mod orthanc;

#[test]
fn the_federated_model_is_served_encrypted_and_each_result_is_switched_by_t_keyholders() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("served.toml");
    std::fs::write(&cfg, common::collective_config()).unwrap();
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
    for event in ["inference-keys", "keyholder-ready", "inference-request"] {
        assert!(log.contains(event), "the coordinator did not audit {event}");
    }
    // keyholders' secrets are written for their owner only
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = out.join("hospitals/hospital-2/state/inference/setup.bin");
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} is readable by others", key.display());
    }
}

/// Hospital 1's PACS (a real Orthanc): `client pacs` diagnoses a CT series at the server in the
/// site's pinned mode (a) and stores the report; evaluating on the node instead (mode b) is
/// refused for this site.
fn pacs_in_mode_a(root: &Path, kit: &Path, addr: &str) {
    let Some(bin) = orthanc::binary() else { return };
    let o = orthanc::Orthanc::start(&bin, &root.join("orthanc"), None);
    let study = "1.2.826.0.1.3680043.8.498.90";
    let (series, sop) = (format!("{study}.1"), format!("{study}.1.1"));
    let hu: Vec<i32> = (0..32 * 32).map(|k| 900 + (k % 32) * 8).collect();
    o.upload(
        &datasets::dicom_writer::dicom_bytes(
            &datasets::dicom_writer::DicomSpec {
                rows: 32,
                cols: 32,
                rescale: Some((1.0, -1024.0)),
                uids: Some([study, &series, &sop]),
                ..Default::default()
            },
            &hu,
        )
        .unwrap(),
    );
    std::fs::write(kit.join("pacs.password"), orthanc::PASSWORD).unwrap();
    let pacs_site = kit.join("pacs-site.toml");
    std::fs::write(
        &pacs_site,
        std::fs::read_to_string(kit.join("site.toml")).unwrap()
            + &format!(
                "\n[pacs]\nurl = \"{}\"\nauth = \"basic\"\nusername = \"{}\"\npassword_file = \"pacs.password\"\n",
                o.dicom_web(),
                orthanc::USER
            ),
    )
    .unwrap();
    let pass = |extra: &[&str]| {
        Command::new(client_bin())
            .args(["--quiet", "pacs", "--once", "--server", addr, "--site"])
            .arg(&pacs_site)
            .arg("--out")
            .arg(root.join("pacs"))
            .args(extra)
            .output()
            .unwrap()
    };
    let out = pass(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("\"diagnosed\":[[\"{series}\"")),
        "{stdout}"
    );
    let reports = o.files_of_modality("SR");
    assert_eq!(reports.len(), 1);
    let text = String::from_utf8_lossy(&reports[0]);
    assert!(
        text.contains("collective (mode a)") && text.contains(&sop),
        "{text}"
    );
    let refused = pass(&["--network", "network.json"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(err.contains("this site pins collective (mode a)"), "{err}");
}

fn log(root: &Path, name: &str) -> std::fs::File {
    std::fs::File::create(root.join(name)).unwrap()
}

fn wait_success(child: &mut Child, limit: Duration, what: &str) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{what} exited with {status}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not finish in {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn serve(root: &Path, coordinator_dir: &Path, addr: &str, log_name: &str) -> Child {
    Command::new(coordinator_bin())
        .args([
            "serve-inference",
            "--collective",
            "--keyholder-timeout-s",
            "5",
            "--listen",
            addr,
            "--dir",
        ])
        .arg(coordinator_dir)
        .stdout(Stdio::null())
        .stderr(log(root, log_name))
        .spawn()
        .unwrap()
}

/// Asks for one encrypted test image until served (setup takes a while); its label.
fn ask(root: &Path, site: &Path, addr: &str, name: &str) -> u64 {
    let json = root.join(format!("{name}.json"));
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let status = Command::new(client_bin())
            .args(["infer", "--timeout-s", "120", "--server", addr, "--site"])
            .arg(site)
            .arg("--json")
            .arg(&json)
            .arg("breastmnist:test:3")
            .env("HEAL_DATA_DIR", data_dir())
            .stdout(Stdio::null())
            .stderr(log(root, &format!("{name}.log")))
            .status()
            .unwrap();
        if status.success() {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
            return v["images"][0]["label"].as_u64().unwrap();
        }
        assert!(Instant::now() < deadline, "{name}: never served");
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[test]
fn a_restarted_serving_coordinator_serves_the_saved_setup_without_a_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let port = free_port();
    let text = common::collective_config().replace(
        "round_timeout_s = 300",
        &format!(
            "round_timeout_s = 300\ncoordinator_address = \"127.0.0.1:{port}\"\nlisten = \"127.0.0.1:{port}\""
        ),
    );
    let cfg = FederationConfig::from_toml(&text).unwrap();
    let p = provision(&cfg, &text, &root.join("fed")).unwrap();
    let node_out = |i: usize| root.join(format!("node-{i}"));

    // training: one round, every node writes its final model
    let mut training = Procs(vec![
        Command::new(coordinator_bin())
            .args(["run", "--dir"])
            .arg(&p.coordinator_dir)
            .stdout(Stdio::null())
            .stderr(log(root, "coordinator.log"))
            .spawn()
            .unwrap(),
    ]);
    for (i, site) in p.hospital_dirs.iter().enumerate() {
        training.0.push(
            Command::new(client_bin())
                .args(["run", "--site"])
                .arg(site.join("site.toml"))
                .arg("--out")
                .arg(node_out(i + 1))
                .env("HEAL_DATA_DIR", data_dir())
                .env("HEAL_OFFLINE", "1")
                .env("RAYON_NUM_THREADS", "1")
                .stdout(Stdio::null())
                .stderr(log(root, &format!("hospital-{}.log", i + 1)))
                .spawn()
                .unwrap(),
        );
    }
    for (i, c) in training.0.iter_mut().enumerate() {
        wait_success(
            c,
            Duration::from_secs(600),
            &format!("training process {i}"),
        );
    }

    // serving: setup, one answer
    let addr = format!("127.0.0.1:{}", free_port());
    let mut server = Procs(vec![serve(root, &p.coordinator_dir, &addr, "serve-1.log")]);
    let keyholder = |i: usize, log_name: &str| {
        Command::new(client_bin())
            .args([
                "hold-keys",
                "--patience-s",
                "300",
                "--server",
                &addr,
                "--site",
            ])
            .arg(p.hospital_dirs[i - 1].join("site.toml"))
            .arg("--out")
            .arg(node_out(i))
            .stdout(Stdio::null())
            .stderr(log(root, log_name))
            .spawn()
            .unwrap()
    };
    let mut keyholders = Procs(
        (1..=3)
            .map(|i| keyholder(i, &format!("keyholder-{i}.log")))
            .collect(),
    );
    let site = p.hospital_dirs[0].join("site.toml");
    let before = ask(root, &site, &addr, "before");
    pacs_in_mode_a(root, &p.hospital_dirs[0], &addr);
    // keyholder 1, the first asked, hung (SIGSTOP) mid-serving: after the keyholder timeout
    // (5 s here, before its link's 20 s idle timeout) the request goes to two others, with the
    // same label; resumed (SIGCONT), it serves again
    let hung = keyholders.0[0].id() as libc::pid_t;
    let signal = |sig| {
        // SAFETY: a signal to a child this test started and still holds
        assert_eq!(unsafe { libc::kill(hung, sig) }, 0, "signal {sig}");
    };
    signal(libc::SIGSTOP);
    let t = Instant::now();
    let during = ask(root, &site, &addr, "hung");
    eprintln!(
        "HEAL-HUNG-KEYHOLDER answered in {:.1} s with keyholder 1 stopped",
        t.elapsed().as_secs_f64()
    );
    signal(libc::SIGCONT);
    assert_eq!(before, during, "another label while a keyholder hung");
    let log = std::fs::read_to_string(root.join("serve-1.log")).unwrap();
    assert!(
        log.contains("inference-switch-slow") && log.contains("did not answer attempt 0"),
        "the hung keyholder was not left out of the request:\n{log}"
    );
    assert_eq!(ask(root, &site, &addr, "resumed"), before);
    // keyholder 3 killed (SIGKILL) and restarted from its state directory: it serves its saved
    // share again, with no new key; with keyholder 1 stopped, 2 and the restarted 3 answer
    let _ = keyholders.0[2].kill();
    let _ = keyholders.0[2].wait();
    assert_eq!(ask(root, &site, &addr, "without-3"), before);
    keyholders.0[2] = keyholder(3, "keyholder-3-restarted.log");
    let restarted = root.join("keyholder-3-restarted.log");
    let back = (0..600).any(|_| {
        std::fs::read_to_string(&restarted)
            .unwrap_or_default()
            .contains("connected as keyholder")
            || {
                std::thread::sleep(Duration::from_millis(100));
                false
            }
    });
    assert!(back, "the restarted keyholder did not rejoin within 60 s");
    signal(libc::SIGSTOP);
    assert_eq!(ask(root, &site, &addr, "restarted-3"), before);
    signal(libc::SIGCONT);
    let kh3 = std::fs::read_to_string(&restarted).unwrap();
    assert!(
        !kh3.contains("round-1 shares made"),
        "a new key share: {kh3}"
    );
    // a site that accepts only mode (b) refuses this server: its image is never encrypted to
    // the server's key
    let released = root.join("released-site.toml");
    std::fs::write(
        &released,
        std::fs::read_to_string(&site)
            .unwrap()
            .replace("inference = \"collective\"", "inference = \"released\""),
    )
    .unwrap();
    std::fs::copy(p.hospital_dirs[0].join("ca.pem"), root.join("ca.pem")).unwrap();
    std::fs::copy(p.hospital_dirs[0].join("cert.pem"), root.join("cert.pem")).unwrap();
    std::fs::copy(p.hospital_dirs[0].join("key.pem"), root.join("key.pem")).unwrap();
    let refused = Command::new(client_bin())
        .args(["infer", "--timeout-s", "60", "--server", &addr, "--site"])
        .arg(&released)
        .arg("breastmnist:test:3")
        .env("HEAL_DATA_DIR", data_dir())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "a mode (b) site was served in mode (a)"
    );
    assert!(
        err.contains("the server answers in collective (mode a), and this site accepts only released (mode b)"),
        "{err}"
    );
    // the state is saved once its file is written and the store names it ("served keys
    // saved" follows both): a kill between the two would rightly start a new setup
    let saved = (0..600).any(|_| {
        let log = std::fs::read_to_string(root.join("serve-1.log")).unwrap_or_default();
        log.contains("served keys saved") || {
            std::thread::sleep(Duration::from_millis(100));
            false
        }
    });
    assert!(
        saved && p.coordinator_dir.join("served.bin").exists(),
        "nothing saved within 60 s"
    );

    // SIGKILL, restart: the saved keys and model are served to the same keyholders
    let _ = server.0[0].kill();
    let _ = server.0[0].wait();
    server.0[0] = serve(root, &p.coordinator_dir, &addr, "serve-2.log");
    let after = ask(root, &site, &addr, "after");
    assert_eq!(
        before, after,
        "the same image, another label after the restart"
    );
    drop(server);
    drop(keyholders);

    let restarted = std::fs::read_to_string(root.join("serve-2.log")).unwrap();
    assert!(
        restarted.contains("serving the saved setup again"),
        "{restarted}"
    );
    assert!(
        !restarted.contains("round-1 key shares stored"),
        "a new setup ran"
    );
    for i in 1..=3 {
        let kh = std::fs::read_to_string(root.join(format!("keyholder-{i}.log"))).unwrap();
        assert_eq!(
            kh.matches("round-1 shares made").count(),
            1,
            "keyholder {i} made a second key"
        );
    }
}
