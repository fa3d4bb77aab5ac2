//! Encrypted inference benchmark: the default OrganAMNIST network (28×28×1 → conv 16 k5 s2 →
//! square → dense 2304→128 → square → dense 128→11) — or, with `--input 128|256|512`, the
//! clinical network at that resolution (`configs/baseline-ct256.toml`'s architecture) — in mode
//! (b) (weights in the clear, image under the requester's key) and mode (a) (weights encrypted
//! under the image's key), one image per ciphertext (or per few, for a large image), on 1 thread
//! and on all threads; the evaluation keys, request and response sizes; batched throughput (one
//! image per slot, small images only); and TenSEAL's encrypted MNIST CNN architecture side by
//! side with `tenseal_mnist_t1.json` from the anchors. Clinical figures print beside the seed's
//! (encrypted 256×256 kidney CT: 90 s per image on a GPU, 50 min on a CPU, 32 MB per image).
//!
//!     ANCHOR_ONLY=mnist ../shared/bench/anchors/run.sh anchors
//!     cargo run --release -p he-agg --example bench_infer -- --anchors anchors --json infer.json
//!     cargo run --release -p he-agg --example bench_infer -- --input 256 --json ct256.json
//!
//! Options: `--network FILE` (a trained network: a `heal-network/1` file, e.g. `network.json`
//! of a training run, or a bare `he_agg::infer::Network` JSON; default: random weights;
//! `--model` is the same), `--input S` (the clinical network on S×S images, random weights),
//! `--reps N` (timed repetitions per latency figure, default 10), `--batch N` (images in the
//! batched run, default one full batch), `--log-n L` (force the ring degree 2^L for the default
//! network; TenSEAL's architecture always gets the policy's choice), `--min-scale-bits B`,
//! `--batched-prime-bits B` (a cut batched plan's largest prime: 51 by default, 60 for fewer
//! limbs), `--refresh-prime-bits B` (a cut latency plan's largest prime: 60 by default), `--refresh-digits D` (a cut plan's most key-switching digits: 3 by default), `--model-memory-mb MB` (mode (a): the memory a keyholder holds its encoded model in,
//! default a quarter of `MemAvailable`: evaluation and the segments encoded per request need the rest; segments beyond it are encoded per request),
//! `--skip-batched`, `--skip-mode-a`, `--skip-mode-b` (a cut plan's mode (b) run), `--skip-tenseal`. `HEAL_SIMD=scalar|avx2|avx512|ifma`
//! runs every kernel at that level (default: the CPU's best); the JSON names it (`simd_level`).
//!
//! A network deeper than its ring holds (a residual network: `--network out/resnet-…/network.json`)
//! is cut into segments: the report is then its mode (b) latency with every refresh made as the
//! requester makes it, each segment's seconds per level, and the bytes per image in all
//! (request, refreshes both ways, response) — the `deep` section of the JSON.
//!
//! Latency is the requester's encode+encrypt, the evaluation and the decrypt+decode, without
//! network; mode (a) adds the threshold key switch of the result to the requester's key (one
//! hospital's flooded share, as the t shares are made in parallel, and combining them), with
//! the keys made collectively by five hospitals (3-of-5) and its own parameters (60-bit scale,
//! room under the result for λ = 30 flooding: see `he_agg::infer::threshold`). Every timed
//! result is checked against the plain f32 forward pass.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[path = "support/batched.rs"]
mod batched;
#[path = "support/deep.rs"]
mod deep;
#[path = "support/mode_a.rs"]
mod mode_a;
#[path = "support/networks.rs"]
mod networks;
#[path = "support/report.rs"]
mod report;

use networks::{Rng, conv, default_network, dense, images};
use report::{compare, cpu_seconds, describe};

// A pooling allocator: big temporaries stop costing page faults.
#[global_allocator]
static GLOBAL: he_agg::alloc::Allocator = he_agg::alloc::Allocator;

use he_agg::ckks::{Ciphertext, CkksContext, Evaluator, SecretKey, wire};
use he_agg::infer::{InferencePlan, Layer, Model, Network, NetworkFile, ParamPolicy, testing};
use serde_json::{Value, json};

struct Args {
    anchors: Option<PathBuf>,
    json: Option<PathBuf>,
    model: Option<PathBuf>,
    input: Option<usize>,
    reps: usize,
    batch: Option<usize>,
    skip_batched: bool,
    skip_mode_a: bool,
    skip_mode_b: bool,
    skip_tenseal: bool,
    model_memory: Option<u64>,
    policy: ParamPolicy,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        anchors: None,
        json: None,
        model: None,
        input: None,
        reps: 10,
        batch: None,
        skip_batched: false,
        skip_mode_a: false,
        skip_mode_b: false,
        skip_tenseal: false,
        model_memory: None,
        policy: ParamPolicy::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--anchors" => args.anchors = Some(value("--anchors")?.into()),
            "--json" => args.json = Some(value("--json")?.into()),
            "--network" | "--model" => args.model = Some(value("--network")?.into()),
            "--reps" => {
                args.reps = value("--reps")?
                    .parse()
                    .map_err(|e| format!("--reps: {e}"))?
            }
            "--batch" => {
                args.batch = Some(
                    value("--batch")?
                        .parse()
                        .map_err(|e| format!("--batch: {e}"))?,
                )
            }
            "--log-n" => {
                let l: u32 = value("--log-n")?
                    .parse()
                    .map_err(|e| format!("--log-n: {e}"))?;
                args.policy.min_log_n = l;
                args.policy.max_log_n = l;
            }
            "--min-scale-bits" => {
                args.policy.min_scale_bits = value("--min-scale-bits")?
                    .parse()
                    .map_err(|e| format!("--min-scale-bits: {e}"))?
            }
            "--batched-prime-bits" => {
                args.policy.batched_prime_bits = value("--batched-prime-bits")?
                    .parse()
                    .map_err(|e| format!("--batched-prime-bits: {e}"))?
            }
            "--refresh-prime-bits" => {
                args.policy.refresh_prime_bits = value("--refresh-prime-bits")?
                    .parse()
                    .map_err(|e| format!("--refresh-prime-bits: {e}"))?
            }
            "--refresh-digits" => {
                args.policy.max_refresh_digits = value("--refresh-digits")?
                    .parse()
                    .map_err(|e| format!("--refresh-digits: {e}"))?
            }
            "--input" => {
                let side: usize = value("--input")?
                    .parse()
                    .map_err(|e| format!("--input: {e}"))?;
                if !(32..=512).contains(&side) || !side.is_multiple_of(32) {
                    return Err("--input must be a multiple of 32 from 32 to 512".into());
                }
                args.input = Some(side);
            }
            "--model-memory-mb" => {
                let mb: u64 = value("--model-memory-mb")?
                    .parse()
                    .map_err(|e| format!("--model-memory-mb: {e}"))?;
                args.model_memory = Some(mb.saturating_mul(1 << 20));
            }
            "--skip-batched" => args.skip_batched = true,
            "--skip-mode-a" => args.skip_mode_a = true,
            "--skip-mode-b" => args.skip_mode_b = true,
            "--skip-tenseal" => args.skip_tenseal = true,
            "-h" | "--help" => {
                println!(
                    "bench_infer [--anchors DIR] [--json FILE] [--network FILE | --input S] \
                     [--reps N] [--batch N] [--log-n L] [--min-scale-bits B] \
                     [--batched-prime-bits B] [--refresh-prime-bits B] [--refresh-digits D] [--skip-batched] [--skip-mode-a] [--skip-mode-b] [--skip-tenseal] [--model-memory-mb MB]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.reps == 0 {
        return Err("--reps must be at least 1".into());
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

/// TenSEAL's MNIST CNN (conv 7×7 stride 3 ×4, square, fc 256→64, square, fc 64→10) with random
/// weights drawn as the anchor script draws them.
fn tenseal_network() -> Network {
    let rng = &mut Rng(7);
    Network::new(
        [1, 28, 28],
        vec![
            conv(rng, 1, 4, 7, 3, 1.0 / 7.0, 0.1),
            Layer::Square,
            dense(rng, 256, 64, 1.0 / 16.0, 0.1),
            Layer::Square,
            dense(rng, 64, 10, 1.0 / 8.0, 0.1),
        ],
    )
    .expect("TenSEAL's architecture is valid")
}

/// A network file: `heal-network/1` ([`NetworkFile`]) or a bare [`Network`] JSON, validated.
fn load_model(path: &PathBuf) -> Result<Network, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if doc.get("format").is_some() {
        return NetworkFile::from_json(&text, path)
            .map(|f| f.network)
            .map_err(|e| e.to_string());
    }
    serde_json::from_value(doc).map_err(|e| format!("{}: {e}", path.display()))
}

struct Latency {
    cpu_s: Option<f64>,
    encrypt_s: f64,
    eval_s: f64,
    decrypt_s: f64,
    total_s: f64,
    max_err: f64,
    agree: bool,
}

impl Latency {
    fn json(&self) -> Value {
        json!({
            "cpu_s": self.cpu_s,
            "encrypt_s": self.encrypt_s, "evaluate_s": self.eval_s, "decrypt_s": self.decrypt_s,
            "total_s": self.total_s, "max_abs_error": self.max_err, "argmax_agrees": self.agree,
        })
    }
}

/// One image per ciphertext, end to end, median of `reps` runs after one warm-up.
#[allow(clippy::too_many_arguments)]
fn latency(
    net: &Network,
    model: &Model,
    ctx: &Arc<CkksContext>,
    eval: &Evaluator,
    sk: &SecretKey,
    encrypt: &mut dyn FnMut(&he_agg::ckks::Plaintext) -> Ciphertext,
    xs: &[Vec<f32>],
    reps: usize,
) -> Latency {
    let spec = model.spec();
    let dec = ctx.decryptor(sk).expect("decryptor");
    let (mut te, mut tv, mut td, mut tt) = (vec![], vec![], vec![], vec![]);
    let (mut max_err, mut agree) = (0f64, true);
    let mut cpu0 = None;
    for r in 0..=reps {
        if r == 1 {
            cpu0 = cpu_seconds();
        }
        let x = &xs[r % xs.len()];
        let t0 = Instant::now();
        let ct: Vec<_> = spec
            .encode_input(ctx, x)
            .expect("encode")
            .iter()
            .map(&mut *encrypt)
            .collect();
        let t1 = Instant::now();
        let out = model.evaluate(eval, &ct).expect("evaluate");
        let t2 = Instant::now();
        let logits = spec.decode_output(ctx, &dec.decrypt(&out)).expect("decode");
        let t3 = Instant::now();
        let (e, a) = compare(&logits, &net.forward(x).expect("reference"));
        max_err = max_err.max(e);
        agree &= a;
        if r > 0 {
            te.push((t1 - t0).as_secs_f64());
            tv.push((t2 - t1).as_secs_f64());
            td.push((t3 - t2).as_secs_f64());
            tt.push((t3 - t0).as_secs_f64());
        }
    }
    let cpu_s = match (cpu0, cpu_seconds()) {
        (Some(a), Some(b)) if reps > 0 => Some((b - a) / reps as f64),
        _ => None,
    };
    Latency {
        cpu_s,
        encrypt_s: median(te),
        eval_s: median(tv),
        decrypt_s: median(td),
        total_s: median(tt),
        max_err,
        agree,
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

struct Setup {
    plan: InferencePlan,
    ctx: Arc<CkksContext>,
    sk: SecretKey,
    eval: Evaluator,
    keygen_s: f64,
    galois_key_bytes: usize,
    /// what a requester sends once per connection: the relinearization and Galois keys
    eval_key_bytes: usize,
}

fn setup(net: &Network, policy: &ParamPolicy) -> Setup {
    let t = Instant::now();
    let plan = InferencePlan::new(net, policy).expect("plan");
    let ctx = CkksContext::new(plan.spec().parameters().clone()).expect("context");
    let mut kg = ctx.key_generator().expect("os rng");
    let sk = kg.secret_key();
    let keys = plan.spec().generate_keys(&mut kg, &sk);
    let eval = ctx
        .evaluator(keys.relinearization.as_ref(), Some(&keys.galois))
        .expect("evaluator");
    let galois_key_bytes = wire::encode_galois_keys(&ctx, &keys.galois).len();
    let eval_key_bytes = keys.wire_bytes(&ctx);
    Setup {
        plan,
        ctx,
        sk,
        eval,
        keygen_s: t.elapsed().as_secs_f64(),
        galois_key_bytes,
        eval_key_bytes,
    }
}

fn main() {
    // phases of different sizes (calibration's keys, then the consortium's; mode (b), batched,
    // mode (a)): freed memory is reused within one and released before the next
    he_agg::alloc::tune_phased();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench_infer: {e}");
            std::process::exit(2);
        }
    };
    match he_agg::simd::init_from_env() {
        Ok(l) => println!("SIMD level {l} (HEAL_SIMD=scalar|avx2|avx512|ifma|auto)"),
        Err(e) => {
            eprintln!("bench_infer: {e}");
            std::process::exit(2);
        }
    }
    let threads = rayon::current_num_threads();
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("thread pool");
    let load_before = load_average();
    let (net, source) = match &args.model {
        Some(p) => match load_model(p) {
            Ok(n) => (n, p.display().to_string()),
            Err(e) => {
                eprintln!("bench_infer: {e}");
                std::process::exit(2);
            }
        },
        None => match args.input {
            Some(side) => (
                testing::clinical_network(side, 1, 3),
                format!("random weights, clinical architecture at {side}×{side}"),
            ),
            None => (
                default_network(),
                "random weights, default architecture".to_string(),
            ),
        },
    };
    let side = net.input()[1];
    let large = side > 64;
    let xs = images(&net, 8, 99);
    {
        // how close the plain logits are: what the encrypted error must stay below
        let (mut top, mut gap, mut blown) = (0f64, f64::INFINITY, 0);
        for x in &xs {
            let mut y: Vec<f64> = net
                .forward(x)
                .expect("reference")
                .iter()
                .map(|&v| v as f64)
                .collect();
            if y.iter().any(|v| !v.is_finite()) {
                // a deep polynomial network on noise far outside its data
                blown += 1;
                continue;
            }
            top = y.iter().fold(top, |m, v| m.max(v.abs()));
            y.sort_by(|a, b| b.total_cmp(a));
            if y.len() > 1 {
                gap = gap.min(y[0] - y[1]);
            }
        }
        if blown > 0 {
            println!(
                "plain logits: not finite on {blown} of 8 random-noise images (inputs far outside \
                 the data; a deep network is measured on images near its normalisation's mean)"
            );
        } else {
            println!("plain logits: max |logit| {top:.3}, smallest top-2 gap {gap:.2e} (8 images)");
        }
    }
    let mut out = serde_json::Map::new();

    // ---- one image per ciphertext ----
    let s = setup(&net, &args.policy);
    let spec = s.plan.spec();
    let (baby, other, relin) = s.plan.key_switches();
    println!(
        "network: {source}; depth {}, {} diagonals, key switches: {baby} hoisted + {other} \
         rotations + {relin} relinearizations; {} Galois keys",
        spec.depth(),
        s.plan.diagonal_count(),
        spec.galois_steps().len(),
    );
    println!("parameters: {}", describe(spec.parameters()));
    if spec.segments() > 1 {
        // a deep network: segments refreshed by the requester (mode b) or by t keyholders
        // (mode a), one image per ciphertext, then one per slot
        out.insert("input".into(), json!(side));
        out.insert("parameters".into(), json!(describe(spec.parameters())));
        out.insert("galois_keys".into(), json!(spec.galois_steps().len()));
        out.insert("eval_key_bytes".into(), json!(s.eval_key_bytes));
        out.insert("key_setup_s".into(), json!(s.keygen_s));
        if !args.skip_mode_b {
            let d = deep::run(&net, &s.plan, &s.ctx, &s.eval, &s.sk, &xs, args.reps, &one);
            out.insert("mode_b_latency_s".into(), d["latency_s"].clone());
            out.insert("mode_b_latency_t1_s".into(), d["latency_t1_s"].clone());
            out.insert("deep".into(), d);
        }
        drop(s);
        he_agg::alloc::release_freed();
        if !args.skip_batched && !large {
            let spec_b = he_agg::infer::BatchedSpec::new(&net, &args.policy).expect("spec");
            let count = args.batch.unwrap_or(usize::MAX).min(spec_b.batch_size());
            let batch = networks::images_near_mean(&net, count, 7);
            let b = batched::run(&net, &args.policy, &batch, threads);
            out.insert("batched_images_per_s".into(), b["images_per_s"].clone());
            out.insert("batched".into(), b);
            he_agg::alloc::release_freed();
        }
        if !args.skip_mode_a {
            // images near the mean, as mode (b) above: a deep polynomial network's values leave
            // their range on random pixels, and the keyholders' refresh refuses them
            // (`RefreshRange`)
            let near = networks::images_near_mean(&net, xs.len(), 7);
            let a = mode_a::run(&net, &near, args.reps, &one, args.model_memory);
            out.insert(
                "mode_a_latency_s".into(),
                a["latency"]["all"]["total_s"].clone(),
            );
            out.insert("mode_a".into(), a);
        }
        finish(out, threads, load_before, source, &args);
        return;
    }
    let mut sk_enc = s.ctx.sk_encryptor(&s.sk).expect("encryptor");
    let request: usize = spec
        .encode_input(&s.ctx, &xs[0])
        .expect("encode")
        .iter()
        .map(|p| wire::encode_seeded_ciphertext(&s.ctx, &sk_enc.encrypt_seeded(p)).len())
        .sum();
    let model_b = Model::plain(&s.plan, &s.ctx).expect("plain model");
    let response = wire::ciphertext_len(&s.ctx, 1, 1);
    let mut mode_b = serde_json::Map::new();
    for (name, pool) in [("t1", Some(&one)), ("all", None)] {
        let mut run = || {
            latency(
                &net,
                &model_b,
                &s.ctx,
                &s.eval,
                &s.sk,
                &mut |pt| sk_enc.encrypt(pt),
                &xs,
                args.reps,
            )
        };
        let l = match pool {
            Some(p) => p.install(run),
            None => run(),
        };
        println!(
            "mode (b) {name:>3}: encrypt {:.1} ms, evaluate {:.1} ms, decrypt {:.1} ms, total \
             {:.1} ms (CPU {:.1} ms); max |err| {:.2e}, argmax agrees: {}",
            l.encrypt_s * 1e3,
            l.eval_s * 1e3,
            l.decrypt_s * 1e3,
            l.total_s * 1e3,
            l.cpu_s.unwrap_or(f64::NAN) * 1e3,
            l.max_err,
            l.agree
        );
        mode_b.insert(name.into(), l.json());
    }
    println!(
        "mode (b) request {:.2} MB ({} seeded ciphertexts, level {}), response {} KB, evaluation \
         keys {:.1} MB once per connection ({} Galois keys {:.1} MB)",
        request as f64 / 1e6,
        spec.input_ciphertexts(),
        spec.input_level(),
        response / 1000,
        s.eval_key_bytes as f64 / 1e6,
        spec.galois_steps().len(),
        s.galois_key_bytes as f64 / 1e6
    );
    for (i, st) in s.plan.stage_info().iter().enumerate() {
        println!("  stage {i}: {st:?}");
    }
    out.insert("input".into(), json!(side));
    out.insert("mode_b_latency_s".into(), mode_b["all"]["total_s"].clone());
    out.insert(
        "mode_b_latency_t1_s".into(),
        mode_b["t1"]["total_s"].clone(),
    );
    out.insert("eval_key_bytes".into(), json!(s.eval_key_bytes));
    out.insert("request_bytes".into(), json!(request));
    out.insert("response_bytes".into(), json!(response));
    out.insert(
        "mode_b".into(),
        json!({
            "latency": mode_b, "request_bytes": request, "response_bytes": response,
            "galois_key_bytes": s.galois_key_bytes, "eval_key_bytes": s.eval_key_bytes,
            "key_setup_s": s.keygen_s, "input_ciphertexts": spec.input_ciphertexts(),
            "stages": s.plan.stage_info().iter().map(|st| format!("{st:?}")).collect::<Vec<_>>(),
            "parameters": describe(spec.parameters()), "depth": spec.depth(),
            "galois_keys": spec.galois_steps().len(), "diagonals": s.plan.diagonal_count(),
            "hoisted_rotations": baby, "rotations": other, "relinearizations": relin,
        }),
    );

    drop(s);

    // ---- mode (a): the consortium's encrypted model, result switched by t hospitals ----
    if !args.skip_mode_a {
        let a = mode_a::run(&net, &xs, args.reps, &one, args.model_memory);
        out.insert(
            "mode_a_latency_s".into(),
            a["latency"]["all"]["total_s"].clone(),
        );
        out.insert(
            "mode_a_latency_t1_s".into(),
            a["latency"]["t1"]["total_s"].clone(),
        );
        out.insert("mode_a".into(), a);
    }

    if large {
        // the seed: encrypted 256×256 kidney CT (Radiology: AI 2025)
        let per = |k: &str| out.get(k).and_then(Value::as_f64);
        let b = per("mode_b_latency_s").unwrap_or(f64::NAN);
        let mode_a =
            per("mode_a_latency_s").map_or_else(|| "skipped".to_string(), |a| format!("{a:.2} s"));
        println!(
            "clinical {side}×{side}: mode (b) {b:.2} s per image ({:.2} s on 1 thread), mode (a) \
             {mode_a}; request {:.1} MB, evaluation keys {:.1} MB once",
            per("mode_b_latency_t1_s").unwrap_or(f64::NAN),
            request as f64 / 1e6,
            per("eval_key_bytes").unwrap_or(f64::NAN) / 1e6,
        );
        println!(
            "  beside the seed (90 s per image on a GPU, 3000 s on a CPU, 32 MB per encrypted \
             image): mode (b) {:.0}× faster than its GPU, {:.0}× than its CPU; request {:.2}× \
             its bytes",
            90.0 / b,
            3000.0 / b,
            request as f64 / 32e6,
        );
        out.insert(
            "seed".into(),
            json!({"gpu_s_per_image": 90.0, "cpu_s_per_image": 3000.0, "bytes_per_image": 32e6}),
        );
    }

    // ---- batched: one image per slot (a ciphertext per input value: small images only) ----
    if large && !args.skip_batched {
        println!(
            "batched: skipped at {side}×{side} (one ciphertext per input value would be {} \
             ciphertexts per batch)",
            net.input_len()
        );
    }
    if !args.skip_batched && !large {
        let count = args.batch.unwrap_or(usize::MAX).min(
            he_agg::infer::BatchedSpec::new(&net, &args.policy)
                .expect("spec")
                .batch_size(),
        );
        let b = batched::run(&net, &args.policy, &images(&net, count, 7), threads);
        out.insert("batched_images_per_s".into(), b["images_per_s"].clone());
        out.insert("batched".into(), b);
    }

    if args.skip_tenseal || large {
        return finish(out, threads, load_before, source, &args);
    }
    // ---- TenSEAL's architecture, one thread, side by side ----
    // like for like: TenSEAL's ring (N = 2^13) at a precision at least TenSEAL's (scale 2^26);
    // and with the default policy (N = 2^14, scale 2^40)
    let tnet = tenseal_network();
    let txs: Vec<Vec<f32>> = images(&tnet, 8, 5)
        .into_iter()
        .map(|x| {
            x.iter()
                .map(|v| (v * 0.5 + 0.5 - 0.1307) / 0.3081)
                .collect()
        })
        .collect();
    let same_ring = ParamPolicy {
        min_scale_bits: 25,
        max_log_n: 13,
        ..ParamPolicy::default()
    };
    let mut tenseal_runs = Vec::new();
    for policy in [same_ring, ParamPolicy::default()] {
        let ts = setup(&tnet, &policy);
        let tmodel = Model::plain(&ts.plan, &ts.ctx).expect("model");
        let mut enc = ts.ctx.sk_encryptor(&ts.sk).expect("encryptor");
        let tl = one.install(|| {
            latency(
                &tnet,
                &tmodel,
                &ts.ctx,
                &ts.eval,
                &ts.sk,
                &mut |pt| enc.encrypt(pt),
                &txs,
                args.reps,
            )
        });
        tenseal_runs.push((tl, describe(ts.plan.spec().parameters())));
    }
    let anchor = args.anchors.as_ref().and_then(|d| {
        let p = d.join("tenseal_mnist_t1.json");
        match std::fs::read_to_string(&p).map(|s| serde_json::from_str::<Value>(&s)) {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                eprintln!("warning: {}: {e}", p.display());
                None
            }
            Err(e) => {
                eprintln!("warning: {}: {e}", p.display());
                None
            }
        }
    });
    let tenseal_s = anchor
        .as_ref()
        .and_then(|v| v["result"]["total_s"]["median_s"].as_f64());
    let tenseal_err = anchor
        .as_ref()
        .and_then(|v| v["result"]["max_abs_error_vs_plaintext"].as_f64());
    for (name, (tl, params)) in ["same ring", "default policy"].iter().zip(&tenseal_runs) {
        println!(
            "TenSEAL's MNIST CNN, 1 thread, {name}: HEAL {:.1} ms (CPU {:.1}; encrypt {:.1}, \
             evaluate {:.1}, decrypt {:.1}; max |err| {:.2e}; {params}){}",
            tl.total_s * 1e3,
            tl.cpu_s.unwrap_or(f64::NAN) * 1e3,
            tl.encrypt_s * 1e3,
            tl.eval_s * 1e3,
            tl.decrypt_s * 1e3,
            tl.max_err,
            match tenseal_s {
                Some(t) => format!(
                    "; TenSEAL {:.1} ms (max |err| {:.2e}): {:.1}× faster",
                    t * 1e3,
                    tenseal_err.unwrap_or(f64::NAN),
                    t / tl.total_s
                ),
                None => "; no TenSEAL anchor (pass --anchors DIR)".into(),
            }
        );
    }
    let (same, precise) = (&tenseal_runs[0].0, &tenseal_runs[1].0);
    out.insert(
        "tenseal_arch".into(),
        json!({
            "heal_s": same.total_s, "tenseal_s": tenseal_s.unwrap_or(0.0),
            "ratio": tenseal_s.map_or(0.0, |t| t / same.total_s),
            "heal": same.json(), "heal_parameters": tenseal_runs[0].1,
            "heal_default_policy_s": precise.total_s,
            "ratio_default_policy": tenseal_s.map_or(0.0, |t| t / precise.total_s),
            "heal_default_policy": precise.json(),
            "heal_default_policy_parameters": tenseal_runs[1].1,
            "tenseal_eval_s": anchor.as_ref().and_then(|v| v["result"]["server_eval_s"]["median_s"].as_f64()),
            "tenseal_max_abs_error": tenseal_err,
        }),
    );
    finish(out, threads, load_before, source, &args)
}

/// Adds the run's context and writes the JSON.
fn finish(
    mut out: serde_json::Map<String, Value>,
    threads: usize,
    load_before: String,
    source: String,
    args: &Args,
) {
    out.insert("threads".into(), json!(threads));
    out.insert("simd_level".into(), json!(he_agg::simd::level().name()));
    out.insert(
        "machine".into(),
        json!({"load_average_before": load_before, "load_average_after": load_average()}),
    );
    out.insert("network".into(), json!(source));
    let doc = Value::Object(out);
    if let Some(path) = &args.json {
        if let Err(e) = std::fs::write(path, serde_json::to_string_pretty(&doc).expect("json")) {
            eprintln!("bench_infer: {}: {e}", path.display());
            std::process::exit(1);
        }
        println!("wrote {}", path.display());
    }
}
