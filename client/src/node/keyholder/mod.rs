//! `client hold-keys`: after training, the hospital holds a share of the key its final model is
//! served under (mode a) and serves requests itself. It connects to the serving coordinator
//! and:
//!
//! - makes a fresh inference secret at the served plan's parameters (0600 on disk), sends its
//!   round-1 shares of the collective public, relinearization and Galois keys, signed with the
//!   digest of its final model, and Shamir shares of the secret sealed for each other hospital
//!   with the exchange keys of training setup;
//! - checks every keyholder's signed round 1, makes the collective public key and the
//!   relinearization sum itself, sends its round-2 share on that sum and combines its threshold
//!   secret (0600);
//! - makes its evaluation keys from the sums the server sends (the relinearization sum must be
//!   the one it made) and says it is ready;
//! - for every request it is asked to serve: checks the requester's signature over the request
//!   (its key and every ciphertext), evaluates it with the model it holds, logs who asked, and
//!   switches its own results to the requester's key with flooded shares — 2^40 above the
//!   results' own noise, which it measures itself once per model ([`super::result_noise`]). It
//!   never switches a ciphertext it did not compute from a signed request.
//!
//! With `--head` (issue 20) it holds a share of a key at the head-training parameters instead,
//! made in the same two rounds for the final model's last layer; it replays every training step
//! of `coordinator train-head` on the contribution its contributor signed and refreshes only the
//! state it reached itself, logging each refresh; it switches the head it trained to the key the
//! contributor signed ([`head`]).
//!
//! [`Keyholder`] holds the cryptography (sans-IO: each message in, the answer out; [`serve`] for
//! requests, [`head`] for head training); [`shell`] is the tokio loop, reconnecting when the
//! link drops.

use protocol::CollectiveMsg;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use he_agg::ckks::{CkksContext, SecretKey, wire};
use he_agg::infer::threshold::{CollectiveKeys, KeyShares, served_crs, served_policy};
use he_agg::infer::{InferencePlan, Network};
use he_agg::multiparty::sealed::ExchangeKeys;
use he_agg::multiparty::threshold::deal;
use he_agg::multiparty::{RelinKeyEphemeral, ThresholdSecret, wire as mpw};
use he_agg::ring::Prng;
use he_agg::train::HeadPlan;
use protocol::serve::collective::{KeyholderRound1, KeyholderShares};
use protocol::serve::head::HeadJob;
use protocol::tls::TlsFiles;
use protocol::transcript::{self, Signer, Verifier};
use protocol::{Body, FederationId};
use tracing::info;
use training::export::read_network;
use zeroize::Zeroizing;

use super::held_setup::{self, HeldSetup};
use super::keys::{PeerKeys, read_exchange, read_peers};
use super::site::SiteConfig;
use super::trust::{self, OwnInferenceShares};

mod deep;
mod head;
mod persist;
mod relayed;
mod serve;
mod shell;

pub use persist::Persist;

pub use shell::run;

/// A message to send: a header and its items.
pub struct Reply {
    pub body: Body,
    pub items: Vec<Vec<u8>>,
}

/// Most keyholders a consortium has (one per hospital; the federation config caps N at 1000).
const MAX_KEYHOLDERS: usize = 1000;

fn sealing_context(federation: FederationId, from: u32, to: u32) -> Vec<u8> {
    format!("HEAL served inference shares v1|{federation}|{from}->{to}").into_bytes()
}

/// What the key is for.
enum Held {
    /// mode (a): the final model, served
    Served {
        plan: Arc<InferencePlan>,
        /// the calibrated bound of a result's noise, which the switching flooding sits 2^λ
        /// above
        result_noise: f64,
    },
    /// head training: the final model's last layer
    Head {
        plan: HeadPlan,
        held: Box<head::HeadHeld>,
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
    /// this setup's own round 1 as sent (to recognise it when relayed): public-key share,
    /// relinearization share, the Galois shares' digest
    own_round1: Option<(Vec<u8>, Vec<u8>, [u8; 32])>,
    /// BLAKE3 of the collective public key made here from the signed shares: the only key this
    /// keyholder takes requests under (kept in `collective-key.hash` across restarts)
    collective_key: Option<[u8; 32]>,
    /// digest of the final model's weights (every keyholder's must agree)
    model: [u8; 32],
    architecture: String,
    /// How image files become the model's inputs (JSON), told to requesters.
    input_preparation: String,
    class_names: Vec<String>,
    held: Held,
    ctx: Arc<CkksContext>,
    keys: CollectiveKeys,
    prng: Prng,
    /// durable writes decided and not yet carried out by the shell
    persist: std::collections::VecDeque<Persist>,
    secret: Option<SecretKey>,
    ephemeral: Option<RelinKeyEphemeral>,
    own_share: Option<he_agg::multiparty::ShamirShare>,
    threshold_secret: Option<ThresholdSecret>,
    /// the setup the threshold secret is of (the hash of the round-1 relinearization sum)
    setup: Option<[u8; 32]>,
    /// mode (a): the evaluation keys and the model, once the server sent the keys' sums
    serving: Option<serve::Serving>,
    /// mode (a): requests of a plan cut into segments, waiting for a refresh's shares
    pending: Vec<deep::Pending>,
    /// `[node] model_memory_mb`, in bytes
    model_memory: Option<u64>,
    /// `[node] backend`: where requests are evaluated
    backend: he_agg::aggregate::BackendChoice,
}

/// The digest of a network's weights as every keyholder evaluates them (the layers; the input
/// normalization and a scattering front are applied by the requester, in the clear).
fn model_digest(net: &Network) -> anyhow::Result<[u8; 32]> {
    let bytes = serde_json::to_vec(&(net.input(), net.layers()))?;
    Ok(transcript::digest(&bytes))
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
        let plan = Arc::new(
            InferencePlan::new(net, &served_policy())
                .context("compiling the final model for serving")?,
        );
        let ctx = CkksContext::new(plan.spec().parameters().clone())?;
        let federation = cfg.federation_id()?;
        let keys = CollectiveKeys::new(plan.spec(), &ctx, &served_crs(&federation.0))?;
        let dir = state.join("inference");
        ops::durable_file::create_private_dir(&dir)
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
            own_round1: None,
            collective_key: None,
            model: model_digest(net)?,
            architecture: serde_json::to_string(&net.architecture())?,
            input_preparation: serde_json::to_string(&prep)?,
            class_names: exp.class_names.clone(),
            held: Held::Served { plan, result_noise },
            ctx,
            keys,
            prng: Prng::from_os()?,
            persist: Default::default(),
            secret: None,
            ephemeral: None,
            own_share: None,
            threshold_secret: None,
            setup: None,
            serving: None,
            pending: Vec::new(),
            model_memory: cfg
                .node
                .model_memory_mb
                .map(|mb| mb.saturating_mul(1 << 20)),
            backend: cfg.node.backend,
        })
    }

    /// `--head`: a share of a key for training the final model's last layer (its input width
    /// and classes) on encrypted features; kept in OUT/state/head.
    pub fn open_head(
        cfg: &SiteConfig,
        out: &Path,
        tls: &TlsFiles,
        max_examples: u64,
    ) -> anyhow::Result<Self> {
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
        ops::durable_file::create_private_dir(&dir)
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
            own_round1: None,
            collective_key: None,
            model: model_digest(&exp.network)?,
            architecture: job.to_architecture(),
            input_preparation: String::new(),
            class_names: exp.class_names.clone(),
            held: Held::Head {
                plan,
                held: Box::new(head::HeadHeld {
                    max_examples,
                    ..Default::default()
                }),
            },
            ctx,
            keys,
            prng: Prng::from_os()?,
            persist: Default::default(),
            secret: None,
            ephemeral: None,
            own_share: None,
            threshold_secret: None,
            setup: None,
            serving: None,
            pending: Vec::new(),
            model_memory: None,
            // `[node] backend` places the replays of a head-training run as it places requests
            backend: cfg.node.backend,
        })
    }

    /// The held setup and collective key after a restart.
    fn restore(mut me: Self) -> anyhow::Result<Self> {
        // after a restart: the threshold secret and the setup it is of
        if let Some(held) = held_setup::load(&me.dir, &me.ctx)? {
            me.threshold_secret = Some(held.secret);
            me.setup = Some(held.id);
        }
        if let Some(hash) = super::keys::read(&me.dir.join(persist::COLLECTIVE_KEY_HASH))? {
            me.collective_key = hash.try_into().ok();
        }
        Ok(me)
    }

    /// The next durable write this keyholder decided on: the shell carries each out
    /// ([`persist::write`] in [`Self::dir`]) before sending what came with it.
    pub fn poll_persist(&mut self) -> Option<Persist> {
        self.persist.pop_front()
    }

    /// Where this keyholder's state lives.
    pub fn dir(&self) -> &Path {
        &self.dir
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
        self.persist
            .push_back(Persist::Secret(wire::encode_secret_key(&self.ctx, &sk)));
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
        let galois_digest = transcript::digest_items(items[2..].iter().map(Vec::as_slice));
        let signature = self.signer.sign(
            &OwnInferenceShares {
                federation: self.federation,
                index: self.me,
                hospitals: self.hospitals,
                plan: self.fingerprint(),
                model: self.model,
                public_key_share: &items[0],
                relinearization: &items[1],
                galois_digest,
            }
            .statement(),
        );
        self.own_round1 = Some((items[0].clone(), items[1].clone(), galois_digest));
        Ok(Reply {
            body: Body::Collective(CollectiveMsg::CollectiveRound1(KeyholderRound1 {
                architecture: self.architecture.clone(),
                class_names: self.class_names.clone(),
                plan: self.fingerprint(),
                galois: shares.galois.len() as u32,
                sealed,
                input_preparation: self.input_preparation.clone(),
                model: self.model,
                galois_digest,
                signature,
            })),
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

    /// Setup round 2: every keyholder's signed round 1 checked, the collective public key and
    /// the relinearization sum made here, the round-2 share on that sum, and the threshold
    /// secret from the sealed shares addressed here. `items`: each keyholder's public-key and
    /// relinearization shares, in the records' order.
    pub fn round2(
        &mut self,
        sealed: &[(u32, Vec<u8>)],
        records: &[KeyholderShares],
        items: &[Vec<u8>],
    ) -> anyhow::Result<Vec<Reply>> {
        let (own_pk, own_relin, own_galois) = self
            .own_round1
            .clone()
            .context("round 2 of a setup this keyholder did not start")?;
        let sums = trust::check_inference_shares(
            &self.keys,
            &self.verifier,
            &self.peers,
            &OwnInferenceShares {
                federation: self.federation,
                index: self.me,
                hospitals: self.hospitals,
                plan: self.fingerprint(),
                model: self.model,
                public_key_share: &own_pk,
                relinearization: &own_relin,
                galois_digest: own_galois,
            },
            records,
            items,
        )?;
        // the only key this keyholder takes requests under
        self.persist
            .push_back(Persist::CollectiveKey(sums.collective_key));
        self.collective_key = Some(sums.collective_key);
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
        let sum = sums.relinearization;
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
        let setup = *blake3::hash(&mpw::encode_relin_share1(&self.ctx, &sum)).as_bytes();
        self.serving = None;
        let held = HeldSetup {
            id: setup,
            secret: ts,
        };
        self.persist
            .push_back(Persist::Setup(held_setup::encode(&self.ctx, &held)));
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
                body: Body::Collective(CollectiveMsg::CollectiveRound2),
                items: vec![mpw::encode_relin_share2(&self.ctx, &share2)],
            },
            Reply {
                body: Body::Collective(CollectiveMsg::ThresholdFormed),
                items: vec![],
            },
        ])
    }
}
