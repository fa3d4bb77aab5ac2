//! Times the stages of key switching and of decoding separately (min of many runs).
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
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(8192);
    let (log_n, q): (u32, &[u32]) = if n == 8192 {
        (13, &[60, 40])
    } else {
        (14, &[60, 40, 40])
    };
    let ctx = CkksContext::new(Parameters::new(log_n, q, &[60], q.len(), 40.0).unwrap()).unwrap();
    let rl = ctx.rlwe().clone();
    let mut kg = ctx.key_generator().unwrap();
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let rlk = kg.relinearization_key(&sk);
    let mut enc = ctx.pk_encryptor(&pk).unwrap();
    let dec = ctx.decryptor(&sk).unwrap();
    let x: Vec<Complex> = (0..ctx.slots())
        .map(|i| Complex::new((i as f64).sin(), 0.0))
        .collect();
    let level = ctx.max_level();
    let a = enc.encrypt(&ctx.encode_coeffs(&x, level, ctx.default_scale()).unwrap());
    let d = a.parts[1].clone();
    let reps = 300;
    let ring = rl.ring();
    let mut limb = d.limb(0).to_vec();
    println!(
        "ntt 60-bit limb   {:.4} ms",
        min_ms(reps, || ring.ntt_limb(&mut limb, 0))
    );
    let mut limb1 = d.limb(1).to_vec();
    println!(
        "ntt 40-bit limb   {:.4} ms",
        min_ms(reps, || ring.ntt_limb(&mut limb1, 1))
    );
    println!(
        "intt 60-bit limb  {:.4} ms",
        min_ms(reps, || ring.intt_limb(&mut limb, 0))
    );
    let dec_ = rl.decompose(&d, level).unwrap();
    println!(
        "decompose         {:.4} ms",
        min_ms(reps, || rl.decompose(&d, level).unwrap())
    );
    let (p0, _) = rl.inner_product(&dec_, &rlk.0).unwrap();
    println!(
        "inner_product     {:.4} ms",
        min_ms(reps, || rl.inner_product(&dec_, &rlk.0).unwrap())
    );
    println!(
        "mod_down (one)    {:.4} ms",
        min_ms(reps, || rl.mod_down(p0.clone(), level))
    );
    println!("clone (3 limbs)   {:.4} ms", min_ms(reps, || p0.clone()));
    let pt = dec.decrypt(&a);
    println!(
        "decrypt           {:.4} ms",
        min_ms(reps, || dec.decrypt(&a))
    );
    println!(
        "decode            {:.4} ms",
        min_ms(reps, || ctx.decode(&pt).unwrap())
    );
    println!(
        "encode_coeffs     {:.4} ms",
        min_ms(reps, || ctx
            .encode_coeffs(&x, level, ctx.default_scale())
            .unwrap())
    );
    let mut prng = he_agg::ring::Prng::from_seed(&[1; 32]);
    println!(
        "gaussian N        {:.4} ms",
        min_ms(reps, || prng.gaussian(n))
    );
    println!(
        "ternary N         {:.4} ms",
        min_ms(reps, || prng.ternary(n))
    );
}
