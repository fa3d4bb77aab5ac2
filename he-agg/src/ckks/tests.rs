//! Every homomorphic operation against the same arithmetic on plaintext slots.

use std::sync::{Arc, OnceLock};

use proptest::prelude::*;

use super::*;
use crate::ring::Prng;

struct Fixture {
    ctx: Arc<CkksContext>,
    sk: SecretKey,
    pk: PublicKey,
    eval: Evaluator,
}

/// N = 2^10 (insecure, for speed), four levels, two digits.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let params =
            Parameters::insecure_for_tests(10, &[60, 40, 40, 40], &[60, 60], 2, 40.0).unwrap();
        let ctx = CkksContext::new(params).unwrap();
        let mut kg = ctx.key_generator().unwrap();
        let sk = kg.secret_key();
        let pk = kg.public_key(&sk);
        let rlk = kg.relinearization_key(&sk);
        let steps: Vec<i64> = (-8..=8).chain([100, 255, -200]).collect();
        let gk = kg.galois_keys(&sk, &steps, true);
        let eval = ctx.evaluator(Some(&rlk), Some(&gk)).unwrap();
        Fixture { ctx, sk, pk, eval }
    })
}

fn random_values(seed: u64, len: usize) -> Vec<Complex> {
    let mut prng = Prng::from_seed(&[seed as u8; 32]);
    let mut u = || (prng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
    (0..len).map(|_| Complex::new(u(), u())).collect()
}

fn encrypt(f: &Fixture, v: &[Complex], level: usize) -> Ciphertext {
    let pt = f.ctx.encode(v, level, f.ctx.default_scale()).unwrap();
    f.ctx.pk_encryptor(&f.pk).unwrap().encrypt(&pt)
}

fn decrypt(f: &Fixture, ct: &Ciphertext) -> Vec<Complex> {
    f.ctx
        .decode(&f.ctx.decryptor(&f.sk).unwrap().decrypt(ct))
        .unwrap()
}

fn max_err(a: &[Complex], b: &[Complex]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x - *y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn encode_decode_round_trip() {
    let f = fixture();
    let v = random_values(1, f.ctx.slots());
    for level in 1..=f.ctx.max_level() {
        let pt = f.ctx.encode(&v, level, f.ctx.default_scale()).unwrap();
        let back = f.ctx.decode(&pt).unwrap();
        let err = max_err(&v, &back);
        // rounding to integers at scale 2^40: error ≈ √N·2^-40
        assert!(err < 1e-10, "level {level}: {err}");
    }
    let reals: Vec<f64> = (0..f.ctx.n()).map(|i| (i as f64 * 0.01).sin()).collect();
    let pt = f
        .ctx
        .encode_real_pairs(&reals, 2, f.ctx.default_scale())
        .unwrap();
    let back = f.ctx.decode_real_pairs(&pt).unwrap();
    let err = reals
        .iter()
        .zip(&back)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(err < 1e-10, "pairs {err}");
}

#[test]
fn crt_lift_is_exact_at_every_level_and_magnitude() {
    let f = fixture();
    let rlwe = f.ctx.rlwe();
    let n = f.ctx.n();
    let mut prng = Prng::from_seed(&[11; 32]);
    for level in 1..=f.ctx.max_level() {
        let log_q = f.ctx.log_q(level);
        for bits in [1u32, 20, 52, 80, 110, 125] {
            if bits as f64 >= log_q - 1.0 {
                continue;
            }
            let xs: Vec<i128> = (0..n)
                .map(|_| {
                    let r =
                        ((prng.next_u64() as u128) << 64 | prng.next_u64() as u128) >> (128 - bits);
                    if prng.next_u64() & 1 == 1 {
                        -(r as i128)
                    } else {
                        r as i128
                    }
                })
                .collect();
            let mut poly = crate::ring::Poly::zero(n, level);
            for i in 0..level {
                let m = rlwe.q_modulus(i);
                for (o, &x) in poly.limb_mut(i).iter_mut().zip(&xs) {
                    *o = m.reduce_i128(x);
                }
            }
            for is_ntt in [false, true] {
                let mut pt = Plaintext {
                    poly: poly.clone(),
                    scale: 1.0,
                    is_ntt: false,
                };
                if is_ntt {
                    rlwe.ring().ntt(&mut pt.poly, rlwe.q_basis(level));
                    pt.is_ntt = true;
                }
                let got = f.ctx.lift_coefficients(&pt);
                for (g, &x) in got.iter().zip(&xs) {
                    let want = x as f64;
                    assert!(
                        (g - want).abs() <= want.abs() * 2f64.powi(-50),
                        "level {level}, 2^{bits}: {g} vs {want}"
                    );
                }
            }
        }
    }
}

#[test]
fn encoding_refuses_what_it_cannot_represent() {
    let f = fixture();
    let s = f.ctx.default_scale();
    let too_many = vec![Complex::default(); f.ctx.slots() + 1];
    assert!(matches!(
        f.ctx.encode(&too_many, 1, s),
        Err(CkksError::TooManyValues { .. })
    ));
    assert!(matches!(
        f.ctx.encode(&[Complex::new(f64::NAN, 0.0)], 1, s),
        Err(CkksError::NotFinite { index: 0 })
    ));
    // 2^30 · 2^40 does not fit under q_0 ≈ 2^60 at level 1
    assert!(matches!(
        f.ctx.encode(&[Complex::new(2f64.powi(30), 0.0)], 1, s),
        Err(CkksError::Overflow { level: 1, .. })
    ));
    // but does at level 2 (100 bits), through the large-coefficient path
    let v = [Complex::new(2f64.powi(30), -3.5)];
    let back = f.ctx.decode(&f.ctx.encode(&v, 2, s).unwrap()).unwrap();
    assert!((back[0].re - 2f64.powi(30)).abs() < 1e-3 && (back[0].im + 3.5).abs() < 1e-3);
    assert!(matches!(
        f.ctx.encode(&v, 0, s),
        Err(CkksError::Level { .. })
    ));
    assert!(matches!(
        f.ctx.encode(&v, 5, s),
        Err(CkksError::Level { .. })
    ));
}

#[test]
fn encryption_precision_in_bits() {
    let f = fixture();
    let v = random_values(2, f.ctx.slots());
    let ct = encrypt(f, &v, f.ctx.max_level());
    let err = max_err(&v, &decrypt(f, &ct));
    let bits = -err.log2();
    eprintln!("public-key encryption at scale 2^40, N = 2^10: {bits:.1} bits of precision");
    assert!(bits > 25.0, "only {bits:.1} bits");
    let pt = f.ctx.encode(&v, 2, f.ctx.default_scale()).unwrap();
    let ct = f.ctx.sk_encryptor(&f.sk).unwrap().encrypt(&pt);
    let bits_sk = -max_err(&v, &decrypt(f, &ct)).log2();
    eprintln!("secret-key encryption: {bits_sk:.1} bits of precision");
    assert!(bits_sk > 28.0);
}

#[test]
fn fresh_noise_matches_its_expected_size() {
    // the slot error of a fresh public-key encryption is the canonical embedding of
    // e = u·e_pk + e_0 + e_1·s: each slot a sum of ≈ N terms of variance (2N/3)σ²·(1/N)…
    // expected standard deviation per slot ≈ σ·√(N·(2N/3 + 1 + 2N/3)) / Δ.
    let f = fixture();
    let n = f.ctx.n() as f64;
    let v = vec![Complex::default(); f.ctx.slots()];
    let mut errs = Vec::new();
    for _ in 0..4 {
        let ct = encrypt(f, &v, 1);
        errs.extend(decrypt(f, &ct).iter().map(|z| z.re));
    }
    let sd = (errs.iter().map(|x| x * x).sum::<f64>() / errs.len() as f64).sqrt();
    let expected = 3.2 * (n * (4.0 * n / 3.0 + 1.0)).sqrt() / f.ctx.default_scale();
    let ratio = sd / expected;
    eprintln!("fresh noise: measured σ {sd:.3e}, expected {expected:.3e} (ratio {ratio:.2})");
    assert!((0.5..2.0).contains(&ratio), "ratio {ratio}");
}

#[test]
fn scales_must_match() {
    let f = fixture();
    let v = random_values(3, 4);
    let a = encrypt(f, &v, 3);
    let b = f.eval.rescale(&f.eval.mul_relin(&a, &a).unwrap()).unwrap();
    assert!(matches!(
        f.eval.add(&a, &b),
        Err(CkksError::ScaleMismatch { .. })
    ));
    let pt = f.ctx.encode(&v, 3, 2f64.powi(30)).unwrap();
    assert!(matches!(
        f.eval.add_plain(&a, &pt),
        Err(CkksError::ScaleMismatch { .. })
    ));
    let last = encrypt(f, &v, 1);
    assert_eq!(f.eval.rescale(&last).unwrap_err(), CkksError::LastLevel);
    let no_keys = f.ctx.evaluator(None, None).unwrap();
    assert_eq!(
        no_keys
            .relinearize(&f.eval.mul(&a, &a).unwrap())
            .unwrap_err(),
        CkksError::MissingRelinearizationKey
    );
    assert!(matches!(
        no_keys.rotate(&a, 1),
        Err(CkksError::MissingGaloisKey(_))
    ));
    assert!(matches!(
        f.eval.rotate(&a, 9),
        Err(CkksError::MissingGaloisKey(_))
    ));
}

#[test]
fn keys_of_other_parameters_are_refused() {
    let f = fixture();
    let other =
        CkksContext::new(Parameters::insecure_for_tests(10, &[60, 40], &[60], 2, 40.0).unwrap())
            .unwrap();
    let mut kg = other.key_generator().unwrap();
    let sk = kg.secret_key();
    let rlk = kg.relinearization_key(&sk);
    assert!(matches!(
        f.ctx.evaluator(Some(&rlk), None),
        Err(CkksError::ForeignKey { .. })
    ));
    assert!(matches!(
        f.ctx.decryptor(&sk),
        Err(CkksError::ForeignKey { .. })
    ));
}

#[test]
fn chain_to_the_last_level() {
    // x ↦ x² three times, rescaling each time: four levels down to one
    let f = fixture();
    let v: Vec<Complex> = random_values(4, f.ctx.slots())
        .iter()
        .map(|z| z.scale(0.9))
        .collect();
    let mut ct = encrypt(f, &v, f.ctx.max_level());
    let mut want = v.clone();
    for _ in 0..3 {
        ct = f
            .eval
            .rescale(&f.eval.mul_relin(&ct, &ct).unwrap())
            .unwrap();
        want = want.iter().map(|z| *z * *z).collect();
    }
    assert_eq!(ct.level(), 1);
    let err = max_err(&want, &decrypt(f, &ct));
    assert!(err < 1e-5, "error {err}");
}

#[test]
fn hoisted_rotations_equal_single_rotations() {
    let f = fixture();
    let v = random_values(5, f.ctx.slots());
    let ct = encrypt(f, &v, 3);
    let steps = [1i64, 2, -3, 0, 8, 100];
    let hoisted = f.eval.rotate_hoisted(&ct, &steps).unwrap();
    for (&k, h) in steps.iter().zip(&hoisted) {
        let single = decrypt(f, &f.eval.rotate(&ct, k).unwrap());
        let got = decrypt(f, h);
        assert!(max_err(&single, &got) < 1e-7, "step {k}");
        let slots = f.ctx.slots() as i64;
        let want: Vec<Complex> = (0..slots)
            .map(|j| v[(j + k).rem_euclid(slots) as usize])
            .collect();
        assert!(max_err(&want, &got) < 1e-6, "step {k}");
    }
}

#[test]
fn a_sum_of_rotations_with_one_division_by_p() {
    let f = fixture();
    let slots = f.ctx.slots() as i64;
    let steps = [0i64, 1, -3, 100];
    let vs: Vec<Vec<Complex>> = (0..4)
        .map(|i| random_values(20 + i, slots as usize))
        .collect();
    let cts: Vec<Ciphertext> = vs.iter().map(|v| encrypt(f, v, 3)).collect();
    let got = decrypt(f, &f.eval.rotate_sum(&cts, &steps).unwrap());
    let want: Vec<Complex> = (0..slots)
        .map(|j| {
            vs.iter()
                .zip(steps)
                .map(|(v, k)| v[(j + k).rem_euclid(slots) as usize])
                .fold(Complex::new(0.0, 0.0), |a, b| a + b)
        })
        .collect();
    assert!(max_err(&want, &got) < 1e-6, "{}", max_err(&want, &got));
    // one term: the division by P of one inner product is the rotation's own, word for word
    let one = f.eval.rotate_sum(&cts[1..2], &[-3]).unwrap();
    assert_eq!(one.parts, f.eval.rotate(&cts[1], -3).unwrap().parts);
    let same = f.eval.rotate_sum(&cts[..1], &[0]).unwrap();
    assert_eq!(same.parts, cts[0].parts);
    // refused: counts that differ, levels that differ, a step without a key
    assert!(matches!(
        f.eval.rotate_sum(&cts, &steps[..3]),
        Err(CkksError::RotationCount {
            ciphertexts: 4,
            steps: 3
        })
    ));
    let low = [cts[0].clone(), encrypt(f, &vs[1], 2)];
    assert!(matches!(
        f.eval.rotate_sum(&low, &[1, 2]),
        Err(CkksError::LevelMismatch { a: 3, b: 2 })
    ));
    assert!(matches!(
        f.eval.rotate_sum(&cts[..1], &[9]),
        Err(CkksError::MissingGaloisKey(_))
    ));
}

fn ops_config() -> ProptestConfig {
    ProptestConfig {
        cases: 24,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(ops_config())]

    #[test]
    fn add_sub_neg_match_slots(seed in any::<u64>(), la in 1usize..=4, lb in 1usize..=4) {
        let f = fixture();
        let (x, y) = (random_values(seed, f.ctx.slots()), random_values(seed ^ 1, f.ctx.slots()));
        let (a, b) = (encrypt(f, &x, la), encrypt(f, &y, lb));
        let sum = f.eval.add(&a, &b).unwrap();
        prop_assert_eq!(sum.level(), la.min(lb));
        let want: Vec<Complex> = x.iter().zip(&y).map(|(p, q)| *p + *q).collect();
        prop_assert!(max_err(&want, &decrypt(f, &sum)) < 1e-7);
        let diff = f.eval.sub(&a, &b).unwrap();
        let want: Vec<Complex> = x.iter().zip(&y).map(|(p, q)| *p - *q).collect();
        prop_assert!(max_err(&want, &decrypt(f, &diff)) < 1e-7);
        let neg = f.eval.neg(&a).unwrap();
        let want: Vec<Complex> = x.iter().map(|p| p.scale(-1.0)).collect();
        prop_assert!(max_err(&want, &decrypt(f, &neg)) < 1e-7);
        let mut acc = a.clone();
        f.eval.add_assign(&mut acc, &b).unwrap();
        let want: Vec<Complex> = x.iter().zip(&y).map(|(p, q)| *p + *q).collect();
        prop_assert!(max_err(&want, &decrypt(f, &acc)) < 1e-7);
    }

    #[test]
    fn multiply_relinearize_rescale_match_slots(seed in any::<u64>(), level in 2usize..=4) {
        let f = fixture();
        let (x, y) = (random_values(seed, f.ctx.slots()), random_values(seed ^ 2, f.ctx.slots()));
        let (a, b) = (encrypt(f, &x, level), encrypt(f, &y, level));
        let prod = f.eval.mul(&a, &b).unwrap();
        prop_assert_eq!(prod.degree(), 2);
        let want: Vec<Complex> = x.iter().zip(&y).map(|(p, q)| *p * *q).collect();
        // degree 2 decrypts directly too
        prop_assert!(max_err(&want, &decrypt(f, &prod)) < 1e-6);
        let r = f.eval.rescale(&f.eval.relinearize(&prod).unwrap()).unwrap();
        prop_assert_eq!(r.level(), level - 1);
        prop_assert!(max_err(&want, &decrypt(f, &r)) < 1e-6);
    }

    #[test]
    fn plaintext_and_constant_operations_match_slots(seed in any::<u64>(), level in 2usize..=4, c in -4.0f64..4.0, k in -1000i64..1000) {
        let f = fixture();
        let (x, y) = (random_values(seed, f.ctx.slots()), random_values(seed ^ 3, f.ctx.slots()));
        let a = encrypt(f, &x, level);
        let s = f.ctx.default_scale();
        let pt = f.ctx.encode(&y, level, s).unwrap();
        let want: Vec<Complex> = x.iter().zip(&y).map(|(p, q)| *p + *q).collect();
        prop_assert!(max_err(&want, &decrypt(f, &f.eval.add_plain(&a, &pt).unwrap())) < 1e-7);
        let want: Vec<Complex> = x.iter().zip(&y).map(|(p, q)| *p - *q).collect();
        prop_assert!(max_err(&want, &decrypt(f, &f.eval.sub_plain(&a, &pt).unwrap())) < 1e-7);
        let m = f.eval.rescale(&f.eval.mul_plain(&a, &pt).unwrap()).unwrap();
        let want: Vec<Complex> = x.iter().zip(&y).map(|(p, q)| *p * *q).collect();
        prop_assert!(max_err(&want, &decrypt(f, &m)) < 1e-6);
        let cz = Complex::new(c, -c / 2.0);
        let want: Vec<Complex> = x.iter().map(|p| *p + cz).collect();
        prop_assert!(max_err(&want, &decrypt(f, &f.eval.add_const(&a, cz).unwrap())) < 1e-7);
        let mc = f.eval.rescale(&f.eval.mul_const(&a, c, s).unwrap()).unwrap();
        let want: Vec<Complex> = x.iter().map(|p| p.scale(c)).collect();
        prop_assert!(max_err(&want, &decrypt(f, &mc)) < 1e-6);
        let mi = f.eval.mul_int(&a, k).unwrap();
        let want: Vec<Complex> = x.iter().map(|p| p.scale(k as f64)).collect();
        prop_assert!(max_err(&want, &decrypt(f, &mi)) < 1e-4);
        let dropped = f.eval.drop_levels(&a, level - 1).unwrap();
        prop_assert_eq!(dropped.level(), 1);
        prop_assert!(max_err(&x, &decrypt(f, &dropped)) < 1e-7);
    }

    #[test]
    fn rotation_and_conjugation_match_slots(seed in any::<u64>(), level in 1usize..=4, step in -8i64..=8) {
        let f = fixture();
        let x = random_values(seed, f.ctx.slots());
        let a = encrypt(f, &x, level);
        let slots = f.ctx.slots() as i64;
        let r = f.eval.rotate(&a, step).unwrap();
        let want: Vec<Complex> = (0..slots).map(|j| x[(j + step).rem_euclid(slots) as usize]).collect();
        prop_assert!(max_err(&want, &decrypt(f, &r)) < 1e-6);
        let c = f.eval.conjugate(&a).unwrap();
        let want: Vec<Complex> = x.iter().map(|p| p.conj()).collect();
        prop_assert!(max_err(&want, &decrypt(f, &c)) < 1e-6);
    }
}
