//! A ReLU network made HE-friendly: every ReLU becomes a trainable polynomial per channel and
//! every max-pool an average pool of the same output size, so that CKKS can evaluate it; what
//! the ReLU network learnt is then carried over by distillation (`client convert`,
//! [`crate::train::Distill`]).

use std::path::Path;

use burn::tensor::Device;

use crate::baseline::{BaselineConfig, BaselineOutcome, prepare, run_prepared, write_json};
use crate::error::TrainError;
use crate::model::{Activation, HeadInit, LayerConfig, ModelConfig, Network};
use crate::params::{manifest, network_from_flat, to_flat};
use crate::train::{Teacher, evaluate, select_device};
use crate::transfer::load_init;

/// What [`he_friendly`] changed, for the report.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Conversion {
    /// Activations made `poly` (a residual block holds two).
    pub activations: usize,
    /// Max-pools made average pools.
    pub max_pools: usize,
}

/// The HE-friendly twin of `model` for images of `input` (`[c, h, w]`): ReLUs (and the
/// `[model] activation` default, where it is ReLU) become per-channel polynomials `poly`;
/// a max-pool of kernel k, stride s and padding p becomes an average pool of kernel and stride
/// s where that gives the same output size (torchvision's stem pool, k3 s2 p1, on an even
/// side), and is refused otherwise. Every other layer, and every parameter's name, is kept, so
/// the ReLU network's weights load into the twin by name.
pub fn he_friendly(
    model: &ModelConfig,
    input: [usize; 3],
    classes: usize,
) -> Result<(ModelConfig, Conversion), TrainError> {
    let spec = model.resolve(input, classes)?;
    let mut out = model.clone();
    let mut conv = Conversion::default();
    let relu_default = out.activation == Activation::Relu;
    if relu_default {
        out.activation = Activation::Poly;
    }
    for (i, l) in out.layers.iter_mut().enumerate() {
        match l {
            LayerConfig::Act { kind } | LayerConfig::Residual { kind, .. } => {
                let is_relu = match kind {
                    Some(a) => *a == Activation::Relu,
                    None => relu_default,
                };
                if is_relu {
                    *kind = Some(Activation::Poly);
                    // a block has one inside and one after its sum
                    conv.activations += if matches!(l, LayerConfig::Act { .. }) {
                        1
                    } else {
                        2
                    };
                }
            }
            LayerConfig::MaxPool { kernel, stride, .. } => {
                let s = stride.unwrap_or(*kernel);
                let (inp, want) = (&spec.layers[i].input, &spec.layers[i].output);
                let got = [
                    inp[1].saturating_sub(s) / s + 1,
                    inp[2].saturating_sub(s) / s + 1,
                ];
                if got != [want[1], want[2]] {
                    return Err(TrainError::Model(format!(
                        "layer {i}: max-pool k{kernel} s{s} makes {want:?}; an average pool of \
                         kernel and stride {s} would make {got:?}, and CKKS has no maximum: \
                         change the pool (or the image size) before converting"
                    )));
                }
                *l = LayerConfig::AvgPool {
                    kernel: s,
                    stride: Some(s),
                };
                conv.max_pools += 1;
            }
            _ => {}
        }
    }
    Ok((out, conv))
}

/// `conversion.json` of `client convert`: the ReLU network's test figures, its HE-friendly
/// twin's before distillation (the teacher's weights, polynomials at `poly_init`) and after.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConversionSummary {
    /// What was replaced.
    pub conversion: Conversion,
    /// The ReLU teacher's test accuracy and AUC.
    pub teacher_test_acc: f64,
    /// The ReLU teacher's test macro AUC.
    pub teacher_test_auc: f64,
    /// The twin's with the teacher's weights, before any training.
    pub swapped_test_acc: f64,
    /// The twin's macro AUC before any training.
    pub swapped_test_auc: f64,
    /// The HE-friendly network's after distillation.
    pub test_acc: f64,
    /// Its macro AUC.
    pub test_auc: f64,
    /// Its multiplicative depth under CKKS.
    pub multiplicative_depth: usize,
    /// Share of test images on which the twin before training gives the teacher's label.
    pub swapped_agreement: f64,
    /// Share of test images on which the trained twin gives the teacher's label.
    pub agreement: f64,
}

fn labels(net: &Network, data: &crate::data::Tensors) -> Result<Vec<usize>, TrainError> {
    let k = net.spec.classes;
    Ok(crate::train::predict(net, data)?
        .chunks_exact(k)
        .map(|r| {
            r.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i)
        })
        .collect())
}

fn agreement(a: &[usize], b: &[usize]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len().max(1) as f64
}

/// `student` with every tensor `teacher` has under the same name and shape.
fn by_name(teacher: &Network, student: Network, device: &Device) -> Result<Network, TrainError> {
    let (tm, tf) = (manifest(&teacher.spec), to_flat(teacher));
    let sm = manifest(&student.spec);
    let mut flat = to_flat(&student);
    for e in &sm.entries {
        if let Some(t) = tm
            .entries
            .iter()
            .find(|t| t.name == e.name && t.shape == e.shape)
        {
            flat[e.offset..e.offset + e.len].copy_from_slice(&tf[t.offset..t.offset + t.len]);
        }
    }
    network_from_flat(&student.spec, &flat, device)
}

/// `client convert`: `cfg`'s `[model]` is a trained ReLU network whose weights `[model.init]`
/// names (head kept); its HE-friendly twin starts from those weights and is trained on `cfg`'s
/// data with the ReLU network as teacher (`[distill]`). Writes what `client baseline` writes
/// for the twin (its `network.json` is ready for encrypted inference) and `conversion.json`.
pub fn run_convert(
    cfg: &BaselineConfig,
    base_dir: &Path,
    out_dir: &Path,
    progress: bool,
) -> Result<(ConversionSummary, BaselineOutcome), TrainError> {
    let init = cfg.model.init.as_ref().map(|i| i.config()).ok_or_else(|| {
        TrainError::invalid(
            "[model.init]",
            "client convert makes a trained ReLU network HE-friendly: name its weights in \
             [model.init] (head = \"keep\")",
        )
    })?;
    if init.head != HeadInit::Keep {
        return Err(TrainError::invalid(
            "[model.init] head",
            "the teacher must keep its trained head: set head = \"keep\"",
        ));
    }
    let distill = cfg.distill.unwrap_or_default();
    let data = prepare(cfg, base_dir, progress)?;
    let (image, classes) = (data.train.shape, data.class_names.len());
    let teacher_spec = data.resolve(&cfg.model)?;
    let (twin, conversion) = he_friendly(&cfg.model, image, classes)?;
    let mut student_cfg = cfg.clone();
    student_cfg.model = ModelConfig { init: None, ..twin };
    student_cfg.distill = None;
    let mut student_spec = data.resolve(&student_cfg.model)?;
    student_spec.frozen = init.freeze;
    let data = data.through_front(&teacher_spec)?;
    let device = select_device(&cfg.baseline.device)?;
    let teacher_init = crate::model::InitConfig { freeze: 0, ..init };
    let (teacher, report) = load_init(&teacher_spec, &teacher_init, base_dir, &device)?;
    let names = &data.class_names;
    let before = evaluate(&teacher, &data.test, names)?;
    let student = by_name(&teacher, Network::init(&student_spec, &device), &device)?;
    let swapped = evaluate(&student, &data.test, names)?;
    let teacher_labels = labels(&teacher, &data.test)?;
    let swapped_agreement = agreement(&labels(&student, &data.test)?, &teacher_labels);
    tracing::info!(
        teacher_acc = format!("{:.4}", before.accuracy),
        swapped_acc = format!("{:.4}", swapped.accuracy),
        activations = conversion.activations,
        max_pools = conversion.max_pools,
        "converting: the ReLU teacher, and its HE-friendly twin before training"
    );
    let teacher_ref = Teacher {
        net: &teacher,
        distill,
    };
    let outcome = run_prepared(
        &student_cfg,
        &data,
        student,
        Some(report),
        Some(teacher_ref),
        out_dir,
        progress,
    )?;
    let summary = ConversionSummary {
        conversion,
        teacher_test_acc: before.accuracy,
        teacher_test_auc: before.macro_auc,
        swapped_test_acc: swapped.accuracy,
        swapped_test_auc: swapped.macro_auc,
        test_acc: outcome.summary.test_acc,
        test_auc: outcome.summary.test_auc,
        multiplicative_depth: outcome.summary.multiplicative_depth,
        swapped_agreement,
        agreement: agreement(&labels(&outcome.network, &data.test)?, &teacher_labels),
    };
    write_json(&out_dir.join("conversion.json"), &summary)?;
    Ok((summary, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relu_resnet() -> ModelConfig {
        toml::from_str(
            r#"
            activation = "relu"
            [[layers]]
            type = "conv"
            channels = 8
            kernel = 3
            padding = 1
            [[layers]]
            type = "batch-norm"
            [[layers]]
            type = "act"
            [[layers]]
            type = "max-pool"
            kernel = 3
            stride = 2
            padding = 1
            [[layers]]
            type = "residual"
            channels = 8
            [[layers]]
            type = "global-avg-pool"
            [[layers]]
            type = "dense"
            "#,
        )
        .unwrap()
    }

    #[test]
    fn relus_become_polynomials_and_pools_averages_of_the_same_size() {
        let model = relu_resnet();
        let before = model.resolve([1, 28, 28], 2).unwrap();
        let (twin, c) = he_friendly(&model, [1, 28, 28], 2).unwrap();
        assert_eq!(
            c,
            Conversion {
                activations: 3,
                max_pools: 1
            }
        );
        let after = twin.resolve([1, 28, 28], 2).unwrap();
        assert!(!before.is_he_friendly());
        assert!(after.is_he_friendly());
        assert_eq!(after.activation(), Some(Activation::Poly));
        for (a, b) in before.layers.iter().zip(&after.layers) {
            assert_eq!(a.output, b.output);
        }
        // parameter names agree but for the polynomials' coefficients
        let names = |s| -> Vec<String> {
            crate::params::manifest(s)
                .entries
                .into_iter()
                .map(|e| e.name)
                .filter(|n| !super::super::layout::is_activation(n))
                .collect()
        };
        assert_eq!(names(&before), names(&after));
    }

    #[test]
    fn an_odd_side_under_a_padded_pool_is_refused_with_the_sizes() {
        let e = he_friendly(&relu_resnet(), [1, 27, 27], 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("max-pool k3 s2"), "{e}");
    }
}
