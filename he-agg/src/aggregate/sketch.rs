//! A secret-keyed linear sketch of a list of ciphertexts, so a party that holds the key can check
//! that an aggregate is the weighted sum of the contributions it was told of, without the
//! contributions themselves: sketch(Σ wᵢ·ctᵢ) = Σ wᵢ·sketch(ctᵢ) mod each qⱼ.
//!
//! For each modulus qⱼ of the level and each of [`SKETCHES`] rows, the sketch is Σ r·x mod qⱼ
//! over every residue x (every coefficient of every part of every ciphertext), with 32-bit r from
//! a BLAKE3 XOF keyed by the seed and the ciphertext's index (so ciphertexts are sketched in
//! parallel, while they are encrypted); the same r serves every modulus, so a sketch taken at a
//! lower level is a prefix.
//! Whoever does not know the key cannot make another list pass: a difference that is non-zero
//! mod some qⱼ passes one row with probability at most 2^-32, so [`SKETCHES`] = 2 rows give
//! 2^-64. Whoever knows the key can (the check binds only parties without it).

use crate::ckks::{Ciphertext, CkksContext};

/// Independent rows per modulus.
pub const SKETCHES: usize = 2;

/// Values in a sketch of ciphertexts at `level`.
pub fn sketch_len(level: usize) -> usize {
    level * SKETCHES
}

/// The sketch of `cts` (all of the same level and degree) under `seed`: [`SKETCHES`] values per
/// modulus of the level, modulus-major. Each ciphertext's part is independent (its r come from
/// the XOF keyed by `seed` and its index), so they are taken in parallel and summed.
pub fn sketch(ctx: &CkksContext, seed: &[u8; 32], cts: &[Ciphertext]) -> Vec<u64> {
    use rayon::prelude::*;
    let level = cts.first().map_or(0, Ciphertext::level);
    let parts: Vec<Vec<u64>> = cts
        .par_iter()
        .enumerate()
        .map(|(i, ct)| sketch_one(ctx, seed, i, ct))
        .collect();
    sum_parts(ctx, level, &parts)
}

/// The part of ciphertext number `index` of a list in its sketch.
pub(crate) fn sketch_one(
    ctx: &CkksContext,
    seed: &[u8; 32],
    index: usize,
    ct: &Ciphertext,
) -> Vec<u64> {
    let ring = ctx.rlwe().ring();
    let n = ctx.n();
    let level = ct.level();
    let mut acc = vec![0u128; sketch_len(level)];
    let mut xof = blake3::Hasher::new_keyed(seed);
    xof.update(&(index as u64).to_le_bytes());
    let mut xof = xof.finalize_xof();
    let mut bytes = vec![0u8; n * 4 * SKETCHES];
    let mut r = vec![0u64; n * SKETCHES];
    for part in &ct.parts {
        xof.fill(&mut bytes);
        for (v, b) in r.iter_mut().zip(bytes.chunks_exact(4)) {
            *v = u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        }
        for j in 0..level.min(part.limbs()) {
            let limb = part.limb(j);
            for s in 0..SKETCHES {
                // r < 2^32 and x < 2^62: 2^94 per term, 2^110 for a whole ciphertext
                let rows = r[s * n..(s + 1) * n].iter();
                acc[j * SKETCHES + s] += rows
                    .zip(limb)
                    .map(|(&r, &x)| u128::from(r) * u128::from(x))
                    .sum::<u128>();
            }
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
