//! Runs one CKKS operation in a loop, for profilers (perf, callgrind):
//!     cargo run --release -p he-agg --example profile_op -- relinearize 8192 200
// A pooling allocator, as SEAL's memory pool: big temporaries stop costing page faults.
#[global_allocator]
static GLOBAL: he_agg::alloc::Allocator = he_agg::alloc::Allocator;

use he_agg::ckks::{CkksContext, Complex, Parameters};

fn main() {
    he_agg::alloc::tune();
    let args: Vec<String> = std::env::args().collect();
    let op = args.get(1).map(String::as_str).unwrap_or("relinearize");
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(8192);
    let reps: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100);
    let (log_n, q): (u32, &[u32]) = if n == 8192 {
        (13, &[60, 40])
    } else {
        (14, &[60, 40, 40])
    };
    let ctx = CkksContext::new(Parameters::new(log_n, q, &[60], q.len(), 40.0).unwrap()).unwrap();
    let mut kg = ctx.key_generator().unwrap();
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let rlk = kg.relinearization_key(&sk);
    let gk = kg.galois_keys(&sk, &[1], false);
    let eval = ctx.evaluator(Some(&rlk), Some(&gk)).unwrap();
    let mut enc = ctx.pk_encryptor(&pk).unwrap();
    let dec = ctx.decryptor(&sk).unwrap();
    let x: Vec<Complex> = (0..ctx.slots())
        .map(|i| Complex::new((i as f64).sin(), 0.0))
        .collect();
    let level = ctx.max_level();
    let s = ctx.default_scale();
    let a = enc.encrypt(&ctx.encode_coeffs(&x, level, s).unwrap());
    let deg2 = eval.mul(&a, &a).unwrap();
    let prod = eval.relinearize(&deg2).unwrap();
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = std::time::Instant::now();
        match op {
            "relinearize" => drop(std::hint::black_box(eval.relinearize(&deg2).unwrap())),
            "rotate" => drop(std::hint::black_box(eval.rotate(&a, 1).unwrap())),
            "encrypt" => drop(std::hint::black_box(
                enc.encrypt(&ctx.encode_coeffs(&x, level, s).unwrap()),
            )),
            "decrypt" => drop(std::hint::black_box(
                ctx.decode_reals(&dec.decrypt(&a)).unwrap(),
            )),
            "rescale" => drop(std::hint::black_box(eval.rescale(&prod).unwrap())),
            "multiply" => drop(std::hint::black_box(eval.mul(&a, &a).unwrap())),
            other => panic!("unknown op {other}"),
        }
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    if !times.is_empty() {
        times.sort_by(|a, b| a.total_cmp(b));
        println!(
            "{op} N={n}: min {:.4} ms, median {:.4} ms",
            times[0],
            times[times.len() / 2]
        );
    }
}
