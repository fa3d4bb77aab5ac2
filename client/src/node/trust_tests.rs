//! The switcher's check of the signed updates it is asked to switch, with real kits and real
//! encryptions; the keyholders' checks of inference keys.

use super::*;
use he_agg::aggregate::{AggregationPlan, HeSettings, UpdateCodec};
use he_agg::ckks::{Parameters, Preset};
use he_agg::multiparty::{Crs, PublicKeyGen, wire as mpw};
use protocol::identity::hospital_dns_name;
use protocol::pki::Ca;
use protocol::tls::TlsFiles;

const FED: FederationId = FederationId([9; 16]);
const ROUND: u64 = 6;

struct World {
    verifier: Verifier,
    peers: PeerKeys,
    contributions: Vec<Contribution>,
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

/// Three hospitals with kits of one CA, each with a signed update under its own secret.
fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let (signers, verifier) = kits(dir.path());
    let ctx = CkksContext::new(Parameters::preset(Preset::Aggregation)).unwrap();
    let plan = AggregationPlan::from_settings(&ctx, &HeSettings::default(), 3, 2).unwrap();
    let codec = UpdateCodec::new(ctx.clone(), plan);
    let mut kg = ctx.key_generator().unwrap();
    let mut contributions = Vec::new();
    for (h, signer) in (1..).zip(&signers) {
        let weight = 100 * u64::from(h);
        let (items, a_seed) = codec
            .encrypt(&kg.secret_key(), &vec![0.001 * h as f32; 5000])
            .unwrap();
        let signature = sign_update(signer, (FED, ROUND, h, weight), &items, &a_seed);
        contributions.push(Contribution {
            hospital: h,
            weight,
            count: items.len() as u32,
            items: transcript::digest_items(items.iter().map(Vec::as_slice)),
            a_seed,
            signature,
        });
    }
    let peers = peers_of(&signers);
    World {
        verifier,
        peers,
        contributions,
        _dir: dir,
    }
}

impl World {
    fn check(&self, contributions: &[Contribution], round: u64) -> Result<(), Distrust> {
        check_contributions(&self.verifier, &self.peers, (FED, round), contributions)
    }
}

#[test]
fn a_switcher_switches_only_what_the_hospitals_signed() {
    let w = world();
    w.check(&w.contributions, ROUND).unwrap();
    // a weight other than the signed one (to shrink the flooding or skew the sum), or another
    // round's statement
    let mut reweighted = w.contributions.clone();
    reweighted[1].weight = 1;
    let err = w.check(&reweighted, ROUND).unwrap_err().0;
    assert!(
        err.contains("hospital 2's signature over its update does not verify"),
        "{err}"
    );
    assert!(w.check(&w.contributions, ROUND + 1).is_err());
    // a seed other than the one the hospital encrypted with (what the switcher's c1 is made
    // from): a coordinator cannot have another ciphertext switched in its place
    let mut reseeded = w.contributions.clone();
    reseeded[0].a_seed[5] ^= 1;
    assert!(w.check(&reseeded, ROUND).is_err());
    // hospital 2's signed update passed off as hospital 3's, or a hospital of no certificate
    let mut relabelled = w.contributions.clone();
    relabelled[2] = Contribution {
        hospital: 3,
        ..w.contributions[1].clone()
    };
    assert!(w.check(&relabelled, ROUND).is_err());
    let mut stranger = w.contributions.clone();
    stranger[0].hospital = 9;
    let err = w.check(&stranger, ROUND).unwrap_err().0;
    assert!(err.contains("no certificate of hospital 9"), "{err}");
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
