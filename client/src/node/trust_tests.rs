//! The switcher's check of an aggregate, with real kits, real encryptions and a real sum.

use super::*;
use he_agg::aggregate::{AggregationPlan, Aggregator, CpuBackend, HeSettings, Shape, UpdateCodec};
use he_agg::ckks::{Ciphertext, Parameters, Preset};
use he_agg::multiparty::{Crs, PublicKeyGen, wire as mpw};
use protocol::identity::hospital_dns_name;
use protocol::pki::Ca;
use protocol::tls::TlsFiles;

const FED: FederationId = FederationId([9; 16]);
const ROUND: u64 = 6;

struct World {
    codec: UpdateCodec,
    verifier: Verifier,
    peers: PeerKeys,
    seed: [u8; 32],
    contributions: Vec<Contribution>,
    updates: Vec<Vec<Vec<u8>>>,
    _dir: tempfile::TempDir,
}

/// Kits of one CA for hospitals 1..=3 under `dir`: their signers and a verifier.
fn kits(dir: &std::path::Path) -> (Vec<Signer>, Verifier) {
    let ca = Ca::new("consortium").unwrap();
    let signers: Vec<Signer> = (1..=3)
        .map(|h| {
            let issued = ca.issue(&hospital_dns_name(h)).unwrap();
            let kit = dir.join(format!("h{h}"));
            std::fs::create_dir_all(&kit).unwrap();
            std::fs::write(kit.join("ca.pem"), ca.cert_pem()).unwrap();
            std::fs::write(kit.join("cert.pem"), &issued.cert_pem).unwrap();
            std::fs::write(kit.join("key.pem"), &issued.key_pem).unwrap();
            Signer::from_files(&TlsFiles::in_dir(&kit)).unwrap()
        })
        .collect();
    let verifier = Verifier::from_files(&TlsFiles::in_dir(&dir.join("h1"))).unwrap();
    (signers, verifier)
}

fn peers_of(signers: &[Signer]) -> PeerKeys {
    PeerKeys {
        collective_public_key: vec![],
        exchange: vec![],
        certificates: (1..)
            .zip(signers)
            .map(|(h, s)| (h, s.certificate().to_vec()))
            .collect(),
    }
}

/// Three hospitals with kits of one CA, each with a signed encrypted update of its own weight.
fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let (signers, verifier) = kits(dir.path());
    let ctx = CkksContext::new(Parameters::preset(Preset::Aggregation)).unwrap();
    let plan = AggregationPlan::from_settings(&ctx, &HeSettings::default(), 3, 2).unwrap();
    let codec = UpdateCodec::new(ctx.clone(), plan);
    let mut kg = ctx.key_generator().unwrap();
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let receive = kg.secret_key();
    let seed = round_seed(&ctx, &receive, FED, ROUND);
    let mut contributions = Vec::new();
    let mut updates = Vec::new();
    for (h, signer) in (1..).zip(&signers) {
        let weight = 100 * u64::from(h);
        let (items, sketch) = codec
            .encrypt_sketched(&pk, &vec![0.001 * h as f32; 5000], &seed)
            .unwrap();
        let signature = sign_update(signer, (FED, ROUND, h, weight), &items, &sketch);
        contributions.push(Contribution {
            hospital: h,
            weight,
            count: items.len() as u32,
            items: transcript::digest_items(items.iter().map(Vec::as_slice)),
            sketch,
            signature,
        });
        updates.push(items);
    }
    let peers = peers_of(&signers);
    World {
        codec,
        verifier,
        peers,
        seed,
        contributions,
        updates,
        _dir: dir,
    }
}

impl World {
    /// Σ weight·update over `which` (indices into the updates).
    fn sum(&self, which: &[usize]) -> Vec<Ciphertext> {
        let decode = |u: &Vec<Vec<u8>>| -> Vec<Ciphertext> {
            u.iter()
                .enumerate()
                .map(|(i, b)| self.codec.decode(i, b).unwrap())
                .collect()
        };
        let first = decode(&self.updates[0]);
        let shape = Shape {
            level: first[0].level(),
            degree: 1,
            scale: first[0].scale,
        };
        let ctx = self.codec.context();
        let mut aggs: Vec<Aggregator> = (0..first.len())
            .map(|_| Aggregator::new(ctx, &CpuBackend, shape, 3).unwrap())
            .collect();
        for &i in which {
            for (agg, ct) in aggs.iter_mut().zip(decode(&self.updates[i])) {
                agg.push(ct, self.contributions[i].weight).unwrap();
            }
        }
        aggs.into_iter().map(|a| a.finish().unwrap()).collect()
    }

    fn check(&self, contributions: &[Contribution], cts: &[Ciphertext]) -> Result<(), Distrust> {
        check_aggregate(
            self.codec.context(),
            &self.verifier,
            &self.peers,
            &self.seed,
            (FED, ROUND),
            contributions,
            &inputs(&self.codec, cts),
        )
    }
}

/// What a switch request carries of `cts`, through the wire as the coordinator sends it.
fn inputs(codec: &UpdateCodec, cts: &[Ciphertext]) -> Vec<SwitchInput> {
    cts.iter()
        .enumerate()
        .map(|(i, ct)| {
            codec
                .decode_switch_input(i, &codec.encode_switch_input(ct).unwrap())
                .unwrap()
        })
        .collect()
}

#[test]
fn a_switcher_switches_only_the_weighted_sum_of_the_signed_updates_it_is_told_of() {
    let w = world();
    let all = w.sum(&[0, 1, 2]);
    w.check(&w.contributions, &all).unwrap();
    // hospital 1's update presented as the aggregate of all three (the decryption oracle)
    let alone = w.sum(&[0]);
    let err = w.check(&w.contributions, &alone).unwrap_err().0;
    assert!(err.contains("not the weighted sum"), "{err}");
    // one residue of a c₁ changed is refused; c₀ is not the switchers' to see (the share does
    // not depend on it, and the coordinator adds it to the combined shares itself)
    let mut forged = all.clone();
    forged[0].parts[1].limb_mut(1)[17] ^= 2;
    assert!(w.check(&w.contributions, &forged).is_err());
    let mut other_c0 = all.clone();
    other_c0[0].parts[0].limb_mut(1)[17] ^= 2;
    w.check(&w.contributions, &other_c0).unwrap();
    // the sum of two named as the sum of three, or the sum of three named as two
    assert!(w.check(&w.contributions, &w.sum(&[0, 1])).is_err());
    assert!(w.check(&w.contributions[..2], &all).is_err());
    // a weight other than the signed one (to shrink the flooding), or another round's statement
    let mut reweighted = w.contributions.clone();
    reweighted[1].weight = 1;
    let err = w.check(&reweighted, &all).unwrap_err().0;
    assert!(
        err.contains("hospital 2's signature over its update does not verify"),
        "{err}"
    );
    let err = check_aggregate(
        w.codec.context(),
        &w.verifier,
        &w.peers,
        &w.seed,
        (FED, ROUND + 1),
        &w.contributions,
        &inputs(&w.codec, &all),
    )
    .unwrap_err()
    .0;
    assert!(err.contains("signature"), "{err}");
    // hospital 2's signed update passed off as hospital 3's
    let mut relabelled = w.contributions.clone();
    relabelled[2] = Contribution {
        hospital: 3,
        ..w.contributions[1].clone()
    };
    assert!(w.check(&relabelled, &all).is_err());
}

#[test]
fn a_keyholder_makes_the_inference_key_from_signed_shares_and_takes_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let (signers, verifier) = kits(dir.path());
    let peers = peers_of(&signers);
    let ctx = CkksContext::new(Parameters::preset(Preset::Aggregation)).unwrap();
    let crs = Crs::from_federation(b"served");
    let plan = [4u8; 32];
    let share_of = || {
        let sk = ctx.key_generator().unwrap().secret_key();
        let s = PublicKeyGen::new(&ctx, &crs)
            .share(&sk, &mut he_agg::ring::Prng::from_os().unwrap())
            .unwrap();
        mpw::encode_public_key_share(&ctx, &s)
    };
    let sign = |h: u32, signer: &Signer, share: &[u8]| {
        signer.sign(&Statement::InferenceKeyShare {
            federation: FED,
            hospital: h,
            plan,
            public_key_share: transcript::digest(share),
        })
    };
    let shares: Vec<Vec<u8>> = (0..3).map(|_| share_of()).collect();
    let signed: Vec<(u32, Vec<u8>)> = (1..)
        .zip(&signers)
        .zip(&shares)
        .map(|((h, s), share)| (h, sign(h, s, share)))
        .collect();
    let own = OwnInferenceShare {
        federation: FED,
        index: 2,
        hospitals: 3,
        plan,
        public_key_share: &shares[1],
    };
    let check = |signed: &[(u32, Vec<u8>)], shares: &[Vec<u8>]| {
        check_inference_key(&ctx, &crs, &verifier, &peers, &own, signed, shares)
    };
    let hash = check(&signed, &shares).unwrap();
    // the key the server would send: the sum of the three shares
    let ckg = PublicKeyGen::new(&ctx, &crs);
    let mut acc = mpw::decode_public_key_share(&ctx, &shares[0]).unwrap();
    for s in &shares[1..] {
        ckg.aggregate(&mut acc, &mpw::decode_public_key_share(&ctx, s).unwrap())
            .unwrap();
    }
    let pk = wire::encode_public_key(&ctx, &ckg.finalize(acc));
    assert_eq!(hash, *blake3::hash(&pk).as_bytes());
    // a share of the server's own for hospital 3 (unsigned, or signed by another hospital)
    let mut forged = shares.clone();
    forged[2] = share_of();
    assert!(check(&signed, &forged).is_err());
    let mut resigned = signed.clone();
    resigned[2].1 = sign(3, &signers[0], &forged[2]);
    assert!(check(&resigned, &forged).is_err());
    // this keyholder's own share replaced, or a hospital left out
    let mut mine = shares.clone();
    mine[1] = share_of();
    let mut mine_signed = signed.clone();
    mine_signed[1].1 = sign(2, &signers[1], &mine[1]);
    let err = check(&mine_signed, &mine).unwrap_err().0;
    assert!(err.contains("not what it sent"), "{err}");
    assert!(check(&signed[..2], &shares[..2]).is_err());
}
