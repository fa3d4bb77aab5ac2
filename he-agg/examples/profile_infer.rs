//! Runs one encrypted-inference evaluation in a loop, for profilers (perf, callgrind):
//!     cargo run --release -p he-agg --example profile_infer -- b 50     # mode (b), 50 runs
//!     cargo run --release -p he-agg --example profile_infer -- a 20     # mode (a)
//!     cargo run --release -p he-agg --example profile_infer -- batched 1
//!     cargo run --release -p he-agg --example profile_infer -- b 3 NET.json  # a network file
//! Default network (random weights) unless a file is named, default parameter policy, all
//! threads. A plan cut into segments is refreshed here, by the key's holder, between them.

#[global_allocator]
static GLOBAL: he_agg::alloc::Allocator = he_agg::alloc::Allocator;

use std::time::Instant;

use he_agg::ckks::CkksContext;
use he_agg::infer::refresh::renew;
use he_agg::infer::{
    BatchedModel, BatchedSpec, Conv2d, Dense, InferencePlan, Layer, Model, Network, ParamPolicy,
};

fn lcg(s: &mut u64) -> f32 {
    *s = s
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

fn main() {
    he_agg::alloc::tune();
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("b");
    let reps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20);
    let s = &mut 1u64;
    let mut v = |n: usize, k: f32| -> Vec<f32> { (0..n).map(|_| lcg(s) * k).collect() };
    let file = args
        .get(3)
        .map(|p| he_agg::infer::NetworkFile::read_json(std::path::Path::new(p)).expect("network"));
    let net = match &file {
        Some(f) => f.network.clone(),
        None => default_network(&mut v),
    };
    // a file's network is deep: an image near its normalisation's mean keeps it finite
    let x = if file.is_some() {
        v(net.input_len(), 0.05)
    } else {
        v(784, 1.0)
    };
    run(mode, reps, &net, &x);
}

fn default_network(v: &mut impl FnMut(usize, f32) -> Vec<f32>) -> Network {
    Network::new(
        [1, 28, 28],
        vec![
            Layer::Conv2d(Conv2d {
                in_channels: 1,
                out_channels: 16,
                kernel: 5,
                stride: 2,
                padding: 0,
                weight: v(400, 0.2),
                bias: v(16, 0.1),
            }),
            Layer::Square,
            Layer::Dense(Dense {
                in_features: 2304,
                out_features: 128,
                weight: v(2304 * 128, 0.02),
                bias: v(128, 0.1),
            }),
            Layer::Square,
            Layer::Dense(Dense {
                in_features: 128,
                out_features: 11,
                weight: v(128 * 11, 0.09),
                bias: v(11, 0.1),
            }),
        ],
    )
    .expect("valid network")
}

fn run(mode: &str, reps: usize, net: &Network, x: &[f32]) {
    let policy = ParamPolicy::default();
    if mode == "batched" {
        let spec = BatchedSpec::new(net, &policy).expect("spec");
        let ctx = CkksContext::new(spec.parameters().clone()).expect("context");
        let model = BatchedModel::new(net, &ctx).expect("model");
        let mut kg = ctx.key_generator().expect("rng");
        let sk = kg.secret_key();
        let rlk = kg.relinearization_key(&sk);
        let eval = ctx.evaluator(Some(&rlk), None).expect("evaluator");
        let mut enc = ctx.sk_encryptor(&sk).expect("encryptor");
        let images = vec![x; spec.batch_size()];
        let cts: Vec<_> = spec
            .encode_inputs(&ctx, &images)
            .expect("encode")
            .iter()
            .map(|p| enc.encrypt(p))
            .collect();
        for _ in 0..reps {
            let t = Instant::now();
            std::hint::black_box(model.evaluate(&eval, &cts).expect("evaluate"));
            println!("batched evaluate: {:.2} s", t.elapsed().as_secs_f64());
        }
        return;
    }
    let plan = InferencePlan::new(net, &policy).expect("plan");
    for st in plan.stage_info() {
        println!("{st:?}");
    }
    let ctx = CkksContext::new(plan.spec().parameters().clone()).expect("context");
    let mut kg = ctx.key_generator().expect("rng");
    let sk = kg.secret_key();
    let keys = plan.spec().generate_keys(&mut kg, &sk);
    let eval = ctx
        .evaluator(keys.relinearization.as_ref(), Some(&keys.galois))
        .expect("evaluator");
    let mut enc = ctx.sk_encryptor(&sk).expect("encryptor");
    let model = if mode == "a" {
        Model::encrypted(&plan, &ctx, &mut |p| enc.encrypt(p)).expect("model")
    } else {
        Model::plain(&plan, &ctx).expect("model")
    };
    let ct: Vec<_> = plan
        .spec()
        .encode_input(&ctx, x)
        .expect("encode")
        .iter()
        .map(|p| enc.encrypt(p))
        .collect();
    let mut times = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        let top = plan.spec().input_level();
        let dec = ctx.decryptor(&sk).expect("decryptor");
        std::hint::black_box(
            model
                .evaluate_refreshed(&eval, &ct, |_, c| renew(&ctx, &dec, &mut enc, &c, top))
                .expect("evaluate"),
        );
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    println!(
        "mode ({mode}) evaluate: median {:.1} ms, min {:.1} ms over {reps}",
        times[reps / 2] * 1e3,
        times[0] * 1e3
    );
}
