//! A served plan cut into segments: between two segments each switching keyholder sends its
//! signed refresh shares of the output it computed, and once all t of the attempt have, the
//! service relays every one's shares and signature to each ([`RefreshRelay`]). It checks the
//! shares' shape so that a malformed one stops here, attributed; it cannot make or change one
//! (each keyholder checks every signature and sums the shares itself).

use std::collections::BTreeMap;

use he_agg::multiparty::wire as mpw;
use protocol::serve::collective::{RefreshRelay, RefreshShares};
use protocol::{Body, CollectiveMsg};

use super::service::Service;

/// The refresh of one request whose shares are being gathered.
pub(crate) struct RefreshRound {
    attempt: u32,
    index: u32,
    /// whether every keyholder's shares were relayed
    relayed: bool,
    /// each keyholder's signature and shares (one per image)
    shares: BTreeMap<u32, (Vec<u8>, Vec<Vec<u8>>)>,
}

impl Service {
    /// Whether a keyholder's refresh shares may be read: one of the current attempt's
    /// keyholders, a refresh the plan has, one share per image.
    pub(super) fn admit_refresh(&self, hospital: u32, h: &RefreshShares) -> Result<usize, String> {
        self.engine.accepts_shares(hospital, h.request, h.attempt)?;
        let r = self
            .requests
            .get(&h.request)
            .filter(|r| r.signed.is_some())
            .ok_or("refresh shares for an unknown request")?;
        let refreshes = self
            .keys
            .compiled()
            .and_then(|c| c.served())
            .map_or(0, |p| p.spec().refreshes().len());
        if h.index as usize >= refreshes {
            return Err(format!(
                "refresh {} of a plan with {refreshes} refreshes",
                h.index
            ));
        }
        if h.count as usize != r.switch.count() {
            return Err(format!(
                "{} refresh shares for a request of {} images",
                h.count,
                r.switch.count()
            ));
        }
        Ok(r.switch.count())
    }

    /// A keyholder's shares of one refresh: checked (each decodes at the refresh's level),
    /// gathered, and relayed to every keyholder of the attempt once all have sent theirs.
    pub(super) fn refresh_shares(
        &mut self,
        hospital: u32,
        h: RefreshShares,
        items: Vec<Vec<u8>>,
    ) -> Result<(), String> {
        self.admit_refresh(hospital, &h)?;
        let (ctx, level) = {
            let c = self.keys.compiled().ok_or("the keys are not made yet")?;
            let plan = c.served().ok_or("no served plan")?;
            (
                c.ctx.clone(),
                plan.spec().refreshes()[h.index as usize].level,
            )
        };
        for (i, bytes) in items.iter().enumerate() {
            let share = mpw::decode_refresh_share(&ctx, bytes)
                .map_err(|e| format!("refresh share {i}: {e}"))?;
            if share.level() != level {
                return Err(format!(
                    "refresh share {i} at level {}; refresh {} is at level {level}",
                    share.level(),
                    h.index
                ));
            }
        }
        let (attempt, active) = self
            .engine
            .active(h.request)
            .map(|(a, act)| (a, act.to_vec()))
            .ok_or("refresh shares for an unknown request")?;
        let r = self
            .requests
            .get_mut(&h.request)
            .ok_or("refresh shares for an unknown request")?;
        let round = match r.refresh.take() {
            // the refresh being gathered
            Some(g) if g.attempt == h.attempt && g.index == h.index && !g.relayed => g,
            Some(g)
                if g.attempt == h.attempt
                    && (g.index > h.index || (g.index == h.index && g.relayed)) =>
            {
                r.refresh = Some(g);
                return Err(format!("shares of refresh {}, which is done", h.index));
            }
            // the first shares of a later refresh, or of a new attempt
            _ => RefreshRound {
                attempt: h.attempt,
                index: h.index,
                relayed: false,
                shares: BTreeMap::new(),
            },
        };
        let mut round = round;
        if round.shares.contains_key(&hospital) {
            r.refresh = Some(round);
            return Err(format!("shares of refresh {} sent twice", h.index));
        }
        round.shares.insert(hospital, (h.signature, items));
        if attempt != round.attempt || !active.iter().all(|a| round.shares.contains_key(a)) {
            r.refresh = Some(round);
            return Ok(());
        }
        // every keyholder of the attempt has sent its shares: each gets all of them
        let count = r.switch.count() as u32;
        let mut from = Vec::with_capacity(active.len());
        let mut relayed = Vec::with_capacity(active.len() * count as usize);
        for a in &active {
            if let Some((signature, shares)) = round.shares.remove(a) {
                from.push((*a, signature));
                relayed.extend(shares);
            }
        }
        tracing::info!(
            request = h.request,
            attempt,
            refresh = h.index,
            "refresh shares relayed to the keyholders"
        );
        round.relayed = true;
        r.refresh = Some(round);
        let body = Body::Collective(CollectiveMsg::CollectiveRefreshRelay(RefreshRelay {
            request: h.request,
            attempt,
            index: h.index,
            count,
            from,
        }));
        for a in active {
            self.send_keyholder(a, body.clone(), relayed.clone());
        }
        Ok(())
    }
}
