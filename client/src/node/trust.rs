//! What a hospital checks before it takes key material from the coordinator, which only relays:
//! every hospital's key shares signed with its certificate (chained to the consortium CA, named
//! for that hospital), this hospital's own entry as it sent it, and the collective public key
//! made here from the shares. Once stored, the setup never changes: a coordinator that later
//! hands out other keys is refused. In every round, a hospital signs its update with a sketch
//! under a key only hospitals hold, and a switcher checks that the aggregate it is asked to
//! switch is the weighted sum of the signed updates it is told of.

use he_agg::aggregate::sketch;
use he_agg::ckks::{CkksContext, SecretKey, wire};
use he_agg::multiparty::{Crs, PublicKeyGen, SwitchInput, wire as mpw};
use protocol::FederationId;
use protocol::transcript::{self, Contribution, PartyKeys, Signer, Statement, Verifier};
use zeroize::Zeroizing;

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

/// The key of round `round`'s sketches: derived from the consortium receiving secret, which
/// every hospital holds and the coordinator never does.
pub fn round_seed(
    ctx: &CkksContext,
    receive_sk: &SecretKey,
    federation: FederationId,
    round: u64,
) -> [u8; 32] {
    let secret = Zeroizing::new(wire::encode_secret_key(ctx, receive_sk));
    let key = Zeroizing::new(blake3::derive_key("HEAL aggregate sketch key v1", &secret));
    let mut input = federation.0.to_vec();
    input.extend_from_slice(&round.to_le_bytes());
    *blake3::keyed_hash(&key, &input).as_bytes()
}

/// This hospital's signature over its update for `round`: (federation, round, hospital,
/// weight) with the items' digest and their sketch under the round's key
/// ([`UpdateCodec::encrypt_sketched`]).
pub fn sign_update(
    signer: &Signer,
    update: (FederationId, u64, u32, u64),
    items: &[Vec<u8>],
    sketch: &[u64],
) -> Vec<u8> {
    let (federation, round, hospital, weight) = update;
    signer.sign(&Statement::Update {
        federation,
        round,
        hospital,
        weight,
        count: items.len() as u32,
        items: transcript::digest_items(items.iter().map(Vec::as_slice)),
        sketch: sketch.to_vec(),
    })
}

/// A switch request's contributions are each signed by their hospital (with its setup
/// certificate) for this round, and the aggregate's c₁ (`inputs`, all a share reads) is their
/// weighted sum by the sketches.
pub fn check_aggregate(
    ctx: &CkksContext,
    verifier: &Verifier,
    peers: &PeerKeys,
    seed: &[u8; 32],
    (federation, round): (FederationId, u64),
    contributions: &[Contribution],
    inputs: &[SwitchInput],
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
    let level = inputs.first().map_or(0, SwitchInput::level);
    let want = sketch::combine(
        ctx,
        level,
        contributions
            .iter()
            .map(|c| (c.weight, c.sketch.as_slice())),
    );
    if want.as_deref() != Some(sketch::sketch_inputs(ctx, seed, inputs).as_slice()) {
        return Err(Distrust(format!(
            "round {round}'s aggregate is not the weighted sum of the signed updates of hospitals {:?}: refusing to switch it",
            contributions.iter().map(|c| c.hospital).collect::<Vec<_>>()
        )));
    }
    Ok(())
}

#[cfg(test)]
#[path = "trust_tests.rs"]
mod tests;
