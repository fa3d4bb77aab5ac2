//! Encrypted inference on the GPU (issue 16, item 3), against the CPU evaluator on this
//! machine's cores:
//!
//!     cargo build --release -p he-agg --features cuda --example bench_gpu_infer
//!     target/release/examples/bench_gpu_infer --json gpu_infer.json   # on the GPU machine
//!
//! For the default OrganAMNIST network (28², random weights) and the clinical network at 256²
//! (`--input S` for one side only; `--reps N`), both modes: (b) the weights as plaintexts, at
//! the default policy's parameters; (a) the weights encrypted under the image's key, at the
//! parameters a consortium's mode (a) uses (`ParamPolicy::threshold_switched`; one key stands
//! in for the collective one: the server's work is the same, and the threshold switch of the
//! result runs at the hospitals). Figures per image: the device evaluation with the image
//! already on the device (launches and synchronisation included), the same with the upload of
//! the request and download of the result, and the CPU evaluator; every GPU result must equal
//! the CPU's word for word, and its decryption the plain f32 forward pass. Without a device it
//! says so and exits 0. With the default network it also runs the batched packing (one image
//! per slot, a full batch) and reports images per second.

#[path = "support/networks.rs"]
mod networks;

use std::sync::Arc;
use std::time::Instant;

use he_agg::ckks::{Ciphertext, CkksContext, GaloisKeys};
use he_agg::gpu::{CudaExec, Engine, NttTables};
use he_agg::infer::{
    BatchedModel, BatchedSpec, DeviceBatchedModel, DeviceModel, EvaluationKeys, InferencePlan,
    Model, Network, ParamPolicy, testing,
};
use serde_json::{Value, json};

#[global_allocator]
static GLOBAL: he_agg::alloc::Allocator = he_agg::alloc::Allocator;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn argmax(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// One network in one mode: returns the figures, or why it could not run.
fn measure(net: &Network, mode: &str, policy: &ParamPolicy, reps: usize) -> Result<Value, String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    let plan = InferencePlan::new(net, policy).map_err(|e| s(&e))?;
    let spec = plan.spec();
    let ctx: Arc<CkksContext> = CkksContext::new(spec.parameters().clone()).map_err(|e| s(&e))?;
    let mut kg = ctx.key_generator().map_err(|e| s(&e))?;
    let sk = kg.secret_key();
    let keys = spec.generate_keys(&mut kg, &sk);
    let eval = ctx
        .evaluator(keys.relinearization.as_ref(), Some(&keys.galois))
        .map_err(|e| s(&e))?;
    let mut enc = ctx.sk_encryptor(&sk).map_err(|e| s(&e))?;
    let model = if mode == "a" {
        Model::encrypted(&plan, &ctx, &mut |p| enc.encrypt(p))
    } else {
        Model::plain(&plan, &ctx)
    }
    .map_err(|e| s(&e))?;
    let tables = NttTables::new(ctx.rlwe().ring());
    let t = Instant::now();
    let exec = CudaExec::open(0, &tables, false).map_err(|e| s(&e))?;
    let device = exec.name().to_string();
    let dev = DeviceModel::new(&model, Engine::new(exec, ctx.rlwe().clone()), &keys)
        .map_err(|e| s(&e))?;
    dev.engine().exec().synchronize().map_err(|e| s(&e))?;
    let upload_ms = ms(t);

    let xs = networks::images(net, 4, 31);
    let requests: Vec<Vec<Ciphertext>> = xs
        .iter()
        .map(|x| {
            spec.encode_input(&ctx, x)
                .map(|pts| pts.iter().map(|p| enc.encrypt(p)).collect())
        })
        .collect::<Result<_, _>>()
        .map_err(|e| s(&e))?;
    let dec = ctx.decryptor(&sk).map_err(|e| s(&e))?;
    let (mut equal, mut agree, mut max_err) = (true, 0, 0f64);
    let mut cpu = Vec::new();
    for (x, req) in xs.iter().zip(&requests) {
        let t = Instant::now();
        let want = model.evaluate(&eval, req).map_err(|e| s(&e))?;
        cpu.push(ms(t));
        let got = dev.evaluate(req).map_err(|e| s(&e))?;
        equal &= got == want;
        let logits = spec
            .decode_output(&ctx, &dec.decrypt(&got))
            .map_err(|e| s(&e))?;
        let reference: Vec<f64> = net
            .forward(x)
            .map_err(|e| s(&e))?
            .iter()
            .map(|&v| v as f64)
            .collect();
        agree += usize::from(argmax(&logits) == argmax(&reference));
        for (g, r) in logits.iter().zip(&reference) {
            max_err = max_err.max((g - r).abs());
        }
    }
    let (mut resident, mut end_to_end) = (Vec::new(), Vec::new());
    for i in 0..reps + 1 {
        let req = &requests[i % requests.len()];
        let inputs = dev.upload_inputs(req).map_err(|e| s(&e))?;
        dev.engine().exec().synchronize().map_err(|e| s(&e))?;
        let t = Instant::now();
        let out = dev.evaluate_resident(inputs).map_err(|e| s(&e))?;
        dev.engine().exec().synchronize().map_err(|e| s(&e))?;
        let r = ms(t);
        drop(out);
        let t = Instant::now();
        dev.evaluate(req).map_err(|e| s(&e))?;
        let e = ms(t);
        if i > 0 {
            resident.push(r);
            end_to_end.push(e);
        }
    }
    let (key_switches, cpu_ms) = (plan.key_switches(), median(cpu));
    let (res, e2e) = (median(resident), median(end_to_end));
    let log_n = ctx.n().trailing_zeros();
    println!(
        "{:>4}² mode ({mode}): N = 2^{log_n}, {} input ciphertexts, {} + {} rotations + {} \
         relinearizations | GPU {res:.2} ms resident, {e2e:.2} ms with transfers | CPU \
         {cpu_ms:.1} ms ({:.0}×) | equal to CPU {equal}, argmax {agree}/{}, max err {max_err:.1e}",
        net.input()[1],
        spec.input_ciphertexts(),
        key_switches.0,
        key_switches.1,
        key_switches.2,
        cpu_ms / res,
        xs.len(),
    );
    Ok(json!({
        "device": device,
        "side": net.input()[1],
        "mode": mode,
        "log_n": log_n,
        "input_ciphertexts": spec.input_ciphertexts(),
        "hoisted_rotations": key_switches.0,
        "other_rotations": key_switches.1,
        "relinearizations": key_switches.2,
        "upload_model_and_keys_ms": upload_ms,
        "gpu_resident_ms_per_image": res,
        "gpu_with_transfers_ms_per_image": e2e,
        "cpu_ms_per_image": cpu_ms,
        "cpu_threads": rayon::current_num_threads(),
        "equal_to_cpu": equal,
        "argmax_agree": agree,
        "images": xs.len(),
        "max_logit_error": max_err,
    }))
}

/// The batched packing (mode b, one image per slot) of the default network: a full batch.
fn measure_batched(net: &Network, reps: usize) -> Result<Value, String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    let spec = BatchedSpec::new(net, &ParamPolicy::default()).map_err(|e| s(&e))?;
    let ctx: Arc<CkksContext> = CkksContext::new(spec.parameters().clone()).map_err(|e| s(&e))?;
    let model = BatchedModel::new(net, &ctx).map_err(|e| s(&e))?;
    let mut kg = ctx.key_generator().map_err(|e| s(&e))?;
    let sk = kg.secret_key();
    let keys = EvaluationKeys {
        relinearization: Some(kg.relinearization_key(&sk)),
        galois: GaloisKeys::new(),
    };
    let eval = ctx
        .evaluator(keys.relinearization.as_ref(), None)
        .map_err(|e| s(&e))?;
    let batch = spec.batch_size();
    let xs = networks::images(net, batch, 77);
    let refs: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
    let mut enc = ctx.sk_encryptor(&sk).map_err(|e| s(&e))?;
    let cts: Vec<Ciphertext> = spec
        .encode_inputs(&ctx, &refs)
        .map_err(|e| s(&e))?
        .iter()
        .map(|p| enc.encrypt(p))
        .collect();
    let tables = NttTables::new(ctx.rlwe().ring());
    let exec = CudaExec::open(0, &tables, false).map_err(|e| s(&e))?;
    let device = exec.name().to_string();
    let dev = DeviceBatchedModel::new(&model, Engine::new(exec, ctx.rlwe().clone()), &keys)
        .map_err(|e| s(&e))?;
    let t = Instant::now();
    let want = model.evaluate(&eval, &cts).map_err(|e| s(&e))?;
    let cpu_ms = ms(t);
    let inputs = dev.upload_inputs(&cts).map_err(|e| s(&e))?;
    let got: Vec<Ciphertext> = dev
        .evaluate_resident(&inputs)
        .map_err(|e| s(&e))?
        .iter()
        .map(|c| dev.engine().download_ct(c))
        .collect::<Result<_, _>>()
        .map_err(|e| s(&e))?;
    let equal = got == want;
    let dec = ctx.decryptor(&sk).map_err(|e| s(&e))?;
    let pts: Vec<_> = got.iter().map(|c| dec.decrypt(c)).collect();
    let logits = spec.decode_outputs(&ctx, &pts, batch).map_err(|e| s(&e))?;
    let mut agree = 0;
    for (x, l) in xs.iter().zip(&logits) {
        let r: Vec<f64> = net
            .forward(x)
            .map_err(|e| s(&e))?
            .iter()
            .map(|&v| v as f64)
            .collect();
        agree += usize::from(argmax(l) == argmax(&r));
    }
    let mut times = Vec::new();
    for _ in 0..reps.min(5) {
        dev.engine().exec().synchronize().map_err(|e| s(&e))?;
        let t = Instant::now();
        let out = dev.evaluate_resident(&inputs).map_err(|e| s(&e))?;
        dev.engine().exec().synchronize().map_err(|e| s(&e))?;
        times.push(ms(t));
        drop(out);
    }
    let gpu_ms = median(times);
    println!(
        "  28² batched (b): {batch} images per batch, {} input ciphertexts | GPU {gpu_ms:.0} ms per \
         batch = {:.0} images/s ({:.3} ms per image) | CPU {cpu_ms:.0} ms = {:.0} images/s | \
         equal to CPU {equal}, argmax {agree}/{batch}",
        spec.input_len(),
        batch as f64 / gpu_ms * 1e3,
        gpu_ms / batch as f64,
        batch as f64 / cpu_ms * 1e3,
    );
    Ok(json!({
        "device": device,
        "side": net.input()[1],
        "mode": "b, batched",
        "batch": batch,
        "gpu_ms_per_batch": gpu_ms,
        "gpu_images_per_s": batch as f64 / gpu_ms * 1e3,
        "cpu_ms_per_batch": cpu_ms,
        "cpu_images_per_s": batch as f64 / cpu_ms * 1e3,
        "cpu_threads": rayon::current_num_threads(),
        "equal_to_cpu": equal,
        "argmax_agree": agree,
    }))
}

fn main() {
    he_agg::alloc::tune();
    let mut json_path = None;
    let (mut reps, mut sides) = (10usize, vec![28usize, 256]);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next().unwrap_or_else(|| {
                eprintln!("bench_gpu_infer: {name} needs a value");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--json" => json_path = Some(value("--json")),
            "--reps" => reps = value("--reps").parse().unwrap_or(0),
            "--input" => sides = vec![value("--input").parse().unwrap_or(0)],
            _ => {
                eprintln!(
                    "usage: bench_gpu_infer [--json FILE] [--reps N] [--input 28|128|256|512]"
                );
                std::process::exit(2);
            }
        }
    }
    if reps == 0 || sides.iter().any(|&s| s != 28 && !(32..=512).contains(&s)) {
        eprintln!("bench_gpu_infer: --reps must be ≥ 1 and --input 28 or 32..=512");
        std::process::exit(2);
    }
    let mut results = Vec::new();
    let mut batched = false;
    for side in sides {
        batched |= side == 28;
        let net = if side == 28 {
            networks::default_network()
        } else {
            testing::clinical_network(side, 1, 3)
        };
        for (mode, policy) in [
            ("b", ParamPolicy::default()),
            ("a", ParamPolicy::threshold_switched(4)),
        ] {
            match measure(&net, mode, &policy, reps) {
                Ok(v) => results.push(v),
                Err(e) if results.is_empty() && e.contains("CUDA") => {
                    println!("no CUDA device here ({e}); nothing measured");
                    return;
                }
                Err(e) => {
                    eprintln!("bench_gpu_infer: {side}² mode ({mode}): {e}");
                    std::process::exit(1);
                }
            }
        }
    }
    if batched {
        match measure_batched(&networks::default_network(), reps) {
            Ok(v) => results.push(v),
            Err(e) => {
                eprintln!("bench_gpu_infer: batched: {e}");
                std::process::exit(1);
            }
        }
    }
    if let Some(p) = json_path {
        let doc = json!({ "inference": results });
        if let Err(e) = std::fs::write(&p, serde_json::to_string_pretty(&doc).unwrap_or_default()) {
            eprintln!("bench_gpu_infer: {p}: {e}");
            std::process::exit(1);
        }
    }
}
