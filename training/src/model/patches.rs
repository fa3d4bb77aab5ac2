//! A convolution of the network's input images on the CPU as one matrix product of their
//! unfolded patches.
//!
//! burn-flex 0.22 convolves an input of at most 4 channels into at most 16 by a direct loop per
//! output plane, which is scalar and strided at a stride above 1: the default network's first
//! layer (1 → 16 channels, 5 × 5, stride 2) took a quarter of a simulated hospital's training
//! time in it, and its weight gradient another eighth (`perf record`, 29 November 2026). The
//! input of the first layer needs no gradient, so its patches are made once per batch here and
//! the convolution and its weight gradient become two matrix products of burn's gemm. burn's
//! `unfold4d` (which `dp_sgd::per_example` calls) is not used here: it unfolds by a convolution
//! with an identity kernel, k² times the products of the convolution it would replace.

use burn::tensor::{Device, Tensor, TensorData};

/// Input channels up to which the patches are made here (burn-flex's direct path starts at 4).
const MAX_CHANNELS: usize = 4;

/// `x`, the network's input, convolved with `weight` (`[out, in, k, k]`) and `bias` as burn's
/// `conv2d` does it, by unfolded patches: None where that does not apply (an input marked as
/// needing its gradient, a device other than the CPU, more than [`MAX_CHANNELS`] channels, a
/// kernel larger than the padded input), and the caller convolves as usual. Only for the input
/// layer: a hidden layer's input is in the autodiff graph without being marked
/// (`is_require_grad` is false there too), and its patches would cut the gradient off.
pub(crate) fn conv_input(
    x: &Tensor<4>,
    weight: &Tensor<4>,
    bias: &Tensor<1>,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Option<Tensor<4>> {
    let [n, c, h, w] = x.dims();
    let [out, c_w, kh, kw] = weight.dims();
    if x.is_require_grad()
        || c > MAX_CHANNELS
        || c != c_w
        || kh != kernel
        || kw != kernel
        || stride == 0
        || h + 2 * padding < kernel
        || w + 2 * padding < kernel
        || x.device() != Device::flex()
    {
        return None;
    }
    let (oh, ow) = (
        (h + 2 * padding - kernel) / stride + 1,
        (w + 2 * padding - kernel) / stride + 1,
    );
    let data = x.to_data().convert::<f32>();
    let pixels = data.as_slice::<f32>().ok()?;
    let rows = unfold(pixels, [n, c, h, w], kernel, stride, padding, [oh, ow]);
    let k2 = c * kernel * kernel;
    let patches = Tensor::<2>::from_data(TensorData::new(rows, [n * oh * ow, k2]), &x.device());
    let w2: Tensor<2> = weight.clone().reshape([out, k2]);
    let y = patches.matmul(w2.transpose()) + bias.clone().unsqueeze_dim(0);
    Some(
        y.reshape([n, oh * ow, out])
            .swap_dims(1, 2)
            .reshape([n, out, oh, ow]),
    )
}

/// The patches of NCHW `pixels`, one row per output position (image by image, row by row), each
/// `c·k·k` values in the weight's order (channel, kernel row, kernel column); zeros where a
/// patch reaches into the padding.
fn unfold(
    pixels: &[f32],
    [n, c, h, w]: [usize; 4],
    k: usize,
    stride: usize,
    pad: usize,
    [oh, ow]: [usize; 2],
) -> Vec<f32> {
    let k2 = c * k * k;
    let mut rows = vec![0.0f32; n * oh * ow * k2];
    // per output column: the kernel columns inside the image, and where they start in a row
    let columns: Vec<(usize, usize, usize)> = (0..ow)
        .map(|ox| {
            let x0 = ox * stride;
            let lo = pad.saturating_sub(x0).min(k);
            let hi = (w + pad).saturating_sub(x0).min(k).max(lo);
            (lo, hi, (x0 + lo).saturating_sub(pad))
        })
        .collect();
    for (img, image) in pixels.chunks_exact(c * h * w).take(n).enumerate() {
        for oy in 0..oh {
            for (ox, &(lo, hi, ix)) in columns.iter().enumerate() {
                let row = &mut rows[((img * oh + oy) * ow + ox) * k2..][..k2];
                for ci in 0..c {
                    let plane = &image[ci * h * w..][..h * w];
                    for ky in 0..k {
                        let Some(iy) = (oy * stride + ky).checked_sub(pad).filter(|&y| y < h)
                        else {
                            continue;
                        };
                        let dst = &mut row[(ci * k + ky) * k..][..k];
                        dst[lo..hi].copy_from_slice(&plane[iy * w + ix..][..hi - lo]);
                    }
                }
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    }

    /// Deterministic values in [-1, 1).
    fn filler(len: usize, seed: u32) -> Vec<f32> {
        (0..len as u32)
            .map(|i| {
                let v = (i.wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503)) % 2001;
                v as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// The same outputs as burn's conv2d (to float rounding) for the shapes HEAL's networks
    /// start with: a strided 5 × 5 stem, a patch embedding, a padded 3 × 3 at stride 1 and 2
    /// (where patches reach past the image's edge), one and three channels.
    #[test]
    fn patches_convolve_as_conv2d_does() {
        let device = Device::flex();
        for (n, c, side, out, k, stride, pad) in [
            (3, 1, 28, 16, 5, 2, 0),
            (2, 1, 32, 8, 16, 16, 0),
            (2, 3, 9, 5, 3, 1, 1),
            (2, 1, 10, 4, 3, 2, 1),
            (1, 2, 7, 3, 7, 1, 3),
        ] {
            let x = Tensor::<4>::from_data(
                TensorData::new(filler(n * c * side * side, 1), [n, c, side, side]),
                &device,
            );
            let weight = Tensor::<4>::from_data(
                TensorData::new(filler(out * c * k * k, 2), [out, c, k, k]),
                &device,
            );
            let bias = Tensor::<1>::from_data(TensorData::new(filler(out, 3), [out]), &device);
            let mine = conv_input(&x, &weight, &bias, k, stride, pad).expect("applies");
            let burn = conv2d(
                x,
                weight,
                Some(bias),
                ConvOptions::new([stride; 2], [pad; 2], [1, 1], 1),
            );
            assert_eq!(mine.dims(), burn.dims(), "shape at {c}×{side}², k {k}");
            for (a, b) in values(mine).iter().zip(values(burn)) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{a} vs {b} at k {k}"
                );
            }
        }
    }

    /// Not for an input marked as needing its gradient, nor for many channels: those go to
    /// burn's conv2d. (Hidden layers never get here: `tap::conv` asks only for the input layer.)
    #[test]
    fn hidden_layers_and_wide_inputs_are_left_to_burn() {
        let device = Device::flex().autodiff();
        let x = Tensor::<4>::zeros([1, 1, 8, 8], &device).require_grad();
        let weight = Tensor::<4>::zeros([2, 1, 3, 3], &device);
        let bias = Tensor::<1>::zeros([2], &device);
        assert!(conv_input(&x, &weight, &bias, 3, 1, 0).is_none());
        let wide = Tensor::<4>::zeros([1, 5, 8, 8], &device);
        let weight5 = Tensor::<4>::zeros([2, 5, 3, 3], &device);
        assert!(conv_input(&wide, &weight5, &bias, 3, 1, 0).is_none());
        let data = Tensor::<4>::zeros([1, 1, 8, 8], &device);
        assert!(conv_input(&data, &weight, &bias, 3, 1, 0).is_some());
    }

    /// The weight's and the bias's gradients through the patches equal conv2d's.
    #[test]
    fn gradients_through_the_patches_equal_conv2d() {
        let device = Device::flex().autodiff();
        let (n, side, out, k, stride, pad) = (2, 12, 4, 5, 2, 1);
        let x = Tensor::<4>::from_data(
            TensorData::new(filler(n * side * side, 4), [n, 1, side, side]),
            &device,
        );
        let grads = |patched: bool| {
            let weight = Tensor::<4>::from_data(
                TensorData::new(filler(out * k * k, 5), [out, 1, k, k]),
                &device,
            )
            .require_grad();
            let bias = Tensor::<1>::from_data(TensorData::new(filler(out, 6), [out]), &device)
                .require_grad();
            let y = if patched {
                conv_input(&x, &weight, &bias, k, stride, pad).expect("applies")
            } else {
                conv2d(
                    x.clone(),
                    weight.clone(),
                    Some(bias.clone()),
                    ConvOptions::new([stride; 2], [pad; 2], [1, 1], 1),
                )
            };
            let g = (y.clone() * y).sum().backward();
            (
                values(weight.grad(&g).expect("weight gradient")),
                values(bias.grad(&g).expect("bias gradient")),
            )
        };
        let (mine, burn) = (grads(true), grads(false));
        for (a, b) in mine
            .0
            .iter()
            .chain(&mine.1)
            .zip(burn.0.iter().chain(&burn.1))
        {
            assert!((a - b).abs() <= 1e-3 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }
}
