//! A served plan cut into segments (a network deeper than one ring holds): between two
//! segments the t switching keyholders refresh each output collectively. Each evaluates the
//! segment itself, sends flooded refresh shares of its own output signed with its site key,
//! is relayed every active keyholder's shares, checks each signature, sums them and refreshes
//! its own output (refusing a sum outside the masks' range: a request whose noise was crafted
//! past the plan's bound), then evaluates the next segment. It refreshes nothing but what it
//! computed from the signed request, and combines nothing a keyholder of the request did not
//! sign.

use std::time::Instant;

use anyhow::{Context, bail};
use he_agg::ckks::{Ciphertext, PublicKey, SecretKey, wire};
use he_agg::infer::threshold::{served_crs, served_flooding, served_refresh};
use he_agg::multiparty::{PublicKeySwitch, Refresh, wire as mpw};
use protocol::serve::collective::{
    EvaluatedShares, MAX_COLLECTIVE_IMAGES, RefreshRelay, RefreshShares,
};
use protocol::transcript::{Statement, digest_items};
use protocol::{Body, CollectiveMsg};

use super::{Held, Keyholder, Reply, relayed};

/// Most requests a keyholder holds between two segments at once: an older one is dropped (its
/// attempt timed out at the server, or was planned again with other keyholders).
const MAX_PENDING: usize = 4;

/// A request between two segments: what the next step needs.
pub(super) struct Pending {
    pub request: u64,
    pub attempt: u32,
    pub requester: u32,
    pub request_id: u64,
    pub active: Vec<u32>,
    pub target: PublicKey,
    /// this keyholder's additive share of the collective secret for `active`
    pub sk: SecretKey,
    /// each image's output of the segment evaluated last
    pub outputs: Vec<Ciphertext>,
    /// the segment evaluated last
    pub segment: usize,
    pub evaluate_us: u64,
}

impl Keyholder {
    /// Most items a refresh relay may carry: t keyholders' shares of the most images a request
    /// holds.
    pub fn max_relay_items(&self) -> usize {
        self.threshold as usize * MAX_COLLECTIVE_IMAGES as usize
    }

    /// The refresh of a served plan's segment outputs, as every keyholder of a request makes it.
    fn served_refresh(&self, switchers: usize) -> anyhow::Result<Refresh> {
        let Held::Served { plan, result_noise } = &self.held else {
            bail!("a refresh of a served request while holding a head-training key");
        };
        let crs = served_crs(&self.federation.0);
        Ok(served_refresh(
            &self.ctx,
            plan.spec(),
            &crs,
            *result_noise,
            self.hospitals as usize,
            switchers,
        )?)
    }

    fn statement(&self, p: &Pending, hospital: u32, index: u32, items: &[Vec<u8>]) -> Statement {
        Statement::RefreshShares {
            federation: self.federation,
            hospital,
            requester: p.requester,
            request_id: p.request_id,
            request: p.request,
            attempt: p.attempt,
            index,
            shares: digest_items(items.iter().map(Vec::as_slice)),
        }
    }

    /// After a segment: the signed shares of the refresh that follows it (the request waits
    /// for the relay), or, after the last, the results and their switching shares.
    pub(super) fn advance(&mut self, p: Pending) -> anyhow::Result<Reply> {
        let Held::Served { plan, result_noise } = &self.held else {
            bail!("a served request while holding a head-training key");
        };
        let spec = plan.spec();
        let t = p.active.len();
        if p.segment + 1 == spec.segments() {
            let (flooding, _) =
                served_flooding(&self.ctx, spec, *result_noise, self.hospitals as usize, t)?;
            let pcks = PublicKeySwitch::new(&self.ctx, flooding, t);
            let mut out: Vec<Vec<u8>> = p
                .outputs
                .iter()
                .map(|r| wire::encode_ciphertext(&self.ctx, r))
                .collect();
            for r in &p.outputs {
                let share = pcks.share(&p.sk, &p.target, r, &mut self.prng)?;
                out.push(mpw::encode_public_key_switch_share(&self.ctx, &share));
            }
            return Ok(Reply {
                body: Body::Collective(CollectiveMsg::CollectiveEvaluated(EvaluatedShares {
                    request: p.request,
                    attempt: p.attempt,
                    count: p.outputs.len() as u32,
                    evaluate_us: p.evaluate_us,
                })),
                items: out,
            });
        }
        let refresh = self.served_refresh(t)?;
        let items = p
            .outputs
            .iter()
            .map(|ct| {
                let share = refresh.share(&p.sk, ct, &mut self.prng)?;
                Ok(mpw::encode_refresh_share(&self.ctx, &share))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let index = p.segment as u32;
        let signature = self
            .signer
            .sign(&self.statement(&p, self.me, index, &items));
        let body = Body::Collective(CollectiveMsg::CollectiveRefreshShares(RefreshShares {
            request: p.request,
            attempt: p.attempt,
            index,
            count: items.len() as u32,
            signature,
        }));
        // a newer attempt of the same request replaces the older; the oldest goes first
        self.pending.retain(|q| q.request != p.request);
        if self.pending.len() >= MAX_PENDING {
            self.pending.remove(0);
        }
        self.pending.push(p);
        Ok(Reply { body, items })
    }

    /// Every active keyholder's shares of refresh `relay.index`: checked (each keyholder of the
    /// request once, in its order, each signature against the CA's certificate of training
    /// setup), summed, the own outputs refreshed, the next segment evaluated.
    pub fn refresh_relay(
        &mut self,
        relay: &RefreshRelay,
        items: &[Vec<u8>],
    ) -> anyhow::Result<Reply> {
        let at = self
            .pending
            .iter()
            .position(|p| {
                p.request == relay.request
                    && p.attempt == relay.attempt
                    && p.segment == relay.index as usize
            })
            .with_context(|| {
                format!(
                    "shares of refresh {} of request {} (attempt {}), which this keyholder is not \
                     waiting for",
                    relay.index, relay.request, relay.attempt
                )
            })?;
        // checked before the request leaves the pending list: a relay that fails the checks
        // leaves it waiting for the genuine one
        let p = &self.pending[at];
        let count = p.outputs.len();
        let from: Vec<u32> = relay.from.iter().map(|(h, _)| *h).collect();
        if from != p.active || relay.count as usize != count || items.len() != from.len() * count {
            bail!(
                "a relay of {} items from {from:?} for a refresh of {count} images among {:?}",
                items.len(),
                p.active
            );
        }
        relayed::check_signed(
            (&self.peers, &self.verifier),
            &relay.from,
            items,
            count,
            |h, shares| self.statement(p, h, relay.index, shares),
            ("", ""),
        )?;
        let refresh = self.served_refresh(p.active.len())?;
        let sums = relayed::sum_shares(&self.ctx, &refresh, &relay.from, items, count, "image")?;
        let mut p = self.pending.remove(at);
        let mut inputs = Vec::with_capacity(count);
        for (i, (ct, sum)) in p.outputs.iter().zip(&sums).enumerate() {
            let fresh = refresh
                .finalize(ct, sum)
                .with_context(|| format!("refreshing image {i} of request {}", p.request_id))?;
            inputs.push(fresh);
        }
        let Some(serving) = self.serving.as_ref() else {
            bail!("a refresh before this keyholder holds the evaluation keys");
        };
        let t0 = Instant::now();
        let next = p.segment + 1;
        p.outputs = inputs
            .iter()
            .map(|ct| serving.evaluate_segment(next, std::slice::from_ref(ct)))
            .collect::<Result<_, _>>()
            .with_context(|| format!("evaluating segment {next}"))?;
        p.evaluate_us += t0.elapsed().as_micros() as u64;
        p.segment = next;
        self.advance(p)
    }
}
