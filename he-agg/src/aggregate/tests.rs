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
