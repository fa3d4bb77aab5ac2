//! `client pacs`: the site's `[pacs]` section, the diagnosis in the site's pinned mode (at the
//! inference server, or with `--network` on this node in mode (b)), and the polling loop. The
//! node may be stopped at any moment: the record says what is settled.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use client::infer::pinned::Accepted;
use client::infer::remote::Target;
use client::pacs::{AtServer, Diagnose, DicomWeb, OnNode, PacsError, Poller, Record};
use protocol::site::InferenceMode;
use protocol::tls::TlsFiles;
use tracing::{error, info};

use crate::node::SiteConfig;

/// `client pacs`.
#[derive(clap::Args)]
pub struct PacsArgs {
    /// This hospital's site TOML, with its [pacs] section.
    #[arg(long)]
    site: PathBuf,
    /// Folder for the record of diagnosed series (pacs.redb) and the last pass's summary.
    #[arg(long)]
    out: PathBuf,
    /// Diagnose on this node with these released weights (mode b), not at the server.
    #[arg(long)]
    network: Option<PathBuf>,
    /// Inference server host:port (default: the coordinator's host, port 7446).
    #[arg(long)]
    server: Option<String>,
    /// One pass, then exit (from cron or a systemd timer); an unfinished pass fails.
    #[arg(long)]
    once: bool,
    /// Seconds the inference server gets for each step.
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
}

pub fn run(args: PacsArgs) -> Result<()> {
    let cfg = SiteConfig::load(&args.site)?;
    let Some(pacs) = cfg.pacs.clone() else {
        bail!(
            "{} has no [pacs] section: add the DICOMweb root and how HEAL signs in \
             (README, \"Diagnoses in the PACS\")",
            args.site.display()
        );
    };
    let base = crate::base_dir(&args.site);
    let web = DicomWeb::new(&pacs, &base).with_context(|| format!("in {}", args.site.display()))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let record = Record::open(&args.out.join("pacs.redb"))?;
    let work = args.out.join("pacs-work");
    let max_instances = pacs.max_instances;
    let diagnose: Box<dyn Diagnose> = match &args.network {
        Some(network) => {
            if cfg.site.inference != InferenceMode::Released {
                bail!(
                    "--network evaluates on this node (mode b), and this site pins {} ([site] \
                     inference): leave --network out to diagnose at the inference server",
                    cfg.site.inference
                );
            }
            let (file, preparation) = training::export::read_network(network)?;
            Box::new(OnNode {
                network: file.network,
                classes: file.class_names,
                name: network.display().to_string(),
                preparation,
            })
        }
        None => Box::new(AtServer {
            runtime: tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?,
            target: Target {
                server: crate::infer_cmd::server_address(args.server.clone(), &cfg),
                tls: TlsFiles::in_dir(&cfg.kit_dir(&args.site)),
                federation: cfg.federation_id()?,
                me: cfg.site.index,
                timeout: Duration::from_secs(args.timeout_s.max(1)),
                accept: Accepted::from_site(&cfg.site)?,
            },
        }),
    };
    let mut poller = Poller {
        pacs: web,
        diagnose,
        record,
        work,
        max_instances,
    };
    info!(pacs = %pacs.root(), modalities = ?pacs.modalities, "polling the PACS every {} s", pacs.poll_s);
    loop {
        match poller.pass() {
            Ok(report) => {
                let line = serde_json::to_string(&report)?;
                // one line per pass for scripts and tests; the record keeps the rest
                println!("HEAL-PACS-PASS {line}");
                write_last(&args.out, &line);
                info!(
                    found = report.found,
                    settled = report.settled,
                    diagnosed = report.diagnosed.len(),
                    refused = report.refused.len(),
                    deferred = report.deferred.len(),
                    "pass done"
                );
            }
            Err(e) if e.is_fatal() || args.once => return Err(stop(e)),
            Err(e) => error!(
                "this pass stopped: {e}; the next one starts in {} s",
                pacs.poll_s
            ),
        }
        if args.once {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(pacs.poll_s));
    }
}

fn stop(e: PacsError) -> anyhow::Error {
    let why = if e.is_fatal() {
        "this needs a person"
    } else {
        "the pass did not finish"
    };
    anyhow::Error::new(e).context(format!("client pacs stops: {why}"))
}

fn write_last(out: &Path, line: &str) {
    let path = out.join("pacs-last-pass.json");
    if let Err(e) = std::fs::write(&path, line) {
        error!("cannot write {}: {e}", path.display());
    }
}
