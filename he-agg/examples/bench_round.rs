//! One hospital's HE work in one round of the main job, on one thread: encrypt its update under
//! its own secret, (the coordinator) decode the update's ciphertexts, one of three switchers'
//! shares of the sum of five hospitals' updates towards the consortium receiving key (the
//! flooding made ahead, then the part once asked: its keys for the five signed weights, each
//! update's a expanded from its seed, Σ a_k·key_k, rescale, the mask s_recv·a_i), the
//! coordinator combining the shares, and decrypting the average (its c₁ expanded from three
//! seeds). What the HE/plaintext wall ratio pays per round beyond the network.
//!
//!     HEAL_SIMD=avx2 cargo run --release -p he-agg --example bench_round -- [--values 297000]

use std::time::Instant;

use he_agg::aggregate::{AggregationPlan, Aggregator, CpuBackend, HeSettings, Shape, UpdateCodec};
use he_agg::ckks::{CkksContext, Parameters, Preset};
use he_agg::multiparty::threshold::deal;
use he_agg::multiparty::{Crs, ReceiveSwitch, ThresholdSecret, UpdateSum, wire as mpw};
use he_agg::ring::Prng;

#[global_allocator]
static GLOBAL: he_agg::alloc::Allocator = he_agg::alloc::Allocator;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    he_agg::alloc::tune();
    let level = he_agg::simd::init_from_env()?;
    let args: Vec<String> = std::env::args().collect();
    let values: usize = args
        .iter()
        .position(|a| a == "--values")
        .and_then(|i| args.get(i + 1))
        .map_or(Ok(297_000), |v| v.parse())?;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let ctx = CkksContext::new(Parameters::preset(Preset::Aggregation))?;
    let plan = AggregationPlan::from_settings(&ctx, &HeSettings::default(), 5, 3)?;
    let codec = UpdateCodec::new(ctx.clone(), plan.clone());
    let mut kg = ctx.key_generator()?;
    // five hospitals' own secrets, each dealt 3-of-5; the consortium receiving key
    let ids = [1u32, 2, 3, 4, 5];
    let secrets: Vec<_> = ids.iter().map(|_| kg.secret_key()).collect();
    let mut prng = Prng::from_os()?;
    let dealt: Vec<Vec<_>> = secrets
        .iter()
        .zip(ids)
        .map(|(sk, i)| deal(&ctx, sk, i, &ids, 3, &mut prng))
        .collect::<Result<_, _>>()?;
    let held: Vec<ThresholdSecret> = (0..ids.len())
        .map(|j| {
            let mine: Vec<_> = dealt.iter().map(|d| d[j].clone()).collect();
            ThresholdSecret::combine(&ctx, ids[j], 3, &ids, &mine)
        })
        .collect::<Result<_, _>>()?;
    let crs = Crs::from_federation(b"bench round");
    let receive = kg.secret_key();
    let active = [1u32, 2, 3];
    let update: Vec<f32> = (0..values)
        .map(|i| ((i % 1000) as f32 - 500.0) * 1e-4)
        .collect();
    let time = |what: &str, f: &mut (dyn FnMut() + Send)| -> f64 {
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            pool.install(&mut *f);
            best = best.min(t.elapsed().as_secs_f64() * 1e3);
        }
        println!("{what:<40} {best:>8.1} ms");
        best
    };
    println!(
        "level {level}, {values} values in {} ciphertexts of N = {}",
        codec.ciphertexts_for(values),
        ctx.n()
    );
    let mut items = Vec::new();
    let enc = time("encrypt (hospital)", &mut || {
        items = codec.encrypt(&secrets[0], &update).unwrap().0;
    });
    let mut cts = Vec::new();
    let check = time("decode + check the update (coordinator)", &mut || {
        cts = items
            .iter()
            .enumerate()
            .map(|(i, b)| codec.decode(i, b).unwrap())
            .collect::<Vec<_>>();
    });
    // the five updates summed as the coordinator sums them (c0 alone), and their seeds
    let weights = [5300u64, 13113, 4926, 6118, 5104];
    let signed: Vec<(u32, u64)> = ids.into_iter().zip(weights).collect();
    let shape = Shape {
        level: plan.level,
        degree: 0,
        scale: plan.scale,
    };
    let mut sums: Vec<Aggregator> = (0..items.len())
        .map(|_| Aggregator::new(&ctx, &CpuBackend, shape, 8))
        .collect::<Result<_, _>>()?;
    let mut a_seeds: Vec<Vec<[u8; 32]>> = vec![Vec::new(); items.len()];
    for (sk, &w) in secrets.iter().zip(&weights) {
        for (k, b) in codec.encrypt(sk, &update)?.0.iter().enumerate() {
            let (c0, seed) = codec.decode(k, b)?;
            sums[k].push(c0, w)?;
            a_seeds[k].push(seed);
        }
    }
    let sums: Vec<_> = sums
        .into_iter()
        .map(|a| a.finish())
        .collect::<Result<_, _>>()?;
    let wf: Vec<f64> = weights.iter().map(|&w| w as f64).collect();
    let result_level = plan.result_level(&ctx, &wf, 3);
    let proto = ReceiveSwitch::new(&ctx, plan.flooding(&wf)?, 3);
    let rescale = result_level < plan.level;
    let digest = |k: usize| [k as u8; 32];
    // switcher j's shares of every ciphertext of the sum, from flooding made ahead
    let share_all = |j: usize, floods: Vec<_>| -> Vec<Vec<u8>> {
        let keys = held[j].weighted_shares(&ctx, &active, &signed).unwrap();
        a_seeds
            .iter()
            .zip(floods)
            .enumerate()
            .map(|(k, (a_seeds, f))| {
                let sum = UpdateSum {
                    level: plan.level,
                    scale: plan.scale,
                    a_seeds,
                };
                let a = crs.receive_switch_seed(&digest(k), active[j], &active);
                let s = proto
                    .share_updates(&keys, &receive, &sum, &a, f, rescale)
                    .unwrap();
                mpw::encode_key_switch_share(&ctx, &s)
            })
            .collect()
    };
    let flood = |prng: &mut Prng| -> Vec<_> {
        (0..cts.len())
            .map(|_| proto.flood(plan.level, prng).unwrap())
            .collect()
    };
    // one set of flooding per timed repetition of the share (each serves one share)
    let mut sets = Vec::new();
    let mask = time("switching flooding, made ahead (switcher)", &mut || {
        sets.push(flood(&mut prng));
    });
    let mut shares: Vec<Vec<Vec<u8>>> = vec![Vec::new()];
    let complete = time("shares once asked (switcher)", &mut || {
        shares[0] = share_all(0, sets.pop().expect("a set of flooding per repetition"));
    });
    for j in 1..3 {
        let floods = flood(&mut prng);
        shares.push(share_all(j, floods));
    }
    let mut result: Vec<Vec<u8>> = Vec::new();
    let combine = time("combine three switchers' shares (coordinator)", &mut || {
        result = sums
            .iter()
            .enumerate()
            .map(|(k, ct)| {
                let mut sum = mpw::decode_key_switch_share(&ctx, &shares[0][k]).unwrap();
                for s in &shares[1..] {
                    proto
                        .aggregate(
                            &mut sum,
                            &mpw::decode_key_switch_share(&ctx, &s[k]).unwrap(),
                        )
                        .unwrap();
                }
                let seeds = active
                    .iter()
                    .map(|&i| crs.receive_switch_seed(&digest(k), i, &active))
                    .collect();
                mpw::encode_switched_result(&ctx, &proto.finalize(ct, sum, seeds).unwrap())
            })
            .collect();
    });
    let total: u64 = weights.iter().sum();
    let dec = time("decrypt the average (hospital)", &mut || {
        std::hint::black_box(
            codec
                .decrypt_average(&receive, &result, values, total as f64, 1.0)
                .unwrap(),
        );
    });
    println!(
        "result level {result_level} of {}: {} bytes an update ciphertext, {} a result \
         ciphertext, {} a share",
        plan.level,
        items[0].len(),
        result[0].len(),
        shares[0][0].len()
    );
    println!(
        "{{\"simd_level\":\"{level}\",\"values\":{values},\"encrypt_ms\":{enc:.1},\"check_ms\":{check:.1},\"share_ms\":{:.1},\"mask_ms\":{mask:.1},\"complete_ms\":{complete:.1},\"combine_ms\":{combine:.1},\"decrypt_ms\":{dec:.1},\"result_level\":{result_level}}}",
        mask + complete
    );
    Ok(())
}
