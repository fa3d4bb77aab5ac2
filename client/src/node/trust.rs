//! What a hospital checks before it takes key material from the coordinator, which only relays:
//! every hospital's key shares signed with its certificate (chained to the consortium CA, named
//! for that hospital), this hospital's own entry as it sent it, and the collective public key
//! made here from the shares. Once stored, the setup never changes: a coordinator that later
//! hands out other keys is refused. In every round, a hospital signs its update with the seed
//! its ciphertexts' a's derive from, and a switcher checks those signatures: it makes what it switches from
//! the signed seeds, so nothing but the weighted sum of signed updates can be switched.

use he_agg::ckks::{CkksContext, wire};
use he_agg::multiparty::{Crs, PublicKeyGen, wire as mpw};
use protocol::FederationId;
use protocol::transcript::{self, Contribution, PartyKeys, Signer, Statement, Verifier};

use super::keys::PeerKeys;

/// Key material or a statement the coordinator relayed that this hospital cannot take: the node
/// stops (an operator must look), instead of reconnecting to the same coordinator.
#[derive(Debug, thiserror::Error)]
#[error("refused by this hospital's checks: {0}")]
pub struct Distrust(pub String);

/// Whether `e` is (or was caused by) a [`Distrust`].
pub fn distrusted(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<Distrust>().is_some())
}

/// This hospital, as it checks a setup.
pub struct Own {
    pub federation: FederationId,
    pub index: u32,
    pub public_key_share: Vec<u8>,
    pub exchange_key: [u8; 32],
}

/// Checks every hospital's signed key shares and makes the collective public key from them.
/// `parties` holds each of the consortium's hospitals once (the participant checked that).
pub fn check_setup(
    ctx: &std::sync::Arc<CkksContext>,
    crs: &Crs,
    verifier: &Verifier,
    own: &Own,
    parties: &[PartyKeys],
) -> Result<PeerKeys, Distrust> {
    let ckg = PublicKeyGen::new(ctx, crs);
    let mut acc = None;
    for p in parties {
        verifier
            .verify(
                &p.certificate,
                p.hospital,
                &p.statement(own.federation),
                &p.signature,
            )
            .map_err(|e| Distrust(e.to_string()))?;
        if p.hospital == own.index
            && (p.public_key_share != own.public_key_share || p.exchange_key != own.exchange_key)
        {
            return Err(Distrust(format!(
                "the setup relayed as hospital {}'s (this one) is not what it sent",
                own.index
            )));
        }
        let share = mpw::decode_public_key_share(ctx, &p.public_key_share)
            .map_err(|e| Distrust(format!("hospital {}'s public key share: {e}", p.hospital)))?;
        match acc.as_mut() {
            None => acc = Some(share),
            Some(a) => ckg
                .aggregate(a, &share)
                .map_err(|e| Distrust(format!("hospital {}'s key share: {e}", p.hospital)))?,
        }
    }
    let pk = ckg.finalize(acc.ok_or_else(|| Distrust("a setup of no hospitals".into()))?);
    Ok(PeerKeys {
        collective_public_key: wire::encode_public_key(ctx, &pk),
        exchange: parties
            .iter()
            .map(|p| (p.hospital, p.exchange_key))
            .collect(),
        certificates: parties
            .iter()
            .map(|p| (p.hospital, p.certificate.clone()))
            .collect(),
    })
}

/// Mode (a): this keyholder as it checks the inference key's round 1.
pub struct OwnInferenceShare<'a> {
    pub federation: FederationId,
    pub index: u32,
    pub hospitals: u32,
    /// fingerprint of the served plan
    pub plan: [u8; 32],
    pub public_key_share: &'a [u8],
}

/// Mode (a): every hospital's signed share of the inference key's collective public key (the
/// certificates are the ones checked at training setup), this keyholder's own as it sent it;
/// returns the BLAKE3 of the collective public key made from them, the only key it will
/// encrypt the model under.
pub fn check_inference_key(
    ctx: &std::sync::Arc<CkksContext>,
    crs: &Crs,
    verifier: &Verifier,
    peers: &PeerKeys,
    own: &OwnInferenceShare<'_>,
    key_shares: &[(u32, Vec<u8>)],
    shares: &[Vec<u8>],
) -> Result<[u8; 32], Distrust> {
    let named: Vec<u32> = key_shares.iter().map(|(h, _)| *h).collect();
    if !named.iter().copied().eq(1..=own.hospitals) || shares.len() != key_shares.len() {
        return Err(Distrust(format!(
            "inference key shares of hospitals {named:?} ({} shares) where all of 1..={} are needed",
            shares.len(),
            own.hospitals
        )));
    }
    let ckg = PublicKeyGen::new(ctx, crs);
    let mut acc = None;
    for ((h, signature), share) in key_shares.iter().zip(shares) {
        let certificate = peers
            .certificate(*h)
            .ok_or_else(|| Distrust(format!("no certificate of hospital {h} (peers.bin)")))?;
        let statement = Statement::InferenceKeyShare {
            federation: own.federation,
            hospital: *h,
            plan: own.plan,
            public_key_share: transcript::digest(share),
        };
        verifier
            .verify(certificate, *h, &statement, signature)
            .map_err(|e| Distrust(e.to_string()))?;
        if *h == own.index && share.as_slice() != own.public_key_share {
            return Err(Distrust(
                "the inference key share relayed as this hospital's is not what it sent".into(),
            ));
        }
        let share = mpw::decode_public_key_share(ctx, share)
            .map_err(|e| Distrust(format!("hospital {h}'s inference key share: {e}")))?;
        match acc.as_mut() {
            None => acc = Some(share),
            Some(a) => ckg
                .aggregate(a, &share)
                .map_err(|e| Distrust(format!("hospital {h}'s inference key share: {e}")))?,
        }
    }
    let pk = ckg.finalize(acc.ok_or_else(|| Distrust("no inference key shares".into()))?);
    Ok(*blake3::hash(&wire::encode_public_key(ctx, &pk)).as_bytes())
}

/// A setup relayed again (after a reconnect) must be the one stored.
pub fn same_setup(stored: &PeerKeys, relayed: &PeerKeys) -> Result<(), Distrust> {
    if stored == relayed {
        Ok(())
    } else {
        Err(Distrust(
            "the coordinator now relays other key material than at setup (state/peers.bin): a hospital's keys never change, so this is a substituted key".into(),
        ))
    }
}

/// This hospital's signature over its update for `round`: (federation, round, hospital,
/// weight) with the items' digest and the seed their a's derive from ([`UpdateCodec::encrypt`]).
pub fn sign_update(
    signer: &Signer,
    update: (FederationId, u64, u32, u64),
    items: &[Vec<u8>],
    a_seed: &[u8; 32],
) -> Vec<u8> {
    let (federation, round, hospital, weight) = update;
    signer.sign(&Statement::Update {
        federation,
        round,
        hospital,
        weight,
        count: items.len() as u32,
        items: transcript::digest_items(items.iter().map(Vec::as_slice)),
        a_seed: *a_seed,
    })
}

/// A switch request's contributions are each signed by their hospital (with its setup
/// certificate) for this round: the seeds a switcher makes its c1 from are the ones each
/// hospital encrypted with, so only signed updates, weighted as signed, are switched.
pub fn check_contributions(
    verifier: &Verifier,
    peers: &PeerKeys,
    (federation, round): (FederationId, u64),
    contributions: &[Contribution],
) -> Result<(), Distrust> {
    for c in contributions {
        let certificate = peers
            .certificate(c.hospital)
            .ok_or_else(|| Distrust(format!("no certificate of hospital {}", c.hospital)))?;
        verifier
            .verify(
                certificate,
                c.hospital,
                &c.statement(federation, round),
                &c.signature,
            )
            .map_err(|e| Distrust(format!("round {round}'s switch request: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "trust_tests.rs"]
mod tests;
