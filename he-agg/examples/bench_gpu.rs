//! The CUDA aggregation backend, measured (issue 7):
//!
//!     cargo build --release -p he-agg --features cuda --example bench_gpu
//!     target/release/examples/bench_gpu --json gpu.json      # on the GPU machine, binary alone
//!
//! Prints the device; its measured device-to-device copy bandwidth; the aggregation kernel's
//! throughput on ≥ 1 GB of resident ciphertext and its ratio to that bandwidth; the end-to-end
//! aggregation of 100 clients × 10M parameters from host memory (pinned staging, copies
//! overlapped with the kernels, the sum copied back); and whether every GPU sum equals the CPU
//! backend's word for word. Without a device it says so and exits 0. Options: `--clients K`,
//! `--params P`, `--quick` (smaller sizes, for a smoke test).
//!
//! Needs at run time only the NVIDIA driver (libcuda.so.1) and NVRTC (libnvrtc.so.12 or
//! libnvrtc.so; set LD_LIBRARY_PATH to its directory if it is not on the default path).

use std::sync::Arc;
use std::time::Instant;

use he_agg::aggregate::cuda::device::Device;
use he_agg::aggregate::{Backend, CpuBackend, CudaBackend, Shape};
use he_agg::ckks::{Ciphertext, CkksContext, Parameters, Preset};
use he_agg::ring::Poly;
use rayon::prelude::*;
use serde_json::{Value, json};

#[global_allocator]
static GLOBAL: he_agg::alloc::Allocator = he_agg::alloc::Allocator;

const GB: f64 = 1e9;

struct Args {
    json: Option<String>,
    clients: usize,
    params: usize,
    quick: bool,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        json: None,
        clients: 100,
        params: 10_000_000,
        quick: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--json" => a.json = Some(value("--json")?),
            "--clients" => {
                a.clients = value("--clients")?
                    .parse()
                    .map_err(|e| format!("--clients: {e}"))?
            }
            "--params" => {
                a.params = value("--params")?
                    .parse()
                    .map_err(|e| format!("--params: {e}"))?
            }
            "--quick" => a.quick = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.clients == 0 || a.params == 0 {
        return Err("--clients and --params must be positive".into());
    }
    Ok(a)
}

/// splitmix64: fast, reproducible filler for ciphertext words (only their size matters here,
/// and that every word is below its prime, as validation guarantees).
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A client's whole update as one accumulator-shaped value: the model's `items` ciphertexts
/// (2 components each) stacked as 2·items components, so one accumulator holds the whole sum.
fn update(ctx: &CkksContext, items: usize, seed: u64) -> Ciphertext {
    let (n, level) = (ctx.n(), ctx.max_level());
    let moduli: Vec<u64> = (0..level)
        .map(|i| ctx.rlwe().q_modulus(i).value())
        .collect();
    let parts = (0..2 * items)
        .into_par_iter()
        .map(|p| {
            let mut data = vec![0u64; level * n];
            for (i, limb) in data.chunks_mut(n).enumerate() {
                let q = moduli[i];
                for (k, w) in limb.iter_mut().enumerate() {
                    *w = splitmix(seed ^ (((p * level + i) * n + k) as u64 * 0x1000_0001)) % q;
                }
            }
            Poly::from_data(n, data)
        })
        .collect();
    Ciphertext {
        parts,
        scale: ctx.default_scale(),
    }
}

fn shape_of(ct: &Ciphertext) -> Shape {
    Shape {
        level: ct.parts[0].limbs(),
        degree: ct.parts.len() - 1,
        scale: ct.scale,
    }
}

/// Σ w·ct over `clients` inputs (client i is `pool[i % pool.len()]`), `batch` at a time.
fn aggregate(
    backend: &dyn Backend,
    ctx: &Arc<CkksContext>,
    pool: &[Ciphertext],
    weights: &[u64],
    batch: usize,
) -> Result<Vec<Poly>, String> {
    let mut acc = backend
        .accumulator(ctx, shape_of(&pool[0]))
        .map_err(|e| e.to_string())?;
    let all: Vec<(&Ciphertext, u64)> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| (&pool[i % pool.len()], w))
        .collect();
    for b in all.chunks(batch) {
        acc.fold(b).map_err(|e| e.to_string())?;
    }
    acc.finish().map_err(|e| e.to_string())
}

fn weights(count: usize, seed: u64) -> Vec<u64> {
    // sample counts up to 2^17 per client
    (0..count)
        .map(|i| 1 + splitmix(seed + i as u64) % (1 << 17))
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn run(a: &Args, device: Arc<Device>, report: &mut Value) -> Result<bool, String> {
    let err = |e: he_agg::aggregate::CudaError| e.to_string();
    let (major, minor) = device.capability();
    println!(
        "device: {} (compute capability {major}.{minor})",
        device.name()
    );
    report["device"] = json!(device.name());
    report["compute_capability"] = json!(format!("{major}.{minor}"));

    // 1. the yardstick: device-to-device copies of 1 GiB (read + write counted)
    let copy_bytes = if a.quick { 1 << 28 } else { 1 << 30 };
    let bw = median(
        (0..5)
            .map(|_| device.copy_bandwidth(copy_bytes, 10))
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?,
    );
    println!("device-to-device copy bandwidth: {:.0} GB/s", bw / GB);
    report["d2d_copy_gbps"] = json!(bw / GB);

    // 2. the kernel on resident inputs: ≥ 1 GB of ciphertext per launch, various shapes
    let ctx =
        CkksContext::new(Parameters::preset(Preset::Aggregation)).map_err(|e| e.to_string())?;
    let ct_words = 2 * ctx.max_level() * ctx.n();
    let moduli: Vec<u64> = (0..ctx.max_level())
        .map(|i| ctx.rlwe().q_modulus(i).value())
        .collect();
    let mut all_equal = true;
    let mut rows = Vec::new();
    let total_items = if a.quick { 512 } else { 4096 }; // × 256 KiB = 1.07 GB
    for inputs in [8usize, 32, 128] {
        let items = total_items / inputs;
        let words = items * ct_words;
        let pool: Vec<Ciphertext> = (0..inputs)
            .map(|j| update(&ctx, items, 1000 + j as u64))
            .collect();
        let w = weights(inputs, 7);
        let flat: Vec<u64> = pool
            .iter()
            .flat_map(|c| c.parts.iter().flat_map(|p| p.data().iter().copied()))
            .collect();
        let resident = device.upload(&flat).map_err(err)?;
        drop(flat);
        let mut sum = device.new_sum(&moduli, ctx.n(), words).map_err(err)?;
        // the first launch is checked against the CPU, the others timed
        sum.fold_resident(&resident, &w).map_err(err)?;
        let mut got = vec![0u64; words];
        he_agg::aggregate::cuda::fallback::DeviceSum::read(&mut sum, &mut got).map_err(err)?;
        let want = aggregate(&CpuBackend, &ctx, &pool, &w, inputs)?;
        let equal = want
            .iter()
            .flat_map(|p| p.data().iter().copied())
            .eq(got.iter().copied());
        all_equal &= equal;
        let ms = median(
            (0..7)
                .map(|_| sum.fold_resident(&resident, &w))
                .collect::<Result<Vec<_>, _>>()
                .map_err(err)?,
        );
        let input_bytes = (inputs * words * 8) as f64;
        // every input word read once, the accumulator read and written once
        let traffic = ((inputs + 2) * words * 8) as f64;
        let gbps = input_bytes / (ms / 1e3);
        let traffic_gbps = traffic / (ms / 1e3);
        println!(
            "kernel, {inputs} inputs × {:.0} MB = {:.2} GB: {ms:.2} ms, {:.0} GB/s of ciphertext, {:.0} GB/s of memory traffic = {:.2} of the copy bandwidth; equal to the CPU: {equal}",
            (words * 8) as f64 / 1e6,
            input_bytes / GB,
            gbps / GB,
            traffic_gbps / GB,
            traffic_gbps / bw
        );
        rows.push(json!({
            "inputs": inputs, "bytes": input_bytes, "kernel_ms": ms,
            "ciphertext_gbps": gbps / GB, "traffic_gbps": traffic_gbps / GB,
            "ratio_to_d2d": traffic_gbps / bw, "equal_to_cpu": equal,
        }));
    }
    report["kernel"] = json!(rows);

    // 3. end to end from host memory: clients × params through the Backend trait
    let (clients, params) = if a.quick {
        (a.clients.min(10), a.params.min(1_000_000))
    } else {
        (a.clients, a.params)
    };
    let items = params.div_ceil(ctx.n());
    // four distinct updates, cycled: the transfers are the same as with `clients` distinct ones
    let pool: Vec<Ciphertext> = (0..4.min(clients))
        .map(|j| update(&ctx, items, 50 + j as u64))
        .collect();
    let w = weights(clients, 11);
    let bytes = (clients * items * ct_words * 8) as f64;
    let batch = 25;
    let gpu = CudaBackend::from_device(device.clone());
    let t = Instant::now();
    let got = aggregate(&gpu, &ctx, &pool, &w, batch)?;
    let gpu_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let want = aggregate(&CpuBackend, &ctx, &pool, &w, batch)?;
    let cpu_s = t.elapsed().as_secs_f64();
    let equal = got == want && !gpu.has_failed();
    all_equal &= equal;
    println!(
        "end to end, {clients} clients × {params} parameters ({items} ciphertexts each, {:.1} GB): GPU {gpu_s:.2} s = {:.1} GB/s (host→device streaming, kernels, the sum back after each batch of {batch}); CPU backend ({} threads) {cpu_s:.2} s; equal: {equal}{}",
        bytes / GB,
        bytes / GB / gpu_s,
        rayon::current_num_threads(),
        if gpu.has_failed() {
            " (the device failed: the CPU fallback finished)"
        } else {
            ""
        }
    );
    report["end_to_end"] = json!({
        "clients": clients, "params": params, "ciphertexts_per_client": items, "bytes": bytes,
        "batch": batch, "gpu_s": gpu_s, "gpu_gbps": bytes / GB / gpu_s,
        "cpu_s": cpu_s, "cpu_threads": rayon::current_num_threads(),
        "equal_to_cpu": equal, "device_failed": gpu.has_failed(),
    });
    report["all_equal"] = json!(all_equal);
    Ok(all_equal)
}

fn main() {
    he_agg::alloc::tune();
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench_gpu: {e}");
            std::process::exit(2);
        }
    };
    let mut report = json!({ "bench": "bench_gpu", "issue": 7 });
    let code = match Device::open(0) {
        Err(e) => {
            println!("no CUDA device: {e}");
            report["device"] = Value::Null;
            report["reason"] = json!(e.to_string());
            0
        }
        Ok(device) => match run(&a, device, &mut report) {
            Ok(true) => 0,
            Ok(false) => {
                println!("MISMATCH: a GPU sum differs from the CPU backend");
                1
            }
            Err(e) => {
                println!("failed: {e}");
                report["error"] = json!(e);
                1
            }
        },
    };
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("cannot write {path}: {e}");
        }
    }
    std::process::exit(code);
}
