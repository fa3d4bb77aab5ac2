//! Public-key switching of a 1M-parameter aggregate on the GPU against the CPU (issue 16,
//! item 3: ≤ 20 ms):
//!
//!     cargo build --release -p he-agg --features cuda --example bench_gpu_pcks
//!     target/release/examples/bench_gpu_pcks --json gpu_pcks.json   # on the GPU machine
//!
//! The aggregation preset (N = 2^13, Q = 2 × 60 bits, N reals per ciphertext): 123 ciphertexts
//! switched to a hospital's key by 3 parties with λ = 40 flooding, as `bench_multiparty`
//! measures on the CPU. On the device, each party's shares (u, e0, e1 expanded from seeds by
//! ChaCha20 in the kernel, NTTs, products with the target key and c1) and the combination run
//! on the resident aggregate; the CPU does the same with all of this machine's cores. Prints
//! device milliseconds (CUDA events), wall milliseconds, the transfers, and whether the device's
//! shares and switched ciphertexts equal the CPU's word for word (same seeds). Without a device
//! it says so and exits 0.

use std::time::Instant;

use he_agg::aggregate::AggregationPlan;
use he_agg::ckks::{Ciphertext, CkksContext, Parameters, Preset, SecretKey};
use he_agg::gpu::{CudaExec, Engine, GpuError, NttTables};
use he_agg::multiparty::{PublicKeySwitch, PublicKeySwitchShare};
use he_agg::ring::Prng;
use rayon::prelude::*;
use serde_json::{Value, json};

#[path = "support/gpu_exit.rs"]
mod gpu_exit;

#[global_allocator]
static GLOBAL: he_agg::alloc::Allocator = he_agg::alloc::Allocator;

const PARTIES: usize = 3;
const PARAMETERS: usize = 1_000_000;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn run(report: &mut Value, reps: usize) -> Result<bool, String> {
    let s = |x: GpuError| x.to_string();
    let ctx =
        CkksContext::new(Parameters::preset(Preset::Aggregation)).map_err(|x| x.to_string())?;
    let rlwe = ctx.rlwe().clone();
    let exec = CudaExec::open(0, &NttTables::new(rlwe.ring()), false).map_err(|x| x.to_string())?;
    let threads = rayon::current_num_threads();
    println!("device: {}; CPU: {threads} threads", exec.name());
    report["device"] = json!(exec.name());
    report["cpu_threads"] = json!(threads);
    let engine = Engine::new(exec, rlwe);

    let mut kg = ctx.key_generator().map_err(|x| x.to_string())?;
    let secrets: Vec<SecretKey> = (0..PARTIES).map(|_| kg.secret_key()).collect();
    let hospital = kg.secret_key();
    let target = kg.public_key(&hospital);
    // the aggregate is under the parties' collective key s = Σ s_i
    let rl = ctx.rlwe();
    let mut s_sum = secrets[0].poly().clone();
    for sk in &secrets[1..] {
        rl.ring().add_assign(&mut s_sum, sk.poly(), rl.key_basis());
    }
    let collective = kg.public_key(&SecretKey::from_poly(s_sum, *ctx.fingerprint()));
    let plan = AggregationPlan::new(&ctx, PARTIES, PARTIES, 1e8, 1.0, 40, 1e-6)
        .map_err(|x| x.to_string())?;
    let flooding = plan.flooding(&[1e5; 100]).map_err(|x| x.to_string())?;
    let pcks = PublicKeySwitch::new(&ctx, flooding, PARTIES);
    let count = PARAMETERS.div_ceil(ctx.n());
    let model: Vec<Ciphertext> = (0..count)
        .into_par_iter()
        .map_init(
            || ctx.pk_encryptor(&collective).expect("encryptor"),
            |enc, i| {
                let v: Vec<f64> = (0..ctx.n())
                    .map(|j| ((i * 31 + j) % 2001) as f64 / 1e3 - 1.0)
                    .collect();
                enc.encrypt(
                    &ctx.encode_real_pairs(&v, plan.level, plan.scale)
                        .expect("encode"),
                )
            },
        )
        .collect();
    println!(
        "PCKS of a {PARAMETERS}-parameter aggregate: {count} ciphertexts at level {} (N = {}), {PARTIES} parties, flooding σ = 2^{:.1}",
        plan.level,
        ctx.n(),
        pcks.flooding().sigma().log2()
    );

    // the CPU, all cores: each party's shares, then the combination
    let cpu_shares = |seed: u8| -> Vec<Vec<PublicKeySwitchShare>> {
        secrets
            .iter()
            .enumerate()
            .map(|(p, sk)| {
                // one generator per party, drawn ciphertext by ciphertext as the device does
                let mut prng = Prng::from_seed(&[seed + p as u8; 32]);
                model
                    .iter()
                    .map(|ct| pcks.share(sk, &target, ct, &mut prng).expect("share"))
                    .collect()
            })
            .collect()
    };
    // the parallel CPU timing (independent generators per ciphertext, as bench_multiparty)
    let mut cpu_share_ms = Vec::new();
    let mut cpu_combine_ms = Vec::new();
    for _ in 0..reps.min(5) {
        let t = Instant::now();
        let per_party: Vec<Vec<PublicKeySwitchShare>> = secrets
            .iter()
            .map(|sk| {
                model
                    .par_iter()
                    .map_init(
                        || Prng::from_os().expect("rng"),
                        |p, ct| pcks.share(sk, &target, ct, p).expect("share"),
                    )
                    .collect()
            })
            .collect();
        cpu_share_ms.push(ms(t) / PARTIES as f64);
        let t = Instant::now();
        let switched: Vec<Ciphertext> = (0..count)
            .into_par_iter()
            .map(|i| {
                let mut acc = per_party[0][i].clone();
                for p in &per_party[1..] {
                    pcks.aggregate(&mut acc, &p[i]).expect("aggregate");
                }
                pcks.finalize(&model[i], acc).expect("finalize")
            })
            .collect();
        cpu_combine_ms.push(ms(t));
        assert_eq!(switched.len(), count);
    }
    let (cpu_share, cpu_combine) = (median(cpu_share_ms), median(cpu_combine_ms));
    let cpu_latency = cpu_share + cpu_combine;
    println!(
        "CPU: {cpu_share:.1} ms per party for its shares, {cpu_combine:.1} ms to combine; latency {cpu_latency:.1} ms (parties in parallel)"
    );

    // the device: upload once, then shares and combination on the resident aggregate
    let t = Instant::now();
    let dev_model = engine.upload_cts(&model).map_err(s)?;
    let dev_switch = engine
        .public_switch(&pcks, &target, plan.level)
        .map_err(s)?;
    engine.exec().synchronize().map_err(|x| x.to_string())?;
    let upload_ms = ms(t);
    let mut share_dev = Vec::new();
    let mut share_wall = Vec::new();
    let mut combine_dev = Vec::new();
    let mut total_wall = Vec::new();
    let mut download_ms = Vec::new();
    let mut last = None;
    for rep in 0..reps + 1 {
        let t_all = Instant::now();
        let mut shares = Vec::with_capacity(PARTIES);
        for (p, sk) in secrets.iter().enumerate() {
            let mut prng = Prng::from_seed(&[7 + p as u8; 32]);
            let t = Instant::now();
            let mut out = None;
            let dev = engine
                .exec()
                .time(|| {
                    out = Some(engine.switch_share(&dev_switch, sk, &dev_model, &mut prng));
                    Ok(())
                })
                .map_err(|x| x.to_string())?;
            let share = out.expect("ran").map_err(s)?;
            if rep > 0 {
                share_dev.push(dev);
                share_wall.push(ms(t));
            }
            shares.push(share);
        }
        let mut out = None;
        let dev = engine
            .exec()
            .time(|| {
                let mut it = shares.drain(..);
                let mut acc = it.next().expect("a share");
                let r = it
                    .try_for_each(|sh| engine.switch_aggregate(&mut acc, &sh))
                    .and_then(|()| engine.switch_finalize(&dev_model, acc));
                out = Some(r);
                Ok(())
            })
            .map_err(|x| x.to_string())?;
        let switched = out.expect("ran").map_err(s)?;
        let total = ms(t_all);
        let t = Instant::now();
        let host = engine.download_cts(&switched).map_err(s)?;
        if rep > 0 {
            combine_dev.push(dev);
            total_wall.push(total);
            download_ms.push(ms(t));
        }
        last = Some(host);
    }
    let (sd, sw, cd) = (median(share_dev), median(share_wall), median(combine_dev));
    let (tw, dl) = (median(total_wall), median(download_ms));
    let latency_dev = PARTIES as f64 * sd + cd;
    println!(
        "GPU: {sd:.3} ms per party for its shares (device; wall {sw:.3} ms), {cd:.3} ms to combine {PARTIES}; all {PARTIES} parties' shares and the combination on one GPU: {latency_dev:.2} ms device, {tw:.2} ms wall (target ≤ 20 ms) = {:.0}× the CPU's latency",
        cpu_latency / tw
    );
    println!(
        "transfers: aggregate and key up {upload_ms:.2} ms (once), switched aggregate down {dl:.2} ms"
    );

    // word for word: the device's result against the CPU's with the same generators
    let cpu = cpu_shares(7);
    let want: Vec<Ciphertext> = (0..count)
        .into_par_iter()
        .map(|i| {
            let mut acc = cpu[0][i].clone();
            for p in &cpu[1..] {
                pcks.aggregate(&mut acc, &p[i]).expect("aggregate");
            }
            pcks.finalize(&model[i], acc).expect("finalize")
        })
        .collect();
    let got = last.expect("ran");
    let equal = got.len() == want.len() && got.iter().zip(&want).all(|(g, w)| g.parts == w.parts);
    let dec = ctx.decryptor(&hospital).map_err(|x| x.to_string())?;
    let first = ctx
        .decode_real_pairs(&dec.decrypt(&got[0]))
        .map_err(|x| x.to_string())?;
    let max_err = first
        .iter()
        .enumerate()
        .map(|(j, v)| (v - ((j % 2001) as f64 / 1e3 - 1.0)).abs())
        .fold(0.0, f64::max);
    // the flooding's standard deviation per slot (the plan divides it by the total weight)
    let slot_sigma = pcks
        .flooding()
        .check_headroom(&ctx, plan.level, plan.scale, 1.0, PARTIES)
        .map_err(|x| x.to_string())?
        .slot_error;
    println!(
        "equal to the CPU word for word: {equal}; max |error| of the first ciphertext after switching: {max_err:.2} (flooding σ per slot {slot_sigma:.3})"
    );
    report["pcks_1m"] = json!({
        "ciphertexts": count, "parties": PARTIES, "level": plan.level,
        "gpu_share_device_ms": sd, "gpu_share_wall_ms": sw, "gpu_combine_device_ms": cd,
        "gpu_latency_device_ms": latency_dev, "gpu_latency_wall_ms": tw,
        "upload_ms": upload_ms, "download_ms": dl,
        "cpu_share_ms": cpu_share, "cpu_combine_ms": cpu_combine, "cpu_latency_ms": cpu_latency,
        "equal": equal, "max_abs_error": max_err, "flooding_slot_sigma": slot_sigma, "reps": reps,
    });
    Ok(equal && max_err < 8.0 * slot_sigma)
}

fn main() {
    he_agg::alloc::tune();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut json_path = None;
    let mut reps = 20;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("--json", Some(p)) => json_path = Some(p.clone()),
            ("--reps", Some(r)) if r.parse::<usize>().is_ok_and(|r| r > 0) => {
                reps = r.parse().unwrap_or(20)
            }
            _ => {
                eprintln!("usage: bench_gpu_pcks [--json FILE] [--reps N]");
                std::process::exit(2);
            }
        }
    }
    let mut report = json!({ "bench": "bench_gpu_pcks", "issue": 16 });
    let outcome = run(&mut report, reps);
    gpu_exit::finish("bench_gpu_pcks", report, outcome, json_path);
}
