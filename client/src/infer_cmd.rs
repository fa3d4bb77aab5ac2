//! The inference subcommands of the `client` binary: `evaluate-encrypted` and `infer`
//! (`--local`, or against a mode (b) server with this site's kit).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use client::infer::evaluate::write_json;
use client::infer::local::infer_local;
use client::infer::pinned::Accepted;
use client::infer::remote::{Target, infer_remote};
use client::infer::{EvaluateOptions, ImageArg, InferOutcome, evaluate_encrypted, load_images};
use he_agg::infer::ParamPolicy;
use protocol::tls::TlsFiles;
use training::export::{input_shape, read_network};

use crate::node::SiteConfig;

/// Port of the inference server when `--server` gives none (coordinator's host).
pub const DEFAULT_INFERENCE_PORT: u16 = 7446;

#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    network: PathBuf,
    data: client::infer::EvalData,
    packing: &str,
    split: String,
    limit: Option<usize>,
    batch: Option<usize>,
    json: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    min_scale_bits: Option<u32>,
    progress: bool,
) -> Result<()> {
    let mut policy = ParamPolicy::default();
    if let Some(b) = min_scale_bits {
        policy.min_scale_bits = b;
    }
    let Some(packing) = client::infer::Packing::parse(packing) else {
        bail!("--packing {packing}: auto, batched or per-image");
    };
    let opts = EvaluateOptions {
        network: network.clone(),
        data,
        packing,
        split,
        limit,
        batch,
        data_dir,
        progress,
        policy,
    };
    let report = evaluate_encrypted(&opts)
        .with_context(|| format!("encrypted evaluation of {}", network.display()))?;
    println!("{}", report.render());
    if let Some(path) = json {
        write_json(&report, &path)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn write_outcome(outcome: &InferOutcome, json: Option<&Path>) -> Result<()> {
    print!("{}", outcome.render());
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(outcome)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The server address: `--server`, else the coordinator's host at the default port.
pub fn server_address(server: Option<String>, site: &SiteConfig) -> String {
    server.unwrap_or_else(|| {
        let host = site
            .site
            .coordinator
            .rsplit_once(':')
            .map_or(site.site.coordinator.as_str(), |(h, _)| h);
        format!("{host}:{DEFAULT_INFERENCE_PORT}")
    })
}

#[allow(clippy::too_many_arguments)]
pub fn infer(
    images: Vec<String>,
    local: bool,
    network: Option<PathBuf>,
    site: Option<PathBuf>,
    server: Option<String>,
    json: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    timeout_s: u64,
) -> Result<()> {
    let args: Vec<ImageArg> = images.iter().map(|s| ImageArg::parse(s)).collect();
    if local {
        let Some(network) = network else {
            bail!("--local needs --network NET.json (the weights are evaluated in this process)");
        };
        let (file, prep) = read_network(&network)?;
        let net = &file.network;
        let decoder = prep.decoder(input_shape(net));
        let loaded = load_images(&args, &decoder, &prep, data_dir.as_deref())?;
        let name = network.display().to_string();
        let outcome = infer_local(net, &file.class_names, &name, &loaded)?;
        return write_outcome(&outcome, json.as_deref());
    }
    let Some(site_path) = site else {
        bail!(
            "give --site hospital-<i>/site.toml (this hospital's kit) to reach the inference \
             server, or --local --network NET.json"
        );
    };
    let cfg = SiteConfig::load(&site_path)?;
    let target = Target {
        server: server_address(server, &cfg),
        tls: TlsFiles::in_dir(&cfg.kit_dir(&site_path)),
        federation: cfg.federation_id()?,
        me: cfg.site.index,
        timeout: Duration::from_secs(timeout_s.max(1)),
        accept: Accepted::from_site(&cfg.site)?,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = rt
        .block_on(infer_remote(
            &target,
            &args,
            &datasets::InputPreparation::default(),
            data_dir.as_deref(),
        ))
        .with_context(|| format!("encrypted inference at {}", target.server))?;
    write_outcome(&outcome, json.as_deref())
}
