//! Encrypted aggregation of model updates, end to end in one process:
//!
//!     cargo run --release -p he-agg --example demo [-- --hospitals 5 --params 200000]
//!
//! Each simulated hospital draws a model update in [-1, 1], encrypts it with the aggregation
//! preset (N = 2^13, 128-bit secure) under the consortium's public key, and the coordinator sums
//! the ciphertexts weighted by each hospital's sample count without decrypting anything. The key
//! holder then decrypts the weighted sum and divides by the total sample count. The demo checks
//! the result against the plaintext weighted average and prints sizes and timings.
//!
//! One secret key stands for the consortium here; collective keys and threshold decryption (no
//! single holder) are the multiparty layer's job.

use std::time::Instant;

use he_agg::ckks::{CkksContext, Parameters, Preset, wire};

#[global_allocator]
static GLOBAL: he_agg::alloc::Allocator = he_agg::alloc::Allocator;

fn arg(name: &str, default: usize) -> Result<usize, String> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .ok_or(format!("{name} needs a value"))?
            .parse()
            .map_err(|e| format!("{name}: {e}")),
        None => Ok(default),
    }
}

fn main() {
    he_agg::alloc::tune();
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let hospitals = arg("--hospitals", 5)?;
    let params = arg("--params", 200_000)?;
    if hospitals == 0 || params == 0 {
        return Err("--hospitals and --params must be positive".into());
    }
    let ctx =
        CkksContext::new(Parameters::preset(Preset::Aggregation)).map_err(|e| e.to_string())?;
    let p = ctx.params();
    println!(
        "aggregation preset: N = {}, log2 Q = {:.1} (128-bit bound for this N: {:.0}), {} reals per ciphertext",
        p.n(),
        p.rlwe().log_q(),
        he_agg::rlwe::max_log_qp_128(p.rlwe().log_n()).unwrap_or(f64::NAN),
        p.n()
    );
    let mut kg = ctx.key_generator().map_err(|e| e.to_string())?;
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let eval = ctx.evaluator(None, None).map_err(|e| e.to_string())?;
    let dec = ctx.decryptor(&sk).map_err(|e| e.to_string())?;
    let level = ctx.max_level();
    let scale = 2f64.powi(50);

    // updates and sample counts (deterministic, so runs compare)
    let mut state = 0x2545f4914f6cdd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let samples: Vec<i64> = (0..hospitals)
        .map(|_| 500 + (next() % 5000) as i64)
        .collect();
    let updates: Vec<Vec<f64>> = (0..hospitals)
        .map(|_| {
            (0..params)
                .map(|_| (next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0)
                .collect()
        })
        .collect();

    let t = Instant::now();
    let mut bytes_up = 0usize;
    let mut sum: Option<Vec<_>> = None;
    for (h, u) in updates.iter().enumerate() {
        let mut enc = ctx.pk_encryptor(&pk).map_err(|e| e.to_string())?;
        let cts: Vec<_> = u
            .chunks(ctx.n())
            .map(|chunk| {
                ctx.encode_real_pairs(chunk, level, scale)
                    .map(|pt| enc.encrypt(&pt))
            })
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        bytes_up += cts
            .iter()
            .map(|ct| wire::encode_ciphertext(&ctx, ct).len())
            .sum::<usize>();
        // the coordinator folds each update in as it arrives, weighted by the sample count
        let weighted: Vec<_> = cts
            .iter()
            .map(|ct| eval.mul_int(ct, samples[h]))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        sum = Some(match sum {
            None => weighted,
            Some(mut acc) => {
                for (a, w) in acc.iter_mut().zip(&weighted) {
                    eval.add_assign(a, w).map_err(|e| e.to_string())?;
                }
                acc
            }
        });
    }
    let aggregate_s = t.elapsed().as_secs_f64();
    let sum = sum.ok_or("no updates")?;
    let t = Instant::now();
    let total: i64 = samples.iter().sum();
    let mut average = Vec::with_capacity(params);
    for ct in &sum {
        let values = ctx
            .decode_real_pairs(&dec.decrypt(ct))
            .map_err(|e| e.to_string())?;
        average.extend(values.into_iter().map(|v| v / total as f64));
    }
    average.truncate(params);
    let decrypt_s = t.elapsed().as_secs_f64();

    let max_err = (0..params)
        .map(|i| {
            let want: f64 = updates
                .iter()
                .zip(&samples)
                .map(|(u, &n)| u[i] * n as f64)
                .sum::<f64>()
                / total as f64;
            (average[i] - want).abs()
        })
        .fold(0.0, f64::max);
    println!(
        "{hospitals} hospitals × {params} parameters, sample counts {samples:?}\n\
         encrypt + upload size + weighted homomorphic sum: {aggregate_s:.2} s, {:.1} MB of ciphertext ({:.1} bytes per parameter per hospital)\n\
         decrypt + decode + divide: {decrypt_s:.3} s\n\
         max |encrypted average − plaintext average| = {max_err:.2e}",
        bytes_up as f64 / 1e6,
        bytes_up as f64 / (params * hospitals) as f64
    );
    if max_err > 1e-6 {
        return Err(format!("aggregate error {max_err:.2e} exceeds 1e-6"));
    }
    Ok(())
}
