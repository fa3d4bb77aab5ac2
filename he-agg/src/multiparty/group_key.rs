//! The consortium receiving key: one key pair that every hospital holds and the coordinator does
//! not. Aggregates are public-key-switched to it once per round, instead of once per hospital
//! (N× less switching work and traffic), and a hospital that reconnects after missing a delivery
//! can still open the stored result.
//!
//! No party chooses the key: each hospital draws a 32-byte contribution from its CSPRNG and sends
//! it sealed (with its Shamir shares) to every other hospital; the key is derived
//! deterministically from all N contributions, so every hospital computes the same pair and can
//! check that the public half the coordinator uses is that one.

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::ckks::CkksContext;
use crate::ring::{Prng, Seed};
use crate::rlwe::{KeyGenerator, PublicKey, SecretKey};

use super::error::MultipartyError;

/// Bytes of one hospital's contribution.
pub const CONTRIBUTION_LEN: usize = 32;

/// A hospital's secret contribution to the consortium receiving key (wiped on drop).
pub type Contribution = Zeroizing<[u8; CONTRIBUTION_LEN]>;

/// Draws a fresh contribution.
pub fn contribution(prng: &mut Prng) -> Contribution {
    let mut c = Zeroizing::new([0u8; CONTRIBUTION_LEN]);
    prng.fill_bytes(c.as_mut());
    c
}

/// The consortium receiving key pair, derived from every hospital's contribution. `parties`
/// must hold exactly one contribution per index of `ids` (the whole consortium); the order in
/// which they are given does not matter.
pub fn derive(
    ctx: &Arc<CkksContext>,
    federation_id: &[u8],
    ids: &[u32],
    parties: &[(u32, Contribution)],
) -> Result<(SecretKey, PublicKey), MultipartyError> {
    let mut sorted: Vec<&(u32, Contribution)> = parties.iter().collect();
    sorted.sort_by_key(|(i, _)| *i);
    let mut want: Vec<u32> = ids.to_vec();
    want.sort_unstable();
    want.dedup();
    if want.len() != ids.len() || sorted.iter().map(|(i, _)| *i).ne(want.iter().copied()) {
        return Err(MultipartyError::Shape(
            "one contribution per consortium member",
        ));
    }
    let mut h = blake3::Hasher::new_derive_key("HEAL consortium receiving key v1");
    h.update(&(federation_id.len() as u64).to_le_bytes());
    h.update(federation_id);
    h.update(ctx.fingerprint());
    for (i, c) in sorted {
        h.update(&i.to_le_bytes());
        h.update(c.as_ref());
    }
    let seed: Zeroizing<Seed> = Zeroizing::new(*h.finalize().as_bytes());
    let mut kg = KeyGenerator::from_prng(ctx.rlwe(), Prng::from_seed(&seed));
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    Ok((sk, pk))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ckks::{Parameters, wire};

    fn ctx() -> Arc<CkksContext> {
        CkksContext::new(Parameters::insecure_for_tests(10, &[60, 40, 40], &[61], 3, 40.0).unwrap())
            .unwrap()
    }

    fn contributions(prng: &mut Prng, n: u32) -> Vec<(u32, Contribution)> {
        (1..=n).map(|i| (i, contribution(prng))).collect()
    }

    fn same(a: &(u32, Contribution)) -> (u32, Contribution) {
        (a.0, Zeroizing::new(*a.1))
    }

    #[test]
    fn every_party_derives_the_same_pair_and_it_works() {
        let ctx = ctx();
        let mut prng = Prng::from_os().unwrap();
        let cs = contributions(&mut prng, 5);
        let ids: Vec<u32> = (1..=5).collect();
        let (sk, pk) = derive(&ctx, b"fed", &ids, &cs).unwrap();
        // another party receives them in another order
        let mut reordered: Vec<_> = cs.iter().rev().map(same).collect();
        reordered.swap(0, 2);
        let (sk2, pk2) = derive(&ctx, b"fed", &ids, &reordered).unwrap();
        assert_eq!(
            wire::encode_public_key(&ctx, &pk),
            wire::encode_public_key(&ctx, &pk2)
        );
        assert_eq!(
            wire::encode_secret_key(&ctx, &sk)[..],
            wire::encode_secret_key(&ctx, &sk2)[..]
        );
        // the pair is a working key pair
        let values: Vec<f64> = (0..ctx.n()).map(|i| (i as f64 * 0.37).sin()).collect();
        let level = ctx.max_level();
        let pt = ctx
            .encode_real_pairs(&values, level, ctx.default_scale())
            .unwrap();
        let ct = ctx.pk_encryptor(&pk).unwrap().encrypt(&pt);
        let back = ctx
            .decode_real_pairs(&ctx.decryptor(&sk).unwrap().decrypt(&ct))
            .unwrap();
        let err = values
            .iter()
            .zip(&back)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-5, "error {err}");
    }

    #[test]
    fn one_changed_contribution_or_federation_changes_the_key() {
        let ctx = ctx();
        let mut prng = Prng::from_os().unwrap();
        let cs = contributions(&mut prng, 3);
        let ids = [1, 2, 3];
        let pk = |fed: &[u8], cs: &[(u32, Contribution)]| {
            wire::encode_public_key(&ctx, &derive(&ctx, fed, &ids, cs).unwrap().1)
        };
        let base = pk(b"fed", &cs);
        let mut changed: Vec<_> = cs.iter().map(same).collect();
        changed[1].1[0] ^= 1;
        assert_ne!(base, pk(b"fed", &changed));
        assert_ne!(base, pk(b"other", &cs));
    }

    #[test]
    fn missing_duplicate_or_foreign_contributions_are_refused() {
        let ctx = ctx();
        let mut prng = Prng::from_os().unwrap();
        let cs = contributions(&mut prng, 3);
        let ids = [1, 2, 3];
        assert!(derive(&ctx, b"f", &ids, &cs[..2]).is_err());
        let mut dup: Vec<_> = cs.iter().map(same).collect();
        dup[2].0 = 2;
        assert!(derive(&ctx, b"f", &ids, &dup).is_err());
        let mut foreign: Vec<_> = cs.iter().map(same).collect();
        foreign[2].0 = 9;
        assert!(derive(&ctx, b"f", &ids, &foreign).is_err());
        assert!(derive(&ctx, b"f", &[1, 2, 2], &cs).is_err());
    }
}
