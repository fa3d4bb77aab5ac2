//! The portal end to end in a real headless Chromium driven over WebDriver (chromedriver's
//! HTTP API, spoken with a small client here): sign in, diagnose a real BreastMNIST image and
//! compare with the plaintext network, find it in the history, the redirect to sign-in, a
//! non-image and an oversized upload, the training page; a screenshot of each page is saved
//! in `$CARGO_TARGET_DIR/portal-screenshots/` (else `target/portal-screenshots/`).
//!
//! Without Chromium the test prints "skipped: chromium not installed" and passes, unless
//! `HEAL_REQUIRE_BROWSER` is set, where it fails (CI installs the browser and sets it).

mod common;

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use client::portal::{Portal, PortalConfig};
use serde_json::{Value, json};
use training::baseline::{BaselineConfig, run_baseline};
use training::export::{input_shape, read_network};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_binary(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for n in names {
        for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]) {
            let p = dir.join(n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// chromedriver, killed when dropped.
struct Driver {
    child: Child,
    base: String,
    agent: ureq::Agent,
    session: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self
            .agent
            .delete(&format!("{}/session/{}", self.base, self.session))
            .call();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Driver {
    fn start(chromium: &Path, chromedriver: &Path, profile: &Path) -> Self {
        let port = free_port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(300)))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        let mut d = Driver {
            child,
            base,
            agent,
            session: String::new(),
        };
        let t0 = Instant::now();
        loop {
            if let Ok(mut r) = d.agent.get(&format!("{}/status", d.base)).call()
                && let Ok(text) = r.body_mut().read_to_string()
                && serde_json::from_str::<Value>(&text)
                    .is_ok_and(|v| v["value"]["ready"] == json!(true))
            {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1200,1100",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium.display().to_string(), "args": args}
        }}});
        let v = d.call("POST", "/session", Some(caps));
        d.session = v["sessionId"]
            .as_str()
            .expect("a WebDriver session")
            .to_string();
        d
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// A WebDriver command; `Err` holds the driver's error object.
    fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Value> {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let res = match method {
            "GET" => self.agent.get(&url).call(),
            _ => self
                .agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body.unwrap_or(json!({})).to_string()),
        };
        let mut res = res.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let text = res
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .unwrap();
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
        if v["value"].get("error").is_some() {
            return Err(v["value"].clone());
        }
        Ok(v["value"].clone())
    }

    /// Polls until `f` gives a value: a click returns before the page it submits has loaded.
    fn wait<T>(&self, what: &str, f: impl Fn(&Self) -> Option<T>) -> T {
        let t0 = Instant::now();
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            if t0.elapsed() > Duration::from_secs(180) {
                panic!(
                    "timed out waiting for {what}; at {}: {}",
                    self.url(),
                    self.source()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_url(&self, part: &str) {
        self.wait(&format!("a URL with {part}"), |d| {
            d.url().contains(part).then_some(())
        });
    }

    fn wait_element(&self, css: &str) {
        self.wait(css, |d| {
            d.try_call(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .ok()
        });
    }

    fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    fn url(&self) -> String {
        self.call("GET", "/url", None).as_str().unwrap().to_string()
    }

    fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT].as_str().unwrap().to_string()
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.call("POST", &format!("/element/{e}/click"), Some(json!({})));
    }

    fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.call("GET", &format!("/element/{e}/text"), None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    fn attribute(&self, css: &str, name: &str) -> String {
        let e = self.find(css);
        self.call("GET", &format!("/element/{e}/attribute/{name}"), None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    fn source(&self) -> String {
        self.call("GET", "/source", None)
            .as_str()
            .unwrap()
            .to_string()
    }

    fn screenshot(&self, dir: &Path, name: &str) {
        let b64 = self.call("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap();
        std::fs::write(dir.join(name), png).unwrap();
    }
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let d = target.join("portal-screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A small square-activation network trained on a BreastMNIST subset.
fn train_network(dir: &Path) -> PathBuf {
    let cfg_path = dir.join("cfg.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "[dataset]\nkind = \"medmnist\"\nname = \"breastmnist\"\noffline = true\ndata_dir = {:?}\n\
             [train]\nepochs = 2\nbatch_size = 32\n[baseline]\nmax_train = 200\n",
            common::data_dir().display().to_string()
        ),
    )
    .unwrap();
    let cfg = BaselineConfig::load(&cfg_path).unwrap();
    let out = dir.join("model");
    run_baseline(&cfg, dir, &out, false).unwrap();
    out.join("network.json")
}

/// Training outputs shaped like `coordinator simulate`'s, for hospital 2.
fn write_training_outputs(dir: &Path) {
    use ops::run_report::{self, RoundRow, RunSummary};
    use protocol::message::RoundMetrics;
    std::fs::create_dir_all(dir).unwrap();
    let (mut rounds, mut reports) = (Vec::new(), Vec::new());
    for r in 1..=6u32 {
        let f = f64::from(r);
        let (test_acc, test_auc) = if r == 6 {
            (0.80, 0.88)
        } else {
            (f64::NAN, f64::NAN)
        };
        rounds.push(RoundRow {
            round: r.into(),
            hospitals: 3,
            test_acc,
            test_auc,
            train_loss: 1.0 / f,
            val_loss: 1.1 / f,
            ..Default::default()
        });
        for h in 1..=3u32 {
            if r == 4 && h == 3 {
                continue; // hospital 3 missed round 4
            }
            reports.push((
                h,
                RoundMetrics {
                    round: r.into(),
                    train_loss: (1.0 / f) as f32,
                    val_loss: (1.1 / f) as f32,
                    val_acc: (0.55 + 0.05 * f - 0.01 * f64::from(h)) as f32,
                    val_auc: (0.60 + 0.05 * f) as f32,
                    test_acc: f32::NAN,
                    test_auc: f32::NAN,
                    samples: 100,
                    train_s: 1.0,
                    encrypt_s: 0.1,
                    upload_s: 0.1,
                    switch_s: 0.1,
                    decrypt_s: 0.1,
                    bytes_up: 1_000_000,
                    bytes_down: 1_000_000,
                },
            ));
        }
    }
    std::fs::write(
        dir.join("metrics_per_round.csv"),
        run_report::round_csv(&rounds),
    )
    .unwrap();
    std::fs::write(
        dir.join("metrics_per_hospital.csv"),
        run_report::hospital_csv(&reports),
    )
    .unwrap();
    let summary = RunSummary {
        name: "breastmnist-3-hospitals".into(),
        hospitals: 3,
        threshold: 2,
        rounds: 6,
        final_test_acc: Some(0.8),
        final_test_auc: Some(0.88),
        plaintext: false,
        wall_s: 12.0,
        ..Default::default()
    };
    std::fs::write(
        dir.join(run_report::SUMMARY),
        serde_json::to_string(&summary).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("audit.jsonl"),
        "{\"unix_ms\":1763740000000,\"hospital\":2,\"round\":3,\"event\":\"refused\",\"detail\":\"update for a past round\"}\n\
         {\"unix_ms\":1763740100000,\"hospital\":1,\"round\":3,\"event\":\"joined\",\"detail\":\"not ours\"}\n\
         {\"unix_ms\":1763740200000,\"hospital\":null,\"round\":6,\"event\":\"committed\",\"detail\":\"round 6\"}\n",
    )
    .unwrap();
}

#[test]
fn portal_in_headless_chromium() {
    let (Some(chromium), Some(chromedriver)) = (
        find_binary(&["chromium", "chromium-browser", "google-chrome"]),
        find_binary(&["chromedriver"]),
    ) else {
        if std::env::var_os("HEAL_REQUIRE_BROWSER").is_some_and(|v| !v.is_empty()) {
            panic!("HEAL_REQUIRE_BROWSER is set but chromium/chromedriver are not installed");
        }
        println!("skipped: chromium not installed");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let shots = screenshot_dir();

    // a trained network, and a real test image written as PNG
    let network = train_network(tmp.path());
    let (file, prep) = read_network(&network).unwrap();
    let net = file.network;
    let data = common::load("breastmnist");
    let image = tmp.path().join("breast-test-7.png");
    image::GrayImage::from_raw(28, 28, data.test.image_bytes(7).to_vec())
        .unwrap()
        .save(&image)
        .unwrap();
    let hwc = prep
        .decoder(input_shape(&net))
        .load(&image)
        .unwrap()
        .images
        .remove(0);
    let logits = net.forward(&net.normalize_hwc(&hwc).unwrap()).unwrap();
    let logits: Vec<f64> = logits.iter().map(|&v| v as f64).collect();
    let plaintext_label = training::metrics::argmax(&logits);

    // the portal, in this process
    let portal_dir = tmp.path().join("portal");
    client::portal::users::Users::add(&portal_dir, "clinician", "correct horse battery", false)
        .unwrap();
    let node_out = tmp.path().join("node-out");
    write_training_outputs(&node_out);
    let mut cfg = PortalConfig::new(portal_dir);
    cfg.network = Some(network);
    cfg.node_out = Some(node_out);
    cfg.hospital = Some(2);
    let portal = Arc::new(Portal::new(cfg).unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(client::portal::serve(portal, listener, async {
        let _ = stop_rx.await;
    }));

    let profile = tempfile::tempdir().unwrap();
    let d = Driver::start(&chromium, &chromedriver, profile.path());

    // unauthenticated pages redirect to sign-in
    for page in ["/diagnose", "/history", "/training", "/"] {
        d.goto(&format!("{base}{page}"));
        assert!(d.url().ends_with("/signin"), "{page} → {}", d.url());
    }
    d.screenshot(&shots, "01-signin.png");

    // a wrong password is refused on the page
    d.type_into("#name", "clinician");
    d.type_into("#password", "wrong password");
    d.click("#signin");
    d.wait("the wrong-password message", |d| {
        d.source()
            .contains("The user name or password is not right")
            .then_some(())
    });

    // click 1: sign in (the Diagnose page is the landing page)
    d.type_into("#password", "correct horse battery");
    d.click("#signin");
    d.wait_url("/diagnose");
    d.wait_element("#diagnose");
    d.screenshot(&shots, "02-diagnose.png");

    // click 2: choose the file; click 3: Diagnose
    d.type_into("#image", &image.display().to_string());
    d.click("#diagnose");
    d.wait_url("/diagnosis/");
    d.wait_element("#predicted-label");
    let label: usize = d
        .attribute("#predicted-label", "data-label")
        .parse()
        .unwrap();
    assert_eq!(
        label, plaintext_label,
        "encrypted diagnosis vs plaintext network"
    );
    let class = d.text("#predicted-label");
    assert_eq!(class, data.info.class_names[plaintext_label]);
    let page = d.source();
    assert!(page.contains("gives the same label"), "{page}");
    assert!(page.contains("Nothing left the hospital"));
    assert!(page.contains("<svg") || page.contains("<meter"));
    // the preview is served back to its owner
    let img = d.attribute(".preview img", "src");
    assert!(img.contains("/upload/"), "{img}");
    d.screenshot(&shots, "03-diagnosis.png");

    // it is in the history
    d.goto(&format!("{base}/history"));
    assert!(d.text("#history-table").contains("breast-test-7.png"));
    assert!(d.text("#history-table").contains(&class));
    d.screenshot(&shots, "04-history.png");

    // a non-image gives a clear error on the page
    let notes = tmp.path().join("notes.txt");
    std::fs::write(&notes, "patient notes, not an image\n").unwrap();
    d.goto(&format!("{base}/diagnose"));
    d.type_into("#image", &notes.display().to_string());
    d.click("#diagnose");
    d.wait_element("#upload-error");
    let err = d.text("#upload-error");
    assert!(err.contains("not a PNG, JPEG or DICOM image"), "{err}");
    d.screenshot(&shots, "05-not-an-image.png");

    // an oversized upload gives a clear error on the page
    let big = tmp.path().join("huge-scan.png");
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.resize(6 * 1024 * 1024, 7);
    std::fs::write(&big, bytes).unwrap();
    d.goto(&format!("{base}/diagnose"));
    d.type_into("#image", &big.display().to_string());
    d.click("#diagnose");
    d.wait_element("#upload-error");
    let err = d.text("#upload-error");
    assert!(err.contains("too large"), "{err}");
    d.screenshot(&shots, "06-too-large.png");

    // training progress from the node's outputs
    d.goto(&format!("{base}/training"));
    let summary = d.text("#training-summary");
    assert!(summary.contains("6 rounds completed"), "{summary}");
    assert!(
        summary.contains("hospital 1, hospital 2, hospital 3"),
        "{summary}"
    );
    let page = d.source();
    assert!(page.contains(r#"id="metrics-chart""#));
    assert!(page.contains("update for a past round") && !page.contains("not ours"));
    d.screenshot(&shots, "07-training.png");

    // sign out: protected pages redirect again
    d.click("header form button");
    d.wait_url("/signin");
    d.goto(&format!("{base}/history"));
    assert!(d.url().ends_with("/signin"));

    drop(d);
    let _ = stop_tx.send(());
    rt.block_on(server).unwrap().unwrap();
    println!("screenshots in {}", shots.display());
}
