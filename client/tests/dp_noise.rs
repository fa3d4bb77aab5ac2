//! Hospital-level differential privacy through the real encrypted pipeline: each hospital's
//! share of discrete Gaussian noise, encrypted under its own secret with the federation's
//! codec, summed as the coordinator sums them, switched to a receiving key from the seeds, decrypted and rounded back to the grid. The decrypted sum of zero updates is
//! the noise alone; its empirical variance must be that of the plan — σ² when exactly the
//! quorum contributes (dropouts), more when more do — and the rounding must be exact.

use he_agg::aggregate::{AggregationPlan, Aggregator, CpuBackend, Shape, UpdateCodec};
use he_agg::ckks::{CkksContext, Parameters, Preset};
use he_agg::multiparty::threshold::deal;
use he_agg::multiparty::{Crs, ReceiveSwitch, ThresholdSecret, UpdateSum, wire};
use he_agg::ring::Prng;
use privacy::mechanism::HospitalMechanism;
use privacy::{Mode, PrivacyConfig, RunShape};

#[test]
fn the_decrypted_noise_has_the_planned_variance_with_and_without_dropouts() {
    let (hospitals, quorum) = (5u32, 3u32);
    let cfg = PrivacyConfig {
        mode: Mode::Hospital,
        noise_multiplier: Some(1.0),
        clip: 1.0,
        quorum: Some(quorum),
        rounds: Some(1),
        ..Default::default()
    };
    let plan = cfg
        .plan(RunShape {
            rounds: 1,
            quorum,
            examples: 0,
            batch_size: 1,
            epochs: 1,
        })
        .unwrap();
    let mech = HospitalMechanism::new(&plan);
    let ctx = CkksContext::new(Parameters::preset(Preset::Aggregation)).unwrap();
    let he = he_agg::aggregate::HeSettings::default();
    let agg = AggregationPlan::from_settings(&ctx, &he, hospitals as usize, 3).unwrap();
    let codec = UpdateCodec::new(ctx.clone(), agg.clone());
    let mut kg = ctx.key_generator().unwrap();
    let receive = kg.secret_key();
    let crs = Crs::from_federation(b"dp noise");
    let mut prng = Prng::from_seed(&[5; 32]);
    let dim = 3 * ctx.n();
    let zero = vec![0f32; dim];
    for contributors in [quorum, hospitals] {
        // each hospital encrypts its noised update under its own secret; switcher 1 holds a
        // share of every one of them (threshold 1: it alone switches, as t switchers would)
        let ids: Vec<u32> = (1..=contributors).collect();
        let secrets: Vec<_> = ids.iter().map(|_| kg.secret_key()).collect();
        let to_1: Vec<_> = secrets
            .iter()
            .zip(&ids)
            .map(|(sk, &i)| deal(&ctx, sk, i, &ids, 1, &mut prng).unwrap().remove(0))
            .collect();
        let held = ThresholdSecret::combine(&ctx, 1, 1, &ids, &to_1).unwrap();
        let shape = Shape {
            level: agg.level,
            degree: 0,
            scale: agg.scale,
        };
        let mut sums: Vec<Aggregator> = (0..codec.ciphertexts_for(dim))
            .map(|_| Aggregator::new(&ctx, &CpuBackend, shape, 8).unwrap())
            .collect();
        let mut a_seeds: Vec<Vec<[u8; 32]>> = vec![Vec::new(); sums.len()];
        for sk in &secrets {
            let noised = mech
                .privatize(&zero, mech.noise(dim).unwrap())
                .unwrap()
                .values;
            let (items, _) = codec.encrypt(sk, &noised).unwrap();
            for (k, b) in items.iter().enumerate() {
                let (c0, seed) = codec.decode(k, b).unwrap();
                sums[k].push(c0, 1).unwrap();
                a_seeds[k].push(seed);
            }
        }
        // DP's unit weights keep the full level
        let weights = vec![1.0; contributors as usize];
        assert_eq!(agg.result_level(&ctx, &weights, 1), agg.level);
        let proto = ReceiveSwitch::new(&ctx, agg.flooding(&weights).unwrap(), 1);
        let signed: Vec<(u32, u64)> = ids.iter().map(|&i| (i, 1)).collect();
        let keys = held.weighted_shares(&ctx, &[1], &signed).unwrap();
        let items: Vec<Vec<u8>> = sums
            .into_iter()
            .zip(&a_seeds)
            .enumerate()
            .map(|(k, (sum, a_seeds))| {
                let ct = sum.finish().unwrap();
                let seed = crs.receive_switch_seed(&[k as u8; 32], 1, &[1]);
                let mask = proto.flood(agg.level, &mut prng).unwrap();
                let input = UpdateSum {
                    level: agg.level,
                    scale: agg.scale,
                    a_seeds,
                };
                let share = proto
                    .share_updates(&keys, &receive, &input, &seed, mask, false)
                    .unwrap();
                let result = proto.finalize(&ct, share, vec![seed]).unwrap();
                wire::encode_switched_result(&ctx, &result)
            })
            .collect();
        let n = u64::from(contributors);
        let mut avg = codec
            .decrypt_average(&receive, &items, dim, n as f64, he.max_update)
            .unwrap();
        let off_grid = mech.snap(&mut avg, n);
        // the switch's flooding included, far below the half step that would round wrong (a
        // hospital warns from a quarter)
        assert!(off_grid < 0.1, "CKKS's error reached {off_grid} grid steps");
        let total: Vec<f64> = avg.iter().map(|a| a * n as f64).collect();
        let var = total.iter().map(|t| t * t).sum::<f64>() / dim as f64;
        let want = f64::from(contributors) * mech.sigma_each().powi(2);
        let se = want * (2.0 / dim as f64).sqrt();
        assert!(
            (var - want).abs() < 5.0 * se,
            "{contributors} contributors: variance {var}, want {want}"
        );
        // at the quorum the sum carries exactly the planned σ² = (z·C)², more above it
        let sigma2 = (plan.noise_multiplier * cfg.clip).powi(2);
        if contributors == quorum {
            assert!((want / sigma2 - 1.0).abs() < 1e-3, "{want} vs {sigma2}");
        } else {
            assert!(want > sigma2 * 1.5);
        }
    }
}
