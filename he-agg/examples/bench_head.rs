//! Encrypted head-training steps at the real parameters (N = 2^15, 11 primes), on the CPU
//! trainer and on a device path, their states compared word for word:
//!
//!     cargo run --release -p he-agg --example bench_head -- --backend reference --steps 2
//!     cargo run --release -p he-agg --features cuda --example bench_head -- --backend cuda --json head.json
//!
//! `--backend`: `cuda` (a GPU; build with `--features cuda`), `reference` (the GPU kernels'
//! reference executor on the CPU: checks, not speed), `auto`, `cpu`. A 128 → 11 head (the
//! served CNN's features), `--chunks` chunks of 64 encrypted examples, `--batch-chunks` per step
//! (the defaults of `coordinator train-head`: 8), momentum 0.9. Each step's state is refreshed
//! between steps by one party holding the whole key (not timed). Prints the median step on each side and the ratio.

use std::time::Instant;

use he_agg::aggregate::BackendChoice;
use he_agg::ckks::SecretKey;
use he_agg::infer::EvaluationKeys;
use he_agg::multiparty::RefreshShare;
use he_agg::ring::Prng;
use he_agg::train::{HeadPlan, HeadRun, RunSettings, encrypt_chunk, state_digest};

#[global_allocator]
static GLOBAL: he_agg::alloc::Allocator = he_agg::alloc::Allocator;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} {v}: not a value"))
        })
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    he_agg::alloc::tune();
    he_agg::simd::init_from_env().expect("HEAL_SIMD");
    let args: Vec<String> = std::env::args().collect();
    let backend: String = arg(&args, "--backend", "reference".to_string());
    let steps: usize = arg(&args, "--steps", 2);
    let chunks_n: usize = arg(&args, "--chunks", 8);
    let batch_chunks: usize = arg(&args, "--batch-chunks", 8);
    let json: Option<String> = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1).cloned());
    let (features, classes) = (128, 11);
    let plan = HeadPlan::new(features, classes).expect("plan");
    let ctx = plan.context().clone();
    let l = plan.layout().clone();
    let mut kg = ctx.key_generator().expect("rng");
    // one party holds the whole key: the steps' work is the same, and refreshing is not timed
    let s: SecretKey = kg.secret_key();
    let pk = kg.public_key(&s);
    let t = Instant::now();
    let keys = EvaluationKeys {
        relinearization: Some(kg.relinearization_key(&s)),
        galois: kg.galois_keys(&s, &l.rotations(), false),
    };
    eprintln!(
        "keys: {} rotations in {:.1} s",
        l.rotations().len(),
        t.elapsed().as_secs_f64()
    );
    // examples on the unit sphere's scale (a site L2-normalises its features)
    let mut prng = Prng::from_seed(&[1; 32]);
    let mut enc = ctx.pk_encryptor(&pk).expect("encryptor");
    let chunks: Vec<_> = (0..chunks_n)
        .map(|c| {
            let xs: Vec<Vec<f64>> = (0..l.samples())
                .map(|_| {
                    (0..features)
                        .map(|_| ((prng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 - 0.5) / 6.0)
                        .collect()
                })
                .collect();
            let ys: Vec<u32> = (0..l.samples())
                .map(|i| ((c + i) % classes) as u32)
                .collect();
            let xr: Vec<&[f64]> = xs.iter().map(Vec::as_slice).collect();
            encrypt_chunk(&ctx, &mut enc, &l, &xr, &ys).expect("chunk")
        })
        .collect();
    let settings = RunSettings {
        epochs: steps.div_ceil(chunks_n.div_ceil(batch_chunks)).max(1),
        batch_chunks,
        lr: 1.0,
        momentum: 0.9,
    };
    let run = || {
        HeadRun::new(
            plan.clone(),
            &pk,
            &keys,
            settings,
            &[2; 32],
            b"bench",
            (1, 1),
            chunks.clone(),
        )
        .expect("run")
    };
    let mut cpu = run();
    let mut dev = run();
    let t = Instant::now();
    match backend.as_str() {
        "reference" => dev
            .place_on_host_reference(&keys)
            .expect("reference executor"),
        other => {
            let choice: BackendChoice = other.parse().expect("--backend");
            dev.place(choice, &keys).expect("placing the run");
        }
    }
    let upload_s = t.elapsed().as_secs_f64();
    eprintln!("placed on {} in {upload_s:.2} s", dev.placed());
    let (mut cpu_s, mut dev_s) = (Vec::new(), Vec::new());
    let mut equal = true;
    for step in 0..steps.min(cpu.steps().0) {
        let t = Instant::now();
        cpu.compute_step().expect("cpu step");
        cpu_s.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        dev.compute_step().expect("device step");
        dev_s.push(t.elapsed().as_secs_f64());
        let same = state_digest(&ctx, cpu.pending()) == state_digest(&ctx, dev.pending());
        equal &= same;
        eprintln!(
            "step {step}: CPU {:.3} s, {} {:.3} s, states equal: {same}",
            cpu_s[step],
            dev.placed(),
            dev_s[step]
        );
        let f = cpu.refresh();
        let sums: Vec<RefreshShare> = cpu
            .pending()
            .iter()
            .map(|ct| f.share(&s, ct, &mut prng).expect("share"))
            .collect();
        cpu.finish_refresh(&sums).expect("refresh");
        dev.finish_refresh(&sums).expect("refresh");
    }
    let (c, d) = (median(cpu_s), median(dev_s));
    let out = serde_json::json!({
        "simd": he_agg::simd::level().to_string(),
        "threads": rayon::current_num_threads(),
        "head": format!("{features} -> {classes}"),
        "chunks_per_step": batch_chunks.min(chunks_n),
        "examples_per_step": batch_chunks.min(chunks_n) * l.samples(),
        "device": dev.placed(),
        "upload_s": upload_s,
        "cpu_step_s": c,
        "device_step_s": d,
        "cpu_over_device": c / d,
        "states_equal": equal,
    });
    println!("{out:#}");
    if let Some(p) = json {
        std::fs::write(&p, format!("{out:#}\n")).expect("writing --json");
    }
    assert!(equal, "the device's states differ from the CPU trainer's");
}
