//! Where each entry of a network's manifest comes from in a weights file of a given layout:
//! HEAL's own names, or torchvision's ResNet-18/34 state dict.

use crate::error::TrainError;
use crate::model::{Activation, LayerConfig, LayerKind, ModelConfig, NetworkSpec, WeightsLayout};
use crate::params::{ParamEntry, manifest};

/// Where one manifest entry's values come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// The file's tensor of this name (required).
    Named(String),
    /// The file's tensor of this name where present, else zeros (torchvision's convolutions
    /// have no bias).
    NamedOrZeros(String),
    /// The file's tensor of this name where present, else the network's initial values (a
    /// ReLU backbone has no polynomial coefficients: they start at `poly_init`).
    NamedOrInitial(String),
    /// Every value this constant: a batch norm HEAL has and the layout does not, made the
    /// identity (γ = 1, β = 0, mean 0, variance 1 − ε so that √(σ² + ε) = 1).
    Fill(f32),
    /// The network's own initial values (a polynomial's coefficients, a replaced head).
    Initial,
}

impl Source {
    /// The file's tensor name this source reads, if any.
    pub fn name(&self) -> Option<&str> {
        match self {
            Source::Named(n) | Source::NamedOrZeros(n) | Source::NamedOrInitial(n) => Some(n),
            Source::Fill(_) | Source::Initial => None,
        }
    }
}

/// The source of every manifest entry, in manifest order.
pub fn sources(spec: &NetworkSpec, layout: WeightsLayout) -> Result<Vec<Source>, TrainError> {
    let m = manifest(spec);
    match layout {
        WeightsLayout::Heal => Ok(m
            .entries
            .iter()
            .map(|e| {
                if is_activation(&e.name) {
                    Source::NamedOrInitial(e.name.clone())
                } else {
                    Source::Named(e.name.clone())
                }
            })
            .collect()),
        WeightsLayout::Torchvision => torchvision(spec, &m.entries),
    }
}

/// torchvision's ResNet with BasicBlocks, `blocks` per stage (`[2, 2, 2, 2]`: ResNet-18;
/// `[3, 4, 6, 3]`: ResNet-34), as `[model]` layers: a 7×7 stride-2 stem with batch norm, ReLU
/// and a 3×3 stride-2 max-pool, stages of 64·2^s channels (stride 2 from the second), global
/// average pooling and the classifier — what `layout = "torchvision"` reads.
pub fn torchvision_resnet(blocks: &[usize]) -> ModelConfig {
    let mut layers = vec![
        LayerConfig::Conv {
            channels: 64,
            kernel: 7,
            stride: 2,
            padding: 3,
        },
        LayerConfig::BatchNorm {
            momentum: 0.1,
            epsilon: 1e-5,
        },
        LayerConfig::Act { kind: None },
        LayerConfig::MaxPool {
            kernel: 3,
            stride: Some(2),
            padding: 1,
        },
    ];
    for (s, &n) in blocks.iter().enumerate() {
        for b in 0..n {
            layers.push(LayerConfig::Residual {
                channels: 64 << s,
                stride: if s > 0 && b == 0 { 2 } else { 1 },
                kernel: 3,
                kind: None,
            });
        }
    }
    layers.push(LayerConfig::GlobalAvgPool);
    layers.push(LayerConfig::Dense { units: None });
    ModelConfig {
        activation: Activation::Relu,
        layers,
        ..ModelConfig::default()
    }
}

/// Whether a manifest entry is an activation's coefficient (absent from ReLU backbones).
pub fn is_activation(name: &str) -> bool {
    name.contains(".poly.") || name.contains(".quadratic.")
}

/// The batch-norm tensor names of PyTorch for HEAL's.
fn torch_norm(tensor: &str) -> &str {
    match tensor {
        "gamma" => "weight",
        "beta" => "bias",
        other => other,
    }
}

/// torchvision's ResNet: `conv1`, `bn1`, then `layer{s}.{b}` blocks (`conv1`, `bn1`, `conv2`,
/// `bn2`, `downsample.0`/`.1`), then `fc`. A stage starts at the first block and wherever a
/// block changes the channels or strides, as in torchvision's `_make_layer`.
fn torchvision(spec: &NetworkSpec, entries: &[ParamEntry]) -> Result<Vec<Source>, TrainError> {
    let not_resnet = |m: String| {
        TrainError::Model(format!(
            "layout \"torchvision\": {m}; the network must be a torchvision ResNet: conv, \
             batch-norm, act, max-pool, residual blocks, global-avg-pool, dense"
        ))
    };
    // the torchvision prefix of each layer that has parameters
    let mut prefix: Vec<Option<String>> = vec![None; spec.layers.len()];
    let (mut convs, mut norms, mut denses) = (0, 0, 0);
    let (mut stage, mut block, mut last_channels) = (0usize, 0usize, None);
    let last_dense = spec
        .layers
        .iter()
        .rposition(|l| matches!(l.kind, LayerKind::Dense { .. }));
    for (i, l) in spec.layers.iter().enumerate() {
        match &l.kind {
            LayerKind::Conv { .. } => {
                convs += 1;
                if convs > 1 || stage > 0 {
                    return Err(not_resnet(format!("layer {i}: a second plain convolution")));
                }
                prefix[i] = Some("conv1".into());
            }
            LayerKind::BatchNorm { .. } => {
                norms += 1;
                if norms > 1 || convs != 1 || stage > 0 {
                    return Err(not_resnet(format!(
                        "layer {i}: a batch norm other than the stem's"
                    )));
                }
                prefix[i] = Some("bn1".into());
            }
            LayerKind::Residual {
                out_channels,
                stride,
                ..
            } => {
                if stage == 0 || last_channels != Some(*out_channels) || *stride != 1 {
                    stage += 1;
                    block = 0;
                } else {
                    block += 1;
                }
                last_channels = Some(*out_channels);
                prefix[i] = Some(format!("layer{stage}.{block}"));
            }
            LayerKind::Dense { .. } => {
                denses += 1;
                if Some(i) != last_dense || denses > 1 {
                    return Err(not_resnet(format!(
                        "layer {i}: a dense layer before the last"
                    )));
                }
                prefix[i] = Some("fc".into());
            }
            _ => {}
        }
    }
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        // "{layer}.{kind}.{rest}"
        let mut parts = e.name.splitn(3, '.');
        let (layer, kind, rest) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let layer: usize = layer
            .parse()
            .map_err(|_| not_resnet(format!("entry {}", e.name)))?;
        let Some(p) = prefix.get(layer).cloned().flatten() else {
            // an activation's coefficients: torchvision's are ReLUs
            out.push(Source::Initial);
            continue;
        };
        let source = match kind {
            "conv" | "dense" => match rest {
                "weight" => Source::Named(format!("{p}.weight")),
                _ if kind == "conv" => Source::NamedOrZeros(format!("{p}.bias")),
                _ => Source::Named(format!("{p}.bias")),
            },
            "batch-norm" => Source::Named(format!("{p}.{}", torch_norm(rest))),
            "residual" => {
                let (part, tensor) = rest.split_once('.').unwrap_or((rest, ""));
                if is_activation(&e.name) {
                    Source::Initial
                } else {
                    match part {
                        "conv1" | "conv2" | "proj" => {
                            let tv = if part == "proj" { "downsample.0" } else { part };
                            if tensor == "weight" {
                                Source::Named(format!("{p}.{tv}.weight"))
                            } else {
                                Source::NamedOrZeros(format!("{p}.{tv}.bias"))
                            }
                        }
                        "bn1" | "bn2" => {
                            Source::Named(format!("{p}.{part}.{}", torch_norm(tensor)))
                        }
                        "proj-bn" => {
                            Source::Named(format!("{p}.downsample.1.{}", torch_norm(tensor)))
                        }
                        // HEAL's batch norm after the sum, which torchvision does not have
                        "bn3" => Source::Fill(match tensor {
                            "gamma" => 1.0,
                            "running_var" => 1.0 - 1e-5,
                            _ => 0.0,
                        }),
                        other => return Err(not_resnet(format!("block part {other}"))),
                    }
                }
            }
            _ => Source::Initial,
        };
        out.push(source);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resnet18() -> NetworkSpec {
        torchvision_resnet(&[2, 2, 2, 2])
            .resolve([3, 64, 64], 10)
            .unwrap()
    }

    #[test]
    fn resnet18_names_are_torchvisions() {
        let spec = resnet18();
        let s = sources(&spec, WeightsLayout::Torchvision).unwrap();
        let names: Vec<&str> = s.iter().filter_map(Source::name).collect();
        for want in [
            "conv1.weight",
            "bn1.running_var",
            "layer1.1.conv2.weight",
            "layer2.0.downsample.0.weight",
            "layer2.0.downsample.1.bias",
            "layer4.1.bn2.weight",
            "fc.weight",
            "fc.bias",
        ] {
            assert!(names.contains(&want), "{want} missing");
        }
        assert!(!names.iter().any(|n| n.starts_with("layer1.0.downsample")));
        assert!(!names.iter().any(|n| n.starts_with("layer5")));
        // 20 convolutions, 20 batch norms, fc: 60 weights/biases/statistics... (no bias on convs)
        assert_eq!(
            s.iter()
                .filter(|x| matches!(x, Source::NamedOrZeros(_)))
                .count(),
            20
        );
        assert_eq!(
            s.iter().filter(|x| matches!(x, Source::Fill(_))).count(),
            8 * 4
        );
    }

    #[test]
    fn a_network_of_another_shape_is_refused_by_name() {
        let spec = ModelConfig::default().resolve([1, 28, 28], 2).unwrap();
        let e = sources(&spec, WeightsLayout::Torchvision)
            .unwrap_err()
            .to_string();
        assert!(e.contains("dense layer before the last"), "{e}");
    }
}
