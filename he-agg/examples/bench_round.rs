//! One hospital's HE work in one round of the main job, on one thread: encrypt and sketch its
//! update, (the coordinator) check the update's ciphertexts, one switcher's public-key-switching
//! shares of the sum, and decrypt the average. What the HE/plaintext wall ratio pays per round
//! beyond the network.
//!
//!     HEAL_SIMD=avx2 cargo run --release -p he-agg --example bench_round -- [--values 297000]

use std::time::Instant;

use he_agg::aggregate::{AggregationPlan, HeSettings, UpdateCodec};
use he_agg::ckks::{CkksContext, Parameters, Preset};
use he_agg::multiparty::PublicKeySwitch;
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
    let flooding = plan.flooding(&[7000.0; 5])?;
    let codec = UpdateCodec::new(ctx.clone(), plan);
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
    let pcks = PublicKeySwitch::new(&ctx, flooding, 3);
    let mut prng = Prng::from_os()?;
    let share = time("switching shares (each of t hospitals)", &mut || {
        for ct in &cts {
            std::hint::black_box(pcks.share(&sk, &pk, ct, &mut prng).unwrap());
        }
    });
    let dec = time("decrypt the average (hospital)", &mut || {
        std::hint::black_box(
            codec
                .decrypt_average(&sk, &items, values, 5.0, 1.0)
                .unwrap(),
        );
    });
    println!(
        "{{\"simd_level\":\"{level}\",\"values\":{values},\"encrypt_ms\":{enc:.1},\"check_ms\":{check:.1},\"share_ms\":{share:.1},\"decrypt_ms\":{dec:.1}}}"
    );
    Ok(())
}
