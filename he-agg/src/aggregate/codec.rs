//! The one codec of model updates: a hospital encrypts its update under its own secret (N reals
//! per ciphertext, at the plan's level and scale; c0 and a seed travel) and decrypts a switched
//! sum; the coordinator and a switching
//! hospital decode and check what arrives. Both ends use this, so the packing, the level and the
//! scale are written once.

use std::sync::Arc;

use rayon::prelude::*;

use crate::ckks::wire::{self, WireError};
use crate::ckks::{Ciphertext, CkksContext, CkksError, SecretKey};
use crate::multiparty::wire as mpw;
use crate::ring::{Prng, Seed};

use super::plan::AggregationPlan;

/// Why an update or a sum cannot be encoded, decoded or decrypted.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("ciphertext {index}: {source}")]
    Wire {
        index: usize,
        #[source]
        source: WireError,
    },
    #[error(
        "ciphertext {index} is at level {level}, degree {degree}, scale 2^{log_scale:.2}; the \
         round takes level {want_level}, degree 1, scale 2^{want_log_scale:.2}"
    )]
    Shape {
        index: usize,
        level: usize,
        degree: usize,
        log_scale: f64,
        want_level: usize,
        want_log_scale: f64,
    },
    #[error("{items} ciphertexts hold {held} values; the model has {values}")]
    Count {
        items: usize,
        held: usize,
        values: usize,
    },
    #[error(
        "value {index} of the decrypted average is {value:e}, outside ±{bound:e} (the clip bound \
         and the noise): a contribution was malformed"
    )]
    OutOfRange {
        index: usize,
        value: f64,
        bound: f64,
    },
    #[error("ciphertext {index}'s a is not expanded from its update's signed seed")]
    Seed { index: usize },
    #[error("a total weight of {0} to divide by")]
    Weight(f64),
    #[error("cannot start the {0}")]
    Setup(String),
    #[error(transparent)]
    Ckks(#[from] CkksError),
}

/// Encrypts updates and decrypts sums of one federation's rounds.
#[derive(Clone, Debug)]
pub struct UpdateCodec {
    ctx: Arc<CkksContext>,
    plan: AggregationPlan,
}

impl UpdateCodec {
    pub fn new(ctx: Arc<CkksContext>, plan: AggregationPlan) -> Self {
        Self { ctx, plan }
    }

    pub fn context(&self) -> &Arc<CkksContext> {
        &self.ctx
    }

    pub fn plan(&self) -> &AggregationPlan {
        &self.plan
    }

    /// Ciphertexts of an update of `values` reals (N per ciphertext).
    pub fn ciphertexts_for(&self, values: usize) -> usize {
        values.div_ceil(self.ctx.n())
    }

    /// The update `values` encrypted under this hospital's own secret `sk` (its share s_k of
    /// the collective secret), N reals per ciphertext, on the current rayon pool: ciphertext k
    /// travels as c0 = −a_k·s_k + m + e and the seed of a_k ([`item_seed`] of the update's
    /// seed, fresh from the CSPRNG, so a re-encrypted update never reuses an a), a_k expanded by
    /// AES-128-CTR. Returns the wire items and the update's seed, which the hospital signs
    /// ([`crate::multiparty::ReceiveSwitch::share_updates`] expands the a's from it).
    pub fn encrypt<T: Copy + Into<f64> + Sync>(
        &self,
        sk: &SecretKey,
        values: &[T],
    ) -> Result<(Vec<Vec<u8>>, Seed), CodecError> {
        let ctx = &self.ctx;
        let update_seed = Prng::from_os()
            .map_err(|e| CodecError::Setup(format!("update seed: {e}")))?
            .seed();
        let items = values
            .par_chunks(ctx.n())
            .enumerate()
            .map_init(
                || ctx.sk_encryptor(sk).map_err(|e| format!("encryptor: {e}")),
                |enc, (k, chunk)| -> Result<Vec<u8>, CodecError> {
                    let enc = enc.as_mut().map_err(|e| CodecError::Setup(e.clone()))?;
                    let v: Vec<f64> = chunk.iter().map(|&x| x.into()).collect();
                    let pt = ctx.encode_real_pairs(&v, self.plan.level, self.plan.scale)?;
                    let ct = enc.encrypt_seeded_aes(&pt, item_seed(&update_seed, k));
                    Ok(wire::encode_seeded_update(ctx, &ct))
                },
            )
            .collect::<Result<_, _>>()?;
        Ok((items, update_seed))
    }

    /// An update ciphertext as received: well formed, of these parameters, at the plan's level
    /// and scale. Returned as its c0 alone (a degree-0 [`Ciphertext`], what the coordinator
    /// sums) and the seed of its a. `index` names it in errors.
    pub fn decode(&self, index: usize, bytes: &[u8]) -> Result<(Ciphertext, Seed), CodecError> {
        let ct = wire::decode_seeded_update(&self.ctx, bytes)
            .map_err(|source| CodecError::Wire { index, source })?;
        if ct.level() != self.plan.level || ct.scale.to_bits() != self.plan.scale.to_bits() {
            return Err(CodecError::Shape {
                index,
                level: ct.level(),
                degree: 1,
                log_scale: ct.scale.log2(),
                want_level: self.plan.level,
                want_log_scale: self.plan.scale.log2(),
            });
        }
        let c0 = Ciphertext {
            parts: vec![ct.c0],
            scale: ct.scale,
        };
        Ok((c0, ct.seed))
    }

    /// [`Self::decode`] of item `index` of an update whose signed seed is `update_seed`: its a
    /// must be the one the switchers will expand ([`item_seed`]).
    pub fn decode_item(
        &self,
        index: usize,
        bytes: &[u8],
        update_seed: &Seed,
    ) -> Result<Ciphertext, CodecError> {
        let (c0, seed) = self.decode(index, bytes)?;
        if seed != item_seed(update_seed, index) {
            return Err(CodecError::Seed { index });
        }
        Ok(c0)
    }

    /// A switched result as received ([`crate::multiparty::ReceiveSwitch`]): well formed, at
    /// the plan's level and scale or one level lower with the scale divided by the modulus
    /// dropped ([`AggregationPlan::result_level`]); returned as the ciphertext under the
    /// receiving key, its c₁ expanded from the result's seeds.
    pub fn decode_result(&self, index: usize, bytes: &[u8]) -> Result<Ciphertext, CodecError> {
        let r = mpw::decode_switched_result(&self.ctx, bytes)
            .map_err(|source| CodecError::Wire { index, source })?;
        let level = r.level();
        // the level it came at, if it is one of the two, names the scale it must have
        let want = if level + 1 == self.plan.level {
            level
        } else {
            self.plan.level
        };
        let want_scale = self.plan.result_scale(&self.ctx, want);
        if level != want || r.scale.to_bits() != want_scale.to_bits() {
            return Err(CodecError::Shape {
                index,
                level,
                degree: 1,
                log_scale: r.scale.log2(),
                want_level: want,
                want_log_scale: want_scale.log2(),
            });
        }
        r.expand(&self.ctx)
            .map_err(|e| CodecError::Setup(format!("result item {index}: {e}")))
    }

    /// The first `values` reals of a sum switched to `sk`'s key, decoded and decrypted on the
    /// current rayon pool.
    pub fn decrypt_sum(
        &self,
        sk: &SecretKey,
        items: &[Vec<u8>],
        values: usize,
    ) -> Result<Vec<f64>, CodecError> {
        let held = items.len() * self.ctx.n();
        if held < values || items.len() != self.ciphertexts_for(values) {
            return Err(CodecError::Count {
                items: items.len(),
                held,
                values,
            });
        }
        let ctx = &self.ctx;
        let parts: Vec<Vec<f64>> = items
            .par_iter()
            .enumerate()
            .map_init(
                || ctx.decryptor(sk).map_err(|e| format!("decryptor: {e}")),
                |dec, (i, item)| -> Result<Vec<f64>, CodecError> {
                    let dec = dec.as_ref().map_err(|e| CodecError::Setup(e.clone()))?;
                    let ct = self.decode_result(i, item)?;
                    Ok(ctx.decode_real_pairs(&dec.decrypt(&ct))?)
                },
            )
            .collect::<Result<_, _>>()?;
        let mut sum = parts.concat();
        sum.truncate(values);
        Ok(sum)
    }

    /// The weighted average of a decrypted round result (`items` under `sk`, the sum of updates
    /// clipped to ±`clip` with weights totalling `total_weight`), range-checked: every slot,
    /// the padding after the model's `values` included, must lie within what honest updates can
    /// produce — ±`clip` for values, 0 for padding — give or take [`Self::tolerance`]. An update
    /// whose ciphertext was crafted to leak the secret key (a constant added to c₁ shows up as
    /// s·k in every slot) is refused here unless its effect is that small; see docs/SECURITY.md's
    /// threat model for what a smaller one can still learn.
    pub fn decrypt_average(
        &self,
        sk: &SecretKey,
        items: &[Vec<u8>],
        values: usize,
        total_weight: f64,
        clip: f64,
    ) -> Result<Vec<f64>, CodecError> {
        if !(total_weight.is_finite() && total_weight >= 1.0) {
            return Err(CodecError::Weight(total_weight));
        }
        let mut all = self.decrypt_sum(sk, items, items.len() * self.ctx.n())?;
        all.iter_mut().for_each(|v| *v /= total_weight);
        check_average(&all, values, clip, self.tolerance())?;
        all.truncate(values);
        Ok(all)
    }

    /// How far an honest average may stray from its bound through the encryption noise: ten
    /// standard deviations of the plan's expected error, and never less than 10⁻⁶.
    pub fn tolerance(&self) -> f64 {
        (10.0 * self.plan.expected_error).max(1e-6)
    }
}

/// The seed of item `index`'s a in an update whose seed is `update_seed` (the one its hospital
/// signs): one 32-byte seed names every item's a, and no two items share one.
pub fn item_seed(update_seed: &Seed, index: usize) -> Seed {
    let mut h = blake3::Hasher::new_derive_key("HEAL update item a v1");
    h.update(update_seed);
    h.update(&(index as u64).to_le_bytes());
    *h.finalize().as_bytes()
}

/// Checks an average whose first `values` entries are updates clipped to ±`clip` and whose
/// rest is padding (0), each give or take `tolerance`.
pub fn check_average(
    avg: &[f64],
    values: usize,
    clip: f64,
    tolerance: f64,
) -> Result<(), CodecError> {
    for (index, &value) in avg.iter().enumerate() {
        let bound = if index < values { clip } else { 0.0 } + tolerance;
        // NaN is out of range too
        if value.is_nan() || value.abs() > bound {
            return Err(CodecError::OutOfRange {
                index,
                value,
                bound,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ckks::{Parameters, Preset};
    use crate::multiparty::threshold::deal;
    use crate::multiparty::{Crs, ReceiveSwitch, ThresholdSecret, UpdateSum};

    /// The sum `c0` of updates under `sk` with a's from `a_seeds`, each weighted `weight`,
    /// switched to `receive` by one party holding all of `sk`: a result item.
    fn switched(
        codec: &UpdateCodec,
        sk: &SecretKey,
        receive: &SecretKey,
        (c0, a_seeds, weight): (&Ciphertext, &[Seed], u64),
    ) -> Vec<u8> {
        let ctx = codec.context();
        let mut prng = Prng::from_seed(&[3; 32]);
        let dealt = deal(ctx, sk, 1, &[1], 1, &mut prng).unwrap();
        let held = ThresholdSecret::combine(ctx, 1, 1, &[1], &dealt).unwrap();
        // the same secret contributes once per summand (weights add up alike)
        let keys: Vec<SecretKey> = a_seeds
            .iter()
            .map(|_| {
                held.weighted_shares(ctx, &[1], &[(1, weight)])
                    .unwrap()
                    .remove(0)
            })
            .collect();
        let seed = Crs::from_federation(b"codec tests").receive_switch_seed(&[5; 32], 1, &[1]);
        let proto = ReceiveSwitch::new(ctx, codec.plan().flooding(&[1.0]).unwrap(), 1);
        let mask = proto.flood(c0.level(), &mut prng).unwrap();
        let sum = UpdateSum {
            level: c0.level(),
            scale: c0.scale,
            a_seeds,
        };
        let share = proto
            .share_updates(&keys, receive, &sum, &seed, mask, false)
            .unwrap();
        mpw::encode_switched_result(ctx, &proto.finalize(c0, share, vec![seed]).unwrap())
    }

    #[test]
    fn an_update_round_trips_and_bad_items_are_refused() {
        let ctx = CkksContext::new(Parameters::preset(Preset::Aggregation)).unwrap();
        let plan = AggregationPlan::from_settings(&ctx, &Default::default(), 3, 2).unwrap();
        let codec = UpdateCodec::new(ctx.clone(), plan);
        let mut kg = ctx.key_generator().unwrap();
        let sk = kg.secret_key();
        let n = ctx.n();
        let values: Vec<f32> = (0..n + 100)
            .map(|i| (i as f32 * 0.37).sin() * 3.0)
            .collect();
        let (items, update_seed) = codec.encrypt(&sk, &values).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(codec.ciphertexts_for(values.len()), 2);
        // each item's a from the update's seed, none shared; another update seed is refused
        let seeds: Vec<Seed> = (0..2)
            .map(|k| codec.decode(k, &items[k]).unwrap().1)
            .collect();
        assert_eq!(
            seeds,
            vec![item_seed(&update_seed, 0), item_seed(&update_seed, 1)]
        );
        assert_ne!(seeds[0], seeds[1]);
        assert!(codec.decode_item(1, &items[1], &update_seed).is_ok());
        assert!(matches!(
            codec.decode_item(1, &items[1], &[0; 32]),
            Err(CodecError::Seed { index: 1 })
        ));
        assert!(matches!(
            codec.decode_item(0, &items[1], &update_seed),
            Err(CodecError::Seed { index: 0 })
        ));
        // c0 and a seed: half a ciphertext's bytes
        let full = wire::ciphertext_len(&ctx, codec.plan().level, 1);
        assert!(
            items[0].len() <= full / 2 + 64,
            "{} of {full}",
            items[0].len()
        );
        // encrypted again, the same values use other a's
        assert_ne!(codec.encrypt(&sk, &values).unwrap().1, update_seed);
        let receive = kg.secret_key();
        let results: Vec<Vec<u8>> = items
            .iter()
            .map(|b| {
                let (c0, seed) = codec.decode(0, b).unwrap();
                switched(&codec, &sk, &receive, (&c0, &[seed], 1))
            })
            .collect();
        let back = codec.decrypt_sum(&receive, &results, values.len()).unwrap();
        assert_eq!(back.len(), values.len());
        for (a, b) in back.iter().zip(&values) {
            assert!((a - *b as f64).abs() < 1e-4, "{a} vs {b}");
        }
        // an update at another scale, a full ciphertext, garbage, and too few items are refused
        let mut enc = ctx.sk_encryptor(&sk).unwrap();
        let pt = |scale| {
            ctx.encode_real_pairs(&[1.0], codec.plan().level, scale)
                .unwrap()
        };
        let other =
            wire::encode_seeded_update(&ctx, &enc.encrypt_seeded_aes(&pt(2f64.powi(30)), [1; 32]));
        assert!(matches!(
            codec.decode(4, &other),
            Err(CodecError::Shape { index: 4, .. })
        ));
        // a full ciphertext, or a seeded one whose a is ChaCha20's, is not an update
        let whole = wire::encode_ciphertext(&ctx, &enc.encrypt(&pt(codec.plan().scale)));
        let chacha =
            wire::encode_seeded_ciphertext(&ctx, &enc.encrypt_seeded(&pt(codec.plan().scale)));
        assert!(matches!(
            codec.decode(3, &chacha),
            Err(CodecError::Wire { index: 3, .. })
        ));
        assert!(matches!(
            codec.decode(2, &whole),
            Err(CodecError::Wire { index: 2, .. })
        ));
        assert!(matches!(
            codec.decode(1, b"junk"),
            Err(CodecError::Wire { index: 1, .. })
        ));
        assert!(matches!(
            codec.decrypt_sum(&receive, &results[..1], values.len()),
            Err(CodecError::Count { .. })
        ));
        // an update is not a result (items are decrypted in parallel: either may be named)
        assert!(matches!(
            codec.decrypt_sum(&sk, &items, values.len()),
            Err(CodecError::Wire { .. })
        ));
    }

    #[test]
    fn an_average_outside_the_clip_bound_is_refused_and_an_honest_one_passes() {
        let ctx = CkksContext::new(Parameters::preset(Preset::Aggregation)).unwrap();
        let plan = AggregationPlan::from_settings(&ctx, &Default::default(), 1, 1).unwrap();
        let codec = UpdateCodec::new(ctx.clone(), plan);
        let mut kg = ctx.key_generator().unwrap();
        let sk = kg.secret_key();
        let receive = kg.secret_key();
        let values: Vec<f32> = (0..1000).map(|i| ((i % 13) as f32 - 6.0) * 10.0).collect();
        let (items, update_seed) = codec.encrypt(&sk, &values).unwrap();
        let seeds: Vec<Seed> = (0..items.len())
            .map(|k| item_seed(&update_seed, k))
            .collect();
        // weight 4: the sum is 4 × the update, its average the update (|v| ≤ 60 < clip 64)
        let four = |b: &[u8], seed: Seed| {
            let (c0, _) = codec.decode(0, b).unwrap();
            let mut sum = c0.clone();
            for _ in 0..3 {
                for (i, m) in ctx.rlwe().ring().moduli().iter().enumerate() {
                    let q_i = m.value();
                    for (a, b) in sum.parts[0].limb_mut(i).iter_mut().zip(c0.parts[0].limb(i)) {
                        *a = (*a + b) % q_i;
                    }
                }
            }
            switched(&codec, &sk, &receive, (&sum, &[seed], 4))
        };
        let sum: Vec<Vec<u8>> = items.iter().zip(&seeds).map(|(b, &s)| four(b, s)).collect();
        let avg = codec
            .decrypt_average(&receive, &sum, values.len(), 4.0, 64.0)
            .unwrap();
        assert!((avg[999] - f64::from(values[999])).abs() < 1e-3);
        // the same values against a tighter clip bound are out of range
        assert!(matches!(
            codec.decrypt_average(&receive, &sum, values.len(), 4.0, 50.0),
            Err(CodecError::OutOfRange { .. })
        ));
        // an update switched with a seed other than its a's (a hospital that signed another
        // seed than it encrypted with) decrypts to noise over the whole range: refused
        let lied: Vec<Vec<u8>> = items.iter().map(|b| four(b, [9; 32])).collect();
        assert!(matches!(
            codec.decrypt_average(&receive, &lied, values.len(), 4.0, 64.0),
            Err(CodecError::OutOfRange { .. })
        ));
        assert!(matches!(
            codec.decrypt_average(&receive, &sum, values.len(), 0.0, 64.0),
            Err(CodecError::Weight(_))
        ));
    }
}
