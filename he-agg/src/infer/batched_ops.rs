//! The operations of a batched model (one image per slot): a map's rows grouped by the inputs
//! they read, with integer weights modulo each prime; maps, activations, map → activation → map
//! fused and streamed over chunks of rows, and a residual block's two steps (keep its input, add
//! its shortcut).

use std::collections::HashMap;

use crate::ckks::{CkksContext, CkksError};

use super::error::InferError;
use super::lower::Affine;

/// Rows of a map that read the same inputs (all rows of a dense layer; the channels of one
/// position of a convolution), with their weights modulo each prime, rows × columns (W: on
/// the host, one vector per limb; on a device, uploaded).
#[derive(Clone, Debug)]
pub(crate) struct Group<W = HostWeights> {
    pub rows: Vec<u32>,
    pub cols: Vec<u32>,
    pub weights: W,
}

/// A group's weights on the host: per limb, rows × columns words.
pub(crate) type HostWeights = Vec<Vec<u64>>;

/// The length of a group product's outputs, once the shapes fit: one weight per row and
/// column, every input read covers the outputs, every output one length (checked by the
/// vector kernels before they read with raw pointers; x86 only has them).
#[cfg(target_arch = "x86_64")]
pub(crate) fn group_shape(
    cols: &[u32],
    weights: &[u64],
    inputs: &[&[u64]],
    outs: &[&mut [u64]],
) -> usize {
    let n = outs.first().map_or(0, |o| o.len());
    assert_eq!(
        weights.len(),
        cols.len() * outs.len(),
        "one weight per row and column"
    );
    for &c in cols {
        assert!(inputs[c as usize].len() >= n, "inputs cover the output");
    }
    for o in outs {
        assert_eq!(o.len(), n, "outputs have one length");
    }
    n
}

/// Groups rows (output index, integer-weighted entries) by their column lists. Where a limb's
/// prime is wider than 51 bits, each row's weights are first rounded to 23 significant bits
/// (a small integer times a power of two, [`round_row`]) so those limbs take the vector kernel
/// (`wide_mac`) instead of 128-bit scalar products, at every SIMD level alike.
pub(crate) fn make_groups(
    ctx: &CkksContext,
    level: usize,
    rows: Vec<(u32, Vec<(u32, i64)>)>,
) -> Vec<Group> {
    let wide = (0..level).any(|i| ctx.rlwe().q_modulus(i).bits() > super::FAST_PRIME_BITS);
    let mut index: HashMap<Vec<u32>, usize> = HashMap::new();
    let mut raw: Vec<(Vec<u32>, Vec<u32>, Vec<i64>)> = Vec::new();
    for (row, mut entries) in rows {
        if wide {
            round_row(&mut entries);
        }
        let cols: Vec<u32> = entries.iter().map(|&(c, _)| c).collect();
        let g = *index.entry(cols.clone()).or_insert_with(|| {
            raw.push((Vec::new(), cols, Vec::new()));
            raw.len() - 1
        });
        raw[g].0.push(row);
        raw[g].2.extend(entries.iter().map(|&(_, w)| w));
    }
    raw.into_iter()
        .map(|(rows, cols, ints)| Group {
            rows,
            cols,
            weights: (0..level)
                .map(|i| {
                    let m = ctx.rlwe().q_modulus(i);
                    ints.iter().map(|&v| m.reduce_i64(v)).collect()
                })
                .collect(),
        })
        .collect()
}

/// Rounds a row's integer weights to a common power of two 2^b, b the least that leaves every
/// |w / 2^b| at most 2^23 (`wide_mac::SMALL_WEIGHT`): each weight moves by at most 2^−23 of
/// the row's largest, about the precision of the f32 weights the network was trained in.
pub(crate) fn round_row(entries: &mut [(u32, i64)]) {
    let max = entries
        .iter()
        .map(|&(_, w)| w.unsigned_abs())
        .max()
        .unwrap_or(0);
    let bits = 64 - max.leading_zeros();
    if bits <= 23 {
        return;
    }
    let b = bits - 23;
    for (_, w) in entries.iter_mut() {
        // round half up: (w + 2^(b−1)) >> b, an arithmetic shift (|w| < 9.2e18, integer_rows)
        *w = ((*w + (1 << (b - 1))) >> b) << b;
    }
}

/// A map's weights as integers round(w·m): with m = q·s_out/s_in for the prime q its rescale
/// removes, the map takes inputs at scale s_in to outputs at exactly s_out.
pub(crate) fn integer_rows(
    map: &Affine,
    m: f64,
    level: usize,
) -> Result<Vec<Vec<(u32, i64)>>, InferError> {
    map.rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|&(j, w)| {
                    let v = (w * m).round();
                    if v.abs() >= 9.2e18 {
                        return Err(InferError::Ckks(CkksError::Overflow {
                            bits: v.abs().log2(),
                            level,
                            log_q: m.log2(),
                        }));
                    }
                    Ok((j, v as i64))
                })
                .collect()
        })
        .collect()
}

#[derive(Clone, Debug)]
pub(crate) struct BatchedLinear<W = HostWeights> {
    pub groups: Vec<Group<W>>,
    pub bias: Vec<f64>,
    /// what the weights were multiplied by before rounding (the products' scale is the
    /// input's times this; the rescale then leaves the map's output scale)
    pub multiplier: f64,
}

/// The c of an activation x·(x + c): one for every value, or one per value (a per-channel
/// quadratic's b/a, each ciphertext being one value).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ActShift {
    Same(f64),
    Each(Vec<f64>),
}

impl ActShift {
    pub fn at(&self, j: usize) -> f64 {
        match self {
            ActShift::Same(c) => *c,
            ActShift::Each(v) => v.get(j).copied().unwrap_or(0.0),
        }
    }
}

/// One chunk of a fused map → activation → map: some of the first map's rows (numbered
/// locally), their activations' c, and the second map's columns that read them.
#[derive(Clone, Debug)]
pub(crate) struct FusedChunk<W = HostWeights> {
    pub first: BatchedLinear<W>,
    /// the activation's c of each of the first map's rows here (local numbering)
    pub c: Vec<f64>,
    pub second: Vec<Group<W>>,
}

#[derive(Clone, Debug)]
pub(crate) enum BatchedOp<W = HostWeights> {
    Linear(BatchedLinear<W>),
    Activation {
        c: ActShift,
        post: Option<f64>,
        /// leave the product unrelinearized: a map follows
        lazy: bool,
    },
    /// map, activation x·(x + c), map — streamed over chunks of the first map's rows, so
    /// the activations between the maps never exist all at once
    Fused {
        chunks: Vec<FusedChunk<W>>,
        /// the second map's weight multiplier (see [`BatchedLinear::multiplier`])
        multiplier: f64,
        bias: Vec<f64>,
        /// the activations left unrelinearized (the second map has fewer outputs than inputs)
        lazy: bool,
    },
    /// keeps the current values: the input of the residual block that starts here
    Save,
    /// adds the kept values, mapped first when given, to the current ones; the kept values are
    /// dropped to `level` first (the map's rescale then lands on the body's level)
    AddShortcut {
        map: Option<BatchedLinear<W>>,
        level: usize,
    },
}

impl<W> Group<W> {
    fn try_map<W2, X>(
        &self,
        f: &mut impl FnMut(&Group<W>) -> Result<W2, X>,
    ) -> Result<Group<W2>, X> {
        Ok(Group {
            rows: self.rows.clone(),
            cols: self.cols.clone(),
            weights: f(self)?,
        })
    }
}

impl<W> BatchedLinear<W> {
    fn try_map<W2, X>(
        &self,
        f: &mut impl FnMut(&Group<W>) -> Result<W2, X>,
    ) -> Result<BatchedLinear<W2>, X> {
        Ok(BatchedLinear {
            groups: self
                .groups
                .iter()
                .map(|g| g.try_map(f))
                .collect::<Result<_, X>>()?,
            bias: self.bias.clone(),
            multiplier: self.multiplier,
        })
    }
}

impl<W> BatchedOp<W> {
    /// The same operation with every group's weights converted (uploaded to a device).
    pub(crate) fn try_map<W2, X>(
        &self,
        f: &mut impl FnMut(&Group<W>) -> Result<W2, X>,
    ) -> Result<BatchedOp<W2>, X> {
        Ok(match self {
            BatchedOp::Linear(l) => BatchedOp::Linear(l.try_map(f)?),
            BatchedOp::Activation { c, post, lazy } => BatchedOp::Activation {
                c: c.clone(),
                post: *post,
                lazy: *lazy,
            },
            BatchedOp::Fused {
                chunks,
                multiplier,
                bias,
                lazy,
            } => BatchedOp::Fused {
                lazy: *lazy,
                chunks: chunks
                    .iter()
                    .map(|ch| {
                        Ok(FusedChunk {
                            first: ch.first.try_map(f)?,
                            c: ch.c.clone(),
                            second: ch
                                .second
                                .iter()
                                .map(|g| g.try_map(f))
                                .collect::<Result<_, X>>()?,
                        })
                    })
                    .collect::<Result<_, X>>()?,
                multiplier: *multiplier,
                bias: bias.clone(),
            },
            BatchedOp::Save => BatchedOp::Save,
            BatchedOp::AddShortcut { map, level } => BatchedOp::AddShortcut {
                map: map.as_ref().map(|l| l.try_map(f)).transpose()?,
                level: *level,
            },
        })
    }
}

/// Rows of the first map per fused chunk (whole groups): bounds the chunk's memory.
pub(crate) const CHUNK_ROWS: usize = 128;
