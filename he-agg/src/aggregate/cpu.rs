//! The CPU backend: the accumulator is a ciphertext-sized array of words; a batch is folded in
//! one pass over it, summing each coefficient's weighted terms in 128 bits and reducing once
//! (lazy reduction). Rayon splits the pass into cache-sized chunks across all cores.

use std::sync::Arc;

use rayon::prelude::*;

use crate::ckks::{Ciphertext, CkksContext};
use crate::ring::{Modulus, Poly};

use super::backend::{Accumulator, Backend};
use super::error::AggregateError;
use super::shape::Shape;

/// Words per parallel work item: big enough to amortise scheduling, small enough to balance.
const CHUNK: usize = 2048;
/// Words whose partial sums stay in registers/L1 while every input of a group streams past.
const BLOCK: usize = 256;
/// A group's weights sum below this, so the 32-bit-split partial sums cannot overflow.
const GROUP_WEIGHT: u64 = 1 << 32;

/// Splits a batch into groups whose weights sum below 2^32 (a weight of 2^32 or more is a group
/// of its own and takes the 128-bit path).
fn weight_groups(batch: &[(&Ciphertext, u64)]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut sum = u64::MAX;
    for (j, &(_, w)) in batch.iter().enumerate() {
        if w < GROUP_WEIGHT && sum.checked_add(w).is_some_and(|s| s < GROUP_WEIGHT) {
            sum += w;
            groups.last_mut().expect("a group is open").push(j);
        } else {
            sum = if w < GROUP_WEIGHT { w } else { u64::MAX };
            groups.push(vec![j]);
        }
    }
    groups
}

crate::simd::dispatch! {
    /// acc[k] ← acc[k] + Σ_j w_j·x_j[k] mod q. With Σ w_j < 2^32, each input is split into 32-bit
    /// halves and w·half summed in 64-bit lanes (products of 32-bit values, which vectorise), one
    /// reduction per word at the end; a single weight ≥ 2^32 goes through 128-bit products.
    fn fold_block(m: &Modulus, acc: &mut [u64], xs: &[&[u64]], weights: &[u64]) {
        let len = acc.len();
        if weights.iter().sum::<u64>() >= GROUP_WEIGHT {
            for (x, &w) in xs.iter().zip(weights) {
                for (a, &v) in acc.iter_mut().zip(x.iter()) {
                    *a = m.reduce_u128(u128::from(*a) + u128::from(w) * u128::from(v));
                }
            }
            return;
        }
        let mut lo = [0u64; BLOCK];
        let mut hi = [0u64; BLOCK];
        for (x, &w) in xs.iter().zip(weights) {
            let w = u64::from(w as u32);
            for ((l, h), &v) in lo[..len].iter_mut().zip(hi[..len].iter_mut()).zip(x.iter()) {
                *l += w * u64::from(v as u32);
                *h += w * (v >> 32);
            }
        }
        for ((a, &l), &h) in acc.iter_mut().zip(&lo[..len]).zip(&hi[..len]) {
            *a = m.reduce_u128(u128::from(*a) + u128::from(l) + (u128::from(h) << 32));
        }
    }
}

/// All cores of the machine (or of the current rayon pool).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuBackend;

impl Backend for CpuBackend {
    fn name(&self) -> &str {
        "cpu"
    }

    fn accumulator(
        &self,
        ctx: &Arc<CkksContext>,
        shape: Shape,
    ) -> Result<Box<dyn Accumulator>, AggregateError> {
        let words = (shape.degree + 1) * shape.level * ctx.n();
        Ok(cpu_accumulator_from(ctx, shape, vec![0; words]))
    }
}

/// A CPU accumulator that starts from a partial sum (reduced words in the accumulator's
/// layout): where a GPU accumulator continues after its device failed.
pub(crate) fn cpu_accumulator_from(
    ctx: &Arc<CkksContext>,
    shape: Shape,
    data: Vec<u64>,
) -> Box<dyn Accumulator> {
    let n = ctx.n();
    debug_assert_eq!(data.len(), (shape.degree + 1) * shape.level * n);
    let moduli = (0..shape.level).map(|i| *ctx.rlwe().q_modulus(i)).collect();
    Box::new(CpuAccumulator {
        n,
        level: shape.level,
        parts: shape.degree + 1,
        moduli,
        data,
    })
}

struct CpuAccumulator {
    n: usize,
    level: usize,
    parts: usize,
    moduli: Vec<Modulus>,
    /// component-major, then limb-major: word (p·level + i)·n + k
    data: Vec<u64>,
}

impl Accumulator for CpuAccumulator {
    fn fold(&mut self, batch: &[(&Ciphertext, u64)]) -> Result<(), AggregateError> {
        let (n, level) = (self.n, self.level);
        let moduli = &self.moduli;
        let chunk = CHUNK.min(n);
        let groups = weight_groups(batch);
        let fold_chunk = |(c, acc): (usize, &mut [u64])| {
            let start = c * chunk;
            let row = start / n;
            let (part, limb, offset) = (row / level, row % level, start % n);
            let m = &moduli[limb];
            for group in &groups {
                let inputs: Vec<&[u64]> = group
                    .iter()
                    .map(|&j| &batch[j].0.parts[part].limb(limb)[offset..offset + acc.len()])
                    .collect();
                let weights: Vec<u64> = group.iter().map(|&j| batch[j].1).collect();
                for (b, block) in acc.chunks_mut(BLOCK).enumerate() {
                    let at = b * BLOCK;
                    let xs: Vec<&[u64]> = inputs.iter().map(|x| &x[at..at + block.len()]).collect();
                    fold_block(m, block, &xs, &weights);
                }
            }
        };
        let words = self.data.len();
        if words >= 4 * chunk && rayon::current_num_threads() > 1 {
            self.data
                .par_chunks_mut(chunk)
                .enumerate()
                .for_each(fold_chunk);
        } else {
            self.data.chunks_mut(chunk).enumerate().for_each(fold_chunk);
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Vec<Poly>, AggregateError> {
        let part_words = self.level * self.n;
        Ok(self
            .data
            .chunks(part_words)
            .map(|p| Poly::from_data(self.n, p.to_vec()))
            .take(self.parts)
            .collect())
    }
}
