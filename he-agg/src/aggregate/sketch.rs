//! A secret-keyed linear sketch of the c₁ parts of a list of ciphertexts, so a party that holds
//! the key can check that what it is asked to switch is the c₁ of the weighted sum of the
//! contributions it was told of, without the contributions themselves:
//! sketch(Σ wᵢ·c₁ᵢ) = Σ wᵢ·sketch(c₁ᵢ) mod each qⱼ.
//!
//! Only c₁ is sketched because only c₁ reaches a switching party: its share is s_i·c₁ plus a
//! mask, and c₀ is added by whoever combines the shares. Whatever c₀ the coordinator then uses,
//! the result decrypts to (c₀ − c₀ of the sum) + the sum, which tells the coordinator nothing
//! it did not know; binding c₁ is what keeps one hospital's update from being switched alone.
//!
//! For each modulus qⱼ of the level and each of [`SKETCHES`] rows, the sketch is Σ r·x mod qⱼ
//! over every residue x of every c₁, with 32-bit r from a BLAKE3 XOF keyed by the seed and the
//! ciphertext's index (so ciphertexts are sketched in parallel, while they are encrypted); the
//! same r serves every modulus, so a sketch taken at a lower level is a prefix.
//! Whoever does not know the key cannot make another list pass: a difference that is non-zero
//! mod some qⱼ passes one row with probability at most 2^-32, so [`SKETCHES`] = 2 rows give
//! 2^-64. Whoever knows the key can (the check binds only parties without it).

use crate::ckks::{Ciphertext, CkksContext};
use crate::multiparty::SwitchInput;
use crate::ring::Poly;

/// Independent rows per modulus.
pub const SKETCHES: usize = 2;

/// Values in a sketch of ciphertexts at `level`.
pub fn sketch_len(level: usize) -> usize {
    level * SKETCHES
}

/// The sketch of the c₁ of `cts` (all of the same level, degree 1) under `seed`: [`SKETCHES`]
/// values per modulus of the level, modulus-major. Each ciphertext's part is independent (its
/// r come from the XOF keyed by `seed` and its index), so they are taken in parallel and summed.
pub fn sketch(ctx: &CkksContext, seed: &[u8; 32], cts: &[Ciphertext]) -> Vec<u64> {
    sketch_c1s(ctx, seed, cts.iter().map(|ct| &ct.parts[1]).collect())
}

/// The sketch of switch inputs: the same as [`sketch`] of the ciphertexts they were made from.
pub fn sketch_inputs(ctx: &CkksContext, seed: &[u8; 32], inputs: &[SwitchInput]) -> Vec<u64> {
    sketch_c1s(ctx, seed, inputs.iter().map(SwitchInput::c1).collect())
}

fn sketch_c1s(ctx: &CkksContext, seed: &[u8; 32], c1s: Vec<&Poly>) -> Vec<u64> {
    use rayon::prelude::*;
    let level = c1s.first().map_or(0, |p| p.limbs());
    let parts: Vec<Vec<u64>> = c1s
        .par_iter()
        .enumerate()
        .map(|(i, c1)| sketch_one(ctx, seed, i, c1))
        .collect();
    sum_parts(ctx, level, &parts)
}

/// The part of the c₁ of ciphertext number `index` of a list in its sketch.
pub(crate) fn sketch_one(ctx: &CkksContext, seed: &[u8; 32], index: usize, c1: &Poly) -> Vec<u64> {
    let ring = ctx.rlwe().ring();
    let n = ctx.n();
    let level = c1.limbs();
    let mut acc = vec![0u128; sketch_len(level)];
    let mut xof = blake3::Hasher::new_keyed(seed);
    xof.update(&(index as u64).to_le_bytes());
    let mut xof = xof.finalize_xof();
    let mut bytes = vec![0u8; n * 4 * SKETCHES];
    xof.fill(&mut bytes);
    let r: Vec<u64> = bytes
        .chunks_exact(4)
        .map(|b| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
        .collect();
    for j in 0..level {
        let limb = c1.limb(j);
        for s in 0..SKETCHES {
            // r < 2^32 and x < 2^62: 2^94 per term, below 2^110 for a limb of N ≤ 2^16
            let rows = r[s * n..(s + 1) * n].iter();
            acc[j * SKETCHES + s] += rows
                .zip(limb)
                .map(|(&r, &x)| u128::from(r) * u128::from(x))
                .sum::<u128>();
        }
    }
    acc.iter()
        .enumerate()
        .map(|(i, &a)| (a % u128::from(ring.modulus(i / SKETCHES).value())) as u64)
        .collect()
}

/// The sum of the parts of a list's ciphertexts.
pub(crate) fn sum_parts(ctx: &CkksContext, level: usize, parts: &[Vec<u64>]) -> Vec<u64> {
    combine(ctx, level, parts.iter().map(|p| (1, p.as_slice()))).unwrap_or_default()
}

/// Σ weight·sketch mod each modulus, for sketches of `level`; `None` if one is of another length.
pub fn combine<'a>(
    ctx: &CkksContext,
    level: usize,
    parts: impl IntoIterator<Item = (u64, &'a [u64])>,
) -> Option<Vec<u64>> {
    let ring = ctx.rlwe().ring();
    let mut acc = vec![0u64; sketch_len(level)];
    for (w, s) in parts {
        if s.len() != acc.len() {
            return None;
        }
        for (i, (a, &v)) in acc.iter_mut().zip(s).enumerate() {
            let q = u128::from(ring.modulus(i / SKETCHES).value());
            *a = ((u128::from(*a) + u128::from(w) * u128::from(v) % q) % q) as u64;
        }
    }
    Some(acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::shape::Shape;
    use crate::aggregate::{Aggregator, CpuBackend};
    use crate::ckks::{Parameters, Preset};

    fn ciphertexts(ctx: &std::sync::Arc<CkksContext>, count: usize, x: f64) -> Vec<Ciphertext> {
        let sk = ctx.key_generator().unwrap().secret_key();
        let mut enc = ctx.sk_encryptor(&sk).unwrap();
        (0..count)
            .map(|i| {
                enc.encrypt(
                    &ctx.encode_real_pairs(&[x + i as f64; 8], ctx.max_level(), 2f64.powi(40))
                        .unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn the_sketch_of_a_weighted_sum_is_the_weighted_sum_of_sketches_and_nothing_else_passes() {
        let ctx = CkksContext::new(Parameters::preset(Preset::Aggregation)).unwrap();
        let seed = [7u8; 32];
        let a = ciphertexts(&ctx, 3, 1.0);
        let b = ciphertexts(&ctx, 3, 5.0);
        let level = a[0].level();
        let shape = Shape {
            level,
            degree: 1,
            scale: a[0].scale,
        };
        let sum: Vec<Ciphertext> = (0..3)
            .map(|i| {
                let mut agg = Aggregator::new(&ctx, &CpuBackend, shape, 2).unwrap();
                agg.push(a[i].clone(), 17).unwrap();
                agg.push(b[i].clone(), 250).unwrap();
                agg.finish().unwrap()
            })
            .collect();
        let (sa, sb) = (sketch(&ctx, &seed, &a), sketch(&ctx, &seed, &b));
        assert_eq!(sa.len(), sketch_len(level));
        let want = combine(&ctx, level, [(17, sa.as_slice()), (250, sb.as_slice())]).unwrap();
        assert_eq!(sketch(&ctx, &seed, &sum), want);
        // one contribution presented as the sum, another weight, or one residue changed: refused
        assert_ne!(sketch(&ctx, &seed, &a), want);
        let w = combine(&ctx, level, [(18, sa.as_slice()), (250, sb.as_slice())]).unwrap();
        assert_ne!(sketch(&ctx, &seed, &sum), w);
        let mut forged = sum.clone();
        forged[1].parts[1].limb_mut(0)[4095] ^= 1;
        assert_ne!(sketch(&ctx, &seed, &forged), want);
        // c₀ is not sketched (no switching party sees it); switch inputs sketch as their
        // ciphertexts
        let mut other_c0 = sum.clone();
        other_c0[1].parts[0].limb_mut(0)[7] ^= 1;
        assert_eq!(sketch(&ctx, &seed, &other_c0), want);
        let inputs: Vec<SwitchInput> = sum.iter().map(|c| SwitchInput::of(c).unwrap()).collect();
        assert_eq!(sketch_inputs(&ctx, &seed, &inputs), want);
        // another key gives another sketch; a sketch of another length does not combine
        assert_ne!(sketch(&ctx, &[8u8; 32], &sum), want);
        assert!(combine(&ctx, level, [(1, &sa[1..])]).is_none());
    }

    #[test]
    fn an_update_sketched_while_encrypted_has_the_sketch_of_its_decoded_ciphertexts() {
        use crate::aggregate::{AggregationPlan, HeSettings, UpdateCodec};
        let ctx = CkksContext::new(Parameters::preset(Preset::Aggregation)).unwrap();
        let plan = AggregationPlan::from_settings(&ctx, &HeSettings::default(), 3, 2).unwrap();
        let codec = UpdateCodec::new(ctx.clone(), plan);
        let mut kg = ctx.key_generator().unwrap();
        let sk = kg.secret_key();
        let pk = kg.public_key(&sk);
        let values: Vec<f32> = (0..20_000)
            .map(|i| (i as f32 * 1e-4).sin() * 0.01)
            .collect();
        let (items, s) = codec.encrypt_sketched(&pk, &values, &[3; 32]).unwrap();
        assert_eq!(items.len(), codec.ciphertexts_for(values.len()));
        let cts: Vec<Ciphertext> = items
            .iter()
            .enumerate()
            .map(|(i, b)| codec.decode(i, b).unwrap())
            .collect();
        assert_eq!(sketch(&ctx, &[3; 32], &cts), s);
    }
}
