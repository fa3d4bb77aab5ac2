//! Serving over a wide-area link (issue 41): the inference server in a network namespace of its
//! own, a requester (`client infer`, hospital 1's kit) in another — and in mode (a) each of the
//! three keyholders in its own — once on the bare bridge and once through the project's
//! user-space relay (`common::relay`: 50 ms round trip, 1% loss, 20 Mbit/s per peer and
//! direction). The same images must get the same labels both ways; where the time goes (keys
//! up, the keyholders' setup, each request) is printed for docs/RESULTS.md. Every wait is
//! bounded; no namespace is left behind.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

mod common;
use common::netns::Hosts;
use common::relay::{Profile, Relay};
use common::{
    Fed, Procs, client_bin, coordinator_bin, data_dir, free_port, provisioned, small_network,
    trained,
};

const IMAGES: usize = 4;

/// Asks from host 1 through `dial` for the first `IMAGES` test images: the requester's JSON.
fn ask(hosts: &Hosts, fed: &Fed, dial: &str, name: &str) -> serde_json::Value {
    let json = fed.root.join(format!("{name}.json"));
    let images: Vec<String> = (0..IMAGES)
        .map(|k| format!("breastmnist:test:{k}"))
        .collect();
    let out = hosts
        .command(1, &client_bin())
        .args([
            "--quiet",
            "infer",
            "--timeout-s",
            "300",
            "--server",
            dial,
            "--site",
        ])
        .arg(fed.hospital_dirs[0].join("site.toml"))
        .arg("--json")
        .arg(&json)
        .args(&images)
        .env("HEAL_DATA_DIR", data_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap()
}

fn wait_for_line(log: &Path, line: &str, limit: Duration) {
    let start = Instant::now();
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains(line)
    {
        assert!(
            start.elapsed() < limit,
            "{} never said {line:?}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Serves `net` from host 0 at `listen`, asks from host 1 through `dial`: the requester's JSON.
fn serve_and_ask(
    hosts: &Hosts,
    fed: &Fed,
    net: &Path,
    listen: &str,
    dial: &str,
    name: &str,
) -> serde_json::Value {
    let log = fed.root.join(format!("{name}-serve.log"));
    let _server = Procs(vec![
        hosts
            .command(0, &coordinator_bin())
            .args([
                "serve-inference",
                "--max-images",
                "1",
                "--listen",
                listen,
                "--model",
            ])
            .arg(net)
            .arg("--dir")
            .arg(&fed.coordinator_dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    ]);
    wait_for_line(&log, "serving encrypted inference", Duration::from_secs(60));
    ask(hosts, fed, dial, name)
}

/// Mode (a): the trained federation's model served from host 0 at `listen` (a new key), its
/// keyholders in hosts 1–3 dialling `dial`: the seconds until it serves, and the requester's JSON.
fn collective(
    hosts: &Hosts,
    fed: &Fed,
    listen: &str,
    dial: &str,
    name: &str,
) -> (f64, serde_json::Value) {
    let log = fed.root.join(format!("{name}-serve.log"));
    let start = Instant::now();
    let mut procs = Procs(vec![
        hosts
            .command(0, &coordinator_bin())
            .args([
                "serve-inference",
                "--collective",
                "--new-setup",
                "--max-images",
                "1",
                "--listen",
                listen,
                "--dir",
            ])
            .arg(&fed.coordinator_dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    ]);
    for i in 1..=3 {
        let kh_log = fed.root.join(format!("{name}-keyholder-{i}.log"));
        procs.0.push(
            hosts
                .command(i, &client_bin())
                .args([
                    "hold-keys",
                    "--patience-s",
                    "300",
                    "--server",
                    dial,
                    "--site",
                ])
                .arg(fed.hospital_dirs[i - 1].join("site.toml"))
                .arg("--out")
                .arg(fed.root.join(format!("node-{i}")))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(kh_log).unwrap())
                .spawn()
                .unwrap(),
        );
    }
    wait_for_line(
        &log,
        "the model is served by its keyholders",
        Duration::from_secs(600),
    );
    let setup = start.elapsed().as_secs_f64();
    (setup, ask(hosts, fed, dial, name))
}

fn labels(v: &serde_json::Value) -> Vec<u64> {
    v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["label"].as_u64().unwrap())
        .collect()
}

fn summary(v: &serde_json::Value) -> String {
    let t = &v["timings"];
    let b = &v["bytes"];
    format!(
        "total {:.2} s: keys and images sent {:.2} s ({:.1} MB keys, {:.2} MB images), waiting {:.2} s \
         ({:.3} s evaluating at the server), {:.3} s per request beyond the keys",
        t["total_s"].as_f64().unwrap(),
        t["send_s"].as_f64().unwrap(),
        b["keys_sent"].as_f64().unwrap() / 1e6,
        b["images_sent"].as_f64().unwrap() / 1e6,
        t["wait_s"].as_f64().unwrap(),
        t["evaluate_s"].as_f64().unwrap(),
        t["wait_s"].as_f64().unwrap() / IMAGES as f64,
    )
}

#[test]
fn mode_b_over_a_wan_gives_the_same_labels_and_says_where_the_time_goes() {
    let Some(hosts) = Hosts::or_skip("v", 2) else {
        return;
    };
    let fed = provisioned(&format!(
        "[federation]\nname = \"wan-serving\"\nhospitals = 3\nthreshold = 2\nrounds = 1\n\
         coordinator_address = \"{}:4433\"\n{}",
        Hosts::address(0),
        common::breastmnist_sections(1)
    ));
    let net = small_network(&fed.root);
    let dial = format!("{}:4433", Hosts::address(0));
    let lan = serve_and_ask(&hosts, &fed, &net, &dial, &dial, "bridge");
    // the server behind the relay, which takes host 0's address
    let front: SocketAddr = dial.parse().unwrap();
    let back: SocketAddr = "127.0.0.1:4434".parse().unwrap();
    let relay = Relay::start(Some(&hosts.namespace(0)), front, back, Profile::WAN, 44).unwrap();
    let wan = serve_and_ask(&hosts, &fed, &net, "127.0.0.1:4434", &dial, "wan");
    let (seen, dropped) = (
        relay.counts.seen.load(Ordering::Relaxed),
        relay.counts.dropped.load(Ordering::Relaxed),
    );
    drop(relay);
    assert_eq!(
        labels(&lan),
        labels(&wan),
        "the same images, other labels over the WAN"
    );
    assert!(dropped > 0, "the link lost datagrams ({dropped} of {seen})");
    eprintln!(
        "HEAL-WAN-SERVING mode (b), {IMAGES} requests of one 28² image:\n  bridge: {}\n  wan (50 ms RTT, 1% loss, 20 Mbit/s): {}\n  relay: {seen} datagrams, {dropped} dropped",
        summary(&lan),
        summary(&wan)
    );
    drop(hosts);
    assert_eq!(Hosts::left_behind("v"), Vec::<String>::new());
}

/// By command (four minutes, most of it the keyholders' setup through the WAN):
/// `cargo test --release -p coordinator --test wan_serving -- --ignored --nocapture`.
#[test]
#[ignore = "runs by command (four minutes); CI runs mode (b)'s schedule"]
fn mode_a_over_a_wan_gives_the_same_labels_and_says_where_the_time_goes() {
    let Some(hosts) = Hosts::or_skip("c", 4) else {
        return;
    };
    // trained on 127.0.0.1, then served across the namespaces (the nodes' state is on disk)
    let port = free_port();
    let fed = trained(&common::collective_config().replace(
        "round_timeout_s = 300",
        &format!(
            "round_timeout_s = 300\ncoordinator_address = \"127.0.0.1:{port}\"\n\
             listen = \"127.0.0.1:{port}\""
        ),
    ));
    let dial = format!("{}:4433", Hosts::address(0));
    let (lan_setup, lan) = collective(&hosts, &fed, &dial, &dial, "bridge-a");
    let front: SocketAddr = dial.parse().unwrap();
    let back: SocketAddr = "127.0.0.1:4434".parse().unwrap();
    let relay = Relay::start(Some(&hosts.namespace(0)), front, back, Profile::WAN, 45).unwrap();
    let (wan_setup, wan) = collective(&hosts, &fed, "127.0.0.1:4434", &dial, "wan-a");
    let (seen, dropped, bytes) = (
        relay.counts.seen.load(Ordering::Relaxed),
        relay.counts.dropped.load(Ordering::Relaxed),
        relay.counts.bytes.load(Ordering::Relaxed),
    );
    drop(relay);
    assert_eq!(
        labels(&lan),
        labels(&wan),
        "the same images, other labels over the WAN"
    );
    eprintln!(
        "HEAL-WAN-SERVING mode (a), 3 keyholders (t = 2), {IMAGES} requests of one 28² image:\n  \
         bridge: setup {lan_setup:.1} s; {}\n  wan: setup {wan_setup:.1} s; {}\n  relay: {seen} \
         datagrams, {dropped} dropped, {:.1} MB",
        summary(&lan),
        summary(&wan),
        bytes as f64 / 1e6
    );
    drop(hosts);
    assert_eq!(Hosts::left_behind("c"), Vec::<String>::new());
}
