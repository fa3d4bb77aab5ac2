//! Setup at the hospital: its key share and exchange key to the coordinator, Shamir shares of
//! its secret (with its contribution to the consortium receiving key) sealed for each other
//! hospital, and the threshold secret formed from the shares relayed back. Carried out when the
//! participant asks; stored so a restart at any step resumes it.

use anyhow::{Context, bail};
use he_agg::multiparty::group_key::{self, CONTRIBUTION_LEN, Contribution};
use he_agg::multiparty::threshold::deal;
use he_agg::multiparty::{PublicKeyGen, ThresholdSecret, wire as mpw};
use he_agg::ring::Prng;
use protocol::FederationMsg;
use protocol::message::Body;
use protocol::transcript::{self, PartyKeys, SealedShare, Statement};
use protocol::{FederationId, Link};
use tracing::info;
use zeroize::Zeroizing;

use super::keys::{write_public, write_secret};
use super::session::{Node, NodeHe, apply_peers};
use super::trust::{self, Distrust, Own};

fn sealing_context(federation: FederationId, from: u32, to: u32) -> Vec<u8> {
    format!("HEAL setup shares v2|{federation}|{from}->{to}").into_bytes()
}

/// What one hospital deals to another in setup, sealed: a Shamir share of its secret followed by
/// its contribution to the consortium receiving key.
fn dealt_payload(share: &[u8], contribution: &Contribution) -> Zeroizing<Vec<u8>> {
    let mut p = Zeroizing::new(Vec::with_capacity(share.len() + CONTRIBUTION_LEN));
    p.extend_from_slice(share);
    p.extend_from_slice(contribution.as_ref());
    p
}

/// Splits a dealt payload into the Shamir share bytes and the contribution.
fn split_payload(p: &[u8]) -> anyhow::Result<(&[u8], Contribution)> {
    let cut = p
        .len()
        .checked_sub(CONTRIBUTION_LEN)
        .context("a dealt payload shorter than a contribution")?;
    let mut c = Zeroizing::new([0u8; CONTRIBUTION_LEN]);
    c.copy_from_slice(&p[cut..]);
    Ok((&p[..cut], c))
}

/// "Setup done" with the consortium receiving key, signed, once this node has finished setup.
fn setup_done_body(he: &NodeHe, federation: FederationId, index: u32) -> Option<Body> {
    match (&he.keys.threshold, &he.keys.receive) {
        (Some(_), Some(r)) => Some(Body::Federation(FederationMsg::SetupDone {
            receive_key: r.pk_bytes.clone(),
            signature: he.signer.sign(&Statement::ReceiveKey {
                federation,
                hospital: index,
                receive_key: transcript::digest(&r.pk_bytes),
            }),
        })),
        _ => None,
    }
}

impl Node {
    pub(super) async fn start_setup(&mut self, link: &Link) -> anyhow::Result<()> {
        let Some(he) = self.he.as_mut() else {
            return Ok(());
        };
        if let Some(body) = setup_done_body(he, self.federation, self.index) {
            link.send(0, body).await?;
            return Ok(());
        }
        let (ctx, crs) = (he.setup.ctx.clone(), he.setup.crs.clone());
        let share = &he.keys.share;
        let exchange = he.keys.exchange.public();
        let public_key_share = he.keys.key_shares_message(|| {
            let mut prng = Prng::from_os()?;
            let pk_share = PublicKeyGen::new(&ctx, &crs).share(share, &mut prng)?;
            Ok(mpw::encode_public_key_share(&ctx, &pk_share))
        })?;
        let signature = he.signer.sign(&Statement::KeyShares {
            federation: self.federation,
            hospital: self.index,
            public_key_share: transcript::digest(&public_key_share),
            exchange_key: exchange,
        });
        link.send(
            0,
            Body::Federation(FederationMsg::KeyShares {
                public_key_share,
                exchange_key: exchange,
                certificate: he.signer.certificate().to_vec(),
                signature,
            }),
        )
        .await?;
        info!("sent signed key shares");
        // after a restart between dealing and the relay, send the same sealed shares again
        if let Some(sealed) = super::keys::read(&self.dirs.state.join("dealt.bin"))? {
            let sealed: Vec<SealedShare> =
                postcard::from_bytes(&sealed).context("dealt.bin is corrupt")?;
            link.send(0, Body::Federation(FederationMsg::ShamirShares { sealed }))
                .await?;
        }
        Ok(())
    }

    /// Checks the relayed setup (every signature, this hospital's own entry), makes the
    /// collective public key, stores it, then deals.
    pub(super) async fn setup_keys(
        &mut self,
        link: &Link,
        parties: &[PartyKeys],
    ) -> anyhow::Result<()> {
        let Some(he) = self.he.as_mut() else {
            bail!("setup keys in a plaintext federation")
        };
        let own_share = super::keys::read(&self.dirs.state.join("public_key_share.bin"))?
            .context("setup keys before this hospital sent its key shares")?;
        let own = Own {
            federation: self.federation,
            index: self.index,
            public_key_share: own_share,
            exchange_key: he.keys.exchange.public(),
        };
        let (ctx, crs, verifier) = (
            he.setup.ctx.clone(),
            he.setup.crs.clone(),
            he.verifier.clone(),
        );
        let parties = parties.to_vec();
        // N signatures and N key shares: off the runtime
        let peers = tokio::task::spawn_blocking(move || {
            trust::check_setup(&ctx, &crs, &verifier, &own, &parties)
        })
        .await??;
        if let Some(stored) = &he.keys.peers {
            trust::same_setup(stored, &peers)?;
        } else {
            apply_peers(he, &peers)?;
            he.keys.save_peers(peers.clone())?;
            info!(
                "checked the signed key shares of {} hospitals and made the collective key",
                peers.exchange.len()
            );
        }
        if he.keys.threshold.is_some() || self.dirs.state.join("dealt.bin").exists() {
            return Ok(());
        }
        let n = self.cfg.site.hospitals;
        let ids: Vec<u32> = (1..=n).collect();
        let mut prng = Prng::from_os()?;
        let shares = deal(
            &he.setup.ctx,
            &he.keys.share,
            self.index,
            &ids,
            self.cfg.site.threshold as usize,
            &mut prng,
        )?;
        // the same contribution to the receiving key goes to every hospital
        let contribution = group_key::contribution(&mut prng);
        let mut sealed: Vec<SealedShare> = Vec::new();
        for s in &shares {
            let payload = dealt_payload(&mpw::encode_shamir_share(&he.setup.ctx, s), &contribution);
            if s.to() == self.index {
                write_secret(&self.dirs.state.join("own-share.bin"), &payload)?;
                continue;
            }
            let receiver = peers
                .exchange
                .iter()
                .find(|(h, _)| *h == s.to())
                .map(|(_, k)| *k)
                .with_context(|| format!("no exchange key for hospital {}", s.to()))?;
            let bytes = he.keys.exchange.seal(
                &receiver,
                &sealing_context(self.federation, self.index, s.to()),
                &payload,
                &mut prng,
            )?;
            let signature = he.signer.sign(&Statement::Dealt {
                federation: self.federation,
                from: self.index,
                to: s.to(),
                sealed: transcript::digest(&bytes),
            });
            sealed.push(SealedShare {
                peer: s.to(),
                sealed: bytes,
                signature,
            });
        }
        write_public(
            &self.dirs.state.join("dealt.bin"),
            &postcard::to_allocvec(&sealed)?,
        )?;
        link.send(0, Body::Federation(FederationMsg::ShamirShares { sealed }))
            .await?;
        info!("dealt sealed Shamir shares to {} hospitals", n - 1);
        Ok(())
    }

    pub(super) async fn relayed_shares(
        &mut self,
        link: &Link,
        sealed: Vec<SealedShare>,
    ) -> anyhow::Result<()> {
        let Some(he) = self.he.as_mut() else {
            bail!("shares in a plaintext federation")
        };
        if let Some(body) = setup_done_body(he, self.federation, self.index) {
            link.send(0, body).await?;
            return Ok(());
        }
        let peers = he
            .keys
            .peers
            .clone()
            .context("relayed shares before the setup keys")?;
        let own = Zeroizing::new(
            super::keys::read(&self.dirs.state.join("own-share.bin"))?
                .context("relayed shares before dealing")?,
        );
        let (own_share, own_contribution) = split_payload(&own).context("own-share.bin")?;
        let mut shares =
            vec![mpw::decode_shamir_share(&he.setup.ctx, own_share).context("own-share.bin")?];
        let mut contributions = vec![(self.index, own_contribution)];
        for SealedShare {
            peer: from,
            sealed: bytes,
            signature,
        } in &sealed
        {
            let certificate = peers
                .certificate(*from)
                .with_context(|| format!("no certificate for hospital {from}"))?;
            let statement = Statement::Dealt {
                federation: self.federation,
                from: *from,
                to: self.index,
                sealed: transcript::digest(bytes),
            };
            he.verifier
                .verify(certificate, *from, &statement, signature)
                .map_err(|e| Distrust(format!("the share relayed as hospital {from}'s: {e}")))?;
            let sender = peers
                .exchange
                .iter()
                .find(|(h, _)| h == from)
                .map(|(_, k)| *k)
                .with_context(|| format!("no exchange key for hospital {from}"))?;
            let opened = Zeroizing::new(
                he.keys
                    .exchange
                    .open(
                        &sender,
                        &sealing_context(self.federation, *from, self.index),
                        bytes,
                    )
                    .with_context(|| format!("the share from hospital {from} does not open"))?,
            );
            let (share_bytes, contribution) = split_payload(&opened)
                .with_context(|| format!("the share from hospital {from}"))?;
            let share = mpw::decode_shamir_share(&he.setup.ctx, share_bytes)
                .with_context(|| format!("the share from hospital {from}"))?;
            if share.from() != *from || share.to() != self.index {
                bail!(
                    "hospital {from} sent a share labelled {} -> {}",
                    share.from(),
                    share.to()
                );
            }
            shares.push(share);
            contributions.push((*from, contribution));
        }
        let ids: Vec<u32> = (1..=self.cfg.site.hospitals).collect();
        let ts = ThresholdSecret::combine(
            &he.setup.ctx,
            self.index,
            self.cfg.site.threshold as usize,
            &ids,
            &shares,
        )?;
        let (rsk, rpk) = group_key::derive(&he.setup.ctx, &self.federation.0, &ids, &contributions)
            .context("deriving the consortium receiving key")?;
        he.keys.save_setup(&he.setup.ctx, ts, rsk, rpk)?;
        link.send(
            0,
            setup_done_body(he, self.federation, self.index).context("setup was just stored")?,
        )
        .await?;
        info!(
            "threshold secret formed ({} of {})",
            self.cfg.site.threshold, self.cfg.site.hospitals
        );
        Ok(())
    }
}
