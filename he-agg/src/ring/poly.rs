//! Storage of an RNS polynomial: `limbs × N` words, limb-major.

use zeroize::Zeroize;

/// An RNS polynomial: limb `i` holds N residues modulo the i-th modulus of the caller's basis.
#[derive(Clone, PartialEq, Eq, Zeroize)]
pub struct Poly {
    n: usize,
    data: Vec<u64>,
}

impl std::fmt::Debug for Poly {
    // Polynomials may be key material: print the shape, never the residues.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Poly {{ n: {}, limbs: {} }}", self.n, self.limbs())
    }
}

impl Poly {
    pub fn zero(n: usize, limbs: usize) -> Self {
        Self {
            n,
            data: vec![0; n * limbs],
        }
    }

    /// A polynomial of `limbs` limbs that `fill` writes whole, in a buffer that is not cleared
    /// first (the allocator clears a reused one otherwise: 7% of a deep network's evaluation
    /// went to clearing key switches' and automorphisms' outputs before they were overwritten).
    ///
    /// # Safety
    /// `fill` must write every word of the slice it is given.
    pub(crate) unsafe fn written(
        n: usize,
        limbs: usize,
        fill: impl FnOnce(&mut [std::mem::MaybeUninit<u64>]),
    ) -> Self {
        let mut data = Box::<[u64]>::new_uninit_slice(n * limbs);
        fill(&mut data);
        // SAFETY: the caller's `fill` wrote every word
        let data = unsafe { data.assume_init() }.into_vec();
        Self { n, data }
    }

    /// Two polynomials of the same shape that one pass writes whole (the two parts of a key
    /// switch), as [`Poly::written`].
    ///
    /// # Safety
    /// `fill` must write every word of both slices it is given.
    pub(crate) unsafe fn written_pair(
        n: usize,
        limbs: usize,
        fill: impl FnOnce(&mut [std::mem::MaybeUninit<u64>], &mut [std::mem::MaybeUninit<u64>]),
    ) -> (Self, Self) {
        let (mut a, mut b) = (
            Box::<[u64]>::new_uninit_slice(n * limbs),
            Box::<[u64]>::new_uninit_slice(n * limbs),
        );
        fill(&mut a, &mut b);
        // SAFETY: the caller's `fill` wrote every word of both
        let (a, b) = unsafe { (a.assume_init(), b.assume_init()) };
        let poly = |data: Box<[u64]>| Self {
            n,
            data: data.into_vec(),
        };
        (poly(a), poly(b))
    }

    /// Wraps limb-major residues; `data.len()` must be a multiple of `n`.
    pub fn from_data(n: usize, data: Vec<u64>) -> Self {
        assert!(
            n > 0 && data.len().is_multiple_of(n),
            "data is not a whole number of limbs"
        );
        Self { n, data }
    }

    #[inline]
    pub fn n(&self) -> usize {
        self.n
    }

    #[inline]
    pub fn limbs(&self) -> usize {
        self.data.len() / self.n
    }

    #[inline]
    pub fn limb(&self, i: usize) -> &[u64] {
        &self.data[i * self.n..(i + 1) * self.n]
    }

    #[inline]
    pub fn limb_mut(&mut self, i: usize) -> &mut [u64] {
        &mut self.data[i * self.n..(i + 1) * self.n]
    }

    #[inline]
    pub fn data(&self) -> &[u64] {
        &self.data
    }

    #[inline]
    pub fn data_mut(&mut self) -> &mut [u64] {
        &mut self.data
    }

    pub fn into_data(mut self) -> Vec<u64> {
        std::mem::take(&mut self.data)
    }

    /// Keeps the first `limbs` limbs (dropping moduli from the end of the chain).
    pub fn truncate(&mut self, limbs: usize) {
        self.data.truncate(limbs * self.n);
    }

    /// A copy of limbs `range`.
    pub fn slice_limbs(&self, range: std::ops::Range<usize>) -> Poly {
        Poly {
            n: self.n,
            data: self.data[range.start * self.n..range.end * self.n].to_vec(),
        }
    }

    /// Appends the limbs of `other`.
    pub fn extend_limbs(&mut self, other: &Poly) {
        debug_assert_eq!(self.n, other.n);
        self.data.extend_from_slice(&other.data);
    }
}
