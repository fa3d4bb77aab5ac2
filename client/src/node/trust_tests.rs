//! The switcher's check of the signed updates it is asked to switch, with real kits and real
//! encryptions; the keyholders' checks of inference keys.

use super::*;
use he_agg::aggregate::{AggregationPlan, HeSettings, UpdateCodec};
use he_agg::ckks::{Parameters, Preset};
use he_agg::infer::threshold::KeyShares;
use he_agg::multiparty::{Crs, wire as mpw};
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

/// Three keyholders' round 1 at the inference preset (it has the special primes a
/// relinearization key needs): each one's record signed by its kit, and the items relayed.
struct Round1World {
    keys: CollectiveKeys,
    records: Vec<KeyholderShares>,
    items: Vec<Vec<u8>>,
    shares: Vec<KeyShares>,
}

fn round1_world(signers: &[Signer], model: [u8; 32]) -> Round1World {
    let ctx = CkksContext::new(Parameters::preset(Preset::Inference)).unwrap();
    let keys = CollectiveKeys::for_rotations(&ctx, &[1], &Crs::from_federation(b"served")).unwrap();
    let mut prng = he_agg::ring::Prng::from_os().unwrap();
    let (mut records, mut items, mut shares) = (vec![], vec![], vec![]);
    for (h, signer) in (1..).zip(signers) {
        let sk = ctx.key_generator().unwrap().secret_key();
        let (_, s) = keys.round1(&sk, &mut prng).unwrap();
        let pk = mpw::encode_public_key_share(&ctx, &s.public_key);
        let relin = mpw::encode_relin_share1(&ctx, &s.relinearization);
        let galois = transcript::digest_items(
            s.galois
                .iter()
                .map(|g| mpw::encode_galois_share(&ctx, g))
                .collect::<Vec<_>>()
                .iter()
                .map(Vec::as_slice),
        );
        let own = own_of(h, model, &pk, &relin, galois);
        records.push(KeyholderShares {
            hospital: h,
            model,
            galois_digest: galois,
            signature: signer.sign(&own.statement()),
        });
        items.push(pk.clone());
        items.push(relin.clone());
        shares.push(s);
    }
    Round1World {
        keys,
        records,
        items,
        shares,
    }
}

fn own_of<'a>(
    h: u32,
    model: [u8; 32],
    pk: &'a [u8],
    relin: &'a [u8],
    galois: [u8; 32],
) -> OwnInferenceShares<'a> {
    OwnInferenceShares {
        federation: FED,
        index: h,
        hospitals: 3,
        plan: [4; 32],
        model,
        public_key_share: pk,
        relinearization: relin,
        galois_digest: galois,
    }
}

#[test]
fn a_keyholder_makes_the_inference_sums_from_signed_shares_and_takes_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let (signers, verifier) = kits(dir.path());
    let peers = peers_of(&signers);
    let w = round1_world(&signers, [8; 32]);
    let ctx = w.keys.context().clone();
    let own = own_of(
        2,
        [8; 32],
        &w.items[2],
        &w.items[3],
        w.records[1].galois_digest,
    );
    let check = |records: &[KeyholderShares], items: &[Vec<u8>]| {
        check_inference_shares(&w.keys, &verifier, &peers, &own, records, items)
    };
    let sums = check(&w.records, &w.items).unwrap();
    // what an honest server sums: the same key and relinearization sum
    let mut acc = w.shares[0].clone();
    for s in &w.shares[1..] {
        w.keys.aggregate1(&mut acc, s).unwrap();
    }
    let pk = wire::encode_public_key(&ctx, &w.keys.public_key(&acc));
    assert_eq!(sums.collective_key, *blake3::hash(&pk).as_bytes());
    assert_eq!(sums.relinearization, acc.relinearization);
    // a relinearization share of the server's own for hospital 3 (the sum it wants this
    // keyholder's round 2 on), or one signed by another hospital's kit
    let mut forged = w.items.clone();
    forged[5] = forged[1].clone();
    assert!(check(&w.records, &forged).is_err());
    let mut resigned = w.records.clone();
    resigned[2].signature = signers[0].sign(
        &own_of(
            3,
            [8; 32],
            &forged[4],
            &forged[5],
            w.records[2].galois_digest,
        )
        .statement(),
    );
    assert!(check(&resigned, &forged).is_err());
    // this keyholder's own shares replaced, a hospital left out, another final model
    let mut mine = w.items.clone();
    mine[3] = w.items[5].clone();
    let mut mine_signed = w.records.clone();
    mine_signed[1].signature = signers[1]
        .sign(&own_of(2, [8; 32], &mine[2], &mine[3], w.records[1].galois_digest).statement());
    let err = check(&mine_signed, &mine).unwrap_err().0;
    assert!(err.contains("not what it sent"), "{err}");
    assert!(check(&w.records[..2], &w.items[..4]).is_err());
    let mut other_model = w.records.clone();
    other_model[0].model = [9; 32];
    other_model[0].signature = signers[0].sign(
        &own_of(
            1,
            [9; 32],
            &w.items[0],
            &w.items[1],
            w.records[0].galois_digest,
        )
        .statement(),
    );
    let err = check(&other_model, &w.items).unwrap_err().0;
    assert!(err.contains("another final model"), "{err}");
}

#[test]
fn a_keyholder_evaluates_only_what_its_requester_signed() {
    let dir = tempfile::tempdir().unwrap();
    let (signers, verifier) = kits(dir.path());
    let peers = peers_of(&signers);
    let items = vec![
        b"requester key".to_vec(),
        b"image 1".to_vec(),
        b"image 2".to_vec(),
    ];
    let mut header = CollectiveRequest {
        request_id: 77,
        fingerprint: [4; 32],
        images: 2,
        ciphertexts_per_image: 1,
        signature: vec![],
    };
    header.signature = signers[0].sign(&header.statement(FED, 1, items.iter().map(Vec::as_slice)));
    check_request(&verifier, &peers, FED, 1, &header, &items).unwrap();
    // the server's own key in the requester's place, another image, another requester named,
    // another request id: refused
    let mut key = items.clone();
    key[0] = b"the server's key".to_vec();
    assert!(check_request(&verifier, &peers, FED, 1, &header, &key).is_err());
    let mut image = items.clone();
    image[2] = b"crafted".to_vec();
    assert!(check_request(&verifier, &peers, FED, 1, &header, &image).is_err());
    assert!(check_request(&verifier, &peers, FED, 2, &header, &items).is_err());
    let mut other = header.clone();
    other.request_id = 78;
    assert!(check_request(&verifier, &peers, FED, 1, &other, &items).is_err());
}
