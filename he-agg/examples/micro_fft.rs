#[global_allocator]
static GLOBAL: he_agg::alloc::Allocator = he_agg::alloc::Allocator;
use he_agg::ckks::{CkksContext, Complex, Parameters};
use std::time::Instant;
fn min_ms<T>(reps: usize, mut f: impl FnMut() -> T) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}
fn main() {
    he_agg::alloc::tune();
    let ctx = CkksContext::new(Parameters::new(13, &[60, 40], &[60], 2, 40.0).unwrap()).unwrap();
    let x: Vec<Complex> = (0..ctx.slots())
        .map(|i| Complex::new((i as f64).sin(), 0.0))
        .collect();
    let pt = ctx.encode_coeffs(&x, 2, ctx.default_scale()).unwrap();
    let ptn = ctx.encode(&x, 2, ctx.default_scale()).unwrap();
    println!(
        "encode_coeffs {:.4}",
        min_ms(500, || ctx
            .encode_coeffs(&x, 2, ctx.default_scale())
            .unwrap())
    );
    println!(
        "decode (coeff form) {:.4}",
        min_ms(500, || ctx.decode_reals(&pt).unwrap())
    );
    println!(
        "decode (ntt form) {:.4}",
        min_ms(500, || ctx.decode_reals(&ptn).unwrap())
    );
    let pt1 = ctx.encode_coeffs(&x, 1, ctx.default_scale()).unwrap();
    println!(
        "decode level 1 (coeff form) {:.4}",
        min_ms(500, || ctx.decode_reals(&pt1).unwrap())
    );
}
