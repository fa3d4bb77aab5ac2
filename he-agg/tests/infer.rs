//! Encrypted inference through the public API with 128-bit-secure parameters: the default
//! OrganAMNIST architecture in both modes, the batched packing, the parameter choice and the
//! refusal of bad inputs.

use std::sync::Arc;

use he_agg::ckks::{Ciphertext, CkksContext, wire};
use he_agg::infer::{
    BatchedModel, BatchedSpec, Conv2d, Dense, InferError, InferencePlan, Layer, Model, Network,
    NetworkError, ParamPolicy, choose_parameters, max_depth,
};

fn rng(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

fn values(seed: &mut u64, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng(seed) * scale).collect()
}

/// 28×28×1 → conv 16 k5 s2 → square → dense 2304→128 → square → dense 128→11, weights scaled
/// so the logits spread over a few units, as a trained model's do.
fn default_network(seed: u64) -> Network {
    let s = &mut seed.clone();
    Network::new(
        [1, 28, 28],
        vec![
            Layer::Conv2d(Conv2d {
                in_channels: 1,
                out_channels: 16,
                kernel: 5,
                stride: 2,
                padding: 0,
                weight: values(s, 16 * 25, 0.3),
                bias: values(s, 16, 0.1),
            }),
            Layer::Square,
            Layer::Dense(Dense {
                in_features: 2304,
                out_features: 128,
                weight: values(s, 2304 * 128, 0.05),
                bias: values(s, 128, 0.1),
            }),
            Layer::Quadratic { a: 0.25, b: 0.5 },
            Layer::Dense(Dense {
                in_features: 128,
                out_features: 11,
                weight: values(s, 128 * 11, 0.3),
                bias: values(s, 11, 0.1),
            }),
        ],
    )
    .unwrap()
    .with_normalization(vec![0.47], vec![0.29])
    .unwrap()
}

fn argmax(v: &[f64]) -> usize {
    (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap()
}

fn check(got: &[f64], want: &[f32], tol: f64) {
    let err = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - *w as f64).abs())
        .fold(0.0, f64::max);
    assert!(err < tol, "max error {err}: {got:?} vs {want:?}");
    let want: Vec<f64> = want.iter().map(|&w| w as f64).collect();
    assert_eq!(argmax(got), argmax(&want));
}

#[test]
fn default_network_in_both_modes_matches_the_plain_forward_pass() {
    let net = default_network(1);
    let plan = InferencePlan::new(&net, &ParamPolicy::default()).unwrap();
    let spec = plan.spec();
    assert_eq!(spec.depth(), 5);
    let params = spec.parameters();
    assert!(!params.rlwe().is_insecure());
    assert_eq!(params.n(), 16384);
    // the requester makes exactly the planned keys
    let ctx = CkksContext::new(params.clone()).unwrap();
    let mut kg = ctx.key_generator().unwrap();
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let keys = spec.generate_keys(&mut kg, &sk);
    assert_eq!(keys.galois.len(), spec.galois_steps().len());
    assert!(spec.galois_steps().len() < 64);
    let eval = ctx
        .evaluator(keys.relinearization.as_ref(), Some(&keys.galois))
        .unwrap();
    let dec = ctx.decryptor(&sk).unwrap();
    let pixels: Vec<u8> = (0..784).map(|i| ((i * 37) % 256) as u8).collect();
    let x = net.normalize_hwc(&pixels).unwrap();
    let want = net.forward(&x).unwrap();

    // mode (b): the image under the requester's secret key travels seeded, half size
    let model = Model::plain(&plan, &ctx).unwrap();
    let mut sk_enc = ctx.sk_encryptor(&sk).unwrap();
    assert_eq!(spec.input_ciphertexts(), 1);
    let seeded = sk_enc.encrypt_seeded(&spec.encode_input(&ctx, &x).unwrap()[0]);
    let bytes = wire::encode_seeded_ciphertext(&ctx, &seeded);
    let request = wire::decode_seeded_ciphertext(&ctx, &bytes).unwrap();
    let ct = he_agg::rlwe::expand_seeded(ctx.rlwe(), &request);
    let out = model.evaluate(&eval, &[ct]).unwrap();
    let response = wire::encode_ciphertext(&ctx, &out);
    assert_eq!(response.len(), wire::ciphertext_len(&ctx, 1, 1));
    let out = wire::decode_ciphertext(&ctx, &response).unwrap();
    check(
        &spec.decode_output(&ctx, &dec.decrypt(&out)).unwrap(),
        &want,
        1e-3,
    );

    // mode (a): weights and image under the same public key
    let mut pk_enc = ctx.pk_encryptor(&pk).unwrap();
    let model = Model::encrypted(&plan, &ctx, &mut |pt| pk_enc.encrypt(pt)).unwrap();
    let ct = pk_enc.encrypt(&spec.encode_input(&ctx, &x).unwrap()[0]);
    let out = model.evaluate(&eval, &[ct]).unwrap();
    check(
        &spec.decode_output(&ctx, &dec.decrypt(&out)).unwrap(),
        &want,
        1e-3,
    );
}

#[test]
fn batched_packing_classifies_every_image_of_a_batch() {
    // a reduced image keeps the test quick; the packing does not depend on the size
    let s = &mut 5u64;
    let net = Network::new(
        [1, 12, 12],
        vec![
            Layer::Conv2d(Conv2d {
                in_channels: 1,
                out_channels: 4,
                kernel: 3,
                stride: 2,
                padding: 1,
                weight: values(s, 36, 0.4),
                bias: values(s, 4, 0.1),
            }),
            Layer::Square,
            Layer::AvgPool2d {
                kernel: 2,
                stride: 2,
            },
            Layer::Flatten,
            Layer::Dense(Dense {
                in_features: 36,
                out_features: 16,
                weight: values(s, 36 * 16, 0.3),
                bias: values(s, 16, 0.1),
            }),
            Layer::Square,
            Layer::Dense(Dense {
                in_features: 16,
                out_features: 5,
                weight: values(s, 80, 0.4),
                bias: values(s, 5, 0.1),
            }),
        ],
    )
    .unwrap();
    let spec = BatchedSpec::new(&net, &ParamPolicy::default()).unwrap();
    assert!(!spec.parameters().rlwe().is_insecure());
    let ctx: Arc<CkksContext> = CkksContext::new(spec.parameters().clone()).unwrap();
    let model = BatchedModel::new(&net, &ctx).unwrap();
    let mut kg = ctx.key_generator().unwrap();
    let sk = kg.secret_key();
    let rlk = kg.relinearization_key(&sk);
    let eval = ctx.evaluator(Some(&rlk), None).unwrap();
    let images: Vec<Vec<f32>> = (0..300).map(|_| values(s, 144, 1.5)).collect();
    let refs: Vec<&[f32]> = images.iter().map(Vec::as_slice).collect();
    let mut enc = ctx.sk_encryptor(&sk).unwrap();
    let cts: Vec<Ciphertext> = spec
        .encode_inputs(&ctx, &refs)
        .unwrap()
        .iter()
        .map(|p| enc.encrypt(p))
        .collect();
    assert_eq!(cts.len(), 144);
    let out = model.evaluate(&eval, &cts).unwrap();
    let dec = ctx.decryptor(&sk).unwrap();
    let pts: Vec<_> = out.iter().map(|c| dec.decrypt(c)).collect();
    let logits = spec.decode_outputs(&ctx, &pts, images.len()).unwrap();
    for (im, got) in images.iter().zip(&logits) {
        check(got, &net.forward(im).unwrap(), 1e-3);
    }
}

#[test]
fn parameters_follow_the_depth_and_refuse_networks_too_deep_for_any_secure_set() {
    let policy = ParamPolicy::default();
    for depth in 1..=max_depth(&policy) {
        let p = choose_parameters(depth, 16, &policy).unwrap();
        assert_eq!(p.max_level(), depth + 1);
        let bound = he_agg::rlwe::max_log_qp_128(p.rlwe().log_n()).unwrap();
        assert!(p.rlwe().log_qp() <= bound);
    }
    // a stack of squares deeper than the largest secure ring holds: refused where no party
    // can refresh (refresh off) ...
    let depth = max_depth(&policy) + 1;
    let net = Network::new([1, 2, 2], vec![Layer::Square; depth]).unwrap();
    let no_refresh = ParamPolicy {
        refresh: false,
        ..policy
    };
    let err = InferencePlan::new(&net, &no_refresh).unwrap_err();
    assert!(
        matches!(err, InferError::TooDeep { depth: d, .. } if d == depth),
        "{err}"
    );
    assert!(err.to_string().contains("128-bit"));
    assert!(matches!(
        BatchedSpec::new(&net, &no_refresh),
        Err(InferError::TooDeep { .. })
    ));
    // ... and cut into segments, each within the modulus, where the requester refreshes
    let plan = InferencePlan::new(&net, &policy).unwrap();
    let depths = plan.segment_depths();
    assert!(depths.len() > 1, "{depths:?}");
    assert_eq!(depths.iter().sum::<usize>(), depth, "{depths:?}");
    assert!(depths.iter().all(|&d| d < depth), "{depths:?}");
}

#[test]
fn malformed_descriptions_and_requests_are_refused() {
    let s = &mut 9u64;
    // dense layer whose input size disagrees with the flattened convolution
    let conv = Layer::Conv2d(Conv2d {
        in_channels: 1,
        out_channels: 2,
        kernel: 3,
        stride: 1,
        padding: 0,
        weight: values(s, 18, 0.3),
        bias: values(s, 2, 0.1),
    });
    let bad_dense = Layer::Dense(Dense {
        in_features: 10,
        out_features: 2,
        weight: values(s, 20, 0.3),
        bias: values(s, 2, 0.1),
    });
    assert!(matches!(
        Network::new([1, 5, 5], vec![conv.clone(), bad_dense]),
        Err(NetworkError::ShapeMismatch { layer: 1, .. })
    ));
    // truncated weights
    let short = Layer::Dense(Dense {
        in_features: 18,
        out_features: 2,
        weight: values(s, 35, 0.3),
        bias: values(s, 2, 0.1),
    });
    let err = Network::new([1, 5, 5], vec![conv.clone(), short]).unwrap_err();
    assert!(matches!(err, NetworkError::WeightLen { .. }));
    assert!(err.to_string().contains("36"));
    // a request of the wrong size, level or parameters
    let net = Network::new([1, 5, 5], vec![conv, Layer::Square]).unwrap();
    let plan = InferencePlan::new(&net, &ParamPolicy::default()).unwrap();
    let ctx = CkksContext::new(plan.spec().parameters().clone()).unwrap();
    assert!(plan.spec().encode_input(&ctx, &[0.0; 24]).is_err());
    let mut kg = ctx.key_generator().unwrap();
    let sk = kg.secret_key();
    let keys = plan.spec().generate_keys(&mut kg, &sk);
    let eval = ctx
        .evaluator(keys.relinearization.as_ref(), Some(&keys.galois))
        .unwrap();
    let model = Model::plain(&plan, &ctx).unwrap();
    let pt = ctx
        .encode_reals(&[0.5; 8], ctx.max_level(), ctx.default_scale())
        .unwrap();
    let wrong_level = ctx.sk_encryptor(&sk).unwrap().encrypt(&pt);
    if wrong_level.level() != plan.spec().input_level() {
        assert!(matches!(
            model.evaluate(&eval, std::slice::from_ref(&wrong_level)),
            Err(InferError::InputLevel { .. })
        ));
    }
    // garbage bytes never reach the model: the wire decoder refuses them
    assert!(wire::decode_ciphertext(&ctx, &[0u8; 100]).is_err());
}

#[test]
fn the_clinical_network_at_128_spans_two_ciphertexts_and_matches_the_plain_pass() {
    // the clinical family (`configs/baseline-ct256.toml`) at 128×128: an 8×8 patch embedding to
    // 32 channels on a 16×16 grid, 3×3 convolution, pooling, dense; N = 2^14, the image in two
    // ciphertexts; secure parameters, mode (b), seeded requests through the wire format
    let net = he_agg::infer::testing::clinical_network(128, 1, 3);
    let plan = InferencePlan::new(&net, &ParamPolicy::default()).unwrap();
    let spec = plan.spec();
    assert_eq!(spec.parameters().n(), 1 << 14);
    assert_eq!(spec.input_ciphertexts(), 2);
    assert_eq!(spec.depth(), 5);
    assert!(!spec.parameters().rlwe().is_insecure());
    let he_agg::infer::testing::TestKeys { ctx, sk, eval } = he_agg::infer::testing::keys_for(spec);
    let model = Model::plain(&plan, &ctx).unwrap();
    let dec = ctx.decryptor(&sk).unwrap();
    let mut enc = ctx.sk_encryptor(&sk).unwrap();
    let s = &mut 11u64;
    for _ in 0..2 {
        let px: Vec<u8> = (0..128 * 128)
            .map(|_| ((rng(s) + 1.0) * 127.0) as u8)
            .collect();
        let x = net.normalize_hwc(&px).unwrap();
        let cts: Vec<Ciphertext> = spec
            .encode_input(&ctx, &x)
            .unwrap()
            .iter()
            .map(|pt| {
                let bytes = wire::encode_seeded_ciphertext(&ctx, &enc.encrypt_seeded(pt));
                let seeded = wire::decode_seeded_ciphertext(&ctx, &bytes).unwrap();
                he_agg::rlwe::expand_seeded(ctx.rlwe(), &seeded)
            })
            .collect();
        let out = model.evaluate(&eval, &cts).unwrap();
        let got = spec.decode_output(&ctx, &dec.decrypt(&out)).unwrap();
        let want = net.forward(&x).unwrap();
        check(&got, &want, 1e-3);
    }
}
