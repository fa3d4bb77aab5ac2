//! The refresh round trip of a deep model (mode b) on ciphertexts of any shape: what a
//! requester is asked to refresh and what a server gets back can have any level, degree, scale
//! and residues. The fuzzer picks those (and the refresh's index); `reencrypt` (the requester),
//! `mask` and `unmask` (the server) must return a value or an error, never panic.
//!
//!     cd he-agg/fuzz && cargo +nightly fuzz run refresh -- -max_total_time=300
#![no_main]

use std::sync::{Arc, OnceLock};

use he_agg::ckks::{Ciphertext, CkksContext, SecretKey};
use he_agg::infer::refresh::{mask, reencrypt, unmask};
use he_agg::infer::testing::residual_network;
use he_agg::infer::{InferencePlan, InferenceSpec, ParamPolicy};
use he_agg::ring::{Poly, Prng};
use libfuzzer_sys::fuzz_target;

struct Kit {
    ctx: Arc<CkksContext>,
    spec: InferenceSpec,
    sk: SecretKey,
    good: Ciphertext,
}

fn kit() -> &'static Kit {
    static KIT: OnceLock<Kit> = OnceLock::new();
    KIT.get_or_init(|| {
        // a small residual network cut into segments on N = 2^14
        let net = residual_network(8, 1, 2, 3, 1, 2);
        let policy = ParamPolicy { max_log_n: 14, ..ParamPolicy::default() };
        let plan = InferencePlan::new(&net, &policy).expect("plan");
        let spec = plan.spec().clone();
        assert!(!spec.refreshes().is_empty());
        let ctx = CkksContext::new(spec.parameters().clone()).expect("context");
        let sk = ctx.key_generator().expect("rng").secret_key();
        let p = spec.refreshes()[0];
        let pt = ctx.encode_reals(&[0.5; 4], p.level, p.scale).expect("encode");
        let good = ctx.sk_encryptor(&sk).expect("encryptor").encrypt(&pt);
        Kit { ctx, spec, sk, good }
    })
}

fuzz_target!(|data: &[u8]| {
    let k = kit();
    if data.len() < 12 {
        return;
    }
    let top = k.ctx.max_level();
    let level = 1 + data[0] as usize % top;
    let parts = 1 + data[1] as usize % 3;
    let index = data[2] as usize % (k.spec.refreshes().len() + 2);
    let scale = f64::from_le_bytes(data[3..11].try_into().unwrap());
    // residues from the rest of the input, repeated, each reduced by its limb's prime (what the
    // wire decoders hand over)
    let n = k.ctx.n();
    let body = &data[11..];
    let word = |i: usize| -> u64 {
        let b = |j: usize| body[(i * 8 + j) % body.len()] as u64;
        (0..8).fold(0u64, |acc, j| acc | b(j) << (8 * j))
    };
    let rl = k.ctx.rlwe();
    let primes: Vec<u64> = rl
        .q_basis(level)
        .iter()
        .map(|&i| rl.ring().moduli()[i].value())
        .collect();
    let parts: Vec<Poly> = (0..parts)
        .map(|p| {
            let data = (0..n * level).map(|i| word(i + p) % primes[i / n]).collect();
            Poly::from_data(n, data)
        })
        .collect();
    let ct = Ciphertext { parts, scale };
    let _ = reencrypt(&k.ctx, &k.spec, index, &k.sk, &ct);
    let mut prng = Prng::from_os().expect("rng");
    let _ = mask(&k.ctx, &k.spec, index, &ct, &mut prng);
    // an answer of any shape against a real mask
    if let Ok((_, m)) = mask(&k.ctx, &k.spec, 0, &k.good, &mut prng) {
        let _ = unmask(&k.ctx, &k.spec, ct, m);
    }
});
