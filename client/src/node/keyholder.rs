//! `client hold-keys`: after training, the hospital holds a share of the key the final model is
//! served under (mode a). It connects to the serving coordinator and:
//!
//! - makes a fresh inference secret at the served plan's parameters (0600 on disk), sends its
//!   round-1 shares of the collective public, relinearization and Galois keys, and Shamir shares
//!   of the secret sealed for each other hospital with the exchange keys of training setup;
//! - sends its relinearization round-2 share and combines its threshold secret (0600);
//! - encrypts its final model under the collective public key when asked, and uploads it;
//! - for every request, logs who asked and contributes flooded switching shares of the results
//!   towards the requester's key: 2^40 above the results' own noise, which it measures itself
//!   once per model ([`super::result_noise`]).
//!
//! With `--head` (issue 20) it holds a share of a key at the head-training parameters instead,
//! made in the same two rounds for the final model's last layer, and refreshes the head's state
//! after every training step (`coordinator train-head`), logging each refresh; the trained head
//! is switched to its contributor's key as a served result is.
//!
//! [`Keyholder`] holds the cryptography (sans-IO: each message in, the answer out); [`run`] is
//! the tokio shell, reconnecting when the link drops.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use client::export::read_network;
use he_agg::ckks::{CkksContext, SecretKey, wire};
use he_agg::infer::InferencePlan;
use he_agg::infer::threshold::{
    CollectiveKeys, KeyShares, served_crs, served_flooding, served_policy,
};
use he_agg::multiparty::sealed::ExchangeKeys;
use he_agg::multiparty::threshold::deal;
use he_agg::multiparty::{PublicKeySwitch, RelinKeyEphemeral, ThresholdSecret, wire as mpw};
use he_agg::ring::Prng;
use he_agg::train::HeadPlan;
use protocol::link::{Incoming, connect};
use protocol::serve::collective::{KeyholderRound1, ResultSwitchRequest, ResultSwitchShares};
use protocol::serve::head::{HeadJob, HeadRefreshRequest};
use protocol::tls::TlsFiles;
use protocol::transcript::{self, Signer, Statement, Verifier};
use protocol::{Body, FederationId, Link, ProtocolError};
use tracing::{info, warn};
use zeroize::Zeroizing;

use super::held_setup::{self, HeldSetup};
use super::keys::{PeerKeys, read_exchange, read_peers, write_secret};
use super::site::SiteConfig;
use super::trust::{self, Distrust};

/// A message to send: a header and its items.
pub struct Reply {
    pub body: Body,
    pub items: Vec<Vec<u8>>,
}

/// Every keyholder's (hospital, signature) over its inference key share, and the shares.
type RelayedKeyShares<'a> = (&'a [(u32, Vec<u8>)], &'a [Vec<u8>]);

/// Where a keyholder keeps the hash of the collective key it made (public).
const COLLECTIVE_KEY_HASH: &str = "collective-key.hash";

/// Most keyholders a consortium has (one per hospital; the federation config caps N at 1000).
const MAX_KEYHOLDERS: usize = 1000;

fn sealing_context(federation: FederationId, from: u32, to: u32) -> Vec<u8> {
    format!("HEAL served inference shares v1|{federation}|{from}->{to}").into_bytes()
}

/// What the key is for.
enum Held {
    /// mode (a): the final model, served
    Served {
        plan: InferencePlan,
        /// the calibrated bound of a result's noise, which the switching flooding sits 2^λ
        /// above
        result_noise: f64,
    },
    /// head training: the final model's last layer
    Head {
        plan: HeadPlan,
        /// refreshes made for this setup (each logged)
        refreshes: u64,
    },
}

/// The keyholder's cryptography and state.
pub struct Keyholder {
    federation: FederationId,
    me: u32,
    hospitals: u32,
    threshold: u32,
    dir: PathBuf,
    exchange: ExchangeKeys,
    /// the training setup's checked key material: exchange keys and certificates
    peers: PeerKeys,
    /// signs this hospital's inference key share; checks the others' against the CA
    signer: Signer,
    verifier: Verifier,
    /// this setup's own public-key share as sent (to recognise it when relayed)
    own_key_share: Option<Vec<u8>>,
    /// BLAKE3 of the collective public key made here from the signed shares: the only key the
    /// model is encrypted under (kept in `collective-key.hash` across restarts)
    collective_key: Option<[u8; 32]>,
    architecture: String,
    /// How image files become the model's inputs (JSON), told to requesters.
    input_preparation: String,
    class_names: Vec<String>,
    held: Held,
    ctx: Arc<CkksContext>,
    keys: CollectiveKeys,
    prng: Prng,
    secret: Option<SecretKey>,
    ephemeral: Option<RelinKeyEphemeral>,
    own_share: Option<he_agg::multiparty::ShamirShare>,
    threshold_secret: Option<ThresholdSecret>,
    /// the setup the threshold secret is of (the hash of the round-1 relinearization sum)
    setup: Option<[u8; 32]>,
}

impl Keyholder {
    /// From the node's output directory of training (`client run --out OUT`): its final model
    /// (OUT/network.json), exchange key and the peers' exchange keys (OUT/state).
    pub fn open(cfg: &SiteConfig, out: &Path, tls: &TlsFiles) -> anyhow::Result<Self> {
        let state = out.join("state");
        let network = out.join("network.json");
        let (exp, prep) = read_network(&network).with_context(|| {
            format!(
                "the final model {} (finish training with `client run` first)",
                network.display()
            )
        })?;
        let exchange = read_exchange(&state)?;
        let peers = read_peers(&state)?.with_context(|| {
            format!(
                "no peers.bin in {}: this node never finished training setup",
                state.display()
            )
        })?;
        let net = &exp.network;
        let plan = InferencePlan::new(net, &served_policy())
            .context("compiling the final model for serving")?;
        let ctx = CkksContext::new(plan.spec().parameters().clone())?;
        let federation = cfg.federation_id()?;
        let keys = CollectiveKeys::new(plan.spec(), &ctx, &served_crs(&federation.0))?;
        let dir = state.join("inference");
        protocol::durable_file::create_private_dir(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let result_noise = super::result_noise::bound(&dir, &plan, net, cfg.site.hospitals)?;
        Self::restore(Self {
            federation,
            me: cfg.site.index,
            hospitals: cfg.site.hospitals,
            threshold: cfg.site.threshold,
            dir,
            exchange,
            peers,
            signer: Signer::from_files(tls).context("this hospital's kit")?,
            verifier: Verifier::from_files(tls).context("this hospital's kit")?,
            own_key_share: None,
            collective_key: None,
            architecture: serde_json::to_string(&net.architecture())?,
            input_preparation: serde_json::to_string(&prep)?,
            class_names: exp.class_names.clone(),
            held: Held::Served { plan, result_noise },
            ctx,
            keys,
            prng: Prng::from_os()?,
            secret: None,
            ephemeral: None,
            own_share: None,
            threshold_secret: None,
            setup: None,
        })
    }

    /// `--head`: a share of a key for training the final model's last layer (its input width
    /// and classes) on encrypted features; kept in OUT/state/head.
    pub fn open_head(cfg: &SiteConfig, out: &Path, tls: &TlsFiles) -> anyhow::Result<Self> {
        let state = out.join("state");
        let network = out.join("network.json");
        let (exp, _) = read_network(&network).with_context(|| {
            format!(
                "the final model {} (finish training with `client run` first)",
                network.display()
            )
        })?;
        let Some(he_agg::infer::Layer::Dense(last)) = exp.network.layers().last() else {
            bail!("the final model's last layer is not dense: there is no head to train");
        };
        let classes = last.bias.len();
        let features = last.weight.len() / classes.max(1);
        let plan = HeadPlan::new(features, classes).context("the head's plan")?;
        let ctx = plan.context().clone();
        let federation = cfg.federation_id()?;
        let keys = CollectiveKeys::for_rotations(
            &ctx,
            &plan.galois_steps(),
            &HeadPlan::crs(&federation.0),
        )?;
        let dir = state.join("head");
        protocol::durable_file::create_private_dir(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let job = HeadJob {
            features: features as u32,
            classes: classes as u32,
            training: None,
        };
        Self::restore(Self {
            federation,
            me: cfg.site.index,
            hospitals: cfg.site.hospitals,
            threshold: cfg.site.threshold,
            dir,
            exchange: read_exchange(&state)?,
            peers: read_peers(&state)?.with_context(|| {
                format!(
                    "no peers.bin in {}: this node never finished training setup",
                    state.display()
                )
            })?,
            signer: Signer::from_files(tls).context("this hospital's kit")?,
            verifier: Verifier::from_files(tls).context("this hospital's kit")?,
            own_key_share: None,
            collective_key: None,
            architecture: job.to_architecture(),
            input_preparation: String::new(),
            class_names: exp.class_names.clone(),
            held: Held::Head { plan, refreshes: 0 },
            ctx,
            keys,
            prng: Prng::from_os()?,
            secret: None,
            ephemeral: None,
            own_share: None,
            threshold_secret: None,
            setup: None,
        })
    }

    /// The held setup and collective key after a restart.
    fn restore(mut me: Self) -> anyhow::Result<Self> {
        // after a restart: the threshold secret and the setup it is of
        if let Some(held) = held_setup::load(&me.dir, &me.ctx)? {
            me.threshold_secret = Some(held.secret);
            me.setup = Some(held.id);
        }
        if let Ok(hash) = std::fs::read(me.dir.join(COLLECTIVE_KEY_HASH)) {
            me.collective_key = hash.try_into().ok();
        }
        Ok(me)
    }

    /// The setup whose threshold secret this keyholder holds.
    pub fn setup(&self) -> Option<[u8; 32]> {
        self.setup
    }

    /// Fingerprint of the plan this keyholder serves.
    pub fn fingerprint(&self) -> [u8; 32] {
        match &self.held {
            Held::Served { plan, .. } => plan.spec().fingerprint(),
            Held::Head { plan, .. } => plan.fingerprint(),
        }
    }

    fn crs(&self) -> he_agg::multiparty::Crs {
        match &self.held {
            Held::Served { .. } => served_crs(&self.federation.0),
            Held::Head { .. } => HeadPlan::crs(&self.federation.0),
        }
    }

    /// This keyholder's additive share of the key for a request to `what` under `setup` by
    /// `active`, which must be t hospitals including this one.
    fn additive_share(
        &self,
        what: &str,
        setup: [u8; 32],
        active: &[u32],
    ) -> anyhow::Result<he_agg::ckks::SecretKey> {
        let ts = self
            .threshold_secret
            .as_ref()
            .with_context(|| format!("{what} request before the threshold secret is formed"))?;
        if Some(setup) != self.setup {
            bail!("asked to {what} under another setup's key than the one this keyholder holds");
        }
        let t = self.threshold as usize;
        if active.len() != t || !active.contains(&self.me) {
            bail!(
                "asked to {what} as one of {active:?}, which is not {t} hospitals including this one"
            );
        }
        Ok(ts.additive_share(&self.ctx, active)?)
    }

    /// What the key is for, in logs.
    fn key_name(&self) -> &'static str {
        match &self.held {
            Held::Served { .. } => "inference",
            Held::Head { .. } => "head-training",
        }
    }

    /// Most ciphertexts a refresh request may carry.
    fn max_state(&self) -> usize {
        match &self.held {
            Held::Served { .. } => 0,
            Held::Head { plan, .. } => plan.state_len(true),
        }
    }

    /// Setup round 1: a fresh inference secret, its key shares and its sealed Shamir shares.
    pub fn start(&mut self, hospitals: u32, threshold: u32) -> anyhow::Result<Reply> {
        if hospitals != self.hospitals || threshold != self.threshold {
            bail!(
                "the server serves {hospitals} hospitals with threshold {threshold}; this kit says \
                 {} and {}",
                self.hospitals,
                self.threshold
            );
        }
        // the setup served so far stays held (and served) until the new one is formed: a
        // server restarted mid-setup without --new-setup still finds it
        let sk = self.ctx.key_generator()?.secret_key();
        write_secret(
            &self.dir.join("share.key"),
            &wire::encode_secret_key(&self.ctx, &sk),
        )?;
        let (eph, shares) = self.keys.round1(&sk, &mut self.prng)?;
        let ids: Vec<u32> = (1..=self.hospitals).collect();
        let dealt = deal(
            &self.ctx,
            &sk,
            self.me,
            &ids,
            self.threshold as usize,
            &mut self.prng,
        )?;
        let mut sealed = Vec::new();
        for s in dealt {
            if s.to() == self.me {
                self.own_share = Some(s);
                continue;
            }
            let receiver = self.peer(s.to())?;
            let bytes = self.exchange.seal(
                &receiver,
                &sealing_context(self.federation, self.me, s.to()),
                &mpw::encode_shamir_share(&self.ctx, &s),
                &mut self.prng,
            )?;
            sealed.push((s.to(), bytes));
        }
        self.secret = Some(sk);
        self.ephemeral = Some(eph);
        let items = self.round1_items(&shares);
        let signature = self.signer.sign(&Statement::InferenceKeyShare {
            federation: self.federation,
            hospital: self.me,
            plan: self.fingerprint(),
            public_key_share: transcript::digest(&items[0]),
        });
        self.own_key_share = Some(items[0].clone());
        Ok(Reply {
            body: Body::CollectiveRound1(KeyholderRound1 {
                architecture: self.architecture.clone(),
                class_names: self.class_names.clone(),
                plan: self.fingerprint(),
                galois: shares.galois.len() as u32,
                sealed,
                signature,
            }),
            items,
        })
    }

    fn round1_items(&self, shares: &KeyShares) -> Vec<Vec<u8>> {
        let mut items = vec![
            mpw::encode_public_key_share(&self.ctx, &shares.public_key),
            mpw::encode_relin_share1(&self.ctx, &shares.relinearization),
        ];
        items.extend(
            shares
                .galois
                .iter()
                .map(|g| mpw::encode_galois_share(&self.ctx, g)),
        );
        items
    }

    fn peer(&self, h: u32) -> anyhow::Result<[u8; 32]> {
        self.peers
            .exchange
            .iter()
            .find(|(i, _)| *i == h)
            .map(|(_, k)| *k)
            .with_context(|| format!("no exchange key for hospital {h} (peers.bin)"))
    }

    /// Setup round 2: the relinearization share on the round-1 sum, and the threshold secret
    /// from the sealed shares addressed here.
    pub fn round2(
        &mut self,
        sealed: &[(u32, Vec<u8>)],
        relin_sum: &[u8],
        key_shares: RelayedKeyShares<'_>,
    ) -> anyhow::Result<Vec<Reply>> {
        // the collective key the model will be encrypted under, made here from the signed
        // shares: a server that later asks for the model under another key is refused
        let own_share = self
            .own_key_share
            .clone()
            .context("round 2 of a setup this keyholder did not start")?;
        let hash = trust::check_inference_key(
            &self.ctx,
            &self.crs(),
            &self.verifier,
            &self.peers,
            &trust::OwnInferenceShare {
                federation: self.federation,
                index: self.me,
                hospitals: self.hospitals,
                plan: self.fingerprint(),
                public_key_share: &own_share,
            },
            key_shares.0,
            key_shares.1,
        )?;
        protocol::durable_file::write_public(&self.dir.join(COLLECTIVE_KEY_HASH), &hash)
            .context("storing the collective key's hash")?;
        self.collective_key = Some(hash);
        let (Some(sk), Some(eph), Some(own)) = (
            self.secret.as_ref(),
            self.ephemeral.take(),
            self.own_share.take(),
        ) else {
            bail!(
                "round 2 of a setup this keyholder did not start (it restarted): restart the \
                 serving coordinator to begin a new setup"
            );
        };
        let sum = mpw::decode_relin_share1(&self.ctx, relin_sum)
            .context("the round-1 relinearization sum")?;
        let share2 = self.keys.round2(&eph, sk, &sum, &mut self.prng)?;
        let mut shares = vec![own];
        for (from, bytes) in sealed {
            let sender = self.peer(*from)?;
            let opened = Zeroizing::new(
                self.exchange
                    .open(
                        &sender,
                        &sealing_context(self.federation, *from, self.me),
                        bytes,
                    )
                    .with_context(|| format!("the share from hospital {from} does not open"))?,
            );
            let share = mpw::decode_shamir_share(&self.ctx, &opened)
                .with_context(|| format!("the share from hospital {from}"))?;
            if share.from() != *from || share.to() != self.me {
                bail!(
                    "hospital {from} sent a share labelled {} -> {}",
                    share.from(),
                    share.to()
                );
            }
            shares.push(share);
        }
        let ids: Vec<u32> = (1..=self.hospitals).collect();
        let ts =
            ThresholdSecret::combine(&self.ctx, self.me, self.threshold as usize, &ids, &shares)?;
        let setup = *blake3::hash(relin_sum).as_bytes();
        let held = HeldSetup {
            id: setup,
            secret: ts,
        };
        held_setup::store(&self.dir, &self.ctx, &held)?;
        self.threshold_secret = Some(held.secret);
        self.setup = Some(setup);
        info!(
            "threshold secret of the {} key formed ({} of {})",
            self.key_name(),
            self.threshold,
            self.hospitals
        );
        Ok(vec![
            Reply {
                body: Body::CollectiveRound2,
                items: vec![mpw::encode_relin_share2(&self.ctx, &share2)],
            },
            Reply {
                body: Body::ThresholdFormed,
                items: vec![],
            },
        ])
    }

    /// The final model encrypted under the collective public key.
    pub fn encrypted_model(&mut self, public_key: &[u8]) -> anyhow::Result<Reply> {
        let hash = *blake3::hash(public_key).as_bytes();
        if self.collective_key != Some(hash) {
            return Err(Distrust(format!(
                "the server asks for the model under the key {}, not the collective key made here from the keyholders' signed shares",
                blake3::Hash::from(hash).to_hex()
            ))
            .into());
        }
        let pk =
            wire::decode_public_key(&self.ctx, public_key).context("the collective public key")?;
        // what requesters pin in their site.toml ([site] collective_key)
        info!(
            collective_key = %blake3::hash(public_key).to_hex(),
            "encrypting the final model under the collective public key"
        );
        let Held::Served { plan, .. } = &self.held else {
            bail!("asked for a model while holding a head-training key");
        };
        let mut enc = self.ctx.pk_encryptor(&pk)?;
        let t = Instant::now();
        let model = he_agg::infer::Model::encrypted(plan, &self.ctx, &mut |p| enc.encrypt(p))?;
        let items: Vec<Vec<u8>> = model
            .ciphertexts()
            .into_iter()
            .map(|c| wire::encode_ciphertext(&self.ctx, c))
            .collect();
        info!(
            ciphertexts = items.len(),
            seconds = t.elapsed().as_secs_f64(),
            "final model encrypted under the collective key"
        );
        Ok(Reply {
            body: Body::EncryptedModel {
                count: items.len() as u32,
                architecture: self.architecture.clone(),
                input_preparation: self.input_preparation.clone(),
            },
            items,
        })
    }

    /// Switching shares of a request's results towards its requester's key (flooded, λ = 30).
    /// `items`: the requester's public key, then the results.
    pub fn switch(
        &mut self,
        req: &ResultSwitchRequest,
        items: &[Vec<u8>],
    ) -> anyhow::Result<Reply> {
        let sk = self.additive_share("switch", req.setup, &req.active)?;
        let t = self.threshold as usize;
        if items.len() != 1 + req.count as usize {
            bail!("{} items for {} results", items.len(), req.count);
        }
        let target =
            wire::decode_public_key(&self.ctx, &items[0]).context("the requester's public key")?;
        let (pcks, out_level) = match &self.held {
            Held::Served { plan, result_noise } => {
                let (flooding, _) = served_flooding(
                    &self.ctx,
                    plan.spec(),
                    *result_noise,
                    self.hospitals as usize,
                    t,
                )?;
                (
                    PublicKeySwitch::new(&self.ctx, flooding, t),
                    plan.spec().output_level(),
                )
            }
            // the trained head, at the top level after its last refresh
            Held::Head { plan, .. } => (
                plan.head_switch(self.hospitals as usize, t)?,
                plan.scales().top,
            ),
        };
        if req.count as usize > plan_results(&self.held) {
            bail!(
                "asked to switch {} results; at most {} are expected",
                req.count,
                plan_results(&self.held)
            );
        }
        let mut shares = Vec::with_capacity(req.count as usize);
        for (i, bytes) in items[1..].iter().enumerate() {
            let ct =
                wire::decode_ciphertext(&self.ctx, bytes).with_context(|| format!("result {i}"))?;
            if ct.level() != out_level {
                bail!(
                    "result {i} at level {}, the plan's results are at {out_level}",
                    ct.level()
                );
            }
            let share = pcks.share(&sk, &target, &ct, &mut self.prng)?;
            shares.push(mpw::encode_public_key_switch_share(&self.ctx, &share));
        }
        Ok(Reply {
            body: Body::ResultShares(ResultSwitchShares {
                request: req.request,
                attempt: req.attempt,
                count: shares.len() as u32,
            }),
            items: shares,
        })
    }
}

impl Keyholder {
    /// Head training: refresh shares of the head's state after a step (`items`: the state's
    /// ciphertexts at the refresh level). Each refresh is logged; what is refreshed is checked
    /// for shape only — the coordinator is trusted to run the agreed steps (see the README).
    pub fn refresh(
        &mut self,
        req: &HeadRefreshRequest,
        items: &[Vec<u8>],
    ) -> anyhow::Result<Reply> {
        let sk = self.additive_share("refresh", req.setup, &req.active)?;
        let t = self.threshold as usize;
        let Held::Head { plan, refreshes } = &mut self.held else {
            bail!("asked to refresh while holding a served model's key");
        };
        let (short, long) = (plan.state_len(false), plan.state_len(true));
        if (req.count as usize != short && req.count as usize != long)
            || items.len() != req.count as usize
        {
            bail!(
                "{} ciphertexts ({} announced) where a head's state has {short} or {long}",
                items.len(),
                req.count
            );
        }
        if req.step == 0 || req.step > req.steps {
            bail!("step {} of {}", req.step, req.steps);
        }
        let refresh = plan.refresh(&self.federation.0, self.hospitals as usize, t)?;
        let (level, scale) = (plan.scales().refresh_level, plan.scales().weight);
        let mut shares = Vec::with_capacity(items.len());
        for (i, bytes) in items.iter().enumerate() {
            let ct =
                wire::decode_ciphertext(&self.ctx, bytes).with_context(|| format!("state {i}"))?;
            if ct.level() != level || (ct.scale - scale).abs() > 1e-9 * scale {
                bail!(
                    "state ciphertext {i} at level {}, scale 2^{:.2}; a step leaves it at level \
                     {level}, scale 2^{:.2}",
                    ct.level(),
                    ct.scale.log2(),
                    scale.log2()
                );
            }
            let share = refresh.share(&sk, &ct, &mut self.prng)?;
            shares.push(mpw::encode_refresh_share(&self.ctx, &share));
        }
        *refreshes += shares.len() as u64;
        Ok(Reply {
            body: Body::ResultShares(ResultSwitchShares {
                request: req.request,
                attempt: req.attempt,
                count: shares.len() as u32,
            }),
            items: shares,
        })
    }
}

/// Most results one switch request may carry.
fn plan_results(held: &Held) -> usize {
    match held {
        Held::Served { .. } => protocol::serve::collective::MAX_COLLECTIVE_IMAGES as usize,
        Held::Head { plan, .. } => plan.state_len(false),
    }
}

/// Reads all items of a stream (at most `max`).
async fn items(incoming: &mut Incoming, max: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    while let Some(item) = incoming.next_item().await? {
        if out.len() == max {
            bail!("more than {max} items");
        }
        out.push(item);
    }
    Ok(out)
}

async fn send(link: &Link, replies: Vec<Reply>) -> anyhow::Result<()> {
    for r in replies {
        let mut s = link.open(0, r.body).await?;
        for item in &r.items {
            s.item(item).await?;
        }
        s.finish().await?;
    }
    Ok(())
}

/// One connection: hello, then answer until the link drops.
async fn session(link: &Link, kh: &mut Keyholder) -> anyhow::Result<()> {
    link.send(
        0,
        Body::KeyholderHello {
            software: format!("heal-client {}", env!("CARGO_PKG_VERSION")),
            setup: kh.setup(),
        },
    )
    .await?;
    loop {
        let mut msg = match link.accept().await {
            Ok(m) => m,
            Err(e @ (ProtocolError::Connection(_) | ProtocolError::PeerFinished)) => {
                return Err(e.into());
            }
            Err(ProtocolError::Timeout(_)) => continue,
            Err(e) => {
                warn!("ignored a message: {e}");
                continue;
            }
        };
        let body = msg.envelope.body.clone();
        let replies = match body {
            Body::CollectiveStart {
                hospitals,
                threshold,
            } => {
                info!("setup of the {} key: making round-1 shares", kh.key_name());
                let t = Instant::now();
                let r = tokio::task::block_in_place(|| kh.start(hospitals, threshold))?;
                info!(
                    seconds = t.elapsed().as_secs_f64(),
                    items = r.items.len(),
                    "round-1 shares made"
                );
                vec![r]
            }
            Body::CollectiveRound1Result { sealed, key_shares } => {
                let it = items(&mut msg, 1 + key_shares.len().min(MAX_KEYHOLDERS)).await?;
                let (sum, shares) = it.split_first().context("no round-1 sum")?;
                tokio::task::block_in_place(|| kh.round2(&sealed, sum, (&key_shares, shares)))?
            }
            Body::ModelWanted => {
                let it = items(&mut msg, 1).await?;
                let pk = it.first().context("no collective public key")?;
                vec![tokio::task::block_in_place(|| kh.encrypted_model(pk))?]
            }
            Body::HeadRefresh(req) => {
                let it = items(&mut msg, kh.max_state()).await?;
                // the consortium's record of every refresh: one line per step and attempt
                info!(
                    step = req.step,
                    steps = req.steps,
                    attempt = req.attempt,
                    contributor = format!("hospital-{}", req.contributor),
                    ciphertexts = req.count,
                    with = ?req.active,
                    "refreshing the head's state after a training step"
                );
                match tokio::task::block_in_place(|| kh.refresh(&req, &it)) {
                    Ok(r) => vec![r],
                    Err(e) => {
                        warn!(step = req.step, "refused to refresh: {e:#}");
                        continue;
                    }
                }
            }
            Body::ResultSwitch(req) => {
                let max = 1 + plan_results(&kh.held);
                let it = items(&mut msg, max).await?;
                // the consortium's record of who decrypted what: one line per request
                info!(
                    request = req.request,
                    attempt = req.attempt,
                    requester = format!("hospital-{}", req.requester),
                    results = req.count,
                    with = ?req.active,
                    "switching a served result to its requester's key"
                );
                match tokio::task::block_in_place(|| kh.switch(&req, &it)) {
                    Ok(r) => vec![r],
                    Err(e) => {
                        warn!(request = req.request, "refused to switch: {e:#}");
                        continue;
                    }
                }
            }
            Body::Refused { reason } => {
                warn!("the server refused: {reason}");
                continue;
            }
            other => {
                warn!("unexpected message {}", other.kind());
                continue;
            }
        };
        send(link, replies).await?;
    }
}

/// `client hold-keys`: serves as a keyholder until interrupted (or `patience` without a server).
pub fn run(
    site: &Path,
    out: &Path,
    server: &str,
    patience: Duration,
    head: bool,
) -> anyhow::Result<()> {
    let cfg = SiteConfig::load(site)?;
    let tls = TlsFiles::in_dir(&cfg.kit_dir(site));
    let mut kh = if head {
        Keyholder::open_head(&cfg, out, &tls)?
    } else {
        Keyholder::open(&cfg, out, &tls)?
    };
    let federation = cfg.federation_id()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let addr = tokio::net::lookup_host(server)
            .await
            .with_context(|| format!("server address {server}"))?
            .next()
            .with_context(|| format!("no address for {server}"))?;
        let mut last_contact = Instant::now();
        let mut backoff = Duration::from_millis(200);
        loop {
            match connect(addr, &tls, federation, cfg.site.index).await {
                Ok(link) => {
                    let link = link.with_timeout(Duration::from_secs(300));
                    info!(%server, "connected as keyholder");
                    backoff = Duration::from_millis(200);
                    if let Err(e) = session(&link, &mut kh).await {
                        warn!("keyholder session ended: {e:#}; reconnecting");
                    }
                    last_contact = Instant::now();
                }
                Err(e) => {
                    if last_contact.elapsed() > patience {
                        bail!("no serving coordinator for {} s: {e}", patience.as_secs());
                    }
                    info!("serving coordinator not reachable yet: {e}");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    })
}
