//! Encrypted head training against the same steps in plaintext, with collective refreshes
//! between steps, and its refusals.
#![allow(clippy::needless_range_loop)] // groups index several parallel vectors

use std::sync::{Arc, OnceLock};

use super::*;
use crate::ckks::{Ciphertext, CkksContext, Parameters, SecretKey};
use crate::multiparty::flooding::fresh_noise_bound;
use crate::multiparty::{Crs, Flooding, Refresh, RefreshShare};
use crate::ring::Prng;

/// N = 2^11 (insecure, for speed): four 60-bit primes hold the refresh's masks over a weight
/// scale of 2^80, six 40-bit primes take a step.
pub(super) fn ctx() -> Arc<CkksContext> {
    static CTX: OnceLock<Arc<CkksContext>> = OnceLock::new();
    CTX.get_or_init(|| {
        let q = [60, 60, 60, 60, 40, 40, 40, 40, 40, 40];
        CkksContext::new(Parameters::insecure_for_tests(11, &q, &[61, 61], 5, 40.0).unwrap())
            .unwrap()
    })
    .clone()
}

/// Deterministic examples: class c has its mean at feature c, plus noise; features in [−1, 1].
pub(super) fn examples(
    n: usize,
    features: usize,
    classes: usize,
    seed: u8,
) -> (Vec<Vec<f64>>, Vec<u32>) {
    let mut prng = Prng::from_seed(&[seed; 32]);
    let mut u = || (prng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for i in 0..n {
        let y = (i % classes) as u32;
        let x: Vec<f64> = (0..features)
            .map(|j| (0.3 * u() + if j == y as usize { 0.6 } else { 0.0 }).clamp(-1.0, 1.0))
            .collect();
        xs.push(x);
        ys.push(y);
    }
    (xs, ys)
}

/// `parties` keyholders' secrets, their sum, its public key and a run's evaluation keys.
pub(super) struct Keyed {
    pub secrets: Vec<SecretKey>,
    pub s: SecretKey,
    pub pk: crate::ckks::PublicKey,
    pub keys: crate::infer::EvaluationKeys,
}

pub(super) fn keyed(plan: &HeadPlan, parties: usize) -> Keyed {
    let ctx = plan.context();
    let mut kg = ctx.key_generator().unwrap();
    let secrets: Vec<SecretKey> = (0..parties).map(|_| kg.secret_key()).collect();
    let s = crate::multiparty::sum_of_secrets(ctx, &secrets);
    let pk = kg.public_key(&s);
    let keys = crate::infer::EvaluationKeys {
        relinearization: Some(kg.relinearization_key(&s)),
        galois: kg.galois_keys(&s, &plan.layout().rotations(), false),
    };
    Keyed {
        secrets,
        s,
        pk,
        keys,
    }
}

/// A site's examples in chunks of the layout's samples, encrypted.
pub(super) fn encrypt_chunks(
    ctx: &CkksContext,
    enc: &mut crate::ckks::PkEncryptor,
    l: &HeadLayout,
    xs: &[Vec<f64>],
    ys: &[u32],
) -> Vec<EncryptedChunk> {
    xs.chunks(l.samples())
        .zip(ys.chunks(l.samples()))
        .map(|(x, y)| {
            let xr: Vec<&[f64]> = x.iter().map(|v| v.as_slice()).collect();
            encrypt_chunk(ctx, enc, l, &xr, y).unwrap()
        })
        .collect()
}

/// The slot algebra of a step (rotations as cyclic shifts), in plaintext: the layout's sums land
/// where the trainer reads them.
#[test]
fn the_layouts_slot_algebra_is_the_plaintext_step() {
    let l = HeadLayout::new(1024, 20, 3).unwrap();
    assert_eq!((l.groups(), l.samples()), (2, 16));
    slot_algebra_matches(1024, 20, 3, 13, 1);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]
    /// Any width, any number of classes, full or partial chunks.
    #[test]
    fn the_slot_algebra_holds_for_any_head(
        log_slots in 9u32..=12,
        features in 1usize..=70,
        classes in 2usize..=12,
        fill in 0.0f64..1.0,
        seed in 0u8..=255,
    ) {
        let slots = 1usize << log_slots;
        if let Ok(l) = HeadLayout::new(slots, features, classes) {
            let count = 1 + ((l.samples() - 1) as f64 * fill) as usize;
            slot_algebra_matches(slots, features, classes, count, seed);
        }
    }
}

fn slot_algebra_matches(slots: usize, features: usize, classes: usize, count: usize, seed: u8) {
    let l = HeadLayout::new(slots, features, classes).unwrap();
    let (xs, ys) = examples(count, features, classes, seed);
    let xr: Vec<&[f64]> = xs.iter().map(|x| x.as_slice()).collect();
    let mut prng = Prng::from_seed(&[seed.wrapping_add(1); 32]);
    let mut small = || (prng.next_u64() % 1000) as f64 / 5000.0 - 0.1;
    let w: Vec<f64> = (0..features * classes).map(|_| small()).collect();
    let b: Vec<f64> = (0..classes).map(|_| small()).collect();
    let lr = 0.5;
    let rot = |v: &[f64], k: i64| -> Vec<f64> {
        let n = v.len() as i64;
        (0..n).map(|s| v[(s + k).rem_euclid(n) as usize]).collect()
    };
    let rsum = |mut v: Vec<f64>, steps: &[i64]| {
        for &k in steps {
            let r = rot(&v, k);
            v.iter_mut().zip(&r).for_each(|(a, b)| *a += b);
        }
        v
    };
    let mul = |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(x, y)| x * y).collect() };
    let head = HeadTrainer::pack_head(&l, &w, &b);
    let ones = l.pack_ones(xr.len());
    let mut z = mul(&head[l.groups()], &ones);
    for g in 0..l.groups() {
        let p = mul(&head[g], &l.pack_features(&xr, g));
        z.iter_mut().zip(&p).for_each(|(a, b)| *a += b);
    }
    let z = rsum(z, &l.feature_sum_steps());
    let r: Vec<f64> = z
        .iter()
        .zip(l.pack_labels(&ys))
        .map(|(a, b)| a - b)
        .collect();
    let mask = l.pack_gradient_mask(lr / xr.len() as f64);
    let updated: Vec<Vec<f64>> = (0..=l.groups())
        .map(|g| {
            let data = if g < l.groups() {
                l.pack_features(&xr, g)
            } else {
                ones.clone()
            };
            let t = rsum(mul(&r, &data), &l.sample_sum_steps());
            let grad = rsum(mul(&t, &mask), &l.sample_spread_steps());
            head[g].iter().zip(&grad).map(|(a, b)| a - b).collect()
        })
        .collect();
    let mut plain = PlainHead::zeros(features, classes);
    plain.w = w.clone();
    plain.b = b.clone();
    plain.step(&xr, &ys, lr, 0.0);
    let (w, b) = (plain.w, plain.b);
    let mut got_w = vec![0.0; w.len()];
    for g in 0..l.groups() {
        l.unpack_weights(&updated[g], g, &mut got_w);
        // every sample slot holds the same copy, as the next step needs
        assert_eq!(
            updated[g],
            l.pack_weights(&got_w, g),
            "group {g} replicated"
        );
    }
    let got_b = l.unpack_bias(&updated[l.groups()]);
    for (a, e) in got_w.iter().zip(&w).chain(got_b.iter().zip(&b)) {
        assert!((a - e).abs() < 1e-12, "{a} vs {e}");
    }
}

/// `ct` refreshed by the parties holding `keys` (additive shares of the key).
fn refresh_by(
    refresh: &Refresh,
    keys: &[SecretKey],
    prng: &mut Prng,
    ct: &Ciphertext,
) -> Ciphertext {
    let mut acc: Option<RefreshShare> = None;
    for k in keys {
        let s = refresh.share(k, ct, prng).unwrap();
        match acc.as_mut() {
            None => acc = Some(s),
            Some(a) => refresh.aggregate(a, &s).unwrap(),
        }
    }
    refresh.finalize(ct, &acc.unwrap()).unwrap()
}

/// The largest difference between the trainer's decrypted head and `plain`.
fn head_error(
    ctx: &CkksContext,
    dec: &crate::ckks::Decryptor,
    trainer: &HeadTrainer,
    plain: &PlainHead,
) -> f64 {
    let l = trainer.layout();
    let slots: Vec<Vec<f64>> = trainer
        .weights()
        .iter()
        .map(|ct| ctx.decode_reals(&dec.decrypt(ct)).unwrap())
        .collect();
    let mut w = vec![0.0; plain.w.len()];
    for g in 0..l.groups() {
        l.unpack_weights(&slots[g], g, &mut w);
    }
    let b = l.unpack_bias(&slots[l.groups()]);
    w.iter()
        .zip(&plain.w)
        .chain(b.iter().zip(&plain.b))
        .map(|(a, e)| (a - e).abs())
        .fold(0.0, f64::max)
}

#[test]
fn encrypted_steps_with_refreshes_track_the_plaintext_steps() {
    let ctx = ctx();
    let (features, classes) = (20, 3);
    let l = HeadLayout::new(ctx.slots(), features, classes).unwrap();
    let scales = HeadScales::new(&ctx).unwrap();
    assert_eq!((scales.top, scales.refresh_level), (10, 4));
    let parties = 3;
    let mut kg = ctx.key_generator().unwrap();
    let secrets: Vec<SecretKey> = (0..parties).map(|_| kg.secret_key()).collect();
    let s = crate::multiparty::sum_of_secrets(&ctx, &secrets);
    let pk = kg.public_key(&s);
    let rlk = kg.relinearization_key(&s);
    let gks = kg.galois_keys(&s, &l.rotations(), false);
    let flooding = Flooding::new(30, fresh_noise_bound(&ctx, parties)).unwrap();
    let refresh = Refresh::new(
        &ctx,
        &Crs::from_federation(b"head test"),
        flooding,
        parties,
        16.0,
    )
    .unwrap();
    assert!(refresh.min_level(scales.weight).unwrap() <= scales.refresh_level);
    let mut prng = Prng::from_seed(&[70; 32]);
    // a site's examples: two full chunks and a partial one
    let (xs, ys) = examples(2 * l.samples() + 5, features, classes, 3);
    let mut enc = ctx.pk_encryptor(&pk).unwrap();
    let chunks = encrypt_chunks(&ctx, &mut enc, &l, &xs, &ys);

    for momentum in [0.0, 0.9] {
        let mut plain = PlainHead::zeros(features, classes);
        let initial: Vec<Ciphertext> = HeadTrainer::pack_head(&l, &plain.w, &plain.b)
            .iter()
            .map(|v| enc.encrypt(&ctx.encode_reals(v, scales.top, scales.weight).unwrap()))
            .collect();
        let lr = 1.0;
        let mut trainer =
            HeadTrainer::new(&ctx, &rlk, &gks, l.clone(), lr, momentum, initial).unwrap();
        // batches: chunks {0, 1}, {2}, {0, 1, 2}
        let batches: [&[usize]; 3] = [&[0, 1], &[2], &[0, 1, 2]];
        let dec = ctx.decryptor(&s).unwrap();
        for (step, idx) in batches.iter().enumerate() {
            let batch: Vec<&EncryptedChunk> = idx.iter().map(|&i| &chunks[i]).collect();
            let updated = trainer.step(&batch).unwrap();
            let per = l.groups() + 1;
            assert_eq!(updated.len(), if momentum > 0.0 { 2 * per } else { per });
            assert!(updated.iter().all(|ct| ct.level() == scales.refresh_level));
            let refreshed: Vec<Ciphertext> = updated
                .iter()
                .map(|ct| refresh_by(&refresh, &secrets, &mut prng, ct))
                .collect();
            trainer.set_state(refreshed).unwrap();

            let sel: Vec<usize> = idx
                .iter()
                .flat_map(|&c| c * l.samples()..((c + 1) * l.samples()).min(xs.len()))
                .collect();
            let bx: Vec<&[f64]> = sel.iter().map(|&i| xs[i].as_slice()).collect();
            let by: Vec<u32> = sel.iter().map(|&i| ys[i]).collect();
            plain.step(&bx, &by, lr, momentum);

            let err = head_error(&ctx, &dec, &trainer, &plain);
            let size = plain
                .w
                .iter()
                .chain(&plain.b)
                .map(|v| v.abs())
                .fold(0.0, f64::max);
            assert!(
                size > 0.05,
                "momentum {momentum}, step {step}: the head moved ({size})"
            );
            assert!(
                err < 1e-3,
                "momentum {momentum}, step {step}: weights off by {err} (largest weight {size})"
            );
        }
    }
}

#[test]
fn bad_examples_and_mismatched_ciphertexts_are_refused() {
    let ctx = ctx();
    let l = HeadLayout::new(ctx.slots(), 4, 3).unwrap();
    let mut kg = ctx.key_generator().unwrap();
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let mut enc = ctx.pk_encryptor(&pk).unwrap();
    let good = [0.1, -0.2, 0.3, 0.0];
    let err = |xs: &[&[f64]], ys: &[u32]| {
        encrypt_chunk(&ctx, &mut ctx.pk_encryptor(&pk).unwrap(), &l, xs, ys)
            .unwrap_err()
            .to_string()
    };
    assert!(err(&[&good[..3]], &[0]).contains("3 features where the head takes 4"));
    assert!(err(&[&good, &[0.0, 1.5, 0.0, 0.0]], &[0, 1]).contains("example 1: feature 1 is 1.5"));
    assert!(err(&[&good, &[f64::NAN, 0.0, 0.0, 0.0]], &[0, 1]).contains("feature 0 is NaN"));
    assert!(err(&[&good], &[3]).contains("label 3 is not below 3 classes"));
    assert!(err(&[&good], &[0, 1]).contains("one label each"));
    assert!(err(&[], &[]).contains("1..="));
    assert!(HeadLayout::new(ctx.slots(), 4, 1).is_err());
    assert!(HeadLayout::new(ctx.slots(), 4, 600).is_err());

    let chunk = encrypt_chunk(&ctx, &mut enc, &l, &[&good], &[2]).unwrap();
    let scales = HeadScales::new(&ctx).unwrap();
    chunk.check(&l, &scales).unwrap();
    let mut low = chunk.clone();
    low.features[0] = ctx
        .evaluator(None, None)
        .unwrap()
        .drop_levels(&low.features[0], 1)
        .unwrap();
    assert!(matches!(
        low.check(&l, &scales),
        Err(HeadTrainError::Level {
            got: 9,
            want: 10,
            ..
        })
    ));
    let mut scaled = chunk.clone();
    scaled.labels.scale *= 2.0;
    assert!(matches!(
        scaled.check(&l, &scales),
        Err(HeadTrainError::Scale { .. })
    ));
    let mut counted = chunk.clone();
    counted.count = l.samples() + 1;
    assert!(counted.check(&l, &scales).is_err());

    // a trainer refuses weights of the wrong number, level or scale, and a bad learning rate
    let rlk = kg.relinearization_key(&sk);
    let gks = kg.galois_keys(&sk, &l.rotations(), false);
    let head: Vec<Ciphertext> = HeadTrainer::pack_head(&l, &[0.0; 12], &[0.0; 3])
        .iter()
        .map(|v| enc.encrypt(&ctx.encode_reals(v, scales.top, scales.weight).unwrap()))
        .collect();
    let new = |lr: f64, momentum: f64, head: &[Ciphertext]| {
        HeadTrainer::new(&ctx, &rlk, &gks, l.clone(), lr, momentum, head.to_vec())
    };
    assert!(new(f64::NAN, 0.0, &head).is_err());
    assert!(new(0.1, 1.0, &head).is_err());
    assert!(new(0.1, 0.0, &head[..1]).is_err());
    let mut t = new(0.1, 0.0, &head).unwrap();
    let mut wrong = head.clone();
    wrong[0].scale = scales.data * 2.0;
    assert!(matches!(
        t.set_state(wrong),
        Err(HeadTrainError::Scale { .. })
    ));
    // a chunk of another head's width is refused before any arithmetic
    let wide = HeadLayout::new(ctx.slots(), 40, 3).unwrap();
    let wide_x = [0.0; 40];
    let wide_chunk = encrypt_chunk(&ctx, &mut enc, &wide, &[&wide_x], &[0]).unwrap();
    assert!(
        t.step(&[&wide_chunk])
            .unwrap_err()
            .to_string()
            .contains("groups")
    );
}

/// Five keyholders hold the key 3-of-5; a different three refresh after each step (one drops
/// out, another takes its place), and training goes on as in plaintext.
#[test]
fn a_keyholder_that_drops_out_is_replaced_between_steps() {
    use crate::multiparty::ThresholdSecret;
    use crate::multiparty::threshold::deal;
    let ctx = ctx();
    let (features, classes) = (12, 3);
    let l = HeadLayout::new(ctx.slots(), features, classes).unwrap();
    let scales = HeadScales::new(&ctx).unwrap();
    let (n, t) = (5usize, 3usize);
    let ids: Vec<u32> = (1..=n as u32).collect();
    let mut kg = ctx.key_generator().unwrap();
    let secrets: Vec<SecretKey> = (0..n).map(|_| kg.secret_key()).collect();
    let s = crate::multiparty::sum_of_secrets(&ctx, &secrets);
    let pk = kg.public_key(&s);
    let rlk = kg.relinearization_key(&s);
    let gks = kg.galois_keys(&s, &l.rotations(), false);
    let mut prng = Prng::from_seed(&[90; 32]);
    let mut inbox: Vec<Vec<crate::multiparty::ShamirShare>> = vec![Vec::new(); n];
    for (i, sk) in secrets.iter().enumerate() {
        for share in deal(&ctx, sk, ids[i], &ids, t, &mut prng).unwrap() {
            inbox[share.to() as usize - 1].push(share);
        }
    }
    let held: Vec<ThresholdSecret> = inbox
        .iter()
        .enumerate()
        .map(|(j, sh)| ThresholdSecret::combine(&ctx, ids[j], t, &ids, sh).unwrap())
        .collect();
    let flooding = Flooding::new(30, fresh_noise_bound(&ctx, n)).unwrap();
    let refresh =
        Refresh::new(&ctx, &Crs::from_federation(b"head test"), flooding, t, 16.0).unwrap();

    let (xs, ys) = examples(l.samples(), features, classes, 4);
    let xr: Vec<&[f64]> = xs.iter().map(|v| v.as_slice()).collect();
    let mut enc = ctx.pk_encryptor(&pk).unwrap();
    let chunk = encrypt_chunk(&ctx, &mut enc, &l, &xr, &ys).unwrap();
    let mut plain = PlainHead::zeros(features, classes);
    let initial: Vec<Ciphertext> = HeadTrainer::pack_head(&l, &plain.w, &plain.b)
        .iter()
        .map(|v| enc.encrypt(&ctx.encode_reals(v, scales.top, scales.weight).unwrap()))
        .collect();
    let (lr, momentum) = (1.0, 0.9);
    let mut trainer = HeadTrainer::new(&ctx, &rlk, &gks, l.clone(), lr, momentum, initial).unwrap();
    let dec = ctx.decryptor(&s).unwrap();
    // keyholder 2 drops out after the first step, 3 after the second
    for (step, active) in [[1u32, 2, 3], [1, 3, 4], [1, 4, 5], [2, 4, 5]]
        .iter()
        .enumerate()
    {
        let updated = trainer.step(&[&chunk]).unwrap();
        let keys: Vec<SecretKey> = active
            .iter()
            .map(|&i| held[i as usize - 1].additive_share(&ctx, active).unwrap())
            .collect();
        let refreshed: Vec<Ciphertext> = updated
            .iter()
            .map(|ct| refresh_by(&refresh, &keys, &mut prng, ct))
            .collect();
        trainer.set_state(refreshed).unwrap();
        plain.step(&xr, &ys, lr, momentum);
        let err = head_error(&ctx, &dec, &trainer, &plain);
        assert!(
            err < 1e-3,
            "step {step} by {active:?}: weights off by {err}"
        );
    }
}

/// The public schedule: every chunk once per epoch, in batches of the size asked, the same for
/// every party that computes it, and another order each epoch.
#[test]
fn the_schedule_covers_every_chunk_each_epoch_and_is_reproducible() {
    let s = schedule(10, 3, 4);
    assert_eq!(s, schedule(10, 3, 4));
    assert_eq!(
        s.len(),
        3 * 3,
        "10 chunks in batches of 4: 3 batches per epoch"
    );
    for epoch in s.chunks(3) {
        let mut all: Vec<usize> = epoch.iter().flatten().copied().collect();
        assert_eq!(epoch.iter().map(Vec::len).collect::<Vec<_>>(), [4, 4, 2]);
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
    }
    assert_ne!(s[0..3], s[3..6], "the same order in two epochs");
    assert_eq!(schedule(1, 2, 8), vec![vec![0], vec![0]]);
}

/// Issue 46, item 3: a run is the same at every party that replays it — the same chunks, the
/// same public seed, the same signed shares give the same state, ciphertext for ciphertext —
/// and another seed gives another state (the initial encryption's randomness is the seed's).
#[test]
fn a_run_replays_to_the_same_state_at_every_party() {
    let ctx = ctx();
    let (features, classes) = (20, 3);
    let plan = HeadPlan::with_context(ctx.clone(), features, classes).unwrap();
    let l = plan.layout().clone();
    let parties = 3;
    let Keyed {
        secrets,
        s,
        pk,
        keys,
    } = keyed(&plan, parties);
    let (xs, ys) = examples(l.samples() + 7, features, classes, 9);
    let mut enc = ctx.pk_encryptor(&pk).unwrap();
    let chunks = encrypt_chunks(&ctx, &mut enc, &l, &xs, &ys);
    let settings = RunSettings {
        epochs: 2,
        batch_chunks: 1,
        lr: 1.0,
        momentum: 0.5,
    };
    let run = |seed: u8| {
        HeadRun::new(
            plan.clone(),
            &pk,
            &keys,
            settings,
            &[seed; 32],
            b"replay",
            (parties, parties),
            chunks.clone(),
        )
        .unwrap()
    };
    let (mut a, mut b) = (run(1), run(1));
    assert_eq!(a.steps(), (4, 0));
    a.compute_step().unwrap();
    let mut other = run(2);
    other.compute_step().unwrap();
    assert_ne!(
        state_digest(&ctx, a.pending()),
        state_digest(&ctx, other.pending()),
        "another seed, another initial encryption"
    );
    let mut prng = Prng::from_seed(&[5; 32]);
    let mut plain = PlainHead::zeros(features, classes);
    let batches = schedule(chunks.len(), 2, 1);
    for batch in &batches {
        b.compute_step().unwrap();
        // computing again before the refresh changes nothing
        b.compute_step().unwrap();
        assert_eq!(
            state_digest(&ctx, a.pending()),
            state_digest(&ctx, b.pending())
        );
        // one set of shares, as the keyholders sign it, finishes both parties' refresh
        let sums: Vec<RefreshShare> = a
            .pending()
            .iter()
            .map(|ct| {
                let mut acc: Option<RefreshShare> = None;
                for k in &secrets {
                    let sh = a.refresh().share(k, ct, &mut prng).unwrap();
                    match acc.as_mut() {
                        None => acc = Some(sh),
                        Some(x) => a.refresh().aggregate(x, &sh).unwrap(),
                    }
                }
                acc.unwrap()
            })
            .collect();
        assert!(a.finish_refresh(&sums[1..]).is_err(), "a share short");
        a.finish_refresh(&sums).unwrap();
        b.finish_refresh(&sums).unwrap();
        assert_eq!(
            state_digest(&ctx, a.weights()),
            state_digest(&ctx, b.weights())
        );
        let sel: Vec<usize> = batch
            .iter()
            .flat_map(|&c| c * l.samples()..((c + 1) * l.samples()).min(xs.len()))
            .collect();
        let bx: Vec<&[f64]> = sel.iter().map(|&i| xs[i].as_slice()).collect();
        let by: Vec<u32> = sel.iter().map(|&i| ys[i]).collect();
        plain.step(&bx, &by, settings.lr, settings.momentum);
        if !a.finished() {
            a.compute_step().unwrap();
        }
    }
    assert!(a.finished() && b.finished());
    assert!(a.compute_step().is_err(), "no step after the last");
    let dec = ctx.decryptor(&s).unwrap();
    let l = plan.layout();
    let mut w = vec![0.0; plain.w.len()];
    for (g, ct) in a.weights()[..l.groups()].iter().enumerate() {
        l.unpack_weights(&ctx.decode_reals(&dec.decrypt(ct)).unwrap(), g, &mut w);
    }
    let err = w
        .iter()
        .zip(&plain.w)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(
        err < 1e-3,
        "the replayed head is the plaintext one: off by {err}"
    );

    // a run too long for anyone's memory or patience is refused before it starts
    let long = RunSettings {
        epochs: 1 << 30,
        ..settings
    };
    let e = HeadRun::new(
        plan.clone(),
        &pk,
        &keys,
        long,
        &[1; 32],
        b"replay",
        (parties, parties),
        chunks.clone(),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("steps"), "{e}");
}
