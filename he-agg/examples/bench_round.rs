//! One hospital's HE work in one round of the main job, on one thread: encrypt and sketch its
//! update, (the coordinator) check the update's ciphertexts, one of three switchers' shares of
//! the sum towards the consortium receiving key (the flooding made ahead, then the part once
//! asked: decode the c₁ sent, check its sketch, s_i·c₁, rescale, the mask s_recv·a_i), the
//! coordinator combining the shares, and decrypting the average (its c₁ expanded from three
//! seeds). What the HE/plaintext wall ratio pays per round beyond the network.
//!
//!     HEAL_SIMD=avx2 cargo run --release -p he-agg --example bench_round -- [--values 297000]

use std::time::Instant;

use he_agg::aggregate::{AggregationPlan, HeSettings, UpdateCodec, sketch};
use he_agg::ckks::{CkksContext, Parameters, Preset};
use he_agg::multiparty::{Crs, PublicKeyGen, ReceiveSwitch, SwitchInput, wire as mpw};
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
    // three switchers holding the collective secret, and the consortium receiving key
    let secrets: Vec<_> = (0..3).map(|_| kg.secret_key()).collect();
    let crs = Crs::from_federation(b"bench round");
    let ckg = PublicKeyGen::new(&ctx, &crs);
    let mut prng = Prng::from_os()?;
    let mut acc = ckg.share(&secrets[0], &mut prng)?;
    for s in &secrets[1..] {
        ckg.aggregate(&mut acc, &ckg.share(s, &mut prng)?)?;
    }
    let pk = ckg.finalize(acc);
    let receive = kg.secret_key();
    let active = [1u32, 2, 3];
    let update: Vec<f32> = (0..values)
        .map(|i| ((i % 1000) as f32 - 500.0) * 1e-4)
        .collect();
    let seed = [7u8; 32];
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
    let enc = time("encrypt + sketch (hospital)", &mut || {
        items = codec.encrypt_sketched(&pk, &update, &seed).unwrap().0;
    });
    let mut cts = Vec::new();
    let check = time("decode + check the update (coordinator)", &mut || {
        cts = items
            .iter()
            .enumerate()
            .map(|(i, b)| codec.decode(i, b).unwrap())
            .collect();
    });
    let weights = [5300.0, 13113.0, 4926.0, 6118.0, 5104.0];
    let result_level = plan.result_level(&ctx, &weights, 3);
    let inputs: Vec<Vec<u8>> = cts
        .iter()
        .map(|ct| codec.encode_switch_input(ct).unwrap())
        .collect();
    let proto = ReceiveSwitch::new(&ctx, plan.flooding(&weights)?, 3);
    let rescale = result_level < plan.level;
    // switcher j's shares of every input, from flooding made ahead
    let share_all = |j: usize, floods: Vec<_>| -> Vec<Vec<u8>> {
        let got: Vec<SwitchInput> = inputs
            .iter()
            .enumerate()
            .map(|(i, b)| codec.decode_switch_input(i, b).unwrap())
            .collect();
        std::hint::black_box(sketch::sketch_inputs(&ctx, &seed, &got));
        got.iter()
            .zip(&inputs)
            .zip(floods)
            .map(|((x, b), f)| {
                let a = crs.receive_switch_seed(blake3::hash(b).as_bytes(), active[j], &active);
                let s = proto
                    .share(&secrets[j], &receive, x, &a, f, rescale)
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
        result = cts
            .iter()
            .zip(&inputs)
            .enumerate()
            .map(|(k, (ct, b))| {
                let mut sum = mpw::decode_key_switch_share(&ctx, &shares[0][k]).unwrap();
                for s in &shares[1..] {
                    proto
                        .aggregate(
                            &mut sum,
                            &mpw::decode_key_switch_share(&ctx, &s[k]).unwrap(),
                        )
                        .unwrap();
                }
                let digest = blake3::hash(b);
                let seeds = active
                    .iter()
                    .map(|&i| crs.receive_switch_seed(digest.as_bytes(), i, &active))
                    .collect();
                mpw::encode_switched_result(&ctx, &proto.finalize(ct, sum, seeds).unwrap())
            })
            .collect();
    });
    let dec = time("decrypt the average (hospital)", &mut || {
        std::hint::black_box(
            codec
                .decrypt_average(&receive, &result, values, weights.iter().sum(), 1.0)
                .unwrap(),
        );
    });
    println!(
        "result level {result_level} of {}: {} bytes a result ciphertext, {} a share",
        plan.level,
        result[0].len(),
        shares[0][0].len()
    );
    println!(
        "{{\"simd_level\":\"{level}\",\"values\":{values},\"encrypt_ms\":{enc:.1},\"check_ms\":{check:.1},\"share_ms\":{:.1},\"mask_ms\":{mask:.1},\"complete_ms\":{complete:.1},\"combine_ms\":{combine:.1},\"decrypt_ms\":{dec:.1},\"result_level\":{result_level}}}",
        mask + complete
    );
    Ok(())
}
