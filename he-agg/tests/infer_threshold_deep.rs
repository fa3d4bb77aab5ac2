//! Mode (a) at any depth: a residual network deeper than one ring holds is cut into segments
//! under the served policy, and between them the t switching keyholders refresh the
//! ciphertext collectively (each a flooded share of the ciphertext it computed itself; the sum
//! finalized by whoever combines); the result is switched to a requester's key and reads the
//! plain network's logits. A ciphertext whose noise was crafted past the plan's bound is not
//! refreshed.

use he_agg::infer::calibrate::{Weights, calibrate_result_noise};
use he_agg::infer::testing::{consortium, residual_network, tiny_network};
use he_agg::infer::threshold::{served_flooding, served_policy, served_refresh};
use he_agg::infer::{InferError, InferencePlan, Model, ParamPolicy};
use he_agg::multiparty::{MultipartyError, PublicKeySwitch};
use he_agg::ring::{Poly, Prng};

fn image(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 29 + 7) % 31) as f32 / 31.0)
        .collect()
}

fn argmax(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

#[test]
fn keyholders_refresh_a_deep_served_network_between_its_segments() {
    let net = residual_network(8, 1, 4, 2, 1, 3);
    let plan = InferencePlan::new(&net, &served_policy()).unwrap();
    let spec = plan.spec();
    eprintln!(
        "N = 2^{}, scale 2^{}, depth {}, input level {}, refreshes {:?}",
        spec.parameters().n().trailing_zeros(),
        spec.parameters().log_scale(),
        spec.depth(),
        spec.input_level(),
        spec.refreshes()
    );
    assert!(spec.segments() >= 2, "{} segments", spec.segments());
    assert!(!spec.parameters().rlwe().is_insecure());

    let (hospitals, t) = (3u32, 2usize);
    let c = consortium(spec, hospitals, t);
    let ctx = &c.ctx;
    let cal = calibrate_result_noise(
        &std::sync::Arc::new(plan.clone()),
        &net,
        hospitals as usize,
        Weights::Plain,
    )
    .unwrap();
    let refresh = served_refresh(ctx, spec, &c.crs, cal.bound, hospitals as usize, t).unwrap();
    let (flooding, _) = served_flooding(ctx, spec, cal.bound, hospitals as usize, t).unwrap();
    let active = [1u32, 3];
    let shares = c.additive(&active);

    let model = Model::plain(&plan, ctx).unwrap();
    let x = image(net.input_len());
    let mut enc = ctx.pk_encryptor(&c.public_key).unwrap();
    let cts: Vec<_> = spec
        .encode_input(ctx, &x)
        .unwrap()
        .iter()
        .map(|pt| enc.encrypt(pt))
        .collect();
    assert!(matches!(
        model.evaluate(&c.eval, &cts),
        Err(InferError::NeedsRefresh { .. })
    ));
    let mut prng = Prng::from_os().unwrap();
    let mut refreshed = 0;
    let out = model
        .evaluate_refreshed(&c.eval, &cts, |k, ct| {
            assert_eq!(ct.level(), spec.refreshes()[k].level);
            refreshed += 1;
            Ok(c.refresh(&refresh, &shares, &ct, &mut prng)?)
        })
        .unwrap();
    assert_eq!(refreshed, spec.refreshes().len());

    // switched to the requester's key, flooded, as an unsegmented result is
    let mut rkg = ctx.key_generator().unwrap();
    let requester_sk = rkg.secret_key();
    let requester_pk = rkg.public_key(&requester_sk);
    let pcks = PublicKeySwitch::new(ctx, flooding, t);
    let switched = c
        .switch(&pcks, &shares, &requester_pk, &out, &mut prng)
        .unwrap();
    let got = spec
        .decode_output(
            ctx,
            &ctx.decryptor(&requester_sk).unwrap().decrypt(&switched),
        )
        .unwrap();
    let want: Vec<f64> = net
        .forward(&x)
        .unwrap()
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    let err = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f64::max);
    eprintln!("logits {got:?} vs {want:?}: error {err:.2e}");
    assert!(err < 1e-2 * (1.0 + want.iter().fold(0.0f64, |m, w| m.max(w.abs()))));
    assert_eq!(argmax(&got), argmax(&want));

    // a ciphertext at the refresh level whose c1 is a large constant (c = (0, K): it
    // "decrypts" to K·s) is refused by whoever combines the shares
    let p = spec.refreshes()[0];
    let mut crafted = model.evaluate_segment(&c.eval, 0, &cts).unwrap();
    assert_eq!(crafted.level(), p.level);
    let rl = ctx.rlwe();
    let basis = rl.q_basis(p.level);
    let mut k = Poly::zero(ctx.n(), p.level);
    for (pos, &idx) in basis.iter().enumerate() {
        let q = rl.ring().moduli()[idx].value();
        k.limb_mut(pos).iter_mut().for_each(|v| *v = q / 3);
    }
    crafted.parts[0] = Poly::zero(ctx.n(), p.level);
    crafted.parts[1] = k;
    assert!(matches!(
        c.refresh(&refresh, &shares, &crafted, &mut prng),
        Err(MultipartyError::RefreshRange { .. })
    ));
}

#[test]
fn a_served_network_that_fits_is_planned_as_before() {
    // turning the keyholders' refresh on changes nothing for a network that fits one ring
    let net = tiny_network();
    let served = InferencePlan::new(&net, &served_policy()).unwrap();
    let uncut = InferencePlan::new(
        &net,
        &ParamPolicy {
            refresh: false,
            ..served_policy()
        },
    )
    .unwrap();
    assert_eq!(served.spec().segments(), 1);
    assert_eq!(served.spec().fingerprint(), uncut.spec().fingerprint());
    // and a cut served plan keeps the keyholders' masks' room at every refresh point
    let deep = InferencePlan::new(&residual_network(8, 1, 4, 2, 1, 3), &served_policy()).unwrap();
    let ctx = he_agg::ckks::CkksContext::new(deep.spec().parameters().clone()).unwrap();
    for p in deep.spec().refreshes() {
        assert!(ctx.log_q(p.level) >= p.scale.log2() + 10.0 + 128.0);
    }
}
