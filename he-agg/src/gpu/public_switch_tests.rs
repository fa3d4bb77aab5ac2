//! Public-key switching on the device against [`PublicKeySwitch`] on the CPU, word for word:
//! through the host reference on any machine, through CUDA where a GPU is present.

use std::sync::Arc;

use super::*;
use crate::ckks::{Ciphertext, CkksContext, Parameters, Preset, PublicKey, SecretKey};
use crate::multiparty::flooding::fresh_noise_bound;
use crate::multiparty::{Flooding, MultipartyError, PublicKeySwitch, PublicKeySwitchShare};
use crate::ring::Prng;

struct Setup {
    ctx: Arc<CkksContext>,
    parties: Vec<SecretKey>,
    target_sk: SecretKey,
    target: PublicKey,
    cts: Vec<Ciphertext>,
    values: Vec<Vec<f64>>,
    switch: PublicKeySwitch,
}

/// `count` ciphertexts at `level` under the sum of 3 parties' secrets (encrypted under one of
/// them with the others' c1·s_i folded in: what matters here is only that the switch is exact).
fn setup(ctx: Arc<CkksContext>, level: usize, count: usize) -> Setup {
    let mut kg = ctx.key_generator().unwrap();
    let parties: Vec<SecretKey> = (0..3).map(|_| kg.secret_key()).collect();
    let target_sk = kg.secret_key();
    let target = kg.public_key(&target_sk);
    // the collective secret s = Σ s_i, and a fresh encryption under it
    let rl = ctx.rlwe();
    let mut s = parties[0].poly().clone();
    for p in &parties[1..] {
        rl.ring().add_assign(&mut s, p.poly(), rl.key_basis());
    }
    let collective = SecretKey::from_poly(s, *ctx.fingerprint());
    let mut enc = ctx.sk_encryptor(&collective).unwrap();
    let slots = ctx.n();
    let mut prng = Prng::from_seed(&[42; 32]);
    let values: Vec<Vec<f64>> = (0..count)
        .map(|_| {
            (0..slots)
                .map(|_| (prng.next_u64() % 2001) as f64 / 1000.0 - 1.0)
                .collect()
        })
        .collect();
    // flooding of λ = 30 over N = 2^10 leaves ~1e-4 per slot at this scale
    let scale = 2f64.powi(58);
    let cts = values
        .iter()
        .map(|v| enc.encrypt(&ctx.encode_real_pairs(v, level, scale).unwrap()))
        .collect();
    let flooding = Flooding::new(30, fresh_noise_bound(&ctx, 3)).unwrap();
    let switch = PublicKeySwitch::new(&ctx, flooding, 3);
    Setup {
        ctx,
        parties,
        target_sk,
        target,
        cts,
        values,
        switch,
    }
}

fn host_engine(ctx: &CkksContext) -> Engine<HostExec> {
    let tables = Arc::new(NttTables::new(ctx.rlwe().ring()));
    Engine::new(HostExec::new(tables), ctx.rlwe().clone())
}

/// Each party's shares on `engine` equal the CPU's from the same generator state; the switched
/// ciphertexts equal the CPU's and decrypt under the target key to the values.
fn check_switch<E: Exec>(engine: &Engine<E>, s: &Setup) {
    let level = s.cts[0].level();
    let dev_cts = engine.upload_cts(&s.cts).unwrap();
    let pcks = engine.public_switch(&s.switch, &s.target, level).unwrap();
    let mut cpu_acc: Option<Vec<PublicKeySwitchShare>> = None;
    let mut dev_acc = None;
    for (p, sk) in s.parties.iter().enumerate() {
        let mut cpu_prng = Prng::from_seed(&[p as u8 + 1; 32]);
        let mut dev_prng = Prng::from_seed(&[p as u8 + 1; 32]);
        let cpu: Vec<PublicKeySwitchShare> = s
            .cts
            .iter()
            .map(|ct| s.switch.share(sk, &s.target, ct, &mut cpu_prng).unwrap())
            .collect();
        let dev = engine
            .switch_share(&pcks, sk, &dev_cts, &mut dev_prng)
            .unwrap();
        assert_eq!(engine.download_shares(&dev).unwrap(), cpu, "party {p}");
        // both drew the same randomness, no more
        assert_eq!(cpu_prng.next_u64(), dev_prng.next_u64());
        match (cpu_acc.as_mut(), dev_acc.as_mut()) {
            (None, None) => {
                cpu_acc = Some(cpu);
                dev_acc = Some(dev);
            }
            (Some(ca), Some(da)) => {
                for (a, b) in ca.iter_mut().zip(&cpu) {
                    s.switch.aggregate(a, b).unwrap();
                }
                engine.switch_aggregate(da, &dev).unwrap();
            }
            _ => unreachable!(),
        }
    }
    let switched = engine.switch_finalize(&dev_cts, dev_acc.unwrap()).unwrap();
    let got = engine.download_cts(&switched).unwrap();
    let want: Vec<Ciphertext> = s
        .cts
        .iter()
        .zip(cpu_acc.unwrap())
        .map(|(ct, agg)| s.switch.finalize(ct, agg).unwrap())
        .collect();
    assert_eq!(got.len(), want.len());
    let dec = s.ctx.decryptor(&s.target_sk).unwrap();
    for ((g, w), values) in got.iter().zip(&want).zip(&s.values) {
        assert_eq!(g.parts, w.parts);
        let out = s.ctx.decode_real_pairs(&dec.decrypt(g)).unwrap();
        let worst = out
            .iter()
            .zip(values)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-2, "switched values off by {worst}");
    }
}

fn small_ctx() -> Arc<CkksContext> {
    CkksContext::new(Parameters::insecure_for_tests(10, &[60, 60, 60], &[], 1, 40.0).unwrap())
        .unwrap()
}

#[test]
fn the_host_engine_switches_as_the_cpu_does() {
    let ctx = small_ctx();
    for level in [3, 2] {
        let s = setup(ctx.clone(), level, 3);
        check_switch(&host_engine(&ctx), &s);
    }
}

#[test]
fn mismatched_batches_keys_and_levels_are_refused() {
    let ctx = small_ctx();
    let s = setup(ctx.clone(), 3, 2);
    let engine = host_engine(&ctx);
    assert!(matches!(engine.upload_cts(&[]), Err(GpuError::Empty)));
    let mut mixed = s.cts.clone();
    mixed[1].scale *= 2.0;
    assert!(matches!(
        engine.upload_cts(&mixed),
        Err(GpuError::Scale(..))
    ));
    let lower = setup(ctx.clone(), 2, 1).cts;
    let mut levels = s.cts.clone();
    levels.push(lower[0].clone());
    assert!(matches!(
        engine.upload_cts(&levels),
        Err(GpuError::LevelMismatch(3, 2))
    ));
    let mut deg2 = s.cts.clone();
    let c0 = deg2[0].parts[0].clone();
    deg2[0].parts.push(c0);
    assert!(matches!(engine.upload_cts(&deg2), Err(GpuError::Degree(2))));

    // a switch at one level refuses ciphertexts at another
    let dev = engine.upload_cts(&s.cts).unwrap();
    let pcks2 = engine.public_switch(&s.switch, &s.target, 2).unwrap();
    let mut prng = Prng::from_seed(&[1; 32]);
    assert!(matches!(
        engine.switch_share(&pcks2, &s.parties[0], &dev, &mut prng),
        Err(GpuError::LevelMismatch(2, 3))
    ));
    // keys of other parameters
    let other = CkksContext::new(Parameters::preset(Preset::Aggregation)).unwrap();
    let mut okg = other.key_generator().unwrap();
    let (osk, opk) = {
        let sk = okg.secret_key();
        let pk = okg.public_key(&sk);
        (sk, pk)
    };
    assert!(matches!(
        engine.public_switch(&s.switch, &opk, 3),
        Err(GpuError::ForeignKey)
    ));
    let pcks = engine.public_switch(&s.switch, &s.target, 3).unwrap();
    assert!(matches!(
        engine.switch_share(&pcks, &osk, &dev, &mut prng),
        Err(GpuError::Switch(MultipartyError::Foreign { .. }))
    ));
    // flooding that leaves no room at the level is refused as on the CPU
    let one = setup(ctx.clone(), 1, 1);
    let dev_one = engine.upload_cts(&one.cts).unwrap();
    let wide = PublicKeySwitch::new(&ctx, Flooding::new(60, 1.0).unwrap(), 3);
    let pcks_wide = engine.public_switch(&wide, &one.target, 1).unwrap();
    let cpu = wide.share(&one.parties[0], &one.target, &one.cts[0], &mut prng);
    assert!(matches!(cpu, Err(MultipartyError::Headroom { .. })));
    assert!(matches!(
        engine.switch_share(&pcks_wide, &one.parties[0], &dev_one, &mut prng),
        Err(GpuError::Switch(MultipartyError::Headroom { .. }))
    ));
}

#[test]
fn sampling_into_limbs_equals_the_expanders() {
    let ctx = small_ctx();
    let tables = Arc::new(NttTables::new(ctx.rlwe().ring()));
    let host = HostExec::new(tables);
    let n = ctx.n();
    let seeds = [[3u8; 32], [4u8; 32]];
    let mut buf = host.zeros(1 + 2 * 2).unwrap();
    host.sample(
        &mut buf,
        1,
        &seeds,
        SampleDist::Flooding {
            sigma: 2f64.powi(70),
        },
        &[0, 2],
    )
    .unwrap();
    assert!(
        buf[..n].iter().all(|&w| w == 0),
        "limbs before `first` untouched"
    );
    let ring = ctx.rlwe().ring();
    for (s, seed) in seeds.iter().enumerate() {
        let e = crate::ring::expand::flooding(seed, n, 2f64.powi(70));
        for (i, m) in [0usize, 2].into_iter().enumerate() {
            let limb = &buf[(1 + 2 * s + i) * n..][..n];
            let want: Vec<u64> = e.iter().map(|&x| ring.modulus(m).reduce_i128(x)).collect();
            assert_eq!(limb, want.as_slice(), "seed {s} modulus {m}");
        }
    }
    host.wipe(&mut buf).unwrap();
    assert!(buf.iter().all(|&w| w == 0) && buf.len() == 5 * n);
}

#[cfg(feature = "cuda")]
mod device {
    use super::*;

    fn open(ctx: &CkksContext) -> Option<Engine<CudaExec>> {
        let tables = NttTables::new(ctx.rlwe().ring());
        match CudaExec::open(0, &tables, false) {
            Ok(e) => Some(Engine::new(e, ctx.rlwe().clone())),
            Err(e) => {
                println!("skipped: no CUDA device ({e})");
                None
            }
        }
    }

    #[test]
    fn the_device_samples_as_the_host_does() {
        let ctx = CkksContext::new(Parameters::preset(Preset::Aggregation)).unwrap();
        let Some(engine) = open(&ctx) else {
            return;
        };
        let host = host_engine(&ctx);
        let seeds: Vec<crate::ring::Seed> = (0..5u8).map(|i| [i.wrapping_mul(37); 32]).collect();
        let moduli: Vec<u32> = (0..ctx.rlwe().ring().moduli().len() as u32).collect();
        let limbs = 1 + seeds.len() * moduli.len();
        for dist in [
            SampleDist::Ternary,
            SampleDist::Gaussian,
            SampleDist::Flooding { sigma: 1.0 },
            SampleDist::Flooding {
                sigma: 2f64.powi(40) * 3.7,
            },
            SampleDist::Flooding {
                sigma: 2f64.powi(70) * 1.3,
            },
            SampleDist::Flooding {
                sigma: crate::ring::expand::MAX_FLOODING_SIGMA,
            },
        ] {
            let mut d = engine.exec().zeros(limbs).unwrap();
            let mut h = host.exec().zeros(limbs).unwrap();
            engine
                .exec()
                .sample(&mut d, 1, &seeds, dist, &moduli)
                .unwrap();
            host.exec()
                .sample(&mut h, 1, &seeds, dist, &moduli)
                .unwrap();
            assert_eq!(engine.exec().download(&d).unwrap(), h, "{dist:?}");
            engine.exec().wipe(&mut d).unwrap();
            assert!(engine.exec().download(&d).unwrap().iter().all(|&w| w == 0));
        }
    }

    #[test]
    fn the_device_switches_as_the_cpu_does() {
        let ctx = CkksContext::new(Parameters::preset(Preset::Aggregation)).unwrap();
        let Some(engine) = open(&ctx) else {
            return;
        };
        println!("device: {}", engine.exec().name());
        let s = setup(ctx.clone(), ctx.max_level(), 4);
        check_switch(&engine, &s);
    }
}
