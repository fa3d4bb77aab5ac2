//! A network's front applied to a whole split: the features its layers train on, computed
//! once before training (the front has no parameters, so every epoch would compute the same).

use std::time::Instant;

use he_agg::infer::scatter::Scatter;
use rayon::prelude::*;

use crate::data::Tensors;
use crate::error::TrainError;
use crate::model::NetworkSpec;

/// `data` (images of `spec.image_input()`) through `spec`'s front; `data` itself without one.
pub fn apply(spec: &NetworkSpec, data: Tensors) -> Result<Tensors, TrainError> {
    let Some(front) = spec.front else {
        return Ok(data);
    };
    if data.shape != front.image {
        return Err(TrainError::invalid(
            "front",
            format!(
                "images are {:?}, the front reads {:?}",
                data.shape, front.image
            ),
        ));
    }
    let start = Instant::now();
    let scatter =
        Scatter::new(front).map_err(|e| TrainError::Model(format!("[model.front]: {e}")))?;
    let per: usize = front.output().iter().product();
    // each image's features straight into its place: one copy of the split's features in memory
    let mut x = vec![0f32; per * data.len()];
    x.par_chunks_mut(per)
        .enumerate()
        .try_for_each(|(i, out)| {
            out.copy_from_slice(&scatter.apply(&data.image(i))?);
            Ok(())
        })
        .map_err(|e: he_agg::infer::NetworkError| {
            TrainError::Model(format!("[model.front]: {e}"))
        })?;
    tracing::info!(
        images = data.len(),
        features = per,
        seconds = format!("{:.1}", start.elapsed().as_secs_f64()),
        "scattering front applied"
    );
    Tensors::from_parts(x, data.y, front.output())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FrontConfig, LayerConfig, ModelConfig};

    #[test]
    fn a_split_becomes_the_front_features_of_each_image() {
        let cfg = ModelConfig {
            front: Some(FrontConfig::Scatter {
                scales: 2,
                angles: 8,
                groups: 9,
            }),
            layers: vec![LayerConfig::Dense { units: None }],
            ..ModelConfig::default()
        };
        let spec = cfg.resolve([1, 28, 28], 3).unwrap();
        assert_eq!(spec.input, [81, 7, 7]);
        assert_eq!(spec.image_input(), [1, 28, 28]);
        let x: Vec<f32> = (0..3 * 784)
            .map(|i| ((i * 13) % 29) as f32 / 29.0)
            .collect();
        let data = Tensors::from_parts(x.clone(), vec![0, 1, 2], [1, 28, 28]).unwrap();
        let out = apply(&spec, data).unwrap();
        assert_eq!(
            (out.shape, out.len(), out.y.clone()),
            ([81, 7, 7], 3, vec![0, 1, 2])
        );
        let one = Scatter::new(spec.front.unwrap()).unwrap();
        assert_eq!(out.image(1), one.apply(&x[784..2 * 784]).unwrap());
        // images of another shape are refused
        let small = Tensors::from_parts(vec![0.0; 256], vec![0], [1, 16, 16]).unwrap();
        assert!(apply(&spec, small).is_err());
    }
}
