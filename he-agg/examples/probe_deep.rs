use he_agg::infer::refresh::{mask, reencrypt, unmask};
use he_agg::infer::testing::{keys_for, residual_network};
use he_agg::infer::*;
use he_agg::ring::Prng;
fn main() {
    let net = residual_network(8, 1, 4, 3, 2, 3);
    for (lo, digits) in [(36u32, 3u32), (40, 3), (36, 2)] {
        let policy = ParamPolicy { min_refresh_scale_bits: lo, max_refresh_digits: digits, ..ParamPolicy::default() };
        let plan = InferencePlan::new(&net, &policy).unwrap();
        let spec = plan.spec();
        let k = keys_for(spec);
        let model = Model::plain(&plan, &k.ctx).unwrap();
        let mut prng = Prng::from_os().unwrap();
        let mut worst = 0f64;
        let mut mag = 0f64;
        for seed in 0..6u64 {
            let x: Vec<f32> = (0..64).map(|i| (((i as u64 * 37 + seed * 101) % 200) as f32 / 100.0) - 1.0).collect();
            let mut enc = k.ctx.sk_encryptor(&k.sk).unwrap();
            let cts: Vec<_> = spec.encode_input(&k.ctx, &x).unwrap().iter().map(|p| enc.encrypt(p)).collect();
            let out = model.evaluate_refreshed(&k.eval, &cts, |i, ct| {
                let (m, mk) = mask(&k.ctx, spec, i, &ct, &mut prng)?;
                let f = reencrypt(&k.ctx, spec, i, &k.sk, &m)?;
                unmask(&k.ctx, spec, he_agg::rlwe::expand_seeded(k.ctx.rlwe(), &f), mk)
            }).unwrap();
            let got = spec.decode_output(&k.ctx, &k.ctx.decryptor(&k.sk).unwrap().decrypt(&out)).unwrap();
            let want = net.forward(&x).unwrap();
            for (g, w) in got.iter().zip(&want) { worst = worst.max((g - *w as f64).abs()); mag = mag.max(w.abs() as f64); }
        }
        let keys = spec.generate_keys(&mut k.ctx.key_generator().unwrap(), &k.sk);
        println!("scale 2^{} N {} levels {} dnum {} segments {} worst abs err {worst:.2e} max |logit| {mag:.2} keys {:.0} MB ({} galois)", spec.parameters().log_scale(), spec.parameters().n(), spec.input_level(), spec.parameters().rlwe().dnum(), spec.segments(), keys.wire_bytes(&k.ctx) as f64 / 1e6, spec.galois_steps().len());
    }
}
