//! Mode (a) end to end with a consortium, on 128-bit parameters: three hospitals make a plan's
//! keys collectively (none holds the secret) and Shamir-share their secrets 2-of-3; the model
//! and an image are encrypted under the collective key; the network is evaluated ciphertext ×
//! ciphertext; two hospitals switch the result to a requester's key with flooded shares; only the
//! requester reads the logits, which match the plain network. The flooding sits 2^λ above the
//! noise the result actually carries (measured here with the collective secret, which only a
//! test forms), not merely above a fresh encryption's.

use he_agg::ckks::CkksContext;
use he_agg::infer::calibrate::{Weights, calibrate_result_noise};
use he_agg::infer::testing::consortium;
use he_agg::infer::threshold::{CollectiveKeys, RESULT_LAMBDA, result_flooding};
use he_agg::infer::{Conv2d, Dense, InferError, InferencePlan, Layer, Model, Network, ParamPolicy};
use he_agg::multiparty::{Crs, PublicKeySwitch};
use he_agg::ring::Prng;

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

/// conv 1→2 k3 s2 → square → dense 18→4: depth 3 (the default network's shape, smaller).
fn network() -> Network {
    let s = &mut 7u64;
    Network::new(
        [1, 6, 6],
        vec![
            Layer::Conv2d(Conv2d {
                in_channels: 1,
                out_channels: 2,
                kernel: 3,
                stride: 2,
                padding: 1,
                weight: (0..18).map(|_| lcg(s) / 3.0).collect(),
                bias: vec![0.05, -0.1],
            }),
            Layer::Square,
            Layer::Flatten,
            Layer::Dense(Dense {
                in_features: 18,
                out_features: 4,
                weight: (0..72).map(|_| lcg(s) / 4.0).collect(),
                bias: vec![0.1, -0.2, 0.0, 0.3],
            }),
        ],
    )
    .unwrap()
}

#[test]
fn a_consortium_serves_an_encrypted_model_to_a_requester_only() {
    let net = network();
    let plan = InferencePlan::new(&net, &ParamPolicy::threshold_switched(4)).unwrap();
    let spec = plan.spec();
    // three hospitals make the keys collectively and hold 2-of-3 shares of the secret
    let c = consortium(spec, 3, 2);
    let ctx = &c.ctx;
    assert!(!ctx.params().rlwe().is_insecure());
    assert!(spec.output_level() >= 2, "room under the result");
    let (eval, pk) = (&c.eval, &c.public_key);
    let ids = [1u32, 2, 3];
    let mut prng = Prng::from_os().unwrap();

    // the model (encrypted by a hospital) and the image (by the requester), collective key
    let mut enc = ctx.pk_encryptor(pk).unwrap();
    let model = Model::encrypted(&plan, ctx, &mut |pt| enc.encrypt(pt)).unwrap();
    let x: Vec<f32> = {
        let s = &mut 3u64;
        (0..net.input_len()).map(|_| lcg(s)).collect()
    };
    let want = net.forward(&x).unwrap();
    let image: Vec<_> = spec
        .encode_input(ctx, &x)
        .unwrap()
        .iter()
        .map(|pt| enc.encrypt(pt))
        .collect();
    let out = model.evaluate(eval, &image).unwrap();
    assert_eq!(out.level(), spec.output_level());

    // hospitals 1 and 3 switch the result to the requester's key
    let mut rkg = ctx.key_generator().unwrap();
    let requester_sk = rkg.secret_key();
    let requester_pk = rkg.public_key(&requester_sk);
    let calibration = calibrate_result_noise(
        &std::sync::Arc::new(plan.clone()),
        &net,
        ids.len(),
        Weights::Encrypted,
    )
    .unwrap();
    let (flooding, slot_error) = result_flooding(
        ctx,
        spec,
        calibration.bound,
        ids.len(),
        2,
        RESULT_LAMBDA,
        1024.0,
    )
    .unwrap();
    assert!(slot_error < 1e-2, "switching error {slot_error}");

    // the noise this result actually carries: against a second, independent evaluation (model
    // and image encrypted afresh), decrypted with the collective secret
    let collective = c.collective_secret();
    let again = Model::encrypted(&plan, ctx, &mut |pt| enc.encrypt(pt)).unwrap();
    let image2: Vec<_> = spec
        .encode_input(ctx, &x)
        .unwrap()
        .iter()
        .map(|pt| enc.encrypt(pt))
        .collect();
    let out2 = again.evaluate(eval, &image2).unwrap();
    let dec = ctx.decryptor(&collective).unwrap();
    let (mut d1, d2) = (dec.decrypt(&out), dec.decrypt(&out2));
    ctx.rlwe()
        .ring()
        .sub_assign(&mut d1.poly, &d2.poly, ctx.rlwe().q_basis(out.level()));
    let noise = ctx
        .lift_coefficients(&d1)
        .iter()
        .fold(0f64, |m, c| m.max(c.abs()))
        / 2f64.sqrt();
    let over = (flooding.sigma() / noise).log2();
    assert!(
        over >= 30.0,
        "flooding 2^{:.1} is only 2^{over:.1} over the result's noise 2^{:.1}",
        flooding.sigma().log2(),
        noise.log2()
    );
    assert!(
        calibration.measured >= noise / 4.0,
        "calibration 2^{:.1} under the noise seen 2^{:.1}",
        calibration.measured.log2(),
        noise.log2()
    );
    // served mode (a): each switching keyholder evaluates with the weights it holds; that
    // noise too sits under its calibration
    let plain = Model::plain(&plan, ctx).unwrap();
    let mut plain_runs = Vec::new();
    for _ in 0..2 {
        let image: Vec<_> = spec
            .encode_input(ctx, &x)
            .unwrap()
            .iter()
            .map(|pt| enc.encrypt(pt))
            .collect();
        plain_runs.push(dec.decrypt(&plain.evaluate(eval, &image).unwrap()));
    }
    let (mut p1, p2) = (plain_runs[0].clone(), &plain_runs[1]);
    ctx.rlwe()
        .ring()
        .sub_assign(&mut p1.poly, &p2.poly, ctx.rlwe().q_basis(out.level()));
    let plain_noise = ctx
        .lift_coefficients(&p1)
        .iter()
        .fold(0f64, |m, c| m.max(c.abs()))
        / 2f64.sqrt();
    let plain_cal = calibrate_result_noise(
        &std::sync::Arc::new(plan.clone()),
        &net,
        ids.len(),
        Weights::Plain,
    )
    .unwrap();
    assert!(
        plain_cal.measured >= plain_noise / 4.0,
        "plain-weights calibration 2^{:.1} under the noise seen 2^{:.1}",
        plain_cal.measured.log2(),
        plain_noise.log2()
    );
    let (plain_flooding, _) = result_flooding(
        ctx,
        spec,
        plain_cal.bound,
        ids.len(),
        2,
        RESULT_LAMBDA,
        1024.0,
    )
    .unwrap();
    assert!((plain_flooding.sigma() / plain_noise).log2() >= 30.0);

    let pcks = PublicKeySwitch::new(ctx, flooding, 2);
    let active = [1u32, 3];
    let switched = c
        .switch(&pcks, &c.additive(&active), &requester_pk, &out, &mut prng)
        .unwrap();
    let got = spec
        .decode_output(
            ctx,
            &ctx.decryptor(&requester_sk).unwrap().decrypt(&switched),
        )
        .unwrap();
    let err = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - f64::from(*w)).abs())
        .fold(0.0, f64::max);
    assert!(err < 0.05, "logits {got:?} vs {want:?}: error {err}");

    // nobody else reads it: not a hospital's own share, not another key
    let other = ctx.key_generator().unwrap().secret_key();
    for sk in [&other, &c.secrets[0]] {
        let wrong = spec
            .decode_output(ctx, &ctx.decryptor(sk).unwrap().decrypt(&switched))
            .unwrap();
        let far = wrong
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - f64::from(*w)).abs())
            .fold(0.0, f64::max);
        assert!(far > 1e3, "a wrong key read the result (error {far})");
    }
}

#[test]
fn weak_flooding_or_foreign_galois_shares_are_refused() {
    let net = network();
    let plan = InferencePlan::new(&net, &ParamPolicy::threshold_switched(4)).unwrap();
    let spec = plan.spec();
    let ctx = CkksContext::new(spec.parameters().clone()).unwrap();
    assert!(matches!(
        result_flooding(&ctx, spec, 1.0, 3, 2, 29, 1024.0),
        Err(InferError::Multiparty(_))
    ));
    // mode (b)'s plan leaves no room under the result for the flooding
    let tight = InferencePlan::new(&net, &ParamPolicy::default()).unwrap();
    let tight_ctx = CkksContext::new(tight.spec().parameters().clone()).unwrap();
    assert!(result_flooding(&tight_ctx, tight.spec(), 1.0, 3, 2, RESULT_LAMBDA, 1024.0).is_err());
    // a bound that is not a number is refused
    assert!(result_flooding(&ctx, spec, f64::NAN, 3, 2, RESULT_LAMBDA, 1024.0).is_err());
    // a hospital whose shares miss a rotation is refused
    let keys = CollectiveKeys::new(spec, &ctx, &Crs::from_seed([1; 32])).unwrap();
    let mut prng = Prng::from_os().unwrap();
    let sk = ctx.key_generator().unwrap().secret_key();
    let (_, mut shares) = keys.round1(&sk, &mut prng).unwrap();
    let good = shares.clone();
    assert!(!shares.galois.is_empty());
    shares.galois.pop();
    let mut acc = good.clone();
    assert!(keys.aggregate1(&mut acc, &shares).is_err());
    assert!(keys.aggregate1(&mut acc, &good).is_ok());
}
