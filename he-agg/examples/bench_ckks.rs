//! CKKS micro-benchmarks and the 10 × 1M aggregation workload, side by side with SEAL/TenSEAL.
//!
//!     ../shared/bench/anchors/run.sh anchors        # SEAL 4 through TenSEAL, this machine
//!     cargo run --release -p he-agg --example bench_ckks -- --anchors anchors --json ckks.json
//!
//! Runs HEAL on the anchors' parameters (N=8192 with primes of 60,40,60 bits; N=16384 with
//! 60,40,40,60; scale 2^40; one thread) and prints HEAL ms, SEAL ms and their ratio per op.
//! Options: `--reps N` (default 100; add uses 10×), `--e2e-reps N` (default 3), `--skip-e2e`,
//! `--levels all` (or a list such as `scalar,avx2`): the ops at each SIMD level side by side; the
//! JSON keeps `ops` at the level in force (`simd_level`) and adds `ops_by_level`.

use std::path::PathBuf;
use std::time::Instant;

// A pooling allocator, as SEAL's memory pool: big temporaries stop costing page faults.
#[global_allocator]
static GLOBAL: he_agg::alloc::Allocator = he_agg::alloc::Allocator;

use he_agg::ckks::{CkksContext, Complex, Parameters, Preset, wire};
use he_agg::simd::{self, Level};
use rayon::prelude::*;
use serde_json::{Value, json};

struct Args {
    anchors: Option<PathBuf>,
    json: Option<PathBuf>,
    reps: usize,
    e2e_reps: usize,
    skip_e2e: bool,
    /// SIMD levels to time the ops at; None: the level in force (HEAL_SIMD or the CPU's best).
    levels: Option<Vec<Level>>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        anchors: None,
        json: None,
        reps: 100,
        e2e_reps: 3,
        skip_e2e: false,
        levels: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--anchors" => args.anchors = Some(value("--anchors")?.into()),
            "--json" => args.json = Some(value("--json")?.into()),
            "--reps" => {
                args.reps = value("--reps")?
                    .parse()
                    .map_err(|e| format!("--reps: {e}"))?
            }
            "--e2e-reps" => {
                args.e2e_reps = value("--e2e-reps")?
                    .parse()
                    .map_err(|e| format!("--e2e-reps: {e}"))?
            }
            "--skip-e2e" => args.skip_e2e = true,
            "--levels" => {
                let v = value("--levels")?;
                args.levels = Some(if v == "all" {
                    Level::supported()
                } else {
                    v.split(',')
                        .map(|s| match Level::parse(s) {
                            Ok(Some(l)) => Ok(l),
                            Ok(None) => Ok(Level::detected()),
                            Err(e) => Err(e.to_string()),
                        })
                        .collect::<Result<_, _>>()?
                });
            }
            "-h" | "--help" => {
                println!(
                    "bench_ckks [--anchors DIR] [--json FILE] [--reps N] [--e2e-reps N] [--skip-e2e] [--levels all|scalar,avx2,…]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Median seconds of `reps` timed runs after 5 warm-up runs.
fn time_op<T>(reps: usize, mut f: impl FnMut() -> T) -> f64 {
    for _ in 0..5 {
        std::hint::black_box(f());
    }
    let mut ts = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        std::hint::black_box(f());
        ts.push(t.elapsed().as_secs_f64());
    }
    median(ts)
}

fn uniform(seed: u64, len: usize) -> Vec<f64> {
    // splitmix64: reproducible inputs in [-1, 1]
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s.wrapping_add(0x9e3779b97f4a7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect()
}

fn load_json(dir: &Option<PathBuf>, name: &str) -> Option<Value> {
    let path = dir.as_ref()?.join(name);
    match std::fs::read_to_string(&path) {
        Ok(s) => match serde_json::from_str(&s) {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("warning: {}: {e}", path.display());
                None
            }
        },
        Err(e) => {
            eprintln!("warning: {}: {e}", path.display());
            None
        }
    }
}

fn anchor_result(doc: &Option<Value>, n: usize) -> Option<&Value> {
    doc.as_ref()?["results"]
        .as_array()?
        .iter()
        .find(|r| r["N"].as_u64() == Some(n as u64))
}

const OPS: [&str; 6] = [
    "encode_encrypt",
    "add",
    "multiply_relinearize",
    "rotate_1",
    "rescale",
    "decrypt_decode",
];

fn bench_ops(n: usize, reps: usize) -> Vec<(&'static str, f64)> {
    let (log_n, q_bits): (u32, &[u32]) = if n == 8192 {
        (13, &[60, 40])
    } else {
        (14, &[60, 40, 40])
    };
    // one prime per digit, one special prime: SEAL's key-switching layout
    let params = Parameters::new(log_n, q_bits, &[60], q_bits.len(), 40.0)
        .expect("anchor parameters are secure");
    let ctx = CkksContext::new(params).expect("context");
    let mut kg = ctx.key_generator().expect("os rng");
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let rlk = kg.relinearization_key(&sk);
    let gk = kg.galois_keys(&sk, &[1], false);
    let eval = ctx.evaluator(Some(&rlk), Some(&gk)).expect("evaluator");
    let mut enc = ctx.pk_encryptor(&pk).expect("encryptor");
    let dec = ctx.decryptor(&sk).expect("decryptor");
    let level = ctx.max_level();
    let scale = ctx.default_scale();
    let slots = ctx.slots();
    let x: Vec<f64> = uniform(1, slots);
    let y: Vec<f64> = uniform(2, slots);
    let xc: Vec<Complex> = x.iter().map(|&v| Complex::new(v, 0.0)).collect();
    let yc: Vec<Complex> = y.iter().map(|&v| Complex::new(v, 0.0)).collect();
    let a = enc.encrypt(&ctx.encode_coeffs(&xc, level, scale).unwrap());
    let b = enc.encrypt(&ctx.encode_coeffs(&yc, level, scale).unwrap());
    let prod = eval.mul_relin(&a, &b).unwrap();

    // correctness guards, so a timing never stands for a broken operation
    let got = ctx
        .decode_reals(&dec.decrypt(&eval.rescale(&prod).unwrap()))
        .unwrap();
    let mul_err = got
        .iter()
        .zip(x.iter().zip(&y))
        .map(|(g, (p, q))| (g - p * q).abs())
        .fold(0.0, f64::max);
    let rot = ctx
        .decode_reals(&dec.decrypt(&eval.rotate(&a, 1).unwrap()))
        .unwrap();
    let rot_err = (0..slots)
        .map(|j| (rot[j] - x[(j + 1) % slots]).abs())
        .fold(0.0, f64::max);
    assert!(
        mul_err < 1e-4 && rot_err < 1e-4,
        "mul {mul_err} rot {rot_err}"
    );

    let mut out = vec![
        (
            "encode_encrypt",
            time_op(reps, || {
                enc.encrypt(&ctx.encode_coeffs(&xc, level, scale).unwrap())
            }),
        ),
        ("add", time_op(reps * 10, || eval.add(&a, &b).unwrap())),
        (
            "multiply_relinearize",
            time_op(reps, || eval.mul_relin(&a, &b).unwrap()),
        ),
        ("rotate_1", time_op(reps, || eval.rotate(&a, 1).unwrap())),
        ("rescale", time_op(reps, || eval.rescale(&prod).unwrap())),
        (
            "decrypt_decode",
            time_op(reps, || ctx.decode_reals(&dec.decrypt(&a)).unwrap()),
        ),
    ];
    // the parts, for profiling
    let pt = ctx.encode(&xc, level, scale).unwrap();
    let deg2 = eval.mul(&a, &b).unwrap();
    let dpt = dec.decrypt(&a);
    out.extend([
        (
            "encode",
            time_op(reps, || ctx.encode(&xc, level, scale).unwrap()),
        ),
        ("encrypt", time_op(reps, || enc.encrypt(&pt))),
        ("multiply", time_op(reps, || eval.mul(&a, &b).unwrap())),
        (
            "relinearize",
            time_op(reps, || eval.relinearize(&deg2).unwrap()),
        ),
        ("decrypt", time_op(reps, || dec.decrypt(&a))),
        ("decode", time_op(reps, || ctx.decode_reals(&dpt).unwrap())),
    ]);
    println!(
        "  N={n}: ciphertext {} B on the wire ({} B raw in SEAL's layout); mul+relin+rescale error {mul_err:.1e}, rotate error {rot_err:.1e}",
        wire::encode_ciphertext(&ctx, &a).len(),
        2 * n * q_bits.len() * 8
    );
    out
}

struct E2e {
    floats_per_s: f64,
    max_abs_error: f64,
    encrypt_s: f64,
    aggregate_s: f64,
    decrypt_s: f64,
}

/// 10 clients × 1,000,000 floats in [-1, 1]: encrypt (public key), sum, decrypt. Threads, when
/// the pool has several, work on different ciphertexts.
fn bench_e2e(reps: usize) -> E2e {
    const CLIENTS: usize = 10;
    const FLOATS: usize = 1_000_000;
    let ctx = CkksContext::new(Parameters::preset(Preset::Aggregation)).expect("context");
    let mut kg = ctx.key_generator().expect("os rng");
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let eval = ctx.evaluator(None, None).expect("evaluator");
    let dec = ctx.decryptor(&sk).expect("decryptor");
    let per_ct = ctx.n();
    let level = ctx.max_level();
    let scale = 2f64.powi(50);
    let updates: Vec<Vec<f64>> = (0..CLIENTS)
        .map(|c| uniform(100 + c as u64, FLOATS))
        .collect();
    let plain_sum: Vec<f64> = (0..FLOATS)
        .map(|i| updates.iter().map(|u| u[i]).sum())
        .collect();
    let mut runs = Vec::new();
    for r in 0..reps {
        let t0 = Instant::now();
        let encrypted: Vec<Vec<_>> = updates
            .iter()
            .map(|u| {
                u.par_chunks(per_ct)
                    .map_init(
                        || ctx.pk_encryptor(&pk).expect("encryptor"),
                        |enc, chunk| {
                            enc.encrypt(&ctx.encode_real_pairs(chunk, level, scale).unwrap())
                        },
                    )
                    .collect()
            })
            .collect();
        let t1 = Instant::now();
        let mut acc = encrypted[0].clone();
        acc.par_iter_mut().enumerate().for_each(|(i, a)| {
            for client in &encrypted[1..] {
                eval.add_assign(a, &client[i]).unwrap();
            }
        });
        let t2 = Instant::now();
        let parts: Vec<Vec<f64>> = acc
            .par_iter()
            .map(|ct| ctx.decode_real_pairs(&dec.decrypt(ct)).unwrap())
            .collect();
        let out: Vec<f64> = parts.concat();
        let t3 = Instant::now();
        let err = out
            .iter()
            .zip(&plain_sum)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        let total = (t3 - t0).as_secs_f64();
        println!(
            "    e2e run {r}: total {total:.3}s (enc {:.3}, add {:.3}, dec {:.3}) err {err:.2e}",
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            (t3 - t2).as_secs_f64()
        );
        runs.push(E2e {
            floats_per_s: (CLIENTS * FLOATS) as f64 / total,
            max_abs_error: err,
            encrypt_s: (t1 - t0).as_secs_f64(),
            aggregate_s: (t2 - t1).as_secs_f64(),
            decrypt_s: (t3 - t2).as_secs_f64(),
        });
    }
    runs.sort_by(|a, b| a.floats_per_s.total_cmp(&b.floats_per_s));
    let mid = runs.len() / 2;
    let max_err = runs.iter().map(|r| r.max_abs_error).fold(0.0, f64::max);
    let m = runs.swap_remove(mid);
    E2e {
        max_abs_error: max_err,
        ..m
    }
}

fn main() {
    he_agg::alloc::tune();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let seal = load_json(&args.anchors, "seal_ops.json");
    let tenseal = load_json(&args.anchors, "tenseal.json");
    if args.anchors.is_some() && seal.is_none() {
        eprintln!("warning: no SEAL figures found; printing HEAL's alone");
    }
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("thread pool");
    let auto = match simd::init_from_env() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let levels = args.levels.clone().unwrap_or(vec![auto]);
    let mut ops_json = Vec::new();
    let mut per_level = serde_json::Map::new();
    for n in [8192usize, 16384] {
        println!("N = {n} (one thread)");
        let mut by_level = Vec::new();
        for &l in &levels {
            if let Err(e) = simd::set_level(l) {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
            by_level.push((l, one.install(|| bench_ops(n, args.reps))));
        }
        simd::set_level(auto).expect("the level in force");
        let mut head = format!("  {:<22}", "op");
        for (l, _) in &by_level {
            head += &format!(" {:>10} {:>7}", format!("{l} ms"), "ratio");
        }
        println!("{head} {:>10}", "SEAL ms");
        for (i, (op, _)) in by_level[0].1.iter().enumerate() {
            let seal_s = anchor_result(&seal, n).and_then(|r| r["ops"][op]["median_s"].as_f64());
            let mut row = format!("  {op:<22}");
            for (l, ops) in &by_level {
                let heal_s = ops[i].1;
                let ratio = seal_s.map(|s| heal_s / s);
                row += &format!(
                    " {:>10.4} {:>7}",
                    heal_s * 1e3,
                    ratio.map_or("-".into(), |r| format!("{r:.3}"))
                );
                if !(OPS.contains(op) || seal_s.is_some()) {
                    continue;
                }
                let entry = json!({"n": n, "op": op, "heal_ms": heal_s * 1e3,
                    "seal_ms": seal_s.map(|s| s * 1e3), "ratio": ratio});
                if *l == auto {
                    ops_json.push(entry.clone());
                }
                per_level
                    .entry(l.name())
                    .or_insert_with(|| json!([]))
                    .as_array_mut()
                    .expect("an array")
                    .push(entry);
            }
            println!(
                "{row} {:>10}",
                seal_s.map_or("-".into(), |s| format!("{:.4}", s * 1e3))
            );
        }
    }

    // bytes per real: a fresh public-key ciphertext of the aggregation preset carries N reals
    let agg = CkksContext::new(Parameters::preset(Preset::Aggregation)).expect("context");
    let mut kg = agg.key_generator().expect("os rng");
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let values = uniform(7, agg.n());
    let ct = agg.pk_encryptor(&pk).unwrap().encrypt(
        &agg.encode_real_pairs(&values, agg.max_level(), 2f64.powi(50))
            .unwrap(),
    );
    let heal_bpr = wire::encode_ciphertext(&agg, &ct).len() as f64 / agg.n() as f64;
    let seal_bpr = anchor_result(&seal, 8192)
        .and_then(|r| Some(r["ciphertext_bytes_serialized"].as_f64()? / r["slots"].as_f64()?));
    println!(
        "bytes per real value, fresh public-key ciphertext: HEAL aggregation preset {heal_bpr:.2}, SEAL N=8192 {}",
        seal_bpr.map_or("-".into(), |b| format!("{b:.2}"))
    );

    let mut e2e_json = Value::Null;
    if !args.skip_e2e {
        println!(
            "end-to-end: 10 clients × 1,000,000 floats (encrypt, sum, decrypt), aggregation preset"
        );
        let single = one.install(|| bench_e2e(args.e2e_reps));
        let threads = rayon::current_num_threads();
        println!("  all {threads} threads:");
        let multi = bench_e2e(args.e2e_reps);
        let ten = anchor_result(&tenseal, 8192)
            .and_then(|r| r["e2e"]["throughput_input_floats_per_s"].as_f64());
        let ratio = ten.map(|t| single.floats_per_s / t);
        println!(
            "  HEAL 1 thread {:.2} M floats/s (enc {:.2}s, add {:.3}s, dec {:.2}s), {threads} threads {:.2} M floats/s; TenSEAL {}; ratio (1 thread) {}; max abs error {:.2e}",
            single.floats_per_s / 1e6,
            single.encrypt_s,
            single.aggregate_s,
            single.decrypt_s,
            multi.floats_per_s / 1e6,
            ten.map_or("-".into(), |t| format!("{:.2} M floats/s", t / 1e6)),
            ratio.map_or("-".into(), |r| format!("{r:.1}x")),
            single.max_abs_error.max(multi.max_abs_error)
        );
        e2e_json = json!({
            "heal_floats_per_s": single.floats_per_s,
            "heal_floats_per_s_all_threads": multi.floats_per_s,
            "threads": threads,
            "tenseal_floats_per_s": ten,
            "ratio": ratio,
            "max_abs_error": single.max_abs_error.max(multi.max_abs_error),
            "heal_encrypt_s": single.encrypt_s,
            "heal_aggregate_s": single.aggregate_s,
            "heal_decrypt_s": single.decrypt_s,
        });
    }
    if let Some(path) = &args.json {
        let doc = json!({
            "simd_level": auto.name(),
            "ops": ops_json,
            "ops_by_level": per_level,
            "bytes_per_real": {"heal_aggregation_preset": heal_bpr, "seal_8192": seal_bpr},
            "e2e": e2e_json,
        });
        if let Err(e) = std::fs::write(path, serde_json::to_string_pretty(&doc).expect("json")) {
            eprintln!("error: cannot write {}: {e}", path.display());
            std::process::exit(1);
        }
        println!("wrote {}", path.display());
    }
}
