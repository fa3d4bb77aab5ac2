//! `coordinator simulate --train-head N`: after the rounds, encrypted head training on the same
//! machine. Starts `coordinator train-head` and one `client hold-keys --head` per hospital;
//! hospital 1 contributes N training images as encrypted features (`client contribute-encrypted`),
//! which report the trained head's test ACC and AUC beside the same steps in plaintext; writes
//! `head_training.json` with each keyholder's count of logged refreshes.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::children::Children;
use super::serving::{Finished, node_dir, spawn_keyholders};
use super::{free_udp_port, log_file};

/// What the run needs to know.
pub struct HeadTraining<'a> {
    pub fed: &'a Finished<'a>,
    pub examples: usize,
    /// Passes over the contribution.
    pub epochs: u32,
    pub deadline: Instant,
}

/// Runs it and writes `head_training.json`; returns its content.
pub fn run(s: &HeadTraining) -> anyhow::Result<serde_json::Value> {
    let addr = format!("127.0.0.1:{}", free_udp_port()?);
    let started = Instant::now();
    let mut procs = Children::new();
    let mut servers = vec![
        procs
            .spawn(
                Command::new(s.fed.coordinator_bin)
                    .args(["train-head", "--listen", &addr, "--epochs"])
                    .arg(s.epochs.to_string())
                    .arg("--dir")
                    .arg(&s.fed.provisioned.coordinator_dir)
                    .stdout(Stdio::null())
                    .stderr(log_file(s.fed.out, "head-coordinator.log")?),
            )
            .context("cannot start the head-training coordinator")?,
    ];
    servers.extend(spawn_keyholders(
        &mut procs,
        s.fed.client_bin,
        s.fed.provisioned,
        s.fed.out,
        &addr,
        &["--head"],
        "head-keyholder",
    )?);
    let report = s.fed.out.join("logs").join("contribution.json");
    let site = s.fed.provisioned.hospital_dirs[0].join("site.toml");
    // key setup takes a while: contribute until the job is offered
    let mut attempts = 0;
    loop {
        for &i in &servers {
            if let Some(c) = procs.get_mut(i).try_wait()? {
                bail!("a head-training process exited early ({c}); see the logs");
            }
        }
        attempts += 1;
        let status = procs
            .run(
                Command::new(s.fed.client_bin)
                    .args([
                        "contribute-encrypted",
                        "--server",
                        &addr,
                        "--data",
                        &s.fed.dataset,
                    ])
                    .arg("--limit")
                    .arg(s.examples.to_string())
                    .arg("--site")
                    .arg(&site)
                    .arg("--out")
                    .arg(node_dir(s.fed.out, 1))
                    .arg("--json")
                    .arg(&report)
                    .stdout(Stdio::null())
                    .stderr(log_file(s.fed.out, &format!("contributor-{attempts}.log"))?),
                s.fed.stop,
                s.deadline,
            )
            .context("the contributor")?;
        if status.success() {
            break;
        }
        if Instant::now() > s.deadline {
            bail!("the head was not trained before the deadline ({attempts} attempts)");
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    drop(procs);
    let text = std::fs::read_to_string(&report)
        .with_context(|| format!("cannot read {}", report.display()))?;
    let mut summary: serde_json::Value = serde_json::from_str(&text)?;
    // every refresh is logged by the keyholders that made it
    let logged: Vec<usize> = (1..=s.fed.provisioned.hospital_dirs.len())
        .map(|i| {
            std::fs::read_to_string(
                s.fed
                    .out
                    .join("logs")
                    .join(format!("head-keyholder-{i}.log")),
            )
            .map(|t| t.matches("refreshing the head's state").count())
            .unwrap_or(0)
        })
        .collect();
    summary["refreshes_logged_per_keyholder"] = serde_json::json!(logged);
    summary["wall_s"] = serde_json::json!(started.elapsed().as_secs_f64());
    if let Some(o) = summary.as_object_mut() {
        o.remove("head");
    }
    std::fs::write(
        s.fed.out.join("head_training.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    println!(
        "head training on {} encrypted examples: test ACC {:.4} / AUC {:.4} (the same steps in \
         plaintext {:.4} / {:.4}); refreshes logged per keyholder {logged:?}; {:.0} s",
        s.examples,
        summary["encrypted"]["test_acc"]
            .as_f64()
            .unwrap_or(f64::NAN),
        summary["encrypted"]["test_auc"]
            .as_f64()
            .unwrap_or(f64::NAN),
        summary["plaintext_same_steps"]["test_acc"]
            .as_f64()
            .unwrap_or(f64::NAN),
        summary["plaintext_same_steps"]["test_auc"]
            .as_f64()
            .unwrap_or(f64::NAN),
        started.elapsed().as_secs_f64()
    );
    Ok(summary)
}
