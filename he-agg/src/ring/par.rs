//! Limb-level parallelism. Rayon's fork/join costs a few microseconds, about what a light pass
//! over one limb of 8192 words costs, so light passes (additions, permutations) split across
//! threads only when there are many limbs, and heavy ones (NTTs, key-switching products) as soon
//! as there are two. A pool of one thread always runs the plain loop.

use rayon::prelude::*;

/// Light passes go parallel from this many words (16 limbs of 2^13).
const LIGHT_PAR_WORDS: usize = 1 << 17;

fn run<T: Send, F>(data: &mut [T], n: usize, parallel: bool, f: F)
where
    F: Fn(usize, &mut [T]) + Sync + Send,
{
    if parallel && data.len() > n && rayon::current_num_threads() > 1 {
        data.par_chunks_mut(n)
            .enumerate()
            .for_each(|(i, limb)| f(i, limb));
    } else {
        data.chunks_mut(n)
            .enumerate()
            .for_each(|(i, limb)| f(i, limb));
    }
}

/// Calls `f(i, limb_i)` for every limb of `data` (limb-major, `n` words each): a light pass.
/// (Words are `u64`, or `MaybeUninit<u64>` for a buffer the pass fills: [`super::Poly::written`].)
#[inline]
pub fn for_each_limb<T: Send, F>(data: &mut [T], n: usize, f: F)
where
    F: Fn(usize, &mut [T]) + Sync + Send,
{
    run(data, n, data.len() >= LIGHT_PAR_WORDS, f);
}

/// As [`for_each_limb`], for passes that cost an NTT or more per limb.
#[inline]
pub fn for_each_limb_heavy<T: Send, F>(data: &mut [T], n: usize, f: F)
where
    F: Fn(usize, &mut [T]) + Sync + Send,
{
    run(data, n, true, f);
}

/// Calls `f(i, a_i, b_i)` for every limb pair of two polynomials of the same shape: a heavy pass
/// that makes two outputs from the same inputs (both components of a key switch).
pub fn for_each_limb_pair_heavy<T: Send, F>(a: &mut [T], b: &mut [T], n: usize, f: F)
where
    F: Fn(usize, &mut [T], &mut [T]) + Sync + Send,
{
    debug_assert_eq!(a.len(), b.len());
    if a.len() > n && rayon::current_num_threads() > 1 {
        a.par_chunks_mut(n)
            .zip(b.par_chunks_mut(n))
            .enumerate()
            .for_each(|(i, (x, y))| f(i, x, y));
    } else {
        a.chunks_mut(n)
            .zip(b.chunks_mut(n))
            .enumerate()
            .for_each(|(i, (x, y))| f(i, x, y));
    }
}
