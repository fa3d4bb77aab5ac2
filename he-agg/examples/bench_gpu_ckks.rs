//! CKKS resident on the GPU, measured against the CPU evaluator (issue 16, item 2):
//!
//!     cargo build --release -p he-agg --features cuda --example bench_gpu_ckks
//!     target/release/examples/bench_gpu_ckks --json gpu_ckks.json   # on the GPU machine
//!
//! At the inference preset (N = 2^14, 7 + 2 moduli, 4 digits) it prints: batched NTTs (one
//! launch over many limbs), a rotation (decompose, inner product, ModDown), 16 hoisted rotations,
//! a rescale, and a stream of rotations of different ciphertexts — device milliseconds (CUDA
//! events), wall milliseconds of one call (launches included), the CPU evaluator's milliseconds
//! on this machine's cores, and whether every GPU result equals the CPU's word for word.
//! Without a device it says so and exits 0.

use std::time::Instant;

use he_agg::ckks::{Ciphertext, CkksContext, Parameters, Preset};
use he_agg::gpu::{CudaExec, Engine, Exec, LimbJob, NttTables};
use he_agg::ring::{Poly, Prng};
use serde_json::{Value, json};

#[path = "support/gpu_exit.rs"]
mod gpu_exit;

#[global_allocator]
static GLOBAL: he_agg::alloc::Allocator = he_agg::alloc::Allocator;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn wall_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

fn random_ct(ctx: &CkksContext, level: usize, seed: u8) -> Ciphertext {
    let mut prng = Prng::from_seed(&[seed; 32]);
    let ring = ctx.rlwe().ring();
    let basis = ctx.rlwe().q_basis(level);
    Ciphertext {
        parts: vec![
            ring.sample_uniform(&mut prng, basis),
            ring.sample_uniform(&mut prng, basis),
        ],
        scale: ctx.default_scale(),
    }
}

fn run(report: &mut Value) -> Result<bool, String> {
    let e = |x: he_agg::gpu::GpuError| x.to_string();
    let ctx = CkksContext::new(Parameters::preset(Preset::Inference)).map_err(|x| x.to_string())?;
    let rlwe = ctx.rlwe().clone();
    let tables = NttTables::new(rlwe.ring());
    let exec = CudaExec::open(0, &tables, false).map_err(|x| x.to_string())?;
    println!(
        "device: {} — CKKS at the inference preset (N = {}, {} + {} moduli, {} digits); CPU: {} threads",
        exec.name(),
        ctx.n(),
        ctx.max_level(),
        rlwe.num_p(),
        rlwe.digits().len(),
        rayon::current_num_threads()
    );
    report["device"] = json!(exec.name());
    report["cpu_threads"] = json!(rayon::current_num_threads());
    let engine = Engine::new(exec, rlwe.clone());
    let ex = engine.exec();
    let mut all_equal = true;

    // 1. batched NTTs: 1,024 limbs over all nine moduli in one launch
    let limbs = 1024;
    let moduli = rlwe.ring().moduli().len();
    let jobs: Vec<LimbJob> = (0..limbs)
        .map(|i| LimbJob {
            limb: i as u32,
            modulus: (i % moduli) as u32,
        })
        .collect();
    let mut prng = Prng::from_seed(&[3; 32]);
    let words: Vec<u64> = (0..limbs)
        .flat_map(|i| {
            let mut v = vec![0; ctx.n()];
            prng.fill_uniform(rlwe.ring().modulus(i % moduli), &mut v);
            v
        })
        .collect();
    let mut buf = ex.upload(&words).map_err(|x| x.to_string())?;
    let fwd = median(
        (0..9)
            .map(|_| ex.time(|| ex.ntt(&mut buf, &jobs)))
            .collect::<Result<_, _>>()
            .map_err(|x| x.to_string())?,
    );
    let inv = median(
        (0..9)
            .map(|_| ex.time(|| ex.intt(&mut buf, &jobs, true)))
            .collect::<Result<_, _>>()
            .map_err(|x| x.to_string())?,
    );
    let few = &jobs[..moduli];
    let small = median(
        (0..21)
            .map(|_| ex.time(|| ex.ntt(&mut buf, few)))
            .collect::<Result<_, _>>()
            .map_err(|x| x.to_string())?,
    );
    let basis: Vec<usize> = (0..limbs).map(|i| i % moduli).collect();
    let mut p = Poly::from_data(ctx.n(), words);
    let cpu = wall_ms(3, || rlwe.ring().ntt(&mut p, &basis));
    println!(
        "NTT, {limbs} limbs of 2^14 in one launch ({}): forward {fwd:.3} ms ({:.2} µs/limb), inverse {inv:.3} ms; CPU {cpu:.1} ms ({:.1} µs/limb) = {:.0}×",
        if ex.one_block_ntt(limbs) {
            "one block per limb"
        } else {
            "split"
        },
        fwd * 1e3 / limbs as f64,
        cpu * 1e3 / limbs as f64,
        cpu / fwd,
    );
    println!(
        "NTT, {moduli} limbs (one per modulus) in one launch ({}): {:.1} µs",
        if ex.one_block_ntt(moduli) {
            "one block per limb"
        } else {
            "split over many blocks per limb"
        },
        small * 1e3
    );
    report["ntt"] = json!({"limbs": limbs, "fwd_ms": fwd, "inv_ms": inv, "cpu_ms": cpu, "small_batch_limbs": moduli, "small_batch_ms": small});

    // 2. key material and one ciphertext at the top level
    let mut kg = ctx.key_generator().map_err(|x| x.to_string())?;
    let sk = kg.secret_key();
    let steps: Vec<i64> = (1..=16).collect();
    let gk = kg.galois_keys(&sk, &steps, false);
    let rlk = kg.relinearization_key(&sk);
    let eval = ctx
        .evaluator(Some(&rlk), Some(&gk))
        .map_err(|x| x.to_string())?;
    let level = ctx.max_level();
    let ct = random_ct(&ctx, level, 1);
    let elements: Vec<u64> = steps
        .iter()
        .map(|&k| rlwe.galois_element_for_rotation(k))
        .collect();
    let keys = elements
        .iter()
        .map(|&g| engine.upload_key(&gk.get(g).expect("generated").key))
        .collect::<Result<Vec<_>, _>>()
        .map_err(e)?;
    let dev = engine.upload_ct(&ct).map_err(e)?;
    let g = elements[0];

    let want = eval.apply_galois(&ct, g).map_err(|x| x.to_string())?;
    let got = engine
        .download_ct(&engine.apply_galois(&dev, g, &keys[0]).map_err(e)?)
        .map_err(e)?;
    let eq_rot = got == want;
    let dev_ms = median(
        (0..21)
            .map(|_| {
                ex.time(|| {
                    engine
                        .apply_galois(&dev, g, &keys[0])
                        .map(drop)
                        .map_err(|x| he_agg::aggregate::CudaError::Driver(x.to_string()))
                })
            })
            .collect::<Result<_, _>>()
            .map_err(|x| x.to_string())?,
    );
    let wall = wall_ms(21, || {
        let r = engine.apply_galois(&dev, g, &keys[0]);
        let _ = ex.synchronize();
        drop(r);
    });
    let cpu = wall_ms(5, || drop(eval.apply_galois(&ct, g)));
    println!(
        "rotation at level {level}: device {dev_ms:.3} ms, wall {wall:.3} ms; CPU {cpu:.2} ms = {:.0}× (device) / {:.0}× (wall); equal: {eq_rot}",
        cpu / dev_ms,
        cpu / wall
    );
    all_equal &= eq_rot;

    // 3. 16 hoisted rotations
    let pairs: Vec<_> = elements.iter().copied().zip(&keys).collect();
    let want = eval
        .rotate_hoisted(&ct, &steps)
        .map_err(|x| x.to_string())?;
    let got = engine.apply_galois_hoisted(&dev, &pairs).map_err(e)?;
    let mut eq_hoist = true;
    for (g, w) in got.iter().zip(&want) {
        eq_hoist &= &engine.download_ct(g).map_err(e)? == w;
    }
    let hoist_dev = median(
        (0..11)
            .map(|_| {
                ex.time(|| {
                    engine
                        .apply_galois_hoisted(&dev, &pairs)
                        .map(drop)
                        .map_err(|x| he_agg::aggregate::CudaError::Driver(x.to_string()))
                })
            })
            .collect::<Result<_, _>>()
            .map_err(|x| x.to_string())?,
    );
    let hoist_cpu = wall_ms(3, || drop(eval.rotate_hoisted(&ct, &steps)));
    println!(
        "16 hoisted rotations: device {hoist_dev:.3} ms; CPU {hoist_cpu:.1} ms = {:.0}×; equal: {eq_hoist}",
        hoist_cpu / hoist_dev
    );
    all_equal &= eq_hoist;

    // 4. rescale
    let want = eval.rescale(&ct).map_err(|x| x.to_string())?;
    let got = engine
        .download_ct(
            &engine
                .rescale(engine.upload_ct(&ct).map_err(e)?)
                .map_err(e)?,
        )
        .map_err(e)?;
    let eq_rs = got == want;
    let copies: Vec<_> = (0..21)
        .map(|_| engine.upload_ct(&ct))
        .collect::<Result<_, _>>()
        .map_err(e)?;
    let mut rs = Vec::new();
    for c in copies {
        rs.push(
            ex.time(|| {
                engine
                    .rescale(c)
                    .map(drop)
                    .map_err(|x| he_agg::aggregate::CudaError::Driver(x.to_string()))
            })
            .map_err(|x| x.to_string())?,
        );
    }
    let rs_dev = median(rs);
    let rs_cpu = wall_ms(5, || drop(eval.rescale(&ct)));
    println!(
        "rescale at level {level}: device {rs_dev:.3} ms; CPU {rs_cpu:.2} ms = {:.0}×; equal: {eq_rs}",
        rs_cpu / rs_dev
    );
    all_equal &= eq_rs;

    // 5. multiply and relinearize
    let other = random_ct(&ctx, level, 2);
    let dev_other = engine.upload_ct(&other).map_err(e)?;
    let dev_rlk = engine.upload_key(&rlk.0).map_err(e)?;
    let want = eval.mul_relin(&ct, &other).map_err(|x| x.to_string())?;
    let got = engine
        .download_ct(&engine.mul_relin(&dev, &dev_other, &dev_rlk).map_err(e)?)
        .map_err(e)?;
    let eq_mul = got == want;
    let mul_dev = median(
        (0..21)
            .map(|_| {
                ex.time(|| {
                    engine
                        .mul_relin(&dev, &dev_other, &dev_rlk)
                        .map(drop)
                        .map_err(|x| he_agg::aggregate::CudaError::Driver(x.to_string()))
                })
            })
            .collect::<Result<_, _>>()
            .map_err(|x| x.to_string())?,
    );
    let mul_cpu = wall_ms(5, || drop(eval.mul_relin(&ct, &other)));
    println!(
        "multiply + relinearize at level {level}: device {mul_dev:.3} ms; CPU {mul_cpu:.2} ms = {:.0}×; equal: {eq_mul}",
        mul_cpu / mul_dev
    );
    all_equal &= eq_mul;
    report["mul_relin"] = json!({"device_ms": mul_dev, "cpu_ms": mul_cpu, "equal": eq_mul});

    // 6. a stream of rotations of 64 different ciphertexts, enqueued back to back
    let many: Vec<_> = (0..64)
        .map(|i| engine.upload_ct(&random_ct(&ctx, level, 10 + i as u8)))
        .collect::<Result<_, _>>()
        .map_err(e)?;
    let stream_ms = ex
        .time(|| {
            for c in &many {
                engine
                    .apply_galois(c, g, &keys[0])
                    .map(drop)
                    .map_err(|x| he_agg::aggregate::CudaError::Driver(x.to_string()))?;
            }
            Ok(())
        })
        .map_err(|x| x.to_string())?;
    println!(
        "64 rotations of different ciphertexts back to back: {stream_ms:.2} ms = {:.3} ms each ({:.0} rotations/s)",
        stream_ms / 64.0,
        64e3 / stream_ms
    );
    report["rotation"] = json!({"level": level, "device_ms": dev_ms, "wall_ms": wall, "cpu_ms": cpu, "equal": eq_rot});
    report["hoisted16"] = json!({"device_ms": hoist_dev, "cpu_ms": hoist_cpu, "equal": eq_hoist});
    report["rescale"] = json!({"device_ms": rs_dev, "cpu_ms": rs_cpu, "equal": eq_rs});
    report["rotation_stream"] = json!({"count": 64, "device_ms": stream_ms});
    report["all_equal"] = json!(all_equal);
    Ok(all_equal)
}

fn main() {
    he_agg::alloc::tune();
    let json_path = match std::env::args().skip(1).collect::<Vec<_>>().as_slice() {
        [] => None,
        [flag, path] if flag == "--json" => Some(path.clone()),
        _ => {
            eprintln!("usage: bench_gpu_ckks [--json FILE]");
            std::process::exit(2);
        }
    };
    let mut report = json!({ "bench": "bench_gpu_ckks", "issue": 16 });
    let outcome = run(&mut report);
    gpu_exit::finish("bench_gpu_ckks", report, outcome, json_path);
}
