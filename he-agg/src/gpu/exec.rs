//! What a device must do for CKKS: a handful of batched primitives over buffers of limbs. Each
//! call is one kernel launch covering every limb it names (the job lists), so an operation
//! such as a key switch is a short, fixed sequence of launches.
//!
//! [`super::host::HostExec`] carries the primitives out on the CPU with the kernels' arithmetic
//! (tests compare it with the CPU evaluator anywhere); `super::cuda::CudaExec` runs them on a
//! GPU (tests compare it with the host executor where a GPU is present).

use crate::aggregate::CudaError;
use crate::ring::{Seed, ShoupConst};

/// One limb of a buffer and the ring modulus it is reduced by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct LimbJob {
    pub limb: u32,
    pub modulus: u32,
}

/// One limb-to-limb step of a [`LimbOp`]: limb `src` of the source to limb `dst` of the
/// destination, modulo ring modulus `modulus`, with constant number `konst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct MapJob {
    pub dst: u32,
    pub src: u32,
    pub modulus: u32,
    pub konst: u32,
}

/// The formula a [`MapJob`] applies to every word (a: the source word, d: the destination
/// word, c: the job's constant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum LimbOp {
    /// d ← a
    Copy = 0,
    /// d ← a·c
    MulConst = 1,
    /// d ← (a − d)·c
    RevSubMulConst = 2,
    /// d ← d + a
    Add = 3,
    /// d ← a + c (a already reduced by the job's modulus)
    AddConst = 4,
    /// d ← (a mod q) − c (a reduced by another modulus: lifting a limb to other primes)
    LiftSub = 5,
}

/// One target limb of a fast basis extension: `dst` ← Σ_{i<count} src[first + i]·row[i]
/// modulo ring modulus `modulus`, `row` = `rows[row..row + count]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct ExtendJob {
    pub dst: u32,
    pub modulus: u32,
    pub first: u32,
    pub count: u32,
    pub row: u32,
}

/// One output limb of a multiply-accumulate over pairs of buffers (a_t, b_t):
/// `dst` ← Σ_t Σ_{k<products} a_t[a[k]] ⊙ b_t[b[k]] modulo ring modulus `modulus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct MacJob {
    pub dst: u32,
    pub modulus: u32,
    /// 1 or 2 products per pair (2: the middle part of a tensor product)
    pub products: u32,
    pub a: [u32; 2],
    pub b: [u32; 2],
}

/// One group of a batched map (rows sharing their input columns), over ciphertexts of `parts`
/// parts at `level`: for every row r, part p and limb i,
/// outs[r][p·level + i] (+)= Σ_e weights[(i·rows + r)·cols + e] · xs[col_e][p·level + i]
/// modulo ring modulus i.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupShape {
    pub rows: usize,
    pub parts: usize,
    pub level: usize,
    /// Add onto the outputs' (reduced) words instead of overwriting them.
    pub accumulate: bool,
}

/// The shape of an inner product of decomposed digits with a switching key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DotShape {
    /// Digits in the decomposition (and key parts used).
    pub digits: usize,
    /// Limbs per digit (Q_l ∪ P).
    pub width: usize,
    /// Limbs per key polynomial (Q_L ∪ P).
    pub key_limbs: usize,
}

/// The distribution of an [`Exec::sample`] launch, each expanded from a seed with the layout
/// of [`crate::ring::expand`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SampleDist {
    /// uniform in {-1, 0, 1}
    Ternary,
    /// the discrete Gaussian of σ = 3.2
    Gaussian,
    /// flooding noise of standard deviation `sigma` (≤ 2^100)
    Flooding { sigma: f64 },
}

/// The primitives. Buffers hold `limbs × N` words, limb-major.
pub trait Exec {
    type Buf;

    /// A zero buffer of `limbs` limbs.
    fn zeros(&self, limbs: usize) -> Result<Self::Buf, CudaError>;
    /// A buffer of `limbs` limbs whose every word the caller writes before reading (on a device:
    /// no clearing pass).
    fn scratch(&self, limbs: usize) -> Result<Self::Buf, CudaError> {
        self.zeros(limbs)
    }
    /// A buffer holding `words` (a whole number of limbs).
    fn upload(&self, words: &[u64]) -> Result<Self::Buf, CudaError>;
    /// The buffer's words.
    fn download(&self, buf: &Self::Buf) -> Result<Vec<u64>, CudaError>;

    /// Forward NTT of every limb in `jobs`.
    fn ntt(&self, buf: &mut Self::Buf, jobs: &[LimbJob]) -> Result<(), CudaError>;
    /// Inverse NTT of every limb in `jobs` (times N unless `normalize`).
    fn intt(&self, buf: &mut Self::Buf, jobs: &[LimbJob], normalize: bool)
    -> Result<(), CudaError>;
    /// `op` over every job, from `src` into `dst`.
    fn map(
        &self,
        op: LimbOp,
        dst: &mut Self::Buf,
        src: &Self::Buf,
        jobs: &[MapJob],
        consts: &[ShoupConst],
    ) -> Result<(), CudaError>;
    /// `op` over every job, within one buffer (source and destination limbs differ or are the
    /// same word for word).
    fn map_within(
        &self,
        op: LimbOp,
        buf: &mut Self::Buf,
        jobs: &[MapJob],
        consts: &[ShoupConst],
    ) -> Result<(), CudaError>;
    /// Fast basis extension of every job.
    fn extend(
        &self,
        dst: &mut Self::Buf,
        src: &Self::Buf,
        jobs: &[ExtendJob],
        rows: &[u64],
    ) -> Result<(), CudaError>;
    /// out[c][pos] = Σ_j digits[j][pos] ⊙ key[j][c][qp[pos]] for c ∈ {0, 1}, modulo ring
    /// modulus qp[pos], summed in 128 bits and reduced every 15 products (as the CPU does).
    fn dot(
        &self,
        out: &mut Self::Buf,
        digits: &Self::Buf,
        key: &Self::Buf,
        qp: &[u32],
        shape: DotShape,
    ) -> Result<(), CudaError>;
    /// The tensor product of two degree-1 ciphertexts `[2][level]` (limb i modulo ring modulus
    /// i) into `[3][level]`: a0·b0, a0·b1 + a1·b0 (one reduction), a1·b1.
    fn tensor(
        &self,
        out: &mut Self::Buf,
        a: &Self::Buf,
        b: &Self::Buf,
        level: usize,
    ) -> Result<(), CudaError>;
    /// Multiply-accumulate of every job over the `pairs` of buffers (slot-wise products of
    /// ciphertexts with plaintexts or ciphertexts, summed in 128 bits and reduced every 15
    /// products); with `accumulate`, onto the (reduced) words already in `out`.
    fn mac(
        &self,
        out: &mut Self::Buf,
        pairs: &[(&Self::Buf, &Self::Buf)],
        jobs: &[MacJob],
        accumulate: bool,
    ) -> Result<(), CudaError>;
    /// One group of a batched map ([`GroupShape`]); `cols` index `xs`, `weights` holds the
    /// group's integer weights limb by limb.
    fn group_product(
        &self,
        outs: &mut [&mut Self::Buf],
        xs: &[&Self::Buf],
        cols: &[u32],
        weights: &Self::Buf,
        shape: GroupShape,
    ) -> Result<(), CudaError>;
    /// dst[job.dst][i] = src[job.src][map[i]] for every job (a Galois automorphism in the NTT
    /// domain); with `add`, dst[job.dst][i] += … modulo ring modulus `job.modulus` (the
    /// automorphism of c0 added onto a key switch's output in the same pass).
    fn permute(
        &self,
        dst: &mut Self::Buf,
        src: &Self::Buf,
        jobs: &[MapJob],
        map: &[u32],
        add: bool,
    ) -> Result<(), CudaError>;
    /// Samples expanded from `seeds` (coefficient domain): seed s writes its N signed
    /// coefficients, reduced modulo ring modulus `moduli[i]`, to limb
    /// `first + s·moduli.len() + i`.
    fn sample(
        &self,
        dst: &mut Self::Buf,
        first: usize,
        seeds: &[Seed],
        dist: SampleDist,
        moduli: &[u32],
    ) -> Result<(), CudaError>;
    /// Zero in every word: a buffer that held a secret leaves no trace in freed memory.
    fn wipe(&self, buf: &mut Self::Buf) -> Result<(), CudaError>;
}
