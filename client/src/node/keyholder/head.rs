//! A keyholder of head training (`client hold-keys --head`), which trusts the coordinator with
//! nothing it refreshes (issue 46, item 3): it trains the head itself on the contribution its
//! contributor signed (relayed whole, [`HeadStart`]), makes refresh shares only of the state its
//! own replay reached, signed, and finishes each refresh with the shares every active keyholder
//! signed (relayed, [`HeadRefreshRelay`]); the trained head it switches is its own, to the key
//! the contributor signed. A coordinator that asks for a refresh of a ciphertext of its own
//! making (c1 = K: the share would hold s_i·K) or relays shares it made (to steer the next
//! step's ciphertexts) is refused.

use anyhow::{Context, bail};
use he_agg::ckks::{PublicKey, wire};
use he_agg::infer::EvaluationKeys;
use he_agg::multiparty::wire as mpw;
use he_agg::train::{HeadRun, RunSettings, decode_chunks, state_digest};
use protocol::Body;
use protocol::FederationId;
use protocol::HeadMsg;
use protocol::serve::head::{
    HeadRefreshRelay, HeadRefreshRequest, HeadRefreshShares, HeadStart, MAX_HEAD_EXAMPLES,
    ResultSwitchRequest, ResultSwitchShares,
};
use protocol::transcript::{Statement, digest, digest_items};

use super::{Held, Keyholder, Reply, relayed};
use crate::node::trust::Distrust;

/// A run this keyholder replays.
pub(super) struct Replay {
    contributor: u32,
    request_id: u64,
    /// the key the contributor signed: the trained head is switched to it and no other
    receiver: PublicKey,
    run: HeadRun,
    /// digest of the state waiting for its refresh
    state: [u8; 32],
    /// time spent replaying steps and finishing refreshes here
    compute: std::time::Duration,
}

impl Replay {
    /// What `hospital` signs of its `shares` of step `step` (attempt `attempt`) of this run.
    fn statement(
        &self,
        federation: FederationId,
        hospital: u32,
        step: u64,
        attempt: u32,
        shares: &[Vec<u8>],
    ) -> Statement {
        Statement::HeadRefreshShares {
            federation,
            hospital,
            contributor: self.contributor,
            request_id: self.request_id,
            step,
            attempt,
            state: self.state,
            shares: digest_items(shares.iter().map(Vec::as_slice)),
        }
    }
}

/// The run of contribution `request_id` a head's keyholder replays (a borrow of `held` alone,
/// so that the keyholder's other fields stay free).
fn replay_in(held: &mut Held, request_id: u64) -> anyhow::Result<&mut Replay> {
    let Held::Head { held, .. } = held else {
        bail!(NOT_A_HEAD);
    };
    held.run
        .as_deref_mut()
        .filter(|r| r.request_id == request_id)
        .with_context(|| format!("contribution {request_id} is not being trained here"))
}

const NOT_A_HEAD: &str = "asked to train, refresh or switch a head while holding a served \
                          model's key: this keyholder switches only its own evaluations of \
                          requests their requesters signed";

/// What a head's keyholder holds besides its plan.
#[derive(Default)]
pub(super) struct HeadHeld {
    /// the setup's evaluation keys (the server sends their sums)
    pub keys: Option<([u8; 32], EvaluationKeys)>,
    pub run: Option<Box<Replay>>,
    /// most examples a contribution may carry here (`--max-examples`)
    pub max_examples: u64,
}

impl Keyholder {
    fn head_held(&mut self) -> anyhow::Result<(&he_agg::train::HeadPlan, &mut HeadHeld)> {
        match &mut self.held {
            Held::Head { plan, held } => Ok((plan, held)),
            Held::Served { .. } => bail!(NOT_A_HEAD),
        }
    }

    /// Most items a run's start may carry: the collective key, the contributor's key and the
    /// chunks of the most examples this keyholder takes.
    pub fn max_start_items(&self) -> usize {
        match &self.held {
            Held::Served { .. } => 0,
            Held::Head { plan, held } => {
                let samples = plan.layout().samples() as u64;
                let chunks = held.max_examples.min(MAX_HEAD_EXAMPLES).div_ceil(samples);
                2 + (chunks * (plan.layout().groups() as u64 + 1)) as usize
            }
        }
    }

    /// A run's start (`items`: the collective public key, then the contribution as its
    /// contributor sent it): the signature checked, the chunks decoded, the first step computed.
    pub fn start_run(&mut self, req: &HeadStart, items: &[Vec<u8>]) -> anyhow::Result<()> {
        if Some(req.setup) != self.setup {
            bail!("a run under another setup's key than the one this keyholder holds");
        }
        let (federation, hospitals, threshold) = (self.federation, self.hospitals, self.threshold);
        let Some((pk_bytes, contribution)) = items.split_first() else {
            bail!("a run's start without the collective key");
        };
        if Some(*blake3::hash(pk_bytes).as_bytes()) != self.collective_key {
            return Err(Distrust(
                "a run's start under another collective public key than the one this keyholder \
                 made at setup"
                    .into(),
            )
            .into());
        }
        let signed = &req.signed;
        let c = req.contributor;
        if c == 0 || c > hospitals {
            bail!("a contribution of hospital {c}, not one of 1..={hospitals}");
        }
        let certificate = self
            .peers
            .certificate(c)
            .ok_or_else(|| Distrust(format!("no certificate of hospital {c}")))?;
        let statement = signed.statement(federation, c, contribution.iter().map(Vec::as_slice));
        self.verifier
            .verify(certificate, c, &statement, &signed.signature)
            .map_err(|e| {
                Distrust(format!(
                    "contribution {} as hospital {c} signed it, or its key, chunks or training, \
                     changed on the way: {e}",
                    signed.request_id
                ))
            })?;
        let ctx = self.ctx.clone();
        let backend = self.backend;
        let (plan, held) = self.head_held()?;
        let layout = plan.layout();
        signed
            .check(plan.fingerprint(), layout.groups(), layout.samples())
            .map_err(anyhow::Error::msg)?;
        if signed.examples > held.max_examples || signed.items() as usize != contribution.len() {
            bail!(
                "{} items for a contribution of {} examples in {} chunks (this keyholder takes \
                 at most {} examples)",
                contribution.len(),
                signed.examples,
                signed.chunks,
                held.max_examples
            );
        }
        let Some((_, keys)) = held.keys.as_ref().filter(|(s, _)| *s == req.setup) else {
            bail!("a run before this keyholder holds the setup's evaluation keys");
        };
        let pk = wire::decode_public_key(&ctx, pk_bytes).context("the collective public key")?;
        let receiver =
            wire::decode_public_key(&ctx, &contribution[0]).context("the contributor's key")?;
        let chunks = decode_chunks(plan, &signed.counts, &contribution[1..])?;
        let t = &signed.training;
        let settings = RunSettings {
            epochs: t.epochs as usize,
            batch_chunks: t.batch_chunks as usize,
            lr: t.lr,
            momentum: t.momentum,
        };
        // the zero initial state's randomness: public, the same at every party
        let seed = digest(&statement.message());
        let t0 = std::time::Instant::now();
        let mut run = HeadRun::new(
            plan.clone(),
            &pk,
            keys,
            settings,
            &seed,
            &federation.0,
            (hospitals as usize, threshold as usize),
            chunks,
        )?;
        let placed = run
            .place(backend, keys)
            .with_context(|| format!("[node] backend = \"{backend}\""))?;
        tracing::info!(replayed_on = placed, "head training replay placed");
        run.compute_step()?;
        let state = state_digest(&ctx, run.pending());
        held.run = Some(Box::new(Replay {
            contributor: c,
            request_id: signed.request_id,
            receiver,
            run,
            state,
            compute: t0.elapsed(),
        }));
        Ok(())
    }

    /// Signed refresh shares of the state this keyholder's replay reached after step
    /// `req.step`, which must be the server's (`req.state`).
    pub fn refresh(&mut self, req: &HeadRefreshRequest) -> anyhow::Result<Reply> {
        let sk = self.additive_share("refresh", req.setup, &req.active)?;
        let r = replay_in(&mut self.held, req.request_id)?;
        let (steps, done) = r.run.steps();
        if req.step != done as u64 + 1 || req.steps != steps as u64 {
            bail!(
                "asked to refresh step {} of {} where this keyholder's replay waits at step {} of \
                 {steps}",
                req.step,
                req.steps,
                done + 1
            );
        }
        if req.state != r.state || req.count as usize != r.run.pending().len() {
            return Err(Distrust(format!(
                "asked to refresh a state of step {} other than the one this keyholder computed \
                 from the signed contribution and the signed refreshes",
                req.step
            ))
            .into());
        }
        let shares = r
            .run
            .pending()
            .iter()
            .map(|ct| {
                let share = r.run.refresh().share(&sk, ct, &mut self.prng)?;
                Ok(mpw::encode_refresh_share(&self.ctx, &share))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let statement = r.statement(self.federation, self.me, req.step, req.attempt, &shares);
        Ok(Reply {
            body: Body::Head(HeadMsg::HeadRefreshShares(HeadRefreshShares {
                request: req.request,
                attempt: req.attempt,
                step: req.step,
                count: shares.len() as u32,
                state: r.state,
                signature: self.signer.sign(&statement),
            })),
            items: shares,
        })
    }

    /// Every active keyholder's signed shares of a step: checked, summed, this keyholder's own
    /// state refreshed with them, the next step computed.
    pub fn refresh_relayed(
        &mut self,
        relay: &HeadRefreshRelay,
        items: &[Vec<u8>],
    ) -> anyhow::Result<()> {
        let t = self.threshold as usize;
        let r = replay_in(&mut self.held, relay.request_id)?;
        let (_, done) = r.run.steps();
        let count = r.run.pending().len();
        if relay.step != done as u64 + 1 {
            bail!(
                "shares of step {} where this keyholder's replay waits at step {}",
                relay.step,
                done + 1
            );
        }
        let from: Vec<u32> = relay.from.iter().map(|(h, _)| *h).collect();
        let mut sorted = from.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != t
            || sorted != from
            || relay.count as usize != count
            || items.len() != t * count
        {
            bail!(
                "a relay of {} items from {from:?}; a refresh of {count} ciphertexts takes t = {t} \
                 keyholders' shares, each once, in order",
                items.len()
            );
        }
        relayed::check_signed(
            (&self.peers, &self.verifier),
            &relay.from,
            items,
            count,
            |h, shares| r.statement(self.federation, h, relay.step, relay.attempt, shares),
            (&format!(" of step {}", relay.step), " for this state"),
        )?;
        let sums = relayed::sum_shares(
            &self.ctx,
            r.run.refresh(),
            &relay.from,
            items,
            count,
            "ciphertext",
        )?;
        let t0 = std::time::Instant::now();
        r.run.finish_refresh(&sums)?;
        if !r.run.finished() {
            r.run.compute_step()?;
            r.state = state_digest(&self.ctx, r.run.pending());
        }
        r.compute += t0.elapsed();
        if r.run.finished() {
            tracing::info!(
                steps = r.run.steps().0,
                seconds = r.compute.as_secs_f64(),
                "the head is trained here: every step replayed and refreshed with the signed shares"
            );
        }
        Ok(())
    }

    /// Switching shares of the head this keyholder trained, to the key its contributor signed.
    pub fn switch(&mut self, req: &ResultSwitchRequest) -> anyhow::Result<Reply> {
        let sk = self.additive_share("switch", req.setup, &req.active)?;
        let (hospitals, t) = (self.hospitals as usize, self.threshold as usize);
        let r = replay_in(&mut self.held, req.request_id)?;
        if !r.run.finished() || req.requester != r.contributor {
            bail!(
                "asked to switch the head of contribution {} to hospital {} before its training \
                 ended here, or to another hospital than its contributor {}",
                req.request_id,
                req.requester,
                r.contributor
            );
        }
        if req.count as usize != r.run.weights().len() {
            bail!(
                "{} ciphertexts asked for a head of {}",
                req.count,
                r.run.weights().len()
            );
        }
        let pcks = r.run.plan().head_switch(hospitals, t)?;
        let shares = r
            .run
            .weights()
            .iter()
            .map(|ct| {
                let share = pcks.share(&sk, &r.receiver, ct, &mut self.prng)?;
                Ok(mpw::encode_public_key_switch_share(&self.ctx, &share))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Reply {
            body: Body::Head(HeadMsg::ResultShares(ResultSwitchShares {
                request: req.request,
                attempt: req.attempt,
                count: shares.len() as u32,
            })),
            items: shares,
        })
    }

    /// Most items a step's relay may carry: t keyholders' shares of a state with velocity.
    pub fn max_head_relay_items(&self) -> usize {
        match &self.held {
            Held::Served { .. } => 0,
            Held::Head { plan, .. } => self.threshold as usize * plan.state_len(true),
        }
    }
}
