//! One hospital's HE work in one round of the main job, on one thread: encrypt and sketch its
//! update, (the coordinator) check the update's ciphertexts, one switcher's public-key-switching
//! shares of the sum (the masks made ahead, then the part once asked: decode the c₁ sent,
//! check its sketch, complete and rescale), the coordinator combining them, and decrypting the
//! average. What the HE/plaintext wall ratio pays per round beyond the network.
//!
//!     HEAL_SIMD=avx2 cargo run --release -p he-agg --example bench_round -- [--values 297000]

use std::time::Instant;

use he_agg::aggregate::{AggregationPlan, HeSettings, UpdateCodec, sketch};
use he_agg::ckks::{CkksContext, Parameters, Preset, wire};
use he_agg::multiparty::{PublicKeySwitch, SwitchInput, wire as mpw};
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
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
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
    let pcks = PublicKeySwitch::new(&ctx, plan.flooding(&weights)?, 3);
    let mut prng = Prng::from_os()?;
    // one set of masks per timed repetition of the completion (a mask serves one share)
    let mut sets = Vec::new();
    let mask = time("switching masks, made ahead (switcher)", &mut || {
        sets.push(
            (0..cts.len())
                .map(|_| pcks.mask(&pk, plan.level, &mut prng).unwrap())
                .collect::<Vec<_>>(),
        );
    });
    let mut shares: Vec<Vec<u8>> = Vec::new();
    let complete = time("shares once asked (switcher)", &mut || {
        let masks = sets.pop().expect("a set of masks per repetition");
        let got: Vec<SwitchInput> = inputs
            .iter()
            .enumerate()
            .map(|(i, b)| codec.decode_switch_input(i, b).unwrap())
            .collect();
        std::hint::black_box(sketch::sketch_inputs(&ctx, &seed, &got));
        shares = got
            .iter()
            .zip(masks)
            .map(|(x, m)| {
                let mut s = pcks.share_input_with_mask(&sk, x, m).unwrap();
                if result_level < plan.level {
                    s.rescale(&ctx).unwrap();
                }
                mpw::encode_public_key_switch_share(&ctx, &s)
            })
            .collect();
    });
    let mut result: Vec<Vec<u8>> = Vec::new();
    let combine = time("combine one switcher's shares (coordinator)", &mut || {
        result = cts
            .iter()
            .zip(&shares)
            .map(|(ct, b)| {
                let s = mpw::decode_public_key_switch_share(&ctx, b).unwrap();
                wire::encode_ciphertext(&ctx, &pcks.finalize(ct, s).unwrap())
            })
            .collect();
    });
    let dec = time("decrypt the average (hospital)", &mut || {
        std::hint::black_box(
            codec
                .decrypt_average(&sk, &result, values, weights.iter().sum(), 1.0)
                .unwrap(),
        );
    });
    println!(
        "result level {result_level} of {}: {} bytes a result ciphertext, {} a share",
        plan.level,
        result[0].len(),
        shares[0].len()
    );
    println!(
        "{{\"simd_level\":\"{level}\",\"values\":{values},\"encrypt_ms\":{enc:.1},\"check_ms\":{check:.1},\"share_ms\":{:.1},\"mask_ms\":{mask:.1},\"complete_ms\":{complete:.1},\"combine_ms\":{combine:.1},\"decrypt_ms\":{dec:.1},\"result_level\":{result_level}}}",
        mask + complete
    );
    Ok(())
}
