//! The commands that serve mode (a) and head training: `coordinator serve-inference
//! --collective` and `coordinator train-head`, from the coordinator directory's certificate,
//! roster, config and audit log.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use protocol::serve::head::HeadTraining;
use tracing::info;

use super::ServingConfig;
use super::disk::ServingDisk;
use super::keys::ServedKeys;
use super::service::Service;
use super::service_io::ServiceConfig;
use super::shell::CollectiveServer;
use crate::store::Store;

/// `coordinator serve-inference --collective`: the coordinator directory's certificate, roster
/// and audit log, until interrupted. Serves the saved setup when there is one (unless
/// `new_setup`).
/// `keyholder_timeout`: how long the keyholders asked for a request get before others are.
pub fn run(
    dir: &crate::server::CoordinatorDir,
    listen_addr: &str,
    max_images: u32,
    new_setup: bool,
    keyholder_timeout: Duration,
) -> anyhow::Result<()> {
    serve(
        dir,
        listen_addr,
        max_images,
        new_setup,
        None,
        keyholder_timeout,
    )
}

/// How `coordinator train-head` trains.
#[derive(Clone, Debug)]
pub struct HeadOptions {
    pub training: HeadTraining,
    /// Most examples one contribution may carry.
    pub max_examples: u64,
    /// Where the steps run: auto (a CUDA GPU when one loads and takes the run's keys and
    /// chunks), cpu, or cuda.
    pub backend: he_agg::aggregate::BackendChoice,
}

/// `coordinator train-head`: the keyholders make a key at the head-training parameters, then
/// each contribution of encrypted examples is trained on and its head switched to its
/// contributor's key, until interrupted. A restart makes a new key (nothing is saved).
pub fn run_head(
    dir: &crate::server::CoordinatorDir,
    listen_addr: &str,
    head: HeadOptions,
) -> anyhow::Result<()> {
    he_agg::train::HeadTrainer::check_settings(head.training.lr, head.training.momentum)?;
    if head.training.epochs == 0 || head.training.batch_chunks == 0 {
        anyhow::bail!("--epochs and --batch-chunks must be at least 1");
    }
    if head.backend == he_agg::aggregate::BackendChoice::Cuda {
        // known at start, not at the first contribution
        he_agg::aggregate::select_backend(head.backend).context("--backend cuda")?;
    }
    // a keyholder's refresh takes milliseconds: a minute is a hung keyholder
    serve(
        dir,
        listen_addr,
        0,
        true,
        Some(head),
        Duration::from_secs(60),
    )
}

fn serve(
    dir: &crate::server::CoordinatorDir,
    listen_addr: &str,
    max_images: u32,
    new_setup: bool,
    head: Option<HeadOptions>,
    attempt_timeout: Duration,
) -> anyhow::Result<()> {
    let roster = crate::provision::Roster::read(&dir.roster())
        .with_context(|| format!("reading the roster in {}", dir.dir.display()))?;
    let federation = roster.federation_id()?;
    let cfg = crate::config::FederationConfig::from_file(&dir.config())?;
    let store = Store::open(&dir.state(), federation)
        .with_context(|| format!("opening {}", dir.state().display()))?;
    let addr: SocketAddr = listen_addr
        .parse()
        .with_context(|| format!("listen address {listen_addr}"))?;
    let head_backend = head.as_ref().map_or(Default::default(), |h| h.backend);
    let options = ServiceConfig {
        federation,
        serving: ServingConfig {
            hospitals: cfg.federation.hospitals,
            threshold: cfg.threshold(),
            request_timeout: Duration::from_secs(120),
            attempt_timeout,
            max_in_flight: 8,
            head: head.is_some(),
        },
        max_images,
        head: head.as_ref().map(|h| h.training.clone()),
        max_head_examples: head.as_ref().map_or(0, |h| h.max_examples),
    };
    let saved = if new_setup {
        None
    } else {
        super::saved::load(&dir.state_dir, &store).with_context(
            || "reading the saved served state (start with --new-setup to make a new key instead)",
        )?
    };
    let restored = match saved {
        Some(saved) => {
            if saved.hospitals != options.serving.hospitals
                || saved.threshold != options.serving.threshold
            {
                anyhow::bail!(
                    "the saved served state is for {} hospitals, threshold {}; the federation \
                     has {} and {} (start with --new-setup)",
                    saved.hospitals,
                    saved.threshold,
                    options.serving.hospitals,
                    options.serving.threshold
                );
            }
            let t = Instant::now();
            let keys = ServedKeys::restore(federation, max_images, &saved)
                .context("the saved served state does not check out (start with --new-setup)")?;
            info!(
                seconds = t.elapsed().as_secs_f64(),
                "serving the saved setup again: waiting for its keyholders"
            );
            Some(keys)
        }
        None => None,
    };
    let server = CollectiveServer::new(
        Service::new(options, restored),
        roster.parties(),
        dir.tls(),
        Duration::from_secs(120),
        Some(ServingDisk::new(
            store,
            dir.state(),
            dir.state_dir.clone(),
            federation,
        )),
        head_backend,
    );
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let endpoint = server.bind(addr)?;
        server.serve(endpoint).await
    })
}
