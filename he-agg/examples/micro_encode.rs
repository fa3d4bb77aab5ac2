//! One plaintext encoding (inverse FFT, rounding, NTT) at the sizes the served models use,
//! split into its parts: `cargo run --release -p he-agg --example micro_encode [LOG_N] [LIMBS]
//! [SCALE_BITS]` (scale 2^40 by default; mode (a)'s 2^90 makes coefficients past 2^63, reduced
//! from their floats to every limb).

use std::time::Instant;

use he_agg::ckks::{CkksContext, Parameters};

fn main() {
    let mut args = std::env::args().skip(1);
    let log_n: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(15);
    let limbs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(13);
    let scale_bits: i32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(40);
    let scale = 2f64.powi(scale_bits);
    let _ = he_agg::simd::init_from_env();
    let q_bits = vec![45u32; limbs];
    let params =
        Parameters::insecure_for_tests(log_n, &q_bits, &[50], limbs, 40.0).expect("parameters");
    let ctx = CkksContext::new(params).expect("context");
    let v: Vec<f64> = (0..ctx.slots())
        .map(|i| ((i * 7919) % 1000) as f64 / 1000.0 - 0.5)
        .collect();
    let c: Vec<he_agg::ckks::Complex> = v
        .iter()
        .map(|&x| he_agg::ckks::Complex::new(x, 0.0))
        .collect();
    let reps = 200;
    let t = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(ctx.encode_coeffs(&c, limbs, scale).expect("encode"));
    }
    let coeffs = t.elapsed().as_secs_f64() / reps as f64;
    let t = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(ctx.encode_reals(&v, limbs, scale).expect("encode"));
    }
    let all = t.elapsed().as_secs_f64() / reps as f64;
    println!(
        "N = 2^{log_n}, {limbs} limbs, scale 2^{scale_bits}: encode {:.0} µs (FFT and rounding {:.0} µs, NTT {:.0} µs)",
        all * 1e6,
        coeffs * 1e6,
        (all - coeffs) * 1e6
    );
}
