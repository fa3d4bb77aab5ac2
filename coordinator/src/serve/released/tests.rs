//! Sans-IO tests of key and request handling: keys checked once then kept, a valid request gives
//! the plaintext label; wrong parameters, sizes, counts, fingerprints, key ids, keys and garbage
//! are refused with their reason; the key cache stays in its bounds.

use std::sync::Arc;

use he_agg::ckks::wire::WireError;
use he_agg::ckks::{CkksContext, Parameters, SecretKey, wire};
use he_agg::infer::{EvaluationKeys, InferencePlan, Network, ParamPolicy};
use protocol::Party;
use protocol::serve::released::{InferKeys, InferRequest, keys_id};

use super::handler::Step;
use super::{KeyCache, KeySet, Refusal, ServedModel};

pub(crate) use he_agg::infer::testing::tiny_network;

pub(crate) fn served() -> Arc<ServedModel> {
    let names = vec!["a".into(), "b".into(), "c".into()];
    Arc::new(ServedModel::new(tiny_network(), names, "tiny", 4).expect("compiles"))
}

/// A requester: its plan compiled from the architecture, its own keys.
pub(super) struct Requester {
    pub(super) ctx: Arc<CkksContext>,
    pub(super) plan: InferencePlan,
    pub(super) sk: SecretKey,
    pub(super) keys: EvaluationKeys,
    pub(super) net: Network,
}

pub(super) fn requester() -> Requester {
    requester_for(tiny_network())
}

pub(super) fn requester_for(net: Network) -> Requester {
    let skel = net.architecture().skeleton().unwrap();
    let plan = InferencePlan::new(&skel, &ParamPolicy::default()).unwrap();
    let ctx = CkksContext::new(plan.spec().parameters().clone()).unwrap();
    let mut kg = ctx.key_generator().unwrap();
    let sk = kg.secret_key();
    let keys = plan.spec().generate_keys(&mut kg, &sk);
    Requester {
        ctx,
        plan,
        sk,
        keys,
        net,
    }
}

pub(super) fn image(seed: usize) -> Vec<u8> {
    (0..36)
        .map(|i| ((i * 29 + seed * 71) % 256) as u8)
        .collect()
}

impl Requester {
    pub(super) fn key_items(&self) -> Vec<Vec<u8>> {
        let mut v = vec![];
        if let Some(r) = &self.keys.relinearization {
            v.push(wire::encode_relinearization_key(&self.ctx, r));
        }
        for &s in self.plan.spec().galois_steps() {
            let g = self.ctx.rlwe().galois_element_for_rotation(s);
            v.push(wire::encode_galois_key(
                &self.ctx,
                self.keys.galois.get(g).unwrap(),
            ));
        }
        v
    }
    pub(super) fn keys_header(&self) -> InferKeys {
        let items = self.key_items();
        InferKeys {
            keys: keys_id(items.iter().map(Vec::as_slice)),
            fingerprint: self.plan.spec().fingerprint(),
            relinearization: self.keys.relinearization.is_some(),
            galois_keys: self.plan.spec().galois_steps().len() as u32,
        }
    }
    /// The keys, sent and checked.
    pub(super) fn key_set(&self, model: &Arc<ServedModel>) -> Arc<KeySet> {
        let mut p = model.begin_keys(&self.keys_header()).unwrap();
        for k in self.key_items() {
            p.push(&k).unwrap();
        }
        assert_eq!(p.remaining(), 0);
        Arc::new(p.finish().unwrap())
    }
    pub(super) fn header(&self, images: u32) -> InferRequest {
        InferRequest {
            request_id: 7,
            fingerprint: self.plan.spec().fingerprint(),
            keys: self.keys_header().keys,
            images,
            ciphertexts_per_image: self.plan.spec().input_ciphertexts() as u32,
        }
    }
    pub(super) fn encrypt(&self, px: &[u8]) -> Vec<Vec<u8>> {
        let x = self.net.normalize_hwc(px).unwrap();
        let mut enc = self.ctx.sk_encryptor(&self.sk).unwrap();
        self.plan
            .spec()
            .encode_input(&self.ctx, &x)
            .unwrap()
            .iter()
            .map(|pt| wire::encode_seeded_ciphertext(&self.ctx, &enc.encrypt_seeded(pt)))
            .collect()
    }
    /// The requester's answer to refresh `index` of one masked ciphertext.
    pub(super) fn refresh_item(&self, index: usize, masked: &[u8]) -> Vec<u8> {
        let masked = wire::decode_ciphertext(&self.ctx, masked).unwrap();
        let fresh = he_agg::infer::refresh::reencrypt(
            &self.ctx,
            self.plan.spec(),
            index,
            &self.sk,
            &masked,
        )
        .unwrap();
        wire::encode_seeded_ciphertext(&self.ctx, &fresh)
    }
    pub(super) fn decrypt(&self, bytes: &[u8]) -> Vec<f64> {
        let ct = wire::decode_ciphertext(&self.ctx, bytes).unwrap();
        let pt = self.ctx.decryptor(&self.sk).unwrap().decrypt(&ct);
        self.plan.spec().decode_output(&self.ctx, &pt).unwrap()
    }
}

fn argmax(v: &[f64]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

#[test]
fn a_valid_request_gives_the_plaintext_labels() {
    let model = served();
    let r = requester();
    let keys = r.key_set(&model);
    let images = [image(1), image(2)];
    // two requests with the same checked keys
    for round in 0..2 {
        let mut p = model.begin(&r.header(2), keys.clone()).unwrap();
        for im in &images {
            for ct in r.encrypt(im) {
                p.push(&ct).unwrap();
            }
        }
        assert_eq!(p.remaining(), 0);
        let Step::Done(resp) = p.finish().unwrap().evaluate().unwrap() else {
            panic!("a shallow model answers without refreshes")
        };
        assert_eq!(resp.request_id, 7);
        assert_eq!(resp.ciphertexts.len(), 2, "round {round}");
        let net = tiny_network();
        for (im, ct) in images.iter().zip(&resp.ciphertexts) {
            let got = r.decrypt(ct);
            let want: Vec<f64> = net
                .forward(&net.normalize_hwc(im).unwrap())
                .unwrap()
                .iter()
                .map(|&v| v as f64)
                .collect();
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-3, "{got:?} vs {want:?}");
            }
            assert_eq!(argmax(&got), argmax(&want));
        }
    }
}

#[test]
fn headers_that_do_not_fit_the_plan_are_refused_before_allocating() {
    let model = served();
    let r = requester();
    let keys = r.key_set(&model);
    let mut h = r.header(1);
    h.fingerprint[0] ^= 1;
    let e = model.begin(&h, keys.clone()).err().unwrap();
    assert!(matches!(e, Refusal::Fingerprint { .. }));
    assert!(e.to_string().contains("another plan"), "{e}");
    for n in [0, 5, u32::MAX] {
        let e = model.begin(&r.header(n), keys.clone()).err().unwrap();
        assert!(
            matches!(e, Refusal::ImageCount { got, max: 4 } if got == n),
            "{e}"
        );
    }
    let mut h = r.header(1);
    h.ciphertexts_per_image = 2;
    assert!(matches!(
        model.begin(&h, keys.clone()).err().unwrap(),
        Refusal::CiphertextsPerImage { got: 2, want: 1 }
    ));
    let mut h = r.header(1);
    h.keys[3] ^= 1;
    let e = model.begin(&h, keys.clone()).err().unwrap();
    assert!(matches!(e, Refusal::UnknownKeys { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with(protocol::serve::released::KEYS_UNKNOWN)
    );
    // key headers
    let mut k = r.keys_header();
    k.galois_keys += 1;
    assert!(matches!(
        model.begin_keys(&k).err().unwrap(),
        Refusal::GaloisCount { .. }
    ));
    k.galois_keys = u32::MAX;
    assert!(matches!(
        model.begin_keys(&k).err().unwrap(),
        Refusal::GaloisCount { .. }
    ));
    let mut k = r.keys_header();
    k.relinearization = !k.relinearization;
    let e = model.begin_keys(&k).err().unwrap();
    assert!(matches!(e, Refusal::Relinearization { .. }), "{e}");
    let mut k = r.keys_header();
    k.fingerprint[1] ^= 1;
    assert!(matches!(
        model.begin_keys(&k).err().unwrap(),
        Refusal::Fingerprint { .. }
    ));
}

#[test]
fn garbage_wrong_sizes_and_wrong_parameters_are_refused() {
    let model = served();
    let r = requester();
    let keys = r.key_items();
    let start_keys = || model.begin_keys(&r.keys_header()).unwrap();
    // garbage where the relinearization key belongs
    let e = start_keys().push(b"certainly not a key").err().unwrap();
    assert!(
        matches!(
            e,
            Refusal::Item {
                index: 0,
                source: WireError::Truncated { .. } | WireError::Magic,
                ..
            }
        ),
        "{e}"
    );
    let mut junk = keys[0].clone();
    junk[..4].copy_from_slice(b"JUNK");
    assert!(matches!(
        start_keys().push(&junk).err().unwrap(),
        Refusal::Item {
            source: WireError::Magic,
            ..
        }
    ));
    // a truncated key: the exact size is checked before decoding
    let e = start_keys()
        .push(&keys[0][..keys[0].len() - 1])
        .err()
        .unwrap();
    assert!(
        matches!(
            e,
            Refusal::Item {
                source: WireError::Length { .. },
                ..
            }
        ),
        "{e}"
    );
    // an image where a key belongs
    let e = start_keys().push(&r.encrypt(&image(0))[0]).err().unwrap();
    assert!(
        matches!(
            e,
            Refusal::Item {
                source: WireError::WrongKind { .. },
                ..
            }
        ),
        "{e}"
    );
    // a key where an image belongs
    let set = r.key_set(&model);
    let start = || model.begin(&r.header(1), set.clone()).unwrap();
    let e = start().push(&keys[0]).err().unwrap();
    assert!(
        matches!(
            e,
            Refusal::Item {
                source: WireError::WrongKind { .. },
                ..
            }
        ),
        "{e}"
    );
    // an image made with other parameters (another ring degree)
    let other = Parameters::new(13, &[50, 40, 40, 40], &[50], 1, 40.0);
    if let Ok(params) = other {
        let ctx = CkksContext::new(params).unwrap();
        let mut kg = ctx.key_generator().unwrap();
        let sk = kg.secret_key();
        let pt = ctx
            .encode_coeffs(
                &[he_agg::ckks::Complex::new(1.0, 0.0)],
                4,
                ctx.default_scale(),
            )
            .unwrap();
        let ct = ctx.sk_encryptor(&sk).unwrap().encrypt_seeded(&pt);
        let e = start()
            .push(&wire::encode_seeded_ciphertext(&ctx, &ct))
            .err()
            .unwrap();
        assert!(
            matches!(
                e,
                Refusal::Item {
                    source: WireError::Fingerprint,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("other parameters"), "{e}");
    }
    // an image at the wrong level
    let pt = r
        .ctx
        .encode_coeffs(
            &[he_agg::ckks::Complex::new(1.0, 0.0)],
            1,
            r.ctx.default_scale(),
        )
        .unwrap();
    let ct = r.ctx.sk_encryptor(&r.sk).unwrap().encrypt_seeded(&pt);
    let e = start()
        .push(&wire::encode_seeded_ciphertext(&r.ctx, &ct))
        .err()
        .unwrap();
    assert!(matches!(e, Refusal::InputLevel { found: 1, .. }), "{e}");
}

#[test]
fn keys_outside_the_plan_and_miscounted_streams_are_refused() {
    let model = served();
    let r = requester();
    let keys = r.key_items();
    let relin = usize::from(r.keys.relinearization.is_some());
    assert!(keys.len() > relin, "the tiny plan rotates");
    // a Galois key for a rotation the plan does not use
    let mut kg = r.ctx.key_generator().unwrap();
    let planned = r.plan.spec().galois_steps();
    let step = (1..r.ctx.slots() as i64)
        .find(|s| !planned.contains(s))
        .unwrap();
    let g = r.ctx.rlwe().galois_element_for_rotation(step);
    let stray = wire::encode_galois_key(&r.ctx, &kg.galois_key(&r.sk, g));
    let mut p = model.begin_keys(&r.keys_header()).unwrap();
    for k in &keys[..relin] {
        p.push(k).unwrap();
    }
    let e = p.push(&stray).err().unwrap();
    assert!(
        matches!(e, Refusal::UnplannedGaloisKey { element, .. } if element == g),
        "{e}"
    );
    // the same Galois key twice
    if keys.len() > relin + 1 {
        let mut p = model.begin_keys(&r.keys_header()).unwrap();
        for k in &keys[..=relin] {
            p.push(k).unwrap();
        }
        let e = p.push(&keys[relin]).err().unwrap();
        assert!(matches!(e, Refusal::DuplicateGaloisKey { .. }), "{e}");
    }
    // a short key stream, one key too many, keys that are not the announced ones
    let mut p = model.begin_keys(&r.keys_header()).unwrap();
    p.push(&keys[0]).unwrap();
    assert!(matches!(
        p.finish().err().unwrap(),
        Refusal::MissingItems { .. }
    ));
    let mut p = model.begin_keys(&r.keys_header()).unwrap();
    for k in &keys {
        p.push(k).unwrap();
    }
    assert!(matches!(
        p.push(&keys[0]).err().unwrap(),
        Refusal::TooManyItems { .. }
    ));
    let mut lying = r.keys_header();
    lying.keys = requester().keys_header().keys;
    let mut p = model.begin_keys(&lying).unwrap();
    for k in &keys {
        p.push(k).unwrap();
    }
    assert!(matches!(p.finish().err().unwrap(), Refusal::KeysId { .. }));
    // a short request, then one ciphertext too many
    let set = r.key_set(&model);
    let p = model.begin(&r.header(1), set.clone()).unwrap();
    assert!(matches!(
        p.finish().err().unwrap(),
        Refusal::MissingItems { .. }
    ));
    let mut p = model.begin(&r.header(1), set).unwrap();
    let ct = r.encrypt(&image(3));
    p.push(&ct[0]).unwrap();
    assert!(matches!(
        p.push(&ct[0]).err().unwrap(),
        Refusal::TooManyItems { .. }
    ));
}

#[test]
fn the_key_cache_keeps_recent_sets_within_its_bounds() {
    let model = served();
    let set = |r: &Requester| -> KeySet {
        let mut p = model.begin_keys(&r.keys_header()).unwrap();
        for k in r.key_items() {
            p.push(&k).unwrap();
        }
        p.finish().unwrap()
    };
    let (a, b, c) = (requester(), requester(), requester());
    let bytes = set(&a).bytes;
    // room for two sets
    let mut cache = KeyCache::new(2 * bytes + bytes / 2, 8);
    let (h1, h2) = (Party::Hospital(1), Party::Hospital(2));
    let ida = cache.insert(h1, set(&a)).id;
    let idb = cache.insert(h2, set(&b)).id;
    // keys are the requester's: another hospital cannot name them
    assert!(cache.get(h2, &ida).is_none());
    assert!(cache.get(h1, &ida).is_some());
    // a third set evicts the least recently used (b's)
    let idc = cache.insert(h1, set(&c)).id;
    assert_eq!(cache.len(), 2);
    assert!(cache.get(h2, &idb).is_none());
    assert!(cache.get(h1, &ida).is_some() && cache.get(h1, &idc).is_some());
    assert!(cache.bytes() <= 2 * bytes + bytes / 2);
    // the set bound holds too; the same set again replaces itself
    let mut one = KeyCache::new(u64::MAX, 1);
    one.insert(h1, set(&a));
    one.insert(h1, set(&a));
    assert_eq!((one.len(), one.bytes()), (1, bytes));
    one.insert(h2, set(&b));
    assert_eq!(one.len(), 1);
    assert!(one.get(h2, &idb).is_some());
}

#[test]
fn served_models_are_read_in_either_form_and_checked() {
    let net = tiny_network();
    let bare = serde_json::to_string(&net).unwrap();
    let m = ServedModel::from_json(&bare, "bare", 4).unwrap();
    assert_eq!(m.info().class_names.len(), 3);
    let export = format!(
        r#"{{"format":"heal-network/1","class_names":["x","y","z"],"multiplicative_depth":3,"network":{bare}}}"#
    );
    let m = ServedModel::from_json(&export, "export", 4).unwrap();
    assert_eq!(m.info().class_names, vec!["x", "y", "z"]);
    let arch: he_agg::infer::Architecture = serde_json::from_str(&m.info().architecture).unwrap();
    assert_eq!(arch, net.architecture());
    let two = export.replace(r#"["x","y","z"]"#, r#"["x","y"]"#);
    assert!(ServedModel::from_json(&two, "e", 4).is_err());
    let other = export.replace("heal-network/1", "heal-network/9");
    assert!(ServedModel::from_json(&other, "e", 4).is_err());
    assert!(ServedModel::from_json("{", "e", 4).is_err());
    assert!(ServedModel::from_json(&bare, "e", 0).is_err());
}

#[test]
fn a_deep_model_is_answered_after_its_requester_refreshes_each_segment() {
    use he_agg::infer::testing::residual_network;
    use protocol::serve::released::RefreshHeader;
    let net = residual_network(8, 1, 4, 3, 2, 3);
    let names = vec!["a".into(), "b".into(), "c".into()];
    let model = Arc::new(ServedModel::new(net.clone(), names, "deep", 4).unwrap());
    let segments = model.plan().spec().segments();
    assert!(segments >= 3, "{segments}");
    let r = requester_for(net.clone());
    assert_eq!(
        r.plan.spec().fingerprint(),
        model.plan().spec().fingerprint()
    );
    let keys = r.key_set(&model);
    let px: Vec<u8> = (0..64).map(|i| ((i * 37 + 11) % 256) as u8).collect();
    let start = || {
        let mut p = model.begin(&r.header(1), keys.clone()).unwrap();
        for ct in r.encrypt(&px) {
            p.push(&ct).unwrap();
        }
        p.finish().unwrap()
    };
    let first = |ready: super::handler::ReadyRequest| match ready.evaluate().unwrap() {
        Step::Refresh(out) => out,
        Step::Done(_) => panic!("a cut model answers only after its refreshes"),
    };
    // an answer for another refresh, or one more than asked for, is refused
    let out = first(start());
    let wrong = RefreshHeader {
        index: out.header.index + 1,
        ..out.header
    };
    assert!(matches!(
        out.begin(&wrong),
        Err(Refusal::RefreshHeader { .. })
    ));
    // a refreshed ciphertext at another level is refused
    let out = first(start());
    let header = out.header;
    let mut good =
        wire::decode_seeded_ciphertext(&r.ctx, &r.refresh_item(0, &out.ciphertexts[0])).unwrap();
    let mut pending = out.begin(&header).unwrap();
    good.c0.truncate(good.level() - 1);
    assert!(matches!(
        pending.push(&wire::encode_seeded_ciphertext(&r.ctx, &good)),
        Err(Refusal::RefreshedShape { .. })
    ));
    // the whole round trip, refresh after refresh
    answer_deep(&r, start(), &px, segments);
}

/// A deep model's request of one image (`px`, request 7) answered: the requester refreshes each
/// segment's outputs in turn (a second answer to one refresh is refused), and the result
/// decrypts to the f32 forward pass.
pub(super) fn answer_deep(
    r: &Requester,
    mut ready: super::handler::ReadyRequest,
    px: &[u8],
    segments: usize,
) {
    let mut refreshes = 0;
    let resp = loop {
        match ready.evaluate().unwrap() {
            Step::Done(resp) => break resp,
            Step::Refresh(out) => {
                assert_eq!(out.header.index as usize, refreshes);
                assert_eq!((out.header.request_id, out.header.count), (7, 1));
                let item = r.refresh_item(refreshes, &out.ciphertexts[0]);
                let header = out.header;
                let mut pending = out.begin(&header).unwrap();
                pending.push(&item).unwrap();
                assert!(matches!(
                    pending.push(&item),
                    Err(Refusal::TooManyItems { .. })
                ));
                ready = pending.finish().unwrap();
                refreshes += 1;
            }
        }
    };
    assert_eq!(refreshes, segments - 1);
    let got = r.decrypt(&resp.ciphertexts[0]);
    let want = r.net.forward(&r.net.normalize_hwc(px).unwrap()).unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!(
            (g - *w as f64).abs() < 1e-2 * (1.0 + w.abs() as f64),
            "{got:?} vs {want:?}"
        );
    }
}
