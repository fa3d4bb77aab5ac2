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

/// Runs a system tool (`ip`, `mount`) to its end; its stderr is the error.
pub fn tool(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The last lines of a log, for a failure's message.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}

/// Waits for `child` to exit successfully within `limit` (killed and failed otherwise, with
/// the end of its log).
pub fn wait_exit(child: &mut Child, limit: std::time::Duration, what: &str, log: &Path) {
    let status = wait_status(child, limit, what, log);
    assert!(
        status.success(),
        "{what} exited with {status}:\n{}",
        tail(log)
    );
}

/// Waits for `child` to exit within `limit`, whatever its status (killed and failed otherwise).
pub fn wait_status(
    child: &mut Child,
    limit: std::time::Duration,
    what: &str,
    log: &Path,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish in {limit:?}:\n{}", tail(log));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Waits for every hospital of `procs` (hospital i at index i − 1) to finish successfully.
pub fn hospitals_finish(procs: &mut Procs, fed: &Fed) {
    for (i, n) in procs.0.iter_mut().enumerate() {
        let log = fed.root.join(format!("hospital-{}.log", i + 1));
        wait_exit(
            n,
            std::time::Duration::from_secs(120),
            &format!("hospital {}", i + 1),
            &log,
        );
    }
}

/// The invariants of a finished federation's store at `state` (its state.redb): rounds 1 to
/// `rounds` each committed exactly once, in order, each by at least `quorum` hospitals and
/// re-encrypted by `switchers`; returns the records.
pub fn committed_once(
    state: &Path,
    rounds: u64,
    quorum: usize,
    switchers: usize,
) -> Vec<coordinator::store::RoundRecord> {
    let store = coordinator::store::Store::open_existing(state).unwrap();
    let records = store.rounds().unwrap();
    assert_eq!(
        records.iter().map(|r| r.round).collect::<Vec<_>>(),
        (1..=rounds).collect::<Vec<_>>(),
        "every round committed exactly once, in order"
    );
    for r in &records {
        assert!(
            r.participants.len() >= quorum,
            "round {} below the quorum",
            r.round
        );
        assert_eq!(
            r.switchers.len(),
            switchers,
            "t switchers re-encrypted round {}",
            r.round
        );
    }
    records
}

/// Every one of `hospitals` ends with hospital 1's final model, byte for byte.
pub fn same_final_models(fed: &Fed, hospitals: usize) {
    let model = |i: usize| std::fs::read(fed.root.join(format!("node-{i}/model.f32"))).unwrap();
    for i in 2..=hospitals {
        assert!(
            model(i) == model(1),
            "hospital {i} ends with the federation's model"
        );
    }
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
    command: Command,
    fed: &Fed,
) -> (Child, std::sync::mpsc::Receiver<(u64, std::time::Instant)>) {
    coordinator_logged(command, fed, "coordinator.log", &[], &[])
}

/// [`coordinator_in`] with the log in ROOT/`log`, `args` after `run --dir DIR` and `envs` set.
pub fn coordinator_logged(
    mut command: Command,
    fed: &Fed,
    log: &str,
    args: &[&std::ffi::OsStr],
    envs: &[(&str, &str)],
) -> (Child, std::sync::mpsc::Receiver<(u64, std::time::Instant)>) {
    use std::io::{BufRead, BufReader};
    let mut child = command
        .args(["run", "--dir"])
        .arg(&fed.coordinator_dir)
        .args(args)
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(fed.root.join(log)).unwrap())
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

/// `GET path` on `addr` over plain HTTP/1.1: the status line and headers, and the body (chunked
/// bodies joined). `None` when nothing answers.
pub fn http_get(addr: &str, path: &str) -> Option<(String, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Some((head.to_string(), body.to_string()));
    }
    let (mut out, mut rest) = (String::new(), body);
    while let Some((len, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).ok()?;
        if n == 0 {
            break;
        }
        out.push_str(tail.get(..n)?);
        rest = tail.get(n + 2..)?;
    }
    Some((head.to_string(), out))
}

/// The coordinator's metrics address once `simulate` (spawned with piped stdout) prints it.
pub fn printed_metrics_address(
    child: &mut Child,
) -> std::sync::Arc<std::sync::Mutex<Option<String>>> {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("simulate's stdout piped");
    let addr: std::sync::Arc<std::sync::Mutex<Option<String>>> = Default::default();
    let seen = addr.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(url) = line.strip_prefix("coordinator metrics for Prometheus: http://") {
                *seen.lock().unwrap() = url.strip_suffix("/metrics").map(str::to_string);
            }
        }
    });
    addr
}

/// A finished simulation's `summary.json` and per-round table.
pub fn run_tables(out: &Path) -> (ops::run_report::RunSummary, Vec<ops::run_report::RoundRow>) {
    let summary =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let rows = ops::run_report::parse_rounds(
        &std::fs::read_to_string(out.join("metrics_per_round.csv")).unwrap(),
    )
    .unwrap();
    (summary, rows)
}

/// A small network (conv → x² → dense) trained for one epoch on part of BreastMNIST.
pub fn small_network(root: &Path) -> PathBuf {
    let cfg = root.join("net.toml");
    std::fs::write(
        &cfg,
        "[dataset]\nkind = \"medmnist\"\nname = \"breastmnist\"\noffline = true\n\
         [model]\n[[model.layers]]\ntype = \"conv\"\nchannels = 4\nkernel = 5\nstride = 2\n\
         [[model.layers]]\ntype = \"act\"\n[[model.layers]]\ntype = \"dense\"\n\
         [train]\nepochs = 1\nbatch_size = 32\n[baseline]\nmax_train = 200\n",
    )
    .unwrap();
    let out = root.join("net");
    let o = Command::new(client_bin())
        .args(["--quiet", "baseline", "--out"])
        .arg(&out)
        .arg(&cfg)
        .env("HEAL_DATA_DIR", data_dir())
        .env("HEAL_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out.join("network.json")
}

/// A 3-hospital BreastMNIST federation, one round, of a network shallower than the default
/// (conv → x² → dense, depth 3): mode (a)'s two-prime rescales then fit a ring of 2^14, and the
/// tests that serve it stay quick (the default network's mode (a) is measured by `bench_infer`).
pub fn collective_config() -> String {
    let head = "[federation]\nname = \"served\"\nhospitals = 3\nthreshold = 2\nrounds = 1\n\
                min_hospitals = 3\ninference = \"collective\"\nround_timeout_s = 300\n";
    let model = "[model]\n[[model.layers]]\ntype = \"conv\"\nchannels = 4\nkernel = 5\nstride = 2\n\
                 [[model.layers]]\ntype = \"act\"\n[[model.layers]]\ntype = \"dense\"\n";
    format!(
        "{head}{}\n{model}\n[simulate]\ntimeout_s = 600\n",
        breastmnist_sections(1)
    )
}

/// Waits (at most `limit`) until the log file at `log` holds `line`; the log in the panic.
pub fn wait_for_line(log: &Path, line: &str, limit: std::time::Duration) {
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains(line)
    {
        assert!(
            start.elapsed() < limit,
            "{} never said {line:?}:\n{}",
            log.display(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Each image's label in a `client infer --json` report.
pub fn infer_labels(v: &serde_json::Value) -> Vec<u64> {
    v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["label"].as_u64().unwrap())
        .collect()
}
