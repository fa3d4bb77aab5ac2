//! The aggregation kernel's arithmetic, operation for operation, in Rust: `fold` here does what
//! one launch of `heal_fold` (see [`super::kernels`]) does, thread by thread. It runs on any
//! machine, so the tests check the kernel's exact arithmetic against the CPU backend without a
//! GPU; the GPU tests then only have to show that the device agrees with this.

/// The per-(input, limb) multiplier of the kernel: the weight reduced modulo the limb's prime
/// and its Shoup companion ⌊w·2^64/q⌋, so that the device needs one high and two low 64-bit
/// multiplications per input word and no 128-bit arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct WeightConst {
    pub w: u64,
    pub w_shoup: u64,
}

impl WeightConst {
    /// The constant for `weight` modulo `q` (q < 2^62, as every ring modulus).
    pub fn new(weight: u64, q: u64) -> Self {
        let w = weight % q;
        Self {
            w,
            w_shoup: ((u128::from(w) << 64) / u128::from(q)) as u64,
        }
    }
}

/// `__umul64hi`: the high word of the 128-bit product.
#[inline(always)]
pub fn umul64hi(a: u64, b: u64) -> u64 {
    ((u128::from(a) * u128::from(b)) >> 64) as u64
}

/// The kernel's conditional subtraction (r < 2q).
#[inline(always)]
fn csub(r: u64, q: u64) -> u64 {
    if r >= q { r - q } else { r }
}

/// x·w mod q for any x < 2^64 (Shoup: the quotient estimate is at most one short).
#[inline(always)]
pub fn mul_shoup(x: u64, c: WeightConst, q: u64) -> u64 {
    let qhat = umul64hi(x, c.w_shoup);
    csub(x.wrapping_mul(c.w).wrapping_sub(qhat.wrapping_mul(q)), q)
}

/// What one launch computes. `acc` holds words `first..first + acc.len()` of the accumulator
/// (component-major, then limb-major, N words per limb); `inputs` holds `count` inputs of
/// `acc.len()` words each, back to back; `consts[j·level + limb]` is input j's multiplier for
/// the limb; `moduli[limb]` its prime. Every accumulator word stays below its prime.
#[allow(clippy::too_many_arguments)]
pub fn fold(
    acc: &mut [u64],
    first: usize,
    inputs: &[u64],
    count: usize,
    log_n: u32,
    level: usize,
    moduli: &[u64],
    consts: &[WeightConst],
) {
    let span = acc.len();
    for (i, a) in acc.iter_mut().enumerate() {
        // one thread: word t of the accumulator
        let t = first + i;
        let limb = (t >> log_n) % level;
        let q = moduli[limb];
        let mut sum = *a;
        for j in 0..count {
            let x = inputs[j * span + i];
            let term = mul_shoup(x, consts[j * level + limb], q);
            sum = csub(sum + term, q);
        }
        *a = sum;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::aggregate::{Aggregator, CpuBackend, Shape};
    use crate::ckks::{Ciphertext, CkksContext, Parameters};
    use crate::ring::Prng;

    /// The sum as the kernel computes it, launched in word ranges of `span` and input groups of
    /// `group` (as the device streams them), over a whole batch.
    fn kernel_sum(
        ctx: &CkksContext,
        cts: &[Ciphertext],
        weights: &[u64],
        span: usize,
        group: usize,
    ) -> Vec<u64> {
        let level = cts[0].level();
        let n = ctx.n();
        let moduli: Vec<u64> = (0..level)
            .map(|i| ctx.rlwe().q_modulus(i).value())
            .collect();
        let words = cts[0].parts.len() * level * n;
        let flat: Vec<Vec<u64>> = cts
            .iter()
            .map(|c| {
                c.parts
                    .iter()
                    .flat_map(|p| p.data().iter().copied())
                    .collect()
            })
            .collect();
        let mut acc = vec![0u64; words];
        for first in (0..words).step_by(span) {
            let end = (first + span).min(words);
            for (g, chunk) in flat.chunks(group).enumerate() {
                let mut inputs = Vec::new();
                let mut consts = Vec::new();
                for (k, x) in chunk.iter().enumerate() {
                    inputs.extend_from_slice(&x[first..end]);
                    let w = weights[g * group + k];
                    consts.extend(moduli.iter().map(|&q| WeightConst::new(w, q)));
                }
                fold(
                    &mut acc[first..end],
                    first,
                    &inputs,
                    chunk.len(),
                    n.trailing_zeros(),
                    level,
                    &moduli,
                    &consts,
                );
            }
        }
        acc
    }

    fn cpu_sum(ctx: &Arc<CkksContext>, cts: &[Ciphertext], weights: &[u64]) -> Vec<u64> {
        let shape = Shape {
            level: cts[0].level(),
            degree: cts[0].degree(),
            scale: cts[0].scale,
        };
        let mut agg = Aggregator::new(ctx, &CpuBackend, shape, 7).unwrap();
        for (c, &w) in cts.iter().zip(weights) {
            agg.push(c.clone(), w).unwrap();
        }
        let sum = agg.finish().unwrap();
        sum.parts
            .iter()
            .flat_map(|p| p.data().iter().copied())
            .collect()
    }

    /// Ciphertexts with uniformly random residues (every word below its prime, as validation
    /// guarantees), including the extreme residues 0 and q − 1.
    fn random_cts(ctx: &CkksContext, count: usize, degree: usize, seed: u8) -> Vec<Ciphertext> {
        let level = ctx.max_level();
        let n = ctx.n();
        let mut prng = Prng::from_seed(&[seed; 32]);
        (0..count)
            .map(|j| Ciphertext {
                parts: (0..=degree)
                    .map(|_| {
                        let mut data = Vec::with_capacity(level * n);
                        for i in 0..level {
                            let q = ctx.rlwe().q_modulus(i).value();
                            data.extend((0..n).map(|k| match (j + k) % 97 {
                                0 => q - 1,
                                1 => 0,
                                _ => prng.next_u64() % q,
                            }));
                        }
                        crate::ring::Poly::from_data(n, data)
                    })
                    .collect(),
                scale: ctx.default_scale(),
            })
            .collect()
    }

    fn ctx() -> Arc<CkksContext> {
        CkksContext::new(Parameters::insecure_for_tests(11, &[60, 60, 50], &[], 1, 40.0).unwrap())
            .unwrap()
    }

    #[test]
    fn kernel_arithmetic_equals_the_cpu_backend_bit_for_bit() {
        let ctx = ctx();
        let mut prng = Prng::from_seed(&[9; 32]);
        for degree in [0usize, 1, 2] {
            let cts = random_cts(&ctx, 13, degree, degree as u8);
            let words = (degree + 1) * ctx.max_level() * ctx.n();
            for weights in [
                vec![1u64; 13],
                // the largest weight the aggregator accepts, and weights above every prime
                // of the chain (reduced on the host before the launch)
                vec![1u64 << 40; 13],
                (0..13)
                    .map(|_| 1 + prng.next_u64() % (1 << 40))
                    .collect::<Vec<_>>(),
            ] {
                let want = cpu_sum(&ctx, &cts, &weights);
                // whole launches, word ranges that cut limbs and components, odd input groups
                for (span, group) in [(words, 13), (1000, 4), (ctx.n(), 1), (777, 5)] {
                    assert_eq!(
                        kernel_sum(&ctx, &cts, &weights, span, group),
                        want,
                        "degree {degree}, span {span}, group {group}"
                    );
                }
            }
        }
    }

    #[test]
    fn shoup_constants_are_exact_at_the_edges() {
        for q in [
            65537u64,
            1099511480321,
            1152921504606830593,
            4611686018427322369,
        ] {
            for w in [0u64, 1, q - 1, q, q + 1, 1 << 40, (1 << 62) - 1] {
                let c = WeightConst::new(w, q);
                for x in [0u64, 1, q - 1, q, u64::MAX] {
                    let want = ((u128::from(x) * u128::from(w % q)) % u128::from(q)) as u64;
                    assert_eq!(mul_shoup(x, c, q), want, "q {q} w {w} x {x}");
                }
            }
        }
    }
}
