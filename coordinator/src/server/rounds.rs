//! A round's streams: updates and switching shares read, decoded and handed to the
//! [`Federation`], the switch request sent, and the result committed and sent.

use super::*;
use protocol::FederationMsg;

/// What a hospital's update message says before its items: what it signed besides the items'
/// digest, which is taken as they arrive.
pub(super) struct UpdateHeader {
    pub weight: u64,
    pub count: u32,
    pub a_seed: [u8; 32],
    pub signature: Vec<u8>,
}

impl Server {
    /// An update stream: announced to the federation, read and decoded, its signature checked
    /// over the items received (encrypted federations), then handed over whole.
    pub(super) async fn update(
        self: &Arc<Self>,
        h: u32,
        round: u64,
        header: UpdateHeader,
        mut msg: Incoming,
    ) -> Result<(), String> {
        lock(&self.federation_state).announce_update(
            h,
            round,
            header.weight,
            header.count,
            now_ms(),
        )?;
        // read and validate everything first: a broken upload leaves the aggregate untouched
        let read = self
            .read_update(header.count, &header.a_seed, &mut msg)
            .await
            .and_then(|(update, bytes, digest)| {
                let signed =
                    Contribution::new(h, header.weight, header.count, digest, header.a_seed)
                        .signed(header.signature);
                self.check_signed_update(h, round, &signed)?;
                Ok((signed, update, bytes))
            });
        match read {
            Ok((signed, update, bytes)) => {
                let handed = self.with_federation(|f| {
                    f.update_read(Instant::now(), now_ms(), round, signed, update, bytes)
                });
                crate::crash_point::reached("update", round);
                handed
            }
            Err(e) => {
                lock(&self.federation_state).abandon_update(h, round);
                Err(e)
            }
        }
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
                Some(he) => cts.push(
                    he.decode_update(i as usize, &item, a_seed)
                        .map_err(|e| e.to_string())?,
                ),
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

    /// Sends the switch request to every active hospital, concurrently.
    pub(super) fn request_switch(
        self: &Arc<Self>,
        round: u64,
        attempt: u32,
        active: Vec<u32>,
        contributions: Vec<Contribution>,
        count: u32,
    ) {
        crate::crash_point::reached("switch-request", round);
        // before any switcher can switch this sum: a restart redoes the round over exactly it
        let sum: Vec<(u32, u64)> = contributions
            .iter()
            .map(|c| (c.hospital, c.weight))
            .collect();
        if let Err(e) = self.store.set_switch_set(round, &sum) {
            let why = format!(
                "round {round} cannot be committed: its switch cannot be recorded: {e}. Free the \
                 space or mend the disk under {}, and start the coordinator again: it redoes \
                 round {round}",
                self.store_path.display()
            );
            tracing::error!("{why}");
            self.stop(why);
            return;
        }
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
                    Ok(n) => lock(&me.federation_state).add_bytes_down(round, n),
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
        let level = lock(&self.federation_state).announce_shares(h, round, attempt, count)?;
        let mut got = Vec::with_capacity(count as usize);
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
        crate::crash_point::reached("share", round);
        self.with_federation(|f| {
            f.shares_read(Instant::now(), now_ms(), h, (round, attempt), got, bytes)
        })
    }

    /// Commits a round with its result (the store's phase then `phase`), then sends the
    /// result to every target.
    pub(super) async fn deliver(
        self: &Arc<Self>,
        phase: Phase,
        record: &RoundRecord,
        result: StoredResult,
        targets: &[u32],
    ) -> anyhow::Result<()> {
        let round = record.round;
        let keep = self.cfg.federation.keep_results;
        crate::crash_point::reached("commit", round);
        self.store.commit_round(record, &result, phase, keep)?;
        info!(round, participants = ?result.participants, "committed round {round}");
        println!("HEAL-ROUND-COMMITTED {round}");
        crate::crash_point::reached("deliver", round);
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
                    lock(&self.federation_state).committed(),
                    "no-result",
                    &format!("the results after round {after} are no longer kept"),
                );
                Ok(())
            }
        }
    }
}
