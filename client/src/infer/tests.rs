//! The requester's side without a network: `--local` gives the plaintext network's labels,
//! keys are exactly the plan's, and malformed results are refused.

use he_agg::infer::Network;

use super::images::LoadedImage;
use super::local::infer_local;
use super::requester::Requester;

fn network() -> Network {
    he_agg::infer::testing::tiny_network()
}

#[test]
fn local_inference_matches_the_plaintext_network() {
    let net = network();
    let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let images: Vec<LoadedImage> = (0..3)
        .map(|k| LoadedImage {
            name: format!("im{k}"),
            hwc: (0..36).map(|i| ((i * 29 + k * 71) % 256) as u8).collect(),
            label: Some(k),
        })
        .collect();
    let out = infer_local(&net, &classes, "tiny", &images).unwrap();
    assert_eq!(out.images.len(), 3);
    for (r, im) in out.images.iter().zip(&images) {
        let want = net.forward(&net.normalize_hwc(&im.hwc).unwrap()).unwrap();
        for (g, w) in r.logits.iter().zip(&want) {
            assert!((g - *w as f64).abs() < 1e-3, "{:?} vs {want:?}", r.logits);
        }
        assert_eq!(r.plaintext_label, Some(r.label));
        assert!((r.probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert_eq!(r.class, classes[r.label]);
    }
    assert!(out.bytes.images_sent > 0 && out.bytes.keys_sent > out.bytes.images_sent);
    let text = out.render();
    assert!(text.contains("plaintext network: same"), "{text}");
    let json = serde_json::to_value(&out).unwrap();
    assert!(json["timings"]["encrypt_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn requests_carry_exactly_the_plans_keys_and_bad_results_are_refused() {
    let net = network();
    let req = Requester::for_architecture(&net.architecture()).unwrap();
    let spec = req.spec();
    let k = req.keys_header();
    assert_eq!(k.galois_keys as usize, spec.galois_steps().len());
    assert_eq!(
        req.key_items().len(),
        spec.galois_steps().len() + usize::from(k.relinearization)
    );
    // requests name the keys by the id of exactly these items, and carry the plan's
    // ciphertexts per image
    let h = req.header(9, 2);
    assert_eq!(h.keys, k.keys);
    assert_eq!(
        h.keys,
        protocol::serve::released::keys_id(req.key_items().iter().map(Vec::as_slice))
    );
    assert_eq!(h.ciphertexts_per_image as usize, spec.input_ciphertexts());
    assert_eq!(h.items(), 2 * spec.input_ciphertexts() as u64);
    // the real network's plan has the skeleton's fingerprint
    let plan = he_agg::infer::InferencePlan::new(&net, &Default::default()).unwrap();
    req.check_fingerprint(&plan.spec().fingerprint()).unwrap();
    let mut other = plan.spec().fingerprint();
    other[0] ^= 1;
    assert!(req.check_fingerprint(&other).is_err());
    // garbage, a request-shaped ciphertext and a truncated one are not results
    assert!(req.decrypt(b"garbage").is_err());
    let ct = req.encrypt(&[0.0; 36]).unwrap().remove(0);
    let e = req.decrypt(&ct).unwrap_err().to_string();
    assert!(e.contains("invalid"), "{e}");
    assert!(req.decrypt(&ct[..ct.len() / 2]).is_err());
}
