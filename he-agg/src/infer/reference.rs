//! The plain `f32` forward pass: the reference an encrypted evaluation must reproduce, and the
//! plaintext answer of `client infer --local` and the portal.

use super::error::NetworkError;
use super::network::{Conv2d, Layer, Network, Shape, body_shapes};

impl Network {
    /// Logits of one normalised CHW input, in `f32`.
    pub fn forward(&self, x: &[f32]) -> Result<Vec<f32>, NetworkError> {
        if x.len() != self.input_len() {
            return Err(NetworkError::InputLen {
                expected: self.input_len(),
                found: x.len(),
            });
        }
        let mut cur = x.to_vec();
        for (i, layer) in self.layers().iter().enumerate() {
            cur = apply(layer, self.input_shape(i), self.shapes()[i], cur);
        }
        Ok(cur)
    }
}

/// One validated layer on `cur` (of shape `input`, giving `output`).
fn apply(layer: &Layer, input: Shape, output: Shape, cur: Vec<f32>) -> Vec<f32> {
    match layer {
        Layer::Conv2d(c) => conv(c, input, output, &cur),
        Layer::AvgPool2d { kernel, stride } => {
            let (Shape::Chw([ch, hi, wi]), Shape::Chw([_, ho, wo])) = (input, output) else {
                unreachable!("validated: pooling maps CHW to CHW")
            };
            let k = *kernel;
            let mut y = vec![0f32; ch * ho * wo];
            for c in 0..ch {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut acc = 0f32;
                        for ky in 0..k {
                            for kx in 0..k {
                                acc += cur[(c * hi + oy * stride + ky) * wi + ox * stride + kx];
                            }
                        }
                        y[(c * ho + oy) * wo + ox] = acc / (k * k) as f32;
                    }
                }
            }
            y
        }
        Layer::Flatten => cur,
        Layer::Dense(d) => (0..d.out_features)
            .map(|o| {
                d.bias[o]
                    + d.weight[o * d.in_features..(o + 1) * d.in_features]
                        .iter()
                        .zip(&cur)
                        .map(|(w, x)| w * x)
                        .sum::<f32>()
            })
            .collect(),
        Layer::Square => cur.iter().map(|x| x * x).collect(),
        Layer::Quadratic { a, b } => cur.iter().map(|x| x * (a * x + b)).collect(),
        Layer::Relu => cur.iter().map(|x| x.max(0.0)).collect(),
        Layer::ChannelQuadratic { a, b, c } => {
            let per = cur.len() / a.len();
            cur.iter()
                .enumerate()
                .map(|(j, x)| {
                    let k = j / per;
                    x * (a[k] * x + b[k]) + c[k]
                })
                .collect()
        }
        Layer::GlobalAvgPool => {
            let Shape::Chw([ch, h, w]) = input else {
                unreachable!("validated: global pooling reads CHW")
            };
            let hw = h * w;
            (0..ch)
                .map(|c| cur[c * hw..(c + 1) * hw].iter().sum::<f32>() / hw as f32)
                .collect()
        }
        Layer::Residual(r) => {
            let shapes = body_shapes(0, input, &r.body).expect("validated block");
            let mut main = cur.clone();
            let mut shape = input;
            for (l, &out) in r.body.iter().zip(&shapes) {
                main = apply(l, shape, out, main);
                shape = out;
            }
            let short = match &r.shortcut {
                Some(c) => conv(c, input, output, &cur),
                None => cur,
            };
            main.iter().zip(&short).map(|(m, s)| m + s).collect()
        }
    }
}

fn conv(c: &Conv2d, input: Shape, output: Shape, cur: &[f32]) -> Vec<f32> {
    let (Shape::Chw([ci, hi, wi]), Shape::Chw([co, ho, wo])) = (input, output) else {
        unreachable!("validated: conv maps CHW to CHW")
    };
    let k = c.kernel;
    let mut y = vec![0f32; co * ho * wo];
    for o in 0..co {
        for oy in 0..ho {
            for ox in 0..wo {
                let mut acc = c.bias[o];
                for i in 0..ci {
                    for ky in 0..k {
                        let iy = (oy * c.stride + ky) as i64 - c.padding as i64;
                        if iy < 0 || iy >= hi as i64 {
                            continue;
                        }
                        for kx in 0..k {
                            let ix = (ox * c.stride + kx) as i64 - c.padding as i64;
                            if ix < 0 || ix >= wi as i64 {
                                continue;
                            }
                            acc += c.weight[((o * ci + i) * k + ky) * k + kx]
                                * cur[(i * hi + iy as usize) * wi + ix as usize];
                        }
                    }
                }
                y[(o * ho + oy) * wo + ox] = acc;
            }
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::super::network::Dense;
    use super::*;

    #[test]
    fn small_network_by_hand() {
        // 1×3×3 input, conv 1→1 k2 s1 p0 (all ones, bias 1) → 2×2, pool 2 → 1, square,
        // dense 1→2
        let net = Network::new(
            [1, 3, 3],
            vec![
                Layer::Conv2d(Conv2d {
                    in_channels: 1,
                    out_channels: 1,
                    kernel: 2,
                    stride: 1,
                    padding: 0,
                    weight: vec![1.0; 4],
                    bias: vec![1.0],
                }),
                Layer::AvgPool2d {
                    kernel: 2,
                    stride: 1,
                },
                Layer::Quadratic { a: 1.0, b: 1.0 },
                Layer::Dense(Dense {
                    in_features: 1,
                    out_features: 2,
                    weight: vec![2.0, -1.0],
                    bias: vec![0.5, 0.0],
                }),
            ],
        )
        .unwrap();
        let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        // conv: windows sums 12, 16, 24, 28 (+1) → 13, 17, 25, 29; pool → 21; 21² + 21 = 462
        assert_eq!(net.forward(&x).unwrap(), vec![924.5, -462.0]);
        assert!(matches!(
            net.forward(&x[..8]),
            Err(NetworkError::InputLen {
                expected: 9,
                found: 8
            })
        ));
    }

    #[test]
    fn padding_reads_zeros() {
        let net = Network::new(
            [1, 2, 2],
            vec![Layer::Conv2d(Conv2d {
                in_channels: 1,
                out_channels: 1,
                kernel: 3,
                stride: 1,
                padding: 1,
                weight: vec![1.0; 9],
                bias: vec![0.0],
            })],
        )
        .unwrap();
        // every 3×3 window of the padded 4×4 covers all four pixels
        assert_eq!(net.forward(&[1.0, 2.0, 3.0, 4.0]).unwrap(), vec![10.0; 4]);
    }
}
