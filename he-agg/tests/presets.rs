//! The named presets used through the public API only, as the rest of HEAL uses them.

use he_agg::ckks::{CkksContext, Complex, Parameters, Preset, wire};

#[test]
fn aggregation_preset_sums_weighted_updates_within_1e9() {
    let ctx = CkksContext::new(Parameters::preset(Preset::Aggregation)).unwrap();
    let mut kg = ctx.key_generator().unwrap();
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let eval = ctx.evaluator(None, None).unwrap();
    let n = ctx.n();
    let weights = [3i64, 100_000, 17];
    let updates: Vec<Vec<f64>> = (0..3)
        .map(|h| {
            (0..n)
                .map(|i| ((i * 7 + h * 13) % 200) as f64 / 100.0 - 1.0)
                .collect()
        })
        .collect();
    let mut enc = ctx.pk_encryptor(&pk).unwrap();
    let scale = 2f64.powi(60);
    let mut acc = None;
    for (u, &w) in updates.iter().zip(&weights) {
        let ct = enc.encrypt(&ctx.encode_real_pairs(u, ctx.max_level(), scale).unwrap());
        // a fresh ciphertext carries N reals in ≤ 32 bytes each
        assert!(wire::encode_ciphertext(&ctx, &ct).len() <= 32 * n);
        let weighted = eval.mul_int(&ct, w).unwrap();
        acc = Some(match acc {
            None => weighted,
            Some(a) => eval.add(&a, &weighted).unwrap(),
        });
    }
    let got = ctx
        .decode_real_pairs(&ctx.decryptor(&sk).unwrap().decrypt(&acc.unwrap()))
        .unwrap();
    let total: i64 = weights.iter().sum();
    for i in 0..n {
        let want: f64 = updates
            .iter()
            .zip(&weights)
            .map(|(u, &w)| u[i] * w as f64)
            .sum();
        assert!(
            (got[i] / total as f64 - want / total as f64).abs() < 1e-9,
            "index {i}"
        );
    }
}

#[test]
fn inference_preset_supports_its_depth() {
    // six multiplications with rescaling, a rotation and conjugation at the top level
    let ctx = CkksContext::new(Parameters::preset(Preset::Inference)).unwrap();
    let mut kg = ctx.key_generator().unwrap();
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let rlk = kg.relinearization_key(&sk);
    let gk = kg.galois_keys(&sk, &[1], true);
    let eval = ctx.evaluator(Some(&rlk), Some(&gk)).unwrap();
    let v: Vec<Complex> = (0..ctx.slots())
        .map(|i| Complex::new(((i % 17) as f64 - 8.0) / 9.0, 0.0))
        .collect();
    let mut ct = ctx.pk_encryptor(&pk).unwrap().encrypt(
        &ctx.encode(&v, ctx.max_level(), ctx.default_scale())
            .unwrap(),
    );
    ct = eval.conjugate(&eval.rotate(&ct, 1).unwrap()).unwrap();
    let slots = ctx.slots();
    let mut want: Vec<Complex> = (0..slots).map(|j| v[(j + 1) % slots].conj()).collect();
    for _ in 0..6 {
        ct = eval.rescale(&eval.mul_relin(&ct, &ct).unwrap()).unwrap();
        want = want.iter().map(|z| *z * *z).collect();
    }
    assert_eq!(ct.level(), 1);
    let got = ctx
        .decode(&ctx.decryptor(&sk).unwrap().decrypt(&ct))
        .unwrap();
    let err = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (*a - *b).abs())
        .fold(0.0, f64::max);
    assert!(err < 1e-3, "error after depth 6: {err}");
}
