//! `coordinator simulate --serve-inference N`: after the rounds, mode (a) on the same machine.
//! Starts `coordinator serve-inference --collective` and one `client hold-keys` per hospital,
//! has hospital 1 ask for N test images encrypted under the collective key (`client infer`),
//! compares the labels with the plaintext network's (`client infer --local`), and writes
//! `inference_mode_a.json`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::children::{Children, Interrupted};
use super::{free_udp_port, log_file};
use crate::provision::Provisioned;

/// A simulated federation after its rounds: what mode (a) serving and head training start from.
pub struct Finished<'a> {
    pub stop: &'a Interrupted,
    pub provisioned: &'a Provisioned,
    pub out: &'a Path,
    pub coordinator_bin: &'a Path,
    pub client_bin: &'a Path,
    /// The MedMNIST data set it trained on.
    pub dataset: String,
}

/// What the run needs to know.
pub struct Serving<'a> {
    pub fed: &'a Finished<'a>,
    pub images: usize,
    pub threshold: u32,
    pub deadline: Instant,
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

fn labels(v: &Value) -> Vec<Option<u64>> {
    v["images"]
        .as_array()
        .map(|a| a.iter().map(|i| i["label"].as_u64()).collect())
        .unwrap_or_default()
}

fn logits(v: &Value) -> Vec<Vec<f64>> {
    v["images"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| {
                    i["logits"]
                        .as_array()
                        .map(|l| l.iter().filter_map(Value::as_f64).collect())
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A hospital node's output directory in a simulation.
pub(super) fn node_dir(out: &Path, index: usize) -> PathBuf {
    out.join("hospitals").join(format!("hospital-{index}"))
}

/// One `client hold-keys [extra…]` per hospital against `addr`, logging to
/// `logs/<log>-<i>.log`; their indices in `procs`.
pub(super) fn spawn_keyholders(
    procs: &mut Children,
    client_bin: &Path,
    provisioned: &Provisioned,
    out: &Path,
    addr: &str,
    extra: &[&str],
    log: &str,
) -> anyhow::Result<Vec<usize>> {
    let mut started = Vec::new();
    for (i, dir) in provisioned.hospital_dirs.iter().enumerate() {
        let index = i + 1;
        started.push(
            procs
                .spawn(
                    Command::new(client_bin)
                        .arg("hold-keys")
                        .args(extra)
                        .args(["--server", addr, "--site"])
                        .arg(dir.join("site.toml"))
                        .arg("--out")
                        .arg(node_dir(out, index))
                        .stdout(Stdio::null())
                        .stderr(log_file(out, &format!("{log}-{index}.log"))?),
                )
                .with_context(|| format!("cannot start keyholder {index}"))?,
        );
    }
    Ok(started)
}

/// Runs mode (a) and writes `inference_mode_a.json`; returns its content.
pub fn run(s: &Serving) -> anyhow::Result<Value> {
    let port = free_udp_port()?;
    let addr = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let mut procs = Children::new();
    let mut serving = vec![
        procs
            .spawn(
                Command::new(s.fed.coordinator_bin)
                    .args([
                        "serve-inference",
                        "--collective",
                        "--listen",
                        &addr,
                        "--dir",
                    ])
                    .arg(&s.fed.provisioned.coordinator_dir)
                    .stdout(Stdio::null())
                    .stderr(log_file(s.fed.out, "serving-coordinator.log")?),
            )
            .context("cannot start the serving coordinator")?,
    ];
    let node_out = |index: usize| node_dir(s.fed.out, index);
    serving.extend(spawn_keyholders(
        &mut procs,
        s.fed.client_bin,
        s.fed.provisioned,
        s.fed.out,
        &addr,
        &[],
        "keyholder",
    )?);
    let images: Vec<String> = (0..s.images)
        .map(|i| format!("{}:test:{i}", s.fed.dataset))
        .collect();
    let remote_json = s.fed.out.join("logs").join("infer-mode-a.json");
    let local_json = s.fed.out.join("logs").join("infer-local.json");
    let site = s.fed.provisioned.hospital_dirs[0].join("site.toml");
    // setup (every hospital's keys, then each keyholder's own) takes a while: ask until served
    let mut attempts = 0;
    let remote = loop {
        for &i in &serving {
            if let Some(c) = procs.get_mut(i).try_wait()? {
                bail!("a serving process exited early ({c}); see the logs");
            }
        }
        attempts += 1;
        let status = procs
            .run(
                Command::new(s.fed.client_bin)
                    .args(["infer", "--server", &addr, "--timeout-s", "300", "--site"])
                    .arg(&site)
                    .arg("--json")
                    .arg(&remote_json)
                    .args(&images)
                    .stdout(Stdio::null())
                    .stderr(log_file(s.fed.out, "requester.log")?),
                s.fed.stop,
                s.deadline,
            )
            .context("the requester")?;
        if status.success() {
            break read_json(&remote_json)?;
        }
        if Instant::now() > s.deadline {
            bail!("mode (a) was not served before the deadline ({attempts} attempts)");
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    let served_s = started.elapsed().as_secs_f64();
    let status = procs
        .run(
            Command::new(s.fed.client_bin)
                .args(["infer", "--local", "--network"])
                .arg(node_out(1).join("network.json"))
                .arg("--json")
                .arg(&local_json)
                .args(&images)
                .stdout(Stdio::null())
                .stderr(log_file(s.fed.out, "requester-local.log")?),
            s.fed.stop,
            s.deadline,
        )
        .context("the plaintext comparison")?;
    if !status.success() {
        bail!("the plaintext comparison failed; see logs/requester-local.log");
    }
    let local = read_json(&local_json)?;
    drop(procs);

    let (lr, ll) = (labels(&remote), labels(&local));
    let plain_labels: Vec<Option<u64>> = local["images"]
        .as_array()
        .map(|a| a.iter().map(|i| i["plaintext_label"].as_u64()).collect())
        .unwrap_or_default();
    if lr.len() != s.images || ll.len() != s.images {
        bail!(
            "{} encrypted and {} local results for {} images",
            lr.len(),
            ll.len(),
            s.images
        );
    }
    let agree = lr.iter().zip(&plain_labels).filter(|(a, b)| a == b).count();
    let max_diff = logits(&remote)
        .iter()
        .zip(&logits(&local))
        .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
        .fold(0.0f64, f64::max);
    // each switch is logged by the keyholders that made it
    let logged = |what: &str| -> Vec<usize> {
        (1..=s.fed.provisioned.hospital_dirs.len())
            .map(|i| {
                std::fs::read_to_string(s.fed.out.join("logs").join(format!("keyholder-{i}.log")))
                    .map(|t| t.matches(what).count())
                    .unwrap_or(0)
            })
            .collect()
    };
    let switched = logged("switching a served result");
    // a deep plan's refreshes between segments, each logged by every keyholder that made it
    let refreshed = logged("refreshing a served request's segment output");
    let summary = json!({
        "images": s.images,
        "agreement": agree as f64 / s.images as f64,
        "max_logit_difference": max_diff,
        "threshold": s.threshold,
        "requests_logged_per_keyholder": switched,
        "refreshes_logged_per_keyholder": refreshed,
        "setup_and_first_answer_s": served_s,
        "request": remote["timings"].clone(),
        "bytes": remote["bytes"].clone(),
    });
    std::fs::write(
        s.fed.out.join("inference_mode_a.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    println!(
        "mode (a): {} test images encrypted under the collective key, each request evaluated and \
         switched by {} keyholders: labels agree with the plaintext network on {agree}/{}, \
         max logit difference {max_diff:.2e}; request {:.2} s (evaluate {:.2} s)",
        s.images,
        s.threshold,
        s.images,
        remote["timings"]["total_s"].as_f64().unwrap_or(f64::NAN),
        remote["timings"]["evaluate_s"].as_f64().unwrap_or(f64::NAN),
    );
    Ok(summary)
}
