//! The multiply-accumulate kernels against each other and against product-by-product sums.
use super::*;

fn words(seed: u64, q: u64, len: usize) -> Vec<u64> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 7) % q
        })
        .collect()
}

#[test]
fn simd_and_generic_kernels_agree() {
    // a 51-bit prime (IFMA path where the CPU has it) and 4100 terms (one fold)
    let q = 2251799813554177u64;
    let m = Modulus::new(q);
    let n = 128;
    let a: Vec<Vec<u64>> = (0..4100).map(|j| words(j, q, n)).collect();
    let b: Vec<Vec<u64>> = (0..4100).map(|j| words(j + 9999, q, n)).collect();
    let pairs: Vec<(&[u64], &[u64])> = a.iter().zip(&b).map(|(x, y)| (&x[..], &y[..])).collect();
    let (mut fast, mut slow) = (vec![0u64; n], vec![0u64; n]);
    mac_limb(&m, &pairs, &mut fast);
    mac_limb_generic(&m, &pairs, &mut slow);
    assert_eq!(fast, slow);
    // a group of 5 rows over 4100 shared columns (one fold), accumulating onto 7s
    let cols: Vec<u32> = (0..4100u32).rev().collect();
    let weights = words(5, q, 5 * 4100);
    let inputs: Vec<&[u64]> = a.iter().map(|v| &v[..]).collect();
    let mut o1 = vec![vec![7u64; n]; 5];
    let mut o2 = o1.clone();
    let mut r1: Vec<&mut [u64]> = o1.iter_mut().map(|v| &mut v[..]).collect();
    let mut r2: Vec<&mut [u64]> = o2.iter_mut().map(|v| &mut v[..]).collect();
    group_product(&m, &cols, &weights, &inputs, &mut r1, true);
    group_product_generic(&m, &cols, &weights, &inputs, &mut r2, true);
    assert_eq!(o1, o2);
    let (r, k) = (3, 17);
    let want = (0..4100).fold(7u64, |acc, e| {
        m.add(acc, m.mul(weights[r * 4100 + e], a[cols[e] as usize][k]))
    });
    assert_eq!(o1[r][k], want);
    let mut o3 = vec![vec![7u64; n]; 2];
    let mut r3: Vec<&mut [u64]> = o3.iter_mut().map(|v| &mut v[..]).collect();
    group_product(&m, &cols, &weights[..2 * 4100], &inputs, &mut r3, false);
    assert_eq!(
        o3[1],
        o1[1].iter().map(|&v| m.sub(v, 7)).collect::<Vec<_>>()
    );
}

#[test]
fn the_generic_kernel_equals_a_product_by_product_sum_past_its_folds() {
    // 59- and 61-bit primes (1,023 and 63 products per fold), the largest words beside
    // ordinary ones, and pair counts that are not multiples of the group of four
    for (q, count) in [
        (576460752303423433u64, 2055usize),
        (2305843009213693951, 131),
    ] {
        let m = Modulus::new(q);
        let n = 300;
        let a: Vec<Vec<u64>> = (0..count)
            .map(|j| {
                let w = words(j as u64, q, n);
                (0..n)
                    .map(|k| if k % 5 == 0 { q - 1 } else { w[k] })
                    .collect()
            })
            .collect();
        let b: Vec<Vec<u64>> = (0..count)
            .map(|j| {
                let w = words(j as u64 + 5000, q, n);
                (0..n)
                    .map(|k| if k % 3 == 0 { q - 1 } else { w[k] })
                    .collect()
            })
            .collect();
        for pairs_len in [1, 3, 4, 7, count] {
            let pairs: Vec<(&[u64], &[u64])> = a[..pairs_len]
                .iter()
                .zip(&b)
                .map(|(x, y)| (&x[..], &y[..]))
                .collect();
            let mut got = vec![0u64; n];
            mac_limb_generic(&m, &pairs, &mut got);
            let want: Vec<u64> = (0..n)
                .map(|k| (0..pairs_len).fold(0, |s, j| m.add(s, m.mul(a[j][k], b[j][k]))))
                .collect();
            assert_eq!(got, want, "q = {q}, {pairs_len} pairs");
        }
    }
}

#[test]
fn the_generic_group_kernel_equals_a_product_by_product_sum_past_its_folds() {
    // 59- and 61-bit primes (1,023 and 63 products per fold), mostly words near q (sums that
    // would overflow 128 bits without the folds),
    // odd row counts (a lone last row), a length that is not a multiple of the block, and
    // sums that start from the outputs or from zero
    for (q, nnz) in [
        (576460752303423433u64, 2055usize),
        (2305843009213693951, 131),
    ] {
        let m = Modulus::new(q);
        let n = 75;
        let inputs: Vec<Vec<u64>> = (0..nnz + 3)
            .map(|j| {
                let w = words(j as u64, q, n);
                (0..n)
                    .map(|k| {
                        if k % 5 == 0 {
                            w[k]
                        } else {
                            q - 1 - w[k] % 1024
                        }
                    })
                    .collect()
            })
            .collect();
        let ins: Vec<&[u64]> = inputs.iter().map(|v| &v[..]).collect();
        let cols: Vec<u32> = (0..nnz as u32)
            .map(|e| (e * 7 + 3) % (nnz as u32 + 3))
            .collect();
        for rows in [1usize, 2, 5] {
            let weights: Vec<u64> = (0..rows)
                .flat_map(|r| {
                    let w = words(9000 + r as u64, q, nnz);
                    (0..nnz).map(move |e| {
                        if e % 4 == 0 {
                            w[e]
                        } else {
                            q - 1 - w[e] % 1024
                        }
                    })
                })
                .collect();
            for accumulate in [false, true] {
                let start: Vec<Vec<u64>> =
                    (0..rows).map(|r| words(7000 + r as u64, q, n)).collect();
                let mut got = start.clone();
                let mut outs: Vec<&mut [u64]> = got.iter_mut().map(|v| &mut v[..]).collect();
                group_product_generic(&m, &cols, &weights, &ins, &mut outs, accumulate);
                for r in 0..rows {
                    let want: Vec<u64> = (0..n)
                        .map(|k| {
                            let s0 = if accumulate { start[r][k] } else { 0 };
                            (0..nnz).fold(s0, |s, e| {
                                let x = inputs[cols[e] as usize][k];
                                m.add(s, m.mul(weights[r * nnz + e], x))
                            })
                        })
                        .collect();
                    assert_eq!(got[r], want, "q = {q}, {rows} rows, row {r}, {accumulate}");
                }
            }
        }
    }
}

#[test]
fn pair_sums_match_the_generic_kernel_over_and_between_blocks() {
    // whole and partial blocks of 256 coefficients, and a length that is not a multiple of
    // 4 (the portable fallback)
    for q in DOUBLE_PRECISION_MODULI {
        pair_sums_over_blocks(q);
    }
}

fn pair_sums_over_blocks(q: u64) {
    let m = Modulus::new(q);
    for n in [4, 300, 612, 1030] {
        let a: Vec<Vec<u64>> = (0..37).map(|j| words(j, q, n)).collect();
        let b: Vec<Vec<u64>> = (0..37).map(|j| words(j + 77, q, n)).collect();
        let pairs: Vec<(&[u64], &[u64])> =
            a.iter().zip(&b).map(|(x, y)| (&x[..], &y[..])).collect();
        let (mut fast, mut slow) = (vec![0u64; n], vec![0u64; n]);
        mac_limb(&m, &pairs, &mut fast);
        mac_limb_generic(&m, &pairs, &mut slow);
        assert_eq!(fast, slow, "q = {q}, n = {n}");
        let k = n - 1;
        let want = (0..37).fold(0, |acc, j| m.add(acc, m.mul(a[j][k], b[j][k])));
        assert_eq!(slow[k], want, "q = {q}, n = {n}");
    }
}

#[test]
fn every_giant_step_at_once_equals_each_one_alone() {
    use crate::ckks::Parameters;
    // 59-bit limbs (the generic kernel) beside 40-bit ones (the vector kernels); N = 2^12:
    // two tasks per limb, each of several passes
    let params = Parameters::insecure_for_tests(12, &[59, 59, 40, 40], &[59], 4, 40.0).unwrap();
    let ctx = CkksContext::new(params).unwrap();
    let mut kg = ctx.key_generator().unwrap();
    let sk = kg.secret_key();
    let mut enc = ctx.sk_encryptor(&sk).unwrap();
    let level = 3;
    let value = |i: usize, j: usize| Complex::new(((i * 31 + j * 7) % 13) as f64 - 6.0, 0.0);
    let cts: Vec<Ciphertext> = (0..5)
        .map(|i| {
            let v: Vec<Complex> = (0..ctx.slots()).map(|j| value(i, j)).collect();
            enc.encrypt(&ctx.encode(&v, level, ctx.default_scale()).unwrap())
        })
        .collect();
    let pts: Vec<Poly> = (0..7)
        .map(|i| {
            let v: Vec<Complex> = (0..ctx.slots()).map(|j| value(i + 5, j)).collect();
            ctx.encode(&v, level, ctx.default_scale()).unwrap().poly
        })
        .collect();
    // three giant steps over overlapping inputs, one of them a single product
    let giants: Vec<(Vec<&Ciphertext>, Vec<&Poly>)> = vec![
        (cts.iter().collect(), pts[..5].iter().collect()),
        (
            vec![&cts[4], &cts[0], &cts[2]],
            vec![&pts[6], &pts[5], &pts[0]],
        ),
        (vec![&cts[3]], vec![&pts[2]]),
    ];
    let all = dot_plain_giants(&ctx, level, &giants);
    assert_eq!(all.len(), 3);
    for ((xs, ws), got) in giants.iter().zip(&all) {
        assert_eq!(*got, dot_plain(&ctx, level, xs, ws));
    }
}

/// A 51-bit prime (sums reduced by the 128-bit Barrett), the largest 50-bit and a 40-bit one
/// (sums reduced four at a time in doubles).
const DOUBLE_PRECISION_MODULI: [u64; 3] = [2251799813554177, 1125899906842597, 1099511480321];

#[test]
fn double_precision_sums_are_exact_at_the_extremes() {
    // the largest words of each prime, 4100 terms (a fold at 4095), and small values
    if crate::simd::Level::detected() < crate::simd::Level::Avx2 {
        return; // the AVX2 kernels cannot run here; the generic path is tested above
    }
    for q in DOUBLE_PRECISION_MODULI {
        sums_at_the_extremes(q);
    }
}

fn sums_at_the_extremes(q: u64) {
    let m = Modulus::new(q);
    let n = 64;
    let a: Vec<Vec<u64>> = (0..4100)
        .map(|j| {
            (0..n)
                .map(|k| {
                    if k % 3 == 0 {
                        q - 1
                    } else {
                        (j * k) as u64 % q
                    }
                })
                .collect()
        })
        .collect();
    let b: Vec<Vec<u64>> = (0..4100)
        .map(|j| {
            (0..n)
                .map(|k| {
                    if k % 2 == 0 {
                        q - 1 - (j % 2) as u64
                    } else {
                        k as u64
                    }
                })
                .collect()
        })
        .collect();
    let pairs: Vec<(&[u64], &[u64])> = a.iter().zip(&b).map(|(x, y)| (&x[..], &y[..])).collect();
    let (mut fast, mut slow) = (vec![0u64; n], vec![0u64; n]);
    super::super::float_mac::mac_pairs(&m, &pairs, &mut fast);
    mac_limb_generic(&m, &pairs, &mut slow);
    assert_eq!(fast, slow, "q = {q}");
    let cols: Vec<u32> = (0..4100u32).collect();
    let weights = vec![q - 1; 2 * 4100];
    let inputs: Vec<&[u64]> = a.iter().map(|v| &v[..]).collect();
    let mut o1 = vec![vec![q - 1; n]; 2];
    let mut o2 = o1.clone();
    let mut r1: Vec<&mut [u64]> = o1.iter_mut().map(|v| &mut v[..]).collect();
    let mut r2: Vec<&mut [u64]> = o2.iter_mut().map(|v| &mut v[..]).collect();
    super::super::float_mac::group_product(&m, &cols, &weights, &inputs, &mut r1, true);
    group_product_generic(&m, &cols, &weights, &inputs, &mut r2, true);
    assert_eq!(o1, o2, "q = {q}");
}

#[test]
fn register_blocked_double_precision_groups_match_for_any_row_count() {
    if crate::simd::Level::detected() < crate::simd::Level::Avx2 {
        return;
    }
    for q in DOUBLE_PRECISION_MODULI {
        groups_of_any_row_count(q);
    }
}

fn groups_of_any_row_count(q: u64) {
    let m = Modulus::new(q);
    let a: Vec<Vec<u64>> = (0..40).map(|j| words(j, q, 40)).collect();
    let inputs: Vec<&[u64]> = a.iter().map(|v| &v[..]).collect();
    let cols: Vec<u32> = (0..40u32).step_by(3).collect();
    // rows 1–7 cover whole and partial blocks of rows; 40 and 36 coefficients the
    // vector path (blocks of 8) and the portable fallback
    for rows in 1..=7 {
        for n in [40, 36] {
            let weights = words(rows as u64 + 77, q, rows * cols.len());
            let inputs: Vec<&[u64]> = inputs.iter().map(|v| &v[..n]).collect();
            for accumulate in [false, true] {
                let mut o1: Vec<Vec<u64>> = (0..rows).map(|r| words(r as u64, q, n)).collect();
                let mut o2 = o1.clone();
                let mut r1: Vec<&mut [u64]> = o1.iter_mut().map(|v| &mut v[..]).collect();
                let mut r2: Vec<&mut [u64]> = o2.iter_mut().map(|v| &mut v[..]).collect();
                super::super::float_mac::group_product(
                    &m, &cols, &weights, &inputs, &mut r1, accumulate,
                );
                group_product_generic(&m, &cols, &weights, &inputs, &mut r2, accumulate);
                assert_eq!(
                    o1, o2,
                    "q = {q}, {rows} rows, {n} coefficients, accumulate {accumulate}"
                );
            }
        }
    }
}

#[test]
fn lazy_sums_match_reduced_products() {
    // a 61-bit modulus forces intermediate reductions (63 products per u128)
    for q in [(1u64 << 61) - 1, 1_099_511_480_321] {
        let m = Modulus::new(q);
        let terms = 150;
        let a: Vec<Vec<u64>> = (0..terms)
            .map(|j| (0..70).map(|k| q - 1 - (j * 131 + k * 7) as u64).collect())
            .collect();
        let b: Vec<Vec<u64>> = (0..terms)
            .map(|j| (0..70).map(|k| q - 1 - (j * 17 + k) as u64 % 5).collect())
            .collect();
        let pairs: Vec<(&[u64], &[u64])> =
            a.iter().zip(&b).map(|(x, y)| (&x[..], &y[..])).collect();
        let mut out = vec![0u64; 70];
        mac_limb(&m, &pairs, &mut out);
        for k in 0..70 {
            let want = (0..terms).fold(0u64, |acc, j| m.add(acc, m.mul(a[j][k], b[j][k])));
            assert_eq!(out[k], want);
        }
    }
}

/// Not a test: the grouped product's cost per product and per output word at the shapes of a
/// batched ResNet's maps (one limb of N = 2^14, a 40-bit prime), run by hand:
/// `cargo test --release -p he-agg --lib grouped_product_cost -- --ignored --nocapture`.
#[test]
#[ignore = "micro-benchmark: cargo test --release -p he-agg --lib grouped_product_cost -- --ignored --nocapture"]
fn grouped_product_cost() {
    let bits = 40;
    let m = Modulus::new(crate::ring::primes::generate_primes(bits, 1 << 14, 1, &[]).unwrap()[0]);
    let n = 1 << 14;
    let inputs: Vec<Vec<u64>> = (0..576).map(|j| words(j, m.value(), n)).collect();
    let refs: Vec<&[u64]> = inputs.iter().map(Vec::as_slice).collect();
    for (rows, cols) in [(16usize, 16usize), (16, 48), (16, 144), (64, 64), (64, 576)] {
        let c: Vec<u32> = (0..cols as u32).collect();
        let w: Vec<u64> = words(99, 1000, rows * cols);
        let mut out = vec![vec![0u64; n]; rows];
        let reps = 3 * ((16 * 144 * 8) / (rows * cols) + 1);
        let t0 = std::time::Instant::now();
        for _ in 0..reps {
            let mut outs: Vec<&mut [u64]> = out.iter_mut().map(|o| o.as_mut_slice()).collect();
            group_product(&m, &c, &w, &refs, &mut outs, true);
        }
        let t = t0.elapsed().as_secs_f64();
        let macs = (reps * rows * cols * n) as f64;
        println!(
            "{bits} bits {rows}×{cols}: {:.2} ns per product, {:.2} ns per output word",
            t / macs * 1e9,
            t / (reps * rows * n) as f64 * 1e9
        );
    }
}
