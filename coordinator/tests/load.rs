//! Load on the mode (b) inference server (issue 41, item 4): a provisioned 20-hospital
//! consortium, `coordinator serve-inference` with one image per request (`--max-images 1`), and
//! 20 requesters (`client infer`, each with its own kit and keys) asking for 10 test images each
//! at once: 200 requests against 2 evaluation slots and the server's key budget. Every request
//! must be answered once, with the plaintext network's label; the server's log must show each
//! request once and no key set evicted while the budget holds them all; its peak memory must stay
//! within its bounds. The
//! figures (wall, requests per second, peak memory, keys sent again) are printed for
//! docs/RESULTS.md. Every wait is bounded; every process is killed on every exit path.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{Procs, client_bin, coordinator_bin, data_dir, free_port, provisioned, small_network};

const REQUESTERS: usize = 20;
const IMAGES: usize = 10;

fn consortium() -> String {
    format!(
        "[federation]\nname = \"load\"\nhospitals = {REQUESTERS}\nthreshold = 11\nrounds = 1\n\
         coordinator_address = \"127.0.0.1:9\"\n{}",
        common::breastmnist_sections(1)
    )
}

fn images(requester: usize) -> Vec<String> {
    (0..IMAGES)
        .map(|k| format!("breastmnist:train:{}", requester * IMAGES + k))
        .collect()
}

fn labels(json: &Path) -> Vec<(String, u64)> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["image"].as_str().unwrap().to_string(),
                i["label"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Peak resident memory of a process, from /proc (bytes).
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[test]
fn two_hundred_requests_from_twenty_requesters_are_each_answered_once() {
    let fed = provisioned(&consortium());
    let root = fed.root.clone();
    let net = small_network(&root);

    // the plaintext network's labels of the same 200 images
    let all: Vec<String> = (0..REQUESTERS).flat_map(images).collect();
    let local = root.join("local.json");
    let o = Command::new(client_bin())
        .args(["--quiet", "infer", "--local", "--network"])
        .arg(&net)
        .arg("--json")
        .arg(&local)
        .args(&all)
        .env("HEAL_DATA_DIR", data_dir())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let expected: HashMap<String, u64> = labels(&local).into_iter().collect();
    assert_eq!(expected.len(), REQUESTERS * IMAGES);

    let addr = format!("127.0.0.1:{}", free_port());
    let server_log = root.join("serve.log");
    let server = Procs(vec![
        Command::new(coordinator_bin())
            .args([
                "serve-inference",
                "--max-images",
                "1",
                "--listen",
                &addr,
                "--model",
            ])
            .arg(&net)
            .arg("--dir")
            .arg(&fed.coordinator_dir)
            .env("HEAL_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&server_log).unwrap())
            .spawn()
            .unwrap(),
    ]);
    let server_pid = server.0[0].id();
    let read_log = || std::fs::read_to_string(&server_log).unwrap_or_default();
    let start = Instant::now();
    while !read_log().contains("serving encrypted inference") {
        assert!(start.elapsed() < Duration::from_secs(60), "{}", read_log());
        std::thread::sleep(Duration::from_millis(100));
    }

    let start = Instant::now();
    let mut requesters = Procs(Vec::new());
    for r in 0..REQUESTERS {
        requesters.0.push(
            Command::new(client_bin())
                .args([
                    "--quiet",
                    "infer",
                    "--timeout-s",
                    "300",
                    "--server",
                    &addr,
                    "--site",
                ])
                .arg(fed.hospital_dirs[r].join("site.toml"))
                .arg("--json")
                .arg(root.join(format!("requester-{r}.json")))
                .args(images(r))
                .env("HEAL_DATA_DIR", data_dir())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(root.join(format!("requester-{r}.log"))).unwrap())
                .spawn()
                .unwrap(),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(900);
    for (r, c) in requesters.0.iter_mut().enumerate() {
        let status = loop {
            if let Some(s) = c.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "requester {r} did not finish in 900 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let log = std::fs::read_to_string(root.join(format!("requester-{r}.log"))).unwrap();
        assert!(status.success(), "requester {r} failed: {log}");
    }
    let wall = start.elapsed();
    let peak = peak_rss(server_pid).expect("the server's /proc status");
    drop(server);

    // every image answered once, with the plaintext label
    for r in 0..REQUESTERS {
        let got = labels(&root.join(format!("requester-{r}.json")));
        assert_eq!(got.len(), IMAGES, "requester {r}");
        for (image, label) in got {
            assert_eq!(Some(&label), expected.get(&image), "requester {r}, {image}");
        }
    }
    // the server saw each request once: 200 distinct (requester, request id)
    let log = read_log();
    let mut seen: HashMap<(String, u64), usize> = HashMap::new();
    let (mut keys_stored, mut refused, mut set_mb) = (0, 0, 0f64);
    for line in log.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let fields = &v["fields"];
        if line.contains("refused: ") {
            refused += 1;
        }
        match fields["message"].as_str() {
            Some("inference request") => {
                let who = fields["peer"].as_str().unwrap_or_default().to_string();
                let id = fields["request"].as_u64().unwrap();
                *seen.entry((who, id)).or_default() += 1;
            }
            Some("evaluation keys stored") => {
                keys_stored += 1;
                set_mb = set_mb.max(fields["mb"].as_f64().unwrap_or(0.0));
            }
            _ => {}
        }
    }
    let asked_twice: usize = seen.values().map(|n| n - 1).sum();
    assert_eq!(
        seen.len(),
        REQUESTERS * IMAGES,
        "distinct requests the server logged"
    );
    // 20 sets of keys fit the server's 2 GiB budget: none is evicted, none sent again (with a
    // cap of 16 sets, 36 of the 200 requests were refused for evicted keys and sent them again)
    assert_eq!(
        (refused, asked_twice, keys_stored),
        (0, 0, REQUESTERS),
        "refusals, requests asked twice, key streams"
    );
    // bounded: the key budget (2 GiB) and 2 evaluations at a time
    assert!(peak < 3 << 30, "the server peaked at {} MB", peak >> 20);
    println!(
        "HEAL-LOAD requesters={REQUESTERS} requests={} wall_s={:.1} requests_per_s={:.2} \
         server_peak_mb={} key_set_mb={set_mb:.0} key_streams={keys_stored} refused={refused}",
        seen.len(),
        wall.as_secs_f64(),
        seen.len() as f64 / wall.as_secs_f64(),
        peak >> 20
    );
}
