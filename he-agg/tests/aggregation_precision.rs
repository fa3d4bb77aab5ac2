//! The precision run: 1,000 clients, weights up to 10^5 samples each, the aggregation preset,
//! five key holders of whom three re-encrypt the sum to a hospital with 40-bit flooding.

use he_agg::aggregate::{AggregationPlan, Aggregator, CpuBackend, Shape};
use he_agg::ckks::{CkksContext, Parameters, Preset, SecretKey};
use he_agg::multiparty::threshold::deal;
use he_agg::multiparty::{Crs, PublicKeyGen, PublicKeySwitch, ThresholdSecret};
use he_agg::ring::Prng;

#[test]
fn thousand_clients_average_within_1e6_after_threshold_pcks() {
    let ctx = CkksContext::new(Parameters::preset(Preset::Aggregation)).unwrap();
    let (parties, t) = (5usize, 3usize);
    let ids: Vec<u32> = (1..=parties as u32).collect();
    let mut kg = ctx.key_generator().unwrap();
    let secrets: Vec<SecretKey> = (0..parties).map(|_| kg.secret_key()).collect();
    let mut prng = Prng::from_seed(&[1; 32]);
    let crs = Crs::from_federation(b"precision run");
    let ckg = PublicKeyGen::new(&ctx, &crs);
    let mut pk_acc = ckg.share(&secrets[0], &mut prng).unwrap();
    for sk in &secrets[1..] {
        ckg.aggregate(&mut pk_acc, &ckg.share(sk, &mut prng).unwrap())
            .unwrap();
    }
    let pk = ckg.finalize(pk_acc);
    // threshold shares (sealing is covered by the unit tests)
    let mut inbox: Vec<Vec<_>> = vec![Vec::new(); parties];
    for (i, sk) in secrets.iter().enumerate() {
        for s in deal(&ctx, sk, ids[i], &ids, t, &mut prng).unwrap() {
            inbox[s.to() as usize - 1].push(s);
        }
    }
    let tsk: Vec<ThresholdSecret> = inbox
        .iter()
        .enumerate()
        .map(|(j, s)| ThresholdSecret::combine(&ctx, ids[j], t, &ids, s).unwrap())
        .collect();

    let clients = 1000;
    let max_weight = 100_000u64;
    let plan = AggregationPlan::new(
        &ctx,
        parties,
        t,
        (clients as u64 * max_weight) as f64,
        1.0,
        40,
        1e-6,
    )
    .unwrap();
    let weights: Vec<u64> = (0..clients)
        .map(|_| 1 + prng.next_u64() % max_weight)
        .collect();
    let n = ctx.n();
    let mut enc = ctx.pk_encryptor(&pk).unwrap();
    let mut agg = Aggregator::new(
        &ctx,
        &CpuBackend,
        Shape {
            level: plan.level,
            degree: 1,
            scale: plan.scale,
        },
        8,
    )
    .unwrap();
    let mut weighted_sum = vec![0f64; n];
    for &w in &weights {
        let update: Vec<f64> = (0..n)
            .map(|_| (prng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0)
            .collect();
        for (s, u) in weighted_sum.iter_mut().zip(&update) {
            *s += w as f64 * u;
        }
        agg.push(
            enc.encrypt(
                &ctx.encode_real_pairs(&update, plan.level, plan.scale)
                    .unwrap(),
            ),
            w,
        )
        .unwrap();
    }
    let total = agg.total_weight() as f64;
    let sum = agg.finish().unwrap();

    // three of the five re-encrypt to the hospital's own key
    let mut hkg = ctx.key_generator().unwrap();
    let hospital_sk = hkg.secret_key();
    let hospital_pk = hkg.public_key(&hospital_sk);
    let flooding = plan
        .flooding(&weights.iter().map(|&w| w as f64).collect::<Vec<_>>())
        .unwrap();
    let pcks = PublicKeySwitch::new(&ctx, flooding, t);
    let active = [2u32, 4, 5];
    let mut shares = active.iter().map(|&i| {
        let sk = tsk[i as usize - 1].additive_share(&ctx, &active).unwrap();
        pcks.share(&sk, &hospital_pk, &sum, &mut prng).unwrap()
    });
    let mut acc = shares.next().unwrap();
    for s in shares {
        pcks.aggregate(&mut acc, &s).unwrap();
    }
    let at_hospital = pcks.finalize(&sum, acc).unwrap();
    let got = ctx
        .decode_real_pairs(&ctx.decryptor(&hospital_sk).unwrap().decrypt(&at_hospital))
        .unwrap();
    let worst = got
        .iter()
        .zip(&weighted_sum)
        .map(|(g, w)| ((g - w) / total).abs())
        .fold(0.0, f64::max);
    eprintln!(
        "1000 clients: max |average error| = {worst:.2e} (scale 2^{}, expected σ {:.1e})",
        plan.scale.log2(),
        plan.expected_error
    );
    assert!(worst <= 1e-6, "average error {worst}");
}
