//! Setup as the coordinator relays it: key shares stored and, when all are in, the collective
//! public key and the exchange keys sent to every hospital; sealed Shamir shares relayed to
//! their receivers; "setup done" with each hospital's receiving key recorded.

use super::*;
use protocol::FederationMsg;
use protocol::transcript::{self, Statement};

impl Server {
    /// A hospital's signed key shares: its own certificate (the connection's) and signature,
    /// checked here so a forged share is refused at once, and checked again by every hospital.
    pub(super) fn key_shares(self: &Arc<Self>, h: u32, keys: PartyKeys) -> Result<(), String> {
        let he = self
            .he
            .as_ref()
            .ok_or("key shares in a plaintext federation")?;
        shares::decode_public_key_share(&he.ctx, &keys.public_key_share)
            .map_err(|e| format!("public key share: {e}"))?;
        if keys.exchange_key == [0u8; 32] {
            return Err("all-zero exchange key".into());
        }
        let fingerprint = protocol::identity::cert_fingerprint(&keys.certificate);
        if self.roster.get(&fingerprint) != Some(&Party::Hospital(h)) {
            return Err("the certificate in the key shares is not this connection's".into());
        }
        self.verifier
            .verify(
                &keys.certificate,
                h,
                &keys.statement(self.federation),
                &keys.signature,
            )
            .map_err(|e| e.to_string())?;
        let mut rec = self.store.party(h).map_err(|e| e.to_string())?;
        if rec.public_key_share.is_some()
            && (rec.public_key_share.as_deref() != Some(&keys.public_key_share[..])
                || rec.exchange_key != Some(keys.exchange_key))
        {
            return Err(
                "key shares sent again with other keys; a hospital's keys never change".into(),
            );
        }
        if rec.public_key_share.is_none() {
            rec.public_key_share = Some(keys.public_key_share);
            rec.exchange_key = Some(keys.exchange_key);
            rec.certificate = keys.certificate;
            rec.key_signature = keys.signature;
            self.store.put_party(h, &rec).map_err(|e| e.to_string())?;
        }
        self.feed(Event::KeySharesStored { hospital: h });
        Ok(())
    }

    /// Every hospital's signed key shares; the collective public key is made once from them and
    /// stored (for `status`), but every hospital makes it itself.
    pub(super) fn setup_keys(&self) -> anyhow::Result<Body> {
        let he = self.he.as_ref().context("plaintext federation")?;
        let parties = self.store.parties()?;
        if self.store.collective_public_key()?.is_none() {
            {
                let ckg = PublicKeyGen::new(&he.ctx, &he.crs);
                let mut acc = None;
                for (_, rec) in &parties {
                    let bytes = rec
                        .public_key_share
                        .as_ref()
                        .context("a key share is missing")?;
                    let share = shares::decode_public_key_share(&he.ctx, bytes)?;
                    match acc.as_mut() {
                        None => acc = Some(share),
                        Some(a) => ckg.aggregate(a, &share)?,
                    }
                }
                let pk = ckg.finalize(acc.context("no key shares")?);
                let bytes = wire::encode_public_key(&he.ctx, &pk);
                self.store.set_collective_public_key(&bytes)?;
                self.audit(
                    None,
                    0,
                    "collective-key",
                    &format!("from the shares of {} hospitals", parties.len()),
                );
            }
        }
        let parties = parties
            .into_iter()
            .map(|(h, r)| {
                Ok(PartyKeys {
                    hospital: h,
                    public_key_share: r.public_key_share.context("a key share is missing")?,
                    exchange_key: r.exchange_key.context("an exchange key is missing")?,
                    certificate: r.certificate,
                    signature: r.key_signature,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Body::Federation(FederationMsg::SetupKeys { parties }))
    }

    pub(super) fn shamir_shares(
        self: &Arc<Self>,
        h: u32,
        sealed: Vec<SealedShare>,
    ) -> Result<(), String> {
        let he = self
            .he
            .as_ref()
            .ok_or("Shamir shares in a plaintext federation")?;
        let n = self.cfg.federation.hospitals;
        let expected: BTreeSet<u32> = (1..=n).filter(|&j| j != h).collect();
        let got: BTreeSet<u32> = sealed.iter().map(|s| s.peer).collect();
        if got != expected || sealed.len() != expected.len() {
            return Err(format!(
                "sealed shares for {got:?}, expected exactly one for each of {expected:?}"
            ));
        }
        // the coordinator cannot open them, but can check their size: a Shamir share and a
        // contribution to the consortium receiving key
        let size = shares::shamir_share_len(&he.ctx)
            + he_agg::multiparty::group_key::CONTRIBUTION_LEN
            + he_agg::multiparty::sealed::SEAL_OVERHEAD;
        if let Some(s) = sealed.iter().find(|s| s.sealed.len() != size) {
            return Err(format!(
                "sealed share for {} has {} bytes, expected {size}",
                s.peer,
                s.sealed.len()
            ));
        }
        let rec = self.store.party(h).map_err(|e| e.to_string())?;
        if rec.dealt {
            return Err("shares dealt twice".into());
        }
        if rec.public_key_share.is_none() {
            return Err("shares dealt before the key shares".into());
        }
        for s in &sealed {
            let statement = Statement::Dealt {
                federation: self.federation,
                from: h,
                to: s.peer,
                sealed: transcript::digest(&s.sealed),
            };
            self.verifier
                .verify(&rec.certificate, h, &statement, &s.signature)
                .map_err(|e| format!("the share dealt to hospital {}: {e}", s.peer))?;
        }
        self.store
            .put_shamir(h, &sealed)
            .map_err(|e| e.to_string())?;
        self.feed(Event::SharesDealt { hospital: h });
        Ok(())
    }

    /// A hospital formed its threshold secret and derived the consortium receiving key: the
    /// first report fixes the key, every later one must match it (a hospital that dealt
    /// different contributions to different peers shows up here).
    pub(super) fn setup_done(
        self: &Arc<Self>,
        h: u32,
        receive_key: &[u8],
        signature: &[u8],
    ) -> Result<(), String> {
        let mut rec: PartyRecord = self.store.party(h).map_err(|e| e.to_string())?;
        if rec.public_key_share.is_none() {
            return Err("setup done before sending key shares".into());
        }
        let statement = Statement::ReceiveKey {
            federation: self.federation,
            hospital: h,
            receive_key: transcript::digest(receive_key),
        };
        self.verifier
            .verify(&rec.certificate, h, &statement, signature)
            .map_err(|e| e.to_string())?;
        if let Some(he) = self.he.as_ref() {
            wire::decode_public_key(&he.ctx, receive_key)
                .map_err(|e| format!("consortium receiving key: {e}"))?;
            match self.store.receive_key().map_err(|e| e.to_string())? {
                Some(k) if k != receive_key => {
                    self.audit(
                        Some(h),
                        0,
                        "receive-key-mismatch",
                        "derived another consortium receiving key than the others",
                    );
                    return Err("your consortium receiving key differs from the other hospitals': a hospital dealt inconsistent contributions; setup cannot complete".into());
                }
                Some(_) => {}
                None => self
                    .store
                    .set_receive_key(receive_key)
                    .map_err(|e| e.to_string())?,
            }
        }
        rec.setup_done = true;
        self.store.put_party(h, &rec).map_err(|e| e.to_string())?;
        self.feed(Event::SetupDone {
            hospital: h,
            now: Instant::now(),
        });
        Ok(())
    }
}
