//! What the integration tests with the real binaries share: the data directory, the binaries,
//! a free port, and child processes that die with the test.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use coordinator::config::FederationConfig;
use coordinator::provision::provision;
use protocol::FederationId;

pub mod netns;
pub mod relay;
pub mod serving_host;

pub fn data_dir() -> PathBuf {
    datasets::medmnist::workspace_data_dir()
}

pub fn coordinator_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_coordinator"))
}

/// `coordinator simulate CFG --out OUT` on the shared data, offline; the caller adds the rest.
pub fn simulate_command(cfg: &Path, out: &Path) -> Command {
    let mut c = Command::new(coordinator_bin());
    c.arg("simulate")
        .arg(cfg)
        .arg("--out")
        .arg(out)
        .env("HEAL_DATA_DIR", data_dir())
        .env("HEAL_OFFLINE", "1");
    c
}

/// The hospital node binary, beside the coordinator's (built with it by `cargo test`), or built now.
pub fn client_bin() -> PathBuf {
    let c = coordinator_bin().with_file_name(format!("client{}", std::env::consts::EXE_SUFFIX));
    if !c.exists() {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap())
            .args(["build", "-p", "client", "--bin", "client"])
            .status()
            .expect("cargo");
        assert!(
            status.success() && c.exists(),
            "cannot build the client binary"
        );
    }
    c
}

/// The data and training sections of the small BreastMNIST federations the tests run: an IID
/// partition, one local epoch per round, no test-split evaluation; `[node]` comes last so a
/// caller may add keys to it.
pub fn breastmnist_sections(seed: u32) -> String {
    format!(
        r#"
[dataset]
kind = "medmnist"
name = "breastmnist"
offline = true

[partition]
scheme = "iid"
seed = {seed}

[train]
epochs = 1
batch_size = 32
lr = 2e-3
schedule = "constant"

[node]
test_every = 0
"#
    )
}

pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Child processes that die with the test, whatever way it ends.
pub struct Procs(pub Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A federation of `hospitals` on 127.0.0.1:`port` over BreastMNIST.
pub fn config(hospitals: u32, threshold: u32, quorum: u32, rounds: u64, port: u16) -> String {
    config_at(hospitals, threshold, quorum, rounds, "127.0.0.1", port)
}

/// The same with the coordinator on `host` (a network namespace's address).
pub fn config_at(
    hospitals: u32,
    threshold: u32,
    quorum: u32,
    rounds: u64,
    host: &str,
    port: u16,
) -> String {
    format!(
        r#"
[federation]
name = "faults"
hospitals = {hospitals}
threshold = {threshold}
rounds = {rounds}
min_hospitals = {quorum}
round_timeout_s = 120
coordinator_address = "{host}:{port}"
listen = "{host}:{port}"
{}reconnect_s = 120
"#,
        breastmnist_sections(3)
    )
}

pub struct Fed {
    pub _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub coordinator_dir: PathBuf,
    pub hospital_dirs: Vec<PathBuf>,
    pub federation: FederationId,
}

pub fn provisioned(cfg_text: &str) -> Fed {
    let dir = tempfile::tempdir().unwrap();
    let cfg = FederationConfig::from_toml(cfg_text).unwrap();
    let p = provision(&cfg, cfg_text, &dir.path().join("fed")).unwrap();
    Fed {
        root: dir.path().to_path_buf(),
        coordinator_dir: p.coordinator_dir,
        hospital_dirs: p.hospital_dirs,
        federation: p.federation,
        _dir: dir,
    }
}

/// Starts hospital `index` (1-based) of `fed`, its log in `hospital-<index>.log`.
pub fn start_hospital(fed: &Fed, index: usize) -> Child {
    hospital_in(Command::new(client_bin()), fed, index)
}

/// Hospital `index` of `fed` started by `command` (the client binary, or a wrapper that runs
/// it: `netns::Hosts::command`).
pub fn hospital_in(mut command: Command, fed: &Fed, index: usize) -> Child {
    command
        .args(["run", "--site"])
        .arg(fed.hospital_dirs[index - 1].join("site.toml"))
        .arg("--out")
        .arg(fed.root.join(format!("node-{index}")))
        .env("HEAL_DATA_DIR", data_dir())
        .env("HEAL_OFFLINE", "1")
        .env("RAYON_NUM_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(fed.root.join(format!("hospital-{index}.log"))).unwrap())
        .spawn()
        .unwrap()
}

/// `coordinator run` of `fed` started by `command` (the binary, or a wrapper that runs it:
/// `netns::Hosts::command`), its log in ROOT/coordinator.log, and each round it commits (its
/// `HEAL-ROUND-COMMITTED` line) with when it was read.
pub fn coordinator_in(
    mut command: Command,
    fed: &Fed,
) -> (Child, std::sync::mpsc::Receiver<(u64, std::time::Instant)>) {
    use std::io::{BufRead, BufReader};
    let mut child = command
        .args(["run", "--dir"])
        .arg(&fed.coordinator_dir)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(fed.root.join("coordinator.log")).unwrap())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, commits) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(r) = line
                .strip_prefix("HEAL-ROUND-COMMITTED ")
                .and_then(|r| r.trim().parse::<u64>().ok())
            {
                let _ = tx.send((r, std::time::Instant::now()));
            }
        }
    });
    (child, commits)
}

/// Provisions `text` and trains it to its end with the real binaries (`coordinator run` and
/// every hospital's `client run`, outputs in ROOT/node-<i>, logs in ROOT), each within 10
/// minutes.
pub fn trained(text: &str) -> Fed {
    let fed = provisioned(text);
    let mut training = Procs(vec![
        Command::new(coordinator_bin())
            .args(["run", "--dir"])
            .arg(&fed.coordinator_dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(fed.root.join("coordinator.log")).unwrap())
            .spawn()
            .unwrap(),
    ]);
    for i in 1..=fed.hospital_dirs.len() {
        training.0.push(start_hospital(&fed, i));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    for (i, c) in training.0.iter_mut().enumerate() {
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "training process {i} exited with {status}"
                );
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "training process {i} did not finish"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    fed
}
