use super::*;
use proptest::prelude::*;

fn test_ring(n: usize, bits: &[u32]) -> Ring {
    let mut moduli: Vec<u64> = Vec::new();
    for &b in bits {
        let q = primes::generate_primes(b, n, 1, &moduli).unwrap()[0];
        moduli.push(q);
    }
    Ring::new(n, &moduli).unwrap()
}

fn random_poly(ring: &Ring, seed: u8, basis: &[usize]) -> Poly {
    ring.sample_uniform(&mut Prng::from_seed(&[seed; 32]), basis)
}

/// Schoolbook negacyclic product modulo one prime.
#[allow(clippy::needless_range_loop)]
fn negacyclic(m: &Modulus, a: &[u64], b: &[u64]) -> Vec<u64> {
    let n = a.len();
    let mut out = vec![0u64; n];
    for i in 0..n {
        for j in 0..n {
            let p = m.mul(a[i], b[j]);
            let k = i + j;
            if k < n {
                out[k] = m.add(out[k], p);
            } else {
                out[k - n] = m.sub(out[k - n], p);
            }
        }
    }
    out
}

#[test]
fn rejects_bad_rings() {
    assert_eq!(Ring::new(100, &[]).unwrap_err(), RingError::Degree(100));
    assert!(matches!(
        Ring::new(64, &[97]),
        Err(RingError::Modulus { .. })
    ));
    let q = primes::generate_primes(40, 64, 1, &[]).unwrap()[0];
    assert_eq!(Ring::new(64, &[q, q]).unwrap_err(), RingError::Duplicate(q));
}

#[test]
fn ntt_round_trip_and_product() {
    let ring = test_ring(64, &[60, 50, 40]);
    let basis = [0, 1, 2];
    let a = random_poly(&ring, 1, &basis);
    let b = random_poly(&ring, 2, &basis);
    let mut fa = a.clone();
    ring.ntt(&mut fa, &basis);
    let mut back = fa.clone();
    ring.intt(&mut back, &basis);
    assert_eq!(back, a);
    let mut fb = b.clone();
    ring.ntt(&mut fb, &basis);
    let mut prod = ring.mul(&fa, &fb, &basis);
    ring.intt(&mut prod, &basis);
    for i in 0..3 {
        assert_eq!(
            prod.limb(i),
            negacyclic(ring.modulus(i), a.limb(i), b.limb(i)).as_slice()
        );
    }
}

#[test]
fn galois_permutation_is_the_automorphism() {
    let n = 32;
    let ring = test_ring(n, &[50, 40]);
    let basis = [0, 1];
    let a = random_poly(&ring, 3, &basis);
    for g in [5u64, 25, 2 * n as u64 - 1, 3, 61] {
        // coefficient domain: X^k -> ±X^(k·g mod 2N)
        let mut expect = ring.zero(2);
        for (l, &bi) in basis.iter().enumerate() {
            let m = ring.modulus(bi);
            for k in 0..n {
                let e = (k as u64 * g) % (2 * n as u64);
                let v = a.limb(l)[k];
                if (e as usize) < n {
                    expect.limb_mut(l)[e as usize] = v;
                } else {
                    expect.limb_mut(l)[e as usize - n] = m.neg(v);
                }
            }
        }
        let mut fa = a.clone();
        ring.ntt(&mut fa, &basis);
        let mut got = ring.automorphism_ntt(&fa, g, &basis);
        ring.intt(&mut got, &basis);
        assert_eq!(got, expect, "g = {g}");
    }
}

#[test]
fn basis_extension_is_exact_up_to_a_small_multiple() {
    let ring = test_ring(32, &[60, 55, 50, 45]);
    let source = [0usize, 1];
    let ext = BasisExtender::new(&ring, &source);
    let x = random_poly(&ring, 4, &source);
    let out = ext.extend(&ring, &x, &[2, 3]);
    let (q0, q1) = (
        ring.modulus(0).value() as u128,
        ring.modulus(1).value() as u128,
    );
    let big_b = q0 * q1;
    for k in 0..32 {
        // CRT-compose x exactly (fits in u128)
        let m1 = ring.modulus(1);
        let a0 = x.limb(0)[k];
        let a1 = x.limb(1)[k];
        let t = m1.mul(
            m1.sub(a1, m1.reduce(a0)),
            m1.inv(m1.reduce(q0 as u64)).unwrap(),
        );
        let xv = a0 as u128 + q0 * t as u128;
        for (ti, target) in [2usize, 3].into_iter().enumerate() {
            let tm = ring.modulus(target);
            let got = out.limb(ti)[k];
            // got ≡ x + u·B for some u in {0, 1}
            let ok = (0..2u128).any(|u| {
                let v = xv + u * big_b;
                (v % tm.value() as u128) as u64 == got
            });
            assert!(ok, "coefficient {k} target {target}");
        }
    }
}

#[test]
fn basis_extension_by_shoup_terms_equals_the_128_bit_sums() {
    // two to four sources (the unrolled three and the general loop) onto targets of 40 to 60
    // bits; the extremes of every residue included
    let ring = test_ring(64, &[53, 53, 53, 53, 60, 59, 40, 50]);
    for m in 2..=4usize {
        let source: Vec<usize> = (0..m).collect();
        let ext = BasisExtender::new(&ring, &source);
        let mut y = random_poly(&ring, m as u8, &source);
        for i in 0..m {
            let q = ring.modulus(i).value();
            y.limb_mut(i)[0] = q - 1;
            y.limb_mut(i)[1] = 0;
        }
        let rows: Vec<&[u64]> = (0..m).map(|i| y.limb(i)).collect();
        for target in 4..8 {
            let t = ring.modulus(target);
            let (mut fast, mut wide) = (vec![0u64; 64], vec![0u64; 64]);
            ext.extend_limb_shoup(t, &rows, target, &mut fast);
            ext.extend_limb_wide(t, &rows, target, &mut wide);
            assert_eq!(fast, wide, "{m} sources onto target {target}");
            let mut via = vec![0u64; 64];
            ext.extend_limb(&ring, &y, target, &mut via);
            assert_eq!(via, wide);
        }
    }
}

#[test]
fn rescale_divides_with_rounding() {
    let ring = test_ring(32, &[50, 40]);
    let basis = [0usize, 1];
    let consts = RescaleConsts::new(&ring, &basis);
    let x = random_poly(&ring, 5, &basis);
    let mut fx = x.clone();
    ring.ntt(&mut fx, &basis);
    ring.div_round_by_last(&mut fx, &basis, &consts);
    ring.intt(&mut fx, &basis[..1]);
    let (m0, m1) = (ring.modulus(0), ring.modulus(1));
    let (q0, q1) = (m0.value() as i128, m1.value() as i128);
    for k in 0..32 {
        let a0 = x.limb(0)[k];
        let a1 = x.limb(1)[k];
        // exact x in [0, q0·q1), centred
        let t = m0.mul(
            m0.sub(a0, m0.reduce(a1)),
            m0.inv(m0.reduce(q1 as u64)).unwrap(),
        );
        let mut xv = a1 as i128 + q1 * t as i128;
        if xv > q0 * q1 / 2 {
            xv -= q0 * q1;
        }
        let expect = (xv as f64 / q1 as f64).round() as i128;
        let got = m0.center(fx.limb(0)[k]) as i128;
        assert!((got - expect).abs() <= 1, "k {k}: {got} vs {expect}");
    }
}

#[test]
fn seeded_expansion_is_prefix_consistent() {
    let ring = test_ring(64, &[60, 50, 40]);
    let seed = [9u8; 32];
    let full = ring.expand_uniform(&seed, &[0, 1, 2]);
    let part = ring.expand_uniform(&seed, &[0, 1]);
    assert_eq!(full.slice_limbs(0..2), part);
    let only_last = ring.expand_uniform(&seed, &[2]);
    assert_eq!(full.slice_limbs(2..3), only_last);
}

proptest! {
    #[test]
    fn add_sub_neg_are_consistent(seed in any::<u8>()) {
        let ring = test_ring(16, &[60, 40]);
        let basis = [0, 1];
        let a = random_poly(&ring, seed, &basis);
        let b = random_poly(&ring, seed.wrapping_add(1), &basis);
        let s = ring.add(&a, &b, &basis);
        let d = ring.sub(&s, &b, &basis);
        prop_assert_eq!(&d, &a);
        let mut n = a.clone();
        ring.neg_assign(&mut n, &basis);
        let z = ring.add(&a, &n, &basis);
        prop_assert!(z.data().iter().all(|&x| x == 0));
    }
}

#[test]
fn signed_coefficients_are_reduced_into_every_limb_and_zero_past_the_last() {
    // the polynomials are written into buffers that are not cleared first: every word must be
    // written, with a short slice too (zeros past it, as a cleared buffer gave)
    let ring = test_ring(64, &[40, 50, 60]);
    let basis = [0, 2];
    let coeffs: Vec<i64> = (0..64).map(|i| (i as i64 - 32) * 3).collect();
    for poly in [
        ring.from_small_signed(&coeffs, &basis),
        ring.from_signed(&coeffs, &basis),
    ] {
        for (i, &b) in basis.iter().enumerate() {
            let q = ring.modulus(b).value() as i64;
            let want: Vec<u64> = coeffs.iter().map(|&c| c.rem_euclid(q) as u64).collect();
            assert_eq!(poly.limb(i), &want[..]);
        }
    }
    let big = [i64::MIN + 1, i64::MAX, -5];
    let poly = ring.from_signed(&big, &basis);
    for (i, &b) in basis.iter().enumerate() {
        let q = ring.modulus(b).value() as i128;
        let limb = poly.limb(i);
        for (k, &c) in big.iter().enumerate() {
            assert_eq!(limb[k] as i128, (c as i128).rem_euclid(q));
        }
        assert!(limb[big.len()..].iter().all(|&w| w == 0));
    }
}
