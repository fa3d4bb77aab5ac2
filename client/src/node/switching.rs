//! Switching shares of a round's sum towards the consortium receiving key
//! ([`he_agg::multiparty::ReceiveSwitch::share_updates`]): carried out when the participant
//! asks, with the flooding made ahead when it says it fits. What is switched is made here from
//! the signed updates' seeds and weights: the coordinator sends nothing else.

use anyhow::Context;
use he_agg::aggregate::RoundSwitch;
use he_agg::multiparty::{FloodMask, ReceiveSwitch, UpdateSum, wire as mpw};
use he_agg::ring::Prng;
use protocol::FederationMsg;
use protocol::Link;
use protocol::link::Incoming;
use protocol::message::Body;
use protocol::transcript;
use rayon::prelude::*;
use std::time::Instant;
use tracing::{info, warn};

use super::participant::{SwitchOrder, SwitchShape};
use super::session::Node;
use super::trust;

impl Node {
    pub(super) async fn switch(
        &mut self,
        link: &Link,
        order: &SwitchOrder,
        msg: &mut Incoming,
    ) -> anyhow::Result<()> {
        let t0 = Instant::now();
        let SwitchOrder {
            round,
            attempt,
            ref active,
            weights: _,
            ref contributions,
            count,
            prepared,
        } = *order;
        let he = self
            .he
            .as_ref()
            .context("switch request in a plaintext federation")?;
        let ts = he
            .keys
            .threshold
            .as_ref()
            .context("switch request before the threshold secret")?;
        // nothing follows the request: what is switched is made here from the signed seeds
        if msg.next_item().await?.is_some() {
            anyhow::bail!("round {round}'s switch request carries items: none are expected");
        }
        let peers = he
            .keys
            .peers
            .as_ref()
            .context("switch request before setup")?;
        let receive = he
            .keys
            .receive
            .as_ref()
            .context("switch request before the consortium receiving key")?;
        if let Some(p) = &self.privacy {
            // the signed weights: a sum with fewer contributions than the privacy quorum, or one
            // counted more than once, would carry less noise than the guarantee assumes
            let signed: Vec<u64> = contributions.iter().map(|c| c.weight).collect();
            p.check_sum(&signed)
                .map_err(|e| anyhow::anyhow!("round {round}'s switch request: {e}"))?;
        }
        let checked = Instant::now();
        trust::check_contributions(&he.verifier, peers, (self.federation, round), contributions)?;
        let check_ms = checked.elapsed().as_secs_f64() * 1e3;
        // this switcher's shares of w_k·s_k for every contribution k
        let signed: Vec<(u32, u64)> = contributions
            .iter()
            .map(|c| (c.hospital, c.weight))
            .collect();
        let keys = ts.weighted_shares(&he.setup.ctx, active, &signed)?;
        // what is switched, as the coordinator reckons it: the level (a level lower where the
        // signed weights leave the room), this switcher's mask seed of each ciphertext (bound to
        // the contributions and the set), the seeds of the summed a's
        let (digests, switched) = transcript::switch_inputs(round, contributions, count as usize);
        let switch = RoundSwitch::new(&he.setup, digests, switched, active.to_vec());
        let plan = he.setup.codec.plan();
        let rescale = switch.rescaled();
        let proto = switch.switcher(&he.setup)?;
        let seeds: Vec<_> = (0..switch.count())
            .map(|k| switch.mask_seed(&he.setup, k, self.index))
            .collect();
        let a_seeds: Vec<Vec<[u8; 32]>> = (0..switch.count()).map(|k| switch.a_seeds(k)).collect();
        // flooding made ahead is used only where the participant says it fits this request
        let mut masks: Option<Vec<FloodMask>> = None;
        if let Some(handle) = self.prepared.take()
            && prepared
        {
            match handle.await {
                Ok(Ok(m)) if m.len() == count as usize => masks = Some(m),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => warn!(round, "making switching masks ahead failed: {e:#}"),
                Err(e) => warn!(round, "making switching masks ahead failed: {e}"),
            }
        }
        let prepared = masks.is_some();
        let (level, scale) = (plan.level, plan.scale);
        let receive_sk = receive.sk.clone();
        let (ctx, pool) = (he.setup.ctx.clone(), he.pool.clone());
        let shares: Vec<Vec<u8>> =
            tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Vec<u8>>> {
                pool.install(|| {
                    let masks: Vec<FloodMask> = match masks {
                        Some(m) => m,
                        None => (0..seeds.len())
                            .into_par_iter()
                            .map_init(Prng::from_os, |prng, _| -> anyhow::Result<FloodMask> {
                                let prng = prng.as_mut().map_err(|e| anyhow::anyhow!("{e}"))?;
                                Ok(proto.flood(level, prng)?)
                            })
                            .collect::<anyhow::Result<_>>()?,
                    };
                    a_seeds
                        .par_iter()
                        .zip(seeds.par_iter())
                        .zip(masks.into_par_iter())
                        .map(|((a_seeds, seed), mask)| -> anyhow::Result<Vec<u8>> {
                            let sum = UpdateSum {
                                level,
                                scale,
                                a_seeds,
                            };
                            let share = proto.share_updates(
                                &keys,
                                &receive_sk,
                                &sum,
                                seed,
                                mask,
                                rescale,
                            )?;
                            Ok(mpw::encode_key_switch_share(&ctx, &share))
                        })
                        .collect()
                })
            })
            .await??;
        let mut s = link
            .open(
                round,
                Body::Federation(FederationMsg::SwitchShares {
                    attempt,
                    count: shares.len() as u32,
                }),
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
        info!(
            round,
            attempt,
            switch_s,
            check_ms,
            prepared,
            "switching shares sent (the signed updates checked in check_ms)"
        );
        Ok(())
    }

    /// Starts making the flooding of a switch of `shape` of `count` ciphertexts on the
    /// encryption threads.
    pub(super) fn prepare_masks(&mut self, shape: &SwitchShape, count: usize) {
        self.prepared = None;
        let Some(he) = self.he.as_ref() else {
            return;
        };
        if he.keys.receive.is_none() {
            return;
        }
        let (ctx, pool, level) = (
            he.setup.ctx.clone(),
            he.pool.clone(),
            he.setup.codec.plan().level,
        );
        let flooding = he
            .setup
            .codec
            .plan()
            .flooding(&shape.weights.iter().map(|&w| w as f64).collect::<Vec<_>>());
        let parties = shape.parties;
        self.prepared = Some(tokio::task::spawn_blocking(move || {
            let proto = ReceiveSwitch::new(&ctx, flooding?, parties);
            pool.install(|| {
                (0..count)
                    .into_par_iter()
                    .map_init(Prng::from_os, |prng, _| {
                        let prng = prng.as_mut().map_err(|e| anyhow::anyhow!("{e}"))?;
                        Ok(proto.flood(level, prng)?)
                    })
                    .collect()
            })
        }));
    }
}
