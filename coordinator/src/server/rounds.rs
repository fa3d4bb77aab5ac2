//! A round's streams: updates read, validated and folded into the [`Round`], the closed
//! aggregate sent for switching, switching shares folded, and the result committed and sent.

use super::*;
use protocol::FederationMsg;

impl Server {
    pub(super) fn reset_round(&self, round: u64) {
        // the plan's bound, a whole number of samples (config checks it is at least 1)
        let max_total_weight = self.cfg.he.max_total_weight.min(MAX_WEIGHT as f64) as u64;
        *lock(&self.round) = Round::new(round, now_ms(), max_total_weight);
    }

    pub(super) fn ensure_round(&self, round: u64) {
        if lock(&self.round).number() != round {
            self.reset_round(round);
        }
    }

    /// An update stream: announced, read and validated, its signature checked over the items
    /// received (encrypted federations), then folded and its signed statement kept for the
    /// switchers. `signed.items` is filled in here.
    pub(super) async fn update(
        self: &Arc<Self>,
        h: u32,
        round: u64,
        mut signed: Contribution,
        mut msg: Incoming,
    ) -> Result<(), String> {
        let (weight, count) = (signed.weight, signed.count);
        let items = lock(&self.engine).accepts_update(h, round)?;
        self.ensure_round(round);
        lock(&self.round)
            .announce(h, round, weight, count, items)
            .map_err(|e| e.to_string())?;
        // read and validate everything first: a broken upload leaves the aggregate untouched
        let read = self
            .read_update(count, &signed.a_seed, &mut msg)
            .await
            .and_then(|read| {
                // the engine again: the round may have closed while the update streamed in
                lock(&self.engine).accepts_update(h, round)?;
                Ok(read)
            });
        let read = read.and_then(|(update, bytes, digest)| {
            signed.items = digest;
            self.check_signed_update(h, round, &signed)?;
            Ok((update, bytes))
        });
        let (update, bytes) = match read {
            Ok(read) => read,
            Err(e) => {
                lock(&self.round).abandon(h, round);
                return Err(e);
            }
        };
        let batch = self.cfg.federation.hospitals as usize;
        let he = self
            .he
            .as_ref()
            .map(|he| (he, self.backend.as_ref(), batch));
        {
            let mut r = lock(&self.round);
            r.fold(h, round, he, bytes, update)
                .map_err(|e| e.to_string())?;
            r.record_contribution(signed);
        }
        self.feed(Event::UpdateFolded {
            hospital: h,
            round,
            weight,
            now: Instant::now(),
        });
        Ok(())
    }

    /// In an encrypted federation, an update must be signed by its hospital (with the certificate
    /// of its setup) over what arrived and the seed its items' a's derive from.
    fn check_signed_update(&self, h: u32, round: u64, signed: &Contribution) -> Result<(), String> {
        if self.he.is_none() {
            return Ok(());
        }
        let rec = self.store.party(h).map_err(|e| e.to_string())?;
        self.verifier
            .verify(
                &rec.certificate,
                h,
                &signed.statement(self.federation, round),
                &signed.signature,
            )
            .map_err(|e| e.to_string())
    }

    /// The `count` items of an update stream, decoded (encrypted: each with its a from
    /// `a_seed`), the bytes they took and their digest.
    async fn read_update(
        &self,
        count: u32,
        a_seed: &[u8; 32],
        msg: &mut Incoming,
    ) -> Result<(Update, u64, [u8; 32]), String> {
        let mut cts = Vec::new();
        let mut plain: Vec<Vec<f32>> = Vec::new();
        let mut bytes = 0u64;
        let mut digest = ItemsDigest::default();
        for i in 0..count {
            let item = msg
                .next_item()
                .await
                .map_err(|e| format!("item {i}: {e}"))?
                .ok_or(format!("stream ended after {i} of {count} items"))?;
            bytes += item.len() as u64;
            digest.push(&item);
            match &self.he {
                Some(he) => cts.push(he.decode_update(i as usize, &item, a_seed)?),
                None => plain.push(
                    protocol::plain::decode_f32s(&item).map_err(|e| format!("item {i}: {e}"))?,
                ),
            }
        }
        if msg.next_item().await.map_err(|e| e.to_string())?.is_some() {
            return Err(format!("more than the {count} items announced"));
        }
        let update = match &self.he {
            Some(_) => Update::Encrypted(cts),
            None => Update::Plain(plain),
        };
        Ok((update, bytes, digest.finish()))
    }

    /// Closes the aggregate (once) and streams it to every active hospital.
    pub(super) async fn request_switch(
        self: Arc<Self>,
        round: u64,
        attempt: u32,
        active: Vec<u32>,
        weights: Vec<(u32, u64)>,
    ) {
        let Some(he) = self.he.as_ref() else { return };
        let contributions = match lock(&self.round).close(round, he, attempt, &weights, &active) {
            Ok(c) => c,
            Err(e) => {
                warn!(round, "cannot ask for switching shares: {e}");
                return;
            }
        };
        let count = contributions.first().map_or(0, |c| c.count);
        let body = Body::Federation(FederationMsg::SwitchRequest {
            attempt,
            active: active.clone(),
            contributions,
            count,
        });
        for h in active {
            let Some(link) = self.link(h) else { continue };
            let body = body.clone();
            let me = self.clone();
            tokio::spawn(async move {
                let sent = async { link.open(round, body).await?.finish().await };
                match sent.await {
                    Ok(n) => lock(&me.round).add_bytes_down(n),
                    Err(e) => warn!(hospital = h, round, "switch request: {e}"),
                }
            });
        }
    }

    pub(super) async fn switch_shares(
        self: &Arc<Self>,
        h: u32,
        round: u64,
        attempt: u32,
        count: u32,
        mut msg: Incoming,
    ) -> Result<(), String> {
        let he = self
            .he
            .as_ref()
            .ok_or("switching shares in a plaintext federation")?;
        lock(&self.engine).accepts_switch_shares(h, round, attempt)?;
        let (expected, level) = {
            let r = lock(&self.round);
            (
                r.shares_expected().map_err(|e| e.to_string())?,
                r.share_level(),
            )
        };
        if count as usize != expected {
            return Err(format!(
                "{count} switching shares for an aggregate of {expected} ciphertexts"
            ));
        }
        let mut got = Vec::with_capacity(expected);
        let mut bytes = 0u64;
        for i in 0..count {
            let item = msg
                .next_item()
                .await
                .map_err(|e| format!("share {i}: {e}"))?
                .ok_or(format!("stream ended after {i} of {count} shares"))?;
            bytes += item.len() as u64;
            got.push(
                he.decode_switch_share(&item, level)
                    .map_err(|e| format!("share {i}: {e}"))?,
            );
        }
        lock(&self.engine).accepts_switch_shares(h, round, attempt)?;
        lock(&self.round)
            .fold_shares(round, he, attempt, bytes, got)
            .map_err(|e| e.to_string())?;
        self.feed(Event::SwitchSharesFolded {
            hospital: h,
            round,
            attempt,
            now: Instant::now(),
        });
        Ok(())
    }

    /// Makes the round's result, commits the round with it, then sends it to every target.
    pub(super) async fn deliver(
        self: &Arc<Self>,
        round: u64,
        targets: &[u32],
        weights: &[(u32, u64)],
        switchers: &[u32],
    ) -> anyhow::Result<()> {
        let (result, record) = lock(&self.round).result(
            round,
            self.he.as_ref(),
            weights,
            switchers,
            targets,
            now_ms(),
        )?;
        let participants = result.participants.clone();
        let phase = if round >= self.cfg.rounds() {
            Phase::Finished { rounds: round }
        } else {
            Phase::Training { committed: round }
        };
        let keep = self.cfg.federation.keep_results;
        self.store.commit_round(&record, &result, phase, keep)?;
        info!(round, participants = ?participants, "committed round {round}");
        println!("HEAL-ROUND-COMMITTED {round}");
        // the same bytes go to every hospital, concurrently
        let result = Arc::new(result);
        let mut sends = tokio::task::JoinSet::new();
        for &t in targets {
            let (me, result) = (self.clone(), result.clone());
            sends.spawn(async move {
                let _turn = me.delivery_order(t).lock_owned().await;
                if let Err(e) = me.send_result(t, &result).await {
                    warn!(hospital = t, round, "sending the result: {e:#}");
                }
            });
        }
        while sends.join_next().await.is_some() {}
        Ok(())
    }

    pub(super) async fn send_result(&self, to: u32, res: &StoredResult) -> anyhow::Result<()> {
        let link = self.link(to).context("not connected")?;
        let mut s = link
            .open(
                res.round,
                Body::Federation(FederationMsg::RoundResult {
                    total_weight: res.total_weight,
                    participants: res.participants.clone(),
                    count: res.items.len() as u32,
                }),
            )
            .await?;
        for item in &res.items {
            s.item(item).await?;
        }
        s.finish().await?;
        Ok(())
    }

    /// The committed results after round `after`, in order, to a hospital catching up.
    pub(super) async fn send_stored_results(&self, to: u32, after: u64) -> anyhow::Result<()> {
        match self.store.results_after(after)? {
            Some(results) => {
                for res in &results {
                    self.send_result(to, res).await?;
                }
                Ok(())
            }
            None => {
                self.audit(
                    Some(to),
                    lock(&self.engine).committed(),
                    "no-result",
                    &format!("the results after round {after} are no longer kept"),
                );
                Ok(())
            }
        }
    }
}
