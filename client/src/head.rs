//! The plaintext side of encrypted head training (issue 20): the features a trained network's
//! backbone gives (every layer but the last), L2-normalised as a contributing site sends them,
//! and the test metrics of a head on such features. Used by `client contribute-encrypted` and
//! the head-training benchmark.

use anyhow::bail;
use he_agg::infer::{Layer, Network};
use rayon::prelude::*;

/// A network's backbone features of `pixels` (HWC bytes), and its last layer's weights
/// (`classes × features`, row-major) and bias.
pub struct Backbone {
    pub features: Vec<Vec<f64>>,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// Runs every layer of `net` but the last on each image.
pub fn backbone_features(net: &Network, pixels: &[Vec<u8>]) -> anyhow::Result<Backbone> {
    let layers = net.layers();
    let Some(Layer::Dense(head)) = layers.last() else {
        bail!("the network's last layer is not dense: there is no head to train");
    };
    let backbone = Network::new(net.input(), layers[..layers.len() - 1].to_vec())?;
    let features = pixels
        .par_iter()
        .map(|p| {
            let x = backbone.forward(&net.normalize_hwc(p)?)?;
            Ok(x.iter().map(|&v| v as f64).collect())
        })
        .collect::<anyhow::Result<Vec<Vec<f64>>>>()?;
    Ok(Backbone {
        features,
        weight: head.weight.clone(),
        bias: head.bias.clone(),
    })
}

/// Each vector divided by its L2 norm: a site needs no shared statistics for it, every value
/// lands in [−1, 1], and gradient descent on the squared loss converges far better than on
/// features divided by one global norm.
pub fn l2_normalise(xs: &mut [Vec<f64>]) {
    for x in xs {
        let norm = x.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
        x.iter_mut().for_each(|v| *v /= norm);
    }
}

/// A head's outputs W·x + b (`w`: classes × features, row-major).
pub fn head_logits(w: &[f64], b: &[f64], x: &[f64]) -> Vec<f64> {
    let d = x.len();
    b.iter()
        .enumerate()
        .map(|(c, bc)| bc + (0..d).map(|j| w[c * d + j] * x[j]).sum::<f64>())
        .collect()
}

/// Test ACC and macro AUC of a head (the softmax of its outputs as the scores).
pub fn head_metrics(
    w: &[f64],
    b: &[f64],
    xs: &[Vec<f64>],
    ys: &[u32],
    names: &[String],
) -> anyhow::Result<(f64, f64)> {
    let probs: Vec<f32> = xs
        .iter()
        .flat_map(|x| {
            let z = head_logits(w, b, x);
            let m = z.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
            let s: f64 = e.iter().sum();
            e.into_iter().map(move |v| (v / s) as f32)
        })
        .collect();
    let r = training::metrics::evaluate_probs(&probs, ys, names)?;
    Ok((r.accuracy, r.macro_auc))
}
