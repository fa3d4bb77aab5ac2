//! What a hospital checks before it takes key material from the coordinator, which only relays:
//! every hospital's key shares signed with its certificate (chained to the consortium CA, named
//! for that hospital), this hospital's own entry as it sent it, and the collective public key
//! made here from the shares. Once stored, the setup never changes: a coordinator that later
//! hands out other keys is refused. In every round, a hospital signs its update with the seed
//! its ciphertexts' a's derive from, and a switcher checks those signatures: it makes what it
//! switches from the signed seeds, so nothing but the weighted sum of signed updates can be
//! switched. In mode (a) a keyholder checks every keyholder's signed round 1 before it makes a
//! round-2 share, and every request's signature before it evaluates it.

use he_agg::ckks::{CkksContext, wire};
use he_agg::infer::threshold::CollectiveKeys;
use he_agg::multiparty::{Crs, PublicKeyGen, RelinKeyShare1, wire as mpw};
use protocol::FederationId;
use protocol::serve::collective::{CollectiveRequest, KeyholderShares};
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

/// Mode (a): this keyholder's round 1 as it signed it.
pub struct OwnInferenceShares<'a> {
    pub federation: FederationId,
    pub index: u32,
    pub hospitals: u32,
    /// fingerprint of the served plan
    pub plan: [u8; 32],
    /// digest of the final model it serves
    pub model: [u8; 32],
    pub public_key_share: &'a [u8],
    pub relinearization: &'a [u8],
    pub galois_digest: [u8; 32],
}

impl OwnInferenceShares<'_> {
    /// What it signs.
    pub fn statement(&self) -> Statement {
        Statement::InferenceKeyShare {
            federation: self.federation,
            hospital: self.index,
            plan: self.plan,
            model: self.model,
            public_key_share: transcript::digest(self.public_key_share),
            relinearization: transcript::digest(self.relinearization),
            galois: self.galois_digest,
        }
    }
}

/// What a keyholder makes itself from the relayed round 1.
#[derive(Debug)]
pub struct InferenceSums {
    /// BLAKE3 of the collective public key: the only key it takes requests under
    pub collective_key: [u8; 32],
    /// the round-1 relinearization sum its round-2 share is made on
    pub relinearization: RelinKeyShare1,
}

/// Mode (a): every keyholder's signed round-1 record (the certificates are the ones checked at
/// training setup; `items` holds each one's public-key and relinearization shares, in the
/// records' order), this keyholder's own as it sent it, the same final model everywhere; makes
/// the collective public key and the relinearization sum itself. A server that hands a keyholder
/// a sum of its own making (a constant, say) would read its secret in the round-2 share made
/// on it.
pub fn check_inference_shares(
    keys: &CollectiveKeys,
    verifier: &Verifier,
    peers: &PeerKeys,
    own: &OwnInferenceShares<'_>,
    records: &[KeyholderShares],
    items: &[Vec<u8>],
) -> Result<InferenceSums, Distrust> {
    let ctx = keys.context();
    let named: Vec<u32> = records.iter().map(|r| r.hospital).collect();
    if !named.iter().copied().eq(1..=own.hospitals) || items.len() != 2 * records.len() {
        return Err(Distrust(format!(
            "inference key shares of hospitals {named:?} ({} items) where all of 1..={} are \
             needed, two items each",
            items.len(),
            own.hospitals
        )));
    }
    let (mut pk, mut relin) = (None, None);
    for (r, pair) in records.iter().zip(items.chunks(2)) {
        let h = r.hospital;
        let certificate = peers
            .certificate(h)
            .ok_or_else(|| Distrust(format!("no certificate of hospital {h} (peers.bin)")))?;
        let statement = Statement::InferenceKeyShare {
            federation: own.federation,
            hospital: h,
            plan: own.plan,
            model: r.model,
            public_key_share: transcript::digest(&pair[0]),
            relinearization: transcript::digest(&pair[1]),
            galois: r.galois_digest,
        };
        verifier
            .verify(certificate, h, &statement, &r.signature)
            .map_err(|e| Distrust(e.to_string()))?;
        if h == own.index
            && (pair[0] != own.public_key_share
                || pair[1] != own.relinearization
                || r.galois_digest != own.galois_digest)
        {
            return Err(Distrust(
                "the inference key shares relayed as this hospital's are not what it sent".into(),
            ));
        }
        if r.model != own.model {
            return Err(Distrust(format!(
                "hospital {h} serves another final model than this one: every keyholder \
                 evaluates requests itself, so all must hold the federation's final model"
            )));
        }
        let bad =
            |what: &str, e: &dyn std::fmt::Display| Distrust(format!("hospital {h}'s {what}: {e}"));
        let p = mpw::decode_public_key_share(ctx, &pair[0])
            .map_err(|e| bad("inference key share", &e))?;
        let l = mpw::decode_relin_share1(ctx, &pair[1])
            .map_err(|e| bad("relinearization share", &e))?;
        match (pk.as_mut(), relin.as_mut()) {
            (Some(a), Some(b)) => {
                keys.aggregate_public_key(a, &p)
                    .map_err(|e| bad("inference key share", &e))?;
                keys.aggregate_relinearization(b, &l)
                    .map_err(|e| bad("relinearization share", &e))?;
            }
            _ => {
                pk = Some(p);
                relin = Some(l);
            }
        }
    }
    let (Some(pk), Some(relinearization)) = (pk, relin) else {
        return Err(Distrust("no inference key shares".into()));
    };
    let pk = keys.public_key_of(pk);
    Ok(InferenceSums {
        collective_key: *blake3::hash(&wire::encode_public_key(ctx, &pk)).as_bytes(),
        relinearization,
    })
}

/// Mode (a): a request a keyholder is asked to evaluate was signed by its requester (`items`:
/// its public key, then the images' ciphertexts), with the certificate checked at training
/// setup.
pub fn check_request(
    verifier: &Verifier,
    peers: &PeerKeys,
    federation: FederationId,
    requester: u32,
    signed: &CollectiveRequest,
    items: &[Vec<u8>],
) -> Result<(), Distrust> {
    let certificate = peers
        .certificate(requester)
        .ok_or_else(|| Distrust(format!("no certificate of hospital {requester}")))?;
    let statement = signed.statement(federation, requester, items.iter().map(Vec::as_slice));
    verifier
        .verify(certificate, requester, &statement, &signed.signature)
        .map_err(|e| {
            Distrust(format!(
                "request {} as hospital {requester} signed it, or its key or images, changed \
                 on the way: {e}",
                signed.request_id
            ))
        })
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
    signer.sign(
        &Contribution::of_items(hospital, weight, items, *a_seed).statement(federation, round),
    )
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
