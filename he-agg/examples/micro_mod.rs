use he_agg::ring::Modulus;
use std::time::Instant;
fn main() {
    let q = 1152921504606830593u64;
    let m = Modulus::new(q);
    let n = 8192;
    let a: Vec<u64> = (0..n as u64)
        .map(|i| (i * 0x9e3779b97f4a7c15) % q)
        .collect();
    let b: Vec<u64> = (0..n as u64)
        .map(|i| (i * 0x94d049bb133111eb) % q)
        .collect();
    let mut c = vec![0u64; n];
    let reps = 2000;
    let t = Instant::now();
    for _ in 0..reps {
        for ((o, &x), &y) in c.iter_mut().zip(&a).zip(&b) {
            *o = m.add(*o, m.mul(x, y));
        }
        std::hint::black_box(&mut c);
    }
    println!(
        "mul_add: {:.2} ns/elem",
        t.elapsed().as_secs_f64() / (reps * n) as f64 * 1e9
    );
    let t = Instant::now();
    for _ in 0..reps {
        for ((o, &x), &y) in c.iter_mut().zip(&a).zip(&b) {
            *o = m.mul(x, y);
        }
        std::hint::black_box(&mut c);
    }
    println!(
        "mul: {:.2} ns/elem",
        t.elapsed().as_secs_f64() / (reps * n) as f64 * 1e9
    );
    let t = Instant::now();
    for _ in 0..reps {
        for ((o, &x), &y) in c.iter_mut().zip(&a).zip(&b) {
            *o = m.reduce_u128(x as u128 * y as u128);
        }
        std::hint::black_box(&mut c);
    }
    println!(
        "reduce_u128: {:.2} ns/elem",
        t.elapsed().as_secs_f64() / (reps * n) as f64 * 1e9
    );
    let w = m.shoup(12345678901);
    let t = Instant::now();
    for _ in 0..reps {
        for (o, &x) in c.iter_mut().zip(&a) {
            *o = m.mul_shoup(x, w);
        }
        std::hint::black_box(&mut c);
    }
    println!(
        "shoup: {:.2} ns/elem",
        t.elapsed().as_secs_f64() / (reps * n) as f64 * 1e9
    );
    let t = Instant::now();
    for _ in 0..reps {
        for (o, &x) in c.iter_mut().zip(&a) {
            *o = m.reduce_i64(x as i64 - (q as i64 / 2));
        }
        std::hint::black_box(&mut c);
    }
    println!(
        "reduce_i64: {:.2} ns/elem",
        t.elapsed().as_secs_f64() / (reps * n) as f64 * 1e9
    );
}
#[allow(dead_code)]
fn extra() {}
