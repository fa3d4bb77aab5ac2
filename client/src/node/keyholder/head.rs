//! A keyholder of head training (`client hold-keys --head`): it refreshes the head's state after
//! every training step and switches the trained head to its contributor's key. What it
//! refreshes is checked for shape only — the coordinator is trusted to run the agreed steps
//! (issue 46, item 3, is open; docs/SECURITY.md's threat model says so).

use anyhow::{Context, bail};
use he_agg::ckks::wire;
use he_agg::multiparty::wire as mpw;
use protocol::Body;
use protocol::HeadMsg;
use protocol::serve::head::{HeadRefreshRequest, ResultSwitchRequest, ResultSwitchShares};

use super::{Held, Keyholder, Reply};

impl Keyholder {
    /// Head training: refresh shares of the head's state after a step (`items`: the state's
    /// ciphertexts at the refresh level). Each refresh is logged; what is refreshed is checked
    /// for shape only — the coordinator is trusted to run the agreed steps (see docs/SECURITY.md).
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
    /// Head training: switching shares of a trained head towards its contributor's key
    /// (`items`: the contributor's public key, then the head's ciphertexts at the top level).
    /// A served model's key switches nothing but its own evaluations of signed requests
    /// ([`Keyholder::evaluate`]): such a request is refused.
    pub fn switch(
        &mut self,
        req: &ResultSwitchRequest,
        items: &[Vec<u8>],
    ) -> anyhow::Result<Reply> {
        self.switches_heads()?;
        let Held::Head { plan, .. } = &self.held else {
            bail!("not a head-training key");
        };
        let sk = self.additive_share("switch", req.setup, &req.active)?;
        let t = self.threshold as usize;
        if req.count as usize > plan.state_len(false) || items.len() != 1 + req.count as usize {
            bail!(
                "{} items for {} ciphertexts of a head of {}",
                items.len(),
                req.count,
                plan.state_len(false)
            );
        }
        let target = wire::decode_public_key(&self.ctx, &items[0])
            .context("the contributor's public key")?;
        // the trained head, at the top level after its last refresh
        let pcks = plan.head_switch(self.hospitals as usize, t)?;
        let level = plan.scales().top;
        let mut shares = Vec::with_capacity(req.count as usize);
        for (i, bytes) in items[1..].iter().enumerate() {
            let ct =
                wire::decode_ciphertext(&self.ctx, bytes).with_context(|| format!("head {i}"))?;
            if ct.level() != level {
                bail!(
                    "head ciphertext {i} at level {}, a trained head is at {level}",
                    ct.level()
                );
            }
            let share = pcks.share(&sk, &target, &ct, &mut self.prng)?;
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

    /// Whether this keyholder switches ciphertexts it is sent: only a head's keyholder does (a
    /// trained head to its contributor); a served model's switches its own evaluations alone.
    pub fn switches_heads(&self) -> anyhow::Result<()> {
        match &self.held {
            Held::Head { .. } => Ok(()),
            Held::Served { .. } => bail!(
                "asked to switch ciphertexts the server sent while holding a served model's key: \
                 this keyholder switches only its own evaluations of requests their requesters \
                 signed"
            ),
        }
    }

    /// Most ciphertexts a head-training request may carry after the key (none for a served
    /// model's key).
    pub fn max_head_items(&self) -> usize {
        match &self.held {
            Held::Served { .. } => 0,
            Held::Head { plan, .. } => plan.state_len(true),
        }
    }
}
