use std::sync::Arc;

use super::*;
use crate::ckks::{Ciphertext, CkksContext, Parameters};
use crate::ring::Prng;

fn ctx() -> Arc<CkksContext> {
    CkksContext::new(Parameters::insecure_for_tests(11, &[60, 60, 50], &[], 1, 40.0).unwrap())
        .unwrap()
}

fn random_cts(ctx: &Arc<CkksContext>, count: usize, seed: u8) -> Vec<Ciphertext> {
    let mut kg = ctx.key_generator().unwrap();
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let mut enc = ctx.pk_encryptor(&pk).unwrap();
    let mut prng = Prng::from_seed(&[seed; 32]);
    (0..count)
        .map(|_| {
            let v: Vec<f64> = (0..ctx.n())
                .map(|_| (prng.next_u64() % 1000) as f64 / 500.0 - 1.0)
                .collect();
            enc.encrypt(&ctx.encode_real_pairs(&v, 3, ctx.default_scale()).unwrap())
        })
        .collect()
}

/// The same sum with the evaluator, operation by operation.
fn reference(ctx: &Arc<CkksContext>, cts: &[Ciphertext], weights: &[u64]) -> Ciphertext {
    let eval = ctx.evaluator(None, None).unwrap();
    let mut acc = eval.mul_int(&cts[0], weights[0] as i64).unwrap();
    for (ct, &w) in cts.iter().zip(weights).skip(1) {
        acc = eval
            .add(&acc, &eval.mul_int(ct, w as i64).unwrap())
            .unwrap();
    }
    acc
}

fn shape(ctx: &CkksContext) -> Shape {
    Shape {
        level: 3,
        degree: 1,
        scale: ctx.default_scale(),
    }
}

#[test]
fn streaming_sum_equals_the_evaluator_bit_for_bit_in_any_order_and_batching() {
    let ctx = ctx();
    let cts = random_cts(&ctx, 11, 1);
    let mut prng = Prng::from_seed(&[2; 32]);
    for weights in [
        vec![1u64; 11],
        (0..11)
            .map(|_| 1 + prng.next_u64() % 100_000)
            .collect::<Vec<_>>(),
    ] {
        let want = reference(&ctx, &cts, &weights);
        for batch in [1usize, 3, 8, 64] {
            let mut agg = Aggregator::new(&ctx, &CpuBackend, shape(&ctx), batch).unwrap();
            // arrival order reversed: the sum does not care
            for (ct, &w) in cts.iter().zip(&weights).rev() {
                agg.push(ct.clone(), w).unwrap();
            }
            assert_eq!(agg.count(), 11);
            assert_eq!(
                agg.total_weight(),
                weights.iter().map(|&w| u128::from(w)).sum::<u128>()
            );
            assert_eq!(agg.finish().unwrap(), want, "batch {batch}");
        }
        // one thread and many give the same words
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let single = one.install(|| {
            let mut agg = Aggregator::new(&ctx, &CpuBackend, shape(&ctx), 4).unwrap();
            for (ct, &w) in cts.iter().zip(&weights) {
                agg.push(ct.clone(), w).unwrap();
            }
            agg.finish().unwrap()
        });
        assert_eq!(single, want);
    }
}

#[test]
fn wrong_inputs_are_refused_and_lose_nothing() {
    let ctx = ctx();
    let cts = random_cts(&ctx, 3, 3);
    let mut agg = Aggregator::new(&ctx, &CpuBackend, shape(&ctx), 2).unwrap();
    agg.push(cts[0].clone(), 5).unwrap();
    let eval = ctx.evaluator(None, None).unwrap();
    let lower = eval.drop_levels(&cts[1], 1).unwrap();
    assert!(matches!(
        agg.push(lower, 1),
        Err(AggregateError::Shape { .. })
    ));
    let mut rescaled = cts[1].clone();
    rescaled.scale *= 2.0;
    assert!(matches!(
        agg.push(rescaled, 1),
        Err(AggregateError::Shape { .. })
    ));
    assert_eq!(agg.push(cts[1].clone(), 0), Err(AggregateError::Weight(0)));
    assert_eq!(
        agg.push(cts[1].clone(), (1 << 40) + 1),
        Err(AggregateError::Weight((1 << 40) + 1))
    );
    // the refusals changed nothing
    agg.push(cts[1].clone(), 7).unwrap();
    assert_eq!(agg.count(), 2);
    assert_eq!(agg.finish().unwrap(), reference(&ctx, &cts[..2], &[5, 7]));
    let empty = Aggregator::new(&ctx, &CpuBackend, shape(&ctx), 2).unwrap();
    assert_eq!(empty.finish().unwrap_err(), AggregateError::Empty);
    assert!(matches!(
        Aggregator::new(
            &ctx,
            &CpuBackend,
            Shape {
                level: 4,
                degree: 1,
                scale: 1.0
            },
            1
        ),
        Err(AggregateError::BadShape { .. })
    ));
}

#[test]
fn plans_refuse_what_does_not_fit() {
    let ctx = CkksContext::new(Parameters::preset(crate::ckks::Preset::Aggregation)).unwrap();
    let plan = AggregationPlan::new(&ctx, 5, 5, 1e8, 1.0, 40, 1e-6).unwrap();
    assert!(plan.expected_error * 6.0 <= 1e-6);
    assert!(plan.used_bits(1e8, 1.0) < ctx.log_q(2) - 1.0);
    // a precision of 1e-12 needs a scale the modulus cannot hold next to 10^8 of weight
    assert!(matches!(
        AggregationPlan::new(&ctx, 5, 5, 1e8, 1.0, 40, 1e-12),
        Err(crate::multiparty::MultipartyError::Headroom { .. })
    ));
    assert!(AggregationPlan::new(&ctx, 5, 5, 1e8, 1.0, 20, 1e-6).is_err());
}

/// Three switchers' shares of the main job's round (5 hospitals, its weights) towards a
/// receiving key, sent the way the federation sends them: switch inputs (c₁ only), shares
/// rescaled where the plan says so, the result combined and decrypted.
/// `count` hospitals' own secrets (indices 1..=count), each Shamir-shared among all of them
/// with threshold `t`: the secrets and every hospital's threshold secret.
fn dealt_consortium(
    ctx: &Arc<CkksContext>,
    count: u32,
    t: usize,
) -> (
    Vec<crate::ckks::SecretKey>,
    Vec<crate::multiparty::ThresholdSecret>,
) {
    use crate::multiparty::ThresholdSecret;
    use crate::multiparty::threshold::deal;
    let mut kg = ctx.key_generator().unwrap();
    let ids: Vec<u32> = (1..=count).collect();
    let secrets: Vec<_> = ids.iter().map(|_| kg.secret_key()).collect();
    let mut prng = Prng::from_seed(&[4; 32]);
    let dealt: Vec<Vec<_>> = secrets
        .iter()
        .zip(&ids)
        .map(|(sk, &i)| deal(ctx, sk, i, &ids, t, &mut prng).unwrap())
        .collect();
    let held = ids
        .iter()
        .enumerate()
        .map(|(j, &me)| {
            let mine: Vec<_> = dealt.iter().map(|d| d[j].clone()).collect();
            ThresholdSecret::combine(ctx, me, t, &ids, &mine).unwrap()
        })
        .collect();
    (secrets, held)
}

#[test]
fn a_result_a_level_lower_keeps_the_plans_precision_and_only_when_the_weights_leave_room() {
    use crate::multiparty::{KeySwitchShare, ReceiveSwitch, UpdateSum, wire};
    let ctx = CkksContext::new(Parameters::preset(crate::ckks::Preset::Aggregation)).unwrap();
    let plan = AggregationPlan::from_settings(&ctx, &HeSettings::default(), 5, 3).unwrap();
    let codec = UpdateCodec::new(ctx.clone(), plan.clone());
    // the main job's consortium: five hospitals, any three switch
    let (secrets, held) = dealt_consortium(&ctx, 5, 3);
    let receive_sk = ctx.key_generator().unwrap().secret_key();
    let mut prng = Prng::from_seed(&[9; 32]);

    let weights = [5300u64, 13113, 4926, 6118, 5104];
    let wf: Vec<f64> = weights.iter().map(|&w| w as f64).collect();
    let lower = plan.result_level(&ctx, &wf, 3);
    assert_eq!(
        lower,
        plan.level - 1,
        "the main job's round travels a level lower"
    );
    // one contributor, or DP's unit weights, leave no room: the result keeps the level
    assert_eq!(plan.result_level(&ctx, &[5300.0], 3), plan.level);
    assert_eq!(plan.result_level(&ctx, &[1.0; 5], 3), plan.level);

    let n = ctx.n();
    let updates: Vec<Vec<f32>> = (0..5)
        .map(|h| {
            (0..n)
                .map(|i| ((i * 7 + h * 131) % 1000) as f32 * 1e-4 - 0.05)
                .collect()
        })
        .collect();
    let total: u64 = weights.iter().sum();
    // each hospital encrypts under its own secret; the coordinator sums the c0 alone
    let mut agg = Aggregator::new(
        &ctx,
        &CpuBackend,
        Shape {
            level: plan.level,
            degree: 0,
            scale: plan.scale,
        },
        2,
    )
    .unwrap();
    let mut a_seeds = Vec::new();
    for ((u, &w), sk) in updates.iter().zip(&weights).zip(&secrets) {
        let (items, update_seed) = codec.encrypt(sk, u).unwrap();
        let (c0, seed) = codec.decode(0, &items[0]).unwrap();
        assert_eq!((items.len(), seed), (1, item_seed(&update_seed, 0)));
        assert_eq!(c0.degree(), 0);
        a_seeds.push(seed);
        agg.push(c0, w).unwrap();
    }
    let sum = agg.finish().unwrap();
    let want: Vec<f64> = (0..n)
        .map(|i| {
            updates
                .iter()
                .zip(&weights)
                .map(|(u, &w)| f64::from(u[i]) * w as f64)
                .sum::<f64>()
                / total as f64
        })
        .collect();

    let active = [1u32, 2, 3];
    let contributions: Vec<(u32, u64)> = (1..=5).zip(weights).collect();
    let digest = [7u8; 32];
    let crs = crate::multiparty::Crs::from_federation(b"level test");
    let proto = ReceiveSwitch::new(&ctx, plan.flooding(&wf).unwrap(), 3);
    let input = UpdateSum {
        level: plan.level,
        scale: plan.scale,
        a_seeds: &a_seeds,
    };
    let share = |i: usize, rescale: bool, prng: &mut Prng| {
        let keys = held[i]
            .weighted_shares(&ctx, &active, &contributions)
            .unwrap();
        let seed = crs.receive_switch_seed(&digest, active[i], &active);
        let mask = proto.flood(plan.level, prng).unwrap();
        let s = proto
            .share_updates(&keys, &receive_sk, &input, &seed, mask, rescale)
            .unwrap();
        (s, seed)
    };
    for level in [plan.level, lower] {
        let mut acc: Option<KeySwitchShare> = None;
        let mut seeds = Vec::new();
        for i in 0..3 {
            let (share, seed) = share(i, level < plan.level, &mut prng);
            seeds.push(seed);
            let bytes = wire::encode_key_switch_share(&ctx, &share);
            let share = wire::decode_key_switch_share(&ctx, &bytes).unwrap();
            assert_eq!(share.level(), level);
            match acc.as_mut() {
                None => acc = Some(share),
                Some(a) => proto.aggregate(a, &share).unwrap(),
            }
        }
        let result = proto.finalize(&sum, acc.unwrap(), seeds).unwrap();
        assert_eq!(result.level(), level);
        let item = wire::encode_switched_result(&ctx, &result);
        let avg = codec
            .decrypt_average(
                &receive_sk,
                std::slice::from_ref(&item),
                n,
                total as f64,
                1.0,
            )
            .unwrap();
        let worst = avg
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f64, f64::max);
        assert!(worst <= 1e-6, "level {level}: error {worst}");
        if level < plan.level {
            // the lower result is another scale: at the updates' scale it does not decode
            let mut wrong = result.clone();
            wrong.scale = plan.scale;
            let bad = wire::encode_switched_result(&ctx, &wrong);
            assert!(matches!(
                codec.decode_result(0, &bad),
                Err(CodecError::Shape { .. })
            ));
        }
        // a quarter of the bytes of a full-level ciphertext where the level drops, half where not
        let full = crate::ckks::wire::ciphertext_len(&ctx, plan.level, 1);
        let most = if level < plan.level {
            full / 4
        } else {
            full / 2
        };
        assert!(item.len() <= most + 200, "{} of {full} bytes", item.len());
    }
    // a share two levels down, or a share of another level, does not combine
    let (mut low, _) = share(0, true, &mut prng);
    assert!(low.rescale(&ctx).is_err(), "level 1 has no modulus to drop");
    let (mut full, _) = share(1, false, &mut prng);
    assert!(proto.aggregate(&mut full, &low).is_err());
}
