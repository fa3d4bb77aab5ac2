//! The one codec of model updates: a hospital encrypts its update (N reals per ciphertext, at
//! the plan's level and scale) and decrypts a switched sum; the coordinator and a switching
//! hospital decode and check what arrives. Both ends use this, so the packing, the level and the
//! scale are written once.

use std::sync::Arc;

use rayon::prelude::*;

use crate::ckks::wire::{self, WireError};
use crate::ckks::{Ciphertext, CkksContext, CkksError, PublicKey, SecretKey};

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

    /// The update `values` encrypted under `pk`, N reals per ciphertext, wire-encoded, on the
    /// current rayon pool.
    pub fn encrypt(&self, pk: &PublicKey, values: &[f32]) -> Result<Vec<Vec<u8>>, CodecError> {
        let ctx = &self.ctx;
        values
            .par_chunks(ctx.n())
            .map_init(
                || ctx.pk_encryptor(pk).map_err(|e| format!("encryptor: {e}")),
                |enc, chunk| -> Result<Vec<u8>, CodecError> {
                    let enc = enc.as_mut().map_err(|e| CodecError::Setup(e.clone()))?;
                    let v: Vec<f64> = chunk.iter().map(|&x| f64::from(x)).collect();
                    let pt = ctx.encode_real_pairs(&v, self.plan.level, self.plan.scale)?;
                    Ok(wire::encode_ciphertext(ctx, &enc.encrypt(&pt)))
                },
            )
            .collect()
    }

    /// An update (or a sum of them) as received: well formed, of these parameters, at the
    /// plan's level and scale, degree 1. `index` names it in errors.
    pub fn decode(&self, index: usize, bytes: &[u8]) -> Result<Ciphertext, CodecError> {
        let ct = wire::decode_ciphertext(&self.ctx, bytes)
            .map_err(|source| CodecError::Wire { index, source })?;
        if ct.level() != self.plan.level
            || ct.degree() != 1
            || ct.scale.to_bits() != self.plan.scale.to_bits()
        {
            return Err(CodecError::Shape {
                index,
                level: ct.level(),
                degree: ct.degree(),
                log_scale: ct.scale.log2(),
                want_level: self.plan.level,
                want_log_scale: self.plan.scale.log2(),
            });
        }
        Ok(ct)
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
                    let ct = self.decode(i, item)?;
                    Ok(ctx.decode_real_pairs(&dec.decrypt(&ct))?)
                },
            )
            .collect::<Result<_, _>>()?;
        let mut sum = parts.concat();
        sum.truncate(values);
        Ok(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ckks::{Parameters, Preset};

    #[test]
    fn an_update_round_trips_and_bad_items_are_refused() {
        let ctx = CkksContext::new(Parameters::preset(Preset::Aggregation)).unwrap();
        let plan = AggregationPlan::from_settings(&ctx, &Default::default(), 3, 2).unwrap();
        let codec = UpdateCodec::new(ctx.clone(), plan);
        let mut kg = ctx.key_generator().unwrap();
        let sk = kg.secret_key();
        let pk = kg.public_key(&sk);
        let n = ctx.n();
        let values: Vec<f32> = (0..n + 100)
            .map(|i| (i as f32 * 0.37).sin() * 3.0)
            .collect();
        let items = codec.encrypt(&pk, &values).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(codec.ciphertexts_for(values.len()), 2);
        let back = codec.decrypt_sum(&sk, &items, values.len()).unwrap();
        assert_eq!(back.len(), values.len());
        for (a, b) in back.iter().zip(&values) {
            assert!((a - *b as f64).abs() < 1e-4, "{a} vs {b}");
        }
        // a ciphertext at another scale, garbage, and too few items are refused
        let other = crate::ckks::wire::encode_ciphertext(
            &ctx,
            &ctx.pk_encryptor(&pk).unwrap().encrypt(
                &ctx.encode_real_pairs(&[1.0], codec.plan().level, 2f64.powi(30))
                    .unwrap(),
            ),
        );
        assert!(matches!(
            codec.decode(4, &other),
            Err(CodecError::Shape { index: 4, .. })
        ));
        assert!(matches!(
            codec.decode(1, b"junk"),
            Err(CodecError::Wire { index: 1, .. })
        ));
        assert!(matches!(
            codec.decrypt_sum(&sk, &items[..1], values.len()),
            Err(CodecError::Count { .. })
        ));
    }
}
