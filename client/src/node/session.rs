//! One hospital node and its conversations with the coordinator.

use protocol::FederationMsg;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use he_agg::aggregate::HeSetup;
use he_agg::ckks::{PublicKey, wire};
use he_agg::multiparty::FloodMask;
use protocol::link::connect;
use protocol::message::Body;
use protocol::tls::TlsFiles;
use protocol::transcript::{Signer, Verifier};
use protocol::{FederationId, Link, ProtocolError};
use tracing::{error, info, warn};
use training::params::{network_from_flat, to_flat};
use training::strategy::{Private, Strategy};
use training::train::{TrainOptions, select_device, train};

use super::NodeDirs;
use super::data::{LocalData, load};
use super::evaluation_pool::{PendingEvaluation, evaluation_pool};
use super::keys::{Keys, PeerKeys};
use super::participant::{Action, Applied, Membership, Participant};
use super::privacy::NodePrivacy;
use super::scaffold::Scaffold;
use super::site::SiteConfig;
use super::state::{ModelState, StateFile, SwitchRecordFile};
use super::trust;

pub enum SessionEnd {
    Finished,
    Disconnected(String),
}

/// Encryption material of a node.
pub(super) struct NodeHe {
    /// The federation's encryption, as every party derives it: context, plan, the codec that
    /// encrypts updates and decrypts sums, the common reference string.
    pub(super) setup: HeSetup,
    pub(super) keys: Keys,
    pub(super) collective: Option<PublicKey>,
    /// signs this hospital's key material and updates with its certificate key
    pub(super) signer: Arc<Signer>,
    /// checks the other hospitals' signatures against the consortium CA
    pub(super) verifier: Verifier,
    /// Encryption, switching and decryption run on every core of the machine: they come in
    /// bursts while training (which may be held to fewer threads) is idle.
    pub(super) pool: Arc<rayon::ThreadPool>,
}

/// Switching shares' flooding being made ahead for a round (while the other hospitals still
/// train), for the request shape the participant expects: in a steady federation the next
/// request is the same, and then only s_i·c1 and the mask s_recv·a_i are left to compute on the
/// critical path.
pub(super) type PreparedMasks = tokio::task::JoinHandle<anyhow::Result<Vec<FloodMask>>>;

/// What one round cost this hospital (reported with the round's metrics).
#[derive(Default, Clone)]
pub(super) struct RoundCost {
    pub(super) train_loss: f32,
    pub(super) samples: u64,
    pub(super) train_s: f32,
    pub(super) encrypt_s: f32,
    pub(super) upload_s: f32,
    pub(super) switch_s: f32,
    pub(super) bytes_up: u64,
}

pub struct Node {
    pub cfg: SiteConfig,
    pub(super) dirs: NodeDirs,
    pub(super) federation: FederationId,
    pub(super) index: u32,
    tls: TlsFiles,
    addr: SocketAddr,
    pub(super) data: LocalData,
    pub(super) he: Option<NodeHe>,
    pub(super) state: ModelState,
    pub(super) state_file: StateFile,
    /// the protocol's decisions (sans-IO); this shell carries them out
    participant: Participant,
    pub(super) prepared: Option<PreparedMasks>,
    pub(super) costs: HashMap<u64, RoundCost>,
    /// `[privacy]`: the budget this hospital enforces and its share of the noise
    pub(super) privacy: Option<NodePrivacy>,
    /// what `/metrics` shows
    pub(super) metrics: std::sync::Arc<super::metrics::NodeMetrics>,
    /// `[server]`'s strategy, applied to every round's decrypted average (wrapped under
    /// `[privacy]`)
    pub(super) strategy: Box<dyn Strategy>,
    /// `[train] scaffold`: the control variates (an update is then twice the model's length)
    pub(super) scaffold: Option<Scaffold>,
    /// the last round's evaluation while it runs beside the next (`evaluation.rs`)
    pub(super) evaluation: Option<PendingEvaluation>,
    pub(super) evaluation_pool: Arc<rayon::ThreadPool>,
}

fn lookup(addr: &str) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .with_context(|| format!("cannot resolve the coordinator address {addr}"))?
        .next()
        .with_context(|| format!("no address for {addr}"))
}

impl Node {
    pub async fn open(cfg: SiteConfig, site: &Path, out: &Path) -> anyhow::Result<Self> {
        let dirs = NodeDirs::new(out);
        ops::durable_file::create_private_dir(&dirs.state)
            .with_context(|| format!("cannot create {}", dirs.state.display()))?;
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
        let privacy = NodePrivacy::new(&cfg, data.train.len() as u64)?;
        let he = if cfg.he.plaintext {
            None
        } else {
            let setup = HeSetup::new(
                &cfg.he,
                cfg.site.hospitals as usize,
                cfg.site.threshold as usize,
                &federation.0,
            )
            .context("the federation's encryption")?;
            let keys = Keys::load_or_create(&setup.ctx, &dirs.state)?;
            let mut he = NodeHe {
                setup,
                keys,
                collective: None,
                signer: Arc::new(Signer::from_files(&tls).context("this hospital's kit")?),
                verifier: Verifier::from_files(&tls).context("this hospital's kit")?,
                pool: Arc::new(
                    rayon::ThreadPoolBuilder::new()
                        // as many as the training pool: every core, or RAYON_NUM_THREADS
                        // where set (simulate's threads_per_hospital: simulated hospitals
                        // that each encrypted on every core slowed the one still training)
                        .num_threads(rayon::current_num_threads())
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
                // every hospital builds the same initial model: from the config's seed, or
                // from the backbone `[model.init]` names (its BLAKE3 checked when the kit has it)
                let device = select_device("cpu")?;
                let init = cfg.model.init.as_ref().map(|i| i.config());
                let base = site.parent().unwrap_or(Path::new("."));
                let (net, _) =
                    training::transfer::initial_network(&data.spec, init.as_ref(), base, &device)
                        .context("[model.init]")?;
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
        let scaffold = if cfg.train.scaffold {
            let mask = (data.trainable.iter().zip(&data.frozen))
                .map(|(&t, &f)| t && !f)
                .collect();
            Some(Scaffold::open(&dirs.state, mask, state.round)?)
        } else {
            None
        };
        let n = data.manifest.total * if scaffold.is_some() { 2 } else { 1 };
        // never more items than the model needs (a peer cannot make this allocate without bound)
        let max_items = match &he {
            Some(he) => he.setup.codec.ciphertexts_for(n),
            None => protocol::plain::max_items(n),
        };
        let switch_record = SwitchRecordFile::new(&dirs.state);
        let participant = Participant::new(
            Membership {
                index,
                hospitals: cfg.site.hospitals,
                threshold: cfg.site.threshold,
                plaintext: cfg.he.plaintext,
            },
            state.round,
            max_items,
        )
        .with_clip(cfg.he.max_update)
        .with_budget(privacy.as_ref().map(NodePrivacy::budget))
        .with_switched(switch_record.load()?);
        let strategy: Box<dyn Strategy> = match &privacy {
            // the noised average can push batch-norm variances below what is valid
            Some(_) => Box::new(Private {
                inner: cfg.server.strategy(),
                manifest: data.manifest.clone(),
                floor: 1e-3,
            }),
            None => cfg.server.strategy(),
        };
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
            participant,
            prepared: None,
            costs: HashMap::new(),
            metrics: super::metrics::NodeMetrics::new(privacy.as_ref().map(|p| p.plan.delta)),
            strategy,
            privacy,
            scaffold,
            evaluation: None,
            evaluation_pool: evaluation_pool()?,
        })
    }

    pub async fn connect(&self) -> Result<Link, ProtocolError> {
        connect(self.addr, &self.tls, self.federation, self.index).await
    }

    /// Talks with the coordinator until it says the federation is finished or the link drops:
    /// every message goes to the participant, and its actions are carried out in order.
    pub async fn session(&mut self, link: &Link) -> anyhow::Result<SessionEnd> {
        let end = self.exchange(link).await;
        // a round's evaluation still running when the session ends in a refusal (a budget
        // spent, an alarm) or at the coordinator's close belongs to a round this hospital took
        // part in: it is written and sent before the node stops; over a dropped link it waits
        // for the next session
        if !matches!(end, Ok(SessionEnd::Disconnected(_)))
            && let Err(e) = self.report_evaluation(link).await
        {
            warn!("reporting the last round's evaluation: {e:#}");
        }
        end
    }

    /// The session's messages, each handed to the participant and its actions carried out.
    async fn exchange(&mut self, link: &Link) -> anyhow::Result<SessionEnd> {
        link.send(self.participant.held(), self.participant.hello())
            .await?;
        loop {
            let mut msg = match link.accept().await {
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
            let mut queue: VecDeque<Action> = self
                .participant
                .handle(msg.envelope.round, &msg.envelope.body)?
                .into();
            while let Some(action) = queue.pop_front() {
                match action {
                    Action::StartSetup => self.start_setup(link).await?,
                    Action::CheckSetupKeys { parties } => self.setup_keys(link, &parties).await?,
                    Action::OpenRelayedShares { sealed } => {
                        self.relayed_shares(link, sealed).await?
                    }
                    Action::Train { round, clip } => {
                        let items = self.train_and_upload(link, round, clip).await?;
                        queue.extend(self.participant.update_sent(round, items));
                    }
                    Action::PrepareMasks { shape, count } => self.prepare_masks(&shape, count),
                    Action::RecordSwitch(record) => {
                        let file = SwitchRecordFile::new(&self.dirs.state);
                        tokio::task::block_in_place(|| file.save(&record))?;
                    }
                    Action::Switch(order) => self.switch(link, &order, &mut msg).await?,
                    Action::ApplyResult {
                        round,
                        total_weight,
                        participants,
                        count,
                        clip,
                    } => {
                        let outcome = self
                            .result(
                                link,
                                (round, total_weight),
                                &participants,
                                count,
                                clip,
                                &mut msg,
                            )
                            .await?;
                        queue.extend(match outcome {
                            Applied::Yes => self.participant.result_applied(round)?,
                            Applied::OutOfRange(detail) => {
                                self.participant.result_out_of_range(round, &detail)
                            }
                        });
                    }
                    Action::Drain => while msg.next_item().await?.is_some() {},
                    Action::Alarm { round, reason } => {
                        error!("{reason}");
                        let alarm = FederationMsg::Alarm {
                            reason: reason.clone(),
                        };
                        let _ = link.send(round, Body::Federation(alarm)).await;
                        bail!("{reason}");
                    }
                    Action::Finished => {
                        self.report_evaluation(link).await?;
                        self.membership_inference().await;
                        return Ok(SessionEnd::Finished);
                    }
                }
            }
            self.report_evaluation_if_done(link).await?;
        }
    }

    /// The loss-threshold membership-inference attack on the final global model: this
    /// hospital's training images (members) against images it never trained on (non-members):
    /// its held-out training images (`[node] membership_holdout`, the same distribution), else
    /// its validation images, else the official test split (other patients: their distribution
    /// shift moves the AUC whatever the model memorised). Written to `mia.json` in its output
    /// directory; a failure is logged, never fatal (the run is done).
    async fn membership_inference(&self) {
        let (spec, global) = (self.data.spec.clone(), self.state.global.clone());
        let train = self.data.train.clone();
        let (test, against) = match (&self.data.holdout, &self.data.val) {
            (Some(h), _) if !h.is_empty() => {
                (h.clone(), "this hospital's held-out training images")
            }
            (_, Some(v)) if !v.is_empty() => (v.clone(), "this hospital's validation images"),
            _ => (self.data.test.clone(), "the official test split"),
        };
        let path = self.dirs.out.join("mia.json");
        let done = tokio::task::spawn_blocking(move || -> anyhow::Result<Option<f64>> {
            let net = network_from_flat(&spec, &global, &select_device("cpu")?)?;
            let auc = training::membership::loss_threshold_auc(&net, &train, &test)?;
            let doc = serde_json::json!({
                "mia_auc": auc,
                "members": train.len().min(test.len()),
                "attack": format!("loss threshold: training images against {against}"),
            });
            std::fs::write(&path, serde_json::to_string_pretty(&doc)?)?;
            Ok(auc)
        })
        .await;
        match done {
            Ok(Ok(auc)) => info!(mia_auc = ?auc, "membership inference on the final model"),
            Ok(Err(e)) => warn!("membership inference: {e:#}"),
            Err(e) => warn!("membership inference: {e}"),
        }
    }

    // ----- rounds -----

    /// Trains, encrypts and sends `round`'s update; returns how many items it held.
    async fn train_and_upload(
        &mut self,
        link: &Link,
        round: u64,
        max_update: f64,
    ) -> anyhow::Result<usize> {
        let t0 = Instant::now();
        let global = self.state.global.clone();
        let spec = self.data.spec.clone();
        let train_data = self.data.train.clone();
        // `schedule_span = "federation"`: this round's place in the run's schedule
        let mut tcfg = self.cfg.train.for_round(round, self.cfg.site.rounds);
        // a different shuffle per round and hospital, reproducible from the config seed
        tcfg.seed = tcfg.seed.wrapping_add(round * 1000 + u64::from(self.index));
        let dp = self.privacy.as_ref().and_then(|p| p.dp_sgd());
        if let (Some(_), Some(lr)) = (dp, self.cfg.privacy.lr) {
            tcfg.lr = lr;
        }
        // hospital-level privacy: the noise is drawn while the model trains, off the round's path
        let noise = self
            .privacy
            .as_ref()
            .and_then(|p| p.draw_noise(global.len()));
        let control = self.scaffold.as_ref().map(Scaffold::correction);
        let train_device = self.cfg.node.train_device.clone();
        let (local, loss, mean_gradient) = tokio::task::spawn_blocking(move || {
            let device = select_device(&train_device)?;
            let net = network_from_flat(&spec, &global, &device)?;
            let opts = TrainOptions {
                global: Some(&global),
                control: control.as_deref(),
                dp,
                ..Default::default()
            };
            // on a worker of rayon's global pool (RAYON_NUM_THREADS): burn's parallel loops
            // then run in the worker itself instead of being handed from this thread to the
            // pool and back, op by op
            let (net, report) = rayon::scope(|_| train(net, &train_data, &tcfg, &opts))?;
            let loss = report
                .epochs
                .last()
                .map(|e| e.train_loss as f32)
                .unwrap_or(f32::NAN);
            anyhow::Ok((to_flat(&net), loss, report.mean_gradient))
        })
        .await??;
        let train_s = t0.elapsed().as_secs_f32();
        let clip = max_update as f32;
        let mut clipped = 0usize;
        let mut delta: Vec<f32> = local
            .iter()
            .zip(&self.state.global)
            .map(|(l, g)| l - g)
            .collect();
        // SCAFFOLD: the change of this hospital's control variate travels in the same sum
        if let Some(s) = self.scaffold.as_mut() {
            let g = mean_gradient.context("local training reported no mean gradient")?;
            delta.extend(tokio::task::block_in_place(|| {
                s.contribution(round, &g, clip)
            })?);
        }
        for d in &mut delta {
            if d.abs() > clip {
                clipped += 1;
            }
            *d = d.clamp(-clip, clip);
        }
        if clipped > 0 {
            warn!(round, clipped, "update values clipped to ±{clip}");
        }
        let t1 = Instant::now();
        // hospital-level privacy: each hospital counts once and sends its noised update on the
        // grid (exact doubles); otherwise the update weighs its training examples
        let noised = match (&self.privacy, noise) {
            (Some(p), Some(noise)) => {
                let noise = noise.await?.context("drawing the privacy noise")?;
                Some(p.privatize(round, &delta, noise, max_update)?)
            }
            _ => None,
        };
        let weight = if noised.is_some() {
            1
        } else {
            self.data.train.len() as u64
        };
        let samples = self.data.train.len() as u64;
        super::trace::update(self.index, round, &delta, noised.as_deref())?;
        let (items, a_seed, signature, sign_ms) = match &self.he {
            Some(he) => {
                // under this hospital's own share of the collective secret: only c0 and a seed
                // travel, and the switchers make the sum's c1 from the signed seeds
                let sk = he.keys.share.clone();
                let (codec, pool) = (he.setup.codec.clone(), he.pool.clone());
                let signer = he.signer.clone();
                let update = (self.federation, round, self.index, weight);
                tokio::task::spawn_blocking(move || {
                    pool.install(|| -> anyhow::Result<_> {
                        let (items, a_seed) = match &noised {
                            Some(v) => codec.encrypt(&sk, v)?,
                            None => codec.encrypt(&sk, &delta)?,
                        };
                        let signing = Instant::now();
                        let signature = trust::sign_update(&signer, update, &items, &a_seed);
                        let sign_ms = signing.elapsed().as_secs_f64() * 1e3;
                        Ok((items, a_seed, signature, sign_ms))
                    })
                })
                .await??
            }
            None => {
                // plaintext updates travel as f32 (the coordinator sums them in f64): grid values
                // below 2^24 steps, all of them within the default max_update, stay exact
                let items = match &noised {
                    Some(v) => {
                        let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                        protocol::plain::encode_f32s(&v)
                    }
                    None => protocol::plain::encode_f32s(&delta),
                };
                (items, [0; 32], vec![], 0.0)
            }
        };
        let encrypt_s = t1.elapsed().as_secs_f32();
        let t2 = Instant::now();
        let mut up = link
            .open(
                round,
                Body::Federation(FederationMsg::Update {
                    weight,
                    count: items.len() as u32,
                    a_seed,
                    signature,
                }),
            )
            .await?;
        for item in &items {
            up.item(item).await?;
        }
        let bytes_up = up.finish().await?;
        let upload_s = t2.elapsed().as_secs_f32();
        info!(
            round,
            train_s,
            encrypt_s,
            upload_s,
            sign_ms,
            mb = bytes_up as f64 / 1e6,
            "update sent (signed in sign_ms, part of encrypt_s)"
        );
        self.costs.insert(
            round,
            RoundCost {
                train_loss: loss,
                samples,
                train_s,
                encrypt_s,
                upload_s,
                switch_s: 0.0,
                bytes_up,
            },
        );
        Ok(items.len())
    }
}

/// The collective public key of setup, from the peers' keys.
pub(super) fn apply_peers(he: &mut NodeHe, peers: &PeerKeys) -> anyhow::Result<()> {
    he.collective = Some(
        wire::decode_public_key(&he.setup.ctx, &peers.collective_public_key)
            .context("collective public key")?,
    );
    Ok(())
}
