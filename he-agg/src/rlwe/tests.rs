use std::sync::Arc;

use super::*;
use crate::ring::{Poly, Prng};

fn ctx(q_bits: &[u32], p_bits: &[u32], dnum: usize) -> Arc<RlweContext> {
    let (q, p) = RlweParams::primes_for(10, q_bits, p_bits).unwrap();
    RlweContext::new(RlweParams::insecure_for_tests(10, q, p, dnum).unwrap()).unwrap()
}

/// The centred coefficients of a small polynomial (coefficient form), checking that every limb
/// agrees, i.e. that the value really is small.
fn small_coeffs(ctx: &RlweContext, p: &Poly) -> Vec<i64> {
    let m0 = ctx.q_modulus(0);
    let v: Vec<i64> = p.limb(0).iter().map(|&x| m0.center(x)).collect();
    for i in 1..p.limbs() {
        let m = ctx.q_modulus(i);
        for (k, &x) in p.limb(i).iter().enumerate() {
            assert_eq!(m.center(x), v[k], "limb {i} coefficient {k} is not small");
        }
    }
    v
}

/// The centred coefficients of a decryption (NTT domain), which must be small.
fn decrypted_coeffs(ctx: &RlweContext, pt: &Plaintext) -> Vec<i64> {
    let mut p = pt.poly.clone();
    if pt.is_ntt {
        let level = p.limbs();
        ctx.ring().intt(&mut p, ctx.q_basis(level));
    }
    small_coeffs(ctx, &p)
}

fn max_abs(v: &[i64]) -> i64 {
    v.iter().map(|x| x.abs()).max().unwrap_or(0)
}

fn small_message(ctx: &RlweContext, level: usize, seed: u8) -> (Vec<i64>, Plaintext) {
    let mut prng = Prng::from_seed(&[seed; 32]);
    let m: Vec<i64> = (0..ctx.n())
        .map(|_| (prng.next_u64() % 2001) as i64 - 1000)
        .collect();
    let poly = ctx.ring().from_signed(&m, ctx.q_basis(level));
    (
        m,
        Plaintext {
            poly,
            scale: 1.0,
            is_ntt: false,
        },
    )
}

#[test]
fn public_and_secret_key_encryption_decrypt_with_small_noise() {
    let ctx = ctx(&[50, 40, 40], &[55], 3);
    let mut kg = KeyGenerator::new(&ctx).unwrap();
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let dec = Decryptor::new(&ctx, &sk);
    let mut pke = PkEncryptor::new(&ctx, &pk).unwrap();
    let mut ske = SkEncryptor::new(&ctx, &sk).unwrap();
    let n = ctx.n() as f64;
    for level in 1..=3 {
        let (m, pt) = small_message(&ctx, level, level as u8);
        let ct = pke.encrypt(&pt);
        assert_eq!(ct.level(), level);
        let got = decrypted_coeffs(&ctx, &dec.decrypt(&ct));
        let noise: Vec<i64> = got.iter().zip(&m).map(|(a, b)| a - b).collect();
        // e_pk·u + e_0 + e_1·s: each term a sum of ≈ 2N/3 products bounded by 19; 6 std devs of
        // the dominant terms is far below this bound
        let bound = (12.0 * 3.2 * (2.0 * n / 3.0).sqrt() + 19.0) as i64;
        assert!(
            max_abs(&noise) < bound,
            "pk noise {} ≥ {bound}",
            max_abs(&noise)
        );
        assert!(max_abs(&noise) > 0, "noise must be present");

        let ct = ske.encrypt(&pt);
        let got = decrypted_coeffs(&ctx, &dec.decrypt(&ct));
        let noise: Vec<i64> = got.iter().zip(&m).map(|(a, b)| a - b).collect();
        assert!(max_abs(&noise) <= 19, "sk noise is one Gaussian sample");
        // NTT-domain plaintexts encrypt the same
        let mut pt_ntt = pt.clone();
        ctx.ring().ntt(&mut pt_ntt.poly, ctx.q_basis(level));
        pt_ntt.is_ntt = true;
        let got = decrypted_coeffs(&ctx, &dec.decrypt(&ske.encrypt(&pt_ntt)));
        assert!(got.iter().zip(&m).all(|(a, b)| (a - b).abs() <= 19));
    }
}

#[test]
fn seeded_ciphertext_expands_to_the_same() {
    let ctx = ctx(&[50, 40], &[55], 2);
    let mut kg = KeyGenerator::new(&ctx).unwrap();
    let sk = kg.secret_key();
    let mut ske = SkEncryptor::new(&ctx, &sk).unwrap();
    let (m, pt) = small_message(&ctx, 2, 9);
    let seeded = ske.encrypt_seeded(&pt);
    let full = expand_seeded(&ctx, &seeded);
    let got = decrypted_coeffs(&ctx, &Decryptor::new(&ctx, &sk).decrypt(&full));
    assert!(got.iter().zip(&m).all(|(a, b)| (a - b).abs() <= 19));
}

#[test]
fn key_switching_is_correct_for_every_digit_count_and_level() {
    for (dnum, p_bits) in [
        (1usize, vec![60u32, 60, 60]),
        (2, vec![60, 60]),
        (3, vec![55]),
    ] {
        let ctx = ctx(&[50, 40, 40], &p_bits, dnum);
        let mut kg = KeyGenerator::new(&ctx).unwrap();
        let sk = kg.secret_key();
        let other = kg.secret_key();
        let l = ctx.max_level();
        let s_from = other.poly.slice_limbs(0..l);
        let key = kg.switching_key(&s_from, &sk);
        for level in 1..=l {
            let basis = ctx.q_basis(level);
            let d = ctx
                .ring()
                .sample_uniform(&mut Prng::from_seed(&[level as u8; 32]), basis);
            let (ks0, ks1) = ctx.key_switch(&d, level, &key).unwrap();
            // ks0 + ks1·s - d·s' must be small
            let s = sk.poly.slice_limbs(0..level);
            let sp = other.poly.slice_limbs(0..level);
            let ring = ctx.ring();
            let mut lhs = ring.mul(&ks1, &s, basis);
            ring.add_assign(&mut lhs, &ks0, basis);
            let want = ring.mul(&d, &sp, basis);
            ring.sub_assign(&mut lhs, &want, basis);
            ring.intt(&mut lhs, basis);
            let noise = max_abs(&small_coeffs(&ctx, &lhs));
            // noise ≈ (Q_digit/P)·N·σ + N/2 from rounding: tiny against 2^40
            assert!(noise < 1 << 25, "dnum {dnum} level {level}: noise {noise}");
        }
    }
}

/// The double-precision kernels of the key switch (AVX2, primes below 2^51) and the 128-bit
/// ones give the same words: a key switch at every SIMD level this CPU has, four digits and
/// two, special primes of 44 and 51 bits (double precision) and of 55 (128-bit).
#[test]
fn a_key_switch_gives_the_same_words_at_every_level() {
    use crate::simd::{Level, level, set_level};
    let before = level();
    for (dnum, p_bits) in [(4usize, vec![44u32, 44]), (2, vec![51, 51]), (4, vec![55])] {
        let ctx = ctx(&[51, 40, 40, 40], &p_bits, dnum);
        let mut kg = KeyGenerator::new(&ctx).unwrap();
        let sk = kg.secret_key();
        let other = kg.secret_key();
        let l = ctx.max_level();
        let key = kg.switching_key(&other.poly.slice_limbs(0..l), &sk);
        let d = ctx
            .ring()
            .sample_uniform(&mut Prng::from_seed(&[dnum as u8; 32]), ctx.q_basis(l));
        let mut seen: Option<(Poly, Poly)> = None;
        for at in Level::supported() {
            set_level(at).unwrap();
            let got = ctx.key_switch(&d, l, &key).unwrap();
            match &seen {
                None => seen = Some(got),
                Some(want) => assert!(
                    got == *want,
                    "dnum {dnum}, P {p_bits:?}: {at} differs from the lowest level"
                ),
            }
        }
    }
    set_level(before).unwrap();
}

#[test]
fn key_switching_needs_special_primes_and_matching_keys() {
    let ctx_np = ctx(&[50, 40], &[], 1);
    let d = ctx_np.ring().zero(2);
    assert_eq!(
        ctx_np.decompose(&d, 2).unwrap_err(),
        KeySwitchError::NoSpecialPrimes
    );
    let a = ctx(&[50, 40], &[55], 2);
    let b = ctx(&[50, 40], &[56], 2);
    let mut kg = KeyGenerator::new(&b).unwrap();
    let sk = kg.secret_key();
    let rlk = kg.relinearization_key(&sk);
    let d = a.ring().zero(2);
    assert_eq!(
        a.key_switch(&d, 2, &rlk.0).unwrap_err(),
        KeySwitchError::ForeignKey
    );
}

#[test]
fn secret_key_is_not_printed() {
    let ctx = ctx(&[50], &[], 1);
    let sk = KeyGenerator::new(&ctx).unwrap().secret_key();
    let shown = format!("{sk:?}");
    assert_eq!(shown, "SecretKey(<redacted>)");
}

#[test]
fn a_clone_of_galois_keys_shares_them() {
    // a served requester's keys (hundreds of megabytes) go into an evaluator per request: the
    // clone must not copy them
    let ctx = ctx(&[50, 40, 40], &[60, 60], 2);
    let mut kg = KeyGenerator::new(&ctx).unwrap();
    let sk = kg.secret_key();
    let keys = kg.galois_keys(&sk, &[1, 2, -3], true);
    let copy = keys.clone();
    assert_eq!(copy, keys);
    assert_eq!(copy.len(), 4);
    for e in keys.elements() {
        assert!(std::ptr::eq(keys.get(e).unwrap(), copy.get(e).unwrap()));
    }
}
