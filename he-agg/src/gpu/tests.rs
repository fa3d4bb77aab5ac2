//! The device path against the CPU path, word for word: the NTT tables against tfhe-ntt, and
//! every engine operation on the host reference against the evaluator (on any machine); where a
//! GPU is present, the CUDA executor against both (else those tests print why they skip).

use std::sync::{Arc, OnceLock};

use super::*;
use crate::ckks::{Ciphertext, CkksContext, Complex, Evaluator, GaloisKeys, Parameters};
use crate::ring::{Poly, Prng};

pub(super) struct Fixture {
    pub ctx: Arc<CkksContext>,
    pub eval: Evaluator,
    pub gk: GaloisKeys,
    pub rlk: crate::ckks::RelinearizationKey,
    pub steps: Vec<i64>,
}

/// N = 2^10 (insecure, for speed), five levels, three digits of two moduli (so a level can cut
/// a digit short), two special primes.
pub(super) fn small() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let params =
            Parameters::insecure_for_tests(10, &[60, 40, 40, 40, 40], &[60, 60], 3, 40.0).unwrap();
        fixture(CkksContext::new(params).unwrap(), vec![1, -3, 7])
    })
}

pub(super) fn fixture(ctx: Arc<CkksContext>, steps: Vec<i64>) -> Fixture {
    let mut kg = ctx.key_generator().unwrap();
    let sk = kg.secret_key();
    let gk = kg.galois_keys(&sk, &steps, true);
    let rlk = kg.relinearization_key(&sk);
    let eval = ctx.evaluator(Some(&rlk), Some(&gk)).unwrap();
    Fixture {
        ctx,
        eval,
        gk,
        rlk,
        steps,
    }
}

pub(super) fn ciphertext(f: &Fixture, level: usize, seed: u8) -> Ciphertext {
    let mut prng = Prng::from_seed(&[seed; 32]);
    let slots = f.ctx.n() / 2;
    let v: Vec<Complex> = (0..slots)
        .map(|_| Complex::new((prng.next_u64() % 1000) as f64 / 1000.0, 0.0))
        .collect();
    let pt = f.ctx.encode(&v, level, f.ctx.default_scale()).unwrap();
    let mut kg = f.ctx.key_generator().unwrap();
    let sk = kg.secret_key();
    f.ctx.sk_encryptor(&sk).unwrap().encrypt(&pt)
}

fn engine_host(f: &Fixture) -> Engine<HostExec> {
    let rlwe = f.ctx.rlwe();
    let tables = Arc::new(NttTables::new(rlwe.ring()));
    Engine::new(HostExec::new(tables), rlwe.clone())
}

/// Every operation of `engine` against the evaluator at `level`.
pub(super) fn check_against_cpu<E: Exec>(engine: &Engine<E>, f: &Fixture, level: usize) {
    let rlwe = f.ctx.rlwe();
    let ct = ciphertext(f, level, level as u8);
    let dev = engine.upload_ct(&ct).unwrap();
    let mut elements: Vec<u64> = f
        .steps
        .iter()
        .map(|&k| rlwe.galois_element_for_rotation(k))
        .collect();
    elements.push(rlwe.galois_element_conjugate());
    let keys: Vec<_> = elements
        .iter()
        .map(|&g| engine.upload_key(&f.gk.get(g).unwrap().key).unwrap())
        .collect();
    for (&g, key) in elements.iter().zip(&keys) {
        let want = f.eval.apply_galois(&ct, g).unwrap();
        let got = engine
            .download_ct(&engine.apply_galois(&dev, g, key).unwrap())
            .unwrap();
        assert_eq!(got, want, "X -> X^{g} at level {level}");
    }
    let want = f.eval.rotate_hoisted(&ct, &f.steps).unwrap();
    let pairs: Vec<(u64, &DevSwitchingKey<E::Buf>)> = elements[..f.steps.len()]
        .iter()
        .copied()
        .zip(&keys)
        .collect();
    let got = engine.apply_galois_hoisted(&dev, &pairs).unwrap();
    for ((w, g), k) in want.iter().zip(&got).zip(&f.steps) {
        assert_eq!(&engine.download_ct(g).unwrap(), w, "hoisted {k} at {level}");
    }
    // a sum of rotations of several ciphertexts, one of them unrotated
    let cts: Vec<Ciphertext> = (0..=f.steps.len())
        .map(|i| ciphertext(f, level, 50 + i as u8))
        .collect();
    let mut steps = f.steps.clone();
    steps.push(0);
    let want = f.eval.rotate_sum(&cts, &steps).unwrap();
    let devs: Vec<_> = cts.iter().map(|c| engine.upload_ct(c).unwrap()).collect();
    let mut terms: Vec<GaloisTerm<'_, E::Buf>> = devs[..f.steps.len()]
        .iter()
        .zip(&elements)
        .zip(&keys)
        .map(|((d, &g), k)| (d, g, Some(k)))
        .collect();
    terms.push((&devs[f.steps.len()], 1, None));
    let got = engine.apply_galois_sum(&terms).unwrap();
    assert_eq!(
        engine.download_ct(&got).unwrap(),
        want,
        "rotation sum at {level}"
    );
    let other = ciphertext(f, level, 100 + level as u8);
    let rlk = engine.upload_key(&f.rlk.0).unwrap();
    let want = f.eval.mul_relin(&ct, &other).unwrap();
    let got = engine
        .mul_relin(&dev, &engine.upload_ct(&other).unwrap(), &rlk)
        .unwrap();
    assert_eq!(
        engine.download_ct(&got).unwrap(),
        want,
        "mul_relin at {level}"
    );
    check_slotwise(engine, f, &ct, &other, &rlk);
    if level >= 2 {
        let want = f.eval.rescale(&ct).unwrap();
        let got = engine
            .download_ct(&engine.rescale(engine.upload_ct(&ct).unwrap()).unwrap())
            .unwrap();
        assert_eq!(got.parts, want.parts, "rescale at {level}");
        assert_eq!(got.scale, want.scale);
    }
}

/// The slot-wise operations of [`super::arith`] and the degree-2 path (tensor, rescale of three
/// parts, relinearization) against the evaluator: every word is fully reduced, so a sum of
/// products equals the evaluator's products added one by one.
fn check_slotwise<E: Exec>(
    engine: &Engine<E>,
    f: &Fixture,
    ct: &Ciphertext,
    other: &Ciphertext,
    rlk: &DevSwitchingKey<E::Buf>,
) {
    let e = &f.eval;
    let level = ct.level();
    let (a, b) = (
        engine.upload_ct(ct).unwrap(),
        engine.upload_ct(other).unwrap(),
    );
    let down = |x: &DevCiphertext<E::Buf>| engine.download_ct(x).unwrap();

    let mut want = e.mul(ct, other).unwrap();
    let mut got = engine.mul(&a, &b).unwrap();
    assert_eq!(down(&got), want, "tensor at {level}");
    if level >= 2 {
        e.rescale_assign(&mut want).unwrap();
        got = engine.rescale(got).unwrap();
        assert_eq!(down(&got), want, "rescale of degree 2 at {level}");
    }
    let want = e.relinearize(&want).unwrap();
    assert_eq!(
        down(&engine.relinearize(got, rlk).unwrap()),
        want,
        "relinearize"
    );

    let q = f.ctx.rlwe().q_modulus(level - 1).value() as f64;
    let want = e.mul_const(ct, -0.37, q).unwrap();
    let got = engine
        .mul_const(engine.copy(&a).unwrap(), -0.37, q)
        .unwrap();
    assert_eq!(down(&got), want, "mul_const at {level}");
    let want = e.add_const(ct, Complex::new(-1.25, 0.0)).unwrap();
    let mut got = engine.copy(&a).unwrap();
    engine.add_real_const(&mut got, -1.25).unwrap();
    assert_eq!(down(&got), want, "add_real_const at {level}");

    let slots = f.ctx.n() / 2;
    let pts: Vec<_> = (0..3)
        .map(|j| {
            let v: Vec<f64> = (0..slots)
                .map(|i| ((i * 7 + j) % 11) as f64 / 11.0 - 0.5)
                .collect();
            f.ctx
                .encode_reals(&v, level, f.ctx.default_scale())
                .unwrap()
        })
        .collect();
    // 40 products: more than one launch takes on a device
    let (xs, devs): (Vec<&Ciphertext>, Vec<_>) = (0..40)
        .map(|i| if i % 3 == 1 { (other, &b) } else { (ct, &a) })
        .unzip();
    let mut want = e.mul_plain(xs[0], &pts[0]).unwrap();
    for (i, x) in xs.iter().enumerate().skip(1) {
        want = e.add(&want, &e.mul_plain(x, &pts[i % 3]).unwrap()).unwrap();
    }
    let dev_pts: Vec<_> = pts
        .iter()
        .map(|p| engine.upload_plain(p).unwrap())
        .collect();
    let ws: Vec<_> = (0..40).map(|i| &dev_pts[i % 3]).collect();
    let got = engine.dot_plain(&devs, &ws).unwrap();
    assert_eq!(down(&got), want, "dot_plain at {level}");
    let mut got = engine.copy(&a).unwrap();
    engine.add_plain_assign(&mut got, &dev_pts[1]).unwrap();
    assert_eq!(down(&got), e.add_plain(ct, &pts[1]).unwrap(), "add_plain");
    let mut sum = engine.copy(&a).unwrap();
    engine.add_assign(&mut sum, &b).unwrap();
    assert_eq!(down(&sum), e.add(ct, other).unwrap(), "add at {level}");

    let want = e
        .add(&e.mul(ct, other).unwrap(), &e.mul(other, other).unwrap())
        .unwrap();
    let got = engine.dot_cipher(&[&a, &b], &[&b, &b]).unwrap();
    assert_eq!(down(&got), want, "dot_cipher at {level}");
}

fn random_limbs(tables: &NttTables, limbs: &[usize], seed: u8) -> Vec<u64> {
    let mut prng = Prng::from_seed(&[seed; 32]);
    limbs
        .iter()
        .flat_map(|&idx| {
            let mut v = vec![0; tables.n()];
            prng.fill_uniform(tables.modulus(idx), &mut v);
            v
        })
        .collect()
}

#[test]
fn the_kernels_ntt_equals_tfhe_ntt_word_for_word() {
    let contexts = [
        small().ctx.clone(),
        CkksContext::new(Parameters::preset(crate::ckks::Preset::Inference)).unwrap(),
    ];
    for ctx in contexts {
        let ring = ctx.rlwe().ring();
        let tables = NttTables::new(ring);
        let n = ring.n();
        for idx in 0..ring.moduli().len() {
            let x = random_limbs(&tables, &[idx], idx as u8);
            let (mut ours, mut theirs) = (x.clone(), x.clone());
            tables.forward(idx, &mut ours);
            ring.ntt_limb(&mut theirs, idx);
            assert_eq!(ours, theirs, "forward, N = {n}, modulus {idx}");
            let mut back = ours.clone();
            tables.inverse(idx, &mut back, true);
            assert_eq!(back, x, "inverse, N = {n}, modulus {idx}");
            let mut p = Poly::from_data(n, ours.clone());
            ring.intt_unnormalized(&mut p, &[idx]);
            tables.inverse(idx, &mut ours, false);
            assert_eq!(ours, p.data(), "unnormalised inverse, modulus {idx}");
        }
    }
}

#[test]
fn the_host_engine_equals_the_cpu_evaluator_at_every_level() {
    let f = small();
    let engine = engine_host(f);
    for level in 1..=f.ctx.max_level() {
        check_against_cpu(&engine, f, level);
    }
}

#[test]
fn keys_of_other_parameters_and_degree_two_are_refused() {
    let f = small();
    let engine = engine_host(f);
    let other = Parameters::insecure_for_tests(10, &[60, 40, 40, 40, 40], &[60, 60], 5, 40.0)
        .map(|p| CkksContext::new(p).unwrap())
        .unwrap();
    let g = other.rlwe().galois_element_for_rotation(1);
    let theirs = fixture(other, vec![1]);
    let key = &theirs.gk.get(g).unwrap().key;
    assert!(matches!(engine.upload_key(key), Err(GpuError::ForeignKey)));
    let mut ct = ciphertext(f, 3, 1);
    ct.parts.push(ct.parts[0].clone());
    let two = engine.upload_ct(&ct).unwrap();
    let key = engine.upload_key(
        &f.gk
            .get(f.ctx.rlwe().galois_element_for_rotation(1))
            .unwrap()
            .key,
    );
    let g = f.ctx.rlwe().galois_element_for_rotation(1);
    assert!(matches!(
        engine.apply_galois(&two, g, &key.unwrap()),
        Err(GpuError::Degree(2))
    ));
    assert!(matches!(engine.mul(&two, &two), Err(GpuError::Degree(2))));
    ct.parts.push(ct.parts[0].clone());
    assert!(matches!(engine.upload_ct(&ct), Err(GpuError::Degree(3))));
    let one = engine.upload_ct(&ciphertext(f, 1, 2)).unwrap();
    assert!(matches!(engine.rescale(one), Err(GpuError::Level(1, _))));
}

#[cfg(feature = "cuda")]
mod device {
    use super::*;

    fn open(ctx: &CkksContext, split: bool) -> Option<Engine<CudaExec>> {
        let tables = NttTables::new(ctx.rlwe().ring());
        match CudaExec::open(0, &tables, split) {
            Ok(e) => Some(Engine::new(e, ctx.rlwe().clone())),
            Err(e) => {
                println!("skipped: no CUDA device ({e})");
                None
            }
        }
    }

    #[test]
    fn batched_ntts_on_the_device_equal_the_reference() {
        for split in [false, true] {
            let ctx = CkksContext::new(Parameters::preset(crate::ckks::Preset::Inference)).unwrap();
            let Some(engine) = open(&ctx, split) else {
                return;
            };
            let tables = NttTables::new(ctx.rlwe().ring());
            let host = HostExec::new(Arc::new(tables.clone()));
            let moduli: Vec<usize> = (0..tables_len(&ctx)).chain([0, 3, 8]).collect();
            let words = random_limbs(&tables, &moduli, 9);
            let jobs: Vec<LimbJob> = moduli
                .iter()
                .enumerate()
                .map(|(i, &m)| LimbJob {
                    limb: i as u32,
                    modulus: m as u32,
                })
                .collect();
            let e = engine.exec();
            let mut d = e.upload(&words).unwrap();
            let mut h = words.clone();
            e.ntt(&mut d, &jobs).unwrap();
            host.ntt(&mut h, &jobs).unwrap();
            assert_eq!(e.download(&d).unwrap(), h, "forward, split = {split}");
            for normalize in [false, true] {
                e.intt(&mut d, &jobs, normalize).unwrap();
                host.intt(&mut h, &jobs, normalize).unwrap();
                assert_eq!(
                    e.download(&d).unwrap(),
                    h,
                    "inverse {normalize}, split {split}"
                );
            }
        }
    }

    fn tables_len(ctx: &CkksContext) -> usize {
        ctx.rlwe().ring().moduli().len()
    }

    #[test]
    fn the_device_engine_equals_the_cpu_evaluator() {
        let f = small();
        let Some(engine) = open(&f.ctx, false) else {
            return;
        };
        println!("device: {}", engine.exec().name());
        for level in 1..=f.ctx.max_level() {
            check_against_cpu(&engine, f, level);
        }
        // N = 2^14: both NTT paths (one block per limb, and split over many blocks)
        let inference = fixture(
            CkksContext::new(Parameters::preset(crate::ckks::Preset::Inference)).unwrap(),
            vec![1, 64],
        );
        for split in [false, true] {
            let Some(engine) = open(&inference.ctx, split) else {
                return;
            };
            for level in [7, 4, 2] {
                check_against_cpu(&engine, &inference, level);
            }
        }
    }
}
