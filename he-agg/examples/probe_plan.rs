#[global_allocator]
static GLOBAL: he_agg::alloc::Allocator = he_agg::alloc::Allocator;
use he_agg::infer::refresh::{mask, reencrypt, unmask};
use he_agg::infer::testing::keys_for;
use he_agg::infer::*;
use std::time::Instant;
fn main() {
    he_agg::alloc::tune();
    let path = std::env::args().nth(1).expect("network.json");
    let file = NetworkFile::read_json(std::path::Path::new(&path)).unwrap();
    let net = &file.network;
    let t = Instant::now();
    let plan = InferencePlan::new(net, &ParamPolicy::default()).unwrap();
    let spec = plan.spec();
    let p = spec.parameters();
    println!("plan {:.1} s: N {} scale 2^{} levels {} dnum {} depth {} segments {} galois {} diagonals {}", t.elapsed().as_secs_f64(), p.n(), p.log_scale(), spec.input_level(), p.rlwe().dnum(), spec.depth(), spec.segments(), spec.galois_steps().len(), plan.diagonal_count());
    for s in plan.stage_info().iter().filter(|s| s.linear) { print!("{}/{} ", s.diagonals, s.baby_steps + s.giant_steps); }
    println!();
    if std::env::args().nth(2).is_none() { return; }
    let t = Instant::now();
    let k = keys_for(spec);
    println!("keys {:.1} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let model = Model::plain(&plan, &k.ctx).unwrap();
    println!("model {:.1} s", t.elapsed().as_secs_f64());
    let x: Vec<f32> = (0..net.input_len()).map(|i| ((i * 37 % 200) as f32 / 100.0) - 1.0).collect();
    let mut enc = k.ctx.sk_encryptor(&k.sk).unwrap();
    let cts: Vec<_> = spec.encode_input(&k.ctx, &x).unwrap().iter().map(|p| enc.encrypt(p)).collect();
    let mut prng = he_agg::ring::Prng::from_os().unwrap();
    let t0 = Instant::now();
    let mut out = model.evaluate_segment(&k.eval, 0, &cts).unwrap();
    print!("segments (s): {:.2}", t0.elapsed().as_secs_f64());
    let mut rt = 0.0;
    for s in 1..spec.segments() {
        let t = Instant::now();
        let (m, mk) = mask(&k.ctx, spec, s - 1, &out, &mut prng).unwrap();
        let f = reencrypt(&k.ctx, spec, s - 1, &k.sk, &m).unwrap();
        let next = unmask(&k.ctx, spec, he_agg::rlwe::expand_seeded(k.ctx.rlwe(), &f), mk).unwrap();
        rt += t.elapsed().as_secs_f64();
        let t = Instant::now();
        out = model.evaluate_segment(&k.eval, s, &[next]).unwrap();
        print!(" {:.2}", t.elapsed().as_secs_f64());
    }
    println!("\nrefresh work {:.3} s, total {:.2} s", rt, t0.elapsed().as_secs_f64());
}
