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
use protocol::HeadMsg;
use protocol::serve::head::{
    HeadRefreshRelay, HeadRefreshRequest, HeadRefreshShares, HeadStart, MAX_HEAD_EXAMPLES,
    ResultSwitchRequest, ResultSwitchShares,
};
use protocol::transcript::{Statement, digest, digest_items};

use super::{Held, Keyholder, Reply};
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

/// What a head's keyholder holds besides its plan.
#[derive(Default)]
pub(super) struct HeadHeld {
    /// the setup's evaluation keys (the server sends their sums)
    pub keys: Option<([u8; 32], EvaluationKeys)>,
    pub run: Option<Box<Replay>>,
    /// refreshes made for this setup (each logged)
    pub refreshes: u64,
    /// most examples a contribution may carry here (`--max-examples`)
    pub max_examples: u64,
}

impl Keyholder {
    fn head_held(&mut self) -> anyhow::Result<(&he_agg::train::HeadPlan, &mut HeadHeld)> {
        match &mut self.held {
            Held::Head { plan, held } => Ok((plan, held)),
            Held::Served { .. } => bail!(
                "asked to train, refresh or switch a head while holding a served model's key: \
                 this keyholder switches only its own evaluations of requests their requesters \
                 signed"
            ),
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

    fn replay(&mut self, request_id: u64) -> anyhow::Result<&mut Replay> {
        let (_, held) = self.head_held()?;
        held.run
            .as_deref_mut()
            .filter(|r| r.request_id == request_id)
            .with_context(|| format!("contribution {request_id} is not being trained here"))
    }

    /// What a keyholder signs of its shares of a step of `r`.
    fn refresh_statement(
        &self,
        r: (u32, u64, [u8; 32]),
        hospital: u32,
        step: u64,
        attempt: u32,
        items: &[Vec<u8>],
    ) -> Statement {
        let (contributor, request_id, state) = r;
        Statement::HeadRefreshShares {
            federation: self.federation,
            hospital,
            contributor,
            request_id,
            step,
            attempt,
            state,
            shares: digest_items(items.iter().map(Vec::as_slice)),
        }
    }

    /// Signed refresh shares of the state this keyholder's replay reached after step
    /// `req.step`, which must be the server's (`req.state`).
    pub fn refresh(&mut self, req: &HeadRefreshRequest) -> anyhow::Result<Reply> {
        let sk = self.additive_share("refresh", req.setup, &req.active)?;
        let me = self.me;
        let r = self.replay(req.request_id)?;
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
        let refresh = r.run.refresh().clone();
        let pending = r.run.pending().to_vec();
        let mut shares = Vec::with_capacity(pending.len());
        for ct in &pending {
            let share = refresh.share(&sk, ct, &mut self.prng)?;
            shares.push(mpw::encode_refresh_share(&self.ctx, &share));
        }
        let r = self.replay(req.request_id)?;
        let (named, state) = ((r.contributor, r.request_id, r.state), r.state);
        let statement = self.refresh_statement(named, me, req.step, req.attempt, &shares);
        let count = shares.len() as u32;
        let signature = self.signer.sign(&statement);
        self.head_held()?.1.refreshes += u64::from(count);
        Ok(Reply {
            body: Body::Head(HeadMsg::HeadRefreshShares(HeadRefreshShares {
                request: req.request,
                attempt: req.attempt,
                step: req.step,
                count,
                state,
                signature,
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
        let r = self.replay(relay.request_id)?;
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
        let named = (r.contributor, r.request_id, r.state);
        for ((h, signature), shares) in relay.from.iter().zip(items.chunks(count)) {
            let certificate = self
                .peers
                .certificate(*h)
                .ok_or_else(|| Distrust(format!("no certificate of hospital {h}")))?;
            let statement = self.refresh_statement(named, *h, relay.step, relay.attempt, shares);
            self.verifier
                .verify(certificate, *h, &statement, signature)
                .map_err(|e| {
                    Distrust(format!(
                        "refresh shares of step {} relayed as hospital {h}'s that it did not sign \
                         for this state: {e}",
                        relay.step
                    ))
                })?;
        }
        let ctx = self.ctx.clone();
        let r = self.replay(relay.request_id)?;
        let refresh = r.run.refresh().clone();
        let mut sums = Vec::with_capacity(count);
        for i in 0..count {
            let mut sum = None;
            for (k, h) in from.iter().enumerate() {
                let share = mpw::decode_refresh_share(&ctx, &items[k * count + i])
                    .with_context(|| format!("hospital {h}'s share of ciphertext {i}"))?;
                match sum.as_mut() {
                    None => sum = Some(share),
                    Some(acc) => refresh.aggregate(acc, &share)?,
                }
            }
            sums.push(sum.context("no shares")?);
        }
        let t0 = std::time::Instant::now();
        r.run.finish_refresh(&sums)?;
        if !r.run.finished() {
            r.run.compute_step()?;
            r.state = state_digest(&ctx, r.run.pending());
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
        let r = self.replay(req.request_id)?;
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
        let (weights, receiver) = (r.run.weights().to_vec(), r.receiver.clone());
        let mut shares = Vec::with_capacity(weights.len());
        for ct in &weights {
            let share = pcks.share(&sk, &receiver, ct, &mut self.prng)?;
            shares.push(mpw::encode_public_key_switch_share(&self.ctx, &share));
        }
        Ok(Reply {
            body: Body::Head(HeadMsg::ResultShares(ResultSwitchShares {
                request: req.request,
                attempt: req.attempt,
                count: shares.len() as u32,
            })),
            items: shares,
        })
    }
}

impl Keyholder {
    /// Most items a step's relay may carry: t keyholders' shares of a state with velocity.
    pub fn max_head_relay_items(&self) -> usize {
        match &self.held {
            Held::Served { .. } => 0,
            Held::Head { plan, .. } => self.threshold as usize * plan.state_len(true),
        }
    }
}
