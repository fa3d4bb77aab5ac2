//! `client`: the hospital node's command line: centralised baselines and partitions for
//! researchers, and `run`, the node that takes part in a federation.

mod infer_cmd;
mod node;
mod pacs_cmd;
mod train_cmd;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use datasets::{PartitionConfig, Scheme};
use training::baseline::{PartitionRun, load_partition_tables, run_partition};

#[derive(Parser)]
#[command(name = "client", version, about = "HEAL hospital node")]
struct Cli {
    /// Hide progress bars.
    #[arg(long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Take part in a federation: connect to the coordinator with this site's kit, set up keys,
    /// and train, encrypt, re-encrypt and evaluate round after round.
    Run {
        /// The site TOML from this hospital's provisioning kit.
        #[arg(long)]
        site: PathBuf,
        /// Directory for this node's state (keys, global model) and outputs.
        #[arg(long)]
        out: PathBuf,
    },
    /// After training: hold this hospital's share of the key the final model is served under
    /// (mode a). Takes part in the key setup, then evaluates each signed request it is asked
    /// to serve with the model it holds and switches its result to the requester's key,
    /// logging every request.
    HoldKeys {
        /// The site TOML from this hospital's provisioning kit.
        #[arg(long)]
        site: PathBuf,
        /// The node's directory of `client run --out` (final model, exchange keys).
        #[arg(long)]
        out: PathBuf,
        /// The serving coordinator host:port (default: the coordinator's host, port 7446).
        #[arg(long)]
        server: Option<String>,
        /// Give up after this many seconds without reaching the server.
        #[arg(long, default_value_t = 600)]
        patience_s: u64,
        /// Hold a share of the key of encrypted head training (`coordinator train-head`, port
        /// 7447 by default) instead of the served model's.
        #[arg(long)]
        head: bool,
        /// With --head: most examples of a contribution this keyholder trains on (it replays
        /// every step itself and holds the examples in memory, ~0.55 MB each).
        #[arg(long, default_value_t = 10_000)]
        max_examples: u64,
    },
    /// Contribute this site's images to the training of the model's head without revealing
    /// them: their features under the final model's backbone are encrypted under the
    /// keyholders' collective key and uploaded to `coordinator train-head`; the trained head
    /// comes back under a key made here, is tested beside the same steps in plaintext, and
    /// written with --json.
    ContributeEncrypted {
        /// The site TOML from this site's provisioning kit.
        #[arg(long)]
        site: PathBuf,
        /// The node's directory of `client run --out` (its final model, network.json).
        #[arg(long)]
        out: PathBuf,
        /// MedMNIST data set of the examples, or `mnist` (the one the model was trained on).
        #[arg(long, default_value = "organamnist")]
        data: String,
        /// Examples of its training split to contribute.
        #[arg(long, default_value_t = 5000)]
        limit: usize,
        /// Test images to evaluate the trained head on (default: the whole test split).
        #[arg(long)]
        test_limit: Option<usize>,
        /// The head-training coordinator host:port (default: the coordinator's host, port 7447).
        #[arg(long)]
        server: Option<String>,
        /// MedMNIST data directory (default: $HEAL_DATA_DIR, then the cache dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// BLAKE3 of the only collective key accepted (each keyholder logs it at setup).
        #[arg(long)]
        collective_key: Option<String>,
        /// Write the report and the trained head as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Seconds to wait for the trained head.
        #[arg(long, default_value_t = 3600)]
        timeout_s: u64,
    },
    /// Train centrally on a data set's training split and evaluate on its official test split
    /// (from a pretrained backbone when the config has `[model.init]`).
    Baseline(train_cmd::BaselineArgs),
    /// Pretrain a backbone on public labelled sets (`[pretrain] sources`), or without their
    /// labels (`method = "contrastive"`), written as backbone.safetensors with its provenance,
    /// for `[model.init]` to start a task from.
    Pretrain(train_cmd::PretrainArgs),
    /// Make a trained ReLU network ([model] + [model.init], head kept) HE-friendly: every ReLU
    /// a trainable polynomial, every max-pool an average, trained with the ReLU network as
    /// teacher ([distill]); writes network.json for encrypted inference and conversion.json.
    Convert(train_cmd::ConvertArgs),
    /// Evaluate a trained network on encrypted images over a whole split (small images batched
    /// one per slot, large ones image by image) and compare with the plaintext network:
    /// agreement, accuracy, AUC, latency, throughput.
    EvaluateEncrypted {
        /// The exported network (`heal-network/1`, network.json of a training run).
        #[arg(long)]
        network: PathBuf,
        /// MedMNIST data set, or `mnist` (when no --config is given).
        #[arg(long, default_value = "organamnist")]
        dataset: String,
        /// A config whose [dataset] section gives the images (a `client baseline` or
        /// federation config: folders, manifests, DICOM, MedMNIST of any size).
        #[arg(long)]
        config: Option<PathBuf>,
        /// `auto` (batched for small images, per image for large ones), `batched` or
        /// `per-image`.
        #[arg(long, default_value = "auto")]
        packing: String,
        /// Split: train, val or test.
        #[arg(long, default_value = "test")]
        split: String,
        /// Only the first N images.
        #[arg(long)]
        limit: Option<usize>,
        /// Images per batch (default: one per slot of a ciphertext).
        #[arg(long)]
        batch: Option<usize>,
        /// Write the report as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// MedMNIST data directory (default: $HEAL_DATA_DIR, then the cache dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Smallest CKKS scale in bits (precision; default 30).
        #[arg(long)]
        min_scale_bits: Option<u32>,
    },
    /// Classify images encrypted under this hospital's own key: sent to the inference server
    /// over the federation's mutual-TLS QUIC (or evaluated here with --local), decrypted here.
    Infer {
        /// PNG, JPEG or DICOM files, or `dataset:split:index` (e.g. organamnist:test:123).
        #[arg(required = true)]
        images: Vec<String>,
        /// Evaluate in this process with the weights of --network (no server).
        #[arg(long)]
        local: bool,
        /// The exported network, for --local.
        #[arg(long)]
        network: Option<PathBuf>,
        /// This hospital's site TOML (kit: certificate, CA, federation).
        #[arg(long)]
        site: Option<PathBuf>,
        /// Inference server host:port (default: the coordinator's host, port 7446).
        #[arg(long)]
        server: Option<String>,
        /// Write the outcome as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// MedMNIST data directory for dataset:split:index images.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Seconds the server gets for each step.
        #[arg(long, default_value_t = 120)]
        timeout_s: u64,
    },
    /// Diagnose the PACS's new series under encryption and store each result in the study as
    /// a DICOM Structured Report: polls the DICOMweb endpoint of the site's [pacs] section
    /// (QIDO-RS, WADO-RS, STOW-RS), in the site's pinned inference mode.
    Pacs(pacs_cmd::PacsArgs),
    /// Serve the web portal: sign-in, diagnosis of uploaded images under encryption, history,
    /// training progress (http://127.0.0.1:8080/ by default).
    Portal {
        /// Portal directory: users.json (see `client user add`), per-user history and uploads.
        #[arg(long)]
        portal_dir: PathBuf,
        /// Address to listen on (keep it on 127.0.0.1 unless a TLS proxy fronts the portal).
        #[arg(long, default_value = client::portal::config::DEFAULT_LISTEN)]
        listen: std::net::SocketAddr,
        /// Evaluate on this node with these released weights (mode (b) evaluated on this node).
        #[arg(long)]
        network: Option<PathBuf>,
        /// This hospital's site TOML, with --server: diagnose at the inference server.
        #[arg(long, requires = "server")]
        site: Option<PathBuf>,
        /// Inference server host:port, with --site.
        #[arg(long, requires = "site")]
        server: Option<String>,
        /// The node's outputs (`client run --out DIR`) or a simulation output directory.
        #[arg(long)]
        node_out: Option<PathBuf>,
        /// This hospital's index (default: from --site).
        #[arg(long)]
        hospital: Option<u32>,
        /// Largest upload in bytes.
        #[arg(long, default_value_t = client::portal::config::DEFAULT_UPLOAD_LIMIT)]
        upload_limit: usize,
        /// Mark the session cookie Secure (when served behind HTTPS).
        #[arg(long)]
        secure_cookies: bool,
    },
    /// Manage the portal's local users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Split a data set's training split across simulated hospitals; print and save the
    /// per-hospital, per-class table.
    Partition {
        /// Config with a [dataset] table (and optionally [partition]).
        config: PathBuf,
        /// Output directory (partition_summary.csv, partition_assignment.csv).
        #[arg(long)]
        out: PathBuf,
        /// Number of hospitals.
        #[arg(long)]
        hospitals: Option<usize>,
        /// iid, dirichlet, quantity or column.
        #[arg(long, value_parser = parse_scheme)]
        scheme: Option<Scheme>,
        /// Dirichlet concentration for dirichlet/quantity.
        #[arg(long)]
        alpha: Option<f64>,
        /// Seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Keep each patient's images at one hospital.
        #[arg(long)]
        group_by_patient: bool,
        /// MedMNIST data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user (or, with --replace, set a new password); the password is read from stdin.
    Add {
        #[arg(long)]
        portal_dir: PathBuf,
        #[arg(long)]
        name: String,
        /// Read the password from stdin without a prompt (the default reads it from stdin too).
        #[arg(long)]
        password_stdin: bool,
        /// Replace an existing user's password.
        #[arg(long)]
        replace: bool,
    },
}

fn parse_scheme(s: &str) -> Result<Scheme, String> {
    match s {
        "iid" => Ok(Scheme::Iid),
        "dirichlet" => Ok(Scheme::Dirichlet),
        "quantity" => Ok(Scheme::Quantity),
        "column" => Ok(Scheme::Column),
        other => Err(format!(
            "unknown scheme {other:?} (iid, dirichlet, quantity, column)"
        )),
    }
}

pub(crate) fn base_dir(config: &Path) -> PathBuf {
    config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The pooling allocator tuned for ciphertexts (he_agg::alloc).
#[global_allocator]
static GLOBAL: he_agg::alloc::Allocator = he_agg::alloc::Allocator;

fn main() -> Result<()> {
    // a keyholder calibrates (gigabytes of keys) before it serves: it releases what calibration
    // freed before reading the memory its model may take (node::result_noise)
    he_agg::alloc::tune_phased();
    ops::logging::init().map_err(anyhow::Error::msg)?;
    let cli = Cli::parse();
    // a bad HEAL_SIMD is an error with its reason, not a silent fallback
    let simd = he_agg::simd::init_from_env().context("HEAL_SIMD")?;
    tracing::debug!(%simd, "SIMD level");
    let progress = !cli.quiet;
    match cli.command {
        Command::Run { site, out } => node::run(&site, &out)?,
        Command::HoldKeys {
            site,
            out,
            server,
            patience_s,
            head,
            max_examples,
        } => {
            let cfg = node::SiteConfig::load(&site)?;
            let server = if head {
                server.unwrap_or_else(|| head_server(&cfg))
            } else {
                infer_cmd::server_address(server, &cfg)
            };
            node::keyholder::run(
                &site,
                &out,
                &server,
                std::time::Duration::from_secs(patience_s),
                head.then_some(max_examples),
            )?
        }
        Command::ContributeEncrypted {
            site,
            out,
            data,
            limit,
            test_limit,
            server,
            data_dir,
            collective_key,
            json,
            timeout_s,
        } => {
            let cfg = node::SiteConfig::load(&site)?;
            node::contribute::run(&node::contribute::Contribute {
                server: server.unwrap_or_else(|| head_server(&cfg)),
                site,
                out,
                dataset: data,
                limit,
                test_limit,
                data_dir: data_dir.or_else(|| std::env::var_os("HEAL_DATA_DIR").map(PathBuf::from)),
                collective_key,
                json,
                timeout: std::time::Duration::from_secs(timeout_s),
            })?
        }
        Command::EvaluateEncrypted {
            network,
            dataset,
            config,
            packing,
            split,
            limit,
            batch,
            json,
            data_dir,
            min_scale_bits,
        } => infer_cmd::evaluate(
            network,
            match config {
                Some(c) => client::infer::EvalData::Config(c),
                None => client::infer::EvalData::MedMnist(dataset),
            },
            &packing,
            split,
            limit,
            batch,
            json,
            data_dir,
            min_scale_bits,
            progress,
        )?,
        Command::Infer {
            images,
            local,
            network,
            site,
            server,
            json,
            data_dir,
            timeout_s,
        } => infer_cmd::infer(
            images, local, network, site, server, json, data_dir, timeout_s,
        )?,
        Command::Pacs(args) => pacs_cmd::run(args)?,
        Command::Portal {
            portal_dir,
            listen,
            network,
            site,
            server,
            node_out,
            hospital,
            upload_limit,
            secure_cookies,
        } => {
            let mut cfg = client::portal::PortalConfig::new(portal_dir);
            cfg.listen = listen;
            cfg.network = network;
            cfg.node_out = node_out;
            cfg.hospital = hospital;
            cfg.upload_limit = upload_limit;
            cfg.secure_cookies = secure_cookies;
            if let (Some(site_path), Some(server)) = (site, server) {
                let site = node::SiteConfig::load(&site_path)?;
                cfg.hospital = cfg.hospital.or(Some(site.site.index));
                cfg.remote = Some(client::infer::remote::Target {
                    server,
                    tls: protocol::tls::TlsFiles::in_dir(&site.kit_dir(&site_path)),
                    federation: site.federation_id()?,
                    me: site.site.index,
                    timeout: std::time::Duration::from_secs(120),
                    accept: client::infer::pinned::Accepted::from_site(&site.site)?,
                });
            }
            let portal = std::sync::Arc::new(client::portal::Portal::new(cfg.clone())?);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let listener = tokio::net::TcpListener::bind(cfg.listen)
                    .await
                    .with_context(|| format!("cannot listen on {}", cfg.listen))?;
                println!("portal: http://{}/", listener.local_addr()?);
                let stop = async {
                    let _ = tokio::signal::ctrl_c().await;
                };
                client::portal::serve(portal, listener, stop).await?;
                anyhow::Ok(())
            })?;
        }
        Command::User {
            command:
                UserCommand::Add {
                    portal_dir,
                    name,
                    password_stdin: _,
                    replace,
                },
        } => {
            // stdin only: a password on the command line would sit in the shell history and
            // in the process list
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("reading the password from stdin")?;
            let password = password.trim_end_matches(['\n', '\r']);
            client::portal::users::Users::add(&portal_dir, &name, password, replace)?;
            println!(
                "user {name} {} in {}",
                if replace { "set" } else { "added" },
                client::portal::users::users_path(&portal_dir).display()
            );
        }
        Command::Baseline(args) => args.run(progress)?,
        Command::Pretrain(args) => args.run(progress)?,
        Command::Convert(args) => args.run(progress)?,
        Command::Partition {
            config,
            out,
            hospitals,
            scheme,
            alpha,
            seed,
            group_by_patient,
            data_dir,
        } => {
            let (mut dataset, from_file) = load_partition_tables(&config)
                .with_context(|| format!("reading {}", config.display()))?;
            let mut p = from_file.unwrap_or_else(|| PartitionConfig::iid(hospitals.unwrap_or(5)));
            if let Some(h) = hospitals {
                p.hospitals = h;
            }
            if let Some(s) = scheme {
                p.scheme = s;
            }
            if alpha.is_some() {
                p.alpha = alpha;
            }
            if let Some(s) = seed {
                p.seed = s;
            }
            p.group_by_patient |= group_by_patient;
            if let (Some(d), datasets::DatasetConfig::Medmnist { data_dir, .. }) =
                (data_dir, &mut dataset)
            {
                *data_dir = Some(d);
            }
            let run = PartitionRun {
                dataset,
                partition: p,
            };
            let table = run_partition(&run, &base_dir(&config), &out, progress)
                .with_context(|| format!("partition {}", config.display()))?;
            println!("{table}");
            println!(
                "written {} and {}",
                out.join("partition_summary.csv").display(),
                out.join("partition_assignment.csv").display()
            );
        }
    }
    Ok(())
}

/// `coordinator train-head`'s default address: the coordinator's host, port 7447.
fn head_server(cfg: &node::SiteConfig) -> String {
    let host = cfg
        .site
        .coordinator
        .rsplit_once(':')
        .map_or(cfg.site.coordinator.as_str(), |(h, _)| h);
    format!("{host}:7447")
}
