//! One hospital node and its conversations with the coordinator.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use client::params::{network_from_flat, to_flat};
use client::strategy::{self, Moments};
use client::train::{TrainOptions, evaluate, select_device, train};
use he_agg::aggregate::{AggregationPlan, UpdateCodec};
use he_agg::ckks::{Ciphertext, CkksContext, Parameters, Preset, PublicKey, wire};
use he_agg::multiparty::group_key::{self, CONTRIBUTION_LEN, Contribution};
use he_agg::multiparty::threshold::deal;
use he_agg::multiparty::{
    Crs, PublicKeyGen, PublicKeySwitch, PublicKeySwitchMask, ThresholdSecret, wire as mpw,
};
use he_agg::ring::Prng;
use protocol::link::{Incoming, connect};
use protocol::message::{Body, Phase, RoundMetrics};
use protocol::tls::TlsFiles;
use protocol::{FederationId, Link, ProtocolError};
use rayon::prelude::*;
use tracing::{info, warn};
use zeroize::Zeroizing;

use super::NodeDirs;
use super::data::{LocalData, load};
use super::keys::{Keys, PeerKeys, write_public, write_secret};
use super::site::SiteConfig;
use super::state::{ModelState, StateFile};

pub enum SessionEnd {
    Finished,
    Disconnected(String),
}

/// Encryption material of a node.
struct NodeHe {
    ctx: Arc<CkksContext>,
    /// How updates are encrypted and sums decrypted (the plan every party derives alike).
    codec: UpdateCodec,
    crs: Crs,
    keys: Keys,
    collective: Option<PublicKey>,
    /// Encryption, switching and decryption run on every core of the machine: they come in
    /// bursts while training (which may be held to fewer threads) is idle.
    pool: Arc<rayon::ThreadPool>,
}

/// Switching masks made ahead for a round (while the other hospitals still train), for the
/// weights and active-set size the previous round's switch request had: in a steady federation
/// the next request is the same, and then only s_i·c1 is left to compute on the critical path.
struct PreparedMasks {
    round: u64,
    weights: Vec<u64>,
    parties: usize,
    masks: tokio::task::JoinHandle<anyhow::Result<Vec<PublicKeySwitchMask>>>,
}

/// What one round cost this hospital (reported with the round's metrics).
#[derive(Default, Clone)]
struct RoundCost {
    train_loss: f32,
    samples: u64,
    train_s: f32,
    encrypt_s: f32,
    upload_s: f32,
    switch_s: f32,
    bytes_up: u64,
}

pub struct Node {
    pub cfg: SiteConfig,
    dirs: NodeDirs,
    federation: FederationId,
    index: u32,
    tls: TlsFiles,
    addr: SocketAddr,
    data: LocalData,
    he: Option<NodeHe>,
    state: ModelState,
    state_file: StateFile,
    /// a round announced before the previous round's result arrived
    pending_start: Option<u64>,
    /// round, weights and active-set size of the last switch request this node served
    last_switch: Option<(u64, Vec<u64>, usize)>,
    prepared: Option<PreparedMasks>,
    costs: HashMap<u64, RoundCost>,
}

fn lookup(addr: &str) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .with_context(|| format!("cannot resolve the coordinator address {addr}"))?
        .next()
        .with_context(|| format!("no address for {addr}"))
}

fn sealing_context(federation: FederationId, from: u32, to: u32) -> Vec<u8> {
    format!("HEAL setup shares v2|{federation}|{from}->{to}").into_bytes()
}

/// What one hospital deals to another in setup, sealed: a Shamir share of its secret followed by
/// its contribution to the consortium receiving key.
fn dealt_payload(share: &[u8], contribution: &Contribution) -> Zeroizing<Vec<u8>> {
    let mut p = Zeroizing::new(Vec::with_capacity(share.len() + CONTRIBUTION_LEN));
    p.extend_from_slice(share);
    p.extend_from_slice(contribution.as_ref());
    p
}

/// Splits a dealt payload into the Shamir share bytes and the contribution.
fn split_payload(p: &[u8]) -> anyhow::Result<(&[u8], Contribution)> {
    let cut = p
        .len()
        .checked_sub(CONTRIBUTION_LEN)
        .context("a dealt payload shorter than a contribution")?;
    let mut c = Zeroizing::new([0u8; CONTRIBUTION_LEN]);
    c.copy_from_slice(&p[cut..]);
    Ok((&p[..cut], c))
}

impl Node {
    pub async fn open(cfg: SiteConfig, site: &Path, out: &Path) -> anyhow::Result<Self> {
        let dirs = NodeDirs::new(out);
        std::fs::create_dir_all(&dirs.state)?;
        let federation = cfg.federation_id()?;
        let index = cfg.site.index;
        let tls = TlsFiles::in_dir(&cfg.kit_dir(site));
        let addr = lookup(&cfg.site.coordinator)?;
        let base = site
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let cfg2 = cfg.clone();
        let data = tokio::task::spawn_blocking(move || load(&cfg2, &base)).await??;
        let he = if cfg.he.plaintext {
            None
        } else {
            let ctx = CkksContext::new(Parameters::preset(Preset::Aggregation))?;
            let plan = AggregationPlan::from_settings(
                &ctx,
                &cfg.he,
                cfg.site.hospitals as usize,
                cfg.site.threshold as usize,
            )
            .context("the [he] settings do not fit the aggregation preset")?;
            let keys = Keys::load_or_create(&ctx, &dirs.state)?;
            let mut he = NodeHe {
                crs: Crs::from_federation(&federation.0),
                codec: UpdateCodec::new(ctx.clone(), plan),
                ctx,
                keys,
                collective: None,
                pool: Arc::new(
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(
                            std::thread::available_parallelism()
                                .map(|n| n.get())
                                .unwrap_or(1),
                        )
                        .thread_name(|i| format!("heal-he-{i}"))
                        .build()
                        .context("starting the encryption threads")?,
                ),
            };
            if let Some(peers) = he.keys.peers.clone() {
                apply_peers(&mut he, &peers)?;
            }
            Some(he)
        };
        let state_file = StateFile::new(&dirs.state);
        let state = match state_file.load()? {
            Some(s) if s.global.len() == data.manifest.total => s,
            Some(_) => {
                bail!("the stored global model does not fit this network: was the config changed?")
            }
            None => {
                // every hospital builds the same initial model from the config's seed
                let device = select_device("cpu")?;
                let net = client::model::Network::init(&data.spec, &device);
                let s = ModelState {
                    round: 0,
                    global: to_flat(&net),
                    m: Vec::new(),
                    v: Vec::new(),
                };
                state_file.save(&s)?;
                s
            }
        };
        info!(
            hospital = index,
            round = state.round,
            plaintext = cfg.he.plaintext,
            "node ready"
        );
        Ok(Self {
            cfg,
            dirs,
            federation,
            index,
            tls,
            addr,
            data,
            he,
            state,
            state_file,
            pending_start: None,
            last_switch: None,
            prepared: None,
            costs: HashMap::new(),
        })
    }

    pub async fn connect(&self) -> Result<Link, ProtocolError> {
        connect(self.addr, &self.tls, self.federation, self.index).await
    }

    /// Talks with the coordinator until it says the federation is finished or the link drops.
    pub async fn session(&mut self, link: &Link) -> anyhow::Result<SessionEnd> {
        link.send(
            self.state.round,
            Body::Hello {
                software: format!("heal-client {}", env!("CARGO_PKG_VERSION")),
                last_round: self.state.round,
            },
        )
        .await?;
        loop {
            let msg = match link.accept().await {
                Ok(m) => m,
                Err(ProtocolError::Connection(reason)) => {
                    return Ok(SessionEnd::Disconnected(reason));
                }
                Err(ProtocolError::PeerFinished) => {
                    info!(round = self.state.round, "the coordinator closed: finished");
                    return Ok(SessionEnd::Finished);
                }
                Err(e) => {
                    warn!("ignored a message: {e}");
                    continue;
                }
            };
            let round = msg.envelope.round;
            match msg.envelope.body.clone() {
                Body::Welcome {
                    index,
                    hospitals,
                    threshold,
                    plaintext,
                    phase,
                } => {
                    if index != self.index
                        || hospitals != self.cfg.site.hospitals
                        || threshold != self.cfg.site.threshold
                    {
                        bail!(
                            "the coordinator describes another federation (index {index}, {hospitals} hospitals, t = {threshold})"
                        );
                    }
                    if plaintext != self.cfg.he.plaintext {
                        bail!(
                            "the coordinator runs with plaintext = {plaintext}, this site with {}",
                            self.cfg.he.plaintext
                        );
                    }
                    info!(?phase, "welcomed");
                    match phase {
                        Phase::Setup => self.start_setup(link).await?,
                        // a node that reconnects after the end (it missed `Finished`)
                        Phase::Finished { .. } => return Ok(SessionEnd::Finished),
                        Phase::Training { .. } => {}
                    }
                }
                Body::SetupKeys {
                    collective_public_key,
                    exchange_keys,
                } => {
                    self.setup_keys(
                        link,
                        PeerKeys {
                            collective_public_key,
                            exchange: exchange_keys,
                        },
                    )
                    .await?
                }
                Body::RelayedShares { sealed } => self.relayed_shares(link, sealed).await?,
                Body::RoundStart { .. } => {
                    if self.state.round + 1 == round {
                        self.train_and_upload(link, round).await?;
                    } else if self.state.round + 1 < round {
                        info!(
                            round,
                            held = self.state.round,
                            "round announced before the previous result: waiting for it"
                        );
                        self.pending_start = Some(round);
                    } else {
                        warn!(
                            round,
                            held = self.state.round,
                            "announcement of a round already done: ignored"
                        );
                    }
                }
                Body::SwitchRequest {
                    attempt,
                    active,
                    weights,
                    count,
                } => {
                    self.switch(link, round, attempt, &active, &weights, count, msg)
                        .await?
                }
                Body::RoundResult {
                    total_weight,
                    participants,
                    count,
                } => {
                    self.result(link, round, total_weight, &participants, count, msg)
                        .await?;
                    if self.pending_start == Some(self.state.round + 1) {
                        self.pending_start = None;
                        self.train_and_upload(link, self.state.round + 1).await?;
                    }
                }
                Body::Finished => {
                    info!(round = self.state.round, "the federation is finished");
                    return Ok(SessionEnd::Finished);
                }
                Body::Refused { reason } => {
                    warn!(round, "the coordinator refused a message: {reason}")
                }
                other => warn!("unexpected {} from the coordinator", other.kind()),
            }
        }
    }

    // ----- setup -----

    async fn start_setup(&mut self, link: &Link) -> anyhow::Result<()> {
        let Some(he) = self.he.as_mut() else {
            return Ok(());
        };
        if let Some(body) = setup_done_body(&he.keys) {
            link.send(0, body).await?;
            return Ok(());
        }
        let (ctx, crs) = (he.ctx.clone(), he.crs.clone());
        let share = &he.keys.share;
        let exchange = he.keys.exchange.public();
        let public_key_share = he.keys.key_shares_message(|| {
            let mut prng = Prng::from_os()?;
            let pk_share = PublicKeyGen::new(&ctx, &crs).share(share, &mut prng)?;
            Ok(mpw::encode_public_key_share(&ctx, &pk_share))
        })?;
        link.send(
            0,
            Body::KeyShares {
                public_key_share,
                exchange_key: exchange,
            },
        )
        .await?;
        info!("sent key shares");
        // after a restart between dealing and the relay, send the same sealed shares again
        if let Some(sealed) = read_opt(&self.dirs.state.join("dealt.bin"))? {
            let sealed: Vec<(u32, Vec<u8>)> =
                postcard::from_bytes(&sealed).context("dealt.bin is corrupt")?;
            link.send(0, Body::ShamirShares { sealed }).await?;
        }
        Ok(())
    }

    async fn setup_keys(&mut self, link: &Link, peers: PeerKeys) -> anyhow::Result<()> {
        let Some(he) = self.he.as_mut() else {
            bail!("setup keys in a plaintext federation")
        };
        apply_peers(he, &peers)?;
        he.keys.save_peers(peers.clone())?;
        if he.keys.threshold.is_some() || self.dirs.state.join("dealt.bin").exists() {
            return Ok(());
        }
        let n = self.cfg.site.hospitals;
        let ids: Vec<u32> = (1..=n).collect();
        let mut prng = Prng::from_os()?;
        let shares = deal(
            &he.ctx,
            &he.keys.share,
            self.index,
            &ids,
            self.cfg.site.threshold as usize,
            &mut prng,
        )?;
        // the same contribution to the receiving key goes to every hospital
        let contribution = group_key::contribution(&mut prng);
        let mut sealed = Vec::new();
        for s in &shares {
            let payload = dealt_payload(&mpw::encode_shamir_share(&he.ctx, s), &contribution);
            if s.to() == self.index {
                write_secret(&self.dirs.state.join("own-share.bin"), &payload)?;
                continue;
            }
            let receiver = peers
                .exchange
                .iter()
                .find(|(h, _)| *h == s.to())
                .map(|(_, k)| *k)
                .with_context(|| format!("no exchange key for hospital {}", s.to()))?;
            let bytes = he.keys.exchange.seal(
                &receiver,
                &sealing_context(self.federation, self.index, s.to()),
                &payload,
                &mut prng,
            )?;
            sealed.push((s.to(), bytes));
        }
        write_public(
            &self.dirs.state.join("dealt.bin"),
            &postcard::to_allocvec(&sealed)?,
        )?;
        link.send(0, Body::ShamirShares { sealed }).await?;
        info!("dealt sealed Shamir shares to {} hospitals", n - 1);
        Ok(())
    }

    async fn relayed_shares(
        &mut self,
        link: &Link,
        sealed: Vec<(u32, Vec<u8>)>,
    ) -> anyhow::Result<()> {
        let Some(he) = self.he.as_mut() else {
            bail!("shares in a plaintext federation")
        };
        if let Some(body) = setup_done_body(&he.keys) {
            link.send(0, body).await?;
            return Ok(());
        }
        let peers = he
            .keys
            .peers
            .clone()
            .context("relayed shares before the setup keys")?;
        let own = Zeroizing::new(
            read_opt(&self.dirs.state.join("own-share.bin"))?
                .context("relayed shares before dealing")?,
        );
        let (own_share, own_contribution) = split_payload(&own).context("own-share.bin")?;
        let mut shares =
            vec![mpw::decode_shamir_share(&he.ctx, own_share).context("own-share.bin")?];
        let mut contributions = vec![(self.index, own_contribution)];
        for (from, bytes) in &sealed {
            let sender = peers
                .exchange
                .iter()
                .find(|(h, _)| h == from)
                .map(|(_, k)| *k)
                .with_context(|| format!("no exchange key for hospital {from}"))?;
            let opened = Zeroizing::new(
                he.keys
                    .exchange
                    .open(
                        &sender,
                        &sealing_context(self.federation, *from, self.index),
                        bytes,
                    )
                    .with_context(|| format!("the share from hospital {from} does not open"))?,
            );
            let (share_bytes, contribution) = split_payload(&opened)
                .with_context(|| format!("the share from hospital {from}"))?;
            let share = mpw::decode_shamir_share(&he.ctx, share_bytes)
                .with_context(|| format!("the share from hospital {from}"))?;
            if share.from() != *from || share.to() != self.index {
                bail!(
                    "hospital {from} sent a share labelled {} -> {}",
                    share.from(),
                    share.to()
                );
            }
            shares.push(share);
            contributions.push((*from, contribution));
        }
        let ids: Vec<u32> = (1..=self.cfg.site.hospitals).collect();
        let ts = ThresholdSecret::combine(
            &he.ctx,
            self.index,
            self.cfg.site.threshold as usize,
            &ids,
            &shares,
        )?;
        let (rsk, rpk) = group_key::derive(&he.ctx, &self.federation.0, &ids, &contributions)
            .context("deriving the consortium receiving key")?;
        he.keys.save_setup(&he.ctx, ts, rsk, rpk)?;
        link.send(
            0,
            setup_done_body(&he.keys).context("setup was just stored")?,
        )
        .await?;
        info!(
            "threshold secret formed ({} of {})",
            self.cfg.site.threshold, self.cfg.site.hospitals
        );
        Ok(())
    }

    // ----- rounds -----

    async fn train_and_upload(&mut self, link: &Link, round: u64) -> anyhow::Result<()> {
        let t0 = Instant::now();
        let global = self.state.global.clone();
        let spec = self.data.spec.clone();
        let train_data = self.data.train.clone();
        let mut tcfg = self.cfg.train.clone();
        // a different shuffle per round and hospital, reproducible from the config seed
        tcfg.seed = tcfg.seed.wrapping_add(round * 1000 + u64::from(self.index));
        let (local, loss) =
            tokio::task::spawn_blocking(move || -> anyhow::Result<(Vec<f32>, f32)> {
                let device = select_device("cpu")?;
                let net = network_from_flat(&spec, &global, &device)?;
                let opts = TrainOptions {
                    global: Some(&global),
                    ..Default::default()
                };
                let (net, report) = train(net, &train_data, &tcfg, &opts)?;
                let loss = report
                    .epochs
                    .last()
                    .map(|e| e.train_loss as f32)
                    .unwrap_or(f32::NAN);
                Ok((to_flat(&net), loss))
            })
            .await??;
        let train_s = t0.elapsed().as_secs_f32();
        let clip = self.cfg.he.max_update as f32;
        let mut clipped = 0usize;
        let delta: Vec<f32> = local
            .iter()
            .zip(&self.state.global)
            .map(|(l, g)| {
                let d = l - g;
                if d.abs() > clip {
                    clipped += 1;
                }
                d.clamp(-clip, clip)
            })
            .collect();
        if clipped > 0 {
            warn!(round, clipped, "update values clipped to ±{clip}");
        }
        let t1 = Instant::now();
        let items: Vec<Vec<u8>> = match &self.he {
            Some(he) => {
                let pk = he
                    .collective
                    .clone()
                    .context("a round before the collective public key")?;
                let (codec, pool) = (he.codec.clone(), he.pool.clone());
                tokio::task::spawn_blocking(move || pool.install(|| codec.encrypt(&pk, &delta)))
                    .await??
            }
            None => protocol::plain::encode_f32s(&delta),
        };
        let encrypt_s = t1.elapsed().as_secs_f32();
        let t2 = Instant::now();
        let weight = self.data.train.len() as u64;
        let mut up = link
            .open(
                round,
                Body::Update {
                    weight,
                    count: items.len() as u32,
                },
            )
            .await?;
        for item in &items {
            up.item(item).await?;
        }
        let bytes_up = up.finish().await?;
        let upload_s = t2.elapsed().as_secs_f32();
        self.prepare_masks(round, items.len());
        info!(
            round,
            train_s,
            encrypt_s,
            upload_s,
            mb = bytes_up as f64 / 1e6,
            "update sent"
        );
        self.costs.insert(
            round,
            RoundCost {
                train_loss: loss,
                samples: weight,
                train_s,
                encrypt_s,
                upload_s,
                switch_s: 0.0,
                bytes_up,
            },
        );
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn switch(
        &mut self,
        link: &Link,
        round: u64,
        attempt: u32,
        active: &[u32],
        weights: &[u64],
        count: u32,
        mut msg: Incoming,
    ) -> anyhow::Result<()> {
        let t0 = Instant::now();
        let he = self
            .he
            .as_ref()
            .context("switch request in a plaintext federation")?;
        let ts = he
            .keys
            .threshold
            .as_ref()
            .context("switch request before the threshold secret")?;
        if count as usize > 100_000 {
            bail!("switch request of {count} ciphertexts");
        }
        let mut cts: Vec<Ciphertext> = Vec::with_capacity(count as usize);
        for i in 0..count {
            let item = msg
                .next_item()
                .await?
                .with_context(|| format!("switch request ended after {i} of {count}"))?;
            let ct = he
                .codec
                .decode(i as usize, &item)
                .context("an aggregate to switch")?;
            cts.push(ct);
        }
        let sk = ts.additive_share(&he.ctx, active)?;
        let flooding = he
            .codec
            .plan()
            .flooding(&weights.iter().map(|&w| w as f64).collect::<Vec<_>>())?;
        let pcks = PublicKeySwitch::new(&he.ctx, flooding, active.len());
        self.last_switch = Some((round, weights.to_vec(), active.len()));
        // masks made ahead serve only the request they were made for, and only once
        let mut masks: Option<Vec<PublicKeySwitchMask>> = None;
        if let Some(p) = self.prepared.take()
            && p.round == round
            && p.weights == weights
            && p.parties == active.len()
        {
            match p.masks.await {
                Ok(Ok(m)) if m.len() == cts.len() => masks = Some(m),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => warn!(round, "making switching masks ahead failed: {e:#}"),
                Err(e) => warn!(round, "making switching masks ahead failed: {e}"),
            }
        }
        let prepared = masks.is_some();
        let pk = he
            .keys
            .receive
            .as_ref()
            .context("switch request before the consortium receiving key")?
            .pk
            .clone();
        let (ctx, pool) = (he.ctx.clone(), he.pool.clone());
        let shares: Vec<Vec<u8>> =
            tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Vec<u8>>> {
                pool.install(|| match masks {
                    Some(masks) => cts
                        .par_iter()
                        .zip(masks.into_par_iter())
                        .map(|(ct, mask)| -> anyhow::Result<Vec<u8>> {
                            Ok(mpw::encode_public_key_switch_share(
                                &ctx,
                                &pcks.share_with_mask(&sk, ct, mask)?,
                            ))
                        })
                        .collect(),
                    None => cts
                        .par_iter()
                        .map_init(Prng::from_os, |prng, ct| -> anyhow::Result<Vec<u8>> {
                            let prng = prng.as_mut().map_err(|e| anyhow::anyhow!("{e}"))?;
                            Ok(mpw::encode_public_key_switch_share(
                                &ctx,
                                &pcks.share(&sk, &pk, ct, prng)?,
                            ))
                        })
                        .collect(),
                })
            })
            .await??;
        let mut s = link
            .open(
                round,
                Body::SwitchShares {
                    attempt,
                    count: shares.len() as u32,
                },
            )
            .await?;
        for b in &shares {
            s.item(b).await?;
        }
        let bytes_up = s.finish().await?;
        let switch_s = t0.elapsed().as_secs_f32();
        let c = self.costs.entry(round).or_default();
        c.switch_s += switch_s;
        c.bytes_up += bytes_up;
        info!(round, attempt, switch_s, prepared, "switching shares sent");
        Ok(())
    }

    /// After uploading `round`'s update of `count` ciphertexts: if this node switched last
    /// round, start making the masks of this round's switch on the encryption threads.
    fn prepare_masks(&mut self, round: u64, count: usize) {
        self.prepared = None;
        let (Some(he), Some((last, weights, parties))) =
            (self.he.as_ref(), self.last_switch.clone())
        else {
            return;
        };
        if last + 1 != round {
            return;
        }
        let Some(receive) = he.keys.receive.as_ref() else {
            return;
        };
        let (ctx, pool, pk, level) = (
            he.ctx.clone(),
            he.pool.clone(),
            receive.pk.clone(),
            he.codec.plan().level,
        );
        let flooding = he
            .codec
            .plan()
            .flooding(&weights.iter().map(|&w| w as f64).collect::<Vec<_>>());
        let masks = tokio::task::spawn_blocking(move || {
            let pcks = PublicKeySwitch::new(&ctx, flooding?, parties);
            pool.install(|| {
                (0..count)
                    .into_par_iter()
                    .map_init(Prng::from_os, |prng, _| {
                        let prng = prng.as_mut().map_err(|e| anyhow::anyhow!("{e}"))?;
                        Ok(pcks.mask(&pk, level, prng)?)
                    })
                    .collect()
            })
        });
        self.prepared = Some(PreparedMasks {
            round,
            weights,
            parties,
            masks,
        });
    }

    #[allow(clippy::too_many_arguments)]
    async fn result(
        &mut self,
        link: &Link,
        round: u64,
        total_weight: u64,
        participants: &[u32],
        count: u32,
        mut msg: Incoming,
    ) -> anyhow::Result<()> {
        if round != self.state.round + 1 {
            warn!(
                round,
                held = self.state.round,
                "result for a round this node does not follow: ignored"
            );
            while msg.next_item().await?.is_some() {}
            return Ok(());
        }
        if total_weight == 0 {
            bail!("a round result with no weight");
        }
        let t0 = Instant::now();
        let n = self.data.manifest.total;
        // never more items than the model needs (a peer cannot make this allocate without bound)
        let max_items = match &self.he {
            Some(he) => he.codec.ciphertexts_for(n),
            None => protocol::plain::max_items(n),
        };
        if count as usize > max_items {
            bail!("a result of {count} items for a model of {n} values");
        }
        let mut bytes_down = 0u64;
        let mut items = Vec::with_capacity(count as usize);
        for i in 0..count {
            let item = msg
                .next_item()
                .await?
                .with_context(|| format!("result ended after {i} of {count} items"))?;
            bytes_down += item.len() as u64;
            items.push(item);
        }
        let sum: Vec<f64> = match &self.he {
            Some(he) => {
                let (codec, pool) = (he.codec.clone(), he.pool.clone());
                let sk = he
                    .keys
                    .receive
                    .as_ref()
                    .context("a result before the consortium receiving key")?
                    .sk
                    .clone();
                // decode, decrypt and unpack the ciphertexts on all this node's threads
                tokio::task::spawn_blocking(move || {
                    pool.install(|| codec.decrypt_sum(&sk, &items, n))
                })
                .await?
                .context("the round's result")?
            }
            None => {
                let mut sum = Vec::with_capacity(n);
                for (i, item) in items.iter().enumerate() {
                    sum.extend(
                        protocol::plain::decode_f64s(item)
                            .with_context(|| format!("result item {i}"))?,
                    );
                }
                sum
            }
        };
        if sum.len() < n {
            bail!("the result holds {} values for a model of {n}", sum.len());
        }
        let delta: Vec<f32> = sum[..n]
            .iter()
            .map(|s| (s / total_weight as f64) as f32)
            .collect();
        if delta.iter().any(|d| !d.is_finite()) {
            bail!("the decrypted average is not finite");
        }
        let moments = Moments {
            m: &mut self.state.m,
            v: &mut self.state.v,
        };
        strategy::apply(
            &self.cfg.server,
            &mut self.state.global,
            moments,
            &delta,
            &self.data.trainable,
        );
        self.state.round = round;
        self.state_file.save(&self.state)?;
        let decrypt_s = t0.elapsed().as_secs_f32();
        info!(round, participants = ?participants, decrypt_s, "new global model");
        // evaluate the new global model
        let global = self.state.global.clone();
        let spec = self.data.spec.clone();
        let (val, test) = (self.data.val.clone(), self.data.test.clone());
        let names = self.data.class_names.clone();
        let test_every = self.cfg.node.test_every;
        let (v, t) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let device = select_device("cpu")?;
            let net = network_from_flat(&spec, &global, &device)?;
            let v = val
                .as_ref()
                .map(|v| evaluate(&net, v, &names))
                .transpose()?;
            let t = if test_every > 0 && round.is_multiple_of(test_every) {
                Some(evaluate(&net, &test, &names)?)
            } else {
                None
            };
            Ok((v, t))
        })
        .await??;
        let c = self.costs.remove(&round).unwrap_or_default();
        let m = RoundMetrics {
            round,
            train_loss: c.train_loss,
            val_loss: v.as_ref().map(|r| r.loss as f32).unwrap_or(f32::NAN),
            val_acc: v.as_ref().map(|r| r.accuracy as f32).unwrap_or(f32::NAN),
            val_auc: v.as_ref().map(|r| r.macro_auc as f32).unwrap_or(f32::NAN),
            test_acc: t.as_ref().map(|r| r.accuracy as f32).unwrap_or(f32::NAN),
            test_auc: t.as_ref().map(|r| r.macro_auc as f32).unwrap_or(f32::NAN),
            samples: c.samples,
            train_s: c.train_s,
            encrypt_s: c.encrypt_s,
            upload_s: c.upload_s,
            switch_s: c.switch_s,
            decrypt_s,
            bytes_up: c.bytes_up,
            bytes_down,
        };
        info!(
            round,
            test_acc = m.test_acc,
            test_auc = m.test_auc,
            val_acc = m.val_acc,
            "evaluated"
        );
        append_metrics(&self.dirs.out.join("metrics.csv"), &m)?;
        link.send(round, Body::Metrics(m)).await?;
        Ok(())
    }

    /// Writes the final global model and its export for encrypted inference.
    pub fn finish(&self) -> anyhow::Result<()> {
        let device = select_device("cpu")?;
        let net = network_from_flat(&self.data.spec, &self.state.global, &device)?;
        client::params::write_flat(&self.dirs.out.join("model.f32"), &self.state.global)?;
        client::export::export(
            &net,
            &self.data.normalizer,
            &self.data.class_names,
            &self.data.preparation,
        )?
        .write_json(&self.dirs.out.join("network.json"))?;
        info!(
            round = self.state.round,
            "final model written to {}",
            self.dirs.out.display()
        );
        Ok(())
    }
}

fn apply_peers(he: &mut NodeHe, peers: &PeerKeys) -> anyhow::Result<()> {
    he.collective = Some(
        wire::decode_public_key(&he.ctx, &peers.collective_public_key)
            .context("collective public key")?,
    );
    Ok(())
}

/// "Setup done" with the consortium receiving key, once this node has finished setup.
fn setup_done_body(keys: &Keys) -> Option<Body> {
    match (&keys.threshold, &keys.receive) {
        (Some(_), Some(r)) => Some(Body::SetupDone {
            receive_key: r.pk_bytes.clone(),
        }),
        _ => None,
    }
}

fn read_opt(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn append_metrics(path: &Path, m: &RoundMetrics) -> anyhow::Result<()> {
    use std::io::Write;
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    if new {
        writeln!(
            f,
            "round,train_loss,val_loss,val_acc,val_auc,test_acc,test_auc,samples,train_s,encrypt_s,upload_s,switch_s,decrypt_s,bytes_up,bytes_down"
        )?;
    }
    writeln!(
        f,
        "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
        m.round,
        m.train_loss,
        m.val_loss,
        m.val_acc,
        m.val_auc,
        m.test_acc,
        m.test_auc,
        m.samples,
        m.train_s,
        m.encrypt_s,
        m.upload_s,
        m.switch_s,
        m.decrypt_s,
        m.bytes_up,
        m.bytes_down
    )?;
    Ok(())
}
