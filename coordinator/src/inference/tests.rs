//! Sans-IO tests of request handling: a valid request gives the plaintext label; wrong
//! parameters, sizes, counts, fingerprints, keys and garbage are refused with their reason.

use std::sync::Arc;

use he_agg::ckks::wire::WireError;
use he_agg::ckks::{CkksContext, Parameters, SecretKey, wire};
use he_agg::infer::{EvaluationKeys, InferencePlan, ParamPolicy};
use protocol::inference::InferRequest;

use super::{Refusal, ServedModel};

pub(crate) use he_agg::infer::testing::tiny_network;

pub(crate) fn served() -> Arc<ServedModel> {
    let names = vec!["a".into(), "b".into(), "c".into()];
    Arc::new(ServedModel::new(tiny_network(), names, "tiny", 4).expect("compiles"))
}

/// A requester: its plan compiled from the architecture, its own keys.
struct Requester {
    ctx: Arc<CkksContext>,
    plan: InferencePlan,
    sk: SecretKey,
    keys: EvaluationKeys,
}

fn requester() -> Requester {
    let skel = tiny_network().architecture().skeleton().unwrap();
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
    }
}

fn image(seed: usize) -> Vec<u8> {
    (0..36)
        .map(|i| ((i * 29 + seed * 71) % 256) as u8)
        .collect()
}

impl Requester {
    fn header(&self, images: u32) -> InferRequest {
        InferRequest {
            request_id: 7,
            fingerprint: self.plan.spec().fingerprint(),
            relinearization: self.keys.relinearization.is_some(),
            galois_keys: self.plan.spec().galois_steps().len() as u32,
            images,
        }
    }
    fn key_items(&self) -> Vec<Vec<u8>> {
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
    fn encrypt(&self, px: &[u8]) -> Vec<u8> {
        let x = tiny_network().normalize_hwc(px).unwrap();
        let pt = self.plan.spec().encode_input(&self.ctx, &x).unwrap();
        let mut enc = self.ctx.sk_encryptor(&self.sk).unwrap();
        wire::encode_seeded_ciphertext(&self.ctx, &enc.encrypt_seeded(&pt))
    }
    fn decrypt(&self, bytes: &[u8]) -> Vec<f64> {
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
    let mut p = model.begin(&r.header(2)).unwrap();
    for k in r.key_items() {
        p.push(&k).unwrap();
    }
    let images = [image(1), image(2)];
    for im in &images {
        p.push(&r.encrypt(im)).unwrap();
    }
    assert_eq!(p.remaining(), 0);
    let resp = p.finish().unwrap().evaluate().unwrap();
    assert_eq!(resp.request_id, 7);
    assert_eq!(resp.ciphertexts.len(), 2);
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

#[test]
fn headers_that_do_not_fit_the_plan_are_refused_before_allocating() {
    let model = served();
    let r = requester();
    let mut h = r.header(1);
    h.fingerprint[0] ^= 1;
    let e = model.begin(&h).err().unwrap();
    assert!(matches!(e, Refusal::Fingerprint { .. }));
    assert!(e.to_string().contains("another plan"), "{e}");
    for n in [0, 5, u32::MAX] {
        let e = model.begin(&r.header(n)).err().unwrap();
        assert!(
            matches!(e, Refusal::ImageCount { got, max: 4 } if got == n),
            "{e}"
        );
    }
    let mut h = r.header(1);
    h.galois_keys += 1;
    assert!(matches!(
        model.begin(&h).err().unwrap(),
        Refusal::GaloisCount { .. }
    ));
    h.galois_keys = u32::MAX;
    assert!(matches!(
        model.begin(&h).err().unwrap(),
        Refusal::GaloisCount { .. }
    ));
    let mut h = r.header(1);
    h.relinearization = !h.relinearization;
    let e = model.begin(&h).err().unwrap();
    assert!(matches!(e, Refusal::Relinearization { .. }), "{e}");
}

#[test]
fn garbage_wrong_sizes_and_wrong_parameters_are_refused() {
    let model = served();
    let r = requester();
    let keys = r.key_items();
    let start = || model.begin(&r.header(1)).unwrap();
    // garbage where the relinearization key belongs
    let e = start().push(b"certainly not a key").err().unwrap();
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
        start().push(&junk).err().unwrap(),
        Refusal::Item {
            source: WireError::Magic,
            ..
        }
    ));
    // a truncated key: the exact size is checked before decoding
    let e = start().push(&keys[0][..keys[0].len() - 1]).err().unwrap();
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
    let e = start().push(&r.encrypt(&image(0))).err().unwrap();
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
    let mut p = start();
    for k in &keys {
        p.push(k).unwrap();
    }
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
        let e = p
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
    let mut p = start();
    for k in &keys {
        p.push(k).unwrap();
    }
    let pt = r
        .ctx
        .encode_coeffs(
            &[he_agg::ckks::Complex::new(1.0, 0.0)],
            1,
            r.ctx.default_scale(),
        )
        .unwrap();
    let ct = r.ctx.sk_encryptor(&r.sk).unwrap().encrypt_seeded(&pt);
    let e = p
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
    let mut p = model.begin(&r.header(1)).unwrap();
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
        let mut p = model.begin(&r.header(1)).unwrap();
        for k in &keys[..=relin] {
            p.push(k).unwrap();
        }
        let e = p.push(&keys[relin]).err().unwrap();
        assert!(matches!(e, Refusal::DuplicateGaloisKey { .. }), "{e}");
    }
    // a short stream, then one item too many
    let mut p = model.begin(&r.header(1)).unwrap();
    for k in &keys {
        p.push(k).unwrap();
    }
    let e = p.finish().err().unwrap();
    assert!(matches!(e, Refusal::MissingItems { .. }), "{e}");
    let mut p = model.begin(&r.header(1)).unwrap();
    for k in &keys {
        p.push(k).unwrap();
    }
    let ct = r.encrypt(&image(3));
    p.push(&ct).unwrap();
    assert!(matches!(
        p.push(&ct).err().unwrap(),
        Refusal::TooManyItems { .. }
    ));
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
