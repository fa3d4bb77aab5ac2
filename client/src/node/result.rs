//! A round's result at a hospital: the average decrypted and range-checked, applied to the
//! global model and saved, and the new model handed to its evaluation (`evaluation.rs`), which
//! reports the round's metrics; and the final model written at the end.

use std::time::Instant;

use anyhow::{Context, bail};
use he_agg::aggregate::{CodecError, check_average};
use protocol::Link;
use protocol::link::Incoming;
use protocol::message::RoundMetrics;
use tracing::{info, warn};
use training::params::network_from_flat;
use training::strategy::Moments;
use training::train::select_device;

use super::participant::Applied;
use super::session::Node;

impl Node {
    /// Reads, decrypts, range-checks against ±`clip` and applies `round`'s result, then starts
    /// its evaluation.
    pub(super) async fn result(
        &mut self,
        link: &Link,
        (round, total_weight): (u64, u64),
        participants: &[u32],
        count: u32,
        clip: f64,
        msg: &mut Incoming,
    ) -> anyhow::Result<Applied> {
        let t0 = Instant::now();
        // the model's values, then (SCAFFOLD) as many control values
        let model_len = self.data.manifest.total;
        let n = model_len * if self.scaffold.is_some() { 2 } else { 1 };
        let mut bytes_down = 0u64;
        let mut items = Vec::with_capacity(count as usize);
        for i in 0..count {
            let item = msg
                .next_item()
                .await?
                .with_context(|| format!("result ended after {i} of {count} items"))?;
            bytes_down += item.len() as u64;
            items.push(item);
        }
        // the average, range-checked against the clip bound every honest update keeps to
        let average: Result<Vec<f64>, CodecError> = match &self.he {
            Some(he) => {
                let (codec, pool) = (he.setup.codec.clone(), he.pool.clone());
                let sk = he
                    .keys
                    .receive
                    .as_ref()
                    .context("a result before the consortium receiving key")?
                    .sk
                    .clone();
                // decode, decrypt and unpack the ciphertexts on all this node's threads
                tokio::task::spawn_blocking(move || {
                    pool.install(|| {
                        codec.decrypt_average(&sk, &items, n, total_weight as f64, clip)
                    })
                })
                .await?
            }
            None => {
                let mut sum = Vec::with_capacity(n);
                for (i, item) in items.iter().enumerate() {
                    sum.extend(
                        protocol::plain::decode_f64s(item)
                            .with_context(|| format!("result item {i}"))?,
                    );
                }
                if sum.len() < n {
                    bail!("the result holds {} values for a model of {n}", sum.len());
                }
                sum.iter_mut()
                    .for_each(|v| *v /= total_weight.max(1) as f64);
                check_average(&sum, n, clip, 1e-6).map(|()| {
                    sum.truncate(n);
                    sum
                })
            }
        };
        let average = match average {
            Ok(mut a) => {
                if let Some(p) = &self.privacy {
                    // each update counted once: the total weight is the number of contributors
                    p.snap(&mut a, total_weight);
                }
                a
            }
            // the participant decides what follows (an alarm)
            Err(e @ CodecError::OutOfRange { .. }) => {
                return Ok(Applied::OutOfRange(e.to_string()));
            }
            Err(e) => return Err(e).context("the round's result"),
        };
        super::trace::average(self.index, round, &average)?;
        let (average, control) = average.split_at(model_len);
        let delta: Vec<f32> = (average.iter().zip(&self.data.frozen))
            .map(|(&a, &frozen)| if frozen { 0.0 } else { a as f32 })
            .collect();
        if delta.iter().any(|d| !d.is_finite()) {
            bail!("the decrypted average is not finite");
        }
        let moments = Moments {
            m: &mut self.state.m,
            v: &mut self.state.v,
        };
        let applied = self.strategy.apply(
            &mut self.state.global,
            moments,
            &delta,
            &self.data.trainable,
        );
        if applied.raised > 0 {
            warn!(
                round,
                raised = applied.raised,
                "batch-norm variances below 1e-3 after the noised average raised to it"
            );
        }
        if let Some(s) = self.scaffold.as_mut() {
            // before the model's state: applied twice after a restart, it changes nothing
            let control: Vec<f32> = control.iter().map(|&c| c as f32).collect();
            if control.iter().any(|c| !c.is_finite()) {
                bail!("the decrypted control variates are not finite");
            }
            s.apply(round, &control, participants.contains(&self.index))?;
        }
        self.state.round = round;
        self.state_file.save(&self.state)?;
        let decrypt_s = t0.elapsed().as_secs_f32();
        info!(round, participants = ?participants, decrypt_s, "new global model");
        let c = self.costs.remove(&round).unwrap_or_default();
        let m = RoundMetrics {
            round,
            // under [privacy] the training loss, computed on the training images without noise,
            // stays here (in this node's log): only what the guarantee covers leaves
            train_loss: if self.privacy.is_some() {
                f32::NAN
            } else {
                c.train_loss
            },
            // filled in by the evaluation (`evaluation.rs`)
            val_loss: f32::NAN,
            val_acc: f32::NAN,
            val_auc: f32::NAN,
            test_acc: f32::NAN,
            test_auc: f32::NAN,
            samples: c.samples,
            train_s: c.train_s,
            encrypt_s: c.encrypt_s,
            upload_s: c.upload_s,
            switch_s: c.switch_s,
            decrypt_s,
            bytes_up: c.bytes_up,
            bytes_down,
        };
        self.evaluate_round(link, m).await?;
        Ok(Applied::Yes)
    }

    /// Writes the final global model and its export for encrypted inference.
    pub fn finish(&self) -> anyhow::Result<()> {
        let device = select_device("cpu")?;
        let net = network_from_flat(&self.data.spec, &self.state.global, &device)?;
        training::params::write_flat(&self.dirs.out.join("model.f32"), &self.state.global)?;
        training::export::export(
            &net,
            &self.data.normalizer,
            &self.data.class_names,
            &self.data.preparation,
        )?
        .write_json(&self.dirs.out.join("network.json"))?;
        info!(
            round = self.state.round,
            "final model written to {}",
            self.dirs.out.display()
        );
        Ok(())
    }
}
