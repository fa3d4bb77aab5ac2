//! The device evaluation of whole networks against the CPU's, word for word: on the host
//! reference executor in every test run, and on a GPU where one is present.

use std::sync::Arc;

use super::tests::{image, small_network, small_params};
use super::*;
use crate::ckks::{Ciphertext, CkksContext, SecretKey};
use crate::gpu::{Engine, Exec, HostExec, NttTables};

struct Setup {
    ctx: Arc<CkksContext>,
    sk: SecretKey,
    keys: EvaluationKeys,
    plan: InferencePlan,
}

fn setup(net: &Network) -> Setup {
    let plan = InferencePlan::with_parameters(net, small_params()).unwrap();
    let ctx = CkksContext::new(plan.spec().parameters().clone()).unwrap();
    let mut kg = ctx.key_generator().unwrap();
    let sk = kg.secret_key();
    let keys = plan.spec().generate_keys(&mut kg, &sk);
    Setup {
        ctx,
        sk,
        keys,
        plan,
    }
}

fn request(s: &Setup, x: &[f32]) -> Vec<Ciphertext> {
    let mut enc = s.ctx.sk_encryptor(&s.sk).unwrap();
    s.plan
        .spec()
        .encode_input(&s.ctx, x)
        .unwrap()
        .iter()
        .map(|pt| enc.encrypt(pt))
        .collect()
}

fn host_engine(ctx: &CkksContext) -> Engine<HostExec> {
    let tables = Arc::new(NttTables::new(ctx.rlwe().ring()));
    Engine::new(HostExec::new(tables), ctx.rlwe().clone())
}

/// Both modes on `engine` against [`Model::evaluate`]; returns the device's decrypted logits.
fn check_modes<E>(s: &Setup, make: impl Fn() -> Engine<E>, net: &Network)
where
    E: Exec + Sync,
    E::Buf: Send + Sync,
{
    let eval = s
        .ctx
        .evaluator(s.keys.relinearization.as_ref(), Some(&s.keys.galois))
        .unwrap();
    let mut enc = s.ctx.sk_encryptor(&s.sk).unwrap();
    let plain = Model::plain(&s.plan, &s.ctx).unwrap();
    let encrypted = Model::encrypted(&s.plan, &s.ctx, &mut |pt| enc.encrypt(pt)).unwrap();
    for (model, mode) in [(plain, "b"), (encrypted, "a")] {
        let dev = DeviceModel::new(&model, make(), &s.keys).unwrap();
        let x = image(net.input_len(), 7);
        let cts = request(s, &x);
        let want = model.evaluate(&eval, &cts).unwrap();
        let got = dev.evaluate(&cts).unwrap();
        assert_eq!(
            got, want,
            "mode ({mode}): the device's result differs from the CPU's"
        );
        let logits = s
            .plan
            .spec()
            .decode_output(&s.ctx, &s.ctx.decryptor(&s.sk).unwrap().decrypt(&got))
            .unwrap();
        let reference = net.forward(&x).unwrap();
        for (g, r) in logits.iter().zip(&reference) {
            assert!(
                (g - *r as f64).abs() < 1e-3,
                "mode ({mode}): {logits:?} vs {reference:?}"
            );
        }
    }
}

#[test]
fn the_device_evaluation_equals_the_cpu_in_both_modes() {
    let net = small_network(21);
    let s = setup(&net);
    check_modes(&s, || host_engine(&s.ctx), &net);
}

#[test]
fn the_device_model_refuses_what_does_not_fit() {
    let net = small_network(22);
    let s = setup(&net);
    let model = Model::plain(&s.plan, &s.ctx).unwrap();
    // keys without one of the plan's rotations
    let mut kg = s.ctx.key_generator().unwrap();
    let steps = s.plan.spec().galois_steps();
    let fewer = EvaluationKeys {
        relinearization: s.keys.relinearization.clone(),
        galois: kg.galois_keys(&s.sk, &steps[1..], false),
    };
    assert!(matches!(
        DeviceModel::new(&model, host_engine(&s.ctx), &fewer),
        Err(InferError::Ckks(crate::ckks::CkksError::MissingGaloisKey(
            _
        )))
    ));
    // an engine for other parameters
    let other = CkksContext::new(
        crate::ckks::Parameters::insecure_for_tests(
            10,
            &[50, 33, 33, 33, 33, 33],
            &[50, 50],
            6,
            33.0,
        )
        .unwrap(),
    )
    .unwrap();
    assert!(matches!(
        DeviceModel::new(&model, host_engine(&other), &s.keys),
        Err(InferError::ContextMismatch)
    ));
    // requests of the wrong size or level
    let dev = DeviceModel::new(&model, host_engine(&s.ctx), &s.keys).unwrap();
    let cts = request(&s, &image(net.input_len(), 1));
    assert!(matches!(
        dev.evaluate(&[]),
        Err(InferError::InputCiphertexts { .. })
    ));
    let eval = s.ctx.evaluator(None, None).unwrap();
    let low: Vec<Ciphertext> = cts
        .iter()
        .map(|c| eval.drop_levels(c, 1).unwrap())
        .collect();
    assert!(matches!(
        dev.evaluate(&low),
        Err(InferError::InputLevel { .. })
    ));
    let resident = vec![dev.engine().upload_ct(&low[0]).unwrap()];
    assert!(matches!(
        dev.evaluate_resident(resident),
        Err(InferError::ModelMismatch(_))
    ));
}

#[cfg(feature = "cuda")]
#[test]
fn a_gpu_evaluates_both_modes_as_the_cpu_does() {
    use crate::gpu::CudaExec;
    let net = small_network(23);
    let s = setup(&net);
    let tables = NttTables::new(s.ctx.rlwe().ring());
    if let Err(e) = CudaExec::open(0, &tables, false) {
        println!("skipped: no CUDA device ({e})");
        return;
    }
    let open = || {
        let exec = CudaExec::open(0, &tables, false).expect("opened above");
        Engine::new(exec, s.ctx.rlwe().clone())
    };
    check_modes(&s, open, &net);
}

/// A deep residual network cut into segments, evaluated segment by segment on `make`'s engine
/// against [`Model::evaluate_segment`] with the same inputs, each next segment fed the
/// requester's refresh of the CPU's output; the last output decrypts to the f32 forward pass.
fn check_segments<E>(make: impl Fn(&Arc<CkksContext>) -> Engine<E>)
where
    E: Exec + Sync,
    E::Buf: Send + Sync,
{
    let net = testing::residual_network(8, 1, 4, 3, 2, 3);
    let plan = InferencePlan::new(&net, &ParamPolicy::default()).unwrap();
    let segments = plan.spec().segments();
    assert!(segments >= 3, "{segments} segments");
    let ctx = CkksContext::new(plan.spec().parameters().clone()).unwrap();
    let mut kg = ctx.key_generator().unwrap();
    let sk = kg.secret_key();
    let keys = plan.spec().generate_keys(&mut kg, &sk);
    let s = Setup {
        ctx: ctx.clone(),
        sk,
        keys,
        plan,
    };
    let eval = ctx
        .evaluator(s.keys.relinearization.as_ref(), Some(&s.keys.galois))
        .unwrap();
    let model = Model::plain(&s.plan, &ctx).unwrap();
    let dev = DeviceModel::new(&model, make(&ctx), &s.keys).unwrap();
    // the whole network at once needs its refreshes
    let x = image(net.input_len(), 9);
    let mut inputs = request(&s, &x);
    assert!(matches!(
        dev.evaluate(&inputs),
        Err(InferError::NeedsRefresh { .. })
    ));
    for k in 0..segments {
        let want = model.evaluate_segment(&eval, k, &inputs).unwrap();
        let got = dev.evaluate_segment(k, &inputs).unwrap();
        assert_eq!(
            got, want,
            "segment {k}: the device's output differs from the CPU's"
        );
        if k + 1 == segments {
            let pt = ctx.decryptor(&s.sk).unwrap().decrypt(&got);
            let logits = s.plan.spec().decode_output(&ctx, &pt).unwrap();
            let reference = net.forward(&x).unwrap();
            for (g, r) in logits.iter().zip(&reference) {
                assert!(
                    (g - *r as f64).abs() < 1e-2 * (1.0 + r.abs() as f64),
                    "{logits:?} vs {reference:?}"
                );
            }
        } else {
            let fresh = refresh::reencrypt(&ctx, s.plan.spec(), k, &s.sk, &want).unwrap();
            inputs = vec![crate::rlwe::expand_seeded(ctx.rlwe(), &fresh)];
        }
    }
    // a segment that does not exist is refused
    assert!(dev.evaluate_segment(segments, &inputs).is_err());
}

#[test]
fn the_device_evaluates_a_deep_model_segment_by_segment_as_the_cpu_does() {
    check_segments(|ctx| host_engine(ctx));
}

#[cfg(feature = "cuda")]
#[test]
fn a_gpu_evaluates_a_deep_model_segment_by_segment_as_the_cpu_does() {
    use crate::gpu::CudaExec;
    let probe = InferencePlan::new(
        &testing::residual_network(8, 1, 4, 3, 2, 3),
        &ParamPolicy::default(),
    )
    .unwrap();
    let ring = CkksContext::new(probe.spec().parameters().clone()).unwrap();
    if let Err(e) = CudaExec::open(0, &NttTables::new(ring.rlwe().ring()), false) {
        println!("skipped: no CUDA device ({e})");
        return;
    }
    check_segments(|ctx| {
        let exec =
            CudaExec::open(0, &NttTables::new(ctx.rlwe().ring()), false).expect("opened above");
        Engine::new(exec, ctx.rlwe().clone())
    });
}

/// The batched packing on `engine` against [`BatchedModel::evaluate`].
fn check_batched<E>(engine: Engine<E>, net: &Network, ctx: &Arc<CkksContext>)
where
    E: Exec + Sync,
    E::Buf: Send + Sync,
{
    let model = BatchedModel::new(net, ctx).unwrap();
    let spec = model.spec();
    let mut kg = ctx.key_generator().unwrap();
    let sk = kg.secret_key();
    let keys = EvaluationKeys {
        relinearization: Some(kg.relinearization_key(&sk)),
        galois: crate::ckks::GaloisKeys::new(),
    };
    let eval = ctx.evaluator(keys.relinearization.as_ref(), None).unwrap();
    let images: Vec<Vec<f32>> = (0..19).map(|i| image(net.input_len(), 40 + i)).collect();
    let refs: Vec<&[f32]> = images.iter().map(Vec::as_slice).collect();
    let mut enc = ctx.sk_encryptor(&sk).unwrap();
    let cts: Vec<Ciphertext> = spec
        .encode_inputs(ctx, &refs)
        .unwrap()
        .iter()
        .map(|pt| enc.encrypt(pt))
        .collect();
    let want = model.evaluate(&eval, &cts).unwrap();
    let dev = DeviceBatchedModel::new(&model, engine, &keys).unwrap();
    let got = dev.evaluate(&cts).unwrap();
    assert_eq!(got, want, "the device's batch differs from the CPU's");
    let dec = ctx.decryptor(&sk).unwrap();
    let pts: Vec<_> = got.iter().map(|c| dec.decrypt(c)).collect();
    let logits = spec.decode_outputs(ctx, &pts, images.len()).unwrap();
    for (im, l) in images.iter().zip(&logits) {
        let reference = net.forward(im).unwrap();
        for (g, r) in l.iter().zip(&reference) {
            assert!((g - *r as f64).abs() < 1e-3, "{l:?} vs {reference:?}");
        }
    }
    // a batch of the wrong width, and keys without relinearization
    assert!(matches!(
        dev.evaluate(&cts[1..]),
        Err(InferError::BatchInputs { .. })
    ));
    let none = EvaluationKeys {
        relinearization: None,
        galois: crate::ckks::GaloisKeys::new(),
    };
    assert!(DeviceBatchedModel::new(&model, host_engine(ctx), &none).is_err());
}

#[test]
fn the_device_batch_equals_the_cpu_batch() {
    let net = small_network(24);
    let ctx = CkksContext::new(small_params()).unwrap();
    check_batched(host_engine(&ctx), &net, &ctx);
}

#[cfg(feature = "cuda")]
#[test]
fn a_gpu_evaluates_a_batch_as_the_cpu_does() {
    use crate::gpu::CudaExec;
    let net = small_network(25);
    let ctx = CkksContext::new(small_params()).unwrap();
    match CudaExec::open(0, &NttTables::new(ctx.rlwe().ring()), false) {
        Ok(exec) => check_batched(Engine::new(exec, ctx.rlwe().clone()), &net, &ctx),
        Err(e) => println!("skipped: no CUDA device ({e})"),
    }
}
