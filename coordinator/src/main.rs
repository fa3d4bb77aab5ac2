//! `coordinator`: the consortium server of HEAL.
//!
//!     coordinator provision configs/organamnist-5-hospitals.toml --out fed
//!     coordinator run --dir fed/coordinator
//!     coordinator status --dir fed/coordinator
//!     coordinator simulate configs/organamnist-5-hospitals.toml --out out/organamnist
//!     coordinator serve-inference --dir fed/coordinator --model network.json
//!     coordinator serve-inference --dir fed/coordinator --collective
//!     coordinator train-head --dir fed/coordinator

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use coordinator::config::FederationConfig;
use coordinator::server::{CoordinatorDir, Server};
use he_agg::aggregate::BackendChoice;

#[global_allocator]
static GLOBAL: he_agg::alloc::Allocator = he_agg::alloc::Allocator;

#[derive(Parser)]
#[command(
    name = "coordinator",
    version,
    about = "HEAL consortium server: provisioning, encrypted rounds, simulation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make the consortium CA, certificates and a kit per hospital from a federation TOML.
    Provision {
        config: PathBuf,
        /// Directory to create (must not exist, or be empty).
        #[arg(long)]
        out: PathBuf,
    },
    /// Serve the rounds of a provisioned federation (resumes after a restart).
    Run {
        /// The coordinator directory made by `provision`.
        #[arg(long)]
        dir: PathBuf,
        /// Where the state is kept (default: --dir), e.g. /var/lib/heal/coordinator for a kit
        /// in /etc/heal/coordinator.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Listen address (default: `listen` of the federation TOML).
        #[arg(long)]
        listen: Option<String>,
        /// Where to add ciphertexts: auto (CUDA when a device is present), cpu, or cuda
        /// (default: `[coordinator] backend` of the federation TOML, itself "auto").
        #[arg(long)]
        backend: Option<BackendChoice>,
    },
    /// Print the federation, its hospitals, rounds and the audit log.
    Status {
        #[arg(long)]
        dir: PathBuf,
        /// Where the state is kept (default: --dir), e.g. /var/lib/heal/coordinator for a kit
        /// in /etc/heal/coordinator.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Audit entries to show (newest last).
        #[arg(long, default_value_t = 30)]
        audit: usize,
        /// One JSON document instead of text (the summary as summary.json states it).
        #[arg(long)]
        json: bool,
    },
    /// Run a whole consortium on this machine: provision, start the coordinator and every
    /// hospital node over 127.0.0.1 (real QUIC and TLS), run all rounds, write metrics and plots.
    Simulate {
        /// Federation TOML (default: the embedded configs/organamnist-5-hospitals.toml).
        config: Option<PathBuf>,
        /// Output directory (metrics, plots, logs, summary.json).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The same pipeline without homomorphic encryption, for comparison.
        #[arg(long)]
        plaintext: bool,
        /// Where the coordinator adds ciphertexts: auto, cpu or cuda.
        #[arg(long)]
        backend: Option<BackendChoice>,
        /// Then serve the final model under a collective key (mode a) and have hospital 1 ask
        /// for this many test images encrypted (compared with the plaintext network).
        #[arg(long, default_value_t = 0)]
        serve_inference: usize,
        /// Then train the final model's head on this many of hospital 1's training images,
        /// encrypted (`coordinator train-head`, `client hold-keys --head`, `client
        /// contribute-encrypted`), and compare with the same steps in plaintext
        /// (`head_training.json`).
        #[arg(long, default_value_t = 0)]
        train_head: usize,
        /// Passes of that training.
        #[arg(long, default_value_t = 10)]
        head_epochs: u32,
        /// Replace an earlier simulation's results in the output directory (refused without).
        #[arg(long)]
        force: bool,
        /// Differential privacy's target ε instead of the config's `[privacy] target_epsilon`
        /// (same mode, δ and clip), or `off` for the same run without it: a sweep of ε and its
        /// non-private reference from one config.
        #[arg(long, value_name = "ε|off")]
        epsilon: Option<coordinator::simulate::EpsilonOverride>,
    },
    /// Serve the federated model for encrypted inference over mutual-TLS QUIC. Mode (b), with
    /// --model: a released model in the clear, images encrypted under each requester's own key.
    /// Mode (a), with --collective: the hospitals (`client hold-keys`) make a collective key,
    /// one of them uploads the model encrypted under it, images are encrypted under it too, and
    /// t hospitals switch each result to its requester's key.
    ServeInference {
        /// The coordinator directory made by `provision` (certificate, CA, roster, audit log).
        #[arg(long)]
        dir: PathBuf,
        /// Where the state is kept (default: --dir), e.g. /var/lib/heal/coordinator for a kit
        /// in /etc/heal/coordinator.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Mode (b): a `heal-network/1` export (client's network.json) or a network JSON.
        #[arg(
            long,
            required_unless_present = "collective",
            conflicts_with = "collective"
        )]
        model: Option<PathBuf>,
        /// Mode (a): serve the model the keyholders encrypt under their collective key (the
        /// saved setup after a restart).
        #[arg(long)]
        collective: bool,
        /// Mode (a): ignore the saved setup and have the keyholders make a new key.
        #[arg(long, requires = "collective")]
        new_setup: bool,
        /// Listen address.
        #[arg(long, default_value = "0.0.0.0:7446")]
        listen: String,
        /// Most images in one request.
        #[arg(long, default_value_t = 64)]
        max_images: u32,
        /// Mode (a): seconds the t keyholders asked for a request get before those that did
        /// not answer are left out of it and others are asked (when enough are connected).
        #[arg(long, default_value_t = 60, requires = "collective")]
        keyholder_timeout_s: u64,
        /// Mode (b): where requests are evaluated: auto (a CUDA GPU when one loads, with the
        /// model and each requester's keys resident on it), cpu, or cuda (a GPU or an error).
        /// In mode (a) the keyholders evaluate, each where its site's `[node] backend` says.
        #[arg(long, default_value = "auto", conflicts_with = "collective")]
        backend: BackendChoice,
    },
    /// Train the final model's head on sites' encrypted features (`client contribute-encrypted`)
    /// without anyone decrypting them: the hospitals (`client hold-keys --head`) make a collective
    /// key, the head is trained on ciphertexts, t hospitals refresh it after every step, and the
    /// trained head is switched to the contributing site's key.
    TrainHead {
        /// The coordinator directory made by `provision` (certificate, CA, roster, audit log).
        #[arg(long)]
        dir: PathBuf,
        /// Where the state is kept (default: --dir).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        #[arg(long, default_value = "0.0.0.0:7447")]
        listen: String,
        /// Passes over a contribution.
        #[arg(long, default_value_t = 10)]
        epochs: u32,
        /// Chunks per mini-batch (a chunk holds as many examples as the layout fits, 64 for a
        /// 128 → 11 head).
        #[arg(long, default_value_t = 8)]
        batch_chunks: u32,
        /// Learning rate of the squared loss on L2-normalised features.
        #[arg(long, default_value_t = 1.0)]
        lr: f64,
        #[arg(long, default_value_t = 0.9)]
        momentum: f64,
        /// Most examples one contribution may carry (held in memory while trained on, ~0.55 MB
        /// each for a 128 → 11 head).
        #[arg(long, default_value_t = 10_000)]
        max_examples: u64,
        /// Where the steps run: auto (a CUDA GPU when one loads and takes the run's keys and
        /// chunks, the CPU otherwise), cpu, or cuda (a GPU or an error). The states are the
        /// same word for word wherever they are computed.
        #[arg(long, default_value = "auto")]
        backend: BackendChoice,
    },
}

fn main() -> anyhow::Result<()> {
    he_agg::alloc::tune();
    let cli = Cli::parse();
    ops::logging::init().map_err(anyhow::Error::msg)?;
    // a bad HEAL_SIMD is an error with its reason, not a silent fallback
    let simd = he_agg::simd::init_from_env().context("HEAL_SIMD")?;
    tracing::debug!(%simd, "SIMD level");
    match cli.command {
        Command::Provision { config, out } => {
            let text = std::fs::read_to_string(&config)
                .with_context(|| format!("cannot read {}", config.display()))?;
            let mut cfg = FederationConfig::from_toml(&text)
                .with_context(|| format!("in {}", config.display()))?;
            cfg.config_dir = coordinator::config::config_dir(&config);
            let p = coordinator::provision::provision(&cfg, &text, &out)?;
            println!(
                "federation {} provisioned in {}",
                p.federation,
                out.display()
            );
            println!(
                "  coordinator: coordinator run --dir {}",
                p.coordinator_dir.display()
            );
            for d in &p.hospital_dirs {
                println!(
                    "  hospital kit: {} (client run --site {}/site.toml)",
                    d.display(),
                    d.display()
                );
            }
            Ok(())
        }
        Command::Run {
            dir,
            state_dir,
            listen,
            backend,
        } => {
            coordinator::crash_point::check_env().map_err(anyhow::Error::msg)?;
            let dir = CoordinatorDir::with_state(dir, state_dir);
            let server = Server::open_with_backend(&dir, backend)?;
            let cfg = FederationConfig::from_file(&dir.config())?;
            let addr = listen.unwrap_or(cfg.federation.listen);
            let addr: std::net::SocketAddr = addr
                .parse()
                .with_context(|| format!("listen address {addr}"))?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(server.serve(&dir, addr))
        }
        Command::Status {
            dir,
            state_dir,
            audit,
            json,
        } => {
            let dir = CoordinatorDir::with_state(dir, state_dir);
            if json {
                let doc = coordinator::status::json(&dir, audit)?;
                println!("{}", serde_json::to_string_pretty(&doc)?);
                Ok(())
            } else {
                coordinator::status::print(&dir, audit)
            }
        }
        Command::Simulate {
            config,
            out,
            plaintext,
            backend,
            serve_inference,
            train_head,
            head_epochs,
            force,
            epsilon,
        } => coordinator::simulate::run(
            config.as_deref(),
            out,
            &coordinator::simulate::Options {
                plaintext,
                backend,
                serve_inference,
                train_head,
                head_epochs,
                force,
                epsilon,
            },
        ),
        Command::ServeInference {
            dir,
            state_dir,
            model,
            collective,
            new_setup,
            listen,
            max_images,
            keyholder_timeout_s,
            backend,
        } => {
            let dir = CoordinatorDir::with_state(dir, state_dir);
            match model {
                Some(model) if !collective => coordinator::serve::released::shell::run(
                    &dir, &model, &listen, max_images, backend,
                ),
                _ => coordinator::serve::collective::run::run(
                    &dir,
                    &listen,
                    max_images,
                    new_setup,
                    std::time::Duration::from_secs(keyholder_timeout_s.max(1)),
                ),
            }
        }
        Command::TrainHead {
            dir,
            state_dir,
            listen,
            epochs,
            batch_chunks,
            lr,
            momentum,
            max_examples,
            backend,
        } => {
            let dir = CoordinatorDir::with_state(dir, state_dir);
            coordinator::serve::collective::run::run_head(
                &dir,
                &listen,
                coordinator::serve::collective::run::HeadOptions {
                    training: protocol::serve::head::HeadTraining {
                        epochs,
                        batch_chunks,
                        lr,
                        momentum,
                    },
                    max_examples,
                    backend,
                },
            )
        }
    }
}
