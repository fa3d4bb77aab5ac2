//! The layout of residual networks: multiplexed maps (Lee et al., ICML 2022, "Low-complexity
//! deep convolutional neural networks on FHE using multiplexed parallel convolutions").
//!
//! Every activation map sits on one base grid, the stem's output grid padded to powers of two
//! (H_b × W_b, one channel block of B = H_b·W_b slots). A map of C channels on an H × W grid
//! has gap g, the largest power of two with g·H ≤ H_b and g·W ≤ W_b (1 for the first stage, 2
//! after one stride 2, …): position (y, x) of channel c sits at
//!
//! `(c div g²)·B + (g·y + (c mod g²) div g)·W_b + g·x + (c mod g²) mod g`
//!
//! — a strided map leaves each output where its top-left input was, and g² channels share the
//! gaps. So every convolution, strided or not, reads its input at offsets that do not depend on
//! the position (its diagonals: channel-block offsets × kernel offsets, not positions), a
//! block's shortcut and body meet in one layout, and C·H·W values never take more than
//! ⌈C/g²⌉·B slots. Channel blocks of a power-of-two size also let offsets wrap around the
//! period and merge (C diagonals per kernel offset instead of 2C − 1).

use super::error::InferError;
use super::layout::{Layouts, MapKind};
use super::lower::{Lowered, Op};
use super::network::Shape;

/// The base grid: the first map's output grid, padded to powers of two.
fn base(low: &Lowered) -> Result<(usize, usize), InferError> {
    match low.ops.first() {
        Some(Op::Linear(m)) => match m.out_shape {
            Shape::Chw([_, h, w]) => Ok((h.next_power_of_two(), w.next_power_of_two())),
            Shape::Flat(_) => Err(InferError::ModelMismatch(
                "a residual network's first layer must be a convolution (its stem)",
            )),
        },
        _ => Err(InferError::ModelMismatch(
            "a residual network's first layer must be a convolution (its stem)",
        )),
    }
}

/// The slots of a `[c, h, w]` map on the base grid `(hb, wb)`.
fn multiplexed(shape: Shape, (hb, wb): (usize, usize)) -> Result<Option<Vec<u32>>, InferError> {
    let Shape::Chw([c, h, w]) = shape else {
        return Ok(None);
    };
    if h > hb || w > wb {
        return Err(InferError::ModelMismatch(
            "a map larger than the stem's output grid",
        ));
    }
    let mut g = 1;
    while 2 * g * h <= hb && 2 * g * w <= wb {
        g *= 2;
    }
    let (g2, block) = (g * g, hb * wb);
    let mut out = Vec::with_capacity(c * h * w);
    for ch in 0..c {
        let (blk, lane) = (ch / g2, ch % g2);
        let (py, px) = (lane / g, lane % g);
        for y in 0..h {
            for x in 0..w {
                out.push((blk * block + (g * y + py) * wb + g * x + px) as u32);
            }
        }
    }
    Ok(Some(out))
}

/// The multiplexed layouts of a residual network (`inputs`: every op's input shape).
pub(crate) fn layouts(low: &Lowered, inputs: &[Shape]) -> Result<Layouts, InferError> {
    let grid = base(low)?;
    let mut slots = Vec::with_capacity(low.ops.len());
    let mut kinds = Vec::with_capacity(low.ops.len());
    for (k, op) in low.ops.iter().enumerate() {
        match op {
            Op::Linear(map) => {
                let layout = multiplexed(map.out_shape, grid)?;
                kinds.push(match layout {
                    Some(_) => MapKind::Direct,
                    None => MapKind::Hybrid,
                });
                slots.push(layout);
            }
            _ => {
                // the value keeps its producer's layout
                kinds.push(MapKind::Direct);
                slots.push(multiplexed(inputs[k], grid)?);
            }
        }
    }
    let first = match (&low.ops.first(), slots.first()) {
        (Some(Op::Linear(m)), Some(Some(_))) => {
            let Shape::Chw([_, h, w]) = m.out_shape else {
                unreachable!("a spatial layout belongs to a spatial map")
            };
            let pos = (0..h * w)
                .map(|p| ((p / w) * grid.1 + p % w) as u32)
                .collect();
            Some((grid.0 * grid.1, pos))
        }
        _ => None,
    };
    Ok(Layouts {
        slots,
        kinds,
        first,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_maps_keep_outputs_where_their_inputs_were() {
        let grid = (16, 16);
        let s1 = multiplexed(Shape::Chw([16, 14, 14]), grid)
            .unwrap()
            .unwrap();
        let s2 = multiplexed(Shape::Chw([32, 7, 7]), grid).unwrap().unwrap();
        let s3 = multiplexed(Shape::Chw([64, 4, 4]), grid).unwrap().unwrap();
        // the first stage: channel blocks of 256, row-major on the padded grid
        assert_eq!(s1[196 + 14 + 2], 256 + 16 + 2);
        // after a stride 2: gap 2, four channels per block; (c=1, y=0, x=0) is at parity (0, 1)
        assert_eq!(s2[49], 1);
        assert_eq!(s2[3 * 49 + 7 + 1], (2 + 1) * 16 + 2 + 1);
        // channel 4 opens the next block
        assert_eq!(s2[4 * 49], 256);
        // gap 4, sixteen channels per block: 64 channels in 4 blocks
        assert_eq!(*s3.iter().max().unwrap() as usize + 1, 4 * 256);
        for s in [&s1, &s2, &s3] {
            let mut sorted = s.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), s.len(), "distinct slots");
        }
        assert!(multiplexed(Shape::Chw([1, 17, 4]), grid).is_err());
    }
}
