//! Automorphisms X ↦ X^g of the ring, applied in the NTT domain as a permutation of evaluations.
//!
//! tfhe-ntt's forward transform leaves evaluation i at the point ψ^(2·rev(i)+1), where rev reverses
//! log2(N) bits and ψ is a primitive 2N-th root of unity. σ_g(f)(ψ^e) = f(ψ^(g·e)), so evaluation i
//! of σ_g(f) is evaluation j of f with 2·rev(j)+1 = g·(2·rev(i)+1) mod 2N — the same index map for
//! every prime of the chain.

/// The index map of one Galois element: `out[i] = in[map[i]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GaloisPermutation {
    g: u64,
    map: Vec<u32>,
}

impl GaloisPermutation {
    pub fn new(n: usize, g: u64) -> Self {
        assert!(g % 2 == 1, "Galois elements are odd");
        let log_n = n.trailing_zeros();
        let two_n = 2 * n as u64;
        let rev = |i: u64| (i.reverse_bits() >> (64 - log_n)) as u32;
        let map = (0..n as u64)
            .map(|i| {
                let e = 2 * rev(i) as u64 + 1;
                let ge = (g % two_n) * e % two_n;
                rev((ge - 1) / 2)
            })
            .collect();
        Self { g, map }
    }

    pub fn galois_element(&self) -> u64 {
        self.g
    }

    #[inline]
    pub fn apply(&self, input: &[u64], out: &mut [u64]) {
        self.gather(input, out, |o, w| *o = w);
    }

    /// [`Self::apply`] into words not yet written: writes every one of `out`.
    pub(crate) fn apply_into(&self, input: &[u64], out: &mut [std::mem::MaybeUninit<u64>]) {
        self.gather(input, out, |o, w| {
            o.write(w);
        });
    }

    /// Writes `input[map[i]]` to every `out[i]`, block by block, fetching the input ahead. Each
    /// aligned block of 8 outputs reads one aligned block of 8 inputs, but the blocks come in
    /// an order no hardware prefetcher follows: without the hints each block was a cache miss,
    /// 10.5–13.9% of one-thread mode (b) at AVX2 against 6.9–7.6% with them (perf, 29 November
    /// 2026).
    #[inline]
    fn gather<T>(&self, input: &[u64], out: &mut [T], write: impl Fn(&mut T, u64)) {
        /// Words per block: one cache line.
        const BLOCK: usize = 8;
        /// Blocks ahead of the one read whose input is fetched.
        #[cfg(target_arch = "x86_64")]
        const AHEAD: usize = 32;
        let n = self.map.len();
        assert!(
            input.len() == n && out.len() == n,
            "one word per position of the map"
        );
        let (mut outs, mut maps) = (out.chunks_exact_mut(BLOCK), self.map.chunks_exact(BLOCK));
        for (k, (o, m)) in (&mut outs).zip(&mut maps).enumerate() {
            #[cfg(not(target_arch = "x86_64"))]
            let _ = k;
            #[cfg(target_arch = "x86_64")]
            if let Some(&next) = self.map.get((k + AHEAD) * BLOCK) {
                let p = input.as_ptr().wrapping_add(next as usize).cast::<i8>();
                // SAFETY: a prefetch is a hint: it reads nothing and faults on no address
                #[allow(unused_unsafe)]
                unsafe {
                    std::arch::x86_64::_mm_prefetch(p, std::arch::x86_64::_MM_HINT_T0)
                };
            }
            for (o, &j) in o.iter_mut().zip(m) {
                write(o, input[j as usize]);
            }
        }
        // rings of fewer than 8 coefficients (tests)
        for (o, &j) in outs.into_remainder().iter_mut().zip(maps.remainder()) {
            write(o, input[j as usize]);
        }
    }

    pub fn map(&self) -> &[u32] {
        &self.map
    }
}

#[cfg(test)]
mod tests {
    use super::GaloisPermutation;

    #[test]
    fn blocks_of_eight_come_from_one_block_and_every_word_lands() {
        // n above the prefetch distance, so the hints run
        let n = 1 << 12;
        let input: Vec<u64> = (0..n as u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        for g in [5u64, 25, 3, 2 * n as u64 - 1, 5u64.pow(9) % (2 * n as u64)] {
            let p = GaloisPermutation::new(n, g);
            let map = p.map();
            for b in 0..n / 8 {
                let from = map[8 * b] as usize / 8;
                assert!(
                    (0..8).all(|d| map[8 * b + d] as usize / 8 == from),
                    "g = {g}"
                );
            }
            let mut out = vec![0u64; n];
            p.apply(&input, &mut out);
            let mut fresh = vec![std::mem::MaybeUninit::<u64>::uninit(); n];
            p.apply_into(&input, &mut fresh);
            for i in 0..n {
                assert_eq!(out[i], input[map[i] as usize], "g = {g}, i = {i}");
                // SAFETY: apply_into writes every word
                assert_eq!(unsafe { fresh[i].assume_init() }, out[i]);
            }
        }
    }

    /// Times the gather against the plain word loop it replaced, with the input in cache (two
    /// limbs) and out of it (24 limbs at N = 2^15, 12 MB): run by hand, it asserts nothing about
    /// time (`cargo test --release -p he-agg --lib galois_gather_cost -- --ignored --nocapture`).
    #[test]
    #[ignore = "micro-benchmark: cargo test --release -p he-agg --lib galois_gather_cost -- --ignored --nocapture"]
    fn galois_gather_cost() {
        for (n, limbs) in [(1usize << 14, 2usize), (1 << 14, 24), (1 << 15, 24)] {
            let src: Vec<Vec<u64>> = (0..limbs as u64)
                .map(|l| (0..n as u64).map(|i| i ^ l).collect())
                .collect();
            let mut dst = vec![vec![0u64; n]; limbs];
            let p = GaloisPermutation::new(n, 5u64.pow(7) % (2 * n as u64));
            let word_loop = |input: &[u64], out: &mut [u64]| {
                for (o, &j) in out.iter_mut().zip(p.map()) {
                    *o = input[j as usize];
                }
            };
            for _ in 0..3 {
                let t = std::time::Instant::now();
                for _ in 0..50 {
                    for (s, d) in src.iter().zip(dst.iter_mut()) {
                        word_loop(s, d);
                    }
                }
                let old = t.elapsed().as_secs_f64() / (50 * limbs) as f64 * 1e6;
                let t = std::time::Instant::now();
                for _ in 0..50 {
                    for (s, d) in src.iter().zip(dst.iter_mut()) {
                        p.apply(s, d);
                    }
                }
                let new = t.elapsed().as_secs_f64() / (50 * limbs) as f64 * 1e6;
                println!(
                    "N = {n}, {limbs} limbs: word loop {old:.1} µs, gather {new:.1} µs per limb"
                );
            }
        }
    }
}
