//! A training epoch's running loss and accuracy, read from the device in batches of batches.

use burn::tensor::{Int, Tensor};

/// Batches' losses and predictions held where they were computed and read in one transfer
/// every `READ_EVERY` batches: reading each batch's at once stalls a GPU's queue twice a step.
/// A non-finite loss is still reported with its epoch and batch, up to that many steps later.
#[derive(Default)]
pub(crate) struct Pending {
    first: usize,
    losses: Vec<Tensor<1>>,
    preds: Vec<Tensor<2, Int>>,
    labels: Vec<u32>,
    sizes: Vec<usize>,
    images_read: usize,
}

const READ_EVERY: usize = 16;

impl Pending {
    pub(crate) fn push(&mut self, loss: Tensor<1>, logits: Tensor<2>, y: &[u32]) {
        self.losses.push(loss.detach());
        self.preds.push(logits.detach().argmax(1));
        self.labels.extend_from_slice(y);
        self.sizes.push(y.len());
    }

    /// Images whose loss has been read so far this epoch.
    pub(crate) fn images_read(&self) -> usize {
        self.images_read
    }

    pub(crate) fn full(&self) -> bool {
        self.sizes.len() >= READ_EVERY
    }

    /// Adds the held batches' loss × size and right predictions; the first non-finite loss
    /// as (batch index in the epoch, loss) instead.
    pub(crate) fn read(
        &mut self,
        loss_sum: &mut f64,
        correct: &mut usize,
    ) -> Result<(), (usize, f32)> {
        let n = self.sizes.len();
        if n == 0 {
            return Ok(());
        }
        let losses = Tensor::cat(std::mem::take(&mut self.losses), 0)
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap_or_else(|_| vec![f32::NAN; n]);
        for (i, (&l, &b)) in losses.iter().zip(&self.sizes).enumerate() {
            if !l.is_finite() {
                return Err((self.first + i, l));
            }
            *loss_sum += l as f64 * b as f64;
        }
        let preds = Tensor::cat(std::mem::take(&mut self.preds), 0).into_data();
        if let Ok(p) = preds.convert::<i64>().try_to_vec::<i64>() {
            *correct += p
                .iter()
                .zip(&self.labels)
                .filter(|(p, y)| **p == **y as i64)
                .count();
        }
        self.first += n;
        self.images_read += self.labels.len();
        self.labels.clear();
        self.sizes.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn held_batches_sum_as_read_at_once_and_the_first_non_finite_loss_is_named() {
        let d = Device::flex();
        let loss = |v: f32| Tensor::<1>::from_data(TensorData::new(vec![v], [1]), &d);
        let logits = |rows: &[[f32; 2]]| {
            let v: Vec<f32> = rows.iter().flatten().copied().collect();
            Tensor::<2>::from_data(TensorData::new(v, [rows.len(), 2]), &d)
        };
        let mut p = Pending::default();
        p.push(loss(0.5), logits(&[[1.0, 0.0], [0.0, 1.0]]), &[0, 0]);
        p.push(loss(1.0), logits(&[[0.0, 1.0]]), &[1]);
        assert!(!p.full());
        let (mut sum, mut right) = (0.0, 0);
        p.read(&mut sum, &mut right).unwrap();
        assert_eq!((sum, right, p.images_read()), (2.0, 2, 3));
        for _ in 0..READ_EVERY {
            p.push(loss(0.25), logits(&[[0.0, 1.0]]), &[0]);
        }
        assert!(p.full());
        p.read(&mut sum, &mut right).unwrap();
        assert_eq!((sum, right), (2.0 + 0.25 * READ_EVERY as f64, 2));
        // batches 2 + READ_EVERY and on: the second is the first non-finite one
        p.push(loss(3.0), logits(&[[1.0, 0.0]]), &[0]);
        p.push(loss(f32::NAN), logits(&[[1.0, 0.0]]), &[0]);
        p.push(loss(f32::INFINITY), logits(&[[1.0, 0.0]]), &[0]);
        let (batch, l) = p.read(&mut sum, &mut right).unwrap_err();
        assert_eq!(batch, 2 + READ_EVERY + 1);
        assert!(l.is_nan());
    }
}
