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
        for (o, &j) in out.iter_mut().zip(&self.map) {
            *o = input[j as usize];
        }
    }

    /// [`Self::apply`] into words not yet written: writes every one of `out`.
    pub(crate) fn apply_into(&self, input: &[u64], out: &mut [std::mem::MaybeUninit<u64>]) {
        assert_eq!(
            out.len(),
            self.map.len(),
            "one word per position of the map"
        );
        for (o, &j) in out.iter_mut().zip(&self.map) {
            o.write(input[j as usize]);
        }
    }

    pub fn map(&self) -> &[u32] {
        &self.map
    }
}
