//! NTT-friendly primes: generation (q ≡ 1 mod 2N, a given bit size) and checking.

use super::modulus::{MAX_MODULUS_BITS, Modulus};

/// Deterministic Miller–Rabin for 64-bit integers (these bases are exact below 2^64).
pub fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    for p in [2u64, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37] {
        if n.is_multiple_of(p) {
            return n == p;
        }
    }
    let (mut d, mut s) = (n - 1, 0);
    while d % 2 == 0 {
        d /= 2;
        s += 1;
    }
    let mulmod = |a: u64, b: u64| ((a as u128 * b as u128) % n as u128) as u64;
    let powmod = |mut b: u64, mut e: u64| {
        let mut acc = 1u64;
        while e > 0 {
            if e & 1 == 1 {
                acc = mulmod(acc, b);
            }
            b = mulmod(b, b);
            e >>= 1;
        }
        acc
    };
    'witness: for a in [2u64, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37] {
        let mut x = powmod(a, d);
        if x == 1 || x == n - 1 {
            continue;
        }
        for _ in 1..s {
            x = mulmod(x, x);
            if x == n - 1 {
                continue 'witness;
            }
        }
        return false;
    }
    true
}

/// Whether `q` can be a limb of a ring of degree `n`: prime, below 2^62, q ≡ 1 mod 2n.
pub fn is_ntt_prime(q: u64, n: usize) -> bool {
    let two_n = 2 * n as u64;
    q < (1 << MAX_MODULUS_BITS) && q % two_n == 1 && is_prime(q)
}

/// Primes of more than this many bits are taken ≡ 1 mod 2^32 (see [`generate_primes`]).
pub const LOW_WORD_ONE_FROM_BITS: u32 = 52;

/// Generates `count` distinct NTT-friendly primes of exactly `bits` bits for degree `n`, the
/// largest such primes below 2^bits that are not in `exclude` (as SEAL's `CoeffModulus::Create`).
/// Primes of 52 bits or more — too wide for the double-precision kernels — are taken with a
/// low 32-bit word of 1 (q ≡ 1 mod 2^32, which is also ≡ 1 mod 2n): their vector kernels
/// multiply a quotient by q with one 32×32-bit product instead of three (about 16% of an NTT
/// without IFMA). There are millions of them at every such size.
pub fn generate_primes(bits: u32, n: usize, count: usize, exclude: &[u64]) -> Option<Vec<u64>> {
    if !(2..=MAX_MODULUS_BITS).contains(&bits) {
        return None;
    }
    let two_n = if bits >= LOW_WORD_ONE_FROM_BITS {
        (2 * n as u64).max(1 << 32)
    } else {
        2 * n as u64
    };
    let upper = 1u64 << bits;
    let lower = 1u64 << (bits - 1);
    // the largest candidate ≡ 1 mod 2n below 2^bits
    let mut candidate = ((upper - 1) / two_n) * two_n + 1;
    if candidate >= upper {
        candidate = candidate.checked_sub(two_n)?;
    }
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        if candidate <= lower {
            return None;
        }
        if is_prime(candidate) && !exclude.contains(&candidate) && !out.contains(&candidate) {
            out.push(candidate);
        }
        candidate = candidate.checked_sub(two_n)?;
    }
    Some(out)
}

/// A primitive 2n-th root of unity modulo the prime q (q ≡ 1 mod 2n).
pub fn primitive_root_2n(q: u64, n: usize) -> Option<u64> {
    let m = Modulus::new(q);
    let two_n = 2 * n as u64;
    if !(q - 1).is_multiple_of(two_n) {
        return None;
    }
    let cofactor = (q - 1) / two_n;
    (2..q.min(1 << 20)).find_map(|g| {
        let root = m.pow(g, cofactor);
        // order exactly 2n <=> root^n = -1
        (m.pow(root, n as u64) == q - 1).then_some(root)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn miller_rabin_agrees_with_trial_division() {
        let trial = |n: u64| {
            n >= 2
                && (2..)
                    .take_while(|d| d * d <= n)
                    .all(|d| !n.is_multiple_of(d))
        };
        for n in 0..5000u64 {
            assert_eq!(is_prime(n), trial(n), "n = {n}");
        }
        assert!(is_prime(1152921504606830593));
        assert!(!is_prime(1152921504606830593 * 3));
        // a strong pseudoprime to several small bases
        assert!(!is_prime(3215031751));
    }

    #[test]
    fn generated_primes_have_the_asked_shape() {
        for (bits, n) in [
            (60, 8192usize),
            (40, 8192),
            (40, 16384),
            (50, 1 << 15),
            (30, 1024),
        ] {
            let ps = generate_primes(bits, n, 3, &[]).unwrap();
            assert_eq!(ps.len(), 3);
            for &q in &ps {
                assert!(is_ntt_prime(q, n));
                assert_eq!(64 - q.leading_zeros(), bits);
                assert!(primitive_root_2n(q, n).is_some());
            }
            assert!(ps[0] > ps[1] && ps[1] > ps[2]);
            let more = generate_primes(bits, n, 2, &ps).unwrap();
            assert!(more.iter().all(|q| !ps.contains(q)));
        }
        // wide primes have a low word of 1, for the vector kernels
        for bits in [52, 53, 60, 61, 62] {
            for q in generate_primes(bits, 1 << 16, 4, &[]).unwrap() {
                assert_eq!(q & 0xffff_ffff, 1, "{q}");
                assert!(is_ntt_prime(q, 1 << 16));
                assert_eq!(64 - q.leading_zeros(), bits);
            }
        }
        assert!(generate_primes(63, 8192, 1, &[]).is_none());
        assert!(generate_primes(14, 8192, 1, &[]).is_none());
    }
}
