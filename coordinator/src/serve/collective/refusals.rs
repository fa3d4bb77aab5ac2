//! Sans-IO tests of what the serving coordinator accepts from keyholders and requesters: a
//! round-1 header that does not fit the plan, garbage items, a cut stream, images of the wrong
//! count, level or bytes, and switching shares of the wrong count or bytes are refused with a
//! reason, and a refused stream leaves the sums as they were.

use protocol::CollectiveMsg;
use std::sync::Arc;

use he_agg::ckks::{CkksContext, wire};
use he_agg::infer::threshold::{
    CollectiveKeys, served_combiner, served_crs, served_flooding, served_policy,
};
use he_agg::infer::{InferencePlan, Network};
use he_agg::multiparty::sealed::SEAL_OVERHEAD;
use he_agg::multiparty::{PublicKeySwitch, wire as mpw};
use he_agg::ring::Prng;
use protocol::FederationId;
use protocol::serve::collective::{CollectiveRequest, KeyholderRound1};
use protocol::transcript::digest_items;

use super::keys::{KeysError, ServedKeys};
use super::requests::{SwitchState, decode_images};
use crate::serve::released::tests::tiny_network;
use protocol::Body;

const FED: FederationId = FederationId([9; 16]);

struct Fixture {
    net: Network,
    plan: InferencePlan,
    ctx: Arc<CkksContext>,
    keys: CollectiveKeys,
}

fn fixture() -> Fixture {
    let net = tiny_network();
    let plan = InferencePlan::new(&net, &served_policy()).unwrap();
    let ctx = CkksContext::new(plan.spec().parameters().clone()).unwrap();
    let keys = CollectiveKeys::new(plan.spec(), &ctx, &served_crs(&FED.0)).unwrap();
    Fixture {
        net,
        plan,
        ctx,
        keys,
    }
}

fn header(f: &Fixture, me: u32) -> KeyholderRound1 {
    let len = mpw::shamir_share_len(&f.ctx) + SEAL_OVERHEAD;
    KeyholderRound1 {
        architecture: serde_json::to_string(&f.net.architecture()).unwrap(),
        class_names: vec!["a".into(), "b".into(), "c".into()],
        plan: f.plan.spec().fingerprint(),
        galois: f.keys.galois_elements().len() as u32,
        sealed: (1..=3)
            .filter(|&h| h != me)
            .map(|h| (h, vec![0; len]))
            .collect(),
        input_preparation: String::new(),
        model: [1; 32],
        galois_digest: [0; 32],
        signature: vec![],
    }
}

/// A header whose Galois digest is that of `items`' Galois shares.
fn header_for(f: &Fixture, me: u32, items: &[Vec<u8>]) -> KeyholderRound1 {
    KeyholderRound1 {
        galois_digest: digest_items(items[2..].iter().map(Vec::as_slice)),
        ..header(f, me)
    }
}

fn round1_items(f: &Fixture) -> Vec<Vec<u8>> {
    let sk = f.ctx.key_generator().unwrap().secret_key();
    let (_, s) = f.keys.round1(&sk, &mut Prng::from_os().unwrap()).unwrap();
    let mut items = vec![
        mpw::encode_public_key_share(&f.ctx, &s.public_key),
        mpw::encode_relin_share1(&f.ctx, &s.relinearization),
    ];
    items.extend(s.galois.iter().map(|g| mpw::encode_galois_share(&f.ctx, g)));
    items
}

fn refused(r: Result<impl Sized, KeysError>, needle: &str) {
    match r {
        Ok(_) => panic!("accepted; expected a refusal mentioning {needle:?}"),
        Err(e) => assert!(
            e.to_string().contains(needle),
            "refusal {e:?} does not mention {needle:?}"
        ),
    }
}

#[test]
fn round1_headers_that_do_not_fit_the_plan_are_refused() {
    let f = fixture();
    let mut keys = ServedKeys::new(FED, 3, 4);
    let mut bad = header(&f, 1);
    bad.architecture = "{not json".into();
    refused(keys.begin_round1(1, bad), "architecture");
    assert!(keys.compiled().is_none(), "nothing compiled from garbage");

    let mut bad = header(&f, 1);
    bad.plan = [0; 32];
    refused(keys.begin_round1(1, bad), "another plan");
    let mut bad = header(&f, 1);
    bad.galois += 1;
    refused(keys.begin_round1(1, bad), "Galois shares");
    let mut bad = header(&f, 1);
    bad.sealed.pop();
    refused(keys.begin_round1(1, bad), "sealed shares addressed");
    let mut bad = header(&f, 1);
    bad.sealed[0].0 = 1;
    refused(keys.begin_round1(1, bad), "sealed shares addressed");
    let mut bad = header(&f, 1);
    bad.sealed[0].1.push(0);
    refused(keys.begin_round1(1, bad), "sealed share is not");
    let mut bad = header(&f, 2);
    bad.class_names[0] = "other".into();
    refused(keys.begin_round1(2, bad), "another architecture");

    // another hospital's input normalization is the same model
    let mut other = header(&f, 2);
    let mut arch = f.net.architecture();
    arch.normalization = None;
    other.architecture = serde_json::to_string(&arch).unwrap();
    assert!(keys.begin_round1(2, other).is_ok());
}

#[test]
fn garbage_or_cut_round1_streams_change_nothing() {
    let f = fixture();
    let mut keys = ServedKeys::new(FED, 3, 4);
    let items = round1_items(&f);

    let mut s = keys.begin_round1(1, header(&f, 1)).unwrap();
    refused(s.push(&f.ctx, &[7; 100]), "public-key share");
    s.push(&f.ctx, &items[0]).unwrap();
    // a Galois share where the relinearization share belongs
    refused(s.push(&f.ctx, &items[2]), "relinearization");

    // a stream cut after two items is not summed, and nothing is relayed
    let mut s = keys.begin_round1(1, header_for(&f, 1, &items)).unwrap();
    s.push(&f.ctx, &items[0]).unwrap();
    s.push(&f.ctx, &items[1]).unwrap();
    refused(keys.store_round1(s), "ended after 2");
    refused(keys.round1_result(2), "not made yet");

    // Galois shares other than the ones the keyholder's signed record names
    let mut s = keys.begin_round1(1, header(&f, 1)).unwrap();
    for it in &items {
        s.push(&f.ctx, it).unwrap();
    }
    refused(keys.store_round1(s), "Galois shares are not");
    refused(keys.round1_result(2), "not made yet");

    // a whole stream is summed, and its sealed shares wait for their recipients
    let mut s = keys.begin_round1(1, header_for(&f, 1, &items)).unwrap();
    for it in &items {
        s.push(&f.ctx, it).unwrap();
    }
    assert_eq!(s.remaining(), 0);
    refused(s.push(&f.ctx, &items[0]), "more items");
    keys.store_round1(s).unwrap();
    let (body, items_out) = keys.round1_result(2).unwrap();
    let Body::Collective(CollectiveMsg::CollectiveRound1Result { sealed, key_shares }) = body
    else {
        panic!("a round-1 result expected")
    };
    assert_eq!(sealed.len(), 1);
    assert_eq!(sealed[0].0, 1);
    // hospital 1's record, its public-key and relinearization shares as it sent them: each
    // keyholder makes the sums itself
    assert_eq!(
        key_shares.iter().map(|k| k.hospital).collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(items_out, items[..2].to_vec());
    // another keyholder holding another final model is refused at its header
    let mut other = header_for(&f, 2, &items);
    other.model = [2; 32];
    refused(
        keys.begin_round1(2, other),
        "a final model other than hospital 1's",
    );
    refused(keys.store_round2(&[1, 2, 3]), "round-2");
    refused(keys.make_keys(), "not made");
    assert!(keys.keyholder_keys().is_none());
}

#[test]
fn bad_images_and_bad_switching_shares_are_refused() {
    let f = fixture();
    let spec = f.plan.spec();
    let mut kg = f.ctx.key_generator().unwrap();
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let pk_bytes = wire::encode_public_key(&f.ctx, &pk);
    let x = vec![0.3f32; 36];
    let mut enc = f.ctx.pk_encryptor(&pk).unwrap();
    assert_eq!(spec.input_ciphertexts(), 1);
    let good = enc.encrypt(&spec.encode_input(&f.ctx, &x).unwrap()[0]);
    let good_bytes = wire::encode_ciphertext(&f.ctx, &good);
    let header = CollectiveRequest {
        request_id: 1,
        fingerprint: spec.fingerprint(),
        images: 1,
        ciphertexts_per_image: 1,
        signature: vec![1; 70],
    };
    let (_, images) = decode_images(
        &f.ctx,
        &f.plan,
        &header,
        &[pk_bytes.clone(), good_bytes.clone()],
    )
    .unwrap();
    assert_eq!(images.len(), 1);

    refused(
        decode_images(&f.ctx, &f.plan, &header, std::slice::from_ref(&pk_bytes)),
        "items for a request of 1",
    );
    let mut two = header.clone();
    two.ciphertexts_per_image = 2;
    refused(
        decode_images(
            &f.ctx,
            &f.plan,
            &two,
            &[pk_bytes.clone(), good_bytes.clone(), good_bytes.clone()],
        ),
        "the plan's image spans 1",
    );
    refused(
        decode_images(&f.ctx, &f.plan, &header, &[vec![1; 64], good_bytes.clone()]),
        "public key",
    );
    let mut garbage = good_bytes.clone();
    let n = garbage.len();
    garbage.truncate(n - 8);
    refused(
        decode_images(&f.ctx, &f.plan, &header, &[pk_bytes.clone(), garbage]),
        "image",
    );
    let eval = f.ctx.evaluator(None, None).unwrap();
    let low = eval.drop_levels(&good, 1).unwrap();
    refused(
        decode_images(
            &f.ctx,
            &f.plan,
            &header,
            &[pk_bytes.clone(), wire::encode_ciphertext(&f.ctx, &low)],
        ),
        "level",
    );

    // shares: the count and the bytes are checked before anything is summed
    let result = eval
        .drop_levels(&good, good.level() - spec.output_level())
        .unwrap();
    // a keyholder's flooding (its bound calibrated; any bound ≥ 1 serves this check)
    let (flooding, _) = served_flooding(&f.ctx, spec, 1.0, 3, 2).unwrap();
    let pcks = PublicKeySwitch::new(&f.ctx, flooding, 2);
    let switch = SwitchState::new(
        f.ctx.clone(),
        served_combiner(&f.ctx, 3, 2).unwrap(),
        vec![result.clone()],
    );
    refused(switch.decode_shares(&[]), "0 switching shares for 1");
    refused(switch.decode_shares(&[vec![0; 99]]), "switching share");
    let share = pcks
        .share(&sk, &pk, &result, &mut Prng::from_os().unwrap())
        .unwrap();
    let ok = mpw::encode_public_key_switch_share(&f.ctx, &share);
    assert_eq!(
        switch
            .decode_shares(std::slice::from_ref(&ok))
            .unwrap()
            .len(),
        1
    );
    refused(switch.finish(), "no switching shares");

    // mode (a): each keyholder sends its results with its shares; they must agree
    let mut evaluated = SwitchState::evaluated_by_keyholders(
        f.ctx.clone(),
        served_combiner(&f.ctx, 3, 2).unwrap(),
        vec![],
        1,
        spec.output_level(),
    );
    let result_bytes = wire::encode_ciphertext(&f.ctx, &result);
    refused(
        evaluated.fold_evaluated(0, std::slice::from_ref(&ok), 5),
        "1 results and their switching shares",
    );
    refused(
        evaluated.fold_evaluated(0, &[good_bytes.clone(), ok.clone()], 5),
        "result 0 at level",
    );
    evaluated
        .fold_evaluated(0, &[result_bytes.clone(), ok.clone()], 5)
        .unwrap();
    let other = eval
        .drop_levels(&good, good.level() - spec.output_level())
        .unwrap();
    let mut other = other;
    other.scale *= 2.0;
    refused(
        evaluated.fold_evaluated(0, &[wire::encode_ciphertext(&f.ctx, &other), ok.clone()], 7),
        "results other than another keyholder's",
    );
    evaluated.fold_evaluated(0, &[result_bytes, ok], 9).unwrap();
    assert_eq!(evaluated.evaluate_us, 9);
    assert_eq!(evaluated.finish().unwrap().len(), 1);
}
