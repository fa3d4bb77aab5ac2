//! Residual networks of any depth: the reference pass, the lowering, the skeleton's spec, and
//! encrypted evaluation cut into segments with the requester-aided refresh between them, on
//! 128-bit parameters.

use super::lower::lower;
use super::refresh::{mask, reencrypt, unmask};
use super::testing::{TestKeys, keys_for, residual_network};
use super::*;
use crate::ckks::Ciphertext;
use crate::ring::Prng;

fn image(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn block(body: Vec<Layer>, shortcut: Option<Conv2d>) -> Layer {
    Layer::Residual(Residual { body, shortcut })
}

fn conv(ci: usize, co: usize, k: usize, stride: usize, w: f32) -> Conv2d {
    Conv2d {
        in_channels: ci,
        out_channels: co,
        kernel: k,
        stride,
        padding: k / 2,
        weight: vec![w; co * ci * k * k],
        bias: vec![0.0; co],
    }
}

#[test]
fn a_residual_block_adds_its_shortcut_to_its_body() {
    // 1×2×2 input, body: conv 1→1 k1 (×2), shortcut: identity → y = 3x; global pooling
    let net = Network::new(
        [1, 2, 2],
        vec![
            block(vec![Layer::Conv2d(conv(1, 1, 1, 1, 2.0))], None),
            Layer::ChannelQuadratic {
                a: vec![1.0],
                b: vec![0.0],
                c: vec![1.0],
            },
            Layer::GlobalAvgPool,
        ],
    )
    .unwrap();
    // (3x)² + 1 per position, averaged
    let y = net.forward(&[1.0, 2.0, 3.0, 4.0]).unwrap();
    let want = [9.0f32, 36.0, 81.0, 144.0]
        .iter()
        .map(|v| v + 1.0)
        .sum::<f32>()
        / 4.0;
    assert_eq!(y, vec![want]);
    // a projection that changes channels and size
    let proj = Network::new(
        [1, 4, 4],
        vec![block(
            vec![Layer::Conv2d(conv(1, 2, 3, 2, 0.1))],
            Some(conv(1, 2, 1, 2, 1.0)),
        )],
    )
    .unwrap();
    assert_eq!(proj.shapes()[0], Shape::Chw([2, 2, 2]));
}

#[test]
fn malformed_blocks_are_refused() {
    let err = |layers| Network::new([2, 4, 4], layers).unwrap_err();
    assert!(matches!(
        err(vec![block(vec![], None)]),
        NetworkError::EmptyBlock { layer: 0 }
    ));
    // the body changes the channels, the identity does not
    assert!(matches!(
        err(vec![block(
            vec![Layer::Conv2d(conv(2, 3, 3, 1, 0.1))],
            None
        )]),
        NetworkError::BlockShapes { layer: 0, .. }
    ));
    // dense layers and nested blocks stay outside bodies
    assert!(matches!(
        err(vec![block(vec![Layer::Flatten], None)]),
        NetworkError::BlockLayer { layer: 0 }
    ));
    assert!(matches!(
        err(vec![block(vec![block(vec![Layer::Square], None)], None)]),
        NetworkError::BlockLayer { layer: 0 }
    ));
    // per-channel coefficients must match the channels
    assert!(matches!(
        err(vec![Layer::ChannelQuadratic {
            a: vec![1.0],
            b: vec![0.0; 2],
            c: vec![0.0; 2]
        }]),
        NetworkError::WeightLen { .. }
    ));
}

#[test]
fn lowering_reproduces_the_reference_through_blocks() {
    let net = residual_network(8, 2, 4, 2, 1, 3);
    let low = lower(&net).unwrap();
    // stem conv + act, two blocks of four levels, the pooled dense map
    assert_eq!(low.depth(), 2 + 4 + 4 + 1);
    assert!(low.has_blocks());
    for seed in 0..3 {
        let x = image(net.input_len(), seed);
        let want = net.forward(&x).unwrap();
        let got = low.apply(&x.iter().map(|&v| v as f64).collect::<Vec<_>>());
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - *w as f64).abs() <= 1e-4 * (1.0 + w.abs() as f64),
                "{g} vs {w}"
            );
        }
    }
    // a zero x² coefficient cannot be folded
    let zero = Network::new(
        [2, 8, 8],
        vec![
            Layer::Conv2d(conv(2, 2, 3, 1, 0.1)),
            Layer::ChannelQuadratic {
                a: vec![0.2, 0.0],
                b: vec![0.5; 2],
                c: vec![0.0; 2],
            },
            Layer::GlobalAvgPool,
        ],
    )
    .unwrap();
    assert!(matches!(
        lower(&zero),
        Err(InferError::ZeroQuadratic {
            layer: 1,
            channel: 1
        })
    ));
}

#[test]
fn a_residual_skeleton_compiles_to_the_real_spec_and_round_trips() {
    let net = residual_network(8, 1, 4, 2, 1, 3);
    let arch = net.architecture();
    let skel = arch.skeleton().unwrap();
    assert_eq!(skel.architecture(), arch);
    let policy = ParamPolicy::default();
    let real = InferencePlan::new(&net, &policy).unwrap();
    let fake = InferencePlan::new(&skel, &policy).unwrap();
    assert_eq!(real.spec().fingerprint(), fake.spec().fingerprint());
    let text = serde_json::to_string(&net).unwrap();
    assert!(text.contains("\"type\":\"residual\""), "{text}");
    assert_eq!(serde_json::from_str::<Network>(&text).unwrap(), net);
    let arch_text = serde_json::to_string(&arch).unwrap();
    assert_eq!(
        serde_json::from_str::<Architecture>(&arch_text).unwrap(),
        arch
    );
}

/// Segments of at least 4 levels, a ring small enough that this network needs cutting.
fn cutting_policy() -> ParamPolicy {
    ParamPolicy {
        max_log_n: 14,
        ..ParamPolicy::default()
    }
}

fn encrypt(k: &TestKeys, spec: &InferenceSpec, x: &[f32]) -> Vec<Ciphertext> {
    let mut enc = k.ctx.sk_encryptor(&k.sk).unwrap();
    spec.encode_input(&k.ctx, x)
        .unwrap()
        .iter()
        .map(|pt| enc.encrypt(pt))
        .collect()
}

#[test]
fn a_deep_network_is_cut_and_refreshed_by_the_requester() {
    // 2 + 3 stages × 2 blocks × 4 + 1 = 27 levels: more than N = 2^14 holds
    let net = residual_network(8, 1, 4, 3, 2, 3);
    let plan = InferencePlan::new(&net, &cutting_policy()).unwrap();
    let spec = plan.spec();
    assert_eq!(spec.depth(), 27);
    eprintln!(
        "N = {}, scale 2^{}, input level {}, refreshes {:?}",
        spec.parameters().n(),
        spec.parameters().log_scale(),
        spec.input_level(),
        spec.refreshes()
    );
    assert!(spec.segments() >= 3, "{} segments", spec.segments());
    assert!(!spec.parameters().rlwe().is_insecure());
    for r in spec.refreshes() {
        assert!(r.level < spec.input_level());
        // the base keeps the mask 2^64 above the values
        let ctx = crate::ckks::CkksContext::new(spec.parameters().clone()).unwrap();
        assert!(
            ctx.log_q(r.level) >= r.scale.log2() + 10.0 + 64.0,
            "{}",
            ctx.log_q(r.level)
        );
    }
    let k = keys_for(spec);
    let model = Model::plain(&plan, &k.ctx).unwrap();
    let x = image(net.input_len(), 4);
    let cts = encrypt(&k, spec, &x);
    // a cut plan is not evaluated in one go
    assert!(matches!(
        model.evaluate(&k.eval, &cts),
        Err(InferError::NeedsRefresh { .. })
    ));
    let mut prng = Prng::from_os().unwrap();
    let mut seen = Vec::new();
    let out = model
        .evaluate_refreshed(&k.eval, &cts, |i, ct| {
            let (masked, m) = mask(&k.ctx, spec, i, &ct, &mut prng)?;
            assert_eq!(masked.level(), spec.refreshes()[i].level);
            // what the requester decrypts is the mask, not the values
            let pt = k.ctx.decryptor(&k.sk)?.decrypt(&masked);
            let read = k.ctx.decode_reals(&pt)?;
            seen.push(read[..8].iter().map(|v| v.abs()).fold(0.0, f64::max));
            let fresh = reencrypt(&k.ctx, spec, i, &k.sk, &masked)?;
            assert_eq!(fresh.level(), spec.input_level());
            let fresh = crate::rlwe::expand_seeded(k.ctx.rlwe(), &fresh);
            unmask(&k.ctx, spec, fresh, m)
        })
        .unwrap();
    assert_eq!(seen.len(), spec.refreshes().len());
    assert!(seen.iter().all(|&v| v > 1e6), "masked values read {seen:?}");
    let pt = k.ctx.decryptor(&k.sk).unwrap().decrypt(&out);
    let got = spec.decode_output(&k.ctx, &pt).unwrap();
    let want = net.forward(&x).unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!(
            (g - *w as f64).abs() < 1e-2 * (1.0 + w.abs() as f64),
            "{got:?} vs {want:?}"
        );
    }
}

#[test]
fn refreshes_refuse_what_the_plan_does_not_say() {
    let net = residual_network(8, 1, 4, 3, 2, 3);
    let plan = InferencePlan::new(&net, &cutting_policy()).unwrap();
    let spec = plan.spec();
    let k = keys_for(spec);
    let model = Model::plain(&plan, &k.ctx).unwrap();
    let cts = encrypt(&k, spec, &image(net.input_len(), 1));
    let out = model.evaluate_segment(&k.eval, 0, &cts).unwrap();
    let mut prng = Prng::from_os().unwrap();
    // an index past the plan's refreshes
    let past = spec.refreshes().len();
    assert!(matches!(
        mask(&k.ctx, spec, past, &out, &mut prng),
        Err(InferError::RefreshIndex { .. })
    ));
    let (masked, m) = mask(&k.ctx, spec, 0, &out, &mut prng).unwrap();
    // a requester refuses a ciphertext at another level or scale than the plan's
    let lower = k.eval.drop_levels(&masked, 1).unwrap();
    assert!(reencrypt(&k.ctx, spec, 0, &k.sk, &lower).is_err());
    let mut rescaled = masked.clone();
    rescaled.scale *= 2.0;
    assert!(reencrypt(&k.ctx, spec, 0, &k.sk, &rescaled).is_err());
    // a server refuses a re-encryption at another level, and a segment refuses a wrong input
    let fresh = reencrypt(&k.ctx, spec, 0, &k.sk, &masked).unwrap();
    let fresh = crate::rlwe::expand_seeded(k.ctx.rlwe(), &fresh);
    let short = k.eval.drop_levels(&fresh, 1).unwrap();
    assert!(unmask(&k.ctx, spec, short.clone(), m).is_err());
    // a later segment takes one refreshed ciphertext, nothing else
    assert!(matches!(
        model.evaluate_segment(&k.eval, 1, &[fresh.clone(), fresh.clone()]),
        Err(InferError::InputCiphertexts { .. })
    ));
    assert!(model.evaluate_segment(&k.eval, 1, &[short]).is_err());
    assert!(
        model
            .evaluate_segment(&k.eval, spec.segments(), &[fresh])
            .is_err()
    );
}

#[test]
fn a_residual_network_evaluates_with_plain_and_encrypted_weights() {
    // one stage, one block: 2 + 4 + 1 = 7 levels, no cut
    let net = residual_network(6, 1, 2, 1, 1, 2);
    let plan = InferencePlan::new(&net, &ParamPolicy::default()).unwrap();
    assert_eq!((plan.spec().depth(), plan.spec().segments()), (7, 1));
    let k = keys_for(plan.spec());
    let mut enc = k.ctx.sk_encryptor(&k.sk).unwrap();
    let plain = Model::plain(&plan, &k.ctx).unwrap();
    let encrypted = Model::encrypted(&plan, &k.ctx, &mut |pt| enc.encrypt(pt)).unwrap();
    // the encrypted model's structure is the architecture's: it rebuilds from its ciphertexts
    let cts: Vec<Ciphertext> = encrypted.ciphertexts().into_iter().cloned().collect();
    assert_eq!(cts.len(), Model::encrypted_len(&plan, &k.ctx).unwrap());
    let rebuilt = Model::from_ciphertexts(&plan, &k.ctx, cts).unwrap();
    let x = image(net.input_len(), 9);
    let want = net.forward(&x).unwrap();
    for model in [&plain, &encrypted, &rebuilt] {
        let out = model
            .evaluate(&k.eval, &encrypt(&k, plan.spec(), &x))
            .unwrap();
        let pt = k.ctx.decryptor(&k.sk).unwrap().decrypt(&out);
        let got = plan.spec().decode_output(&k.ctx, &pt).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - *w as f64).abs() < 1e-3 * (1.0 + w.abs() as f64),
                "{got:?} vs {want:?}"
            );
        }
    }
}

#[test]
fn a_model_within_a_memory_budget_evaluates_as_the_whole_one() {
    let net = residual_network(8, 1, 4, 3, 2, 3);
    let plan = std::sync::Arc::new(InferencePlan::new(&net, &cutting_policy()).unwrap());
    let spec = plan.spec();
    let segments = spec.segments();
    assert!(segments >= 3, "{segments} segments");
    let k = keys_for(spec);
    let whole = Model::plain(&plan, &k.ctx).unwrap();
    let (all, bytes) = whole.held();
    assert_eq!(all, segments);
    let none = Model::plain_within(&plan, &k.ctx, 0).unwrap();
    assert_eq!(none.held(), (0, 0));
    let enough = Model::plain_within(&plan, &k.ctx, bytes).unwrap();
    assert_eq!(enough.held(), (segments, bytes));
    let part = Model::plain_within(&plan, &k.ctx, bytes / 2).unwrap();
    let (held, held_bytes) = part.held();
    assert!(
        held > 0 && held < segments && held_bytes <= bytes / 2,
        "{held} {held_bytes}"
    );
    // every segment gives the same ciphertext, whether held or encoded when used (twice in a
    // row: the second from the kept encoding)
    let mut enc = k.ctx.sk_encryptor(&k.sk).unwrap();
    let dec = k.ctx.decryptor(&k.sk).unwrap();
    let mut input = encrypt(&k, spec, &image(net.input_len(), 4));
    for s in 0..segments {
        let want = whole.evaluate_segment(&k.eval, s, &input).unwrap();
        for model in [&none, &part, &part, &enough] {
            assert!(
                model.evaluate_segment(&k.eval, s, &input).unwrap() == want,
                "segment {s}"
            );
        }
        if s + 1 < segments {
            let fresh = super::refresh::renew(&k.ctx, &dec, &mut enc, &want, spec.input_level());
            input = vec![fresh.unwrap()];
        }
    }
    // a segment past the plan is refused, encoded or not
    assert!(none.evaluate_segment(&k.eval, segments, &input).is_err());
}
