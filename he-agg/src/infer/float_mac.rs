//! AVX2 versions of the multiply-accumulate kernels for CPUs without IFMA, for moduli below
//! 2^51: each product x·y (x, y < 2^51, exact doubles) is split with two FMAs into
//! k·2^51 + l — t = x·y + 2^103 rounds x·y to a multiple of 2^51 and holds k in its mantissa
//! bits; then l + 1.5·2^52 = x·y + (K − t) with K = 2^103 + 1.5·2^52, exact because |l| ≤ 2^50
//! puts it in [2^52, 2^53) — and the bit patterns of t and l + 1.5·2^52 are summed as 64-bit
//! integers, four products per instruction: two FMAs, one subtraction and two integer additions
//! per product (the offset is inside the second FMA). The sums are exact for 4095 products
//! (Σ|l| < 2^63); the constants are subtracted once at the end and the value K·2^51 + L is
//! reduced like the 128-bit path's.

use crate::ring::Modulus;

/// Whether these kernels run for this modulus at the level in force (IFMA's are faster).
pub(crate) fn usable(m: &Modulus) -> bool {
    use crate::simd::{Level, level};
    cfg!(target_arch = "x86_64") && m.bits() <= 51 && matches!(level(), Level::Avx2 | Level::Avx512)
}

/// Coefficients per block: both accumulators stay in L1.
const BLOCK: usize = 32;
/// Products per block before folding (Σ|l| < 2^63).
const LIMIT: u64 = 4095;

const MAGIC: u64 = 0x4330_0000_0000_0000; // the bits of 2^52
const TWO52: f64 = 4_503_599_627_370_496.0;
const C: f64 = 10_141_204_801_825_835_211_973_625_643_008.0; // 2^103
const M: f64 = 6_755_399_441_055_744.0; // 1.5·2^52
/// C + M, exact (a multiple of 2^51, the spacing of doubles at 2^103): K − t is exact too.
const K: f64 = C + M;

#[inline(always)]
fn to_f64(x: u64) -> f64 {
    f64::from_bits(x | MAGIC) - TWO52
}

/// The sum K·2^51 + L that running sums `hi` (Σ bits of t) and `lo` (Σ bits of l + M) of
/// `count` terms (the starting value counted as one) hold.
#[inline(always)]
fn sum_value(count: u64, hi: u64, lo: u64) -> u128 {
    let big = hi.wrapping_sub(count.wrapping_mul(C.to_bits()));
    let low = lo.wrapping_sub(count.wrapping_mul(M.to_bits())) as i64;
    ((big as u128) << 51).wrapping_add(low as i128 as u128)
}

/// Exact running sums of products for one block of coefficients.
struct Acc {
    hi: [u64; BLOCK],
    lo: [u64; BLOCK],
    count: u64,
}

impl Acc {
    /// Starting from `init` (values below 2^51) or zero.
    #[inline(always)]
    fn new(init: Option<&[u64]>) -> Self {
        let mut acc = Acc {
            hi: [C.to_bits(); BLOCK],
            lo: [M.to_bits(); BLOCK],
            count: 1,
        };
        if let Some(v) = init {
            for (l, &x) in acc.lo.iter_mut().zip(v) {
                *l += x;
            }
        }
        acc
    }

    #[inline(always)]
    fn push(&mut self, k: usize, x: f64, y: f64) {
        let t = x.mul_add(y, C);
        let l = x.mul_add(y, K - t);
        self.hi[k] = self.hi[k].wrapping_add(t.to_bits());
        self.lo[k] = self.lo[k].wrapping_add(l.to_bits());
    }

    /// Σ x·y for the coefficient `k`, as a 128-bit value.
    #[inline(always)]
    fn value(&self, k: usize) -> u128 {
        sum_value(self.count, self.hi[k], self.lo[k])
    }

    /// Counts a product row; folds every sum into its residue before the bounds are reached.
    #[inline(always)]
    fn counted(&mut self, m: &Modulus, len: usize) {
        self.count += 1;
        if self.count == LIMIT {
            let r: [u64; BLOCK] = std::array::from_fn(|k| {
                if k < len {
                    m.reduce_u128(self.value(k))
                } else {
                    0
                }
            });
            *self = Acc::new(Some(&r));
        }
    }

    #[inline(always)]
    fn store(&self, m: &Modulus, out: &mut [u64]) {
        for (k, o) in out.iter_mut().enumerate() {
            *o = m.reduce_u128(self.value(k));
        }
    }
}

/// out[k] = Σ_j a_j[k]·b_j[k] mod m (see [`super::kernels`]).
#[inline(always)]
fn mac_pairs_body(m: &Modulus, pairs: &[(&[u64], &[u64])], out: &mut [u64]) {
    for (start, chunk) in (0..out.len()).step_by(BLOCK).zip(out.chunks_mut(BLOCK)) {
        let len = chunk.len();
        let mut acc = Acc::new(None);
        for (a, b) in pairs {
            let (a, b) = (&a[start..start + len], &b[start..start + len]);
            for k in 0..len {
                acc.push(k, to_f64(a[k]), to_f64(b[k]));
            }
            acc.counted(m, len);
        }
        acc.store(m, chunk);
    }
}

/// outs[r][k] (+)= Σ_e weights[r·cols.len() + e]·inputs[cols[e]][k] mod m.
#[inline(always)]
fn group_product_body(
    m: &Modulus,
    cols: &[u32],
    weights: &[u64],
    inputs: &[&[u64]],
    outs: &mut [&mut [u64]],
    accumulate: bool,
) {
    let nnz = cols.len();
    for (r, out) in outs.iter_mut().enumerate() {
        let w = &weights[r * nnz..(r + 1) * nnz];
        for (start, chunk) in (0..out.len()).step_by(BLOCK).zip(out.chunks_mut(BLOCK)) {
            let len = chunk.len();
            let mut acc = Acc::new(accumulate.then_some(&*chunk));
            for (&c, &w) in cols.iter().zip(w) {
                let x = &inputs[c as usize][start..start + len];
                let wf = to_f64(w);
                for (k, &v) in x.iter().enumerate() {
                    acc.push(k, wf, to_f64(v));
                }
                acc.counted(m, len);
            }
            acc.store(m, chunk);
        }
    }
}

/// Moduli up to this size have their sums reduced four at a time in doubles ([`Fold`]); the
/// bounds there need 7q + 2^32 < 2^53.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const FOLD_BITS: u32 = 50;

/// The final reduction of four running sums at once, in AVX2 doubles: the scalar one
/// ([`sum_value`] and a 128-bit Barrett) was about half of the ~10 ns each output word cost
/// beside its products (docs/DEEP.md). With big = Σ k (< 2^63) and low = Σ l (|low| < 2^63)
/// the value is big·2^51 + low; big = b1·2^32 + b0 and low + 2^63 = h·2^32 + w give
/// value ≡ b1·(2^83 mod q) + b0·(2^51 mod q) + h·(2^32 mod q) + w − (2^63 mod q). Each of the
/// three products of a 32-bit word by a residue is reduced exactly to [−q, 2q) in doubles
/// (quotient by a multiplication, remainder by an FMA, whose true value is a small integer),
/// and their sum, below 7q + 2^32 < 2^53, once more.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Fold {
    q: std::arch::x86_64::__m256d,
    qinv: std::arch::x86_64::__m256d,
    /// (r, r/q) for r = 2^83, 2^51, 2^32 mod q
    r: [(std::arch::x86_64::__m256d, std::arch::x86_64::__m256d); 3],
    /// q − (2^63 mod q), which adds −2^63
    offset: std::arch::x86_64::__m256d,
}

#[cfg(target_arch = "x86_64")]
impl Fold {
    /// For moduli of at most [`FOLD_BITS`] bits; none for larger ones.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn new(m: &Modulus) -> Option<Fold> {
        use std::arch::x86_64::*;
        if m.bits() > FOLD_BITS {
            return None;
        }
        let q = m.value();
        let residue = |e: u32| m.reduce_u128(1u128 << e);
        let pair = |r: u64| {
            (
                _mm256_set1_pd(r as f64),
                _mm256_set1_pd(r as f64 / q as f64),
            )
        };
        Some(Fold {
            q: _mm256_set1_pd(q as f64),
            qinv: _mm256_set1_pd(1.0 / q as f64),
            r: [pair(residue(83)), pair(residue(51)), pair(residue(32))],
            offset: _mm256_set1_pd(((q - residue(63)) % q) as f64),
        })
    }

    /// The residues of four sums of `count` terms (see [`sum_value`]).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn reduce(
        &self,
        count: u64,
        hi: std::arch::x86_64::__m256i,
        lo: std::arch::x86_64::__m256i,
    ) -> std::arch::x86_64::__m256i {
        use std::arch::x86_64::*;
        let magic = _mm256_set1_epi64x(MAGIC as i64);
        let two52 = _mm256_set1_pd(TWO52);
        let mask = _mm256_set1_epi64x(0xFFFF_FFFF);
        // a word below 2^52 as a double
        let f = |x: __m256i| _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(x, magic)), two52);
        let big = _mm256_sub_epi64(
            hi,
            _mm256_set1_epi64x(count.wrapping_mul(C.to_bits()) as i64),
        );
        let shift = (1u64 << 63).wrapping_sub(count.wrapping_mul(M.to_bits()));
        let low = _mm256_add_epi64(lo, _mm256_set1_epi64x(shift as i64));
        let words = [
            _mm256_srli_epi64::<32>(big),
            _mm256_and_si256(big, mask),
            _mm256_srli_epi64::<32>(low),
        ];
        let mut t = _mm256_add_pd(f(_mm256_and_si256(low, mask)), self.offset);
        for (x, (r, rq)) in words.into_iter().zip(self.r) {
            let x = f(x);
            let quotient = _mm256_floor_pd(_mm256_mul_pd(x, rq));
            let h = _mm256_mul_pd(x, r);
            let error = _mm256_fmsub_pd(x, r, h); // x·r − h, exact
            let rem = _mm256_fnmadd_pd(quotient, self.q, h); // h − quotient·q, exact
            t = _mm256_add_pd(t, _mm256_add_pd(rem, error));
        }
        let quotient = _mm256_floor_pd(_mm256_mul_pd(t, self.qinv));
        let mut r = _mm256_fnmadd_pd(quotient, self.q, t); // in [−q, 2q)
        let zero = _mm256_setzero_pd();
        r = _mm256_add_pd(
            r,
            _mm256_and_pd(_mm256_cmp_pd::<_CMP_LT_OQ>(r, zero), self.q),
        );
        r = _mm256_sub_pd(
            r,
            _mm256_and_pd(_mm256_cmp_pd::<_CMP_GE_OQ>(r, self.q), self.q),
        );
        _mm256_xor_si256(_mm256_castpd_si256(_mm256_add_pd(r, two52)), magic)
    }
}

/// Coefficients whose running sums [`mac_pairs_stream_avx2`] keeps in L1 (2 × 2 KB).
#[cfg(target_arch = "x86_64")]
const STREAM: usize = 256;

/// [`mac_pairs_body`] pair by pair: the sums of [`STREAM`] coefficients stay in L1 while each
/// pair's words are read in one contiguous run. A map's diagonals stream from memory (a
/// ResNet's are gigabytes), and one pass per 8 coefficients over every pair, as the sums in
/// registers need, touches as many memory streams as there are pairs — more than the hardware
/// prefetchers follow, so every diagonal's load waited on memory.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn mac_pairs_stream_avx2(m: &Modulus, pairs: &[(&[u64], &[u64])], out: &mut [u64]) {
    use std::arch::x86_64::*;
    let n = out.len();
    for (a, b) in pairs {
        assert!(a.len() >= n && b.len() >= n, "pairs cover the output");
    }
    if !n.is_multiple_of(4) {
        return mac_pairs_body(m, pairs, out);
    }
    let (cv, mv, kv) = (_mm256_set1_pd(C), _mm256_set1_pd(M), _mm256_set1_pd(K));
    let (magic, two52) = (_mm256_set1_epi64x(MAGIC as i64), _mm256_set1_pd(TWO52));
    let to_f64x4 = |p: *const u64| {
        // SAFETY: the callers pass 4 readable words
        let raw = unsafe { _mm256_loadu_si256(p.cast()) };
        _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(raw, magic)), two52)
    };
    let per_chunk = LIMIT as usize - 1;
    let mut hi = [_mm256_setzero_si256(); STREAM / 4];
    let mut lo = [_mm256_setzero_si256(); STREAM / 4];
    let mut carry = [0u64; STREAM];
    for start in (0..n).step_by(STREAM) {
        let len = STREAM.min(n - start);
        let vectors = len / 4;
        carry[..len].fill(0);
        for chunk in pairs.chunks(per_chunk) {
            for v in 0..vectors {
                hi[v] = _mm256_castpd_si256(cv);
                // SAFETY: carry holds STREAM ≥ 4·(v + 1) words
                let init = unsafe { _mm256_loadu_si256(carry[4 * v..].as_ptr().cast()) };
                lo[v] = _mm256_add_epi64(_mm256_castpd_si256(mv), init);
            }
            // the product of x and y added to the sums (h, l) of 4 coefficients
            let step = |h: &mut __m256i, l: &mut __m256i, x: __m256d, y: __m256d| {
                let t = _mm256_fmadd_pd(x, y, cv);
                let lo = _mm256_fmadd_pd(x, y, _mm256_sub_pd(kv, t));
                *h = _mm256_add_epi64(*h, _mm256_castpd_si256(t));
                *l = _mm256_add_epi64(*l, _mm256_castpd_si256(lo));
            };
            // four pairs per pass: each sum is read and written once for four products
            let mut groups = chunk.chunks_exact(4);
            for g in &mut groups {
                let four: [(&[u64], &[u64]); 4] = std::array::from_fn(|j| {
                    (&g[j].0[start..start + len], &g[j].1[start..start + len])
                });
                for v in 0..vectors {
                    let (mut h, mut l) = (hi[v], lo[v]);
                    for (a, b) in &four {
                        let (x, y) = (to_f64x4(a[4 * v..].as_ptr()), to_f64x4(b[4 * v..].as_ptr()));
                        step(&mut h, &mut l, x, y);
                    }
                    (hi[v], lo[v]) = (h, l);
                }
            }
            for (a, b) in groups.remainder() {
                let (a, b) = (&a[start..start + len], &b[start..start + len]);
                for v in 0..vectors {
                    let x = to_f64x4(a[4 * v..].as_ptr());
                    let y = to_f64x4(b[4 * v..].as_ptr());
                    step(&mut hi[v], &mut lo[v], x, y);
                }
            }
            let count = chunk.len() as u64 + 1;
            let (mut h, mut l) = ([0u64; 4], [0u64; 4]);
            for v in 0..vectors {
                // SAFETY: 4 words each
                unsafe {
                    _mm256_storeu_si256(h.as_mut_ptr().cast(), hi[v]);
                    _mm256_storeu_si256(l.as_mut_ptr().cast(), lo[v]);
                }
                for k in 0..4 {
                    carry[4 * v + k] = m.reduce_u128(sum_value(count, h[k], l[k]));
                }
            }
        }
        out[start..start + len].copy_from_slice(&carry[..len]);
    }
}

/// Rows of a group whose sums are held in registers at once (each input vector loaded is used
/// by all of them), and vectors of 4 coefficients per row: 2 × 2 × (hi, lo) is 8 of the 16
/// ymm registers. 2 × 2 measured faster than 3 × 1, 3 × 2, 1 × 4 and 2 × 1 with
/// `profile_infer batched` at AVX2 (41.5 s against 44.4–50.0 s for a batch on one thread), and
/// again once the inputs came from a converted block (`bench_infer` batched at 2 threads: 731–795
/// images/s against 655–715 with 4 × 1 and 485–492 with 3 × 2).
#[cfg(target_arch = "x86_64")]
const ROWS: usize = 2;
/// Vectors of 4 coefficients per row held at once.
#[cfg(target_arch = "x86_64")]
const V: usize = 2;

/// [`group_product_body`] with the sums of [`ROWS`] rows × 4·[`V`] coefficients in registers:
/// each block's input words are converted once into one buffer that every row of the group
/// reads (not once per pair of rows from as many arrays as the group has columns: 1.6–1.7× the
/// batched throughput), the weights converted once per call, and no sum goes through memory
/// between products (the portable body keeps them in arrays: a load and a store around every
/// product; he-agg/BENCHMARKS.md has the figures).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn group_product_avx2(
    m: &Modulus,
    cols: &[u32],
    weights: &[u64],
    inputs: &[&[u64]],
    outs: &mut [&mut [u64]],
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    let n = super::batched_ops::group_shape(cols, weights, inputs, outs);
    let nnz = cols.len();
    if !n.is_multiple_of(4 * V) {
        return group_product_body(m, cols, weights, inputs, outs, accumulate);
    }
    let fold = Fold::new(m);
    // the weights as doubles once, not once per block of coefficients
    let wf: Vec<f64> = weights.iter().map(|&w| to_f64(w)).collect();
    let (cv, mv, kv) = (_mm256_set1_pd(C), _mm256_set1_pd(M), _mm256_set1_pd(K));
    let (magic, two52) = (_mm256_set1_epi64x(MAGIC as i64), _mm256_set1_pd(TWO52));
    // a chunk of columns and the sums' starting values count LIMIT terms at most
    let per_chunk = LIMIT as usize - 1;
    const W: usize = 4 * V;
    // one block's inputs as doubles, converted once for every row of the group
    let mut xf: Vec<[__m256d; V]> = vec![[_mm256_setzero_pd(); V]; nnz];
    for start in (0..n).step_by(W) {
        for (x, &c) in xf.iter_mut().zip(cols) {
            let input = inputs[c as usize];
            *x = std::array::from_fn(|v| {
                // SAFETY: start + W ≤ n ≤ the input's length (asserted above)
                let raw = unsafe { _mm256_loadu_si256(input.as_ptr().add(start + 4 * v).cast()) };
                _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(raw, magic)), two52)
            });
            // the same column two blocks on: a group reads more columns than the hardware
            // prefetchers follow (as in `wide_mac`)
            _mm_prefetch::<_MM_HINT_T0>(input.as_ptr().wrapping_add(start + 2 * W).cast());
        }
        for (r0, rows) in (0..outs.len()).step_by(ROWS).zip(outs.chunks_mut(ROWS)) {
            let live = rows.len();
            let mut carry = [[0u64; W]; ROWS];
            if accumulate {
                for (c, row) in carry.iter_mut().zip(rows.iter()) {
                    c.copy_from_slice(&row[start..start + W]);
                }
            }
            for (ci, chunk) in cols.chunks(per_chunk).enumerate() {
                let base = ci * per_chunk;
                let mut hi = [[_mm256_castpd_si256(cv); V]; ROWS];
                let mut lo: [[__m256i; V]; ROWS] = std::array::from_fn(|r| {
                    std::array::from_fn(|v| {
                        // SAFETY: carry[r] holds W = 4·V words
                        let init = unsafe { _mm256_loadu_si256(carry[r][4 * v..].as_ptr().cast()) };
                        _mm256_add_epi64(_mm256_castpd_si256(mv), init)
                    })
                });
                for (e, x) in xf[base..base + chunk.len()].iter().enumerate() {
                    for r in 0..ROWS {
                        // rows past the group's end reuse row 0's weight; never stored
                        let row = if r < live { r0 + r } else { r0 };
                        let w = _mm256_set1_pd(wf[row * nnz + base + e]);
                        for v in 0..V {
                            let t = _mm256_fmadd_pd(x[v], w, cv);
                            let l = _mm256_fmadd_pd(x[v], w, _mm256_sub_pd(kv, t));
                            hi[r][v] = _mm256_add_epi64(hi[r][v], _mm256_castpd_si256(t));
                            lo[r][v] = _mm256_add_epi64(lo[r][v], _mm256_castpd_si256(l));
                        }
                    }
                }
                let count = chunk.len() as u64 + 1;
                for r in 0..live {
                    if let Some(fold) = &fold {
                        for v in 0..V {
                            let residues = fold.reduce(count, hi[r][v], lo[r][v]);
                            // SAFETY: carry[r] holds W = 4·V words
                            unsafe {
                                _mm256_storeu_si256(carry[r][4 * v..].as_mut_ptr().cast(), residues)
                            };
                        }
                        continue;
                    }
                    let (mut h, mut l) = ([0u64; W], [0u64; W]);
                    for v in 0..V {
                        // SAFETY: 4 words each
                        unsafe {
                            _mm256_storeu_si256(h[4 * v..].as_mut_ptr().cast(), hi[r][v]);
                            _mm256_storeu_si256(l[4 * v..].as_mut_ptr().cast(), lo[r][v]);
                        }
                    }
                    for k in 0..W {
                        carry[r][k] = m.reduce_u128(sum_value(count, h[k], l[k]));
                    }
                }
            }
            for (row, c) in rows.iter_mut().zip(&carry) {
                row[start..start + W].copy_from_slice(c);
            }
        }
    }
}

/// [`mac_pairs_body`] compiled for AVX2+FMA; the caller checked [`usable`].
pub(crate) fn mac_pairs(m: &Modulus, pairs: &[(&[u64], &[u64])], out: &mut [u64]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `usable` checked the level, which set_level keeps within the CPU's (AVX2, FMA)
    unsafe {
        mac_pairs_stream_avx2(m, pairs, out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    mac_pairs_body(m, pairs, out)
}

/// [`group_product_body`] compiled for AVX2+FMA; the caller checked [`usable`].
pub(crate) fn group_product(
    m: &Modulus,
    cols: &[u32],
    weights: &[u64],
    inputs: &[&[u64]],
    outs: &mut [&mut [u64]],
    accumulate: bool,
) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as in `mac_pairs`
    unsafe {
        group_product_avx2(m, cols, weights, inputs, outs, accumulate)
    }
    #[cfg(not(target_arch = "x86_64"))]
    group_product_body(m, cols, weights, inputs, outs, accumulate)
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// [`Fold::reduce`] on four sums whose values are big·2^51 + low, against the exact residue.
    fn folded(q: u64, count: u64, sums: [(u64, i64); 4]) -> Option<[u64; 4]> {
        use std::arch::x86_64::*;
        if !std::is_x86_feature_detected!("avx2") || !std::is_x86_feature_detected!("fma") {
            return None;
        }
        let m = Modulus::new(q);
        let hi: [u64; 4] = sums.map(|(big, _)| big.wrapping_add(count.wrapping_mul(C.to_bits())));
        let lo: [u64; 4] =
            sums.map(|(_, low)| (low as u64).wrapping_add(count.wrapping_mul(M.to_bits())));
        let mut out = [0u64; 4];
        // SAFETY: AVX2 and FMA were detected; four words each
        unsafe {
            let fold = Fold::new(&m)?;
            let r = fold.reduce(
                count,
                _mm256_loadu_si256(hi.as_ptr().cast()),
                _mm256_loadu_si256(lo.as_ptr().cast()),
            );
            _mm256_storeu_si256(out.as_mut_ptr().cast(), r);
        }
        Some(out)
    }

    fn exact(q: u64, (big, low): (u64, i64)) -> u64 {
        (((big as i128) << 51) + low as i128).rem_euclid(q as i128) as u64
    }

    const MODULI: [u64; 4] = [1125899906842597, 1099511480321, 1 << 30 | 3, 65537];

    #[test]
    fn sums_at_their_bounds_reduce_exactly() {
        let big_max = (1u64 << 63) - 1;
        let edges = [
            (big_max, i64::MAX),
            (big_max, i64::MIN + 1),
            (0, 0),
            (0, i64::MAX),
            (1, -(1i64 << 51)),
            (big_max, 0),
            (1 << 32, -1),
            ((1 << 32) - 1, 1),
        ];
        for q in MODULI {
            for chunk in edges.chunks(4) {
                let sums: [(u64, i64); 4] = std::array::from_fn(|k| chunk[k]);
                for count in [1, 2, 4095] {
                    let Some(got) = folded(q, count, sums) else {
                        return;
                    };
                    assert_eq!(got, sums.map(|s| exact(q, s)), "q = {q}, count {count}");
                }
            }
        }
        // above FOLD_BITS the scalar reduction stays
        // SAFETY: folded() above returned, so AVX2 and FMA are present
        assert!(unsafe { Fold::new(&Modulus::new(2251799813554177)) }.is_none());
    }

    proptest! {
        #[test]
        fn any_sum_reduces_like_the_128_bit_barrett(
            big in proptest::collection::vec(0u64..(1 << 63), 4),
            low in proptest::collection::vec(any::<i64>(), 4),
            k in 0usize..4,
            count in 1u64..4096,
        ) {
            let q = MODULI[k];
            // a sum's value is never negative
            let sums: [(u64, i64); 4] = std::array::from_fn(|j| {
                let low = if big[j] == 0 { low[j].wrapping_abs().max(0) } else { low[j].max(i64::MIN + 1) };
                (big[j], low)
            });
            if let Some(got) = folded(q, count, sums) {
                for (j, s) in sums.iter().enumerate() {
                    let want = Modulus::new(q).reduce_u128(sum_value(
                        count,
                        s.0.wrapping_add(count.wrapping_mul(C.to_bits())),
                        (s.1 as u64).wrapping_add(count.wrapping_mul(M.to_bits())),
                    ));
                    prop_assert_eq!(got[j], want);
                    prop_assert_eq!(got[j], exact(q, *s));
                }
            }
        }
    }
}
