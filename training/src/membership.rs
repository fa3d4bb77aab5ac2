//! A membership-inference check: the loss-threshold attack (Yeom et al. 2018). An attacker
//! holding the model guesses that an image was in the training set when the model's loss on it
//! is low; the AUC of that guess over training images (members) against images the model never
//! saw (non-members) measures how much the model memorised: 0.5 is chance, 1 total recall.
//! Non-members must come from the members' own distribution (held-out images of the same
//! split), or the attack measures the shift between distributions instead.

use crate::data::Tensors;
use crate::error::TrainError;
use crate::metrics::binary_auc;
use crate::model::Network;
use crate::train::predict;

/// Cross-entropy of every image under `net`.
fn losses(net: &Network, data: &Tensors) -> Result<Vec<f64>, TrainError> {
    let k = net.spec.classes;
    let probs = predict(net, data)?;
    Ok(data
        .y
        .iter()
        .enumerate()
        .map(|(i, &y)| -(f64::from(probs[i * k + y as usize]).max(1e-30)).ln())
        .collect())
}

/// The attack's AUC with `members` (training images) and `non_members` (unseen images), each
/// cut to the size of the smaller so the two count alike; `None` if either is empty.
pub fn loss_threshold_auc(
    net: &Network,
    members: &Tensors,
    non_members: &Tensors,
) -> Result<Option<f64>, TrainError> {
    let m = members.len().min(non_members.len());
    if m == 0 {
        return Ok(None);
    }
    let take = |t: &Tensors| t.subset(&(0..m).collect::<Vec<_>>());
    let (a, b) = (
        losses(net, &take(members))?,
        losses(net, &take(non_members))?,
    );
    // a lower loss says "member": the score is the negated loss
    let scores: Vec<f64> = a.iter().chain(&b).map(|l| -l).collect();
    let positive: Vec<bool> = (0..2 * m).map(|i| i < m).collect();
    Ok(binary_auc(&scores, &positive))
}
