//! `coordinator simulate CONFIG`: a whole consortium on this machine. Provisions into a
//! temporary directory, starts the coordinator and one hospital node per hospital as child
//! processes talking real QUIC with mutual TLS over 127.0.0.1, follows the rounds with a
//! progress bar, then writes the per-round, per-hospital metrics (CSV and Parquet), the plots
//! and `summary.json` into the output directory.

mod children;
mod epsilon;
mod head_training;
mod out_dir;
mod report;
mod serving;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::config::FederationConfig;
use crate::provision::provision;
use crate::server::CoordinatorDir;
use children::{Children, Interrupted};
pub use epsilon::EpsilonOverride;

/// How `simulate` departs from its config, from the command line.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The same pipeline without homomorphic encryption.
    pub plaintext: bool,
    /// Replaces the config's `[coordinator] backend`.
    pub backend: Option<he_agg::aggregate::BackendChoice>,
    /// Test images asked of the final model served in mode (a) (0: not served).
    pub serve_inference: usize,
    /// Examples hospital 1 contributes encrypted to train the final model's head (0: none).
    pub train_head: usize,
    /// Passes of that training.
    pub head_epochs: u32,
    /// Replaces an earlier run in the output directory.
    pub force: bool,
    /// Replaces `[privacy] target_epsilon`, or turns differential privacy off.
    pub epsilon: Option<EpsilonOverride>,
}

/// The README's default experiment, built in.
pub const DEFAULT_CONFIG: &str = include_str!("../../../configs/organamnist-5-hospitals.toml");

/// Runs the simulation described by `config_path` (default: [`DEFAULT_CONFIG`]) as `opts` say.
pub fn run(config_path: Option<&Path>, out: Option<PathBuf>, opts: &Options) -> anyhow::Result<()> {
    let Options {
        plaintext,
        backend,
        serve_inference,
        train_head,
        head_epochs,
        force,
        epsilon,
    } = opts.clone();
    let stop = Interrupted::install()?;
    let (text, config_path) = match config_path {
        Some(p) => (
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
            p.to_path_buf(),
        ),
        None => (
            DEFAULT_CONFIG.to_string(),
            PathBuf::from("configs/organamnist-5-hospitals.toml (built in)"),
        ),
    };
    let config_path = config_path.as_path();
    let mut doc: toml::Table = toml::from_str(&text)
        .with_context(|| format!("{} is not valid TOML", config_path.display()))?;
    // the simulation's own address, and the plaintext switch, go into the config it provisions
    let port = free_udp_port()?;
    let fed = doc
        .get_mut("federation")
        .and_then(|v| v.as_table_mut())
        .context("missing [federation]")?;
    fed.insert(
        "coordinator_address".into(),
        format!("127.0.0.1:{port}").into(),
    );
    fed.insert("listen".into(), format!("127.0.0.1:{port}").into());
    if plaintext {
        let he = doc.entry("he").or_insert_with(|| toml::Table::new().into());
        he.as_table_mut()
            .context("[he] must be a table")?
            .insert("plaintext".into(), true.into());
    }
    let coordinator = doc
        .entry("coordinator")
        .or_insert_with(|| toml::Table::new().into())
        .as_table_mut()
        .context("[coordinator] must be a table")?;
    if let Some(backend) = backend {
        coordinator.insert("backend".into(), backend.to_string().into());
    }
    // the simulation's metrics on a port of its own (a service may hold the default), unless off
    if coordinator.get("metrics").and_then(|m| m.as_str()) != Some("off") {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("cannot find a free port for the metrics")?
            .port();
        coordinator.insert("metrics".into(), format!("127.0.0.1:{port}").into());
    }
    if let Some(e) = epsilon {
        e.apply(&mut doc)?;
    }
    // every hospital's metrics on a free port of its own (written to its metrics-address)
    let node = doc
        .entry("node")
        .or_insert_with(|| toml::Table::new().into())
        .as_table_mut()
        .context("[node] must be a table")?;
    if node.get("metrics").and_then(|m| m.as_str()) != Some("off") {
        node.insert("metrics".into(), "127.0.0.1:0".into());
    }
    let text = toml::to_string(&doc)?;
    let mut cfg = FederationConfig::from_toml(&text)
        .with_context(|| format!("in {}", config_path.display()))?;
    cfg.config_dir = crate::config::config_dir(config_path);
    if train_head > 0 && cfg.he.plaintext {
        bail!("--train-head trains under a collective key: not with --plaintext");
    }
    if serve_inference > 0 && cfg.he.plaintext {
        bail!("--serve-inference serves the model under a collective key: not with --plaintext");
    }
    if serve_inference > protocol::serve::collective::MAX_COLLECTIVE_IMAGES as usize {
        bail!(
            "--serve-inference takes at most {} images (one request)",
            protocol::serve::collective::MAX_COLLECTIVE_IMAGES
        );
    }
    let name = format!(
        "{}{}{}",
        cfg.federation.name,
        epsilon.map(EpsilonOverride::suffix).unwrap_or_default(),
        if cfg.he.plaintext { "-plaintext" } else { "" }
    );
    let out = out.unwrap_or_else(|| PathBuf::from("out").join(&name));
    out_dir::prepare(&out, force)?;
    std::fs::create_dir_all(out.join("logs"))
        .with_context(|| format!("cannot create {}", out.display()))?;

    let kits = tempfile::Builder::new()
        .prefix("heal-simulate-")
        .tempdir()
        .context("temporary directory")?;
    let fed_dir = kits.path().join("federation");
    if serve_inference > 0 {
        // the requesters of a consortium that serves under a collective key accept only that
        cfg.federation.inference = protocol::site::InferenceMode::Collective;
    }
    let p = provision(&cfg, &text, &fed_dir)?;
    println!(
        "simulating \"{}\": {} hospitals, threshold {}, {} rounds, {} — federation {}",
        cfg.federation.name,
        cfg.federation.hospitals,
        cfg.threshold(),
        cfg.rounds(),
        if cfg.he.plaintext {
            "plaintext".to_string()
        } else {
            "CKKS, collective keys, t-of-N switching to the consortium receiving key".to_string()
        },
        p.federation
    );
    if let Some(line) = crate::privacy_report::describe(&cfg)? {
        println!("{line}");
    }
    if let Some(addr) = cfg.coordinator.metrics_addr()? {
        println!("coordinator metrics for Prometheus: http://{addr}/metrics");
    }

    let coordinator_bin = std::env::current_exe().context("cannot locate this executable")?;
    let client_bin = client_binary(&coordinator_bin)?;
    let started = Instant::now();
    let mut children = Children::new();
    let coordinator = children
        .spawn(
            Command::new(&coordinator_bin)
                .arg("run")
                .arg("--dir")
                .arg(&p.coordinator_dir)
                .stdout(Stdio::piped())
                .stderr(log_file(&out, "coordinator.log")?),
        )
        .context("cannot start the coordinator")?;
    let mut hospitals = Vec::new();
    for (i, dir) in p.hospital_dirs.iter().enumerate() {
        let index = i + 1;
        let node_out = out.join("hospitals").join(format!("hospital-{index}"));
        std::fs::create_dir_all(&node_out)?;
        let child = children
            .spawn(
                Command::new(&client_bin)
                    .arg("run")
                    .arg("--site")
                    .arg(dir.join("site.toml"))
                    .arg("--out")
                    .arg(&node_out)
                    .env(
                        "RAYON_NUM_THREADS",
                        cfg.simulate.threads_per_hospital.to_string(),
                    )
                    .stdout(log_file(&out, &format!("hospital-{index}.out.log"))?)
                    .stderr(log_file(&out, &format!("hospital-{index}.log"))?),
            )
            .with_context(|| format!("cannot start hospital {index} ({})", client_bin.display()))?;
        hospitals.push(child);
    }

    let bars = MultiProgress::new();
    let bar = bars.add(ProgressBar::new(cfg.rounds()));
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] round {pos}/{len} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(if cfg.he.plaintext {
        "starting"
    } else {
        "setting up collective keys"
    });
    let hospital_bars: Vec<ProgressBar> = (1..=cfg.federation.hospitals)
        .map(|i| {
            let b = bars.add(ProgressBar::new(cfg.rounds()));
            b.set_style(
                ProgressStyle::with_template("  hospital {prefix:>3} [{bar:20}] {msg}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            b.set_prefix(i.to_string());
            b.set_message("connecting");
            b
        })
        .collect();
    let stdout = children
        .get_mut(coordinator)
        .stdout
        .take()
        .context("coordinator stdout")?;
    let progress = {
        let (bar, hospital_bars) = (bar.clone(), hospital_bars.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(r) = line
                    .strip_prefix("HEAL-ROUND-COMMITTED ")
                    .and_then(|r| r.trim().parse::<u64>().ok())
                {
                    bar.set_position(r);
                    bar.set_message("training");
                } else if let Some(rest) = line.strip_prefix("HEAL-UPDATE ") {
                    let mut it = rest
                        .split_whitespace()
                        .filter_map(|x| x.parse::<u64>().ok());
                    if let (Some(r), Some(h)) = (it.next(), it.next())
                        && let Some(b) = hospital_bars.get((h as usize).saturating_sub(1))
                    {
                        b.set_position(r);
                        b.set_message(format!("round {r}: update in"));
                    }
                }
            }
        })
    };
    let deadline = started + Duration::from_secs(cfg.simulate.timeout_s);
    let outcome = wait_all(&mut children, coordinator, &hospitals, deadline, &stop);
    if outcome.is_err() {
        // ends the coordinator too, which closes the pipe the progress thread reads
        children.end_all();
    }
    let _ = progress.join();
    for b in hospital_bars.iter().chain(std::iter::once(&bar)) {
        b.finish_and_clear();
    }
    if let Err(e) = outcome {
        bail!("{e:#}\nlogs: {}", out.join("logs").display());
    }
    stop.check()?;
    let wall_s = started.elapsed().as_secs_f64();
    let coord = CoordinatorDir::new(p.coordinator_dir.clone());
    report::write(&cfg, &coord, &out, wall_s)?;
    println!("done in {wall_s:.1} s — results in {}", out.display());
    let finished = || -> anyhow::Result<serving::Finished<'_>> {
        Ok(serving::Finished {
            stop: &stop,
            provisioned: &p,
            out: &out,
            coordinator_bin: &coordinator_bin,
            client_bin: &client_bin,
            // MNIST has no name key: its kind names it
            dataset: cfg
                .site_sections
                .get("dataset")
                .and_then(|d| {
                    d.get("name")
                        .or_else(|| d.get("kind").filter(|k| k.as_str() == Some("mnist")))
                })
                .and_then(|n| n.as_str())
                .context("[dataset] name")?
                .to_string(),
        })
    };
    if serve_inference > 0 {
        println!(
            "serving the final model under a collective key (mode a): key setup, encrypted \
             model, {serve_inference} encrypted test images…"
        );
        serving::run(&serving::Serving {
            fed: &finished()?,
            images: serve_inference,
            threshold: cfg.threshold(),
            deadline: Instant::now() + Duration::from_secs(cfg.simulate.timeout_s),
        })
        .with_context(|| format!("mode (a) serving; logs: {}", out.join("logs").display()))?;
    }
    if train_head > 0 {
        println!(
            "training the final model's head on {train_head} encrypted examples of hospital 1: \
             key setup, upload, {head_epochs} epochs refreshed by {} keyholders…",
            cfg.threshold()
        );
        head_training::run(&head_training::HeadTraining {
            fed: &finished()?,
            examples: train_head,
            epochs: head_epochs,
            deadline: Instant::now() + Duration::from_secs(cfg.simulate.timeout_s.max(3600)),
        })
        .with_context(|| format!("head training; logs: {}", out.join("logs").display()))?;
    }
    Ok(())
}

/// Waits for the coordinator and every hospital to exit successfully; an error at the deadline,
/// on a signal, or when one of them fails.
fn wait_all(
    children: &mut Children,
    coordinator: usize,
    hospitals: &[usize],
    deadline: Instant,
    stop: &Interrupted,
) -> anyhow::Result<()> {
    let mut coordinator_done = false;
    let mut hospital_done = vec![false; hospitals.len()];
    while !(coordinator_done && hospital_done.iter().all(|&d| d)) {
        stop.check()?;
        if Instant::now() > deadline {
            bail!("the simulation did not finish within [simulate] timeout_s");
        }
        if !coordinator_done && let Some(status) = children.get_mut(coordinator).try_wait()? {
            if !status.success() {
                bail!("the coordinator failed ({status})");
            }
            coordinator_done = true;
        }
        for (i, &h) in hospitals.iter().enumerate() {
            if !hospital_done[i]
                && let Some(status) = children.get_mut(h).try_wait()?
            {
                if !status.success() {
                    bail!("hospital {} failed ({status})", i + 1);
                }
                hospital_done[i] = true;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn log_file(out: &Path, name: &str) -> anyhow::Result<std::fs::File> {
    let path = out.join("logs").join(name);
    std::fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))
}

/// A free UDP port on 127.0.0.1 (asked of the OS, then released for the coordinator).
fn free_udp_port() -> anyhow::Result<u16> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(s.local_addr()?.port())
}

/// The hospital node binary: `HEAL_CLIENT_BIN`, else `client` beside this executable (a cargo
/// build puts both in `target/<profile>/`), else `heal-client` or `client` on the `PATH` (an
/// installed package). Never built from here: a simulation runs the binaries it is given.
fn client_binary(coordinator_bin: &Path) -> anyhow::Result<PathBuf> {
    locate_client(
        std::env::var_os("HEAL_CLIENT_BIN").map(PathBuf::from),
        coordinator_bin,
        std::env::var_os("PATH").as_deref(),
    )
}

fn locate_client(
    explicit: Option<PathBuf>,
    coordinator_bin: &Path,
    path_var: Option<&std::ffi::OsStr>,
) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        if !p.is_file() {
            bail!("HEAL_CLIENT_BIN = {} is not a file", p.display());
        }
        return Ok(p);
    }
    let exe = |name: &str| format!("{name}{}", std::env::consts::EXE_SUFFIX);
    let beside = coordinator_bin
        .parent()
        .map(|dir| dir.join(exe("client")))
        .filter(|p| p.is_file());
    let on_path = || {
        std::env::split_paths(path_var?)
            .flat_map(|dir| [dir.join(exe("heal-client")), dir.join(exe("client"))])
            .find(|p| p.is_file())
    };
    beside.or_else(on_path).with_context(|| {
        format!(
            "no hospital node binary beside {} or on the PATH: build it with `cargo build --release -p client -p coordinator` (or set HEAL_CLIENT_BIN)",
            coordinator_bin.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_binary_is_found_beside_on_the_path_or_named_never_built() {
        let dir = tempfile::tempdir().unwrap();
        let (bin, other) = (dir.path().join("bin"), dir.path().join("other"));
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        let coordinator = bin.join("coordinator");
        // nothing anywhere: a clear error naming the build command, and nothing built
        let err = locate_client(None, &coordinator, Some(other.as_os_str())).unwrap_err();
        assert!(
            format!("{err:#}").contains("cargo build --release -p client"),
            "{err:#}"
        );
        assert!(!bin.join("client").exists());
        // an installed package's binary on the PATH
        let installed = other.join(format!("heal-client{}", std::env::consts::EXE_SUFFIX));
        std::fs::write(&installed, b"").unwrap();
        let path = std::env::join_paths([&bin, &other]).unwrap();
        assert_eq!(
            locate_client(None, &coordinator, Some(&path)).unwrap(),
            installed
        );
        // beside the coordinator wins over the PATH
        let beside = bin.join(format!("client{}", std::env::consts::EXE_SUFFIX));
        std::fs::write(&beside, b"").unwrap();
        assert_eq!(
            locate_client(None, &coordinator, Some(&path)).unwrap(),
            beside
        );
        // an explicit path must exist
        assert!(locate_client(Some(other.join("nope")), &coordinator, None).is_err());
        assert_eq!(
            locate_client(Some(installed.clone()), &coordinator, None).unwrap(),
            installed
        );
    }
}
