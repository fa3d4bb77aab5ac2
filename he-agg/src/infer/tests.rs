//! End-to-end encrypted evaluation against the plain reference, on small insecure parameters
//! (the logic, not the security, is under test here).

use super::*;
use crate::ckks::{Ciphertext, CkksContext, Parameters};
use crate::infer::testing;

pub(crate) fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

fn conv(ci: usize, co: usize, k: usize, s: usize, p: usize, seed: &mut u64) -> Layer {
    let fan = (ci * k * k) as f32;
    Layer::Conv2d(Conv2d {
        in_channels: ci,
        out_channels: co,
        kernel: k,
        stride: s,
        padding: p,
        weight: (0..co * ci * k * k)
            .map(|_| lcg(seed) / fan.sqrt())
            .collect(),
        bias: (0..co).map(|_| lcg(seed) * 0.1).collect(),
    })
}

fn dense(i: usize, o: usize, seed: &mut u64) -> Layer {
    Layer::Dense(Dense {
        in_features: i,
        out_features: o,
        weight: (0..i * o).map(|_| lcg(seed) / (i as f32).sqrt()).collect(),
        bias: (0..o).map(|_| lcg(seed) * 0.1).collect(),
    })
}

/// conv 2×3×3 s1 p1 → quadratic → avg-pool 2 → dense → square → dense: depth 5 with the pool
/// composed into the dense map.
pub(super) fn small_network(seed: u64) -> Network {
    let s = &mut seed.clone();
    Network::new(
        [2, 6, 6],
        vec![
            conv(2, 3, 3, 1, 1, s),
            Layer::Quadratic { a: 0.3, b: 0.8 },
            Layer::AvgPool2d {
                kernel: 2,
                stride: 2,
            },
            Layer::Flatten,
            dense(27, 12, s),
            Layer::Square,
            dense(12, 5, s),
        ],
    )
    .unwrap()
}

pub(super) fn small_params() -> Parameters {
    Parameters::insecure_for_tests(10, &[50, 33, 33, 33, 33, 33], &[50, 50], 3, 33.0).unwrap()
}

pub(super) fn image(len: usize, seed: u64) -> Vec<f32> {
    let s = &mut seed.clone();
    (0..len).map(|_| lcg(s)).collect()
}

fn max_err(got: &[f64], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - *w as f64).abs())
        .fold(0.0, f64::max)
}

use super::testing::{TestKeys as Keys, keys_for};

fn run(model: &Model, k: &Keys, x: &[f32]) -> Vec<f64> {
    let spec = model.spec();
    let mut enc = k.ctx.sk_encryptor(&k.sk).unwrap();
    let cts: Vec<Ciphertext> = spec
        .encode_input(&k.ctx, x)
        .unwrap()
        .iter()
        .map(|pt| enc.encrypt(pt))
        .collect();
    let out = model.evaluate(&k.eval, &cts).unwrap();
    assert_eq!(out.level(), 1);
    let pt = k.ctx.decryptor(&k.sk).unwrap().decrypt(&out);
    spec.decode_output(&k.ctx, &pt).unwrap()
}

#[test]
fn plain_weights_match_the_reference() {
    let net = small_network(11);
    let plan = InferencePlan::with_parameters(&net, small_params()).unwrap();
    assert_eq!(plan.spec().depth(), 5);
    let k = keys_for(plan.spec());
    // only the planned rotations have keys, and the evaluation needs no others
    assert_eq!(k.eval.context().slots(), 512);
    let model = Model::plain(&plan, &k.ctx).unwrap();
    for seed in 0..3 {
        let x = image(net.input_len(), seed);
        let want = net.forward(&x).unwrap();
        let got = run(&model, &k, &x);
        assert!(max_err(&got, &want) < 1e-3, "{got:?} vs {want:?}");
    }
}

#[test]
fn encrypted_weights_match_the_reference() {
    let net = small_network(12);
    let plan = InferencePlan::with_parameters(&net, small_params()).unwrap();
    let k = keys_for(plan.spec());
    let mut enc = k.ctx.sk_encryptor(&k.sk).unwrap();
    let model = Model::encrypted(&plan, &k.ctx, &mut |pt| enc.encrypt(pt)).unwrap();
    assert!(model.is_encrypted());
    let x = image(net.input_len(), 5);
    let want = net.forward(&x).unwrap();
    let got = run(&model, &k, &x);
    assert!(max_err(&got, &want) < 1e-3, "{got:?} vs {want:?}");

    // the encrypted model travels as ciphertexts and is rebuilt by a server whose plan was
    // compiled from the same architecture with other weights
    let bytes: Vec<Vec<u8>> = model
        .ciphertexts()
        .iter()
        .map(|c| crate::ckks::wire::encode_ciphertext(&k.ctx, c))
        .collect();
    let cts: Vec<Ciphertext> = bytes
        .iter()
        .map(|b| crate::ckks::wire::decode_ciphertext(&k.ctx, b).unwrap())
        .collect();
    let skeleton = InferencePlan::with_parameters(&small_network(99), small_params()).unwrap();
    assert_eq!(skeleton.spec().fingerprint(), plan.spec().fingerprint());
    assert_ne!(
        InferencePlan::with_parameters(&net, small_params().clone())
            .unwrap()
            .spec()
            .fingerprint(),
        InferencePlan::new(&net, &ParamPolicy::default())
            .unwrap()
            .spec()
            .fingerprint()
    );
    let served = Model::from_ciphertexts(&skeleton, &k.ctx, cts.clone()).unwrap();
    assert!(max_err(&run(&served, &k, &x), &want) < 1e-3);
    // a plaintext model has nothing to export
    assert!(
        Model::plain(&plan, &k.ctx)
            .unwrap()
            .ciphertexts()
            .is_empty()
    );
    // missing, surplus or misplaced ciphertexts are refused
    let short = cts[..cts.len() - 1].to_vec();
    assert!(matches!(
        Model::from_ciphertexts(&skeleton, &k.ctx, short),
        Err(InferError::ModelMismatch(_))
    ));
    let mut long = cts.clone();
    long.push(cts[0].clone());
    assert!(matches!(
        Model::from_ciphertexts(&skeleton, &k.ctx, long),
        Err(InferError::ModelMismatch("too many ciphertexts"))
    ));
    let mut swapped = cts.clone();
    let last = swapped.len() - 1;
    swapped.swap(0, last);
    assert!(matches!(
        Model::from_ciphertexts(&skeleton, &k.ctx, swapped),
        Err(InferError::ModelMismatch(_))
    ));
}

#[test]
fn a_large_image_spans_several_ciphertexts_and_patch_maps_stay_cheap() {
    // 32×32 image, 4×4 patch embedding to 4 channels (8×8 grid), 2×2 patch merge, dense: the
    // 1024 input values take two ciphertexts of 512 slots
    let net = testing::patch_network(32, 4, 4, 3);
    let plan = InferencePlan::with_parameters(&net, small_params()).unwrap();
    let spec = plan.spec();
    assert_eq!(spec.input_ciphertexts(), 2);
    let info = plan.stage_info();
    assert_eq!(info[0].inputs, 2);
    // the first map: im2col offsets (tap − channel)·64 reduced modulo the 512 slots, per input
    assert!(info[0].diagonals <= 2 * 8, "{info:?}");
    // the patch merge reads space-to-depth blocks: one diagonal per block offset (4 channels ×
    // 4 taps + 4 channels − 1 at most), not one per position
    assert!(info[2].diagonals <= 19, "{info:?}");
    let k = keys_for(spec);
    for model in [
        Model::plain(&plan, &k.ctx).unwrap(),
        Model::encrypted(&plan, &k.ctx, &mut |pt| {
            k.ctx.sk_encryptor(&k.sk).unwrap().encrypt(pt)
        })
        .unwrap(),
    ] {
        for seed in 0..2 {
            let x = image(net.input_len(), seed);
            let want = net.forward(&x).unwrap();
            let got = run(&model, &k, &x);
            assert!(max_err(&got, &want) < 2e-3, "{got:?} vs {want:?}");
        }
    }
    // a requester compiles the same plan from the architecture alone
    let skel =
        InferencePlan::with_parameters(&net.architecture().skeleton().unwrap(), small_params())
            .unwrap();
    assert_eq!(skel.spec().fingerprint(), spec.fingerprint());
}

#[test]
fn dense_first_networks_use_the_replicated_layout() {
    // flatten → dense 20→40 (expanding: p_out > p_in) → ... → a trailing quadratic, which keeps
    // its multiplication by a (one more level)
    let s = &mut 3u64;
    let net = Network::new(
        [1, 4, 5],
        vec![
            Layer::Flatten,
            dense(20, 40, s),
            Layer::Square,
            dense(40, 6, s),
            Layer::Quadratic { a: -0.5, b: 0.25 },
        ],
    )
    .unwrap();
    let plan = InferencePlan::with_parameters(&net, small_params()).unwrap();
    assert_eq!(plan.spec().depth(), 5);
    let k = keys_for(plan.spec());
    let model = Model::plain(&plan, &k.ctx).unwrap();
    let x = image(20, 9);
    let got = run(&model, &k, &x);
    assert!(max_err(&got, &net.forward(&x).unwrap()) < 1e-3);
}

#[test]
fn unfoldable_activation_keeps_its_multiplication() {
    let net = Network::new([1, 2, 4], vec![Layer::Quadratic { a: 0.5, b: -1.0 }]).unwrap();
    let plan = InferencePlan::with_parameters(&net, small_params()).unwrap();
    assert_eq!(plan.spec().depth(), 2);
    assert!(plan.spec().galois_steps().is_empty());
    let k = keys_for(plan.spec());
    let x = image(8, 4);
    let want = net.forward(&x).unwrap();
    let got = run(&Model::plain(&plan, &k.ctx).unwrap(), &k, &x);
    assert!(max_err(&got, &want) < 1e-4);
    let mut enc = k.ctx.sk_encryptor(&k.sk).unwrap();
    let model = Model::encrypted(&plan, &k.ctx, &mut |pt| enc.encrypt(pt)).unwrap();
    assert!(max_err(&run(&model, &k, &x), &want) < 1e-4);
}

#[test]
fn batched_packing_matches_the_reference_per_image() {
    let net = small_network(13);
    let ctx = CkksContext::new(small_params()).unwrap();
    let model = BatchedModel::new(&net, &ctx).unwrap();
    let spec = model.spec();
    assert_eq!(spec.batch_size(), 512);
    let mut kg = ctx.key_generator().unwrap();
    let sk = kg.secret_key();
    let rlk = kg.relinearization_key(&sk);
    // no Galois key at all
    let eval = ctx.evaluator(Some(&rlk), None).unwrap();
    let images: Vec<Vec<f32>> = (0..37).map(|i| image(net.input_len(), 100 + i)).collect();
    let refs: Vec<&[f32]> = images.iter().map(Vec::as_slice).collect();
    let mut enc = ctx.sk_encryptor(&sk).unwrap();
    let cts: Vec<Ciphertext> = spec
        .encode_inputs(&ctx, &refs)
        .unwrap()
        .iter()
        .map(|pt| enc.encrypt(pt))
        .collect();
    let out = model.evaluate(&eval, &cts).unwrap();
    assert_eq!(out.len(), 5);
    let dec = ctx.decryptor(&sk).unwrap();
    let pts: Vec<_> = out.iter().map(|c| dec.decrypt(c)).collect();
    let logits = spec.decode_outputs(&ctx, &pts, images.len()).unwrap();
    for (im, got) in images.iter().zip(&logits) {
        assert!(max_err(got, &net.forward(im).unwrap()) < 1e-3);
    }
}

#[test]
fn primes_above_51_bits_take_the_portable_kernels() {
    // the AVX-512 IFMA kernels need primes below 2^51; these parameters use the generic ones
    let params =
        Parameters::insecure_for_tests(10, &[60, 54, 54, 54, 54, 54], &[60, 60, 60], 2, 54.0)
            .unwrap();
    let net = small_network(15);
    let plan = InferencePlan::with_parameters(&net, params).unwrap();
    let k = keys_for(plan.spec());
    let x = image(net.input_len(), 21);
    let want = net.forward(&x).unwrap();
    assert!(max_err(&run(&Model::plain(&plan, &k.ctx).unwrap(), &k, &x), &want) < 1e-6);
    let bm = BatchedModel::new(&net, &k.ctx).unwrap();
    let mut enc = k.ctx.sk_encryptor(&k.sk).unwrap();
    let cts: Vec<Ciphertext> = bm
        .spec()
        .encode_inputs(&k.ctx, &[&x])
        .unwrap()
        .iter()
        .map(|p| enc.encrypt(p))
        .collect();
    let dec = k.ctx.decryptor(&k.sk).unwrap();
    let pts: Vec<_> = bm
        .evaluate(&k.eval, &cts)
        .unwrap()
        .iter()
        .map(|c| dec.decrypt(c))
        .collect();
    let got = bm.spec().decode_outputs(&k.ctx, &pts, 1).unwrap();
    assert!(max_err(&got[0], &want) < 1e-6);
}

#[test]
fn requests_that_do_not_fit_are_refused() {
    let net = small_network(14);
    let plan = InferencePlan::with_parameters(&net, small_params()).unwrap();
    let k = keys_for(plan.spec());
    let model = Model::plain(&plan, &k.ctx).unwrap();
    let spec = plan.spec();
    // wrong image size
    assert!(matches!(
        spec.encode_input(&k.ctx, &[0.0; 5]),
        Err(InferError::Network(NetworkError::InputLen { .. }))
    ));
    let mut enc = k.ctx.sk_encryptor(&k.sk).unwrap();
    let x = image(net.input_len(), 1);
    let cts: Vec<Ciphertext> = spec
        .encode_input(&k.ctx, &x)
        .unwrap()
        .iter()
        .map(|p| enc.encrypt(p))
        .collect();
    let ct = cts[0].clone();
    // wrong number of input ciphertexts
    let n = spec.input_ciphertexts();
    let mut extra = cts.clone();
    extra.push(ct.clone());
    assert!(matches!(
        model.evaluate(&k.eval, &extra),
        Err(InferError::InputCiphertexts { expected, found }) if expected == n && found == n + 1
    ));
    let with = |bad: &Ciphertext| -> Vec<Ciphertext> {
        let mut v = cts.clone();
        v[0] = bad.clone();
        v
    };
    // wrong level
    let low = k.eval.drop_levels(&ct, 1).unwrap();
    assert!(matches!(
        model.evaluate(&k.eval, &with(&low)),
        Err(InferError::InputLevel { .. })
    ));
    // malformed shapes: no parts, a part short of limbs
    let empty = Ciphertext {
        parts: vec![],
        scale: ct.scale,
    };
    assert!(matches!(
        model.evaluate(&k.eval, &with(&empty)),
        Err(InferError::Ckks(_))
    ));
    let mut ragged = ct.clone();
    ragged.parts[1].truncate(2);
    assert!(matches!(
        model.evaluate(&k.eval, &with(&ragged)),
        Err(InferError::InputLevel { .. })
    ));
    // wrong scale
    let mut scaled = ct.clone();
    scaled.scale *= 2.0;
    assert!(matches!(
        model.evaluate(&k.eval, &with(&scaled)),
        Err(InferError::InputScale { .. })
    ));
    // an evaluator missing a planned Galois key is refused by the evaluator, not a panic
    let bare = k.ctx.evaluator(None, None).unwrap();
    assert!(matches!(
        model.evaluate(&bare, &cts),
        Err(InferError::Ckks(_))
    ));
    // a context of other parameters
    let other = CkksContext::new(
        Parameters::insecure_for_tests(10, &[50, 34, 34, 34, 34, 34], &[50, 50], 3, 34.0).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        Model::plain(&plan, &other),
        Err(InferError::ContextMismatch)
    ));
    assert!(matches!(
        spec.encode_input(&other, &x),
        Err(InferError::ContextMismatch)
    ));
    // parameters with too few levels or slots
    let shallow = Parameters::insecure_for_tests(10, &[50, 33, 33], &[50], 3, 33.0).unwrap();
    assert!(matches!(
        InferencePlan::with_parameters(&net, shallow.clone()),
        Err(InferError::TooFewLevels { .. })
    ));
    assert!(matches!(
        BatchedSpec::with_parameters(&net, shallow),
        Err(InferError::TooFewLevels { .. })
    ));
    let narrow =
        Parameters::insecure_for_tests(6, &[50, 33, 33, 33, 33, 33], &[50, 50], 3, 33.0).unwrap();
    assert!(matches!(
        InferencePlan::with_parameters(&net, narrow),
        Err(InferError::TooFewSlots { .. })
    ));
    // batches: empty, too many images, wrong ciphertext count
    let bctx = CkksContext::new(small_params()).unwrap();
    let bm = BatchedModel::new(&net, &bctx).unwrap();
    assert!(matches!(
        bm.spec().encode_inputs(&bctx, &[]),
        Err(InferError::EmptyBatch)
    ));
    let many = vec![&x[..]; 513];
    assert!(matches!(
        bm.spec().encode_inputs(&bctx, &many),
        Err(InferError::BatchTooLarge { .. })
    ));
    let beval = bctx.evaluator(None, None).unwrap();
    assert!(matches!(
        bm.evaluate(&beval, &[]),
        Err(InferError::BatchInputs { .. })
    ));
    let bsk = bctx.key_generator().unwrap().secret_key();
    let mut benc = bctx.sk_encryptor(&bsk).unwrap();
    let mut inputs: Vec<Ciphertext> = bm
        .spec()
        .encode_inputs(&bctx, &[&x])
        .unwrap()
        .iter()
        .map(|p| benc.encrypt(p))
        .collect();
    inputs[7].parts[0].truncate(1);
    assert!(matches!(
        bm.evaluate(&beval, &inputs),
        Err(InferError::InputLevel { .. })
    ));
}

mod layers {
    //! Each layer kind, alone and in small stacks, encrypted against plain arithmetic.
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Kind {
        Conv {
            co: usize,
            k: usize,
            s: usize,
            p: usize,
        },
        Pool {
            k: usize,
            s: usize,
        },
        Dense {
            o: usize,
        },
        Square,
        Quadratic {
            a: f32,
            b: f32,
        },
    }

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            (1usize..4, 1usize..4, 1usize..3, 0usize..2).prop_map(|(co, k, s, p)| Kind::Conv {
                co,
                k,
                s,
                p
            }),
            (1usize..3, 1usize..3).prop_map(|(k, s)| Kind::Pool { k, s }),
            (1usize..9).prop_map(|o| Kind::Dense { o }),
            Just(Kind::Square),
            (-1.0f32..1.0, -1.0f32..1.0).prop_map(|(a, b)| Kind::Quadratic { a, b }),
        ]
    }

    /// Builds the layers that fit the running shape (a spatial layer after a flat one is
    /// skipped), with weights from `seed`.
    fn build(input: [usize; 3], kinds: &[Kind], seed: u64) -> Option<Network> {
        let s = &mut seed.clone();
        let mut layers = Vec::new();
        let mut shape = Shape::Chw(input);
        for k in kinds {
            let layer = match (k, shape) {
                (Kind::Conv { co, k, s: st, p }, Shape::Chw([ci, h, w]))
                    if *k <= h.min(w) + 2 * p =>
                {
                    conv(ci, *co, *k, *st, *p, s)
                }
                (Kind::Pool { k, s: st }, Shape::Chw([_, h, w])) if *k <= h.min(w) => {
                    Layer::AvgPool2d {
                        kernel: *k,
                        stride: *st,
                    }
                }
                (Kind::Dense { o }, sh) => dense(sh.len(), *o, s),
                (Kind::Square, _) => Layer::Square,
                (Kind::Quadratic { a, b }, _) => Layer::Quadratic { a: *a, b: *b },
                _ => continue,
            };
            layers.push(layer);
            let net = Network::new(input, layers.clone()).ok()?;
            shape = *net.shapes().last()?;
        }
        Network::new(input, layers).ok()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
        #[test]
        fn random_stacks_match_plain_arithmetic(
            kinds in proptest::collection::vec(kind(), 1..4),
            c in 1usize..3, side in 3usize..7, seed in any::<u64>(),
        ) {
            let Some(net) = build([c, side, side], &kinds, seed) else {
                return Ok(());
            };
            let plan = match InferencePlan::with_parameters(&net, small_params()) {
                Ok(p) => p,
                // deeper than the test chain: refused with a typed error, nothing to run
                Err(InferError::TooFewLevels { .. }) => return Ok(()),
                Err(e) => panic!("{e}"),
            };
            let k = keys_for(plan.spec());
            let x = image(net.input_len(), seed ^ 1);
            let want = net.forward(&x).unwrap();
            let scale = want.iter().fold(1f32, |m, v| m.max(v.abs())) as f64;
            let got = run(&Model::plain(&plan, &k.ctx).unwrap(), &k, &x);
            prop_assert!(max_err(&got, &want) < 1e-4 * scale, "{:?}: {:?} vs {:?}", net, got, want);
            // and in batched packing, two images per batch
            let bm = BatchedModel::new(&net, &k.ctx).unwrap();
            let x2 = image(net.input_len(), seed ^ 2);
            let mut enc = k.ctx.sk_encryptor(&k.sk).unwrap();
            let cts: Vec<Ciphertext> = bm
                .spec()
                .encode_inputs(&k.ctx, &[&x, &x2])
                .unwrap()
                .iter()
                .map(|p| enc.encrypt(p))
                .collect();
            let out = bm.evaluate(&k.eval, &cts).unwrap();
            let dec = k.ctx.decryptor(&k.sk).unwrap();
            let pts: Vec<_> = out.iter().map(|c| dec.decrypt(c)).collect();
            let both = bm.spec().decode_outputs(&k.ctx, &pts, 2).unwrap();
            prop_assert!(max_err(&both[0], &want) < 1e-4 * scale);
            let want2 = net.forward(&x2).unwrap();
            let scale2 = want2.iter().fold(1f32, |m, v| m.max(v.abs())) as f64;
            prop_assert!(max_err(&both[1], &want2) < 1e-4 * scale2);
        }
    }
}
