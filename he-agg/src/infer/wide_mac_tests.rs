//! The wide-prime kernel against the 128-bit one, word for word.
use super::*;
use crate::infer::batched_ops::round_row;
use crate::infer::kernels::group_product_generic;

fn words(seed: u64, q: u64, len: usize) -> Vec<u64> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 3) % q
        })
        .collect()
}

/// Small signed weights (the extremes ±2^23 and zeros among them) times 2^shift, as residues
/// (shifts that keep them below q/2, as a map's weights are); rows 0 and 1 unshifted.
fn weights(m: &Modulus, seed: u64, rows: usize, nnz: usize) -> Vec<u64> {
    let raw = words(seed, 1 << 24, rows * nnz);
    (0..rows * nnz)
        .map(|i| {
            let (r, e) = (i / nnz, i % nnz);
            let v = match e % 7 {
                // rows 0 and 1 all at the largest odd weight, + and −: with the largest pieces
                // their sums reach ±2^53 past 1,023 products (and pass a 52-bit q long before)
                _ if r == 0 => SMALL_WEIGHT - 1,
                _ if r == 1 => 1 - SMALL_WEIGHT,
                0 => SMALL_WEIGHT,
                1 => -SMALL_WEIGHT,
                2 => 0,
                _ => raw[i] as i64 - SMALL_WEIGHT,
            };
            let shift = if r > 1 {
                (r as u32 * 5 % 31).min(m.bits().saturating_sub(26))
            } else {
                0
            };
            m.reduce_i64(v << shift)
        })
        .collect()
}

#[test]
fn every_prime_up_to_60_bits_gives_the_128_bit_kernels_words() {
    if !crate::simd::Level::detected().ge(&crate::simd::Level::Avx2) {
        return;
    }
    // one piece (17 bits), two (31 and 40 bits), three (50, 52, 59 and 60 bits); 5 columns and
    // 1,500 (past a sum's 1,023 products); rows 1–7 (whole and partial blocks of 3 and 6);
    // inputs mostly at q − 1 and at the largest pieces
    for q in [
        65537u64,
        (1 << 30) | 3,
        1099511480321,
        1125899906842597,
        4503599627370449,
        576460752303423433,
        1152921504606830593,
    ] {
        let m = Modulus::new(q);
        let n = 40;
        // the largest word below q whose pieces below the top one are all 2^20 − 1
        let low = PIECE_BITS * (m.bits().div_ceil(PIECE_BITS) - 1);
        let top = (((q >> low) - 1) << low) | ((1 << low) - 1);
        let inputs: Vec<Vec<u64>> = (0..1503)
            .map(|j| {
                let w = words(j, q, n);
                (0..n)
                    .map(|k| match k % 3 {
                        0 => w[k],
                        1 => q - 1,
                        _ => top,
                    })
                    .collect()
            })
            .collect();
        let ins: Vec<&[u64]> = inputs.iter().map(|v| &v[..]).collect();
        for nnz in [5usize, 1500] {
            let cols: Vec<u32> = (0..nnz as u32).map(|e| (e * 7 + 3) % 1503).collect();
            for rows in 1..=7 {
                let w = weights(&m, rows as u64, rows, nnz);
                for accumulate in [false, true] {
                    let start: Vec<Vec<u64>> =
                        (0..rows).map(|r| words(70 + r as u64, q, n)).collect();
                    let (mut o1, mut o2) = (start.clone(), start.clone());
                    let mut r1: Vec<&mut [u64]> = o1.iter_mut().map(|v| &mut v[..]).collect();
                    let mut r2: Vec<&mut [u64]> = o2.iter_mut().map(|v| &mut v[..]).collect();
                    assert!(group_product(&m, &cols, &w, &ins, &mut r1, accumulate));
                    group_product_generic(&m, &cols, &w, &ins, &mut r2, accumulate);
                    assert_eq!(o1, o2, "q {q}, {nnz} columns, {rows} rows, {accumulate}");
                    // the dispatcher takes this kernel (or IFMA's) and gives the same words
                    let mut o3 = start.clone();
                    let mut r3: Vec<&mut [u64]> = o3.iter_mut().map(|v| &mut v[..]).collect();
                    crate::infer::kernels::group_product(&m, &cols, &w, &ins, &mut r3, accumulate);
                    assert_eq!(o3, o2, "dispatched: q {q}, {nnz} columns, {rows} rows");
                }
            }
        }
    }
}

#[test]
fn weights_past_24_bits_or_odd_lengths_are_left_to_the_128_bit_kernel() {
    let q = 576460752303423433u64;
    let m = Modulus::new(q);
    let inputs = [words(1, q, 8), words(2, q, 8)];
    let ins: Vec<&[u64]> = inputs.iter().map(|v| &v[..]).collect();
    // 2^23 + 1 is odd: no power of two comes out of it
    let big = vec![m.reduce_i64(SMALL_WEIGHT + 1), 3];
    let mut out = vec![vec![5u64; 8]];
    let mut r: Vec<&mut [u64]> = out.iter_mut().map(|v| &mut v[..]).collect();
    assert!(!group_product(&m, &[0, 1], &big, &ins, &mut r, true));
    assert_eq!(out, vec![vec![5u64; 8]]);
    let short: Vec<&[u64]> = inputs.iter().map(|v| &v[..6]).collect();
    let mut out = vec![vec![5u64; 6]];
    let mut r: Vec<&mut [u64]> = out.iter_mut().map(|v| &mut v[..]).collect();
    assert!(!group_product(&m, &[0, 1], &[3, 4], &short, &mut r, true));
    assert_eq!(out, vec![vec![5u64; 6]]);
}

#[test]
fn rounded_rows_keep_23_significant_bits() {
    let mut row: Vec<(u32, i64)> = vec![(0, (1 << 40) + 12345), (1, -987_654_321_987), (2, 3)];
    let before = row.clone();
    round_row(&mut row);
    // the largest, 2^40 + 12345, has 41 bits: every weight becomes a multiple of 2^18
    let max = ((1u64 << 40) + 12345) as f64;
    for ((_, w), (_, v)) in row.iter().zip(&before) {
        assert_eq!(w % (1 << 18), 0, "{v} → {w}");
        assert!((w >> 18).abs() <= SMALL_WEIGHT);
        assert!(((w - v) as f64).abs() <= max * 2f64.powi(-23), "{v} → {w}");
    }
    assert_eq!(row[2].1, 0);
    // a row whose weights are all within 2^23 is left as it is
    let mut small: Vec<(u32, i64)> = vec![(0, -(1 << 22)), (1, 77)];
    round_row(&mut small);
    assert_eq!(small, vec![(0, -(1 << 22)), (1, 77)]);
}

/// Times one group of a 3×3 convolution of 64 channels (576 columns, 64 rows, 8,192
/// coefficients: the deep network's last stage) on small weights, this kernel against `float_mac`'s, at 40 and 59 bits: run by
/// hand, it asserts nothing about time (`cargo test --release -p he-agg --lib
/// small_weight_product_cost -- --ignored --nocapture`).
#[test]
#[ignore = "micro-benchmark: cargo test --release -p he-agg --lib small_weight_product_cost -- --ignored --nocapture"]
fn small_weight_product_cost() {
    if !crate::simd::Level::detected().ge(&crate::simd::Level::Avx2) {
        return;
    }
    let (nnz, rows, n) = (576usize, 64usize, 8192usize);
    for q in [1099511480321u64, 576460752303423433] {
        let m = Modulus::new(q);
        let inputs: Vec<Vec<u64>> = (0..nnz as u64).map(|j| words(j, q, n)).collect();
        let ins: Vec<&[u64]> = inputs.iter().map(|v| &v[..]).collect();
        let cols: Vec<u32> = (0..nnz as u32).collect();
        let w = weights(&m, 9, rows, nnz);
        let mut out = vec![vec![0u64; n]; rows];
        let mut time = |f: &mut dyn FnMut(&mut [&mut [u64]])| {
            let mut outs: Vec<&mut [u64]> = out.iter_mut().map(|v| &mut v[..]).collect();
            let t = std::time::Instant::now();
            for _ in 0..3 {
                f(&mut outs);
            }
            t.elapsed().as_secs_f64() / 3.0 * 1e3
        };
        for _ in 0..3 {
            let small = time(&mut |o| assert!(group_product(&m, &cols, &w, &ins, o, false)));
            let other = if q < 1 << 51 {
                time(&mut |o| super::super::float_mac::group_product(&m, &cols, &w, &ins, o, false))
            } else {
                time(&mut |o| group_product_generic(&m, &cols, &w, &ins, o, false))
            };
            println!(
                "{} bits: small weights {small:.1} ms, {} {other:.1} ms a group",
                m.bits(),
                if q < 1 << 51 { "float_mac" } else { "128-bit" }
            );
        }
    }
}
